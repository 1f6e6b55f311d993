//! Scribe control messages and the multicast data packet (Castro et al.,
//! "Scribe", JSAC 2002; data path of the Multicast Middleware paper). All
//! follow the common header of [`super`]; offsets below are from the body.
//!
//! Tree control (direct, datagram):
//!
//! | type | name | body |
//! |-----:|------|------|
//! | 0x20 | JoinAck   | topic (16), depth (1): "I am your parent", with my depth (root = 0) |
//! | 0x21 | Leave     | topic (16): "remove me from your children" |
//! | 0x22 | Heartbeat | topic (16), depth (1): tree-link keep-alive (data also counts) |
//! | 0x23 | Pushdown  | topic (16), ttl (1), joiner handle: a full parent hands a joiner to a child |
//! | 0x24 | TreeHint  | topic (16): "send this topic's data to me" (to an off-tree publisher) |
//! | 0x25 | AnycastFail | topic (16), request id (8): a depth-first anycast found no taker |
//!
//! **Data** (0x30) — one captured IPv4 packet travelling on a topic's tree.
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 16 | topic (group key) |
//! | 16 | 16 | source node id (the publisher) |
//! | 32 | 4  | source's sequence number |
//! | 36 | 1  | flags: bit 0 "to tree" (from an off-tree publisher) |
//! | 37 | 1  | overlay hops left (loop guard) |
//! | 38 | .. | payload (the IPv4 packet), untouched |
//!
//! The header is 18 + 38 = 56 bytes: it fits a `Transmit`'s inline header, so
//! fanning a packet out to N tree neighbours copies 56 bytes N times and
//! never the payload.
//!
//! Routed Scribe messages ride in Pastry `Route`s with these services:
//! [`SERVICE_JOIN`] (empty payload; the child is the route's origin),
//! [`SERVICE_DATA`] (payload: a Data body as above, for an off-tree
//! publisher that does not know a tree node yet) and [`SERVICE_ANYCAST`]
//! (payload: request id (8), visited count (1) and ids, then the request).

use bytes::{BufMut, Bytes, BytesMut};

use super::{Error, HEADER_LEN, Reader, Result, emit_header, handle_len, put_handle};
use crate::addr::NodeHandle;
use crate::id::NodeId;
use crate::io::InlineHeader;

pub const JOIN_ACK: u8 = 0x20;
pub const LEAVE: u8 = 0x21;
pub const HEARTBEAT: u8 = 0x22;
pub const PUSHDOWN: u8 = 0x23;
pub const TREE_HINT: u8 = 0x24;
pub const ANYCAST_FAIL: u8 = 0x25;
pub const DATA: u8 = 0x30;

pub const SERVICE_JOIN: u8 = 2;
pub const SERVICE_DATA: u8 = 3;
pub const SERVICE_ANYCAST: u8 = 4;

/// Data flag: sent by an off-tree publisher toward the tree.
pub const FLAG_TO_TREE: u8 = 1;

/// Length of a data body's fixed part (without the common header).
pub const DATA_FIXED_LEN: usize = 38;
/// Length of a data packet's header on the wire.
pub const DATA_HEADER_LEN: usize = HEADER_LEN + DATA_FIXED_LEN;

/// A Scribe tree-control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    JoinAck {
        topic: NodeId,
        depth: u8,
    },
    Leave {
        topic: NodeId,
    },
    Heartbeat {
        topic: NodeId,
        depth: u8,
    },
    Pushdown {
        topic: NodeId,
        ttl: u8,
        joiner: NodeHandle,
    },
    TreeHint {
        topic: NodeId,
    },
    AnycastFail {
        topic: NodeId,
        request: u64,
    },
}

impl Control {
    pub fn msg_type(&self) -> u8 {
        match self {
            Control::JoinAck { .. } => JOIN_ACK,
            Control::Leave { .. } => LEAVE,
            Control::Heartbeat { .. } => HEARTBEAT,
            Control::Pushdown { .. } => PUSHDOWN,
            Control::TreeHint { .. } => TREE_HINT,
            Control::AnycastFail { .. } => ANYCAST_FAIL,
        }
    }

    pub fn topic(&self) -> NodeId {
        match self {
            Control::JoinAck { topic, .. }
            | Control::Leave { topic }
            | Control::Heartbeat { topic, .. }
            | Control::Pushdown { topic, .. }
            | Control::TreeHint { topic }
            | Control::AnycastFail { topic, .. } => *topic,
        }
    }

    /// Parse the body of a control message of type `ty`.
    pub fn parse(ty: u8, msg: &[u8]) -> Result<Control> {
        let body = msg.get(HEADER_LEN..).ok_or(Error::Truncated)?;
        let mut r = Reader::new(body);
        let topic = r.node_id()?;
        let c = match ty {
            JOIN_ACK => Control::JoinAck {
                topic,
                depth: r.u8()?,
            },
            LEAVE => Control::Leave { topic },
            HEARTBEAT => Control::Heartbeat {
                topic,
                depth: r.u8()?,
            },
            PUSHDOWN => Control::Pushdown {
                topic,
                ttl: r.u8()?,
                joiner: r.handle()?,
            },
            TREE_HINT => Control::TreeHint { topic },
            ANYCAST_FAIL => Control::AnycastFail {
                topic,
                request: r.u64()?,
            },
            other => return Err(Error::UnknownType(other)),
        };
        r.finish()?;
        Ok(c)
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + 16
            + match self {
                Control::JoinAck { .. } | Control::Heartbeat { .. } => 1,
                Control::Leave { .. } | Control::TreeHint { .. } => 0,
                Control::Pushdown { joiner, .. } => 1 + handle_len(joiner),
                Control::AnycastFail { .. } => 8,
            }
    }

    pub fn to_bytes(&self, sender: NodeId) -> Bytes {
        let mut out = BytesMut::with_capacity(self.buffer_len());
        emit_header(&mut out, self.msg_type(), sender);
        out.put_slice(&self.topic().to_be_bytes());
        match self {
            Control::JoinAck { depth, .. } | Control::Heartbeat { depth, .. } => out.put_u8(*depth),
            Control::Leave { .. } | Control::TreeHint { .. } => {}
            Control::Pushdown { ttl, joiner, .. } => {
                out.put_u8(*ttl);
                put_handle(&mut out, joiner);
            }
            Control::AnycastFail { request, .. } => out.put_u64(*request),
        }
        out.freeze()
    }
}

/// The fixed part of a data packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    pub topic: NodeId,
    pub source: NodeId,
    pub seq: u32,
    pub flags: u8,
    pub hops_left: u8,
}

mod data_field {
    use core::ops::Range;
    pub const TOPIC: Range<usize> = 0..16;
    pub const SOURCE: Range<usize> = 16..32;
    pub const SEQ: Range<usize> = 32..36;
    pub const FLAGS: usize = 36;
    pub const HOPS: usize = 37;
}

impl DataHeader {
    /// Parse a data body (after the common header). Returns the header and
    /// the offset of the payload within `body`.
    pub fn parse(body: &[u8]) -> Result<DataHeader> {
        if body.len() < DATA_FIXED_LEN {
            return Err(Error::Truncated);
        }
        let id = |r: core::ops::Range<usize>| {
            let mut b = [0u8; 16];
            b.copy_from_slice(&body[r]);
            NodeId::from_be_bytes(b)
        };
        let mut seq = [0u8; 4];
        seq.copy_from_slice(&body[data_field::SEQ]);
        Ok(DataHeader {
            topic: id(data_field::TOPIC),
            source: id(data_field::SOURCE),
            seq: u32::from_be_bytes(seq),
            flags: body[data_field::FLAGS],
            hops_left: body[data_field::HOPS],
        })
    }

    /// Write the fixed part (no common header) — used inside routed data.
    pub fn emit_body(&self, out: &mut impl BufMut) {
        out.put_slice(&self.topic.to_be_bytes());
        out.put_slice(&self.source.to_be_bytes());
        out.put_u32(self.seq);
        out.put_u8(self.flags);
        out.put_u8(self.hops_left);
    }

    /// The full on-wire header (common header + fixed part) as an inline
    /// header for a `Transmit`; the payload goes in the body.
    pub fn to_inline(&self, sender: NodeId) -> InlineHeader {
        let mut h = InlineHeader::new();
        h.push(super::VERSION);
        h.push(DATA);
        h.extend_from_slice(&sender.to_be_bytes());
        h.extend_from_slice(&self.topic.to_be_bytes());
        h.extend_from_slice(&self.source.to_be_bytes());
        h.extend_from_slice(&self.seq.to_be_bytes());
        h.push(self.flags);
        h.push(self.hops_left);
        h
    }
}

/// A depth-first anycast request carried in a routed message, and then
/// passed from tree node to tree node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anycast {
    pub request: u64,
    pub requester: NodeHandle,
    pub visited: Vec<NodeId>,
    pub payload: Bytes,
}

/// Most nodes a depth-first anycast visits before giving up.
pub const ANYCAST_MAX_VISITED: usize = 64;

impl Anycast {
    pub fn parse(buf: &Bytes) -> Result<Anycast> {
        let mut r = Reader::new(buf);
        let request = r.u64()?;
        let requester = r.handle()?;
        let n = usize::from(r.u8()?);
        if n > ANYCAST_MAX_VISITED || n * 16 > r.remaining() {
            return Err(Error::Malformed);
        }
        let mut visited = Vec::with_capacity(n);
        for _ in 0..n {
            visited.push(r.node_id()?);
        }
        let start = buf.len() - r.remaining();
        Ok(Anycast {
            request,
            requester,
            visited,
            payload: buf.slice(start..),
        })
    }

    pub fn to_bytes(&self) -> Bytes {
        let n = self.visited.len().min(ANYCAST_MAX_VISITED);
        let mut out = BytesMut::with_capacity(
            8 + handle_len(&self.requester) + 1 + 16 * n + self.payload.len(),
        );
        out.put_u64(self.request);
        put_handle(&mut out, &self.requester);
        out.put_u8(n as u8);
        for id in &self.visited[..n] {
            out.put_slice(&id.to_be_bytes());
        }
        out.put_slice(&self.payload);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::PeerAddr;
    use crate::wire::Header;

    #[test]
    fn controls_roundtrip_and_reject_prefixes() {
        let t = NodeId(0xabcdef);
        let j = NodeHandle::new(NodeId(5), PeerAddr::v4(10, 0, 0, 5, 4000));
        for c in [
            Control::JoinAck { topic: t, depth: 3 },
            Control::Leave { topic: t },
            Control::Heartbeat { topic: t, depth: 0 },
            Control::Pushdown {
                topic: t,
                ttl: 4,
                joiner: j,
            },
            Control::TreeHint { topic: t },
            Control::AnycastFail {
                topic: t,
                request: 9,
            },
        ] {
            let b = c.to_bytes(NodeId(1));
            assert_eq!(b.len(), c.buffer_len());
            let h = Header::new_checked(&b[..]).unwrap();
            assert_eq!(Control::parse(h.raw_type(), &b).unwrap(), c);
            for cut in 0..b.len() {
                assert!(Control::parse(h.raw_type(), &b[..cut]).is_err());
            }
        }
        assert!(Control::parse(0x2f, &[1u8; 40]).is_err());
    }

    #[test]
    fn data_header_is_56_bytes_and_roundtrips() {
        let h = DataHeader {
            topic: NodeId(1),
            source: NodeId(2),
            seq: 77,
            flags: FLAG_TO_TREE,
            hops_left: 9,
        };
        let inline = h.to_inline(NodeId(3));
        assert_eq!(inline.len(), DATA_HEADER_LEN);
        assert_eq!(DATA_HEADER_LEN, 56);
        assert!(!inline.spilled(), "the header must stay inline");
        let hdr = Header::new_checked(&inline[..]).unwrap();
        assert_eq!(hdr.raw_type(), DATA);
        assert_eq!(hdr.sender(), NodeId(3));
        assert_eq!(DataHeader::parse(hdr.body()).unwrap(), h);
        assert_eq!(
            DataHeader::parse(&inline[HEADER_LEN..50]).unwrap_err(),
            Error::Truncated
        );
        let mut body = BytesMut::new();
        h.emit_body(&mut body);
        assert_eq!(&body[..], &inline[HEADER_LEN..]);
    }

    #[test]
    fn anycast_roundtrips_and_bounds_visited() {
        let a = Anycast {
            request: 4,
            requester: NodeHandle::new(NodeId(8), PeerAddr::v4(10, 0, 0, 8, 1)),
            visited: vec![NodeId(1), NodeId(2)],
            payload: Bytes::from_static(b"want piece 3"),
        };
        assert_eq!(Anycast::parse(&a.to_bytes()).unwrap(), a);
        let mut bad = BytesMut::from(&a.to_bytes()[..]);
        bad[8 + 23] = 200; // visited count beyond the cap
        assert!(Anycast::parse(&bad.freeze()).is_err());
    }
}
