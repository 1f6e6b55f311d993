//! The `pastry` experiment: build an overlay by joins, let it settle, measure
//! lookups (hops, correctness, delay stretch), optionally crash a fraction of
//! the nodes and measure again before and after repair — the shape of the
//! Pastry paper's evaluation (Rowstron & Druschel 2001, §5: Fig. 4–5 hop counts,
//! Fig. 10 routing after failures).
//!
//! State owned here: the experiment's own seeded RNGs (ids, engine seeds,
//! bootstrap sampling, lookups, failures), the list of joined nodes, and the
//! per-lookup records of the current phase. It drives a [`Sim`] and reads the
//! engines' [`SimEvent`]s.
//!
//! Lookup payloads are 8 bytes: `phase << 56 | index`, little-endian, so a late
//! delivery from an earlier phase is never mistaken for a current one.

pub use crate::build::peak_rss_mb;
use crate::build::{Joiner, offset_us, progress, unique_ids};
use crate::engine::{Engine, ProbesByCause, SimEvent, SimTransmit};
use crate::sim::{Action, NetConfig, Observer, Sim};
use crate::topology::{AnyTopology, Topology, TopologyKind};
use alm_core::{Duration, Key, NodeId, PeerAddr, Rng, Time};
use bytes::Bytes;
use serde::Serialize;
use std::fmt::Write as _;

/// Parameters of one `pastry` run.
#[derive(Clone, Debug)]
pub struct PastryParams {
    pub nodes: usize,
    pub lookups: usize,
    pub seed: u64,
    pub topology: TopologyKind,
    /// Fraction of nodes crashed after settling (0: no failure phases).
    pub fail_fraction: f64,
    /// Joins per simulated second.
    pub join_rate: f64,
    /// How long after the last scheduled join to wait for stragglers.
    pub join_timeout: Duration,
    /// Idle time after the build before measuring.
    pub settle: Duration,
    /// Lookups issued per simulated second; `None`:
    /// [`PastryParams::lookup_rate`]'s default.
    pub lookup_rate: Option<f64>,
    /// How long after the last lookup of a phase to wait for deliveries.
    pub lookup_timeout: Duration,
    /// Time between the crash and the `after_repair` phase.
    pub repair: Duration,
    /// Already-joined nodes sampled for each join; the closest is the bootstrap.
    pub bootstrap_samples: usize,
    /// Leaf-set half size the engine is configured with (|L|/2), for the
    /// `leaf_set_exact_fraction` diagnostic; 0 disables it.
    pub leaf_half: usize,
    pub net: NetConfig,
    /// Print phase timings to stderr.
    pub progress: bool,
    /// After the first lookup phase, also route its lookups over an ideal
    /// overlay (perfect proximity neighbour selection, exact leaf sets) and
    /// report that as [`PhaseReport::ideal_pns`]. Costs about N/16 latency
    /// evaluations per lookup.
    pub ideal_pns: bool,
    /// Run events in batches (`Sim::set_batching`). The report is the same
    /// for any thread count with batching on; it differs slightly from a
    /// run without (events due at the same microsecond can swap, and the
    /// build ends at a batch boundary).
    pub batch: bool,
    /// Threads that run each batch (`Sim::set_threads`; engines that can
    /// move between threads only, see [`run_pastry_with`]).
    pub threads: usize,
}

impl PastryParams {
    /// Lookups per simulated second: as given, else one per node per
    /// second, at least 10,000. A fixed rate would stretch a big overlay's
    /// lookup phase over tens of simulated seconds of idle maintenance
    /// (200,000 lookups on 100,000 nodes at 10,000/s: 20 s, 6.5 of the
    /// run's 55.7 s of wall time), while the load per node, the thing that
    /// could change what a lookup meets, would fall with the size.
    pub fn lookup_rate(&self) -> f64 {
        self.lookup_rate
            .unwrap_or_else(|| (self.nodes as f64).max(10_000.0))
    }
}

impl Default for PastryParams {
    fn default() -> Self {
        PastryParams {
            nodes: 1000,
            lookups: 10_000,
            seed: 1,
            topology: TopologyKind::Plane,
            fail_fraction: 0.0,
            join_rate: 2000.0,
            join_timeout: Duration::from_secs(60),
            settle: Duration::from_secs(30),
            lookup_rate: None,
            lookup_timeout: Duration::from_secs(10),
            repair: Duration::from_secs(60),
            bootstrap_samples: 16,
            leaf_half: 8,
            net: NetConfig::default(),
            progress: false,
            ideal_pns: false,
            batch: true,
            threads: 1,
        }
    }
}

/// Lookup results of one phase.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PhaseReport {
    pub lookups: usize,
    pub live_nodes: usize,
    pub hops_mean: f64,
    /// Fraction of delivered lookups per hop count (sums to 1).
    pub hops_hist: Vec<f64>,
    pub hops_max: u32,
    pub correct_fraction: f64,
    pub delivered_fraction: f64,
    /// Mean over delivered lookups of path delay / direct delay (source to
    /// deliverer), skipping lookups delivered at their source.
    pub stretch_mean: Option<f64>,
    /// Total path delay over total direct delay of the same lookups: the
    /// delay-weighted stretch, which pairs of nearby nodes (whose few-ms
    /// direct delay makes any detour a large ratio) do not dominate.
    pub stretch_of_totals: Option<f64>,
    pub path_delay_mean_ms: f64,
    /// Deliveries beyond the first for one lookup.
    pub duplicate_deliveries: u64,
    /// For wrongly delivered lookups: how many positions along the ring of
    /// live ids the deliverer is from the true root (mean and max). 1 means
    /// an immediate ring neighbour: a leaf-set problem rather than routing.
    pub wrong_root_rank_mean: f64,
    pub wrong_root_rank_max: u64,
    /// Fraction of live nodes whose leaf set, at the start of the phase, is
    /// exactly the |L|/2 nearest live ids on each side.
    pub leaf_set_exact_fraction: f64,
    /// The same lookups routed over an ideal overlay (`--ideal-pns`, first
    /// phase only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ideal_pns: Option<IdealPnsReport>,
}

/// A reference bound: the phase's lookups (same sources, same keys, same
/// live nodes and positions) routed by standard Pastry over ideal state —
/// every routing-table slot holds, among all live nodes that fit it, the one
/// with the smallest latency from the table's owner (perfect proximity
/// neighbour selection), and every leaf set is exact. Each lookup goes to the
/// live node numerically closest to its key; the path delay is the sum of the
/// hops' latencies. Stretch skips lookups whose source is the destination.
/// Not a strict lower bound on the engine's delays (greedy prefix routing
/// with nearest entries is not a shortest path), but what Pastry's routing
/// achieves with perfect state.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IdealPnsReport {
    /// Lookups routed: every lookup the phase issued, delivered or not.
    pub lookups: usize,
    pub hops_mean: f64,
    pub hops_max: u32,
    pub stretch_mean: Option<f64>,
    pub stretch_of_totals: Option<f64>,
    pub path_delay_mean_ms: f64,
    /// Hops taken because the routing-table slot for the key was empty (no
    /// live node has the key's next digit): Pastry's "rare case", which
    /// forwards to the node of leaf set ∪ routing table numerically closest
    /// to the key. Summed over the lookups.
    pub rare_case_hops: u64,
    /// Lookups cut off at [`IDEAL_HOP_LIMIT`] hops and left out of the means
    /// (0 unless the ideal router loops, which would be a bug).
    pub hop_limit_hits: u64,
}

/// The `pastry` experiment's report. `wall_s` and `peak_rss_mb` are the only
/// fields that differ between two runs with the same parameters.
#[derive(Clone, Debug, Serialize)]
pub struct PastryReport {
    pub nodes: usize,
    pub lookups: usize,
    pub topology: String,
    pub seed: u64,
    pub joined: usize,
    pub join_failures: usize,
    pub join_pending: usize,
    /// Simulated seconds from the first join to the last `Joined` event.
    pub join_time_s: f64,
    pub hops_mean: f64,
    pub hops_hist: Vec<f64>,
    pub hops_max: u32,
    pub correct_fraction: f64,
    pub delivered_fraction: f64,
    pub stretch_mean: Option<f64>,
    pub stretch_of_totals: Option<f64>,
    pub path_delay_mean_ms: f64,
    pub duplicate_deliveries: u64,
    pub wrong_root_rank_mean: f64,
    pub wrong_root_rank_max: u64,
    pub leaf_set_exact_fraction: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ideal_pns: Option<IdealPnsReport>,
    pub rt_entries_mean: f64,
    pub leaf_set_mean: f64,
    pub join_msgs_mean: f64,
    pub msgs_total: u64,
    /// `msgs_total` split by message type (Pastry's names, others by hex).
    pub msgs_by_type: std::collections::BTreeMap<String, u64>,
    pub bytes_total: u64,
    /// RTT probes sent (pings, not retries), by cause.
    pub probes_by_cause: ProbesByCause,
    pub decode_errors: u64,
    pub sim_events: u64,
    /// Batches the events ran in (0 without batching).
    pub sim_batches: u64,
    pub queue_peak: usize,
    /// `handle_timeout` calls made (only when a deadline was due).
    pub timeouts_fired: u64,
    /// Messages lost to `--loss`, to crashed receivers and to partitions.
    pub dropped_loss: u64,
    pub dropped_dead: u64,
    pub dropped_partition: u64,
    pub sim_time_s: f64,
    pub drain_violations: u64,
    pub timer_violations: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_nodes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<PhaseReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_failure: Option<PhaseReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_repair: Option<PhaseReport>,
    pub wall_s: f64,
    pub peak_rss_mb: f64,
}

impl PastryReport {
    /// The JSON with the two machine-dependent fields zeroed, for
    /// determinism comparisons.
    pub fn deterministic_json(&self) -> String {
        let mut r = self.clone();
        r.wall_s = 0.0;
        r.peak_rss_mb = 0.0;
        serde_json::to_string(&r).unwrap_or_default()
    }
}

const TAG_JOIN: u64 = 0;
const TAG_LOOKUP: u64 = 1;

struct Lookup {
    src: u32,
    key: u128,
    issued: u64,
    /// (deliverer, hops, delivery time)
    result: Option<(u32, u8, u64)>,
}

struct Phase {
    number: u64,
    start: Time,
    total: usize,
    sources: Vec<u32>,
    /// Sorted ids of the live joined nodes.
    live_ids: Vec<u128>,
    lookups: Vec<Lookup>,
    delivered: usize,
    duplicates: u64,
}

struct Scenario<F> {
    make: F,
    join: Joiner,
    join_rate: f64,
    lookup_rate: f64,
    next_join: usize,
    phase: Option<Phase>,
    lookup_rng: Rng,
    mode: Mode,
    /// Messages sent, indexed by the header's type byte.
    by_type: [u64; 256],
}

/// When the scenario stops `run_until` early.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Once every node has joined or failed to.
    Build,
    /// Once every lookup of the phase is issued and delivered.
    Lookups,
    Never,
}

impl<E, F> Observer<E, AnyTopology> for Scenario<F>
where
    E: Engine,
    F: FnMut(NodeId, PeerAddr, u64) -> E,
{
    #[inline]
    fn on_transmit(&mut self, _now: Time, _from: usize, t: &SimTransmit) {
        // (`kind` is the type byte, where there is one.)
        if t.bytes.len() > 1 {
            self.by_type[usize::from(t.kind)] += 1;
        }
    }

    fn on_event(&mut self, now: Time, node: usize, event: SimEvent) {
        self.join.on_event(now, node, &event);
        let SimEvent::Delivered { payload, hops, .. } = event else {
            return;
        };
        let Some(phase) = self.phase.as_mut() else {
            return;
        };
        let Ok(raw) = <[u8; 8]>::try_from(&payload[..]) else {
            return;
        };
        let raw = u64::from_le_bytes(raw);
        if raw >> 56 != phase.number {
            return;
        }
        let idx = (raw & ((1 << 56) - 1)) as usize;
        let Some(l) = phase.lookups.get_mut(idx) else {
            return;
        };
        if l.result.is_some() {
            phase.duplicates += 1;
        } else {
            l.result = Some((node as u32, hops, now.0));
            phase.delivered += 1;
        }
    }

    fn on_user(&mut self, sim: &mut Sim<E, AnyTopology>, tag: u64) {
        match tag {
            TAG_JOIN => {
                let k = self.next_join;
                self.next_join += 1;
                let bootstrap = self.join.launch(sim, k, &mut self.make);
                match bootstrap {
                    None => sim.join(k, &[], self),
                    Some(b) => sim.join(k, &[b], self),
                }
                if self.next_join < self.join.ids.len() {
                    let at = Time(offset_us(self.next_join, self.join_rate));
                    sim.schedule(at, Action::User(TAG_JOIN));
                }
            }
            TAG_LOOKUP => {
                // Only scheduled while a phase is active.
                let Some(phase) = self.phase.as_mut() else {
                    return;
                };
                let k = phase.lookups.len();
                let src = phase.sources[self.lookup_rng.index(phase.sources.len())];
                let key = self.lookup_rng.next_u128();
                let now = sim.now();
                phase.lookups.push(Lookup {
                    src,
                    key,
                    issued: now.0,
                    result: None,
                });
                let more = k + 1 < phase.total;
                if more {
                    let at = phase.start + Duration(offset_us(k + 1, self.lookup_rate));
                    sim.schedule(at, Action::User(TAG_LOOKUP));
                }
                let payload = (phase.number << 56) | k as u64;
                let payload = Bytes::copy_from_slice(&payload.to_le_bytes());
                sim.route(src as usize, NodeId(key), payload, self);
            }
            _ => {}
        }
    }

    fn stop(&self) -> bool {
        match (self.mode, &self.phase) {
            (Mode::Lookups, Some(p)) => p.lookups.len() == p.total && p.delivered == p.total,
            (Mode::Build, _) => {
                self.next_join >= self.join.ids.len() && self.join.done(self.join.ids.len())
            }
            _ => false,
        }
    }
}

/// The live node numerically closest to `key` (ties: smaller id).
pub fn closest_live(sorted_ids: &[u128], key: Key) -> Option<u128> {
    if sorted_ids.is_empty() {
        return None;
    }
    let n = sorted_ids.len();
    let p = sorted_ids.partition_point(|&x| x < key.0);
    let a = sorted_ids[p % n];
    let b = sorted_ids[(p + n - 1) % n];
    Some(if key.closer(NodeId(a), NodeId(b)) {
        a
    } else {
        b
    })
}

/// Run the experiment with engines built by `make(id, addr, seed)`, on the
/// calling thread (`p.threads` is for [`run_pastry_with`]).
pub fn run_pastry<E, F>(p: &PastryParams, make: F) -> PastryReport
where
    E: Engine,
    F: FnMut(NodeId, PeerAddr, u64) -> E,
{
    run_pastry_with(p, make, |_| {})
}

/// [`run_pastry`] with `setup` applied to the simulator before anything
/// runs, e.g. `|sim| sim.set_threads(p.threads)` for engines that are
/// `Send`.
pub fn run_pastry_with<E, F>(
    p: &PastryParams,
    make: F,
    setup: impl FnOnce(&mut Sim<E, AnyTopology>),
) -> PastryReport
where
    E: Engine,
    F: FnMut(NodeId, PeerAddr, u64) -> E,
{
    let wall = std::time::Instant::now();
    let n = p.nodes;
    let mut master = Rng::new(p.seed);
    let topo_seed = master.next_u64();
    let net_seed = master.next_u64();
    let mut id_rng = master.fork();
    let mut seed_rng = master.fork();
    let scen_rng = master.fork();
    let lookup_rng = master.fork();
    let mut fail_rng = master.fork();

    let ids = unique_ids(n, &mut id_rng);
    let seeds = (0..n).map(|_| seed_rng.next_u64()).collect();
    let topo = p.topology.build(n, topo_seed);
    let topology = topo.name().to_string();
    let mut sim: Sim<E, AnyTopology> = Sim::new(topo, p.net.clone(), net_seed);
    sim.set_batching(p.batch);
    setup(&mut sim);
    let mut sc = Scenario {
        make,
        join: Joiner::new(ids, seeds, scen_rng, p.bootstrap_samples),
        join_rate: p.join_rate,
        lookup_rate: p.lookup_rate(),
        next_join: 0,
        phase: None,
        lookup_rng,
        mode: Mode::Build,
        by_type: [0; 256],
    };

    // Build by joins.
    progress(p.progress, &wall, sim.now(), "build: joining");
    if n > 0 {
        sim.schedule(Time::ZERO, Action::User(TAG_JOIN));
        let last_join = Time(offset_us(n - 1, p.join_rate));
        sim.run_until(last_join + p.join_timeout, &mut sc);
    }
    let build_msgs = sim.stats().transmits;
    let join_time_s = sc.join.last_joined_at.0 as f64 / 1e6;
    progress(
        p.progress,
        &wall,
        sim.now(),
        &format!(
            "build done: {} joined, {} failed",
            sc.join.joined.len(),
            sc.join.failed
        ),
    );

    sc.mode = Mode::Never;
    sim.run_for(p.settle, &mut sc);
    progress(p.progress, &wall, sim.now(), "settled");

    let mut members: Vec<usize> = sc.join.joined.iter().map(|&i| i as usize).collect();
    members.sort_unstable();
    let (mut rt, mut ls) = (0u64, 0u64);
    for &i in &members {
        if let Some(e) = sim.engine(i) {
            rt += e.routing_table_len() as u64;
            ls += e.leaf_set_len() as u64;
        }
    }
    let denom = members.len().max(1) as f64;
    let (rt_entries_mean, leaf_set_mean) = (rt as f64 / denom, ls as f64 / denom);

    let before = run_phase(&mut sim, &mut sc, 0, p, &wall);
    let mut failed_nodes = None;
    let mut after_failure = None;
    let mut after_repair = None;
    if p.fail_fraction > 0.0 {
        let k = ((p.fail_fraction * n as f64).floor() as usize).min(members.len());
        // Partial Fisher–Yates over the (sorted) members.
        let mut pool = members.clone();
        for j in 0..k {
            let r = j + fail_rng.index(pool.len() - j);
            pool.swap(j, r);
            sim.crash(pool[j]);
        }
        failed_nodes = Some(k);
        let crash_time = sim.now();
        progress(p.progress, &wall, sim.now(), &format!("crashed {k} nodes"));
        after_failure = Some(run_phase(&mut sim, &mut sc, 1, p, &wall));
        sim.run_until(crash_time + p.repair, &mut sc);
        after_repair = Some(run_phase(&mut sim, &mut sc, 2, p, &wall));
    }

    let mut decode_errors = 0;
    let mut probes_by_cause = ProbesByCause::default();
    for i in 0..n {
        if let Some(e) = sim.engine(i) {
            let s = e.stats();
            decode_errors += s.decode_errors;
            probes_by_cause += s.probes;
        }
    }
    let st = *sim.stats();
    PastryReport {
        nodes: n,
        lookups: p.lookups,
        topology,
        seed: p.seed,
        joined: sc.join.joined.len(),
        join_failures: sc.join.failed,
        join_pending: n.saturating_sub(sc.join.joined.len() + sc.join.failed),
        join_time_s,
        hops_mean: before.hops_mean,
        hops_hist: before.hops_hist.clone(),
        hops_max: before.hops_max,
        correct_fraction: before.correct_fraction,
        delivered_fraction: before.delivered_fraction,
        stretch_mean: before.stretch_mean,
        stretch_of_totals: before.stretch_of_totals,
        path_delay_mean_ms: before.path_delay_mean_ms,
        duplicate_deliveries: before.duplicate_deliveries,
        wrong_root_rank_mean: before.wrong_root_rank_mean,
        wrong_root_rank_max: before.wrong_root_rank_max,
        leaf_set_exact_fraction: before.leaf_set_exact_fraction,
        ideal_pns: before.ideal_pns.clone(),
        rt_entries_mean,
        leaf_set_mean,
        join_msgs_mean: build_msgs as f64 / n.max(1) as f64,
        msgs_total: st.transmits,
        msgs_by_type: msgs_by_type(&sc.by_type),
        bytes_total: st.bytes,
        probes_by_cause,
        decode_errors,
        sim_events: st.events,
        sim_batches: st.batches,
        queue_peak: sim.queue_peak(),
        timeouts_fired: st.timeouts_fired,
        dropped_loss: st.dropped_loss,
        dropped_dead: st.dropped_dead,
        dropped_partition: st.dropped_partition,
        sim_time_s: sim.now().0 as f64 / 1e6,
        drain_violations: st.drain_violations,
        timer_violations: st.timer_violations,
        failed_nodes,
        before: failed_nodes.map(|_| before),
        after_failure,
        after_repair,
        wall_s: wall.elapsed().as_secs_f64(),
        peak_rss_mb: peak_rss_mb(),
    }
}

fn run_phase<E, F>(
    sim: &mut Sim<E, AnyTopology>,
    sc: &mut Scenario<F>,
    number: u64,
    p: &PastryParams,
    wall: &std::time::Instant,
) -> PhaseReport
where
    E: Engine,
    F: FnMut(NodeId, PeerAddr, u64) -> E,
{
    let mut sources: Vec<u32> = sc
        .join
        .joined
        .iter()
        .copied()
        .filter(|&i| sim.is_alive(i as usize))
        .collect();
    sources.sort_unstable();
    let mut live_ids: Vec<u128> = sources.iter().map(|&i| sc.join.ids[i as usize]).collect();
    live_ids.sort_unstable();
    let leaf_exact = leaf_set_exact(sim, &sources, &sc.join.ids, &live_ids, p.leaf_half);
    let start = sim.now();
    let total = if sources.is_empty() { 0 } else { p.lookups };
    sc.phase = Some(Phase {
        number,
        start,
        total,
        sources,
        live_ids,
        lookups: Vec::with_capacity(total),
        delivered: 0,
        duplicates: 0,
    });
    sc.mode = Mode::Lookups;
    progress(p.progress, wall, start, &format!("lookup phase {number}"));
    if total > 0 {
        sim.schedule(start, Action::User(TAG_LOOKUP));
        let end = start + Duration(offset_us(total, p.lookup_rate())) + p.lookup_timeout;
        sim.run_until(end, sc);
    }
    sc.mode = Mode::Never;
    // Set just above.
    let phase = sc.phase.take().expect("phase is active");
    progress(
        p.progress,
        wall,
        sim.now(),
        &format!("lookup phase {number} done"),
    );

    let topo = sim.topology();
    let mut hist: Vec<u64> = Vec::new();
    let (mut hops_sum, mut correct, mut delay_sum) = (0u64, 0u64, 0u64);
    let (mut wrong, mut rank_sum, mut rank_max) = (0u64, 0u64, 0u64);
    let (mut stretch_sum, mut stretch_n) = (0.0f64, 0u64);
    let (mut path_total, mut direct_total) = (0u64, 0u64);
    for l in &phase.lookups {
        let Some((node, hops, at)) = l.result else {
            continue;
        };
        let h = usize::from(hops);
        if hist.len() <= h {
            hist.resize(h + 1, 0);
        }
        hist[h] += 1;
        hops_sum += u64::from(hops);
        let got = sc.join.ids[node as usize];
        match closest_live(&phase.live_ids, NodeId(l.key)) {
            Some(want) if want == got => correct += 1,
            Some(want) => {
                let n = phase.live_ids.len() as u64;
                let pos = |id: u128| phase.live_ids.binary_search(&id).map_or(n, |p| p as u64);
                let (a, b) = (pos(want), pos(got));
                // A deliverer outside the live set (crashed) gets rank n.
                let rank = if b == n {
                    n
                } else {
                    a.abs_diff(b).min(n - a.abs_diff(b))
                };
                wrong += 1;
                rank_sum += rank;
                rank_max = rank_max.max(rank);
            }
            None => {}
        }
        let path = at - l.issued;
        delay_sum += path;
        let direct = topo.latency(l.src as usize, node as usize).0;
        if direct > 0 {
            stretch_sum += path as f64 / direct as f64;
            stretch_n += 1;
            path_total += path;
            direct_total += direct;
        }
    }
    let ideal_pns = (number == 0 && p.ideal_pns).then(|| {
        let r = ideal_pns(topo, &sc.join.ids, &phase.sources, &phase.lookups);
        progress(p.progress, wall, sim.now(), "ideal PNS routing done");
        r
    });
    let delivered = phase.delivered as u64;
    let dd = delivered.max(1) as f64;
    let total_f = phase.total.max(1) as f64;
    PhaseReport {
        lookups: phase.total,
        live_nodes: phase.live_ids.len(),
        hops_mean: hops_sum as f64 / dd,
        hops_hist: hist.iter().map(|&c| c as f64 / dd).collect(),
        hops_max: hist.len().saturating_sub(1) as u32,
        correct_fraction: if phase.total == 0 {
            0.0
        } else {
            correct as f64 / total_f
        },
        delivered_fraction: if phase.total == 0 {
            0.0
        } else {
            delivered as f64 / total_f
        },
        stretch_mean: (stretch_n > 0).then(|| stretch_sum / stretch_n as f64),
        stretch_of_totals: (direct_total > 0).then(|| path_total as f64 / direct_total as f64),
        path_delay_mean_ms: delay_sum as f64 / dd / 1e3,
        duplicate_deliveries: phase.duplicates,
        wrong_root_rank_mean: rank_sum as f64 / wrong.max(1) as f64,
        wrong_root_rank_max: rank_max,
        leaf_set_exact_fraction: leaf_exact,
        ideal_pns,
    }
}

/// Hop limit of the ideal router (a guard: routes take about log16 N hops).
pub const IDEAL_HOP_LIMIT: u32 = 64;

/// Route `lookups` over the ideal overlay of the live `nodes` (indices into
/// `ids` and `topo`); see [`IdealPnsReport`]. Uses the engine's default
/// digit size and leaf-set size.
fn ideal_pns<T: Topology>(
    topo: &T,
    ids: &[u128],
    nodes: &[u32],
    lookups: &[Lookup],
) -> IdealPnsReport {
    let cfg = alm_core::Config::default();
    let mut live: Vec<(u128, u32)> = nodes.iter().map(|&i| (ids[i as usize], i)).collect();
    live.sort_unstable();
    let live_ids: Vec<u128> = live.iter().map(|&(id, _)| id).collect();
    let node: Vec<usize> = live.iter().map(|&(_, i)| i as usize).collect();
    let router = IdealRouter {
        ids: &live_ids,
        b: cfg.b,
        half: cfg.leaf_set_size / 2,
    };
    let lat = |a: usize, c: usize| topo.latency(node[a], node[c]).0;
    let (mut routed, mut hops_sum, mut hops_max, mut delay_sum) = (0u64, 0u64, 0u32, 0u64);
    let (mut stretch_sum, mut stretch_n) = (0.0f64, 0u64);
    let (mut path_total, mut direct_total) = (0u64, 0u64);
    let (mut hop_limit_hits, mut rare_case_hops) = (0u64, 0u64);
    for l in lookups {
        let key = NodeId(l.key);
        let (Ok(src), Some(dest)) = (
            live_ids.binary_search(&ids[l.src as usize]),
            closest_live(&live_ids, key).and_then(|d| live_ids.binary_search(&d).ok()),
        ) else {
            continue;
        };
        let (mut cur, mut hops, mut path) = (src, 0u32, 0u64);
        let mut rare = 0u64;
        while cur != dest && hops < IDEAL_HOP_LIMIT {
            let hop = router.next_hop(cur, key, dest, &lat);
            path += lat(cur, hop.to);
            hops += 1;
            rare += u64::from(hop.rare);
            cur = hop.to;
        }
        if cur != dest {
            hop_limit_hits += 1;
            continue;
        }
        routed += 1;
        rare_case_hops += rare;
        hops_sum += u64::from(hops);
        hops_max = hops_max.max(hops);
        delay_sum += path;
        let direct = lat(src, dest);
        if src != dest && direct > 0 {
            stretch_sum += path as f64 / direct as f64;
            stretch_n += 1;
            path_total += path;
            direct_total += direct;
        }
    }
    let rr = routed.max(1) as f64;
    IdealPnsReport {
        lookups: lookups.len(),
        hops_mean: hops_sum as f64 / rr,
        hops_max,
        stretch_mean: (stretch_n > 0).then(|| stretch_sum / stretch_n as f64),
        stretch_of_totals: (direct_total > 0).then(|| path_total as f64 / direct_total as f64),
        path_delay_mean_ms: delay_sum as f64 / rr / 1e3,
        rare_case_hops,
        hop_limit_hits,
    }
}

/// Standard Pastry next-hop choice (Rowstron & Druschel 2001, Table 1) over
/// exact state, on positions in the sorted live ids.
struct IdealRouter<'a> {
    /// Sorted ids of the live nodes.
    ids: &'a [u128],
    /// Bits per digit.
    b: u32,
    /// Leaf-set half size (|L|/2).
    half: usize,
}

/// One step of the ideal router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IdealHop {
    /// Position of the next node in the sorted live ids.
    to: usize,
    /// Taken by the empty-slot fallback.
    rare: bool,
}

impl IdealRouter<'_> {
    /// Positions of the live ids whose first `bits` bits equal `id`'s.
    fn block(&self, id: u128, bits: u32) -> std::ops::Range<usize> {
        let low = u128::MAX.checked_shr(bits).unwrap_or(0);
        let (first, last) = (id & !low, id | low);
        self.ids.partition_point(|&x| x < first)..self.ids.partition_point(|&x| x <= last)
    }

    /// The ideal entry of a slot: the member of `range` nearest to `cur` by
    /// latency, ties to the smaller id (the first seen).
    fn nearest(
        cur: usize,
        range: std::ops::Range<usize>,
        lat: &impl Fn(usize, usize) -> u64,
    ) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for j in range {
            let d = lat(cur, j);
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, j));
            }
        }
        best.map(|(_, j)| j)
    }

    /// The next hop from position `cur` toward `key`, whose destination (the
    /// live node numerically closest to it) is at position `dest != cur`.
    fn next_hop(
        &self,
        cur: usize,
        key: NodeId,
        dest: usize,
        lat: &impl Fn(usize, usize) -> u64,
    ) -> IdealHop {
        let (ids, n, half, b) = (self.ids, self.ids.len(), self.half, self.b);
        let direct = IdealHop {
            to: dest,
            rare: false,
        };
        // Leaf set: the `half` live nodes on each side, or everyone when that
        // closes the ring. A key within its range goes straight to the
        // destination, the closest of leaf set ∪ {cur}.
        if n <= 2 * half + 1 {
            return direct;
        }
        let (lo, hi) = (ids[(cur + n - half) % n], ids[(cur + half) % n]);
        if key.in_cw_arc(NodeId(lo), NodeId(hi)) {
            return direct;
        }
        let me = NodeId(ids[cur]);
        let l = me.shared_prefix_len(key, b);
        let digits = (NodeId::BITS / b) as usize;
        if l >= digits {
            // The key is our own id (and then covered above).
            return direct;
        }
        // Routing-table slot (l, key's digit l): the live nodes sharing the
        // key's first l + 1 digits, a contiguous run of the ring.
        let bits = (l as u32 + 1) * b;
        if let Some(j) = Self::nearest(cur, self.block(key.0, bits), lat) {
            return IdealHop { to: j, rare: false };
        }
        // Rare case, empty slot: of the leaf set and the (ideal) routing
        // table, the node numerically closest to the key, if closer than
        // `cur`. No live node shares more than l digits with the key, and
        // entries of rows 0..l share fewer, so the candidates are the leaves
        // and the entries of rows l and up.
        let mut best = cur;
        let mut consider = |j: usize| {
            if key.closer(NodeId(ids[j]), NodeId(ids[best])) {
                best = j;
            }
        };
        for k in 1..=half {
            consider((cur + k) % n);
            consider((cur + n - k) % n);
        }
        for r in l..digits {
            // Row r: the nodes sharing exactly r digits with `cur`; empty,
            // like every deeper row, once `cur` is alone in its r-digit
            // block.
            let bits = r as u32 * b;
            if self.block(me.0, bits).len() <= 1 {
                break;
            }
            let shift = NodeId::BITS - bits - b;
            let mine = me.digit(r, b);
            let top = me.0 & !u128::MAX.checked_shr(bits).unwrap_or(0);
            for d in (0..1usize << b).filter(|&d| d != mine) {
                let id = top | ((d as u128) << shift);
                if let Some(j) = Self::nearest(cur, self.block(id, bits + b), lat) {
                    consider(j);
                }
            }
        }
        IdealHop {
            to: if best == cur { dest } else { best },
            rare: true,
        }
    }
}

/// Fraction of `nodes` whose leaf set is exactly the `half` nearest live ids
/// on each side of their own id (all other live ids when there are fewer
/// than `2 * half`).
fn leaf_set_exact<E: Engine, T: Topology>(
    sim: &Sim<E, T>,
    nodes: &[u32],
    ids: &[u128],
    live_ids: &[u128],
    half: usize,
) -> f64 {
    if half == 0 || nodes.is_empty() {
        return 0.0;
    }
    let n = live_ids.len();
    let mut exact = 0usize;
    let mut want: Vec<u128> = Vec::with_capacity(2 * half);
    for &i in nodes {
        let Some(e) = sim.engine(i as usize) else {
            continue;
        };
        let me = ids[i as usize];
        want.clear();
        if n - 1 <= 2 * half {
            want.extend(live_ids.iter().copied().filter(|&x| x != me));
        } else {
            // `me` is live, hence present.
            let p = live_ids.binary_search(&me).unwrap_or(0);
            for k in 1..=half {
                want.push(live_ids[(p + k) % n]);
                want.push(live_ids[(p + n - k) % n]);
            }
        }
        want.sort_unstable();
        want.dedup();
        let mut got = e.leaf_set_ids();
        got.sort_unstable();
        got.dedup();
        if got == want {
            exact += 1;
        }
    }
    exact as f64 / nodes.len() as f64
}

/// Writes `label value` lines with the values aligned one column past the
/// longest label, so a long label never runs into its value.
pub(crate) fn write_rows(s: &mut String, rows: &[(&str, String)]) {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        + 2;
    for (k, v) in rows {
        let _ = writeln!(s, "  {k:<width$}{v}");
    }
}

/// A human-readable summary table.
pub fn render_table(r: &PastryReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "pastry: {} nodes, {} lookups, topology {}, seed {}",
        r.nodes, r.lookups, r.topology, r.seed
    );
    let rows: [(&str, String); 15] = [
        (
            "joined",
            format!(
                "{} ({} failed, {} pending)",
                r.joined, r.join_failures, r.join_pending
            ),
        ),
        ("join time", format!("{:.3} s sim", r.join_time_s)),
        ("join msgs / node", format!("{:.1}", r.join_msgs_mean)),
        ("routing table entries", format!("{:.1}", r.rt_entries_mean)),
        (
            "leaf set size",
            format!(
                "{:.1} ({:.4} exact)",
                r.leaf_set_mean, r.leaf_set_exact_fraction
            ),
        ),
        (
            "messages total",
            format!("{} ({} bytes)", r.msgs_total, r.bytes_total),
        ),
        ("probes by cause", {
            let p = &r.probes_by_cause;
            format!(
                "joining {}, table {}, new leaf {}, liveness {}",
                p.joining, p.table, p.new_leaf, p.liveness
            )
        }),
        ("decode errors", r.decode_errors.to_string()),
        (
            "sim events",
            format!(
                "{} in {} batches (queue peak {}, {} timeouts fired)",
                r.sim_events, r.sim_batches, r.queue_peak, r.timeouts_fired
            ),
        ),
        ("sim time", format!("{:.3} s", r.sim_time_s)),
        ("drain violations", r.drain_violations.to_string()),
        ("timer violations", r.timer_violations.to_string()),
        (
            "failed nodes",
            r.failed_nodes.map_or("-".into(), |k| k.to_string()),
        ),
        ("wall", format!("{:.2} s", r.wall_s)),
        ("peak RSS", format!("{:.1} MiB", r.peak_rss_mb)),
    ];
    write_rows(&mut s, &rows);
    let main = PhaseReport {
        lookups: r.lookups,
        live_nodes: r.joined,
        hops_mean: r.hops_mean,
        hops_hist: r.hops_hist.clone(),
        hops_max: r.hops_max,
        correct_fraction: r.correct_fraction,
        delivered_fraction: r.delivered_fraction,
        stretch_mean: r.stretch_mean,
        stretch_of_totals: r.stretch_of_totals,
        path_delay_mean_ms: r.path_delay_mean_ms,
        duplicate_deliveries: r.duplicate_deliveries,
        wrong_root_rank_mean: r.wrong_root_rank_mean,
        wrong_root_rank_max: r.wrong_root_rank_max,
        leaf_set_exact_fraction: r.leaf_set_exact_fraction,
        ideal_pns: r.ideal_pns.clone(),
    };
    let phases: Vec<(&str, &PhaseReport)> = match (&r.before, &r.after_failure, &r.after_repair) {
        (Some(b), Some(f), Some(a)) => {
            vec![("before", b), ("after failure", f), ("after repair", a)]
        }
        _ => vec![("lookups", &main)],
    };
    let _ = writeln!(
        s,
        "\n  {:<15}{:>9}{:>9}{:>9}{:>9}{:>10}{:>10}{:>9}{:>11}  hops histogram",
        "phase", "hops", "max", "stretch", "(totals)", "correct", "delivered", "live", "wrong rank"
    );
    for (name, ph) in phases {
        // Non-zero bins only; the tail of a long histogram is elided.
        let mut hist: Vec<String> = ph
            .hops_hist
            .iter()
            .enumerate()
            .filter(|(_, f)| **f > 0.0)
            .map(|(h, f)| format!("{h}:{f:.3}"))
            .collect();
        if hist.len() > 12 {
            hist.truncate(11);
            hist.push(format!("… max {}", ph.hops_max));
        }
        let _ = writeln!(
            s,
            "  {:<15}{:>9.3}{:>9}{:>9}{:>9}{:>10.4}{:>10.4}{:>9}{:>11}  {}",
            name,
            ph.hops_mean,
            ph.hops_max,
            ph.stretch_mean.map_or("-".into(), |x| format!("{x:.3}")),
            ph.stretch_of_totals
                .map_or("-".into(), |x| format!("{x:.3}")),
            ph.correct_fraction,
            ph.delivered_fraction,
            ph.live_nodes,
            format!("{:.1}/{}", ph.wrong_root_rank_mean, ph.wrong_root_rank_max),
            hist.join(" ")
        );
        if let Some(ip) = &ph.ideal_pns {
            let _ = writeln!(
                s,
                "  {:<15}{:>9.3}{:>9}{:>9}{:>9}  (same lookups, perfect PNS and leaf sets; {} over hop limit)",
                "  ideal PNS",
                ip.hops_mean,
                ip.hops_max,
                ip.stretch_mean.map_or("-".into(), |x| format!("{x:.3}")),
                ip.stretch_of_totals
                    .map_or("-".into(), |x| format!("{x:.3}")),
                ip.hop_limit_hits,
            );
        }
    }
    s
}

/// Name the non-zero per-type counts: Pastry's types by name, the rest
/// (Scribe, DHT) by their hex type byte.
fn msgs_by_type(counts: &[u64; 256]) -> std::collections::BTreeMap<String, u64> {
    use alm_core::wire::MsgType;
    let mut out = std::collections::BTreeMap::new();
    for (ty, &n) in counts.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let name = match MsgType::from_u8(ty as u8) {
            Some(t) => format!("{t:?}"),
            None => format!("0x{ty:02x}"),
        };
        out.insert(name, n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_keep_a_gap_after_the_longest_label() {
        let mut s = String::new();
        let long = "a label longer than the old fixed column of 24";
        write_rows(&mut s, &[("short", "1".into()), (long, "636403".into())]);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[1], format!("  {long}  636403"));
        // Values start in one column.
        assert_eq!(lines[0].find('1'), lines[1].find('6'));
    }

    fn brute(ids: &[u128], key: u128) -> u128 {
        let k = NodeId(key);
        let mut best = ids[0];
        for &x in ids {
            if k.closer(NodeId(x), NodeId(best)) {
                best = x;
            }
        }
        best
    }

    #[test]
    fn closest_live_matches_brute_force_including_wrap_and_ties() {
        let mut rng = Rng::new(5);
        for n in [1usize, 2, 3, 10, 100] {
            let mut ids: Vec<u128> = (0..n).map(|_| rng.next_u128()).collect();
            ids.sort_unstable();
            for _ in 0..2000 {
                let key = rng.next_u128();
                assert_eq!(closest_live(&ids, NodeId(key)), Some(brute(&ids, key)));
            }
            // Keys right at, just beside, and across zero from members.
            for &x in &ids {
                for key in [x, x.wrapping_add(1), x.wrapping_sub(1), 0, u128::MAX] {
                    assert_eq!(closest_live(&ids, NodeId(key)), Some(brute(&ids, key)));
                }
            }
        }
        // Exact tie: 10 and 20 around 15 → the smaller id wins.
        assert_eq!(closest_live(&[10, 20], NodeId(15)), Some(10));
        assert_eq!(closest_live(&[], NodeId(15)), None);
    }

    #[test]
    fn ideal_router_picks_the_nearest_slot_member_and_always_arrives() {
        use crate::topology::Plane;
        let (b, half) = (4, 8);
        let mut rng = Rng::new(11);
        let n = 3000;
        let topo = Plane::new(n, 7);
        let ids: Vec<u128> = (0..n).map(|_| rng.next_u128()).collect();
        let nodes: Vec<u32> = (0..n as u32).collect();
        let mut live: Vec<(u128, usize)> = ids.iter().copied().zip(0..).collect();
        live.sort_unstable();
        let sorted: Vec<u128> = live.iter().map(|&(id, _)| id).collect();
        let lat = |a: usize, c: usize| topo.latency(live[a].1, live[c].1).0;
        let router = IdealRouter {
            ids: &sorted,
            b,
            half,
        };
        let (mut slot_hops, mut rare_hops) = (0, 0);
        for _ in 0..1000 {
            let cur = rng.index(n);
            let me = NodeId(sorted[cur]);
            // Keys sharing 0..=3 digits with `cur`, to reach every row.
            let key = NodeId(me.0 ^ (rng.next_u128() >> (4 * rng.index(4))));
            let dest = sorted
                .binary_search(&closest_live(&sorted, key).unwrap())
                .unwrap();
            if cur == dest {
                continue;
            }
            let hop = router.next_hop(cur, key, dest, &lat);
            let l = me.shared_prefix_len(key, b);
            let lo = sorted[(cur + n - half) % n];
            let hi = sorted[(cur + half) % n];
            if key.in_cw_arc(NodeId(lo), NodeId(hi)) {
                assert_eq!(
                    hop,
                    IdealHop {
                        to: dest,
                        rare: false
                    }
                );
                continue;
            }
            // Brute force over every live node: slot (l, key digit l) ...
            let slot = (0..n)
                .filter(|&j| NodeId(sorted[j]).shared_prefix_len(key, b) > l)
                .min_by_key(|&j| (lat(cur, j), sorted[j]));
            if let Some(j) = slot {
                assert_eq!(hop, IdealHop { to: j, rare: false });
                slot_hops += 1;
                continue;
            }
            // ... else the numerically closest of the leaves and the ideal
            // entries of every slot (r >= l, d).
            let mut table = std::collections::BTreeMap::new();
            for j in (0..n).filter(|&j| j != cur) {
                let r = me.shared_prefix_len(NodeId(sorted[j]), b);
                if r >= l {
                    let e = table.entry((r, NodeId(sorted[j]).digit(r, b))).or_insert(j);
                    if (lat(cur, j), sorted[j]) < (lat(cur, *e), sorted[*e]) {
                        *e = j;
                    }
                }
            }
            let leaves = (1..=half).flat_map(|k| [(cur + k) % n, (cur + n - k) % n]);
            let best = leaves.chain(table.into_values()).fold(cur, |best, j| {
                if key.closer(NodeId(sorted[j]), NodeId(sorted[best])) {
                    j
                } else {
                    best
                }
            });
            assert_ne!(best, cur);
            assert_eq!(
                hop,
                IdealHop {
                    to: best,
                    rare: true
                }
            );
            rare_hops += 1;
        }
        assert!(slot_hops > 100 && rare_hops > 10, "{slot_hops} {rare_hops}");
        let lookups: Vec<Lookup> = (0..2000)
            .map(|_| Lookup {
                src: rng.index(n) as u32,
                key: rng.next_u128(),
                issued: 0,
                result: None,
            })
            .collect();
        let r = ideal_pns(&topo, &ids, &nodes, &lookups);
        assert_eq!(r.lookups, 2000);
        assert_eq!(r.hop_limit_hits, 0);
        assert!(r.rare_case_hops > 0, "{r:?}");
        assert!(r.stretch_mean.unwrap() >= 1.0, "{r:?}");
        assert!(r.stretch_of_totals.unwrap() >= 1.0, "{r:?}");
        // log16(3000) ≈ 2.9.
        assert!(r.hops_mean > 1.5 && r.hops_mean < 4.0, "{r:?}");
    }

    #[test]
    fn ideal_pns_flag_adds_a_deterministic_bound_and_nothing_else() {
        let p = PastryParams {
            nodes: 150,
            lookups: 400,
            seed: 4,
            settle: Duration::from_secs(2),
            ideal_pns: true,
            ..PastryParams::default()
        };
        let a = crate::alm::run_pastry_alm(&p);
        let b = crate::alm::run_pastry_alm(&p);
        assert_eq!(a.deterministic_json(), b.deterministic_json());
        let ip = a.ideal_pns.as_ref().expect("ideal_pns with the flag");
        let json = a.deterministic_json();
        assert!(json.contains("\"ideal_pns\":{"), "{json}");
        assert_eq!(ip.lookups, p.lookups);
        assert_eq!(ip.hop_limit_hits, 0);
        assert!(ip.stretch_mean.unwrap() >= 1.0, "{json}");
        assert!(ip.hops_mean <= a.hops_mean + 0.5, "{json}");
        assert!(render_table(&a).contains("ideal PNS"));

        // Without the flag: no field, and everything else is unchanged.
        let c = crate::alm::run_pastry_alm(&PastryParams {
            ideal_pns: false,
            ..p
        });
        assert!(c.ideal_pns.is_none());
        assert!(!c.deterministic_json().contains("ideal_pns"));
        let mut stripped = a.clone();
        stripped.ideal_pns = None;
        assert_eq!(stripped.deterministic_json(), c.deterministic_json());
    }
}
