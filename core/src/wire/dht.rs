//! DHT messages of the management ring: small leased records stored at the
//! node responsible for a key and replicated on its leaf-set neighbours.
//!
//! A record is named by a namespace (at most [`MAX_NAMESPACE`] bytes) and a
//! key (at most [`MAX_KEY`] bytes) and lives at the node closest to
//! `NodeId::hash(&[namespace, key])`. A record put with a *bucket* lives
//! instead at `NodeId::hash(&[namespace, b"", bucket])`, with the other
//! records of that bucket, so one `List` request can read them all (the
//! active-group directory uses this). Values are at most [`MAX_VALUE`] bytes.
//!
//! Durations on the wire are relative (milliseconds left, milliseconds
//! since creation): nodes share no clock.
//!
//! **Requests** travel in a Pastry `Route` with service [`SERVICE_DHT`]; the
//! route's payload (no common header: the route already has one) is:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 1 | op: 0x50 Put, 0x51 Get, 0x52 Renew, 0x53 Release, 0x54 List |
//! | 1 | 8 | request id, chosen by the requester, echoed by the reply |
//! | 9 | 1+n | namespace: length (1), bytes |
//! | .. | 1+n | key: length (1), bytes (empty for List) |
//! | .. | 1 (+2) | bucket flag (0 or 1), then the bucket (2) if 1 |
//! | .. | | op-specific, below |
//!
//! | op | op-specific fields |
//! |----|--------------------|
//! | Put | owner id (16), expected version (8: 0 "free or mine", `u64::MAX` "any", else that version), lease ms (4), value: length (2), bytes |
//! | Get, List | none |
//! | Renew | owner id (16), lease ms (4) |
//! | Release | owner id (16) |
//!
//! **Reply** (0x58, direct to the requester):
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 8 | request id |
//! | 8 | 1 | status: 0 ok, 1 not found, 2 conflict, 3 store full, 4 not owner, 5 invalid |
//! | 9 | 1 | flags: bit 0 the list was truncated |
//! | 10 | 1 | record count (at most [`MAX_REPLY_RECORDS`]) |
//! | 11 | .. | records |
//!
//! A record in a reply: key length (1) and key, owner (16), version (8),
//! lease ms left (4), age ms (4), value length (2) and value. A Put/Renew
//! reply carries the record without its value; a Conflict the record that
//! won; a Get the record; a List the bucket's records.
//!
//! **Replicate** (0x59): write id (8; 0 unless an acknowledgement is
//! wanted), kind (1: 1 proposal of a write by a responsible node, answered
//! by a ReplicateAck; 2 hand-off or anti-entropy push, applied only if it
//! does not contradict the receiver's copy; 3 abort of a proposal), base
//! version (8: for a proposal, the version the write replaced, 0 if it
//! created the record; for an abort, the aborted version), namespace, key
//! and bucket as in a request, owner (16), version (8), lease ms left (4; 0
//! means released, or for an abort "no record"), age ms (4), value length
//! (2) and value. An abort carries the record as it was before the aborted
//! proposal.
//!
//! **ReplicateAck** (0x5a): write id (8), result (1: 0 refused because the
//! replica's store is full, 1 stored, 2 conflict), then for a conflict the
//! live record the replica holds (as in a reply).
//!
//! **Fetch** (0x5b, from a node about to answer for a key it holds no
//! record of, to its leaf-set neighbours around the key): fetch id (8),
//! namespace, key and bucket.
//!
//! **Fetched** (0x5c): fetch id (8), record count (1: 0 or 1), the live
//! record held (as in a reply).
//!
//! Versions are `lineage << 24 | sequence`: a record created afresh gets a
//! random 40-bit lineage (never 0) and sequence 1, and every put of it adds
//! one to the sequence. So a version is never 0 nor `u64::MAX`, and two
//! versions of one lineage are ordered.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Error, HEADER_LEN, Reader, Result, emit_header};
use crate::id::NodeId;

pub const PUT: u8 = 0x50;
pub const GET: u8 = 0x51;
pub const RENEW: u8 = 0x52;
pub const RELEASE: u8 = 0x53;
pub const LIST: u8 = 0x54;
pub const REPLY: u8 = 0x58;
pub const REPLICATE: u8 = 0x59;
pub const REPLICATE_ACK: u8 = 0x5a;
pub const FETCH: u8 = 0x5b;
pub const FETCHED: u8 = 0x5c;

/// Kinds of a Replicate.
pub const REP_PROPOSE: u8 = 1;
pub const REP_HANDOFF: u8 = 2;
pub const REP_ABORT: u8 = 3;

/// Pastry service number of routed DHT requests.
pub const SERVICE_DHT: u8 = 5;

pub const MAX_NAMESPACE: usize = 32;
pub const MAX_KEY: usize = 64;
pub const MAX_VALUE: usize = 512;
/// Most records in one reply.
pub const MAX_REPLY_RECORDS: usize = 32;
/// A List reply stops adding records once its records take this many bytes,
/// so it fits a datagram.
pub const MAX_REPLY_RECORD_BYTES: usize = 1_200;

/// Expected-version encodings of a Put.
pub const EXPECT_FREE: u64 = 0;
pub const EXPECT_ANY: u64 = u64::MAX;

/// Where a record lives: namespace, key, and an optional bucket that
/// overrides the placement (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordName {
    pub namespace: Bytes,
    pub key: Bytes,
    pub bucket: Option<u16>,
}

impl RecordName {
    /// The ring position of the record: its responsible node is the live
    /// node closest to it.
    pub fn ring_key(&self) -> NodeId {
        match self.bucket {
            None => NodeId::hash(&[&self.namespace, &self.key]),
            Some(b) => bucket_ring_key(&self.namespace, b),
        }
    }

    /// Whether the lengths fit the wire bounds.
    pub fn is_valid(&self) -> bool {
        self.namespace.len() <= MAX_NAMESPACE && self.key.len() <= MAX_KEY
    }

    fn buffer_len(&self) -> usize {
        2 + self.namespace.len() + self.key.len() + 1 + if self.bucket.is_some() { 2 } else { 0 }
    }

    fn emit(&self, out: &mut BytesMut) {
        out.put_u8(self.namespace.len() as u8);
        out.put_slice(&self.namespace);
        out.put_u8(self.key.len() as u8);
        out.put_slice(&self.key);
        match self.bucket {
            None => out.put_u8(0),
            Some(b) => {
                out.put_u8(1);
                out.put_u16(b);
            }
        }
    }

    fn parse(r: &mut Reader<'_>) -> Result<RecordName> {
        let namespace = bounded(r, usize::from(r.clone().u8()?), MAX_NAMESPACE, 1)?;
        let key = bounded(r, usize::from(r.clone().u8()?), MAX_KEY, 1)?;
        let bucket = match r.u8()? {
            0 => None,
            1 => Some(r.u16()?),
            _ => return Err(Error::Malformed),
        };
        Ok(RecordName {
            namespace,
            key,
            bucket,
        })
    }
}

/// Ring position of a bucket of `namespace`.
pub fn bucket_ring_key(namespace: &[u8], bucket: u16) -> NodeId {
    // Three parts: never equal to a two-part (namespace, key) hash.
    NodeId::hash(&[namespace, b"", &bucket.to_be_bytes()])
}

/// Read a length-prefixed byte string: skips the `prefix`-byte length
/// (already peeked as `len`), checks `len <= max`, copies the bytes.
fn bounded(r: &mut Reader<'_>, len: usize, max: usize, prefix: usize) -> Result<Bytes> {
    if len > max {
        return Err(Error::Malformed);
    }
    r.take(prefix)?;
    Ok(Bytes::copy_from_slice(r.take(len)?))
}

fn value(r: &mut Reader<'_>) -> Result<Bytes> {
    let len = usize::from(r.clone().u16()?);
    bounded(r, len, MAX_VALUE, 2)
}

/// The operation of a routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        owner: NodeId,
        expect: u64,
        lease_ms: u32,
        value: Bytes,
    },
    Get,
    Renew {
        owner: NodeId,
        lease_ms: u32,
    },
    Release {
        owner: NodeId,
    },
    List,
}

impl Op {
    pub fn code(&self) -> u8 {
        match self {
            Op::Put { .. } => PUT,
            Op::Get => GET,
            Op::Renew { .. } => RENEW,
            Op::Release { .. } => RELEASE,
            Op::List => LIST,
        }
    }
}

/// A routed DHT request (the payload of a `Route` with [`SERVICE_DHT`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub request: u64,
    pub name: RecordName,
    pub op: Op,
}

impl Request {
    pub fn parse(buf: &[u8]) -> Result<Request> {
        let mut r = Reader::new(buf);
        let code = r.u8()?;
        let request = r.u64()?;
        let name = RecordName::parse(&mut r)?;
        let op = match code {
            PUT => Op::Put {
                owner: r.node_id()?,
                expect: r.u64()?,
                lease_ms: r.u32()?,
                value: value(&mut r)?,
            },
            GET => Op::Get,
            RENEW => Op::Renew {
                owner: r.node_id()?,
                lease_ms: r.u32()?,
            },
            RELEASE => Op::Release {
                owner: r.node_id()?,
            },
            LIST => Op::List,
            other => return Err(Error::UnknownType(other)),
        };
        r.finish()?;
        Ok(Request { request, name, op })
    }

    pub fn buffer_len(&self) -> usize {
        9 + self.name.buffer_len()
            + match &self.op {
                Op::Put { value, .. } => 16 + 8 + 4 + 2 + value.len(),
                Op::Get | Op::List => 0,
                Op::Renew { .. } => 20,
                Op::Release { .. } => 16,
            }
    }

    /// Encode. The caller keeps the name and value within bounds
    /// (`RecordName::is_valid`, [`MAX_VALUE`]); longer ones are truncated
    /// on the wire rather than panicking.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.buffer_len());
        out.put_u8(self.op.code());
        out.put_u64(self.request);
        self.name.emit(&mut out);
        match &self.op {
            Op::Put {
                owner,
                expect,
                lease_ms,
                value,
            } => {
                out.put_slice(&owner.to_be_bytes());
                out.put_u64(*expect);
                out.put_u32(*lease_ms);
                put_value(&mut out, value);
            }
            Op::Get | Op::List => {}
            Op::Renew { owner, lease_ms } => {
                out.put_slice(&owner.to_be_bytes());
                out.put_u32(*lease_ms);
            }
            Op::Release { owner } => out.put_slice(&owner.to_be_bytes()),
        }
        out.freeze()
    }
}

fn put_value(out: &mut BytesMut, v: &Bytes) {
    let n = v.len().min(MAX_VALUE);
    out.put_u16(n as u16);
    out.put_slice(&v[..n]);
}

/// Outcome of a request at the responsible node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    Conflict = 2,
    StoreFull = 3,
    NotOwner = 4,
    Invalid = 5,
}

impl Status {
    pub fn from_u8(v: u8) -> Result<Status> {
        Ok(match v {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::Conflict,
            3 => Status::StoreFull,
            4 => Status::NotOwner,
            5 => Status::Invalid,
            _ => return Err(Error::Malformed),
        })
    }
}

/// A record as a reply carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRecord {
    pub key: Bytes,
    pub owner: NodeId,
    pub version: u64,
    pub lease_ms: u32,
    pub age_ms: u32,
    pub value: Bytes,
}

impl WireRecord {
    pub fn buffer_len(&self) -> usize {
        1 + self.key.len() + 16 + 8 + 4 + 4 + 2 + self.value.len()
    }
    fn emit(&self, out: &mut BytesMut) {
        let k = self.key.len().min(MAX_KEY);
        out.put_u8(k as u8);
        out.put_slice(&self.key[..k]);
        out.put_slice(&self.owner.to_be_bytes());
        out.put_u64(self.version);
        out.put_u32(self.lease_ms);
        out.put_u32(self.age_ms);
        put_value(out, &self.value);
    }
    fn parse(r: &mut Reader<'_>) -> Result<WireRecord> {
        let key = bounded(r, usize::from(r.clone().u8()?), MAX_KEY, 1)?;
        Ok(WireRecord {
            key,
            owner: r.node_id()?,
            version: r.u64()?,
            lease_ms: r.u32()?,
            age_ms: r.u32()?,
            value: value(r)?,
        })
    }
}

/// Smallest encoded `WireRecord`.
const MIN_RECORD_LEN: usize = 1 + 16 + 8 + 4 + 4 + 2;

/// Reply flag: the List reply left records out.
pub const REPLY_TRUNCATED: u8 = 1;

/// Replication of one record to a replica (or a hand-off, or an abort).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicate {
    pub write: u64,
    /// [`REP_PROPOSE`], [`REP_HANDOFF`] or [`REP_ABORT`].
    pub kind: u8,
    /// Proposal: the version the write replaced (0: created). Abort: the
    /// aborted version.
    pub base: u64,
    pub name: RecordName,
    pub owner: NodeId,
    pub version: u64,
    /// 0: the record was released.
    pub lease_ms: u32,
    pub age_ms: u32,
    pub value: Bytes,
}

/// A direct DHT message (not routed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direct {
    Reply {
        request: u64,
        status: Status,
        flags: u8,
        records: Vec<WireRecord>,
    },
    Replicate(Replicate),
    ReplicateAck {
        write: u64,
        result: AckResult,
    },
    Fetch {
        fetch: u64,
        name: RecordName,
    },
    Fetched {
        fetch: u64,
        record: Option<WireRecord>,
    },
}

/// A replica's answer to a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckResult {
    /// The replica's store is full.
    Refused,
    Stored,
    /// The replica holds this live record, which the proposal contradicts.
    Conflict(WireRecord),
}

impl Direct {
    pub fn msg_type(&self) -> u8 {
        match self {
            Direct::Reply { .. } => REPLY,
            Direct::Replicate(_) => REPLICATE,
            Direct::ReplicateAck { .. } => REPLICATE_ACK,
            Direct::Fetch { .. } => FETCH,
            Direct::Fetched { .. } => FETCHED,
        }
    }

    /// Parse a whole message (common header included) of type `ty`.
    pub fn parse(ty: u8, msg: &[u8]) -> Result<Direct> {
        let body = msg.get(HEADER_LEN..).ok_or(Error::Truncated)?;
        let mut r = Reader::new(body);
        let d = match ty {
            REPLY => {
                let request = r.u64()?;
                let status = Status::from_u8(r.u8()?)?;
                let flags = r.u8()?;
                let n = usize::from(r.u8()?);
                if n > MAX_REPLY_RECORDS {
                    return Err(Error::Malformed);
                }
                if n * MIN_RECORD_LEN > r.remaining() {
                    return Err(Error::Truncated);
                }
                let mut records = Vec::with_capacity(n);
                for _ in 0..n {
                    records.push(WireRecord::parse(&mut r)?);
                }
                Direct::Reply {
                    request,
                    status,
                    flags,
                    records,
                }
            }
            REPLICATE => Direct::Replicate(Replicate {
                write: r.u64()?,
                kind: match r.u8()? {
                    k @ (REP_PROPOSE | REP_HANDOFF | REP_ABORT) => k,
                    _ => return Err(Error::Malformed),
                },
                base: r.u64()?,
                name: RecordName::parse(&mut r)?,
                owner: r.node_id()?,
                version: r.u64()?,
                lease_ms: r.u32()?,
                age_ms: r.u32()?,
                value: value(&mut r)?,
            }),
            REPLICATE_ACK => Direct::ReplicateAck {
                write: r.u64()?,
                result: match r.u8()? {
                    0 => AckResult::Refused,
                    1 => AckResult::Stored,
                    2 => AckResult::Conflict(WireRecord::parse(&mut r)?),
                    _ => return Err(Error::Malformed),
                },
            },
            FETCH => Direct::Fetch {
                fetch: r.u64()?,
                name: RecordName::parse(&mut r)?,
            },
            FETCHED => Direct::Fetched {
                fetch: r.u64()?,
                record: match r.u8()? {
                    0 => None,
                    1 => Some(WireRecord::parse(&mut r)?),
                    _ => return Err(Error::Malformed),
                },
            },
            other => return Err(Error::UnknownType(other)),
        };
        r.finish()?;
        Ok(d)
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Direct::Reply { records, .. } => {
                    11 + records
                        .iter()
                        .take(MAX_REPLY_RECORDS)
                        .map(WireRecord::buffer_len)
                        .sum::<usize>()
                }
                Direct::Replicate(r) => {
                    8 + 1 + 8 + r.name.buffer_len() + 16 + 8 + 4 + 4 + 2 + r.value.len()
                }
                Direct::ReplicateAck { result, .. } => {
                    9 + match result {
                        AckResult::Conflict(rec) => rec.buffer_len(),
                        _ => 0,
                    }
                }
                Direct::Fetch { name, .. } => 8 + name.buffer_len(),
                Direct::Fetched { record, .. } => 9 + record.as_ref().map_or(0, |r| r.buffer_len()),
            }
    }

    pub fn to_bytes(&self, sender: NodeId) -> Bytes {
        let mut out = BytesMut::with_capacity(self.buffer_len());
        emit_header(&mut out, self.msg_type(), sender);
        match self {
            Direct::Reply {
                request,
                status,
                flags,
                records,
            } => {
                out.put_u64(*request);
                out.put_u8(*status as u8);
                out.put_u8(*flags);
                let n = records.len().min(MAX_REPLY_RECORDS);
                out.put_u8(n as u8);
                for rec in &records[..n] {
                    rec.emit(&mut out);
                }
            }
            Direct::Replicate(r) => {
                out.put_u64(r.write);
                out.put_u8(r.kind);
                out.put_u64(r.base);
                r.name.emit(&mut out);
                out.put_slice(&r.owner.to_be_bytes());
                out.put_u64(r.version);
                out.put_u32(r.lease_ms);
                out.put_u32(r.age_ms);
                put_value(&mut out, &r.value);
            }
            Direct::ReplicateAck { write, result } => {
                out.put_u64(*write);
                match result {
                    AckResult::Refused => out.put_u8(0),
                    AckResult::Stored => out.put_u8(1),
                    AckResult::Conflict(rec) => {
                        out.put_u8(2);
                        rec.emit(&mut out);
                    }
                }
            }
            Direct::Fetch { fetch, name } => {
                out.put_u64(*fetch);
                name.emit(&mut out);
            }
            Direct::Fetched { fetch, record } => {
                out.put_u64(*fetch);
                match record {
                    None => out.put_u8(0),
                    Some(rec) => {
                        out.put_u8(1);
                        rec.emit(&mut out);
                    }
                }
            }
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Header;

    fn name(bucket: Option<u16>) -> RecordName {
        RecordName {
            namespace: Bytes::from_static(b"alm/addr"),
            key: Bytes::from_static(&[172, 16, 0, 9]),
            bucket,
        }
    }

    fn requests() -> Vec<Request> {
        let ops = [
            Op::Put {
                owner: NodeId(77),
                expect: EXPECT_FREE,
                lease_ms: 60_000,
                value: Bytes::from_static(b"hello"),
            },
            Op::Get,
            Op::Renew {
                owner: NodeId(77),
                lease_ms: 1,
            },
            Op::Release { owner: NodeId(3) },
            Op::List,
        ];
        ops.into_iter()
            .enumerate()
            .map(|(i, op)| Request {
                request: 0x0102_0304_0506_0708 + i as u64,
                name: name(if i % 2 == 0 { None } else { Some(513) }),
                op,
            })
            .collect()
    }

    #[test]
    fn requests_roundtrip_and_reject_every_strict_prefix() {
        for req in requests() {
            let b = req.to_bytes();
            assert_eq!(b.len(), req.buffer_len());
            assert_eq!(Request::parse(&b).unwrap(), req);
            for cut in 0..b.len() {
                assert!(Request::parse(&b[..cut]).is_err(), "{req:?} cut {cut}");
            }
            let mut long = b.to_vec();
            long.push(0);
            assert_eq!(Request::parse(&long).unwrap_err(), Error::Malformed);
        }
        assert_eq!(
            Request::parse(&[0x5f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap_err(),
            Error::UnknownType(0x5f)
        );
    }

    #[test]
    fn directs_roundtrip_and_reject_every_strict_prefix() {
        let rec = WireRecord {
            key: Bytes::from_static(b"k"),
            owner: NodeId(9),
            version: 4,
            lease_ms: 100,
            age_ms: 7,
            value: Bytes::from_static(b"v"),
        };
        for d in [
            Direct::Reply {
                request: 1,
                status: Status::Ok,
                flags: REPLY_TRUNCATED,
                records: vec![rec.clone(), rec.clone()],
            },
            Direct::Reply {
                request: 2,
                status: Status::NotFound,
                flags: 0,
                records: vec![],
            },
            Direct::Replicate(Replicate {
                write: 5,
                kind: REP_PROPOSE,
                base: 77,
                name: name(Some(2)),
                owner: NodeId(1),
                version: 2,
                lease_ms: 0,
                age_ms: 99,
                value: Bytes::from_static(b"xyz"),
            }),
            Direct::Replicate(Replicate {
                write: 0,
                kind: REP_ABORT,
                base: 1,
                name: name(None),
                owner: NodeId(0),
                version: 0,
                lease_ms: 0,
                age_ms: 0,
                value: Bytes::new(),
            }),
            Direct::ReplicateAck {
                write: 6,
                result: AckResult::Stored,
            },
            Direct::ReplicateAck {
                write: 7,
                result: AckResult::Refused,
            },
            Direct::ReplicateAck {
                write: 8,
                result: AckResult::Conflict(rec.clone()),
            },
            Direct::Fetch {
                fetch: 9,
                name: name(Some(1)),
            },
            Direct::Fetched {
                fetch: 10,
                record: None,
            },
            Direct::Fetched {
                fetch: 11,
                record: Some(rec.clone()),
            },
        ] {
            let b = d.to_bytes(NodeId(42));
            assert_eq!(b.len(), d.buffer_len());
            let h = Header::new_checked(&b[..]).unwrap();
            assert_eq!(h.sender(), NodeId(42));
            assert_eq!(Direct::parse(h.raw_type(), &b).unwrap(), d);
            for cut in 0..b.len() {
                assert!(
                    Direct::parse(h.raw_type(), &b[..cut]).is_err(),
                    "{d:?} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn oversized_fields_and_counts_are_rejected_without_allocating() {
        // A 65-byte key.
        let mut b = vec![GET, 0, 0, 0, 0, 0, 0, 0, 1, 1, b'n', 65];
        b.extend_from_slice(&[0u8; 66]);
        assert_eq!(Request::parse(&b).unwrap_err(), Error::Malformed);
        // A value claiming 513 bytes.
        let mut put = Request {
            request: 1,
            name: name(None),
            op: Op::Put {
                owner: NodeId(1),
                expect: 0,
                lease_ms: 1,
                value: Bytes::new(),
            },
        }
        .to_bytes()
        .to_vec();
        let n = put.len();
        put[n - 2..].copy_from_slice(&513u16.to_be_bytes());
        put.extend_from_slice(&[0u8; 513]);
        assert_eq!(Request::parse(&put).unwrap_err(), Error::Malformed);
        // A reply claiming 32 records but carrying none.
        let mut reply = Direct::Reply {
            request: 1,
            status: Status::Ok,
            flags: 0,
            records: vec![],
        }
        .to_bytes(NodeId(1))
        .to_vec();
        let last = reply.len() - 1;
        reply[last] = 32;
        assert_eq!(Direct::parse(REPLY, &reply).unwrap_err(), Error::Truncated);
        reply[last] = 33;
        assert_eq!(Direct::parse(REPLY, &reply).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn unknown_replicate_kinds_and_ack_results_are_malformed() {
        let rep = Direct::Replicate(Replicate {
            write: 1,
            kind: REP_HANDOFF,
            base: 0,
            name: name(None),
            owner: NodeId(1),
            version: 1,
            lease_ms: 1,
            age_ms: 0,
            value: Bytes::new(),
        });
        let mut b = rep.to_bytes(NodeId(2)).to_vec();
        b[HEADER_LEN + 8] = 9;
        assert_eq!(Direct::parse(REPLICATE, &b).unwrap_err(), Error::Malformed);
        let ack = Direct::ReplicateAck {
            write: 1,
            result: AckResult::Stored,
        };
        let mut b = ack.to_bytes(NodeId(2)).to_vec();
        b[HEADER_LEN + 8] = 3;
        assert_eq!(
            Direct::parse(REPLICATE_ACK, &b).unwrap_err(),
            Error::Malformed
        );
        let f = Direct::Fetched {
            fetch: 1,
            record: None,
        };
        let mut b = f.to_bytes(NodeId(2)).to_vec();
        b[HEADER_LEN + 8] = 2;
        assert_eq!(Direct::parse(FETCHED, &b).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn buckets_place_records_apart_from_keys() {
        let a = name(None);
        let b = name(Some(0));
        assert_ne!(a.ring_key(), b.ring_key());
        assert_eq!(b.ring_key(), bucket_ring_key(b"alm/addr", 0));
        assert_eq!(a.ring_key(), NodeId::hash(&[b"alm/addr", &[172, 16, 0, 9]]));
    }
}
