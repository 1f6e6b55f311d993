//! # alm-core: the sans-IO engine
//!
//! (The one-page map of the engine is written once the modules below settle;
//! see `Node` for the contract.)

pub mod addr;
pub mod config;
pub mod id;
pub mod io;
pub mod middleware;
pub mod node;
pub mod pastry;
pub mod rng;
pub mod scribe;
pub mod stats;
pub mod time;
pub mod util;
pub mod wire;

pub mod frame;
pub mod igmp;

pub use addr::{NodeHandle, PeerAddr};
pub use config::{Config, ConfigError};
pub use id::{Key, NodeId};
pub use io::{Channel, InlineHeader, Transmit};
pub use middleware::{Middleware, MiddlewareConfig, TapWrite};
pub use node::{Event, Node, NotJoined};
pub use rng::Rng;
pub use scribe::{ScribeConfig, Topic};
pub use stats::Stats;
pub use time::{Duration, Time};
