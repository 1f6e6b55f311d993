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
//! Batches (opt-in, [`Sim::set_batching`], [`Sim::set_threads`]): runs of
//! causally independent events whose engines run together, possibly on
//! several threads, with the outputs applied in pop order; an event becomes
//! a `Job` (`plan`), its engine runs it on any thread (`Job::execute`), and
//! `merge` applies it. With worker threads the jobs stream through
//! `crate::pool` (published as planned, taken back in order as they are
//! run), so workers run a batch while this thread forms and applies it.
//! Without batching every event is a batch of one, applied as soon as it
//! ran.
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
use crate::topology::{Span, Topology};
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
    /// Batches run (with batching on; their events are counted in `events`).
    pub batches: u64,
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

/// Events run together at most (see [`Sim::set_batching`]).
const MAX_BATCH: usize = 96;
const _: () = assert!(MAX_BATCH < crate::pool::RING);
/// Events a batch may defer (see `Sim::form_batch`).
const MAX_DEFERRED: usize = 32;
/// Jobs whose memory a thread starts fetching ahead of the one it runs.
const AHEAD: usize = 3;
/// How many queued events ahead `form_batch` prefetches.
const LOOKAHEAD: usize = 6;

/// A deterministic simulated network of engines `E` over latency model `T`.
pub struct Sim<E, T> {
    /// Boxed, so that a batch can hand an engine to another thread by
    /// moving a pointer.
    engines: Vec<Option<Box<E>>>,
    meta: Vec<Meta>,
    net: Net<T>,
    batching: bool,
    /// The batch being formed or run, in pop order.
    jobs: Vec<Job<E>>,
    /// While a batch is formed: the events taken so far, run or deferred.
    span: Span,
    /// Output buffers of finished jobs, for reuse.
    spare_out: Vec<Vec<Output>>,
    /// Worker threads (see [`Sim::set_threads`]); with them, a batch's
    /// jobs go to their stream as they are planned, not to `jobs`.
    pool: Option<Box<dyn Executor<E>>>,
    /// Jobs of the batch being formed or run that went to `pool`.
    streamed: usize,
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
            batching: false,
            jobs: Vec::with_capacity(MAX_BATCH),
            span: Span::default(),
            spare_out: Vec::new(),
            pool: None,
            streamed: 0,
        }
    }

    /// Run events in *batches* instead of one at a time.
    ///
    /// A batch is a run of queued events, in pop order, at distinct nodes,
    /// such that no event of the batch can cause anything at the node of a
    /// later one before that one's time: every pair is further apart in
    /// latency than in time ([`Topology::separated`]). Running a batch's
    /// engines in any order (or at once, see [`Sim::set_threads`]) then
    /// hands every engine the same inputs at the same times as running them
    /// one by one would. The simulator applies the batch's outputs (sends,
    /// timers, observer calls) in pop order afterwards, so a run stays
    /// deterministic and independent of the thread count.
    ///
    /// What changes against one-at-a-time: messages a batch schedules get
    /// their queue sequence numbers after the whole batch ran, which can
    /// reorder events due at the same microsecond, and [`Observer::stop`]
    /// is checked after each batch, so up to a batch's worth of events more
    /// may run before a run stops. Actions never share a batch.
    pub fn set_batching(&mut self, on: bool) {
        self.batching = on;
    }

    /// Run each batch on `threads` threads, the calling one included
    /// (`threads <= 1`: on the calling thread only). Turns batching on.
    /// Results are the same for every `threads`.
    pub fn set_threads(&mut self, threads: usize)
    where
        E: Send + 'static,
    {
        self.batching = true;
        self.pool = (threads > 1).then(|| {
            Box::new(crate::pool::Pool::<E>::new(
                threads - 1,
                self.net.cfg.strict_drain,
            )) as Box<dyn Executor<E>>
        });
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
        self.engines[i].as_deref()
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
        self.engines[i] = Some(Box::new(engine));
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
        if !self.meta[i].alive {
            return;
        }
        let Some(engine) = self.engines[i].as_deref_mut() else {
            return;
        };
        let out = self.spare_out.pop().unwrap_or_default();
        let mut job = Job::new(now, i as u32, Effect::Call, Input::None, out);
        engine.prefetch();
        f(engine, now);
        job.collect(engine, self.net.cfg.strict_drain);
        self.merge(job, obs);
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
        if self.batching {
            return self.run_batches_until(limit, obs);
        }
        while let Some((t, ev)) = self.net.queue.pop_until(limit) {
            self.prefetch_upcoming();
            debug_assert!(t >= self.net.now, "time went backwards");
            self.net.stats.events += 1;
            match ev {
                Ev::Action(a) => {
                    self.net.now = t;
                    self.act(a, obs);
                }
                ev => {
                    let mut job = self.plan(t, ev);
                    if let Some(engine) = self.engines[job.node as usize].as_deref_mut() {
                        job.execute(engine, self.net.cfg.strict_drain);
                    }
                    self.merge(job, obs);
                }
            }
            if obs.stop() {
                return true;
            }
        }
        if limit > self.net.now {
            self.net.now = limit;
        }
        false
    }

    /// `run_until` with batching on. `now` follows the event being applied,
    /// so between batches it can step back to an event that an early member
    /// of the last batch scheduled before that batch's last member (each
    /// node still sees its own inputs in time order).
    fn run_batches_until<O: Observer<E, T>>(&mut self, limit: Time, obs: &mut O) -> bool {
        while let Some((t, ev)) = self.net.queue.peek() {
            if t > limit {
                break;
            }
            if matches!(ev, Ev::Action(_)) {
                let Some((t, Ev::Action(a))) = self.net.queue.pop() else {
                    unreachable!("peeked an action");
                };
                self.net.stats.events += 1;
                self.net.now = t;
                self.act(a, obs);
            } else {
                self.form_batch(limit);
                self.run_batch(obs);
            }
            if obs.stop() {
                return true;
            }
        }
        if limit > self.net.now {
            self.net.now = limit;
        }
        false
    }

    /// Pop the next batch (at least one event, none an action) into
    /// `self.jobs`.
    ///
    /// An event at a node that already has one in the batch cannot run in
    /// it, but it need not end the batch either: it is *deferred* (taken
    /// out of the queue and put back afterwards with its sequence number,
    /// so it pops exactly where it would have) and blocks its node for the
    /// rest of the batch. Since it will run after later members, it must be
    /// separated from them like a member.
    fn form_batch(&mut self, limit: Time) {
        debug_assert!(self.jobs.is_empty() && self.span.is_empty() && self.streamed == 0);
        let mut deferred: SmallVec<[(Time, u64, Ev); MAX_DEFERRED]> = SmallVec::new();
        while self.jobs.len() + self.streamed < MAX_BATCH {
            let Some((t, ev)) = self.net.queue.peek() else {
                break;
            };
            let node = match ev {
                Ev::Datagram { to, .. } | Ev::Stream { to, .. } => *to,
                Ev::Timer { node } | Ev::Unreachable { node, .. } => *node,
                Ev::Action(_) => break,
            };
            if t > limit {
                break;
            }
            self.prefetch_for_batch(LOOKAHEAD);
            let Some(blocked) = self.fits(node, t) else {
                break;
            };
            if blocked && deferred.len() == MAX_DEFERRED {
                break;
            }
            let Some((t, seq, ev)) = self.net.queue.pop_entry() else {
                break;
            };
            self.net.topo.span_push(&mut self.span, node as usize, t);
            if blocked {
                deferred.push((t, seq, ev));
            } else {
                let mut job = self.plan(t, ev);
                if let Some(pool) = self.pool.as_mut() {
                    // Whichever thread runs it takes the engine along.
                    if job.input.is_some() {
                        job.engine = self.engines[job.node as usize].take();
                    }
                    pool.push(job);
                    self.streamed += 1;
                } else {
                    self.jobs.push(job);
                }
            }
        }
        for (t, seq, ev) in deferred {
            self.net.queue.restore(t, seq, ev);
        }
        self.span.clear();
    }

    /// Start loading what forming and running a batch reads for the event
    /// `k` places ahead: its node's bookkeeping and engine slot, and its
    /// position in the latency model. In a big run these are cache misses
    /// (100k nodes: 2.4 MB of `Meta`, 1.6 MB of positions, read at
    /// random) on the simulator's thread, which the workers wait for.
    #[inline]
    fn prefetch_for_batch(&self, k: usize) {
        let node = match self.net.queue.ahead(k) {
            Some(Ev::Datagram { to, .. } | Ev::Stream { to, .. }) => *to,
            Some(Ev::Timer { node } | Ev::Unreachable { node, .. }) => *node,
            Some(Ev::Action(_)) | None => return,
        } as usize;
        if let (Some(m), Some(e)) = (self.meta.get(node), self.engines.get(node)) {
            prefetch((m as *const Meta).cast());
            prefetch((e as *const Option<Box<E>>).cast());
            self.net.topo.prefetch(node);
        }
    }

    /// Whether an event at `node` at `t` can join the batch formed so far:
    /// `None` if some event of it (run or deferred) is too near in latency,
    /// else whether `node` already has one (the event must be deferred).
    fn fits(&self, node: u32, t: Time) -> Option<bool> {
        let node = node as usize;
        (self.span.admits(t) && self.net.topo.separated_from(&self.span, node, t))
            .then(|| self.span.contains(node))
    }

    /// Run the formed batch and apply its outputs in pop order: on this
    /// thread, or with the pool (whose threads have been running its jobs
    /// since they were planned), taking each job back as soon as it ran.
    fn run_batch<O: Observer<E, T>>(&mut self, obs: &mut O) {
        self.net.stats.events += (self.jobs.len() + self.streamed) as u64;
        self.net.stats.batches += 1;
        if let Some(mut pool) = self.pool.take() {
            for _ in 0..std::mem::take(&mut self.streamed) {
                let job = pool.take();
                self.merge(job, obs);
            }
            self.pool = Some(pool);
            return;
        }
        let mut jobs = std::mem::take(&mut self.jobs);
        let strict = self.net.cfg.strict_drain;
        for k in 0..jobs.len() {
            if let Some(ahead) = jobs.get(k + AHEAD)
                && let Some(e) = self.engines[ahead.node as usize].as_deref()
            {
                ahead.prefetch(e);
            }
            let job = &mut jobs[k];
            if job.input.is_some()
                && let Some(engine) = self.engines[job.node as usize].as_deref_mut()
            {
                job.execute(engine, strict);
            }
        }
        for job in jobs.drain(..) {
            self.merge(job, obs);
        }
        self.jobs = jobs;
    }

    /// What an event asks of the simulator and of its node's engine, as of
    /// the node's current bookkeeping.
    fn plan(&mut self, t: Time, ev: Ev) -> Job<E> {
        let out = self.spare_out.pop().unwrap_or_default();
        let (node, effect, input) = match ev {
            Ev::Datagram { from, to, bytes } => {
                if self.meta[to as usize].alive {
                    let from = addr_of(from as usize);
                    (to, Effect::Delivered, Input::Datagram { from, bytes })
                } else {
                    (to, Effect::DroppedDead, Input::None)
                }
            }
            Ev::Stream { from, to, bytes } => {
                if self.meta[to as usize].alive {
                    let from_addr = addr_of(from as usize);
                    (
                        to,
                        Effect::Delivered,
                        Input::Stream {
                            from: from_addr,
                            bytes,
                        },
                    )
                } else {
                    (to, Effect::StreamToDead { from }, Input::None)
                }
            }
            Ev::Unreachable { node, peer } => {
                let input = if self.meta[node as usize].alive {
                    Input::Unreachable {
                        peer: addr_of(peer as usize),
                    }
                } else {
                    Input::None
                };
                (node, Effect::Unreachable, input)
            }
            Ev::Timer { node } => {
                let meta = &self.meta[node as usize];
                if !meta.alive || meta.armed != t.0 {
                    (node, Effect::StaleTimer, Input::None)
                } else if meta.deadline <= t.0 {
                    (node, Effect::Fired, Input::Timeout)
                } else {
                    // The deadline moved later since this entry was pushed.
                    (node, Effect::Rearm, Input::None)
                }
            }
            Ev::Action(_) => unreachable!("actions are not planned"),
        };
        Job::new(t, node, effect, input, out)
    }

    /// Apply a job: the simulator's side of its event, then (if its engine
    /// ran) its outputs in poll order and its next deadline.
    fn merge<O: Observer<E, T>>(&mut self, mut job: Job<E>, obs: &mut O) {
        let i = job.node as usize;
        let t = job.time;
        self.net.now = t;
        if let Some(e) = job.engine.take() {
            self.engines[i] = Some(e);
        }
        let net = &mut self.net;
        let meta = &mut self.meta[i];
        match job.effect {
            Effect::Delivered => net.stats.delivered += 1,
            Effect::DroppedDead => net.stats.dropped_dead += 1,
            Effect::StreamToDead { from } => {
                net.stats.dropped_dead += 1;
                let at = t + net.cfg.stream_fail_after;
                net.queue.push(
                    at,
                    Ev::Unreachable {
                        node: from,
                        peer: job.node,
                    },
                );
            }
            Effect::Unreachable => net.stats.unreachable_signals += 1,
            Effect::StaleTimer => net.stats.stale_timers += 1,
            Effect::Fired => {
                meta.armed = u64::MAX;
                net.stats.timeouts_fired += 1;
            }
            Effect::Rearm => {
                meta.armed = u64::MAX;
                arm(net, meta, i, false);
            }
            Effect::Call => {}
        }
        if job.ran {
            for o in job.out.drain(..) {
                match o {
                    Output::Transmit(tx) => {
                        obs.on_transmit(t, i, &tx);
                        send(net, i, tx);
                    }
                    Output::Event(ev) => {
                        net.stats.engine_events += 1;
                        obs.on_event(t, i, ev);
                    }
                }
            }
            net.stats.drain_violations += u64::from(job.violations);
            if let Some(msg) = job.strict_violation.take() {
                panic!("{msg}");
            }
            meta.deadline = job.deadline;
            arm(net, meta, i, matches!(job.effect, Effect::Fired));
        }
        self.spare_out.push(job.out);
    }

    /// Start loading what the next few events will touch: their nodes'
    /// engine structs and timer bookkeeping, and their datagrams. A big run
    /// is bound by cache misses on state it reaches at random (100,000
    /// nodes' engines are ~3 KB each, plus their tables); fetching a few
    /// events ahead overlaps those misses with the current event's work,
    /// where fetching just before the input would have little to overlap
    /// with (100k nodes on a quiet machine: 209 s -> 176 s in one pair; no
    /// gain seen while another process shared the L3 cache, see
    /// BENCHMARKS.md). A hint only: nothing it touches changes.
    fn prefetch_upcoming(&self) {
        for ev in self.net.queue.upcoming(AHEAD) {
            let (node, bytes) = match ev {
                Ev::Datagram { to, bytes, .. } | Ev::Stream { to, bytes, .. } => (*to, Some(bytes)),
                Ev::Timer { node } | Ev::Unreachable { node, .. } => (*node, None),
                Ev::Action(_) => continue,
            };
            let i = node as usize;
            if let Some(e) = self.engines[i].as_deref() {
                e.prefetch();
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

/// What a job asks of its engine.
pub(crate) enum Input {
    /// Nothing (the event is the simulator's alone), or already done.
    None,
    Datagram {
        from: PeerAddr,
        bytes: Bytes,
    },
    Stream {
        from: PeerAddr,
        bytes: Bytes,
    },
    Unreachable {
        peer: PeerAddr,
    },
    Timeout,
}

impl Input {
    pub(crate) fn is_some(&self) -> bool {
        !matches!(self, Input::None)
    }
}

/// The simulator's side of an event, applied when its job is merged.
#[derive(Clone, Copy)]
enum Effect {
    Delivered,
    DroppedDead,
    StreamToDead {
        from: u32,
    },
    Unreachable,
    StaleTimer,
    Fired,
    Rearm,
    /// A call from outside the run loop (`Sim::call`).
    Call,
}

/// Something an engine produced, kept in the order it was polled.
pub(crate) enum Output {
    Transmit(SimTransmit),
    Event(SimEvent),
}

/// One event of a batch: what it asks of its engine, and, once run, what
/// the engine produced. Runs on any thread; applied on the simulator's.
pub(crate) struct Job<E> {
    time: Time,
    pub(crate) node: u32,
    effect: Effect,
    input: Input,
    /// The node's engine while a worker thread runs the job.
    pub(crate) engine: Option<Box<E>>,
    /// Whether the engine was called (its outputs and deadline apply).
    ran: bool,
    out: Vec<Output>,
    violations: u32,
    /// The panic message of a drain violation under `strict_drain`.
    strict_violation: Option<String>,
    deadline: u64,
}

impl<E: Engine> Job<E> {
    fn new(time: Time, node: u32, effect: Effect, input: Input, out: Vec<Output>) -> Self {
        Job {
            time,
            node,
            effect,
            input,
            engine: None,
            ran: false,
            out,
            violations: 0,
            strict_violation: None,
            deadline: u64::MAX,
        }
    }

    /// `execute` with the engine the job carries (a job without one, such
    /// as a dropped datagram, has nothing to run).
    pub(crate) fn run_own_engine(&mut self, strict: bool) {
        if let Some(mut engine) = self.engine.take() {
            self.execute(&mut engine, strict);
            self.engine = Some(engine);
        }
    }

    /// Hand the input to `engine` and collect what it produces.
    pub(crate) fn execute(&mut self, engine: &mut E, strict: bool) {
        let now = self.time;
        match std::mem::replace(&mut self.input, Input::None) {
            Input::None => return,
            Input::Datagram { from, bytes } => engine.handle_datagram(now, from, bytes),
            Input::Stream { from, bytes } => engine.handle_stream_message(now, from, bytes),
            Input::Unreachable { peer } => engine.handle_peer_unreachable(now, peer),
            Input::Timeout => engine.handle_timeout(now),
        }
        self.collect(engine, strict);
    }

    /// Drain `engine` after a call into it: poll transmits and events until
    /// both are empty, counting a poll that returns `Some` after `None` as
    /// a drain violation; then read its next deadline.
    fn collect(&mut self, engine: &mut E, strict: bool) {
        self.ran = true;
        loop {
            while let Some(t) = engine.poll_transmit() {
                self.out.push(Output::Transmit(t));
            }
            while let Some(ev) = engine.poll_event() {
                self.out.push(Output::Event(ev));
            }
            let late_t = engine.poll_transmit();
            let late_e = engine.poll_event();
            if late_t.is_none() && late_e.is_none() {
                break;
            }
            self.violations += 1;
            if strict && self.strict_violation.is_none() {
                self.strict_violation = Some(format!(
                    "drain violation at node {}: a poll returned Some after None \
                     (transmit: {}, event: {:?})",
                    self.node,
                    late_t.is_some(),
                    late_e
                ));
            }
            self.out.extend(late_t.map(Output::Transmit));
            self.out.extend(late_e.map(Output::Event));
        }
        engine.release_idle_memory();
        self.deadline = engine.poll_timeout().map_or(u64::MAX, |t| t.0);
    }

    /// Start fetching what running this job on `engine` will touch.
    pub(crate) fn prefetch(&self, engine: &E) {
        engine.prefetch();
        if let Input::Datagram { bytes, .. } | Input::Stream { bytes, .. } = &self.input {
            prefetch(bytes.as_ptr());
        }
    }
}

/// Runs a batch's jobs on other threads as well (see [`crate::pool`]).
pub(crate) trait Executor<E> {
    /// Publish a planned job (its engine moved in) for any thread to run.
    fn push(&mut self, job: Job<E>);
    /// The oldest job not taken back yet, once it ran; runs unclaimed jobs
    /// on this thread meanwhile. Panics if an engine panicked on a worker.
    fn take(&mut self) -> Job<E>;
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

/// Prefetch every cache line of a `V` at `p` (an address only: nothing is
/// read, so any value is fine).
#[inline(always)]
pub(crate) fn prefetch_lines_at<V>(p: *const u8) {
    prefetch_range(p, std::mem::size_of::<V>());
}

/// Prefetch every cache line that holds one of the `len` bytes at `p`:
/// one per 64 bytes from `p`, and the line of the last byte (which the
/// others miss when `p` is not 64-aligned). With a constant `len` the loop
/// unrolls into plain prefetches.
#[inline(always)]
pub(crate) fn prefetch_range(p: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    for l in 0..len.div_ceil(64) {
        prefetch(p.wrapping_add(l * 64));
    }
    prefetch(p.wrapping_add(len - 1));
}
