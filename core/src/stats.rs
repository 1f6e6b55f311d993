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
    /// Messages sent to a key's root again after its ack timed out (while
    /// it answers its probe; before it is suspected and routed around).
    pub resent_to_root: u64,
    /// Copies of routed messages already taken here (acked, not routed on).
    pub dropped_duplicate: u64,
    /// Nodes declared dead.
    pub peers_declared_dead: u64,
    /// Application lookups delivered here.
    pub lookups_delivered: u64,
    /// RTT probes (pings) sent: proximity measurements and liveness checks.
    pub probes_sent: u64,
    /// Second-hand routing-table candidates not probed against their slot's
    /// measured holder: the triangle inequality proved them no nearer, or
    /// they came in a leaf set and the holder is nearer than every measured
    /// leaf (a random node would rarely beat it).
    pub probes_pruned: u64,
    /// `probes_sent` by cause: while joining (measuring what the join
    /// brought), ...
    pub probes_joining: u64,
    /// ... while active, measuring a routing-table candidate or a slot's
    /// first holder (proximity neighbour selection), ...
    pub probes_table: u64,
    /// ... while active, checking a leaf heard of second-hand, ...
    pub probes_new_leaf: u64,
    /// ... and liveness checks: stale leaves, the routing-table walk, hops
    /// that did not acknowledge.
    pub probes_liveness: u64,
    /// Announcements not sent on joining: the node had told us (in its
    /// pong, `PONG_ANNOUNCE_BELOW`) that we could not enter its tables.
    pub announces_skipped: u64,
    // ----- DHT of the management ring (`crate::dht`) -----
    /// DHT requests that reached us as the responsible node.
    pub dht_requests_served: u64,
    /// Records we started holding as a replica (or by a hand-off).
    pub dht_replicas_stored: u64,
    /// Records pushed to another node after a leaf-set change or by the
    /// periodic anti-entropy refresh.
    pub dht_handoffs_sent: u64,
    /// Our DHT requests sent again after `request_timeout`.
    pub dht_retries: u64,
    /// Our DHT requests given up (`DhtError::Timeout`).
    pub dht_timeouts: u64,
    /// Records refused because the store was full.
    pub dht_store_full: u64,
    /// Records dropped because their lease ran out.
    pub dht_expired: u64,
    /// Undecodable or inconsistent routed DHT requests.
    pub dht_malformed: u64,
    /// Replies to DHT requests we no longer wait for.
    pub dht_late_replies: u64,
    /// Rounds in which, as responsible node, we asked our neighbours for a
    /// record we held no copy of before answering.
    pub dht_fetches: u64,
    /// Records learnt from such a round (we were missing them).
    pub dht_fetch_adopted: u64,
    /// Writes refused because a replica held a conflicting live record.
    pub dht_write_conflicts: u64,
    /// Writes rolled back: too few replicas acknowledged them in time.
    pub dht_write_aborts: u64,
    /// Proposals we refused as a replica (we held a conflicting record).
    pub dht_proposals_rejected: u64,
    /// Requests dropped because too many waited for one key (the requester
    /// retries).
    pub dht_queue_full: u64,
    /// Writes not committed because no replica could be asked (the node is
    /// alone or cut off): the requester retries.
    pub dht_no_replicas: u64,
}

impl Stats {
    /// Every counter with its name, in declaration order: what `almd status`
    /// prints, so a new counter shows up there without further code.
    pub fn counters(&self) -> [(&'static str, u64); 38] {
        [
            ("msgs_sent", self.msgs_sent),
            ("bytes_sent", self.bytes_sent),
            ("msgs_received", self.msgs_received),
            ("bytes_received", self.bytes_received),
            ("decode_errors", self.decode_errors),
            ("dropped_not_joined", self.dropped_not_joined),
            ("dropped_self", self.dropped_self),
            ("dropped_malformed", self.dropped_malformed),
            ("dropped_unexpected", self.dropped_unexpected),
            ("route_drops", self.route_drops),
            ("reroutes", self.reroutes),
            ("resent_to_root", self.resent_to_root),
            ("dropped_duplicate", self.dropped_duplicate),
            ("peers_declared_dead", self.peers_declared_dead),
            ("lookups_delivered", self.lookups_delivered),
            ("probes_sent", self.probes_sent),
            ("probes_pruned", self.probes_pruned),
            ("probes_joining", self.probes_joining),
            ("probes_table", self.probes_table),
            ("probes_new_leaf", self.probes_new_leaf),
            ("probes_liveness", self.probes_liveness),
            ("announces_skipped", self.announces_skipped),
            ("dht_requests_served", self.dht_requests_served),
            ("dht_replicas_stored", self.dht_replicas_stored),
            ("dht_handoffs_sent", self.dht_handoffs_sent),
            ("dht_retries", self.dht_retries),
            ("dht_timeouts", self.dht_timeouts),
            ("dht_store_full", self.dht_store_full),
            ("dht_expired", self.dht_expired),
            ("dht_malformed", self.dht_malformed),
            ("dht_late_replies", self.dht_late_replies),
            ("dht_fetches", self.dht_fetches),
            ("dht_fetch_adopted", self.dht_fetch_adopted),
            ("dht_write_conflicts", self.dht_write_conflicts),
            ("dht_write_aborts", self.dht_write_aborts),
            ("dht_proposals_rejected", self.dht_proposals_rejected),
            ("dht_queue_full", self.dht_queue_full),
            ("dht_no_replicas", self.dht_no_replicas),
        ]
    }
}
