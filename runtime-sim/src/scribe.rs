//! The `scribe` experiment: the Scribe paper's multicast evaluation (Castro,
//! Druschel, Kermarrec, Rowstron, JSAC 2002, §4: delay penalty, node stress,
//! link stress) with the real engine.
//!
//! Phases: build the overlay by joins (as `pastry` does, [`crate::build`]);
//! settle; create `G` groups whose sizes follow ⌊N·r^-1.25 + 0.5⌋ for rank
//! r = 1..G, members drawn uniformly at random among the joined nodes; every
//! (member, group) subscription is issued in a random order at
//! `subscribe_rate`; the trees settle; the tree state is read (node stress);
//! then for each group one random member publishes one packet (8-byte
//! payload: a tag and the group index), `publish_interval` apart, and we
//! wait `deliver_timeout` for deliveries.
//!
//! Measured per (group, member other than the source): first delivery time
//! → relative delay penalty = overlay delay / direct unicast delay (source
//! to member). Every data transmit of the publish phase (type 0x30, or a
//! Pastry `Route` with the Scribe data service) is recorded and, on the
//! transit-stub model, mapped to the router links of the shortest path
//! between the two hosts' routers: link stress. Naive unicast (the source
//! sends one copy to each member) is computed on the same paths.
//!
//! State owned here: the experiment's RNGs, the [`Joiner`], groups, their
//! sorted member lists and sources, delivery times and the data transmits.

use crate::addr::index_of;
use crate::build::{Joiner, offset_us, peak_rss_mb, progress, quantile, unique_ids};
use crate::engine::{SimEvent, SimTransmit};
use crate::pastry::closest_live;
use crate::sim::{Action, NetConfig, Observer, Sim};
use crate::topology::{AnyTopology, Topology, TopologyKind, TransitStub};
use alm_core::{Config, Duration, Node, NodeId, PeerAddr, Rng, Time, Topic};
use bytes::Bytes;
use serde::Serialize;
use std::fmt::Write as _;

/// Parameters of one `scribe` run.
#[derive(Clone, Debug)]
pub struct ScribeParams {
    pub nodes: usize,
    pub groups: usize,
    pub seed: u64,
    pub topology: TopologyKind,
    /// Joins per simulated second.
    pub join_rate: f64,
    /// How long after the last scheduled join to wait for stragglers.
    pub join_timeout: Duration,
    /// Idle time after the build, before subscribing.
    pub settle: Duration,
    /// Subscriptions issued per simulated second (all groups interleaved).
    pub subscribe_rate: f64,
    /// Idle time after the last subscription, before publishing.
    pub tree_settle: Duration,
    /// Time between two groups' publications.
    pub publish_interval: Duration,
    /// How long after the last publication to wait for deliveries.
    pub deliver_timeout: Duration,
    pub bootstrap_samples: usize,
    /// Exponent of the group-size distribution (the paper's 1.25).
    pub size_exponent: f64,
    /// Which node publishes each group's packet.
    pub source: SourceKind,
    pub net: NetConfig,
    pub progress: bool,
}

/// Who sends a group's packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// The group's root (the live node closest to the topic key), as in the
    /// Scribe paper's delay experiments: delays are those of the tree alone.
    Root,
    /// A random member: the packet climbs the tree to the members' common
    /// ancestor and comes down again (alm's bidirectional data path).
    Member,
}

impl Default for ScribeParams {
    fn default() -> Self {
        ScribeParams {
            nodes: 1000,
            groups: 10,
            seed: 1,
            topology: TopologyKind::TransitStub,
            join_rate: 2000.0,
            join_timeout: Duration::from_secs(60),
            settle: Duration::from_secs(10),
            subscribe_rate: 2000.0,
            tree_settle: Duration::from_secs(10),
            publish_interval: Duration::from_millis(10),
            deliver_timeout: Duration::from_secs(5),
            bootstrap_samples: 16,
            size_exponent: 1.25,
            source: SourceKind::Root,
            net: NetConfig::default(),
            progress: false,
        }
    }
}

/// Group sizes of the paper: ⌊n·r^-exp + 0.5⌋ for r = 1..=groups, at most n.
pub fn group_sizes(n: usize, groups: usize, exp: f64) -> Vec<usize> {
    (1..=groups)
        .map(|r| ((n as f64 * (r as f64).powf(-exp) + 0.5).floor() as usize).min(n))
        .collect()
}

/// The `scribe` experiment's report. `wall_s` and `peak_rss_mb` are the only
/// fields that differ between two runs with the same parameters. Stress
/// figures are `null` on the plane model (no routers).
#[derive(Clone, Debug, Serialize)]
pub struct ScribeReport {
    pub nodes: usize,
    pub groups: usize,
    pub topology: String,
    /// Who published each group's packet.
    pub source: SourceKind,
    pub seed: u64,
    pub joined: usize,
    pub join_failures: usize,
    /// Subscriptions (sum of group sizes).
    pub members_total: usize,
    pub largest_group: usize,
    /// Groups that published (at least one member).
    pub groups_published: usize,
    /// Member-packets expected: Σ (members − 1), the source never receives
    /// its own packet.
    pub expected: u64,
    pub delivered: u64,
    pub delivery_ratio: f64,
    /// Groups where every member got the packet.
    pub groups_complete: usize,
    pub duplicate_deliveries: u64,
    /// Deliveries at nodes that are not members of the group.
    pub stray_deliveries: u64,
    /// Members still waiting for a `JoinAck` when publishing started.
    pub members_joining: u64,
    pub publish_errors: u64,
    /// Relative delay penalty per (group, member): overlay delay / direct
    /// unicast delay from the source.
    pub rdp_mean: f64,
    pub rdp_p50: f64,
    pub rdp_p90: f64,
    pub rdp_max: f64,
    /// The paper's per-group figures (§4.1), averaged over groups with at
    /// least one delivered receiver: RMD = max overlay delay / max unicast
    /// delay, RAD = mean overlay delay / mean unicast delay.
    pub rmd_mean: f64,
    pub rmd_max: f64,
    pub rad_mean: f64,
    pub rad_max: f64,
    pub delay_mean_ms: f64,
    pub unicast_delay_mean_ms: f64,
    /// Copies of one group's packet crossing one router link, over the
    /// (packet, link) pairs with at least one copy.
    pub link_stress_mean: Option<f64>,
    pub link_stress_max: Option<u64>,
    /// The paper's aggregate: copies crossing one link summed over the G
    /// packets (one per group), over links used.
    pub link_stress_all_groups_mean: Option<f64>,
    pub link_stress_all_groups_max: Option<u64>,
    pub links_used: Option<usize>,
    pub unicast_link_stress_mean: Option<f64>,
    pub unicast_link_stress_max: Option<u64>,
    pub unicast_link_stress_all_groups_mean: Option<f64>,
    pub unicast_link_stress_all_groups_max: Option<u64>,
    pub unicast_links_used: Option<usize>,
    /// Naive unicast has RDP 1 by definition.
    pub unicast_rdp_mean: f64,
    pub router_links: Option<usize>,
    /// Distinct tree neighbours (parents and children, over all groups) per
    /// node on at least one tree.
    pub node_stress_mean: f64,
    pub node_stress_max: u64,
    /// Nodes on at least one tree, and those of them that are members of
    /// none of the trees they are on (pure forwarders somewhere).
    pub tree_nodes: usize,
    /// The paper's node stress: children-table entries per node summed over
    /// groups, over nodes on at least one tree.
    pub children_entries_mean: f64,
    pub children_entries_max: u64,
    /// Tree links (child → parent) over all groups.
    pub tree_links: u64,
    /// Members' depth in their tree (root = 0), as their parents told them.
    pub member_depth_mean: f64,
    pub member_depth_max: u64,
    /// Data copies sent in the publish phase (overlay hops).
    pub data_transmits: u64,
    pub msgs_total: u64,
    pub bytes_total: u64,
    pub decode_errors: u64,
    pub sim_events: u64,
    pub queue_peak: usize,
    pub sim_time_s: f64,
    pub drain_violations: u64,
    pub timer_violations: u64,
    pub wall_s: f64,
    pub peak_rss_mb: f64,
    /// Every RDP sample, sorted (for the CDF plot; not serialised).
    #[serde(skip)]
    pub rdp_sorted: Vec<f64>,
}

impl ScribeReport {
    /// The JSON with the two machine-dependent fields zeroed.
    pub fn deterministic_json(&self) -> String {
        let mut r = self.clone();
        r.wall_s = 0.0;
        r.peak_rss_mb = 0.0;
        serde_json::to_string(&r).unwrap_or_default()
    }
}

const TAG_JOIN: u64 = 0;
const TAG_SUB: u64 = 1;
const TAG_PUB: u64 = 2;
/// High half of the 8-byte payload; the low half is the group index.
const PAYLOAD_TAG: u64 = 0x5343_5242 << 32;
/// Wire type of a data packet and offsets in the wire bytes.
const TYPE_DATA: u8 = 0x30;
const TYPE_ROUTE: u8 = 0x01;
const ROUTE_SERVICE_AT: usize = 18 + 25;
const SERVICE_DATA: u8 = 3;
const NOT_YET: u64 = u64::MAX;

struct Scenario {
    join: Joiner,
    next_join: usize,
    join_rate: f64,
    building: bool,
    topics: Vec<Topic>,
    /// (topic key, group) sorted by key.
    by_key: Vec<(u128, u32)>,
    /// Sorted member nodes per group.
    members: Vec<Vec<u32>>,
    /// (node, group) in issue order.
    subs: Vec<(u32, u32)>,
    next_sub: usize,
    sub_start: Time,
    sub_rate: f64,
    sources: Vec<Option<u32>>,
    published_at: Vec<u64>,
    next_pub: usize,
    pub_start: Time,
    pub_interval: Duration,
    publish_errors: u64,
    /// First delivery time per (group, member position).
    delivered_at: Vec<Vec<u64>>,
    delivered: u64,
    duplicates: u64,
    stray: u64,
    counting: bool,
    /// (group, from host, to host) of every data copy while counting.
    data_tx: Vec<(u32, u32, u32)>,
}

fn make_node(id: NodeId, addr: PeerAddr, seed: u64) -> Node {
    Node::new(Config::default(), id, addr, seed)
}

impl Scenario {
    fn group_of_key(&self, key: u128) -> Option<u32> {
        self.by_key
            .binary_search_by_key(&key, |&(k, _)| k)
            .ok()
            .map(|i| self.by_key[i].1)
    }
}

impl Observer<Node, AnyTopology> for Scenario {
    fn on_event(&mut self, now: Time, node: usize, event: SimEvent) {
        self.join.on_event(now, node, &event);
        let SimEvent::GroupData { topic, payload, .. } = event else {
            return;
        };
        let Ok(raw) = <[u8; 8]>::try_from(&payload[..]) else {
            return;
        };
        let raw = u64::from_le_bytes(raw);
        if raw & !0xffff_ffff != PAYLOAD_TAG {
            return;
        }
        let g = (raw & 0xffff_ffff) as usize;
        if self.topics.get(g) != Some(&topic) {
            self.stray += 1;
            return;
        }
        match self.members[g].binary_search(&(node as u32)) {
            Ok(pos) => {
                let slot = &mut self.delivered_at[g][pos];
                if *slot == NOT_YET {
                    *slot = now.0;
                    self.delivered += 1;
                } else {
                    self.duplicates += 1;
                }
            }
            Err(_) => self.stray += 1,
        }
    }

    #[inline]
    fn on_transmit(&mut self, _now: Time, from: usize, t: &SimTransmit) {
        if !self.counting {
            return;
        }
        let b = &t.bytes[..];
        let key_at = match b.get(1) {
            Some(&TYPE_DATA) if b.len() >= 34 => 18,
            Some(&TYPE_ROUTE)
                if b.len() > ROUTE_SERVICE_AT && b[ROUTE_SERVICE_AT] == SERVICE_DATA =>
            {
                26
            }
            _ => return,
        };
        let mut k = [0u8; 16];
        k.copy_from_slice(&b[key_at..key_at + 16]);
        let (Some(g), Some(to)) = (self.group_of_key(u128::from_be_bytes(k)), index_of(t.to))
        else {
            return;
        };
        self.data_tx.push((g, from as u32, to as u32));
    }

    fn on_user(&mut self, sim: &mut Sim<Node, AnyTopology>, tag: u64) {
        match tag {
            TAG_JOIN => {
                let k = self.next_join;
                self.next_join += 1;
                match self.join.launch(sim, k, &mut make_node) {
                    None => sim.join(k, &[], self),
                    Some(b) => sim.join(k, &[b], self),
                }
                if self.next_join < self.join.ids.len() {
                    let at = Time(offset_us(self.next_join, self.join_rate));
                    sim.schedule(at, Action::User(TAG_JOIN));
                }
            }
            TAG_SUB => {
                let Some(&(node, g)) = self.subs.get(self.next_sub) else {
                    return;
                };
                self.next_sub += 1;
                if self.next_sub < self.subs.len() {
                    let at = self.sub_start + Duration(offset_us(self.next_sub, self.sub_rate));
                    sim.schedule(at, Action::User(TAG_SUB));
                }
                let topic = self.topics[g as usize];
                sim.call(node as usize, self, |e, now| e.subscribe(now, topic));
            }
            TAG_PUB => {
                let g = self.next_pub;
                if g >= self.topics.len() {
                    return;
                }
                self.next_pub += 1;
                if self.next_pub < self.topics.len() {
                    let at = self.pub_start + Duration(self.pub_interval.0 * self.next_pub as u64);
                    sim.schedule(at, Action::User(TAG_PUB));
                }
                let Some(src) = self.sources[g] else {
                    return;
                };
                self.published_at[g] = sim.now().0;
                let topic = self.topics[g];
                let payload = Bytes::copy_from_slice(&(PAYLOAD_TAG | g as u64).to_le_bytes());
                let mut failed = false;
                sim.call(src as usize, self, |e, now| {
                    failed = e.publish(now, topic, payload).is_err();
                });
                if failed {
                    self.publish_errors += 1;
                }
            }
            _ => {}
        }
    }

    fn stop(&self) -> bool {
        self.building
            && self.next_join >= self.join.ids.len()
            && self.join.done(self.join.ids.len())
    }
}

/// Mean over non-zero entries, max, and how many are non-zero.
fn stress(counts: &[u32]) -> (f64, u64, usize) {
    let (mut sum, mut used, mut max) = (0u64, 0usize, 0u64);
    for &c in counts {
        if c > 0 {
            sum += u64::from(c);
            used += 1;
            max = max.max(u64::from(c));
        }
    }
    (sum as f64 / used.max(1) as f64, max, used)
}

/// Per-(group, link) and per-link copy counts of `copies` (group, from host,
/// to host) on the router graph.
fn link_counts(
    ts: &TransitStub,
    groups: usize,
    copies: impl Iterator<Item = (u32, u32, u32)>,
) -> (Vec<u32>, Vec<u32>) {
    let l = ts.links().len();
    let mut per_group = vec![0u32; groups * l];
    let mut total = vec![0u32; l];
    for (g, a, b) in copies {
        let (ra, rb) = (ts.router_of(a as usize), ts.router_of(b as usize));
        for k in ts.path_links(ra, rb) {
            per_group[g as usize * l + k as usize] += 1;
            total[k as usize] += 1;
        }
    }
    (per_group, total)
}

/// Run the experiment.
pub fn run_scribe(p: &ScribeParams) -> ScribeReport {
    let wall = std::time::Instant::now();
    let n = p.nodes;
    let mut master = Rng::new(p.seed);
    let topo_seed = master.next_u64();
    let net_seed = master.next_u64();
    let mut id_rng = master.fork();
    let mut seed_rng = master.fork();
    let join_rng = master.fork();
    let mut group_rng = master.fork();

    let ids = unique_ids(n, &mut id_rng);
    let seeds = (0..n).map(|_| seed_rng.next_u64()).collect();
    let topo = p.topology.build(n, topo_seed);
    let topology = topo.name().to_string();
    let mut sim: Sim<Node, AnyTopology> = Sim::new(topo, p.net.clone(), net_seed);
    let topics: Vec<Topic> = (0..p.groups)
        .map(|g| Topic::named(b"alm-sim/scribe", &(g as u64).to_be_bytes()))
        .collect();
    let mut by_key: Vec<(u128, u32)> = topics
        .iter()
        .enumerate()
        .map(|(g, t)| (t.0.0, g as u32))
        .collect();
    by_key.sort_unstable();
    let mut sc = Scenario {
        join: Joiner::new(ids, seeds, join_rng, p.bootstrap_samples),
        next_join: 0,
        join_rate: p.join_rate,
        building: true,
        topics,
        by_key,
        members: Vec::new(),
        subs: Vec::new(),
        next_sub: 0,
        sub_start: Time::ZERO,
        sub_rate: p.subscribe_rate,
        sources: vec![None; p.groups],
        published_at: vec![NOT_YET; p.groups],
        next_pub: 0,
        pub_start: Time::ZERO,
        pub_interval: p.publish_interval,
        publish_errors: 0,
        delivered_at: Vec::new(),
        delivered: 0,
        duplicates: 0,
        stray: 0,
        counting: false,
        data_tx: Vec::new(),
    };

    progress(p.progress, &wall, sim.now(), "build: joining");
    if n > 0 {
        sim.schedule(Time::ZERO, Action::User(TAG_JOIN));
        let last_join = Time(offset_us(n - 1, p.join_rate));
        sim.run_until(last_join + p.join_timeout, &mut sc);
    }
    sc.building = false;
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
    sim.run_for(p.settle, &mut sc);

    // Groups: members uniformly at random among the joined nodes.
    let mut pool: Vec<u32> = sc.join.joined.clone();
    pool.sort_unstable();
    let sizes = group_sizes(pool.len(), p.groups, p.size_exponent);
    for &s in &sizes {
        for j in 0..s {
            let r = j + group_rng.index(pool.len() - j);
            pool.swap(j, r);
        }
        let mut m = pool[..s].to_vec();
        m.sort_unstable();
        sc.members.push(m);
    }
    let mut live: Vec<(u128, u32)> = sc
        .join
        .joined
        .iter()
        .map(|&i| (sc.join.ids[i as usize], i))
        .collect();
    live.sort_unstable();
    let live_ids: Vec<u128> = live.iter().map(|&(id, _)| id).collect();
    for (g, m) in sc.members.iter().enumerate() {
        if !m.is_empty() {
            // Draw either way, so both choices see the same groups.
            let member = m[group_rng.index(m.len())];
            sc.sources[g] = match p.source {
                SourceKind::Member => Some(member),
                SourceKind::Root => closest_live(&live_ids, sc.topics[g].0)
                    .and_then(|id| live.binary_search_by_key(&id, |&(x, _)| x).ok())
                    .map(|pos| live[pos].1),
            };
        }
        sc.delivered_at.push(vec![NOT_YET; m.len()]);
        sc.subs.extend(m.iter().map(|&node| (node, g as u32)));
    }
    for j in (1..sc.subs.len()).rev() {
        let r = group_rng.index(j + 1);
        sc.subs.swap(j, r);
    }
    let members_total = sc.subs.len();
    progress(
        p.progress,
        &wall,
        sim.now(),
        &format!("subscribing {members_total} members to {} groups", p.groups),
    );
    if members_total > 0 {
        sc.sub_start = sim.now();
        sim.schedule(sc.sub_start, Action::User(TAG_SUB));
        let last = sc.sub_start + Duration(offset_us(members_total - 1, p.subscribe_rate));
        sim.run_until(last, &mut sc);
    }
    sim.run_for(p.tree_settle, &mut sc);
    progress(p.progress, &wall, sim.now(), "trees settled");

    // Tree state at publish time: node stress.
    let mut members_joining = 0u64;
    let (mut depth_sum, mut depth_n, mut depth_max) = (0u64, 0u64, 0u64);
    let (mut tree_nodes, mut stress_sum, mut stress_max) = (0usize, 0u64, 0u64);
    let (mut child_sum, mut child_max, mut tree_links) = (0u64, 0u64, 0u64);
    let mut neigh: Vec<u128> = Vec::new();
    for i in 0..n {
        if !sim.is_alive(i) {
            continue;
        }
        let Some(e) = sim.engine(i) else { continue };
        neigh.clear();
        let (mut on_tree, mut children) = (false, 0u64);
        for (t, st) in e.scribe().topics() {
            if sc.group_of_key(t.0.0).is_none() {
                continue;
            }
            on_tree = true;
            if st.member && st.parent.is_none() && st.joining_since.is_some() {
                members_joining += 1;
            }
            if st.member {
                depth_sum += u64::from(st.depth);
                depth_n += 1;
                depth_max = depth_max.max(u64::from(st.depth));
            }
            if let Some(par) = st.parent {
                neigh.push(par.handle.id.0);
                tree_links += 1;
            }
            children += st.children.len() as u64;
            neigh.extend(st.children.iter().map(|c| c.handle.id.0));
        }
        if !on_tree {
            continue;
        }
        neigh.sort_unstable();
        neigh.dedup();
        tree_nodes += 1;
        stress_sum += neigh.len() as u64;
        stress_max = stress_max.max(neigh.len() as u64);
        child_sum += children;
        child_max = child_max.max(children);
    }

    // Publish one packet per group.
    progress(p.progress, &wall, sim.now(), "publishing");
    sc.counting = true;
    if p.groups > 0 {
        sc.pub_start = sim.now();
        sim.schedule(sc.pub_start, Action::User(TAG_PUB));
        let last = sc.pub_start + Duration(p.publish_interval.0 * (p.groups as u64 - 1));
        sim.run_until(last + p.deliver_timeout, &mut sc);
    }
    sc.counting = false;
    progress(p.progress, &wall, sim.now(), "delivery window closed");

    // Delivery and delay penalty.
    let topo = sim.topology();
    let (mut expected, mut groups_published, mut groups_complete) = (0u64, 0usize, 0usize);
    let mut rdp: Vec<f64> = Vec::new();
    let (mut delay_sum, mut direct_sum, mut delay_n) = (0u64, 0u64, 0u64);
    let (mut rmd, mut rad): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    for (g, m) in sc.members.iter().enumerate() {
        let Some(src) = sc.sources[g] else { continue };
        groups_published += 1;
        expected += m.len() as u64 - u64::from(m.binary_search(&src).is_ok());
        let mut complete = true;
        // (max, sum) of overlay and of direct delays over delivered members.
        let (mut omax, mut osum, mut dmax, mut dsum, mut cnt) = (0u64, 0u64, 0u64, 0u64, 0u64);
        for (pos, &node) in m.iter().enumerate() {
            if node == src {
                continue;
            }
            let at = sc.delivered_at[g][pos];
            let direct = topo.latency(src as usize, node as usize).0;
            direct_sum += direct;
            if at == NOT_YET || sc.published_at[g] == NOT_YET {
                complete = false;
                continue;
            }
            let delay = at - sc.published_at[g];
            delay_sum += delay;
            delay_n += 1;
            (omax, osum, cnt) = (omax.max(delay), osum + delay, cnt + 1);
            (dmax, dsum) = (dmax.max(direct), dsum + direct);
            if direct > 0 {
                rdp.push(delay as f64 / direct as f64);
            }
        }
        if complete {
            groups_complete += 1;
        }
        if cnt > 0 && dmax > 0 {
            rmd.push(omax as f64 / dmax as f64);
            rad.push(osum as f64 / dsum as f64);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let max = |v: &[f64]| v.iter().copied().fold(0.0f64, f64::max);
    rdp.sort_by(f64::total_cmp);
    let rdp_mean = mean(&rdp);

    // Link stress on the router graph.
    let mut ls = LinkStress::default();
    if let AnyTopology::TransitStub(ts) = topo {
        let (pg, tot) = link_counts(ts, p.groups, sc.data_tx.iter().copied());
        let unicast = sc.members.iter().enumerate().flat_map(|(g, m)| {
            let src = sc.sources[g];
            m.iter()
                .filter(move |&&x| Some(x) != src)
                .filter_map(move |&x| src.map(|s| (g as u32, s, x)))
        });
        let (upg, utot) = link_counts(ts, p.groups, unicast);
        ls = LinkStress {
            overlay: Some((stress(&pg), stress(&tot))),
            unicast: Some((stress(&upg), stress(&utot))),
            links: Some(ts.links().len()),
        };
    }

    let mut decode_errors = 0;
    for i in 0..n {
        if let Some(e) = sim.engine(i) {
            decode_errors += e.stats().decode_errors;
        }
    }
    let st = *sim.stats();
    let tn = tree_nodes.max(1) as f64;
    ScribeReport {
        nodes: n,
        groups: p.groups,
        topology,
        source: p.source,
        seed: p.seed,
        joined: sc.join.joined.len(),
        join_failures: sc.join.failed,
        members_total,
        largest_group: sizes.iter().copied().max().unwrap_or(0),
        groups_published,
        expected,
        delivered: sc.delivered,
        delivery_ratio: if expected == 0 {
            1.0
        } else {
            sc.delivered as f64 / expected as f64
        },
        groups_complete,
        duplicate_deliveries: sc.duplicates,
        stray_deliveries: sc.stray,
        members_joining,
        publish_errors: sc.publish_errors,
        rdp_mean,
        rdp_p50: quantile(&rdp, 0.5),
        rdp_p90: quantile(&rdp, 0.9),
        rdp_max: rdp.last().copied().unwrap_or(0.0),
        rmd_mean: mean(&rmd),
        rmd_max: max(&rmd),
        rad_mean: mean(&rad),
        rad_max: max(&rad),
        delay_mean_ms: delay_sum as f64 / delay_n.max(1) as f64 / 1e3,
        unicast_delay_mean_ms: direct_sum as f64 / expected.max(1) as f64 / 1e3,
        link_stress_mean: ls.overlay.map(|((m, _, _), _)| m),
        link_stress_max: ls.overlay.map(|((_, x, _), _)| x),
        link_stress_all_groups_mean: ls.overlay.map(|(_, (m, _, _))| m),
        link_stress_all_groups_max: ls.overlay.map(|(_, (_, x, _))| x),
        links_used: ls.overlay.map(|(_, (_, _, u))| u),
        unicast_link_stress_mean: ls.unicast.map(|((m, _, _), _)| m),
        unicast_link_stress_max: ls.unicast.map(|((_, x, _), _)| x),
        unicast_link_stress_all_groups_mean: ls.unicast.map(|(_, (m, _, _))| m),
        unicast_link_stress_all_groups_max: ls.unicast.map(|(_, (_, x, _))| x),
        unicast_links_used: ls.unicast.map(|(_, (_, _, u))| u),
        unicast_rdp_mean: 1.0,
        router_links: ls.links,
        node_stress_mean: stress_sum as f64 / tn,
        node_stress_max: stress_max,
        tree_nodes,
        children_entries_mean: child_sum as f64 / tn,
        children_entries_max: child_max,
        tree_links,
        member_depth_mean: depth_sum as f64 / depth_n.max(1) as f64,
        member_depth_max: depth_max,
        data_transmits: sc.data_tx.len() as u64,
        msgs_total: st.transmits,
        bytes_total: st.bytes,
        decode_errors,
        sim_events: st.events,
        queue_peak: sim.queue_peak(),
        sim_time_s: sim.now().0 as f64 / 1e6,
        drain_violations: st.drain_violations,
        timer_violations: st.timer_violations,
        wall_s: wall.elapsed().as_secs_f64(),
        peak_rss_mb: peak_rss_mb(),
        rdp_sorted: rdp,
    }
}

type StressTriple = (f64, u64, usize);

#[derive(Default)]
struct LinkStress {
    /// ((per packet), (all groups)) for the overlay and for unicast.
    overlay: Option<(StressTriple, StressTriple)>,
    unicast: Option<(StressTriple, StressTriple)>,
    links: Option<usize>,
}

/// A human-readable summary table.
pub fn render_table(r: &ScribeReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "scribe: {} nodes, {} groups ({} members, largest {}), topology {}, source {:?}, seed {}",
        r.nodes, r.groups, r.members_total, r.largest_group, r.topology, r.source, r.seed
    );
    let opt_f = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.2}"));
    let opt_u = |x: Option<u64>| x.map_or("-".into(), |v| v.to_string());
    let rows: Vec<(&str, String)> = vec![
        (
            "joined",
            format!("{} ({} failed)", r.joined, r.join_failures),
        ),
        (
            "delivery ratio",
            format!(
                "{:.6} ({} / {}; {} of {} groups complete)",
                r.delivery_ratio, r.delivered, r.expected, r.groups_complete, r.groups_published
            ),
        ),
        (
            "duplicates / stray",
            format!("{} / {}", r.duplicate_deliveries, r.stray_deliveries),
        ),
        (
            "members joining",
            format!(
                "{} (publish errors {})",
                r.members_joining, r.publish_errors
            ),
        ),
        (
            "RDP",
            format!(
                "mean {:.3}, p50 {:.3}, p90 {:.3}, max {:.3}",
                r.rdp_mean, r.rdp_p50, r.rdp_p90, r.rdp_max
            ),
        ),
        (
            "RMD / RAD per group",
            format!(
                "mean {:.3} / {:.3}, max {:.3} / {:.3}",
                r.rmd_mean, r.rad_mean, r.rmd_max, r.rad_max
            ),
        ),
        (
            "delay mean",
            format!(
                "{:.2} ms (unicast {:.2} ms)",
                r.delay_mean_ms, r.unicast_delay_mean_ms
            ),
        ),
        (
            "link stress / packet",
            format!(
                "mean {}, max {} (unicast mean {}, max {})",
                opt_f(r.link_stress_mean),
                opt_u(r.link_stress_max),
                opt_f(r.unicast_link_stress_mean),
                opt_u(r.unicast_link_stress_max)
            ),
        ),
        (
            "link stress all groups",
            format!(
                "mean {}, max {}, {} links used (unicast mean {}, max {}, {} used; {} links)",
                opt_f(r.link_stress_all_groups_mean),
                opt_u(r.link_stress_all_groups_max),
                opt_u(r.links_used.map(|x| x as u64)),
                opt_f(r.unicast_link_stress_all_groups_mean),
                opt_u(r.unicast_link_stress_all_groups_max),
                opt_u(r.unicast_links_used.map(|x| x as u64)),
                opt_u(r.router_links.map(|x| x as u64))
            ),
        ),
        (
            "node stress",
            format!(
                "mean {:.2}, max {} distinct neighbours over {} tree nodes",
                r.node_stress_mean, r.node_stress_max, r.tree_nodes
            ),
        ),
        (
            "children entries",
            format!(
                "mean {:.2}, max {} ({} tree links; member depth mean {:.2}, max {})",
                r.children_entries_mean,
                r.children_entries_max,
                r.tree_links,
                r.member_depth_mean,
                r.member_depth_max
            ),
        ),
        ("data transmits", r.data_transmits.to_string()),
        (
            "messages total",
            format!("{} ({} bytes)", r.msgs_total, r.bytes_total),
        ),
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
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_sizes_follow_the_papers_zipf_like_law() {
        assert_eq!(group_sizes(100_000, 3, 1.25), vec![100_000, 42_045, 25_328]);
        let s = group_sizes(10_000, 100, 1.25);
        assert_eq!(s[0], 10_000);
        assert_eq!(s[99], 32);
        assert!(s.windows(2).all(|w| w[0] >= w[1]));
        assert_eq!(group_sizes(3, 2, 1.25), vec![3, 1]);
    }

    #[test]
    fn stress_ignores_unused_links() {
        assert_eq!(stress(&[0, 2, 0, 4]), (3.0, 4, 2));
        assert_eq!(stress(&[0, 0]), (0.0, 0, 0));
    }
}
