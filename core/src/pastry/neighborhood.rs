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
}

impl NeighborhoodSet {
    pub fn new(cap: usize) -> Self {
        NeighborhoodSet {
            cap,
            members: Vec::with_capacity(cap),
        }
    }

    /// Offer a node with a measured RTT; returns whether it was kept.
    pub fn offer(&mut self, h: NodeHandle, rtt: u32) -> bool {
        if self.cap == 0 {
            return false;
        }
        let full = self.members.len() >= self.cap;
        if full
            && self.members.last().is_some_and(|(_, worst)| rtt >= *worst)
            && !self.members.iter().any(|(m, _)| m.id == h.id)
        {
            return false;
        }
        self.members.retain(|(m, _)| m.id != h.id);
        let pos = self.members.partition_point(|(_, r)| *r <= rtt);
        if pos >= self.cap {
            return false;
        }
        if self.members.len() >= self.cap {
            // Drop the farthest before inserting rather than after, so the
            // Vec never grows past `cap` (it would double its allocation).
            self.members.pop();
        }
        self.members.insert(pos, (h, rtt));
        true
    }

    /// Measured RTT of a member, if it is one.
    pub fn rtt(&self, id: NodeId) -> Option<u32> {
        self.members
            .iter()
            .find(|(m, _)| m.id == id)
            .map(|(_, r)| *r)
    }

    pub fn remove(&mut self, id: NodeId) -> bool {
        let before = self.members.len();
        self.members.retain(|(m, _)| m.id != id);
        before != self.members.len()
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
}
