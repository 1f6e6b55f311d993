//! Wire formats. Our own overlay protocol is hand-written here in the smoltcp
//! shape: a checked view over the fixed header (`Header`), and per message a
//! `Repr` with `parse` / `buffer_len` / `emit`. Frames from the TAP device
//! (Ethernet/IPv4/IGMP) are parsed with etherparse elsewhere.
//!
//! Every alm message, datagram or stream, starts with the same header:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0      | 1    | protocol version, currently [`VERSION`] |
//! | 1      | 1    | message type ([`MsgType`]) |
//! | 2      | 16   | sender's `NodeId`, big-endian |
//!
//! All integers are big-endian. Decoders take bytes from anyone: they return
//! [`Error`] and never panic, and they never allocate more than the input
//! length justifies.

pub mod dht;
pub mod pastry;
pub mod scribe;

use bytes::BufMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::addr::{NodeHandle, PeerAddr};
use crate::id::NodeId;

/// Version of the alm wire protocol spoken by this build. Nodes of other
/// versions do not understand each other: their messages are counted as
/// decode errors and dropped. (2: `Pong` carries a report bound; 3: a
/// `State` may list RTTs for its leaf and neighbourhood sets.)
pub const VERSION: u8 = 3;

/// Why a message could not be decoded. Deliberately coarse, like smoltcp's:
/// the caller counts it and drops the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("message truncated")]
    Truncated,
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    #[error("malformed field")]
    Malformed,
}

pub type Result<T> = core::result::Result<T, Error>;

/// Message types. Ranges: 0x01–0x1f Pastry, 0x20–0x2f Scribe, 0x30–0x3f data
/// path, 0x40–0x4f MultiCache, 0x50–0x5f DHT/management.
///
/// Only Pastry's types are listed here; the services dispatch on the raw
/// type byte of their range (Scribe: [`scribe`]; DHT: [`dht`], whose
/// 0x50–0x54 are the ops of requests routed inside a Pastry `Route` and
/// 0x58–0x5a the direct Reply, Replicate and ReplicateAck).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MsgType {
    Route = 0x01,
    RouteAck = 0x02,
    State = 0x03,
    Announce = 0x04,
    Ping = 0x05,
    Pong = 0x06,
    LeafSetRequest = 0x07,
    RowRequest = 0x08,
    RttReport = 0x09,
}

impl MsgType {
    pub fn from_u8(v: u8) -> Option<MsgType> {
        Some(match v {
            0x01 => MsgType::Route,
            0x02 => MsgType::RouteAck,
            0x03 => MsgType::State,
            0x04 => MsgType::Announce,
            0x05 => MsgType::Ping,
            0x06 => MsgType::Pong,
            0x07 => MsgType::LeafSetRequest,
            0x08 => MsgType::RowRequest,
            0x09 => MsgType::RttReport,
            _ => return None,
        })
    }
}

mod field {
    pub type Field = core::ops::Range<usize>;
    pub const VERSION: usize = 0;
    pub const TYPE: usize = 1;
    pub const SENDER: Field = 2..18;
    pub const BODY: usize = 18;
}

/// Length of the common header.
pub const HEADER_LEN: usize = field::BODY;

/// Checked view over the common header of an alm message.
#[derive(Debug, Clone, Copy)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wrap `buffer` after checking that the header's accessors cannot panic
    /// and that the version is ours.
    pub fn new_checked(buffer: T) -> Result<Header<T>> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VERSION] != VERSION {
            return Err(Error::Version(b[field::VERSION]));
        }
        Ok(Header { buffer })
    }

    pub fn raw_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn msg_type(&self) -> Result<MsgType> {
        MsgType::from_u8(self.raw_type()).ok_or(Error::UnknownType(self.raw_type()))
    }

    pub fn sender(&self) -> NodeId {
        let mut b = [0u8; 16];
        b.copy_from_slice(&self.buffer.as_ref()[field::SENDER]);
        NodeId::from_be_bytes(b)
    }

    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[field::BODY..]
    }
}

/// Write the common header.
#[inline]
pub fn emit_header(out: &mut impl BufMut, ty: u8, sender: NodeId) {
    let mut h = [0u8; HEADER_LEN];
    h[field::VERSION] = VERSION;
    h[field::TYPE] = ty;
    h[field::SENDER].copy_from_slice(&sender.to_be_bytes());
    out.put_slice(&h);
}

/// Bounds-checked reader over a message body. Every accessor returns
/// `Error::Truncated` instead of reading past the end.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub fn node_id(&mut self) -> Result<NodeId> {
        Ok(NodeId::from_be_bytes(self.array()?))
    }
    /// A peer address: family (4 or 6), address, port.
    pub fn peer_addr(&mut self) -> Result<PeerAddr> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(Error::Malformed),
        };
        let port = self.u16()?;
        Ok(PeerAddr(SocketAddr::new(ip, port)))
    }
    pub fn handle(&mut self) -> Result<NodeHandle> {
        let id = self.node_id()?;
        let addr = self.peer_addr()?;
        Ok(NodeHandle { id, addr })
    }
    /// A list of handles preceded by a one-byte count. Allocation is bounded
    /// by what the remaining input could possibly hold.
    pub fn handles(&mut self) -> Result<Vec<NodeHandle>> {
        let n = usize::from(self.u8()?);
        if n * MIN_HANDLE_LEN > self.remaining() {
            return Err(Error::Truncated);
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            // IPv4 handles (all of them, in practice) in one bounds check;
            // anything else, or too short, takes the general path and its
            // errors.
            if let Some((h, rest)) = self.buf.split_first_chunk::<MIN_HANDLE_LEN>()
                && h[16] == 4
            {
                let id = NodeId::from_be_bytes(h[..16].try_into().expect("16 bytes"));
                let ip = Ipv4Addr::new(h[17], h[18], h[19], h[20]);
                let port = u16::from_be_bytes([h[21], h[22]]);
                let addr = PeerAddr(SocketAddr::new(IpAddr::V4(ip), port));
                v.push(NodeHandle { id, addr });
                self.buf = rest;
                continue;
            }
            v.push(self.handle()?);
        }
        Ok(v)
    }
    /// Succeeds only if nothing is left: trailing garbage is malformed.
    pub fn finish(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::Malformed)
        }
    }
}

/// Smallest encoded handle: 16-byte id, family, IPv4, port.
pub const MIN_HANDLE_LEN: usize = 16 + 1 + 4 + 2;

pub fn peer_addr_len(a: &PeerAddr) -> usize {
    match a.0 {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => 1 + 16 + 2,
    }
}

pub fn handle_len(h: &NodeHandle) -> usize {
    16 + peer_addr_len(&h.addr)
}

pub fn put_peer_addr(out: &mut impl BufMut, a: &PeerAddr) {
    match a.0 {
        SocketAddr::V4(v4) => {
            let mut b = [4u8; 1 + 4 + 2];
            b[1..5].copy_from_slice(&v4.ip().octets());
            b[5..].copy_from_slice(&v4.port().to_be_bytes());
            out.put_slice(&b);
        }
        SocketAddr::V6(v6) => {
            let mut b = [6u8; 1 + 16 + 2];
            b[1..17].copy_from_slice(&v6.ip().octets());
            b[17..].copy_from_slice(&v6.port().to_be_bytes());
            out.put_slice(&b);
        }
    }
}

/// A handle: its id, then its address (see `put_peer_addr`). Each is
/// assembled on the stack and written with one fixed-size copy.
#[inline]
pub fn put_handle(out: &mut impl BufMut, h: &NodeHandle) {
    match h.addr.0 {
        SocketAddr::V4(v4) => {
            let mut b = [4u8; 16 + 1 + 4 + 2];
            b[..16].copy_from_slice(&h.id.to_be_bytes());
            b[17..21].copy_from_slice(&v4.ip().octets());
            b[21..].copy_from_slice(&v4.port().to_be_bytes());
            out.put_slice(&b);
        }
        SocketAddr::V6(v6) => {
            let mut b = [6u8; 16 + 1 + 16 + 2];
            b[..16].copy_from_slice(&h.id.to_be_bytes());
            b[17..33].copy_from_slice(&v6.ip().octets());
            b[33..].copy_from_slice(&v6.port().to_be_bytes());
            out.put_slice(&b);
        }
    }
}

/// Lists are capped at 255 entries on the wire.
pub const MAX_LIST: usize = u8::MAX as usize;

pub fn handles_len(v: &[NodeHandle]) -> usize {
    1 + v.iter().take(MAX_LIST).map(handle_len).sum::<usize>()
}

pub fn put_handles(out: &mut impl BufMut, v: &[NodeHandle]) {
    let n = v.len().min(MAX_LIST);
    out.put_u8(n as u8);
    for h in &v[..n] {
        put_handle(out, h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn header_rejects_short_and_foreign_versions() {
        assert_eq!(
            Header::new_checked(&[1u8; 5][..]).unwrap_err(),
            Error::Truncated
        );
        let mut b = [0u8; HEADER_LEN];
        b[0] = 9;
        assert_eq!(Header::new_checked(&b[..]).unwrap_err(), Error::Version(9));
        b[0] = VERSION;
        b[1] = 0xee;
        let h = Header::new_checked(&b[..]).unwrap();
        assert_eq!(h.msg_type().unwrap_err(), Error::UnknownType(0xee));
    }

    #[test]
    fn handles_roundtrip_v4_and_v6() {
        let hs = vec![
            NodeHandle::new(NodeId(7), PeerAddr::v4(10, 1, 2, 3, 9000)),
            NodeHandle::new(NodeId(u128::MAX), PeerAddr("[::1]:5".parse().unwrap())),
        ];
        let mut out = BytesMut::new();
        put_handles(&mut out, &hs);
        assert_eq!(out.len(), handles_len(&hs));
        let mut r = Reader::new(&out);
        assert_eq!(r.handles().unwrap(), hs);
        r.finish().unwrap();
    }

    #[test]
    fn handle_list_count_cannot_force_allocation() {
        // Claims 255 handles but carries none.
        let mut r = Reader::new(&[255u8, 0, 0]);
        assert_eq!(r.handles().unwrap_err(), Error::Truncated);
        let mut r = Reader::new(&[0u8; 23][..]);
        r.take(16).unwrap();
        assert_eq!(r.peer_addr().unwrap_err(), Error::Malformed);
    }
}
