//! The other overlay decoders: Scribe tree control, the multicast data
//! header, depth-first anycast requests, and the DHT's routed requests and
//! direct messages. Decoding arbitrary bytes must never panic, and whatever
//! decodes must encode back to something that decodes to the same value.

#![no_main]

use alm_core::NodeId;
use alm_core::wire::dht::{Direct, Request};
use alm_core::wire::scribe::{Anycast, Control, DataHeader};
use alm_core::wire::{HEADER_LEN, Header};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let msg = Bytes::copy_from_slice(rest);
    match selector % 4 {
        0 => {
            // A whole message with the common header: Scribe control or DHT
            // direct, by its type byte.
            let Ok(hdr) = Header::new_checked(&msg[..]) else {
                return;
            };
            let sender = hdr.sender();
            let ty = hdr.raw_type();
            if let Ok(c) = Control::parse(ty, &msg) {
                let out = c.to_bytes(sender);
                assert_eq!(out.len(), c.buffer_len());
                assert_eq!(Control::parse(ty, &out).as_ref(), Ok(&c));
            }
            if let Ok(d) = Direct::parse(ty, &msg) {
                let out = d.to_bytes(sender);
                let back = Direct::parse(out[1], &out).expect("own encoding must parse");
                assert_eq!(back, d);
            }
        }
        1 => {
            // A data packet's fixed header.
            if let Ok(h) = DataHeader::parse(&msg) {
                let inline = h.to_inline(NodeId(7));
                assert_eq!(DataHeader::parse(&inline[HEADER_LEN..]), Ok(h));
                let mut body = BytesMut::new();
                h.emit_body(&mut body);
                assert_eq!(&body[..], &msg[..body.len()]);
            }
        }
        2 => {
            if let Ok(a) = Anycast::parse(&msg) {
                assert_eq!(Anycast::parse(&a.to_bytes()).as_ref(), Ok(&a));
            }
        }
        _ => {
            if let Ok(r) = Request::parse(&msg) {
                assert_eq!(Request::parse(&r.to_bytes()).as_ref(), Ok(&r));
            }
        }
    }
});
