//! What the event loop drives: a bare overlay `Node` (no `--tap`), or the
//! multicast `Middleware` around one. One enum so the loop has one code path.

use bytes::Bytes;

use alm_core::middleware::{MiddlewareStats, TapWrite};
use alm_core::{Event, Middleware, Node, PeerAddr, Time, Transmit};

/// The engine behind `almd run`.
#[derive(Debug)]
pub enum Engine {
    /// Overlay node only.
    Node(Box<Node>),
    /// Node + IGMP querier + TAP frame codec.
    Middleware(Box<Middleware>),
}

impl Engine {
    /// Joins the overlay (and starts the IGMP querier).
    pub fn start(&mut self, now: Time, bootstrap: &[PeerAddr]) {
        match self {
            Engine::Node(n) => n.join_overlay(now, bootstrap),
            Engine::Middleware(m) => m.start(now, bootstrap),
        }
    }

    /// Clean shutdown: leave every tree.
    pub fn shutdown(&mut self, now: Time) {
        match self {
            Engine::Node(n) => {
                let topics: Vec<_> = n.scribe().topics().map(|(t, _)| *t).collect();
                for t in topics {
                    n.unsubscribe(now, t);
                }
            }
            Engine::Middleware(m) => m.shutdown(now),
        }
    }

    #[inline]
    pub fn handle_datagram(&mut self, now: Time, from: PeerAddr, bytes: Bytes) {
        match self {
            Engine::Node(n) => n.handle_datagram(now, from, bytes),
            Engine::Middleware(m) => m.handle_datagram(now, from, bytes),
        }
    }

    pub fn handle_stream_message(&mut self, now: Time, from: PeerAddr, bytes: Bytes) {
        match self {
            Engine::Node(n) => n.handle_stream_message(now, from, bytes),
            Engine::Middleware(m) => m.handle_stream_message(now, from, bytes),
        }
    }

    pub fn handle_peer_unreachable(&mut self, now: Time, peer: PeerAddr) {
        match self {
            Engine::Node(n) => n.handle_peer_unreachable(now, peer),
            Engine::Middleware(m) => m.handle_peer_unreachable(now, peer),
        }
    }

    #[inline]
    pub fn handle_tap_frame(&mut self, now: Time, frame: Bytes) {
        if let Engine::Middleware(m) = self {
            m.handle_tap_frame(now, frame);
        }
    }

    pub fn handle_timeout(&mut self, now: Time) {
        match self {
            Engine::Node(n) => n.handle_timeout(now),
            Engine::Middleware(m) => m.handle_timeout(now),
        }
    }

    #[inline]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        match self {
            Engine::Node(n) => n.poll_transmit(),
            Engine::Middleware(m) => m.poll_transmit(),
        }
    }

    #[inline]
    pub fn poll_tap_frame(&mut self) -> Option<TapWrite> {
        match self {
            Engine::Node(_) => None,
            Engine::Middleware(m) => m.poll_tap_frame(),
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        match self {
            Engine::Node(n) => n.poll_event(),
            Engine::Middleware(m) => m.poll_event(),
        }
    }

    pub fn poll_timeout(&self) -> Option<Time> {
        match self {
            Engine::Node(n) => n.poll_timeout(),
            Engine::Middleware(m) => m.poll_timeout(),
        }
    }

    /// The TAP (re)got an address: (re)start the IGMP querier from it.
    pub fn set_tap_addr(&mut self, now: Time, addr: std::net::Ipv4Addr) {
        if let Engine::Middleware(m) = self {
            m.set_tap_addr(now, addr);
        }
    }

    /// Claim a TAP address from the pool (`--tap-addr auto`).
    pub fn allocate_address(
        &mut self,
        now: Time,
        prefix: std::net::Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), alm_core::AllocError> {
        self.command(now, |n| n.allocate_address(now, prefix, prefix_len))
    }

    /// Give the TAP address back (clean exit).
    pub fn release_address(&mut self, now: Time) {
        self.command(now, |n| n.release_address(now));
    }

    /// Ask the overlay for its group directory (`Event::GroupDirectory`).
    pub fn list_groups(&mut self, now: Time) {
        self.command(now, |n| n.list_groups(now));
    }

    /// Runs a node command. A middleware moves node events to its own
    /// queue only on an input: a (harmless) spurious timeout makes the
    /// command's events visible to `poll_event` at once.
    fn command<R>(&mut self, now: Time, f: impl FnOnce(&mut Node) -> R) -> R {
        match self {
            Engine::Node(n) => f(n),
            Engine::Middleware(m) => {
                let r = f(m.node_mut());
                m.handle_timeout(now);
                r
            }
        }
    }

    pub fn node(&self) -> &Node {
        match self {
            Engine::Node(n) => n,
            Engine::Middleware(m) => m.node(),
        }
    }

    pub fn middleware(&self) -> Option<&Middleware> {
        match self {
            Engine::Node(_) => None,
            Engine::Middleware(m) => Some(m),
        }
    }

    pub fn middleware_stats(&self) -> Option<MiddlewareStats> {
        self.middleware().map(|m| *m.stats())
    }
}
