//! The real engine (`alm_core::Node`) in the simulator: small overlays built
//! by joins must deliver every lookup at the live node numerically closest to
//! its key, reproducibly, and recover after crashes.

use alm_core::Duration;
use alm_sim::alm::run_pastry_alm;
use alm_sim::pastry::{PastryParams, PastryReport};
use alm_sim::topology::TopologyKind;

fn params(nodes: usize, lookups: usize, seed: u64) -> PastryParams {
    PastryParams {
        nodes,
        lookups,
        seed,
        settle: Duration::from_secs(30),
        ..PastryParams::default()
    }
}

fn assert_perfect(r: &PastryReport) {
    let json = serde_json::to_string(r).unwrap();
    assert_eq!(r.joined, r.nodes, "{json}");
    assert_eq!(r.delivered_fraction, 1.0, "{json}");
    assert_eq!(r.correct_fraction, 1.0, "{json}");
    assert_eq!(r.drain_violations, 0, "{json}");
    assert_eq!(r.decode_errors, 0, "{json}");
    assert!(
        (r.hops_hist.iter().sum::<f64>() - 1.0).abs() < 1e-9,
        "{json}"
    );
}

#[test]
fn one_node_delivers_everything_to_itself() {
    let r = run_pastry_alm(&params(1, 200, 1));
    assert_perfect(&r);
    assert_eq!(r.hops_max, 0);
    assert_eq!(r.stretch_mean, None, "no lookup leaves its source");
}

#[test]
fn two_and_three_nodes_are_correct() {
    for n in [2, 3] {
        for seed in 1..=3 {
            let r = run_pastry_alm(&params(n, 300, seed));
            assert_perfect(&r);
            assert!(r.hops_max <= 1, "n={n}: {} hops", r.hops_max);
        }
    }
}

#[test]
fn ten_nodes_are_correct() {
    // Fewer nodes than a leaf set: every node knows every other.
    for seed in 1..=3 {
        assert_perfect(&run_pastry_alm(&params(10, 2000, seed)));
    }
}

#[test]
fn fifty_nodes_are_correct_on_both_topologies() {
    assert_perfect(&run_pastry_alm(&params(50, 2000, 1)));
    let p = PastryParams {
        topology: TopologyKind::TransitStub,
        ..params(50, 2000, 2)
    };
    assert_perfect(&run_pastry_alm(&p));
}

#[test]
fn five_hundred_nodes_are_correct_with_log_hops() {
    let r = run_pastry_alm(&params(500, 3000, 1));
    assert_perfect(&r);
    // log_16(500) ≈ 2.24: Pastry's expected route length.
    assert!(r.hops_mean < 3.0, "hops_mean {}", r.hops_mean);
    assert!(
        r.leaf_set_exact_fraction == 1.0,
        "leaf sets {}",
        r.leaf_set_exact_fraction
    );
}

#[test]
fn same_seed_same_report() {
    let p = PastryParams {
        topology: TopologyKind::TransitStub,
        fail_fraction: 0.1,
        repair: Duration::from_secs(20),
        ..params(60, 500, 4)
    };
    let a = run_pastry_alm(&p);
    let b = run_pastry_alm(&p);
    assert_eq!(a.deterministic_json(), b.deterministic_json());
    let c = run_pastry_alm(&PastryParams { seed: 5, ..p });
    assert_ne!(a.deterministic_json(), c.deterministic_json());
}

#[test]
fn recovers_after_ten_percent_crash() {
    let p = PastryParams {
        fail_fraction: 0.1,
        ..params(500, 3000, 7)
    };
    let r = run_pastry_alm(&p);
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(r.failed_nodes, Some(50));
    let repaired = r.after_repair.as_ref().unwrap();
    assert!(repaired.correct_fraction >= 0.999, "{json}");
    assert!(repaired.delivered_fraction >= 0.999, "{json}");
    // Right after the crash lookups are rerouted, not lost.
    let failed = r.after_failure.as_ref().unwrap();
    assert!(failed.delivered_fraction >= 0.99, "{json}");
}

/// The scale target, in release only: `cargo test --release -- --ignored`.
#[test]
#[ignore]
fn ten_thousand_nodes_are_correct() {
    let r = run_pastry_alm(&params(10_000, 20_000, 1));
    assert_perfect(&r);
    assert!(r.hops_mean < 4.0, "hops_mean {}", r.hops_mean);
}

/// With 3 % of datagrams lost, a lookup whose last hop (or its ack) is lost
/// must still end at the key's root, not at the root's neighbour: a root
/// that answers its probe is sent the message again rather than routed
/// around. (Rerouting at once, before `5126be0`, sent 47 of these 8000
/// lookups to the wrong node; now 2.) And it must arrive there once: 581
/// duplicates with copies not dropped by message id, 1 now.
#[test]
fn lookups_under_loss_reach_the_root_once() {
    let (mut wrong, mut dups, mut total) = (0, 0, 0);
    for seed in 1..=2 {
        let mut p = params(400, 4000, seed);
        p.net.loss = 0.03;
        let r = run_pastry_alm(&p);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(r.joined, r.nodes, "{json}");
        assert_eq!(r.delivered_fraction, 1.0, "{json}");
        wrong += ((1.0 - r.correct_fraction) * r.lookups as f64).round() as usize;
        dups += r.duplicate_deliveries as usize;
        total += r.lookups;
    }
    assert!(
        wrong <= total / 500,
        "{wrong} of {total} lookups reached the wrong node"
    );
    // A lost ack makes the sender resend or reroute; the copy must stop
    // where the first one passed.
    assert!(
        dups <= total / 500,
        "{dups} duplicate deliveries for {total} lookups"
    );
}
