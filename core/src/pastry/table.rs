//! The routing table R (Pastry §2.1): 128/b rows of 2^b columns; row `l`
//! holds nodes sharing the first `l` digits with us and differing at digit
//! `l`. Among candidates for a slot the one with the smallest measured RTT
//! wins (proximity neighbour selection, §2.5). Rows are allocated on first
//! use: at N nodes only about log_{2^b} N rows are ever populated.

use smallvec::SmallVec;

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

/// Where a node's slot is in a `RoutingTable`, found by `lookup`; valid
/// until the table changes.
#[derive(Debug, Clone, Copy)]
pub struct Lookup {
    id: NodeId,
    /// Bitmap position of the slot and `find_bit` of it; `None` for our
    /// own id.
    found: Option<(usize, Result<usize, usize>)>,
}

/// Sparse: only occupied slots are stored, in (row, column) order. At N
/// nodes a table holds about 15·log16 N entries, while the rows they fall in
/// would take 16 slots each (and the deepest populated rows hold one or two).
#[derive(Debug, Clone)]
pub struct RoutingTable {
    me: NodeId,
    b: u32,
    rows: usize,
    /// Occupancy bitmap: bit `row · 2^b + col` (see `bit`) is set exactly
    /// when slot (`row`, `col`) holds an entry. Bits are in slot order, so
    /// an occupied slot's entry is `entries[rank(bit)]`: one or two popcounts
    /// instead of a search, and no second buffer to keep in step. 512 bits
    /// for b = 4 (one cache line, inside the struct); only b = 8 (4096 bits)
    /// spills to the heap.
    occupied: SmallVec<[u64; 8]>,
    /// The entries, in slot order.
    entries: Vec<Entry>,
}

/// Number of set bits in `words` (out of line: most lookups are of the
/// top rows, in the first word).
#[cold]
#[inline(never)]
fn ones(words: &[u64]) -> usize {
    words.iter().map(|x| x.count_ones() as usize).sum()
}

impl RoutingTable {
    /// Address of the entry buffer (for a runtime's cache prefetch).
    pub fn buffers(&self) -> [*const u8; 1] {
        [self.entries.as_ptr().cast()]
    }
    pub fn new(me: NodeId, b: u32) -> Self {
        let nrows = (128 / b) as usize;
        let words = (nrows << b).div_ceil(64);
        RoutingTable {
            me,
            b,
            rows: nrows,
            occupied: SmallVec::from_elem(0, words),
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

    /// Bitmap position of slot (`row`, `col`), which must be in the table.
    fn bit(&self, row: usize, col: usize) -> usize {
        (row << self.b) | col
    }

    /// Bitmap position of the slot `id` belongs in, `None` for our own id:
    /// `slot` (shared prefix length, then the next digit) with shifts for
    /// divisions, since the digit size is a power of two.
    #[inline]
    fn bit_of(&self, id: NodeId) -> Option<usize> {
        let x = self.me.0 ^ id.0;
        if x == 0 {
            return None;
        }
        let log_b = self.b.trailing_zeros();
        let row = x.leading_zeros() >> log_b;
        // Digit `row` of `id` starts `row·b` bits from the left, within one
        // 64-bit half (digits are 1, 2, 4 or 8 bits).
        let skip = row << log_b;
        let half = if skip < 64 {
            (id.0 >> 64) as u64
        } else {
            id.0 as u64
        };
        let col = ((half << (skip % 64)) >> (64 - self.b)) as usize;
        Some(((row as usize) << self.b) | col)
    }

    #[inline]
    fn is_set(&self, bit: usize) -> bool {
        self.occupied[bit / 64] >> (bit % 64) & 1 != 0
    }

    /// Number of occupied slots before bitmap position `bit` (a slot of
    /// the table): the index in `entries` of that slot's entry, or where
    /// it would go. The top rows (the first word, for b = 4 rows 0 to 3)
    /// take one popcount.
    #[inline(always)]
    fn rank(&self, bit: usize) -> usize {
        let words = self.occupied.as_slice();
        let (w, o) = (bit / 64, bit % 64);
        let within = (words[w] & ((1u64 << o) - 1)).count_ones() as usize;
        if w == 0 {
            within
        } else {
            within + ones(&words[..w])
        }
    }

    /// Index in `entries` of slot `bit`: `Ok` if occupied, else where it
    /// would go.
    #[inline(always)]
    fn find_bit(&self, bit: usize) -> Result<usize, usize> {
        let i = self.rank(bit);
        if self.is_set(bit) { Ok(i) } else { Err(i) }
    }

    /// Index in `entries` of slot `bit` if it is occupied.
    #[inline(always)]
    fn occupant(&self, bit: usize) -> Option<usize> {
        self.is_set(bit).then(|| self.rank(bit))
    }

    /// `find_bit` for slot (`row`, `col`); `None` for a slot outside the
    /// table.
    fn find(&self, row: usize, col: usize) -> Option<Result<usize, usize>> {
        if row >= self.rows || col >= 1 << self.b {
            return None;
        }
        Some(self.find_bit(self.bit(row, col)))
    }

    pub fn get(&self, row: usize, col: usize) -> Option<&Entry> {
        let i = self.find(row, col)?.ok()?;
        Some(&self.entries[i])
    }

    /// The entry of the node `id`, if it is in the table.
    #[inline]
    pub fn entry(&self, id: NodeId) -> Option<&Entry> {
        let i = self.index_of(id)?;
        Some(&self.entries[i])
    }

    /// Find the slot of `id` once, for `slot_entry` and then `offer_at`
    /// (a caller that looks at the entry before offering would otherwise
    /// compute the slot and its rank twice).
    #[inline]
    pub fn lookup(&self, id: NodeId) -> Lookup {
        Lookup {
            id,
            found: self.bit_of(id).map(|bit| (bit, self.find_bit(bit))),
        }
    }

    /// `index_of` from a `lookup` made since the table last changed.
    #[inline]
    fn index_at(&self, at: &Lookup) -> Option<usize> {
        debug_assert_eq!(at.found, self.lookup(at.id).found, "stale lookup");
        let Some((_, Ok(i))) = at.found else {
            return None;
        };
        (self.entries[i].handle.id == at.id).then_some(i)
    }

    /// The entry of the node looked up, if it is in the table: `entry`
    /// from a `lookup` made since the table last changed.
    #[inline]
    pub fn slot_entry(&self, at: &Lookup) -> Option<&Entry> {
        self.index_at(at).map(|i| &self.entries[i])
    }

    /// The RTT below which the node looked up would take its slot:
    /// `RTT_UNKNOWN` (any RTT) when the slot is empty or its holder
    /// unmeasured, 0 (never) for our own id. With a `lookup` made since the
    /// table last changed.
    #[inline]
    pub fn to_beat_at(&self, at: &Lookup) -> u32 {
        debug_assert_eq!(at.found, self.lookup(at.id).found, "stale lookup");
        match at.found {
            None => 0,
            Some((_, Err(_))) => RTT_UNKNOWN,
            Some((_, Ok(i))) => self.entries[i].rtt,
        }
    }

    /// `heard`, for the node looked up (with a `lookup` made since the
    /// table last changed; marking it heard does not change the table).
    #[inline]
    pub fn heard_at(&mut self, at: &Lookup, now: Time) {
        if let Some(i) = self.index_at(at) {
            self.entries[i].heard = now;
        }
    }

    /// Offer a candidate with its RTT if known. If it fills or takes a
    /// slot, it is recorded as heard from at `heard` (`Time::ZERO` for a
    /// node known only second-hand). A candidate already in its slot gets
    /// its address and, if known, its RTT refreshed.
    pub fn offer(&mut self, handle: NodeHandle, rtt: u32, heard: Time) -> Offer {
        let at = self.lookup(handle.id);
        self.offer_at(at, handle, rtt, heard)
    }

    /// `offer`, with the `lookup` of `handle.id` made since the table last
    /// changed.
    #[inline]
    pub fn offer_at(&mut self, at: Lookup, handle: NodeHandle, rtt: u32, heard: Time) -> Offer {
        debug_assert_eq!(at.id, handle.id);
        debug_assert_eq!(at.found, self.lookup(handle.id).found, "stale lookup");
        let Some((bit, found)) = at.found else {
            return Offer::Rejected;
        };
        match found {
            Err(i) => {
                if self.entries.len() == self.entries.capacity() {
                    // Grow by an eighth rather than double: tables fill
                    // during the join and then keep their size.
                    let more = (self.entries.len() / 8).max(4);
                    self.entries.reserve_exact(more);
                }
                self.occupied[bit / 64] |= 1 << (bit % 64);
                self.entries.insert(i, Entry { handle, rtt, heard });
                Offer::Inserted
            }
            Ok(i) => {
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
                    *e = Entry { handle, rtt, heard };
                    Offer::Replaced(old)
                } else {
                    Offer::Rejected
                }
            }
        }
    }

    /// Index in `entries` of the node `id`, if it is in the table.
    #[inline(always)]
    fn index_of(&self, id: NodeId) -> Option<usize> {
        let i = self.occupant(self.bit_of(id)?)?;
        (self.entries[i].handle.id == id).then_some(i)
    }

    /// A message from `id` arrived at `now`: if it is in the table, it need
    /// not be probed for a while.
    #[inline]
    pub fn heard(&mut self, id: NodeId, now: Time) {
        self.heard_at(&self.lookup(id), now);
    }

    /// Remove `id`; returns its former slot.
    pub fn remove(&mut self, id: NodeId) -> Option<(usize, usize)> {
        let i = self.index_of(id)?;
        let bit = self.bit_of(id)?;
        self.occupied[bit / 64] &= !(1 << (bit % 64));
        self.entries.remove(i);
        self.slot(id)
    }

    /// Whether a candidate `id` of unknown RTT would be probed: its slot is
    /// empty, or held by another node it might beat.
    pub fn would_probe(&self, id: NodeId) -> bool {
        match self.bit_of(id) {
            None => false,
            Some(bit) => !self
                .find_bit(bit)
                .is_ok_and(|i| self.entries[i].handle.id == id),
        }
    }

    #[inline]
    pub fn contains(&self, id: NodeId) -> bool {
        self.index_of(id).is_some()
    }

    /// Index in `entries` of the first entry of row `row` or a later one.
    fn row_start(&self, row: usize) -> usize {
        if row >= self.rows {
            return self.entries.len();
        }
        self.rank(self.bit(row, 0))
    }

    /// Entries of one row, in column order.
    pub fn row(&self, row: usize) -> std::slice::Iter<'_, Entry> {
        self.rows_between(row, row + 1)
    }

    /// Entries of rows `lo` to `hi` (exclusive), row by row: a slice, so
    /// its length is known before it is walked.
    pub fn rows_between(&self, lo: usize, hi: usize) -> std::slice::Iter<'_, Entry> {
        let (lo, hi) = (self.row_start(lo), self.row_start(hi));
        self.entries[lo..hi].iter()
    }

    /// Entries of row `row` and every deeper one: the nodes sharing at
    /// least `row` digits with us.
    pub fn rows_from(&self, row: usize) -> impl Iterator<Item = &Entry> {
        self.entries[self.row_start(row)..].iter()
    }

    /// The first occupied slot at or after `start` in (row, column) order,
    /// as a flat index `row · 2^b + col`, with its entry.
    pub fn next_occupied(&self, start: usize) -> Option<(usize, &Entry)> {
        let mut w = start / 64;
        let mut word = *self.occupied.get(w)? & (u64::MAX << (start % 64));
        loop {
            if word != 0 {
                let bit = w * 64 + word.trailing_zeros() as usize;
                return Some((bit, &self.entries[self.rank(bit)]));
            }
            w += 1;
            word = *self.occupied.get(w)?;
        }
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
        assert_eq!(t.offer(a, RTT_UNKNOWN, Time::ZERO), Offer::Inserted);
        assert_eq!(
            t.offer(b, RTT_UNKNOWN, Time::ZERO),
            Offer::NeedsRtt {
                holder_rtt: RTT_UNKNOWN
            }
        );
        // The unmeasured holder loses to a measured candidate.
        assert_eq!(t.offer(b, 50, Time::ZERO), Offer::Replaced(a));
        assert_eq!(t.offer(a, 80, Time::ZERO), Offer::Rejected);
        assert_eq!(t.offer(a, 20, Time::ZERO), Offer::Replaced(b));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(0, 5).unwrap().rtt, 20);
        assert_eq!(t.remove(b.id), None, "b is not in the table any more");
        assert_eq!(t.remove(a.id), Some((0, 5)));
        assert!(t.is_empty());
        assert_eq!(t.offer(h(ME), 1, Time::ZERO), Offer::Rejected);
    }

    #[test]
    fn only_occupied_slots_are_stored_in_slot_order() {
        let mut t = RoutingTable::new(NodeId(ME), 4);
        assert_eq!(t.entries.capacity(), 0);
        t.offer(h(ME ^ 1), 5, Time::ZERO);
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
            assert_eq!(t.offer(h(id), RTT_UNKNOWN, Time::ZERO), Offer::Inserted);
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

    /// The bitmap index is only a faster way to find a slot's entry: under
    /// a long random sequence of offers and removals, for each digit size,
    /// every lookup agrees with a plain map from slot to entry.
    #[test]
    fn bitmap_index_agrees_with_a_map_of_slots() {
        use std::collections::BTreeMap;
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for b in [1u32, 2, 4, 8] {
            let mut t = RoutingTable::new(NodeId(ME), b);
            let mut model: BTreeMap<(usize, usize), Entry> = BTreeMap::new();
            let mut ids: Vec<NodeId> = Vec::new();
            for step in 0..6_000u32 {
                let r = next();
                // Ids sharing a random number of leading bits with ours, so
                // that every row gets used, deep ones included.
                let shared = (r % 129) as u32;
                let noise = u128::from(next()) << 64 | u128::from(next());
                let id = match shared {
                    128 => NodeId(ME),
                    s => {
                        NodeId((ME ^ (1u128 << (127 - s))) ^ noise.checked_shr(s + 1).unwrap_or(0))
                    }
                };
                if r >> 60 < 4 && !ids.is_empty() {
                    let victim = ids[(next() as usize) % ids.len()];
                    let slot = t.slot(victim);
                    let held = slot
                        .and_then(|s| model.get(&s))
                        .is_some_and(|e| e.handle.id == victim);
                    if held {
                        model.remove(&slot.unwrap());
                    }
                    assert_eq!(t.remove(victim), slot.filter(|_| held));
                } else {
                    let rtt = if r >> 59 & 1 == 0 {
                        RTT_UNKNOWN
                    } else {
                        (r >> 32) as u32 % 1000
                    };
                    let heard = Time::from_micros(u64::from(step % 3));
                    let got = t.offer(h(id.0), rtt, heard);
                    let want = match t.slot(id) {
                        None => Offer::Rejected,
                        Some(slot) => match model.get_mut(&slot) {
                            None => {
                                model.insert(
                                    slot,
                                    Entry {
                                        handle: h(id.0),
                                        rtt,
                                        heard,
                                    },
                                );
                                Offer::Inserted
                            }
                            Some(e) if e.handle.id == id => {
                                if rtt != RTT_UNKNOWN {
                                    e.rtt = rtt;
                                }
                                Offer::Rejected
                            }
                            Some(e) if rtt == RTT_UNKNOWN => Offer::NeedsRtt { holder_rtt: e.rtt },
                            Some(e) if e.rtt == RTT_UNKNOWN || rtt < e.rtt => {
                                let old = e.handle;
                                *e = Entry {
                                    handle: h(id.0),
                                    rtt,
                                    heard,
                                };
                                Offer::Replaced(old)
                            }
                            Some(_) => Offer::Rejected,
                        },
                    };
                    assert_eq!(got, want, "b {b} step {step} id {id:?}");
                    ids.push(id);
                    if step % 7 == 0 {
                        t.heard(id, Time::from_micros(u64::from(step)));
                        if let Some(e) = t.slot(id).and_then(|s| model.get_mut(&s)) {
                            if e.handle.id == id {
                                e.heard = Time::from_micros(u64::from(step));
                            }
                        }
                    }
                }
                // Everything the table answers, against the model.
                let all: Vec<Entry> = t.entries().copied().collect();
                let want: Vec<Entry> = model.values().copied().collect();
                assert_eq!(all, want, "b {b} step {step}");
                let probe = ids[(next() as usize) % ids.len().max(1)..].first().copied();
                for id in probe.into_iter().chain([NodeId(ME), id]) {
                    let bit = t.slot(id).map(|(r, c)| t.bit(r, c));
                    assert_eq!(t.bit_of(id), bit);
                    let held = t.slot(id).and_then(|s| model.get(&s));
                    let member = held.is_some_and(|e| e.handle.id == id);
                    assert_eq!(t.contains(id), member);
                    assert_eq!(t.entry(id).copied(), held.copied().filter(|_| member));
                    assert_eq!(t.would_probe(id), t.slot(id).is_some() && !member);
                }
                if step % 97 == 0 {
                    for row in 0..=t.num_rows() {
                        let got: Vec<Entry> = t.row(row).copied().collect();
                        let want: Vec<Entry> = model
                            .range((row, 0)..(row + 1, 0))
                            .map(|(_, e)| *e)
                            .collect();
                        assert_eq!(got, want, "b {b} row {row}");
                        let got: Vec<Entry> = t.rows_from(row).copied().collect();
                        let want: Vec<Entry> = model.range((row, 0)..).map(|(_, e)| *e).collect();
                        assert_eq!(got, want, "b {b} rows from {row}");
                    }
                    let cols = 1usize << b;
                    for start in [0, 1, cols, cols + 3, 5 * cols, t.num_rows() * cols - 1] {
                        let got = t.next_occupied(start).map(|(bit, e)| (bit, *e));
                        let want = model
                            .range((start / cols, start % cols)..)
                            .next()
                            .map(|(&(r, c), e)| (r * cols + c, *e));
                        assert_eq!(got, want, "b {b} next from {start}");
                    }
                    for row in 0..t.num_rows() {
                        for col in 0..cols {
                            assert_eq!(t.get(row, col), model.get(&(row, col)));
                        }
                    }
                }
            }
            assert!(t.len() > 20, "b {b}: the test should fill the table");
        }
    }
}
