//! Next-hop lookup (`Pastry::next_hop`, §2.2 of the Pastry paper) on one node
//! of a 1,000-node overlay whose state was built by the real join protocol
//! in a virtual-time network (`alm_benches::Net`).
//!
//! Three key mixes: uniformly random keys (almost all resolved by the
//! routing table), keys inside the node's leaf-set range, and random keys
//! with the table's choice on the avoid list (the re-route path that falls
//! back to the "rare case" scan of every known node).

use std::hint::black_box;
use std::time::Instant;

use alm_benches::Net;
use alm_core::NodeId;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const NODES: usize = 1_000;
const KEYS: usize = 4_096;

fn routing(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut net = Net::overlay(NODES, 1);
    let node_ix = NODES / 2;
    let keys: Vec<NodeId> = (0..KEYS).map(|_| NodeId(net.rng().next_u128())).collect();
    let node = &net.nodes[node_ix];
    let pastry = node.pastry();
    eprintln!(
        "overlay of {NODES} nodes built in {:.1?}; node {node_ix}: {} routing-table entries, {} leaves",
        t0.elapsed(),
        node.routing_table_len(),
        node.leaf_set().len()
    );

    // Keys spread over the leaf set's range: between our id and each leaf.
    let leaves = node.leaf_set();
    let near: Vec<NodeId> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let l = leaves[i % leaves.len()].id;
            // Signed ring offset to the leaf (negative: counter-clockwise),
            // halved: a point between us and that leaf.
            let half = (l.0.wrapping_sub(node.id().0) as i128) / 2;
            NodeId(node.id().0.wrapping_add_signed(half) ^ (k.0 % 1024))
        })
        .collect();
    assert!(
        near.iter().all(|k| node.pastry().leaf_set().covers(*k)),
        "leaf-range keys must fall inside the leaf set"
    );
    let avoid: Vec<[NodeId; 1]> = keys
        .iter()
        .map(|k| [pastry.next_hop(*k, &[]).map_or(node.id(), |h| h.id)])
        .collect();

    let mut g = c.benchmark_group("next_hop");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("random_key", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(pastry.next_hop(black_box(keys[i]), &[]))
        })
    });
    g.bench_function("leaf_set_range", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(pastry.next_hop(black_box(near[i]), &[]))
        })
    });
    g.bench_function("random_key_avoiding_first_choice", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(pastry.next_hop(black_box(keys[i]), &avoid[i]))
        })
    });
    g.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
