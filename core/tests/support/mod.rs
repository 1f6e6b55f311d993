//! A small virtual-time network of `Node`s for the engine's integration
//! tests (and, through `#[path]`, the routing bench): every step jumps to
//! the earliest of next delivery / next timeout (quinn's `Pair` idea, for N
//! nodes), latencies come from a 1000 x 1000 plane (0.1 ms per unit), and
//! the drain rule is asserted after every call. The full simulator is
//! `alm-sim`; this one is small enough to read in a test failure.
#![allow(dead_code)] // each test binary uses a different part

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use alm_core::{Config, Duration, Event, Node, NodeId, PeerAddr, Rng, Time};
use bytes::Bytes;

/// (arrival, sequence, from, to, bytes)
pub type InFlight = Reverse<(Time, u64, usize, usize, Vec<u8>)>;

pub struct Net {
    pub nodes: Vec<Node>,
    pub alive: Vec<bool>,
    pub pos: Vec<(f64, f64)>,
    pub queue: BinaryHeap<InFlight>,
    pub seq: u64,
    pub now: Time,
    pub events: Vec<(Time, usize, Event)>,
    pub rng: Rng,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Message types (byte 1 of the common header) that are always lost.
    pub drop_types: Vec<u8>,
}

pub fn addr(i: usize) -> PeerAddr {
    PeerAddr::v4(10, (i >> 16) as u8, (i >> 8) as u8, i as u8, 4000)
}
pub fn index(a: PeerAddr) -> usize {
    match a.0.ip() {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            (usize::from(o[1]) << 16) | (usize::from(o[2]) << 8) | usize::from(o[3])
        }
        std::net::IpAddr::V6(_) => usize::MAX,
    }
}

impl Net {
    pub fn new(n: usize, seed: u64) -> Net {
        Net::with_config(n, seed, Config::default())
    }

    pub fn with_config(n: usize, seed: u64, cfg: Config) -> Net {
        let mut rng = Rng::new(seed);
        let mut nodes = Vec::new();
        let mut pos = Vec::new();
        for i in 0..n {
            let id = NodeId(rng.next_u128());
            nodes.push(Node::new(cfg.clone(), id, addr(i), rng.next_u64()));
            pos.push((rng.unit_f64() * 1000.0, rng.unit_f64() * 1000.0));
        }
        Net {
            nodes,
            alive: vec![true; n],
            pos,
            queue: BinaryHeap::new(),
            seq: 0,
            now: Time::ZERO,
            events: Vec::new(),
            rng,
            loss: 0.0,
            drop_types: Vec::new(),
        }
    }

    pub fn latency(&self, a: usize, b: usize) -> Duration {
        let (x1, y1) = self.pos[a];
        let (x2, y2) = self.pos[b];
        let d = ((x1 - x2).powi(2) + (y1 - y2).powi(2)).sqrt();
        Duration::from_micros((d * 100.0) as u64 + 100)
    }

    pub fn drain(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].poll_transmit() {
            let to = index(t.to);
            if to >= self.nodes.len() || (self.loss > 0.0 && self.rng.unit_f64() < self.loss) {
                continue;
            }
            let mut buf = Vec::new();
            t.write_to(&mut buf);
            if buf.get(1).is_some_and(|ty| self.drop_types.contains(ty)) {
                continue;
            }
            let at = self.now + self.latency(i, to);
            self.seq += 1;
            self.queue.push(Reverse((at, self.seq, i, to, buf)));
        }
        while let Some(e) = self.nodes[i].poll_event() {
            self.events.push((self.now, i, e));
        }
        assert!(self.nodes[i].poll_transmit().is_none(), "drain invariant");
    }

    pub fn next_timer(&self) -> Option<(Time, usize)> {
        (0..self.nodes.len())
            .filter(|i| self.alive[*i])
            .filter_map(|i| self.nodes[i].poll_timeout().map(|t| (t, i)))
            .min()
    }

    pub fn run_until(&mut self, until: Time) {
        loop {
            let next_msg = self.queue.peek().map(|Reverse((t, ..))| *t);
            let next_tmr = self.next_timer();
            let t_msg = next_msg.unwrap_or(Time::NEVER);
            let t_tmr = next_tmr.map(|(t, _)| t).unwrap_or(Time::NEVER);
            let t = t_msg.min(t_tmr);
            if t > until {
                self.now = until;
                return;
            }
            self.now = t;
            if t_msg <= t_tmr {
                let Reverse((_, _, from, to, bytes)) = self.queue.pop().unwrap();
                if self.alive[to] {
                    self.nodes[to].handle_datagram(t, addr(from), Bytes::from(bytes));
                    self.drain(to);
                }
            } else {
                let (_, i) = next_tmr.unwrap();
                self.nodes[i].handle_timeout(t);
                self.drain(i);
            }
        }
    }

    pub fn settle(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    pub fn join_all(&mut self, spacing: Duration) {
        let n = self.nodes.len();
        self.join_first(n, spacing);
    }

    /// Join nodes `0..n` (the others stay out, for later joins).
    pub fn join_first(&mut self, n: usize, spacing: Duration) {
        self.nodes[0].join_overlay(self.now, &[]);
        self.drain(0);
        for i in 1..n {
            self.settle(spacing);
            self.join_one(i, i);
        }
        self.settle(Duration::from_secs(40));
        for (i, n) in self.nodes.iter().enumerate().take(n) {
            assert!(n.is_joined(), "node {i} did not join");
        }
    }

    /// Start node `i`'s join through the nearest of a few joined nodes
    /// among `0..among`.
    pub fn join_one(&mut self, i: usize, among: usize) {
        let mut best = 0;
        for _ in 0..8 {
            let c = self.rng.index(among);
            if self.alive[c]
                && self.nodes[c].is_joined()
                && self.latency(i, c) < self.latency(i, best)
            {
                best = c;
            }
        }
        let now = self.now;
        self.nodes[i].join_overlay(now, &[addr(best)]);
        self.drain(i);
    }

    /// Give node `i` (not yet joined) the id `id`.
    pub fn set_id(&mut self, i: usize, id: NodeId, cfg: &Config) {
        let seed = self.rng.next_u64();
        self.nodes[i] = Node::new(cfg.clone(), id, addr(i), seed);
    }

    /// Run until `cond` holds (checked after every event) or `limit` passes.
    pub fn run_until_cond(&mut self, limit: Duration, cond: impl Fn(&Net) -> bool) -> bool {
        let until = self.now + limit;
        while self.now < until {
            if cond(self) {
                return true;
            }
            let next_msg = self.queue.peek().map(|Reverse((t, ..))| *t);
            let t = next_msg
                .into_iter()
                .chain(self.next_timer().map(|(t, _)| t))
                .min()
                .unwrap_or(until)
                .min(until);
            // One instant at a time.
            self.run_until(t);
        }
        cond(self)
    }

    pub fn closest_live(&self, key: NodeId) -> usize {
        let mut best = usize::MAX;
        for i in 0..self.nodes.len() {
            if self.alive[i]
                && (best == usize::MAX || key.closer(self.nodes[i].id(), self.nodes[best].id()))
            {
                best = i;
            }
        }
        best
    }

    /// Run `f` on node `i` at the current time, then drain it.
    pub fn on<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, Time) -> R) -> R {
        let now = self.now;
        let r = f(&mut self.nodes[i], now);
        self.drain(i);
        r
    }
}
