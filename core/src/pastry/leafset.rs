//! The leaf set L (Pastry §2.1): the |L|/2 nodes numerically closest on
//! each side of the local id. It decides delivery (a key within its range
//! goes to the numerically closest member) and is kept alive by keep-alive
//! probes (see `super::Pastry`).
//!
//! A node may sit on both sides at once. That makes small rings fall out
//! naturally: a side holds fewer than |L|/2 members exactly when the node
//! knows fewer than |L|/2 other nodes in total, and then the leaf set covers
//! the whole ring.

use crate::addr::NodeHandle;
use crate::id::NodeId;
use crate::time::Time;
use crate::wire::pastry::RTT_UNKNOWN;

#[derive(Debug, Clone, Copy)]
pub struct Leaf {
    pub handle: NodeHandle,
    /// Last time we received anything from this node.
    pub last_heard: Time,
    /// Measured round-trip time in µs, `RTT_UNKNOWN` until measured.
    pub rtt: u32,
}

#[derive(Debug, Clone)]
pub struct LeafSet {
    me: NodeId,
    half: usize,
    /// Clockwise (larger ids), nearest first.
    cw: Vec<Leaf>,
    /// Counter-clockwise (smaller ids), nearest first.
    ccw: Vec<Leaf>,
    /// Distance to the farthest member on each side (0 when empty), kept
    /// here so that "is this sender a leaf?" — asked for every message —
    /// is usually answered without touching the members at all.
    reach: [u128; 2],
}

/// Which side of the leaf set (the discriminant indexes `LeafSet::reach`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Cw = 0,
    Ccw = 1,
}

impl LeafSet {
    /// Addresses of the member buffers (for a runtime's cache prefetch).
    pub fn buffers(&self) -> [*const u8; 2] {
        [self.cw.as_ptr().cast(), self.ccw.as_ptr().cast()]
    }
    pub fn new(me: NodeId, size: usize) -> Self {
        let half = (size / 2).max(1);
        LeafSet {
            me,
            half,
            cw: Vec::with_capacity(half + 1),
            ccw: Vec::with_capacity(half + 1),
            reach: [0; 2],
        }
    }

    pub fn half(&self) -> usize {
        self.half
    }

    fn side(&self, side: Side) -> &Vec<Leaf> {
        match side {
            Side::Cw => &self.cw,
            Side::Ccw => &self.ccw,
        }
    }

    fn sync_reach(&mut self) {
        let far = |v: &Vec<Leaf>, d: fn(NodeId, NodeId) -> u128, me| {
            v.last().map_or(0, |l| d(me, l.handle.id))
        };
        self.reach = [
            far(&self.cw, NodeId::cw_distance, self.me),
            far(&self.ccw, NodeId::ccw_distance, self.me),
        ];
    }

    fn dist(&self, side: Side, id: NodeId) -> u128 {
        match side {
            Side::Cw => self.me.cw_distance(id),
            Side::Ccw => self.me.ccw_distance(id),
        }
    }

    /// Insert into one side if it belongs among the `half` nearest there;
    /// see `insert_measured`. (Inlined so that each call site, with its
    /// side known, gets its own distance function in the search loop.)
    #[inline(always)]
    fn insert_side(&mut self, side: Side, h: NodeHandle, now: Time, rtt: u32) -> bool {
        let d = self.dist(side, h.id);
        let half = self.half;
        if d > self.reach[side as usize] && self.side(side).len() >= half {
            // Beyond a full side: neither a member nor a better one.
            return false;
        }
        let me = self.me;
        let v = match side {
            Side::Cw => &mut self.cw,
            Side::Ccw => &mut self.ccw,
        };
        let key = |l: &Leaf| match side {
            Side::Cw => me.cw_distance(l.handle.id),
            Side::Ccw => me.ccw_distance(l.handle.id),
        };
        match v.binary_search_by_key(&d, key) {
            Ok(i) => {
                // Same id: refresh its address (it may have moved) and liveness.
                v[i].handle.addr = h.addr;
                v[i].last_heard = v[i].last_heard.max(now);
                if rtt != RTT_UNKNOWN {
                    v[i].rtt = rtt;
                }
                false
            }
            Err(i) if i < half => {
                v.insert(
                    i,
                    Leaf {
                        handle: h,
                        last_heard: now,
                        rtt,
                    },
                );
                v.truncate(half);
                true
            }
            Err(_) => false,
        }
    }

    /// Offer a node; returns whether the membership changed.
    pub fn insert(&mut self, h: NodeHandle, now: Time) -> bool {
        self.insert_measured(h, now, RTT_UNKNOWN)
    }

    /// `insert`, with our RTT to the node if known (`RTT_UNKNOWN` if not):
    /// a newcomer starts with it, and a member has it recorded. A member
    /// also has its address refreshed and is marked heard from at `now`
    /// (if later than it was).
    pub fn insert_measured(&mut self, h: NodeHandle, now: Time, rtt: u32) -> bool {
        if h.id == self.me {
            return false;
        }
        let a = self.insert_side(Side::Cw, h, now, rtt);
        let b = self.insert_side(Side::Ccw, h, now, rtt);
        if a || b {
            self.sync_reach();
        }
        a || b
    }

    /// Whether `id` would enter the leaf set if offered: it is not a
    /// member, and a side has room or a farther member.
    pub fn would_accept(&self, id: NodeId) -> bool {
        if id == self.me {
            return false;
        }
        // `reach` is the farthest member's distance (a side with no member
        // has room).
        let fits =
            |s: Side| self.side(s).len() < self.half || self.dist(s, id) < self.reach[s as usize];
        (fits(Side::Cw) || fits(Side::Ccw)) && !self.contains(id)
    }

    /// Remove a node from both sides; returns the sides it was removed from.
    pub fn remove(&mut self, id: NodeId) -> (bool, bool) {
        let before = (self.cw.len(), self.ccw.len());
        self.cw.retain(|l| l.handle.id != id);
        self.ccw.retain(|l| l.handle.id != id);
        self.sync_reach();
        (self.cw.len() != before.0, self.ccw.len() != before.1)
    }

    /// Index of `id` on one side: a binary search by distance, since most
    /// ids asked about (every sender of every message) are not members and
    /// a side's entries are spread over as many cache lines as it has.
    #[inline(always)]
    fn find(&self, side: Side, id: NodeId) -> Option<usize> {
        let d = self.dist(side, id);
        let reach = self.reach[side as usize];
        if d > reach || reach == 0 {
            return None;
        }
        self.side(side)
            .binary_search_by_key(&d, |l| self.dist(side, l.handle.id))
            .ok()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.find(Side::Cw, id).is_some() || self.find(Side::Ccw, id).is_some()
    }

    /// Apply `f` to `id`'s entries (one per side it is on).
    fn update(&mut self, id: NodeId, f: impl Fn(&mut Leaf)) {
        if let Some(i) = self.find(Side::Cw, id) {
            f(&mut self.cw[i]);
        }
        if let Some(i) = self.find(Side::Ccw, id) {
            f(&mut self.ccw[i]);
        }
    }

    /// Mark that we heard from `id` at `now`.
    pub fn heard(&mut self, id: NodeId, now: Time) {
        self.update(id, |l| l.last_heard = l.last_heard.max(now));
    }

    /// Measured RTT of a member, `RTT_UNKNOWN` if none.
    pub fn rtt(&self, id: NodeId) -> u32 {
        // Side by side rather than through an iterator over the two: asked
        // for nearly every node we hear of, mostly non-members that each
        // `find` turns away at its first comparison.
        if let Some(i) = self.find(Side::Cw, id) {
            return self.cw[i].rtt;
        }
        match self.find(Side::Ccw, id) {
            Some(i) => self.ccw[i].rtt,
            None => RTT_UNKNOWN,
        }
    }

    /// Whether we know every node of the ring: a side is short of members,
    /// or the two sides share a node (fewer than |L| nodes in all, so going
    /// clockwise and counter-clockwise we met the same ones).
    pub fn is_complete_ring(&self) -> bool {
        self.cw.len() < self.half
            || self.ccw.len() < self.half
            || self
                .ccw
                .last()
                .is_some_and(|far| self.cw.iter().any(|l| l.handle.id == far.handle.id))
    }

    /// Estimated number of nodes in the overlay: ids are uniform, so the
    /// members' share of the ring says how many fit in all of it. Exact
    /// (the member count plus us) when we know the whole ring.
    pub fn estimated_size(&self) -> u128 {
        let members = (self.cw.len() + self.ccw.len()) as u128;
        if self.is_complete_ring() {
            // A small ring can show a node on both sides: count it once.
            let both = self
                .ccw
                .iter()
                .filter(|l| self.cw.iter().any(|c| c.handle.id == l.handle.id))
                .count() as u128;
            return members - both + 1;
        }
        match (self.ccw.last(), self.cw.last()) {
            (Some(lo), Some(hi)) => {
                // `members` gaps between `members + 1` nodes span the arc.
                let span = lo.handle.id.cw_distance(hi.handle.id).max(1);
                (u128::MAX / span).saturating_mul(members)
            }
            _ => members + 1,
        }
    }

    /// Whether `key` falls within the range the leaf set covers.
    pub fn covers(&self, key: NodeId) -> bool {
        if self.is_complete_ring() {
            return true;
        }
        match (self.ccw.last(), self.cw.last()) {
            (Some(lo), Some(hi)) => key.in_cw_arc(lo.handle.id, hi.handle.id),
            _ => true,
        }
    }

    /// Numerically closest to `key` among the members and the local node,
    /// skipping `avoid` and members never heard from (learned second-hand
    /// and not yet answering the probe that verifies them: a node that does
    /// not exist must not take keys). `None` means the local node itself.
    pub fn closest(&self, key: NodeId, avoid: &[NodeId]) -> Option<NodeHandle> {
        self.closest_where(key, |id| avoid.contains(&id))
    }

    /// `closest`, skipping the members for which `skip` holds.
    pub fn closest_where(&self, key: NodeId, skip: impl Fn(NodeId) -> bool) -> Option<NodeHandle> {
        let mut best: Option<NodeHandle> = None;
        let mut best_id = self.me;
        for l in self.cw.iter().chain(&self.ccw) {
            if l.last_heard == Time::ZERO || skip(l.handle.id) {
                continue;
            }
            if key.closer(l.handle.id, best_id) {
                best_id = l.handle.id;
                best = Some(l.handle);
            }
        }
        best
    }

    /// Whether no node can be on both sides. A node on both is within
    /// `reach` clockwise and counter-clockwise, and its two distances add
    /// up to the whole ring (2^128): so when the two reaches add up to
    /// less, the sides are disjoint. True in every ring of more than |L|
    /// nodes, where it spares `members` comparing every pair.
    fn sides_disjoint(&self) -> bool {
        self.reach[0].checked_add(self.reach[1]).is_some()
    }

    /// Members, each once, clockwise side first.
    pub fn members(&self) -> impl Iterator<Item = &Leaf> {
        let cw = &self.cw;
        let disjoint = self.sides_disjoint();
        self.cw.iter().chain(
            self.ccw
                .iter()
                .filter(move |l| disjoint || !cw.iter().any(|c| c.handle.id == l.handle.id)),
        )
    }

    /// `handles`, and our measured RTT to each (`RTT_UNKNOWN` where none),
    /// for a `State` with `LIST_RTTS`.
    pub fn handles_and_rtts(&self) -> (Vec<NodeHandle>, Vec<u32>) {
        let n = self.cw.len() + self.ccw.len();
        let mut lists = (Vec::with_capacity(n), Vec::with_capacity(n));
        lists.extend(self.members().map(|l| (l.handle, l.rtt)));
        lists
    }

    pub fn handles(&self) -> Vec<NodeHandle> {
        // Sized for both sides up front: `members` cannot say how many it
        // will yield, and growing by doubling took three allocations.
        let mut v = Vec::with_capacity(self.cw.len() + self.ccw.len());
        v.extend(self.members().map(|l| l.handle));
        v
    }

    pub fn len(&self) -> usize {
        self.members().count()
    }

    pub fn is_empty(&self) -> bool {
        self.cw.is_empty() && self.ccw.is_empty()
    }

    /// Farthest member on a side (the one asked during repair).
    pub fn farthest(&self, side: Side) -> Option<NodeHandle> {
        self.side(side).last().map(|l| l.handle)
    }

    /// Nearest member on a side.
    pub fn nearest(&self, side: Side) -> Option<NodeHandle> {
        self.side(side).first().map(|l| l.handle)
    }

    pub fn side_len(&self, side: Side) -> usize {
        self.side(side).len()
    }
}

#[cfg(test)]
mod tests {
    /// Heard from (the routing tests want verified members).
    const HEARD: Time = Time::from_millis(1);

    use super::*;
    use crate::addr::PeerAddr;

    fn h(id: u128) -> NodeHandle {
        NodeHandle::new(NodeId(id), PeerAddr::v4(10, 0, 0, 1, (id % 60000) as u16))
    }

    #[test]
    fn estimates_the_ring_size_from_the_members_spread() {
        for n in [1_000u128, 100_000, 1_000_000] {
            let step = u128::MAX / n;
            // Me at an arbitrary id, evenly spaced neighbours, across zero.
            let me = 3 * step;
            let mut ls = LeafSet::new(NodeId(me), 16);
            for k in 1..=20u128 {
                ls.insert(h(me.wrapping_add(k * step)), HEARD);
                ls.insert(h(me.wrapping_sub(k * step)), HEARD);
            }
            let est = ls.estimated_size();
            assert!(est.abs_diff(n) * 100 <= n, "n {n}: estimated {est}");
        }
        // A ring smaller than the leaf set is known exactly.
        let mut ls = LeafSet::new(NodeId(7), 16);
        for id in [1, 2, 3, 4] {
            ls.insert(h(id << 100), HEARD);
        }
        assert_eq!(ls.estimated_size(), 5);
        assert_eq!(LeafSet::new(NodeId(7), 16).estimated_size(), 1);
    }

    #[test]
    fn keeps_nearest_per_side_and_wraps() {
        let mut ls = LeafSet::new(NodeId(100), 4);
        for id in [101, 102, 103, 99, 98, 97, u128::MAX] {
            ls.insert(h(id), HEARD);
        }
        let ids: Vec<u128> = ls.handles().iter().map(|h| h.id.0).collect();
        assert_eq!(ids, vec![101, 102, 99, 98]);
        assert!(ls.covers(NodeId(100)));
        assert!(ls.covers(NodeId(98)));
        assert!(!ls.covers(NodeId(97)));
        assert!(!ls.covers(NodeId(103)));
        // Wrap-around: me near zero sees u128::MAX as a ccw neighbour.
        let mut ls = LeafSet::new(NodeId(1), 4);
        for id in [u128::MAX, u128::MAX - 1, 2, 3, 1000] {
            ls.insert(h(id), HEARD);
        }
        assert!(ls.covers(NodeId(0)));
        assert!(ls.covers(NodeId(u128::MAX - 1)));
        assert!(!ls.covers(NodeId(500)));
    }

    #[test]
    fn tiny_rings_cover_everything() {
        let mut ls = LeafSet::new(NodeId(5), 16);
        assert!(ls.covers(NodeId(1 << 100)));
        assert_eq!(ls.closest(NodeId(1 << 100), &[]), None);
        ls.insert(h(1 << 100), HEARD);
        ls.insert(h(1 << 120), HEARD);
        // Both nodes sit on both sides; every key is covered.
        assert_eq!(ls.len(), 2);
        assert!(ls.is_complete_ring());
        assert_eq!(
            ls.closest(NodeId(1 << 101), &[]).unwrap().id,
            NodeId(1 << 100)
        );
        assert_eq!(ls.closest(NodeId(6), &[]), None);
        assert_eq!(
            ls.closest(NodeId(1 << 101), &[NodeId(1 << 100)])
                .map(|h| h.id),
            None,
            "avoiding the closest falls back to the next closest (us)"
        );
    }

    #[test]
    fn overlapping_sides_cover_the_whole_ring() {
        // Ten nodes, |L| = 16: both sides are full (8 each) but share nodes,
        // so every key must be covered and go to the truly closest node.
        let ids: Vec<u128> = (1..=9).map(|i| i * (u128::MAX / 10)).collect();
        let mut ls = LeafSet::new(NodeId(0), 16);
        for id in &ids {
            ls.insert(h(*id), HEARD);
        }
        assert_eq!(ls.side_len(Side::Cw), 8);
        assert_eq!(ls.side_len(Side::Ccw), 8);
        assert!(ls.is_complete_ring());
        for k in 0..100u128 {
            let key = NodeId(k * (u128::MAX / 100));
            let want = ids
                .iter()
                .copied()
                .chain([0])
                .min_by(|a, b| {
                    if key.closer(NodeId(*a), NodeId(*b)) {
                        core::cmp::Ordering::Less
                    } else {
                        core::cmp::Ordering::Greater
                    }
                })
                .unwrap();
            assert!(ls.covers(key));
            let got = ls.closest(key, &[]).map_or(0, |h| h.id.0);
            assert_eq!(got, want, "key {key}");
        }
    }

    #[test]
    fn ties_go_to_the_smaller_id() {
        let mut ls = LeafSet::new(NodeId(100), 4);
        ls.insert(h(90), HEARD);
        ls.insert(h(110), HEARD);
        // Key 95 is 5 away from both us (100) and 90: the smaller id wins.
        assert_eq!(ls.closest(NodeId(95), &[]).map(|h| h.id), Some(NodeId(90)));
        // Key 105 ties us (100) with 110: we win.
        assert_eq!(ls.closest(NodeId(105), &[]), None);
    }

    #[test]
    fn remove_and_would_accept() {
        let mut ls = LeafSet::new(NodeId(100), 2);
        ls.insert(h(101), HEARD);
        ls.insert(h(99), HEARD);
        assert!(!ls.would_accept(NodeId(103)));
        assert!(!ls.would_accept(NodeId(100)), "never ourselves");
        assert_eq!(ls.remove(NodeId(101)), (true, false));
        assert!(ls.would_accept(NodeId(103)));
        assert!(!ls.contains(NodeId(101)));
    }

    #[test]
    fn members_never_heard_from_take_no_keys() {
        let mut ls = LeafSet::new(NodeId(100), 8);
        ls.insert(h(90), HEARD);
        // Second-hand, not yet verified.
        ls.insert(h(104), Time::ZERO);
        assert_eq!(ls.closest(NodeId(105), &[]), None);
        assert_eq!(ls.closest(NodeId(93), &[]).map(|h| h.id), Some(NodeId(90)));
        ls.heard(NodeId(104), Time::from_millis(2));
        assert_eq!(
            ls.closest(NodeId(105), &[]).map(|h| h.id),
            Some(NodeId(104))
        );
    }
}
