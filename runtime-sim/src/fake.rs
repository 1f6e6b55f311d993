//! A trivial engine for testing the simulator's machinery without the real
//! Pastry engine: an *oracle* overlay.
//!
//! Joined nodes register in a [`Directory`] shared by all fakes of one run
//! (the cheat that makes it trivial). A join is one request/reply exchange
//! with the bootstrap node; `route` looks the numerically closest registered
//! node up in the directory and sends it the message directly (1 hop, 0 when
//! the source is the closest). A heartbeat timer ticks every 500 ms so timer
//! handling is exercised. Crashed nodes stay in the directory, so lookups
//! sent to them are lost: exactly what a repairless overlay would do.

use crate::engine::{Engine, EngineStats, SimChannel, SimEvent, SimTransmit};
use alm_core::{Duration, Key, NodeHandle, NodeId, PeerAddr, Time};
use bytes::{BufMut, Bytes, BytesMut};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

/// Registered (id, address) pairs, ordered by id.
#[derive(Default)]
pub struct Directory {
    members: BTreeMap<u128, PeerAddr>,
}

impl Directory {
    pub fn shared() -> Rc<RefCell<Directory>> {
        Rc::new(RefCell::new(Directory::default()))
    }
    fn insert(&mut self, id: u128, addr: PeerAddr) {
        self.members.insert(id, addr);
    }
    /// The member numerically closest to `key` (ties: smaller id).
    fn closest(&self, key: Key) -> Option<(u128, PeerAddr)> {
        let m = &self.members;
        // Successor and predecessor on the ring (wrapping around).
        let a = m.range(key.0..).next().or_else(|| m.iter().next())?;
        let b = m
            .range(..key.0)
            .next_back()
            .or_else(|| m.iter().next_back())?;
        let (a, b) = ((*a.0, *a.1), (*b.0, *b.1));
        Some(if key.closer(NodeId(a.0), NodeId(b.0)) {
            a
        } else {
            b
        })
    }
}

const HEARTBEAT: Duration = Duration::from_millis(500);

/// The oracle engine.
pub struct FakeEngine {
    id: NodeId,
    me: PeerAddr,
    dir: Rc<RefCell<Directory>>,
    joined: bool,
    next_tick: Time,
    ticks: u64,
    out: VecDeque<SimTransmit>,
    events: VecDeque<SimEvent>,
    stats: EngineStats,
}

impl FakeEngine {
    pub fn new(id: NodeId, me: PeerAddr, dir: Rc<RefCell<Directory>>) -> Self {
        FakeEngine {
            id,
            me,
            dir,
            joined: false,
            next_tick: Time::NEVER,
            ticks: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: EngineStats::default(),
        }
    }

    /// Heartbeats handled so far.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    fn transmit(&mut self, to: PeerAddr, bytes: Bytes) {
        self.stats.msgs_sent += 1;
        self.stats.bytes_sent += bytes.len() as u64;
        self.out.push_back(SimTransmit {
            to,
            channel: SimChannel::Datagram,
            kind: 0,
            bytes,
        });
    }

    fn become_joined(&mut self, now: Time) {
        self.joined = true;
        self.dir.borrow_mut().insert(self.id.0, self.me);
        self.next_tick = now + HEARTBEAT;
        self.events.push_back(SimEvent::Joined);
    }
}

fn put_addr(b: &mut BytesMut, a: PeerAddr) {
    match a.0 {
        SocketAddr::V4(v4) => {
            b.put_slice(&v4.ip().octets());
            b.put_u16(v4.port());
        }
        SocketAddr::V6(_) => {
            b.put_slice(&[0; 4]);
            b.put_u16(0);
        }
    }
}

fn get_addr(b: &[u8]) -> PeerAddr {
    let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    PeerAddr(SocketAddr::new(
        IpAddr::V4(ip),
        u16::from_be_bytes([b[4], b[5]]),
    ))
}

impl Engine for FakeEngine {
    fn handle_datagram(&mut self, now: Time, from: PeerAddr, bytes: Bytes) {
        self.stats.msgs_received += 1;
        match bytes.first() {
            Some(b'J') => self.transmit(from, Bytes::from_static(b"W")),
            Some(b'W') if !self.joined => self.become_joined(now),
            // 'R' key(16) origin id(16) origin addr(6) payload...
            Some(b'R') if bytes.len() >= 39 => {
                let key = NodeId(u128::from_be_bytes(
                    bytes[1..17].try_into().unwrap_or_default(),
                ));
                let oid = NodeId(u128::from_be_bytes(
                    bytes[17..33].try_into().unwrap_or_default(),
                ));
                let origin = NodeHandle::new(oid, get_addr(&bytes[33..39]));
                self.events.push_back(SimEvent::Delivered {
                    key,
                    origin,
                    hops: 1,
                    payload: bytes.slice(39..),
                });
            }
            _ => self.stats.decode_errors += 1,
        }
    }
    fn handle_stream_message(&mut self, now: Time, from: PeerAddr, bytes: Bytes) {
        self.handle_datagram(now, from, bytes);
    }
    fn handle_peer_unreachable(&mut self, _now: Time, _peer: PeerAddr) {}
    fn handle_timeout(&mut self, now: Time) {
        while self.next_tick <= now {
            self.ticks += 1;
            self.next_tick += HEARTBEAT;
        }
    }
    fn join_overlay(&mut self, now: Time, bootstrap: &[PeerAddr]) {
        match bootstrap.first() {
            None => self.become_joined(now),
            Some(&b) => self.transmit(b, Bytes::from_static(b"J")),
        }
    }
    fn route(&mut self, _now: Time, key: Key, payload: Bytes) {
        let target = self.dir.borrow().closest(key);
        match target {
            Some((id, _)) if id == self.id.0 => self.events.push_back(SimEvent::Delivered {
                key,
                origin: NodeHandle::new(self.id, self.me),
                hops: 0,
                payload,
            }),
            Some((_, addr)) => {
                let mut b = BytesMut::with_capacity(39 + payload.len());
                b.put_u8(b'R');
                b.put_u128(key.0);
                b.put_u128(self.id.0);
                put_addr(&mut b, self.me);
                b.put_slice(&payload);
                self.transmit(addr, b.freeze());
            }
            None => {}
        }
    }
    fn poll_transmit(&mut self) -> Option<SimTransmit> {
        self.out.pop_front()
    }
    fn poll_event(&mut self) -> Option<SimEvent> {
        self.events.pop_front()
    }
    fn poll_timeout(&self) -> Option<Time> {
        self.joined.then_some(self.next_tick)
    }
    fn is_joined(&self) -> bool {
        self.joined
    }
    fn routing_table_len(&self) -> usize {
        self.dir.borrow().members.len().saturating_sub(1)
    }
    fn leaf_set_len(&self) -> usize {
        0
    }
    fn leaf_set_ids(&self) -> Vec<u128> {
        Vec::new()
    }
    fn stats(&self) -> EngineStats {
        self.stats
    }
}
