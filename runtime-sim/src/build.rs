//! Building an overlay by joins, shared by the experiments (`pastry`,
//! `scribe`, `mgmt`).
//!
//! State owned here: the ids and engine seeds of every host slot, the
//! bootstrap-sampling RNG, and who has joined or given up. A new node joins
//! through the closest (by latency) of `bootstrap_samples` randomly sampled
//! live joined nodes; the first node starts the overlay. The scenario that
//! owns a [`Joiner`] starts the engine ([`Joiner::launch`]), calls
//! `Sim::join` with the returned bootstrap (it is the observer), and feeds
//! every engine event to [`Joiner::on_event`].

use crate::addr::addr_of;
use crate::engine::{Engine, SimEvent};
use crate::sim::Sim;
use crate::topology::Topology;
use alm_core::{Duration, NodeId, PeerAddr, Rng, Time};

pub const PENDING: u8 = 0;
pub const JOINED: u8 = 1;
pub const FAILED: u8 = 2;

/// Join bookkeeping for a set of host slots.
pub struct Joiner {
    pub ids: Vec<u128>,
    pub seeds: Vec<u64>,
    rng: Rng,
    bootstrap_samples: usize,
    /// Nodes that joined, in join order (crashed ones included).
    pub joined: Vec<u32>,
    /// `PENDING`, `JOINED` or `FAILED` per slot.
    pub state: Vec<u8>,
    pub failed: usize,
    /// Time of the latest `Joined` event.
    pub last_joined_at: Time,
}

impl Joiner {
    pub fn new(ids: Vec<u128>, seeds: Vec<u64>, rng: Rng, bootstrap_samples: usize) -> Self {
        let n = ids.len();
        Joiner {
            ids,
            seeds,
            rng,
            bootstrap_samples: bootstrap_samples.max(1),
            joined: Vec::with_capacity(n),
            state: vec![PENDING; n],
            failed: 0,
            last_joined_at: Time::ZERO,
        }
    }

    /// Slots `0..upto` have all joined or failed.
    pub fn done(&self, upto: usize) -> bool {
        self.joined.len() + self.failed >= upto
    }

    /// Start node `k`'s engine (built by `make(id, addr, seed)`) and choose
    /// its bootstrap: `None` for the first node of the overlay, else the
    /// closest of the sampled live joined nodes (node 0 while none has
    /// joined yet). The caller then calls `sim.join`.
    pub fn launch<E, T, F>(&mut self, sim: &mut Sim<E, T>, k: usize, make: &mut F) -> Option<usize>
    where
        E: Engine,
        T: Topology,
        F: FnMut(NodeId, PeerAddr, u64) -> E,
    {
        let engine = make(NodeId(self.ids[k]), addr_of(k), self.seeds[k]);
        sim.start_node(k, engine);
        if self.joined.is_empty() {
            return (k != 0).then_some(0);
        }
        let mut best: Option<(Duration, usize)> = None;
        for _ in 0..self.bootstrap_samples {
            let c = self.joined[self.rng.index(self.joined.len())] as usize;
            if !sim.is_alive(c) {
                continue;
            }
            let d = sim.topology().latency(k, c);
            if best.is_none_or(|(bd, bc)| (d, c) < (bd, bc)) {
                best = Some((d, c));
            }
        }
        if best.is_none() {
            // Every sample was dead: the first live joined node.
            return self
                .joined
                .iter()
                .map(|&c| c as usize)
                .find(|&c| sim.is_alive(c));
        }
        best.map(|(_, c)| c)
    }

    /// Account for `Joined` / `JoinFailed`; returns whether `node` has just
    /// joined.
    pub fn on_event(&mut self, now: Time, node: usize, event: &SimEvent) -> bool {
        match event {
            SimEvent::Joined if self.state[node] != JOINED => {
                if self.state[node] == FAILED {
                    // A late success after giving up (the engine retried).
                    self.failed -= 1;
                }
                self.state[node] = JOINED;
                self.joined.push(node as u32);
                self.last_joined_at = now;
                true
            }
            SimEvent::JoinFailed if self.state[node] == PENDING => {
                self.state[node] = FAILED;
                self.failed += 1;
                false
            }
            _ => false,
        }
    }
}

/// Interval schedule: the k-th item of a rate-`rate` stream, in µs after start.
pub fn offset_us(k: usize, rate: f64) -> u64 {
    (k as f64 * 1e6 / rate).round() as u64
}

/// `n` distinct random 128-bit ids.
pub fn unique_ids(n: usize, rng: &mut Rng) -> Vec<u128> {
    let mut ids: Vec<u128> = (0..n).map(|_| rng.next_u128()).collect();
    loop {
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        let dup = sorted.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]);
        match dup {
            None => return ids,
            Some(d) => {
                // Re-draw the later copy; astronomically rare.
                let pos = ids.iter().rposition(|&x| x == d).unwrap_or(0);
                ids[pos] = rng.next_u128();
            }
        }
    }
}

/// Peak resident set size of this process in MiB (VmHWM), 0 if unknown.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A phase timing line on stderr when `on`.
pub fn progress(on: bool, wall: &std::time::Instant, now: Time, what: &str) {
    if on {
        eprintln!(
            "[{:>8.2}s wall | {:>9.3}s sim] {what}",
            wall.elapsed().as_secs_f64(),
            now.0 as f64 / 1e6
        );
    }
}

/// The `q` quantile (0..=1) of sorted `v` (nearest rank), 0 when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Seconds as a simulator duration.
pub fn secs(s: f64) -> Duration {
    Duration((s.max(0.0) * 1e6).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_ids_are_unique_and_seeded() {
        let a = unique_ids(1000, &mut Rng::new(3));
        let b = unique_ids(1000, &mut Rng::new(3));
        assert_eq!(a, b);
        let mut s = a.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 1000);
    }

    #[test]
    fn quantiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 5.0);
        assert_eq!(quantile(&v, 0.9), 9.0);
        assert_eq!(quantile(&v, 0.99), 10.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
