//! `alm_core::Node` as a simulator [`Engine`], and the `pastry` experiment
//! with the real engine.

use crate::engine::{Engine, EngineStats, ProbesByCause, SimChannel, SimEvent, SimTransmit};
use crate::pastry::{PastryParams, PastryReport, run_pastry_with};
use alm_core::{Channel, Config, Event, Key, Node, PeerAddr, Time};
use bytes::Bytes;

impl Engine for Node {
    #[inline]
    fn prefetch(&self) {
        Self::prefetch_at((self as *const Self).cast());
        for p in self.hot_memory() {
            crate::sim::prefetch(p);
        }
    }
    #[inline]
    fn prefetch_at(p: *const u8) {
        for (offset, len) in Node::hot_ranges() {
            crate::sim::prefetch_range(p.wrapping_add(offset), len);
        }
    }
    #[inline]
    fn handle_datagram(&mut self, now: Time, from: PeerAddr, bytes: Bytes) {
        Node::handle_datagram(self, now, from, bytes);
    }
    #[inline]
    fn handle_stream_message(&mut self, now: Time, from: PeerAddr, bytes: Bytes) {
        Node::handle_stream_message(self, now, from, bytes);
    }
    fn handle_peer_unreachable(&mut self, now: Time, peer: PeerAddr) {
        Node::handle_peer_unreachable(self, now, peer);
    }
    #[inline]
    fn handle_timeout(&mut self, now: Time) {
        Node::handle_timeout(self, now);
    }
    fn join_overlay(&mut self, now: Time, bootstrap: &[PeerAddr]) {
        Node::join_overlay(self, now, bootstrap);
    }
    fn route(&mut self, now: Time, key: Key, payload: Bytes) {
        // A lookup from a node that has not joined is simply not delivered;
        // the experiment only picks joined sources, and counts deliveries.
        let _ = Node::route(self, now, key, payload);
    }
    #[inline]
    fn poll_transmit(&mut self) -> Option<SimTransmit> {
        Node::poll_transmit(self).map(|t| {
            let (to, channel) = (t.to, t.channel);
            let bytes = t.into_bytes();
            SimTransmit {
                to,
                channel: match channel {
                    Channel::Datagram => SimChannel::Datagram,
                    Channel::Stream => SimChannel::Stream,
                },
                kind: bytes.get(1).copied().unwrap_or(0),
                bytes,
            }
        })
    }
    #[inline]
    fn poll_event(&mut self) -> Option<SimEvent> {
        Node::poll_event(self).map(|e| match e {
            Event::Joined => SimEvent::Joined,
            Event::JoinFailed => SimEvent::JoinFailed,
            Event::Delivered {
                key,
                origin,
                hops,
                payload,
            } => SimEvent::Delivered {
                key,
                origin,
                hops,
                payload,
            },
            Event::PeerDown { peer } => SimEvent::PeerDown { peer },
            Event::GroupData {
                topic,
                source,
                payload,
            } => SimEvent::GroupData {
                topic,
                source,
                payload,
            },
            Event::AddressAllocated { addr, lease_until } => {
                SimEvent::AddressAllocated { addr, lease_until }
            }
            Event::AddressPoolExhausted(_) => SimEvent::AddressPoolExhausted,
            Event::AddressLost { addr } => SimEvent::AddressLost { addr },
            _ => SimEvent::Other,
        })
    }
    #[inline]
    fn poll_timeout(&self) -> Option<Time> {
        Node::poll_timeout(self)
    }
    fn release_idle_memory(&mut self) {
        Node::release_idle_memory(self);
    }
    fn is_joined(&self) -> bool {
        Node::is_joined(self)
    }
    fn routing_table_len(&self) -> usize {
        Node::routing_table_len(self)
    }
    fn leaf_set_len(&self) -> usize {
        Node::leaf_set(self).len()
    }
    fn leaf_set_ids(&self) -> Vec<u128> {
        Node::leaf_set(self).iter().map(|h| h.id.0).collect()
    }
    fn stats(&self) -> EngineStats {
        let s = Node::stats(self);
        EngineStats {
            msgs_sent: s.msgs_sent,
            msgs_received: s.msgs_received,
            bytes_sent: s.bytes_sent,
            decode_errors: s.decode_errors,
            probes: ProbesByCause {
                joining: s.probes_joining,
                table: s.probes_table,
                new_leaf: s.probes_new_leaf,
                liveness: s.probes_liveness,
            },
        }
    }
}

/// The `pastry` experiment with `alm_core::Node` engines (default `Config`),
/// batches run on `p.threads` threads when `p.batch` is on.
pub fn run_pastry_alm(p: &PastryParams) -> PastryReport {
    // One configuration for all nodes: it stays in cache.
    let cfg = std::sync::Arc::new(Config::default());
    run_pastry_with(
        p,
        |id, addr, seed| Node::new(cfg.clone(), id, addr, seed),
        |sim| {
            if p.batch {
                sim.set_threads(p.threads);
            }
        },
    )
}
