//! `Node`: one overlay participant, the engine's public face. It owns the
//! Pastry state machine and the services built on it (Scribe, the DHT and
//! the management services on the DHT), decodes what the runtime hands it,
//! drains its children's upcalls and results inside its own `handle_*`
//! calls, and exposes the outputs through `poll_*`.
//!
//! Message dispatch by type: 0x01–0x1f Pastry, 0x20–0x2f Scribe control,
//! 0x30 data, 0x58–0x5a DHT replies and replication. Routed messages are
//! handed to the service their `Route` names: Scribe (2–4), DHT (5).
//! Service timers: Scribe 1, DHT 2, management 3.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::Arc;

use bytes::Bytes;

use crate::addr::{NodeHandle, PeerAddr};
use crate::config::{Config, ConfigError};
use crate::dht::{DHT_TIMER, Dht, DhtError, DhtReply, Expect};
use crate::id::{Key, NodeId};
use crate::io::Transmit;
use crate::mgmt::{AllocError, GroupRecord, MGMT_TIMER, Mgmt, MgmtEvent, PoolExhausted};
use crate::pastry::{Pastry, TimerKind, Upcall};
use crate::rng::Rng;
use crate::scribe::{SCRIBE_TIMER, Scribe, ScribeEvent, Topic};
use crate::stats::Stats;
use crate::time::{Duration, Time};
use crate::wire::dht::{Direct, Op, RecordName, SERVICE_DHT};
use crate::wire::pastry::{Repr, Service};
use crate::wire::scribe::{Control, DATA};
use crate::wire::{Header, MsgType};

/// What the engine tells its application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The node is a full member of the overlay.
    Joined,
    /// Every bootstrap peer was tried and none let us in.
    JoinFailed,
    /// An application lookup (`Node::route`) reached this node, the live
    /// node numerically closest to `key`.
    Delivered {
        key: Key,
        origin: NodeHandle,
        hops: u8,
        payload: Bytes,
    },
    /// A peer was declared dead and removed from the routing state.
    PeerDown { peer: NodeHandle },
    /// A packet published on a topic we subscribed to.
    GroupData {
        topic: Topic,
        source: NodeId,
        payload: Bytes,
    },
    /// A depth-first anycast was taken here by the anycast policy.
    Anycast {
        topic: Topic,
        request: u64,
        requester: NodeHandle,
        payload: Bytes,
    },
    /// An anycast we sent found no taker.
    AnycastFailed { topic: Topic, request: u64 },
    /// The outcome of a `dht_*` request.
    Dht {
        request: u64,
        result: Result<DhtReply, DhtError>,
    },
    /// `allocate_address` claimed `addr` for us; the lease is renewed while
    /// the node runs.
    AddressAllocated { addr: Ipv4Addr, lease_until: Time },
    /// Every address of the pool is taken; its `Display` is "address pool
    /// 172.16.0.0/20 exhausted".
    AddressPoolExhausted(PoolExhausted),
    /// Our address was taken by another node after our lease lapsed (we
    /// could not renew it); a new allocation is under way.
    AddressLost { addr: Ipv4Addr },
    /// The answer to `list_groups`: every announced active group, by address.
    GroupDirectory(Vec<GroupRecord>),
}

/// `route` was called before the node joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the node has not joined the overlay yet")]
pub struct NotJoined;

/// One overlay participant. See the crate documentation for the contract.
#[derive(Debug)]
pub struct Node {
    pastry: Pastry,
    scribe: Scribe,
    dht: Dht,
    mgmt: Mgmt,
    /// Subscriptions made before the node joined; sent once it has.
    pending_subscriptions: Vec<Topic>,
    events: VecDeque<Event>,
    fired: Vec<u8>,
}

impl Node {
    /// A node with id `id`, reachable at `me`, whose every random choice
    /// derives from `seed`.
    ///
    /// A runtime that builds many nodes from one configuration can pass
    /// them the same `Arc<Config>`, which they then share.
    ///
    /// # Panics
    /// If `cfg` is invalid; use [`Node::try_new`] to get the error instead.
    pub fn new(cfg: impl Into<Arc<Config>>, id: NodeId, me: PeerAddr, seed: u64) -> Self {
        match Self::try_new(cfg, id, me, seed) {
            Ok(n) => n,
            Err(e) => panic!("invalid alm Config: {e}"),
        }
    }

    pub fn try_new(
        cfg: impl Into<Arc<Config>>,
        id: NodeId,
        me: PeerAddr,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        let cfg = cfg.into();
        cfg.validate()?;
        let mut rng = Rng::new(seed);
        let scribe = Scribe::new(cfg.scribe.clone());
        let dht = Dht::new(cfg.dht.clone());
        let mgmt = Mgmt::new(cfg.dht.mgmt.clone());
        let pastry = Pastry::new(cfg, NodeHandle::new(id, me), &mut rng);
        Ok(Node {
            pastry,
            scribe,
            dht,
            mgmt,
            pending_subscriptions: Vec::new(),
            events: VecDeque::new(),
            fired: Vec::new(),
        })
    }

    // ----- inputs -------------------------------------------------------

    /// A datagram arrived from `from`.
    pub fn handle_datagram(&mut self, now: Time, from: PeerAddr, bytes: Bytes) {
        self.pastry.stats.msgs_received += 1;
        self.pastry.stats.bytes_received += bytes.len() as u64;
        self.dispatch(now, from, bytes);
        self.drain_upcalls(now);
    }

    /// A message arrived on the reliable channel from `from`.
    pub fn handle_stream_message(&mut self, now: Time, from: PeerAddr, bytes: Bytes) {
        // Every message type is valid on both channels; the channel only
        // says how it travelled.
        self.handle_datagram(now, from, bytes);
    }

    /// The runtime learnt that `peer` cannot be reached.
    pub fn handle_peer_unreachable(&mut self, now: Time, peer: PeerAddr) {
        self.pastry.peer_unreachable(now, peer);
        self.drain_upcalls(now);
    }

    /// Fire due timers. Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Time) {
        self.fired.clear();
        let mut fired = std::mem::take(&mut self.fired);
        self.pastry.handle_timeout(now, &mut fired);
        if fired.contains(&SCRIBE_TIMER) {
            self.scribe.handle_tick(now, &mut self.pastry);
        }
        if fired.contains(&DHT_TIMER) {
            self.dht.handle_tick(now, &mut self.pastry);
        }
        if fired.contains(&MGMT_TIMER) {
            self.mgmt.handle_tick(now, &mut self.dht, &mut self.pastry);
        }
        self.fired = fired;
        self.drain_upcalls(now);
    }

    // ----- commands -----------------------------------------------------

    /// Join through the first reachable of `bootstrap`; with an empty list,
    /// start a new overlay. `Event::Joined` or `Event::JoinFailed` follows.
    pub fn join_overlay(&mut self, now: Time, bootstrap: &[PeerAddr]) {
        self.pastry.join(now, bootstrap);
        self.drain_upcalls(now);
    }

    /// Route `payload` to the live node numerically closest to `key`, where
    /// it surfaces as `Event::Delivered`.
    pub fn route(&mut self, now: Time, key: Key, payload: Bytes) -> Result<(), NotJoined> {
        if !self.pastry.is_active() {
            return Err(NotJoined);
        }
        self.pastry.route(now, key, Service::Lookup, payload);
        self.drain_upcalls(now);
        Ok(())
    }

    /// Join the multicast tree of `topic`; its packets arrive as
    /// `Event::GroupData`. Before the node has joined the overlay the
    /// subscription is remembered and sent once it has.
    pub fn subscribe(&mut self, now: Time, topic: Topic) {
        if !self.pastry.is_active() {
            if !self.pending_subscriptions.contains(&topic) {
                self.pending_subscriptions.push(topic);
            }
            return;
        }
        self.scribe.subscribe(now, &mut self.pastry, topic);
        self.drain_upcalls(now);
    }

    /// Leave the tree of `topic`.
    pub fn unsubscribe(&mut self, now: Time, topic: Topic) {
        self.pending_subscriptions.retain(|t| *t != topic);
        self.scribe.unsubscribe(now, &mut self.pastry, topic);
        self.drain_upcalls(now);
    }

    /// Send `payload` to every subscriber of `topic` but ourselves. Works
    /// whether or not this node subscribed.
    pub fn publish(&mut self, now: Time, topic: Topic, payload: Bytes) -> Result<(), NotJoined> {
        if !self.pastry.is_active() {
            return Err(NotJoined);
        }
        self.scribe.publish(now, &mut self.pastry, topic, payload);
        self.drain_upcalls(now);
        Ok(())
    }

    /// Depth-first anycast to the tree of `topic`: the first node whose
    /// policy accepts surfaces `Event::Anycast`; if none does, we get
    /// `Event::AnycastFailed`.
    pub fn anycast(
        &mut self,
        now: Time,
        topic: Topic,
        request: u64,
        payload: Bytes,
    ) -> Result<(), NotJoined> {
        if !self.pastry.is_active() {
            return Err(NotJoined);
        }
        self.scribe
            .anycast(now, &mut self.pastry, topic, request, payload);
        self.drain_upcalls(now);
        Ok(())
    }

    /// Replace the anycast acceptance policy (default: any member).
    pub fn set_anycast_policy(&mut self, policy: Box<dyn crate::scribe::AnycastPolicy>) {
        self.scribe.set_anycast_policy(policy);
    }

    // ----- DHT ----------------------------------------------------------

    fn dht_request(&mut self, now: Time, namespace: &[u8], key: &[u8], op: Op) -> u64 {
        let name = RecordName {
            namespace: Bytes::copy_from_slice(namespace),
            key: Bytes::copy_from_slice(key),
            bucket: None,
        };
        let id = self.dht.request(now, &mut self.pastry, name, op);
        self.drain_upcalls(now);
        id
    }

    /// Store `value` under (`namespace`, `key`) for `lease`, owned by this
    /// node, if the key is free (absent or expired) or already ours: a
    /// claim. Another owner's live record gives `DhtError::Conflict`. The
    /// result arrives as `Event::Dht` with the returned request id.
    /// Bounds: namespace 32, key 64, value 512 bytes.
    pub fn dht_put(
        &mut self,
        now: Time,
        namespace: &[u8],
        key: &[u8],
        value: Bytes,
        lease: Duration,
    ) -> u64 {
        self.dht_put_cas(now, namespace, key, value, lease, Expect::Free)
    }

    /// `dht_put` with an explicit expectation: `Expect::Version(v)` replaces
    /// the record only if it is still at version `v` (compare-and-set after a
    /// `dht_get`), `Expect::Any` unconditionally.
    pub fn dht_put_cas(
        &mut self,
        now: Time,
        namespace: &[u8],
        key: &[u8],
        value: Bytes,
        lease: Duration,
        expect: Expect,
    ) -> u64 {
        let op = Op::Put {
            owner: self.id(),
            expect: expect.to_wire(),
            lease_ms: self.dht.lease_ms(lease),
            value,
        };
        self.dht_request(now, namespace, key, op)
    }

    /// Read a record: `DhtReply::Found` or `DhtError::NotFound`.
    pub fn dht_get(&mut self, now: Time, namespace: &[u8], key: &[u8]) -> u64 {
        self.dht_request(now, namespace, key, Op::Get)
    }

    /// Extend our record's lease to `lease` from now.
    pub fn dht_renew(&mut self, now: Time, namespace: &[u8], key: &[u8], lease: Duration) -> u64 {
        let op = Op::Renew {
            owner: self.id(),
            lease_ms: self.dht.lease_ms(lease),
        };
        self.dht_request(now, namespace, key, op)
    }

    /// Delete our record (succeeds if it is already gone).
    pub fn dht_release(&mut self, now: Time, namespace: &[u8], key: &[u8]) -> u64 {
        let op = Op::Release { owner: self.id() };
        self.dht_request(now, namespace, key, op)
    }

    // ----- management ------------------------------------------------------

    /// Claim a unique address from `prefix/prefix_len` (network and
    /// broadcast excluded) for the TAP interface: `Event::AddressAllocated`
    /// or `Event::AddressPoolExhausted` follows. Before the node joined, the
    /// allocation waits for it. The lease is renewed while the node runs;
    /// call `release_address` on a clean exit.
    pub fn allocate_address(
        &mut self,
        now: Time,
        prefix: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), AllocError> {
        let r = self
            .mgmt
            .allocate(now, &mut self.dht, &mut self.pastry, prefix, prefix_len);
        self.drain_upcalls(now);
        r
    }

    /// Give our address back to the pool (or abandon an allocation).
    pub fn release_address(&mut self, now: Time) {
        self.mgmt.release(now, &mut self.dht, &mut self.pastry);
        self.drain_upcalls(now);
    }

    /// The address we hold and its lease.
    pub fn address(&self) -> Option<(Ipv4Addr, Time)> {
        self.mgmt.address()
    }

    /// Announce `group` as active in the directory (from its tree root or a
    /// member), and keep the record alive until `withdraw_group`.
    pub fn announce_group(
        &mut self,
        now: Time,
        group: Ipv4Addr,
        name: Option<String>,
        members_estimate: u32,
    ) {
        self.mgmt.announce_group(
            now,
            &mut self.dht,
            &mut self.pastry,
            group,
            name,
            members_estimate,
        );
        self.drain_upcalls(now);
    }

    /// Stop announcing `group`.
    pub fn withdraw_group(&mut self, now: Time, group: Ipv4Addr) {
        self.mgmt
            .withdraw_group(now, &mut self.dht, &mut self.pastry, group);
        self.drain_upcalls(now);
    }

    /// Fetch the directory of active groups: `Event::GroupDirectory` follows.
    pub fn list_groups(&mut self, now: Time) {
        self.mgmt.list_groups(now, &mut self.dht, &mut self.pastry);
        self.drain_upcalls(now);
    }

    // ----- outputs ------------------------------------------------------

    /// Next message to send. Drain until `None` after every `handle_*` or
    /// command call.
    #[must_use]
    // The `poll_*` are called several times per event, from the runtime's
    // crate: inlined there, the 144-byte `Transmit` is not copied through
    // a return slot and back.
    #[inline]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.pastry.transmits.pop_front()
    }

    /// Next event for the application. Drain until `None` after every
    /// `handle_*` or command call.
    #[must_use]
    #[inline]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Give back the memory of buffers left idle by a drain: the output and
    /// upcall queues, empty maps of pending acks, probes and dead nodes, and
    /// unused timer-heap capacity. Bursts (a join, a repair, a maintenance
    /// round) make them grow far beyond their usual size, and in a process
    /// hosting a million nodes (the simulator) that idle capacity would be
    /// most of the memory: such a runtime calls this after every drain. A
    /// daemon hosting one node need not, and then reuses its buffers without
    /// allocating on the hot path. Only allocations change, never behaviour.
    // Inlined: the runtime calls it after every call, mostly to find
    // nothing to release.
    #[inline]
    pub fn release_idle_memory(&mut self) {
        if self.events.is_empty() && self.events.capacity() != 0 {
            self.events = VecDeque::new();
        }
        self.pastry.release_idle();
    }

    /// The byte ranges of a `Node` that every call reads, as (offset from
    /// the node's address, length): the Pastry struct but its RTT cache
    /// (`Pastry::hot_ranges`), and the node's and its services' event
    /// queues, which every call checks on its way out. The rest of the
    /// services' state is left out: a Pastry message does not reach it.
    /// From the type alone, so a runtime can prefetch these for a node
    /// that another thread may be running; `hot_memory` adds the buffers,
    /// which only a node's own thread may look up.
    pub fn hot_ranges() -> [(usize, usize); 6] {
        let pastry = std::mem::offset_of!(Node, pastry);
        let [(a, la), (b, lb)] = Pastry::hot_ranges();
        let queue = |offset| (offset, 1);
        [
            (pastry + a, la),
            (pastry + b, lb),
            queue(std::mem::offset_of!(Node, events)),
            queue(std::mem::offset_of!(Node, dht.results)),
            queue(std::mem::offset_of!(Node, mgmt.events)),
            queue(std::mem::offset_of!(Node, scribe.events)),
        ]
    }

    /// See `Pastry::hot_memory`.
    #[inline]
    pub fn hot_memory(&self) -> [*const u8; 6] {
        self.pastry.hot_memory()
    }

    /// When `handle_timeout` should next be called. Read it after draining.
    #[must_use]
    #[inline]
    pub fn poll_timeout(&self) -> Option<Time> {
        self.pastry.poll_timeout().map(|(t, _)| t)
    }

    /// The next deadline with its reason, for logs.
    #[must_use]
    pub fn next_timer(&self) -> Option<(Time, TimerKind)> {
        self.pastry.poll_timeout()
    }

    // ----- introspection ------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.pastry.me().id
    }
    pub fn addr(&self) -> PeerAddr {
        self.pastry.me().addr
    }
    pub fn is_joined(&self) -> bool {
        self.pastry.is_active()
    }
    pub fn routing_table_len(&self) -> usize {
        self.pastry.routing_table().len()
    }
    pub fn leaf_set(&self) -> Vec<NodeHandle> {
        self.pastry.leaf_set().handles()
    }
    pub fn pastry(&self) -> &Pastry {
        &self.pastry
    }
    pub fn scribe(&self) -> &Scribe {
        &self.scribe
    }
    pub fn dht(&self) -> &Dht {
        &self.dht
    }
    pub fn mgmt(&self) -> &Mgmt {
        &self.mgmt
    }
    pub fn stats(&self) -> &Stats {
        &self.pastry.stats
    }

    // ----- internals ----------------------------------------------------

    fn dispatch(&mut self, now: Time, from: PeerAddr, bytes: Bytes) {
        let hdr = match Header::new_checked(&bytes[..]) {
            Ok(h) => h,
            Err(e) => return self.decode_error(from, e),
        };
        let sender = NodeHandle::new(hdr.sender(), from);
        if sender.id == self.id() {
            self.pastry.stats.dropped_self += 1;
            return;
        }
        let raw = hdr.raw_type();
        if raw == DATA {
            self.scribe
                .handle_data(now, &mut self.pastry, sender, &bytes);
            return;
        }
        if (0x50..0x60).contains(&raw) {
            match Direct::parse(raw, &bytes) {
                Ok(d) => self.dht.handle_direct(now, &mut self.pastry, sender, d),
                Err(e) => self.decode_error(from, e),
            }
            return;
        }
        if (0x20..0x30).contains(&raw) {
            match Control::parse(raw, &bytes) {
                Ok(c) => self.scribe.handle_control(now, &mut self.pastry, sender, c),
                Err(e) => self.decode_error(from, e),
            }
            return;
        }
        let ty = match hdr.msg_type() {
            Ok(t) => t,
            Err(e) => return self.decode_error(from, e),
        };
        match ty {
            MsgType::Route
            | MsgType::RouteAck
            | MsgType::State
            | MsgType::Announce
            | MsgType::Ping
            | MsgType::Pong
            | MsgType::LeafSetRequest
            | MsgType::RowRequest
            | MsgType::RttReport => match Repr::parse(ty, &bytes) {
                Ok(repr) => self.pastry.handle(now, sender, repr),
                Err(e) => self.decode_error(from, e),
            },
        }
    }

    fn decode_error(&mut self, from: PeerAddr, e: crate::wire::Error) {
        self.pastry.stats.decode_errors += 1;
        tracing::debug!(%from, error = %e, "dropped undecodable message");
    }

    /// Act on everything Pastry asked for, and on the services' results.
    /// Runs inside every `handle_*` so upcalls never leak out of the node.
    /// Services react to each other (a DHT result makes the management
    /// service send the next request, which may be delivered here at once),
    /// so this loops until every queue is empty.
    #[inline]
    fn drain_upcalls(&mut self, now: Time) {
        // Most calls leave nothing to act on: answer that inline, without
        // entering the loop below (whose frame is large).
        if self.pastry.upcalls.is_empty()
            && self.dht.results.is_empty()
            && self.mgmt.events.is_empty()
            && self.scribe.events.is_empty()
        {
            return;
        }
        self.drain_pending(now);
    }

    /// `drain_upcalls` once something is pending.
    #[inline(never)]
    fn drain_pending(&mut self, now: Time) {
        loop {
            let mut idle = true;
            while let Some(u) = self.pastry.upcalls.pop_front() {
                idle = false;
                self.upcall(now, u);
            }
            while let Some((request, result)) = self.dht.results.pop_front() {
                idle = false;
                if self.mgmt.owns(request) {
                    self.mgmt
                        .on_result(now, &mut self.dht, &mut self.pastry, request, result);
                } else {
                    self.events.push_back(Event::Dht { request, result });
                }
            }
            while let Some(e) = self.mgmt.events.pop_front() {
                idle = false;
                self.events.push_back(match e {
                    MgmtEvent::AddressAllocated { addr, lease_until } => {
                        Event::AddressAllocated { addr, lease_until }
                    }
                    MgmtEvent::AddressPoolExhausted(e) => Event::AddressPoolExhausted(e),
                    MgmtEvent::AddressLost { addr } => Event::AddressLost { addr },
                    MgmtEvent::GroupDirectory(g) => Event::GroupDirectory(g),
                });
            }
            if idle {
                break;
            }
        }
        self.drain_scribe_events();
    }

    fn upcall(&mut self, now: Time, u: Upcall) {
        match u {
            Upcall::Joined => {
                self.events.push_back(Event::Joined);
                for topic in std::mem::take(&mut self.pending_subscriptions) {
                    self.scribe.subscribe(now, &mut self.pastry, topic);
                }
                self.mgmt.on_joined(now, &mut self.dht, &mut self.pastry);
            }
            Upcall::JoinFailed => self.events.push_back(Event::JoinFailed),
            Upcall::Deliver(route) => match route.service {
                Service::Lookup => {
                    self.pastry.stats.lookups_delivered += 1;
                    self.events.push_back(Event::Delivered {
                        key: route.key,
                        origin: route.origin,
                        hops: route.hops,
                        payload: route.payload,
                    });
                }
                Service::Other(SERVICE_DHT) => self.dht.deliver(now, &mut self.pastry, route),
                Service::Other(_) => self.scribe.deliver(now, &mut self.pastry, route),
                Service::Join => self.pastry.stats.dropped_unexpected += 1,
            },
            Upcall::Forward { route, next } => {
                if route.service == Service::Other(SERVICE_DHT) {
                    self.pastry.forward(now, route, next);
                } else {
                    self.scribe.forward(now, &mut self.pastry, route, next);
                }
            }
            Upcall::PeerDown(peer) => {
                self.scribe.peer_down(now, &mut self.pastry, peer);
                self.dht.peer_down(now, &mut self.pastry, peer);
                self.events.push_back(Event::PeerDown { peer });
            }
            Upcall::LeafSetChanged => {
                self.scribe.leaf_set_changed(now, &mut self.pastry);
                self.dht.leaf_set_changed(now, &mut self.pastry);
            }
        }
    }

    fn drain_scribe_events(&mut self) {
        while let Some(e) = self.scribe.events.pop_front() {
            self.events.push_back(match e {
                ScribeEvent::Data {
                    topic,
                    source,
                    payload,
                } => Event::GroupData {
                    topic,
                    source,
                    payload,
                },
                ScribeEvent::Anycast {
                    topic,
                    request,
                    requester,
                    payload,
                } => Event::Anycast {
                    topic,
                    request,
                    requester,
                    payload,
                },
                ScribeEvent::AnycastFailed { topic, request } => {
                    Event::AnycastFailed { topic, request }
                }
            });
        }
    }
}
