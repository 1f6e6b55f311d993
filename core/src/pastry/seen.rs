//! The routed messages a node has recently taken, so that a copy arriving
//! again is acked but neither routed on nor delivered a second time.
//!
//! A routed message keeps the id its origin drew on every hop and every
//! reroute. Copies arise when an ack is lost: the previous hop resends the
//! message to the key's root or routes it around the silent hop, and both
//! copies travel on. Wherever the second one reaches a node the first
//! already passed, it stops there.
//!
//! Bounded twice: an entry is forgotten after [`WINDOW`], and at most
//! [`CAPACITY`] are kept (the oldest go first). Forgetting early costs at
//! worst a duplicate, never a lost message.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use foldhash::fast::FixedState;

use crate::id::NodeId;
use crate::time::{Duration, Time};
use crate::util::{Set, new_set};

/// Longer than any copy can trail the first: a hop gives up after
/// `max_reroutes` reroutes and at most 3 resends to the root, each after
/// an ack timeout of at most `ack_timeout` (10 s with the defaults), and a
/// copy is at most a few such delays behind.
pub const WINDOW: Duration = Duration::from_secs(30);

/// Entries kept at most: 4096 × ~26 bytes of set and queue.
pub const CAPACITY: usize = 4096;

/// A message is named by its origin and the id the origin drew: a node
/// cannot make another origin's messages look like duplicates without
/// forging that origin too. What is kept is a 64-bit keyed hash of the
/// pair (a third of its size, the difference between 1.6 and 1.7 GB at
/// 100,000 simulated nodes); the key is the node's secret, so a collision
/// cannot be aimed, and by chance it takes ~2^64 / 4096 messages.
type Key = u64;

#[derive(Debug)]
pub struct Seen {
    names: FixedState,
    set: Set<Key>,
    /// Insertion order, for expiry. Entries are never refreshed, so each
    /// one here has exactly one in `set`.
    order: VecDeque<(Time, Key)>,
}

impl Seen {
    pub fn new(seed: u64) -> Self {
        Seen {
            names: FixedState::with_seed(seed.rotate_left(32) ^ 0x5eed_0f1d_5eed_0f1d),
            set: new_set(seed),
            order: VecDeque::new(),
        }
    }

    /// Record the message `id` from `origin`; false if it was already
    /// recorded (a duplicate). Id 0 means "no id" and is never recorded.
    pub fn first_time(&mut self, now: Time, origin: NodeId, id: u64) -> bool {
        if id == 0 {
            return true;
        }
        while let Some(&(at, key)) = self.order.front() {
            if self.order.len() < CAPACITY && now.saturating_since(at) < WINDOW {
                break;
            }
            self.order.pop_front();
            self.set.remove(&key);
        }
        let key = self.names.hash_one((origin, id));
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back((now, key));
        true
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);

    #[test]
    fn a_second_copy_is_a_duplicate_and_origins_are_apart() {
        let mut s = Seen::new(1);
        let t = Time::from_millis(5);
        assert!(s.first_time(t, A, 7));
        assert!(!s.first_time(t, A, 7));
        assert!(s.first_time(t, B, 7), "same id, other origin");
        assert!(s.first_time(t, A, 0) && s.first_time(t, A, 0), "0 is no id");
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn entries_expire_after_the_window() {
        let mut s = Seen::new(1);
        assert!(s.first_time(Time::ZERO, A, 7));
        let almost = Time::from_micros(WINDOW.as_micros() - 1);
        assert!(!s.first_time(almost, A, 7));
        assert!(s.first_time(Time::ZERO + WINDOW, A, 7));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn at_most_capacity_entries_the_oldest_go_first() {
        let mut s = Seen::new(1);
        let t = Time::from_millis(1);
        for id in 1..=(CAPACITY as u64 + 10) {
            assert!(s.first_time(t, A, id));
        }
        assert_eq!(s.len(), CAPACITY);
        // The first ten were forgotten (a duplicate of them would pass);
        // the newest are still known.
        assert!(!s.first_time(t, A, CAPACITY as u64 + 10));
        assert!(s.first_time(t, A, 1));
    }
}
