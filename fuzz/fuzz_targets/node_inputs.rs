//! One `alm_core::Node` driven by an arbitrary sequence of inputs: raw
//! datagrams, valid Pastry messages built with `Repr` (so the fuzzer gets past
//! the decoder quickly), replies to what the node itself sent (acks, pongs,
//! join state — the only way to answer with the random hop ids and clock
//! tokens the node chose), timeouts, joins, lookups, Scribe subscriptions
//! and publications, and unreachable peers.
//!
//! Time only moves forward. After every input the harness drains
//! `poll_transmit` and `poll_event` until `None` and checks what must hold for
//! any input whatsoever:
//!
//! - nothing panics, and draining terminates (bounded per input);
//! - every transmit is non-empty, carries our header with our id, decodes if
//!   it is a Pastry message, and goes to one of the eight peers or to an
//!   address that some input named (a bootstrap, a handle inside a message,
//!   an anycast's requester or a pushdown's joiner);
//! - the node never sends to its own address;
//! - `handle_timeout(now)` settles: repeated calls at one instant leave no
//!   deadline at or before `now` after a bounded number of rounds, and no
//!   deadline is ever more than an hour in the past.

#![no_main]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use alm_core::scribe::Topic;
use alm_core::wire::pastry::{Repr, Route, Service, State, state_flags};
use alm_core::wire::scribe::{Anycast, Control, SERVICE_ANYCAST};
use alm_core::wire::{Header, MsgType};
use alm_core::{Config, Duration, NodeHandle, NodeId, PeerAddr, Time};
use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

/// Inputs per run; longer sequences are cut.
const MAX_INPUTS: usize = 256;
/// Transmits or events one input may produce before we call it a runaway.
const MAX_OUTPUTS_PER_INPUT: usize = 20_000;
/// `handle_timeout(now)` rounds at one instant before we call it a livelock.
const MAX_TIMEOUT_ROUNDS: usize = 10_000;
/// Transmits remembered for `Respond`.
const RECENT: usize = 64;

/// Whether forged handles may name the node's own address (with another id).
/// Off by default: an attacker can do it, but whether the engine should then
/// refuse to talk to "itself" is a policy question for `core`; with the
/// feature on (`cargo fuzz run --features forge-self node_inputs`) the
/// `never sends to its own address` check covers that case too.
const FORGE_SELF: bool = cfg!(feature = "forge-self");

const ME_ID: u128 = 0x8000_0000_0000_0000_0000_0000_0000_0001;

fn me_addr() -> PeerAddr {
    PeerAddr::v4(10, 0, 0, 200, 4000)
}

/// The eight peers: 10.0.0.1..=8, port 4000.
fn peer(i: u8) -> PeerAddr {
    PeerAddr::v4(10, 0, 0, i % 8 + 1, 4000)
}

/// Addresses a handle inside a message may carry: mostly the eight peers,
/// sometimes a ninth host, a second port on a peer's host, IPv6, or (only with
/// `forge-self`) our own address.
fn handle_addr(i: u8) -> PeerAddr {
    match i % 16 {
        0..=7 => peer(i),
        8 => PeerAddr::v4(10, 0, 0, 9, 4000),
        9 => PeerAddr::v4(10, 0, 0, 1, 4001),
        10 => PeerAddr(SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
            4000,
        )),
        11 if FORGE_SELF => me_addr(),
        _ => peer(i / 16),
    }
}

/// The id each peer address claims unless an input says otherwise: spread
/// around the ring so the leaf set, table rows and rare case all get used.
fn default_id(addr: PeerAddr) -> NodeId {
    let h = match addr.0.ip() {
        IpAddr::V4(v4) => u128::from(v4.octets()[3]),
        IpAddr::V6(v6) => u128::from(v6.octets()[15]) + 100,
    } + u128::from(addr.0.port());
    NodeId(h.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum FuzzId {
    /// Whatever the address is currently known as.
    OfAddr,
    /// Near our own id (leaf-set territory).
    NearMe(i16),
    /// Shares `prefix` high bits with our id, then arbitrary.
    Prefix(u8, u128),
    /// Anything at all, including our own id.
    Raw(u128),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct FuzzHandle {
    id: FuzzId,
    addr: u8,
}

#[derive(Arbitrary, Debug)]
enum Kind {
    Route {
        msg_id: u64,
        key: FuzzId,
        hops: u8,
        service: u8,
        origin: FuzzHandle,
        payload: Vec<u8>,
    },
    RouteAck {
        msg_id: u64,
    },
    State {
        flags: u8,
        rtt_hint: u32,
        table: Vec<FuzzHandle>,
        table_rtts: Vec<u32>,
        leaves: Vec<FuzzHandle>,
        neighbors: Vec<FuzzHandle>,
    },
    Announce {
        rtt_hint: u32,
    },
    Ping {
        token: u64,
        flags: u8,
        rtt_hint: u32,
    },
    Pong {
        token: u64,
        flags: u8,
        report_below: u32,
    },
    LeafSetRequest,
    RowRequest {
        row: u8,
    },
    RttReport {
        rtt: u32,
    },
}

#[derive(Arbitrary, Debug)]
enum Input {
    /// Raw bytes from one of the eight peers.
    Datagram {
        from: u8,
        bytes: Vec<u8>,
    },
    /// Raw bytes on the reliable channel.
    Stream {
        from: u8,
        bytes: Vec<u8>,
    },
    /// A valid Pastry message.
    StructuredPastry {
        from: u8,
        sender_id: u128,
        /// Use `sender_id` rather than the id the address is known by.
        forge_id: bool,
        kind: Kind,
    },
    /// The natural reply of its destination to one recently sent message:
    /// Pong to a Ping, RouteAck to a Route (plus join state to a Join),
    /// State to a LeafSetRequest, RowRequest or Announce.
    Respond {
        pick: u8,
        handles: Vec<FuzzHandle>,
    },
    /// Advance the clock and fire what is due.
    Timeout {
        advance_ms: u16,
    },
    /// Jump to the next deadline (at most an hour ahead) and fire it.
    FireNextTimer,
    Join {
        bootstrap: Vec<u8>,
    },
    Route {
        key: u128,
        payload: Vec<u8>,
    },
    PeerUnreachable {
        from: u8,
    },
    /// Scribe commands on one of four topics.
    Subscribe {
        topic: u8,
    },
    Unsubscribe {
        topic: u8,
    },
    Publish {
        topic: u8,
        payload: Vec<u8>,
    },
}

fn topic(t: u8) -> Topic {
    Topic::named(b"fuzz", &[t % 4])
}

#[derive(Arbitrary, Debug)]
struct Run {
    seed: u64,
    inputs: Vec<Input>,
}

struct Harness {
    node: alm_core::Node,
    now: Time,
    /// Who each address currently claims to be.
    ids: BTreeMap<PeerAddr, NodeId>,
    /// Every address the node may legitimately send to.
    allowed: BTreeSet<PeerAddr>,
    /// Recent transmits (destination, wire bytes), for `Respond`.
    recent: VecDeque<(PeerAddr, Bytes)>,
}

impl Harness {
    fn new(seed: u64) -> Self {
        let node = alm_core::Node::new(Config::default(), NodeId(ME_ID), me_addr(), seed);
        let allowed = (0..8).map(peer).collect();
        Harness {
            node,
            // Not zero: ping tokens are clock readings, and an origin of zero
            // hides off-by-one-hop bugs in RTT arithmetic.
            now: Time::from_millis(1_000),
            ids: BTreeMap::new(),
            allowed,
            recent: VecDeque::new(),
        }
    }

    fn id_of(&self, addr: PeerAddr) -> NodeId {
        self.ids
            .get(&addr)
            .copied()
            .unwrap_or_else(|| default_id(addr))
    }

    fn resolve(&self, id: FuzzId, addr: PeerAddr) -> NodeId {
        match id {
            FuzzId::OfAddr => self.id_of(addr),
            FuzzId::NearMe(d) => NodeId(ME_ID.wrapping_add_signed(i128::from(d))),
            FuzzId::Prefix(bits, rest) => {
                let bits = u32::from(bits % 129);
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                NodeId((ME_ID & mask) | (rest & !mask))
            }
            FuzzId::Raw(v) => NodeId(v),
        }
    }

    /// A handle from the fuzzer, remembered: its address becomes a legal
    /// destination and the id what that address answers with.
    fn handle(&mut self, h: FuzzHandle) -> NodeHandle {
        let addr = handle_addr(h.addr);
        let id = self.resolve(h.id, addr);
        self.learn(NodeHandle::new(id, addr));
        NodeHandle::new(id, addr)
    }

    fn handles(&mut self, v: &[FuzzHandle]) -> Vec<NodeHandle> {
        v.iter().take(255).map(|h| self.handle(*h)).collect()
    }

    fn learn(&mut self, h: NodeHandle) {
        self.allowed.insert(h.addr);
        if h.id != NodeId(ME_ID) {
            self.ids.insert(h.addr, h.id);
        }
    }

    /// Addresses named inside raw bytes also become legal destinations.
    fn learn_from_bytes(&mut self, bytes: &Bytes) {
        let Ok(hdr) = Header::new_checked(&bytes[..]) else {
            return;
        };
        let raw_type = hdr.raw_type();
        let Ok(ty) = hdr.msg_type() else {
            // A Scribe pushdown names the joiner, which its new parent
            // answers.
            if let Ok(Control::Pushdown { joiner, .. }) = Control::parse(raw_type, bytes) {
                self.learn(joiner);
            }
            return;
        };
        match Repr::parse(ty, bytes) {
            Ok(Repr::Route(r)) => self.learn_from_route(&r),
            Ok(Repr::State(s)) => {
                for h in s.table.iter().chain(&s.leaves).chain(&s.neighbors) {
                    self.learn(*h);
                }
            }
            _ => {}
        }
    }

    /// A routed message names its origin, and an anycast inside it names
    /// the requester, which whoever can serve it answers directly.
    fn learn_from_route(&mut self, r: &Route) {
        self.learn(r.origin);
        if r.service == Service::Other(SERVICE_ANYCAST)
            && let Ok(a) = Anycast::parse(&r.payload)
        {
            self.learn(a.requester);
        }
    }

    fn deliver(&mut self, from: PeerAddr, sender: NodeId, repr: &Repr) {
        let bytes = repr.to_bytes(sender);
        self.node.handle_datagram(self.now, from, bytes);
    }

    fn apply(&mut self, input: Input) {
        match input {
            Input::Datagram { from, bytes } => {
                let bytes = Bytes::from(bytes);
                self.learn_from_bytes(&bytes);
                self.node.handle_datagram(self.now, peer(from), bytes);
            }
            Input::Stream { from, bytes } => {
                let bytes = Bytes::from(bytes);
                self.learn_from_bytes(&bytes);
                self.node.handle_stream_message(self.now, peer(from), bytes);
            }
            Input::StructuredPastry {
                from,
                sender_id,
                forge_id,
                kind,
            } => {
                let from = peer(from);
                let sender = if forge_id {
                    NodeId(sender_id)
                } else {
                    self.id_of(from)
                };
                let repr = self.build(kind);
                self.deliver(from, sender, &repr);
            }
            Input::Respond { pick, handles } => self.respond(pick, &handles),
            Input::Timeout { advance_ms } => {
                self.now += Duration::from_millis(u64::from(advance_ms));
                self.settle_timers();
            }
            Input::FireNextTimer => {
                if let Some(t) = self.node.poll_timeout() {
                    let cap = self.now + Duration::from_secs(3_600);
                    self.now = self.now.max(t.min(cap));
                }
                self.settle_timers();
            }
            Input::Join { bootstrap } => {
                // Bootstrapping through ourselves is the caller's mistake,
                // not the engine's.
                let bs: Vec<PeerAddr> = bootstrap
                    .iter()
                    .take(16)
                    .map(|b| handle_addr(*b))
                    .filter(|a| *a != me_addr())
                    .collect();
                self.allowed.extend(bs.iter().copied());
                self.node.join_overlay(self.now, &bs);
            }
            Input::Route { key, payload } => {
                let _ = self.node.route(self.now, NodeId(key), Bytes::from(payload));
            }
            Input::PeerUnreachable { from } => {
                self.node.handle_peer_unreachable(self.now, peer(from));
            }
            Input::Subscribe { topic: t } => self.node.subscribe(self.now, topic(t)),
            Input::Unsubscribe { topic: t } => self.node.unsubscribe(self.now, topic(t)),
            Input::Publish { topic: t, payload } => {
                let _ = self.node.publish(self.now, topic(t), Bytes::from(payload));
            }
        }
    }

    fn build(&mut self, kind: Kind) -> Repr {
        match kind {
            Kind::Route {
                msg_id,
                key,
                hops,
                service,
                origin,
                payload,
            } => {
                let origin = self.handle(origin);
                let route = Route {
                    msg_id,
                    key: self.resolve(key, origin.addr),
                    hops,
                    service: Service::from_u8(service),
                    origin,
                    payload: Bytes::from(payload),
                };
                self.learn_from_route(&route);
                Repr::Route(route)
            }
            Kind::RouteAck { msg_id } => Repr::RouteAck { msg_id },
            Kind::State {
                flags,
                rtt_hint,
                table,
                table_rtts,
                leaves,
                neighbors,
            } => Repr::State(State {
                flags,
                rtt_hint,
                table: self.handles(&table),
                leaf_rtts: table_rtts.clone(),
                neighbor_rtts: table_rtts.clone(),
                table_rtts,
                leaves: self.handles(&leaves),
                neighbors: self.handles(&neighbors),
            }),
            Kind::Announce { rtt_hint } => Repr::Announce { rtt_hint },
            Kind::Ping {
                token,
                flags,
                rtt_hint,
            } => Repr::Ping {
                token,
                flags,
                rtt_hint,
            },
            Kind::Pong {
                token,
                flags,
                report_below,
            } => Repr::Pong {
                token,
                flags,
                report_below,
            },
            Kind::RttReport { rtt } => Repr::RttReport { rtt },
            Kind::LeafSetRequest => Repr::LeafSetRequest,
            Kind::RowRequest { row } => Repr::RowRequest { row },
        }
    }

    fn respond(&mut self, pick: u8, handles: &[FuzzHandle]) {
        if self.recent.is_empty() {
            return;
        }
        let (to, bytes) = self.recent[usize::from(pick) % self.recent.len()].clone();
        let Ok(hdr) = Header::new_checked(&bytes[..]) else {
            return;
        };
        let Ok(ty) = hdr.msg_type() else { return };
        let Ok(sent) = Repr::parse(ty, &bytes) else {
            return;
        };
        let me = self.id_of(to);
        let handles = self.handles(handles);
        let state = |flags| {
            Repr::State(State {
                flags,
                rtt_hint: alm_core::wire::pastry::RTT_UNKNOWN,
                table: handles.clone(),
                table_rtts: handles.iter().map(|h| h.id.0 as u32).collect(),
                leaf_rtts: handles.iter().map(|h| h.id.0 as u32 ^ 1).collect(),
                neighbor_rtts: handles.iter().map(|h| h.id.0 as u32 ^ 2).collect(),
                leaves: handles.clone(),
                neighbors: handles.clone(),
            })
        };
        match sent {
            Repr::Ping { token, .. } => {
                let pong = Repr::Pong {
                    token,
                    flags: alm_core::wire::pastry::PONG_WANT_RTT,
                    report_below: alm_core::wire::pastry::RTT_UNKNOWN,
                };
                self.deliver(to, me, &pong)
            }
            Repr::Route(r) => {
                if r.service == Service::Join && r.hops == 0 {
                    let all = state_flags::JOIN_ROWS
                        | state_flags::JOIN_CONTACT
                        | state_flags::JOIN_FINAL;
                    self.deliver(to, me, &state(all));
                } else {
                    let ack = Repr::RouteAck { msg_id: r.msg_id };
                    self.deliver(to, me, &ack);
                }
            }
            Repr::LeafSetRequest | Repr::Announce { .. } => {
                self.deliver(to, me, &state(state_flags::LEAFSET))
            }
            Repr::RowRequest { .. } => self.deliver(to, me, &state(state_flags::ROW)),
            Repr::RouteAck { .. } | Repr::State(_) | Repr::Pong { .. } | Repr::RttReport { .. } => {
            }
        }
    }

    /// Fire what is due at `now`, as a runtime would: call again while the
    /// deadline is not in the future.
    fn settle_timers(&mut self) {
        self.node.handle_timeout(self.now);
        self.drain();
        let mut rounds = 0;
        while let Some(t) = self.node.poll_timeout() {
            if t > self.now {
                break;
            }
            rounds += 1;
            assert!(
                rounds < MAX_TIMEOUT_ROUNDS,
                "timers never settle at {:?}: next {:?}",
                self.now,
                self.node.next_timer()
            );
            self.node.handle_timeout(self.now);
            self.drain();
        }
    }

    /// Drain every output and check each one.
    fn drain(&mut self) {
        let mut n = 0;
        while let Some(t) = self.node.poll_transmit() {
            n += 1;
            assert!(n <= MAX_OUTPUTS_PER_INPUT, "transmits never run dry");
            assert!(!t.is_empty(), "empty transmit to {:?}", t.to);
            assert!(!t.body.is_empty(), "transmit with empty body to {:?}", t.to);
            assert_ne!(t.to, me_addr(), "node sends to itself: {t:?}");
            assert!(
                self.allowed.contains(&t.to),
                "transmit to {:?}, an address no input named",
                t.to
            );
            let to = t.to;
            let bytes = t.into_bytes();
            let hdr = Header::new_checked(&bytes[..]).expect("node emitted a bad header");
            assert_eq!(hdr.sender(), NodeId(ME_ID), "header names another sender");
            if let Ok(ty) = hdr.msg_type()
                && is_pastry(ty)
            {
                Repr::parse(ty, &bytes).expect("node emitted an undecodable Pastry message");
            }
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back((to, bytes));
        }
        let mut n = 0;
        while self.node.poll_event().is_some() {
            n += 1;
            assert!(n <= MAX_OUTPUTS_PER_INPUT, "events never run dry");
        }
        assert!(self.node.poll_transmit().is_none(), "drain invariant");
        if let Some(t) = self.node.poll_timeout() {
            let floor = Time::from_micros(self.now.as_micros().saturating_sub(3_600_000_000));
            assert!(t >= floor, "deadline {t:?} far before now {:?}", self.now);
        }
    }
}

fn is_pastry(ty: MsgType) -> bool {
    (ty as u8) <= 0x1f
}

fuzz_target!(|run: Run| {
    let mut h = Harness::new(run.seed);
    for input in run.inputs.into_iter().take(MAX_INPUTS) {
        h.apply(input);
        h.drain();
    }
});
