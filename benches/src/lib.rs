//! Shared helpers for the benches.
//!
//! [`Net`] is a minimal virtual-time network (the pattern of
//! `core/tests/overlay.rs`): nodes on a plane, latency proportional to
//! distance, a heap of datagrams in flight, and a driver that always jumps
//! to the earliest of next delivery / next timeout. It exists so a bench can
//! measure a node whose routing state was built by the real join protocol
//! rather than filled in by hand.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use alm_core::{Config, Duration, Node, NodeId, PeerAddr, Rng, Time};
use bytes::Bytes;

/// (arrival, sequence, from, to, bytes)
type InFlight = Reverse<(Time, u64, usize, usize, Bytes)>;

/// A lossless virtual network of `Node`s.
pub struct Net {
    pub nodes: Vec<Node>,
    pos: Vec<(f64, f64)>,
    queue: BinaryHeap<InFlight>,
    seq: u64,
    pub now: Time,
    rng: Rng,
}

/// The address of node `i`: 10.x.y.z:4000.
pub fn addr(i: usize) -> PeerAddr {
    PeerAddr::v4(10, (i >> 16) as u8, (i >> 8) as u8, i as u8, 4000)
}

/// Inverse of [`addr`]; `usize::MAX` for anything else.
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
    /// `n` unjoined nodes with random ids and positions, all from `seed`.
    pub fn new(n: usize, seed: u64) -> Net {
        let mut rng = Rng::new(seed);
        let mut nodes = Vec::with_capacity(n);
        let mut pos = Vec::with_capacity(n);
        for i in 0..n {
            let id = NodeId(rng.next_u128());
            nodes.push(Node::new(Config::default(), id, addr(i), rng.next_u64()));
            pos.push((rng.unit_f64() * 1000.0, rng.unit_f64() * 1000.0));
        }
        Net {
            nodes,
            pos,
            queue: BinaryHeap::new(),
            seq: 0,
            now: Time::ZERO,
            rng,
        }
    }

    /// One-way latency: 100 µs per unit of distance on a 1000 × 1000 plane
    /// (so up to ~140 ms), plus 100 µs.
    pub fn latency(&self, a: usize, b: usize) -> Duration {
        let (x1, y1) = self.pos[a];
        let (x2, y2) = self.pos[b];
        let d = ((x1 - x2).powi(2) + (y1 - y2).powi(2)).sqrt();
        Duration::from_micros((d * 100.0) as u64 + 100)
    }

    fn drain(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].poll_transmit() {
            let to = index(t.to);
            if to >= self.nodes.len() {
                continue;
            }
            let at = self.now + self.latency(i, to);
            self.seq += 1;
            self.queue
                .push(Reverse((at, self.seq, i, to, t.into_bytes())));
        }
        while self.nodes[i].poll_event().is_some() {}
    }

    fn next_timer(&self) -> Option<(Time, usize)> {
        (0..self.nodes.len())
            .filter_map(|i| self.nodes[i].poll_timeout().map(|t| (t, i)))
            .min()
    }

    /// Deliver messages and fire timers in time order until `until`.
    pub fn run_until(&mut self, until: Time) {
        loop {
            let t_msg = self
                .queue
                .peek()
                .map(|Reverse((t, ..))| *t)
                .unwrap_or(Time::NEVER);
            let next_tmr = self.next_timer();
            let t_tmr = next_tmr.map(|(t, _)| t).unwrap_or(Time::NEVER);
            let t = t_msg.min(t_tmr);
            if t > until {
                self.now = until;
                return;
            }
            self.now = t;
            if t_msg <= t_tmr {
                let Some(Reverse((_, _, from, to, bytes))) = self.queue.pop() else {
                    unreachable!("t_msg came from a queued message")
                };
                self.nodes[to].handle_datagram(t, addr(from), bytes);
                self.drain(to);
            } else if let Some((_, i)) = next_tmr {
                self.nodes[i].handle_timeout(t);
                self.drain(i);
            }
        }
    }

    /// Join every node, one every `spacing`, each through the nearest of a
    /// few already joined nodes (Pastry §2.5 assumes a nearby contact), then
    /// let the overlay settle for 40 s of virtual time.
    ///
    /// # Panics
    /// If a node has not joined by then: a bench on a broken overlay would
    /// measure nothing useful.
    pub fn join_all(&mut self, spacing: Duration) {
        self.nodes[0].join_overlay(self.now, &[]);
        self.drain(0);
        for i in 1..self.nodes.len() {
            let until = self.now + spacing;
            self.run_until(until);
            let mut best = 0;
            for _ in 0..8 {
                let c = self.rng.index(i);
                if self.nodes[c].is_joined() && self.latency(i, c) < self.latency(i, best) {
                    best = c;
                }
            }
            let now = self.now;
            self.nodes[i].join_overlay(now, &[addr(best)]);
            self.drain(i);
        }
        let until = self.now + Duration::from_secs(40);
        self.run_until(until);
        for (i, n) in self.nodes.iter().enumerate() {
            assert!(n.is_joined(), "node {i} did not join");
        }
    }

    /// A joined overlay of `n` nodes (10 ms between joins).
    pub fn overlay(n: usize, seed: u64) -> Net {
        let mut net = Net::new(n, seed);
        net.join_all(Duration::from_millis(10));
        net
    }

    /// The rng the network was built with, for picking keys.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }
}
