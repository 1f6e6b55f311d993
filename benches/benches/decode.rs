//! Pastry wire codec: decode (`Header::new_checked` + `Repr::parse`) and
//! encode (`Repr::to_bytes`) of a Route carrying 1 KiB, a State with 40
//! handles (a join reply's size) and a Ping.

use std::hint::black_box;

use alm_core::wire::Header;
use alm_core::wire::pastry::{Repr, Route, Service, State, state_flags};
use alm_core::{NodeHandle, NodeId, PeerAddr};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn handle(i: u32) -> NodeHandle {
    NodeHandle::new(
        NodeId(u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
        PeerAddr::v4(10, 0, (i >> 8) as u8, i as u8, 4000),
    )
}

fn messages() -> Vec<(&'static str, Repr)> {
    let hs: Vec<NodeHandle> = (1..=40).map(handle).collect();
    vec![
        (
            "route_1KiB",
            Repr::Route(Route {
                msg_id: 0x1234_5678_9abc_def0,
                key: NodeId(u128::MAX / 3),
                hops: 2,
                service: Service::Lookup,
                origin: handle(7),
                payload: Bytes::from(vec![0xa5; 1024]),
            }),
        ),
        (
            "state_40_handles",
            Repr::State(State {
                flags: state_flags::JOIN_ROWS | state_flags::JOIN_FINAL,
                rtt_hint: 12_345,
                table: hs[..16].to_vec(),
                table_rtts: Vec::new(),
                leaves: hs[16..32].to_vec(),
                leaf_rtts: Vec::new(),
                neighbors: hs[32..].to_vec(),
                neighbor_rtts: Vec::new(),
            }),
        ),
        (
            "ping",
            Repr::Ping {
                token: 1_000_000,
                flags: 1,
                rtt_hint: 4_321,
            },
        ),
    ]
}

fn decode(c: &mut Criterion) {
    let sender = NodeId(42);
    let mut g = c.benchmark_group("decode");
    for (name, repr) in messages() {
        let bytes = repr.to_bytes(sender);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let msg = black_box(&bytes);
                let hdr = Header::new_checked(&msg[..]).expect("valid header");
                let ty = hdr.msg_type().expect("known type");
                black_box(Repr::parse(ty, msg).expect("valid body"))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("encode");
    for (name, repr) in messages() {
        g.throughput(Throughput::Bytes(repr.buffer_len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| black_box(black_box(&repr).to_bytes(sender)))
        });
    }
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
