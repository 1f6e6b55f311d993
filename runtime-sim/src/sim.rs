//! The discrete-event simulator: a set of engines on a synthetic network.
//!
//! State owned here: one engine slot and one `Meta` (liveness, timer
//! bookkeeping) per host, the event queue, the latency model, the network's own seeded
//! RNG (loss draws; never an engine's RNG), and an optional partition. It
//! consumes scheduled [`Action`]s and engine outputs; it emits engine inputs
//! and hands every engine event to an [`Observer`].
//!
//! Determinism: nodes live in a `Vec` indexed by host number, addresses map to
//! indices arithmetically (`crate::addr`), the queue breaks ties by insertion
//! order, and every random draw comes from a seeded [`Rng`]. Nothing iterates
//! a hash map.
//!
//! Timers: each node has one *deadline* (its latest `poll_timeout`) and at
//! most one *armed* heap entry that matters. A heap entry whose time is not
//! the node's armed time is stale and skipped; when the armed entry fires but
//! the deadline has moved later, it is re-armed instead of calling the engine,
//! so engines see `handle_timeout` only when a deadline is due. Only a move to
//! an *earlier* deadline pushes a new entry, which keeps the heap small when
//! engines push their deadlines back on every message.

use crate::addr::{addr_of, index_of};
use crate::engine::{Engine, SimChannel, SimEvent, SimTransmit};
use crate::queue::EventQueue;
use crate::topology::Topology;
use alm_core::{Duration, Key, PeerAddr, Rng, Time};
use bytes::Bytes;
use smallvec::SmallVec;

/// Network model parameters shared by every link.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Probability that a datagram is lost (independently per datagram).
    /// Streams are reliable and never lose messages.
    pub loss: f64,
    /// How long after a stream message is sent to a crashed or partitioned
    /// peer the sender is told `handle_peer_unreachable` (a TCP timeout).
    pub stream_fail_after: Duration,
    /// Default per-node uplink rate for `Stream` transmits, in bits per second
    /// (`None`: unlimited). Overridable per node with [`Sim::set_uplink`].
    pub uplink_bps: Option<u64>,
    /// Panic on a drain violation (default: in debug builds). Violations are
    /// counted in [`SimStats::drain_violations`] either way.
    pub strict_drain: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            loss: 0.0,
            stream_fail_after: Duration::from_secs(1),
            uplink_bps: None,
            strict_drain: cfg!(debug_assertions),
        }
    }
}

/// Scheduled happenings that are not messages or timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `join_overlay` on a started node, with one bootstrap node (or none:
    /// the first node of a new overlay).
    Join { node: u32, bootstrap: Option<u32> },
    /// The node stops silently: it receives and sends nothing more and its
    /// timers stop. Nobody is told.
    Crash(u32),
    /// The nodes of partition set `k` (see [`Sim::add_partition`]) become
    /// unreachable from all others until [`Action::Heal`].
    Partition(u32),
    /// End of the current partition.
    Heal,
    /// Handed to [`Observer::on_user`] with full access to the simulator.
    User(u64),
}

enum Ev {
    Datagram { from: u32, to: u32, bytes: Bytes },
    Stream { from: u32, to: u32, bytes: Bytes },
    Unreachable { node: u32, peer: u32 },
    Timer { node: u32 },
    Action(Action),
}

/// Receives engine events and user actions.
pub trait Observer<E: Engine, T: Topology> {
    /// An event polled from `node`'s engine at `now`.
    fn on_event(&mut self, now: Time, node: usize, event: SimEvent);
    /// `from` handed `t` to the network at `now` (before loss, partition
    /// and liveness checks). For traffic accounting; the default ignores it.
    #[inline]
    fn on_transmit(&mut self, now: Time, from: usize, t: &SimTransmit) {
        let _ = (now, from, t);
    }
    /// An [`Action::User`] came due.
    fn on_user(&mut self, sim: &mut Sim<E, T>, tag: u64) {
        let _ = (sim, tag);
    }
    /// Checked after every event: `true` makes `run_until` return early.
    fn stop(&self) -> bool {
        false
    }
}

/// An observer that ignores everything.
pub struct NoObserver;
impl<E: Engine, T: Topology> Observer<E, T> for NoObserver {
    fn on_event(&mut self, _now: Time, _node: usize, _event: SimEvent) {}
}

/// Counters of the simulator's own work (not the engines').
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Queue entries processed (including stale timer entries).
    pub events: u64,
    pub stale_timers: u64,
    pub timeouts_fired: u64,
    pub transmits: u64,
    pub datagrams: u64,
    pub streams: u64,
    pub bytes: u64,
    pub delivered: u64,
    pub dropped_loss: u64,
    pub dropped_dead: u64,
    pub dropped_partition: u64,
    pub dropped_unknown: u64,
    pub unreachable_signals: u64,
    pub engine_events: u64,
    /// A poll returned `Some` after returning `None` with no input between.
    pub drain_violations: u64,
    /// After `handle_timeout(now)` the engine still asked for a deadline
    /// `<= now`; the simulator fires it again 1 µs later instead of spinning.
    pub timer_violations: u64,
}

/// Per-node bookkeeping, kept apart from the (large) engines in a dense
/// array so the checks done on every event stay in cache.
struct Meta {
    alive: bool,
    /// The engine's latest `poll_timeout` (µs), `u64::MAX` if none.
    deadline: u64,
    /// Time of the heap entry that will fire, `u64::MAX` if none.
    armed: u64,
}

/// Everything but the engines, so a drain can borrow one engine mutably and
/// the network at the same time.
struct Net<T> {
    now: Time,
    queue: EventQueue<Ev>,
    topo: T,
    cfg: NetConfig,
    rng: Rng,
    /// Partition side per node while a partition is active (else empty).
    side: Vec<u8>,
    partitions: Vec<Vec<u32>>,
    /// Per-node uplink (0 = unlimited) and when it is next free; empty while
    /// every uplink is unlimited.
    uplink_bps: Vec<u64>,
    uplink_free: Vec<u64>,
    stats: SimStats,
}

/// A deterministic simulated network of engines `E` over latency model `T`.
pub struct Sim<E, T> {
    engines: Vec<Option<E>>,
    meta: Vec<Meta>,
    net: Net<T>,
}

impl<E: Engine, T: Topology> Sim<E, T> {
    /// A network with one (not yet started) slot per host of `topo`.
    pub fn new(topo: T, cfg: NetConfig, seed: u64) -> Self {
        let n = topo.len();
        assert!(n <= crate::addr::MAX_NODES);
        let engines = (0..n).map(|_| None).collect();
        let meta = (0..n)
            .map(|_| Meta {
                alive: false,
                deadline: u64::MAX,
                armed: u64::MAX,
            })
            .collect();
        let (uplink_bps, uplink_free) = match cfg.uplink_bps {
            Some(bps) => (vec![bps; n], vec![0; n]),
            None => (Vec::new(), Vec::new()),
        };
        Sim {
            engines,
            meta,
            net: Net {
                now: Time::ZERO,
                queue: EventQueue::new(),
                topo,
                cfg,
                rng: Rng::new(seed ^ 0x6e65_7477_6f72_6b00),
                side: Vec::new(),
                partitions: Vec::new(),
                uplink_bps,
                uplink_free,
                stats: SimStats::default(),
            },
        }
    }

    pub fn now(&self) -> Time {
        self.net.now
    }
    pub fn len(&self) -> usize {
        self.meta.len()
    }
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }
    pub fn topology(&self) -> &T {
        &self.net.topo
    }
    pub fn stats(&self) -> &SimStats {
        &self.net.stats
    }
    /// Largest number of pending queue entries so far.
    pub fn queue_peak(&self) -> usize {
        self.net.queue.peak()
    }
    pub fn config(&self) -> &NetConfig {
        &self.net.cfg
    }
    /// Pending queue entries.
    pub fn queued(&self) -> usize {
        self.net.queue.len()
    }
    pub fn addr(&self, i: usize) -> PeerAddr {
        addr_of(i)
    }
    /// The engine of node `i`, if started (crashed nodes keep theirs).
    pub fn engine(&self, i: usize) -> Option<&E> {
        self.engines[i].as_ref()
    }
    pub fn is_alive(&self, i: usize) -> bool {
        self.meta[i].alive
    }

    /// Per-node uplink rate for `Stream` transmits (`None`: unlimited).
    pub fn set_uplink(&mut self, i: usize, bps: Option<u64>) {
        let n = self.meta.len();
        if self.net.uplink_bps.is_empty() {
            self.net.uplink_bps = vec![0; n];
            self.net.uplink_free = vec![0; n];
        }
        self.net.uplink_bps[i] = bps.unwrap_or(0);
    }

    /// Put an engine in slot `i` and mark it alive. Nothing is called yet.
    pub fn start_node(&mut self, i: usize, engine: E) {
        self.engines[i] = Some(engine);
        let s = &mut self.meta[i];
        s.alive = true;
        s.deadline = u64::MAX;
        s.armed = u64::MAX;
    }

    /// Crash node `i` now (see [`Action::Crash`]).
    pub fn crash(&mut self, i: usize) {
        self.meta[i].alive = false;
    }

    /// Register a set of nodes for a later [`Action::Partition`].
    pub fn add_partition(&mut self, nodes: &[usize]) -> u32 {
        self.net
            .partitions
            .push(nodes.iter().map(|&i| i as u32).collect());
        (self.net.partitions.len() - 1) as u32
    }

    /// Schedule `action` at `at` (not earlier than now).
    pub fn schedule(&mut self, at: Time, action: Action) {
        let at = at.max(self.net.now);
        self.net.queue.push(at, Ev::Action(action));
    }

    /// Call into node `i`'s engine now, then drain it and re-arm its timer.
    /// Does nothing if the node is not started or has crashed.
    pub fn call<O: Observer<E, T>>(&mut self, i: usize, obs: &mut O, f: impl FnOnce(&mut E, Time)) {
        let now = self.net.now;
        let meta = &mut self.meta[i];
        if !meta.alive {
            return;
        }
        let Some(engine) = self.engines[i].as_mut() else {
            return;
        };
        engine.prefetch();
        f(engine, now);
        drain(&mut self.net, meta, engine, i, obs, false);
    }

    /// `join_overlay` on node `i` with the given bootstrap nodes.
    pub fn join<O: Observer<E, T>>(&mut self, i: usize, bootstrap: &[usize], obs: &mut O) {
        let addrs: SmallVec<[PeerAddr; 4]> = bootstrap.iter().map(|&b| addr_of(b)).collect();
        self.call(i, obs, |e, now| e.join_overlay(now, &addrs));
    }

    /// An application lookup from node `i`.
    pub fn route<O: Observer<E, T>>(&mut self, i: usize, key: Key, payload: Bytes, obs: &mut O) {
        self.call(i, obs, |e, now| e.route(now, key, payload));
    }

    /// Process every queue entry due at or before `limit` (or until
    /// `obs.stop()`), then advance the clock to `limit` (unless stopped).
    /// Returns whether the observer stopped the run.
    pub fn run_until<O: Observer<E, T>>(&mut self, limit: Time, obs: &mut O) -> bool {
        while let Some((t, ev)) = self.net.queue.pop_until(limit) {
            self.prefetch_upcoming();
            debug_assert!(t >= self.net.now, "time went backwards");
            self.net.now = t;
            self.net.stats.events += 1;
            self.dispatch(t, ev, obs);
            if obs.stop() {
                return true;
            }
        }
        if limit > self.net.now {
            self.net.now = limit;
        }
        false
    }

    /// Start loading what the next few events will touch: their nodes'
    /// engine structs and timer bookkeeping, and their datagrams. A big run
    /// is bound by cache misses on state it reaches at random (100,000
    /// nodes' engines are ~3 KB each, plus their tables); fetching a few
    /// events ahead overlaps those misses with the current event's work,
    /// where the engine's own [`Engine::prefetch`] just before its input
    /// has little to overlap with (100k nodes on a quiet machine: 209 s ->
    /// 176 s in one pair; no gain seen while another process shared the
    /// L3 cache, see BENCHMARKS.md). A hint only: nothing it touches
    /// changes.
    fn prefetch_upcoming(&self) {
        /// Events fetched ahead: fewer overlap less, more evict each other
        /// (3 and 4 measured best at 30k nodes).
        const AHEAD: usize = 3;
        let lines = std::mem::size_of::<Option<E>>().div_ceil(64);
        for ev in self.net.queue.upcoming(AHEAD) {
            let (node, bytes) = match ev {
                Ev::Datagram { to, bytes, .. } | Ev::Stream { to, bytes, .. } => (*to, Some(bytes)),
                Ev::Timer { node } | Ev::Unreachable { node, .. } => (*node, None),
                Ev::Action(_) => continue,
            };
            let i = node as usize;
            let base: *const u8 = (&raw const self.engines[i]).cast();
            for l in 0..lines {
                prefetch(base.wrapping_add(l * 64));
            }
            prefetch((&raw const self.meta[i]).cast());
            if let Some(b) = bytes {
                prefetch(b.as_ptr());
            }
        }
    }

    /// Run for `span` of simulated time from now.
    pub fn run_for<O: Observer<E, T>>(&mut self, span: Duration, obs: &mut O) -> bool {
        let limit = self.net.now + span;
        self.run_until(limit, obs)
    }

    fn dispatch<O: Observer<E, T>>(&mut self, t: Time, ev: Ev, obs: &mut O) {
        match ev {
            Ev::Datagram { from, to, bytes } => {
                if self.meta[to as usize].alive {
                    self.net.stats.delivered += 1;
                    let from = addr_of(from as usize);
                    self.call(to as usize, obs, |e, now| {
                        e.handle_datagram(now, from, bytes)
                    });
                } else {
                    self.net.stats.dropped_dead += 1;
                }
            }
            Ev::Stream { from, to, bytes } => {
                if self.meta[to as usize].alive {
                    self.net.stats.delivered += 1;
                    let from = addr_of(from as usize);
                    self.call(to as usize, obs, |e, now| {
                        e.handle_stream_message(now, from, bytes)
                    });
                } else {
                    self.net.stats.dropped_dead += 1;
                    let at = t + self.net.cfg.stream_fail_after;
                    self.net.queue.push(
                        at,
                        Ev::Unreachable {
                            node: from,
                            peer: to,
                        },
                    );
                }
            }
            Ev::Unreachable { node, peer } => {
                self.net.stats.unreachable_signals += 1;
                let peer = addr_of(peer as usize);
                self.call(node as usize, obs, |e, now| {
                    e.handle_peer_unreachable(now, peer)
                });
            }
            Ev::Timer { node } => {
                let i = node as usize;
                let meta = &mut self.meta[i];
                if !meta.alive || meta.armed != t.0 {
                    self.net.stats.stale_timers += 1;
                    return;
                }
                meta.armed = u64::MAX;
                if meta.deadline <= t.0 {
                    self.net.stats.timeouts_fired += 1;
                    // alive and armed imply started.
                    let engine = self.engines[i].as_mut().expect("armed node has an engine");
                    engine.prefetch();
                    engine.handle_timeout(t);
                    drain(&mut self.net, meta, engine, i, obs, true);
                } else {
                    // The deadline moved later since this entry was pushed.
                    arm(&mut self.net, meta, i, false);
                }
            }
            Ev::Action(a) => self.act(a, obs),
        }
    }

    fn act<O: Observer<E, T>>(&mut self, a: Action, obs: &mut O) {
        match a {
            Action::Join { node, bootstrap } => {
                let b: SmallVec<[usize; 1]> = bootstrap.map(|b| b as usize).into_iter().collect();
                self.join(node as usize, &b, obs);
            }
            Action::Crash(i) => self.crash(i as usize),
            Action::Partition(k) => {
                let n = self.meta.len();
                let mut side = vec![0u8; n];
                for &i in &self.net.partitions[k as usize] {
                    side[i as usize] = 1;
                }
                self.net.side = side;
            }
            Action::Heal => self.net.side = Vec::new(),
            Action::User(tag) => obs.on_user(self, tag),
        }
    }
}

/// Drain node `i` after a call into it: route its transmits into the
/// network, hand its events to the observer, check that both polls stay
/// empty, then re-arm its timer.
fn drain<E: Engine, T: Topology, O: Observer<E, T>>(
    net: &mut Net<T>,
    meta: &mut Meta,
    engine: &mut E,
    i: usize,
    obs: &mut O,
    after_timeout: bool,
) {
    let now = net.now;
    loop {
        while let Some(t) = engine.poll_transmit() {
            obs.on_transmit(now, i, &t);
            send(net, i, t);
        }
        while let Some(ev) = engine.poll_event() {
            net.stats.engine_events += 1;
            obs.on_event(now, i, ev);
        }
        let late_t = engine.poll_transmit();
        let late_e = engine.poll_event();
        if late_t.is_none() && late_e.is_none() {
            break;
        }
        net.stats.drain_violations += 1;
        assert!(
            !net.cfg.strict_drain,
            "drain violation at node {i}: a poll returned Some after None \
             (transmit: {}, event: {:?})",
            late_t.is_some(),
            late_e
        );
        if let Some(t) = late_t {
            obs.on_transmit(now, i, &t);
            send(net, i, t);
        }
        if let Some(ev) = late_e {
            net.stats.engine_events += 1;
            obs.on_event(now, i, ev);
        }
    }
    engine.release_idle_memory();
    meta.deadline = engine.poll_timeout().map_or(u64::MAX, |t| t.0);
    arm(net, meta, i, after_timeout);
}

/// Push a timer entry if the node's deadline is earlier than what is armed.
fn arm<T>(net: &mut Net<T>, meta: &mut Meta, i: usize, after_timeout: bool) {
    let dl = meta.deadline;
    if dl >= Time::NEVER.0 || dl >= meta.armed {
        return;
    }
    let now = net.now.0;
    let at = if dl > now {
        dl
    } else if after_timeout {
        net.stats.timer_violations += 1;
        now + 1
    } else {
        now
    };
    if at >= meta.armed {
        return;
    }
    meta.armed = at;
    net.queue.push(Time(at), Ev::Timer { node: i as u32 });
}

fn send<T: Topology>(net: &mut Net<T>, from: usize, t: SimTransmit) {
    let len = t.bytes.len() as u64;
    net.stats.transmits += 1;
    net.stats.bytes += len;
    let reliable = t.channel == SimChannel::Stream;
    if reliable {
        net.stats.streams += 1;
    } else {
        net.stats.datagrams += 1;
    }
    let to = match index_of(t.to) {
        Some(to) if to < net.topo.len() => to,
        _ => {
            net.stats.dropped_unknown += 1;
            return;
        }
    };
    if !net.side.is_empty() && net.side[from] != net.side[to] {
        net.stats.dropped_partition += 1;
        if reliable {
            let at = net.now + net.cfg.stream_fail_after;
            net.queue.push(
                at,
                Ev::Unreachable {
                    node: from as u32,
                    peer: to as u32,
                },
            );
        }
        return;
    }
    let lat = net.topo.latency(from, to);
    let (from32, to32) = (from as u32, to as u32);
    if reliable {
        let mut depart = net.now.0;
        if let Some(&bps) = net.uplink_bps.get(from)
            && bps > 0
        {
            let start = depart.max(net.uplink_free[from]);
            // Serialisation delay in µs, rounded up.
            let ser = (u128::from(len) * 8 * 1_000_000).div_ceil(u128::from(bps)) as u64;
            depart = start + ser;
            net.uplink_free[from] = depart;
        }
        net.queue.push(
            Time(depart) + lat,
            Ev::Stream {
                from: from32,
                to: to32,
                bytes: t.bytes,
            },
        );
    } else {
        if net.cfg.loss > 0.0 && net.rng.unit_f64() < net.cfg.loss {
            net.stats.dropped_loss += 1;
            return;
        }
        net.queue.push(
            net.now + lat,
            Ev::Datagram {
                from: from32,
                to: to32,
                bytes: t.bytes,
            },
        );
    }
}

/// Ask the CPU to start loading the cache line at `p`.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults and never changes
    // memory, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
