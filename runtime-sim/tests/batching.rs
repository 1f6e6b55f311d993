//! Batched and multi-threaded runs (`Sim::set_batching`, `Sim::set_threads`):
//! every engine still sees its inputs in time order, results do not depend
//! on the thread count, and batching changes nothing a lookup measures.

use alm_core::{Config, Duration, Key, Node, PeerAddr, Time};
use alm_sim::alm::run_pastry_alm;
use alm_sim::pastry::{PastryParams, PastryReport, run_pastry_with};
use alm_sim::topology::{Plane, TopologyKind};
use alm_sim::{Engine, EngineStats, NetConfig, NoObserver, Sim, SimChannel, SimEvent, SimTransmit};
use bytes::Bytes;

fn params(nodes: usize, lookups: usize, seed: u64, threads: usize) -> PastryParams {
    PastryParams {
        nodes,
        lookups,
        seed,
        settle: Duration::from_secs(20),
        threads,
        ..PastryParams::default()
    }
}

/// The real engine, checking that no input arrives earlier than one before
/// it: what a batch must guarantee however its events are spread.
struct InOrder {
    node: Node,
    last: Time,
}

impl InOrder {
    fn at(&mut self, now: Time) {
        assert!(
            now >= self.last,
            "an input at {now:?} after one at {:?}",
            self.last
        );
        self.last = now;
    }
}

impl Engine for InOrder {
    fn handle_datagram(&mut self, now: Time, from: PeerAddr, bytes: Bytes) {
        self.at(now);
        Engine::handle_datagram(&mut self.node, now, from, bytes);
    }
    fn handle_stream_message(&mut self, now: Time, from: PeerAddr, bytes: Bytes) {
        self.at(now);
        Engine::handle_stream_message(&mut self.node, now, from, bytes);
    }
    fn handle_peer_unreachable(&mut self, now: Time, peer: PeerAddr) {
        self.at(now);
        Engine::handle_peer_unreachable(&mut self.node, now, peer);
    }
    fn handle_timeout(&mut self, now: Time) {
        self.at(now);
        Engine::handle_timeout(&mut self.node, now);
    }
    fn join_overlay(&mut self, now: Time, bootstrap: &[PeerAddr]) {
        self.at(now);
        Engine::join_overlay(&mut self.node, now, bootstrap);
    }
    fn route(&mut self, now: Time, key: Key, payload: Bytes) {
        self.at(now);
        Engine::route(&mut self.node, now, key, payload);
    }
    fn poll_transmit(&mut self) -> Option<SimTransmit> {
        Engine::poll_transmit(&mut self.node)
    }
    fn poll_event(&mut self) -> Option<SimEvent> {
        Engine::poll_event(&mut self.node)
    }
    fn poll_timeout(&self) -> Option<Time> {
        Engine::poll_timeout(&self.node)
    }
    fn is_joined(&self) -> bool {
        Engine::is_joined(&self.node)
    }
    fn routing_table_len(&self) -> usize {
        Engine::routing_table_len(&self.node)
    }
    fn leaf_set_len(&self) -> usize {
        Engine::leaf_set_len(&self.node)
    }
    fn leaf_set_ids(&self) -> Vec<u128> {
        Engine::leaf_set_ids(&self.node)
    }
    fn stats(&self) -> EngineStats {
        Engine::stats(&self.node)
    }
}

fn run_in_order(p: &PastryParams) -> PastryReport {
    run_pastry_with(
        p,
        |id, addr, seed| InOrder {
            node: Node::new(Config::default(), id, addr, seed),
            last: Time::ZERO,
        },
        |sim| sim.set_threads(p.threads),
    )
}

fn assert_correct(r: &PastryReport) {
    let json = r.deterministic_json();
    assert_eq!(r.joined, r.nodes, "{json}");
    assert_eq!(r.correct_fraction, 1.0, "{json}");
    assert_eq!(r.delivered_fraction, 1.0, "{json}");
    assert_eq!(r.drain_violations, 0, "{json}");
    assert!(r.sim_batches > 0 && r.sim_batches < r.sim_events, "{json}");
}

#[test]
fn batches_keep_every_engines_inputs_in_time_order() {
    for (topology, threads) in [
        (TopologyKind::Plane, 1),
        (TopologyKind::Plane, 2),
        (TopologyKind::TransitStub, 3),
    ] {
        let p = PastryParams {
            topology,
            fail_fraction: 0.1,
            repair: Duration::from_secs(10),
            ..params(400, 1500, 5, threads)
        };
        let r = run_in_order(&p);
        assert_correct(&r);
        let repaired = r.after_repair.as_ref().expect("three phases");
        assert!(
            repaired.correct_fraction > 0.99,
            "{}",
            r.deterministic_json()
        );
    }
}

#[test]
fn the_report_does_not_depend_on_the_thread_count() {
    for seed in [1, 2] {
        let one = run_pastry_alm(&params(500, 2000, seed, 1));
        assert_correct(&one);
        for threads in [2, 3] {
            let many = run_pastry_alm(&params(500, 2000, seed, threads));
            assert_eq!(one.deterministic_json(), many.deterministic_json());
        }
    }
}

#[test]
fn batching_leaves_what_lookups_measure_alike() {
    let p = params(600, 3000, 3, 2);
    let batched = run_pastry_alm(&p);
    let single = run_pastry_alm(&PastryParams { batch: false, ..p });
    assert_correct(&batched);
    assert_eq!(single.sim_batches, 0);
    assert_eq!(single.correct_fraction, 1.0);
    // Same overlay up to ties at the same microsecond and the build's last
    // batch: the measures agree closely (each is a mean over 3000 lookups).
    assert!((batched.hops_mean - single.hops_mean).abs() < 0.05);
    let (a, b) = (batched.stretch_mean.unwrap(), single.stretch_mean.unwrap());
    assert!((a - b).abs() < 0.05, "stretch {a} vs {b}");
    let msgs = |r: &PastryReport| r.msgs_total as f64;
    assert!((msgs(&batched) / msgs(&single) - 1.0).abs() < 0.02);
}

/// Sends what it is given; panics on any datagram it receives.
#[derive(Default)]
struct Fragile {
    out: Vec<SimTransmit>,
}

impl Engine for Fragile {
    fn handle_datagram(&mut self, _: Time, _: PeerAddr, _: Bytes) {
        panic!("fragile engine got a datagram");
    }
    fn handle_stream_message(&mut self, _: Time, _: PeerAddr, _: Bytes) {}
    fn handle_peer_unreachable(&mut self, _: Time, _: PeerAddr) {}
    fn handle_timeout(&mut self, _: Time) {}
    fn join_overlay(&mut self, _: Time, _: &[PeerAddr]) {}
    fn route(&mut self, _: Time, _: Key, _: Bytes) {}
    fn poll_transmit(&mut self) -> Option<SimTransmit> {
        self.out.pop()
    }
    fn poll_event(&mut self) -> Option<SimEvent> {
        None
    }
    fn poll_timeout(&self) -> Option<Time> {
        None
    }
    fn is_joined(&self) -> bool {
        true
    }
    fn routing_table_len(&self) -> usize {
        0
    }
    fn leaf_set_len(&self) -> usize {
        0
    }
    fn leaf_set_ids(&self) -> Vec<u128> {
        Vec::new()
    }
    fn stats(&self) -> EngineStats {
        EngineStats::default()
    }
}

/// An engine that panics on a worker thread fails the run on the
/// simulator's thread rather than leaving it waiting for the worker.
#[test]
#[should_panic(expected = "fragile engine got a datagram")]
fn a_panic_on_a_worker_thread_reaches_the_caller() {
    let n = 200;
    let mut sim: Sim<Fragile, Plane> = Sim::new(Plane::new(n, 3), NetConfig::default(), 1);
    sim.set_threads(2);
    for i in 0..n {
        sim.start_node(i, Fragile::default());
    }
    let blast: Vec<SimTransmit> = (1..n)
        .map(|i| SimTransmit {
            to: sim.addr(i),
            channel: SimChannel::Datagram,
            kind: 0,
            bytes: Bytes::from_static(b"x"),
        })
        .collect();
    sim.call(0, &mut NoObserver, |e, _| e.out = blast);
    sim.run_until(Time(1_000_000), &mut NoObserver);
}
