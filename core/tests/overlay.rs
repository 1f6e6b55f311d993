#![allow(clippy::needless_range_loop)] // node numbers index several parallel vectors
//! Small overlays driven by the tiny virtual-time network of `support/`:
//! every step jumps to the earliest of next delivery / next timeout, so the
//! tests run in milliseconds of wall time.

use alm_core::{Config, Duration, Event, NodeId};
use bytes::Bytes;

mod support;
use support::*;

impl Net {
    /// Issue `n` lookups from random live nodes; returns (correct, delivered, hops sum).
    fn lookups(&mut self, n: usize) -> (usize, usize, usize) {
        self.events.clear();
        let mut keys = Vec::new();
        for k in 0..n {
            let mut src = self.rng.index(self.nodes.len());
            while !self.alive[src] {
                src = self.rng.index(self.nodes.len());
            }
            let key = NodeId(self.rng.next_u128());
            keys.push(key);
            let now = self.now;
            self.nodes[src]
                .route(now, key, Bytes::copy_from_slice(&(k as u64).to_be_bytes()))
                .unwrap();
            self.drain(src);
            let until = self.now + Duration::from_millis(2);
            self.run_until(until);
        }
        let until = self.now + Duration::from_secs(30);
        self.run_until(until);
        let (mut correct, mut delivered, mut hops) = (0, 0, 0);
        let mut seen = vec![false; n];
        for (_, at, e) in &self.events {
            if let Event::Delivered {
                payload, hops: h, ..
            } = e
            {
                let k = u64::from_be_bytes(payload[..8].try_into().unwrap()) as usize;
                // Per-hop retries make delivery at-least-once when an ack is
                // lost; count each lookup once.
                if std::mem::replace(&mut seen[k], true) {
                    assert!(
                        self.loss > 0.0,
                        "lookup {k} delivered twice on a lossless network"
                    );
                    continue;
                }
                delivered += 1;
                hops += usize::from(*h);
                if *at == self.closest_live(keys[k]) {
                    correct += 1;
                }
            }
        }
        (correct, delivered, hops)
    }
}

#[test]
fn single_node_delivers_everything_to_itself() {
    let mut net = Net::new(1, 1);
    net.join_all(Duration::from_millis(10));
    let (correct, delivered, hops) = net.lookups(20);
    assert_eq!((correct, delivered, hops), (20, 20, 0));
}

#[test]
fn two_and_three_node_rings_are_correct() {
    for n in [2, 3] {
        let mut net = Net::new(n, 7 + n as u64);
        net.join_all(Duration::from_millis(50));
        for node in &net.nodes {
            assert_eq!(node.leaf_set().len(), n - 1);
        }
        let (correct, delivered, _) = net.lookups(100);
        assert_eq!((correct, delivered), (100, 100), "n = {n}");
    }
}

#[test]
fn hundred_node_overlay_routes_correctly_in_few_hops() {
    let mut net = Net::new(100, 3);
    net.join_all(Duration::from_millis(20));
    let (correct, delivered, hops) = net.lookups(500);
    assert_eq!(delivered, 500);
    assert_eq!(correct, 500);
    let mean = hops as f64 / 500.0;
    // log16(100) = 1.66
    assert!(mean < 2.2, "mean hops {mean}");
}

#[test]
fn concurrent_joins_converge() {
    // All 60 nodes join within 60 ms of each other.
    let mut net = Net::new(60, 11);
    net.join_all(Duration::from_millis(1));
    let (correct, delivered, _) = net.lookups(300);
    assert_eq!((correct, delivered), (300, 300));
}

#[test]
fn recovers_from_crashes() {
    let mut net = Net::new(150, 5);
    net.join_all(Duration::from_millis(10));
    // Crash 15 nodes silently.
    for k in 0..15 {
        let i = 1 + (k * 9) % 149;
        net.alive[i] = false;
    }
    let (_, delivered_now, _) = net.lookups(200);
    assert!(
        delivered_now >= 190,
        "reroutes keep lookups alive: {delivered_now}"
    );
    let until = net.now + Duration::from_secs(60);
    net.run_until(until);
    for (i, n) in net.nodes.iter().enumerate() {
        if net.alive[i] {
            for l in n.leaf_set() {
                assert!(net.alive[index(l.addr)], "node {i} still has a dead leaf");
            }
        }
    }
    let (correct, delivered, _) = net.lookups(300);
    assert_eq!((correct, delivered), (300, 300));
}

#[test]
fn lossy_links_still_deliver() {
    // Over several overlays: one seed alone swings by a few lookups when
    // any protocol detail changes the order of events (over 39 seeds, 99.1 %
    // of lookups reach the right node right after the build at 5 % loss).
    let (mut correct, mut delivered) = (0, 0);
    for seed in [9, 10, 11, 12, 13] {
        let mut net = Net::new(80, seed);
        net.join_all(Duration::from_millis(20));
        net.loss = 0.05;
        let (c, d, _) = net.lookups(200);
        correct += c;
        delivered += d;
    }
    assert!(delivered >= 980, "delivered {delivered} of 1000");
    assert!(
        correct + 20 >= delivered,
        "correct {correct} of {delivered}"
    );
}

#[test]
fn same_seed_same_run() {
    let run = || {
        let mut net = Net::new(40, 21);
        net.join_all(Duration::from_millis(5));
        let r = net.lookups(50);
        let stats: Vec<_> = net.nodes.iter().map(|n| n.stats().clone()).collect();
        (r, stats, net.seq)
    };
    assert_eq!(run(), run());
}

// ----- Scribe -------------------------------------------------------------

/// The bytes of an Announce from `from`, a node that need not exist,
/// claiming an RTT of `rtt_hint_us` µs: what a random datagram sometimes
/// parses as.
fn forged_announce(from: NodeId, rtt_hint_us: u32) -> Bytes {
    use alm_core::wire::{MsgType, emit_header};
    use bytes::BufMut;
    let mut b = Vec::new();
    emit_header(&mut b, MsgType::Announce as u8, from);
    b.put_u32(rtt_hint_us);
    Bytes::from(b)
}

/// Payload `k` of a numbered stream, and back.
fn numbered(k: usize) -> Bytes {
    Bytes::from((k as u32).to_be_bytes().to_vec())
}

fn number_of(payload: &[u8]) -> usize {
    u32::from_be_bytes(payload[..4].try_into().unwrap()) as usize
}

/// The forged Announce of a node that does not exist (as in
/// `a_silent_forged_peer_costs_at_most_two_ack_timeouts`), with an id right at
/// the key of a stream of lookups: once the first lookup's ack times out
/// twice (a root that does not answer its probe gets one resend), the
/// silent node is suspected and later lookups go around it straight away,
/// instead of each waiting out its own ack timeouts until the liveness
/// probe gives up (three probe timeouts).
#[test]
fn routes_avoid_a_suspected_hop_until_it_answers() {
    let mut net = Net::new(3, 37);
    net.join_all(Duration::from_millis(10));
    let key = NodeId(net.nodes[2].id().0 ^ 1);
    let forged = forged_announce(key, 50_000);
    net.on(0, |n, now| n.handle_datagram(now, addr(3), forged));
    assert!(net.nodes[0].leaf_set().iter().any(|h| h.id == key));
    net.events.clear();
    let (count, gap) = (300, Duration::from_millis(10));
    let start = net.now;
    for k in 0..count {
        let now = net.now;
        net.nodes[0].route(now, key, numbered(k)).unwrap();
        net.drain(0);
        net.settle(gap);
    }
    net.settle(Duration::from_secs(5));
    let mut late = Vec::new();
    let mut got = vec![0; count];
    for (at, _, e) in &net.events {
        if let Event::Delivered { payload, .. } = e {
            let k = number_of(payload);
            got[k] += 1;
            let delay = *at - (start + gap.saturating_mul(k as u64));
            if delay > Duration::from_millis(100) {
                late.push(k);
            }
        }
    }
    assert!(got.iter().all(|g| *g == 1), "{got:?}");
    // The hint makes an ack timeout 150 ms, and the first lookup waits out
    // two (the root is sent it once more): lookups of the first 300 ms
    // (plus one hop) wait, none after.
    assert!(late.iter().all(|k| *k <= 35), "late lookups: {late:?}");
    assert!(!late.is_empty(), "the ghost was never on the path");
}

use alm_core::Topic;
use alm_core::scribe::Role;

impl Net {
    fn subscribe(&mut self, i: usize, t: Topic) {
        let now = self.now;
        self.nodes[i].subscribe(now, t);
        self.drain(i);
    }

    /// Publish `count` packets from `src`, 10 ms apart; returns per-node
    /// received counts for `t`.
    fn publish_burst(&mut self, src: usize, t: Topic, count: usize) -> Vec<usize> {
        self.events.clear();
        for k in 0..count {
            let now = self.now;
            self.nodes[src]
                .publish(now, t, Bytes::from(format!("packet {k}")))
                .unwrap();
            self.drain(src);
            self.settle(Duration::from_millis(10));
        }
        self.settle(Duration::from_secs(1));
        let mut got = vec![0; self.nodes.len()];
        for (_, at, e) in &self.events {
            if let Event::GroupData { topic, .. } = e
                && *topic == t
            {
                got[*at] += 1;
            }
        }
        got
    }
}

#[test]
fn scribe_delivers_to_every_member_exactly_once() {
    let mut net = Net::new(60, 31);
    net.join_all(Duration::from_millis(10));
    let t = Topic::named(b"test", b"g1");
    let members: Vec<usize> = (0..60).filter(|i| i % 5 == 0).collect();
    for &m in &members {
        net.subscribe(m, t);
    }
    net.settle(Duration::from_secs(2));
    // An off-tree publisher (node 7 is not a member).
    let got = net.publish_burst(7, t, 50);
    for i in 0..60 {
        let want = if members.contains(&i) { 50 } else { 0 };
        assert_eq!(got[i], want, "node {i}");
    }
    // A member publishes: every other member gets it, not the sender.
    let got = net.publish_burst(10, t, 20);
    for i in 0..60 {
        let want = if members.contains(&i) && i != 10 {
            20
        } else {
            0
        };
        assert_eq!(got[i], want, "node {i}");
    }
    // Exactly one root.
    let roots = (0..60)
        .filter(|i| {
            net.nodes[*i]
                .scribe()
                .topic(t)
                .is_some_and(|s| s.role() == Role::Root)
        })
        .count();
    assert_eq!(roots, 1);
}

#[test]
fn leaving_stops_delivery_and_prunes() {
    let mut net = Net::new(40, 32);
    net.join_all(Duration::from_millis(10));
    let t = Topic::named(b"test", b"g2");
    net.subscribe(3, t);
    net.subscribe(9, t);
    net.settle(Duration::from_secs(2));
    let got = net.publish_burst(20, t, 10);
    assert_eq!((got[3], got[9]), (10, 10));
    let now = net.now;
    net.nodes[9].unsubscribe(now, t);
    net.drain(9);
    net.settle(Duration::from_secs(2));
    let got = net.publish_burst(20, t, 10);
    assert_eq!((got[3], got[9]), (10, 0));
    let now = net.now;
    net.nodes[3].unsubscribe(now, t);
    net.drain(3);
    net.settle(Duration::from_secs(10));
    let on_tree = (0..40)
        .filter(|i| net.nodes[*i].scribe().topic(t).is_some())
        .count();
    assert_eq!(on_tree, 0, "the whole tree pruned away");
}

#[test]
fn capacity_limited_trees_push_children_down() {
    let mut cfg = Config::default();
    cfg.scribe.max_children = Some(2);
    let mut net = Net::with_config(50, 33, cfg);
    net.join_all(Duration::from_millis(10));
    let t = Topic::named(b"test", b"g3");
    for i in 0..50 {
        if i != 1 {
            net.subscribe(i, t);
        }
    }
    net.settle(Duration::from_secs(3));
    for i in 0..50 {
        if let Some(st) = net.nodes[i].scribe().topic(t) {
            assert!(
                st.children.len() <= 2,
                "node {i} has {} children",
                st.children.len()
            );
        }
    }
    let got = net.publish_burst(1, t, 10);
    for i in 0..50 {
        assert_eq!(got[i], if i == 1 { 0 } else { 10 }, "node {i}");
    }
}

#[test]
fn crashed_forwarder_is_repaired_within_five_seconds() {
    let mut net = Net::new(60, 34);
    net.join_all(Duration::from_millis(10));
    let t = Topic::named(b"test", b"g4");
    let members: Vec<usize> = (0..60).filter(|i| i % 3 == 0).collect();
    for &m in &members {
        net.subscribe(m, t);
    }
    net.settle(Duration::from_secs(2));
    // Crash a non-member forwarder with children (or, failing that, a
    // member with children).
    let victim = (0..60)
        .filter(|i| *i != 1)
        .find(|i| {
            net.nodes[*i]
                .scribe()
                .topic(t)
                .is_some_and(|s| s.role() == Role::Forwarder && !s.children.is_empty())
        })
        .expect("some interior node");
    net.alive[victim] = false;
    net.settle(Duration::from_secs(5));
    let got = net.publish_burst(1, t, 10);
    for &m in &members {
        if m != victim {
            assert_eq!(got[m], 10, "member {m} after crash of {victim}");
        }
    }
}

#[test]
fn groups_are_isolated() {
    let mut net = Net::new(30, 35);
    net.join_all(Duration::from_millis(10));
    let a = Topic::named(b"test", b"a");
    let b = Topic::named(b"test", b"b");
    net.subscribe(2, a);
    net.subscribe(4, b);
    net.settle(Duration::from_secs(2));
    let got = net.publish_burst(6, a, 5);
    assert_eq!((got[2], got[4]), (5, 0));
}

/// A datagram that happens to parse as an Announce from a node that does not
/// exist (the e2e blast of random datagrams makes one now and then) puts a
/// silent "peer" with the topic's id and a made-up RTT of 4000 s into one
/// node's leaf set, and through gossip into the others'. The old root then
/// joins toward it, routes toward it go unacknowledged, and the publisher
/// may be that root. Every packet must still arrive exactly once; only those
/// sent before the ghost is suspected (after two ack timeouts: a root that
/// does not answer its probe is sent a message once more before it is
/// routed around) may be late, by at most those two timeouts. (Before: the 4000 s hint made a 3.3 h ack
/// timeout, and up to 900 of the 1000 packets were lost.)
fn forged_peer_run(seed: u64, target: usize) -> Result<(), String> {
    let mut net = Net::new(3, seed);
    net.join_all(Duration::from_millis(10));
    let t = Topic::named(b"test", b"forged");
    net.subscribe(1, t);
    net.subscribe(2, t);
    net.settle(Duration::from_secs(2));
    // From addr(3): no node there, so everything sent to it is lost.
    let ghost = t.0;
    let forged = forged_announce(ghost, 4_000_000_000); // "RTT 4000 s"
    net.events.clear();
    let (count, gap) = (1000, Duration::from_millis(10));
    let start = net.now;
    for k in 0..count {
        if k == 100 {
            net.on(target, |n, now| {
                n.handle_datagram(now, addr(3), forged.clone())
            });
        }
        let now = net.now;
        net.nodes[0].publish(now, t, numbered(k)).unwrap();
        net.drain(0);
        net.settle(gap);
    }
    net.settle(Duration::from_secs(5));
    let ack_timeout = Config::default().ack_timeout;
    let forged_at = start + gap.saturating_mul(100);
    for m in [1, 2] {
        let mut arrived = vec![Vec::new(); count];
        for (at, i, e) in &net.events {
            if let Event::GroupData { topic, payload, .. } = e
                && *topic == t
                && *i == m
            {
                let k = number_of(payload);
                arrived[k].push(*at);
            }
        }
        let delays: Vec<Option<Duration>> = arrived
            .iter()
            .enumerate()
            .map(|(k, ts)| {
                ts.first()
                    .map(|t| *t - (start + gap.saturating_mul(k as u64)))
            })
            .collect();
        let base = delays
            .iter()
            .flatten()
            .min()
            .copied()
            .unwrap_or(Duration::ZERO);
        for (k, times) in arrived.iter().enumerate() {
            if times.len() != 1 {
                return Err(format!("member {m}, packet {k}: {times:?}"));
            }
            let sent = start + gap.saturating_mul(k as u64);
            let late = Duration(delays[k].unwrap().0 - base.0);
            // Sent after the ghost could be suspected (with a margin for
            // the overlay's own latency), it goes around the ghost
            // straight away.
            let suspected_by = ack_timeout.saturating_mul(2) + Duration::from_millis(400);
            let bound = if sent > forged_at + suspected_by {
                Duration::from_millis(50)
            } else {
                suspected_by
            };
            if late > bound {
                return Err(format!(
                    "member {m}, packet {k} sent at {sent:?} was {late:?} late"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn a_silent_forged_peer_costs_at_most_two_ack_timeouts() {
    let mut fails = Vec::new();
    for seed in 40..48 {
        for target in 0..3 {
            if let Err(e) = forged_peer_run(seed, target) {
                fails.push(format!("seed {seed}, forged at node {target}: {e}"));
            }
        }
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}
