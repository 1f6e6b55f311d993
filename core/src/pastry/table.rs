//! The routing table R (Pastry §2.1): 128/b rows of 2^b columns; row `l`
//! holds nodes sharing the first `l` digits with us and differing at digit
//! `l`. Among candidates for a slot the one with the smallest measured RTT
//! wins (proximity neighbour selection, §2.5). Rows are allocated on first
//! use: at N nodes only about log_{2^b} N rows are ever populated.

use crate::addr::NodeHandle;
use crate::id::NodeId;
use crate::time::Time;
use crate::wire::pastry::RTT_UNKNOWN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub handle: NodeHandle,
    /// Measured round-trip time in µs, `RTT_UNKNOWN` until measured.
    pub rtt: u32,
    /// When a message from it last arrived (`Time::ZERO`: never).
    pub heard: Time,
}

/// What happened to a candidate offered to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// It filled an empty slot.
    Inserted,
    /// It displaced a farther node.
    Replaced(NodeHandle),
    /// Its slot is held by a node whose RTT it cannot be compared with yet:
    /// measure it and offer again.
    NeedsRtt,
    /// Not wanted (ourselves, already present, or farther than the holder).
    Rejected,
}

#[derive(Debug, Clone)]
pub struct RoutingTable {
    me: NodeId,
    b: u32,
    rows: Vec<Option<Box<[Option<Entry>]>>>,
    len: usize,
}

impl RoutingTable {
    pub fn new(me: NodeId, b: u32) -> Self {
        let nrows = (128 / b) as usize;
        RoutingTable {
            me,
            b,
            rows: vec![None; nrows],
            len: 0,
        }
    }

    /// The slot `id` belongs in, `None` for our own id.
    pub fn slot(&self, id: NodeId) -> Option<(usize, usize)> {
        if id == self.me {
            return None;
        }
        let row = self.me.shared_prefix_len(id, self.b);
        Some((row, id.digit(row, self.b)))
    }

    pub fn get(&self, row: usize, col: usize) -> Option<&Entry> {
        self.rows.get(row)?.as_ref()?.get(col)?.as_ref()
    }

    fn slot_mut(&mut self, row: usize, col: usize) -> &mut Option<Entry> {
        let cols = 1usize << self.b;
        let r = self.rows[row].get_or_insert_with(|| vec![None; cols].into_boxed_slice());
        &mut r[col]
    }

    /// Offer a candidate with its RTT if known.
    pub fn offer(&mut self, handle: NodeHandle, rtt: u32) -> Offer {
        let Some((row, col)) = self.slot(handle.id) else {
            return Offer::Rejected;
        };
        let slot = self.slot_mut(row, col);
        match slot {
            None => {
                *slot = Some(Entry {
                    handle,
                    rtt,
                    heard: Time::ZERO,
                });
                self.len += 1;
                Offer::Inserted
            }
            Some(e) if e.handle.id == handle.id => {
                e.handle.addr = handle.addr;
                if rtt != RTT_UNKNOWN {
                    e.rtt = rtt;
                }
                Offer::Rejected
            }
            Some(e) => {
                if rtt == RTT_UNKNOWN {
                    Offer::NeedsRtt
                } else if e.rtt == RTT_UNKNOWN || rtt < e.rtt {
                    let old = e.handle;
                    *e = Entry {
                        handle,
                        rtt,
                        heard: Time::ZERO,
                    };
                    Offer::Replaced(old)
                } else {
                    Offer::Rejected
                }
            }
        }
    }

    /// Record a fresh RTT for a node already in the table.
    pub fn update_rtt(&mut self, id: NodeId, rtt: u32) {
        if let Some((row, col)) = self.slot(id)
            && let Some(Some(r)) = self.rows.get_mut(row)
            && let Some(Some(e)) = r.get_mut(col)
            && e.handle.id == id
        {
            e.rtt = rtt;
        }
    }

    /// A message from `id` arrived at `now`: if it is in the table, it need
    /// not be probed for a while.
    pub fn heard(&mut self, id: NodeId, now: Time) {
        if let Some((row, col)) = self.slot(id)
            && let Some(Some(r)) = self.rows.get_mut(row)
            && let Some(Some(e)) = r.get_mut(col)
            && e.handle.id == id
        {
            e.heard = now;
        }
    }

    /// Remove `id`; returns its former slot.
    pub fn remove(&mut self, id: NodeId) -> Option<(usize, usize)> {
        let (row, col) = self.slot(id)?;
        let r = self.rows.get_mut(row)?.as_mut()?;
        match &r[col] {
            Some(e) if e.handle.id == id => {
                r[col] = None;
                self.len -= 1;
                Some((row, col))
            }
            _ => None,
        }
    }

    /// Whether a candidate `id` of unknown RTT would be probed: its slot is
    /// empty, or held by another node it might beat.
    pub fn would_probe(&self, id: NodeId) -> bool {
        match self.slot(id) {
            None => false,
            Some((r, c)) => self.get(r, c).is_none_or(|e| e.handle.id != id),
        }
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.slot(id)
            .and_then(|(r, c)| self.get(r, c))
            .is_some_and(|e| e.handle.id == id)
    }

    /// Entries of one row, in column order.
    pub fn row(&self, row: usize) -> impl Iterator<Item = &Entry> {
        self.rows
            .get(row)
            .and_then(|r| r.as_ref())
            .into_iter()
            .flat_map(|r| r.iter().flatten())
    }

    /// All entries, row by row.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.rows.iter().flatten().flat_map(|r| r.iter().flatten())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn num_rows(&self) -> usize {
        self.rows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::PeerAddr;

    fn h(id: u128) -> NodeHandle {
        NodeHandle::new(NodeId(id), PeerAddr::v4(10, 0, 0, 1, 1))
    }

    const ME: u128 = 0x1234 << 112;

    #[test]
    fn slots_follow_shared_prefix() {
        let t = RoutingTable::new(NodeId(ME), 4);
        assert_eq!(t.slot(NodeId(0x5 << 124)), Some((0, 5)));
        assert_eq!(t.slot(NodeId(0x1294 << 112)), Some((2, 9)));
        assert_eq!(t.slot(NodeId(ME)), None);
        assert_eq!(t.slot(NodeId(ME + 1)), Some((31, 1)));
    }

    #[test]
    fn proximity_decides_between_candidates() {
        let mut t = RoutingTable::new(NodeId(ME), 4);
        let a = h(0x5 << 124);
        let b = h((0x5 << 124) + 7);
        assert_eq!(t.offer(a, RTT_UNKNOWN), Offer::Inserted);
        assert_eq!(t.offer(b, RTT_UNKNOWN), Offer::NeedsRtt);
        // The unmeasured holder loses to a measured candidate.
        assert_eq!(t.offer(b, 50), Offer::Replaced(a));
        assert_eq!(t.offer(a, 80), Offer::Rejected);
        assert_eq!(t.offer(a, 20), Offer::Replaced(b));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(0, 5).unwrap().rtt, 20);
        assert_eq!(t.remove(b.id), None, "b is not in the table any more");
        assert_eq!(t.remove(a.id), Some((0, 5)));
        assert!(t.is_empty());
        assert_eq!(t.offer(h(ME), 1), Offer::Rejected);
    }

    #[test]
    fn rows_are_allocated_lazily() {
        let mut t = RoutingTable::new(NodeId(ME), 4);
        assert_eq!(t.rows.iter().filter(|r| r.is_some()).count(), 0);
        t.offer(h(ME ^ 1), 5);
        assert_eq!(t.rows.iter().filter(|r| r.is_some()).count(), 1);
        assert_eq!(t.row(31).count(), 1);
        assert_eq!(t.entries().count(), 1);
    }
}
