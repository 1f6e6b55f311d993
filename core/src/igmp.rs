//! IGMP querier (router side) for the TAP link: RFC 2236 (IGMPv2) and
//! RFC 3376 (IGMPv3), as a sans-IO state machine.
//!
//! **State owned**: the set of groups with listeners on the link (a
//! `BTreeMap`, so every iteration and every emitted event is in address
//! order), each with its group timer, a coarse filter mode, the last-member
//! query (LMQ) in progress and the IGMPv1-host-present timer; the general
//! query schedule (startup then periodic); queues of events and frames.
//!
//! **Consumes**: `start(now)`, [`IgmpMessage`]s decoded by
//! [`crate::frame::parse_tap_frame`], `handle_timeout(now)`, `stop(now)`.
//! Time comes in as an argument; no clock is read.
//!
//! **Emits**: [`IgmpEvent::Joined`] when a group gets its first listener and
//! [`IgmpEvent::Left`] when the last one is gone (`poll_event`); complete
//! Ethernet frames carrying queries to write into the TAP (`poll_frame`); the
//! next deadline (`poll_timeout`). Drain invariant: after every `start`,
//! `handle_*` or `stop`, drain `poll_event` and `poll_frame` until `None`, then
//! re-arm the timer from `poll_timeout`.
//!
//! **RFC sections implemented**:
//! - RFC 3376 §6.1 / RFC 2236 §3: general queries every [Query Interval],
//!   [Startup Query Count] of them [Startup Query Interval] apart at start
//!   (§8.6, §8.7); Max Resp Code / QRV / QQIC in v3 queries (§4.1).
//! - RFC 3376 §6.4 / RFC 2236 §3: a report sets the group timer to the
//!   [Group Membership Interval] = robustness × query interval + query
//!   response interval (§8.4); expiry removes the group.
//! - RFC 3376 §6.6.3.1 / RFC 2236 §3: on a leave (v2 Leave, v3 `TO_IN({})`,
//!   or a `BLOCK` that removes every source of an INCLUDE-mode group) the
//!   group timer is lowered to [Last Member Query Time] = robustness ×
//!   [Last Member Query Interval] (§8.8, §8.9) and robustness group-specific
//!   queries are sent LMQI apart; a report in the meantime keeps the group.
//! - RFC 3376 §7.3.2 / RFC 2236 §4: while an IGMPv1 host is present in a
//!   group (older host present timer = GMI, §8.13) leaves for it are ignored,
//!   since v1 hosts never answer group-specific queries with certainty.
//!
//! **Deliberately out of scope**:
//! - Source filtering. We forward whole groups, so we only track whether a
//!   group has any listener. Records are mapped to group level: `IS_EX`,
//!   `TO_EX` (whatever their sources), v1/v2 reports, and `IS_IN`/`ALLOW`/
//!   `TO_IN` with sources count as membership. The sources reported in
//!   INCLUDE mode are remembered (bounded) only to recognise a `BLOCK` of all
//!   of them as a leave. Those sources carry no timers of their own, so a
//!   stale one can only make a leave wait for the group timer instead of
//!   the LMQ: never a premature Left. Group-specific queries stand in for
//!   group-and-source-specific ones (hosts answer them with their full state),
//!   and the S flag is never set (there is no other router to suppress).
//! - Querier election (RFC 3376 §6.6.2, RFC 2236 §3) and other-querier-present
//!   timing: on a TAP link the only other party is the local host, which is
//!   not a multicast router; received queries are counted and ignored.
//! - Link-local groups (224.0.0.0/24, e.g. 224.0.0.22 or mDNS 224.0.0.251)
//!   and non-multicast addresses in reports are counted and ignored: they
//!   never produce `Joined`, as they are never forwarded.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

pub use crate::frame::IgmpVersion;
use crate::frame::{
    GroupRecord, GroupRecordType, IgmpMessage, V3QueryFields, build_igmp_query,
    build_igmp_v3_query, is_link_local_group,
};
use crate::time::{Duration, Time};

/// Querier settings; the defaults are RFC 3376 §8's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IgmpConfig {
    /// Query format we send. V3 by default (Linux hosts speak v3); v2 hosts
    /// answer v3 queries too (RFC 3376 §7.2.1).
    pub version: IgmpVersion,
    /// Robustness Variable (§8.1), 2. Values below 1 are treated as 1.
    pub robustness: u8,
    /// Query Interval (§8.2), 125 s.
    pub query_interval: Duration,
    /// Query Response Interval (§8.3), 10 s: Max Resp of general queries.
    pub query_response_interval: Duration,
    /// Last Member Query Interval (§8.8), 1 s: Max Resp of, and spacing
    /// between, group-specific queries.
    pub last_member_query_interval: Duration,
    /// Startup Query Interval (§8.6), query interval / 4.
    pub startup_query_interval: Duration,
    /// Startup Query Count (§8.7), the robustness. At least one is sent.
    pub startup_query_count: u8,
    /// Most groups tracked at once; reports for more are dropped and counted.
    pub max_groups: usize,
    /// Most INCLUDE-mode sources remembered per group (see the module doc).
    pub max_sources_per_group: usize,
}

impl Default for IgmpConfig {
    fn default() -> Self {
        IgmpConfig {
            version: IgmpVersion::V3,
            robustness: 2,
            query_interval: Duration::from_secs(125),
            query_response_interval: Duration::from_secs(10),
            last_member_query_interval: Duration::from_secs(1),
            startup_query_interval: Duration::from_micros(125_000_000 / 4),
            startup_query_count: 2,
            max_groups: 1024,
            max_sources_per_group: 64,
        }
    }
}

impl IgmpConfig {
    fn robustness(&self) -> u8 {
        self.robustness.max(1)
    }

    /// Group Membership Interval (RFC 3376 §8.4, RFC 2236 §8.4):
    /// robustness × query interval + query response interval. Also the
    /// Older Host Present Interval (§8.13).
    pub fn group_membership_interval(&self) -> Duration {
        self.query_interval
            .saturating_mul(u64::from(self.robustness()))
            + self.query_response_interval
    }

    /// Last Member Query Time (RFC 3376 §8.10): robustness × LMQI.
    pub fn last_member_query_time(&self) -> Duration {
        self.last_member_query_interval
            .saturating_mul(u64::from(self.robustness()))
    }
}

/// Listener changes on the link, for the middleware to (un)subscribe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IgmpEvent {
    /// The group has its first listener on the link.
    Joined(Ipv4Addr),
    /// The group's last listener is gone (timeout, answered-by-nobody leave,
    /// or `stop`).
    Left(Ipv4Addr),
}

/// What the querier saw and dropped, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IgmpStats {
    pub reports: u64,
    pub leaves: u64,
    pub queries_received: u64,
    pub queries_sent: u64,
    /// Reports/records/leaves for 224.0.0.0/24.
    pub link_local_ignored: u64,
    /// Reports/records/leaves whose group is not a multicast address.
    pub invalid_group_ignored: u64,
    /// v3 group records of an unknown type (RFC 3376 §4.2.12).
    pub unknown_records_ignored: u64,
    /// Leaves ignored because an IGMPv1 host is present in the group.
    pub leaves_ignored_v1_host: u64,
    /// New groups refused because `max_groups` were already tracked.
    pub groups_dropped: u64,
}

/// Why [`IgmpRouter::poll_timeout_with_reason`]'s deadline is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgmpTimer {
    GeneralQuery,
    LastMemberQuery(Ipv4Addr),
    GroupExpiry(Ipv4Addr),
}

/// Coarse filter mode of a group (RFC 3376 §6.2.1), kept only to recognise
/// a BLOCK of every INCLUDE source as a leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FilterMode {
    Include,
    Exclude,
}

#[derive(Clone, Debug)]
struct Group {
    /// Group timer: the group is forgotten (Left) when it fires.
    expires: Time,
    mode: FilterMode,
    /// INCLUDE mode: sources reported since the group entered INCLUDE mode
    /// (sorted, bounded by `max_sources_per_group`).
    sources: SmallVec<[Ipv4Addr; 4]>,
    /// More sources were reported than we remember: a BLOCK can no longer
    /// be proven to cover all of them.
    sources_overflow: bool,
    /// An IGMPv1 host reported the group until then (RFC 2236 §4).
    v1_host_until: Time,
    /// Last-member queries in progress.
    lmq: Option<LastMemberQuery>,
}

#[derive(Clone, Copy, Debug)]
struct LastMemberQuery {
    /// Queries still to send.
    remaining: u8,
    /// When the next one is due (meaningless once `remaining` is 0).
    next: Time,
}

/// Outgoing queries: a scratch buffer and the queue of finished frames.
#[derive(Debug, Default)]
struct QueryOut {
    scratch: BytesMut,
    frames: VecDeque<Bytes>,
}

impl QueryOut {
    fn push(
        &mut self,
        cfg: &IgmpConfig,
        router_ip: Ipv4Addr,
        group: Option<Ipv4Addr>,
        max_resp: Duration,
        stats: &mut IgmpStats,
    ) {
        match cfg.version {
            IgmpVersion::V2 => build_igmp_query(
                router_ip,
                group,
                IgmpVersion::V2,
                max_resp,
                &mut self.scratch,
            ),
            IgmpVersion::V3 => build_igmp_v3_query(
                router_ip,
                group,
                max_resp,
                V3QueryFields {
                    suppress_router_processing: false,
                    qrv: cfg.robustness(),
                    qqi: cfg.query_interval,
                },
                &mut self.scratch,
            ),
        }
        self.frames.push_back(self.scratch.split().freeze());
        stats.queries_sent += 1;
    }
}

/// The IGMP querier of one TAP link. See the module documentation.
#[derive(Debug)]
pub struct IgmpRouter {
    cfg: IgmpConfig,
    router_ip: Ipv4Addr,
    groups: BTreeMap<Ipv4Addr, Group>,
    /// Next general query; `None` before `start` and after `stop`.
    next_general_query: Option<Time>,
    /// Startup general queries still to send after the next one.
    startup_left: u8,
    events: VecDeque<IgmpEvent>,
    out: QueryOut,
    stats: IgmpStats,
}

impl IgmpRouter {
    /// A querier sending from `router_ip` (our address on the TAP link).
    /// Inert until [`IgmpRouter::start`]: reports are tracked but no query is
    /// sent.
    pub fn new(cfg: IgmpConfig, router_ip: Ipv4Addr) -> Self {
        IgmpRouter {
            cfg,
            router_ip,
            groups: BTreeMap::new(),
            next_general_query: None,
            startup_left: 0,
            events: VecDeque::new(),
            out: QueryOut::default(),
            stats: IgmpStats::default(),
        }
    }

    /// Starts querying: the first of the startup general queries is queued
    /// now (drain `poll_frame`), the others follow `startup_query_interval`
    /// apart, then one every `query_interval`.
    pub fn start(&mut self, now: Time) {
        self.startup_left = self.cfg.startup_query_count.max(1);
        self.next_general_query = Some(now);
        self.handle_timeout(now);
    }

    /// Feeds one IGMP message read from the TAP.
    pub fn handle_message(&mut self, now: Time, msg: &IgmpMessage) {
        match msg {
            IgmpMessage::Query(_) => self.stats.queries_received += 1,
            IgmpMessage::ReportV1 { group } => {
                self.stats.reports += 1;
                let until = now + self.cfg.group_membership_interval();
                if let Some(g) = self.refresh(now, *group, FilterMode::Exclude, &[]) {
                    g.v1_host_until = until;
                }
            }
            IgmpMessage::ReportV2 { group } => {
                self.stats.reports += 1;
                self.refresh(now, *group, FilterMode::Exclude, &[]);
            }
            IgmpMessage::LeaveV2 { group } => {
                self.stats.leaves += 1;
                self.leave(now, *group);
            }
            IgmpMessage::ReportV3 { records } => {
                self.stats.reports += 1;
                for record in records {
                    self.handle_record(now, record);
                }
            }
        }
    }

    /// Sends due queries and expires groups. Calls before any deadline are
    /// harmless.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.next_general_query.is_some_and(|due| due <= now) {
            self.out.push(
                &self.cfg,
                self.router_ip,
                None,
                self.cfg.query_response_interval,
                &mut self.stats,
            );
            self.startup_left = self.startup_left.saturating_sub(1);
            let period = if self.startup_left > 0 {
                self.cfg.startup_query_interval
            } else {
                self.cfg.query_interval
            };
            self.next_general_query = Some(now + period);
        }

        let events = &mut self.events;
        self.groups.retain(|group, state| {
            let keep = state.expires > now;
            if !keep {
                tracing::debug!(%group, "igmp: group timer expired");
                events.push_back(IgmpEvent::Left(*group));
            }
            keep
        });

        let lmqi = self.cfg.last_member_query_interval;
        for (group, state) in &mut self.groups {
            let Some(lmq) = &mut state.lmq else {
                continue;
            };
            if lmq.remaining > 0 && lmq.next <= now {
                lmq.remaining -= 1;
                lmq.next = now + lmqi;
                self.out.push(
                    &self.cfg,
                    self.router_ip,
                    Some(*group),
                    lmqi,
                    &mut self.stats,
                );
            }
        }
    }

    /// The earliest deadline, if any: call `handle_timeout` then. Follows
    /// every input; O(groups).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        self.poll_timeout_with_reason().map(|(t, _)| t)
    }

    /// [`IgmpRouter::poll_timeout`] with the timer that armed it (for logs).
    #[must_use]
    pub fn poll_timeout_with_reason(&self) -> Option<(Time, IgmpTimer)> {
        let mut best = self
            .next_general_query
            .map(|t| (t, IgmpTimer::GeneralQuery));
        let mut consider = |t: Time, why: IgmpTimer| {
            if best.is_none_or(|(b, _)| t < b) {
                best = Some((t, why));
            }
        };
        for (group, state) in &self.groups {
            consider(state.expires, IgmpTimer::GroupExpiry(*group));
            match state.lmq {
                Some(lmq) if lmq.remaining > 0 => {
                    consider(lmq.next, IgmpTimer::LastMemberQuery(*group));
                }
                Some(_) | None => {}
            }
        }
        best
    }

    /// Next membership change, oldest first. Drain after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<IgmpEvent> {
        self.events.pop_front()
    }

    /// Next query frame to write into the TAP (a complete Ethernet frame).
    /// Drain after every input.
    #[must_use]
    pub fn poll_frame(&mut self) -> Option<Bytes> {
        self.out.frames.pop_front()
    }

    /// Whether `group` has listeners on the link.
    pub fn has_listeners(&self, group: Ipv4Addr) -> bool {
        self.groups.contains_key(&group)
    }

    /// Groups with listeners on the link, in ascending address order.
    pub fn groups(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.groups.keys().copied()
    }

    /// Counters of what was seen and dropped.
    pub fn stats(&self) -> &IgmpStats {
        &self.stats
    }

    /// The configuration in force.
    pub fn config(&self) -> &IgmpConfig {
        &self.cfg
    }

    /// Stops querying and forgets every group, queuing `Left` for each (in
    /// address order) and dropping queries not yet polled. `start` may be
    /// called again afterwards.
    pub fn stop(&mut self, now: Time) {
        tracing::debug!(?now, groups = self.groups.len(), "igmp: querier stopped");
        for group in core::mem::take(&mut self.groups).into_keys() {
            self.events.push_back(IgmpEvent::Left(group));
        }
        self.next_general_query = None;
        self.startup_left = 0;
        self.out.frames.clear();
    }

    fn handle_record(&mut self, now: Time, record: &GroupRecord) {
        let group = record.group;
        let sources = record.sources.as_slice();
        match record.record_type {
            GroupRecordType::ModeIsExclude | GroupRecordType::ChangeToExclude => {
                self.refresh(now, group, FilterMode::Exclude, &[]);
            }
            GroupRecordType::ModeIsInclude | GroupRecordType::AllowNewSources => {
                // INCLUDE(A) + IS_IN/ALLOW({}) leaves the state unchanged
                // (RFC 3376 §6.4.1, §6.4.2).
                if !sources.is_empty() {
                    self.refresh(now, group, FilterMode::Include, sources);
                }
            }
            GroupRecordType::ChangeToInclude => {
                if sources.is_empty() {
                    self.stats.leaves += 1;
                    self.leave(now, group);
                } else {
                    let max = self.cfg.max_sources_per_group;
                    if let Some(g) = self.refresh(now, group, FilterMode::Include, sources) {
                        // The host left EXCLUDE mode; any other EXCLUDE-mode
                        // listener is found again by the next general query.
                        if g.mode == FilterMode::Exclude {
                            g.mode = FilterMode::Include;
                            merge_sources(g, sources, max);
                        }
                    }
                }
            }
            GroupRecordType::BlockOldSources => self.block(now, group, sources),
            GroupRecordType::Unknown(_) => self.stats.unknown_records_ignored += 1,
        }
    }

    /// Whether reports for `group` may be tracked; counts the ones that may not.
    fn accept_group(&mut self, group: Ipv4Addr) -> bool {
        if !group.is_multicast() {
            self.stats.invalid_group_ignored += 1;
            false
        } else if is_link_local_group(group) {
            self.stats.link_local_ignored += 1;
            false
        } else {
            true
        }
    }

    /// A listener for `group` exists: (re)arm the group timer to GMI, cancel
    /// any last-member querying, create the group (and emit `Joined`) if new.
    /// `mode`/`sources` describe the report: EXCLUDE wins over INCLUDE.
    fn refresh(
        &mut self,
        now: Time,
        group: Ipv4Addr,
        mode: FilterMode,
        sources: &[Ipv4Addr],
    ) -> Option<&mut Group> {
        if !self.accept_group(group) {
            return None;
        }
        let expires = now + self.cfg.group_membership_interval();
        let max_sources = self.cfg.max_sources_per_group;
        if !self.groups.contains_key(&group) {
            if self.groups.len() >= self.cfg.max_groups {
                self.stats.groups_dropped += 1;
                tracing::debug!(%group, "igmp: group table full, report dropped");
                return None;
            }
            tracing::debug!(%group, "igmp: first listener");
            self.events.push_back(IgmpEvent::Joined(group));
            let mut g = Group {
                expires,
                mode,
                sources: SmallVec::new(),
                sources_overflow: false,
                v1_host_until: Time::ZERO,
                lmq: None,
            };
            merge_sources(&mut g, sources, max_sources);
            return Some(self.groups.entry(group).or_insert(g));
        }
        let g = self.groups.get_mut(&group)?;
        g.expires = expires;
        g.lmq = None;
        match (g.mode, mode) {
            (_, FilterMode::Exclude) => {
                g.mode = FilterMode::Exclude;
                g.sources.clear();
                g.sources_overflow = false;
            }
            (FilterMode::Include, FilterMode::Include) => merge_sources(g, sources, max_sources),
            (FilterMode::Exclude, FilterMode::Include) => {}
        }
        Some(g)
    }

    /// BLOCK(B): in INCLUDE mode, forget B; if no source is left, the last
    /// listener may be gone. No group-level effect in EXCLUDE mode.
    fn block(&mut self, now: Time, group: Ipv4Addr, blocked: &[Ipv4Addr]) {
        if !self.accept_group(group) {
            return;
        }
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        if g.mode != FilterMode::Include {
            return;
        }
        g.sources.retain(|s| !blocked.contains(s));
        if g.sources.is_empty() && !g.sources_overflow {
            self.stats.leaves += 1;
            self.leave(now, group);
        }
    }

    /// A listener announced it left `group`: start last-member querying
    /// (RFC 3376 §6.6.3.1, RFC 2236 §3) unless an IGMPv1 host is present or
    /// it is already under way.
    fn leave(&mut self, now: Time, group: Ipv4Addr) {
        if !self.accept_group(group) {
            return;
        }
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        if g.v1_host_until > now {
            self.stats.leaves_ignored_v1_host += 1;
            return;
        }
        if g.lmq.is_some() {
            return;
        }
        tracing::debug!(%group, "igmp: leave, querying for remaining listeners");
        g.expires = g.expires.min(now + self.cfg.last_member_query_time());
        g.lmq = Some(LastMemberQuery {
            remaining: self.cfg.robustness(),
            next: now,
        });
        // Sends the first group-specific query now.
        self.handle_timeout(now);
    }
}

/// Adds `sources` to an INCLUDE-mode group's remembered set, bounded.
fn merge_sources(g: &mut Group, sources: &[Ipv4Addr], max: usize) {
    if g.mode != FilterMode::Include {
        return;
    }
    for s in sources {
        if let Err(at) = g.sources.binary_search(s) {
            if g.sources.len() >= max {
                g.sources_overflow = true;
                return;
            }
            g.sources.insert(at, *s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{ALL_SYSTEMS, Query, TapFrame, parse_tap_frame};

    const ROUTER: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
    const G1: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);
    const G2: Ipv4Addr = Ipv4Addr::new(239, 9, 9, 9);
    const G3: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 1);
    const S1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const S2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const SEC: u64 = 1_000_000;

    fn t(secs: f64) -> Time {
        Time((secs * SEC as f64) as u64)
    }

    fn events(r: &mut IgmpRouter) -> Vec<IgmpEvent> {
        std::iter::from_fn(|| r.poll_event()).collect()
    }

    /// Drains frames and decodes each as a query: (IPv4 dst, query).
    fn queries(r: &mut IgmpRouter) -> Vec<(Ipv4Addr, Query)> {
        std::iter::from_fn(|| r.poll_frame())
            .map(|f| match parse_tap_frame(&f) {
                Ok(TapFrame::Igmp {
                    src,
                    dst,
                    msg: IgmpMessage::Query(q),
                }) => {
                    assert_eq!(src, ROUTER);
                    (dst, q)
                }
                other => panic!("router emitted a non-query frame: {other:?}"),
            })
            .collect()
    }

    fn record(record_type: GroupRecordType, group: Ipv4Addr, sources: &[Ipv4Addr]) -> GroupRecord {
        GroupRecord {
            record_type,
            group,
            sources: sources.iter().copied().collect(),
        }
    }

    fn v3(records: Vec<GroupRecord>) -> IgmpMessage {
        IgmpMessage::ReportV3 {
            records: records.into_iter().collect(),
        }
    }

    fn router() -> IgmpRouter {
        IgmpRouter::new(IgmpConfig::default(), ROUTER)
    }

    /// A router with `group` joined at time `at` by a v2 report.
    fn joined(group: Ipv4Addr, at: Time) -> IgmpRouter {
        let mut r = router();
        r.handle_message(at, &IgmpMessage::ReportV2 { group });
        assert_eq!(events(&mut r), [IgmpEvent::Joined(group)]);
        r
    }

    #[test]
    fn v2_report_joins_once() {
        let mut r = joined(G1, t(0.0));
        r.handle_message(t(1.0), &IgmpMessage::ReportV2 { group: G1 });
        assert!(events(&mut r).is_empty(), "second report is not a new join");
        assert_eq!(r.groups().collect::<Vec<_>>(), [G1]);
    }

    #[test]
    fn v1_report_joins() {
        let mut r = router();
        r.handle_message(t(0.0), &IgmpMessage::ReportV1 { group: G2 });
        assert_eq!(events(&mut r), [IgmpEvent::Joined(G2)]);
    }

    #[test]
    fn v3_report_with_several_groups_joins_all_forwardable_ones() {
        let mut r = router();
        r.handle_message(
            t(0.0),
            &v3(vec![
                record(GroupRecordType::ChangeToExclude, G2, &[]),
                record(GroupRecordType::ModeIsExclude, G1, &[S1]),
                record(GroupRecordType::ModeIsInclude, G3, &[S1]),
                record(
                    GroupRecordType::ChangeToExclude,
                    Ipv4Addr::new(224, 0, 0, 251),
                    &[],
                ),
                record(
                    GroupRecordType::AllowNewSources,
                    Ipv4Addr::new(239, 5, 5, 5),
                    &[],
                ),
                record(
                    GroupRecordType::Unknown(9),
                    Ipv4Addr::new(239, 6, 6, 6),
                    &[],
                ),
            ]),
        );
        assert_eq!(
            events(&mut r),
            [
                IgmpEvent::Joined(G2),
                IgmpEvent::Joined(G1),
                IgmpEvent::Joined(G3)
            ]
        );
        assert_eq!(r.groups().collect::<Vec<_>>(), [G3, G1, G2], "sorted");
        assert_eq!(r.stats().link_local_ignored, 1);
        assert_eq!(r.stats().unknown_records_ignored, 1);
    }

    #[test]
    fn fixture_reports_join_239_1_2_3_once() {
        let fixture = include_str!("../../../shared/fixtures/tap-frames-linux-6.18.hex");
        let mut r = router();
        for line in fixture.lines().filter(|l| !l.trim().is_empty()) {
            let bytes: Vec<u8> = (0..line.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&line[i..i + 2], 16).expect("fixture is hex"))
                .collect();
            if let Ok(TapFrame::Igmp { msg, .. }) = parse_tap_frame(&bytes) {
                r.handle_message(t(0.0), &msg);
            }
        }
        assert_eq!(events(&mut r), [IgmpEvent::Joined(G1)]);
        assert_eq!(r.stats().reports, 2);
    }

    #[test]
    fn link_local_groups_never_join() {
        let mut r = router();
        for group in [
            Ipv4Addr::new(224, 0, 0, 22),
            Ipv4Addr::new(224, 0, 0, 251),
            Ipv4Addr::new(224, 0, 0, 1),
        ] {
            r.handle_message(t(0.0), &IgmpMessage::ReportV2 { group });
            r.handle_message(t(0.0), &IgmpMessage::ReportV1 { group });
            r.handle_message(
                t(0.0),
                &v3(vec![record(GroupRecordType::ModeIsExclude, group, &[])]),
            );
        }
        r.handle_message(
            t(0.0),
            &IgmpMessage::ReportV2 {
                group: Ipv4Addr::new(10, 1, 1, 1),
            },
        );
        assert!(events(&mut r).is_empty());
        assert_eq!(r.groups().count(), 0);
        assert_eq!(r.stats().link_local_ignored, 9);
        assert_eq!(r.stats().invalid_group_ignored, 1);
    }

    #[test]
    fn v2_leave_queries_robustness_times_then_left() {
        let mut r = joined(G1, t(0.0));
        r.handle_message(t(10.0), &IgmpMessage::LeaveV2 { group: G1 });
        // First group-specific query immediately, max resp = LMQI.
        let q = queries(&mut r);
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].0, G1);
        assert_eq!(q[0].1.group, Some(G1));
        assert_eq!(q[0].1.max_resp, Duration::from_secs(1));
        assert_eq!(q[0].1.version(), 3);
        assert!(events(&mut r).is_empty());

        assert_eq!(r.poll_timeout(), Some(t(11.0)));
        r.handle_timeout(t(11.0));
        let q = queries(&mut r);
        assert_eq!(q.len(), 1, "second query LMQI later");
        assert_eq!(q[0].1.group, Some(G1));
        assert!(events(&mut r).is_empty());

        assert_eq!(
            r.poll_timeout_with_reason(),
            Some((t(12.0), IgmpTimer::GroupExpiry(G1)))
        );
        r.handle_timeout(t(11.999));
        assert!(events(&mut r).is_empty(), "not before robustness * LMQI");
        r.handle_timeout(t(12.0));
        assert_eq!(events(&mut r), [IgmpEvent::Left(G1)]);
        assert!(queries(&mut r).is_empty(), "exactly robustness queries");
        assert_eq!(r.groups().count(), 0);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn report_during_last_member_querying_keeps_the_group() {
        let mut r = joined(G1, t(0.0));
        r.handle_message(t(10.0), &IgmpMessage::LeaveV2 { group: G1 });
        assert_eq!(queries(&mut r).len(), 1);
        r.handle_message(
            t(10.5),
            &v3(vec![record(GroupRecordType::ModeIsExclude, G1, &[])]),
        );
        r.handle_timeout(t(11.0));
        r.handle_timeout(t(12.0));
        r.handle_timeout(t(100.0));
        assert!(events(&mut r).is_empty(), "a listener answered");
        assert!(queries(&mut r).is_empty(), "querying stopped");
        assert_eq!(r.groups().collect::<Vec<_>>(), [G1]);
        // It now lives a full membership interval from the answer.
        let gmi = r.config().group_membership_interval();
        assert_eq!(r.poll_timeout(), Some(t(10.5) + gmi));
        r.handle_timeout(t(10.5) + gmi);
        assert_eq!(events(&mut r), [IgmpEvent::Left(G1)]);
    }

    #[test]
    fn membership_times_out_after_gmi() {
        let mut r = joined(G1, t(3.0));
        let gmi = Duration::from_secs(2 * 125 + 10);
        assert_eq!(r.config().group_membership_interval(), gmi);
        assert_eq!(
            r.poll_timeout_with_reason(),
            Some((t(3.0) + gmi, IgmpTimer::GroupExpiry(G1)))
        );
        r.handle_timeout(Time((t(3.0) + gmi).0 - 1));
        assert!(events(&mut r).is_empty(), "alive until GMI");
        assert_eq!(r.groups().count(), 1);
        r.handle_timeout(t(3.0) + gmi);
        assert_eq!(events(&mut r), [IgmpEvent::Left(G1)]);
        assert_eq!(r.groups().count(), 0);
    }

    #[test]
    fn v3_to_in_empty_is_a_leave() {
        let mut r = joined(G1, t(0.0));
        r.handle_message(
            t(5.0),
            &v3(vec![record(GroupRecordType::ChangeToInclude, G1, &[])]),
        );
        assert_eq!(queries(&mut r).len(), 1);
        r.handle_timeout(t(6.0));
        assert_eq!(queries(&mut r).len(), 1);
        r.handle_timeout(t(7.0));
        assert_eq!(events(&mut r), [IgmpEvent::Left(G1)]);
    }

    #[test]
    fn block_of_every_include_source_is_a_leave_and_partial_block_is_not() {
        let mut r = router();
        r.handle_message(
            t(0.0),
            &v3(vec![record(
                GroupRecordType::AllowNewSources,
                G1,
                &[S1, S2],
            )]),
        );
        assert_eq!(events(&mut r), [IgmpEvent::Joined(G1)]);
        r.handle_message(
            t(1.0),
            &v3(vec![record(GroupRecordType::BlockOldSources, G1, &[S1])]),
        );
        assert!(queries(&mut r).is_empty(), "S2 still wanted");
        r.handle_message(
            t(2.0),
            &v3(vec![record(GroupRecordType::BlockOldSources, G1, &[S2])]),
        );
        let q = queries(&mut r);
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].1.group, Some(G1));
        r.handle_timeout(t(3.0));
        r.handle_timeout(t(4.0));
        assert_eq!(events(&mut r), [IgmpEvent::Left(G1)]);
    }

    #[test]
    fn block_in_exclude_mode_keeps_the_group() {
        let mut r = joined(G1, t(0.0));
        r.handle_message(
            t(1.0),
            &v3(vec![record(GroupRecordType::BlockOldSources, G1, &[S1])]),
        );
        assert!(queries(&mut r).is_empty());
        r.handle_timeout(t(10.0));
        assert!(events(&mut r).is_empty());
    }

    #[test]
    fn leave_ignored_while_v1_host_present() {
        let mut r = router();
        r.handle_message(t(0.0), &IgmpMessage::ReportV1 { group: G1 });
        r.handle_message(t(1.0), &IgmpMessage::ReportV2 { group: G1 });
        let _ = events(&mut r);
        r.handle_message(t(2.0), &IgmpMessage::LeaveV2 { group: G1 });
        assert!(queries(&mut r).is_empty());
        r.handle_timeout(t(5.0));
        assert!(events(&mut r).is_empty());
        assert_eq!(r.stats().leaves_ignored_v1_host, 1);
    }

    #[test]
    fn leave_for_unknown_group_does_nothing() {
        let mut r = router();
        r.handle_message(t(0.0), &IgmpMessage::LeaveV2 { group: G1 });
        assert!(queries(&mut r).is_empty());
        assert!(events(&mut r).is_empty());
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn startup_queries_count_and_spacing() {
        let mut r = router();
        assert_eq!(r.poll_timeout(), None, "inert before start");
        r.start(t(0.0));
        let q = queries(&mut r);
        assert_eq!(q.len(), 1, "first startup query immediately");
        assert_eq!(q[0].0, ALL_SYSTEMS);
        assert_eq!(q[0].1.group, None);
        assert_eq!(q[0].1.max_resp, Duration::from_secs(10));
        let v3f = q[0].1.v3.expect("v3 query by default");
        assert_eq!((v3f.qrv, v3f.qqi), (2, Duration::from_secs(125)));

        let sqi = Duration::from_micros(31_250_000);
        assert_eq!(r.poll_timeout(), Some(t(0.0) + sqi));
        r.handle_timeout(t(20.0)); // spurious
        assert!(queries(&mut r).is_empty());
        r.handle_timeout(t(0.0) + sqi);
        assert_eq!(queries(&mut r).len(), 1, "second startup query after SQI");

        // Startup over: next one a full query interval later.
        let next = t(0.0) + sqi + Duration::from_secs(125);
        assert_eq!(
            r.poll_timeout_with_reason(),
            Some((next, IgmpTimer::GeneralQuery))
        );
        r.handle_timeout(next);
        assert_eq!(queries(&mut r).len(), 1);
        assert_eq!(r.poll_timeout(), Some(next + Duration::from_secs(125)));
        assert_eq!(r.stats().queries_sent, 3);
    }

    #[test]
    fn v2_config_sends_v2_queries() {
        let cfg = IgmpConfig {
            version: IgmpVersion::V2,
            startup_query_count: 3,
            ..IgmpConfig::default()
        };
        let mut r = IgmpRouter::new(cfg, ROUTER);
        r.start(t(0.0));
        let q = queries(&mut r);
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].1.version(), 2);
        assert!(r.poll_frame().is_none());
        let sqi = r.config().startup_query_interval;
        r.handle_timeout(t(0.0) + sqi);
        r.handle_timeout(t(0.0) + sqi + sqi);
        assert_eq!(queries(&mut r).len(), 2, "three startup queries in all");
        assert_eq!(
            r.poll_timeout(),
            Some(t(0.0) + sqi + sqi + Duration::from_secs(125))
        );
    }

    #[test]
    fn group_cap_drops_and_counts() {
        let cfg = IgmpConfig {
            max_groups: 3,
            ..IgmpConfig::default()
        };
        let mut r = IgmpRouter::new(cfg, ROUTER);
        for i in 0..5 {
            r.handle_message(
                t(0.0),
                &IgmpMessage::ReportV2 {
                    group: Ipv4Addr::new(239, 0, 0, i),
                },
            );
        }
        assert_eq!(events(&mut r).len(), 3);
        assert_eq!(r.groups().count(), 3);
        assert_eq!(r.stats().groups_dropped, 2);
        // Room again once one has gone.
        r.handle_message(
            t(1.0),
            &IgmpMessage::LeaveV2 {
                group: Ipv4Addr::new(239, 0, 0, 0),
            },
        );
        r.handle_timeout(t(2.0));
        r.handle_timeout(t(3.0));
        r.handle_message(
            t(3.0),
            &IgmpMessage::ReportV2 {
                group: Ipv4Addr::new(239, 0, 0, 4),
            },
        );
        assert_eq!(
            events(&mut r),
            [
                IgmpEvent::Left(Ipv4Addr::new(239, 0, 0, 0)),
                IgmpEvent::Joined(Ipv4Addr::new(239, 0, 0, 4))
            ]
        );
    }

    #[test]
    fn stop_leaves_every_group_in_order_and_goes_quiet() {
        let mut r = router();
        r.start(t(0.0));
        r.handle_message(t(0.0), &IgmpMessage::ReportV2 { group: G2 });
        r.handle_message(t(0.0), &IgmpMessage::ReportV2 { group: G1 });
        let _ = events(&mut r);
        r.stop(t(1.0));
        assert_eq!(events(&mut r), [IgmpEvent::Left(G1), IgmpEvent::Left(G2)]);
        assert!(r.poll_frame().is_none());
        assert_eq!(r.poll_timeout(), None);
        r.handle_timeout(t(1000.0));
        assert!(r.poll_frame().is_none());
        assert!(r.poll_event().is_none());
    }

    #[test]
    fn queries_received_are_counted_and_ignored() {
        let mut r = joined(G1, t(0.0));
        r.handle_message(
            t(1.0),
            &IgmpMessage::Query(Query {
                group: Some(G1),
                max_resp: Duration::from_secs(1),
                v3: None,
                sources: SmallVec::new(),
            }),
        );
        assert_eq!(r.stats().queries_received, 1);
        assert!(r.poll_frame().is_none());
        assert!(r.poll_event().is_none());
    }
}
