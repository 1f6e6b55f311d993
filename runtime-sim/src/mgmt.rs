//! The `mgmt` experiment: distributed TAP-address allocation (the management
//! ring of the Multicast Middleware paper) under joins and churn, with the
//! real engine.
//!
//! Phases: build the overlay by joins ([`crate::build`]); every node calls
//! `allocate_address(prefix)` right after `join_overlay` (the engine starts
//! the allocation the moment the node has joined); wait until every initial
//! node holds an address or was told the pool is exhausted. Then, with
//! `churn > 0`, for `churn_s` simulated seconds `churn` random live nodes per
//! second crash silently and as many fresh nodes join (through a live node)
//! and allocate; then `settle` idle.
//!
//! Checked all along: the set of (node, address) held by *live* nodes, from
//! `AddressAllocated` / `AddressLost` events and crashes. `duplicates`
//! counts the times a live node was granted an address another live node
//! held. Every `audit_interval` the address record of every live holder is
//! looked up in the DHT stores of the live nodes around its ring key (the
//! responsible node and replicas are among them): a holder whose record
//! (with it as owner) is nowhere is a lost record, as is an `AddressLost`
//! event. At the end, the engines' own `address()` of the live nodes are
//! compared (`duplicate_addresses_end`).
//!
//! DHT messages are transmits of type 0x50–0x5f (replies, replication) and
//! Pastry `Route` hops carrying service 5 (requests); Pastry's per-hop
//! `RouteAck`s of those routes cannot be told apart and are not counted.
//! `messages_per_allocation` is the DHT messages sent from the start until
//! every initial node has its address (renewals in that window included),
//! divided by the allocations made in that window.

use crate::build::{Joiner, offset_us, peak_rss_mb, progress, quantile, unique_ids};
use crate::engine::{SimEvent, SimTransmit};
use crate::sim::{Action, NetConfig, Observer, Sim};
use crate::topology::{AnyTopology, Topology, TopologyKind};
use alm_core::mgmt::ADDR_NAMESPACE;
use alm_core::wire::dht::RecordName;
use alm_core::{Config, Duration, Node, NodeId, PeerAddr, Rng, Time};
use bytes::Bytes;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// Parameters of one `mgmt` run.
#[derive(Clone, Debug)]
pub struct MgmtParams {
    pub nodes: usize,
    pub seed: u64,
    pub topology: TopologyKind,
    pub prefix: Ipv4Addr,
    pub prefix_len: u8,
    /// Crashes (and as many arrivals) per simulated second during the churn
    /// period; 0 disables churn.
    pub churn: f64,
    pub churn_s: Duration,
    /// Joins per simulated second.
    pub join_rate: f64,
    /// How long after the last initial join to wait for joins and
    /// allocations to finish.
    pub alloc_timeout: Duration,
    /// Idle time after the churn period.
    pub settle: Duration,
    /// Period of the DHT audit of the live holders' records.
    pub audit_interval: Duration,
    pub bootstrap_samples: usize,
    pub net: NetConfig,
    pub progress: bool,
}

impl Default for MgmtParams {
    fn default() -> Self {
        MgmtParams {
            nodes: 1000,
            seed: 1,
            topology: TopologyKind::TransitStub,
            prefix: Ipv4Addr::new(172, 16, 0, 0),
            prefix_len: 20,
            churn: 0.0,
            churn_s: Duration::from_secs(120),
            join_rate: 500.0,
            alloc_timeout: Duration::from_secs(120),
            settle: Duration::from_secs(90),
            audit_interval: Duration::from_secs(5),
            bootstrap_samples: 16,
            net: NetConfig::default(),
            progress: false,
        }
    }
}

/// The `mgmt` experiment's report. `wall_s` and `peak_rss_mb` are the only
/// fields that differ between two runs with the same parameters.
#[derive(Clone, Debug, Serialize)]
pub struct MgmtReport {
    pub nodes: usize,
    pub seed: u64,
    pub topology: String,
    pub prefix: String,
    /// Host addresses in the pool (network and broadcast excluded).
    pub pool_size: u64,
    pub churn_rate: f64,
    pub churn_s: f64,
    pub crashes: usize,
    pub arrivals: usize,
    pub joined: usize,
    pub join_failures: usize,
    pub live_nodes_end: usize,
    /// First allocations (one per node at most).
    pub allocated: u64,
    /// Allocations after an `AddressLost`.
    pub reallocated: u64,
    pub exhausted: u64,
    /// Times a live node was granted an address another live node held.
    pub duplicates: u64,
    /// The first few duplicates: "t=… addr … nodes a,b".
    pub duplicate_examples: Vec<String>,
    /// Addresses held by two live nodes at the end (engines' `address()`).
    pub duplicate_addresses_end: u64,
    /// Live joined nodes holding no address at the end.
    pub unallocated_live_end: u64,
    /// Distinct (node, address) whose record vanished while the holder was
    /// alive: `AddressLost` events plus audit misses.
    pub lost_records: u64,
    pub address_lost_events: u64,
    pub audit_missing: u64,
    pub audits: u64,
    /// From the node's `Joined` to its first `AddressAllocated`.
    pub allocation_ms_p50: f64,
    pub allocation_ms_p99: f64,
    pub allocation_ms_max: f64,
    pub messages_per_allocation: f64,
    pub dht_messages_alloc_phase: u64,
    pub allocations_alloc_phase: u64,
    /// Simulated seconds until every initial node had an address.
    pub alloc_phase_s: f64,
    pub dht_messages_total: u64,
    /// DHT requests that timed out (all attempts), over all engines.
    pub dht_timeouts: u64,
    pub alloc_errors: u64,
    pub msgs_total: u64,
    pub decode_errors: u64,
    pub sim_events: u64,
    pub queue_peak: usize,
    pub sim_time_s: f64,
    pub drain_violations: u64,
    pub timer_violations: u64,
    pub wall_s: f64,
    pub peak_rss_mb: f64,
}

impl MgmtReport {
    /// The JSON with the two machine-dependent fields zeroed.
    pub fn deterministic_json(&self) -> String {
        let mut r = self.clone();
        r.wall_s = 0.0;
        r.peak_rss_mb = 0.0;
        serde_json::to_string(&r).unwrap_or_default()
    }
}

const TAG_JOIN: u64 = 0;
const TAG_CRASH: u64 = 1;
const TAG_ARRIVE: u64 = 2;
const TAG_AUDIT: u64 = 3;
const NOT_YET: u64 = u64::MAX;
const TYPE_ROUTE: u8 = 0x01;
const ROUTE_SERVICE_AT: usize = 18 + 25;
const SERVICE_DHT: u8 = 5;
/// Live nodes checked on each side of a record's ring key (≥ replicas + 1).
const AUDIT_SPAN: usize = 4;
const MAX_EXAMPLES: usize = 10;

struct Scenario {
    join: Joiner,
    initial: usize,
    next_join: usize,
    join_rate: f64,
    building: bool,
    prefix: Ipv4Addr,
    prefix_len: u8,
    joined_at: Vec<u64>,
    /// Got its first address or was told the pool is exhausted.
    resolved: Vec<bool>,
    initial_resolved: usize,
    alloc_ms: Vec<f64>,
    allocated: u64,
    reallocated: u64,
    exhausted: u64,
    alloc_errors: u64,
    held: Vec<Option<u32>>,
    holders: BTreeMap<u32, Vec<u32>>,
    duplicates: u64,
    examples: Vec<String>,
    address_lost_events: u64,
    lost: BTreeSet<(u32, u32)>,
    audit_missing: u64,
    audits: u64,
    audit_until: Time,
    audit_interval: Duration,
    dht_msgs: u64,
    /// Live joined nodes (crash candidates) and the ring of their ids.
    live: Vec<u32>,
    ring: BTreeMap<u128, u32>,
    churn_rng: Rng,
    crashes: usize,
    next_arrival: usize,
}

fn make_node(id: NodeId, addr: PeerAddr, seed: u64) -> Node {
    Node::new(Config::default(), id, addr, seed)
}

fn addr_record(a: u32) -> RecordName {
    RecordName {
        namespace: Bytes::from_static(ADDR_NAMESPACE),
        key: Bytes::copy_from_slice(&a.to_be_bytes()),
        bucket: None,
    }
}

impl Scenario {
    fn drop_holding(&mut self, node: u32) {
        if let Some(a) = self.held[node as usize].take()
            && let Some(hs) = self.holders.get_mut(&a)
        {
            hs.retain(|&h| h != node);
            if hs.is_empty() {
                self.holders.remove(&a);
            }
        }
    }

    fn resolve(&mut self, node: usize) -> bool {
        if self.resolved[node] {
            return false;
        }
        self.resolved[node] = true;
        if node < self.initial {
            self.initial_resolved += 1;
        }
        true
    }

    /// Start node `k`, join it and ask for an address.
    fn launch(&mut self, sim: &mut Sim<Node, AnyTopology>, k: usize) {
        match self.join.launch(sim, k, &mut make_node) {
            None => sim.join(k, &[], self),
            Some(b) => sim.join(k, &[b], self),
        }
        let (prefix, len) = (self.prefix, self.prefix_len);
        let mut err = false;
        sim.call(k, self, |e, now| {
            err = e.allocate_address(now, prefix, len).is_err();
        });
        if err {
            self.alloc_errors += 1;
        }
    }

    /// Live nodes around `key` on the ring: up to `AUDIT_SPAN` on each side.
    fn around(&self, key: u128) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .ring
            .range(key..)
            .chain(self.ring.iter())
            .take(AUDIT_SPAN)
            .map(|(_, &n)| n)
            .collect();
        v.extend(
            self.ring
                .range(..key)
                .rev()
                .chain(self.ring.iter().rev())
                .take(AUDIT_SPAN)
                .map(|(_, &n)| n),
        );
        v
    }

    fn audit(&mut self, sim: &Sim<Node, AnyTopology>) {
        self.audits += 1;
        let now = sim.now();
        let mut missing: Vec<(u32, u32)> = Vec::new();
        for (&a, hs) in &self.holders {
            let name = addr_record(a);
            let key = name.ring_key().0;
            let near = self.around(key);
            for &h in hs {
                let owner = NodeId(self.join.ids[h as usize]);
                let found = near.iter().any(|&j| {
                    sim.engine(j as usize)
                        .and_then(|e| e.dht().local(now, &name))
                        .is_some_and(|r| r.owner == owner)
                });
                if !found {
                    missing.push((h, a));
                }
            }
        }
        for m in missing {
            if self.lost.insert(m) {
                self.audit_missing += 1;
            }
        }
    }
}

impl Observer<Node, AnyTopology> for Scenario {
    fn on_event(&mut self, now: Time, node: usize, event: SimEvent) {
        if self.join.on_event(now, node, &event) {
            self.joined_at[node] = now.0;
            self.live.push(node as u32);
            self.ring.insert(self.join.ids[node], node as u32);
            return;
        }
        match event {
            SimEvent::AddressAllocated { addr, .. } => {
                let a = u32::from(addr);
                if self.resolve(node) {
                    self.allocated += 1;
                    let since = self.joined_at[node];
                    if since != NOT_YET {
                        self.alloc_ms.push((now.0 - since) as f64 / 1e3);
                    }
                } else {
                    self.reallocated += 1;
                }
                let n = node as u32;
                self.drop_holding(n);
                let hs = self.holders.entry(a).or_default();
                if !hs.is_empty() {
                    self.duplicates += 1;
                    if self.examples.len() < MAX_EXAMPLES {
                        self.examples.push(format!(
                            "t={:.6}s addr {addr} granted to node {n} while held by {hs:?}",
                            now.0 as f64 / 1e6
                        ));
                    }
                }
                hs.push(n);
                self.held[node] = Some(a);
            }
            SimEvent::AddressPoolExhausted => {
                self.exhausted += 1;
                self.resolve(node);
            }
            SimEvent::AddressLost { addr } => {
                self.address_lost_events += 1;
                self.lost.insert((node as u32, u32::from(addr)));
                self.drop_holding(node as u32);
            }
            _ => {}
        }
    }

    #[inline]
    fn on_transmit(&mut self, _now: Time, _from: usize, t: &SimTransmit) {
        let b = &t.bytes[..];
        match b.get(1) {
            Some(0x50..=0x5f) => self.dht_msgs += 1,
            Some(&TYPE_ROUTE) if b.get(ROUTE_SERVICE_AT) == Some(&SERVICE_DHT) => {
                self.dht_msgs += 1;
            }
            _ => {}
        }
    }

    fn on_user(&mut self, sim: &mut Sim<Node, AnyTopology>, tag: u64) {
        match tag {
            TAG_JOIN => {
                let k = self.next_join;
                self.next_join += 1;
                if self.next_join < self.initial {
                    let at = Time(offset_us(self.next_join, self.join_rate));
                    sim.schedule(at, Action::User(TAG_JOIN));
                }
                self.launch(sim, k);
            }
            TAG_CRASH => {
                if self.live.len() <= 1 {
                    return;
                }
                let victim = self.live.swap_remove(self.churn_rng.index(self.live.len()));
                self.ring.remove(&self.join.ids[victim as usize]);
                self.drop_holding(victim);
                sim.crash(victim as usize);
                self.crashes += 1;
            }
            TAG_ARRIVE => {
                let k = self.next_arrival;
                if k >= self.join.ids.len() {
                    return;
                }
                self.next_arrival += 1;
                self.launch(sim, k);
            }
            TAG_AUDIT => {
                self.audit(sim);
                let next = sim.now() + self.audit_interval;
                if next <= self.audit_until {
                    sim.schedule(next, Action::User(TAG_AUDIT));
                }
            }
            _ => {}
        }
    }

    fn stop(&self) -> bool {
        self.building
            && self.next_join >= self.initial
            && self.join.done(self.initial)
            && self.initial_resolved >= self.join.joined.len()
    }
}

/// Run the experiment.
///
/// # Panics
/// If `prefix_len` is outside 16..=30 (the engine's bounds; the CLI checks).
pub fn run_mgmt(p: &MgmtParams) -> MgmtReport {
    assert!((16..=30).contains(&p.prefix_len), "prefix length 16..=30");
    let wall = std::time::Instant::now();
    let n = p.nodes;
    let churn_events = (p.churn.max(0.0) * p.churn_s.0 as f64 / 1e6).round() as usize;
    let slots = n + churn_events;
    let mut master = Rng::new(p.seed);
    let topo_seed = master.next_u64();
    let net_seed = master.next_u64();
    let mut id_rng = master.fork();
    let mut seed_rng = master.fork();
    let join_rng = master.fork();
    let churn_rng = master.fork();

    let ids = unique_ids(slots, &mut id_rng);
    let seeds = (0..slots).map(|_| seed_rng.next_u64()).collect();
    let topo = p.topology.build(slots, topo_seed);
    let topology = topo.name().to_string();
    let mut sim: Sim<Node, AnyTopology> = Sim::new(topo, p.net.clone(), net_seed);
    let mut sc = Scenario {
        join: Joiner::new(ids, seeds, join_rng, p.bootstrap_samples),
        initial: n,
        next_join: 0,
        join_rate: p.join_rate,
        building: true,
        prefix: p.prefix,
        prefix_len: p.prefix_len,
        joined_at: vec![NOT_YET; slots],
        resolved: vec![false; slots],
        initial_resolved: 0,
        alloc_ms: Vec::new(),
        allocated: 0,
        reallocated: 0,
        exhausted: 0,
        alloc_errors: 0,
        held: vec![None; slots],
        holders: BTreeMap::new(),
        duplicates: 0,
        examples: Vec::new(),
        address_lost_events: 0,
        lost: BTreeSet::new(),
        audit_missing: 0,
        audits: 0,
        audit_until: Time::ZERO,
        audit_interval: p.audit_interval,
        dht_msgs: 0,
        live: Vec::with_capacity(slots),
        ring: BTreeMap::new(),
        churn_rng,
        crashes: 0,
        next_arrival: n,
    };

    progress(
        p.progress,
        &wall,
        sim.now(),
        "build: joining and allocating",
    );
    if n > 0 {
        sim.schedule(Time::ZERO, Action::User(TAG_JOIN));
        let last_join = Time(offset_us(n - 1, p.join_rate));
        sim.run_until(last_join + p.alloc_timeout, &mut sc);
    }
    sc.building = false;
    let alloc_phase_s = sim.now().0 as f64 / 1e6;
    let dht_messages_alloc_phase = sc.dht_msgs;
    let allocations_alloc_phase = sc.allocated;
    progress(
        p.progress,
        &wall,
        sim.now(),
        &format!(
            "build done: {} joined, {} allocated, {} exhausted",
            sc.join.joined.len(),
            sc.allocated,
            sc.exhausted
        ),
    );

    let start = sim.now();
    let end = start + p.churn_s + p.settle;
    sc.audit_until = end;
    if p.audit_interval.0 > 0 {
        sim.schedule(start, Action::User(TAG_AUDIT));
    }
    if churn_events > 0 {
        for k in 0..churn_events {
            let crash = start + Duration(offset_us(k, p.churn));
            let arrive = start + Duration((offset_us(k, p.churn) + offset_us(k + 1, p.churn)) / 2);
            sim.schedule(crash, Action::User(TAG_CRASH));
            sim.schedule(arrive, Action::User(TAG_ARRIVE));
        }
        progress(
            p.progress,
            &wall,
            sim.now(),
            &format!("churn: {churn_events} crashes and arrivals"),
        );
    }
    sim.run_until(end, &mut sc);
    sc.audit(&sim);
    progress(p.progress, &wall, sim.now(), "settled");

    // Final check on the engines' own view.
    let mut held_end: Vec<(u32, u32)> = Vec::new();
    let mut unallocated = 0u64;
    for &i in &sc.live {
        match sim.engine(i as usize).and_then(|e| e.address()) {
            Some((a, _)) => held_end.push((u32::from(a), i)),
            None => unallocated += 1,
        }
    }
    held_end.sort_unstable();
    let dup_end = held_end
        .chunk_by(|x, y| x.0 == y.0)
        .filter(|c| c.len() > 1)
        .count() as u64;

    let (mut decode_errors, mut dht_timeouts) = (0, 0);
    for i in 0..slots {
        if let Some(e) = sim.engine(i) {
            decode_errors += e.stats().decode_errors;
            dht_timeouts += e.stats().dht_timeouts;
        }
    }
    sc.alloc_ms.sort_by(f64::total_cmp);
    let st = *sim.stats();
    let pool_size = (1u64 << (32 - u32::from(p.prefix_len))) - 2;
    MgmtReport {
        nodes: n,
        seed: p.seed,
        topology,
        prefix: format!("{}/{}", p.prefix, p.prefix_len),
        pool_size,
        churn_rate: p.churn,
        churn_s: if churn_events > 0 {
            p.churn_s.0 as f64 / 1e6
        } else {
            0.0
        },
        crashes: sc.crashes,
        arrivals: sc.next_arrival - n,
        joined: sc.join.joined.len(),
        join_failures: sc.join.failed,
        live_nodes_end: sc.live.len(),
        allocated: sc.allocated,
        reallocated: sc.reallocated,
        exhausted: sc.exhausted,
        duplicates: sc.duplicates,
        duplicate_examples: sc.examples,
        duplicate_addresses_end: dup_end,
        unallocated_live_end: unallocated,
        lost_records: sc.lost.len() as u64,
        address_lost_events: sc.address_lost_events,
        audit_missing: sc.audit_missing,
        audits: sc.audits,
        allocation_ms_p50: quantile(&sc.alloc_ms, 0.5),
        allocation_ms_p99: quantile(&sc.alloc_ms, 0.99),
        allocation_ms_max: sc.alloc_ms.last().copied().unwrap_or(0.0),
        messages_per_allocation: dht_messages_alloc_phase as f64
            / allocations_alloc_phase.max(1) as f64,
        dht_messages_alloc_phase,
        allocations_alloc_phase,
        alloc_phase_s,
        dht_messages_total: sc.dht_msgs,
        dht_timeouts,
        alloc_errors: sc.alloc_errors,
        msgs_total: st.transmits,
        decode_errors,
        sim_events: st.events,
        queue_peak: sim.queue_peak(),
        sim_time_s: sim.now().0 as f64 / 1e6,
        drain_violations: st.drain_violations,
        timer_violations: st.timer_violations,
        wall_s: wall.elapsed().as_secs_f64(),
        peak_rss_mb: peak_rss_mb(),
    }
}

/// A human-readable summary table.
pub fn render_table(r: &MgmtReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "mgmt: {} nodes, pool {} ({} addresses), churn {}/s for {} s, topology {}, seed {}",
        r.nodes, r.prefix, r.pool_size, r.churn_rate, r.churn_s, r.topology, r.seed
    );
    let rows: Vec<(&str, String)> = vec![
        (
            "joined",
            format!(
                "{} ({} failed; {} crashes, {} arrivals, {} live at end)",
                r.joined, r.join_failures, r.crashes, r.arrivals, r.live_nodes_end
            ),
        ),
        (
            "allocated",
            format!(
                "{} ({} re-allocated, {} exhausted, {} live without address at end)",
                r.allocated, r.reallocated, r.exhausted, r.unallocated_live_end
            ),
        ),
        (
            "duplicates",
            format!(
                "{} during the run, {} at the end",
                r.duplicates, r.duplicate_addresses_end
            ),
        ),
        (
            "lost records",
            format!(
                "{} ({} AddressLost, {} audit misses in {} audits)",
                r.lost_records, r.address_lost_events, r.audit_missing, r.audits
            ),
        ),
        (
            "allocation time",
            format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                r.allocation_ms_p50, r.allocation_ms_p99, r.allocation_ms_max
            ),
        ),
        (
            "DHT msgs / allocation",
            format!(
                "{:.1} ({} msgs, {} allocations in the first {:.3} s)",
                r.messages_per_allocation,
                r.dht_messages_alloc_phase,
                r.allocations_alloc_phase,
                r.alloc_phase_s
            ),
        ),
        (
            "DHT msgs total",
            format!(
                "{} ({} request timeouts)",
                r.dht_messages_total, r.dht_timeouts
            ),
        ),
        ("messages total", r.msgs_total.to_string()),
        ("decode errors", r.decode_errors.to_string()),
        (
            "sim events",
            format!("{} (queue peak {})", r.sim_events, r.queue_peak),
        ),
        ("sim time", format!("{:.3} s", r.sim_time_s)),
        (
            "drain / timer viol.",
            format!("{} / {}", r.drain_violations, r.timer_violations),
        ),
        ("wall", format!("{:.2} s", r.wall_s)),
        ("peak RSS", format!("{:.1} MiB", r.peak_rss_mb)),
    ];
    crate::pastry::write_rows(&mut s, &rows);
    for e in &r.duplicate_examples {
        let _ = writeln!(s, "  ! {e}");
    }
    s
}
