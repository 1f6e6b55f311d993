//! Pastry (Rowstron & Druschel, Middleware 2001) with MSPastry-style
//! maintenance (Castro, Costa, Rowstron, DSN 2004).
//!
//! **State owned:** the leaf set, the proximity-aware routing table, the
//! neighbourhood set, per-hop acknowledgements in flight, liveness/RTT
//! probes in flight, suspected next hops, recently dead nodes, the join
//! phase, and a timer heap.
//!
//! **Consumes:** decoded Pastry messages (`wire::pastry::Repr`) with the
//! sender's id and address, timeouts, and commands (`join`, `route`,
//! `forward`, `send`).
//!
//! **Emits:** `Transmit`s into `transmits`, and `Upcall`s for the owner
//! (`Node`) to act on: deliveries at a key's root, forwards it may intercept
//! (Scribe), joins, failures and leaf-set changes.
//!
//! Routing (§2.2): a key within the leaf set's range goes to the numerically
//! closest member; otherwise to the routing-table entry sharing one more digit;
//! otherwise (rare case) to any known node sharing as long a prefix and
//! numerically closer. Every forwarded hop is acknowledged; a hop that is not
//! acknowledged in time (3 × its RTT, never more than for an unknown RTT) is
//! re-routed around the silent node, which is probed and, if it stays
//! silent, declared dead and removed everywhere. While the probe runs the
//! node is *suspected*: every route avoids it, and messages already waiting
//! on it are re-routed at once. The key's root itself is not routed around
//! for one lost datagram: it gets the message again while it answers its
//! probe. A message keeps its origin's id on every hop, so a copy that a
//! lost ack caused is acked and dropped where the first copy passed
//! (`seen.rs`). A leaf never heard from first-hand takes no keys, so a peer
//! that a forged message names cannot swallow them.
//!
//! Join (§2.4): the joiner routes a JOIN toward its own id through a contact;
//! every hop sends it the routing-table rows it can use, the contact its
//! neighbourhood set, the final node its leaf set. The joiner measures RTTs to
//! the candidates (proximity neighbour selection, §2.5), keeps the nearest,
//! and announces itself to everyone it now knows, except the non-leaves
//! whose pong said it could not enter their tables at the RTT it measured
//! (`PONG_ANNOUNCE_BELOW`).
//!
//! Maintenance: leaves not heard from for a keep-alive interval are probed;
//! a dead leaf triggers leaf-set repair by asking the farthest live leaf on
//! that side for its leaf set; a dead routing-table entry is repaired lazily
//! by asking another node of the same row for its entry.

pub mod leafset;
pub mod neighborhood;
mod seen;
pub mod table;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::addr::{NodeHandle, PeerAddr};
use crate::config::Config;
use crate::id::NodeId;
use crate::io::Transmit;
use crate::rng::Rng;
use crate::stats::Stats;
use crate::time::{Duration, Time};
use crate::util::{Map, new_map};

use crate::wire::pastry::{
    NEIGHBORHOOD_ROW, PING_ACTIVE, PONG_ANNOUNCE_BELOW, PONG_WANT_RTT, RTT_UNKNOWN, Repr, Route,
    Service, State, state_flags as sf,
};

use leafset::{LeafSet, Side};
use neighborhood::NeighborhoodSet;
use seen::Seen;
use table::{Lookup, Offer, RoutingTable};

/// What Pastry asks its owner to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upcall {
    Joined,
    JoinFailed,
    /// A routed message reached the node responsible for its key.
    Deliver(Route),
    /// A routed message of an overlay service is about to be forwarded to
    /// `next`. The owner may consume it, or call `Pastry::forward`.
    Forward {
        route: Route,
        next: NodeHandle,
    },
    /// A node was declared dead and removed from the routing state.
    PeerDown(NodeHandle),
    /// Leaf-set membership changed (root handover may be due).
    LeafSetChanged,
}

/// Why the engine wants to be woken up. Named so that timer bugs read well
/// in logs (`poll_timeout` returns one with its deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    Keepalive,
    /// The earliest deadline among the probes in flight: one timer for all
    /// of them (most are answered long before it), re-armed for the next.
    Probes,
    RouteAck(u64),
    JoinTimeout(u8),
    JoinSettle,
    /// An early gossip round after the leaf set changed.
    Gossip,
    /// Post-join routing-table refinement round `n` (see
    /// `Config::refine_rounds`).
    Refine(u8),
    /// Timers of the services built on Pastry (Scribe, DHT...).
    Service(u8),
}

/// A timer-heap entry: `(Time, TimerKind)` in 24 bytes, ordered exactly
/// like the pair: by time, then by kind (variant order, then payload).
/// Timers are never cancelled, so a node holds many stale ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct TimerEntry {
    at: u64,
    /// `TimerKind` variant index, in declaration order.
    tag: u8,
    /// The variant's payload.
    arg: u64,
}

impl TimerEntry {
    fn new(at: Time, kind: TimerKind) -> Self {
        let (tag, arg) = match kind {
            TimerKind::Keepalive => (0, 0),
            TimerKind::Probes => (1, 0),
            TimerKind::RouteAck(hop) => (2, hop),
            TimerKind::JoinTimeout(attempt) => (3, u64::from(attempt)),
            TimerKind::JoinSettle => (4, 0),
            TimerKind::Gossip => (5, 0),
            TimerKind::Refine(n) => (6, u64::from(n)),
            TimerKind::Service(s) => (7, u64::from(s)),
        };
        TimerEntry { at: at.0, tag, arg }
    }

    #[inline]
    fn get(self) -> (Time, TimerKind) {
        let kind = match self.tag {
            0 => TimerKind::Keepalive,
            1 => TimerKind::Probes,
            2 => TimerKind::RouteAck(self.arg),
            3 => TimerKind::JoinTimeout(self.arg as u8),
            4 => TimerKind::JoinSettle,
            5 => TimerKind::Gossip,
            6 => TimerKind::Refine(self.arg as u8),
            _ => TimerKind::Service(self.arg as u8),
        };
        (Time(self.at), kind)
    }
}

#[derive(Debug, Clone)]
enum Phase {
    Idle,
    Joining {
        bootstrap: Vec<PeerAddr>,
        attempt: u8,
        have_leaf_set: bool,
        /// Active nodes whose pong said we cannot enter their tables at
        /// the RTT we measured (`PONG_ANNOUNCE_BELOW`): not announced to,
        /// unless they are leaves.
        quiet: Vec<NodeId>,
    },
    Active,
}

#[derive(Debug, Clone)]
struct PendingHop {
    route: Route,
    next: NodeHandle,
    deadline: Time,
    reroutes: u8,
    avoid: SmallVec<[NodeId; 4]>,
    /// Times sent again to the same hop (see `on_ack_timeout`).
    resent: u8,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    /// Where to send retries (the id is the map's key): an address rather
    /// than a whole handle keeps a map entry at 64 bytes.
    addr: PeerAddr,
    deadline: Time,
    sent: u8,
    /// Something arrived from the node since the probe went out.
    heard: bool,
}

/// When a second-hand candidate for an occupied routing-table slot is
/// worth an RTT probe against the slot's holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contest {
    /// Our RTT to the candidate is at least this many µs (a triangle
    /// inequality from the RTTs a state lists, see `on_state`; 0 when
    /// nothing is known): probe unless the measured holder is no farther.
    Bounded(u32),
    /// The candidate is, as far as we know, a random point of the network
    /// (see `on_state`) at least this many µs away: probe unless the
    /// holder is no farther, or nearer than random nodes are, judged by
    /// our measured leaves (see `Pastry::nearer_than_random`).
    RandomPoint(u32),
}

/// Why a probe goes out (counted in `Stats::probes_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeCause {
    /// An RTT for the routing table.
    Table,
    /// A leaf heard of second-hand: is it alive?
    NewLeaf,
    /// A known node that has been quiet or did not acknowledge.
    Liveness,
}

/// Hop budget of a routed message (log16 of a billion nodes is 7.5).
const MAX_HOPS: u8 = 40;

/// Times a message is sent again to a key's root that did not ack it but
/// answers probes (see `Pastry::on_ack_timeout`).
const MAX_ROOT_RESENDS: u8 = 3;

/// At most this many peers are suspected at once (see `Pastry::suspects`);
/// beyond it a silent hop is still avoided by the message that found it.
const MAX_SUSPECTS: usize = 16;

/// Queue capacity (entries) `release_idle` leaves allocated.
const KEEP_QUEUE: usize = 4;

/// Slots of the RTT cache.
const RTT_CACHE_SLOTS: usize = 64;

/// RTTs measured to nodes that are not (or no longer) in our tables, so a
/// candidate offered again and again (row maintenance, gossip) is not pinged
/// again each time. Direct-mapped and fixed-size: a collision only costs a
/// re-measurement, and the memory per node stays at a few hundred bytes
/// however many nodes we hear of.
#[derive(Debug, Clone)]
struct RttCache {
    slots: [(u64, u32); RTT_CACHE_SLOTS],
}

impl Default for RttCache {
    fn default() -> Self {
        RttCache {
            slots: [(0, RTT_UNKNOWN); RTT_CACHE_SLOTS],
        }
    }
}

impl RttCache {
    fn slot(id: NodeId) -> (usize, u64) {
        // Ids are uniform: low bits index, high bits tag.
        ((id.0 as usize) % RTT_CACHE_SLOTS, (id.0 >> 64) as u64)
    }
    fn get(&self, id: NodeId) -> u32 {
        let (i, tag) = Self::slot(id);
        let (t, rtt) = self.slots[i];
        if t == tag { rtt } else { RTT_UNKNOWN }
    }
    fn insert(&mut self, id: NodeId, rtt: u32) {
        let (i, tag) = Self::slot(id);
        self.slots[i] = (tag, rtt);
    }
    fn remove(&mut self, id: NodeId) {
        let (i, tag) = Self::slot(id);
        if self.slots[i].0 == tag {
            self.slots[i] = (0, RTT_UNKNOWN);
        }
    }
}

/// Whether an empty map still holds a table (iteration order never
/// matters here: the maps are only probed by key and `retain`ed).
fn idle_map<K, V>(m: &Map<K, V>) -> bool {
    m.is_empty() && m.capacity() != 0
}

/// Whether an empty queue holds more than a small queue's capacity.
fn idle_queue<T>(q: &VecDeque<T>) -> bool {
    q.is_empty() && q.capacity() > KEEP_QUEUE
}

/// Whether three quarters of the timer heap are unused. Timers are never
/// cancelled, so the heap is rarely empty: then it shrinks to twice its
/// length (so that shrinking and regrowing cannot alternate call after
/// call).
fn oversized_heap<T: Ord>(h: &BinaryHeap<T>) -> bool {
    h.capacity() > 4 && h.len() <= h.capacity() / 4
}

/// The Pastry state machine. See the module documentation.
#[derive(Debug)]
pub struct Pastry {
    /// Shared by every node a runtime builds from the same `Arc`: read on
    /// nearly every input, so one copy stays in cache for all of them.
    cfg: Arc<Config>,
    me: NodeHandle,
    rng: Rng,
    leaves: LeafSet,
    table: RoutingTable,
    nbrs: NeighborhoodSet,
    phase: Phase,
    /// Messages forwarded and not yet acked, by message id.
    acks: Map<u64, PendingHop>,
    /// Routed messages already taken: a copy is acked and dropped.
    seen: Seen,
    probes: Map<NodeId, Probe>,
    /// Peers that let a routed message's ack time out and have not been
    /// heard from since: routing avoids them until their liveness probe
    /// ends (a message from them clears them, its failure declares them
    /// dead). Without this every message toward a silent next hop waited
    /// out its own ack timeout. Bounded by `MAX_SUSPECTS`.
    suspects: Vec<NodeId>,
    dead: Map<NodeId, Time>,
    rtt_cache: RttCache,
    timers: BinaryHeap<Reverse<TimerEntry>>,
    keepalive_at: Time,
    /// Deadline of the armed `TimerKind::Probes`, `Time::NEVER` if none.
    probes_at: Time,
    /// Pending early gossip round, `Time::NEVER` if none.
    gossip_at: Time,
    /// Next routing-table slot to probe.
    table_cursor: usize,
    /// While a leaf-set refresh (a re-join toward our own id) is under
    /// way, join state is welcome although we are active.
    refresh_until: Time,
    /// Outgoing messages, drained by the owner.
    pub transmits: VecDeque<Transmit>,
    /// Upcalls, drained by the owner inside its own `handle_*`.
    pub upcalls: VecDeque<Upcall>,
    pub stats: Stats,
    /// While answering a ping from this node: a probe of it is folded into
    /// our pong (`PONG_WANT_RTT`); `Some(bound)` once one was wanted, with
    /// the RTT it must be below to matter to us.
    fold_probe: Option<(NodeId, Option<u32>)>,
    /// See `pns_rows`.
    proximity_rows: usize,
    /// Routing-table maintenance runs at 1/`maint_backoff` of its full rate
    /// (see `Config::maintenance_backoff_max`).
    maint_backoff: u8,
    /// Slots filled or improved since the last maintenance round.
    table_changes: u32,
}

impl Pastry {
    pub fn new(cfg: impl Into<Arc<Config>>, me: NodeHandle, rng: &mut Rng) -> Self {
        let cfg = cfg.into();
        let leaves = LeafSet::new(me.id, cfg.leaf_set_size);
        let table = RoutingTable::new(me.id, cfg.b);
        let nbrs = NeighborhoodSet::new(cfg.neighborhood_size);
        Pastry {
            me,
            leaves,
            table,
            nbrs,
            phase: Phase::Idle,
            acks: new_map(rng.next_u64()),
            probes: new_map(rng.next_u64()),
            suspects: Vec::new(),
            seen: Seen::new(rng.next_u64()),
            dead: new_map(rng.next_u64()),
            rtt_cache: RttCache::default(),
            timers: BinaryHeap::new(),
            keepalive_at: Time::NEVER,
            probes_at: Time::NEVER,
            gossip_at: Time::NEVER,
            table_cursor: 0,
            refresh_until: Time::ZERO,
            transmits: VecDeque::new(),
            upcalls: VecDeque::new(),
            stats: Stats::default(),
            fold_probe: None,
            proximity_rows: cfg.pns_rows,
            maint_backoff: 1,
            table_changes: 0,
            rng: rng.fork(),
            cfg,
        }
    }

    /// The byte ranges of this struct that every message reads, as
    /// (offset, length): all of it but its RTT cache, of which a message
    /// reads at most one of 16 lines, depending on what it says. From the
    /// type alone, so a runtime can prefetch them for a node that another
    /// thread may be running (see `Node::hot_ranges`).
    pub(crate) fn hot_ranges() -> [(usize, usize); 2] {
        let cache = std::mem::offset_of!(Pastry, rtt_cache);
        let after = cache + std::mem::size_of::<RttCache>();
        [(0, cache), (after, std::mem::size_of::<Self>() - after)]
    }

    /// Where the buffers every message touches live: the leaf set's, the
    /// routing table's, the neighbourhood set's and the timer heap's. A
    /// runtime driving many nodes from one thread (the simulator)
    /// prefetches these before handing a node its input; the pointers are
    /// never dereferenced here.
    #[inline]
    pub fn hot_memory(&self) -> [*const u8; 6] {
        let [a, b] = self.leaves.buffers();
        let [c] = self.table.buffers();
        let [d, e] = self.nbrs.buffers();
        let f = self.timers.as_slice().as_ptr().cast();
        [a, b, c, d, e, f]
    }

    pub fn me(&self) -> NodeHandle {
        self.me
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Active)
    }
    pub fn leaf_set(&self) -> &LeafSet {
        &self.leaves
    }
    pub fn routing_table(&self) -> &RoutingTable {
        &self.table
    }
    pub fn neighborhood(&self) -> &NeighborhoodSet {
        &self.nbrs
    }
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    // ----- timers -------------------------------------------------------

    /// Arm a timer. Timers are never cancelled: a stale one fires, finds its
    /// state gone or changed, and does nothing.
    pub fn set_timer(&mut self, at: Time, kind: TimerKind) {
        self.timers.push(Reverse(TimerEntry::new(at, kind)));
    }

    /// Earliest deadline and its reason. (Inlined: the runtime reads it
    /// after every call, through `Node::poll_timeout`.)
    #[inline]
    pub fn poll_timeout(&self) -> Option<(Time, TimerKind)> {
        self.timers.peek().map(|Reverse(t)| t.get())
    }

    /// Fire every timer due at `now`. Service timers are handed back to
    /// the owner through `fired`.
    pub fn handle_timeout(&mut self, now: Time, fired: &mut Vec<u8>) {
        while let Some((at, kind)) = self.poll_timeout() {
            if at > now {
                break;
            }
            self.timers.pop();
            match kind {
                TimerKind::Keepalive => self.on_keepalive(now, at),
                TimerKind::Probes => self.on_probes_due(now, at),
                TimerKind::RouteAck(hop) => self.on_ack_timeout(now, hop, at),
                TimerKind::JoinTimeout(attempt) => self.on_join_timeout(now, attempt),
                TimerKind::JoinSettle => self.maybe_finish_join(now, true),
                TimerKind::Gossip => {
                    if at == self.gossip_at {
                        self.gossip_at = Time::NEVER;
                        if self.is_active() {
                            self.gossip_leaf_set();
                        }
                    }
                }
                TimerKind::Refine(n) => self.refine_table(now, n),
                TimerKind::Service(s) => fired.push(s),
            }
        }
    }

    // ----- sending ------------------------------------------------------

    /// Queue a Pastry message to `to`.
    pub fn send(&mut self, to: PeerAddr, repr: &Repr) {
        let bytes = repr.to_bytes(self.me.id);
        self.send_raw(Transmit::datagram(to, bytes));
    }

    /// Give back the memory of queues and maps that are idle between calls
    /// (see `Node::release_idle_memory`); only allocations change, never
    /// contents.
    ///
    /// Inlined, with the work out of line: it runs after every call, and
    /// nearly always finds nothing to give back.
    #[inline]
    pub(crate) fn release_idle(&mut self) {
        if idle_queue(&self.transmits)
            || idle_queue(&self.upcalls)
            || idle_map(&self.acks)
            || idle_map(&self.probes)
            || idle_map(&self.dead)
            || oversized_heap(&self.timers)
        {
            self.release_idle_now();
        }
    }

    /// `release_idle` once it found something to give back. Small queues
    /// stay: nearly every call refills them, and a few hundred bytes per
    /// node cost less than an allocation per message.
    #[inline(never)]
    fn release_idle_now(&mut self) {
        if idle_queue(&self.transmits) {
            self.transmits = VecDeque::new();
        }
        if idle_queue(&self.upcalls) {
            self.upcalls = VecDeque::new();
        }
        if idle_map(&self.acks) {
            self.acks.shrink_to(0);
        }
        if idle_map(&self.probes) {
            self.probes.shrink_to(0);
        }
        if idle_map(&self.dead) {
            self.dead.shrink_to(0);
        }
        if oversized_heap(&self.timers) {
            self.timers.shrink_to(self.timers.len() * 2);
        }
    }

    /// Queue an already encoded message (services use this).
    pub fn send_raw(&mut self, t: Transmit) {
        self.stats.msgs_sent += 1;
        self.stats.bytes_sent += t.len() as u64;
        self.transmits.push_back(t);
    }

    fn ping(&mut self, now: Time, h: NodeHandle, cause: ProbeCause) {
        self.probe(now, h, cause, None, RTT_UNKNOWN);
    }

    /// `ping`, from a caller that may already have looked up
    /// `known_rtt(h.id)` (`None`: look it up here, if a ping goes out).
    /// An unmeasured node's `Some(RTT_UNKNOWN)` spares the lookup too.
    /// `matters_below`: only an RTT below it can change our tables
    /// (`RTT_UNKNOWN`: any RTT can, or the probe is not about RTT).
    fn probe(
        &mut self,
        now: Time,
        h: NodeHandle,
        cause: ProbeCause,
        known: Option<u32>,
        matters_below: u32,
    ) {
        if h.id == self.me.id || self.probes.contains_key(&h.id) {
            return;
        }
        if let Some((id, folded)) = &mut self.fold_probe
            && *id == h.id
        {
            // Answering its ping: the pong asks for the RTT instead, and
            // only if it can matter (the pinger measures it anyway; most
            // candidates do not beat the holder of their slot).
            *folded = Some(folded.map_or(matters_below, |b| b.max(matters_below)));
            return;
        }
        let deadline = now + self.cfg.probe_timeout;
        self.probes.insert(
            h.id,
            Probe {
                addr: h.addr,
                deadline,
                sent: 1,
                heard: false,
            },
        );
        self.arm_probes(deadline);
        let active = self.is_active();
        let st = &mut self.stats;
        st.probes_sent += 1;
        *match cause {
            _ if !active => &mut st.probes_joining,
            ProbeCause::Table => &mut st.probes_table,
            ProbeCause::NewLeaf => &mut st.probes_new_leaf,
            ProbeCause::Liveness => &mut st.probes_liveness,
        } += 1;
        let flags = if active { PING_ACTIVE } else { 0 };
        let rtt_hint = known.unwrap_or_else(|| self.known_rtt(h.id));
        self.send(
            h.addr,
            &Repr::Ping {
                token: now.as_micros(),
                flags,
                rtt_hint,
            },
        );
    }

    // ----- joining ------------------------------------------------------

    /// Join the overlay through `bootstrap` (tried in order), or found a new
    /// one when the list is empty.
    pub fn join(&mut self, now: Time, bootstrap: &[PeerAddr]) {
        if bootstrap.is_empty() {
            self.activate(now);
            return;
        }
        self.phase = Phase::Joining {
            bootstrap: bootstrap.to_vec(),
            attempt: 0,
            have_leaf_set: false,
            quiet: Vec::new(),
        };
        self.send_join(now, 0);
    }

    fn send_join(&mut self, now: Time, attempt: u8) {
        let Phase::Joining { bootstrap, .. } = &self.phase else {
            return;
        };
        let mut contact = bootstrap[usize::from(attempt) % bootstrap.len()];
        if attempt > 0 {
            // The last attempt got no leaf set: the bootstrap node may have
            // died, or the join's path through it. Retry through a node that
            // attempt taught us and that has answered us (not one we only
            // heard of: it may not exist) when there is one; the bootstrap
            // list otherwise.
            let learned: SmallVec<[PeerAddr; 16]> = self
                .leaves
                .members()
                .filter(|l| l.last_heard != Time::ZERO)
                .map(|l| l.handle.addr)
                .chain(
                    self.table
                        .entries()
                        .filter(|e| e.heard != Time::ZERO)
                        .map(|e| e.handle.addr),
                )
                .take(16)
                .collect();
            if !learned.is_empty() {
                contact = learned[self.rng.index(learned.len())];
            }
        }
        let route = Route {
            msg_id: self.fresh_msg_id(),
            key: self.me.id,
            hops: 0,
            service: Service::Join,
            origin: self.me,
            payload: Bytes::from_static(&[0]),
        };
        self.send(contact, &Repr::Route(route));
        self.set_timer(now + self.cfg.join_timeout, TimerKind::JoinTimeout(attempt));
    }

    fn on_join_timeout(&mut self, now: Time, fired_attempt: u8) {
        let Phase::Joining {
            attempt,
            have_leaf_set,
            ..
        } = &mut self.phase
        else {
            return;
        };
        if *attempt != fired_attempt || *have_leaf_set {
            return;
        }
        *attempt += 1;
        let next = *attempt;
        if next >= self.cfg.join_attempts {
            self.phase = Phase::Idle;
            self.upcalls.push_back(Upcall::JoinFailed);
            return;
        }
        self.send_join(now, next);
    }

    /// The joiner has its leaf set; once the RTT probes are answered (or the
    /// settle time is over) it becomes active and announces itself.
    fn maybe_finish_join(&mut self, now: Time, settle_over: bool) {
        let Phase::Joining { have_leaf_set, .. } = self.phase else {
            return;
        };
        if have_leaf_set && (settle_over || self.probes.is_empty()) {
            self.activate(now);
        }
    }

    fn activate(&mut self, now: Time) {
        let mut quiet = match std::mem::replace(&mut self.phase, Phase::Active) {
            Phase::Joining { quiet, .. } => quiet,
            _ => Vec::new(),
        };
        quiet.sort_unstable();
        self.estimate_pns_rows();
        // Announce to everyone we know, with the RTT we measured to them so
        // they need not measure us back; not to a non-leaf that told us we
        // cannot enter its tables (`quiet`; the leaves come first).
        // Each node once, where it first appears: leaves, then table
        // entries, then neighbours. Within a group ids are distinct, so a
        // repeat is a table entry that is also a leaf, or a neighbour that
        // is also either; asking the leaf set and the table spares
        // comparing every pair. (Sized up front: the leaf set's iterator
        // cannot say how many it yields.)
        let mut known: Vec<(NodeHandle, u32)> =
            Vec::with_capacity(self.leaves.len() + self.table.len() + self.nbrs.len());
        known.extend(self.leaves.members().map(|l| (l.handle, RTT_UNKNOWN)));
        known.extend(
            self.table
                .entries()
                .filter(|e| !self.leaves.contains(e.handle.id))
                .map(|e| (e.handle, e.rtt)),
        );
        known.extend(
            self.nbrs
                .handles()
                .filter(|h| !self.leaves.contains(h.id) && !self.table.contains(h.id))
                .map(|h| (*h, self.known_rtt(h.id))),
        );
        let leaves = self.leaves.len();
        for (i, (h, rtt)) in known.into_iter().enumerate() {
            if i >= leaves && quiet.binary_search(&h.id).is_ok() {
                self.stats.announces_skipped += 1;
                continue;
            }
            let rtt = if rtt == RTT_UNKNOWN {
                self.known_rtt(h.id)
            } else {
                rtt
            };
            self.send(h.addr, &Repr::Announce { rtt_hint: rtt });
        }
        self.schedule_keepalive(now);
        self.maybe_refresh_leaf_set(now);
        // Second phase of the join (Pastry §2.5): ask one node of every row
        // for its row, to find nodes nearer than the ones the join path gave.
        for row in 0..self.pns_rows() {
            self.request_row_from_nearby(row, 0);
        }
        if self.cfg.refine_rounds > 0 {
            self.set_timer(now + Duration::from_secs(2), TimerKind::Refine(0));
        }
        self.upcalls.push_back(Upcall::Joined);
    }

    /// The leaf set changed: tell the neighbours within a second rather
    /// than at the next round, so churn and concurrent joins converge fast.
    fn gossip_soon(&mut self, now: Time) {
        if self.gossip_at == Time::NEVER && self.is_active() {
            self.gossip_at = now + Duration::from_secs(1);
            self.set_timer(self.gossip_at, TimerKind::Gossip);
        }
    }

    /// Next maintenance round in [0.75, 1.25) gossip intervals.
    fn schedule_keepalive(&mut self, now: Time) {
        let d = self.cfg.gossip_interval;
        let next = self.jitter(d) + Duration::from_micros(d.as_micros() / 4);
        self.keepalive_at = now + next;
        self.set_timer(self.keepalive_at, TimerKind::Keepalive);
    }

    /// A uniformly random duration in [d/2, d): spreads periodic work so
    /// nodes started together do not probe in lockstep.
    fn jitter(&mut self, d: Duration) -> Duration {
        let half = d.as_micros() / 2;
        Duration::from_micros(half + self.rng.below(half.max(1)))
    }

    // ----- learning about nodes ----------------------------------------

    /// Routing-table rows filled by proximity: at least `Config::pns_rows`,
    /// and every row whose slots expect at least half a candidate in an
    /// overlay of the size our leaf set suggests (row `r` has N / 16^(r+1)
    /// per slot with b = 4): at 100k nodes row 3 has 1.5 and is worth
    /// measuring, at 10k it has 0.15 and is not.
    /// Re-estimated when we join and at every maintenance round.
    fn pns_rows(&self) -> usize {
        self.proximity_rows.min(self.table.num_rows())
    }

    fn estimate_pns_rows(&mut self) {
        let n = self.leaves.estimated_size();
        let bits = self.cfg.b;
        let mut rows = self.cfg.pns_rows;
        // Slots of row `rows` expect n / 2^(b·(rows+1)) candidates.
        while let Some(shift) = bits.checked_mul(rows as u32 + 1)
            && shift < 128
            && n.saturating_mul(2) >> shift >= 1
        {
            rows += 1;
        }
        self.proximity_rows = rows;
    }

    /// Best RTT we know for `id`, `RTT_UNKNOWN` if none.
    fn known_rtt(&self, id: NodeId) -> u32 {
        if let Some(e) = self.table.entry(id)
            && e.rtt != RTT_UNKNOWN
        {
            return e.rtt;
        }
        self.known_rtt_off_table(id)
    }

    /// `known_rtt` for a node whose table entry, if any, is unmeasured.
    fn known_rtt_off_table(&self, id: NodeId) -> u32 {
        let leaf = self.leaves.rtt(id);
        if leaf != RTT_UNKNOWN {
            return leaf;
        }
        if let Some(r) = self.nbrs.rtt(id) {
            return r;
        }
        self.rtt_cache.get(id)
    }

    /// Whether a node at `rtt` is so near that a random node is unlikely to
    /// beat it. Our leaves are random points of the network as far as
    /// distance goes (they are near us by id only), so their measured RTTs
    /// sample our RTT to a random node: with at least four measured and
    /// none nearer than `rtt`, fewer than about one random node in 16 is.
    /// In a big overlay the holders of the top rows are nearer than that
    /// (the nearest of hundreds of candidates); in a small or young one
    /// they often are not, and random candidates are still worth a probe.
    fn nearer_than_random(&self, rtt: u32) -> bool {
        let mut measured = 0;
        for l in self.leaves.members() {
            if l.rtt != RTT_UNKNOWN {
                if l.rtt < rtt {
                    return false;
                }
                measured += 1;
            }
        }
        measured >= 4
    }

    /// The RTT below which `id`, a node not yet in our tables, would change
    /// them if it offered itself: any (`RTT_UNKNOWN`) if our leaf set would
    /// take it, else what it must beat for its routing-table slot or for
    /// the neighbourhood set, whichever is more. `slot` is the table's
    /// `lookup` of `id`, made since the table last changed.
    fn admits_below(&self, id: NodeId, slot: &Lookup) -> u32 {
        if self.leaves.would_accept(id) {
            return RTT_UNKNOWN;
        }
        self.table.to_beat_at(slot).max(self.nbrs.admits_below())
    }

    fn cache_rtt(&mut self, id: NodeId, rtt: u32) {
        self.rtt_cache.insert(id, rtt);
    }

    /// `offer_bounded` of the sender of the message being handled, first-hand,
    /// with the routing-table `lookup` that `heard` made of it (the table
    /// has not changed since).
    fn offer_heard(&mut self, now: Time, from: NodeHandle, rtt: u32, slot: Lookup) {
        self.offer_bounded(now, from, rtt, true, Contest::Bounded(0), Some(slot));
    }

    /// Consider `h` for every table. `direct` says we heard from it
    /// ourselves (so it is alive; `handle` has already called `heard`);
    /// second-hand nodes are verified with a probe before they can matter.
    /// `contest` says when a second-hand candidate is worth an RTT probe
    /// against the measured holder of its routing-table slot (see
    /// [`Contest`]). `slot` is the routing table's `lookup` of `h.id` if
    /// the caller made one since the table last changed.
    fn offer_bounded(
        &mut self,
        now: Time,
        h: NodeHandle,
        rtt: u32,
        direct: bool,
        contest: Contest,
        slot: Option<Lookup>,
    ) {
        // Our own id, or someone else's id at our address (forged, or a
        // stale entry of a node that ran here before): never a peer.
        if h.id == self.me.id || h.addr == self.me.addr {
            return;
        }
        // One table lookup serves everything below that needs the entry
        // before the offer: `Some(its RTT)` if `h` holds its slot.
        // The same lookup serves the offer to the table further down:
        // nothing in between changes the table.
        let slot = slot.unwrap_or_else(|| self.table.lookup(h.id));
        let held = self.table.slot_entry(&slot).map(|e| e.rtt);
        if direct {
            self.dead.remove(&h.id);
        } else if self.dead.contains_key(&h.id)
            || (held.is_some() && !self.leaves.would_accept(h.id))
        {
            // Dead, or already known where it can matter: nothing to
            // learn. (A table member that is also a leaf is covered: the
            // leaf set does not "accept" a member.)
            return;
        }
        let rtt = if rtt != RTT_UNKNOWN {
            self.cache_rtt(h.id, rtt);
            rtt
        } else {
            match held {
                Some(r) if r != RTT_UNKNOWN => r,
                _ => self.known_rtt_off_table(h.id),
            }
        };
        // A probe to send: why, and the RTT below which its measurement
        // can change the tables (`RTT_UNKNOWN`: any).
        let mut want_probe = None;
        // Leaf set: by id only.
        let heard_at = if direct { now } else { Time::ZERO };
        if self.leaves.insert_measured(h, heard_at, rtt) {
            self.upcalls.push_back(Upcall::LeafSetChanged);
            self.gossip_soon(now);
            if !direct && self.is_active() {
                // Check it is alive, and let it learn about us. (A joiner
                // announces itself to its whole leaf set when it is done.)
                want_probe = Some((ProbeCause::NewLeaf, RTT_UNKNOWN));
            }
        }
        // (A direct offer comes from `handle`, which has already marked a
        // member it heard from; only a newcomer needs its time set.)
        // Routing table: by proximity.
        // Only the top `pns_rows` rows are worth an RTT measurement: they
        // have many candidates per slot and carry the first, longest-lived
        // hops. Deeper rows have a handful of candidates each; the first
        // one offered is kept until a measured one displaces it.
        let measure = self.me.id.shared_prefix_len(h.id, self.cfg.b) < self.pns_rows();
        // (With a known RTT the offer also records it if `h` ends up in
        // the table, as newcomer or as holder.)
        let offered = self.table.offer_at(slot, h, rtt, heard_at);
        match offered {
            Offer::Inserted | Offer::Replaced(_) => {
                self.table_changes = self.table_changes.saturating_add(1);
                if rtt == RTT_UNKNOWN && measure {
                    want_probe = Some((ProbeCause::Table, RTT_UNKNOWN));
                }
            }
            Offer::NeedsRtt { holder_rtt } => {
                // An unmeasured holder is contested by any candidate.
                let skip = holder_rtt != RTT_UNKNOWN
                    && match contest {
                        Contest::Bounded(floor) => holder_rtt <= floor,
                        Contest::RandomPoint(floor) => {
                            holder_rtt <= floor || self.nearer_than_random(holder_rtt)
                        }
                    };
                if skip && measure {
                    self.stats.probes_pruned += 1;
                }
                // Only a nearer node replaces the holder (any, if it is
                // unmeasured); any node nearer than the neighbourhood set's
                // farthest joins that set.
                let matters_below = holder_rtt.max(self.nbrs.admits_below());
                want_probe = (measure && !skip).then_some((ProbeCause::Table, matters_below));
            }
            Offer::Rejected => {}
        }
        if rtt != RTT_UNKNOWN {
            self.nbrs.offer(h, rtt);
        }
        if let Some((cause, matters_below)) = want_probe {
            // Every table above now gives `rtt` as what we know of `h`.
            debug_assert_eq!(rtt, self.known_rtt(h.id));
            self.probe(now, h, cause, Some(rtt), matters_below);
        }
    }

    /// Something arrived from `from`: it is alive. Returns the routing
    /// table's lookup of it, for the offer of `from` that most messages
    /// make next (`offer_heard`).
    fn heard(&mut self, now: Time, from: NodeHandle) -> Lookup {
        self.unsuspect(from.id);
        self.leaves.heard(from.id, now);
        let slot = self.table.lookup(from.id);
        self.table.heard_at(&slot, now);
        if let Some(p) = self.probes.get_mut(&from.id) {
            p.heard = true;
        }
        slot
    }

    // ----- failure handling ---------------------------------------------

    /// Declare `id` dead: remove it everywhere and start repairs.
    pub fn mark_dead(&mut self, now: Time, id: NodeId) {
        if id == self.me.id {
            return;
        }
        let handle = self
            .leaves
            .members()
            .map(|l| l.handle)
            .chain(self.table.entries().map(|e| e.handle))
            .chain(self.nbrs.handles().copied())
            .find(|h| h.id == id);
        let (cw, ccw) = self.leaves.remove(id);
        let slot = self.table.remove(id);
        let in_nbrs = self.nbrs.remove(id);
        self.probes.remove(&id);
        self.unsuspect(id);
        // Messages still waiting for its ack go elsewhere now.
        self.reroute_waiting_on(now, id);
        self.rtt_cache.remove(id);
        self.dead.insert(id, now);
        let Some(handle) = handle else {
            return;
        };
        debug_assert!(cw || ccw || slot.is_some() || in_nbrs);
        self.stats.peers_declared_dead += 1;
        self.maint_backoff = 1;
        tracing::debug!(node = ?self.me.id, dead = ?handle, "peer declared dead");
        self.upcalls.push_back(Upcall::PeerDown(handle));
        if cw || ccw {
            self.upcalls.push_back(Upcall::LeafSetChanged);
            for (lost, side) in [(cw, Side::Cw), (ccw, Side::Ccw)] {
                if lost {
                    self.repair_leaf_side(side);
                }
            }
        }
        if let Some((row, _)) = slot {
            self.repair_row(row);
        }
    }

    /// Ask the farthest live leaf on `side` for its leaf set (§3 of
    /// MSPastry; Pastry §2.4 "node departure").
    fn repair_leaf_side(&mut self, side: Side) {
        let other = match side {
            Side::Cw => Side::Ccw,
            Side::Ccw => Side::Cw,
        };
        if let Some(h) = self
            .leaves
            .farthest(side)
            .or_else(|| self.leaves.farthest(other))
        {
            self.send(h.addr, &Repr::LeafSetRequest);
        }
    }

    /// Lazy routing-table repair: ask another node of the same row (or, if
    /// the row is empty, of the next) for its row.
    fn repair_row(&mut self, row: usize) {
        for r in row..self.table.num_rows().min(row + 2) {
            if self.request_row_from(r, row) {
                return;
            }
        }
    }

    /// Ask a random entry of row `from_row` for its row `row`; false if the
    /// row is empty.
    fn request_row_from(&mut self, from_row: usize, row: usize) -> bool {
        let candidates: SmallVec<[NodeHandle; 16]> =
            self.table.row(from_row).map(|e| e.handle).collect();
        if candidates.is_empty() {
            return false;
        }
        let pick = candidates[self.rng.index(candidates.len())];
        self.send(pick.addr, &Repr::RowRequest { row: row as u8 });
        true
    }

    /// Ask a node near us (by measured RTT) that shares at least `row`
    /// digits with us for its row `row`: its entries were chosen near it,
    /// hence near us. `rank` picks the nearest (0), the next (1), ...
    fn request_row_from_nearby(&mut self, row: usize, rank: usize) -> bool {
        let b = self.cfg.b;
        let me = self.me.id;
        // The candidates are the measured entries of rows `row` and deeper
        // (those sharing at least `row` digits with us) and the
        // neighbourhood set members sharing as many, each once; ranked by
        // (RTT, id), which no two share. Only the `rank + 1` first are
        // kept, in order.
        // `best` holds the first `min(candidates, rank + 1)`, so the one
        // to ask is its last: the `rank`-th nearest, or the farthest of
        // fewer.
        let mut best: SmallVec<[(u32, NodeHandle); 4]> = SmallVec::new();
        // Whether a candidate ranked `key` would be kept: there is room,
        // or it ranks no later than the last kept.
        let wanted = |best: &[(u32, NodeHandle)], key: (u32, NodeId)| {
            best.len() <= rank || best.last().is_some_and(|(r, c)| key <= (*r, c.id))
        };
        let consider = |best: &mut SmallVec<[(u32, NodeHandle); 4]>, rtt: u32, h: NodeHandle| {
            let key = (rtt, h.id);
            if !wanted(best, key) {
                return;
            }
            let at = best.partition_point(|(r, c)| (*r, c.id) < key);
            if best.len() > rank {
                best.pop();
            }
            best.insert(at, (rtt, h));
        };
        for e in self.table.rows_from(row) {
            if e.rtt != RTT_UNKNOWN {
                consider(&mut best, e.rtt, e.handle);
            }
        }
        for (h, rtt) in self.nbrs.members() {
            if me.shared_prefix_len(h.id, b) < row {
                continue;
            }
            // `known_rtt_off_table`, knowing the neighbourhood set's RTT
            // without looking the member up again.
            let leaf = self.leaves.rtt(h.id);
            let rtt = if leaf != RTT_UNKNOWN { leaf } else { rtt };
            // One that would not be kept needs no duplicate check.
            if !wanted(&best, (rtt, h.id)) {
                continue;
            }
            match self.table.entry(h.id) {
                // A member in the table sits in a row of its shared
                // prefix: seen above if measured.
                Some(e) if e.rtt != RTT_UNKNOWN => {}
                _ => consider(&mut best, rtt, h),
            }
        }
        match best.last() {
            Some((_, h)) => {
                let to = h.addr;
                self.send(to, &Repr::RowRequest { row: row as u8 });
                true
            }
            None => self.request_row_from(row, row),
        }
    }

    /// Ask the `rank`-th nearest node we know for its neighbourhood set.
    fn request_neighborhood(&mut self, rank: usize) {
        let mut near: SmallVec<[(u32, NodeHandle); 32]> =
            self.nbrs.members().map(|(h, r)| (r, h)).collect();
        near.sort_unstable_by_key(|(r, h)| (*r, h.id));
        if let Some((_, h)) = near.get(rank.min(near.len().saturating_sub(1))) {
            let to = h.addr;
            self.send(
                to,
                &Repr::RowRequest {
                    row: NEIGHBORHOOD_ROW,
                },
            );
        }
    }

    /// Probe the next few routing-table entries (a cursor walks the table,
    /// covering it once per `table_probe_period`), so entries of crashed
    /// nodes are found and repaired before a message has to time out on
    /// them (MSPastry probes its routing table periodically too).
    fn probe_table_slice(&mut self, now: Time) {
        let per_round = self.cfg.gossip_interval.as_micros().max(1);
        let period = self.table_probe_period().as_micros().max(per_round);
        let rounds = (period / per_round).max(1) as usize;
        let want = self.table.len().div_ceil(rounds);
        let slots = self.table.num_rows() * self.cfg.cols();
        let mut picked: SmallVec<[NodeHandle; 8]> = SmallVec::new();
        // The cursor visits slots in (row, column) order, wrapping, at
        // most `slots` of them per round; it jumps from one occupied slot
        // to the next, and stops right after the last one picked.
        let mut scanned = 0;
        while picked.len() < want && scanned < slots {
            let cursor = self.table_cursor;
            let budget = slots - scanned;
            let next = self
                .table
                .next_occupied(cursor)
                .or_else(|| self.table.next_occupied(0));
            // Slots from the cursor to the next occupied one, exclusive.
            let gap = next.map(|(i, _)| (i + slots - cursor) % slots);
            let (Some((i, e)), Some(gap)) = (next, gap) else {
                self.table_cursor = (cursor + budget) % slots;
                break;
            };
            if gap >= budget {
                self.table_cursor = (cursor + budget) % slots;
                break;
            }
            scanned += gap + 1;
            self.table_cursor = (i + 1) % slots;
            // Heard from within half a period: as good as a pong. (Not
            // a whole period: a node that crashes right after we heard
            // from it must still be found within about one.)
            if now.saturating_since(e.heard).as_micros() >= period / 2 {
                picked.push(e.handle);
            }
        }
        for h in picked {
            if !self.leaves.contains(h.id) {
                self.ping(now, h, ProbeCause::Liveness);
            }
        }
    }

    /// `Config::table_probe_period` while peers fail, else the calm one.
    fn table_probe_period(&self) -> Duration {
        if self.dead.is_empty() {
            self.cfg.table_probe_period_calm
        } else {
            self.cfg.table_probe_period
        }
    }

    /// Refinement round `n` after joining: ask the `n`-th nearest suitable
    /// node (cycling through the four nearest) for each proximity row, then
    /// schedule the next round twice as far out.
    fn refine_table(&mut self, now: Time, n: u8) {
        if !self.is_active() {
            return;
        }
        for row in 0..self.pns_rows() {
            self.request_row_from_nearby(row, usize::from(n % 4));
        }
        // Rounds 1 and 2 (4 and 8 s in) also fetch a near node's
        // neighbourhood set: when many nodes join at once (a thousand
        // within a second), the join path and the rows of nearby nodes all
        // come from a young overlay and miss near candidates for some
        // slots, which row exchanges alone never find; nodes near a near
        // node are exactly those candidates. (1k nodes joining in 0.5 s:
        // stretch 1.66 -> 1.45, perfect tables give 1.44.)
        if n == 1 || n == 2 {
            self.request_neighborhood(usize::from(n % 4));
        }
        if n + 1 < self.cfg.refine_rounds {
            let wait = Duration::from_secs(2u64 << (n + 1).min(16));
            self.set_timer(now + wait, TimerKind::Refine(n + 1));
        }
    }

    /// Periodic routing-table maintenance (MSPastry §4): each round, one
    /// random proximity row is compared with the same row of one of our
    /// nearest nodes, so tables keep improving as nearer nodes join.
    fn maintain_table(&mut self) {
        // Back off while rounds stop improving the table.
        self.maint_backoff = if self.table_changes == 0 {
            self.maint_backoff
                .saturating_mul(2)
                .min(self.cfg.maintenance_backoff_max.max(1))
        } else {
            1
        };
        self.table_changes = 0;
        let rows = self.pns_rows().max(1);
        let r = self.rng.index(rows);
        let rank = self.rng.index(4);
        self.request_row_from_nearby(r, rank);
    }

    /// The runtime learnt that `addr` cannot be reached (TCP reset, ICMP).
    pub fn peer_unreachable(&mut self, now: Time, addr: PeerAddr) {
        let ids: SmallVec<[NodeId; 4]> = self
            .leaves
            .members()
            .map(|l| l.handle)
            .chain(self.table.entries().map(|e| e.handle))
            .chain(self.nbrs.handles().copied())
            .filter(|h| h.addr == addr)
            .map(|h| h.id)
            .collect();
        for id in ids {
            self.mark_dead(now, id);
        }
    }

    fn on_keepalive(&mut self, now: Time, at: Time) {
        if at != self.keepalive_at || !self.is_active() {
            return;
        }
        let stale: SmallVec<[NodeHandle; 32]> = self
            .leaves
            .members()
            .filter(|l| now.saturating_since(l.last_heard) >= self.cfg.keepalive_interval)
            .map(|l| l.handle)
            .collect();
        for h in stale {
            self.ping(now, h, ProbeCause::Liveness);
        }
        self.estimate_pns_rows();
        self.probe_table_slice(now);
        self.gossip_leaf_set();
        let memory = self.cfg.dead_memory;
        self.dead.retain(|_, t| now.saturating_since(*t) < memory);
        self.maybe_refresh_leaf_set(now);
        // Row maintenance runs on average once per keep-alive interval,
        // times the back-off.
        let per = (self.cfg.keepalive_interval.as_micros()
            / self.cfg.gossip_interval.as_micros().max(1))
        .max(1)
            * u64::from(self.maint_backoff);
        if self.rng.below(per) == 0 {
            self.maintain_table();
        }
        self.schedule_keepalive(now);
    }

    /// A side of the leaf set that is not full means we believe the ring
    /// holds fewer than |L|/2 other nodes. That is true in a small overlay,
    /// and false when we joined through a contact whose view was still small
    /// (many nodes starting at once). Re-run the join toward our own id
    /// through a known node: the nodes now closest to us answer with their
    /// state, and the probes that follow make them learn us too.
    fn maybe_refresh_leaf_set(&mut self, now: Time) {
        if !self.is_active() || !self.leaves.is_complete_ring() || self.leaves.is_empty() {
            return;
        }
        let members = self.leaves.handles();
        let contact = members[self.rng.index(members.len())];
        let route = Route {
            msg_id: self.fresh_msg_id(),
            key: self.me.id,
            hops: 0,
            service: Service::Join,
            origin: self.me,
            payload: Bytes::from_static(&[0]),
        };
        self.refresh_until = now + self.cfg.join_timeout;
        self.send(contact.addr, &Repr::Route(route));
    }

    /// A `State` with our leaf set and our RTT to each member.
    fn leaf_state(&self, flags: u8, rtt_hint: u32) -> State {
        let (leaves, leaf_rtts) = self.leaves.handles_and_rtts();
        State {
            flags: flags | sf::LEAFSET | sf::LIST_RTTS,
            rtt_hint,
            leaves,
            leaf_rtts,
            ..State::default()
        }
    }

    /// Gossip our leaf set to the nearest node on each side (like Chord's
    /// stabilisation) and to one random member (epidemic spread across
    /// the set): concurrent joins can leave neighbours unaware of each
    /// other, and this is what brings them together.
    fn gossip_leaf_set(&mut self) {
        let state = self.leaf_state(sf::GOSSIP, RTT_UNKNOWN);
        if !state.leaves.is_empty() {
            let mut targets: SmallVec<[NodeHandle; 3]> = [Side::Cw, Side::Ccw]
                .into_iter()
                .filter_map(|s| self.leaves.nearest(s))
                .collect();
            targets.push(state.leaves[self.rng.index(state.leaves.len())]);
            let mut repr = Repr::State(state);
            for (i, h) in targets.iter().enumerate() {
                if !targets[..i].iter().any(|t| t.id == h.id) {
                    // Our RTT to it, so it need not measure us back.
                    let rtt = self.known_rtt(h.id);
                    if let Repr::State(st) = &mut repr {
                        st.rtt_hint = rtt;
                    }
                    self.send(h.addr, &repr);
                }
            }
        }
    }

    /// Keep a `TimerKind::Probes` armed at or before `deadline`.
    fn arm_probes(&mut self, deadline: Time) {
        if deadline < self.probes_at {
            self.probes_at = deadline;
            self.set_timer(deadline, TimerKind::Probes);
        }
    }

    /// The probe timer fired: handle every probe whose deadline has passed,
    /// in (deadline, id) order, then re-arm for the earliest left.
    fn on_probes_due(&mut self, now: Time, at: Time) {
        if at != self.probes_at {
            return;
        }
        self.probes_at = Time::NEVER;
        let mut due: SmallVec<[(Time, NodeId); 8]> = self
            .probes
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, p)| (p.deadline, *id))
            .collect();
        due.sort_unstable();
        for (_, id) in due {
            self.on_probe_timeout(now, id);
        }
        if let Some(next) = self.probes.values().map(|p| p.deadline).min() {
            self.arm_probes(next);
        }
    }

    fn on_probe_timeout(&mut self, now: Time, id: NodeId) {
        let Some(p) = self.probes.get_mut(&id) else {
            return;
        };
        if p.heard {
            self.probes.remove(&id);
            // Heard from while the probe ran: alive. (`heard` cleared it
            // then, unless the suspicion came after.)
            self.unsuspect(id);
            return;
        }
        if p.sent < self.cfg.probe_attempts {
            p.sent += 1;
            p.deadline = now + self.cfg.probe_timeout;
            let (deadline, addr) = (p.deadline, p.addr);
            self.arm_probes(deadline);
            let flags = if self.is_active() { PING_ACTIVE } else { 0 };
            let rtt_hint = self.known_rtt(id);
            self.send(
                addr,
                &Repr::Ping {
                    token: now.as_micros(),
                    flags,
                    rtt_hint,
                },
            );
            return;
        }
        self.probes.remove(&id);
        self.mark_dead(now, id);
        if let Phase::Joining { .. } = self.phase {
            self.maybe_finish_join(now, false);
        }
    }

    fn on_ack_timeout(&mut self, now: Time, hop: u64, at: Time) {
        let Some(p) = self.acks.get(&hop) else {
            return;
        };
        if p.deadline != at {
            return;
        }
        let Some(mut p) = self.acks.remove(&hop) else {
            return;
        };
        let silent = p.next.id;
        // A probe of it that is already out and unanswered says more than
        // one lost datagram would.
        let already_silent = self.probe_unanswered(silent);
        self.ping(now, p.next, ProbeCause::Liveness);
        if p.resent < MAX_ROOT_RESENDS && !already_silent && self.is_root_of(silent, p.route.key) {
            // The key's root did not ack. Routing around it would deliver
            // the message to its neighbour, the wrong node, whenever just
            // one datagram (the message or its ack) was lost: send it to
            // the root again, same message id, while the probe runs. Only
            // once a probe goes unanswered too (checked before this
            // timeout's own probe went out) is the root suspected and
            // routed around; a root that answers its probe is sent the
            // message again, up to `MAX_ROOT_RESENDS` times. (A lost ack
            // means the root gets a copy, which it drops; another node
            // getting the message instead would be worse.)
            self.stats.resent_to_root += 1;
            p.resent += 1;
            p.deadline = now + self.hop_timeout(silent);
            self.send_hop(hop, p);
            return;
        }
        // Suspect the silent hop: probe it, and route around it meanwhile,
        // with this message and every other one waiting on it.
        if self.probe_unanswered(silent)
            && !self.suspects.contains(&silent)
            && self.suspects.len() < MAX_SUSPECTS
        {
            self.suspects.push(silent);
        }
        self.reroute(now, p);
        self.reroute_waiting_on(now, silent);
    }

    /// Send a message whose next hop did not ack (or died) on along
    /// another path, or drop it once it has been rerouted too often.
    fn reroute(&mut self, now: Time, mut p: PendingHop) {
        self.stats.reroutes += 1;
        if p.reroutes >= self.cfg.max_reroutes {
            self.stats.route_drops += 1;
            tracing::debug!(node = ?self.me.id, key = ?p.route.key, "routed message dropped after reroutes");
            return;
        }
        p.avoid.push(p.next.id);
        self.route_on(now, p.route, p.avoid, p.reroutes + 1, true);
    }

    /// Reroute now every message waiting for an ack from `id`, oldest
    /// first, instead of letting each wait out its own timeout.
    fn reroute_waiting_on(&mut self, now: Time, id: NodeId) {
        if self.acks.is_empty() {
            return;
        }
        let mut waiting: SmallVec<[(Time, u64); 8]> = self
            .acks
            .iter()
            .filter(|(_, p)| p.next.id == id)
            .map(|(hop, p)| (p.deadline, *hop))
            .collect();
        // Map order depends on the hasher's seed; the sending order must not.
        waiting.sort_unstable();
        for (_, hop) in waiting {
            if let Some(p) = self.acks.remove(&hop) {
                self.reroute(now, p);
            }
        }
    }

    /// A liveness or RTT probe of `id` is out and nothing from it has
    /// arrived since.
    fn probe_unanswered(&self, id: NodeId) -> bool {
        self.probes.get(&id).is_some_and(|pr| !pr.heard)
    }

    /// `id` answered or is gone: stop routing around it.
    fn unsuspect(&mut self, id: NodeId) {
        if !self.suspects.is_empty() {
            self.suspects.retain(|s| *s != id);
        }
    }

    // ----- routing ------------------------------------------------------

    /// Whether `id` is, by our leaf set, the node responsible for `key`.
    fn is_root_of(&self, id: NodeId, key: NodeId) -> bool {
        self.leaves.covers(key) && self.leaves.closest(key, &[]).is_some_and(|h| h.id == id)
    }

    /// The next hop toward `key`, `None` if this node is responsible.
    /// Nodes in `avoid` (the message's own) and suspected nodes are
    /// skipped.
    pub fn next_hop(&self, key: NodeId, avoid: &[NodeId]) -> Option<NodeHandle> {
        let skip = |id: NodeId| avoid.contains(&id) || self.suspects.contains(&id);
        if self.leaves.covers(key) {
            return self.leaves.closest_where(key, skip);
        }
        let b = self.cfg.b;
        let l = self.me.id.shared_prefix_len(key, b);
        if l >= self.table.num_rows() {
            // The key is our own id.
            return None;
        }
        if let Some(e) = self.table.get(l, key.digit(l, b))
            && !skip(e.handle.id)
        {
            return Some(e.handle);
        }
        // Rare case: any node sharing at least as long a prefix that is
        // numerically closer; prefer longer prefixes, then closeness.
        let mut best: Option<(usize, NodeHandle)> = None;
        let cands = self
            .leaves
            .members()
            .map(|l| l.handle)
            .chain(self.table.entries().map(|e| e.handle))
            .chain(self.nbrs.handles().copied());
        for h in cands {
            if skip(h.id) {
                continue;
            }
            let s = h.id.shared_prefix_len(key, b);
            if s < l || !key.closer(h.id, self.me.id) {
                continue;
            }
            let better = match &best {
                None => true,
                Some((bs, bh)) => s > *bs || (s == *bs && key.closer(h.id, bh.id)),
            };
            if better {
                best = Some((s, h));
            }
        }
        best.map(|(_, h)| h)
    }

    /// Route an application or service message from this node.
    pub fn route(&mut self, now: Time, key: NodeId, service: Service, payload: Bytes) {
        let msg_id = self.fresh_msg_id();
        self.seen.first_time(now, self.me.id, msg_id);
        let route = Route {
            msg_id,
            key,
            hops: 0,
            service,
            origin: self.me,
            payload,
        };
        self.route_on(now, route, SmallVec::new(), 0, false);
    }

    /// One routing step at this node.
    fn route_on(
        &mut self,
        now: Time,
        mut route: Route,
        mut avoid: SmallVec<[NodeId; 4]>,
        reroutes: u8,
        is_retry: bool,
    ) {
        if route.hops >= MAX_HOPS {
            // Far beyond log16(N) + repairs: a loop through inconsistent
            // state. Drop rather than circulate.
            self.stats.route_drops += 1;
            return;
        }
        if route.service == Service::Join && !avoid.contains(&route.origin.id) {
            // Never route a join to the joiner itself (it may be known from an
            // earlier attempt).
            avoid.push(route.origin.id);
        }
        let next = self.next_hop(route.key, &avoid);
        if route.service == Service::Join && !is_retry {
            self.join_hop(now, &mut route, next.is_none());
        }
        match next {
            None => {
                if route.service != Service::Join {
                    self.upcalls.push_back(Upcall::Deliver(route));
                }
            }
            Some(next) => match route.service {
                Service::Other(_) if !is_retry => {
                    self.upcalls.push_back(Upcall::Forward { route, next })
                }
                _ => self.forward_with(now, route, next, avoid, reroutes),
            },
        }
    }

    /// Forward `route` to `next` (after a `Forward` upcall the owner did not
    /// consume).
    pub fn forward(&mut self, now: Time, route: Route, next: NodeHandle) {
        self.forward_with(now, route, next, SmallVec::new(), 0);
    }

    fn forward_with(
        &mut self,
        now: Time,
        mut route: Route,
        next: NodeHandle,
        avoid: SmallVec<[NodeId; 4]>,
        reroutes: u8,
    ) {
        route.hops = route.hops.saturating_add(1);
        if route.msg_id == 0 || self.acks.contains_key(&route.msg_id) {
            // Not drawn yet (a message an overlay service built to send
            // hop by hop), or another message waiting here has it: only a
            // forged copy could, and it must not replace ours.
            route.msg_id = self.fresh_msg_id();
        }
        let msg_id = route.msg_id;
        let deadline = now + self.hop_timeout(next.id);
        let p = PendingHop {
            route,
            next,
            deadline,
            reroutes,
            avoid,
            resent: 0,
        };
        self.send_hop(msg_id, p);
    }

    /// A message id: never 0, which means "none".
    fn fresh_msg_id(&mut self) -> u64 {
        self.rng.next_u64().max(1)
    }

    /// Send `p`'s message to its next hop and wait for the ack until its
    /// deadline.
    fn send_hop(&mut self, msg_id: u64, p: PendingHop) {
        self.send(p.next.addr, &Repr::Route(p.route.clone()));
        self.set_timer(p.deadline, TimerKind::RouteAck(msg_id));
        self.acks.insert(msg_id, p);
    }

    /// How long a hop to `next` may take to ack: 3 RTTs, within
    /// [`ack_timeout_min`, `ack_timeout`]. Never longer than for an unknown
    /// RTT: the RTT may be a peer's unverified hint (any u32 from a forged
    /// message).
    fn hop_timeout(&self, next: NodeId) -> Duration {
        let rtt = self.known_rtt(next);
        if rtt == RTT_UNKNOWN {
            self.cfg.ack_timeout
        } else {
            Duration::from_micros(u64::from(rtt) * 3)
                .max(self.cfg.ack_timeout_min)
                .min(self.cfg.ack_timeout)
        }
    }

    /// This node is a hop of `joiner`'s JOIN: give it the rows it can use,
    /// our neighbourhood set if we are the contact, our leaf set if we are
    /// the last hop.
    fn join_hop(&mut self, _now: Time, route: &mut Route, is_final: bool) {
        let joiner = route.origin;
        let next_row = usize::from(route.payload.first().copied().unwrap_or(0));
        let p = self.me.id.shared_prefix_len(joiner.id, self.cfg.b);
        let last_row = p.min(self.table.num_rows() - 1);
        let mut state = State {
            flags: sf::JOIN_ROWS,
            rtt_hint: RTT_UNKNOWN,
            ..State::default()
        };
        // Each list is sized up front for everything it may take (the
        // filters drop at most the joiner): collecting through a filter
        // would grow it by doubling.
        if next_row <= last_row {
            let rows = self.table.rows_between(next_row, last_row + 1);
            state.table = Vec::with_capacity(rows.len());
            state
                .table
                .extend(rows.map(|e| e.handle).filter(|h| h.id != joiner.id));
        }
        // The sets go with our RTT to each member, for the triangle
        // bound of `on_state` (which a joiner can use once it knows its
        // RTT to us).
        if route.hops == 0 {
            state.flags |= sf::JOIN_CONTACT | sf::LIST_RTTS;
            (state.neighbors, state.neighbor_rtts) = self.nbrs.lists_without(joiner.id);
        }
        if is_final {
            state.flags |= sf::JOIN_FINAL | sf::LIST_RTTS;
            let (mut leaves, mut rtts) = self.leaves.handles_and_rtts();
            if let Some(i) = leaves.iter().position(|h| h.id == joiner.id) {
                leaves.remove(i);
                rtts.remove(i);
            }
            (state.leaves, state.leaf_rtts) = (leaves, rtts);
        }
        self.send(joiner.addr, &Repr::State(state));
        let row_after = (last_row + 1).max(next_row).min(255) as u8;
        route.payload = Bytes::copy_from_slice(&[row_after]);
    }

    // ----- receiving ----------------------------------------------------

    /// Handle one decoded Pastry message from `from`.
    pub fn handle(&mut self, now: Time, from: NodeHandle, repr: Repr) {
        if from.id == self.me.id {
            self.stats.dropped_self += 1;
            return;
        }
        let slot = self.heard(now, from);
        match repr {
            Repr::Route(route) => {
                let joiner_first_hop = route.service == Service::Join && route.hops == 0;
                if !self.is_active() {
                    // Our tables are not ready; no ack, so the sender
                    // routes around us.
                    self.stats.dropped_not_joined += 1;
                    return;
                }
                if !joiner_first_hop {
                    self.send(
                        from.addr,
                        &Repr::RouteAck {
                            msg_id: route.msg_id,
                        },
                    );
                } else if route.origin.id != from.id {
                    // Only the joiner itself may open a join at hop 0.
                    self.stats.dropped_malformed += 1;
                    return;
                }
                if !self.seen.first_time(now, route.origin.id, route.msg_id) {
                    // A copy of one we took: its sender missed our ack
                    // (acked again above) and resent or rerouted it.
                    self.stats.dropped_duplicate += 1;
                    return;
                }
                self.route_on(now, route, SmallVec::new(), 0, false);
            }
            Repr::RouteAck { msg_id } => {
                if let Some(p) = self.acks.get(&msg_id)
                    && p.next.id == from.id
                {
                    self.acks.remove(&msg_id);
                }
            }
            Repr::State(state) => self.on_state(now, from, state, slot),
            Repr::Announce { rtt_hint } => {
                if !self.is_active() {
                    self.stats.dropped_not_joined += 1;
                    return;
                }
                self.offer_heard(now, from, rtt_hint, slot);
                if self.leaves.contains(from.id) {
                    let state = self.leaf_state(0, rtt_hint);
                    self.send(from.addr, &Repr::State(state));
                }
            }
            Repr::Ping {
                token,
                flags,
                rtt_hint,
            } => {
                let mut pong_flags = 0;
                let mut report_below = RTT_UNKNOWN;
                if flags & PING_ACTIVE != 0 && self.is_active() {
                    // If we want to measure the pinger, its ping already
                    // is half of that: ask it to report what our pong
                    // measures instead of pinging it back.
                    self.fold_probe = Some((from.id, None));
                    self.offer_heard(now, from, rtt_hint, slot);
                    if let Some((_, Some(below))) = self.fold_probe.take() {
                        pong_flags = PONG_WANT_RTT;
                        report_below = below;
                    }
                } else if flags & PING_ACTIVE == 0 && self.is_active() {
                    // A joiner measuring us: tell it what it must beat to
                    // enter our tables, so that it announces itself only
                    // where that can change something.
                    pong_flags = PONG_ANNOUNCE_BELOW;
                    report_below = self.admits_below(from.id, &slot);
                }
                let pong = Repr::Pong {
                    token,
                    flags: pong_flags,
                    report_below,
                };
                self.send(from.addr, &pong);
            }
            Repr::RttReport { rtt } => {
                if self.is_active() {
                    let rtt = rtt.clamp(1, RTT_UNKNOWN - 1);
                    self.offer_heard(now, from, rtt, slot);
                }
            }
            Repr::Pong {
                token,
                flags,
                report_below,
            } => {
                if self.probes.remove(&from.id).is_none() {
                    // Unsolicited or late: nothing to measure.
                    return;
                }
                // The token is our own clock reading; a forged one can at
                // worst distort one RTT sample, so clamp it to sane values.
                let rtt = now
                    .as_micros()
                    .saturating_sub(token)
                    .clamp(1, u64::from(RTT_UNKNOWN - 1)) as u32;
                self.offer_heard(now, from, rtt, slot);
                if flags & PONG_ANNOUNCE_BELOW != 0
                    && rtt >= report_below
                    && let Phase::Joining { quiet, .. } = &mut self.phase
                {
                    quiet.push(from.id);
                }
                // (`rtt` is below `RTT_UNKNOWN`: an unbounded ask is met.)
                if flags & PONG_WANT_RTT != 0 && rtt < report_below {
                    let report = Repr::RttReport { rtt };
                    self.send(from.addr, &report);
                }
                self.maybe_finish_join(now, false);
            }
            Repr::LeafSetRequest => {
                if !self.is_active() {
                    return;
                }
                let state = self.leaf_state(0, self.known_rtt(from.id));
                self.send(from.addr, &Repr::State(state));
            }
            Repr::RowRequest { row } => {
                if !self.is_active() {
                    return;
                }
                // Both lists sized up front (at most one entry more than
                // they get): filling them by doubling took several
                // allocations per reply.
                let (table, table_rtts) = if row == NEIGHBORHOOD_ROW {
                    self.nbrs.lists_without(from.id)
                } else {
                    let entries = self.table.row(usize::from(row));
                    let n = entries.len();
                    let mut lists = (Vec::with_capacity(n), Vec::with_capacity(n));
                    lists.extend(entries.map(|e| (e.handle, e.rtt)));
                    lists
                };
                let state = State {
                    flags: sf::ROW | sf::TABLE_RTTS,
                    rtt_hint: self.known_rtt(from.id),
                    table,
                    table_rtts,
                    ..State::default()
                };
                self.send(from.addr, &Repr::State(state));
            }
        }
    }

    /// Push-pull gossip: if we know nodes that belong in the sender's leaf
    /// set but are not in the one it sent, send it ours.
    fn answer_gossip(&mut self, from: NodeHandle, theirs: &[NodeHandle]) {
        let mut view = LeafSet::new(from.id, self.cfg.leaf_set_size);
        for h in theirs {
            view.insert(*h, Time::ZERO);
        }
        let missing = std::iter::once(self.me)
            .chain(self.leaves.members().map(|l| l.handle))
            .any(|h| h.id != from.id && view.would_accept(h.id));
        if missing {
            let state = self.leaf_state(0, RTT_UNKNOWN);
            self.send(from.addr, &Repr::State(state));
        }
    }

    fn on_state(&mut self, now: Time, from: NodeHandle, state: State, slot: Lookup) {
        let joining = matches!(self.phase, Phase::Joining { .. });
        let join_flags = sf::JOIN_ROWS | sf::JOIN_FINAL | sf::JOIN_CONTACT;
        let refreshing = self.is_active() && now < self.refresh_until;
        if state.flags & join_flags != 0 && !joining && !refreshing {
            // Join state for a join we are not doing (late, duplicate or
            // forged): ignore rather than let anyone fill our tables.
            self.stats.dropped_unexpected += 1;
            return;
        }
        self.offer_heard(now, from, state.rtt_hint, slot);
        // With the sender's RTT to each entry of a list, the triangle
        // inequality bounds ours from below, both ways: rtt(us, e) >=
        // |rtt(sender, e) - rtt(us, sender)|. An entry near a sender near
        // us may be near us; one near a sender far from us, or far from a
        // sender near us, is not.
        let to_sender = self.known_rtt(from.id);
        let flags = state.flags;
        let floor = |rtts: &[u32], flag: u8, i: usize| match rtts.get(i) {
            Some(&r) if flags & flag != 0 && to_sender != RTT_UNKNOWN && r != RTT_UNKNOWN => {
                r.abs_diff(to_sender)
            }
            _ => 0,
        };
        for (i, h) in state.table.iter().enumerate() {
            let contest = Contest::Bounded(floor(&state.table_rtts, sf::TABLE_RTTS, i));
            self.offer_bounded(now, *h, RTT_UNKNOWN, false, contest, None);
        }
        // A leaf set lists the nodes nearest the sender in id space, hence
        // near us in id space, not in the network: for an occupied slot of
        // our table such a node is no likelier than any other to beat the
        // measured holder (1 in 20 did, at 30k nodes). Once we are active
        // it fills empty slots, but is probed against a holder only if
        // random nodes stand a chance against it (and the triangle bound
        // allows). Near candidates come from row replies and neighbourhood
        // sets. (A joiner still measures its final leaf set: its table is
        // young.)
        let random_point = self.is_active() && state.flags & sf::LEAFSET != 0;
        for (i, h) in state.leaves.iter().enumerate() {
            let at_least = floor(&state.leaf_rtts, sf::LIST_RTTS, i);
            let contest = if random_point {
                Contest::RandomPoint(at_least)
            } else {
                Contest::Bounded(at_least)
            };
            self.offer_bounded(now, *h, RTT_UNKNOWN, false, contest, None);
        }
        for (i, h) in state.neighbors.iter().enumerate() {
            let contest = Contest::Bounded(floor(&state.neighbor_rtts, sf::LIST_RTTS, i));
            self.offer_bounded(now, *h, RTT_UNKNOWN, false, contest, None);
        }
        if state.flags & sf::GOSSIP != 0 && self.is_active() {
            self.answer_gossip(from, &state.leaves);
        }
        if joining && state.flags & sf::JOIN_FINAL != 0 {
            if let Phase::Joining { have_leaf_set, .. } = &mut self.phase {
                *have_leaf_set = true;
            }
            self.set_timer(now + self.cfg.join_settle, TimerKind::JoinSettle);
            self.maybe_finish_join(now, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Header, MsgType};

    fn handle(top_digit: u128, low: u128, host: u8) -> NodeHandle {
        NodeHandle::new(
            NodeId((top_digit << 124) | low),
            PeerAddr::v4(10, 0, 0, host, 4000),
        )
    }

    /// Types and destinations of what `p` queued, draining it.
    fn sent(p: &mut Pastry) -> Vec<(MsgType, PeerAddr)> {
        p.transmits
            .drain(..)
            .map(|t| {
                let hdr = Header::new_checked(&t.body[..]).expect("valid header");
                (hdr.msg_type().expect("known type"), t.to)
            })
            .collect()
    }

    /// Where `p`'s queued pings go (the other transmits are dropped).
    fn pinged(p: &mut Pastry) -> Vec<PeerAddr> {
        sent(p)
            .into_iter()
            .filter(|(ty, _)| *ty == MsgType::Ping)
            .map(|(_, to)| to)
            .collect()
    }

    fn decoded(p: &mut Pastry) -> Vec<(PeerAddr, Repr)> {
        p.transmits
            .drain(..)
            .map(|t| {
                let hdr = Header::new_checked(&t.body[..]).expect("valid header");
                let ty = hdr.msg_type().expect("known type");
                (t.to, Repr::parse(ty, &t.body).expect("valid body"))
            })
            .collect()
    }

    /// Lookup `msg_id` from `origin` toward `key`, one hop out.
    fn lookup(msg_id: u64, key: NodeId, origin: NodeHandle) -> Route {
        Route {
            msg_id,
            key,
            hops: 1,
            service: Service::Lookup,
            origin,
            payload: Bytes::from_static(b"k"),
        }
    }

    /// Node 0x0…1 (seeded with `seed`), alone in its overlay at `now`.
    fn alone(seed: u64, now: Time) -> Pastry {
        let mut rng = Rng::new(seed);
        let mut p = Pastry::new(Config::default(), handle(0, 1, 1), &mut rng);
        p.join(now, &[]);
        p
    }

    /// `h`, an active member that measured `rtt_hint` µs to `p`, pings it:
    /// `p` learns of `h` first-hand, with that RTT.
    fn ping_from(p: &mut Pastry, now: Time, h: NodeHandle, rtt_hint: u32) {
        let ping = Repr::Ping {
            token: 0,
            flags: PING_ACTIVE,
            rtt_hint,
        };
        p.handle(now, h, ping);
    }

    /// Fill the leaf set of `p` (id 0x0…1) with eight nodes on each side,
    /// all pinging at 5 ms: ids just above ours and just below the wrap.
    fn fill_leaf_set_at_5ms(p: &mut Pastry, now: Time) {
        for i in 0..8u8 {
            ping_from(p, now, handle(0, 100 + u128::from(i), 10 + i), 5_000);
            let ccw = handle(0xf, (1 << 124) - 1 - u128::from(i), 20 + i);
            ping_from(p, now, ccw, 5_000);
        }
    }

    /// Fill `p`'s neighbourhood set with nodes 100 µs away (ids under
    /// top digits 7 and 8, away from the slots the tests use).
    fn fill_neighbourhood(p: &mut Pastry, now: Time) {
        let cap = p.config().neighborhood_size;
        for k in 0..cap as u128 {
            let h = handle(7 + k % 2, 1_000 + k, 100 + k as u8);
            ping_from(p, now, h, 100);
        }
        assert_eq!(p.neighborhood().admits_below(), 100);
    }

    /// b, whose slot (0, 5) is held by a node measured at 1 ms and whose
    /// neighbourhood set is full, answers a ping from a, a candidate for
    /// that slot probing b for its own table. Returns a, b, the holder,
    /// the time and b's pong to a.
    fn reverse_probe() -> (Pastry, Pastry, NodeHandle, Time, Repr) {
        let mut rng = Rng::new(9);
        let t0 = Time::from_micros(1_000_000);
        let mut b = Pastry::new(Config::default(), handle(0, 1, 1), &mut rng);
        b.join(t0, &[]);
        let holder = handle(5, 10, 2);
        ping_from(&mut b, t0, holder, 1_000);
        fill_neighbourhood(&mut b, t0);
        decoded(&mut b);
        let mut a = Pastry::new(Config::default(), handle(5, 20, 3), &mut rng);
        a.join(t0, &[]);
        a.ping(t0, b.me(), ProbeCause::Table);
        let [(to, ping)] = decoded(&mut a).try_into().expect("one ping");
        assert_eq!(to, b.me().addr);
        b.handle(t0, a.me(), ping);
        // b wants a's RTT too, but does not ping back: its pong asks.
        let [(to, pong)] = decoded(&mut b).try_into().expect("only a pong");
        assert_eq!(to, a.me().addr);
        (a, b, holder, t0, pong)
    }

    #[test]
    fn a_wanted_reverse_probe_rides_on_the_pong() {
        let (mut a, mut b, _, t0, pong) = reverse_probe();
        // Only an RTT below the holder's matters.
        assert_eq!(pong_bound(&pong), (PONG_WANT_RTT, 1_000));
        a.handle(t0 + Duration::from_micros(400), b.me(), pong);
        let [(_, report)] = decoded(&mut a).try_into().expect("one report");
        assert_eq!(report, Repr::RttReport { rtt: 400 });
        b.handle(t0 + Duration::from_micros(600), a.me(), report);
        let e = b.routing_table().get(0, 5).expect("slot filled");
        assert_eq!((e.handle, e.rtt), (a.me(), 400));
    }

    #[test]
    fn a_reverse_probe_that_cannot_win_is_not_reported() {
        let (mut a, b, holder, t0, pong) = reverse_probe();
        // a measures 1.5 ms, farther than b's holder: it keeps that to
        // itself (its own table still takes b).
        a.handle(t0 + Duration::from_micros(1_500), b.me(), pong);
        assert!(decoded(&mut a).is_empty(), "no report");
        let e = a.routing_table().get(0, 0).expect("a's slot for b");
        assert_eq!((e.handle, e.rtt), (b.me(), 1_500));
        let e = b.routing_table().get(0, 5).expect("b's slot");
        assert_eq!(e.handle, holder, "the holder stays");
    }

    /// The flags and report bound of a pong.
    fn pong_bound(pong: &Repr) -> (u8, u32) {
        match pong {
            Repr::Pong {
                flags,
                report_below,
                ..
            } => (*flags, *report_below),
            other => panic!("not a pong: {other:?}"),
        }
    }

    /// b: active, its leaf set full of ids next to its own (so a node
    /// under another top digit is no leaf of it), slot (0, 5) held at 1 ms
    /// and the neighbourhood set full at 100 µs.
    fn ponger_with_full_sets(rng: &mut Rng, t0: Time) -> Pastry {
        let mut b = Pastry::new(Config::default(), handle(0, 1, 1), rng);
        b.join(t0, &[]);
        ping_from(&mut b, t0, handle(5, 10, 2), 1_000);
        fill_neighbourhood(&mut b, t0);
        for k in 0..8u8 {
            let low = (1u128 << 124) - 1 - u128::from(k);
            ping_from(&mut b, t0, handle(0, 100 + u128::from(k), 150 + k), 5_000);
            ping_from(&mut b, t0, handle(15, low, 170 + k), 5_000);
        }
        assert_eq!(b.leaf_set().len(), 16);
        decoded(&mut b);
        b
    }

    #[test]
    fn a_joiner_does_not_announce_itself_where_its_pong_said_it_cannot_matter() {
        let mut rng = Rng::new(13);
        let t0 = Time::from_micros(1_000_000);
        let mut b = ponger_with_full_sets(&mut rng, t0);
        let j = handle(5, 20, 3);
        let mut joiner = Pastry::new(Config::default(), j, &mut rng);
        joiner.join(t0, &[b.me().addr]);
        decoded(&mut joiner);
        joiner.ping(t0, b.me(), ProbeCause::Table);
        let [(_, ping)] = decoded(&mut joiner).try_into().expect("one ping");
        b.handle(t0, j, ping);
        let [(to, pong)] = decoded(&mut b).try_into().expect("one pong");
        assert_eq!(to, j.addr);
        // j would go to slot (0, 5), whose holder is 1 ms away (the
        // neighbourhood set takes only nodes under 100 µs).
        assert_eq!(pong_bound(&pong), (PONG_ANNOUNCE_BELOW, 1_000));
        // j measures 1.5 ms: b keeps its holder whatever j says.
        let t1 = t0 + Duration::from_micros(1_500);
        joiner.handle(t1, b.me(), pong);
        assert_eq!(joiner.routing_table().get(0, 0).map(|e| e.rtt), Some(1_500));
        // The last hop's leaf set: sixteen ids next to j's own, so b is no
        // leaf of j. Too deep in the table to be measured: j activates.
        let leaves: Vec<NodeHandle> = (0..8u8)
            .flat_map(|k| {
                let k128 = u128::from(k);
                [handle(5, 21 + k128, 40 + k), handle(5, 19 - k128, 60 + k)]
            })
            .collect();
        let state = State {
            flags: sf::JOIN_FINAL,
            rtt_hint: RTT_UNKNOWN,
            leaves: leaves.clone(),
            ..State::default()
        };
        joiner.handle(t1, leaves[0], Repr::State(state));
        assert!(joiner.is_active());
        let announced: Vec<PeerAddr> = decoded(&mut joiner)
            .into_iter()
            .filter(|(_, m)| matches!(m, Repr::Announce { .. }))
            .map(|(to, _)| to)
            .collect();
        assert_eq!(announced.len(), 16, "every leaf, and not b: {announced:?}");
        assert!(!announced.contains(&b.me().addr));
        assert_eq!(joiner.stats.announces_skipped, 1);
    }

    #[test]
    fn a_joiner_the_leaf_set_would_take_may_announce_itself_at_any_rtt() {
        let mut rng = Rng::new(14);
        let t0 = Time::from_micros(1_000_000);
        let mut b = ponger_with_full_sets(&mut rng, t0);
        // Between b and its nearest clockwise leaf, in the slot of that
        // leaf (measured at 5 ms): only the leaf set makes any RTT do.
        let j = handle(0, 96, 3);
        let ping = Repr::Ping {
            token: 7,
            flags: 0,
            rtt_hint: RTT_UNKNOWN,
        };
        b.handle(t0, j, ping);
        let [(_, pong)] = decoded(&mut b).try_into().expect("one pong");
        assert_eq!(pong_bound(&pong), (PONG_ANNOUNCE_BELOW, RTT_UNKNOWN));
    }

    #[test]
    fn a_neighbourhood_request_is_answered_like_a_row_with_rtts() {
        let now = Time::from_micros(1_000_000);
        let mut p = alone(11, now);
        let (near, far, asker) = (handle(7, 2, 2), handle(9, 3, 3), handle(4, 4, 4));
        for (h, rtt) in [(far, 900), (near, 300), (asker, 500)] {
            ping_from(&mut p, now, h, rtt);
        }
        decoded(&mut p);
        p.handle(
            now,
            asker,
            Repr::RowRequest {
                row: NEIGHBORHOOD_ROW,
            },
        );
        let [(to, reply)]: [(PeerAddr, Repr); 1] = decoded(&mut p).try_into().expect("one reply");
        let Repr::State(st) = reply else {
            panic!("not a State: {reply:?}");
        };
        assert_eq!(to, asker.addr);
        assert_eq!(st.flags, sf::ROW | sf::TABLE_RTTS);
        // Nearest first, with our RTTs, and not the asker itself.
        assert_eq!(st.table, vec![near, far]);
        assert_eq!(st.table_rtts, vec![300, 900]);
    }

    #[test]
    fn row_replies_with_rtts_skip_candidates_that_cannot_win() {
        let mut rng = Rng::new(7);
        let me = handle(0, 1, 1);
        let mut p = Pastry::new(Config::default(), me, &mut rng);
        let now = Time::from_micros(1_000_000);
        p.join(now, &[]);
        assert!(p.is_active());
        // Slot (0, 5) is held by a node 1 ms away; the replier is 0.1 ms
        // away in slot (0, 3).
        let holder = handle(5, 10, 2);
        let replier = handle(3, 11, 3);
        for (h, rtt) in [(holder, 1_000), (replier, 100)] {
            ping_from(&mut p, now, h, rtt);
        }
        sent(&mut p);
        // Two candidates for slot (0, 5): 1.5 ms and 0.9 ms from the
        // replier, so at least 1.4 ms and 0.8 ms from us.
        let far = handle(5, 12, 4);
        let maybe = handle(5, 13, 5);
        let state = State {
            flags: sf::ROW | sf::TABLE_RTTS,
            rtt_hint: 100,
            table: vec![far, maybe],
            table_rtts: vec![1_500, 900],
            ..State::default()
        };
        p.handle(now, replier, Repr::State(state));
        let pings = pinged(&mut p);
        assert_eq!(pings, vec![maybe.addr]);
        assert_eq!(p.stats.probes_pruned, 1);
        // Without the RTTs both would have been probed.
        let state = State {
            flags: sf::ROW,
            rtt_hint: 100,
            table: vec![handle(5, 14, 6)],
            ..State::default()
        };
        p.handle(now, replier, Repr::State(state));
        assert_eq!(pinged(&mut p).len(), 1);
    }

    #[test]
    fn listed_rtts_bound_leaf_and_neighbour_candidates_from_both_sides() {
        let now = Time::from_micros(1_000_000);
        let mut p = alone(6, now);
        // A full leaf set at 5 ms: holders at 9 ms are farther than random
        // nodes, so leaf-set candidates may contest them.
        fill_leaf_set_at_5ms(&mut p, now);
        for (digit, host) in [(7, 2), (8, 3), (9, 4)] {
            ping_from(&mut p, now, handle(digit, 10, host), 9_000);
        }
        // The sender is 12 ms away.
        let sender = handle(3, 11, 30);
        ping_from(&mut p, now, sender, 12_000);
        sent(&mut p);
        // c7 is 2 ms from the sender, so at least 10 ms from us (only the
        // bound from the sender's side says so); c8 is 20 ms from it, at
        // least 8 ms from us, and may win; c9, a neighbour 30 ms from it,
        // is at least 18 ms from us.
        let (c7, c8, c9) = (handle(7, 20, 5), handle(8, 20, 6), handle(9, 20, 7));
        let state = State {
            flags: sf::LEAFSET | sf::GOSSIP | sf::LIST_RTTS,
            rtt_hint: 12_000,
            leaves: vec![c7, c8],
            leaf_rtts: vec![2_000, 20_000],
            neighbors: vec![c9],
            neighbor_rtts: vec![30_000],
            ..State::default()
        };
        p.handle(now, sender, Repr::State(state));
        let pings = pinged(&mut p);
        assert_eq!(pings, vec![c8.addr]);
        assert_eq!(p.stats.probes_pruned, 2);
    }

    #[test]
    fn leaf_set_candidates_do_not_contest_holders_nearer_than_random_nodes() {
        let now = Time::from_micros(1_000_000);
        let mut p = alone(5, now);
        // A full leaf set of ids nearer ours than any candidate below.
        fill_leaf_set_at_5ms(&mut p, now);
        // Slot (0, 5) is held by a node measured at 1 ms, nearer than every
        // leaf (5 ms); (0, 7) by one at 9 ms, farther; (0, 6) is empty.
        ping_from(&mut p, now, handle(5, 10, 2), 1_000);
        ping_from(&mut p, now, handle(7, 10, 5), 9_000);
        assert_eq!(p.leaf_set().len(), 16);
        sent(&mut p);
        let (c5, c6, c7) = (handle(5, 20, 3), handle(6, 20, 4), handle(7, 20, 6));
        let gossip = State {
            flags: sf::LEAFSET | sf::GOSSIP,
            rtt_hint: 5_000,
            leaves: vec![c5, c6, c7],
            ..State::default()
        };
        let sender = handle(0, 100, 10);
        p.handle(now, sender, Repr::State(gossip));
        let pings = pinged(&mut p);
        // The empty slot takes its candidate (and measures it); the holder
        // that random nodes rarely beat is not challenged, the other is.
        assert_eq!(pings, vec![c6.addr, c7.addr]);
        assert_eq!(p.routing_table().get(0, 6).map(|e| e.handle), Some(c6));
        assert_eq!(
            p.routing_table().get(0, 5).map(|e| e.handle.id),
            Some(handle(5, 10, 2).id)
        );
        assert_eq!(p.stats.probes_pruned, 1);
        // The same candidate in a row reply is measured.
        let row = State {
            flags: sf::ROW,
            rtt_hint: 5_000,
            table: vec![c5],
            ..State::default()
        };
        p.handle(now, sender, Repr::State(row));
        let pinged = sent(&mut p).contains(&(MsgType::Ping, c5.addr));
        assert!(pinged);
        // Every probe was for the table, and counted as such.
        let st = &p.stats;
        assert_eq!((st.probes_sent, st.probes_table), (3, 3));
        assert_eq!(
            st.probes_joining + st.probes_new_leaf + st.probes_liveness,
            0
        );
    }

    #[test]
    fn a_hop_heard_from_while_probed_is_not_left_suspected() {
        let t0 = Time::from_micros(1_000_000);
        let mut p = alone(11, t0);
        let x = handle(5, 10, 2);
        ping_from(&mut p, t0, x, 5_000);
        let key = NodeId(x.id.0 + 1);
        assert_eq!(p.next_hop(key, &[]), Some(x));
        p.route(t0, key, Service::Lookup, Bytes::from_static(b"k"));
        // x is being probed, and is heard from before the ack is due: it
        // is alive, only this one ack went missing.
        p.ping(t0, x, ProbeCause::Liveness);
        ping_from(&mut p, t0 + Duration::from_millis(10), x, 5_000);
        sent(&mut p);
        let mut fired = Vec::new();
        // x is the key's root, and answers: each timeout sends the message
        // to it again, until the resends run out and it is routed around.
        for (i, ms) in [150, 300, 450].into_iter().enumerate() {
            p.handle_timeout(t0 + Duration::from_millis(ms), &mut fired);
            assert_eq!(p.stats.resent_to_root, i as u64 + 1);
            assert_eq!(p.stats.reroutes, 0);
        }
        p.handle_timeout(t0 + Duration::from_millis(600), &mut fired);
        assert_eq!(p.stats.reroutes, 1, "the ack timed out four times");
        // The probe ends (x was heard from); nothing says x is silent.
        p.handle_timeout(t0 + Duration::from_secs(2), &mut fired);
        assert!(!p.probes.contains_key(&x.id));
        assert!(p.suspects.is_empty(), "{:?}", p.suspects);
        assert_eq!(p.next_hop(key, &[]), Some(x));
    }

    /// A copy of a routed message (its sender missed our ack) is acked
    /// again, so the sender stops resending, but is neither delivered nor
    /// routed on a second time, from whichever neighbour it comes.
    #[test]
    fn a_copy_is_acked_again_but_taken_once() {
        let t0 = Time::from_micros(1_000_000);
        let mut p = alone(12, t0);
        let (x, z) = (handle(5, 10, 2), handle(7, 10, 3));
        ping_from(&mut p, t0, x, 5_000);
        ping_from(&mut p, t0, z, 5_000);
        sent(&mut p);
        let origin = handle(9, 10, 4);
        let copy = |origin| Repr::Route(lookup(42, p.me.id, origin));
        let (first, second, other) = (copy(origin), copy(origin), copy(x));
        p.handle(t0, x, first);
        p.handle(t0, x, second.clone());
        p.handle(t0, z, second);
        p.handle(t0, z, other);
        let acks = sent(&mut p);
        let ack = MsgType::RouteAck;
        assert_eq!(
            acks,
            [(ack, x.addr), (ack, x.addr), (ack, z.addr), (ack, z.addr)]
        );
        let delivered: Vec<NodeId> = p
            .upcalls
            .drain(..)
            .filter_map(|u| match u {
                Upcall::Deliver(r) => Some(r.origin.id),
                _ => None,
            })
            .collect();
        assert_eq!(
            delivered,
            [origin.id, x.id],
            "same id, other origin: not a copy"
        );
        assert_eq!(p.stats.dropped_duplicate, 2);
    }

    /// The message id is the origin's: kept on every hop and on a reroute,
    /// so the next hops can recognise a copy.
    #[test]
    fn a_message_keeps_its_id_over_hops_and_reroutes() {
        let t0 = Time::from_micros(1_000_000);
        let mut p = alone(13, t0);
        let (x, z) = (handle(5, 10, 2), handle(5, 20, 3));
        ping_from(&mut p, t0, x, 5_000);
        let key = NodeId(x.id.0 + 1);
        let from = handle(9, 10, 4);
        p.handle(t0, from, Repr::Route(lookup(77, key, from)));
        let ids = |p: &mut Pastry| -> Vec<(PeerAddr, u64)> {
            decoded(p)
                .into_iter()
                .filter_map(|(to, r)| match r {
                    Repr::Route(r) => Some((to, r.msg_id)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(ids(&mut p), [(x.addr, 77)]);
        // x goes silent; z is the way around it.
        ping_from(&mut p, t0, z, 5_000);
        let mut fired = Vec::new();
        p.handle_timeout(t0 + Duration::from_secs(1), &mut fired);
        p.handle_timeout(t0 + Duration::from_secs(2), &mut fired);
        assert_eq!(p.stats.reroutes, 1);
        let sent_on = ids(&mut p);
        assert!(sent_on.contains(&(z.addr, 77)), "{sent_on:?}");
        // A message this node starts gets a fresh, non-zero id.
        p.route(t0, key, Service::Lookup, Bytes::from_static(b"j"));
        let fresh = p
            .acks
            .keys()
            .copied()
            .filter(|id| *id != 77)
            .collect::<Vec<_>>();
        assert!(fresh.len() == 1 && fresh[0] != 0, "{fresh:?}");
    }

    #[test]
    fn timer_entries_round_trip_and_order_like_the_pair() {
        let mut kinds = vec![
            TimerKind::Keepalive,
            TimerKind::JoinSettle,
            TimerKind::Gossip,
        ];
        kinds.push(TimerKind::Probes);
        for x in [0, 1, u64::MAX] {
            kinds.push(TimerKind::RouteAck(x));
        }
        for x in [0, 1, u8::MAX] {
            kinds.push(TimerKind::JoinTimeout(x));
            kinds.push(TimerKind::Refine(x));
            kinds.push(TimerKind::Service(x));
        }
        let pairs: Vec<(Time, TimerKind)> = [0, 7, u64::MAX]
            .into_iter()
            .flat_map(|t| kinds.iter().map(move |k| (Time(t), *k)))
            .collect();
        for a in &pairs {
            assert_eq!(TimerEntry::new(a.0, a.1).get(), *a);
            for b in &pairs {
                let (ea, eb) = (TimerEntry::new(a.0, a.1), TimerEntry::new(b.0, b.1));
                assert_eq!(ea.cmp(&eb), a.cmp(b), "{a:?} vs {b:?}");
            }
        }
        assert_eq!(core::mem::size_of::<TimerEntry>(), 24);
        assert_eq!(core::mem::size_of::<(NodeId, Probe)>(), 64);
    }

    /// The hot ranges cover the struct but its RTT cache, and a node's
    /// lie within the node.
    #[test]
    fn hot_ranges_leave_out_the_rtt_cache_only() {
        let [(a, la), (b, lb)] = Pastry::hot_ranges();
        let cache = core::mem::size_of::<RttCache>();
        assert_eq!(a, 0);
        assert_eq!(la + cache, b);
        assert_eq!(b + lb, core::mem::size_of::<Pastry>());
        let node = core::mem::size_of::<crate::Node>();
        for (offset, len) in crate::Node::hot_ranges() {
            assert!(len > 0 && offset + len <= node, "{offset} + {len} > {node}");
        }
    }
}
