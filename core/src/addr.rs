//! Transport addresses of peers, and `NodeHandle`: the (id, address) pair that
//! Pastry's tables hold.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::id::NodeId;

/// Where a peer can be reached: a UDP/TCP socket address in `almd`, a
/// synthetic one in the simulator. The engine only compares and echoes it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerAddr(pub SocketAddr);

impl PeerAddr {
    pub fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> Self {
        PeerAddr(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port))
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(a: SocketAddr) -> Self {
        PeerAddr(a)
    }
}

impl fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for PeerAddr {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        // A handful of addresses so fuzzed sequences revisit the same peers.
        let host: u8 = u.int_in_range(1..=8)?;
        Ok(PeerAddr::v4(10, 0, 0, host, 4000))
    }
}

/// A node as the routing state knows it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeHandle {
    pub id: NodeId,
    pub addr: PeerAddr,
}

impl NodeHandle {
    pub fn new(id: NodeId, addr: PeerAddr) -> Self {
        NodeHandle { id, addr }
    }
}

impl fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}", self.id, self.addr)
    }
}
