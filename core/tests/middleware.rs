//! Whole middleware hosts on a virtual network: IGMP reports and multicast
//! frames captured on Linux (shared/fixtures) go in on one host's TAP and
//! must come out, as frames, on the TAPs of the hosts that joined.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use alm_core::{
    Config, Duration, Middleware, MiddlewareConfig, Node, NodeId, PeerAddr, Rng, TapWrite, Time,
};
use bytes::Bytes;

const FIXTURE: &str = include_str!("../../../shared/fixtures/tap-frames-linux-6.18.hex");

fn fixture_frames() -> Vec<Vec<u8>> {
    FIXTURE
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            (0..l.trim().len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l.trim()[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect()
}

fn addr(i: usize) -> PeerAddr {
    PeerAddr::v4(10, 0, 0, i as u8 + 1, 4000)
}

struct Hosts {
    hosts: Vec<Middleware>,
    wire: VecDeque<(Time, usize, usize, Bytes)>,
    tap: Vec<Vec<TapWrite>>,
    now: Time,
}

impl Hosts {
    fn new(n: usize) -> Hosts {
        let mut rng = Rng::new(99);
        let hosts = (0..n)
            .map(|i| {
                let node = Node::new(
                    Config::default(),
                    NodeId(rng.next_u128()),
                    addr(i),
                    i as u64,
                );
                let tap = Ipv4Addr::new(172, 16, 0, i as u8 + 5);
                Middleware::new(node, MiddlewareConfig::new(tap))
            })
            .collect();
        Hosts {
            hosts,
            wire: VecDeque::new(),
            tap: vec![Vec::new(); n],
            now: Time::ZERO,
        }
    }

    fn drain(&mut self, i: usize) {
        while let Some(t) = self.hosts[i].poll_transmit() {
            let to = usize::from(match t.to.0.ip() {
                std::net::IpAddr::V4(v) => v.octets()[3],
                std::net::IpAddr::V6(_) => 0,
            }) - 1;
            // 1 ms links.
            self.wire
                .push_back((self.now + Duration::from_millis(1), i, to, t.into_bytes()));
        }
        while let Some(f) = self.hosts[i].poll_tap_frame() {
            self.tap[i].push(f);
        }
        while self.hosts[i].poll_event().is_some() {}
    }

    fn run(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            let next_msg = self.wire.front().map(|w| w.0).unwrap_or(Time::NEVER);
            let (next_tmr, who) = (0..self.hosts.len())
                .filter_map(|i| self.hosts[i].poll_timeout().map(|t| (t, i)))
                .min()
                .unwrap_or((Time::NEVER, 0));
            let t = next_msg.min(next_tmr);
            if t > until {
                self.now = until;
                return;
            }
            self.now = t;
            if next_msg <= next_tmr {
                let (_, from, to, bytes) = self.wire.pop_front().unwrap();
                self.hosts[to].handle_datagram(t, addr(from), bytes);
                self.drain(to);
            } else {
                self.hosts[who].handle_timeout(t);
                self.drain(who);
            }
        }
    }

    fn tap_in(&mut self, i: usize, frame: &[u8]) {
        let now = self.now;
        self.hosts[i].handle_tap_frame(now, Bytes::copy_from_slice(frame));
        self.drain(i);
    }
}

fn data_frames(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .filter(|f| f.len() > 34 && f[12..14] == [0x08, 0x00] && f[23] == 17)
        .cloned()
        .collect()
}

fn igmp_reports(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .filter(|f| f.len() > 34 && f[12..14] == [0x08, 0x00] && f[23] == 2)
        .cloned()
        .collect()
}

#[test]
fn captured_multicast_reaches_joined_hosts_only() {
    let frames = fixture_frames();
    let data = data_frames(&frames);
    let reports = igmp_reports(&frames);
    assert_eq!(data.len(), 3);
    assert!(!reports.is_empty());

    let mut h = Hosts::new(4);
    h.hosts[0].start(Time::ZERO, &[]);
    h.drain(0);
    h.run(Duration::from_millis(100));
    for i in 1..4 {
        let now = h.now;
        h.hosts[i].start(now, &[addr(0)]);
        h.drain(i);
        h.run(Duration::from_millis(100));
    }
    h.run(Duration::from_secs(15));
    for (i, host) in h.hosts.iter().enumerate() {
        assert!(host.node().is_joined(), "host {i}");
    }
    // Hosts 1 and 2 have a listener on 239.1.2.3; host 3 has none.
    for i in [1, 2] {
        for r in &reports {
            h.tap_in(i, r);
        }
    }
    h.run(Duration::from_secs(2));
    for t in &mut h.tap {
        t.clear(); // startup IGMP queries
    }
    // Host 0 (not a member) sends the three captured datagrams.
    for d in &data {
        h.tap_in(0, d);
        h.run(Duration::from_millis(50));
    }
    h.run(Duration::from_secs(1));
    for i in [1, 2] {
        let got: Vec<Vec<u8>> = h.tap[i]
            .iter()
            .filter(|f| f.ethernet[12..14] == [0x08, 0x00] && f.packet[9] == 17)
            .map(|f| f.to_vec())
            .collect();
        assert_eq!(got.len(), 3, "host {i}");
        for (g, d) in got.iter().zip(&data) {
            // Group MAC, our router MAC, and the IPv4 packet byte for byte.
            assert_eq!(&g[..6], &[0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]);
            assert_eq!(&g[6..12], &alm_core::frame::ROUTER_MAC);
            assert_eq!(&g[12..], &d[12..]);
        }
    }
    assert!(
        h.tap[3].iter().all(|f| f.packet[9] != 17),
        "host 3 joined nothing"
    );
    assert!(
        h.tap[0].iter().all(|f| f.packet[9] != 17),
        "the sender never sees its own packets"
    );
}

#[test]
fn garbage_from_the_network_is_counted_not_injected() {
    let mut h = Hosts::new(2);
    h.hosts[0].start(Time::ZERO, &[]);
    h.drain(0);
    h.run(Duration::from_millis(100));
    let now = h.now;
    h.hosts[1].start(now, &[addr(0)]);
    h.drain(1);
    h.run(Duration::from_secs(5));
    for r in igmp_reports(&fixture_frames()) {
        h.tap_in(1, &r);
    }
    h.run(Duration::from_secs(1));
    h.tap[1].clear();
    let mut rng = Rng::new(5);
    for k in 0..2000 {
        let len = rng.index(200);
        let mut b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if k % 2 == 0 && len > 2 {
            // Make some of it look like ours.
            b[0] = 1;
            b[1] = [0x01, 0x03, 0x05, 0x20, 0x22, 0x30][k % 6];
        }
        let now = h.now;
        h.hosts[1].handle_datagram(now, addr(0), Bytes::from(b));
        h.drain(1);
    }
    h.run(Duration::from_secs(1));
    assert!(
        h.tap[1].iter().all(|f| f.packet[9] != 17),
        "nothing injected"
    );
    let s = h.hosts[1].node().stats();
    assert!(s.decode_errors > 500, "{s:?}");
}
