//! Ethernet/IPv4 frames on the TAP link (placeholder, being written).
