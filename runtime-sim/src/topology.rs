//! Latency models: where hosts sit and how long a message takes between two
//! of them.
//!
//! * [`Plane`]: hosts uniform on a 1000 × 1000 square; one-way delay is the
//!   Euclidean distance × 0.1 ms (100 µs per unit), so the largest delay is
//!   ≈ 141.4 ms. Cheap, and the model the Pastry paper's first experiments use.
//! * [`TransitStub`]: a GT-ITM-like router graph (Zegura et al.; the Pastry and
//!   Scribe papers' 1225-router setup). Hosts attach to random stub routers by a
//!   1 ms access link; delay is the shortest router path plus both access links.
//!   All-pairs distances (µs, `u32`) and first hops (`u16`) are precomputed by one
//!   Dijkstra per router, so `latency` is one table read and [`TransitStub::router_path`]
//!   can list the links a message crosses (for link-stress measurements).
//!
//! All delays are in microseconds (`alm_core::Duration`). Every model is built
//! from a seed and is symmetric: `latency(a, b) == latency(b, a)`, and positive
//! for `a != b`.

use alm_core::{Duration, Rng, Time};
use core::cmp::Reverse;
use std::collections::BinaryHeap;

/// A latency model over hosts `0..len()`.
pub trait Topology {
    /// One-way delay from host `a` to host `b` (zero iff `a == b`).
    fn latency(&self, a: usize, b: usize) -> Duration;
    /// The autonomous system host `i` belongs to, when the model has them.
    fn as_of(&self, i: usize) -> Option<u32>;
    /// Number of hosts placed.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Short name for reports (`plane`, `transit-stub`).
    fn name(&self) -> &'static str;
    /// Whether nothing sent by `a` at some time can reach `b`, directly or
    /// relayed by any hosts, within `gap` of it: what lets the simulator
    /// run an event at `b` that is `gap` later than one at `a` in the same
    /// batch (see `Sim::set_batching`). Must never say yes wrongly.
    ///
    /// The default asks for a direct latency above twice the gap (plus
    /// 1 µs): relays cannot beat the direct path by more than latency
    /// rounding, which a chain of hops of at least 1 µs each cannot
    /// accumulate to half of it.
    fn separated(&self, a: usize, b: usize, gap: Duration) -> bool {
        self.latency(a, b).0 > 2 * gap.0 + 1
    }
    /// Start fetching what `latency` and `separated_from` read for host
    /// `a` into the CPU cache (a hint; the default does nothing).
    fn prefetch(&self, a: usize) {
        let _ = a;
    }
    /// Record an event at host `a` at `t` in a batch's `span` (a model
    /// may keep more of `a` there for [`Topology::separated_from`]).
    fn span_push(&self, span: &mut Span, a: usize, t: Time) {
        span.push(a, t);
    }
    /// Whether host `b` at `t` is [`separated`](Topology::separated) from
    /// every event of `span` at another host (events at `b` itself are the
    /// simulator's business). Called for every event a batch considers,
    /// against all the batch so far: models override it to answer in bulk.
    fn separated_from(&self, span: &Span, b: usize, t: Time) -> bool {
        let b32 = b as u32;
        span.hosts()
            .iter()
            .zip(span.times())
            .all(|(&a, ta)| a == b32 || self.separated(a as usize, b, Duration(t.0 - ta)))
    }
}

/// The events of a batch being formed: host and time of each, plus what a
/// model keeps for [`Topology::separated_from`] (the plane: coordinates).
/// Columns of 4-byte numbers whose entries past the last event are
/// padding that is near nothing, up to a multiple of [`Span::LANES`], so
/// that a check against all of them is whole vector steps (eight lanes to
/// a 256-bit register, four to SSE2's) with no scalar tail. The columns
/// keep their length between batches (padding throughout), so pushing is
/// two stores.
#[derive(Clone, Debug, Default)]
pub struct Span {
    len: usize,
    /// Host of each event; padding: `u32::MAX`.
    nodes: Vec<u32>,
    /// Time of the first event, µs.
    base: u64,
    /// Each event's time as µs after `base`: whole numbers below
    /// [`Span::MAX_OFFSET`], so exact in an `f32`. Padding: 0.
    offsets: Vec<f32>,
    /// The plane's coordinates, in µs of delay (`f32`; see `Plane`).
    /// Padding: infinitely far.
    xs: Vec<f32>,
    ys: Vec<f32>,
}

impl Span {
    /// How much later than its first event a span may go (8.4 s: a batch
    /// is over long before, since events at most µs apart fill it).
    pub const MAX_OFFSET: u64 = 1 << 23;
    /// What the padded length is a multiple of.
    pub const LANES: usize = 8;

    /// Append an event; the caller (a model's `span_push`) fills in its
    /// coordinates at index `len() - 1` if it keeps any.
    #[inline]
    fn push(&mut self, a: usize, t: Time) {
        if self.len == 0 {
            self.base = t.0;
        }
        debug_assert!(self.admits(t), "span pushed beyond MAX_OFFSET");
        if self.len == self.nodes.len() {
            let n = self.len + Self::LANES;
            self.nodes.resize(n, u32::MAX);
            self.offsets.resize(n, 0.0);
            self.xs.resize(n, f32::INFINITY);
            self.ys.resize(n, f32::INFINITY);
        }
        self.nodes[self.len] = a as u32;
        self.offsets[self.len] = (t.0 - self.base) as f32;
        self.len += 1;
    }
    /// How many column entries a bulk check reads: the events and the
    /// padding up to the next multiple of `LANES`.
    #[inline]
    fn padded_len(&self) -> usize {
        self.len.next_multiple_of(Self::LANES)
    }
    /// Whether an event at `t` (not before the first) is within reach of
    /// the span's offsets.
    pub fn admits(&self, t: Time) -> bool {
        self.len == 0 || t.0 - self.base < Self::MAX_OFFSET
    }
    /// The events' hosts.
    fn hosts(&self) -> &[u32] {
        &self.nodes[..self.len]
    }
    /// The events' times, µs.
    fn times(&self) -> impl Iterator<Item = u64> + '_ {
        self.offsets[..self.len]
            .iter()
            .map(|&o| self.base + o as u64)
    }
    /// Whether some event of the span is at host `a`.
    pub fn contains(&self, a: usize) -> bool {
        let a = a as u32;
        self.nodes[..self.padded_len()]
            .iter()
            .fold(false, |hit, &n| hit | (n == a))
    }
    /// Time of the first event (`None` if empty).
    fn first(&self) -> Option<u64> {
        (self.len > 0).then_some(self.base)
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Empty the span, turning the entries used back into padding.
    pub fn clear(&mut self) {
        let used = self.padded_len();
        self.nodes[..used].fill(u32::MAX);
        self.offsets[..used].fill(0.0);
        self.xs[..used].fill(f32::INFINITY);
        self.ys[..used].fill(f32::INFINITY);
        self.len = 0;
    }
}

// ---------------------------------------------------------------------------

/// Microseconds of one-way delay per unit of plane distance (0.1 ms).
pub const PLANE_US_PER_UNIT: f64 = 100.0;
/// Side of the square hosts are placed on.
pub const PLANE_SIDE: f64 = 1000.0;

/// Hosts uniform on a `PLANE_SIDE`² square; delay = distance × 0.1 ms.
pub struct Plane {
    pos: Vec<(f64, f64)>,
    /// Whether this CPU has AVX2, for the bulk separation check.
    avx2: bool,
}

impl Plane {
    pub fn new(hosts: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x706c_616e_6500_0000);
        let pos = (0..hosts)
            .map(|_| (rng.unit_f64() * PLANE_SIDE, rng.unit_f64() * PLANE_SIDE))
            .collect();
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        Plane { pos, avx2 }
    }

    pub fn position(&self, i: usize) -> (f64, f64) {
        self.pos[i]
    }

    /// Host `i`'s position in µs of delay, as the span's `f32` columns
    /// keep it.
    fn span_position(&self, i: usize) -> (f32, f32) {
        let (x, y) = self.pos[i];
        (
            (x * PLANE_US_PER_UNIT) as f32,
            (y * PLANE_US_PER_UNIT) as f32,
        )
    }
}

/// Whether some event of `span` not at host `b` is too near `(xb, yb)` at
/// span offset `tb` (see `Plane::separated_from`). Whole vector steps: the
/// padded length is a multiple of `Span::LANES`.
#[inline(always)]
fn span_near(span: &Span, xb: f32, yb: f32, tb: f32, b: u32) -> bool {
    let n = span.padded_len();
    let (nodes, offsets) = (&span.nodes[..n], &span.offsets[..n]);
    let (xs, ys) = (&span.xs[..n], &span.ys[..n]);
    let mut near = false;
    for k in 0..n {
        let (dx, dy) = (xs[k] - xb, ys[k] - yb);
        let need = 2.0 * (tb - offsets[k]) + 1.75;
        near |= (nodes[k] != b) & (dx * dx + dy * dy < need * need);
    }
    near
}

/// `span_near` compiled for AVX2: eight lanes a step instead of four.
/// The same operations in the same order, so the same answers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn span_near_avx2(span: &Span, xb: f32, yb: f32, tb: f32, b: u32) -> bool {
    span_near(span, xb, yb, tb, b)
}

impl Topology for Plane {
    #[inline]
    fn latency(&self, a: usize, b: usize) -> Duration {
        if a == b {
            return Duration::ZERO;
        }
        let (xa, ya) = self.pos[a];
        let (xb, yb) = self.pos[b];
        let (dx, dy) = (xa - xb, ya - yb);
        // (dx², dy²) are identical in both directions, so this is symmetric.
        let us = ((dx * dx + dy * dy).sqrt() * PLANE_US_PER_UNIT).round() as u64;
        Duration(us.max(1))
    }
    /// The default's rule without the square root: the exact distance
    /// must be at least `(2 gap + 1.5) µs`, which makes the rounded latency
    /// exceed `2 gap + 1`.
    #[inline]
    fn separated(&self, a: usize, b: usize, gap: Duration) -> bool {
        let (xa, ya) = self.pos[a];
        let (xb, yb) = self.pos[b];
        let (dx, dy) = (xa - xb, ya - yb);
        let need = (2 * gap.0) as f64 + 1.5;
        let per = PLANE_US_PER_UNIT;
        (dx * dx + dy * dy) * (per * per) >= need * need
    }
    fn prefetch(&self, a: usize) {
        if let Some(p) = self.pos.get(a) {
            crate::sim::prefetch((p as *const (f64, f64)).cast());
        }
    }
    fn span_push(&self, span: &mut Span, a: usize, t: Time) {
        span.push(a, t);
        let k = span.len - 1;
        (span.xs[k], span.ys[k]) = self.span_position(a);
    }
    /// `separated` against the whole span at once, branch-free over its
    /// `f32` columns, with a margin that covers their rounding: it asks
    /// for a distance of `2 gap + 1.75` µs where `separated` asks for
    /// `2 gap + 1.5`. Coordinates below 10^5 µs are within 0.004 µs in an
    /// `f32` and the squares within 10^-7 of themselves (0.015 µs on the
    /// longest distance), so a yes here is a yes of `separated`; offsets
    /// are exact. (It may say no where `separated` would say yes, within
    /// a quarter µs: the batch just ends there.) Padding entries are
    /// infinitely far, hence never near.
    fn separated_from(&self, span: &Span, b: usize, t: Time) -> bool {
        if span.is_empty() {
            return true;
        }
        let (xb, yb) = self.span_position(b);
        // `Sim` only asks for events the span admits: exact as an f32.
        let tb = (t.0 - span.base) as f32;
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: the CPU has AVX2 (checked when the plane was made).
            return unsafe { !span_near_avx2(span, xb, yb, tb, b as u32) };
        }
        !span_near(span, xb, yb, tb, b as u32)
    }
    fn as_of(&self, _i: usize) -> Option<u32> {
        None
    }
    fn len(&self) -> usize {
        self.pos.len()
    }
    fn name(&self) -> &'static str {
        "plane"
    }
}

// ---------------------------------------------------------------------------

/// Shape and delay ranges of a transit-stub graph. The default gives exactly
/// 1225 routers: 5 transit domains × 5 routers = 25 transit routers, and one
/// stub domain of 48 routers hanging off each transit router = 25 stub
/// domains, 1200 stub routers.
#[derive(Clone, Debug)]
pub struct TransitStubParams {
    pub transit_domains: usize,
    pub routers_per_transit: usize,
    pub stubs_per_transit_router: usize,
    pub routers_per_stub: usize,
    /// Delay ranges in µs, inclusive, drawn uniformly per link.
    pub inter_transit_us: (u32, u32),
    pub intra_transit_us: (u32, u32),
    pub transit_stub_us: (u32, u32),
    pub intra_stub_us: (u32, u32),
    /// Host ↔ stub router access link.
    pub access_us: u32,
    /// Probability of each extra (non-tree) edge inside a transit domain and
    /// between transit domains.
    pub transit_extra_edge_p: f64,
    /// Expected extra (non-tree) edges per stub router.
    pub stub_extra_edge_p: f64,
}

impl Default for TransitStubParams {
    fn default() -> Self {
        TransitStubParams {
            transit_domains: 5,
            routers_per_transit: 5,
            stubs_per_transit_router: 1,
            routers_per_stub: 48,
            inter_transit_us: (20_000, 50_000),
            intra_transit_us: (5_000, 15_000),
            transit_stub_us: (2_000, 5_000),
            intra_stub_us: (1_000, 2_000),
            access_us: 1_000,
            transit_extra_edge_p: 0.5,
            stub_extra_edge_p: 0.5,
        }
    }
}

impl TransitStubParams {
    pub fn transit_routers(&self) -> usize {
        self.transit_domains * self.routers_per_transit
    }
    pub fn stub_domains(&self) -> usize {
        self.transit_routers() * self.stubs_per_transit_router
    }
    pub fn routers(&self) -> usize {
        self.transit_routers() + self.stub_domains() * self.routers_per_stub
    }
}

/// An undirected router link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub a: u16,
    pub b: u16,
    pub delay_us: u32,
}

/// GT-ITM-like transit-stub graph with all-pairs shortest paths. Routers
/// `0..transit_routers` are transit routers (domain `r / routers_per_transit`,
/// AS `1 + domain`); the rest are stub routers (stub domain
/// `(r - transit_routers) / routers_per_stub`, AS `1000 + stub domain`).
pub struct TransitStub {
    params: TransitStubParams,
    routers: usize,
    links: Vec<Link>,
    /// Per router: (neighbour, link index).
    adj: Vec<Vec<(u16, u32)>>,
    /// `dist[a * routers + b]`: shortest-path delay in µs.
    dist: Vec<u32>,
    /// `next_hop[a * routers + b]`: first router after `a` on a shortest path
    /// to `b` (`a` itself when `a == b`).
    next_hop: Vec<u16>,
    /// Router each host attaches to.
    host_router: Vec<u16>,
}

impl TransitStub {
    pub fn new(hosts: usize, seed: u64) -> Self {
        Self::with_params(hosts, seed, TransitStubParams::default())
    }

    /// # Panics
    /// If the parameters describe more than 65 535 routers or no stub router.
    pub fn with_params(hosts: usize, seed: u64, params: TransitStubParams) -> Self {
        let routers = params.routers();
        assert!(routers < usize::from(u16::MAX), "too many routers");
        assert!(params.routers_per_stub > 0 && params.stub_domains() > 0);
        let mut rng = Rng::new(seed ^ 0x7472_616e_7369_7400);
        let mut links: Vec<Link> = Vec::new();
        let draw = |rng: &mut Rng, (lo, hi): (u32, u32)| -> u32 {
            lo + rng.below(u64::from(hi - lo) + 1) as u32
        };
        let add = |links: &mut Vec<Link>, a: usize, b: usize, d: u32| {
            links.push(Link {
                a: a as u16,
                b: b as u16,
                delay_us: d,
            });
        };

        // Transit domains: a random tree plus extra edges, then domains
        // joined by a random tree of inter-domain links plus extra ones.
        let rpt = params.routers_per_transit;
        for d in 0..params.transit_domains {
            let base = d * rpt;
            for i in 1..rpt {
                let j = rng.index(i);
                let w = draw(&mut rng, params.intra_transit_us);
                add(&mut links, base + i, base + j, w);
            }
            for i in 0..rpt {
                for j in (i + 2)..rpt {
                    if rng.unit_f64() < params.transit_extra_edge_p {
                        let w = draw(&mut rng, params.intra_transit_us);
                        add(&mut links, base + i, base + j, w);
                    }
                }
            }
        }
        let inter = |rng: &mut Rng, links: &mut Vec<Link>, d1: usize, d2: usize| {
            let a = d1 * rpt + rng.index(rpt);
            let b = d2 * rpt + rng.index(rpt);
            let (lo, hi) = params.inter_transit_us;
            let w = lo + rng.below(u64::from(hi - lo) + 1) as u32;
            links.push(Link {
                a: a as u16,
                b: b as u16,
                delay_us: w,
            });
        };
        for d in 1..params.transit_domains {
            let e = rng.index(d);
            inter(&mut rng, &mut links, d, e);
        }
        for d in 0..params.transit_domains {
            for e in (d + 1)..params.transit_domains {
                if rng.unit_f64() < params.transit_extra_edge_p {
                    inter(&mut rng, &mut links, d, e);
                }
            }
        }

        // Stub domains: a random tree plus extra edges; router 0 of each is
        // the gateway to its transit router.
        let tr = params.transit_routers();
        let rps = params.routers_per_stub;
        for s in 0..params.stub_domains() {
            let base = tr + s * rps;
            for i in 1..rps {
                let j = rng.index(i);
                let w = draw(&mut rng, params.intra_stub_us);
                add(&mut links, base + i, base + j, w);
            }
            if rps > 2 {
                for i in 0..rps {
                    if rng.unit_f64() < params.stub_extra_edge_p {
                        let j = rng.index(rps);
                        if j != i {
                            let w = draw(&mut rng, params.intra_stub_us);
                            add(&mut links, base + i, base + j, w);
                        }
                    }
                }
            }
            let transit = s / params.stubs_per_transit_router;
            let w = draw(&mut rng, params.transit_stub_us);
            add(&mut links, transit, base, w);
        }

        let mut adj: Vec<Vec<(u16, u32)>> = vec![Vec::new(); routers];
        for (k, l) in links.iter().enumerate() {
            adj[usize::from(l.a)].push((l.b, k as u32));
            adj[usize::from(l.b)].push((l.a, k as u32));
        }

        let (dist, next_hop) = all_pairs(routers, &links, &adj);

        let stub_routers = routers - tr;
        let host_router = (0..hosts)
            .map(|_| (tr + rng.index(stub_routers)) as u16)
            .collect();

        TransitStub {
            params,
            routers,
            links,
            adj,
            dist,
            next_hop,
            host_router,
        }
    }

    pub fn params(&self) -> &TransitStubParams {
        &self.params
    }
    pub fn routers(&self) -> usize {
        self.routers
    }
    pub fn links(&self) -> &[Link] {
        &self.links
    }
    /// The stub router host `i` attaches to.
    pub fn router_of(&self, host: usize) -> usize {
        usize::from(self.host_router[host])
    }

    /// Shortest-path delay between two routers, in µs.
    #[inline]
    pub fn router_distance(&self, a: usize, b: usize) -> u32 {
        self.dist[a * self.routers + b]
    }

    /// AS number of router `r`.
    pub fn router_as(&self, r: usize) -> u32 {
        let tr = self.params.transit_routers();
        if r < tr {
            1 + (r / self.params.routers_per_transit) as u32
        } else {
            1000 + ((r - tr) / self.params.routers_per_stub) as u32
        }
    }

    /// Routers on a shortest path from `a` to `b`, both ends included.
    pub fn router_path(&self, a: usize, b: usize) -> Vec<usize> {
        let mut path = vec![a];
        let mut cur = a;
        while cur != b {
            cur = usize::from(self.next_hop[cur * self.routers + b]);
            path.push(cur);
        }
        path
    }

    /// Link indices (into [`links`](Self::links)) on a shortest path from
    /// router `a` to router `b`.
    pub fn path_links(&self, a: usize, b: usize) -> Vec<u32> {
        let path = self.router_path(a, b);
        path.windows(2)
            .map(|w| {
                // The cheapest parallel link: the one Dijkstra relaxed.
                self.adj[w[0]]
                    .iter()
                    .filter(|(n, _)| usize::from(*n) == w[1])
                    .map(|&(_, k)| k)
                    .min_by_key(|&k| (self.links[k as usize].delay_us, k))
                    .expect("next hop is a neighbour")
            })
            .collect()
    }
}

/// One Dijkstra per source router. Ties break on router index through the
/// heap order, so the result depends only on the graph.
fn all_pairs(n: usize, links: &[Link], adj: &[Vec<(u16, u32)>]) -> (Vec<u32>, Vec<u16>) {
    let mut dist = vec![u32::MAX; n * n];
    let mut next_hop = vec![u16::MAX; n * n];
    let mut heap: BinaryHeap<Reverse<(u32, u16)>> = BinaryHeap::new();
    for src in 0..n {
        let d = &mut dist[src * n..(src + 1) * n];
        let first = &mut next_hop[src * n..(src + 1) * n];
        d[src] = 0;
        first[src] = src as u16;
        heap.clear();
        heap.push(Reverse((0, src as u16)));
        while let Some(Reverse((du, u))) = heap.pop() {
            let u = usize::from(u);
            if du > d[u] {
                continue;
            }
            for &(v, k) in &adj[u] {
                let v = usize::from(v);
                let nd = du + links[k as usize].delay_us;
                if nd < d[v] {
                    d[v] = nd;
                    first[v] = if u == src { v as u16 } else { first[u] };
                    heap.push(Reverse((nd, v as u16)));
                }
            }
        }
        assert!(
            d.iter().all(|&x| x != u32::MAX),
            "transit-stub graph is not connected"
        );
    }
    (dist, next_hop)
}

impl Topology for TransitStub {
    #[inline]
    fn latency(&self, a: usize, b: usize) -> Duration {
        if a == b {
            return Duration::ZERO;
        }
        let ra = usize::from(self.host_router[a]);
        let rb = usize::from(self.host_router[b]);
        Duration(
            u64::from(self.dist[ra * self.routers + rb]) + 2 * u64::from(self.params.access_us),
        )
    }
    /// Router distances are shortest paths and every relay adds two access
    /// links, so no relayed path beats the direct latency: it only has to
    /// exceed the gap, and every pair of hosts is at least two access links
    /// apart (the common case, decided without reading the distance table).
    #[inline]
    fn separated(&self, a: usize, b: usize, gap: Duration) -> bool {
        a != b && (2 * u64::from(self.params.access_us) > gap.0 || self.latency(a, b) > gap)
    }
    /// A span shorter than two access links is separated from everything.
    fn separated_from(&self, span: &Span, b: usize, t: Time) -> bool {
        let access = 2 * u64::from(self.params.access_us);
        match span.first() {
            None => true,
            Some(first) if t.0 - first < access => true,
            Some(_) => span.hosts().iter().zip(span.times()).all(|(&a, ta)| {
                a as usize == b || self.separated(a as usize, b, Duration(t.0 - ta))
            }),
        }
    }
    fn as_of(&self, i: usize) -> Option<u32> {
        Some(self.router_as(self.router_of(i)))
    }
    fn len(&self) -> usize {
        self.host_router.len()
    }
    fn name(&self) -> &'static str {
        "transit-stub"
    }
}

// ---------------------------------------------------------------------------

/// Which model to build, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopologyKind {
    Plane,
    TransitStub,
}

impl TopologyKind {
    pub fn build(self, hosts: usize, seed: u64) -> AnyTopology {
        match self {
            TopologyKind::Plane => AnyTopology::Plane(Plane::new(hosts, seed)),
            TopologyKind::TransitStub => AnyTopology::TransitStub(TransitStub::new(hosts, seed)),
        }
    }
}

impl core::str::FromStr for TopologyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "plane" => Ok(TopologyKind::Plane),
            "transit-stub" => Ok(TopologyKind::TransitStub),
            other => Err(format!("unknown topology `{other}` (plane | transit-stub)")),
        }
    }
}

/// Static dispatch over the built-in models (no virtual call per packet).
pub enum AnyTopology {
    Plane(Plane),
    TransitStub(TransitStub),
}

impl Topology for AnyTopology {
    #[inline]
    fn latency(&self, a: usize, b: usize) -> Duration {
        match self {
            AnyTopology::Plane(t) => t.latency(a, b),
            AnyTopology::TransitStub(t) => t.latency(a, b),
        }
    }
    #[inline]
    fn separated(&self, a: usize, b: usize, gap: Duration) -> bool {
        match self {
            AnyTopology::Plane(t) => t.separated(a, b, gap),
            AnyTopology::TransitStub(t) => t.separated(a, b, gap),
        }
    }
    fn prefetch(&self, a: usize) {
        match self {
            AnyTopology::Plane(p) => p.prefetch(a),
            AnyTopology::TransitStub(p) => p.prefetch(a),
        }
    }
    fn span_push(&self, span: &mut Span, a: usize, t: Time) {
        match self {
            AnyTopology::Plane(p) => p.span_push(span, a, t),
            AnyTopology::TransitStub(p) => p.span_push(span, a, t),
        }
    }
    fn separated_from(&self, span: &Span, b: usize, t: Time) -> bool {
        match self {
            AnyTopology::Plane(p) => p.separated_from(span, b, t),
            AnyTopology::TransitStub(p) => p.separated_from(span, b, t),
        }
    }
    fn as_of(&self, i: usize) -> Option<u32> {
        match self {
            AnyTopology::Plane(t) => t.as_of(i),
            AnyTopology::TransitStub(t) => t.as_of(i),
        }
    }
    fn len(&self) -> usize {
        match self {
            AnyTopology::Plane(t) => t.len(),
            AnyTopology::TransitStub(t) => t.len(),
        }
    }
    fn name(&self) -> &'static str {
        match self {
            AnyTopology::Plane(t) => t.name(),
            AnyTopology::TransitStub(t) => t.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bulk check is the pairwise rule applied to every event of the
    /// span at another host (the plane's may refuse a pair the rule would
    /// admit by less than its quarter-µs margin, never the other way), and
    /// the pairwise rule never admits a pair whose latency does not exceed
    /// the gap.
    #[test]
    fn span_checks_agree_with_the_pairwise_rule() {
        let mut rng = Rng::new(5);
        let mut stricter = 0;
        for topo in [
            AnyTopology::Plane(Plane::new(400, 1)),
            AnyTopology::TransitStub(TransitStub::new(400, 2)),
        ] {
            // One span for all rounds: what `clear` leaves must not count.
            let mut span = Span::default();
            for _ in 0..300 {
                span.clear();
                let mut events = Vec::new();
                let mut t = rng.below(1_000);
                for _ in 0..rng.index(40) {
                    let a = rng.index(400);
                    topo.span_push(&mut span, a, Time(t));
                    events.push((a, t));
                    let step = if rng.below(3) == 0 { 4_000 } else { 60 };
                    t += rng.below(step);
                }
                let b = rng.index(400);
                let tb = t + rng.below(100);
                let want = events
                    .iter()
                    .all(|&(a, ta)| a == b || topo.separated(a, b, Duration(tb - ta)));
                let bulk = topo.separated_from(&span, b, Time(tb));
                assert!(!bulk || want, "bulk check admitted a pair the rule refuses");
                if bulk != want {
                    stricter += 1;
                    // Only a pair at the margin can tell them apart.
                    assert!(events.iter().any(|&(a, ta)| {
                        let need = 2 * (tb - ta) + 2;
                        a != b && topo.latency(a, b).0 <= need
                    }));
                }
                assert_eq!(span.contains(b), events.iter().any(|&(a, _)| a == b));
                for &(a, ta) in &events {
                    if a != b && topo.separated(a, b, Duration(tb - ta)) {
                        assert!(topo.latency(a, b).0 > tb - ta);
                    }
                }
            }
        }
        assert!(
            stricter <= 3,
            "{stricter} of 600 spans refused at the margin"
        );
    }

    /// Right at the threshold, where rounding would show: for gaps around
    /// half of each pair's distance, the plane's bulk check never admits
    /// what the exact rule refuses, and refuses only within its margin.
    #[test]
    fn plane_bulk_check_is_safe_at_the_threshold() {
        let plane = Plane::new(300, 3);
        let mut refused_at_margin = 0;
        for a in 0..300 {
            let b = (a * 7 + 1) % 300;
            if a == b {
                continue;
            }
            let (xa, ya) = plane.position(a);
            let (xb, yb) = plane.position(b);
            let d = ((xa - xb).powi(2) + (ya - yb).powi(2)).sqrt() * PLANE_US_PER_UNIT;
            let around = ((d - 1.5) / 2.0).floor() as u64;
            for gap in around.saturating_sub(1)..=around + 1 {
                let mut span = Span::default();
                let t0 = 1_000_000;
                plane.span_push(&mut span, a, Time(t0));
                let bulk = plane.separated_from(&span, b, Time(t0 + gap));
                let exact = plane.separated(a, b, Duration(gap));
                assert!(!bulk || exact, "pair {a}-{b}: d {d} µs, gap {gap}");
                if exact && !bulk {
                    assert!(d < 2.0 * gap as f64 + 1.75 + 0.05, "d {d} gap {gap}");
                    refused_at_margin += 1;
                }
            }
        }
        assert!(refused_at_margin < 150, "{refused_at_margin}");
    }

    /// The AVX2 build of the bulk check answers as the baseline one.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_bulk_check_matches_the_baseline() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let plane = Plane::new(200, 4);
        let mut rng = Rng::new(8);
        for _ in 0..500 {
            let mut span = Span::default();
            let mut t = 0;
            for _ in 0..1 + rng.index(50) {
                plane.span_push(&mut span, rng.index(200), Time(t));
                t += rng.below(40);
            }
            let b = rng.index(200);
            let (x, y) = plane.span_position(b);
            let tb = (t + rng.below(40)) as f32;
            // SAFETY: AVX2 is present (checked above).
            let fast = unsafe { span_near_avx2(&span, x, y, tb, b as u32) };
            assert_eq!(fast, span_near(&span, x, y, tb, b as u32));
        }
    }

    /// A span never reaches further than its offsets stay exact: the
    /// simulator ends a batch at an event `MAX_OFFSET` after its first.
    #[test]
    fn spans_admit_events_within_max_offset_only() {
        let plane = Plane::new(10, 1);
        let mut span = Span::default();
        assert!(span.admits(Time(u64::MAX / 2)));
        plane.span_push(&mut span, 0, Time(5_000_000_000));
        assert!(span.admits(Time(5_000_000_000 + Span::MAX_OFFSET - 1)));
        assert!(!span.admits(Time(5_000_000_000 + Span::MAX_OFFSET)));
        plane.span_push(&mut span, 1, Time(5_000_000_000 + Span::MAX_OFFSET - 1));
        assert_eq!(
            span.times().last(),
            Some(5_000_000_000 + Span::MAX_OFFSET - 1)
        );
        span.clear();
        assert!(span.admits(Time(0)));
    }

    #[test]
    fn plane_is_symmetric_positive_and_bounded() {
        let p = Plane::new(300, 9);
        let max = (2.0f64.sqrt() * PLANE_SIDE * PLANE_US_PER_UNIT).ceil() as u64;
        for a in 0..300 {
            assert_eq!(p.latency(a, a), Duration::ZERO);
            for b in (a + 1)..300 {
                let d = p.latency(a, b);
                assert_eq!(d, p.latency(b, a));
                assert!(d.0 >= 1 && d.0 <= max, "{d:?}");
            }
        }
    }

    #[test]
    fn plane_unit_is_a_tenth_of_a_millisecond() {
        let p = Plane {
            pos: vec![(0.0, 0.0), (300.0, 400.0)],
            avx2: false,
        };
        assert_eq!(p.latency(0, 1), Duration::from_millis(50));
    }

    #[test]
    fn plane_is_seeded() {
        let (a, b, c) = (Plane::new(10, 1), Plane::new(10, 1), Plane::new(10, 2));
        assert_eq!(a.pos, b.pos);
        assert_ne!(a.pos, c.pos);
    }

    #[test]
    fn transit_stub_default_has_1225_routers_and_as_numbers() {
        let t = TransitStub::new(10, 3);
        assert_eq!(t.routers(), 1225);
        assert_eq!(t.router_as(0), 1);
        assert_eq!(t.router_as(24), 5);
        assert_eq!(t.router_as(25), 1000);
        assert_eq!(t.router_as(1224), 1024);
        for h in 0..10 {
            assert!(t.router_of(h) >= 25, "hosts attach to stub routers");
            assert!(t.as_of(h).unwrap() >= 1000);
        }
    }

    #[test]
    fn transit_stub_delays_respect_the_hierarchy() {
        let t = TransitStub::new(0, 5);
        let p = t.params().clone();
        for l in t.links() {
            let (a, b) = (usize::from(l.a), usize::from(l.b));
            let tr = p.transit_routers();
            let range = match (a < tr, b < tr) {
                (true, true) if t.router_as(a) == t.router_as(b) => p.intra_transit_us,
                (true, true) => p.inter_transit_us,
                (false, false) => p.intra_stub_us,
                _ => p.transit_stub_us,
            };
            assert!(
                (range.0..=range.1).contains(&l.delay_us),
                "{l:?} out of {range:?}"
            );
        }
    }

    #[test]
    fn transit_stub_shortest_paths_are_metric() {
        let t = TransitStub::new(0, 11);
        let n = t.routers();
        let mut rng = Rng::new(1);
        for a in 0..n {
            assert_eq!(t.router_distance(a, a), 0);
        }
        for _ in 0..20_000 {
            let (a, b, c) = (rng.index(n), rng.index(n), rng.index(n));
            let (ab, bc, ac) = (
                t.router_distance(a, b),
                t.router_distance(b, c),
                t.router_distance(a, c),
            );
            assert_eq!(ab, t.router_distance(b, a), "symmetric");
            if a != b {
                assert!(ab > 0, "positive");
            }
            assert!(ac <= ab + bc, "triangle {a} {b} {c}: {ac} > {ab} + {bc}");
        }
    }

    #[test]
    fn transit_stub_paths_add_up_to_distances() {
        let t = TransitStub::new(0, 2);
        let n = t.routers();
        let mut rng = Rng::new(2);
        for _ in 0..2_000 {
            let (a, b) = (rng.index(n), rng.index(n));
            let path = t.router_path(a, b);
            assert_eq!(path.first(), Some(&a));
            assert_eq!(path.last(), Some(&b));
            let links = t.path_links(a, b);
            assert_eq!(links.len(), path.len() - 1);
            let sum: u32 = links.iter().map(|&k| t.links()[k as usize].delay_us).sum();
            assert_eq!(sum, t.router_distance(a, b));
        }
    }

    #[test]
    fn transit_stub_host_latency_is_symmetric_positive_metric() {
        let t = TransitStub::new(200, 4);
        for a in 0..200 {
            assert_eq!(t.latency(a, a), Duration::ZERO);
            for b in 0..200 {
                if a != b {
                    let d = t.latency(a, b);
                    assert_eq!(d, t.latency(b, a));
                    assert!(d.0 >= 2 * u64::from(t.params().access_us));
                }
            }
        }
        for (a, b, c) in [(0, 1, 2), (5, 77, 150), (199, 3, 42)] {
            assert!(t.latency(a, c).0 <= t.latency(a, b).0 + t.latency(b, c).0);
        }
    }

    #[test]
    fn transit_stub_is_seeded() {
        let (a, b) = (TransitStub::new(50, 8), TransitStub::new(50, 8));
        assert_eq!(a.links(), b.links());
        assert_eq!(a.host_router, b.host_router);
        assert_ne!(TransitStub::new(0, 9).links(), a.links());
    }
}
