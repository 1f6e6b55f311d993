//! The management ring of the Multicast Middleware paper, built on
//! [`crate::dht`]: distributed allocation of unique TAP addresses from a
//! private prefix, and a directory of active groups.
//!
//! **State owned:** the address allocation (queued until the node joins,
//! claiming, or holding an address with its lease and renewal time), the
//! groups this node announces, directory listings in progress, and which
//! DHT requests are ours.
//!
//! **Consumes:** commands (`allocate`, `release`, `announce_group`,
//! `withdraw_group`, `list_groups`), the results of its DHT requests, the
//! node's `Joined`, and its timer (`TimerKind::Service(MGMT_TIMER)`).
//!
//! **Emits:** DHT requests, and [`MgmtEvent`]s (`Node` turns them into
//! `Event`s).
//!
//! Address allocation: an address is a record `alm/addr`/`<4 octets>`.
//! A node claims a random host address of the prefix (never the network
//! or broadcast address) with a put that succeeds only if the record is
//! free or already ours ([`Expect::Free`](crate::dht::Expect)), so of two
//! concurrent claimants exactly one wins; the loser tries another random
//! address it has not tried. After `random_attempts` conflicts it scans the
//! untried addresses in random order, `scan_parallel` at a time (extra
//! wins are released at once). Once every address was tried and refused,
//! the pool is exhausted ([`PoolExhausted`], "address pool
//! 172.16.0.0/20 exhausted"): the work is bounded by the pool size. The
//! holder renews its lease every `address_renew` and releases it on a clean
//! exit; a crashed holder's address returns to the pool when its lease
//! (`address_lease`) runs out.
//!
//! Group directory: a group is a record `alm/group`/`<4 octets>` placed in
//! one of `group_buckets` buckets (by the group's hash), with value members
//! (4, big-endian) then the name (UTF-8, at most [`MAX_GROUP_NAME`] bytes).
//! Announcers (a tree root, or any member) overwrite it and re-put it every
//! `group_refresh`; it expires `group_lease` after the last. The record's
//! creation time survives updates, so `since` is when the group was first
//! announced. `list_groups` lists every bucket (one request each) and
//! merges the answers.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

use bytes::{BufMut, Bytes, BytesMut};

use crate::dht::{Dht, DhtError, DhtReply};
use crate::id::NodeId;
use crate::pastry::{Pastry, TimerKind};
use crate::time::{Duration, Time};
use crate::wire::dht::{EXPECT_ANY, EXPECT_FREE, Op, RecordName};

/// Timer id of the management services within `TimerKind::Service`.
pub const MGMT_TIMER: u8 = 3;
/// Namespace of address records.
pub const ADDR_NAMESPACE: &[u8] = b"alm/addr";
/// Namespace of group records.
pub const GROUP_NAMESPACE: &[u8] = b"alm/group";
/// Longest group name stored, in bytes.
pub const MAX_GROUP_NAME: usize = 64;

/// Management tunables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MgmtConfig {
    /// The default address pool (`almd --tap-addr auto`).
    pub prefix: Ipv4Addr,
    pub prefix_len: u8,
    pub address_lease: Duration,
    pub address_renew: Duration,
    /// A won claim is confirmed this many times, this far apart, by a
    /// renewal (a majority write) before the address is reported: a claim
    /// won while the ring was still settling (many nodes joining at once,
    /// two nodes both believing they hold the key) loses its confirmation
    /// and is never used.
    pub address_confirm: Duration,
    pub address_confirmations: u8,
    /// Random claims before scanning the pool in parallel.
    pub random_attempts: u32,
    /// Claims in flight while scanning.
    pub scan_parallel: usize,
    /// Buckets of the group directory (`list_groups` sends one request each).
    pub group_buckets: u16,
    pub group_lease: Duration,
    pub group_refresh: Duration,
}

impl Default for MgmtConfig {
    fn default() -> Self {
        MgmtConfig {
            prefix: Ipv4Addr::new(172, 16, 0, 0),
            prefix_len: 20,
            address_lease: Duration::from_secs(60),
            address_renew: Duration::from_secs(20),
            address_confirm: Duration::from_secs(2),
            address_confirmations: 2,
            random_attempts: 16,
            scan_parallel: 8,
            group_buckets: 8,
            group_lease: Duration::from_secs(60),
            group_refresh: Duration::from_secs(20),
        }
    }
}

impl MgmtConfig {
    /// Why this configuration cannot work, if it cannot.
    pub fn problem(&self) -> Option<&'static str> {
        if !(MIN_PREFIX_LEN..=MAX_PREFIX_LEN).contains(&self.prefix_len) {
            return Some("mgmt.prefix_len must be between 16 and 30");
        }
        if self.address_renew >= self.address_lease || self.group_refresh >= self.group_lease {
            return Some("mgmt renew/refresh intervals must be shorter than the leases");
        }
        if self.group_buckets == 0 || self.scan_parallel == 0 {
            return Some("mgmt.group_buckets and mgmt.scan_parallel must be at least 1");
        }
        None
    }
}

/// Shortest and longest prefix an address pool may have: a /16 holds 65534
/// addresses (an 8 KiB tried-bitmap), a /30 two.
pub const MIN_PREFIX_LEN: u8 = 16;
pub const MAX_PREFIX_LEN: u8 = 30;

/// Every address of the pool is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("address pool {prefix}/{prefix_len} exhausted")]
pub struct PoolExhausted {
    pub prefix: Ipv4Addr,
    pub prefix_len: u8,
}

/// Why an allocation cannot start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("prefix length /{0} not supported: use /16 to /30")]
    PrefixLen(u8),
    #[error("an address is already allocated or being allocated")]
    Busy,
}

/// One active group, as `list_groups` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub group: Ipv4Addr,
    pub name: Option<String>,
    /// The announcer's estimate.
    pub members: u32,
    /// First announced (local clock).
    pub since: Time,
}

/// What the management services tell the node's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MgmtEvent {
    AddressAllocated {
        addr: Ipv4Addr,
        lease_until: Time,
    },
    AddressPoolExhausted(PoolExhausted),
    /// Our address was taken by another node (our lease had lapsed); a new
    /// allocation has started.
    AddressLost {
        addr: Ipv4Addr,
    },
    GroupDirectory(Vec<GroupRecord>),
}

/// An address pool: host addresses `network + 1 ..= network + hosts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pool {
    network: u32,
    prefix_len: u8,
    hosts: u32,
}

impl Pool {
    fn new(prefix: Ipv4Addr, prefix_len: u8) -> Pool {
        let mask = u32::MAX << (32 - u32::from(prefix_len));
        Pool {
            network: u32::from(prefix) & mask,
            prefix_len,
            // Without the network and broadcast addresses.
            hosts: (1u32 << (32 - u32::from(prefix_len))) - 2,
        }
    }
    fn addr(&self, host: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.network + host)
    }
    fn exhausted(&self) -> PoolExhausted {
        PoolExhausted {
            prefix: Ipv4Addr::from(self.network),
            prefix_len: self.prefix_len,
        }
    }
}

#[derive(Debug, Clone)]
enum Alloc {
    Idle,
    /// Asked for before the node joined.
    Queued(Pool),
    Claiming {
        pool: Pool,
        /// Bit `h` set: host `h` was tried.
        tried: Vec<u64>,
        attempts: u32,
        inflight: BTreeMap<u64, u32>,
    },
    /// Won a claim; confirming it before reporting it.
    Confirming {
        pool: Pool,
        addr: Ipv4Addr,
        lease_until: Time,
        confirm_at: Time,
        left: u8,
    },
    Holding {
        pool: Pool,
        addr: Ipv4Addr,
        lease_until: Time,
        renew_at: Time,
    },
}

/// What one of our DHT requests was for.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Claim,
    /// A claim made while another won: release it if it succeeds.
    Surplus(Ipv4Addr),
    Renew(Ipv4Addr),
    Reclaim(Ipv4Addr),
    Confirm(Ipv4Addr),
    Ignore,
    List(u64),
}

#[derive(Debug, Clone)]
struct Listing {
    waiting: u16,
    groups: Vec<GroupRecord>,
}

/// The management services' state machine. Driven by `Node`, which lends
/// it the DHT and Pastry.
#[derive(Debug)]
pub struct Mgmt {
    pub cfg: MgmtConfig,
    alloc: Alloc,
    pending: BTreeMap<u64, Pending>,
    announced: BTreeMap<Ipv4Addr, (Option<String>, u32)>,
    refresh_at: Option<Time>,
    listings: BTreeMap<u64, Listing>,
    next_listing: u64,
    pub events: VecDeque<MgmtEvent>,
}

fn addr_name(a: Ipv4Addr) -> RecordName {
    RecordName {
        namespace: Bytes::from_static(ADDR_NAMESPACE),
        key: Bytes::copy_from_slice(&a.octets()),
        bucket: None,
    }
}

impl Mgmt {
    pub fn new(cfg: MgmtConfig) -> Self {
        Mgmt {
            cfg,
            alloc: Alloc::Idle,
            pending: BTreeMap::new(),
            announced: BTreeMap::new(),
            refresh_at: None,
            listings: BTreeMap::new(),
            next_listing: 0,
            events: VecDeque::new(),
        }
    }

    /// Whether the DHT request `id` is ours (then its result goes to
    /// [`Mgmt::on_result`]).
    pub fn owns(&self, id: u64) -> bool {
        self.pending.contains_key(&id)
    }

    /// The address we hold, with its lease.
    pub fn address(&self) -> Option<(Ipv4Addr, Time)> {
        match self.alloc {
            Alloc::Holding {
                addr, lease_until, ..
            } => Some((addr, lease_until)),
            _ => None,
        }
    }

    /// Whether an allocation is under way (queued or claiming).
    pub fn is_allocating(&self) -> bool {
        matches!(
            self.alloc,
            Alloc::Queued(_) | Alloc::Claiming { .. } | Alloc::Confirming { .. }
        )
    }

    // ----- addresses ------------------------------------------------------

    /// Start claiming an address from `prefix/prefix_len`.
    pub fn allocate(
        &mut self,
        now: Time,
        dht: &mut Dht,
        p: &mut Pastry,
        prefix: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), AllocError> {
        if !(MIN_PREFIX_LEN..=MAX_PREFIX_LEN).contains(&prefix_len) {
            return Err(AllocError::PrefixLen(prefix_len));
        }
        if !matches!(self.alloc, Alloc::Idle) {
            return Err(AllocError::Busy);
        }
        let pool = Pool::new(prefix, prefix_len);
        if p.is_active() {
            self.start(now, dht, p, pool);
        } else {
            self.alloc = Alloc::Queued(pool);
        }
        Ok(())
    }

    /// The node joined: start a queued allocation.
    pub fn on_joined(&mut self, now: Time, dht: &mut Dht, p: &mut Pastry) {
        if let Alloc::Queued(pool) = self.alloc {
            self.start(now, dht, p, pool);
        }
    }

    fn start(&mut self, now: Time, dht: &mut Dht, p: &mut Pastry, pool: Pool) {
        self.alloc = Alloc::Claiming {
            pool,
            tried: vec![0; (pool.hosts as usize + 2).div_ceil(64)],
            attempts: 0,
            inflight: BTreeMap::new(),
        };
        self.pump(now, dht, p);
    }

    /// Keep the claims window full; declare exhaustion when nothing is left
    /// to try and nothing is in flight.
    fn pump(&mut self, now: Time, dht: &mut Dht, p: &mut Pastry) {
        let me = p.me();
        let lease_ms = dht.lease_ms(self.cfg.address_lease);
        let value = Bytes::from(me.addr.to_string());
        let Alloc::Claiming {
            pool,
            tried,
            attempts,
            inflight,
        } = &mut self.alloc
        else {
            return;
        };
        let window = if *attempts < self.cfg.random_attempts {
            1
        } else {
            self.cfg.scan_parallel
        };
        while inflight.len() < window {
            let Some(host) = pick(tried, pool.hosts, p) else {
                break;
            };
            tried[host as usize / 64] |= 1 << (host % 64);
            *attempts += 1;
            let op = Op::Put {
                owner: me.id,
                expect: EXPECT_FREE,
                lease_ms,
                value: value.clone(),
            };
            let id = dht.request(now, p, addr_name(pool.addr(host)), op);
            inflight.insert(id, host);
            self.pending.insert(id, Pending::Claim);
        }
        if inflight.is_empty() {
            let e = pool.exhausted();
            tracing::info!(error = %e, "address allocation failed");
            self.alloc = Alloc::Idle;
            self.events.push_back(MgmtEvent::AddressPoolExhausted(e));
        }
    }

    /// Release our address (clean exit), or abandon an allocation under way.
    pub fn release(&mut self, now: Time, dht: &mut Dht, p: &mut Pastry) {
        match std::mem::replace(&mut self.alloc, Alloc::Idle) {
            Alloc::Holding { addr, .. } | Alloc::Confirming { addr, .. } => {
                let id = dht.request(now, p, addr_name(addr), Op::Release { owner: p.me().id });
                self.pending.insert(id, Pending::Ignore);
            }
            Alloc::Claiming { pool, inflight, .. } => {
                for (id, host) in inflight {
                    self.pending.insert(id, Pending::Surplus(pool.addr(host)));
                }
            }
            Alloc::Idle | Alloc::Queued(_) => {}
        }
    }

    // ----- groups -------------------------------------------------------

    fn group_name(&self, group: Ipv4Addr) -> RecordName {
        let h = NodeId::hash(&[b"alm/group-bucket", &group.octets()]);
        let bucket = (h.0 % u128::from(self.cfg.group_buckets.max(1))) as u16;
        RecordName {
            namespace: Bytes::from_static(GROUP_NAMESPACE),
            key: Bytes::copy_from_slice(&group.octets()),
            bucket: Some(bucket),
        }
    }

    /// Announce (or update) `group` in the directory, and keep it there.
    pub fn announce_group(
        &mut self,
        now: Time,
        dht: &mut Dht,
        p: &mut Pastry,
        group: Ipv4Addr,
        name: Option<String>,
        members: u32,
    ) {
        let name = name.map(|n| truncate_utf8(n, MAX_GROUP_NAME));
        self.announced.insert(group, (name, members));
        self.put_group(now, dht, p, group);
        if self.refresh_at.is_none() {
            let at = now + self.cfg.group_refresh;
            self.refresh_at = Some(at);
            p.set_timer(at, TimerKind::Service(MGMT_TIMER));
        }
    }

    fn put_group(&mut self, now: Time, dht: &mut Dht, p: &mut Pastry, group: Ipv4Addr) {
        let Some((name, members)) = self.announced.get(&group) else {
            return;
        };
        let mut v = BytesMut::with_capacity(4 + MAX_GROUP_NAME);
        v.put_u32(*members);
        if let Some(n) = name {
            v.put_slice(n.as_bytes());
        }
        let op = Op::Put {
            owner: p.me().id,
            expect: EXPECT_ANY,
            lease_ms: dht.lease_ms(self.cfg.group_lease),
            value: v.freeze(),
        };
        let name = self.group_name(group);
        let id = dht.request(now, p, name, op);
        self.pending.insert(id, Pending::Ignore);
    }

    /// Stop announcing `group`; its record goes when we released it (if
    /// we were the last announcer) or when its lease runs out.
    pub fn withdraw_group(&mut self, now: Time, dht: &mut Dht, p: &mut Pastry, group: Ipv4Addr) {
        if self.announced.remove(&group).is_some() {
            let op = Op::Release { owner: p.me().id };
            let id = dht.request(now, p, self.group_name(group), op);
            self.pending.insert(id, Pending::Ignore);
        }
    }

    /// Read every bucket of the directory; `MgmtEvent::GroupDirectory`
    /// follows.
    pub fn list_groups(&mut self, now: Time, dht: &mut Dht, p: &mut Pastry) {
        self.next_listing += 1;
        let listing = self.next_listing;
        self.listings.insert(
            listing,
            Listing {
                waiting: self.cfg.group_buckets,
                groups: Vec::new(),
            },
        );
        for b in 0..self.cfg.group_buckets {
            let name = RecordName {
                namespace: Bytes::from_static(GROUP_NAMESPACE),
                key: Bytes::new(),
                bucket: Some(b),
            };
            let id = dht.request(now, p, name, Op::List);
            self.pending.insert(id, Pending::List(listing));
        }
    }

    // ----- results and time ------------------------------------------------

    /// The result of our DHT request `id`.
    pub fn on_result(
        &mut self,
        now: Time,
        dht: &mut Dht,
        p: &mut Pastry,
        id: u64,
        res: Result<DhtReply, DhtError>,
    ) {
        let Some(what) = self.pending.remove(&id) else {
            return;
        };
        match what {
            Pending::Claim => self.on_claim(now, dht, p, id, res),
            Pending::Confirm(addr) => self.on_confirm(now, dht, p, addr, res),
            Pending::Surplus(addr) => {
                if let Ok(DhtReply::Stored { .. }) = res {
                    let op = Op::Release { owner: p.me().id };
                    let rid = dht.request(now, p, addr_name(addr), op);
                    self.pending.insert(rid, Pending::Ignore);
                }
            }
            Pending::Renew(addr) | Pending::Reclaim(addr) => {
                let Alloc::Holding {
                    addr: held,
                    lease_until,
                    ..
                } = &mut self.alloc
                else {
                    return;
                };
                if *held != addr {
                    return;
                }
                match res {
                    Ok(
                        DhtReply::Renewed { lease_until: l }
                        | DhtReply::Stored { lease_until: l, .. },
                    ) => {
                        *lease_until = l;
                        p.set_timer(l, TimerKind::Service(MGMT_TIMER));
                    }
                    Err(DhtError::NotFound) => {
                        // The record was lost (every holder failed at once):
                        // claim it again.
                        self.reclaim(now, dht, p, addr);
                    }
                    Err(DhtError::NotOwner | DhtError::Conflict { .. }) => {
                        let Alloc::Holding { pool, .. } = self.alloc else {
                            return;
                        };
                        tracing::warn!(%addr, "our address was taken over; allocating anew");
                        self.events.push_back(MgmtEvent::AddressLost { addr });
                        self.start(now, dht, p, pool);
                    }
                    // A timeout: the next renewal tries again, well within the lease.
                    Ok(_) | Err(_) => {}
                }
            }
            Pending::Ignore => {}
            Pending::List(listing) => {
                let Some(l) = self.listings.get_mut(&listing) else {
                    return;
                };
                l.waiting = l.waiting.saturating_sub(1);
                if let Ok(DhtReply::Listed { records, .. }) = res {
                    for r in records {
                        let (Ok(octets), Some(members)) = (
                            <[u8; 4]>::try_from(&r.key[..]),
                            r.value
                                .get(..4)
                                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                        ) else {
                            continue;
                        };
                        let name = std::str::from_utf8(&r.value[4..])
                            .ok()
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned);
                        l.groups.push(GroupRecord {
                            group: Ipv4Addr::from(octets),
                            name,
                            members,
                            since: r.since,
                        });
                    }
                }
                if l.waiting == 0
                    && let Some(mut l) = self.listings.remove(&listing)
                {
                    l.groups.sort_by_key(|g| g.group);
                    l.groups.dedup_by_key(|g| g.group);
                    self.events.push_back(MgmtEvent::GroupDirectory(l.groups));
                }
            }
        }
    }

    fn on_claim(
        &mut self,
        now: Time,
        dht: &mut Dht,
        p: &mut Pastry,
        id: u64,
        res: Result<DhtReply, DhtError>,
    ) {
        let Alloc::Claiming { pool, inflight, .. } = &mut self.alloc else {
            return;
        };
        let Some(host) = inflight.remove(&id) else {
            return;
        };
        let pool = *pool;
        match res {
            Ok(DhtReply::Stored { lease_until, .. }) => {
                // Other claims still in flight release what they win.
                for (other, h) in std::mem::take(inflight) {
                    self.pending.insert(other, Pending::Surplus(pool.addr(h)));
                }
                let addr = pool.addr(host);
                let confirm_at = now + self.cfg.address_confirm;
                self.alloc = Alloc::Confirming {
                    pool,
                    addr,
                    lease_until,
                    confirm_at,
                    left: self.cfg.address_confirmations,
                };
                p.set_timer(confirm_at, TimerKind::Service(MGMT_TIMER));
                if self.cfg.address_confirmations == 0 {
                    self.hold(now, p);
                }
            }
            // A claim that timed out may still have been stored (its reply
            // was lost, or a later retry committed it): give it back, so
            // we never hold an address we do not use.
            Err(DhtError::Timeout { .. }) => {
                let op = Op::Release { owner: p.me().id };
                let rid = dht.request(now, p, addr_name(pool.addr(host)), op);
                self.pending.insert(rid, Pending::Ignore);
                self.pump(now, dht, p);
            }
            // Conflict, full store: that address is out for this round
            // (bounded work), try another.
            Ok(_) | Err(_) => self.pump(now, dht, p),
        }
    }

    /// The claim is confirmed: hold the address and report it.
    fn hold(&mut self, now: Time, p: &mut Pastry) {
        let Alloc::Confirming {
            pool,
            addr,
            lease_until,
            ..
        } = self.alloc
        else {
            return;
        };
        let renew_at = now + self.cfg.address_renew;
        self.alloc = Alloc::Holding {
            pool,
            addr,
            lease_until,
            renew_at,
        };
        p.set_timer(renew_at, TimerKind::Service(MGMT_TIMER));
        p.set_timer(lease_until, TimerKind::Service(MGMT_TIMER));
        tracing::info!(%addr, "address allocated");
        self.events
            .push_back(MgmtEvent::AddressAllocated { addr, lease_until });
    }

    /// A confirming renewal came back.
    fn on_confirm(
        &mut self,
        now: Time,
        dht: &mut Dht,
        p: &mut Pastry,
        addr: Ipv4Addr,
        res: Result<DhtReply, DhtError>,
    ) {
        let Alloc::Confirming {
            pool,
            addr: held,
            lease_until,
            confirm_at,
            left,
        } = &mut self.alloc
        else {
            return;
        };
        if *held != addr {
            return;
        }
        let pool = *pool;
        match res {
            Ok(DhtReply::Renewed { lease_until: l } | DhtReply::Stored { lease_until: l, .. }) => {
                *lease_until = l;
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.hold(now, p);
                } else {
                    *confirm_at = now + self.cfg.address_confirm;
                    p.set_timer(*confirm_at, TimerKind::Service(MGMT_TIMER));
                }
            }
            Err(DhtError::NotOwner | DhtError::Conflict { .. } | DhtError::NotFound) => {
                // Someone else's claim won once the ring settled: that
                // address was never ours to use. Claim another.
                tracing::debug!(%addr, "claim lost its confirmation; claiming another address");
                let op = Op::Release { owner: p.me().id };
                let rid = dht.request(now, p, addr_name(addr), op);
                self.pending.insert(rid, Pending::Ignore);
                self.start(now, dht, p, pool);
            }
            // Timeout or a transient error: confirm again shortly.
            Ok(_) | Err(_) => {
                *confirm_at = now + self.cfg.address_confirm;
                p.set_timer(*confirm_at, TimerKind::Service(MGMT_TIMER));
            }
        }
    }

    fn reclaim(&mut self, now: Time, dht: &mut Dht, p: &mut Pastry, addr: Ipv4Addr) {
        let op = Op::Put {
            owner: p.me().id,
            expect: EXPECT_FREE,
            lease_ms: dht.lease_ms(self.cfg.address_lease),
            value: Bytes::from(p.me().addr.to_string()),
        };
        let id = dht.request(now, p, addr_name(addr), op);
        self.pending.insert(id, Pending::Reclaim(addr));
    }

    /// The management timer fired: renew our address, refresh our groups.
    /// Spurious calls are harmless.
    pub fn handle_tick(&mut self, now: Time, dht: &mut Dht, p: &mut Pastry) {
        if let Alloc::Confirming {
            addr, confirm_at, ..
        } = &mut self.alloc
            && *confirm_at <= now
        {
            let addr = *addr;
            // Not again until this one answers (or its own retries end).
            *confirm_at = Time::NEVER;
            let op = Op::Renew {
                owner: p.me().id,
                lease_ms: dht.lease_ms(self.cfg.address_lease),
            };
            let id = dht.request(now, p, addr_name(addr), op);
            self.pending.insert(id, Pending::Confirm(addr));
        }
        if let Alloc::Holding {
            pool,
            addr,
            lease_until,
            ..
        } = self.alloc
            && lease_until <= now
        {
            // No renewal succeeded for a whole lease (cut off from the ring):
            // the address may have been handed to someone else. Stop using
            // it, and claim a new one once the ring answers again.
            tracing::warn!(%addr, "address lease expired without renewal; allocating anew");
            self.events.push_back(MgmtEvent::AddressLost { addr });
            self.start(now, dht, p, pool);
        }
        if let Alloc::Holding { addr, renew_at, .. } = &mut self.alloc
            && *renew_at <= now
        {
            let addr = *addr;
            *renew_at = now + self.cfg.address_renew;
            p.set_timer(*renew_at, TimerKind::Service(MGMT_TIMER));
            let op = Op::Renew {
                owner: p.me().id,
                lease_ms: dht.lease_ms(self.cfg.address_lease),
            };
            let id = dht.request(now, p, addr_name(addr), op);
            self.pending.insert(id, Pending::Renew(addr));
        }
        if self.refresh_at.is_some_and(|t| t <= now) {
            self.refresh_at = None;
            let groups: Vec<Ipv4Addr> = self.announced.keys().copied().collect();
            for g in groups {
                self.put_group(now, dht, p, g);
            }
            if !self.announced.is_empty() {
                let at = now + self.cfg.group_refresh;
                self.refresh_at = Some(at);
                p.set_timer(at, TimerKind::Service(MGMT_TIMER));
            }
        }
    }
}

/// A random untried host of `1..=hosts`: a few random draws, then a scan
/// from a random start, so the choice stays random and the work bounded.
fn pick(tried: &[u64], hosts: u32, p: &mut Pastry) -> Option<u32> {
    let is_tried = |h: u32| tried[h as usize / 64] & (1 << (h % 64)) != 0;
    for _ in 0..16 {
        let h = 1 + p.rng().below(u64::from(hosts)) as u32;
        if !is_tried(h) {
            return Some(h);
        }
    }
    let start = p.rng().below(u64::from(hosts)) as u32;
    (0..hosts)
        .map(|i| 1 + (start + i) % hosts)
        .find(|h| !is_tried(*h))
}

fn truncate_utf8(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_exclude_network_and_broadcast() {
        let p = Pool::new(Ipv4Addr::new(172, 16, 5, 9), 20);
        assert_eq!(p.hosts, 4094);
        assert_eq!(p.addr(1), Ipv4Addr::new(172, 16, 0, 1));
        assert_eq!(p.addr(p.hosts), Ipv4Addr::new(172, 16, 15, 254));
        assert_eq!(
            p.exhausted().to_string(),
            "address pool 172.16.0.0/20 exhausted"
        );
        assert_eq!(Pool::new(Ipv4Addr::new(10, 0, 0, 8), 29).hosts, 6);
    }

    #[test]
    fn names_are_truncated_on_char_boundaries() {
        assert_eq!(truncate_utf8("ééé".into(), 3), "é");
        assert_eq!(truncate_utf8("abc".into(), 64), "abc");
    }
}
