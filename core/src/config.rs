//! Engine configuration. Defaults follow the papers: Pastry b = 4, |L| = 16,
//! |M| = 32 (Rowstron & Druschel 2001, §2.1), MSPastry-like maintenance
//! timers (Castro et al. 2004).

use crate::dht::DhtConfig;
use crate::scribe::ScribeConfig;
use crate::time::Duration;

/// Tunables of one `Node`. `Config::default()` is what `almd` and `alm-sim`
/// use unless told otherwise; `validate` says what is wrong with a bad one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Bits per digit (`b`): 1, 2, 4 or 8.
    pub b: u32,
    /// Leaf-set size |L| (half on each side).
    pub leaf_set_size: usize,
    /// Neighbourhood-set size |M|.
    pub neighborhood_size: usize,
    /// Routing-table rows filled by proximity (measured RTT). Rows below
    /// have few candidates per slot and take the first one offered.
    pub pns_rows: usize,
    /// Leaves not heard from within this interval are probed.
    pub keepalive_interval: Duration,
    /// Every routing-table entry is probed once per this period while
    /// peers are failing (one was declared dead within `dead_memory`).
    pub table_probe_period: Duration,
    /// The period when no peer has failed within `dead_memory`: in a calm
    /// overlay dead entries are rare, and a lookup that meets one still
    /// gets through (per-hop acks re-route it) and repairs the slot; the
    /// first failure noticed switches back to `table_probe_period`
    /// (MSPastry tunes its probing to the observed failure rate likewise).
    pub table_probe_period_calm: Duration,
    /// Routing-table maintenance rounds (one row exchanged with a nearby
    /// node, about once per `keepalive_interval`) back off up to this
    /// factor while they stop finding better entries, and return to the
    /// full rate when one does or a peer fails.
    pub maintenance_backoff_max: u8,
    /// Rounds of routing-table refinement right after joining, at 2, 4, 8,
    /// ... seconds: each asks a node near us for every proximity row. The
    /// rows a joiner copies from its join path were chosen for nodes
    /// elsewhere (and, while the overlay itself is young, from few
    /// candidates); these rounds bring its table close to what periodic
    /// maintenance converges to, within the first minute instead of many.
    pub refine_rounds: u8,
    /// How often a node gossips its leaf set to its nearest neighbours (and
    /// checks which leaves need a probe).
    pub gossip_interval: Duration,
    /// How long to wait for a pong before retrying a probe.
    pub probe_timeout: Duration,
    /// Probes sent before a silent peer is declared dead.
    pub probe_attempts: u8,
    /// Per-hop acknowledgement timeout when the next hop's RTT is unknown,
    /// and the upper bound of the RTT-derived one (3 × RTT): an RTT can be
    /// a peer's unverified hint, and a forged one must not make a route
    /// wait longer than for a peer we know nothing of.
    pub ack_timeout: Duration,
    /// Lower bound of the RTT-derived per-hop acknowledgement timeout.
    pub ack_timeout_min: Duration,
    /// Re-routes of one message around unresponsive next hops before it is
    /// dropped.
    pub max_reroutes: u8,
    /// After a joiner has its leaf set, how long it waits for RTT
    /// measurements of candidates before announcing itself.
    pub join_settle: Duration,
    /// How long a joiner waits for its leaf set before trying the next
    /// bootstrap peer.
    pub join_timeout: Duration,
    /// Join attempts over the bootstrap list before `Event::JoinFailed`.
    pub join_attempts: u8,
    /// How long a node declared dead is not re-learnt from second-hand state.
    pub dead_memory: Duration,
    /// Scribe trees and the data path.
    pub scribe: ScribeConfig,
    /// The DHT of the management ring (and, nested, address allocation and
    /// the group directory).
    pub dht: DhtConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            b: 4,
            leaf_set_size: 16,
            neighborhood_size: 32,
            pns_rows: 3,
            keepalive_interval: Duration::from_secs(20),
            gossip_interval: Duration::from_secs(15),
            table_probe_period: Duration::from_secs(60),
            table_probe_period_calm: Duration::from_secs(300),
            maintenance_backoff_max: 8,
            refine_rounds: 5,
            probe_timeout: Duration::from_millis(1_000),
            probe_attempts: 3,
            ack_timeout: Duration::from_millis(1_000),
            ack_timeout_min: Duration::from_millis(100),
            max_reroutes: 6,
            join_settle: Duration::from_millis(1_500),
            join_timeout: Duration::from_secs(3),
            join_attempts: 5,
            dead_memory: Duration::from_secs(120),
            scribe: ScribeConfig::default(),
            dht: DhtConfig::default(),
        }
    }
}

/// What is wrong with a `Config`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("b = {0} is not supported: use 1, 2, 4 or 8 bits per digit")]
    Digit(u32),
    #[error("leaf_set_size = {0} must be even and between 2 and 64")]
    LeafSet(usize),
    #[error("neighborhood_size = {0} must be at most 256")]
    Neighborhood(usize),
    #[error("probe_attempts and join_attempts must be at least 1")]
    Attempts,
    #[error("dht: {0}")]
    Dht(&'static str),
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.b, 1 | 2 | 4 | 8) {
            return Err(ConfigError::Digit(self.b));
        }
        if self.leaf_set_size < 2 || self.leaf_set_size > 64 || self.leaf_set_size % 2 != 0 {
            return Err(ConfigError::LeafSet(self.leaf_set_size));
        }
        if self.neighborhood_size > 256 {
            return Err(ConfigError::Neighborhood(self.neighborhood_size));
        }
        if self.probe_attempts == 0 || self.join_attempts == 0 {
            return Err(ConfigError::Attempts);
        }
        if let Some(why) = self.dht.problem() {
            return Err(ConfigError::Dht(why));
        }
        Ok(())
    }

    /// Number of routing-table rows: 128 / b.
    pub fn rows(&self) -> usize {
        (128 / self.b) as usize
    }

    /// Number of routing-table columns: 2^b.
    pub fn cols(&self) -> usize {
        1usize << self.b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_values_say_why() {
        Config::default().validate().unwrap();
        let c = Config {
            b: 3,
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err(), ConfigError::Digit(3));
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("1, 2, 4 or 8")
        );
        let c = Config {
            leaf_set_size: 15,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        assert_eq!(Config::default().rows(), 32);
        assert_eq!(Config::default().cols(), 16);
    }
}
