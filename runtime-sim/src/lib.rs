//! # alm-sim: a deterministic discrete-event network simulator
//!
//! Runs unmodified `alm-core` engines on a synthetic network: one engine per
//! simulated host, virtual time in microseconds, latency from a topology model
//! (Euclidean plane or GT-ITM-like transit-stub), seeded datagram loss, per-node
//! uplink serialisation for streams, crashes and partitions. Same seed → same
//! run, byte for byte.
//!
//! * [`queue`]: the `(time, seq)` event queue (a calendar queue).
//! * [`addr`]: host index ↔ synthetic `10.x.y.z:4000` address.
//! * [`topology`]: latency models.
//! * [`engine`]: the [`Engine`](engine::Engine) trait the simulator drives;
//!   [`fake`] is a trivial engine for testing the machinery; `alm_core::Node`
//!   implements it in `alm`.
//! * [`sim`]: the simulator proper; `pool` runs batches of independent
//!   events on worker threads.
//! * [`build`]: building an overlay by joins, shared by the experiments.
//! * [`pastry`]: the Pastry lookup experiment behind `alm-sim pastry`.
//! * [`scribe`]: the Scribe multicast experiment behind `alm-sim scribe`.
//! * [`mgmt`]: the address-allocation experiment behind `alm-sim mgmt`.
//! * [`svg`]: hand-written charts.

pub mod addr;
pub mod alm;
pub mod build;
pub mod engine;
pub mod fake;
pub mod mgmt;
pub mod pastry;
mod pool;
pub mod queue;
pub mod scribe;
pub mod sim;
pub mod svg;
pub mod topology;

pub use engine::{Engine, EngineStats, SimChannel, SimEvent, SimTransmit};
pub use sim::{Action, NetConfig, NoObserver, Observer, Sim, SimStats};
pub use topology::{AnyTopology, Plane, Topology, TopologyKind, TransitStub};
