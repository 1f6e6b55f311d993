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
//!   ([`RecordName::ring_key`]) and on the `replicas` (k) leaf-set members
//!   closest to that key: the key's *group*. When the leaf set changes
//!   every holder re-checks: the responsible node pushes the record to
//!   group members that lack it, others push it to the responsible node
//!   (hand-offs, which never override a live record of another lineage),
//!   and a node drops its copy only once it is beyond the k nearest nodes
//!   on either side of the key.
//! - Requests for one key are serialised by its responsible node, one at a
//!   time (others queue, at most 16).
//! - **Fetch before answering without a record.** A responsible node that
//!   holds no live record of the key asks the k nearest leaf-set members on
//!   *each* side of the key (the fetch set) for their copy, waits for all
//!   of them or `fetch_timeout`, adopts the record most of them reported
//!   (newest version on a tie), and only then serves the request. So a node
//!   that just joined between a key and its old holders, or that takes over
//!   from a crashed root, answers with the record, not "free"/NotFound.
//! - **Quorum writes with conflict detection.** A put, renew or release is
//!   applied to the responsible node's copy and *proposed* to the group,
//!   naming the version it replaced (its base). A replica stores a proposal
//!   unless it holds a live record the proposal does not supersede (another
//!   owner's, of another lineage or a newer version: the writer did not
//!   know it); then it answers Conflict with that record. A put commits
//!   (and is answered) only once a majority of the replicas stored it and
//!   none reported a conflict; a renew needs the majority; a release always
//!   succeeds. A failed write is rolled back and aborted at the replicas
//!   and fetch set (they restore what it replaced); the requester gets
//!   Conflict (put), NotOwner (renew) or StoreFull, or, if too few replicas
//!   answered in `replica_ack_timeout`, no answer (it re-sends).
//! - Of two claimants of a free key at most one wins; the other gets
//!   `DhtError::Conflict`. Leases: every record expires `lease` after its
//!   last put or renew unless renewed; only the owner may renew or release.
//! - Bounded storage: at most `max_records` records per node; a put that
//!   would create one more gets `DhtError::StoreFull`.
//! - Requests are routed, answered directly, and re-sent after
//!   `request_timeout`, up to `request_attempts` times; a repeated put by
//!   the same owner is harmless.
//! - Counters: the `dht_*` fields of the node's `Stats` (`Node::stats`),
//!   next to Pastry's, which is what `almd status` reports.
//!
//! **Why a claim cannot succeed twice.** Call a write's *acceptors* the
//! responsible node plus the replicas that stored it: for a committed put,
//! at least k/2 + 2 of the k + 1 group members (3 of 4 for k = 3). A node
//! holding a live record never accepts a contradicting proposal, and the
//! responsible node checks its own copy (including a write still in
//! progress). So two contradicting puts cannot both commit if their
//! acceptor sets share a node that held the first record when the second
//! was proposed. Two groups of k + 1 seen at different times, or by two
//! nodes that both believe they are responsible (leaf sets inconsistent
//! during joins), differ only by the members that joined or left near the
//! key in between; with one such change the union has k + 2 members and
//! two majorities of k/2 + 2 intersect. Re-replication restores the record
//! on every new group member within about one round trip of each change,
//! and the fetch over k nodes on each side reaches holders that up to k
//! joins pushed out of the group. Fetching alone would not be enough
//! (answers can be late or lost: the timeout), and hand-overs alone are
//! not (a crash or a second join before the hand-over lands, and a new
//! root that serves before it arrives, was the original defect); the
//! quorum check is what is safe under concurrent joins and crashes, the
//! fetch keeps reads and renewals right and conflicts rare.
//!
//! **Known limits.** The argument needs fewer than about k membership
//! changes near one key within one round trip, and every message between
//! two live nodes to eventually arrive; a majority of a group failing at
//! once loses the record (the owner re-claims it on NotFound). A failed
//! proposal copied by a concurrent fetch before its abort arrives can
//! survive at that node as a record nobody believes they own: it may make
//! a claim fail or a renewal answer NotOwner (the owner then allocates
//! anew) until its lease runs out, never a second owner. List requests
//! are answered from the responsible node's copy without a fetch.

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
    AckResult, Direct, EXPECT_ANY, EXPECT_FREE, LIST, MAX_REPLY_RECORD_BYTES, MAX_REPLY_RECORDS,
    MAX_VALUE, Op, PUT, RELEASE, RENEW, REP_ABORT, REP_HANDOFF, REP_PROPOSE, REPLY_TRUNCATED,
    RecordName, Replicate, Request, SERVICE_DHT, Status, WireRecord,
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
    /// before deciding a write (commit if a majority stored it, else roll
    /// back).
    pub replica_ack_timeout: Duration,
    /// How long a responsible node that holds no record of a key waits for
    /// its neighbours' copies before answering without one.
    pub fetch_timeout: Duration,
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
            fetch_timeout: Duration::from_millis(500),
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

/// Remove `peer` from every wait list; the ids whose list it emptied.
fn stop_waiting_for<'a>(
    lists: impl Iterator<Item = (u64, &'a mut SmallVec<[NodeId; 8]>)>,
    peer: NodeId,
) -> SmallVec<[u64; 4]> {
    lists
        .filter_map(|(id, waiting)| {
            let before = waiting.len();
            waiting.retain(|x| *x != peer);
            (before != waiting.len() && waiting.is_empty()).then_some(id)
        })
        .collect()
}

/// Most requests waiting for one key at its responsible node while a fetch
/// or a write of that key is under way; more are dropped (and re-sent by
/// their requester).
const MAX_QUEUE: usize = 16;

/// Versions are `lineage << SEQ_BITS | sequence` (see `wire::dht`).
const SEQ_BITS: u32 = 24;
/// Largest sequence: keeps the largest version below `u64::MAX`.
const SEQ_MAX: u64 = (1 << SEQ_BITS) - 2;

fn lineage(v: u64) -> u64 {
    v >> SEQ_BITS
}

/// The first version of a record created afresh: a random lineage.
fn fresh_version(p: &mut Pastry) -> u64 {
    ((p.rng().next_u64() >> SEQ_BITS).max(1) << SEQ_BITS) | 1
}

fn next_version(v: u64) -> u64 {
    if v & ((1 << SEQ_BITS) - 1) < SEQ_MAX {
        v + 1
    } else {
        v
    }
}

/// Whether a write by `owner` that replaced version `base` (0: it created
/// the record) may replace our copy `have`: the copy is the same owner's,
/// or the writer built on our version or on a later one of its lineage
/// (we missed writes). Anything else means the writer did not know our
/// record: a conflict.
fn supersedes(have: &Stored, owner: NodeId, base: u64) -> bool {
    have.owner == owner
        || have.version == base
        || (base != 0 && lineage(have.version) == lineage(base) && have.version < base)
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

    fn from_wire(now: Time, ring: NodeId, r: &WireRecord, max_lease: Duration) -> Stored {
        let lease = Duration::from_millis(u64::from(r.lease_ms)).min(max_lease);
        Stored {
            ring,
            owner: r.owner,
            version: r.version,
            value: r.value.clone(),
            expires: now + lease,
            created: Time(
                now.as_micros()
                    .saturating_sub(u64::from(r.age_ms).saturating_mul(1_000)),
            ),
            holders: SmallVec::new(),
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

/// A request waiting at the responsible node for its key to be free.
#[derive(Debug, Clone)]
struct Queued {
    origin: NodeHandle,
    request: u64,
    op: Op,
}

/// What the responsible node is doing about one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Fetch(u64),
    Write(u64),
}

/// A key with requests under way at its responsible node: one at a time.
#[derive(Debug)]
struct Busy {
    phase: Phase,
    /// A fetch already ran for this burst of requests.
    fetched: bool,
    queue: VecDeque<Queued>,
}

/// A fetch round: we are about to answer for a key we hold no record of.
#[derive(Debug)]
struct Fetching {
    name: RecordName,
    waiting: SmallVec<[NodeId; 8]>,
    /// Live records reported, each with how many neighbours reported it.
    found: Vec<(WireRecord, u32)>,
    deadline: Time,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    Put,
    Renew,
    Release,
}

/// A write we accepted as responsible node, proposed to the replica set.
#[derive(Debug)]
struct PendingWrite {
    name: RecordName,
    kind: WriteKind,
    origin: NodeHandle,
    request: u64,
    /// The record before the write, restored if it fails.
    prev: Option<Stored>,
    /// Owner and version proposed.
    owner: NodeId,
    version: u64,
    asked: SmallVec<[NodeHandle; 8]>,
    waiting: SmallVec<[NodeId; 8]>,
    acked: SmallVec<[NodeId; 8]>,
    refused: usize,
    conflict: Option<WireRecord>,
    /// Acknowledgements needed: a majority of `asked`.
    need: usize,
    deadline: Time,
}

/// The DHT state machine. Driven by `Node`, which lends it Pastry. Its
/// counters are the `dht_*` fields of the node's [`crate::Stats`].
#[derive(Debug)]
pub struct Dht {
    pub cfg: DhtConfig,
    store: BTreeMap<RecordName, Stored>,
    client: BTreeMap<u64, ClientReq>,
    busy: BTreeMap<RecordName, Busy>,
    fetches: BTreeMap<u64, Fetching>,
    writes: BTreeMap<u64, PendingWrite>,
    sweep_at: Option<Time>,
    refresh_at: Time,
    /// Results of our requests, in completion order, drained by `Node`.
    pub results: VecDeque<(u64, Result<DhtReply, DhtError>)>,
}

impl Dht {
    pub fn new(cfg: DhtConfig) -> Self {
        Dht {
            cfg,
            store: BTreeMap::new(),
            client: BTreeMap::new(),
            busy: BTreeMap::new(),
            fetches: BTreeMap::new(),
            writes: BTreeMap::new(),
            sweep_at: None,
            refresh_at: Time::ZERO,
            results: VecDeque::new(),
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
    /// Keys for which, as responsible node, we are fetching or writing.
    pub fn busy_keys(&self) -> usize {
        self.busy.len()
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
            p.stats.dht_malformed += 1;
            return;
        };
        let origin = route.origin;
        if req.name.ring_key() != route.key {
            p.stats.dht_malformed += 1;
            self.reply(now, p, origin, req.request, Status::Invalid, 0, Vec::new());
            return;
        }
        p.stats.dht_requests_served += 1;
        let q = Queued {
            origin,
            request: req.request,
            op: req.op,
        };
        let name = req.name;
        if let Some(b) = self.busy.get_mut(&name) {
            if b.queue
                .iter()
                .any(|x| x.request == q.request && x.origin.id == q.origin.id)
            {
                return;
            }
            if b.queue.len() >= MAX_QUEUE {
                p.stats.dht_queue_full += 1;
                return;
            }
            b.queue.push_back(q);
            return;
        }
        if self.busy.len() >= self.cfg.max_records {
            p.stats.dht_queue_full += 1;
            return;
        }
        self.busy.insert(
            name.clone(),
            Busy {
                phase: Phase::Idle,
                fetched: false,
                queue: VecDeque::from([q]),
            },
        );
        self.pump(now, p, &name);
    }

    /// Serve the requests queued for `name`, one at a time, until one
    /// starts a fetch or a write or none is left.
    fn pump(&mut self, now: Time, p: &mut Pastry, name: &RecordName) {
        loop {
            let Some(b) = self.busy.get(name) else {
                return;
            };
            if b.phase != Phase::Idle {
                return;
            }
            let Some(front) = b.queue.front() else {
                self.busy.remove(name);
                return;
            };
            let needs_fetch = !b.fetched && !matches!(front.op, Op::List);
            self.expire(now, p, name);
            if needs_fetch && !self.store.contains_key(name) {
                if let Some(b) = self.busy.get_mut(name) {
                    b.fetched = true;
                }
                if self.start_fetch(now, p, name) {
                    return;
                }
                continue;
            }
            let Some(q) = self.busy.get_mut(name).and_then(|b| b.queue.pop_front()) else {
                return;
            };
            self.execute(now, p, name, q);
        }
    }

    /// Forget our copy of `name` if its lease ran out.
    fn expire(&mut self, now: Time, p: &mut Pastry, name: &RecordName) {
        if self.store.get(name).is_some_and(|s| s.expires <= now) {
            self.store.remove(name);
            p.stats.dht_expired += 1;
        }
    }

    fn set_phase(&mut self, name: &RecordName, phase: Phase) {
        if let Some(b) = self.busy.get_mut(name) {
            b.phase = phase;
        }
    }

    /// Leave `phase` for `name` if it is the current one; false if it is not
    /// (a stale fetch or write).
    fn end_phase(&mut self, name: &RecordName, phase: Phase) -> bool {
        match self.busy.get_mut(name) {
            Some(b) if b.phase == phase => {
                b.phase = Phase::Idle;
                true
            }
            _ => false,
        }
    }

    fn fresh_id(&self, p: &mut Pastry) -> u64 {
        loop {
            let id = p.rng().next_u64();
            if id != 0 && !self.writes.contains_key(&id) && !self.fetches.contains_key(&id) {
                return id;
            }
        }
    }

    /// Ask the neighbours around `name`'s key for their copy before
    /// answering without one. False if there is nobody to ask.
    fn start_fetch(&mut self, now: Time, p: &mut Pastry, name: &RecordName) -> bool {
        let targets = self.fetch_set(p, name.ring_key());
        if targets.is_empty() {
            return false;
        }
        let id = self.fresh_id(p);
        let bytes = Direct::Fetch {
            fetch: id,
            name: name.clone(),
        }
        .to_bytes(p.me().id);
        for h in &targets {
            p.send_raw(Transmit::datagram(h.addr, bytes.clone()));
        }
        let deadline = now + self.cfg.fetch_timeout;
        self.fetches.insert(
            id,
            Fetching {
                name: name.clone(),
                waiting: targets.iter().map(|h| h.id).collect(),
                found: Vec::new(),
                deadline,
            },
        );
        self.set_phase(name, Phase::Fetch(id));
        p.set_timer(deadline, TimerKind::Service(DHT_TIMER));
        p.stats.dht_fetches += 1;
        true
    }

    fn on_fetched(
        &mut self,
        now: Time,
        p: &mut Pastry,
        from: NodeHandle,
        fetch: u64,
        record: Option<WireRecord>,
    ) {
        let Some(f) = self.fetches.get_mut(&fetch) else {
            return;
        };
        if !f.waiting.contains(&from.id) {
            return;
        }
        f.waiting.retain(|x| *x != from.id);
        if let Some(r) = record
            && r.lease_ms > 0
            && r.key == f.name.key
        {
            match f
                .found
                .iter_mut()
                .find(|(x, _)| x.owner == r.owner && x.version == r.version)
            {
                Some((x, n)) => {
                    *n += 1;
                    x.lease_ms = x.lease_ms.max(r.lease_ms);
                }
                None => f.found.push((r, 1)),
            }
        }
        if f.waiting.is_empty() {
            self.finish_fetch(now, p, fetch);
        }
    }

    /// Every neighbour answered, or the time is up: adopt the record most
    /// of them reported (the newest version on a tie) unless we got one
    /// meanwhile, then serve the queue.
    fn finish_fetch(&mut self, now: Time, p: &mut Pastry, fetch: u64) {
        let Some(f) = self.fetches.remove(&fetch) else {
            return;
        };
        let name = f.name;
        if !self.end_phase(&name, Phase::Fetch(fetch)) {
            return;
        }
        self.expire(now, p, &name);
        let best = f
            .found
            .into_iter()
            .max_by(|(a, na), (b, nb)| na.cmp(nb).then(a.version.cmp(&b.version)));
        if !self.store.contains_key(&name)
            && let Some((r, _)) = best
            && self.store.len() < self.cfg.max_records
        {
            let s = Stored::from_wire(now, name.ring_key(), &r, self.cfg.max_lease);
            self.store.insert(name.clone(), s);
            p.stats.dht_fetch_adopted += 1;
            self.ensure_sweep(now, p);
        }
        self.pump(now, p, &name);
    }

    /// Serve one request against our copy (we hold the key's freshest
    /// record we could learn, and no other request of it is under way).
    fn execute(&mut self, now: Time, p: &mut Pastry, name: &RecordName, q: Queued) {
        let Queued {
            origin,
            request,
            op,
        } = q;
        match op {
            Op::Get => match self.store.get(name) {
                Some(s) => {
                    let rec = s.wire(now, &name.key, true);
                    self.reply(now, p, origin, request, Status::Ok, 0, vec![rec]);
                }
                None => self.reply(now, p, origin, request, Status::NotFound, 0, Vec::new()),
            },
            Op::List => {
                let (records, truncated) = self.list(now, name);
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
                let prev = self.store.get(name).cloned();
                let (version, base) = match &prev {
                    Some(s) => {
                        let ok = s.owner == owner
                            || expect == EXPECT_ANY
                            || (expect != EXPECT_FREE && expect == s.version);
                        if !ok {
                            let rec = s.wire(now, &name.key, false);
                            self.reply(now, p, origin, request, Status::Conflict, 0, vec![rec]);
                            return;
                        }
                        (next_version(s.version), s.version)
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
                            p.stats.dht_store_full += 1;
                            self.reply(now, p, origin, request, Status::StoreFull, 0, Vec::new());
                            return;
                        }
                        // A random lineage makes a re-created record's
                        // versions differ from the expired one's (no ABA
                        // for CAS).
                        (fresh_version(p), 0)
                    }
                };
                let s = Stored {
                    ring: name.ring_key(),
                    owner,
                    version,
                    value,
                    expires: now + lease,
                    created: prev.as_ref().map_or(now, |s| s.created),
                    holders: prev.as_ref().map(|s| s.holders.clone()).unwrap_or_default(),
                };
                self.store.insert(name.clone(), s);
                self.ensure_sweep(now, p);
                self.start_write(now, p, name, WriteKind::Put, origin, request, prev, base);
            }
            Op::Renew { owner, lease_ms } => {
                let lease = Duration::from_millis(u64::from(lease_ms)).min(self.cfg.max_lease);
                match self.store.get_mut(name) {
                    None => self.reply(now, p, origin, request, Status::NotFound, 0, Vec::new()),
                    Some(s) if s.owner != owner => {
                        let rec = s.wire(now, &name.key, false);
                        self.reply(now, p, origin, request, Status::NotOwner, 0, vec![rec]);
                    }
                    Some(s) => {
                        let prev = Some(s.clone());
                        let base = s.version;
                        s.expires = now + lease;
                        self.start_write(
                            now,
                            p,
                            name,
                            WriteKind::Renew,
                            origin,
                            request,
                            prev,
                            base,
                        );
                    }
                }
            }
            Op::Release { owner } => match self.store.get(name) {
                // Already gone: releasing is idempotent.
                None => self.reply(now, p, origin, request, Status::Ok, 0, Vec::new()),
                Some(s) if s.owner != owner => {
                    let rec = s.wire(now, &name.key, false);
                    self.reply(now, p, origin, request, Status::NotOwner, 0, vec![rec]);
                }
                Some(s) => {
                    let base = s.version;
                    let prev = self.store.remove(name);
                    self.start_write(
                        now,
                        p,
                        name,
                        WriteKind::Release,
                        origin,
                        request,
                        prev,
                        base,
                    );
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

    /// The `replicas` leaf-set members nearest to `ring` on each side of
    /// it: every node that held a copy before up to `replicas` nodes joined
    /// between the key and the old holders.
    fn fetch_set(&self, p: &Pastry, ring: NodeId) -> SmallVec<[NodeHandle; 8]> {
        let mut cw: SmallVec<[NodeHandle; 16]> = SmallVec::new();
        let mut ccw: SmallVec<[NodeHandle; 16]> = SmallVec::new();
        for l in p.leaf_set().members() {
            let h = l.handle;
            if ring.cw_distance(h.id) <= ring.ccw_distance(h.id) {
                cw.push(h);
            } else {
                ccw.push(h);
            }
        }
        cw.sort_by_key(|h| ring.cw_distance(h.id));
        ccw.sort_by_key(|h| ring.ccw_distance(h.id));
        let k = self.cfg.replicas;
        cw.iter()
            .take(k)
            .chain(ccw.iter().take(k))
            .copied()
            .collect()
    }

    /// Propose the write just applied to our copy of `name` (a release if
    /// we no longer hold it) to the replica set; it commits once a
    /// majority stored it (and, for a put, none held a conflicting record).
    #[allow(clippy::too_many_arguments)]
    fn start_write(
        &mut self,
        now: Time,
        p: &mut Pastry,
        name: &RecordName,
        kind: WriteKind,
        origin: NodeHandle,
        request: u64,
        prev: Option<Stored>,
        base: u64,
    ) {
        let replicas = self.replica_set(p, name.ring_key());
        let id = self.fresh_id(p);
        let (owner, version, rep, reply_rec) = match (self.store.get(name), &prev) {
            (Some(s), _) => (
                s.owner,
                s.version,
                self.replicate_msg(now, id, REP_PROPOSE, base, name, s),
                vec![s.wire(now, &name.key, false)],
            ),
            (None, Some(old)) => (
                old.owner,
                old.version,
                Replicate {
                    write: id,
                    kind: REP_PROPOSE,
                    base,
                    name: name.clone(),
                    owner: old.owner,
                    version: old.version,
                    lease_ms: 0,
                    age_ms: 0,
                    value: Bytes::new(),
                },
                Vec::new(),
            ),
            (None, None) => return,
        };
        if replicas.is_empty() {
            if kind == WriteKind::Release {
                self.reply(now, p, origin, request, Status::Ok, 0, reply_rec);
                return;
            }
            // No other node to replicate to: we are alone, or cut off from
            // every peer. A claim or renewal committed here alone could
            // contradict one the rest of the ring commits meanwhile, so it
            // is undone and not answered; the requester retries until peers
            // are back (and its address lease runs out if they never are).
            match prev {
                Some(old) => {
                    self.store.insert(name.clone(), old);
                }
                None => {
                    self.store.remove(name);
                }
            }
            p.stats.dht_no_replicas += 1;
            return;
        }
        let bytes = Direct::Replicate(rep).to_bytes(p.me().id);
        for h in &replicas {
            p.send_raw(Transmit::datagram(h.addr, bytes.clone()));
        }
        let deadline = now + self.cfg.replica_ack_timeout;
        self.writes.insert(
            id,
            PendingWrite {
                name: name.clone(),
                kind,
                origin,
                request,
                prev,
                owner,
                version,
                need: replicas.len() / 2 + 1,
                waiting: replicas.iter().map(|h| h.id).collect(),
                asked: replicas,
                acked: SmallVec::new(),
                refused: 0,
                conflict: None,
                deadline,
            },
        );
        self.set_phase(name, Phase::Write(id));
        p.set_timer(deadline, TimerKind::Service(DHT_TIMER));
    }

    fn on_ack(&mut self, now: Time, p: &mut Pastry, from: NodeHandle, write: u64, r: AckResult) {
        let Some(w) = self.writes.get_mut(&write) else {
            return;
        };
        if !w.waiting.contains(&from.id) {
            return;
        }
        w.waiting.retain(|x| *x != from.id);
        let mut decided = w.waiting.is_empty();
        match r {
            AckResult::Refused => w.refused += 1,
            AckResult::Stored => w.acked.push(from.id),
            AckResult::Conflict(rec) => {
                if w.conflict.is_none() {
                    w.conflict = Some(rec);
                }
                // A put fails on the first conflict: no need to wait.
                decided |= w.kind == WriteKind::Put;
            }
        }
        if decided {
            self.finish_write(now, p, write);
        }
    }

    /// Every replica answered, or the time is up: commit and answer, or
    /// roll back.
    fn finish_write(&mut self, now: Time, p: &mut Pastry, write: u64) {
        let Some(w) = self.writes.remove(&write) else {
            return;
        };
        if !self.end_phase(&w.name, Phase::Write(write)) {
            return;
        }
        let ok = match w.kind {
            WriteKind::Put => w.acked.len() >= w.need && w.conflict.is_none(),
            WriteKind::Renew => w.acked.len() >= w.need,
            WriteKind::Release => true,
        };
        if ok {
            let records = match self.store.get_mut(&w.name) {
                Some(s) => {
                    s.holders = w.acked.iter().copied().collect();
                    vec![s.wire(now, &w.name.key, false)]
                }
                None => Vec::new(),
            };
            self.reply(now, p, w.origin, w.request, Status::Ok, 0, records);
        } else {
            let ours = self
                .store
                .get(&w.name)
                .is_some_and(|s| s.owner == w.owner && s.version == w.version);
            if ours {
                match &w.prev {
                    Some(prev) => {
                        self.store.insert(w.name.clone(), prev.clone());
                    }
                    None => {
                        self.store.remove(&w.name);
                    }
                }
            }
            if w.kind == WriteKind::Put {
                // Undo the proposal wherever it was stored.
                let abort = match &w.prev {
                    Some(prev) => {
                        let mut a = self.replicate_msg(now, 0, REP_ABORT, w.version, &w.name, prev);
                        if prev.expires <= now {
                            a.lease_ms = 0;
                        }
                        a
                    }
                    None => Replicate {
                        write: 0,
                        kind: REP_ABORT,
                        base: w.version,
                        name: w.name.clone(),
                        owner: NodeId(0),
                        version: 0,
                        lease_ms: 0,
                        age_ms: 0,
                        value: Bytes::new(),
                    },
                };
                // The neighbours we fetch from too: one may have copied the
                // proposal from a replica meanwhile (a fetch of its own).
                let bytes = Direct::Replicate(abort).to_bytes(p.me().id);
                let mut to = self.fetch_set(p, w.name.ring_key());
                for h in &w.asked {
                    if !to.iter().any(|x| x.id == h.id) {
                        to.push(*h);
                    }
                }
                for h in to {
                    p.send_raw(Transmit::datagram(h.addr, bytes.clone()));
                }
            }
            match (w.conflict, w.kind) {
                (Some(rec), WriteKind::Put) => {
                    p.stats.dht_write_conflicts += 1;
                    self.reply(now, p, w.origin, w.request, Status::Conflict, 0, vec![rec]);
                }
                (Some(rec), _) => {
                    p.stats.dht_write_conflicts += 1;
                    self.reply(now, p, w.origin, w.request, Status::NotOwner, 0, vec![rec]);
                }
                (None, _) if w.refused > 0 => {
                    p.stats.dht_store_full += 1;
                    self.reply(
                        now,
                        p,
                        w.origin,
                        w.request,
                        Status::StoreFull,
                        0,
                        Vec::new(),
                    );
                }
                // Too few replicas answered: no answer, the requester
                // sends the request again.
                (None, _) => p.stats.dht_write_aborts += 1,
            }
        }
        self.pump(now, p, &w.name);
    }

    fn replicate_msg(
        &self,
        now: Time,
        write: u64,
        kind: u8,
        base: u64,
        name: &RecordName,
        s: &Stored,
    ) -> Replicate {
        Replicate {
            write,
            kind,
            base,
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
            self.on_reply(now, p, request, status, flags, records);
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
            } => self.on_reply(now, p, request, status, flags, records),
            Direct::Replicate(r) => self.on_replicate(now, p, from, r),
            Direct::ReplicateAck { write, result } => self.on_ack(now, p, from, write, result),
            Direct::Fetch { fetch, name } => {
                self.expire(now, p, &name);
                let record = self.store.get(&name).map(|s| s.wire(now, &name.key, true));
                let d = Direct::Fetched { fetch, record };
                p.send_raw(Transmit::datagram(from.addr, d.to_bytes(p.me().id)));
            }
            Direct::Fetched { fetch, record } => self.on_fetched(now, p, from, fetch, record),
        }
    }

    fn on_reply(
        &mut self,
        now: Time,
        p: &mut Pastry,
        request: u64,
        status: Status,
        flags: u8,
        records: Vec<WireRecord>,
    ) {
        let Some(c) = self.client.remove(&request) else {
            p.stats.dht_late_replies += 1;
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
        self.expire(now, p, &r.name);
        match r.kind {
            REP_ABORT => {
                // Restore what the aborted proposal replaced, if we stored it.
                let Some(s) = self.store.get_mut(&r.name) else {
                    return;
                };
                if s.version != r.base {
                    return;
                }
                if r.lease_ms == 0 {
                    self.store.remove(&r.name);
                } else {
                    let ring = s.ring;
                    let holders = std::mem::take(&mut s.holders);
                    *s = Stored::from_wire(now, ring, &wire_of(&r), self.cfg.max_lease);
                    s.holders = holders;
                }
            }
            REP_HANDOFF => {
                if r.lease_ms == 0 {
                    return;
                }
                match self.store.get_mut(&r.name) {
                    Some(s) => {
                        if s.version == r.version && s.owner == r.owner {
                            let until = now
                                + Duration::from_millis(u64::from(r.lease_ms))
                                    .min(self.cfg.max_lease);
                            s.expires = s.expires.max(until);
                        } else if lineage(s.version) == lineage(r.version) && s.version < r.version
                        {
                            let holders = std::mem::take(&mut s.holders);
                            *s = Stored::from_wire(now, s.ring, &wire_of(&r), self.cfg.max_lease);
                            s.holders = holders;
                        } else {
                            // Another lineage, or older: ours stands (a
                            // hand-off never overrides a live record).
                            return;
                        }
                        if !s.holders.contains(&from.id) {
                            s.holders.push(from.id);
                        }
                    }
                    None => {
                        self.insert_copy(now, p, from, &r);
                    }
                }
            }
            _ => {
                let result = if r.lease_ms == 0 {
                    // A release: forget the releaser's record (or an older
                    // version of its lineage); anything else stays.
                    if self
                        .store
                        .get(&r.name)
                        .is_some_and(|s| supersedes(s, r.owner, r.base))
                    {
                        self.store.remove(&r.name);
                    }
                    AckResult::Stored
                } else {
                    match self.store.get_mut(&r.name) {
                        Some(s) if !supersedes(s, r.owner, r.base) => {
                            p.stats.dht_proposals_rejected += 1;
                            AckResult::Conflict(s.wire(now, &r.name.key, false))
                        }
                        Some(s) => {
                            let mut holders = std::mem::take(&mut s.holders);
                            if !holders.contains(&from.id) {
                                holders.push(from.id);
                            }
                            *s = Stored::from_wire(now, s.ring, &wire_of(&r), self.cfg.max_lease);
                            s.holders = holders;
                            AckResult::Stored
                        }
                        None => {
                            if self.insert_copy(now, p, from, &r) {
                                AckResult::Stored
                            } else {
                                AckResult::Refused
                            }
                        }
                    }
                };
                if r.write != 0 {
                    let ack = Direct::ReplicateAck {
                        write: r.write,
                        result,
                    };
                    p.send_raw(Transmit::datagram(from.addr, ack.to_bytes(p.me().id)));
                }
            }
        }
    }

    /// Store a copy we did not have; false if the store is full.
    fn insert_copy(&mut self, now: Time, p: &mut Pastry, from: NodeHandle, r: &Replicate) -> bool {
        if self.store.len() >= self.cfg.max_records {
            p.stats.dht_store_full += 1;
            return false;
        }
        let mut s = Stored::from_wire(now, r.name.ring_key(), &wire_of(r), self.cfg.max_lease);
        s.holders.push(from.id);
        self.store.insert(r.name.clone(), s);
        p.stats.dht_replicas_stored += 1;
        self.ensure_sweep(now, p);
        true
    }

    // ----- maintenance --------------------------------------------------

    /// The leaf set changed: re-establish every record's replica group.
    pub fn leaf_set_changed(&mut self, now: Time, p: &mut Pastry) {
        self.rereplicate(now, p, false);
    }

    /// Push each record where it is missing: as responsible node to every
    /// group member not known to hold it (to all of them if `refresh`), as
    /// replica or outsider to the responsible node. A node drops its copy
    /// only once it is not even among the nodes a new responsible node
    /// would fetch from.
    fn rereplicate(&mut self, now: Time, p: &mut Pastry, refresh: bool) {
        if self.store.is_empty() {
            // Nothing to push (most nodes, most of the time): skip
            // gathering the leaf set, which every leaf-set change asks.
            return;
        }
        let me = p.me().id;
        let k = self.cfg.replicas;
        let members: SmallVec<[NodeHandle; 32]> =
            p.leaf_set().members().map(|l| l.handle).collect();
        let mut drop: Vec<RecordName> = Vec::new();
        let mut out: Vec<(NodeHandle, Replicate)> = Vec::new();
        for (name, s) in self.store.iter_mut() {
            if s.expires <= now || self.busy.contains_key(name) {
                continue;
            }
            let mut group: SmallVec<[NodeHandle; 32]> = members.clone();
            group.push(p.me());
            group.sort_by(|a, b| order(s.ring, a.id, b.id));
            let rank = group.iter().position(|h| h.id == me).unwrap_or(usize::MAX);
            let root = group[0];
            let targets: SmallVec<[NodeHandle; 8]> = if rank == 0 {
                // Responsible: every group member must hold it.
                group[1..].iter().take(k).copied().collect()
            } else {
                // Replica or outsider: make sure the responsible node has it.
                std::iter::once(root).collect()
            };
            let rep = Replicate {
                write: 0,
                kind: REP_HANDOFF,
                base: 0,
                name: name.clone(),
                owner: s.owner,
                version: s.version,
                lease_ms: ms(s.expires.saturating_since(now)).max(1),
                age_ms: ms(now.saturating_since(s.created)),
                value: s.value.clone(),
            };
            if refresh && rank == 0 {
                s.holders.clear();
            }
            for t in targets {
                if t.id != me && !s.holders.contains(&t.id) {
                    s.holders.push(t.id);
                    out.push((t, rep.clone()));
                }
            }
            group.truncate(2 * k + 1);
            s.holders.retain(|id| group.iter().any(|h| h.id == *id));
            if rank > 2 * k {
                drop.push(name.clone());
            }
        }
        for name in drop {
            self.store.remove(&name);
        }
        p.stats.dht_handoffs_sent += out.len() as u64;
        for (to, rep) in out {
            let bytes = Direct::Replicate(rep).to_bytes(me);
            p.send_raw(Transmit::datagram(to.addr, bytes));
        }
    }

    /// A node was declared dead: stop waiting for it.
    pub fn peer_down(&mut self, now: Time, p: &mut Pastry, peer: NodeHandle) {
        for id in stop_waiting_for(
            self.writes.iter_mut().map(|(id, w)| (*id, &mut w.waiting)),
            peer.id,
        ) {
            self.finish_write(now, p, id);
        }
        for id in stop_waiting_for(
            self.fetches.iter_mut().map(|(id, f)| (*id, &mut f.waiting)),
            peer.id,
        ) {
            self.finish_fetch(now, p, id);
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

    /// The DHT timer fired: retries, overdue fetches and replica
    /// acknowledgements, expired records. Spurious calls are harmless.
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
                p.stats.dht_timeouts += 1;
                self.results
                    .push_back((id, Err(DhtError::Timeout { attempts })));
                continue;
            }
            c.attempts += 1;
            c.deadline = now + self.cfg.request_timeout;
            let (deadline, ring, payload) = (c.deadline, c.ring, c.payload.clone());
            p.stats.dht_retries += 1;
            p.set_timer(deadline, TimerKind::Service(DHT_TIMER));
            p.route(now, ring, Service::Other(SERVICE_DHT), payload);
        }
        let overdue: SmallVec<[u64; 8]> = self
            .fetches
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            self.finish_fetch(now, p, id);
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
            p.stats.dht_expired += (before - self.store.len()) as u64;
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

/// The record a Replicate carries.
fn wire_of(r: &Replicate) -> WireRecord {
    WireRecord {
        key: r.name.key.clone(),
        owner: r.owner,
        version: r.version,
        lease_ms: r.lease_ms,
        age_ms: r.age_ms,
        value: r.value.clone(),
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
