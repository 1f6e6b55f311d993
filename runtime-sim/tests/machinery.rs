//! The simulator's machinery, tested with small hand-made engines: timing,
//! channels, loss, crashes, partitions, uplink serialisation, timers, the
//! drain check and determinism.

use alm_core::{Duration, Key, NodeId, PeerAddr, Time};
use alm_sim::addr::{addr_of, index_of, unknown_addr};
use alm_sim::fake::{Directory, FakeEngine};
use alm_sim::pastry::{PastryParams, run_pastry};
use alm_sim::topology::{Plane, Topology, TopologyKind};
use alm_sim::{
    Action, Engine, EngineStats, NetConfig, NoObserver, Observer, Sim, SimChannel, SimEvent,
    SimTransmit,
};
use bytes::Bytes;
use std::collections::VecDeque;

/// Records what it receives; sends what the test queues with `say`.
#[derive(Default)]
struct Probe {
    out: VecDeque<SimTransmit>,
    got: Vec<(Time, usize, Bytes, SimChannel)>,
    unreachable: Vec<(Time, usize)>,
    timeouts: Vec<Time>,
    /// Deadlines to hand out, earliest first.
    deadlines: VecDeque<Time>,
    /// Misbehaviour: after the first drain, produce one more transmit.
    late_transmit: Option<SimTransmit>,
    polled_none: bool,
    /// Misbehaviour: keep asking for the same deadline after it fired.
    sticky_deadline: Option<Time>,
}

impl Probe {
    fn say(&mut self, to: usize, channel: SimChannel, bytes: &'static [u8]) {
        self.out.push_back(SimTransmit {
            to: addr_of(to),
            channel,
            kind: 0,
            bytes: Bytes::from_static(bytes),
        });
    }
}

impl Engine for Probe {
    fn handle_datagram(&mut self, now: Time, from: PeerAddr, bytes: Bytes) {
        self.polled_none = false;
        let from = index_of(from).unwrap();
        self.got.push((now, from, bytes, SimChannel::Datagram));
    }
    fn handle_stream_message(&mut self, now: Time, from: PeerAddr, bytes: Bytes) {
        self.polled_none = false;
        let from = index_of(from).unwrap();
        self.got.push((now, from, bytes, SimChannel::Stream));
    }
    fn handle_peer_unreachable(&mut self, now: Time, peer: PeerAddr) {
        self.unreachable.push((now, index_of(peer).unwrap()));
    }
    fn handle_timeout(&mut self, now: Time) {
        self.timeouts.push(now);
        while self.deadlines.front().is_some_and(|&d| d <= now) {
            self.deadlines.pop_front();
        }
    }
    fn join_overlay(&mut self, _now: Time, _bootstrap: &[PeerAddr]) {}
    fn route(&mut self, _now: Time, _key: Key, _payload: Bytes) {}
    fn poll_transmit(&mut self) -> Option<SimTransmit> {
        match self.out.pop_front() {
            Some(t) => Some(t),
            None if !self.polled_none => {
                self.polled_none = true;
                None
            }
            None => self.late_transmit.take(),
        }
    }
    fn poll_event(&mut self) -> Option<SimEvent> {
        None
    }
    fn poll_timeout(&self) -> Option<Time> {
        self.sticky_deadline.or(self.deadlines.front().copied())
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

fn probes(n: usize, cfg: NetConfig) -> Sim<Probe, Plane> {
    let mut sim = Sim::new(Plane::new(n, 42), cfg, 7);
    for i in 0..n {
        sim.start_node(i, Probe::default());
    }
    sim
}

fn lenient() -> NetConfig {
    NetConfig {
        strict_drain: false,
        ..NetConfig::default()
    }
}

/// Queue messages on node `i` and let the simulator drain them.
fn send(sim: &mut Sim<Probe, Plane>, i: usize, to: usize, ch: SimChannel, b: &'static [u8]) {
    sim.call(i, &mut NoObserver, |e, _| e.say(to, ch, b));
}

#[test]
fn datagrams_arrive_after_the_topology_latency() {
    let mut sim = probes(3, NetConfig::default());
    let lat = sim.topology().latency(0, 2);
    send(&mut sim, 0, 2, SimChannel::Datagram, b"hi");
    sim.run_until(Time(10_000_000), &mut NoObserver);
    let got = &sim.engine(2).unwrap().got;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, Time::ZERO + lat);
    assert_eq!(got[0].1, 0);
    assert_eq!(&got[0].2[..], b"hi");
    assert_eq!(sim.now(), Time(10_000_000));
}

#[test]
fn equal_time_messages_keep_send_order() {
    let mut sim = probes(2, NetConfig::default());
    for b in [&b"a"[..], b"b", b"c", b"d"] {
        let b: &'static [u8] = b;
        send(&mut sim, 0, 1, SimChannel::Datagram, b);
    }
    sim.run_for(Duration::from_secs(1), &mut NoObserver);
    let order: Vec<&[u8]> = sim
        .engine(1)
        .unwrap()
        .got
        .iter()
        .map(|g| &g.2[..])
        .collect();
    assert_eq!(order, vec![&b"a"[..], b"b", b"c", b"d"]);
}

#[test]
fn loss_drops_about_the_configured_fraction_and_only_datagrams() {
    let cfg = NetConfig {
        loss: 0.3,
        ..NetConfig::default()
    };
    let mut sim = probes(2, cfg);
    for _ in 0..2000 {
        send(&mut sim, 0, 1, SimChannel::Datagram, b"d");
        send(&mut sim, 0, 1, SimChannel::Stream, b"s");
    }
    sim.run_for(Duration::from_secs(1), &mut NoObserver);
    let got = &sim.engine(1).unwrap().got;
    let d = got.iter().filter(|g| g.3 == SimChannel::Datagram).count();
    let s = got.iter().filter(|g| g.3 == SimChannel::Stream).count();
    assert_eq!(s, 2000, "streams are reliable");
    assert!(
        (1250..1550).contains(&d),
        "{d} of 2000 datagrams survived 30% loss"
    );
    assert_eq!(sim.stats().dropped_loss, 2000 - d as u64);
}

#[test]
fn crashed_nodes_are_silent_and_streams_to_them_fail() {
    let mut sim = probes(3, NetConfig::default());
    sim.crash(1);
    send(&mut sim, 0, 1, SimChannel::Datagram, b"x");
    send(&mut sim, 0, 1, SimChannel::Stream, b"y");
    // A crashed node cannot be called into.
    send(&mut sim, 1, 2, SimChannel::Datagram, b"z");
    sim.run_for(Duration::from_secs(5), &mut NoObserver);
    assert!(sim.engine(1).unwrap().got.is_empty());
    assert!(sim.engine(2).unwrap().got.is_empty());
    let u = &sim.engine(0).unwrap().unreachable;
    assert_eq!(u.len(), 1, "only the stream reports the dead peer");
    assert_eq!(u[0].1, 1);
    let expect = Time::ZERO + sim.topology().latency(0, 1) + sim.config().stream_fail_after;
    assert_eq!(u[0].0, expect);
}

#[test]
fn partitions_cut_both_ways_until_healed() {
    let mut sim = probes(4, NetConfig::default());
    let k = sim.add_partition(&[2, 3]);
    sim.schedule(Time(1_000), Action::Partition(k));
    sim.schedule(Time(2_000_000), Action::Heal);
    sim.run_until(Time(10_000), &mut NoObserver);
    send(&mut sim, 0, 2, SimChannel::Datagram, b"cut");
    send(&mut sim, 3, 1, SimChannel::Datagram, b"cut");
    send(&mut sim, 0, 1, SimChannel::Datagram, b"same side");
    send(&mut sim, 2, 3, SimChannel::Datagram, b"same side");
    sim.run_until(Time(3_000_000), &mut NoObserver);
    send(&mut sim, 0, 2, SimChannel::Datagram, b"healed");
    sim.run_for(Duration::from_secs(1), &mut NoObserver);
    let bodies = |i: usize| -> Vec<Vec<u8>> {
        sim.engine(i)
            .unwrap()
            .got
            .iter()
            .map(|g| g.2.to_vec())
            .collect()
    };
    assert_eq!(bodies(1), vec![b"same side".to_vec()]);
    assert_eq!(bodies(3), vec![b"same side".to_vec()]);
    assert_eq!(bodies(2), vec![b"healed".to_vec()]);
    assert_eq!(sim.stats().dropped_partition, 2);
}

#[test]
fn uplink_serialises_streams_in_order() {
    let cfg = NetConfig {
        uplink_bps: Some(8_000_000), // 1 byte per µs
        ..NetConfig::default()
    };
    let mut sim = probes(2, cfg);
    const KB: &[u8] = &[7u8; 1000];
    sim.call(0, &mut NoObserver, |e, _| {
        for _ in 0..3 {
            e.say(1, SimChannel::Stream, KB);
        }
        e.say(1, SimChannel::Datagram, b"dgram");
    });
    sim.run_for(Duration::from_secs(1), &mut NoObserver);
    let lat = sim.topology().latency(0, 1).0;
    let got = &sim.engine(1).unwrap().got;
    let times: Vec<(u64, SimChannel)> = got.iter().map(|g| (g.0.0, g.3)).collect();
    assert_eq!(
        times,
        vec![
            (lat, SimChannel::Datagram), // datagrams are not serialised
            (lat + 1000, SimChannel::Stream),
            (lat + 2000, SimChannel::Stream),
            (lat + 3000, SimChannel::Stream),
        ]
    );
}

#[test]
fn timers_fire_at_their_deadline_and_stale_ones_are_skipped() {
    let mut sim = probes(1, NetConfig::default());
    sim.call(0, &mut NoObserver, |e, _| {
        e.deadlines.extend([Time(500), Time(900)]);
    });
    // Move the first deadline earlier, then later again: only due deadlines fire.
    sim.call(0, &mut NoObserver, |e, _| e.deadlines.push_front(Time(100)));
    sim.run_until(Time(1_000), &mut NoObserver);
    assert_eq!(
        sim.engine(0).unwrap().timeouts,
        vec![Time(100), Time(500), Time(900)]
    );
    // A crashed node's timers stop.
    sim.call(0, &mut NoObserver, |e, _| {
        e.deadlines.push_back(Time(2_000))
    });
    sim.crash(0);
    sim.run_until(Time(5_000), &mut NoObserver);
    assert_eq!(sim.engine(0).unwrap().timeouts.len(), 3);
}

#[test]
fn a_deadline_that_never_advances_is_counted_not_spun_on() {
    let mut sim = probes(1, lenient());
    sim.call(0, &mut NoObserver, |e, _| {
        e.sticky_deadline = Some(Time(10))
    });
    sim.run_until(Time(20), &mut NoObserver);
    // Fired at 10, then once per µs after that: bounded, and counted.
    let fired = sim.engine(0).unwrap().timeouts.len() as u64;
    assert_eq!(fired, 11);
    assert_eq!(sim.stats().timer_violations, fired);
}

#[test]
fn drain_violations_are_counted() {
    let mut sim = probes(2, lenient());
    sim.call(0, &mut NoObserver, |e, _| {
        e.late_transmit = Some(SimTransmit {
            to: addr_of(1),
            channel: SimChannel::Datagram,
            kind: 0,
            bytes: Bytes::from_static(b"late"),
        });
    });
    assert_eq!(sim.stats().drain_violations, 1);
    sim.run_for(Duration::from_secs(1), &mut NoObserver);
    // The late transmit is still delivered.
    assert_eq!(sim.engine(1).unwrap().got.len(), 1);
}

#[test]
#[should_panic(expected = "drain violation")]
fn drain_violations_panic_when_strict() {
    let cfg = NetConfig {
        strict_drain: true,
        ..NetConfig::default()
    };
    let mut sim = probes(2, cfg);
    sim.call(0, &mut NoObserver, |e, _| {
        e.late_transmit = Some(SimTransmit {
            to: addr_of(1),
            channel: SimChannel::Datagram,
            kind: 0,
            bytes: Bytes::from_static(b"late"),
        });
    });
}

#[test]
fn unknown_destinations_are_dropped_and_counted() {
    let mut sim = probes(1, NetConfig::default());
    sim.call(0, &mut NoObserver, |e, _| {
        e.out.push_back(SimTransmit {
            to: unknown_addr(),
            channel: SimChannel::Datagram,
            kind: 0,
            bytes: Bytes::new(),
        });
        e.out.push_back(SimTransmit {
            to: addr_of(5), // beyond the 1-node topology
            channel: SimChannel::Datagram,
            kind: 0,
            bytes: Bytes::new(),
        });
    });
    assert_eq!(sim.stats().dropped_unknown, 2);
}

/// Collects engine events.
#[derive(Default)]
struct Log(Vec<(Time, usize, String)>);
impl<E: Engine, T: Topology> Observer<E, T> for Log {
    fn on_event(&mut self, now: Time, node: usize, event: SimEvent) {
        self.0.push((now, node, format!("{event:?}")));
    }
}

#[test]
fn fake_overlay_joins_ticks_and_routes() {
    let dir = Directory::shared();
    let mut sim = Sim::new(Plane::new(3, 1), NetConfig::default(), 1);
    for i in 0..3 {
        sim.start_node(
            i,
            FakeEngine::new(NodeId(i as u128 * 1000), addr_of(i), dir.clone()),
        );
    }
    let mut log = Log::default();
    sim.join(0, &[], &mut log);
    sim.schedule(
        Time(1_000),
        Action::Join {
            node: 1,
            bootstrap: Some(0),
        },
    );
    sim.schedule(
        Time(1_000),
        Action::Join {
            node: 2,
            bootstrap: Some(0),
        },
    );
    sim.run_until(Time(2_000_000), &mut log);
    let joined: Vec<usize> = log
        .0
        .iter()
        .filter(|e| e.2 == "Joined")
        .map(|e| e.1)
        .collect();
    assert_eq!(joined.len(), 3);
    // Node 0 joined at 0: heartbeats at 0.5, 1.0, 1.5, 2.0 s.
    assert_eq!(sim.engine(0).unwrap().ticks(), 4);
    sim.route(2, NodeId(1100), Bytes::from_static(b"k"), &mut log);
    sim.run_for(Duration::from_secs(1), &mut log);
    let last = log.0.last().unwrap();
    assert_eq!(last.1, 1, "key 1100 is closest to node id 1000");
    assert!(last.2.contains("Delivered"));
}

fn fake_params(seed: u64) -> PastryParams {
    PastryParams {
        nodes: 300,
        lookups: 3000,
        seed,
        settle: Duration::from_secs(2),
        ..PastryParams::default()
    }
}

fn fake_run(p: &PastryParams) -> alm_sim::pastry::PastryReport {
    let dir = Directory::shared();
    run_pastry(p, |id, addr, _| FakeEngine::new(id, addr, dir.clone()))
}

#[test]
fn pastry_experiment_is_deterministic_and_measures_the_fake_correctly() {
    let a = fake_run(&fake_params(9));
    let b = fake_run(&fake_params(9));
    assert_eq!(a.deterministic_json(), b.deterministic_json());
    assert_ne!(
        a.deterministic_json(),
        fake_run(&fake_params(10)).deterministic_json()
    );
    assert_eq!(a.joined, 300);
    assert_eq!(a.correct_fraction, 1.0);
    assert_eq!(a.delivered_fraction, 1.0);
    assert!((a.hops_hist.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert!(a.hops_max <= 1);
    // One hop straight to the deliverer: stretch is exactly 1.
    assert!((a.stretch_mean.unwrap() - 1.0).abs() < 1e-9);
    assert_eq!(a.drain_violations, 0);
}

#[test]
fn pastry_experiment_on_transit_stub_with_failures_reports_three_phases() {
    let p = PastryParams {
        topology: TopologyKind::TransitStub,
        fail_fraction: 0.2,
        repair: Duration::from_secs(5),
        lookup_timeout: Duration::from_secs(2),
        ..fake_params(3)
    };
    let r = fake_run(&p);
    assert_eq!(r.failed_nodes, Some(60));
    let (before, failed, repaired) = (
        r.before.as_ref().unwrap(),
        r.after_failure.as_ref().unwrap(),
        r.after_repair.as_ref().unwrap(),
    );
    assert_eq!(before.correct_fraction, 1.0);
    assert_eq!(failed.live_nodes, 240);
    // The oracle never learns about crashes: about a fifth of lookups go
    // to dead roots, and they stay lost after "repair".
    assert!(failed.delivered_fraction < 0.9 && failed.delivered_fraction > 0.7);
    assert!(repaired.delivered_fraction < 0.9);
    let json = serde_json::to_string(&r).unwrap();
    for field in [
        "\"before\"",
        "\"after_failure\"",
        "\"after_repair\"",
        "\"topology\":\"transit-stub\"",
    ] {
        assert!(json.contains(field), "{field} missing");
    }
}
