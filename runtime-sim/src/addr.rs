//! Synthetic addresses: node `i` is `10.x.y.z:4000` where `x.y.z` is `i + 1`
//! written as a 24-bit big-endian number. The mapping is arithmetic both ways
//! (no hash map on the hot path). Nothing is ever sent on a real network.

use alm_core::PeerAddr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The port every simulated node listens on.
pub const SIM_PORT: u16 = 4000;
/// Largest number of nodes the address plan can name (`10.0.0.1` ..= `10.255.255.255`).
pub const MAX_NODES: usize = (1 << 24) - 1;

/// The address of node `index`.
///
/// # Panics
/// If `index >= MAX_NODES` (a simulator configuration error, not input).
pub fn addr_of(index: usize) -> PeerAddr {
    assert!(index < MAX_NODES, "node index {index} beyond the 10/8 plan");
    let v = (index + 1) as u32;
    PeerAddr::v4(10, (v >> 16) as u8, (v >> 8) as u8, v as u8, SIM_PORT)
}

/// The node index behind `addr`, or `None` for an address outside the plan.
pub fn index_of(addr: PeerAddr) -> Option<usize> {
    match addr.0 {
        SocketAddr::V4(a) if a.port() == SIM_PORT => {
            let [net, x, y, z] = a.ip().octets();
            if net != 10 {
                return None;
            }
            let v = (u32::from(x) << 16) | (u32::from(y) << 8) | u32::from(z);
            (v as usize).checked_sub(1)
        }
        _ => None,
    }
}

/// An address that maps to no node (used by tests of unknown destinations).
pub fn unknown_addr() -> PeerAddr {
    PeerAddr(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        SIM_PORT,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_across_the_plan() {
        for i in [
            0,
            1,
            254,
            255,
            256,
            65_535,
            65_536,
            1_000_000,
            MAX_NODES - 1,
        ] {
            assert_eq!(index_of(addr_of(i)), Some(i), "index {i}");
        }
        assert_eq!(addr_of(0), PeerAddr::v4(10, 0, 0, 1, SIM_PORT));
        assert_eq!(addr_of(255), PeerAddr::v4(10, 0, 1, 0, SIM_PORT));
    }

    #[test]
    fn foreign_addresses_map_to_nothing() {
        assert_eq!(index_of(unknown_addr()), None);
        assert_eq!(index_of(PeerAddr::v4(10, 0, 0, 0, SIM_PORT)), None);
        assert_eq!(index_of(PeerAddr::v4(10, 0, 0, 1, 4001)), None);
    }
}
