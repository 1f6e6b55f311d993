//! # alm-core: the sans-IO engine
//!
//! alm carries IP multicast over a Pastry/Scribe overlay (the Multicast
//! Middleware of Brogle, Milic and Braun) and will serve content from
//! in-network caches (MultiCache). This crate is the whole protocol, and
//! nothing else: **no sockets, no clocks, no threads, no global RNG**. Time
//! comes in as [`Time`], randomness from the seed given to [`Node::new`],
//! bytes in as [`bytes::Bytes`] and out as [`Transmit`]s. The same inputs
//! give the same outputs, byte for byte: that is what lets `alm-sim` run a
//! hundred thousand nodes deterministically and the fuzzers drive any
//! sequence of events.
//!
//! ## Map
//!
//! | module | owns | consumes | emits |
//! |---|---|---|---|
//! | [`node`] | one participant: Pastry + Scribe + DHT + management, pending subscriptions | datagrams, stream messages, timeouts, commands | [`Transmit`]s, [`Event`]s, deadlines |
//! | [`pastry`] | leaf set, routing table, neighbourhood set, per-hop acks, probes, join phase (Rowstron & Druschel 2001, MSPastry maintenance) | decoded Pastry messages | transmits, upcalls to the node |
//! | [`scribe`] | per-topic trees (parent, children, liveness), duplicate filters, off-tree publishers (Castro et al. 2002) | routed Scribe messages, tree control, data packets | transmits, delivered data, anycast hits |
//! | [`dht`] | records this node stores (responsible or replica: owner, version, lease, holders), its requests awaiting replies, writes awaiting replica acks | routed DHT requests, replies, replications, leaf-set changes | transmits, one result per request |
//! | [`mgmt`] | the TAP address allocation (claiming / holding + renewal), announced groups, directory listings | commands, results of its DHT requests | DHT requests, address and directory events |
//! | [`igmp`] | the IGMP querier of the TAP link (RFC 2236/3376) | IGMP messages from the host | query frames, group joined/left |
//! | [`frame`] | nothing: Ethernet/IPv4/IGMP parsing and building with etherparse | TAP frames | classified frames |
//! | [`middleware`] | a [`Node`] + an [`igmp::IgmpRouter`]: one host's multicast router | TAP frames and everything a node takes | TAP frames ([`TapWrite`]), transmits |
//! | [`wire`] | nothing: our message formats, one table per message in the docs | `&[u8]` / `Bytes` | `Repr`s |
//! | [`id`], [`addr`], [`time`], [`rng`], [`util`] | 128-bit ring ids, peer addresses, µs time, seeded xoshiro256**, seeded hash maps | | |
//!
//! ## How bytes and time move
//!
//! ```text
//!  runtime (almd / alm-sim / your loop)            alm-core
//!  ───────────────────────────────────            ───────────────────────────────
//!  socket recv ──► handle_datagram(now, from, b) ─► wire::Header ─► Pastry | Scribe | data
//!  TAP read   ──► handle_tap_frame(now, frame)   ─► frame ─► IGMP querier | publish
//!  timer fires ─► handle_timeout(now)            ─► timer heap (each deadline names its reason)
//!  socket send ◄── poll_transmit()   (header inline + shared Bytes body: zero-copy fan-out)
//!  TAP write   ◄── poll_tap_frame()  (14-byte Ethernet header + shared packet: one writev)
//!  app events  ◄── poll_event()
//!  sleep until ◄── poll_timeout()
//! ```
//!
//! ## The drain rule
//!
//! After **every** `handle_*` call or command (`join_overlay`, `route`,
//! `subscribe`, `publish`, ...), call `poll_transmit` until it returns
//! `None`, then `poll_event` (and `poll_tap_frame` on a [`Middleware`])
//! until `None`, then read `poll_timeout` and wake the engine with
//! `handle_timeout` no later than that. Spurious `handle_timeout` calls are
//! harmless. The simulator asserts this rule on every step.
//!
//! ## Embedding
//!
//! ```
//! use alm_core::{Config, Node, NodeId, PeerAddr, Time, Topic, Event};
//! let me = PeerAddr::v4(127, 0, 0, 1, 4000);
//! let mut node = Node::new(Config::default(), NodeId(42), me, /* seed */ 7);
//! node.join_overlay(Time::ZERO, &[]); // first node of a new overlay
//! while let Some(t) = node.poll_transmit() { let _ = t; /* socket.send_to(...) */ }
//! while let Some(e) = node.poll_event() { assert_eq!(e, Event::Joined); }
//! node.subscribe(Time::from_millis(1), Topic::named(b"demo", b"news"));
//! let _next_wakeup: Option<Time> = node.poll_timeout();
//! ```
//!
//! Inputs from the network are untrusted: decoders return errors (counted
//! in [`Stats`]), never panic, and never allocate more than the input
//! justifies; every decoder and the node itself are fuzzed (`fuzz/`).

pub mod addr;
pub mod config;
pub mod dht;
pub mod id;
pub mod io;
pub mod mgmt;
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
pub use dht::{DhtConfig, DhtError, DhtRecord, DhtReply, Expect};
pub use id::{Key, NodeId};
pub use io::{Channel, InlineHeader, Transmit};
pub use mgmt::{AllocError, GroupRecord, MgmtConfig, PoolExhausted};
pub use middleware::{Middleware, MiddlewareConfig, TapWrite};
pub use node::{Event, Node, NotJoined};
pub use rng::Rng;
pub use scribe::{ScribeConfig, Topic};
pub use stats::Stats;
pub use time::{Duration, Time};
