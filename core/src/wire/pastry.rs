//! Pastry messages (Rowstron & Druschel 2001 §2–3, with MSPastry-style
//! per-hop acknowledgements and probes). Each follows the common header of
//! [`super`]; the tables below give the body, offsets counted from the body.
//!
//! **Route** (0x01) — a message travelling toward the node numerically closest
//! to `key`. Carries a join, an application lookup or a Scribe message.
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 8  | message id: drawn by the origin, the same on every hop and reroute; echoed by `RouteAck` |
//! | 8  | 16 | key |
//! | 24 | 1  | hops taken so far (incremented at each transmission) |
//! | 25 | 1  | service: 0 join, 1 application lookup, 2.. overlay services |
//! | 26 | 23/35 | origin handle (id, family, address, port) |
//! | .. | rest | service payload, opaque to Pastry |
//!
//! **RouteAck** (0x02) — `message id` (8): the next hop took the message.
//! A node acks every copy it receives but routes on only the first: the
//! origin and the message id name it (a copy comes from a lost ack).
//!
//! **State** (0x03) — routing state given to another node (join replies,
//! leaf-set repair, row repair, replies to announcements).
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 1 | flags: 1 join rows, 2 join final (leaf set), 4 join contact (neighbourhood), 8 leaf set, 16 row reply, 32 gossip (answer if you know better), 64 table RTTs follow the table |
//! | 1 | 4 | sender's measured RTT to the receiver in µs, `u32::MAX` if unknown |
//! | 5 | list | routing-table entries: count (1) then handles |
//! | .. | 4 each | with flag 64 only: the sender's RTT (µs) to each table entry, in order |
//! | .. | list | leaf set: count (1) then handles |
//! | .. | list | neighbourhood set: count (1) then handles |
//!
//! **Announce** (0x04) — "I have joined; consider me for your tables". Body:
//! RTT hint (4), the sender's measured RTT to the receiver, `u32::MAX` if unknown.
//!
//! **Ping** (0x05) — token (8), flags (1): bit 0 set when the sender is an
//! active overlay member that the receiver may add to its tables; RTT hint
//! (4): the sender's measured RTT to the receiver in µs, `u32::MAX` if
//! unknown (RTTs are symmetric enough that the receiver need not measure).
//! **Pong** (0x06) — token (8), echoing the ping's. The pinger puts its own
//! clock reading in the token, so an RTT needs no state. Flags (1): bit 0
//! asks the pinger to report the RTT it measures (an active pinger that
//! did not know the RTT is a candidate for the ponger's tables too; one
//! report replaces a whole ping/pong in the other direction). Report
//! below (4): with bit 0, report only an RTT below this many µs (what the
//! pinger must beat to enter the ponger's tables; `u32::MAX`: any). Bit 1
//! answers a pinger that is still joining: the ponger is active and the
//! joiner can enter its tables only below the report bound, so a joiner
//! that measures no less does not announce itself there. (A node that
//! does not know bit 1 ignores it and announces to everyone, as before.)
//!
//! **LeafSetRequest** (0x07) — empty body. **RowRequest** (0x08) — row (1).
//!
//! **RttReport** (0x09) — RTT (4) in µs the sender measured to the receiver,
//! answering a Pong with flag bit 0 if the RTT is below its report bound.

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    Error, HEADER_LEN, MAX_LIST, MsgType, Reader, Result, emit_header, handle_len, handles_len,
    put_handle, put_handles,
};
use crate::addr::NodeHandle;
use crate::id::NodeId;

/// What a routed message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// A join: the payload is the next routing-table row the joiner needs.
    Join,
    /// An application lookup, delivered as an event at the key's root.
    Lookup,
    /// Another overlay service (Scribe, DHT...), identified by its number.
    Other(u8),
}

impl Service {
    pub fn to_u8(self) -> u8 {
        match self {
            Service::Join => 0,
            Service::Lookup => 1,
            Service::Other(v) => v,
        }
    }
    pub fn from_u8(v: u8) -> Service {
        match v {
            0 => Service::Join,
            1 => Service::Lookup,
            v => Service::Other(v),
        }
    }
}

/// State message flags.
pub mod state_flags {
    pub const JOIN_ROWS: u8 = 1;
    pub const JOIN_FINAL: u8 = 2;
    pub const JOIN_CONTACT: u8 = 4;
    pub const LEAFSET: u8 = 8;
    pub const ROW: u8 = 16;
    /// Unsolicited leaf-set gossip: answer with yours if you know nodes the
    /// sender's leaf set is missing.
    pub const GOSSIP: u8 = 32;
    /// The table entries are followed by the sender's measured RTT to each
    /// (µs, `RTT_UNKNOWN` if not measured): with its own RTT to the sender
    /// the receiver bounds its RTT to each entry from below and measures
    /// only those that could beat what it has.
    pub const TABLE_RTTS: u8 = 64;
    /// Likewise for the leaf set and the neighbourhood set: each list is
    /// followed by the sender's RTT to each member. Both bounds of the
    /// triangle inequality then apply: a member near a sender far from the
    /// receiver is far from the receiver too.
    pub const LIST_RTTS: u8 = 128;
}

/// `RowRequest` for this row asks for the neighbourhood set instead (the
/// |M| nodes nearest the replier), answered like a row: a `State` with
/// `ROW | TABLE_RTTS`. A node near us knows nodes near us that our own
/// tables may have missed. (An older node answers with an empty row.)
pub const NEIGHBORHOOD_ROW: u8 = 0xff;

/// Ping flag: the sender is an active member; consider it for your tables.
pub const PING_ACTIVE: u8 = 1;

/// Pong flag: report the RTT you measure with this pong (`RttReport`).
pub const PONG_WANT_RTT: u8 = 1;

/// Pong flag, to a pinger that is still joining: the ponger is active, and
/// the pinger can enter its tables only at an RTT below `report_below`
/// (`RTT_UNKNOWN`: any). A joiner that measures no less does not announce
/// itself to the ponger: the announcement would change nothing there.
pub const PONG_ANNOUNCE_BELOW: u8 = 2;

/// RTT value meaning "not measured".
pub const RTT_UNKNOWN: u32 = u32::MAX;

/// A routed message. `payload` shares the received buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Drawn by the origin (0: not yet drawn), kept on every hop: with
    /// `origin.id` it names the message, so that copies are dropped.
    pub msg_id: u64,
    pub key: NodeId,
    pub hops: u8,
    pub service: Service,
    pub origin: NodeHandle,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    pub flags: u8,
    pub rtt_hint: u32,
    pub table: Vec<NodeHandle>,
    /// With `TABLE_RTTS`: the sender's RTT to each `table` entry, in order
    /// (missing values are sent as `RTT_UNKNOWN`, extra ones are ignored).
    pub table_rtts: Vec<u32>,
    pub leaves: Vec<NodeHandle>,
    /// With `LIST_RTTS`: the sender's RTT to each of `leaves`, in order
    /// (as `table_rtts`).
    pub leaf_rtts: Vec<u32>,
    pub neighbors: Vec<NodeHandle>,
    /// With `LIST_RTTS`: the sender's RTT to each of `neighbors`.
    pub neighbor_rtts: Vec<u32>,
}

/// Number of RTT values a `State` carries after `list` if `flag` is set.
fn rtts_len(s: &State, flag: u8, list: &[NodeHandle]) -> usize {
    if s.flags & flag != 0 {
        list.len().min(MAX_LIST)
    } else {
        0
    }
}

/// `n` RTT values, in order, for a list of `n` handles just read.
fn get_rtts(r: &mut Reader<'_>, present: bool, n: usize) -> Result<Vec<u32>> {
    if !present {
        return Ok(Vec::new());
    }
    if n * 4 > r.remaining() {
        return Err(Error::Truncated);
    }
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        rtts.push(r.u32()?);
    }
    Ok(rtts)
}

/// `rtts_len` values of `rtts`, padded with `RTT_UNKNOWN`.
fn put_rtts(out: &mut impl BufMut, rtts: &[u32], n: usize) {
    for i in 0..n {
        out.put_u32(rtts.get(i).copied().unwrap_or(RTT_UNKNOWN));
    }
}

/// A decoded Pastry message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repr {
    Route(Route),
    RouteAck {
        msg_id: u64,
    },
    State(State),
    Announce {
        rtt_hint: u32,
    },
    Ping {
        token: u64,
        flags: u8,
        rtt_hint: u32,
    },
    Pong {
        token: u64,
        flags: u8,
        /// With `PONG_WANT_RTT`: report only an RTT below this; with
        /// `PONG_ANNOUNCE_BELOW`: announce yourself only below this
        /// (`RTT_UNKNOWN`: any).
        report_below: u32,
    },
    LeafSetRequest,
    RowRequest {
        row: u8,
    },
    RttReport {
        rtt: u32,
    },
}

impl Repr {
    pub fn msg_type(&self) -> MsgType {
        match self {
            Repr::Route(_) => MsgType::Route,
            Repr::RouteAck { .. } => MsgType::RouteAck,
            Repr::State(_) => MsgType::State,
            Repr::Announce { .. } => MsgType::Announce,
            Repr::Ping { .. } => MsgType::Ping,
            Repr::Pong { .. } => MsgType::Pong,
            Repr::LeafSetRequest => MsgType::LeafSetRequest,
            Repr::RowRequest { .. } => MsgType::RowRequest,
            Repr::RttReport { .. } => MsgType::RttReport,
        }
    }

    /// Parse the body of a message whose header says `ty`. `msg` is the whole
    /// message, so a routed payload can share its buffer without a copy.
    pub fn parse(ty: MsgType, msg: &Bytes) -> Result<Repr> {
        let body = msg.get(HEADER_LEN..).ok_or(Error::Truncated)?;
        let mut r = Reader::new(body);
        let repr = match ty {
            MsgType::Route => {
                let msg_id = r.u64()?;
                let key = r.node_id()?;
                let hops = r.u8()?;
                let service = Service::from_u8(r.u8()?);
                let origin = r.handle()?;
                let start = msg.len() - r.remaining();
                let payload = msg.slice(start..);
                return Ok(Repr::Route(Route {
                    msg_id,
                    key,
                    hops,
                    service,
                    origin,
                    payload,
                }));
            }
            MsgType::RouteAck => Repr::RouteAck { msg_id: r.u64()? },
            MsgType::State => {
                let flags = r.u8()?;
                let rtt_hint = r.u32()?;
                let lists = flags & state_flags::LIST_RTTS != 0;
                let table = r.handles()?;
                let table_rtts =
                    get_rtts(&mut r, flags & state_flags::TABLE_RTTS != 0, table.len())?;
                let leaves = r.handles()?;
                let leaf_rtts = get_rtts(&mut r, lists, leaves.len())?;
                let neighbors = r.handles()?;
                let neighbor_rtts = get_rtts(&mut r, lists, neighbors.len())?;
                Repr::State(State {
                    flags,
                    rtt_hint,
                    table,
                    table_rtts,
                    leaves,
                    leaf_rtts,
                    neighbors,
                    neighbor_rtts,
                })
            }
            MsgType::Announce => Repr::Announce { rtt_hint: r.u32()? },
            MsgType::Ping => Repr::Ping {
                token: r.u64()?,
                flags: r.u8()?,
                rtt_hint: r.u32()?,
            },
            MsgType::Pong => Repr::Pong {
                token: r.u64()?,
                flags: r.u8()?,
                report_below: r.u32()?,
            },
            MsgType::LeafSetRequest => Repr::LeafSetRequest,
            MsgType::RowRequest => Repr::RowRequest { row: r.u8()? },
            MsgType::RttReport => Repr::RttReport { rtt: r.u32()? },
        };
        r.finish()?;
        Ok(repr)
    }

    /// Encoded length including the common header.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Repr::Route(m) => 8 + 16 + 1 + 1 + handle_len(&m.origin) + m.payload.len(),
                Repr::RouteAck { .. } => 8,
                Repr::Pong { .. } => 13,
                Repr::Ping { .. } => 13,
                Repr::State(s) => {
                    1 + 4
                        + handles_len(&s.table)
                        + 4 * rtts_len(s, state_flags::TABLE_RTTS, &s.table)
                        + handles_len(&s.leaves)
                        + 4 * rtts_len(s, state_flags::LIST_RTTS, &s.leaves)
                        + handles_len(&s.neighbors)
                        + 4 * rtts_len(s, state_flags::LIST_RTTS, &s.neighbors)
                }
                Repr::Announce { .. } => 4,
                Repr::LeafSetRequest => 0,
                Repr::RowRequest { .. } => 1,
                Repr::RttReport { .. } => 4,
            }
    }

    pub fn emit(&self, sender: NodeId, out: &mut BytesMut) {
        out.reserve(self.buffer_len());
        self.emit_into(sender, out);
    }

    /// `emit` into any buffer, which must have room for `buffer_len` bytes
    /// (no reservation here: `to_bytes` sizes its buffer exactly).
    fn emit_into(&self, sender: NodeId, out: &mut impl BufMut) {
        emit_header(out, self.msg_type() as u8, sender);
        match self {
            Repr::Route(m) => {
                let mut fixed = [0u8; 8 + 16 + 1 + 1];
                fixed[..8].copy_from_slice(&m.msg_id.to_be_bytes());
                fixed[8..24].copy_from_slice(&m.key.to_be_bytes());
                fixed[24] = m.hops;
                fixed[25] = m.service.to_u8();
                out.put_slice(&fixed);
                put_handle(out, &m.origin);
                out.put_slice(&m.payload);
            }
            Repr::RouteAck { msg_id } => out.put_u64(*msg_id),
            Repr::State(s) => {
                let mut fixed = [s.flags; 1 + 4];
                fixed[1..].copy_from_slice(&s.rtt_hint.to_be_bytes());
                out.put_slice(&fixed);
                use state_flags::{LIST_RTTS, TABLE_RTTS};
                put_handles(out, &s.table);
                put_rtts(out, &s.table_rtts, rtts_len(s, TABLE_RTTS, &s.table));
                put_handles(out, &s.leaves);
                put_rtts(out, &s.leaf_rtts, rtts_len(s, LIST_RTTS, &s.leaves));
                put_handles(out, &s.neighbors);
                put_rtts(out, &s.neighbor_rtts, rtts_len(s, LIST_RTTS, &s.neighbors));
            }
            Repr::Announce { rtt_hint } => out.put_u32(*rtt_hint),
            Repr::Ping {
                token,
                flags,
                rtt_hint,
            } => {
                let mut b = [*flags; 8 + 1 + 4];
                b[..8].copy_from_slice(&token.to_be_bytes());
                b[9..].copy_from_slice(&rtt_hint.to_be_bytes());
                out.put_slice(&b);
            }
            Repr::Pong {
                token,
                flags,
                report_below,
            } => {
                let mut b = [*flags; 8 + 1 + 4];
                b[..8].copy_from_slice(&token.to_be_bytes());
                b[9..].copy_from_slice(&report_below.to_be_bytes());
                out.put_slice(&b);
            }
            Repr::LeafSetRequest => {}
            Repr::RowRequest { row } => out.put_u8(*row),
            Repr::RttReport { rtt } => out.put_u32(*rtt),
        }
    }

    /// Encode into a fresh buffer.
    pub fn to_bytes(&self, sender: NodeId) -> Bytes {
        // Exactly sized, so the `Bytes` takes the allocation over as is.
        let len = self.buffer_len();
        let mut out = Vec::with_capacity(len);
        self.emit_into(sender, &mut out);
        debug_assert_eq!(out.len(), len, "{self:?}");
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Header;
    use super::*;
    use crate::addr::PeerAddr;

    fn h(i: u8) -> NodeHandle {
        NodeHandle::new(
            NodeId(u128::from(i) << 100),
            PeerAddr::v4(10, 0, 0, i, 4000),
        )
    }

    fn roundtrip(repr: Repr) {
        let sender = NodeId(0xfeed);
        let bytes = repr.to_bytes(sender);
        assert_eq!(bytes.len(), repr.buffer_len(), "{repr:?}");
        let mut emitted = BytesMut::from(&b"prefix"[..]);
        repr.emit(sender, &mut emitted);
        assert_eq!(&emitted[6..], &bytes[..], "emit and to_bytes agree");
        let hdr = Header::new_checked(&bytes[..]).unwrap();
        assert_eq!(hdr.sender(), sender);
        let back = Repr::parse(hdr.msg_type().unwrap(), &bytes).unwrap();
        assert_eq!(back, repr);
        // Every strict prefix is rejected, never panics.
        for cut in 0..bytes.len() {
            let short = bytes.slice(..cut);
            if let Ok(hdr) = Header::new_checked(&short[..]) {
                let ty = hdr.msg_type().unwrap();
                // A route's payload is "the rest", so a shorter payload is
                // still a valid route; everything else must fail.
                if let Ok(r) = Repr::parse(ty, &short) {
                    assert!(matches!(r, Repr::Route(_)), "{r:?} from {cut} bytes");
                }
            }
        }
    }

    #[test]
    fn every_message_roundtrips() {
        roundtrip(Repr::Route(Route {
            msg_id: 77,
            key: NodeId(u128::MAX - 3),
            hops: 3,
            service: Service::Lookup,
            origin: h(1),
            payload: Bytes::from_static(b"hello"),
        }));
        roundtrip(Repr::Route(Route {
            msg_id: 0,
            key: NodeId(1),
            hops: 0,
            service: Service::Other(9),
            origin: NodeHandle::new(NodeId(3), PeerAddr("[2001:db8::1]:1".parse().unwrap())),
            payload: Bytes::new(),
        }));
        roundtrip(Repr::RouteAck { msg_id: u64::MAX });
        roundtrip(Repr::State(State {
            flags: state_flags::JOIN_FINAL | state_flags::JOIN_ROWS,
            rtt_hint: 1234,
            table: vec![h(1), h(2)],
            leaves: vec![h(3)],
            neighbors: vec![NodeHandle::new(
                NodeId(9),
                PeerAddr("[2001:db8::7]:4000".parse().unwrap()),
            )],
            ..State::default()
        }));
        roundtrip(Repr::State(State {
            flags: state_flags::JOIN_FINAL | state_flags::LIST_RTTS,
            rtt_hint: 3,
            leaves: vec![h(1), h(2)],
            leaf_rtts: vec![10, RTT_UNKNOWN],
            neighbors: vec![h(3)],
            neighbor_rtts: vec![30],
            ..State::default()
        }));
        roundtrip(Repr::State(State {
            flags: state_flags::ROW | state_flags::TABLE_RTTS,
            rtt_hint: 9,
            table: vec![h(1), h(2)],
            table_rtts: vec![300, RTT_UNKNOWN],
            ..State::default()
        }));
        roundtrip(Repr::State(State::default()));
        roundtrip(Repr::Announce {
            rtt_hint: RTT_UNKNOWN,
        });
        roundtrip(Repr::Ping {
            token: 5,
            flags: 1,
            rtt_hint: 70,
        });
        roundtrip(Repr::Pong {
            token: 6,
            flags: PONG_WANT_RTT,
            report_below: 2_500,
        });
        roundtrip(Repr::RttReport { rtt: 4_321 });
        roundtrip(Repr::LeafSetRequest);
        roundtrip(Repr::RowRequest { row: 31 });
    }

    #[test]
    fn route_payload_shares_the_input_buffer() {
        let repr = Repr::Route(Route {
            msg_id: 1,
            key: NodeId(2),
            hops: 0,
            service: Service::Lookup,
            origin: h(4),
            payload: Bytes::from(vec![9u8; 64]),
        });
        let bytes = repr.to_bytes(NodeId(1));
        let Repr::Route(r) = Repr::parse(MsgType::Route, &bytes).unwrap() else {
            panic!("not a route")
        };
        let start = bytes.as_ptr() as usize;
        let p = r.payload.as_ptr() as usize;
        assert!(p >= start && p < start + bytes.len(), "payload was copied");
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut b = BytesMut::new();
        Repr::Ping {
            token: 1,
            flags: 0,
            rtt_hint: RTT_UNKNOWN,
        }
        .emit(NodeId(1), &mut b);
        b.put_u8(0);
        assert_eq!(
            Repr::parse(MsgType::Ping, &b.freeze()).unwrap_err(),
            Error::Malformed
        );
    }
}
