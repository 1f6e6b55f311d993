//! Shared helpers for the benches.
//!
//! [`Net`] is the virtual-time network of the engine's integration tests
//! (`core/tests/support/`, included here rather than copied): nodes on a
//! plane, latency proportional to distance, and a driver that always jumps
//! to the earliest of next delivery / next timeout. It exists so a bench can
//! measure a node whose routing state was built by the real join protocol
//! rather than filled in by hand.

#[path = "../../core/tests/support/mod.rs"]
mod support;

use alm_core::{Duration, Rng};
pub use support::{Net, addr, index};

impl Net {
    /// A joined overlay of `n` nodes (10 ms between joins, 40 s to settle).
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
