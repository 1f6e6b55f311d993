//! `almd run`: one mio `Poll`, one thread, everything non-blocking.
//!
//! Sources: the UDP socket (Datagram channel), the TCP listener and per-peer
//! connections (Stream channel, see [`crate::stream`]), the TAP fd, the
//! control socket, and a signalfd for SIGINT/SIGTERM. Timers: the poll
//! timeout is the engine's `poll_timeout() - now`.
//!
//! **Drain rule.** After every input handed to the engine (one datagram, one
//! TAP frame, one stream message, a timeout, a peer failure) the loop drains
//! `poll_transmit`, `poll_tap_frame` and `poll_event` until each is `None`.
//!
//! **Fairness.** mio is edge-triggered, so a readable source must be read
//! until `WouldBlock` — but at most [`UDP_BUDGET`] datagrams and
//! [`TAP_BUDGET`] frames per pass; a source cut off by its budget stays
//! marked pending and the next `poll` does not sleep, so timers, the
//! control socket, signals and the other sources get their turn.
//!
//! **Hot path.** Datagrams and TAP frames are received into one large
//! `BytesMut` block and split off as frozen `Bytes` (a new block only when
//! the current one runs low). Datagrams come in with `recvmmsg`, up to
//! [`UDP_BATCH`] per call, each into a [`UDP_SLOT`]-byte slot of the block
//! (a larger one spills into an overflow area and is copied out). Datagram
//! transmits are queued by the drain and go out with `sendmmsg` (two iovecs
//! each: inline header, shared body) when [`TX_BATCH`] are queued and before
//! the loop polls again; TAP frames go out at once with `writev` of
//! (Ethernet header, packet): no payload copy. A full UDP send buffer or a
//! TAP that would block drops the packet and counts it (the data path is
//! best effort).
//!
//! **Automatic TAP address** (`--tap-addr auto`, the default with `--tap`).
//! The node joins the overlay first and claims a unique address of the
//! pool (`allocate_address`, about 5 s: a claim and two confirmations); the
//! TAP is created, and the IGMP querier started from its address, only when
//! `AddressAllocated` arrives. `AddressPoolExhausted` stops almd (exit 2).
//! `AddressLost` (our lease lapsed and another node took the address) keeps
//! the TAP until the engine's new allocation succeeds, then recreates it
//! with the new address (local listeners join again on the new interface).
//!
//! **Group directory.** The middleware announces every group a local
//! listener joined (and withdraws it when the last one left). A `groups`
//! control request is answered asynchronously: the loop calls `list_groups`
//! and answers every waiting request when `GroupDirectory` arrives, or with
//! an error after [`GROUPS_TIMEOUT`].
//!
//! **Shutdown.** On the first SIGINT/SIGTERM the engine leaves every tree
//! (`shutdown`, which also withdraws its groups from the directory) and
//! releases its TAP address, the TAP is no longer read, and the loop keeps
//! running for [`SHUTDOWN_FLUSH`] so the leaves, the release and their
//! retries go out; then it returns.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration as StdDuration, Instant};

use bytes::BytesMut;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use alm_core::{
    Channel, Config, Event, Middleware, MiddlewareConfig, Node, NodeId, PeerAddr, Time,
};
use alm_tap::{Tap, TapConfig};

use crate::config::{RunConfig, TapAddr};
use crate::control::{Answer, ControlServer, DEFAULT_MAX_CLIENTS, Request, Ticket};
use crate::engine::Engine;
use crate::status::{self, GroupNames, RuntimeStats, StatusContext, TapInfo};
use crate::stream::{StreamEvent, Streams};
use crate::sys;

/// Datagrams read per loop pass at most.
pub const UDP_BUDGET: usize = 256;
/// TAP frames read per loop pass at most.
pub const TAP_BUDGET: usize = 256;
/// Requested SO_RCVBUF / SO_SNDBUF of the UDP socket.
pub const UDP_SOCKET_BUFFER: i32 = 4 << 20;
/// How long the loop keeps running after a shutdown signal.
pub const SHUTDOWN_FLUSH: StdDuration = StdDuration::from_millis(200);
/// How long a `groups` request waits for the overlay's group directory.
pub const GROUPS_TIMEOUT: StdDuration = StdDuration::from_secs(3);
/// Size of a receive block.
const RX_BLOCK: usize = 1 << 20;
/// Spare room a receive needs: the largest UDP datagram.
const RX_NEED: usize = 64 * 1024;
/// Datagrams one `recvmmsg` reads at most.
const UDP_BATCH: usize = 32;
/// Room for one datagram of a `recvmmsg` batch in the receive block (a
/// full-MTU data packet); what does not fit goes to the overflow area and is
/// copied out (large control messages only).
const UDP_SLOT: usize = 2048;
/// Transmits collected before one `sendmmsg`.
const TX_BATCH: usize = sys::MMSG_BATCH;

/// Underlay overhead around a captured IPv4 packet: IPv4 + UDP headers and
/// alm's data header.
pub const DATA_OVERHEAD: u16 = 20 + 8 + alm_core::wire::scribe::DATA_HEADER_LEN as u16;

const UDP: Token = Token(0);
const TCP_LISTENER: Token = Token(1);
const TAP: Token = Token(2);
const SIGNAL: Token = Token(3);
const CONTROL: Token = Token(16);
const STREAM_BASE: usize = 1024;

/// Why `almd run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Caused by the user's configuration or environment: one sentence
    /// saying what to do. Exit code 2.
    #[error("{0}")]
    User(String),
    /// Anything else. Exit code 1.
    #[error("{0}")]
    Internal(String),
}

/// The control socket's answerer, borrowing the loop's fields one by one
/// (a method would borrow the whole loop while `self.control` is in use).
macro_rules! answerer {
    ($s:ident, $now:expr) => {
        Answerer {
            engine: &$s.engine,
            ctx: StatusContext {
                listen: $s.listen,
                advertise: $s.advertise,
                tap: $s.tap_info.as_ref(),
                auto_address: $s.auto_pool.is_some(),
                now: $now,
                uptime_s: $s.start.elapsed().as_secs_f64(),
                runtime: &$s.stats,
                stream: &$s.streams.stats,
                stream_connections: $s.streams.len(),
                names: &$s.names,
            },
            deferred: Vec::new(),
        }
    };
}

impl RunError {
    /// The process exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::User(_) => 2,
            RunError::Internal(_) => 1,
        }
    }
}

fn internal(what: &str) -> impl FnOnce(io::Error) -> RunError + '_ {
    move |e| RunError::Internal(format!("{what}: {e}"))
}

/// Turns a bind error of the underlay sockets into a user-facing sentence.
#[must_use]
pub fn listen_error(addr: SocketAddr, proto: &str, e: &io::Error) -> RunError {
    let msg = match e.kind() {
        io::ErrorKind::AddrInUse => format!(
            "--listen {addr}: address already in use: another almd is running, or choose another port"
        ),
        io::ErrorKind::AddrNotAvailable => format!(
            "--listen {addr}: no interface of this host has address {}: give one of this host's addresses",
            addr.ip()
        ),
        io::ErrorKind::PermissionDenied => format!(
            "--listen {addr}: permission denied (ports below 1024 need root): choose a port of 1024 or more"
        ),
        _ => format!("--listen {addr}: cannot bind the {proto} socket: {e}"),
    };
    RunError::User(msg)
}

/// A block of receive memory that datagrams are split off. `buf` holds
/// the block's unused (zeroed) rest: receives write into its front and
/// split what they got off.
struct RxBlock {
    buf: BytesMut,
    /// Per-slot spill area of a `recvmmsg` batch (datagrams over
    /// [`UDP_SLOT`]), reused.
    overflow: Vec<u8>,
    got: [sys::Received; UDP_BATCH],
}

impl RxBlock {
    fn ensure(&mut self, need: usize, stats: &mut RuntimeStats) {
        if self.buf.len() < need {
            // Zeroed memory comes fresh from mmap: no memset cost.
            self.buf = BytesMut::zeroed(RX_BLOCK);
            stats.rx_blocks_allocated += 1;
        }
    }
}

/// Everything `almd run` owns.
struct Runtime {
    poll: Poll,
    engine: Engine,
    udp: mio::net::UdpSocket,
    streams: Streams,
    tap: Option<Tap>,
    tap_info: Option<TapInfo>,
    /// Name and MTU of the TAP to create (with `--tap`).
    tap_plan: Option<(String, u16)>,
    /// The pool of `--tap-addr auto`.
    auto_pool: Option<(Ipv4Addr, u8)>,
    /// `groups` requests waiting for the directory, and since when.
    groups_waiting: Vec<Ticket>,
    groups_deadline: Option<Instant>,
    signals: OwnedFd,
    control: ControlServer,
    listen: SocketAddr,
    advertise: SocketAddr,
    bootstrap: Vec<SocketAddr>,
    join_attempts: u8,
    start: Instant,
    rx: RxBlock,
    stats: RuntimeStats,
    names: GroupNames,
    igmp_seen: u64,
    stream_events: Vec<StreamEvent>,
    /// Datagram transmits waiting for one `sendmmsg` (sent before the loop
    /// sleeps or when [`TX_BATCH`] are queued).
    tx_queue: Vec<alm_core::Transmit>,
    /// Set by the drain when the engine asks us to stop (join failed).
    fatal: Option<RunError>,
    shutdown_at: Option<Instant>,
}

/// Runs `almd run` until a signal (Ok) or a fatal error.
pub fn run(cfg: RunConfig) -> Result<(), RunError> {
    let mut rt = Runtime::new(cfg)?;
    rt.run()
}

impl Runtime {
    fn new(cfg: RunConfig) -> Result<Runtime, RunError> {
        if let Some(p) = &cfg.psk_file {
            return Err(RunError::User(format!(
                "--psk-file {}: sealed overlays are not implemented yet: run without --psk-file",
                p.display()
            )));
        }
        // Before anything could spawn a thread: the mask is per thread.
        let signals = sys::signal_fd().map_err(internal("creating the signalfd"))?;

        let std_udp = std::net::UdpSocket::bind(cfg.listen)
            .map_err(|e| listen_error(cfg.listen, "UDP", &e))?;
        let listen = std_udp
            .local_addr()
            .map_err(internal("reading the UDP address"))?;
        std_udp
            .set_nonblocking(true)
            .map_err(internal("making the UDP socket non-blocking"))?;
        let (rcv, snd) = sys::set_socket_buffers(std_udp.as_raw_fd(), UDP_SOCKET_BUFFER);
        if rcv < UDP_SOCKET_BUFFER {
            tracing::warn!(
                granted = rcv,
                wanted = UDP_SOCKET_BUFFER,
                "UDP receive buffer smaller than wanted (raise net.core.rmem_max): bursts may be dropped"
            );
        }
        if let Err(e) = sys::enable_recverr(std_udp.as_raw_fd(), listen.is_ipv6()) {
            tracing::warn!(error = %e, "IP_RECVERR unavailable: dead peers are only noticed by timeouts");
        }
        let std_tcp =
            std::net::TcpListener::bind(listen).map_err(|e| listen_error(listen, "TCP", &e))?;
        std_tcp
            .set_nonblocking(true)
            .map_err(internal("making the TCP listener non-blocking"))?;
        // What the overlay learns as this node's address (`--advertise`, or
        // the bound address; config refuses an unspecified one without it).
        let advertise = cfg.advertise.unwrap_or(listen);

        let mut control = ControlServer::bind(&cfg.control, DEFAULT_MAX_CLIENTS)
            .map_err(|e| RunError::User(e.to_string()))?;

        let tap_plan = cfg.tap.as_ref().map(|spec| {
            let mtu = cfg
                .mtu
                .unwrap_or_else(|| alm_tap::tap_mtu_for_path(1500, DATA_OVERHEAD));
            (spec.name.clone(), mtu)
        });
        let mut auto_pool = None;
        let (tap, tap_info) = match (&cfg.tap, &tap_plan) {
            (Some(spec), Some((name, mtu))) => match spec.addr {
                TapAddr::Fixed { addr, prefix_len } => {
                    let (tap, info) = create_tap(name, addr, prefix_len, *mtu)?;
                    (Some(tap), Some(info))
                }
                TapAddr::Auto { prefix, prefix_len } => {
                    // Created when the overlay gave us an address.
                    auto_pool = Some((prefix, prefix_len));
                    (None, None)
                }
            },
            _ => (None, None),
        };

        let id = match cfg.node_id {
            Some(id) => id,
            None => sys::random_u128().map_err(internal("reading OS randomness"))?,
        };
        let seed = match cfg.seed {
            Some(s) => s,
            None => sys::random_u64().map_err(internal("reading OS randomness"))?,
        };
        let mut core_cfg = Config::default();
        core_cfg.scribe.max_children = cfg.max_children.map(usize::from);
        let join_attempts = core_cfg.join_attempts;
        let node = Node::try_new(core_cfg, NodeId(id), PeerAddr(advertise), seed)
            .map_err(|e| RunError::User(format!("invalid overlay configuration: {e}")))?;
        let engine = match (&tap_plan, &tap_info) {
            (Some(_), Some(t)) => Engine::Middleware(Box::new(Middleware::new(
                node,
                MiddlewareConfig::new(t.addr),
            ))),
            // Auto address: the querier's queries are discarded until the
            // TAP exists, then it restarts from the TAP's address.
            (Some(_), None) => Engine::Middleware(Box::new(Middleware::new(
                node,
                MiddlewareConfig::new(Ipv4Addr::UNSPECIFIED),
            ))),
            (None, _) => Engine::Node(Box::new(node)),
        };

        let poll = Poll::new().map_err(internal("creating the poll instance"))?;
        let registry = poll.registry();
        let mut udp = mio::net::UdpSocket::from_std(std_udp);
        registry
            .register(&mut udp, UDP, Interest::READABLE)
            .map_err(internal("registering the UDP socket"))?;
        let streams = Streams::new(
            mio::net::TcpListener::from_std(std_tcp),
            advertise,
            registry,
            TCP_LISTENER,
            STREAM_BASE,
        )
        .map_err(internal("registering the TCP listener"))?;
        if let Some(t) = &tap {
            registry
                .register(&mut SourceFd(&t.as_raw_fd()), TAP, Interest::READABLE)
                .map_err(internal("registering the TAP device"))?;
        }
        registry
            .register(
                &mut SourceFd(&signals.as_raw_fd()),
                SIGNAL,
                Interest::READABLE,
            )
            .map_err(internal("registering the signalfd"))?;
        control
            .register(registry, CONTROL)
            .map_err(internal("registering the control socket"))?;

        tracing::info!(
            node_id = %NodeId(id),
            %listen,
            %advertise,
            udp_rcvbuf = rcv,
            udp_sndbuf = snd,
            tap = tap_plan.as_ref().map(|t| t.0.as_str()).unwrap_or("-"),
            control = %cfg.control.display(),
            "almd started"
        );
        Ok(Runtime {
            poll,
            engine,
            udp,
            streams,
            tap,
            tap_info,
            tap_plan,
            auto_pool,
            groups_waiting: Vec::new(),
            groups_deadline: None,
            signals,
            control,
            listen,
            advertise,
            bootstrap: cfg.bootstrap.clone(),
            join_attempts,
            start: Instant::now(),
            rx: RxBlock {
                buf: BytesMut::new(),
                overflow: vec![0; UDP_BATCH * RX_NEED],
                got: [sys::Received::default(); UDP_BATCH],
            },
            stats: RuntimeStats {
                udp_rcvbuf: i64::from(rcv),
                udp_sndbuf: i64::from(snd),
                ..RuntimeStats::default()
            },
            names: GroupNames::default(),
            igmp_seen: 0,
            stream_events: Vec::new(),
            tx_queue: Vec::with_capacity(TX_BATCH),
            fatal: None,
            shutdown_at: None,
        })
    }

    /// Engine time: microseconds since start, from the monotonic clock.
    fn now(&self) -> Time {
        Time(u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX / 2))
    }

    fn run(&mut self) -> Result<(), RunError> {
        let mut events = Events::with_capacity(256);
        let now = self.now();
        let boot: Vec<PeerAddr> = self.bootstrap.iter().copied().map(PeerAddr).collect();
        if boot.is_empty() {
            tracing::info!("no --bootstrap: starting a new overlay");
        } else {
            tracing::info!(bootstrap = ?self.bootstrap, "joining the overlay");
        }
        self.engine.start(now, &boot);
        self.drain(now);
        if let Some((prefix, prefix_len)) = self.auto_pool {
            tracing::info!(pool = %format!("{prefix}/{prefix_len}"), "allocating the TAP address once joined");
            self.engine
                .allocate_address(now, prefix, prefix_len)
                .map_err(|e| RunError::User(format!("--tap-prefix {prefix}/{prefix_len}: {e}")))?;
            self.drain(now);
        }

        let mut udp_pending = false;
        let mut tap_pending = false;
        let mut stream_ready: Vec<Token> = Vec::new();
        let mut stream_more: Vec<Token> = Vec::new();
        let mut next_housekeeping = Instant::now() + StdDuration::from_secs(5);

        loop {
            if let Some(e) = self.fatal.take() {
                return Err(e);
            }
            // Timers.
            let now = self.now();
            if let Some(t) = self.engine.poll_timeout()
                && t <= now
            {
                self.stats.timer_fires += 1;
                self.engine.handle_timeout(now);
                self.drain(now);
                if let Some(e) = self.fatal.take() {
                    return Err(e);
                }
            }
            if let Some(at) = self.shutdown_at
                && Instant::now() >= at
            {
                self.flush_tx();
                let mut ev = std::mem::take(&mut self.stream_events);
                self.streams.flush_all(self.poll.registry(), &mut ev);
                tracing::info!("almd stopped");
                return Ok(());
            }
            if Instant::now() >= next_housekeeping {
                next_housekeeping = Instant::now() + StdDuration::from_secs(5);
                self.control.close_idle(
                    self.poll.registry(),
                    Instant::now(),
                    StdDuration::from_secs(60),
                );
                self.names.learn(&self.engine);
            }
            if let Some(at) = self.groups_deadline
                && Instant::now() >= at
            {
                self.answer_groups(None);
            }

            // How long may we sleep?
            let busy = udp_pending || tap_pending || !stream_more.is_empty();
            let timeout = if busy {
                Some(StdDuration::ZERO)
            } else {
                let now = self.now();
                let mut until = next_housekeeping.saturating_duration_since(Instant::now());
                if let Some(t) = self.engine.poll_timeout() {
                    until = until.min(StdDuration::from_micros(t.0.saturating_sub(now.0)));
                }
                if let Some(at) = self.shutdown_at {
                    until = until.min(at.saturating_duration_since(Instant::now()));
                }
                if let Some(at) = self.groups_deadline {
                    until = until.min(at.saturating_duration_since(Instant::now()));
                }
                Some(until)
            };
            self.stats.loop_passes += 1;
            self.flush_tx();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(RunError::Internal(format!("poll failed: {e}"))),
            }

            stream_ready.clear();
            stream_ready.append(&mut stream_more);
            for ev in events.iter() {
                match ev.token() {
                    UDP => {
                        udp_pending = true;
                        if ev.is_error() {
                            let now = self.now();
                            self.read_icmp_errors(now);
                        }
                    }
                    TAP => tap_pending = true,
                    TCP_LISTENER => self.streams.accept(self.poll.registry()),
                    SIGNAL => self.on_signal(),
                    t if self.control.owns(t) => self.on_control(ev),
                    t if self.streams.owns(t) && !stream_ready.contains(&t) => {
                        stream_ready.push(t);
                    }
                    _ => {}
                }
            }
            if udp_pending {
                udp_pending = self.read_udp();
            }
            if tap_pending {
                tap_pending = self.read_tap();
            }
            for &t in &stream_ready {
                let more = self
                    .streams
                    .handle(self.poll.registry(), t, &mut self.stream_events);
                if more {
                    stream_more.push(t);
                }
                let now = self.now();
                self.stream_inputs(now);
            }
        }
    }

    // ----- inputs ---------------------------------------------------------

    /// Reads up to `UDP_BUDGET` datagrams. Returns true if the budget ran
    /// out (more may be queued).
    fn read_udp(&mut self) -> bool {
        let now = self.now();
        let mut left = UDP_BUDGET;
        while left > 0 {
            let want = left.min(UDP_BATCH);
            self.rx.ensure(UDP_BATCH * UDP_SLOT, &mut self.stats);
            let rx = &mut self.rx;
            let res = sys::recv_many(
                self.udp.as_raw_fd(),
                &mut rx.buf[..UDP_BATCH * UDP_SLOT],
                UDP_SLOT,
                &mut rx.overflow,
                &mut rx.got[..want],
            );
            match res {
                Ok(0) => return false,
                Ok(got) => {
                    left -= got;
                    for i in 0..got {
                        let r = self.rx.got[i];
                        let mut slot = self.rx.buf.split_to(UDP_SLOT);
                        let n = r.len;
                        if n > UDP_SLOT + RX_NEED {
                            self.stats.udp_rx_truncated += 1;
                            continue;
                        }
                        let Some(from) = r.from else {
                            continue;
                        };
                        let bytes = if n <= UDP_SLOT {
                            slot.truncate(n);
                            slot.freeze()
                        } else {
                            // A large control message: copy it out whole.
                            let ovf = self.rx.overflow.len() / want;
                            let mut whole = BytesMut::with_capacity(n);
                            whole.extend_from_slice(&slot);
                            whole.extend_from_slice(&self.rx.overflow[i * ovf..][..n - UDP_SLOT]);
                            whole.freeze()
                        };
                        self.stats.udp_rx_datagrams += 1;
                        self.stats.udp_rx_bytes += n as u64;
                        self.engine.handle_datagram(now, PeerAddr(from), bytes);
                        self.drain(now);
                    }
                    if got < want {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    // An ICMP error for an earlier send (IP_RECVERR): the
                    // details wait in the error queue.
                    tracing::trace!(error = %e, "UDP socket error");
                    self.read_icmp_errors(now);
                    left -= 1;
                }
            }
        }
        self.stats.udp_budget_exhausted += 1;
        true
    }

    /// Drains the UDP socket's error queue. An ICMP "port/host/network
    /// unreachable" for a datagram we sent means the peer's almd is gone (or
    /// cannot be reached): tell the engine at once instead of waiting for
    /// its probes and tree heartbeats to time out.
    fn read_icmp_errors(&mut self, now: Time) {
        for _ in 0..UDP_BUDGET {
            match sys::recv_icmp_error(self.udp.as_raw_fd()) {
                Ok(Some(e)) => {
                    self.stats.udp_icmp_errors += 1;
                    let unreachable = e.from_icmp
                        && matches!(
                            e.errno,
                            libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH
                        );
                    if unreachable {
                        tracing::debug!(peer = %e.dest, errno = e.errno, "ICMP: peer unreachable");
                        self.engine.handle_peer_unreachable(now, PeerAddr(e.dest));
                        self.drain(now);
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    self.stats.udp_rx_errors += 1;
                    tracing::debug!(error = %e, "reading the UDP error queue failed");
                    return;
                }
            }
        }
    }

    /// Reads up to `TAP_BUDGET` frames. Returns true if the budget ran out.
    fn read_tap(&mut self) -> bool {
        let Some(tap) = &self.tap else {
            return false;
        };
        if self.shutdown_at.is_some() {
            return false;
        }
        let fd = tap.as_raw_fd();
        let now = self.now();
        for _ in 0..TAP_BUDGET {
            self.rx.ensure(RX_NEED, &mut self.stats);
            match sys::read_into(fd, &mut self.rx.buf[..RX_NEED]) {
                Ok(0) => return false,
                Ok(n) => {
                    let frame = self.rx.buf.split_to(n).freeze();
                    self.stats.tap_rx_frames += 1;
                    self.stats.tap_rx_bytes += n as u64;
                    self.engine.handle_tap_frame(now, frame);
                    self.drain(now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.learn_groups();
                    return false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the TAP device failed");
                    return false;
                }
            }
        }
        self.learn_groups();
        self.stats.tap_budget_exhausted += 1;
        true
    }

    /// Remembers group addresses after IGMP traffic (for `status`).
    fn learn_groups(&mut self) {
        if let Some(s) = self.engine.middleware_stats()
            && s.igmp_messages != self.igmp_seen
        {
            self.igmp_seen = s.igmp_messages;
            self.names.learn(&self.engine);
        }
    }

    /// Hands stream messages and failures to the engine.
    fn stream_inputs(&mut self, now: Time) {
        while !self.stream_events.is_empty() {
            let batch = std::mem::take(&mut self.stream_events);
            for ev in batch {
                match ev {
                    StreamEvent::Message { from, bytes } => {
                        self.engine
                            .handle_stream_message(now, PeerAddr(from), bytes);
                    }
                    StreamEvent::Unreachable(peer) => {
                        tracing::debug!(%peer, "peer unreachable over TCP");
                        self.engine.handle_peer_unreachable(now, PeerAddr(peer));
                    }
                }
                self.drain(now);
            }
        }
    }

    fn on_signal(&mut self) {
        let Some(sig) = sys::read_signals(self.signals.as_raw_fd()) else {
            return;
        };
        let name = if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        if self.shutdown_at.is_some() {
            tracing::warn!(signal = name, "second signal: stopping now");
            self.shutdown_at = Some(Instant::now());
            return;
        }
        tracing::info!(signal = name, "shutting down: leaving all groups");
        let now = self.now();
        self.engine.shutdown(now);
        if self.auto_pool.is_some() {
            tracing::info!("releasing the TAP address");
            self.engine.release_address(now);
        }
        self.drain(now);
        if let Some(t) = &self.tap {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&t.as_raw_fd()));
        }
        self.shutdown_at = Some(Instant::now() + SHUTDOWN_FLUSH);
    }

    fn on_control(&mut self, ev: &mio::event::Event) {
        let now = self.now();
        self.names.learn(&self.engine);
        let mut answer = answerer!(self, now);
        self.control
            .handle_event(self.poll.registry(), ev, &mut answer);
        let new = answer.deferred;
        self.wait_for_directory(now, new);
    }

    /// Queues `groups` requests for the directory; asks the overlay for it
    /// unless a listing is already under way.
    fn wait_for_directory(&mut self, now: Time, tickets: Vec<Ticket>) {
        if tickets.is_empty() {
            return;
        }
        let idle = self.groups_waiting.is_empty();
        self.groups_waiting.extend(tickets);
        if idle {
            self.groups_deadline = Some(Instant::now() + GROUPS_TIMEOUT);
            self.engine.list_groups(now);
            self.drain(now);
        }
    }

    /// Answers every waiting `groups` request: with the directory, or with
    /// an error when it did not come in time.
    fn answer_groups(&mut self, records: Option<&[alm_core::GroupRecord]>) {
        self.groups_deadline = None;
        let waiting = std::mem::take(&mut self.groups_waiting);
        if waiting.is_empty() {
            return;
        }
        let now = self.now();
        self.names.learn(&self.engine);
        // The directory names the trees this node serves without a local
        // listener (status shows their addresses from now on).
        for r in records.unwrap_or_default() {
            self.names.insert(r.group);
        }
        let value = match records {
            Some(r) => status::directory_answer(r, now, &self.engine, &self.names),
            None => {
                tracing::warn!("the group directory did not answer in time");
                serde_json::json!({"error": format!(
                    "the overlay's group directory did not answer within {} s: check that this node has joined (almd status)",
                    GROUPS_TIMEOUT.as_secs()
                )})
            }
        };
        let mut answer = answerer!(self, now);
        for t in waiting {
            self.control
                .complete(self.poll.registry(), t, &value, &mut answer);
        }
        // Requests that queued behind the answered ones get a new listing.
        let more = answer.deferred;
        self.wait_for_directory(now, more);
    }

    /// Creates the TAP with `addr` (or recreates it, after a lost address)
    /// and restarts the querier from it.
    fn attach_tap(&mut self, addr: Ipv4Addr) -> Result<(), RunError> {
        let (Some((name, mtu)), Some((_, prefix_len))) = (self.tap_plan.clone(), self.auto_pool)
        else {
            return Ok(());
        };
        if let Some(old) = self.tap.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&old.as_raw_fd()));
            tracing::info!(name = %old.name(), old = %old.addr(), new = %addr, "recreating the TAP with the new address");
            // Closing the fd removes the (non-persistent) interface.
            drop(old);
            self.tap_info = None;
        }
        let (tap, info) = create_tap(&name, addr, prefix_len, mtu)?;
        self.poll
            .registry()
            .register(&mut SourceFd(&tap.as_raw_fd()), TAP, Interest::READABLE)
            .map_err(internal("registering the TAP device"))?;
        self.tap = Some(tap);
        self.tap_info = Some(info);
        let now = self.now();
        self.engine.set_tap_addr(now, addr);
        Ok(())
    }

    // ----- outputs --------------------------------------------------------

    /// The drain rule: everything the engine has to say, until it is quiet.
    fn drain(&mut self, now: Time) {
        loop {
            let mut quiet = true;
            while let Some(t) = self.engine.poll_transmit() {
                quiet = false;
                match t.channel {
                    Channel::Datagram => {
                        self.tx_queue.push(t);
                        if self.tx_queue.len() >= TX_BATCH {
                            self.flush_tx();
                        }
                    }
                    Channel::Stream => {
                        self.streams.send(
                            self.poll.registry(),
                            t.to.0,
                            &t.header,
                            t.body,
                            &mut self.stream_events,
                        );
                    }
                }
            }
            if let Some(tap) = &self.tap {
                let fd = tap.as_raw_fd();
                while let Some(w) = self.engine.poll_tap_frame() {
                    quiet = false;
                    match sys::writev_2(fd, &w.ethernet, &w.packet) {
                        Ok(n) => {
                            self.stats.tap_tx_frames += 1;
                            self.stats.tap_tx_bytes += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.stats.tap_tx_would_block += 1;
                        }
                        Err(e) => {
                            self.stats.tap_tx_errors += 1;
                            tracing::debug!(error = %e, "TAP write failed");
                        }
                    }
                }
            } else {
                // No TAP yet (auto address): the querier's early queries
                // have nowhere to go.
                while self.engine.poll_tap_frame().is_some() {}
            }
            while let Some(e) = self.engine.poll_event() {
                quiet = false;
                self.on_event(e);
            }
            if !self.stream_events.is_empty() {
                self.stream_inputs(now);
            }
            // An event may have made the engine speak again (a new TAP
            // address restarts the querier).
            if quiet {
                return;
            }
        }
    }

    /// Sends the queued datagrams, [`TX_BATCH`] per `sendmmsg`. A datagram
    /// the kernel refuses is dropped and counted (best effort), like a
    /// single send.
    fn flush_tx(&mut self) {
        let fd = self.udp.as_raw_fd();
        let mut start = 0;
        while start < self.tx_queue.len() {
            match sys::send_many(fd, &self.tx_queue[start..]) {
                Ok((sent, bytes)) => {
                    self.stats.udp_tx_datagrams += sent as u64;
                    self.stats.udp_tx_bytes += bytes as u64;
                    start += sent.max(1);
                }
                Err(e) => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        self.stats.udp_tx_would_block += 1;
                    } else {
                        self.stats.udp_tx_errors += 1;
                        tracing::debug!(to = %self.tx_queue[start].to, error = %e, "UDP send failed");
                    }
                    start += 1;
                }
            }
        }
        self.tx_queue.clear();
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Joined => {
                let node = self.engine.node();
                tracing::info!(
                    leaf_set = node.leaf_set().len(),
                    routing_table = node.routing_table_len(),
                    "joined the overlay"
                );
            }
            Event::JoinFailed => {
                let list: Vec<String> = self.bootstrap.iter().map(ToString::to_string).collect();
                let msg = format!(
                    "could not join the overlay through {} (no answer after {} attempts): check the address and that almd runs there",
                    list.join(", "),
                    self.join_attempts
                );
                self.fatal = Some(RunError::User(msg));
            }
            Event::PeerDown { peer } => {
                tracing::info!(peer = ?peer, "peer declared dead");
            }
            Event::Delivered { key, hops, .. } => {
                tracing::debug!(%key, hops, "lookup delivered");
            }
            Event::AddressAllocated { addr, lease_until } => {
                let now = self.now();
                tracing::info!(
                    %addr,
                    lease_s = lease_until.0.saturating_sub(now.0) / 1_000_000,
                    "TAP address allocated"
                );
                if self.tap.as_ref().is_none_or(|t| t.addr() != addr)
                    && let Err(e) = self.attach_tap(addr)
                {
                    self.fatal = Some(e);
                }
            }
            Event::AddressPoolExhausted(e) => {
                tracing::error!(error = %e, "no TAP address available");
                self.fatal = Some(RunError::User(format!(
                    "{e}: every address is taken; give a larger --tap-prefix or an explicit --tap-addr"
                )));
            }
            Event::AddressLost { addr } => {
                tracing::warn!(
                    %addr,
                    "the TAP address was taken by another node (our lease lapsed): allocating a new one; the TAP keeps the old address until then"
                );
            }
            Event::GroupDirectory(records) => {
                self.answer_groups(Some(&records));
            }
            other => tracing::debug!(event = ?other, "engine event"),
        }
    }
}

/// Answers control requests: `status` at once, `groups` once the overlay's
/// directory arrived ([`Runtime::answer_groups`]).
struct Answerer<'a> {
    engine: &'a Engine,
    ctx: StatusContext<'a>,
    deferred: Vec<Ticket>,
}

impl Answer for Answerer<'_> {
    fn answer(&mut self, req: &Request) -> serde_json::Value {
        match req {
            Request::Status => status::status_json(self.engine, &self.ctx),
            Request::Groups => status::groups_answer(self.engine, self.ctx.names),
        }
    }

    fn defer(&mut self, req: &Request, ticket: Ticket) -> bool {
        if *req == Request::Groups {
            self.deferred.push(ticket);
            true
        } else {
            false
        }
    }
}

/// Creates and configures the TAP device.
fn create_tap(
    name: &str,
    addr: Ipv4Addr,
    prefix_len: u8,
    mtu: u16,
) -> Result<(Tap, TapInfo), RunError> {
    let tcfg = TapConfig {
        name: name.to_owned(),
        addr,
        prefix_len,
        mtu,
    };
    let tap = Tap::create(&tcfg).map_err(|e| RunError::User(e.to_string()))?;
    let info = TapInfo {
        name: tap.name().to_owned(),
        addr: tap.addr(),
        prefix_len: tap.prefix_len(),
        mtu: tap.mtu(),
    };
    Ok((tap, info))
}
