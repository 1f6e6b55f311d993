//! Identifiers on the Pastry ring (Rowstron & Druschel 2001, §2): 128-bit
//! `NodeId`s and keys, read as a sequence of base-2^b digits, with the circular
//! distance used for "numerically closest" and leaf-set placement.

use core::fmt;

/// A 128-bit position on the ring. Node ids and message keys share this space.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct NodeId(pub u128);

/// Keys are ring positions too; the alias says which role a value plays.
pub type Key = NodeId;

impl NodeId {
    pub const BITS: u32 = 128;

    /// Derive a key from arbitrary bytes (a topic name, a group address...).
    /// blake3 keeps keys uniform on the ring, which Pastry's balance relies on.
    pub fn hash(parts: &[&[u8]]) -> NodeId {
        let mut h = blake3::Hasher::new();
        for p in parts {
            h.update(&(p.len() as u32).to_le_bytes());
            h.update(p);
        }
        let out = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&out.as_bytes()[..16]);
        NodeId(u128::from_be_bytes(b))
    }

    pub fn to_be_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
    pub fn from_be_bytes(b: [u8; 16]) -> Self {
        NodeId(u128::from_be_bytes(b))
    }

    /// The `i`-th digit (most significant first) in base 2^`b`.
    /// `b` must divide 128 and be at most 8 (checked by `Config::validate`).
    /// Digits past the end read as 0 rather than panicking.
    #[inline]
    pub fn digit(self, i: usize, b: u32) -> usize {
        let Some(shift) = u32::try_from(i)
            .ok()
            .and_then(|i| i.checked_add(1))
            .and_then(|n| n.checked_mul(b))
            .and_then(|bits| Self::BITS.checked_sub(bits))
        else {
            return 0;
        };
        ((self.0 >> shift) & ((1u128 << b) - 1)) as usize
    }

    /// Number of leading base-2^`b` digits shared with `other`.
    #[inline]
    pub fn shared_prefix_len(self, other: NodeId, b: u32) -> usize {
        let x = self.0 ^ other.0;
        if x == 0 {
            return (Self::BITS / b) as usize;
        }
        (x.leading_zeros() / b) as usize
    }

    /// Clockwise distance from `self` to `other` (how far `other` is ahead).
    #[inline]
    pub fn cw_distance(self, other: NodeId) -> u128 {
        other.0.wrapping_sub(self.0)
    }

    /// Counter-clockwise distance from `self` to `other`.
    #[inline]
    pub fn ccw_distance(self, other: NodeId) -> u128 {
        self.0.wrapping_sub(other.0)
    }

    /// Shortest distance around the ring.
    #[inline]
    pub fn ring_distance(self, other: NodeId) -> u128 {
        self.cw_distance(other).min(self.ccw_distance(other))
    }

    /// Whether `a` is strictly closer to `self` (as a key) than `b`, with a
    /// deterministic tie-break (the numerically smaller id wins) so that every
    /// node agrees on which of two equidistant nodes is responsible.
    #[inline]
    pub fn closer(self, a: NodeId, b: NodeId) -> bool {
        let (da, db) = (self.ring_distance(a), self.ring_distance(b));
        da < db || (da == db && a.0 < b.0)
    }

    /// Whether `self` lies on the clockwise arc from `from` to `to` (inclusive).
    #[inline]
    pub fn in_cw_arc(self, from: NodeId, to: NodeId) -> bool {
        from.cw_distance(self) <= from.cw_distance(to)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex digits are enough to tell nodes apart in logs.
        write!(f, "{:08x}…", (self.0 >> 96) as u32)
    }
}
impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}
impl fmt::LowerHex for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl core::str::FromStr for NodeId {
    type Err = core::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(s, 16).map(NodeId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: u128 = 1 << 127;

    #[test]
    fn digits_read_most_significant_first() {
        let id = NodeId(0x1234_5678_9abc_def0_0000_0000_0000_000f);
        assert_eq!(id.digit(0, 4), 1);
        assert_eq!(id.digit(3, 4), 4);
        assert_eq!(id.digit(31, 4), 0xf);
        assert_eq!(id.digit(0, 8), 0x12);
        assert_eq!(id.digit(0, 1), 0);
        assert_eq!(NodeId(TOP).digit(0, 1), 1);
        // Past the last digit: 0, not a panic.
        assert_eq!(id.digit(32, 4), 0);
        assert_eq!(id.digit(usize::MAX, 4), 0);
        assert_eq!(id.digit(u32::MAX as usize, 4), 0);
    }

    #[test]
    fn shared_prefix_counts_whole_digits() {
        let a = NodeId(0xabc0 << 112);
        let b = NodeId(0xabd0 << 112);
        assert_eq!(a.shared_prefix_len(b, 4), 2);
        assert_eq!(a.shared_prefix_len(a, 4), 32);
        assert_eq!(a.shared_prefix_len(b, 8), 1);
        assert_eq!(NodeId(0).shared_prefix_len(NodeId(TOP), 4), 0);
    }

    #[test]
    fn ring_distance_wraps_around() {
        let lo = NodeId(5);
        let hi = NodeId(u128::MAX - 4);
        assert_eq!(lo.ring_distance(hi), 10);
        assert_eq!(hi.ring_distance(lo), 10);
        assert_eq!(lo.cw_distance(hi), u128::MAX - 9);
        assert_eq!(hi.cw_distance(lo), 10);
        assert_eq!(lo.ccw_distance(hi), 10);
        // Antipodes are equidistant both ways.
        assert_eq!(NodeId(0).ring_distance(NodeId(TOP)), TOP);
    }

    #[test]
    fn closer_breaks_ties_by_smaller_id() {
        let key = NodeId(100);
        assert!(key.closer(NodeId(99), NodeId(102)));
        assert!(key.closer(NodeId(98), NodeId(102)));
        assert!(!key.closer(NodeId(102), NodeId(98)));
        // Across zero.
        let key = NodeId(1);
        assert!(key.closer(NodeId(u128::MAX), NodeId(4)));
    }

    #[test]
    fn arcs_wrap() {
        let from = NodeId(u128::MAX - 10);
        let to = NodeId(10);
        assert!(NodeId(0).in_cw_arc(from, to));
        assert!(NodeId(10).in_cw_arc(from, to));
        assert!(!NodeId(11).in_cw_arc(from, to));
        assert!(!NodeId(1000).in_cw_arc(from, to));
    }

    #[test]
    fn hash_is_stable_and_spreads() {
        let a = NodeId::hash(&[b"group", b"239.1.2.3"]);
        assert_eq!(a, NodeId::hash(&[b"group", b"239.1.2.3"]));
        assert_ne!(a, NodeId::hash(&[b"group", b"239.1.2.4"]));
        // Length-prefixing keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(NodeId::hash(&[b"ab", b"c"]), NodeId::hash(&[b"a", b"bc"]));
    }
}
