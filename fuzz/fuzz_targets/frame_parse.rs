//! TAP frame codec (`alm_core::frame`). The input is used three ways:
//!
//! 1. as an Ethernet frame read from the TAP: `parse_tap_frame` must not
//!    panic, and a frame it classifies as multicast data must be re-writable
//!    with `write_multicast_frame` into a frame that parses back to the same
//!    packet;
//! 2. as an IPv4 packet received from the overlay (whole input, and the
//!    input after a 14-byte Ethernet header, so frame seeds serve both):
//!    `write_multicast_frame` writes exactly when
//!    `validate_ipv4_multicast_packet` accepts, the frame goes to the group's
//!    MAC `01:00:5e:…` from `ROUTER_MAC`, and nothing is written on error;
//! 3. as parameters of an IGMP query we build: it must parse back as the
//!    query we meant.

#![no_main]

use std::net::Ipv4Addr;

use alm_core::Duration;
use alm_core::frame::{
    ALL_SYSTEMS, IgmpMessage, IgmpVersion, ROUTER_MAC, TapFrame, V3QueryFields, build_igmp_query,
    build_igmp_v3_query, decode_float_code, encode_float_code, group_mac, is_forwardable_group,
    parse_tap_frame, validate_ipv4_multicast_packet, write_multicast_frame,
};
use arbitrary::Unstructured;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

const ETH_LEN: usize = 14;

fuzz_target!(|data: &[u8]| {
    check_tap_frame(data);
    check_overlay_packet(data);
    if let Some(packet) = data.get(ETH_LEN..) {
        check_overlay_packet(packet);
    }
    // Mutations almost always break the IPv4 and IGMP checksums, which would
    // keep the fuzzer out of everything past them; try again with both fixed.
    let mut fixed = data.to_vec();
    if fix_checksums(&mut fixed) {
        check_tap_frame(&fixed);
        check_overlay_packet(&fixed[ETH_LEN..]);
    }
    check_query(data);
});

/// Rewrite the IPv4 header checksum of an Ethernet/IPv4 frame, and the IGMP
/// checksum if it carries IGMP. Returns whether anything was rewritten.
fn fix_checksums(frame: &mut [u8]) -> bool {
    if frame.len() < ETH_LEN + 20 || frame[12..14] != [0x08, 0x00] {
        return false;
    }
    let ip = &mut frame[ETH_LEN..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 || ihl > ip.len() {
        return false;
    }
    ip[10..12].fill(0);
    let sum = checksum(&ip[..ihl]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    if ip[9] == 2 {
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        if total >= ihl + 4 {
            let igmp = &mut ip[ihl..total];
            igmp[2..4].fill(0);
            let sum = checksum(igmp);
            igmp[2..4].copy_from_slice(&sum.to_be_bytes());
        }
    }
    true
}

/// Internet checksum (RFC 1071).
fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn check_tap_frame(frame: &[u8]) {
    let Ok(TapFrame::Multicast {
        src,
        group,
        ttl,
        packet,
    }) = parse_tap_frame(frame)
    else {
        return;
    };
    assert!(is_forwardable_group(group), "{group} passed as data");
    assert!(ttl >= 1);
    assert_eq!(
        frame.get(ETH_LEN..ETH_LEN + packet.len()),
        Some(packet),
        "packet is not the bytes after the Ethernet header"
    );
    assert_ne!(packet.get(9), Some(&2), "IGMP classified as data");
    // What the host sends may still be refused for the way back (a martian
    // source, say); if it is accepted, it must survive the round trip.
    let mut out = BytesMut::new();
    if write_multicast_frame(packet, &mut out).is_ok() {
        let back = parse_tap_frame(&out).expect("our own frame must parse");
        assert_eq!(
            back,
            TapFrame::Multicast {
                src,
                group,
                ttl,
                packet,
            }
        );
    }
}

fn check_overlay_packet(packet: &[u8]) {
    let verdict = validate_ipv4_multicast_packet(packet);
    let mut out = BytesMut::new();
    let written = write_multicast_frame(packet, &mut out);
    match (verdict, written) {
        (Ok((src, group, ttl)), Ok(())) => {
            assert_eq!(out.len(), ETH_LEN + packet.len());
            assert_eq!(out[..3], [0x01, 0x00, 0x5e], "not a group MAC");
            assert_eq!(out[..6], group_mac(group));
            assert_eq!(out[6..12], ROUTER_MAC);
            assert_eq!(out[12..14], [0x08, 0x00], "ethertype is not IPv4");
            assert_eq!(&out[ETH_LEN..], packet, "packet was altered");
            assert!(is_forwardable_group(group));
            assert!(ttl >= 1);
            assert_eq!(
                validate_ipv4_multicast_packet(&out[ETH_LEN..]),
                Ok((src, group, ttl))
            );
            let back = parse_tap_frame(&out).expect("our own frame must parse");
            assert!(
                matches!(back, TapFrame::Multicast { group: g, .. } if g == group),
                "{back:?}"
            );
        }
        (Err(e), Err(e2)) => {
            assert_eq!(e, e2, "validate and write disagree on why");
            assert!(out.is_empty(), "bytes written on error {e}");
        }
        (v, w) => panic!("validate said {v:?} but write said {w:?}"),
    }
}

fn check_query(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (Ok(router), Ok(group), Ok(v3), Ok(max_resp_ms), Ok(fields)) = (
        u.arbitrary::<[u8; 4]>(),
        u.arbitrary::<Option<[u8; 4]>>(),
        u.arbitrary::<bool>(),
        u.arbitrary::<u32>(),
        u.arbitrary::<Option<(bool, u8, u32)>>(),
    ) else {
        return;
    };
    let router = Ipv4Addr::from(router);
    let group = group.map(Ipv4Addr::from);
    let max_resp = Duration::from_millis(u64::from(max_resp_ms));
    let tenths = max_resp.as_micros() / 100_000;
    let mut out = BytesMut::new();
    let want_v3 = match (v3, fields) {
        (false, _) => {
            build_igmp_query(router, group, IgmpVersion::V2, max_resp, &mut out);
            None
        }
        (true, None) => {
            build_igmp_query(router, group, IgmpVersion::V3, max_resp, &mut out);
            Some(V3QueryFields::default())
        }
        (true, Some((s, qrv, qqi_s))) => {
            let f = V3QueryFields {
                suppress_router_processing: s,
                qrv,
                qqi: Duration::from_secs(u64::from(qqi_s)),
            };
            build_igmp_v3_query(router, group, max_resp, f, &mut out);
            Some(V3QueryFields {
                qrv: if qrv > 7 { 0 } else { qrv },
                qqi: Duration::from_secs(decode_float_code(encode_float_code(u64::from(qqi_s)))),
                ..f
            })
        }
    };
    let parsed = parse_tap_frame(&out);
    let Ok(TapFrame::Igmp {
        src,
        dst,
        msg: IgmpMessage::Query(q),
    }) = parsed
    else {
        panic!("our query does not parse as one: {parsed:?}");
    };
    assert_eq!(src, router);
    assert_eq!(dst, group.unwrap_or(ALL_SYSTEMS));
    assert_eq!(out[..6], group_mac(dst));
    assert_eq!(q.group, group.filter(|g| !g.is_unspecified()));
    assert_eq!(q.v3, want_v3);
    let want_tenths = match want_v3 {
        None => tenths.clamp(1, 255),
        Some(_) => decode_float_code(encode_float_code(tenths)),
    };
    assert_eq!(q.max_resp, Duration::from_millis(want_tenths * 100));
    assert_eq!(q.version(), if want_v3.is_some() { 3 } else { 2 });
}
