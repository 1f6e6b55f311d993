//! # alm-core: the sans-IO engine
//!
//! (The one-page map of the engine is written once the modules below settle;
//! see `Node` for the contract.)

pub mod addr;
pub mod id;
pub mod rng;
pub mod time;
pub mod util;
pub mod wire;

pub mod frame;
pub mod igmp;

pub use addr::{NodeHandle, PeerAddr};
pub use id::{Key, NodeId};
pub use rng::Rng;
pub use time::{Duration, Time};
