//! The Multicast Middleware (Brogle, Milic, Braun 2007): a `Node` composed
//! with the IGMP querier of the TAP link and the frame codec, so that
//! unmodified applications on the host see native IP multicast.
//!
//! **State owned:** the `Node`, the `IgmpRouter`, frames waiting to be
//! written into the TAP, counters.
//!
//! **Consumes:** Ethernet frames read from the TAP (`handle_tap_frame`),
//! everything a `Node` consumes (datagrams, stream messages, timeouts).
//!
//! **Emits:** frames to write into the TAP (`poll_tap_frame`), the node's
//! transmits (`poll_transmit`) and the node events the middleware does not
//! consume itself (`poll_event`).
//!
//! IGMP joins and leaves become `subscribe` / `unsubscribe` of the group's
//! topic; multicast IPv4 packets captured on the TAP are published on the
//! group's tree untouched (TTL as sent; the overlay is one virtual link);
//! packets delivered by the tree are validated and written back with the
//! group MAC and our router MAC. 224.0.0.0/24 is never forwarded. A packet
//! from the overlay is injected only if it is a valid multicast IPv4 packet
//! for a group a local listener joined, and its group matches the tree it
//! came on: nobody can make us inject a frame the host did not ask for.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use bytes::Bytes;

use crate::addr::PeerAddr;
use crate::frame::{self, TapFrame};
use crate::igmp::{IgmpConfig, IgmpEvent, IgmpRouter};
use crate::node::{Event, Node};
use crate::scribe::Topic;
use crate::time::Time;
use crate::util::{Map, new_map};

/// A frame to write into the TAP: a 14-byte Ethernet header and the IPv4
/// packet as delivered by the tree. Runtimes write both with one `writev`,
/// so the packet is never copied nor the frame allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapWrite {
    pub ethernet: [u8; 14],
    pub packet: Bytes,
}

impl TapWrite {
    pub fn len(&self) -> usize {
        14 + self.packet.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The whole frame in one buffer (tests, or runtimes without writev).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        v.extend_from_slice(&self.ethernet);
        v.extend_from_slice(&self.packet);
        v
    }

    /// Split a complete frame we built ourselves (IGMP queries).
    fn from_frame(f: Bytes) -> Option<TapWrite> {
        let mut ethernet = [0u8; 14];
        ethernet.copy_from_slice(f.get(..14)?);
        Some(TapWrite {
            ethernet,
            packet: f.slice(14..),
        })
    }
}

/// Middleware settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiddlewareConfig {
    /// The TAP interface's own address (source of our IGMP queries).
    pub tap_addr: Ipv4Addr,
    /// IGMP querier settings (RFC defaults, IGMPv3).
    pub igmp: IgmpConfig,
    /// MBONE-style TTL threshold: captured packets with a smaller TTL stay
    /// local. 0 forwards everything (the overlay is one link).
    pub ttl_threshold: u8,
    /// Frames waiting for the TAP beyond this are dropped (and counted), so
    /// a stalled TAP cannot make us buffer without bound.
    pub max_tap_queue: usize,
}

impl MiddlewareConfig {
    pub fn new(tap_addr: Ipv4Addr) -> Self {
        MiddlewareConfig {
            tap_addr,
            igmp: IgmpConfig::default(),
            ttl_threshold: 0,
            max_tap_queue: 4096,
        }
    }
}

/// Counters of the middleware, by direction and reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MiddlewareStats {
    pub tap_frames_in: u64,
    pub tap_bytes_in: u64,
    pub published: u64,
    pub igmp_messages: u64,
    pub ignored: u64,
    pub malformed_frames: u64,
    pub below_ttl_threshold: u64,
    pub not_joined: u64,
    pub tap_frames_out: u64,
    pub tap_bytes_out: u64,
    /// Delivered packets that failed validation (never injected).
    pub rejected_from_overlay: u64,
    /// Delivered packets for a group no local listener joined.
    pub not_subscribed: u64,
    /// Frames dropped because the TAP queue was full.
    pub tap_queue_full: u64,
}

/// A host's multicast middleware. See the module documentation.
#[derive(Debug)]
pub struct Middleware {
    node: Node,
    igmp: IgmpRouter,
    cfg: MiddlewareConfig,
    tap_out: VecDeque<TapWrite>,
    events: VecDeque<Event>,
    stats: MiddlewareStats,
    topics: Map<Ipv4Addr, Topic>,
}

/// Groups whose topic the middleware remembers.
const TOPIC_CACHE: usize = 1024;

impl Middleware {
    pub fn new(node: Node, cfg: MiddlewareConfig) -> Self {
        let igmp = IgmpRouter::new(cfg.igmp.clone(), cfg.tap_addr);
        Middleware {
            node,
            igmp,
            cfg,
            tap_out: VecDeque::new(),
            events: VecDeque::new(),
            stats: MiddlewareStats::default(),
            topics: new_map(0),
        }
    }

    /// Join the overlay and start querying the TAP link.
    pub fn start(&mut self, now: Time, bootstrap: &[PeerAddr]) {
        self.node.join_overlay(now, bootstrap);
        self.igmp.start(now);
        self.after(now);
    }

    /// Leave every group's tree (clean shutdown). The IGMP state is
    /// forgotten, so nothing more is written into the TAP.
    pub fn shutdown(&mut self, now: Time) {
        self.igmp.stop(now);
        self.after(now);
        self.tap_out.clear();
    }

    /// The TAP got a new address (`almd --tap-addr auto`: the first
    /// allocation, or a new one after the address was lost). The querier
    /// restarts from it: groups are forgotten (each `Left`) and learnt
    /// again from the hosts' answers to the new startup queries. Queries
    /// not yet polled are dropped.
    pub fn set_tap_addr(&mut self, now: Time, addr: Ipv4Addr) {
        self.igmp.stop(now);
        self.after(now);
        self.tap_out.clear();
        self.cfg.tap_addr = addr;
        // A fresh querier (its counters start again from zero).
        self.igmp = IgmpRouter::new(self.cfg.igmp.clone(), addr);
        self.igmp.start(now);
        self.after(now);
    }

    // ----- inputs -------------------------------------------------------

    /// A frame read from the TAP device.
    pub fn handle_tap_frame(&mut self, now: Time, frame: Bytes) {
        self.stats.tap_frames_in += 1;
        self.stats.tap_bytes_in += frame.len() as u64;
        match frame::parse_tap_frame(&frame) {
            Ok(TapFrame::Igmp { msg, .. }) => {
                self.stats.igmp_messages += 1;
                self.igmp.handle_message(now, &msg);
            }
            Ok(TapFrame::Multicast {
                group, ttl, packet, ..
            }) => {
                if ttl < self.cfg.ttl_threshold {
                    self.stats.below_ttl_threshold += 1;
                } else {
                    // The packet is a sub-slice of `frame`: share, don't copy.
                    let start = packet.as_ptr() as usize - frame.as_ptr() as usize;
                    let body = frame.slice(start..start + packet.len());
                    let topic = self.topic_of(group);
                    match self.node.publish(now, topic, body) {
                        Ok(()) => self.stats.published += 1,
                        Err(_) => self.stats.not_joined += 1,
                    }
                }
            }
            Ok(TapFrame::Ignored(reason)) => {
                self.stats.ignored += 1;
                tracing::trace!(?reason, "TAP frame ignored");
            }
            Err(e) => {
                self.stats.malformed_frames += 1;
                tracing::debug!(error = %e, "malformed TAP frame dropped");
            }
        }
        self.after(now);
    }

    pub fn handle_datagram(&mut self, now: Time, from: PeerAddr, bytes: Bytes) {
        self.node.handle_datagram(now, from, bytes);
        self.after(now);
    }

    pub fn handle_stream_message(&mut self, now: Time, from: PeerAddr, bytes: Bytes) {
        self.node.handle_stream_message(now, from, bytes);
        self.after(now);
    }

    pub fn handle_peer_unreachable(&mut self, now: Time, peer: PeerAddr) {
        self.node.handle_peer_unreachable(now, peer);
        self.after(now);
    }

    pub fn handle_timeout(&mut self, now: Time) {
        self.node.handle_timeout(now);
        self.igmp.handle_timeout(now);
        self.after(now);
    }

    // ----- outputs ------------------------------------------------------

    /// Next frame to write into the TAP. Drain after every input.
    #[must_use]
    pub fn poll_tap_frame(&mut self) -> Option<TapWrite> {
        self.tap_out.pop_front()
    }

    /// Next overlay message to send. Drain after every input.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<crate::io::Transmit> {
        self.node.poll_transmit()
    }

    /// Node events the middleware did not consume (joins, peer failures).
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Earliest deadline of the node and the querier.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        match (self.node.poll_timeout(), self.igmp.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- introspection ------------------------------------------------

    pub fn node(&self) -> &Node {
        &self.node
    }
    pub fn node_mut(&mut self) -> &mut Node {
        &mut self.node
    }
    pub fn igmp(&self) -> &IgmpRouter {
        &self.igmp
    }
    pub fn stats(&self) -> &MiddlewareStats {
        &self.stats
    }
    pub fn config(&self) -> &MiddlewareConfig {
        &self.cfg
    }

    // ----- internals ----------------------------------------------------

    /// Move IGMP decisions into the node and node deliveries into the TAP.
    fn after(&mut self, now: Time) {
        while let Some(e) = self.igmp.poll_event() {
            // A local listener makes this host a member: it announces the
            // group in the overlay's directory (one member per announcing
            // host; the record is last-writer-wins) until its last local
            // listener leaves.
            match e {
                IgmpEvent::Joined(g) => {
                    let t = self.topic_of(g);
                    self.node.subscribe(now, t);
                    self.node.announce_group(now, g, None, 1);
                }
                IgmpEvent::Left(g) => {
                    let t = self.topic_of(g);
                    self.node.unsubscribe(now, t);
                    self.node.withdraw_group(now, g);
                }
            }
        }
        while let Some(f) = self.igmp.poll_frame() {
            if let Some(w) = TapWrite::from_frame(f) {
                self.push_tap(w);
            }
        }
        while let Some(e) = self.node.poll_event() {
            match e {
                Event::GroupData { topic, payload, .. } => self.deliver(topic, payload),
                other => self.events.push_back(other),
            }
        }
    }

    fn deliver(&mut self, topic: Topic, packet: Bytes) {
        let group = match frame::validate_ipv4_multicast_packet(&packet) {
            Ok((_, group, _)) => group,
            Err(e) => {
                self.stats.rejected_from_overlay += 1;
                tracing::debug!(error = %e, "packet from the overlay rejected");
                return;
            }
        };
        if self.topic_of(group) != topic {
            // Delivered on another group's tree: forged or confused.
            self.stats.rejected_from_overlay += 1;
            return;
        }
        if !self.igmp.has_listeners(group) {
            self.stats.not_subscribed += 1;
            return;
        }
        let mut ethernet = [0u8; 14];
        ethernet[..6].copy_from_slice(&frame::group_mac(group));
        ethernet[6..12].copy_from_slice(&frame::ROUTER_MAC);
        ethernet[12..].copy_from_slice(&0x0800u16.to_be_bytes());
        self.push_tap(TapWrite { ethernet, packet });
    }

    /// The topic of `group`. A topic is a blake3 hash: computing it for
    /// every captured or delivered packet would be the costliest step of the
    /// per-packet path, so topics are remembered (a host sees few groups;
    /// the cache is simply emptied should it ever fill).
    fn topic_of(&mut self, group: Ipv4Addr) -> Topic {
        if let Some(t) = self.topics.get(&group) {
            return *t;
        }
        if self.topics.len() >= TOPIC_CACHE {
            self.topics.clear();
        }
        let t = Topic::ipv4_group(group);
        self.topics.insert(group, t);
        t
    }

    fn push_tap(&mut self, f: TapWrite) {
        if self.tap_out.len() >= self.cfg.max_tap_queue {
            self.stats.tap_queue_full += 1;
            return;
        }
        self.stats.tap_frames_out += 1;
        self.stats.tap_bytes_out += f.len() as u64;
        self.tap_out.push_back(f);
    }
}
