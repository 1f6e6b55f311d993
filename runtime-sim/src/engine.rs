//! The simulator's view of a protocol engine.
//!
//! [`Engine`] is the slice of the `alm_core::Node` contract the simulator
//! drives: `handle_*` inputs, the `join_overlay`/`route` commands, and the
//! three polls. Outputs are normalised into [`SimTransmit`] (wire bytes in one
//! `Bytes`) and [`SimEvent`] (the variants a scenario measures; everything
//! else is [`SimEvent::Other`]). `alm_core::Node` implements it in
//! `crate::alm`; `crate::fake` has a trivial engine for testing the machinery.

use alm_core::{Key, NodeHandle, NodeId, PeerAddr, Time, Topic};
use bytes::Bytes;
use std::net::Ipv4Addr;

/// Which of the two channel classes a transmit uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimChannel {
    /// Best effort: subject to the link loss model.
    Datagram,
    /// Reliable and ordered per (sender, receiver) pair; subject to the
    /// sender's uplink serialisation delay.
    Stream,
}

/// One outgoing message: the complete wire bytes and where they go.
#[derive(Clone, Debug)]
pub struct SimTransmit {
    pub to: PeerAddr,
    pub channel: SimChannel,
    /// The engine's label for the message (`alm_core::Node`: the wire
    /// header's type byte; 0 if it has none), so that observers can count
    /// messages by kind without reading `bytes`: a worker thread wrote
    /// them, and the simulator's thread would fetch them from its cache.
    pub kind: u8,
    pub bytes: Bytes,
}

/// Engine events the simulator's scenarios look at.
#[derive(Clone, Debug)]
pub enum SimEvent {
    Joined,
    JoinFailed,
    Delivered {
        key: Key,
        origin: NodeHandle,
        hops: u8,
        payload: Bytes,
    },
    PeerDown {
        peer: NodeHandle,
    },
    /// A packet published on a topic this node subscribed to.
    GroupData {
        topic: Topic,
        source: NodeId,
        payload: Bytes,
    },
    /// The management service allocated `addr` to this node.
    AddressAllocated {
        addr: Ipv4Addr,
        lease_until: Time,
    },
    /// The address pool has no free address for this node.
    AddressPoolExhausted,
    /// This node's address was taken by another node (its lease lapsed).
    AddressLost {
        addr: Ipv4Addr,
    },
    /// Any other engine event (multicast, cache...): counted, not interpreted.
    Other,
}

/// Engine counters the reports aggregate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub msgs_sent: u64,
    pub msgs_received: u64,
    pub bytes_sent: u64,
    pub decode_errors: u64,
    /// RTT probes sent, by cause (see [`ProbesByCause`]).
    pub probes: ProbesByCause,
}

/// RTT probes (pings, not counting retries) by why they were sent: what
/// proximity neighbour selection costs against liveness checking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProbesByCause {
    /// Sent while joining: measuring the candidates the join brought.
    pub joining: u64,
    /// Active, measuring a routing-table candidate or a slot's holder.
    pub table: u64,
    /// Active, checking a leaf heard of second-hand.
    pub new_leaf: u64,
    /// Stale leaves, the routing-table walk, unacknowledged hops.
    pub liveness: u64,
}

impl std::ops::AddAssign for ProbesByCause {
    fn add_assign(&mut self, o: Self) {
        self.joining += o.joining;
        self.table += o.table;
        self.new_leaf += o.new_leaf;
        self.liveness += o.liveness;
    }
}

/// A sans-IO overlay participant, as the simulator drives it.
///
/// Drain rule: after every `handle_*` or command call the simulator polls
/// `poll_transmit` and `poll_event` until both return `None`, calls
/// `release_idle_memory`, then reads `poll_timeout`. A poll that returns `Some` after having returned `None`
/// with no input in between is a *drain violation*, counted in the reports.
pub trait Engine {
    fn handle_datagram(&mut self, now: Time, from: PeerAddr, bytes: Bytes);
    fn handle_stream_message(&mut self, now: Time, from: PeerAddr, bytes: Bytes);
    fn handle_peer_unreachable(&mut self, now: Time, peer: PeerAddr);
    /// Must tolerate spurious calls.
    fn handle_timeout(&mut self, now: Time);
    fn join_overlay(&mut self, now: Time, bootstrap: &[PeerAddr]);
    fn route(&mut self, now: Time, key: Key, payload: Bytes);

    fn poll_transmit(&mut self) -> Option<SimTransmit>;
    fn poll_event(&mut self) -> Option<SimEvent>;
    fn poll_timeout(&self) -> Option<Time>;
    /// Called after every drain: give back buffer capacity the engine does
    /// not need between calls (a million engines share one process).
    /// Must not change behaviour. The default does nothing.
    fn release_idle_memory(&mut self) {}
    /// Called a few events before an input: start fetching the memory the
    /// engine is about to touch into the CPU cache. Must not change
    /// behaviour. The default fetches every cache line of the engine's
    /// struct; an engine that knows which of its fields and buffers are
    /// hot fetches just those.
    fn prefetch(&self)
    where
        Self: Sized,
    {
        Self::prefetch_at((self as *const Self).cast());
    }
    /// `prefetch` for an engine at `p` that another thread may be running:
    /// from its address alone, never reading it (a worker prefetches the
    /// engines of jobs it may not be the one to run). The default fetches
    /// every cache line of the struct; an engine that knows its hot fields
    /// fetches just those.
    fn prefetch_at(p: *const u8)
    where
        Self: Sized,
    {
        crate::sim::prefetch_lines_at::<Self>(p);
    }

    fn is_joined(&self) -> bool;
    fn routing_table_len(&self) -> usize;
    fn leaf_set_len(&self) -> usize;
    /// Ids in the leaf set, any order (for accuracy diagnostics).
    fn leaf_set_ids(&self) -> Vec<u128>;
    fn stats(&self) -> EngineStats;
}
