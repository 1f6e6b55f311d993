//! The discrete-event queue: a monotone priority queue ordered by `(time, seq)`.
//!
//! `seq` is a monotonically increasing insertion counter, so events scheduled
//! for the same instant pop in the order they were pushed. Together with
//! seeded randomness this is what makes a run reproducible byte for byte: the
//! queue never has to compare payloads and never meets a tie it cannot break.
//!
//! Implementation: a radix heap (Ahuja, Mehlhorn, Orlin & Tarjan 1990) over
//! the time in µs. A discrete-event simulator only ever pushes times at or
//! after the last one popped, which is exactly the radix heap's precondition;
//! push is O(1) and each item moves down O(log time range) buckets in total,
//! by sequential Vec appends instead of a binary heap's random sifting of
//! whole entries. Bucket 0 holds the items due at the current minimum time
//! and is consumed in `seq` order (sorted once when it is refilled; later
//! pushes at that time append with larger `seq`). A push *below* the current
//! minimum goes to a small binary heap of "early" items instead, and each pop
//! takes the smaller `(time, seq)` of the two heads. That happens when the
//! simulator runs a batch of events at once (`crate::sim`): an event early in
//! the batch can schedule something before the batch's last event. It also
//! covers scheduling at `now` from outside the run loop after `pop_until`
//! looked ahead.

use alm_core::Time;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

/// Bucket of time `t` relative to `last`: 0 when equal, else 1 + index of
/// the highest differing bit.
#[inline]
fn bucket(t: u64, last: u64) -> usize {
    (64 - (t ^ last).leading_zeros()) as usize
}

/// Largest bucket allocation (in entries) kept for reuse once drained.
const KEEP_BUCKET: usize = 1024;

struct Entry<T> {
    time: u64,
    seq: u64,
    item: T,
}

/// An entry of the early heap: the max-heap's greatest is the earliest.
struct Early<T>(Entry<T>);

impl<T> Early<T> {
    fn key(&self) -> (u64, u64) {
        (self.0.time, self.0.seq)
    }
}
impl<T> PartialEq for Early<T> {
    fn eq(&self, o: &Self) -> bool {
        self.key() == o.key()
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
        o.key().cmp(&self.key())
    }
}

/// Monotone min-queue of timed items with FIFO order among equal times.
pub struct EventQueue<T> {
    /// Items due exactly at `last`, in `seq` order.
    zero: VecDeque<Entry<T>>,
    /// Buckets 1..=64 (index 0 unused).
    buckets: Vec<Vec<Entry<T>>>,
    /// Bit `i` set iff bucket `i` (1..=64) is non-empty.
    nonempty: u128,
    /// Time every item in the buckets is `>=`; bucket 0 holds items due
    /// exactly then.
    last: u64,
    /// Items pushed with a time below `last`.
    early: BinaryHeap<Early<T>>,
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
            zero: VecDeque::new(),
            buckets: (0..65).map(|_| Vec::new()).collect(),
            nonempty: 0,
            last: 0,
            early: BinaryHeap::new(),
            len: 0,
            peak: 0,
            next_seq: 0,
        }
    }

    #[inline]
    fn put(&mut self, e: Entry<T>) {
        let b = bucket(e.time, self.last);
        if b == 0 {
            self.zero.push_back(e);
        } else {
            self.buckets[b].push(e);
            self.nonempty |= 1 << b;
        }
    }

    /// Schedule `item` at `time`. Among items with equal `time`, earlier
    /// pushes pop first.
    pub fn push(&mut self, time: Time, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let e = Entry {
            time: time.0,
            seq,
            item,
        };
        if e.time < self.last {
            self.early.push(Early(e));
        } else {
            self.put(e);
        }
        self.len += 1;
        self.peak = self.peak.max(self.len);
    }

    /// Make bucket 0 hold the buckets' items due at their minimum time, in
    /// `seq` order. Returns false when the buckets are empty.
    fn settle(&mut self) -> bool {
        if !self.zero.is_empty() {
            return true;
        }
        if self.nonempty == 0 {
            return false;
        }
        let i = self.nonempty.trailing_zeros() as usize;
        let mut b = std::mem::take(&mut self.buckets[i]);
        self.nonempty &= !(1 << i);
        // Non-empty by the mask.
        let min = b.iter().map(|e| e.time).min().unwrap_or(self.last);
        self.last = min;
        for e in b.drain(..) {
            self.put(e);
        }
        // Keep a small allocation for reuse, give a large one back: every
        // bucket keeping its high-water mark added up to several times the
        // queue's peak (a 100k-node run: ~2.7M slots for 0.4M items).
        if b.capacity() <= KEEP_BUCKET {
            self.buckets[i] = b;
        }
        self.zero.make_contiguous().sort_unstable_by_key(|e| e.seq);
        true
    }

    /// Whether the earliest item is in the early heap (`None`: empty).
    fn head_is_early(&mut self) -> Option<bool> {
        let buckets = self.settle();
        match (self.early.peek(), self.zero.front()) {
            (Some(e), Some(z)) if buckets => Some(e.key() < (z.time, z.seq)),
            (Some(_), _) => Some(true),
            (None, _) if buckets => Some(false),
            (None, _) => None,
        }
    }

    /// Time of the earliest item, if any.
    pub fn peek_time(&mut self) -> Option<Time> {
        self.peek().map(|(t, _)| t)
    }

    /// The earliest item, if any, without removing it.
    pub fn peek(&mut self) -> Option<(Time, &T)> {
        let e = match self.head_is_early()? {
            true => &self.early.peek()?.0,
            false => self.zero.front()?,
        };
        Some((Time(e.time), &e.item))
    }

    /// Remove the earliest item, with its sequence number (for
    /// [`EventQueue::restore`]).
    pub fn pop_entry(&mut self) -> Option<(Time, u64, T)> {
        let e = match self.head_is_early()? {
            true => self.early.pop()?.0,
            false => self.zero.pop_front()?,
        };
        self.len -= 1;
        Some((Time(e.time), e.seq, e.item))
    }

    /// Put back an item taken by [`EventQueue::pop_entry`]: it pops again
    /// exactly where it would have, by its time and original sequence
    /// number.
    pub fn restore(&mut self, time: Time, seq: u64, item: T) {
        debug_assert!(seq < self.next_seq);
        self.early.push(Early(Entry {
            time: time.0,
            seq,
            item,
        }));
        self.len += 1;
    }

    /// Remove and return the earliest item.
    pub fn pop(&mut self) -> Option<(Time, T)> {
        let e = match self.head_is_early()? {
            true => self.early.pop()?.0,
            false => {
                let e = self.zero.pop_front()?;
                debug_assert_eq!(e.time, self.last);
                e
            }
        };
        self.len -= 1;
        Some((Time(e.time), e.item))
    }

    /// Remove and return the earliest item if it is due at or before `limit`.
    pub fn pop_until(&mut self, limit: Time) -> Option<(Time, T)> {
        match self.peek_time() {
            Some(t) if t <= limit => self.pop(),
            _ => None,
        }
    }

    /// Up to `n` items due soon, for cache prefetching: the rest of those
    /// due at the buckets' minimum in pop order, then the early items (any
    /// order), then the items of the lowest non-empty buckets (every item
    /// of a bucket is due before any item of a higher one; within a bucket
    /// the order is arbitrary).
    pub fn upcoming(&self, n: usize) -> impl Iterator<Item = &T> {
        let mut mask = self.nonempty;
        let buckets = std::iter::from_fn(move || {
            if mask == 0 {
                return None;
            }
            let i = mask.trailing_zeros() as usize;
            mask &= !(1 << i);
            Some(self.buckets[i].iter())
        })
        .flatten();
        let early = self.early.iter().map(|e| &e.0);
        self.zero
            .iter()
            .chain(early)
            .chain(buckets)
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
    fn upcoming_lists_every_item_once_starting_with_the_next_pops() {
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
            assert_eq!(all.len(), q.len());
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), q.len(), "an item listed twice");
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

    #[test]
    fn matches_a_sorted_reference_under_random_interleaving() {
        use alm_core::Rng;
        let mut rng = Rng::new(77);
        let mut q = EventQueue::new();
        let mut reference: Vec<(u64, u64)> = Vec::new();
        let mut now = 0u64;
        let mut seq = 0u64;
        for _ in 0..20_000 {
            if rng.below(3) > 0 || reference.is_empty() {
                // Mostly at or after now (the simulator's pattern), sometimes
                // with many equal times, occasionally huge jumps.
                let dt = match rng.below(10) {
                    0 => 0,
                    1 => rng.below(1 << 40),
                    _ => rng.below(5_000),
                };
                q.push(Time(now + dt), seq);
                reference.push((now + dt, seq));
                seq += 1;
            } else {
                reference.sort_unstable();
                let want = reference.remove(0);
                let got = q.pop().map(|(t, v)| (t.0, v));
                assert_eq!(got, Some(want));
                now = want.0;
            }
            assert_eq!(q.len(), reference.len());
        }
        reference.sort_unstable();
        for want in reference {
            assert_eq!(q.pop().map(|(t, v)| (t.0, v)), Some(want));
        }
        assert!(q.is_empty());
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
