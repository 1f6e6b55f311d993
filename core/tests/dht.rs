#![allow(clippy::needless_range_loop)] // node numbers index several parallel vectors
//! The management ring end to end: DHT records, compare-and-set, leases,
//! crash survival, address allocation and the group directory, on the small
//! virtual-time network of `support/`.

use std::net::Ipv4Addr;

use alm_core::{Config, DhtError, DhtReply, Duration, Event, Expect, NodeId, Time};
use bytes::Bytes;

mod support;
use support::*;

impl Net {
    fn put(&mut self, i: usize, key: &str, value: &str, lease: Duration) -> u64 {
        let v = Bytes::copy_from_slice(value.as_bytes());
        self.on(i, |n, now| {
            n.dht_put(now, b"test", key.as_bytes(), v, lease)
        })
    }

    fn get(&mut self, i: usize, key: &str) -> u64 {
        self.on(i, |n, now| n.dht_get(now, b"test", key.as_bytes()))
    }

    /// The result of request `req` issued by node `i`, if it arrived.
    fn result(&self, i: usize, req: u64) -> Option<Result<DhtReply, DhtError>> {
        let mut found = None;
        for (_, at, e) in &self.events {
            if let Event::Dht { request, result } = e
                && *at == i
                && *request == req
            {
                assert!(found.is_none(), "request {req} answered twice");
                found = Some(result.clone());
            }
        }
        found
    }

    fn value_of(&self, i: usize, req: u64) -> Option<String> {
        match self.result(i, req) {
            Some(Ok(DhtReply::Found(r))) => Some(String::from_utf8(r.value.to_vec()).unwrap()),
            _ => None,
        }
    }

    /// Nodes holding a live copy of test/`key`.
    fn holders(&self, key: &str) -> Vec<usize> {
        let name = alm_core::wire::dht::RecordName {
            namespace: Bytes::from_static(b"test"),
            key: Bytes::copy_from_slice(key.as_bytes()),
            bucket: None,
        };
        (0..self.nodes.len())
            .filter(|i| self.alive[*i] && self.nodes[*i].dht().local(self.now, &name).is_some())
            .collect()
    }

    fn live_other_than(&mut self, avoid: &[usize]) -> usize {
        loop {
            let i = self.rng.index(self.nodes.len());
            if self.alive[i] && !avoid.contains(&i) {
                return i;
            }
        }
    }

    fn allocated(&self) -> Vec<(usize, Ipv4Addr)> {
        self.events
            .iter()
            .filter_map(|(_, i, e)| match e {
                Event::AddressAllocated { addr, .. } => Some((*i, *addr)),
                _ => None,
            })
            .collect()
    }

    fn exhausted(&self) -> Vec<(Time, usize, String)> {
        self.events
            .iter()
            .filter_map(|(t, i, e)| match e {
                Event::AddressPoolExhausted(x) => Some((*t, *i, x.to_string())),
                _ => None,
            })
            .collect()
    }
}

fn ring_key(key: &str) -> NodeId {
    NodeId::hash(&[b"test", key.as_bytes()])
}

#[test]
fn put_get_round_trip_at_50_nodes_with_replicas() {
    let mut net = Net::new(50, 101);
    net.join_all(Duration::from_millis(10));
    let mut puts = Vec::new();
    for k in 0..30 {
        let i = net.rng.index(50);
        let key = format!("key-{k}");
        let req = net.put(
            i,
            &key,
            &format!("value {k} from {i}"),
            Duration::from_secs(600),
        );
        puts.push((i, key, req));
        net.settle(Duration::from_millis(3));
    }
    net.settle(Duration::from_secs(5));
    for (i, key, req) in &puts {
        assert!(
            matches!(net.result(*i, *req), Some(Ok(DhtReply::Stored { .. }))),
            "put {key}: {:?}",
            net.result(*i, *req)
        );
        let holders = net.holders(key);
        assert_eq!(holders.len(), 4, "{key}: responsible node + 3 replicas");
        assert!(holders.contains(&net.closest_live(ring_key(key))));
    }
    let mut gets = Vec::new();
    for (i, key, _) in &puts {
        let j = net.live_other_than(&[*i]);
        gets.push((j, net.get(j, key), format!("value {} from {i}", &key[4..])));
    }
    let missing = net.get(3, "never-stored");
    net.settle(Duration::from_secs(5));
    for (j, req, want) in gets {
        assert_eq!(net.value_of(j, req).as_deref(), Some(want.as_str()));
    }
    assert_eq!(net.result(3, missing), Some(Err(DhtError::NotFound)));
    // Bounds are checked before anything is sent.
    let big = net.on(4, |n, now| {
        n.dht_put(
            now,
            b"test",
            b"k",
            Bytes::from(vec![0; 513]),
            Duration::from_secs(1),
        )
    });
    assert_eq!(net.result(4, big), Some(Err(DhtError::TooLarge)));
}

#[test]
fn two_concurrent_claimants_exactly_one_wins() {
    let mut net = Net::new(40, 102);
    net.join_all(Duration::from_millis(10));
    for k in 0..20 {
        let key = format!("contested-{k}");
        let a = net.rng.index(40);
        let b = net.live_other_than(&[a]);
        // Same instant, before either request can travel.
        let ra = net.put(a, &key, "a", Duration::from_secs(60));
        let rb = net.put(b, &key, "b", Duration::from_secs(60));
        net.settle(Duration::from_secs(5));
        let (resa, resb) = (net.result(a, ra).unwrap(), net.result(b, rb).unwrap());
        let (winner, loser_res) = match (&resa, &resb) {
            (Ok(DhtReply::Stored { .. }), Err(_)) => (a, resb.clone()),
            (Err(_), Ok(DhtReply::Stored { .. })) => (b, resa.clone()),
            _ => panic!("{key}: exactly one must win: {resa:?} / {resb:?}"),
        };
        let winner_id = net.nodes[winner].id();
        assert!(
            matches!(loser_res, Err(DhtError::Conflict { owner, .. }) if owner == winner_id),
            "{loser_res:?}"
        );
        // Everyone reads the winner's value.
        let reader = net.live_other_than(&[a, b]);
        let g = net.get(reader, &key);
        net.settle(Duration::from_secs(2));
        let want = if winner == a { "a" } else { "b" };
        assert_eq!(net.value_of(reader, g).as_deref(), Some(want));
    }
    // Compare-and-set by version: of two writers that read the same version,
    // one succeeds.
    net.put(4, "cas", "v0", Duration::from_secs(60));
    net.settle(Duration::from_secs(2));
    let g = net.get(5, "cas");
    net.settle(Duration::from_secs(2));
    let Some(Ok(DhtReply::Found(rec))) = net.result(5, g) else {
        panic!("get failed")
    };
    let (x, y) = (6, 7);
    let cas = |net: &mut Net, i: usize, v: &'static str| {
        net.on(i, |n, now| {
            n.dht_put_cas(
                now,
                b"test",
                b"cas",
                Bytes::from_static(v.as_bytes()),
                Duration::from_secs(60),
                Expect::Version(rec.version),
            )
        })
    };
    let rx = cas(&mut net, x, "x");
    let ry = cas(&mut net, y, "y");
    net.settle(Duration::from_secs(3));
    let ok = [net.result(x, rx), net.result(y, ry)]
        .iter()
        .filter(|r| matches!(r, Some(Ok(DhtReply::Stored { .. }))))
        .count();
    assert_eq!(ok, 1);
}

#[test]
fn leases_expire_unless_renewed() {
    let mut net = Net::new(20, 103);
    net.join_all(Duration::from_millis(10));
    net.put(1, "short", "v", Duration::from_secs(5));
    net.put(2, "renewed", "v", Duration::from_secs(5));
    net.settle(Duration::from_secs(3));
    let g = net.get(3, "short");
    let r = net.on(2, |n, now| {
        n.dht_renew(now, b"test", b"renewed", Duration::from_secs(5))
    });
    let foreign = net.on(4, |n, now| {
        n.dht_renew(now, b"test", b"renewed", Duration::from_secs(5))
    });
    net.settle(Duration::from_secs(1));
    assert_eq!(net.value_of(3, g).as_deref(), Some("v"));
    assert!(matches!(
        net.result(2, r),
        Some(Ok(DhtReply::Renewed { .. }))
    ));
    assert_eq!(net.result(4, foreign), Some(Err(DhtError::NotOwner)));
    // 7 s after the put: "short" expired, "renewed" lives until 3 + 5 = 8 s.
    net.settle(Duration::from_secs(3));
    let g1 = net.get(3, "short");
    let g2 = net.get(3, "renewed");
    net.settle(Duration::from_millis(500));
    assert_eq!(net.result(3, g1), Some(Err(DhtError::NotFound)));
    assert_eq!(net.value_of(3, g2).as_deref(), Some("v"));
    // An expired key is free for anyone.
    let p = net.put(5, "short", "mine now", Duration::from_secs(60));
    // A released key is free at once.
    let rel = net.on(2, |n, now| n.dht_release(now, b"test", b"renewed"));
    net.settle(Duration::from_secs(1));
    assert!(matches!(
        net.result(5, p),
        Some(Ok(DhtReply::Stored { .. }))
    ));
    assert_eq!(net.result(2, rel), Some(Ok(DhtReply::Released)));
    assert!(
        net.holders("renewed").is_empty(),
        "replicas forget a release"
    );
    let p = net.put(6, "renewed", "six", Duration::from_secs(60));
    net.settle(Duration::from_secs(1));
    assert!(matches!(
        net.result(6, p),
        Some(Ok(DhtReply::Stored { .. }))
    ));
}

#[test]
fn a_record_survives_the_crash_of_its_responsible_node() {
    let mut net = Net::new(60, 104);
    net.join_all(Duration::from_millis(10));
    let keys: Vec<String> = (0..5).map(|k| format!("durable-{k}")).collect();
    for (k, key) in keys.iter().enumerate() {
        net.put(k, key, key, Duration::from_secs(600));
    }
    net.settle(Duration::from_secs(3));
    for key in &keys {
        let root = net.closest_live(ring_key(key));
        net.alive[root] = false;
        // At once: the request is re-routed around the silent root to the
        // next closest node, which already holds a replica.
        let j = net.live_other_than(&[]);
        let g = net.get(j, key);
        net.settle(Duration::from_secs(10));
        assert_eq!(net.value_of(j, g).as_deref(), Some(key.as_str()), "{key}");
    }
    // Once the failures are repaired every record has 1 + 3 copies again...
    net.settle(Duration::from_secs(60));
    for key in &keys {
        assert_eq!(net.holders(key).len(), 4, "{key} re-replicated");
    }
    // ...so a second crash of the (new) responsible node loses nothing either.
    for key in &keys {
        let root = net.closest_live(ring_key(key));
        net.alive[root] = false;
    }
    net.settle(Duration::from_secs(60));
    for key in &keys {
        let j = net.live_other_than(&[]);
        let g = net.get(j, key);
        net.settle(Duration::from_secs(10));
        assert_eq!(net.value_of(j, g).as_deref(), Some(key.as_str()), "{key}");
    }
}

#[test]
fn full_stores_refuse_with_a_clear_error() {
    let mut cfg = Config::default();
    cfg.dht.max_records = 8;
    let mut net = Net::with_config(6, 105, cfg);
    net.join_all(Duration::from_millis(10));
    // Every record is on 4 of the 6 nodes: 12 fill all 48 slots.
    let mut reqs = Vec::new();
    for k in 0..20 {
        reqs.push(net.put(0, &format!("fill-{k}"), "x", Duration::from_secs(600)));
        net.settle(Duration::from_millis(500));
    }
    net.settle(Duration::from_secs(3));
    let results: Vec<_> = reqs.iter().map(|r| net.result(0, *r).unwrap()).collect();
    let stored = results.iter().filter(|r| r.is_ok()).count();
    assert!(stored >= 8, "stored {stored}");
    assert!(results.contains(&Err(DhtError::StoreFull)), "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || *r == Err(DhtError::StoreFull))
    );
    assert_eq!(
        DhtError::StoreFull.to_string(),
        "the responsible node's store is full"
    );
    for i in 0..6 {
        assert!(net.nodes[i].dht().len() <= 8, "node {i} over its bound");
    }
}

#[test]
fn two_hundred_nodes_allocate_unique_addresses() {
    let mut net = Net::new(200, 106);
    net.join_all(Duration::from_millis(10));
    let start = net.now;
    for i in 0..200 {
        net.on(i, |n, now| {
            n.allocate_address(now, Ipv4Addr::new(10, 9, 0, 0), 24)
        })
        .unwrap();
    }
    net.settle(Duration::from_secs(30));
    let got = net.allocated();
    assert_eq!(got.len(), 200, "every node got an address");
    let mut addrs: Vec<Ipv4Addr> = got.iter().map(|(_, a)| *a).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 200, "no duplicate addresses");
    for a in &addrs {
        assert_eq!(&a.octets()[..3], &[10, 9, 0]);
        assert!(a.octets()[3] != 0 && a.octets()[3] != 255, "{a}");
    }
    let last = net
        .events
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::AddressAllocated { .. }));
    let slowest = last.map(|(t, ..)| *t - start).max().unwrap();
    assert!(
        slowest < Duration::from_secs(15),
        "slowest allocation {slowest:?}"
    );
    // Leases are renewed: long after the first lease ran out, nobody lost
    // their address and nobody else can claim one.
    net.settle(Duration::from_secs(150));
    assert!(
        !net.events
            .iter()
            .any(|(_, _, e)| matches!(e, Event::AddressLost { .. })),
        "an address was lost"
    );
    for (i, a) in got.iter().take(10) {
        assert_eq!(net.nodes[*i].address().map(|x| x.0), Some(*a));
        let j = (i + 1) % 200;
        let r = net.on(j, |n, now| {
            n.dht_put(
                now,
                b"alm/addr",
                &a.octets(),
                Bytes::new(),
                Duration::from_secs(5),
            )
        });
        net.settle(Duration::from_secs(2));
        assert!(matches!(
            net.result(j, r),
            Some(Err(DhtError::Conflict { .. }))
        ));
    }
}

#[test]
fn a_full_pool_is_reported_fast_not_hung() {
    let mut net = Net::new(8, 107);
    net.join_all(Duration::from_millis(10));
    let start = net.now;
    for i in 0..8 {
        net.on(i, |n, now| {
            n.allocate_address(now, Ipv4Addr::new(10, 0, 0, 9), 29)
        })
        .unwrap();
    }
    net.settle(Duration::from_secs(10));
    let got = net.allocated();
    let ex = net.exhausted();
    assert_eq!(got.len(), 6, "{got:?}");
    let mut addrs: Vec<Ipv4Addr> = got.iter().map(|(_, a)| *a).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 6);
    assert!(
        !addrs.contains(&Ipv4Addr::new(10, 0, 0, 8)),
        "network address"
    );
    assert!(
        !addrs.contains(&Ipv4Addr::new(10, 0, 0, 15)),
        "broadcast address"
    );
    assert_eq!(ex.len(), 2, "{ex:?}");
    for (t, i, text) in &ex {
        assert_eq!(text, "address pool 10.0.0.8/29 exhausted");
        assert!(
            *t - start < Duration::from_secs(2),
            "node {i} took {:?}",
            *t - start
        );
        assert!(got.iter().all(|(j, _)| j != i));
    }
    assert_eq!(
        alm_core::PoolExhausted {
            prefix: Ipv4Addr::new(172, 16, 0, 0),
            prefix_len: 20
        }
        .to_string(),
        "address pool 172.16.0.0/20 exhausted"
    );
    // A clean exit gives the address back at once; a crash after the lease.
    let (leaver, freed) = got[0];
    let (crasher, lost) = got[1];
    let waiter = ex[0].1;
    net.on(leaver, |n, now| n.release_address(now));
    net.settle(Duration::from_secs(1));
    net.alive[crasher] = false;
    net.events.clear();
    net.on(waiter, |n, now| {
        n.allocate_address(now, Ipv4Addr::new(10, 0, 0, 9), 29)
    })
    .unwrap();
    // Claim, then two confirmations 2 s apart (MgmtConfig::address_confirm).
    net.settle(Duration::from_secs(10));
    assert_eq!(net.allocated(), vec![(waiter, freed)]);
    let other = ex[1].1;
    net.on(other, |n, now| {
        n.allocate_address(now, Ipv4Addr::new(10, 0, 0, 9), 29)
    })
    .unwrap();
    net.settle(Duration::from_secs(5));
    assert_eq!(
        net.exhausted().len(),
        1,
        "the crashed node's lease still runs"
    );
    net.settle(Duration::from_secs(60));
    net.on(other, |n, now| {
        n.allocate_address(now, Ipv4Addr::new(10, 0, 0, 9), 29)
    })
    .unwrap();
    net.settle(Duration::from_secs(10));
    assert_eq!(net.allocated(), vec![(waiter, freed), (other, lost)]);
}

#[test]
fn the_group_directory_lists_announced_groups() {
    let mut net = Net::new(30, 108);
    net.join_all(Duration::from_millis(10));
    let g1 = Ipv4Addr::new(239, 1, 1, 1);
    let g2 = Ipv4Addr::new(239, 1, 1, 2);
    let g3 = Ipv4Addr::new(224, 2, 3, 4);
    let t0 = net.now;
    net.on(3, |n, now| {
        n.announce_group(now, g1, Some("news".into()), 12)
    });
    net.on(4, |n, now| n.announce_group(now, g2, None, 3));
    net.on(5, |n, now| {
        n.announce_group(now, g3, Some("vlc ☃".into()), 40)
    });
    net.settle(Duration::from_secs(30));
    // Another member of g1 updates the count; `since` stays.
    net.on(6, |n, now| {
        n.announce_group(now, g1, Some("news".into()), 13)
    });
    net.settle(Duration::from_secs(2));
    net.events.clear();
    net.on(20, |n, now| n.list_groups(now));
    net.settle(Duration::from_secs(2));
    let dirs: Vec<_> = net
        .events
        .iter()
        .filter_map(|(_, i, e)| match e {
            Event::GroupDirectory(g) => Some((*i, g.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(dirs.len(), 1);
    let (at, groups) = &dirs[0];
    assert_eq!(*at, 20);
    let summary: Vec<_> = groups
        .iter()
        .map(|g| (g.group, g.name.clone(), g.members))
        .collect();
    assert_eq!(
        summary,
        vec![
            (g3, Some("vlc ☃".to_string()), 40),
            (g1, Some("news".to_string()), 13),
            (g2, None, 3),
        ]
    );
    for g in groups {
        let age = net.now - g.since;
        assert!(
            age >= Duration::from_secs(31) && age < Duration::from_secs(34),
            "{:?} since {:?} (t0 {t0:?})",
            g.group,
            g.since
        );
    }
    // Withdrawn and abandoned groups leave the directory.
    net.on(5, |n, now| n.withdraw_group(now, g3));
    net.on(4, |n, now| n.withdraw_group(now, g2));
    net.settle(Duration::from_secs(90));
    net.events.clear();
    net.on(21, |n, now| n.list_groups(now));
    net.settle(Duration::from_secs(2));
    let listed: Vec<Ipv4Addr> = net
        .events
        .iter()
        .find_map(|(_, _, e)| match e {
            Event::GroupDirectory(g) => Some(g.iter().map(|g| g.group).collect()),
            _ => None,
        })
        .unwrap();
    assert_eq!(listed, vec![g1], "g1 is still refreshed by nodes 3 and 6");
}

/// The owner of every successful claim among `claims` (node, request, key),
/// by key; panics if a key has two.
fn owners_by_key(net: &Net, claims: &[(usize, u64, String)]) -> Vec<(String, usize)> {
    let mut owners: Vec<(String, usize)> = Vec::new();
    for (i, req, key) in claims {
        if let Some(Ok(DhtReply::Stored { .. })) = net.result(*i, *req) {
            match owners.iter().find(|(k, _)| k == key) {
                Some((_, o)) => assert_eq!(*o, *i, "{key}: two live owners, {o} and {i}"),
                None => owners.push((key.clone(), *i)),
            }
        }
    }
    owners
}

/// A node joining right next to a held key becomes its responsible node
/// before the old root's copy reaches it. Claims made at that moment, by
/// the joiner itself (delivered locally, at once) and by others, must all
/// see the holder's record.
#[test]
fn a_joiner_next_to_a_held_key_never_grants_it_again() {
    let cfg = Config::default();
    let mut net = Net::new(61, 109);
    net.join_first(60, Duration::from_millis(10));
    let held = net.put(1, "held", "one", Duration::from_secs(60));
    net.settle(Duration::from_secs(3));
    assert!(matches!(
        net.result(1, held),
        Some(Ok(DhtReply::Stored { .. }))
    ));
    let owner = net.nodes[1].id();
    let j = 60;
    net.set_id(j, ring_key("held"), &cfg);
    net.join_one(j, 60);
    assert!(net.run_until_cond(Duration::from_secs(10), |n| n.nodes[j].is_joined()));
    let mut claims = vec![(j, net.put(j, "held", "joiner", Duration::from_secs(60)))];
    for _ in 0..4 {
        let c = net.live_other_than(&[1, j]);
        claims.push((c, net.put(c, "held", "other", Duration::from_secs(60))));
    }
    for _ in 0..50 {
        net.settle(Duration::from_millis(20));
        let c = net.live_other_than(&[1]);
        claims.push((c, net.put(c, "held", "late", Duration::from_secs(60))));
    }
    net.settle(Duration::from_secs(10));
    for (i, req) in &claims {
        let r = net.result(*i, *req);
        assert!(
            matches!(r, Some(Err(DhtError::Conflict { owner: o, .. })) if o == owner),
            "claim by {i}: {r:?}"
        );
    }
    let g = net.get(5, "held");
    let r = net.on(1, |n, now| {
        n.dht_renew(now, b"test", b"held", Duration::from_secs(60))
    });
    net.settle(Duration::from_secs(2));
    assert_eq!(net.value_of(5, g).as_deref(), Some("one"));
    assert!(matches!(
        net.result(1, r),
        Some(Ok(DhtReply::Renewed { .. }))
    ));
}

/// The old root crashes at the very instant a node joins between it and
/// the key; at that same instant two nodes claim the key through different
/// paths (the joiner locally, another through the overlay), and a second,
/// never-claimed key is contested the same way.
#[test]
fn a_root_crash_during_a_handover_grants_nothing_twice() {
    let cfg = Config::default();
    let mut net = Net::new(62, 110);
    net.join_first(60, Duration::from_millis(10));
    let held = net.put(2, "crash-held", "two", Duration::from_secs(60));
    net.settle(Duration::from_secs(3));
    assert!(matches!(
        net.result(2, held),
        Some(Ok(DhtReply::Stored { .. }))
    ));
    let owner = net.nodes[2].id();
    for (j, key) in [(60, "crash-held"), (61, "crash-fresh")] {
        let old_root = net.closest_live(ring_key(key));
        net.set_id(j, NodeId(ring_key(key).0.wrapping_add(1)), &cfg);
        net.join_one(j, 60);
        assert!(net.run_until_cond(Duration::from_secs(10), |n| n.nodes[j].is_joined()));
        if old_root != 2 {
            net.alive[old_root] = false;
        }
        let other = net.live_other_than(&[2, j]);
        let ra = net.put(j, key, "joiner", Duration::from_secs(60));
        let rb = net.put(other, key, "other", Duration::from_secs(60));
        net.settle(Duration::from_secs(12));
        let (a, b) = (net.result(j, ra), net.result(other, rb));
        if key == "crash-held" {
            for r in [&a, &b] {
                assert!(
                    matches!(r, Some(Err(DhtError::Conflict { owner: o, .. })) if *o == owner),
                    "{r:?}"
                );
            }
        } else {
            let won = [&a, &b]
                .iter()
                .filter(|r| matches!(r, Some(Ok(DhtReply::Stored { .. }))))
                .count();
            assert_eq!(won, 1, "{a:?} / {b:?}");
        }
    }
    let g = net.get(7, "crash-held");
    net.settle(Duration::from_secs(3));
    assert_eq!(net.value_of(7, g).as_deref(), Some("two"));
}

/// 100 nodes join in one second, many of them right next to the keys,
/// while 50 claims a second run on 20 keys: never two live owners.
#[test]
fn claims_during_a_burst_of_joins_never_yield_two_owners() {
    assert_eq!(burst_of_joins(111), 0);
}

/// More seeds of the test above (`cargo test --release -- --ignored`).
/// Never two owners; a responsible node that answers with a stale
/// (never committed) record is counted, not failed: see the DHT module
/// docs, "Known limits".
#[test]
#[ignore]
fn soak_claims_during_bursts_of_joins() {
    let stale: usize = (1..=20).map(burst_of_joins).sum();
    assert!(stale <= 2, "{stale} roots disagree with the winner");
}

/// Returns how many keys' responsible node holds another record than the
/// winner's (panics on two owners).
fn burst_of_joins(seed: u64) -> usize {
    let cfg = Config::default();
    let (old, new) = (300, 100);
    let mut net = Net::new(old + new, seed);
    net.join_first(old, Duration::from_millis(5));
    let keys: Vec<String> = (0..20).map(|k| format!("burst-{k}")).collect();
    for j in 0..new {
        let near = ring_key(&keys[j % keys.len()]).0;
        let off = u128::from(net.rng.next_u64()) << 50;
        let id = if j % 2 == 0 {
            near.wrapping_add(off)
        } else {
            near.wrapping_sub(off)
        };
        net.set_id(old + j, NodeId(id), &cfg);
    }
    let mut claims = Vec::new();
    let mut claimed = vec![false; new];
    for step in 0..150 {
        // A join every 10 ms for the first second; a claim every 20 ms for
        // three seconds; and every joiner claims the key it sits next to as
        // soon as it is in (as `allocate_address` queued before the join
        // does).
        if step < new {
            net.join_one(old + step, old);
        }
        for j in 0..new {
            if !claimed[j] && net.nodes[old + j].is_joined() {
                claimed[j] = true;
                let key = keys[j % keys.len()].clone();
                let req = net.put(old + j, &key, "joiner", Duration::from_secs(120));
                claims.push((old + j, req, key));
            }
        }
        if step % 2 == 0 {
            let i = net.live_other_than(&[]);
            if net.nodes[i].is_joined() {
                let key = keys[net.rng.index(keys.len())].clone();
                let req = net.put(i, &key, "mine", Duration::from_secs(120));
                claims.push((i, req, key));
            }
        }
        net.settle(Duration::from_millis(10));
    }
    net.settle(Duration::from_secs(15));
    let owners = owners_by_key(&net, &claims);
    assert!(owners.len() >= 15, "only {} keys claimed", owners.len());
    // The responsible node answers with the single winner's record.
    let mut stale = 0;
    for (key, o) in &owners {
        let name = alm_core::wire::dht::RecordName {
            namespace: Bytes::from_static(b"test"),
            key: Bytes::copy_from_slice(key.as_bytes()),
            bucket: None,
        };
        let root = net.closest_live(ring_key(key));
        let rec = net.nodes[root].dht().local(net.now, &name);
        if rec.as_ref().map(|r| r.owner) != Some(net.nodes[*o].id()) {
            eprintln!("seed {seed}: {key} at its root {root}: {rec:?}");
            stale += 1;
        }
    }
    stale
}

#[test]
fn a_holder_whose_renewals_fail_gives_its_address_up_after_the_lease() {
    let mut net = Net::new(12, 109);
    net.join_all(Duration::from_millis(10));
    net.on(3, |n, now| {
        n.allocate_address(now, Ipv4Addr::new(10, 1, 0, 0), 24)
    })
    .unwrap();
    net.settle(Duration::from_secs(10));
    let got = net.allocated();
    assert_eq!(got.len(), 1, "{got:?}");
    let addr = got[0].1;
    // DHT replies (0x58) are lost from now on: the ring is up, but no
    // renewal can be confirmed.
    net.drop_types = vec![0x58];
    net.events.clear();
    net.settle(Duration::from_secs(45));
    let lost = |net: &Net| {
        net.events
            .iter()
            .any(|(_, i, e)| *i == 3 && matches!(e, Event::AddressLost { addr: a } if *a == addr))
    };
    assert!(!lost(&net), "still within the 60 s lease");
    net.settle(Duration::from_secs(20));
    assert!(
        lost(&net),
        "the address must be given up once its lease ran out"
    );
    assert_ne!(net.nodes[3].address().map(|(a, _)| a), Some(addr));
}

#[test]
fn a_holder_cut_off_from_every_peer_gives_its_address_up_after_the_lease() {
    let mut net = Net::new(12, 110);
    net.join_all(Duration::from_millis(10));
    net.on(3, |n, now| {
        n.allocate_address(now, Ipv4Addr::new(10, 1, 0, 0), 24)
    })
    .unwrap();
    net.settle(Duration::from_secs(10));
    let got = net.allocated();
    assert_eq!(got.len(), 1, "{got:?}");
    let addr = got[0].1;
    // Every datagram is lost: node 3 soon believes it is alone. Alone, it
    // must not re-claim its address in its one-node ring.
    net.loss = 1.0;
    net.events.clear();
    net.settle(Duration::from_secs(75));
    let lost = net
        .events
        .iter()
        .any(|(_, i, e)| *i == 3 && matches!(e, Event::AddressLost { addr: a } if *a == addr));
    assert!(lost, "the address must be given up once its lease ran out");
    assert_eq!(net.nodes[3].address(), None);
    assert!(
        net.allocated().is_empty(),
        "nothing is allocated while cut off"
    );
}

#[test]
fn a_lone_node_allocates_only_once_it_has_a_peer() {
    let mut net = Net::new(2, 111);
    net.join_first(1, Duration::from_millis(10));
    net.on(0, |n, now| {
        n.allocate_address(now, Ipv4Addr::new(10, 2, 0, 0), 24)
    })
    .unwrap();
    net.settle(Duration::from_secs(20));
    assert!(
        net.allocated().is_empty(),
        "a one-node ring cannot commit a claim"
    );
    net.join_one(1, 1);
    net.settle(Duration::from_secs(40));
    assert_eq!(net.allocated().len(), 1, "{:?}", net.allocated());
}
