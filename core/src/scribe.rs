//! Scribe (Castro, Druschel, Kermarrec, Rowstron, JSAC 2002) on our Pastry,
//! with the data path of the Multicast Middleware paper.
//!
//! **State owned:** per topic (`Topic`, a key on the ring) whether the local
//! application is a member, the tree parent and children with their
//! liveness, whether a JOIN is outstanding, a duplicate filter per source,
//! and counters; per topic published from off the tree, where to send data.
//!
//! **Consumes:** Pastry upcalls for routed Scribe messages (a JOIN or
//! off-tree data intercepted on the way to the topic's root, or delivered at
//! the root), direct tree messages (`wire::scribe::Control`, data packets),
//! peer failures, leaf-set changes, its periodic tick, and the commands
//! `subscribe`, `unsubscribe`, `publish`, `anycast`.
//!
//! **Emits:** transmits through Pastry, and `ScribeEvent`s: data delivered to
//! a member, anycast requests that a local policy may take.
//!
//! Tree building (§2.3 of the Scribe paper): a JOIN is routed toward the
//! topic key; each hop that is not yet on the tree adopts the previous hop as
//! child and continues the JOIN as its own; the first hop already on the tree
//! (or the root) stops it. Parents confirm with `JoinAck`, so every node
//! knows its parent and trees can forward in both directions. A node whose
//! children would exceed `max_children` pushes the joiner down to one of its
//! children instead of refusing it (the capacity-aware trees of the Multicast
//! Middleware paper). Tree links carry heartbeats (data counts as one); a
//! node whose parent falls silent re-joins, a parent drops silent children.
//! When the leaf set changes, a root that is no longer closest to its topic
//! joins toward the new root, which takes over.
//!
//! Data: tree members inject at themselves and every node forwards to all
//! tree neighbours but the one a packet came from; an off-tree publisher sends
//! toward the root (routed once, then straight to the tree node that answered
//! with a `TreeHint`). Duplicates are suppressed by (source, sequence), a node
//! never delivers its own packets, and a hop budget guards against loops.
//! Fan-out sends one inline 56-byte header and a clone of the received
//! `Bytes` per neighbour: the payload is never copied.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use crate::addr::{NodeHandle, PeerAddr};
use crate::id::NodeId;
use crate::io::{Channel, Transmit};
use crate::pastry::{Pastry, TimerKind};
use crate::time::{Duration, Time};
use crate::wire::pastry::{Route, Service};
use crate::wire::scribe::{
    ANYCAST_MAX_VISITED, Anycast, Control, DATA_FIXED_LEN, DataHeader, FLAG_TO_TREE,
    SERVICE_ANYCAST, SERVICE_DATA, SERVICE_JOIN,
};

/// A Scribe topic: a key on the ring whose root is the node closest to it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Topic(pub NodeId);

impl Topic {
    /// The topic of an IPv4 multicast group. The namespace tag keeps group
    /// keys apart from the other records the ring stores.
    pub fn ipv4_group(group: std::net::Ipv4Addr) -> Topic {
        Topic(NodeId::hash(&[b"alm/ipv4-group", &group.octets()]))
    }

    /// A topic named by arbitrary bytes under a namespace.
    pub fn named(namespace: &[u8], name: &[u8]) -> Topic {
        Topic(NodeId::hash(&[namespace, name]))
    }
}

/// Scribe tunables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScribeConfig {
    /// Most children per topic before joiners are pushed down; `None` means
    /// unlimited.
    pub max_children: Option<usize>,
    /// Interval of tree-link heartbeats when no data flows.
    pub heartbeat: Duration,
    /// A parent silent this long is presumed dead and the node re-joins.
    pub parent_timeout: Duration,
    /// A child silent this long is dropped.
    pub child_timeout: Duration,
    /// How long to wait for a `JoinAck` before routing the JOIN again.
    pub join_retry: Duration,
    /// How often an off-tree publisher re-routes one packet toward the root
    /// to refresh where it sends (the tree may have changed).
    pub publisher_refresh: Duration,
    /// Overlay hop budget of a data packet.
    pub data_hops: u8,
    /// Sources remembered per topic by the duplicate filter.
    pub dup_sources: usize,
}

impl Default for ScribeConfig {
    fn default() -> Self {
        ScribeConfig {
            max_children: None,
            heartbeat: Duration::from_millis(1_000),
            parent_timeout: Duration::from_millis(3_000),
            child_timeout: Duration::from_millis(4_000),
            join_retry: Duration::from_millis(1_500),
            publisher_refresh: Duration::from_secs(2),
            data_hops: 64,
            dup_sources: 64,
        }
    }
}

/// A neighbour on a topic's tree.
#[derive(Debug, Clone, Copy)]
pub struct TreeLink {
    pub handle: NodeHandle,
    pub last_heard: Time,
    pub last_sent: Time,
}

impl TreeLink {
    fn new(handle: NodeHandle, now: Time) -> Self {
        TreeLink {
            handle,
            last_heard: now,
            last_sent: Time::ZERO,
        }
    }
}

/// Role of this node in a topic's tree, in the paper's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Root,
    Forwarder,
    /// Joined, waiting for a parent's acknowledgement.
    Joining,
}

/// Per-topic counters, shown by `almd status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub delivered: u64,
    pub duplicates: u64,
}

/// Remembers which sequence numbers of a source were seen: the highest,
/// and a 64-packet window below it.
#[derive(Debug, Clone, Copy)]
struct SeqWindow {
    source: NodeId,
    top: u32,
    bits: u64,
    used: Time,
}

impl SeqWindow {
    /// Whether `seq` is new; records it.
    fn accept(&mut self, seq: u32) -> bool {
        let ahead = seq.wrapping_sub(self.top);
        if ahead != 0 && ahead < (1 << 31) {
            // Newer: slide the window.
            self.bits = if ahead >= 64 { 0 } else { self.bits << ahead };
            self.bits |= 1;
            self.top = seq;
            return true;
        }
        let behind = self.top.wrapping_sub(seq);
        if behind >= 64 {
            // Too old to tell; a reordering this deep is treated as a duplicate.
            return false;
        }
        let bit = 1u64 << behind;
        let fresh = self.bits & bit == 0;
        self.bits |= bit;
        fresh
    }
}

#[derive(Debug, Clone)]
pub struct TopicState {
    pub member: bool,
    pub parent: Option<TreeLink>,
    pub children: SmallVec<[TreeLink; 8]>,
    /// A JOIN is outstanding since this time (no parent acknowledged yet).
    pub joining_since: Option<Time>,
    /// Our depth in the tree (root = 0), as told by the parent.
    pub depth: u8,
    pub stats: TopicStats,
    seen: SmallVec<[SeqWindow; 4]>,
}

impl TopicState {
    fn new(member: bool) -> Self {
        TopicState {
            member,
            parent: None,
            children: SmallVec::new(),
            joining_since: None,
            depth: 0,
            stats: TopicStats::default(),
            seen: SmallVec::new(),
        }
    }

    pub fn role(&self) -> Role {
        match (&self.parent, self.joining_since) {
            (Some(_), _) => Role::Forwarder,
            (None, Some(_)) => Role::Joining,
            (None, None) => Role::Root,
        }
    }

    fn is_neighbor(&self, id: NodeId) -> bool {
        self.parent.is_some_and(|p| p.handle.id == id)
            || self.children.iter().any(|c| c.handle.id == id)
    }

    fn touch(&mut self, id: NodeId, now: Time) {
        if let Some(p) = &mut self.parent
            && p.handle.id == id
        {
            p.last_heard = now;
        }
        for c in &mut self.children {
            if c.handle.id == id {
                c.last_heard = now;
            }
        }
    }

    /// Duplicate filter keyed by (source, sequence).
    fn fresh(&mut self, source: NodeId, seq: u32, now: Time, cap: usize) -> bool {
        if let Some(w) = self.seen.iter_mut().find(|w| w.source == source) {
            w.used = now;
            return w.accept(seq);
        }
        if self.seen.len() >= cap.max(1) {
            // Forget the source idle the longest.
            if let Some(i) = (0..self.seen.len()).min_by_key(|i| self.seen[*i].used) {
                self.seen.swap_remove(i);
            }
        }
        self.seen.push(SeqWindow {
            source,
            top: seq,
            bits: 1,
            used: now,
        });
        true
    }
}

#[derive(Debug, Clone, Copy)]
struct Publisher {
    /// Tree node that told us to send there.
    contact: Option<PeerAddr>,
    refresh_at: Time,
    last_used: Time,
}

/// What Scribe tells the node's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScribeEvent {
    /// A packet published on a topic we are a member of.
    Data {
        topic: Topic,
        source: NodeId,
        payload: Bytes,
    },
    /// A depth-first anycast was taken here by the policy.
    Anycast {
        topic: Topic,
        request: u64,
        requester: NodeHandle,
        payload: Bytes,
    },
    /// Our anycast found no taker.
    AnycastFailed { topic: Topic, request: u64 },
}

/// Decides whether this node takes an anycast request, and in which order
/// it visits its tree neighbours otherwise. MultiCache plugs its cache
/// lookup in here.
pub trait AnycastPolicy: core::fmt::Debug + Send {
    /// Take the request here? Called at each tree node the DFS visits;
    /// `member` says whether the local application subscribed.
    fn accept(&mut self, topic: Topic, member: bool, payload: &Bytes) -> bool;
    /// Order children to visit (default: as stored).
    fn order(&mut self, _topic: Topic, _children: &mut [NodeHandle]) {}
}

/// Scribe's default: any member takes the request (the paper's anycast).
#[derive(Debug, Default, Clone, Copy)]
pub struct AnyMember;

impl AnycastPolicy for AnyMember {
    fn accept(&mut self, _topic: Topic, member: bool, _payload: &Bytes) -> bool {
        member
    }
}

/// Drop counters of the data path, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataDrops {
    pub not_on_tree: u64,
    pub not_neighbor: u64,
    pub duplicate: u64,
    pub hops_exhausted: u64,
    pub no_tree_at_root: u64,
    pub malformed: u64,
}

/// Scribe's state machine. It is driven by `Node`, which lends it the
/// Pastry layer for sending and routing.
#[derive(Debug)]
pub struct Scribe {
    pub cfg: ScribeConfig,
    topics: BTreeMap<Topic, TopicState>,
    publishers: BTreeMap<Topic, Publisher>,
    seq: u32,
    tick_at: Option<Time>,
    pub events: VecDeque<ScribeEvent>,
    pub drops: DataDrops,
    policy: Box<dyn AnycastPolicy>,
}

/// Timer id of Scribe's tick within `TimerKind::Service`.
pub const SCRIBE_TIMER: u8 = 1;

impl Scribe {
    pub fn new(cfg: ScribeConfig) -> Self {
        Scribe {
            cfg,
            topics: BTreeMap::new(),
            publishers: BTreeMap::new(),
            seq: 0,
            tick_at: None,
            events: VecDeque::new(),
            drops: DataDrops::default(),
            policy: Box::new(AnyMember),
        }
    }

    /// Replace the anycast policy (MultiCache plugs in its cache lookup).
    pub fn set_anycast_policy(&mut self, policy: Box<dyn AnycastPolicy>) {
        self.policy = policy;
    }

    pub fn topics(&self) -> impl Iterator<Item = (&Topic, &TopicState)> {
        self.topics.iter()
    }

    pub fn topic(&self, t: Topic) -> Option<&TopicState> {
        self.topics.get(&t)
    }

    fn ensure_tick(&mut self, now: Time, p: &mut Pastry) {
        if self.tick_at.is_none() && (!self.topics.is_empty() || !self.publishers.is_empty()) {
            let at = now + Duration::from_micros(self.cfg.heartbeat.as_micros() / 2);
            self.tick_at = Some(at);
            p.set_timer(at, TimerKind::Service(SCRIBE_TIMER));
        }
    }

    fn send_control(&mut self, p: &mut Pastry, to: PeerAddr, c: &Control) {
        let bytes = c.to_bytes(p.me().id);
        p.send_raw(Transmit::datagram(to, bytes));
    }

    // ----- commands -----------------------------------------------------

    /// The local application joins `topic`.
    pub fn subscribe(&mut self, now: Time, p: &mut Pastry, topic: Topic) {
        match self.topics.get_mut(&topic) {
            Some(st) => st.member = true,
            None => {
                self.topics.insert(topic, TopicState::new(true));
                self.send_join(now, p, topic);
            }
        }
        self.ensure_tick(now, p);
    }

    /// The local application leaves `topic`; the tree prunes if nobody
    /// below needs us.
    pub fn unsubscribe(&mut self, now: Time, p: &mut Pastry, topic: Topic) {
        if let Some(st) = self.topics.get_mut(&topic) {
            st.member = false;
        }
        self.maybe_prune(now, p, topic);
    }

    /// Route a JOIN toward the topic's root, unless we are the root.
    fn send_join(&mut self, now: Time, p: &mut Pastry, topic: Topic) {
        let Some(st) = self.topics.get_mut(&topic) else {
            return;
        };
        if p.next_hop(topic.0, &[]).is_none() {
            // We are the root.
            st.joining_since = None;
            st.depth = 0;
            return;
        }
        st.joining_since = Some(now);
        p.route(now, topic.0, Service::Other(SERVICE_JOIN), Bytes::new());
    }

    /// Leave the tree for `topic` if we are neither a member nor needed by
    /// children.
    fn maybe_prune(&mut self, _now: Time, p: &mut Pastry, topic: Topic) {
        let Some(st) = self.topics.get(&topic) else {
            return;
        };
        if st.member || !st.children.is_empty() {
            return;
        }
        if let Some(parent) = st.parent {
            self.send_control(p, parent.handle.addr, &Control::Leave { topic: topic.0 });
        }
        self.topics.remove(&topic);
    }

    /// Publish `payload` on `topic` from this node.
    pub fn publish(&mut self, now: Time, p: &mut Pastry, topic: Topic, mut payload: Bytes) {
        self.seq = self.seq.wrapping_add(1);
        let hdr = DataHeader {
            topic: topic.0,
            source: p.me().id,
            seq: self.seq,
            flags: 0,
            hops_left: self.cfg.data_hops,
        };
        let cap = self.cfg.dup_sources;
        if let Some(st) = self.topics.get_mut(&topic) {
            let joining = st.role() == Role::Joining;
            if !joining || !st.children.is_empty() {
                st.fresh(hdr.source, hdr.seq, now, cap);
                self.fan_out(now, p, topic, hdr, None, &payload);
            }
            if !joining {
                return;
            }
            // Joining, maybe with a subtree (a root that learned of a
            // closer node, a forwarder whose parent left): the subtree has
            // it now, the rest of the tree gets it through the root, as
            // from off-tree.
        }
        // Off the tree: straight to a known tree node, or routed to the root.
        let refresh = self.cfg.publisher_refresh;
        let pubs = self.publishers.entry(topic).or_insert(Publisher {
            contact: None,
            refresh_at: now,
            last_used: now,
        });
        pubs.last_used = now;
        let hdr = DataHeader {
            flags: FLAG_TO_TREE,
            ..hdr
        };
        // Without a contact, or when it is due for a refresh, the packet is
        // also routed to the root; the first tree node it reaches tells us
        // where to send from now on.
        let route = pubs.contact.is_none() || now >= pubs.refresh_at;
        if route {
            pubs.refresh_at = now + refresh;
        }
        if let Some(addr) = pubs.contact {
            // At a refresh the contact most likely still works: sending
            // there too keeps this packet from being late (and, behind more
            // than the duplicate window, dropped) if the route is slow. The
            // routed copy is then dropped at the tree as a duplicate.
            let body = if route {
                payload.clone()
            } else {
                std::mem::take(&mut payload)
            };
            p.send_raw(Transmit {
                to: addr,
                channel: Channel::Datagram,
                header: hdr.to_inline(p.me().id),
                body,
            });
        }
        if route {
            let mut body = BytesMut::with_capacity(DATA_FIXED_LEN + payload.len());
            hdr.emit_body(&mut body);
            body.extend_from_slice(&payload);
            p.route(now, topic.0, Service::Other(SERVICE_DATA), body.freeze());
        }
        self.ensure_tick(now, p);
    }

    /// Send a depth-first anycast for `topic` carrying `payload`.
    pub fn anycast(
        &mut self,
        now: Time,
        p: &mut Pastry,
        topic: Topic,
        request: u64,
        payload: Bytes,
    ) {
        let a = Anycast {
            request,
            requester: p.me(),
            visited: Vec::new(),
            payload,
        };
        p.route(now, topic.0, Service::Other(SERVICE_ANYCAST), a.to_bytes());
    }

    // ----- data path ----------------------------------------------------

    /// Forward a packet to every tree neighbour but `from`, and deliver it
    /// locally if we are a member and not its source.
    fn fan_out(
        &mut self,
        now: Time,
        p: &mut Pastry,
        topic: Topic,
        hdr: DataHeader,
        from: Option<NodeId>,
        payload: &Bytes,
    ) {
        let me = p.me().id;
        let Some(st) = self.topics.get_mut(&topic) else {
            return;
        };
        if st.member && hdr.source != me && from.is_some() {
            st.stats.delivered += 1;
            self.events.push_back(ScribeEvent::Data {
                topic,
                source: hdr.source,
                payload: payload.clone(),
            });
        }
        if hdr.hops_left == 0 {
            self.drops.hops_exhausted += 1;
            return;
        }
        let out = DataHeader {
            flags: 0,
            hops_left: hdr.hops_left - 1,
            ..hdr
        };
        let header = out.to_inline(me);
        let len = (header.len() + payload.len()) as u64;
        let links = st
            .parent
            .iter_mut()
            .chain(st.children.iter_mut())
            .filter(|l| Some(l.handle.id) != from);
        for l in links {
            l.last_sent = now;
            st.stats.packets_out += 1;
            st.stats.bytes_out += len;
            p.send_raw(Transmit {
                to: l.handle.addr,
                channel: Channel::Datagram,
                header: header.clone(),
                body: payload.clone(),
            });
        }
    }

    /// A data packet arrived directly from `from`. `msg` is the whole
    /// message; the payload is sliced from it without a copy.
    pub fn handle_data(&mut self, now: Time, p: &mut Pastry, from: NodeHandle, msg: &Bytes) {
        let body = &msg[crate::wire::HEADER_LEN..];
        let Ok(hdr) = DataHeader::parse(body) else {
            self.drops.malformed += 1;
            return;
        };
        let payload = msg.slice(crate::wire::HEADER_LEN + DATA_FIXED_LEN..);
        self.on_data(now, p, Some(from), hdr, payload);
    }

    fn on_data(
        &mut self,
        now: Time,
        p: &mut Pastry,
        from: Option<NodeHandle>,
        hdr: DataHeader,
        payload: Bytes,
    ) {
        let topic = Topic(hdr.topic);
        let to_tree = hdr.flags & FLAG_TO_TREE != 0;
        let cap = self.cfg.dup_sources;
        let Some(st) = self.topics.get_mut(&topic) else {
            if to_tree {
                // A publisher's stale contact: pass it on toward the root.
                if p.next_hop(topic.0, &[]).is_some() {
                    let mut body = BytesMut::with_capacity(DATA_FIXED_LEN + payload.len());
                    hdr.emit_body(&mut body);
                    body.extend_from_slice(&payload);
                    p.route(now, topic.0, Service::Other(SERVICE_DATA), body.freeze());
                } else {
                    self.drops.no_tree_at_root += 1;
                }
            } else {
                self.drops.not_on_tree += 1;
            }
            return;
        };
        let from_id = from.map(|h| h.id);
        if let Some(id) = from_id {
            if st.is_neighbor(id) {
                st.touch(id, now);
            } else if !to_tree {
                // Tree data must come from a tree neighbour: anything else is
                // stale or forged.
                self.drops.not_neighbor += 1;
                return;
            }
        }
        st.stats.packets_in += 1;
        st.stats.bytes_in += payload.len() as u64;
        if !st.fresh(hdr.source, hdr.seq, now, cap) {
            st.stats.duplicates += 1;
            self.drops.duplicate += 1;
            return;
        }
        if to_tree {
            // We inject on behalf of an off-tree publisher: forward to all
            // neighbours (the publisher is not one) and tell it where to send.
            if let Some(f) = from
                && f.id == hdr.source
            {
                self.send_control(p, f.addr, &Control::TreeHint { topic: topic.0 });
            }
            self.fan_out(now, p, topic, hdr, Some(hdr.source), &payload);
            return;
        }
        self.fan_out(now, p, topic, hdr, from_id, &payload);
    }

    // ----- routed messages ----------------------------------------------

    /// A routed Scribe message reached the topic's root (us).
    pub fn deliver(&mut self, now: Time, p: &mut Pastry, route: Route) {
        match route.service {
            Service::Other(SERVICE_JOIN) => {
                self.accept_child(now, p, Topic(route.key), route.origin, None, 0);
            }
            Service::Other(SERVICE_DATA) => self.routed_data(now, p, route),
            Service::Other(SERVICE_ANYCAST) => self.anycast_step(now, p, route, None),
            _ => {}
        }
    }

    /// A routed Scribe message is passing through us toward `next`: we
    /// intercept it or let it travel on.
    pub fn forward(&mut self, now: Time, p: &mut Pastry, route: Route, next: NodeHandle) {
        let me = p.me().id;
        let topic = Topic(route.key);
        match route.service {
            Service::Other(SERVICE_JOIN) if route.origin.id != me => {
                self.accept_child(now, p, topic, route.origin, Some((route, next)), 0);
            }
            Service::Other(SERVICE_DATA) if self.on_tree(topic) => self.routed_data(now, p, route),
            Service::Other(SERVICE_ANYCAST) if self.on_tree(topic) => {
                self.anycast_step(now, p, route, Some(next))
            }
            _ => p.forward(now, route, next),
        }
    }

    fn on_tree(&self, topic: Topic) -> bool {
        self.topics
            .get(&topic)
            .is_some_and(|s| s.role() != Role::Joining)
    }

    fn routed_data(&mut self, now: Time, p: &mut Pastry, route: Route) {
        let Ok(hdr) = DataHeader::parse(&route.payload) else {
            self.drops.malformed += 1;
            return;
        };
        let topic = Topic(hdr.topic);
        if hdr.topic != route.key || hdr.source != route.origin.id {
            self.drops.malformed += 1;
            return;
        }
        if !self.topics.contains_key(&topic) {
            self.drops.no_tree_at_root += 1;
            return;
        }
        let payload = route.payload.slice(DATA_FIXED_LEN..);
        // Tell the publisher to send here directly from now on.
        if route.origin.id != p.me().id {
            self.send_control(p, route.origin.addr, &Control::TreeHint { topic: topic.0 });
        }
        let cap = self.cfg.dup_sources;
        if let Some(st) = self.topics.get_mut(&topic) {
            st.stats.packets_in += 1;
            st.stats.bytes_in += payload.len() as u64;
            if !st.fresh(hdr.source, hdr.seq, now, cap) {
                st.stats.duplicates += 1;
                self.drops.duplicate += 1;
                return;
            }
        }
        self.fan_out(now, p, topic, hdr, Some(hdr.source), &payload);
    }

    /// Adopt `child` for `topic`, or push it down if we are full. `route`
    /// is the JOIN to continue if we were not on the tree yet.
    fn accept_child(
        &mut self,
        now: Time,
        p: &mut Pastry,
        topic: Topic,
        child: NodeHandle,
        route: Option<(Route, NodeHandle)>,
        ttl: u8,
    ) {
        let me = p.me();
        if child.id == me.id {
            // Our own JOIN came back to us: the node it was heading for is
            // silent and routing went around it. We are the root after all.
            if route.is_none()
                && let Some(st) = self.topics.get_mut(&topic)
                && st.parent.is_none()
            {
                st.joining_since = None;
                st.depth = 0;
            }
            return;
        }
        let on_tree = self.topics.contains_key(&topic);
        let st = self
            .topics
            .entry(topic)
            .or_insert_with(|| TopicState::new(false));
        if st.parent.is_some_and(|par| par.handle.id == child.id) {
            // Our own parent is re-joining through us: adopting it would make a
            // loop. Let its JOIN travel on.
            if let Some((route, next)) = route {
                p.forward(now, route, next);
            }
            return;
        }
        let depth = st.depth;
        if let Some(c) = st.children.iter_mut().find(|c| c.handle.id == child.id) {
            c.last_heard = now;
            c.handle.addr = child.addr;
            self.send_control(
                p,
                child.addr,
                &Control::JoinAck {
                    topic: topic.0,
                    depth,
                },
            );
            return;
        }
        let full = self
            .cfg
            .max_children
            .is_some_and(|max| st.children.len() >= max);
        if full && !st.children.is_empty() && ttl < 16 {
            // Capacity-aware tree: hand the joiner to a random child, which
            // keeps the subtrees balanced without knowing their sizes. Past
            // the push-down budget we accept rather than refuse.
            let pick = st.children[p.rng().index(st.children.len())].handle;
            self.send_control(
                p,
                pick.addr,
                &Control::Pushdown {
                    topic: topic.0,
                    ttl: ttl + 1,
                    joiner: child,
                },
            );
            return;
        }
        st.children.push(TreeLink::new(child, now));
        self.send_control(
            p,
            child.addr,
            &Control::JoinAck {
                topic: topic.0,
                depth,
            },
        );
        if !on_tree {
            match route {
                Some((mut route, next)) => {
                    // Continue the JOIN as our own.
                    if let Some(st) = self.topics.get_mut(&topic) {
                        st.joining_since = Some(now);
                    }
                    route.origin = me;
                    p.forward(now, route, next);
                }
                None => {
                    // We are the root (delivery) or were handed a joiner.
                    self.send_join(now, p, topic);
                }
            }
        }
        self.ensure_tick(now, p);
    }

    /// A direct Scribe control message from `from`.
    pub fn handle_control(&mut self, now: Time, p: &mut Pastry, from: NodeHandle, c: Control) {
        let topic = Topic(c.topic());
        match c {
            Control::JoinAck { depth, .. } => {
                let Some(st) = self.topics.get_mut(&topic) else {
                    // We left meanwhile: tell the would-be parent.
                    self.send_control(p, from.addr, &Control::Leave { topic: topic.0 });
                    return;
                };
                if st.children.iter().any(|c| c.handle.id == from.id) {
                    // A child cannot be our parent.
                    self.send_control(p, from.addr, &Control::Leave { topic: topic.0 });
                    return;
                }
                let old = st.parent.replace(TreeLink::new(from, now));
                st.joining_since = None;
                st.depth = depth.saturating_add(1);
                if let Some(old) = old
                    && old.handle.id != from.id
                {
                    self.send_control(p, old.handle.addr, &Control::Leave { topic: topic.0 });
                }
            }
            Control::Leave { .. } => {
                if let Some(st) = self.topics.get_mut(&topic) {
                    st.children.retain(|c| c.handle.id != from.id);
                }
                self.maybe_prune(now, p, topic);
            }
            Control::Heartbeat { depth, .. } => {
                let Some(st) = self.topics.get_mut(&topic) else {
                    // Not on this tree (any more): make the sender drop us.
                    self.send_control(p, from.addr, &Control::Leave { topic: topic.0 });
                    return;
                };
                if !st.is_neighbor(from.id) {
                    self.send_control(p, from.addr, &Control::Leave { topic: topic.0 });
                    return;
                }
                st.touch(from.id, now);
                if st.parent.is_some_and(|par| par.handle.id == from.id) {
                    st.depth = depth.saturating_add(1);
                }
            }
            Control::Pushdown { ttl, joiner, .. } => {
                // Only a parent may hand us a joiner.
                let ok = self
                    .topics
                    .get(&topic)
                    .is_some_and(|st| st.parent.is_some_and(|par| par.handle.id == from.id));
                if ok {
                    self.accept_child(now, p, topic, joiner, None, ttl);
                } else {
                    self.drops.not_neighbor += 1;
                }
            }
            Control::TreeHint { .. } => {
                if let Some(pb) = self.publishers.get_mut(&topic) {
                    pb.contact = Some(from.addr);
                }
            }
            Control::AnycastFail { request, .. } => {
                self.events
                    .push_back(ScribeEvent::AnycastFailed { topic, request });
            }
        }
    }

    // ----- anycast ------------------------------------------------------

    /// One step of the depth-first anycast at a tree node (or toward it).
    fn anycast_step(&mut self, now: Time, p: &mut Pastry, route: Route, next: Option<NodeHandle>) {
        let topic = Topic(route.key);
        let Ok(mut a) = Anycast::parse(&route.payload) else {
            self.drops.malformed += 1;
            return;
        };
        let me = p.me();
        if !self.topics.contains_key(&topic) {
            // Root without a tree, or not on it: keep routing or fail.
            match next {
                Some(n) => p.forward(now, route, n),
                None => self.send_control(
                    p,
                    a.requester.addr,
                    &Control::AnycastFail {
                        topic: topic.0,
                        request: a.request,
                    },
                ),
            }
            return;
        }
        if !a.visited.contains(&me.id) {
            a.visited.push(me.id);
        }
        let Some(st) = self.topics.get(&topic) else {
            return;
        };
        if self.policy.accept(topic, st.member, &a.payload) {
            self.events.push_back(ScribeEvent::Anycast {
                topic,
                request: a.request,
                requester: a.requester,
                payload: a.payload,
            });
            return;
        }
        let mut kids: SmallVec<[NodeHandle; 8]> = st
            .children
            .iter()
            .map(|c| c.handle)
            .filter(|h| !a.visited.contains(&h.id))
            .collect();
        self.policy.order(topic, &mut kids);
        // Depth first: an unvisited child, else back up to the parent.
        let next = kids.first().copied().or_else(|| {
            st.parent
                .map(|x| x.handle)
                .filter(|h| !a.visited.contains(&h.id))
        });
        match next {
            Some(n) if a.visited.len() < ANYCAST_MAX_VISITED => {
                let route = Route {
                    msg_id: 0,
                    key: topic.0,
                    hops: route.hops,
                    service: Service::Other(SERVICE_ANYCAST),
                    origin: a.requester,
                    payload: a.to_bytes(),
                };
                p.forward(now, route, n);
            }
            _ => {
                let fail = Control::AnycastFail {
                    topic: topic.0,
                    request: a.request,
                };
                self.send_control(p, a.requester.addr, &fail);
            }
        }
    }

    // ----- maintenance --------------------------------------------------

    /// A node was declared dead by Pastry.
    pub fn peer_down(&mut self, now: Time, p: &mut Pastry, peer: NodeHandle) {
        // An off-tree publisher sending to it must route again at once.
        for pb in self.publishers.values_mut() {
            if pb.contact == Some(peer.addr) {
                pb.contact = None;
            }
        }
        let topics: SmallVec<[Topic; 8]> = self
            .topics
            .iter()
            .filter(|(_, st)| st.is_neighbor(peer.id))
            .map(|(t, _)| *t)
            .collect();
        for t in topics {
            self.drop_neighbor(now, p, t, peer.id);
        }
    }

    fn drop_neighbor(&mut self, now: Time, p: &mut Pastry, topic: Topic, id: NodeId) {
        let Some(st) = self.topics.get_mut(&topic) else {
            return;
        };
        st.children.retain(|c| c.handle.id != id);
        if st.parent.is_some_and(|par| par.handle.id == id) {
            st.parent = None;
            if st.member || !st.children.is_empty() {
                self.send_join(now, p, topic);
                return;
            }
        }
        self.maybe_prune(now, p, topic);
    }

    /// The leaf set changed: roots check they are still the root.
    pub fn leaf_set_changed(&mut self, now: Time, p: &mut Pastry) {
        let roots: SmallVec<[Topic; 8]> = self
            .topics
            .iter()
            .filter(|(_, st)| st.role() == Role::Root)
            .map(|(t, _)| *t)
            .filter(|t| p.next_hop(t.0, &[]).is_some())
            .collect();
        for t in roots {
            // Someone closer to the key arrived: join toward it; it becomes
            // the root and we its child.
            self.send_join(now, p, t);
        }
    }

    /// Scribe's periodic tick: heartbeats, liveness, JOIN retries.
    pub fn handle_tick(&mut self, now: Time, p: &mut Pastry) {
        if self.tick_at.is_some_and(|t| t > now) {
            return;
        }
        self.tick_at = None;
        let me = p.me().id;
        let cfg = self.cfg.clone();
        let mut rejoin: SmallVec<[Topic; 4]> = SmallVec::new();
        let mut prune: SmallVec<[Topic; 4]> = SmallVec::new();
        let mut out: SmallVec<[(PeerAddr, Control); 16]> = SmallVec::new();
        for (topic, st) in self.topics.iter_mut() {
            // Silent children are gone.
            let before = st.children.len();
            st.children
                .retain(|c| now.saturating_since(c.last_heard) < cfg.child_timeout);
            if st.children.len() != before && !st.member && st.children.is_empty() {
                prune.push(*topic);
            }
            match (st.parent, st.joining_since) {
                (Some(par), _) if now.saturating_since(par.last_heard) >= cfg.parent_timeout => {
                    st.parent = None;
                    rejoin.push(*topic);
                }
                (None, Some(since)) if now.saturating_since(since) >= cfg.join_retry => {
                    rejoin.push(*topic);
                }
                _ => {}
            }
            let depth = st.depth;
            for l in st.parent.iter_mut().chain(st.children.iter_mut()) {
                if now.saturating_since(l.last_sent) >= cfg.heartbeat {
                    l.last_sent = now;
                    out.push((
                        l.handle.addr,
                        Control::Heartbeat {
                            topic: topic.0,
                            depth,
                        },
                    ));
                }
            }
        }
        for (to, c) in out {
            let bytes = c.to_bytes(me);
            p.send_raw(Transmit::datagram(to, bytes));
        }
        for t in prune {
            self.maybe_prune(now, p, t);
        }
        for t in rejoin {
            if self
                .topics
                .get(&t)
                .is_some_and(|st| st.member || !st.children.is_empty())
            {
                self.send_join(now, p, t);
            } else {
                self.topics.remove(&t);
            }
        }
        let idle = cfg.publisher_refresh.saturating_mul(12);
        self.publishers
            .retain(|_, pb| now.saturating_since(pb.last_used) < idle);
        self.ensure_tick(now, p);
    }
}
