//! `alm-probe`: small helpers for `scripts/e2e.sh` (not installed with almd).
//!
//! - `alm-probe topic GROUP` — prints the Scribe topic id of an IPv4 group
//!   (32 hex digits), so a test can give a node exactly that id and make it
//!   the group's root.
//! - `alm-probe recv --group G --iface A --port P --duration S` — joins G on
//!   the interface with address A, counts datagrams for S seconds, prints
//!   one JSON line: received, bytes, first_ms, last_ms, max_gap_ms,
//!   max_gap_at_ms (times since start).
//! - `alm-probe blast --to IP:PORT --rate PPS --duration S [--seed N]` —
//!   sends random datagrams (pure noise, and noise behind a valid alm
//!   version/type prefix) to an overlay port; prints one JSON line.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use alm_core::scribe::Topic;

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn need<T: std::str::FromStr>(args: &[String], name: &str) -> Result<T, String> {
    let v = arg(args, name).ok_or_else(|| format!("missing {name}"))?;
    v.parse().map_err(|_| format!("bad value for {name}: {v}"))
}

fn recv(args: &[String]) -> Result<(), String> {
    let group: Ipv4Addr = need(args, "--group")?;
    let iface: Ipv4Addr = need(args, "--iface")?;
    let port: u16 = need(args, "--port")?;
    let duration: f64 = need(args, "--duration")?;
    let sock = UdpSocket::bind(("0.0.0.0", port)).map_err(|e| format!("bind: {e}"))?;
    sock.join_multicast_v4(&group, &iface)
        .map_err(|e| format!("join {group} on {iface}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(duration);
    let mut buf = [0u8; 65536];
    let (mut n, mut bytes) = (0u64, 0u64);
    let (mut first, mut last) = (None::<f64>, 0f64);
    let (mut max_gap, mut max_gap_at) = (0f64, 0f64);
    while Instant::now() < end {
        match sock.recv(&mut buf) {
            Ok(len) => {
                let t = start.elapsed().as_secs_f64() * 1e3;
                if first.is_some() && t - last > max_gap {
                    max_gap = t - last;
                    max_gap_at = last;
                }
                first.get_or_insert(t);
                last = t;
                n += 1;
                bytes += len as u64;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
    println!(
        "{{\"received\":{n},\"bytes\":{bytes},\"first_ms\":{:.1},\"last_ms\":{last:.1},\"max_gap_ms\":{max_gap:.1},\"max_gap_at_ms\":{max_gap_at:.1}}}",
        first.unwrap_or(-1.0)
    );
    Ok(())
}

/// xorshift64*: good enough noise, no dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn fill(&mut self, b: &mut [u8]) {
        for chunk in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn blast(args: &[String]) -> Result<(), String> {
    let to: SocketAddr = need(args, "--to")?;
    let rate: f64 = need(args, "--rate")?;
    let duration: f64 = need(args, "--duration")?;
    let seed: u64 = arg(args, "--seed")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    let mut rng = Noise(seed | 1);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(duration);
    let mut buf = [0u8; 1500];
    let (mut sent, mut errors) = (0u64, 0u64);
    // alm message types: Pastry 0x01..=0x08, Scribe control 0x20..=0x2f, data.
    let types: Vec<u8> = (0x01..=0x08)
        .chain(0x20..=0x2f)
        .chain(0x30..=0x31)
        .collect();
    while Instant::now() < end {
        let len = (rng.next() % 1500) as usize;
        rng.fill(&mut buf[..len]);
        match sent % 3 {
            0 => {}
            _ if len >= 2 => {
                buf[0] = alm_core::wire::VERSION;
                buf[1] = types[(rng.next() as usize) % types.len()];
            }
            _ => {}
        }
        match sock.send_to(&buf[..len], to) {
            Ok(_) => sent += 1,
            Err(_) => errors += 1,
        }
        let due = start + Duration::from_secs_f64((sent + errors) as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    println!("{{\"sent\":{sent},\"errors\":{errors}}}");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("topic") => match args.get(1).map(|g| g.parse::<Ipv4Addr>()) {
            Some(Ok(g)) => {
                println!("{}", Topic::ipv4_group(g).0);
                Ok(())
            }
            _ => Err("usage: alm-probe topic GROUP".to_owned()),
        },
        Some("recv") => recv(&args[1..]),
        Some("blast") => blast(&args[1..]),
        _ => Err("usage: alm-probe topic GROUP | recv --group G --iface A --port P --duration S | blast --to IP:PORT --rate PPS --duration S [--seed N]".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alm-probe: {e}");
            ExitCode::from(2)
        }
    }
}
