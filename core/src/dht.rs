//! The DHT of the management ring (Multicast Middleware paper, "management
//! ring"; PAST-style replication on Pastry, Rowstron & Druschel 2001):
//! small leased records stored at the node responsible for their key and
//! replicated on its nearest leaf-set neighbours.
//!
//! **State owned:** the records this node stores (as the responsible node
//! or as a replica), each with owner, version, value, lease deadline,
//! creation time and the nodes known to hold a copy; the requests this node
//! issued and awaits replies for; the writes it accepted as responsible
//! node and awaits replica acknowledgements for.
//!
//! **Consumes:** commands (`request`: put, get, renew, release, list),
//! routed requests delivered here by Pastry (service
//! [`SERVICE_DHT`]), direct replies,
//! replications and acknowledgements (`wire::dht::Direct`), leaf-set
//! changes, peer failures and its timer (`TimerKind::Service(DHT_TIMER)`).
//!
//! **Emits:** transmits through Pastry, and one result per request in
//! `results` (drained by `Node`, which routes it to the application as
//! `Event::Dht` or to `mgmt`).
//!
//! Semantics:
//! - A record lives at the live node closest to its ring key
//!   ([`RecordName::ring_key`]) and on the `replicas` leaf-set members
//!   closest to that key. When the leaf set changes every holder re-checks:
//!   the responsible node pushes the record to group members that lack it,
//!   others push it to a new responsible node, and a node that left the
//!   group drops it. So when the responsible node crashes, the next closest
//!   node, already a replica, answers in its place and re-replicates.
//! - Writes are serialised by the responsible node. A put names an owner
//!   and an [`Expect`]ation; it succeeds if the record is free (absent or
//!   lease expired), already the owner's, or matches the expectation. So of
//!   two claimants of a free key exactly one wins; the other gets
//!   `DhtError::Conflict`. The reply to a write is held until the replicas
//!   acknowledge it (or `replica_ack_timeout` passes), so a write reported
//!   as done survives the crash of the node that accepted it.
//! - Leases: every record expires `lease` after its last put or renew
//!   unless renewed; only the owner may renew or release it.
//! - Bounded storage: at most `max_records` records per node (responsible
//!   or replica); a put that would create one more gets
//!   `DhtError::StoreFull`.
//! - Requests are routed (acknowledged hop by hop by Pastry), answered
//!   directly, and re-sent after `request_timeout`, up to
//!   `request_attempts` times; a repeated put by the same owner is
//!   harmless.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use smallvec::SmallVec;

use crate::addr::NodeHandle;
use crate::id::NodeId;
use crate::io::Transmit;
use crate::mgmt::MgmtConfig;
use crate::pastry::{Pastry, TimerKind};
use crate::time::{Duration, Time};
use crate::wire::dht::{
    Direct, EXPECT_ANY, EXPECT_FREE, LIST, MAX_REPLY_RECORD_BYTES, MAX_REPLY_RECORDS, MAX_VALUE,
    Op, PUT, RELEASE, RENEW, REPLY_TRUNCATED, RecordName, Replicate, Request, SERVICE_DHT, Status,
    WireRecord,
};
use crate::wire::pastry::{Route, Service};

/// Timer id of the DHT within `TimerKind::Service`.
pub const DHT_TIMER: u8 = 2;

/// DHT tunables (and, nested, those of the management services built on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtConfig {
    /// Copies kept besides the responsible node's (k).
    pub replicas: usize,
    /// Most records one node stores, as responsible node or replica.
    pub max_records: usize,
    /// A request unanswered this long is sent again.
    pub request_timeout: Duration,
    /// Sends of one request before `DhtError::Timeout`.
    pub request_attempts: u8,
    /// How long a responsible node waits for replica acknowledgements
    /// before answering a write anyway.
    pub replica_ack_timeout: Duration,
    /// Leases are capped at this.
    pub max_lease: Duration,
    /// How often expired records are swept from memory (they are treated as
    /// absent as soon as they expire).
    pub sweep_interval: Duration,
    /// How often a responsible node pushes its records to its whole replica
    /// group again, whatever it believes they hold (anti-entropy: covers
    /// lost replications and replicas that dropped a record on a stale view).
    pub replica_refresh: Duration,
    /// Address allocation and the group directory.
    pub mgmt: MgmtConfig,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            replicas: 3,
            max_records: 1024,
            request_timeout: Duration::from_secs(3),
            request_attempts: 3,
            replica_ack_timeout: Duration::from_millis(500),
            max_lease: Duration::from_secs(3_600),
            sweep_interval: Duration::from_secs(5),
            replica_refresh: Duration::from_secs(30),
            mgmt: MgmtConfig::default(),
        }
    }
}

impl DhtConfig {
    /// Why this configuration cannot work, if it cannot.
    pub fn problem(&self) -> Option<&'static str> {
        if self.replicas > 8 {
            return Some("replicas must be at most 8");
        }
        if self.max_records == 0 || self.request_attempts == 0 {
            return Some("max_records and request_attempts must be at least 1");
        }
        self.mgmt.problem()
    }
}

/// What a put expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The key is free (absent or its lease expired) or already ours: a
    /// claim. The default of `Node::dht_put`.
    Free,
    /// The record is at this version (or ours): compare-and-set after a get.
    Version(u64),
    /// Overwrite whatever is there.
    Any,
}

impl Expect {
    /// The expected-version field of a Put on the wire.
    pub fn to_wire(self) -> u64 {
        match self {
            Expect::Free => EXPECT_FREE,
            Expect::Any => EXPECT_ANY,
            // Versions are never 0 nor u64::MAX; those would mean the others.
            Expect::Version(v) => v.clamp(1, u64::MAX - 1),
        }
    }
}

/// A record as a get or list returns it. Times are in the local clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtRecord {
    pub key: Bytes,
    pub owner: NodeId,
    /// Opaque, grows with every put of the record.
    pub version: u64,
    pub value: Bytes,
    pub lease_until: Time,
    /// When the record was created (estimated from its age).
    pub since: Time,
}

/// A successful DHT request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtReply {
    Stored {
        version: u64,
        lease_until: Time,
    },
    Found(DhtRecord),
    Renewed {
        lease_until: Time,
    },
    Released,
    Listed {
        records: Vec<DhtRecord>,
        /// The bucket held more than one reply carries.
        truncated: bool,
    },
}

/// A failed DHT request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhtError {
    #[error("no such record")]
    NotFound,
    #[error("the record is held by {owner} at version {version}")]
    Conflict { owner: NodeId, version: u64 },
    #[error("the record belongs to another node")]
    NotOwner,
    #[error("the responsible node's store is full")]
    StoreFull,
    #[error("no reply after {attempts} attempts")]
    Timeout { attempts: u8 },
    #[error("namespace, key or value too long (32, 64 and 512 bytes at most)")]
    TooLarge,
    #[error("the node has not joined the overlay yet")]
    NotJoined,
    #[error("the responsible node found the request invalid")]
    Invalid,
}

/// Counters of the DHT, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhtStats {
    pub requests_served: u64,
    pub replicas_stored: u64,
    pub handoffs_sent: u64,
    pub retries: u64,
    pub timeouts: u64,
    pub store_full: u64,
    pub expired: u64,
    pub malformed: u64,
    pub late_replies: u64,
}

/// One stored record.
#[derive(Debug, Clone)]
struct Stored {
    ring: NodeId,
    owner: NodeId,
    version: u64,
    value: Bytes,
    expires: Time,
    created: Time,
    /// Nodes we know hold a copy (we replicated or handed it to them, or
    /// they sent it to us).
    holders: SmallVec<[NodeId; 4]>,
}

impl Stored {
    fn wire(&self, now: Time, key: &Bytes, with_value: bool) -> WireRecord {
        WireRecord {
            key: key.clone(),
            owner: self.owner,
            version: self.version,
            lease_ms: ms(self.expires.saturating_since(now)),
            age_ms: ms(now.saturating_since(self.created)),
            value: if with_value {
                self.value.clone()
            } else {
                Bytes::new()
            },
        }
    }
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone)]
struct ClientReq {
    op: u8,
    ring: NodeId,
    payload: Bytes,
    deadline: Time,
    attempts: u8,
}

#[derive(Debug, Clone)]
struct PendingWrite {
    origin: NodeHandle,
    request: u64,
    status: Status,
    records: Vec<WireRecord>,
    waiting: SmallVec<[NodeId; 4]>,
    deadline: Time,
}

/// The DHT state machine. Driven by `Node`, which lends it Pastry.
#[derive(Debug)]
pub struct Dht {
    pub cfg: DhtConfig,
    store: BTreeMap<RecordName, Stored>,
    client: BTreeMap<u64, ClientReq>,
    writes: BTreeMap<u64, PendingWrite>,
    sweep_at: Option<Time>,
    refresh_at: Time,
    /// Results of our requests, in completion order, drained by `Node`.
    pub results: VecDeque<(u64, Result<DhtReply, DhtError>)>,
    pub stats: DhtStats,
}

impl Dht {
    pub fn new(cfg: DhtConfig) -> Self {
        Dht {
            cfg,
            store: BTreeMap::new(),
            client: BTreeMap::new(),
            writes: BTreeMap::new(),
            sweep_at: None,
            refresh_at: Time::ZERO,
            results: VecDeque::new(),
            stats: DhtStats::default(),
        }
    }

    // ----- introspection -----------------------------------------------

    /// Records stored here (live or not yet swept).
    pub fn len(&self) -> usize {
        self.store.len()
    }
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }
    /// Our copy of a record, if we hold a live one.
    pub fn local(&self, now: Time, name: &RecordName) -> Option<DhtRecord> {
        self.store
            .get(name)
            .filter(|s| s.expires > now)
            .map(|s| to_record(now, s.wire(now, &name.key, true)))
    }
    /// Requests in flight.
    pub fn pending_requests(&self) -> usize {
        self.client.len()
    }

    // ----- commands -----------------------------------------------------

    /// Issue a request; its result arrives in `results` under the returned
    /// id (possibly at once, for a request that cannot be sent).
    pub fn request(&mut self, now: Time, p: &mut Pastry, name: RecordName, op: Op) -> u64 {
        let mut id = p.rng().next_u64();
        while id == 0 || self.client.contains_key(&id) {
            id = p.rng().next_u64();
        }
        let too_large = matches!(&op, Op::Put { value, .. } if value.len() > MAX_VALUE);
        if !name.is_valid() || too_large {
            self.results.push_back((id, Err(DhtError::TooLarge)));
            return id;
        }
        if !p.is_active() {
            self.results.push_back((id, Err(DhtError::NotJoined)));
            return id;
        }
        let ring = name.ring_key();
        let req = Request {
            request: id,
            name,
            op,
        };
        let payload = req.to_bytes();
        let deadline = now + self.cfg.request_timeout;
        self.client.insert(
            id,
            ClientReq {
                op: req.op.code(),
                ring,
                payload: payload.clone(),
                deadline,
                attempts: 1,
            },
        );
        p.set_timer(deadline, TimerKind::Service(DHT_TIMER));
        p.route(now, ring, Service::Other(SERVICE_DHT), payload);
        id
    }

    /// Lease in milliseconds for the wire, capped by `max_lease`.
    pub fn lease_ms(&self, lease: Duration) -> u32 {
        ms(lease.min(self.cfg.max_lease))
    }

    // ----- the responsible node ------------------------------------------

    /// A routed request reached us: we are responsible for its key.
    pub fn deliver(&mut self, now: Time, p: &mut Pastry, route: Route) {
        let Ok(req) = Request::parse(&route.payload) else {
            self.stats.malformed += 1;
            return;
        };
        let origin = route.origin;
        if req.name.ring_key() != route.key {
            self.stats.malformed += 1;
            self.reply(now, p, origin, req.request, Status::Invalid, 0, Vec::new());
            return;
        }
        self.stats.requests_served += 1;
        if self.store.get(&req.name).is_some_and(|s| s.expires <= now) {
            self.store.remove(&req.name);
            self.stats.expired += 1;
        }
        let name = req.name;
        let request = req.request;
        match req.op {
            Op::Get => match self.store.get(&name) {
                Some(s) => {
                    let rec = s.wire(now, &name.key, true);
                    self.reply(now, p, origin, request, Status::Ok, 0, vec![rec]);
                }
                None => self.reply(now, p, origin, request, Status::NotFound, 0, Vec::new()),
            },
            Op::List => {
                let (records, truncated) = self.list(now, &name);
                let flags = if truncated { REPLY_TRUNCATED } else { 0 };
                self.reply(now, p, origin, request, Status::Ok, flags, records);
            }
            Op::Put {
                owner,
                expect,
                lease_ms,
                value,
            } => {
                let lease = Duration::from_millis(u64::from(lease_ms)).min(self.cfg.max_lease);
                match self.store.get_mut(&name) {
                    Some(s) => {
                        let ok = s.owner == owner
                            || expect == EXPECT_ANY
                            || (expect != EXPECT_FREE && expect == s.version);
                        if !ok {
                            let rec = s.wire(now, &name.key, false);
                            self.reply(now, p, origin, request, Status::Conflict, 0, vec![rec]);
                            return;
                        }
                        s.owner = owner;
                        s.version = s.version.saturating_add(1).min(u64::MAX - 1);
                        s.value = value;
                        s.expires = now + lease;
                    }
                    None => {
                        if expect != EXPECT_FREE && expect != EXPECT_ANY {
                            // The version the writer read is gone.
                            let rec = WireRecord {
                                key: name.key.clone(),
                                owner: NodeId(0),
                                version: 0,
                                lease_ms: 0,
                                age_ms: 0,
                                value: Bytes::new(),
                            };
                            self.reply(now, p, origin, request, Status::Conflict, 0, vec![rec]);
                            return;
                        }
                        if self.store.len() >= self.cfg.max_records {
                            self.stats.store_full += 1;
                            self.reply(now, p, origin, request, Status::StoreFull, 0, Vec::new());
                            return;
                        }
                        // A random start makes a re-created record's versions
                        // differ from the expired one's (no ABA for CAS).
                        let version = (p.rng().next_u64() >> 24).max(1);
                        self.store.insert(
                            name.clone(),
                            Stored {
                                ring: route.key,
                                owner,
                                version,
                                value,
                                expires: now + lease,
                                created: now,
                                holders: SmallVec::new(),
                            },
                        );
                        self.ensure_sweep(now, p);
                    }
                }
                self.replicate_write(now, p, origin, request, &name);
            }
            Op::Renew { owner, lease_ms } => {
                let lease = Duration::from_millis(u64::from(lease_ms)).min(self.cfg.max_lease);
                match self.store.get_mut(&name) {
                    None => self.reply(now, p, origin, request, Status::NotFound, 0, Vec::new()),
                    Some(s) if s.owner != owner => {
                        let rec = s.wire(now, &name.key, false);
                        self.reply(now, p, origin, request, Status::NotOwner, 0, vec![rec]);
                    }
                    Some(s) => {
                        s.expires = now + lease;
                        self.replicate_write(now, p, origin, request, &name);
                    }
                }
            }
            Op::Release { owner } => match self.store.get(&name) {
                // Already gone: releasing is idempotent.
                None => self.reply(now, p, origin, request, Status::Ok, 0, Vec::new()),
                Some(s) if s.owner != owner => {
                    let rec = s.wire(now, &name.key, false);
                    self.reply(now, p, origin, request, Status::NotOwner, 0, vec![rec]);
                }
                Some(_) => {
                    self.store.remove(&name);
                    self.replicate_write(now, p, origin, request, &name);
                }
            },
        }
    }

    /// The live records of `name`'s namespace and bucket, bounded to fit a
    /// datagram.
    fn list(&self, now: Time, name: &RecordName) -> (Vec<WireRecord>, bool) {
        let mut out = Vec::new();
        let mut bytes = 0;
        for (n, s) in &self.store {
            if n.namespace != name.namespace || n.bucket != name.bucket || s.expires <= now {
                continue;
            }
            let rec = s.wire(now, &n.key, true);
            if out.len() == MAX_REPLY_RECORDS || bytes + rec.buffer_len() > MAX_REPLY_RECORD_BYTES {
                return (out, true);
            }
            bytes += rec.buffer_len();
            out.push(rec);
        }
        (out, false)
    }

    /// The `replicas` leaf-set members closest to `ring`.
    fn replica_set(&self, p: &Pastry, ring: NodeId) -> SmallVec<[NodeHandle; 8]> {
        let mut v: SmallVec<[NodeHandle; 16]> = p.leaf_set().members().map(|l| l.handle).collect();
        v.sort_by(|a, b| order(ring, a.id, b.id));
        v.into_iter().take(self.cfg.replicas).collect()
    }

    /// Send the current state of `name` (or its release, if we no longer
    /// hold it) to its replicas; answer the requester once they acknowledge.
    fn replicate_write(
        &mut self,
        now: Time,
        p: &mut Pastry,
        origin: NodeHandle,
        request: u64,
        name: &RecordName,
    ) {
        let ring = name.ring_key();
        let replicas = self.replica_set(p, ring);
        let mut write = p.rng().next_u64();
        while write == 0 || self.writes.contains_key(&write) {
            write = p.rng().next_u64();
        }
        // Absent means the write was a release: replicate its tombstone.
        let (rep, reply_rec) = match self.store.get(name) {
            Some(s) => (
                self.replicate_msg(now, write, name, s),
                vec![s.wire(now, &name.key, false)],
            ),
            None => (tombstone(write, name), Vec::new()),
        };
        if replicas.is_empty() {
            self.reply(now, p, origin, request, Status::Ok, 0, reply_rec);
            return;
        }
        let bytes = Direct::Replicate(rep).to_bytes(p.me().id);
        for h in &replicas {
            p.send_raw(Transmit::datagram(h.addr, bytes.clone()));
        }
        if let Some(s) = self.store.get_mut(name) {
            s.holders = replicas.iter().map(|h| h.id).collect();
        }
        let deadline = now + self.cfg.replica_ack_timeout;
        self.writes.insert(
            write,
            PendingWrite {
                origin,
                request,
                status: Status::Ok,
                records: reply_rec,
                waiting: replicas.iter().map(|h| h.id).collect(),
                deadline,
            },
        );
        p.set_timer(deadline, TimerKind::Service(DHT_TIMER));
    }

    fn replicate_msg(&self, now: Time, write: u64, name: &RecordName, s: &Stored) -> Replicate {
        Replicate {
            write,
            name: name.clone(),
            owner: s.owner,
            version: s.version,
            // A live record never replicates as "released".
            lease_ms: ms(s.expires.saturating_since(now)).max(1),
            age_ms: ms(now.saturating_since(s.created)),
            value: s.value.clone(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn reply(
        &mut self,
        now: Time,
        p: &mut Pastry,
        to: NodeHandle,
        request: u64,
        status: Status,
        flags: u8,
        records: Vec<WireRecord>,
    ) {
        if to.id == p.me().id {
            self.on_reply(now, request, status, flags, records);
            return;
        }
        let d = Direct::Reply {
            request,
            status,
            flags,
            records,
        };
        p.send_raw(Transmit::datagram(to.addr, d.to_bytes(p.me().id)));
    }

    // ----- direct messages ------------------------------------------------

    /// A direct DHT message from `from`.
    pub fn handle_direct(&mut self, now: Time, p: &mut Pastry, from: NodeHandle, d: Direct) {
        match d {
            Direct::Reply {
                request,
                status,
                flags,
                records,
            } => self.on_reply(now, request, status, flags, records),
            Direct::Replicate(r) => self.on_replicate(now, p, from, r),
            Direct::ReplicateAck { write, .. } => {
                if let Some(w) = self.writes.get_mut(&write) {
                    w.waiting.retain(|id| *id != from.id);
                    if w.waiting.is_empty() {
                        self.finish_write(now, p, write);
                    }
                }
            }
        }
    }

    fn finish_write(&mut self, now: Time, p: &mut Pastry, write: u64) {
        if let Some(w) = self.writes.remove(&write) {
            self.reply(now, p, w.origin, w.request, w.status, 0, w.records);
        }
    }

    fn on_reply(
        &mut self,
        now: Time,
        request: u64,
        status: Status,
        flags: u8,
        records: Vec<WireRecord>,
    ) {
        let Some(c) = self.client.remove(&request) else {
            self.stats.late_replies += 1;
            return;
        };
        let first = records.first().cloned();
        let res = match status {
            Status::Ok => match (c.op, first) {
                (PUT, Some(r)) => Ok(DhtReply::Stored {
                    version: r.version,
                    lease_until: now + Duration::from_millis(u64::from(r.lease_ms)),
                }),
                (RENEW, Some(r)) => Ok(DhtReply::Renewed {
                    lease_until: now + Duration::from_millis(u64::from(r.lease_ms)),
                }),
                (RELEASE, _) => Ok(DhtReply::Released),
                (LIST, _) => Ok(DhtReply::Listed {
                    records: records.into_iter().map(|r| to_record(now, r)).collect(),
                    truncated: flags & REPLY_TRUNCATED != 0,
                }),
                (crate::wire::dht::GET, Some(r)) => Ok(DhtReply::Found(to_record(now, r))),
                _ => Err(DhtError::Invalid),
            },
            Status::NotFound => Err(DhtError::NotFound),
            Status::Conflict => Err(first.map_or(
                DhtError::Conflict {
                    owner: NodeId(0),
                    version: 0,
                },
                |r| DhtError::Conflict {
                    owner: r.owner,
                    version: r.version,
                },
            )),
            Status::StoreFull => Err(DhtError::StoreFull),
            Status::NotOwner => Err(DhtError::NotOwner),
            Status::Invalid => Err(DhtError::Invalid),
        };
        self.results.push_back((request, res));
    }

    fn on_replicate(&mut self, now: Time, p: &mut Pastry, from: NodeHandle, r: Replicate) {
        let full = self.store.len() >= self.cfg.max_records;
        let stored = match self.store.get_mut(&r.name) {
            Some(s) if s.version > r.version => true,
            Some(s) => {
                if r.lease_ms == 0 {
                    self.store.remove(&r.name);
                } else {
                    s.owner = r.owner;
                    s.version = r.version;
                    s.value = r.value;
                    s.expires = now + Duration::from_millis(u64::from(r.lease_ms));
                    if !s.holders.contains(&from.id) {
                        s.holders.push(from.id);
                    }
                }
                true
            }
            None if r.lease_ms == 0 => true,
            None if full => {
                self.stats.store_full += 1;
                false
            }
            None => {
                let mut holders = SmallVec::new();
                holders.push(from.id);
                let lease = Duration::from_millis(u64::from(r.lease_ms)).min(self.cfg.max_lease);
                let ring = r.name.ring_key();
                self.store.insert(
                    r.name,
                    Stored {
                        ring,
                        owner: r.owner,
                        version: r.version,
                        value: r.value,
                        expires: now + lease,
                        created: Time(
                            now.as_micros()
                                .saturating_sub(u64::from(r.age_ms).saturating_mul(1_000)),
                        ),
                        holders,
                    },
                );
                self.stats.replicas_stored += 1;
                self.ensure_sweep(now, p);
                true
            }
        };
        if r.write != 0 {
            let ack = Direct::ReplicateAck {
                write: r.write,
                stored,
            };
            p.send_raw(Transmit::datagram(from.addr, ack.to_bytes(p.me().id)));
        }
    }

    // ----- maintenance --------------------------------------------------

    /// The leaf set changed: re-establish every record's replica group.
    pub fn leaf_set_changed(&mut self, now: Time, p: &mut Pastry) {
        self.rereplicate(now, p, false);
    }

    /// Push each record where it is missing: as responsible node to every
    /// group member not known to hold it (to all of them if `refresh`), as
    /// replica or outsider to the responsible node; drop it if we left its
    /// group.
    fn rereplicate(&mut self, now: Time, p: &mut Pastry, refresh: bool) {
        let me = p.me().id;
        let k = self.cfg.replicas;
        let members: SmallVec<[NodeHandle; 32]> =
            p.leaf_set().members().map(|l| l.handle).collect();
        let mut drop: Vec<RecordName> = Vec::new();
        let mut out: Vec<(NodeHandle, Replicate)> = Vec::new();
        for (name, s) in self.store.iter_mut() {
            if s.expires <= now {
                continue;
            }
            let mut group: SmallVec<[NodeHandle; 32]> = members.clone();
            group.push(p.me());
            group.sort_by(|a, b| order(s.ring, a.id, b.id));
            group.truncate(k + 1);
            let rank = group.iter().position(|h| h.id == me);
            let root = group[0];
            let targets: SmallVec<[NodeHandle; 8]> = match rank {
                // Responsible: every group member must hold it.
                Some(0) => group[1..].iter().copied().collect(),
                // Replica or outsider: make sure the responsible node has it.
                _ => std::iter::once(root).collect(),
            };
            let rep = Replicate {
                write: 0,
                name: name.clone(),
                owner: s.owner,
                version: s.version,
                lease_ms: ms(s.expires.saturating_since(now)).max(1),
                age_ms: ms(now.saturating_since(s.created)),
                value: s.value.clone(),
            };
            if refresh && rank == Some(0) {
                s.holders.clear();
            }
            for t in targets {
                if t.id != me && !s.holders.contains(&t.id) {
                    s.holders.push(t.id);
                    out.push((t, rep.clone()));
                }
            }
            s.holders.retain(|id| group.iter().any(|h| h.id == *id));
            if rank.is_none() {
                drop.push(name.clone());
            }
        }
        for name in drop {
            self.store.remove(&name);
        }
        self.stats.handoffs_sent += out.len() as u64;
        for (to, rep) in out {
            let bytes = Direct::Replicate(rep).to_bytes(me);
            p.send_raw(Transmit::datagram(to.addr, bytes));
        }
    }

    /// A node was declared dead: stop waiting for it.
    pub fn peer_down(&mut self, now: Time, p: &mut Pastry, peer: NodeHandle) {
        let done: SmallVec<[u64; 4]> = self
            .writes
            .iter_mut()
            .filter_map(|(id, w)| {
                w.waiting.retain(|x| *x != peer.id);
                w.waiting.is_empty().then_some(*id)
            })
            .collect();
        for id in done {
            self.finish_write(now, p, id);
        }
        for s in self.store.values_mut() {
            s.holders.retain(|x| *x != peer.id);
        }
    }

    fn ensure_sweep(&mut self, now: Time, p: &mut Pastry) {
        if self.sweep_at.is_none() {
            let at = now + self.cfg.sweep_interval;
            self.sweep_at = Some(at);
            p.set_timer(at, TimerKind::Service(DHT_TIMER));
        }
    }

    /// The DHT timer fired: retries, overdue replica acknowledgements,
    /// expired records. Spurious calls are harmless.
    pub fn handle_tick(&mut self, now: Time, p: &mut Pastry) {
        let due: SmallVec<[u64; 8]> = self
            .client
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(c) = self.client.get_mut(&id) else {
                continue;
            };
            if c.attempts >= self.cfg.request_attempts || !p.is_active() {
                let attempts = c.attempts;
                self.client.remove(&id);
                self.stats.timeouts += 1;
                self.results
                    .push_back((id, Err(DhtError::Timeout { attempts })));
                continue;
            }
            c.attempts += 1;
            c.deadline = now + self.cfg.request_timeout;
            let (deadline, ring, payload) = (c.deadline, c.ring, c.payload.clone());
            self.stats.retries += 1;
            p.set_timer(deadline, TimerKind::Service(DHT_TIMER));
            p.route(now, ring, Service::Other(SERVICE_DHT), payload);
        }
        let overdue: SmallVec<[u64; 8]> = self
            .writes
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            self.finish_write(now, p, id);
        }
        if self.sweep_at.is_some_and(|t| t <= now) {
            self.sweep_at = None;
            let before = self.store.len();
            self.store.retain(|_, s| s.expires > now);
            self.stats.expired += (before - self.store.len()) as u64;
            if now >= self.refresh_at {
                self.refresh_at = now + self.cfg.replica_refresh;
                self.rereplicate(now, p, true);
            }
            if !self.store.is_empty() {
                self.ensure_sweep(now, p);
            }
        }
    }
}

/// Ordering by closeness to `key`, with Pastry's tie-break.
fn order(key: NodeId, a: NodeId, b: NodeId) -> core::cmp::Ordering {
    if a == b {
        core::cmp::Ordering::Equal
    } else if key.closer(a, b) {
        core::cmp::Ordering::Less
    } else {
        core::cmp::Ordering::Greater
    }
}

fn tombstone(write: u64, name: &RecordName) -> Replicate {
    Replicate {
        write,
        name: name.clone(),
        owner: NodeId(0),
        version: u64::MAX - 1,
        lease_ms: 0,
        age_ms: 0,
        value: Bytes::new(),
    }
}

fn to_record(now: Time, r: WireRecord) -> DhtRecord {
    DhtRecord {
        key: r.key,
        owner: r.owner,
        version: r.version,
        value: r.value,
        lease_until: now + Duration::from_millis(u64::from(r.lease_ms)),
        since: Time(
            now.as_micros()
                .saturating_sub(u64::from(r.age_ms).saturating_mul(1_000)),
        ),
    }
}
