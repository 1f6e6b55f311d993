//! Unit tests (run anywhere) and device tests (need root and /dev/net/tun; each
//! runs in a thread that first moves into a fresh network namespace, so nothing
//! touches the host's network, and skips with a printed reason otherwise).

use super::*;
use std::net::{SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- unit tests

#[test]
fn mtu_for_path_subtracts_overhead() {
    assert_eq!(tap_mtu_for_path(1500, 0), 1500);
    assert_eq!(tap_mtu_for_path(1500, 20 + 8 + 32), 1440);
    assert_eq!(tap_mtu_for_path(9000, 100), 8900);
}

#[test]
fn mtu_for_path_has_floor_576() {
    assert_eq!(tap_mtu_for_path(600, 100), MIN_TAP_MTU);
    assert_eq!(tap_mtu_for_path(576, 1), 576);
    assert_eq!(tap_mtu_for_path(100, 500), 576, "no underflow");
    assert_eq!(tap_mtu_for_path(0, u16::MAX), 576);
    assert_eq!(
        tap_mtu_for_path(677, 100),
        577,
        "just above the floor is kept"
    );
}

#[test]
fn open_errors_map_to_actionable_messages() {
    let e = |errno| io::Error::from_raw_os_error(errno);
    let msg = |err: TapError| err.to_string();

    for errno in [libc::ENOENT, libc::ENODEV] {
        let m = msg(TapError::from_open_error("alm0", e(errno)));
        assert_eq!(
            m,
            "/dev/net/tun is missing: load the tun module (modprobe tun) or run in a container with --device /dev/net/tun"
        );
    }
    for errno in [libc::EPERM, libc::EACCES] {
        assert_eq!(
            msg(TapError::from_open_error("alm0", e(errno))),
            "creating TAP device alm0 needs root or CAP_NET_ADMIN: run almd with sudo or grant cap_net_admin"
        );
    }
    let busy = msg(TapError::from_open_error("alm0", e(libc::EBUSY)));
    assert!(
        busy.contains("alm0") && busy.contains("already in use"),
        "{busy}"
    );
    let inval = msg(TapError::from_open_error("lo", e(libc::EINVAL)));
    assert!(
        inval.contains("\"lo\"") && inval.contains("choose another name"),
        "{inval}"
    );
    let other = msg(TapError::from_open_error("alm0", e(libc::EMFILE)));
    assert!(
        other.starts_with("creating TAP device alm0 through /dev/net/tun failed: "),
        "{other}"
    );
}

#[test]
fn open_errors_map_by_kind_without_errno() {
    let k = |kind| io::Error::new(kind, "synthetic");
    assert!(matches!(
        TapError::from_open_error("a", k(io::ErrorKind::NotFound)),
        TapError::NoTunDevice
    ));
    assert!(matches!(
        TapError::from_open_error("a", k(io::ErrorKind::PermissionDenied)),
        TapError::NotPermitted { .. }
    ));
    assert!(matches!(
        TapError::from_open_error("a", k(io::ErrorKind::ResourceBusy)),
        TapError::NameBusy { .. }
    ));
    assert!(matches!(
        TapError::from_open_error("a", k(io::ErrorKind::Other)),
        TapError::Open { .. }
    ));
}

#[test]
fn configure_errors_name_step_and_os_error() {
    let err = TapError::from_configure_error(
        "alm0",
        TapStep::Mtu,
        io::Error::from_raw_os_error(libc::EINVAL),
    );
    let m = err.to_string();
    assert!(
        m.starts_with("configuring TAP device alm0 failed while setting the MTU: "),
        "{m}"
    );
    assert!(m.contains("Invalid argument"), "{m}");

    let route = TapError::from_configure_error(
        "alm0",
        TapStep::MulticastRoute,
        io::Error::from_raw_os_error(libc::EEXIST),
    );
    assert!(route.to_string().contains("adding the route 224.0.0.0/4"));

    // A permission error in any step is the "needs root" message.
    let perm = TapError::from_configure_error(
        "alm0",
        TapStep::Address,
        io::Error::from_raw_os_error(libc::EPERM),
    );
    assert!(matches!(perm, TapError::NotPermitted { .. }));
}

fn cfg(name: &str) -> TapConfig {
    TapConfig {
        name: name.to_owned(),
        addr: Ipv4Addr::new(172, 16, 0, 5),
        prefix_len: 20,
        mtu: 1400,
    }
}

#[test]
fn config_validation_rejects_bad_names() {
    for bad in [
        "",
        "a-name-that-is-too-long",
        "a/b",
        "a b",
        "tap%d",
        ".",
        "..",
        "al\u{e9}",
    ] {
        let err = cfg(bad).validate().expect_err(bad);
        assert!(matches!(err, TapError::InvalidName { .. }), "{bad}: {err}");
        assert!(err.to_string().ends_with(": choose another name"), "{err}");
    }
    for good in ["alm0", "a", "alm-tap_1.x", "abcdefghijklmno"] {
        cfg(good).validate().expect(good);
    }
}

#[test]
fn config_validation_rejects_bad_values() {
    let mut c = cfg("alm0");
    c.prefix_len = 33;
    assert!(c.validate().unwrap_err().to_string().contains("/33"));
    c.prefix_len = 0;
    assert!(c.validate().is_err());
    let mut c = cfg("alm0");
    c.mtu = 575;
    let m = c.validate().unwrap_err().to_string();
    assert!(m.contains("MTU 575 is below the minimum of 576"), "{m}");
    for addr in [
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(239, 1, 2, 3),
        Ipv4Addr::LOCALHOST,
    ] {
        let mut c = cfg("alm0");
        c.addr = addr;
        assert!(c.validate().is_err(), "{addr}");
    }
}

#[test]
fn netmask_from_prefix() {
    let mut c = cfg("alm0");
    assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 240, 0));
    c.prefix_len = 32;
    assert_eq!(c.netmask(), Ipv4Addr::BROADCAST);
    c.prefix_len = 1;
    assert_eq!(c.netmask(), Ipv4Addr::new(128, 0, 0, 0));
    assert_eq!(prefix_to_mask(0), Ipv4Addr::UNSPECIFIED);
}

#[test]
fn sockaddr_v4_has_sockaddr_in_layout() {
    let sa = sockaddr_v4(Ipv4Addr::new(172, 16, 0, 5));
    assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
    let bytes: Vec<u8> = sa.sa_data.iter().map(|&b| b as u8).collect();
    assert_eq!(&bytes[..6], &[0, 0, 172, 16, 0, 5]);
    assert!(bytes[6..].iter().all(|&b| b == 0));
    assert_eq!(
        std::mem::size_of::<libc::sockaddr>(),
        std::mem::size_of::<libc::sockaddr_in>()
    );
}

#[test]
fn rtentry_matches_kernel_size() {
    // struct rtentry is 120 bytes on LP64 and 64 on ILP32 Linux.
    let expected = if cfg!(target_pointer_width = "64") {
        120
    } else {
        64
    };
    assert_eq!(std::mem::size_of::<RtEntry>(), expected);
}

#[test]
fn mac_formatting() {
    assert_eq!(
        format_mac(&[0x02, 0, 0xab, 0x10, 0xff, 1]),
        "02:00:ab:10:ff:01"
    );
}

// ------------------------------------------------------ root + /dev/net/tun

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    if !Path::new(TUN_DEVICE).exists() {
        return Some(format!("{TUN_DEVICE} does not exist"));
    }
    None
}

/// Runs `f` on a new thread that has first moved into a fresh network namespace
/// (network namespaces are per thread on Linux). Returns None, after printing
/// why, when the test cannot run here.
fn in_fresh_netns<T: Send + 'static>(
    test: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED {test}: {reason}");
        return None;
    }
    let handle = std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; CLONE_NEWNET affects only this thread.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(f())
    });
    match handle.join() {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            eprintln!("SKIPPED {test}: unshare(CLONE_NEWNET) failed: {e}");
            None
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Waits (poll(2), no sleeping) up to `timeout` for a frame satisfying `pred`.
fn wait_for_frame(tap: &Tap, timeout: Duration, pred: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; tap.frame_capacity()];
    loop {
        match tap.recv(&mut buf) {
            Ok(n) => {
                if pred(&buf[..n]) {
                    return Some(buf[..n].to_vec());
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("recv on TAP: {e}"),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut pfd = libc::pollfd {
            fd: tap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `pfd` is one valid pollfd, exclusively borrowed for the call.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }
}

/// If `frame` is an IGMP membership report (v2 or v3) for `group`, true.
fn is_igmp_report_for(frame: &[u8], group: Ipv4Addr) -> bool {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return false;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] != 2 || ip.len() < ihl + 8 {
        return false;
    }
    let igmp = &ip[ihl..];
    match igmp[0] {
        // IGMPv2 report: group at 4..8.
        0x16 => igmp[4..8] == group.octets(),
        // IGMPv3 report: records from offset 8: type, aux len, n sources, group.
        0x22 => {
            let n = u16::from_be_bytes([igmp[6], igmp[7]]);
            let mut off = 8;
            for _ in 0..n {
                if igmp.len() < off + 8 {
                    return false;
                }
                let aux = usize::from(igmp[off + 1]) * 4;
                let nsrc = usize::from(u16::from_be_bytes([igmp[off + 2], igmp[off + 3]]));
                if igmp[off + 4..off + 8] == group.octets() {
                    return true;
                }
                off += 8 + nsrc * 4 + aux;
            }
            false
        }
        _ => false,
    }
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet + IPv4 + UDP frame to `group:port` from `src`, UDP checksum 0.
fn multicast_udp_frame(src: Ipv4Addr, group: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    let g = group.octets();
    let mut f = vec![0x01, 0x00, 0x5e, g[1] & 0x7f, g[2], g[3]];
    f.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, 0x00, 0x09, 0x08, 0x00]);
    let total = u16::try_from(20 + 8 + payload.len()).expect("small payload");
    let mut ip = vec![0x45, 0x00];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 1, 17, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&g);
    let csum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&4000u16.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&(total - 20).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

#[test]
fn tap_is_configured_as_asked_and_disappears_on_drop() {
    in_fresh_netns("tap_is_configured_as_asked_and_disappears_on_drop", || {
        let c = cfg("almt0");
        let tap = Tap::create(&c).expect("create TAP");
        assert_eq!(tap.name(), "almt0");
        assert_eq!(tap.mtu(), 1400);
        assert_eq!(inspect::mtu("almt0").expect("mtu"), 1400);
        assert_eq!(
            inspect::addr("almt0").expect("addr"),
            (
                Ipv4Addr::new(172, 16, 0, 5),
                Ipv4Addr::new(255, 255, 240, 0)
            )
        );
        let flags = inspect::flags("almt0").expect("flags");
        for (bit, what) in [
            (libc::IFF_UP, "UP"),
            (libc::IFF_RUNNING, "RUNNING"),
            (libc::IFF_MULTICAST, "MULTICAST"),
        ] {
            assert_ne!(flags & bit, 0, "{what} not set in {flags:#x}");
        }
        assert!(inspect::has_multicast_route("almt0").expect("route table"));
        assert_eq!(tap.route, Some(RouteInstall::Ioctl), "no `ip` fallback");
        let mac = tap.mac();
        assert_ne!(mac, [0; 6]);
        assert_eq!(mac[0] & 1, 0, "unicast MAC");
        let v6 = std::fs::read_to_string("/proc/sys/net/ipv6/conf/almt0/disable_ipv6");
        if let Ok(v6) = v6 {
            assert_eq!(v6.trim(), "1");
        }
        // Non-blocking: nothing queued (IPv6 is off, no group joined) → WouldBlock.
        let mut buf = vec![0u8; tap.frame_capacity()];
        let r = tap.recv(&mut buf);
        assert_eq!(
            r.as_ref().map_err(io::Error::kind).err(),
            Some(io::ErrorKind::WouldBlock),
            "{r:?}"
        );

        drop(tap);
        let gone = inspect::flags("almt0").expect_err("interface must be gone");
        assert_eq!(gone.raw_os_error(), Some(libc::ENODEV), "{gone}");
        assert!(!inspect::has_multicast_route("almt0").expect("route table"));
    });
}

#[test]
fn joining_a_group_makes_the_kernel_send_an_igmp_report_on_the_tap() {
    in_fresh_netns(
        "joining_a_group_makes_the_kernel_send_an_igmp_report",
        || {
            let tap = Tap::create(&cfg("almt1")).expect("create TAP");
            let group = Ipv4Addr::new(239, 1, 2, 3);
            let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
            sock.join_multicast_v4(&group, &Ipv4Addr::new(172, 16, 0, 5))
                .expect("join");
            let frame = wait_for_frame(&tap, Duration::from_secs(3), |f| {
                is_igmp_report_for(f, group)
            })
            .expect("an IGMP report for 239.1.2.3 within 3 s");
            assert_eq!(&frame[6..12], &tap.mac(), "sent from the TAP's MAC");
            assert_eq!(frame[0..3], [0x01, 0x00, 0x5e], "to a multicast MAC");
        },
    );
}

#[test]
fn frame_sent_into_the_tap_reaches_a_joined_socket() {
    in_fresh_netns("frame_sent_into_the_tap_reaches_a_joined_socket", || {
        let tap = Tap::create(&cfg("almt2")).expect("create TAP");
        let group = Ipv4Addr::new(239, 1, 2, 3);
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let port = sock.local_addr().expect("local addr").port();
        sock.join_multicast_v4(&group, &Ipv4Addr::new(172, 16, 0, 5))
            .expect("join");
        sock.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let src = Ipv4Addr::new(172, 16, 0, 9);
        let frame = multicast_udp_frame(src, group, port, b"hello over alm");
        assert_eq!(tap.send(&frame).expect("send"), frame.len());
        let mut buf = [0u8; 64];
        let (n, from) = sock.recv_from(&mut buf).expect("datagram within 3 s");
        assert_eq!(&buf[..n], b"hello over alm");
        assert_eq!(from, SocketAddrV4::new(src, 4000).into());
    });
}

#[test]
fn a_second_tap_with_the_same_name_is_refused() {
    in_fresh_netns("a_second_tap_with_the_same_name_is_refused", || {
        let _first = Tap::create(&cfg("almt3")).expect("create TAP");
        let err = Tap::create(&cfg("almt3")).expect_err("name is taken");
        assert!(matches!(err, TapError::NameBusy { .. }), "{err}");
        // "lo" exists and is not a TAP.
        let err = Tap::create(&cfg("lo")).expect_err("lo is not a TAP");
        assert!(matches!(err, TapError::InvalidName { .. }), "{err}");
    });
}

#[test]
fn route_failure_reports_ioctl_and_ip_fallback_errors() {
    in_fresh_netns("route_failure_reports_ioctl_and_ip_fallback_errors", || {
        let ctl = control_socket().expect("socket");
        // No such device: SIOCADDRT fails (ENODEV), and so does the `ip` fallback.
        let err = add_multicast_route(ctl.as_raw_fd(), "almnodev0").expect_err("no device");
        let msg = err.to_string();
        assert!(msg.contains("No such device"), "{msg}");
        assert!(msg.contains("ip"), "{msg}");
        assert!(!inspect::has_multicast_route("almnodev0").expect("route table"));
    });
}

#[test]
fn an_apps_multicast_leaves_through_the_tap_by_the_route() {
    in_fresh_netns(
        "an_apps_multicast_leaves_through_the_tap_by_the_route",
        || {
            let tap = Tap::create(&cfg("almt4")).expect("create TAP");
            // No IP_MULTICAST_IF: only the 224.0.0.0/4 route sends this to the TAP.
            let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
            sock.send_to(b"from an app", "239.1.2.3:5001")
                .expect("route to 239.1.2.3 exists");
            let frame = wait_for_frame(&tap, Duration::from_secs(3), |f| {
                f.len() >= 14 + 28 && f[12..14] == [0x08, 0x00] && f[14 + 9] == 17
            })
            .expect("the UDP packet on the TAP");
            assert_eq!(
                frame[0..6],
                [0x01, 0x00, 0x5e, 0x01, 0x02, 0x03],
                "group MAC"
            );
            assert_eq!(
                frame[14 + 12..14 + 16],
                [172, 16, 0, 5],
                "source is the TAP address"
            );
            assert_eq!(&frame[14 + 28..], b"from an app");
        },
    );
}
