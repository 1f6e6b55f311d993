//! The discrete-event queue: a priority queue ordered by `(time, seq)`.
//!
//! `seq` is a monotonically increasing insertion counter, so events scheduled
//! for the same instant pop in the order they were pushed. Together with
//! seeded randomness this is what makes a run reproducible byte for byte: the
//! queue never has to compare payloads and never meets a tie it cannot break.
//!
//! Implementation: a calendar queue (a timing wheel). Time is cut into slots
//! of [`SLOT_US`] µs; a ring of [`SLOTS`] unsorted buckets holds the items
//! of the slots after the current one, about a second ahead, which is where
//! nearly everything a network simulation schedules lands (message
//! latencies, most timers). Farther items wait in a binary heap and join
//! when their slot comes up. When the current slot runs dry, the next
//! occupied one (found through a bitmap) is sorted once and consumed from
//! its end. A push into the current slot or before it (a timer due now, an
//! event a batch schedules before its own last member, see `crate::sim`)
//! goes to a small binary heap of its own; each pop takes the smaller
//! `(time, seq)` of the two heads. Push is O(1) and each item is moved into
//! its bucket once and sorted once, where the radix heap this replaces moved
//! every item through up to log(time range) buckets (about 850 instructions
//! per event in a 1,000-node run).

use alm_core::Time;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// log2 of the slot width in µs.
const SLOT_BITS: u32 = 7;
/// Width of a slot in µs.
pub const SLOT_US: u64 = 1 << SLOT_BITS;
/// Buckets in the ring: with 128 µs slots, 1.05 s ahead.
pub const SLOTS: usize = 1 << 13;
/// Largest bucket allocation (in entries) kept for reuse once drained.
const KEEP_BUCKET: usize = 4096;

#[inline]
fn slot_of(t: u64) -> u64 {
    t >> SLOT_BITS
}

struct Entry<T> {
    time: u64,
    seq: u64,
    item: T,
}

impl<T> Entry<T> {
    #[inline]
    fn key(&self) -> (u64, u64) {
        (self.time, self.seq)
    }
}

/// An entry of a binary heap: the max-heap's greatest is the earliest.
struct Early<T>(Entry<T>);

impl<T> PartialEq for Early<T> {
    fn eq(&self, o: &Self) -> bool {
        self.0.key() == o.0.key()
    }
}
impl<T> Eq for Early<T> {}
impl<T> PartialOrd for Early<T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Early<T> {
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.key().cmp(&self.0.key())
    }
}

/// Min-queue of timed items with FIFO order among equal times.
pub struct EventQueue<T> {
    /// The current slot's items, sorted by `(time, seq)` descending: the
    /// next to pop is last.
    current: Vec<Entry<T>>,
    /// Items pushed into the current slot or before it after it was sorted.
    early: BinaryHeap<Early<T>>,
    /// Bucket `s % SLOTS` holds the items of slot `s`, for
    /// `cur < s < cur + SLOTS`; unsorted.
    ring: Vec<Vec<Entry<T>>>,
    /// Bit `i` set iff `ring[i]` is non-empty.
    occupied: Vec<u64>,
    /// Items of slots `cur + SLOTS` and later.
    far: BinaryHeap<Early<T>>,
    /// The current slot: every item of it or of earlier slots is in
    /// `current` or `early`.
    cur: u64,
    len: usize,
    peak: usize,
    next_seq: u64,
}

impl<T> Default for EventQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> EventQueue<T> {
    pub fn new() -> Self {
        EventQueue {
            current: Vec::new(),
            early: BinaryHeap::new(),
            ring: (0..SLOTS).map(|_| Vec::new()).collect(),
            occupied: vec![0; SLOTS / 64],
            far: BinaryHeap::new(),
            cur: 0,
            len: 0,
            peak: 0,
            next_seq: 0,
        }
    }

    #[inline]
    fn put(&mut self, e: Entry<T>) {
        let s = slot_of(e.time);
        if s <= self.cur {
            self.early.push(Early(e));
        } else if s < self.cur + SLOTS as u64 {
            let i = (s % SLOTS as u64) as usize;
            self.ring[i].push(e);
            self.occupied[i / 64] |= 1 << (i % 64);
        } else {
            self.far.push(Early(e));
        }
    }

    /// Schedule `item` at `time`. Among items with equal `time`, earlier
    /// pushes pop first.
    pub fn push(&mut self, time: Time, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.put(Entry {
            time: time.0,
            seq,
            item,
        });
        self.len += 1;
        self.peak = self.peak.max(self.len);
    }

    /// The first occupied ring slot after `cur`, if any.
    fn next_ring_slot(&self) -> Option<u64> {
        let start = ((self.cur + 1) % SLOTS as u64) as usize;
        let words = SLOTS / 64;
        let (w0, b0) = (start / 64, start % 64);
        // The first word from bit b0 on, the other words, then the first
        // word's bits below b0 (they are a whole ring ahead).
        let first = self.occupied[w0] & (!0u64 << b0);
        let found = if first != 0 {
            Some(w0 * 64 + first.trailing_zeros() as usize)
        } else {
            (1..=words).find_map(|k| {
                let w = (w0 + k) % words;
                let bits = if k == words {
                    self.occupied[w] & ((1u64 << b0) - 1)
                } else {
                    self.occupied[w]
                };
                (bits != 0).then(|| w * 64 + bits.trailing_zeros() as usize)
            })
        }?;
        // Ring index -> slot number after `cur`.
        let ahead = (found + SLOTS - start) % SLOTS;
        Some(self.cur + 1 + ahead as u64)
    }

    /// Make `current` or `early` hold the earliest item. Returns false when
    /// the queue is empty.
    fn settle(&mut self) -> bool {
        if !self.current.is_empty() || !self.early.is_empty() {
            return true;
        }
        let ring = self.next_ring_slot();
        let far = self.far.peek().map(|e| slot_of(e.0.time));
        let next = match (ring, far) {
            (Some(r), Some(f)) => r.min(f),
            (Some(r), None) => r,
            (None, Some(f)) => f,
            (None, None) => return false,
        };
        self.cur = next;
        if ring == Some(next) {
            let i = (next % SLOTS as u64) as usize;
            self.occupied[i / 64] &= !(1 << (i % 64));
            std::mem::swap(&mut self.current, &mut self.ring[i]);
            if self.ring[i].capacity() > KEEP_BUCKET {
                self.ring[i] = Vec::new();
            }
            self.current
                .sort_unstable_by_key(|e| std::cmp::Reverse(e.key()));
        }
        while self.far.peek().is_some_and(|e| slot_of(e.0.time) <= next) {
            if let Some(e) = self.far.pop() {
                self.early.push(e);
            }
        }
        true
    }

    /// Whether the earliest item is in `early` (`None`: empty).
    fn head_is_early(&mut self) -> Option<bool> {
        if !self.settle() {
            return None;
        }
        Some(match (self.early.peek(), self.current.last()) {
            (Some(e), Some(c)) => e.0.key() < c.key(),
            (Some(_), None) => true,
            (None, _) => false,
        })
    }

    /// Time of the earliest item, if any.
    pub fn peek_time(&mut self) -> Option<Time> {
        self.peek().map(|(t, _)| t)
    }

    /// The earliest item, if any, without removing it.
    pub fn peek(&mut self) -> Option<(Time, &T)> {
        let e = match self.head_is_early()? {
            true => &self.early.peek()?.0,
            false => self.current.last()?,
        };
        Some((Time(e.time), &e.item))
    }

    fn take(&mut self) -> Option<Entry<T>> {
        let e = match self.head_is_early()? {
            true => self.early.pop()?.0,
            false => self.current.pop()?,
        };
        self.len -= 1;
        Some(e)
    }

    /// Remove the earliest item, with its sequence number (for
    /// [`EventQueue::restore`]).
    pub fn pop_entry(&mut self) -> Option<(Time, u64, T)> {
        self.take().map(|e| (Time(e.time), e.seq, e.item))
    }

    /// Put back an item taken by [`EventQueue::pop_entry`]: it pops again
    /// exactly where it would have, by its time and original sequence
    /// number.
    pub fn restore(&mut self, time: Time, seq: u64, item: T) {
        debug_assert!(seq < self.next_seq);
        self.put(Entry {
            time: time.0,
            seq,
            item,
        });
        self.len += 1;
    }

    /// Remove and return the earliest item.
    pub fn pop(&mut self) -> Option<(Time, T)> {
        self.take().map(|e| (Time(e.time), e.item))
    }

    /// Remove and return the earliest item if it is due at or before `limit`.
    pub fn pop_until(&mut self, limit: Time) -> Option<(Time, T)> {
        match self.peek_time() {
            Some(t) if t <= limit => self.pop(),
            _ => None,
        }
    }

    /// The item `k` places after the next one in the current slot (pop
    /// order, not counting items pushed into the slot since it was
    /// sorted), for cache prefetching.
    #[inline]
    pub fn ahead(&self, k: usize) -> Option<&T> {
        let n = self.current.len();
        n.checked_sub(k + 1).map(|i| &self.current[i].item)
    }

    /// Up to `n` items due soon, for cache prefetching: the rest of the
    /// current slot in pop order and the items pushed into it since (any
    /// order; whichever holds the next pop first), then the next occupied
    /// slot's (any order). Once the queue is settled (after a `peek`), the
    /// first is the next to pop.
    pub fn upcoming(&self, n: usize) -> impl Iterator<Item = &T> {
        let next = self
            .next_ring_slot()
            .map(|s| &self.ring[(s % SLOTS as u64) as usize]);
        let early_first = match (self.early.peek(), self.current.last()) {
            (Some(e), Some(c)) => e.0.key() < c.key(),
            _ => true,
        };
        let early = || self.early.iter().map(|e| &e.0);
        let before = early_first.then(early).into_iter().flatten();
        let after = (!early_first).then(early).into_iter().flatten();
        before
            .chain(self.current.iter().rev())
            .chain(after)
            .chain(next.into_iter().flatten())
            .map(|e| &e.item)
            .take(n)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Largest number of items held at once.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Total number of pushes so far (the next sequence number).
    pub fn pushed(&self) -> u64 {
        self.next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_order_and_fifo_among_ties() {
        let mut q = EventQueue::new();
        q.push(Time(30), "c");
        q.push(Time(10), "a1");
        q.push(Time(20), "b");
        q.push(Time(10), "a2");
        q.push(Time(10), "a3");
        let order: Vec<_> = core::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            vec![
                (Time(10), "a1"),
                (Time(10), "a2"),
                (Time(10), "a3"),
                (Time(20), "b"),
                (Time(30), "c"),
            ]
        );
    }

    #[test]
    fn upcoming_lists_items_once_starting_with_the_next_pop() {
        let mut q = EventQueue::new();
        let mut x: u64 = 12345;
        for i in 0..500u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            q.push(Time((x >> 40) % 1000), i);
        }
        for i in 500..510u64 {
            q.push(Time(7), i);
        }
        let mut popped = 0;
        while !q.is_empty() {
            let mut all: Vec<u64> = q.upcoming(usize::MAX).copied().collect();
            let listed = all.len();
            assert!(listed <= q.len());
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), listed, "an item listed twice");
            // After a pop the items due at the same time come first, in
            // pop order; `peek_time` settles the next minimum.
            q.peek_time();
            let soon: Vec<u64> = q.upcoming(3).copied().collect();
            let (_, next) = q.pop().expect("not empty");
            assert_eq!(soon[0], next);
            popped += 1;
        }
        assert_eq!(popped, 510);
        assert_eq!(q.upcoming(4).count(), 0);
    }

    #[test]
    fn pop_until_respects_the_limit() {
        let mut q = EventQueue::new();
        q.push(Time(5), 1);
        q.push(Time(15), 2);
        assert_eq!(q.pop_until(Time(10)), Some((Time(5), 1)));
        assert_eq!(q.pop_until(Time(10)), None);
        assert_eq!(q.len(), 1);
        assert_eq!(q.peek_time(), Some(Time(15)));
        assert_eq!(q.pop_until(Time(15)), Some((Time(15), 2)));
        assert!(q.is_empty());
    }

    #[test]
    fn pushes_below_a_peeked_minimum_still_pop_first() {
        let mut q = EventQueue::new();
        q.push(Time(100), "late");
        assert_eq!(q.pop_until(Time(50)), None);
        q.push(Time(50), "now");
        q.push(Time(70), "soon");
        assert_eq!(q.pop(), Some((Time(50), "now")));
        assert_eq!(q.pop(), Some((Time(70), "soon")));
        assert_eq!(q.pop(), Some((Time(100), "late")));
        assert_eq!(q.pop(), None);
    }

    /// Interleave `steps` pushes (probability `push` in 1/`of`, delays from
    /// `delay`) and pops, checking every pop against a sorted reference,
    /// then drain.
    fn check_against_reference(
        seed: u64,
        steps: usize,
        (push, of): (u64, u64),
        delay: impl Fn(&mut alm_core::Rng) -> u64,
    ) {
        let mut rng = alm_core::Rng::new(seed);
        let mut q = EventQueue::new();
        let mut reference: Vec<(u64, u64)> = Vec::new();
        let (mut now, mut seq) = (0u64, 0u64);
        for _ in 0..steps {
            if rng.below(of) < push || reference.is_empty() {
                let dt = delay(&mut rng);
                q.push(Time(now + dt), seq);
                reference.push((now + dt, seq));
                seq += 1;
            } else {
                reference.sort_unstable();
                let want = reference.remove(0);
                assert_eq!(q.pop().map(|(t, v)| (t.0, v)), Some(want));
                now = want.0;
            }
            assert_eq!(q.len(), reference.len());
        }
        reference.sort_unstable();
        for want in reference {
            assert_eq!(q.pop().map(|(t, v)| (t.0, v)), Some(want));
        }
        assert!(q.is_empty() && q.pop().is_none());
    }

    #[test]
    fn matches_a_sorted_reference_under_random_interleaving() {
        // Mostly at or after now (the simulator's pattern), sometimes with
        // many equal times, occasionally huge jumps.
        check_against_reference(77, 20_000, (2, 3), |rng| match rng.below(10) {
            0 => 0,
            1 => rng.below(1 << 40),
            _ => rng.below(5_000),
        });
    }

    /// The simulator's batched pattern: pop a run of items, then push
    /// items due after the first of them but possibly before the last.
    #[test]
    fn pushes_below_the_last_pop_keep_time_and_seq_order() {
        use alm_core::Rng;
        let mut rng = Rng::new(78);
        let mut q = EventQueue::new();
        let mut reference: Vec<(u64, u64)> = Vec::new();
        let mut seq = 0u64;
        let mut push = |q: &mut EventQueue<u64>, r: &mut Vec<(u64, u64)>, t: u64| {
            q.push(Time(t), seq);
            r.push((t, seq));
            seq += 1;
        };
        for _ in 0..64 {
            push(&mut q, &mut reference, rng.below(1000));
        }
        for _ in 0..3_000 {
            let run = 1 + rng.index(8);
            let mut popped = Vec::new();
            for _ in 0..run {
                reference.sort_unstable();
                if reference.is_empty() {
                    break;
                }
                let want = reference.remove(0);
                assert_eq!(q.pop().map(|(t, v)| (t.0, v)), Some(want));
                popped.push(want.0);
            }
            for &t in &popped {
                for _ in 0..rng.below(3) {
                    let span = if rng.below(4) == 0 { 20_000 } else { 30 };
                    let dt = 1 + rng.below(span);
                    push(&mut q, &mut reference, t + dt);
                }
            }
            assert_eq!(q.len(), reference.len());
            assert_eq!(q.peek_time().map(|t| t.0), {
                reference.sort_unstable();
                reference.first().map(|r| r.0)
            });
        }
    }

    #[test]
    fn restored_items_pop_where_they_were() {
        let mut q = EventQueue::new();
        for (t, v) in [(5, "a"), (5, "b"), (9, "c"), (7, "d"), (5, "e")] {
            q.push(Time(t), v);
        }
        let (t, seq, v) = q.pop_entry().unwrap();
        assert_eq!((t, v), (Time(5), "a"));
        let (t2, seq2, v2) = q.pop_entry().unwrap();
        assert_eq!(v2, "b");
        q.push(Time(6), "f");
        q.restore(t2, seq2, v2);
        q.restore(t, seq, v);
        let order: Vec<_> = core::iter::from_fn(|| q.pop().map(|(_, v)| v)).collect();
        assert_eq!(order, vec!["a", "b", "e", "f", "d", "c"]);
    }

    /// Times spread over several turns of the ring, with items beyond it
    /// that come into range while others are pushed into their slots.
    #[test]
    fn matches_a_sorted_reference_across_ring_turns() {
        let horizon = SLOT_US * SLOTS as u64;
        check_against_reference(79, 30_000, (1, 2), |rng| match rng.below(4) {
            0 => rng.below(3 * horizon),
            1 => horizon - SLOT_US + rng.below(2 * SLOT_US),
            _ => rng.below(2_000),
        });
    }

    #[test]
    fn many_equal_times_keep_insertion_order() {
        let mut q = EventQueue::new();
        // Interleave two time values; each class must come out in push order.
        for i in 0..1000u32 {
            q.push(Time(u64::from(i % 2)), i);
        }
        let out: Vec<u32> = core::iter::from_fn(|| q.pop().map(|(_, v)| v)).collect();
        let evens: Vec<u32> = (0..1000).filter(|i| i % 2 == 0).collect();
        let odds: Vec<u32> = (0..1000).filter(|i| i % 2 == 1).collect();
        assert_eq!(&out[..500], &evens[..]);
        assert_eq!(&out[500..], &odds[..]);
    }
}
