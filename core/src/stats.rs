//! Counters a user reads in `almd status` and the simulator aggregates.
//! Every drop has a reason; nothing from the network disappears silently.

/// Per-node counters. Plain integers: cheap to bump on the hot path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub msgs_sent: u64,
    pub bytes_sent: u64,
    pub msgs_received: u64,
    pub bytes_received: u64,
    /// Messages that failed to decode (truncated, bad version, unknown type).
    pub decode_errors: u64,
    /// Routed messages that arrived while we were not yet a member.
    pub dropped_not_joined: u64,
    /// Messages claiming to come from our own id.
    pub dropped_self: u64,
    /// Well-formed messages that break protocol rules.
    pub dropped_malformed: u64,
    /// State we did not ask for.
    pub dropped_unexpected: u64,
    /// Routed messages given up after too many re-routes.
    pub route_drops: u64,
    /// Hops re-routed around an unresponsive node.
    pub reroutes: u64,
    /// Nodes declared dead.
    pub peers_declared_dead: u64,
    /// Application lookups delivered here.
    pub lookups_delivered: u64,
}
