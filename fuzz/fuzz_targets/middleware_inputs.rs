//! A whole middleware host driven by arbitrary TAP frames, overlay
//! datagrams and timeouts. Beyond "never panics, always drains": every
//! frame it writes into the TAP is a valid multicast IPv4 frame with the
//! group's MAC and our router MAC, for a group a local listener joined —
//! nothing from the network can make it inject anything else.

#![no_main]

use std::net::Ipv4Addr;

use alm_core::frame::{self, ROUTER_MAC};
use alm_core::wire::scribe::DataHeader;
use alm_core::{Config, Middleware, MiddlewareConfig, Node, NodeId, PeerAddr, Time, Topic};
use arbitrary::Arbitrary;
use bytes::{BufMut, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    /// Raw bytes from the TAP.
    Tap(Vec<u8>),
    /// An IGMPv2 report or leave for a group (so joins happen often).
    Igmp {
        leave: bool,
        group: [u8; 4],
    },
    /// Raw bytes at the overlay port.
    Datagram {
        from: u8,
        bytes: Vec<u8>,
    },
    /// A data packet on a group's tree, header well-formed, packet arbitrary.
    Data {
        from: u8,
        group: [u8; 4],
        seq: u32,
        packet: Vec<u8>,
    },
    Timeout {
        advance_ms: u16,
    },
}

fn peer(i: u8) -> PeerAddr {
    PeerAddr::v4(10, 0, 0, 1 + i % 8, 4000)
}

fn igmp_v2(leave: bool, group: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(46);
    let dst = if leave {
        Ipv4Addr::new(224, 0, 0, 2)
    } else {
        group
    };
    f.extend_from_slice(&frame::group_mac(dst));
    f.extend_from_slice(&[2, 0, 0, 0, 0, 9, 0x08, 0x00]);
    let src = [172u8, 16, 0, 9];
    let mut ip = [0u8; 24];
    ip[0] = 0x46; // IHL 6: Router Alert
    ip[3] = 32;
    ip[8] = 1;
    ip[9] = 2;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst.octets());
    ip[20..24].copy_from_slice(&[0x94, 0x04, 0, 0]);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut igmp = [0u8; 8];
    igmp[0] = if leave { 0x17 } else { 0x16 };
    igmp[4..8].copy_from_slice(&group.octets());
    let sum = checksum(&igmp);
    igmp[2..4].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&igmp);
    f
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fuzz_target!(|inputs: Vec<Input>| {
    let me = NodeId(0x5555 << 112);
    let node = Node::new(Config::default(), me, PeerAddr::v4(10, 0, 0, 200, 4000), 1);
    let mut mw = Middleware::new(node, MiddlewareConfig::new(Ipv4Addr::new(172, 16, 0, 5)));
    let mut now = Time::ZERO;
    mw.start(now, &[]);
    for input in inputs.into_iter().take(256) {
        match input {
            Input::Tap(b) => mw.handle_tap_frame(now, Bytes::from(b)),
            Input::Igmp { leave, group } => {
                let g = Ipv4Addr::from(group);
                mw.handle_tap_frame(now, Bytes::from(igmp_v2(leave, g)));
            }
            Input::Datagram { from, bytes } => {
                mw.handle_datagram(now, peer(from), Bytes::from(bytes))
            }
            Input::Data {
                from,
                group,
                seq,
                packet,
            } => {
                let topic = Topic::ipv4_group(Ipv4Addr::from(group));
                let hdr = DataHeader {
                    topic: topic.0,
                    source: NodeId(u128::from(from) + 1),
                    seq,
                    flags: 1, // "to tree": accepted from anyone
                    hops_left: 8,
                };
                let mut b = BytesMut::new();
                b.put_slice(&hdr.to_inline(NodeId(u128::from(from) + 1)));
                b.put_slice(&packet);
                mw.handle_datagram(now, peer(from), b.freeze());
            }
            Input::Timeout { advance_ms } => {
                now += alm_core::Duration::from_millis(u64::from(advance_ms));
                mw.handle_timeout(now);
            }
        }
        let mut n = 0;
        while mw.poll_transmit().is_some() {
            n += 1;
            assert!(n < 100_000, "transmits do not drain");
        }
        while mw.poll_event().is_some() {}
        while let Some(w) = mw.poll_tap_frame() {
            let f = w.to_vec();
            assert_eq!(&f[6..12], &ROUTER_MAC);
            if w.packet.get(9) == Some(&2) {
                continue; // our own IGMP queries
            }
            let (_, group, _) = frame::validate_ipv4_multicast_packet(&w.packet)
                .expect("only valid multicast packets reach the TAP");
            assert_eq!(&f[..6], &frame::group_mac(group));
            assert!(
                mw.igmp().groups().any(|g| g == group),
                "injected {group}, which no local listener joined"
            );
        }
    }
});
