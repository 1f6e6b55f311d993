//! Pastry wire codec: arbitrary bytes through `Header::new_checked` and
//! `pastry::Repr::parse`. Decoding must never panic, and whatever decodes
//! must re-encode to the very same bytes and decode to the same value:
//! every field has a fixed width or an explicit count and trailing bytes are
//! rejected, so the encoding is canonical and `emit(parse(b)) == b`.

#![no_main]

use alm_core::wire::Header;
use alm_core::wire::pastry::Repr;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let msg = Bytes::copy_from_slice(data);
    let Ok(hdr) = Header::new_checked(&msg[..]) else {
        return;
    };
    let sender = hdr.sender();
    let Ok(ty) = hdr.msg_type() else {
        return;
    };
    let Ok(repr) = Repr::parse(ty, &msg) else {
        return;
    };
    assert_eq!(repr.msg_type(), ty, "parsed into another message type");

    let out = repr.to_bytes(sender);
    assert_eq!(
        out.len(),
        repr.buffer_len(),
        "buffer_len disagrees with emit"
    );
    assert_eq!(out, msg, "re-encoding is not byte-identical: {repr:?}");

    let hdr2 = Header::new_checked(&out[..]).expect("own header must check");
    assert_eq!(hdr2.sender(), sender);
    assert_eq!(hdr2.msg_type(), Ok(ty));
    let back = Repr::parse(ty, &out).expect("own encoding must parse");
    assert_eq!(back, repr, "parse(emit(x)) != x");
});
