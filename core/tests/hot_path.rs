//! The forwarding hot path must not allocate or copy payloads per packet.
//! A counting allocator watches a forwarder that receives data packets
//! from its parent and fans them out to its children.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use alm_core::wire::scribe::DataHeader;
use alm_core::{Config, Event, Node, NodeId, PeerAddr, Time, Topic};
use bytes::{BufMut, Bytes, BytesMut};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Count only the test thread's allocations (the harness allocates on
    /// other threads while it reports).
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    ARMED.try_with(Cell::get).unwrap_or(false)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarding to the system allocator with the caller's layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System.alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is global: tests that arm it must not overlap.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn peer(i: u8) -> PeerAddr {
    PeerAddr::v4(10, 0, 0, i, 4000)
}

#[test]
fn forwarding_allocates_nothing_and_shares_the_payload() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let topic = Topic::named(b"test", b"hot");
    let me = NodeId(5 << 120);
    let mut node = Node::new(Config::default(), me, peer(1), 1);
    node.join_overlay(Time::ZERO, &[]);
    while node.poll_transmit().is_some() {}
    while node.poll_event().is_some() {}
    // We are the only node, hence the root; subscribe, then adopt three
    // children through routed JOINs delivered to us.
    node.subscribe(Time::from_millis(1), topic);
    let children = [NodeId(6 << 120), NodeId(7 << 120), NodeId(8 << 120)];
    // Children join by sending their JOIN (a routed message) to us.
    for (i, c) in children.iter().enumerate() {
        let join = alm_core::wire::pastry::Repr::Route(alm_core::wire::pastry::Route {
            msg_id: 1,
            key: topic.0,
            hops: 1,
            service: alm_core::wire::pastry::Service::Other(alm_core::wire::scribe::SERVICE_JOIN),
            origin: alm_core::NodeHandle::new(*c, peer(10 + i as u8)),
            payload: Bytes::new(),
        });
        node.handle_datagram(Time::from_millis(2), peer(10 + i as u8), join.to_bytes(*c));
    }
    while node.poll_transmit().is_some() {}
    let st = node.scribe().topic(topic).expect("on the tree");
    assert_eq!(st.children.len(), 3);

    // A data packet from child 0: we must forward to children 1 and 2 and
    // deliver locally, without allocating and without copying the payload.
    let payload = vec![0xabu8; 1200];
    // Packets are split off one large receive block, as runtimes do (almd
    // reads datagrams into a BytesMut block and splits each off): such
    // `Bytes` are already reference-counted, so slicing them is free. (A
    // `Bytes` frozen from its own Vec allocates its refcount on first share.)
    let mut block = BytesMut::with_capacity(200 * 1300);
    let mut packets = Vec::new();
    for seq in 1..=200u32 {
        let hdr = DataHeader {
            topic: topic.0,
            source: children[0],
            seq,
            flags: 0,
            hops_left: 16,
        };
        block.put_slice(&hdr.to_inline(children[0]));
        block.put_slice(&payload);
        let n = block.len();
        packets.push(block.split_to(n).freeze());
    }
    let mut out = Vec::with_capacity(8);
    // Warm-up: queues reach their steady capacity.
    for p in packets.drain(..100) {
        node.handle_datagram(Time::from_millis(3), peer(10), p);
        while let Some(t) = node.poll_transmit() {
            out.push(t);
        }
        while node.poll_event().is_some() {}
        out.clear();
    }
    ALLOCS.store(0, Ordering::Relaxed);
    ARMED.with(|a| a.set(true));
    let mut forwarded = 0;
    let mut delivered = 0;
    let mut shared = true;
    for p in packets.drain(..) {
        let start = p.as_ptr() as usize;
        let end = start + p.len();
        node.handle_datagram(Time::from_millis(4), peer(10), p);
        while let Some(t) = node.poll_transmit() {
            let b = t.body.as_ptr() as usize;
            shared &= b >= start && b < end;
            forwarded += 1;
            out.push(t);
        }
        while let Some(e) = node.poll_event() {
            if let Event::GroupData { payload, .. } = &e {
                let b = payload.as_ptr() as usize;
                shared &= b >= start && b < end;
                delivered += 1;
            }
        }
        out.clear();
    }
    ARMED.with(|a| a.set(false));
    let allocs = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(forwarded, 200, "two children per packet");
    assert_eq!(delivered, 100);
    assert!(shared, "payloads must be slices of the received buffer");
    assert_eq!(allocs, 0, "allocations on the forwarding path");
}

const FIXTURE: &str = include_str!("../../../shared/fixtures/tap-frames-linux-6.18.hex");

fn fixture(kind: u8) -> Vec<Vec<u8>> {
    FIXTURE
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        })
        .filter(|f| f.len() > 34 && f[12..14] == [8, 0] && f[23] == kind)
        .collect()
}

#[test]
fn middleware_paths_allocate_nothing_per_packet() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use alm_core::{Middleware, MiddlewareConfig};
    use std::net::Ipv4Addr;
    let group = Ipv4Addr::new(239, 1, 2, 3);
    let topic = Topic::ipv4_group(group);
    let me = NodeId(9 << 120);
    let node = Node::new(Config::default(), me, peer(1), 3);
    let mut mw = Middleware::new(node, MiddlewareConfig::new(Ipv4Addr::new(172, 16, 0, 5)));
    mw.start(Time::ZERO, &[]);
    // A listener joins 239.1.2.3 (the kernel's IGMPv3 report, captured).
    for r in fixture(2) {
        mw.handle_tap_frame(Time::from_millis(1), Bytes::from(r));
    }
    while mw.poll_transmit().is_some() {}
    while mw.poll_tap_frame().is_some() {}
    assert!(mw.node().scribe().topic(topic).is_some_and(|s| s.member));
    // A tree neighbour (our child) sends the captured UDP packets back to us.
    let child = NodeId(10 << 120);
    let join = alm_core::wire::pastry::Repr::Route(alm_core::wire::pastry::Route {
        msg_id: 1,
        key: topic.0,
        hops: 1,
        service: alm_core::wire::pastry::Service::Other(alm_core::wire::scribe::SERVICE_JOIN),
        origin: alm_core::NodeHandle::new(child, peer(20)),
        payload: Bytes::new(),
    });
    mw.handle_datagram(Time::from_millis(2), peer(20), join.to_bytes(child));
    while mw.poll_transmit().is_some() {}
    let udp = fixture(17);
    let ip = &udp[0][14..];
    let mut block = BytesMut::with_capacity(400 * (56 + ip.len()));
    let mut packets = Vec::new();
    for seq in 1..=400u32 {
        let hdr = DataHeader {
            topic: topic.0,
            source: child,
            seq,
            flags: 0,
            hops_left: 16,
        };
        block.put_slice(&hdr.to_inline(child));
        block.put_slice(ip);
        let n = block.len();
        packets.push(block.split_to(n).freeze());
    }
    let mut tap = Vec::with_capacity(4);
    let mut run = |mw: &mut Middleware, p: Bytes| {
        mw.handle_datagram(Time::from_millis(3), peer(20), p);
        while mw.poll_transmit().is_some() {}
        while let Some(w) = mw.poll_tap_frame() {
            tap.push(w);
        }
        let n = tap.len();
        tap.clear();
        n
    };
    for p in packets.drain(..200) {
        run(&mut mw, p);
    }
    ALLOCS.store(0, Ordering::Relaxed);
    ARMED.with(|a| a.set(true));
    let mut written = 0;
    for p in packets.drain(..) {
        written += run(&mut mw, p);
    }
    ARMED.with(|a| a.set(false));
    assert_eq!(written, 200, "every packet reaches the TAP");
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        0,
        "allocations on the receive path"
    );
}
