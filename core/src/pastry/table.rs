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
    /// Its slot is held by a node (measured at `holder_rtt`, `RTT_UNKNOWN`
    /// if not) that it cannot be compared with yet: measure it and offer
    /// again.
    NeedsRtt { holder_rtt: u32 },
    /// Not wanted (ourselves, already present, or farther than the holder).
    Rejected,
}

/// Sparse: only occupied slots are stored, in (row, column) order. At N
/// nodes a table holds about 15·log16 N entries, while the rows they fall in
/// would take 16 slots each (and the deepest populated rows hold one or two).
#[derive(Debug, Clone)]
pub struct RoutingTable {
    me: NodeId,
    b: u32,
    rows: usize,
    /// `slot_key(row, col)` of each entry, ascending.
    keys: Vec<u16>,
    /// The entries, in the order of `keys`.
    entries: Vec<Entry>,
}

/// Sort key of a slot: rows are at most 128 and columns at most 256.
fn slot_key(row: usize, col: usize) -> u16 {
    ((row << 8) | col) as u16
}

impl RoutingTable {
    /// Addresses of the key and entry buffers (for a runtime's cache prefetch).
    pub fn buffers(&self) -> [*const u8; 2] {
        [self.keys.as_ptr().cast(), self.entries.as_ptr().cast()]
    }
    pub fn new(me: NodeId, b: u32) -> Self {
        let nrows = (128 / b) as usize;
        RoutingTable {
            me,
            b,
            rows: nrows,
            keys: Vec::new(),
            entries: Vec::new(),
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

    /// Index of slot (`row`, `col`) in `entries`: `Ok` if occupied, else
    /// where it would go. `None` for a slot outside the table.
    fn find(&self, row: usize, col: usize) -> Option<Result<usize, usize>> {
        if row >= self.rows || col >= 1 << self.b {
            return None;
        }
        Some(self.keys.binary_search(&slot_key(row, col)))
    }

    pub fn get(&self, row: usize, col: usize) -> Option<&Entry> {
        let i = self.find(row, col)?.ok()?;
        Some(&self.entries[i])
    }

    /// Offer a candidate with its RTT if known.
    pub fn offer(&mut self, handle: NodeHandle, rtt: u32) -> Offer {
        let Some((row, col)) = self.slot(handle.id) else {
            return Offer::Rejected;
        };
        match self.find(row, col) {
            None => Offer::Rejected,
            Some(Err(i)) => {
                if self.entries.len() == self.entries.capacity() {
                    // Grow by an eighth rather than double: tables fill
                    // during the join and then keep their size.
                    let more = (self.entries.len() / 8).max(4);
                    self.entries.reserve_exact(more);
                    self.keys.reserve_exact(more);
                }
                self.keys.insert(i, slot_key(row, col));
                self.entries.insert(
                    i,
                    Entry {
                        handle,
                        rtt,
                        heard: Time::ZERO,
                    },
                );
                Offer::Inserted
            }
            Some(Ok(i)) => {
                let e = &mut self.entries[i];
                if e.handle.id == handle.id {
                    e.handle.addr = handle.addr;
                    if rtt != RTT_UNKNOWN {
                        e.rtt = rtt;
                    }
                    Offer::Rejected
                } else if rtt == RTT_UNKNOWN {
                    Offer::NeedsRtt { holder_rtt: e.rtt }
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

    /// Index in `entries` of the node `id`, if it is in the table.
    fn index_of(&self, id: NodeId) -> Option<usize> {
        let (row, col) = self.slot(id)?;
        let i = self.find(row, col)?.ok()?;
        (self.entries[i].handle.id == id).then_some(i)
    }

    /// Record a fresh RTT for a node already in the table.
    pub fn update_rtt(&mut self, id: NodeId, rtt: u32) {
        if let Some(i) = self.index_of(id) {
            self.entries[i].rtt = rtt;
        }
    }

    /// A message from `id` arrived at `now`: if it is in the table, it need
    /// not be probed for a while.
    pub fn heard(&mut self, id: NodeId, now: Time) {
        if let Some(i) = self.index_of(id) {
            self.entries[i].heard = now;
        }
    }

    /// Remove `id`; returns its former slot.
    pub fn remove(&mut self, id: NodeId) -> Option<(usize, usize)> {
        let i = self.index_of(id)?;
        self.keys.remove(i);
        self.entries.remove(i);
        self.slot(id)
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
        self.index_of(id).is_some()
    }

    /// Entries of one row, in column order.
    pub fn row(&self, row: usize) -> impl Iterator<Item = &Entry> {
        let lo = self.keys.partition_point(|&k| usize::from(k) < row << 8);
        let hi = self
            .keys
            .partition_point(|&k| usize::from(k) < (row + 1) << 8);
        self.entries[lo..hi].iter()
    }

    /// All entries, row by row.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn num_rows(&self) -> usize {
        self.rows
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
        assert_eq!(
            t.offer(b, RTT_UNKNOWN),
            Offer::NeedsRtt {
                holder_rtt: RTT_UNKNOWN
            }
        );
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
    fn only_occupied_slots_are_stored_in_slot_order() {
        let mut t = RoutingTable::new(NodeId(ME), 4);
        assert_eq!(t.entries.capacity(), 0);
        t.offer(h(ME ^ 1), 5);
        assert_eq!(t.row(31).count(), 1);
        assert_eq!(t.entries().count(), 1);
        // Offered out of order, listed by (row, column).
        for id in [
            0xf << 124,
            0x3 << 124,
            0x1200 << 112,
            0x1f << 120,
            0x1235 << 112,
        ] {
            assert_eq!(t.offer(h(id), RTT_UNKNOWN), Offer::Inserted);
        }
        let slots: Vec<(usize, usize)> =
            t.entries().map(|e| t.slot(e.handle.id).unwrap()).collect();
        assert_eq!(
            slots,
            vec![(0, 3), (0, 15), (1, 15), (2, 0), (3, 5), (31, 1)]
        );
        assert_eq!(t.row(0).count(), 2);
        assert_eq!(t.row(4).count(), 0);
        assert_eq!(t.row(32).count(), 0);
        assert!(t.get(32, 0).is_none() && t.get(0, 16).is_none());
        assert_eq!(
            t.get(2, 0).map(|e| e.handle.id),
            Some(NodeId(0x1200 << 112))
        );
        assert_eq!(t.remove(NodeId(0x1f << 120)), Some((1, 15)));
        assert_eq!(t.row(1).count(), 0);
        assert_eq!(t.len(), 5);
    }
}
