//! The Stream channel over TCP: length-prefixed frames between overlay peers.
//!
//! Framing: every frame is a `u32` big-endian length followed by that many
//! bytes; frames longer than [`MAX_FRAME`] close the connection. The first
//! frame a connecting node sends is a *hello* naming its overlay (listen)
//! address, because the accepting side only sees an ephemeral port:
//!
//! | offset | size | meaning |
//! |---|---|---|
//! | 0 | 4 | magic `ALMS` |
//! | 4 | 1 | address family: 4 or 6 |
//! | 5 | 4 or 16 | IP address |
//! | 9 or 21 | 2 | port, big-endian |
//!
//! Connections are one-way for sending: to send to peer P we use (or open, on
//! demand) our *outbound* connection to P's listen address; what P sends us
//! arrives on P's outbound connection, which we accepted. Each outbound
//! connection has a bounded send queue ([`MAX_QUEUED_BYTES`]); beyond it
//! messages are dropped and counted. A failed connect, or a reset of an
//! outbound connection, is reported so the runtime can call
//! `handle_peer_unreachable`.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, Bytes, BytesMut};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

/// Largest frame accepted or sent.
pub const MAX_FRAME: usize = 1 << 20;

/// Unsent bytes per outbound connection above which new messages are dropped.
pub const MAX_QUEUED_BYTES: usize = 8 << 20;

/// Most simultaneous connections (inbound + outbound).
pub const MAX_CONNS: usize = 512;

/// Bytes read from one connection per loop pass (fairness).
const READ_BUDGET: usize = 256 * 1024;

const HELLO_MAGIC: &[u8; 4] = b"ALMS";

/// Encodes the hello frame's payload for `addr`.
#[must_use]
pub fn hello_payload(addr: SocketAddr) -> Vec<u8> {
    let mut v = Vec::with_capacity(23);
    v.extend_from_slice(HELLO_MAGIC);
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.push(4);
            v.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            v.push(6);
            v.extend_from_slice(&ip.octets());
        }
    }
    v.extend_from_slice(&addr.port().to_be_bytes());
    v
}

/// Decodes a hello frame's payload.
#[must_use]
pub fn parse_hello(b: &[u8]) -> Option<SocketAddr> {
    let rest = b.strip_prefix(HELLO_MAGIC)?;
    let (&fam, rest) = rest.split_first()?;
    let (ip, rest): (IpAddr, &[u8]) = match fam {
        4 if rest.len() == 6 => {
            let o: [u8; 4] = rest[..4].try_into().ok()?;
            (IpAddr::V4(Ipv4Addr::from(o)), &rest[4..])
        }
        6 if rest.len() == 18 => {
            let o: [u8; 16] = rest[..16].try_into().ok()?;
            (IpAddr::V6(Ipv6Addr::from(o)), &rest[16..])
        }
        _ => return None,
    };
    let port = u16::from_be_bytes([rest[0], rest[1]]);
    Some(SocketAddr::new(ip, port))
}

/// Counters of the Stream channel.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StreamStats {
    pub accepted: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub resets: u64,
    pub frames_in: u64,
    pub bytes_in: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
    /// Messages dropped because the peer's send queue was full.
    pub queue_full_drops: u64,
    /// Messages larger than `MAX_FRAME` (not sent).
    pub oversize_drops: u64,
    /// Connections closed for a protocol violation (bad hello, oversize frame).
    pub protocol_errors: u64,
    /// Connections refused because `MAX_CONNS` were open.
    pub refused_full: u64,
}

struct Conn {
    stream: TcpStream,
    /// The peer's overlay address: known for outbound connections, learnt
    /// from the hello for inbound ones.
    peer: Option<SocketAddr>,
    outbound: bool,
    connected: bool,
    rx: BytesMut,
    tx: VecDeque<Bytes>,
    tx_bytes: usize,
}

/// What happened on the Stream channel, for the runtime to act on.
#[derive(Debug)]
pub enum StreamEvent {
    /// A complete message from `from` (its overlay address).
    Message { from: SocketAddr, bytes: Bytes },
    /// An outbound connection failed or was reset.
    Unreachable(SocketAddr),
}

/// Listener and connections of the Stream channel.
pub struct Streams {
    listener: TcpListener,
    me: SocketAddr,
    base: usize,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    outbound: HashMap<SocketAddr, usize>,
    pub stats: StreamStats,
}

impl Streams {
    /// Wraps a bound listener; connections use tokens `base..base+MAX_CONNS`.
    pub fn new(
        mut listener: TcpListener,
        me: SocketAddr,
        registry: &Registry,
        listener_token: Token,
        base: usize,
    ) -> io::Result<Streams> {
        registry.register(&mut listener, listener_token, Interest::READABLE)?;
        Ok(Streams {
            listener,
            me,
            base,
            conns: Vec::new(),
            free: Vec::new(),
            outbound: HashMap::new(),
            stats: StreamStats::default(),
        })
    }

    /// True if `token` is one of the connections'.
    #[must_use]
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.base && token.0 < self.base + MAX_CONNS
    }

    /// Open connections.
    #[must_use]
    pub fn len(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }

    /// True if no connection is open.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Unsent bytes over all outbound connections.
    #[must_use]
    pub fn queued_bytes(&self) -> usize {
        self.conns.iter().flatten().map(|c| c.tx_bytes).sum()
    }

    fn insert(&mut self, registry: &Registry, mut conn: Conn) -> io::Result<usize> {
        let idx = match self.free.pop() {
            Some(i) => i,
            None if self.conns.len() < MAX_CONNS => {
                self.conns.push(None);
                self.conns.len() - 1
            }
            None => return Err(io::Error::other("too many connections")),
        };
        registry.register(
            &mut conn.stream,
            Token(self.base + idx),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.conns[idx] = Some(conn);
        Ok(idx)
    }

    fn remove(&mut self, registry: &Registry, idx: usize) -> Option<Conn> {
        let mut c = self.conns.get_mut(idx)?.take()?;
        let _ = registry.deregister(&mut c.stream);
        if c.outbound
            && let Some(p) = c.peer
            && self.outbound.get(&p) == Some(&idx)
        {
            self.outbound.remove(&p);
        }
        self.free.push(idx);
        Some(c)
    }

    /// Accepts pending connections.
    pub fn accept(&mut self, registry: &Registry) {
        loop {
            match self.listener.accept() {
                Ok((stream, from)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = Conn {
                        stream,
                        peer: None,
                        outbound: false,
                        connected: true,
                        rx: BytesMut::new(),
                        tx: VecDeque::new(),
                        tx_bytes: 0,
                    };
                    match self.insert(registry, conn) {
                        Ok(_) => {
                            self.stats.accepted += 1;
                            tracing::debug!(%from, "stream connection accepted");
                        }
                        Err(e) => {
                            self.stats.refused_full += 1;
                            tracing::warn!(%from, error = %e, "stream connection refused");
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "stream accept failed");
                    return;
                }
            }
        }
    }

    /// Queues one message (`header ++ body`) for `to`, connecting on demand.
    /// A connect that fails at once is pushed to `events` as unreachable.
    pub fn send(
        &mut self,
        registry: &Registry,
        to: SocketAddr,
        header: &[u8],
        body: Bytes,
        events: &mut Vec<StreamEvent>,
    ) {
        let len = header.len() + body.len();
        if len > MAX_FRAME {
            self.stats.oversize_drops += 1;
            tracing::warn!(%to, len, "stream message larger than 1 MiB dropped");
            return;
        }
        let idx = match self.outbound.get(&to) {
            Some(&i) => i,
            None => match self.connect(registry, to) {
                Ok(i) => i,
                Err(e) => {
                    self.stats.connect_failures += 1;
                    tracing::debug!(%to, error = %e, "stream connect failed");
                    events.push(StreamEvent::Unreachable(to));
                    return;
                }
            },
        };
        let Some(conn) = self.conns[idx].as_mut() else {
            return;
        };
        if conn.tx_bytes + len + 4 > MAX_QUEUED_BYTES {
            self.stats.queue_full_drops += 1;
            return;
        }
        let mut prefix = Vec::with_capacity(4 + header.len());
        prefix.extend_from_slice(&(len as u32).to_be_bytes());
        prefix.extend_from_slice(header);
        conn.tx_bytes += prefix.len() + body.len();
        conn.tx.push_back(Bytes::from(prefix));
        if !body.is_empty() {
            conn.tx.push_back(body);
        }
        self.stats.frames_out += 1;
        self.stats.bytes_out += len as u64;
        if conn.connected && self.flush(idx).is_err() {
            self.fail(registry, idx, events);
        }
    }

    fn connect(&mut self, registry: &Registry, to: SocketAddr) -> io::Result<usize> {
        let stream = TcpStream::connect(to)?;
        let _ = stream.set_nodelay(true);
        let hello = hello_payload(self.me);
        let mut first = Vec::with_capacity(4 + hello.len());
        first.extend_from_slice(&(hello.len() as u32).to_be_bytes());
        first.extend_from_slice(&hello);
        let mut tx = VecDeque::new();
        let tx_bytes = first.len();
        tx.push_back(Bytes::from(first));
        let conn = Conn {
            stream,
            peer: Some(to),
            outbound: true,
            connected: false,
            rx: BytesMut::new(),
            tx,
            tx_bytes,
        };
        let idx = self.insert(registry, conn)?;
        self.outbound.insert(to, idx);
        self.stats.connects += 1;
        Ok(idx)
    }

    /// Writes as much of the queue as the socket takes.
    fn flush(&mut self, idx: usize) -> io::Result<()> {
        let Some(c) = self.conns[idx].as_mut() else {
            return Ok(());
        };
        while !c.tx.is_empty() {
            let slices: Vec<IoSlice<'_>> = c.tx.iter().take(16).map(|b| IoSlice::new(b)).collect();
            match c.stream.write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut n) => {
                    c.tx_bytes -= n;
                    while n > 0 {
                        let Some(front) = c.tx.front_mut() else {
                            break;
                        };
                        if n >= front.len() {
                            n -= front.len();
                            c.tx.pop_front();
                        } else {
                            front.advance(n);
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn fail(&mut self, registry: &Registry, idx: usize, events: &mut Vec<StreamEvent>) {
        if let Some(c) = self.remove(registry, idx)
            && c.outbound
            && let Some(p) = c.peer
        {
            if c.connected {
                self.stats.resets += 1;
            } else {
                self.stats.connect_failures += 1;
            }
            tracing::debug!(peer = %p, "stream connection to peer failed");
            events.push(StreamEvent::Unreachable(p));
        }
    }

    /// Handles readiness of connection `token`; pushes complete messages and
    /// failures to `events`. Returns true if the connection has more to read
    /// (its per-pass budget ran out): call again on the next pass.
    pub fn handle(
        &mut self,
        registry: &Registry,
        token: Token,
        events: &mut Vec<StreamEvent>,
    ) -> bool {
        let idx = token.0 - self.base;
        let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return false;
        };
        if !c.connected {
            // Outbound connect finished (or failed).
            match c.stream.take_error() {
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => {
                    self.fail(registry, idx, events);
                    return false;
                }
            }
            match c.stream.peer_addr() {
                Ok(_) => c.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return false,
                Err(_) => {
                    self.fail(registry, idx, events);
                    return false;
                }
            }
        }
        if self.flush(idx).is_err() {
            self.fail(registry, idx, events);
            return false;
        }
        match self.read(idx, events) {
            Ok((true, more)) => return more,
            Ok((false, _)) => {
                // Orderly close by the peer.
                self.remove(registry, idx);
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::InvalidData {
                    self.stats.protocol_errors += 1;
                    tracing::debug!(error = %e, "stream connection closed");
                    self.remove(registry, idx);
                } else {
                    self.fail(registry, idx, events);
                }
            }
        }
        false
    }

    /// Reads and frames. Ok((open, more)): `open` false on EOF, `more` true
    /// when the read budget ran out before the socket was drained.
    fn read(&mut self, idx: usize, events: &mut Vec<StreamEvent>) -> io::Result<(bool, bool)> {
        let Some(c) = self.conns[idx].as_mut() else {
            return Ok((true, false));
        };
        let mut budget = READ_BUDGET;
        let mut open = true;
        while budget > 0 {
            let start = c.rx.len();
            let want = (64 * 1024).min(budget);
            // Zero-filled rather than uninitialised: std's `Read` wants an
            // initialised slice, and this is not the datagram hot path.
            c.rx.resize(start + want, 0);
            let r = c.stream.read(&mut c.rx[start..]);
            let got = match &r {
                Ok(n) => *n,
                Err(_) => 0,
            };
            c.rx.truncate(start + got);
            match r {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => budget -= n.min(budget),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Frame what we have.
        while c.rx.len() >= 4 {
            let len = u32::from_be_bytes([c.rx[0], c.rx[1], c.rx[2], c.rx[3]]) as usize;
            if len > MAX_FRAME {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "frame over 1 MiB",
                ));
            }
            if c.rx.len() < 4 + len {
                break;
            }
            c.rx.advance(4);
            let frame = c.rx.split_to(len).freeze();
            match c.peer {
                None if !c.outbound => match parse_hello(&frame) {
                    Some(p) => c.peer = Some(p),
                    None => {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad hello"));
                    }
                },
                Some(from) => {
                    self.stats.frames_in += 1;
                    self.stats.bytes_in += len as u64;
                    events.push(StreamEvent::Message { from, bytes: frame });
                }
                None => {}
            }
        }
        // With the budget spent more may be waiting, and edge-triggered
        // readiness will not say so again: the loop must come back.
        Ok((open, open && budget == 0))
    }

    /// Tries to send everything queued (shutdown flush).
    pub fn flush_all(&mut self, registry: &Registry, events: &mut Vec<StreamEvent>) {
        for idx in 0..self.conns.len() {
            if self.conns[idx].as_ref().is_some_and(|c| c.connected) && self.flush(idx).is_err() {
                self.fail(registry, idx, events);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_rejects_garbage() {
        for s in ["10.77.0.1:4000", "[2001:db8::1]:1"] {
            let a: SocketAddr = s.parse().expect("addr");
            assert_eq!(parse_hello(&hello_payload(a)), Some(a));
        }
        assert_eq!(parse_hello(b""), None);
        assert_eq!(parse_hello(b"ALMS"), None);
        assert_eq!(parse_hello(b"ALMS\x04\x01\x02\x03"), None);
        assert_eq!(parse_hello(b"XXXX\x04\x01\x02\x03\x04\x00\x01"), None);
        assert_eq!(parse_hello(b"ALMS\x05\x01\x02\x03\x04\x00\x01"), None);
    }

    fn streams(poll: &mio::Poll, listener_token: usize, base: usize) -> (Streams, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let me = l.local_addr().expect("addr");
        let s = Streams::new(l, me, poll.registry(), Token(listener_token), base).expect("new");
        (s, me)
    }

    /// Polls until `done(events)` or 5 s.
    fn pump(
        poll: &mut mio::Poll,
        a: &mut Streams,
        b: &mut Streams,
        out: &mut Vec<StreamEvent>,
        done: impl Fn(&[StreamEvent]) -> bool,
    ) {
        let mut events = mio::Events::with_capacity(64);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !done(out) && std::time::Instant::now() < end {
            poll.poll(&mut events, Some(std::time::Duration::from_millis(20)))
                .expect("poll");
            for ev in &events {
                match ev.token() {
                    Token(1) => a.accept(poll.registry()),
                    Token(2) => b.accept(poll.registry()),
                    t if a.owns(t) => {
                        a.handle(poll.registry(), t, out);
                    }
                    t if b.owns(t) => {
                        b.handle(poll.registry(), t, out);
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn messages_cross_with_the_senders_overlay_address() {
        let mut poll = mio::Poll::new().expect("poll");
        let (mut a, a_addr) = streams(&poll, 1, 100);
        let (mut b, b_addr) = streams(&poll, 2, 2000);
        let mut out = Vec::new();
        let big = Bytes::from(vec![7u8; 300_000]);
        a.send(
            poll.registry(),
            b_addr,
            b"hdr",
            Bytes::from_static(b"-one"),
            &mut out,
        );
        a.send(poll.registry(), b_addr, b"", big.clone(), &mut out);
        assert!(out.is_empty(), "{out:?}");
        pump(&mut poll, &mut a, &mut b, &mut out, |o| o.len() >= 2);
        assert_eq!(out.len(), 2, "{out:?}");
        match &out[0] {
            StreamEvent::Message { from, bytes } => {
                assert_eq!(*from, a_addr);
                assert_eq!(&bytes[..], b"hdr-one");
            }
            other => panic!("{other:?}"),
        }
        match &out[1] {
            StreamEvent::Message { bytes, .. } => assert_eq!(bytes, &big),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.stats.frames_out, 2);
        assert_eq!(b.stats.frames_in, 2);
        assert_eq!(b.stats.accepted, 1);
    }

    #[test]
    fn refused_connect_reports_unreachable_and_oversize_is_dropped() {
        let mut poll = mio::Poll::new().expect("poll");
        let (mut a, _) = streams(&poll, 1, 100);
        let (mut b, _) = streams(&poll, 2, 2000);
        // A port nobody listens on: bind, read the port, close.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port");
        let mut out = Vec::new();
        a.send(
            poll.registry(),
            dead,
            b"",
            Bytes::from_static(b"x"),
            &mut out,
        );
        pump(&mut poll, &mut a, &mut b, &mut out, |o| !o.is_empty());
        assert!(
            matches!(out.as_slice(), [StreamEvent::Unreachable(p)] if *p == dead),
            "{out:?}"
        );
        a.send(
            poll.registry(),
            dead,
            b"",
            Bytes::from(vec![0u8; MAX_FRAME + 1]),
            &mut out,
        );
        assert_eq!(a.stats.oversize_drops, 1);
    }
}
