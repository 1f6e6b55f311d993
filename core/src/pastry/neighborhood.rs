//! The neighbourhood set M (Pastry §2.1): the |M| nodes closest by measured
//! RTT, whatever their ids. It seeds a joiner's proximity-aware state and
//! supplies candidates for the rare routing case.

use crate::addr::NodeHandle;
use crate::id::NodeId;

#[derive(Debug, Clone)]
pub struct NeighborhoodSet {
    cap: usize,
    /// Sorted by RTT (µs), nearest first.
    members: Vec<(NodeHandle, u32)>,
    /// The low 64 bits of `members`' ids, in the same order: what a
    /// membership test scans (half the bytes of the ids; a match is
    /// confirmed on the member).
    ids: Vec<u64>,
    /// Bloom filter of `ids` (two bits per member out of 256): most ids
    /// asked about are not members, and this answers for them from the
    /// struct itself, without touching the Vecs (each lookup of a node's
    /// state in a big simulation is a cache miss).
    bloom: [u64; 4],
    /// RTT of the farthest member (0 when empty): with a full set, most
    /// offers are farther than it and are turned away right here.
    worst: u32,
    /// Members evicted since `bloom` was last rebuilt. Their bits stay set
    /// (a filter that is a superset only answers "maybe" more often, which
    /// `position` then settles), and it is rebuilt once `STALE_MAX` have
    /// piled up: a rebuild walks every member, and a full set evicts on
    /// nearly every insertion. (Fits in the struct's padding.)
    stale: u8,
}

/// Evictions `NeighborhoodSet::bloom` absorbs before it is rebuilt: about
/// 8 more bits set out of 256, a few more false positives.
const STALE_MAX: u8 = 8;

/// The two filter bits of `id` (ids are uniformly random: any bits do).
fn bloom_bits(id: NodeId) -> [(usize, u64); 2] {
    let a = id.0 as u8;
    let b = (id.0 >> 8) as u8;
    [
        (usize::from(a >> 6), 1 << (a & 63)),
        (usize::from(b >> 6), 1 << (b & 63)),
    ]
}

impl NeighborhoodSet {
    /// Addresses of the id and member buffers (for a runtime's cache prefetch).
    pub fn buffers(&self) -> [*const u8; 2] {
        [self.ids.as_ptr().cast(), self.members.as_ptr().cast()]
    }
    pub fn new(cap: usize) -> Self {
        NeighborhoodSet {
            cap,
            members: Vec::with_capacity(cap),
            ids: Vec::with_capacity(cap),
            bloom: [0; 4],
            worst: 0,
            stale: 0,
        }
    }

    fn maybe_member(&self, id: NodeId) -> bool {
        bloom_bits(id)
            .iter()
            .all(|&(w, bit)| self.bloom[w] & bit != 0)
    }

    fn position(&self, id: NodeId) -> Option<usize> {
        if !self.maybe_member(id) {
            return None;
        }
        let tag = id.0 as u64;
        (0..self.ids.len()).find(|&i| self.ids[i] == tag && self.members[i].0.id == id)
    }

    fn rebuild_bloom(&mut self) {
        self.worst = self.members.last().map_or(0, |m| m.1);
        self.stale = 0;
        self.bloom = [0; 4];
        for i in 0..self.ids.len() {
            for (w, bit) in bloom_bits(NodeId(self.ids[i].into())) {
                self.bloom[w] |= bit;
            }
        }
    }

    /// The RTT a newcomer must be below to enter: the farthest member's
    /// once the set is full, `u32::MAX` (any) before.
    pub fn admits_below(&self) -> u32 {
        if self.members.len() >= self.cap {
            self.worst
        } else {
            u32::MAX
        }
    }

    /// Offer a node with a measured RTT; returns whether it was kept.
    pub fn offer(&mut self, h: NodeHandle, rtt: u32) -> bool {
        if self.cap == 0 {
            return false;
        }
        let full = self.members.len() >= self.cap;
        if full && rtt >= self.worst && !self.maybe_member(h.id) {
            return false;
        }
        let at = self.position(h.id);
        if let Some(i) = at {
            // A member: the set of ids (hence the filter) stays, only its
            // handle, its RTT and so its place change. Its place among the
            // others is after every other member at most `rtt` away: in
            // the whole list (sorted, `i` included) that is `p`, less one
            // if `i` itself is among them (exactly when `i < p`).
            let p = self.members.partition_point(|(_, r)| *r <= rtt);
            let pos = if i < p { p - 1 } else { p };
            if pos < i {
                self.members[pos..=i].rotate_right(1);
                self.ids[pos..=i].rotate_right(1);
            } else {
                self.members[i..=pos].rotate_left(1);
                self.ids[i..=pos].rotate_left(1);
            }
            self.members[pos] = (h, rtt);
            self.worst = self.members.last().map_or(0, |m| m.1);
            return true;
        }
        if full && rtt >= self.worst {
            return false;
        }
        let pos = self.members.partition_point(|(_, r)| *r <= rtt);
        if pos >= self.cap {
            self.rebuild_bloom();
            return false;
        }
        let evicted = self.members.len() >= self.cap;
        if evicted {
            // Drop the farthest before inserting rather than after, so the
            // Vecs never grow past `cap` (they would double their allocation).
            self.members.pop();
            self.ids.pop();
        }
        self.members.insert(pos, (h, rtt));
        self.ids.insert(pos, h.id.0 as u64);
        if evicted {
            self.stale += 1;
            if self.stale >= STALE_MAX {
                self.rebuild_bloom();
                return true;
            }
        }
        self.worst = self.members.last().map_or(0, |m| m.1);
        for (w, bit) in bloom_bits(h.id) {
            self.bloom[w] |= bit;
        }
        true
    }

    /// Measured RTT of a member, if it is one.
    pub fn rtt(&self, id: NodeId) -> Option<u32> {
        let i = self.position(id)?;
        Some(self.members[i].1)
    }

    pub fn remove(&mut self, id: NodeId) -> bool {
        match self.position(id) {
            Some(i) => {
                self.members.remove(i);
                self.ids.remove(i);
                self.rebuild_bloom();
                true
            }
            None => false,
        }
    }

    /// Members but `id`, nearest first, and our RTT to each: the two
    /// lists of a `State`.
    pub fn lists_without(&self, id: NodeId) -> (Vec<NodeHandle>, Vec<u32>) {
        let n = self.members.len();
        let mut lists = (Vec::with_capacity(n), Vec::with_capacity(n));
        lists.extend(self.members().filter(|(h, _)| h.id != id));
        lists
    }

    /// Members with their RTTs, nearest first.
    pub fn members(&self) -> impl Iterator<Item = (NodeHandle, u32)> + '_ {
        self.members.iter().copied()
    }

    pub fn handles(&self) -> impl Iterator<Item = &NodeHandle> {
        self.members.iter().map(|(h, _)| h)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::PeerAddr;

    #[test]
    fn keeps_the_nearest_by_rtt() {
        let mut m = NeighborhoodSet::new(2);
        let h = |i: u128| NodeHandle::new(NodeId(i), PeerAddr::v4(10, 0, 0, 1, 1));
        assert!(m.offer(h(1), 30));
        assert!(m.offer(h(2), 10));
        assert!(!m.offer(h(3), 40));
        assert!(m.offer(h(3), 20));
        let ids: Vec<u128> = m.handles().map(|h| h.id.0).collect();
        assert_eq!(ids, vec![2, 3]);
        // Re-offering updates the RTT in place.
        assert!(m.offer(h(3), 5));
        assert_eq!(m.len(), 2);
        assert!(m.remove(NodeId(2)));
        assert!(!m.remove(NodeId(2)));
    }

    /// The Bloom filter and the cached farthest RTT are shortcuts only: a
    /// long random sequence of offers and removals (few distinct ids, so
    /// re-offers and false positives are common) gives exactly what a
    /// plain sorted list gives.
    #[test]
    fn shortcuts_agree_with_a_plain_sorted_list() {
        let cap = 8;
        let mut m = NeighborhoodSet::new(cap);
        let mut model: Vec<(u128, u32)> = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let h = |i: u128| NodeHandle::new(NodeId(i), PeerAddr::v4(10, 0, 0, 1, 1));
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Ids differ in the low 16 bits (the filter's bits) and collide
            // there often.
            let id = u128::from(x % 40) * 0x0101 + (u128::from(x % 3) << 64);
            let rtt = ((x >> 20) % 50) as u32;
            if (x >> 40) % 5 == 0 {
                let had = model.iter().position(|(i, _)| *i == id);
                if let Some(p) = had {
                    model.remove(p);
                }
                assert_eq!(m.remove(NodeId(id)), had.is_some());
            } else {
                let before = model.clone();
                if let Some(p) = model.iter().position(|(i, _)| *i == id) {
                    model.remove(p);
                }
                let pos = model.partition_point(|(_, r)| *r <= rtt);
                let kept = pos < cap;
                if kept {
                    model.insert(pos, (id, rtt));
                    model.truncate(cap);
                } else if model.len() == before.len() {
                    // Not a member before, not kept: unchanged.
                }
                assert_eq!(m.offer(h(id), rtt), kept);
            }
            let got: Vec<(u128, u32)> = m.members.iter().map(|(h, r)| (h.id.0, *r)).collect();
            assert_eq!(got, model);
            for (i, r) in &model {
                assert_eq!(m.rtt(NodeId(*i)), Some(*r));
            }
        }
    }
}
