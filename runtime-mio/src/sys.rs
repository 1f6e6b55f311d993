//! The few system calls the event loop makes directly through libc, because
//! std/mio have no zero-copy or batched form of them: `sendmsg`/`sendmmsg`
//! with two iovecs per datagram (header and shared body), `recvfrom` and
//! `recvmmsg` into a receive block, `writev` of a
//! TAP frame's two slices, socket buffer sizes, a `signalfd` for SIGINT and
//! SIGTERM, and OS randomness for node ids and seeds.
//!
//! Every function here takes a raw fd the caller keeps open for the whole
//! call; that is the only precondition of the `unsafe` blocks.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A socket address in the C layout `sendmsg` wants.
pub struct RawSockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawSockAddr {
    /// Converts a std address. Cheap: a few stores, no allocation.
    #[must_use]
    pub fn new(addr: &SocketAddr) -> RawSockAddr {
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe {
                    std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin);
                }
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe {
                    std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6);
                }
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        RawSockAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }

    /// Converts back to a std address; `None` for a family other than IPv4/IPv6.
    #[must_use]
    pub fn to_std(&self) -> Option<SocketAddr> {
        match i32::from(self.storage.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in.
                let sin = unsafe { &*(&raw const self.storage).cast::<libc::sockaddr_in>() };
                let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a sockaddr_in6.
                let sin6 = unsafe { &*(&raw const self.storage).cast::<libc::sockaddr_in6>() };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                let a = SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                ));
                // Report v4-mapped peers as plain IPv4, as the engine expects.
                Some(match ip.to_ipv4_mapped() {
                    Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
                    None => a,
                })
            }
            _ => None,
        }
    }
}

fn cvt(rc: isize) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

fn iovec(b: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_ptr().cast_mut().cast(),
        iov_len: b.len(),
    }
}

/// `sendmsg(fd, {to, [header, body]}, 0)`: one datagram from two slices,
/// without copying them into one buffer.
pub fn send_to_2(fd: RawFd, to: &RawSockAddr, header: &[u8], body: &[u8]) -> io::Result<usize> {
    let mut iov = [iovec(header), iovec(body)];
    let (ptr, cnt) = if header.is_empty() {
        (iov[1..].as_mut_ptr(), 1)
    } else {
        (iov.as_mut_ptr(), 2)
    };
    // SAFETY: msghdr is plain old data; zero is a valid initial value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw const to.storage).cast_mut().cast();
    msg.msg_namelen = to.len;
    msg.msg_iov = ptr;
    msg.msg_iovlen = cnt;
    loop {
        // SAFETY: `msg` points at `to` and `iov`, which outlive the call; the
        // kernel only reads them.
        let rc = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
        match cvt(rc) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Most datagrams one [`send_many`] or [`recv_many`] call handles.
pub const MMSG_BATCH: usize = 64;

/// `sendmmsg`: up to [`MMSG_BATCH`] datagrams, each from an inline header
/// and a shared body (two iovecs, no copy), in one system call. Returns how
/// many were sent from the front of `msgs` and their total size; an error
/// means the first one failed (sending it alone gives its errno).
pub fn send_many(fd: RawFd, msgs: &[alm_core::Transmit]) -> io::Result<(usize, usize)> {
    let n = msgs.len().min(MMSG_BATCH);
    if n == 0 {
        return Ok((0, 0));
    }
    let addrs: [RawSockAddr; MMSG_BATCH] = std::array::from_fn(|i| match msgs.get(i) {
        Some(t) => RawSockAddr::new(&t.to.0),
        None => RawSockAddr::new(&SocketAddr::from(([0, 0, 0, 0], 0))),
    });
    let mut iovs = [[iovec(&[]), iovec(&[])]; MMSG_BATCH];
    // SAFETY: mmsghdr is plain old data; zero is a valid initial value.
    let mut hdrs: [libc::mmsghdr; MMSG_BATCH] = unsafe { std::mem::zeroed() };
    for (i, t) in msgs[..n].iter().enumerate() {
        iovs[i] = [iovec(&t.header), iovec(&t.body)];
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = (&raw const addrs[i].storage).cast_mut().cast();
        h.msg_namelen = addrs[i].len;
        if t.header.is_empty() {
            h.msg_iov = iovs[i][1..].as_mut_ptr();
            h.msg_iovlen = 1;
        } else {
            h.msg_iov = iovs[i].as_mut_ptr();
            h.msg_iovlen = 2;
        }
    }
    loop {
        // SAFETY: the first `n` headers point at `addrs`, `iovs` and the
        // transmits' bytes, which all outlive the call; the kernel only
        // reads them and writes each header's `msg_len`.
        let rc = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT) };
        match cvt(rc as isize) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(sent) => {
                let bytes = hdrs[..sent].iter().map(|h| h.msg_len as usize).sum();
                return Ok((sent, bytes));
            }
        }
    }
}

/// One datagram of a [`recv_many`] call.
#[derive(Clone, Copy, Debug, Default)]
pub struct Received {
    /// Its length: more than the slot size means the rest is in the slot's
    /// overflow area.
    pub len: usize,
    pub from: Option<SocketAddr>,
}

/// `recvmmsg`: up to `out.len()` (at most [`MMSG_BATCH`]) datagrams in one
/// system call. Datagram `i` lands in `slots[i*slot..][..slot]`, and what
/// does not fit there in `overflow[i*ovf..][..ovf]` with
/// `ovf = overflow.len() / out.len()`. Returns how many arrived.
pub fn recv_many(
    fd: RawFd,
    slots: &mut [u8],
    slot: usize,
    overflow: &mut [u8],
    out: &mut [Received],
) -> io::Result<usize> {
    let n = out.len().min(MMSG_BATCH).min(slots.len() / slot);
    if n == 0 {
        return Ok(0);
    }
    let ovf = overflow.len() / n;
    let mut addrs: [RawSockAddr; MMSG_BATCH] = std::array::from_fn(|_| RawSockAddr {
        // SAFETY: zero is a valid sockaddr_storage.
        storage: unsafe { std::mem::zeroed() },
        len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
    });
    let mut iovs = [[iovec(&[]), iovec(&[])]; MMSG_BATCH];
    // SAFETY: mmsghdr is plain old data; zero is a valid initial value.
    let mut hdrs: [libc::mmsghdr; MMSG_BATCH] = unsafe { std::mem::zeroed() };
    for (i, (s, o)) in slots
        .chunks_exact_mut(slot)
        .zip(overflow.chunks_exact_mut(ovf))
        .take(n)
        .enumerate()
    {
        iovs[i] = [
            libc::iovec {
                iov_base: s.as_mut_ptr().cast(),
                iov_len: s.len(),
            },
            libc::iovec {
                iov_base: o.as_mut_ptr().cast(),
                iov_len: o.len(),
            },
        ];
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = (&raw mut addrs[i].storage).cast();
        h.msg_namelen = addrs[i].len;
        h.msg_iov = iovs[i].as_mut_ptr();
        h.msg_iovlen = 2;
    }
    loop {
        // SAFETY: the first `n` headers point at disjoint writable slices
        // of `slots` and `overflow` and at `addrs`, all alive for the call.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        match cvt(rc as isize) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(got) => {
                for i in 0..got {
                    addrs[i].len = hdrs[i].msg_hdr.msg_namelen;
                    out[i] = Received {
                        len: hdrs[i].msg_len as usize,
                        from: addrs[i].to_std(),
                    };
                }
                return Ok(got);
            }
        }
    }
}

/// `recvfrom(fd, buf, MSG_TRUNC)`: returns the datagram's full length (which
/// exceeds `buf.len()` if it was truncated) and the sender.
pub fn recv_from(
    fd: RawFd,
    buf: &mut [MaybeUninit<u8>],
) -> io::Result<(usize, Option<SocketAddr>)> {
    // SAFETY: zero is a valid sockaddr_storage.
    let mut addr = RawSockAddr {
        storage: unsafe { std::mem::zeroed() },
        len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
    };
    loop {
        // SAFETY: `buf` is writable for its length (the kernel writes at most
        // that many bytes even with MSG_TRUNC); `addr` is a valid out-parameter.
        let rc = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                (&raw mut addr.storage).cast(),
                &mut addr.len,
            )
        };
        match cvt(rc) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(n) => return Ok((n, addr.to_std())),
        }
    }
}

/// `read(fd, buf)` (a TAP frame).
pub fn read_into(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is writable for its length.
        let rc = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match cvt(rc) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// `writev(fd, [a, b])`: one TAP frame from its Ethernet header and packet.
pub fn writev_2(fd: RawFd, a: &[u8], b: &[u8]) -> io::Result<usize> {
    let iov = [iovec(a), iovec(b)];
    loop {
        // SAFETY: both iovecs point at live slices the kernel only reads.
        let rc = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
        match cvt(rc) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and the length says so.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    cvt(rc as isize).map(|_| ())
}

fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value`/`len` are valid out-parameters of the right size.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &mut len) };
    cvt(rc as isize).map(|_| value)
}

/// Sets SO_RCVBUF and SO_SNDBUF to `bytes`: first with the `*FORCE` variants
/// (root may exceed `net.core.[rw]mem_max`), else the plain ones (capped by
/// the sysctl). Returns the sizes the kernel reports (it doubles them).
pub fn set_socket_buffers(fd: RawFd, bytes: i32) -> (i32, i32) {
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(fd, libc::SOL_SOCKET, force, bytes).is_err() {
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, plain, bytes);
        }
    }
    (
        getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap_or(0),
        getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap_or(0),
    )
}

/// Asks the kernel to queue ICMP errors for datagrams we sent
/// (`IP_RECVERR` / `IPV6_RECVERR`), so a peer whose port is closed (its
/// process died) is noticed at once. Read them with [`recv_icmp_error`].
pub fn enable_recverr(fd: RawFd, v6: bool) -> io::Result<()> {
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVERR, 1)
    }
}

/// An ICMP error the kernel matched to a datagram we sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    /// Where the datagram that caused it was going.
    pub dest: SocketAddr,
    /// The errno it maps to (ECONNREFUSED for port unreachable, ...).
    pub errno: i32,
    /// True if the error came from an ICMP (v4 or v6) message.
    pub from_icmp: bool,
}

/// Reads one entry of the socket's error queue; `Ok(None)` when empty.
pub fn recv_icmp_error(fd: RawFd) -> io::Result<Option<IcmpError>> {
    // SAFETY: zero is a valid sockaddr_storage / msghdr.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut data = [0u8; 256];
    let mut control = [0u64; 64]; // 512 bytes, aligned for cmsghdr
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` refers to a live buffer of the stated size.
    let rc = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(e),
        };
    }
    let dest = RawSockAddr {
        storage: name,
        len: msg.msg_namelen,
    }
    .to_std();
    let mut found = None;
    // SAFETY: the CMSG_* helpers walk the control buffer the kernel filled,
    // bounded by msg_controllen; we only read a sock_extended_err from a
    // cmsg of the matching level/type, which the kernel guarantees holds one.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let level = (*c).cmsg_level;
            let ty = (*c).cmsg_type;
            if (level == libc::IPPROTO_IP && ty == libc::IP_RECVERR)
                || (level == libc::IPPROTO_IPV6 && ty == libc::IPV6_RECVERR)
            {
                let ee =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::sock_extended_err>());
                found = Some((ee.ee_errno as i32, ee.ee_origin));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    match (dest, found) {
        (Some(dest), Some((errno, origin))) => Ok(Some(IcmpError {
            dest,
            errno,
            from_icmp: origin == libc::SO_EE_ORIGIN_ICMP || origin == libc::SO_EE_ORIGIN_ICMP6,
        })),
        // Not an error we can attribute; skip it.
        _ => recv_icmp_error(fd),
    }
}

/// Blocks SIGINT and SIGTERM for this (the only) thread and returns a
/// non-blocking signalfd that becomes readable when one arrives. Must be
/// called before any thread is spawned.
pub fn signal_fd() -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain old data, initialised by sigemptyset; the
    // calls only read/write the set we own.
    unsafe {
        let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGINT);
        libc::sigaddset(set.as_mut_ptr(), libc::SIGTERM);
        let set = set.assume_init();
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Reads pending signals from a signalfd; returns the last signal number, if any.
pub fn read_signals(fd: RawFd) -> Option<i32> {
    let mut last = None;
    loop {
        let mut info = MaybeUninit::<libc::signalfd_siginfo>::zeroed();
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: `info` is writable for `size` bytes.
        let rc = unsafe { libc::read(fd, info.as_mut_ptr().cast(), size) };
        if rc != size as isize {
            return last;
        }
        // SAFETY: the kernel filled the whole struct.
        last = Some(unsafe { info.assume_init() }.ssi_signo as i32);
    }
}

/// `n` bytes from the OS random source (getrandom(2)).
pub fn os_random(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is writable for its length.
        let rc = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match cvt(rc) {
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A random u128 from the OS.
pub fn random_u128() -> io::Result<u128> {
    let mut b = [0u8; 16];
    os_random(&mut b)?;
    Ok(u128::from_ne_bytes(b))
}

/// A random u64 from the OS.
pub fn random_u64() -> io::Result<u64> {
    let mut b = [0u8; 8];
    os_random(&mut b)?;
    Ok(u64::from_ne_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trips() {
        for s in ["10.77.0.1:4000", "[::1]:5", "[2001:db8::1]:65535"] {
            let a: SocketAddr = s.parse().expect("addr");
            assert_eq!(RawSockAddr::new(&a).to_std(), Some(a));
        }
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:9".parse().expect("addr");
        assert_eq!(
            RawSockAddr::new(&mapped).to_std(),
            Some("10.0.0.1:9".parse().expect("addr"))
        );
    }

    #[test]
    fn two_iovec_datagram_arrives_whole() {
        use std::os::fd::AsRawFd;
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = RawSockAddr::new(&rx.local_addr().expect("addr"));
        let n = send_to_2(tx.as_raw_fd(), &to, b"head", b"-body").expect("send");
        assert_eq!(n, 9);
        send_to_2(tx.as_raw_fd(), &to, b"", b"only").expect("send");
        let mut buf = [MaybeUninit::<u8>::uninit(); 4];
        rx.set_nonblocking(false).expect("blocking");
        let (n, from) = recv_from(rx.as_raw_fd(), &mut buf).expect("recv");
        assert_eq!(n, 9, "MSG_TRUNC reports the full length");
        assert_eq!(from, tx.local_addr().ok());
        let mut buf = [MaybeUninit::<u8>::uninit(); 16];
        let (n, _) = recv_from(rx.as_raw_fd(), &mut buf).expect("recv");
        assert_eq!(n, 4);
        // SAFETY: the kernel initialised the first n bytes.
        let got: Vec<u8> = buf[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        assert_eq!(got, b"only");
    }

    #[test]
    fn batched_datagrams_arrive_whole() {
        use std::os::fd::AsRawFd;
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = alm_core::PeerAddr(rx.local_addr().expect("addr"));
        let big = bytes::Bytes::from(vec![7u8; 3000]);
        let msgs = vec![
            alm_core::Transmit::datagram(to, bytes::Bytes::from_static(b"one")),
            alm_core::Transmit::datagram(to, big.clone()),
        ];
        let (sent, len) = send_many(tx.as_raw_fd(), &msgs).expect("send");
        assert_eq!((sent, len), (2, 3003));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut slots = vec![0u8; 4 * 16];
        let mut overflow = vec![0u8; 4 * 4096];
        let mut out = [Received::default(); 4];
        let got = recv_many(rx.as_raw_fd(), &mut slots, 16, &mut overflow, &mut out).expect("recv");
        assert_eq!(got, 2);
        assert_eq!(out[0].len, 3);
        assert_eq!(&slots[..3], b"one");
        assert_eq!(out[0].from, tx.local_addr().ok());
        assert_eq!(out[1].len, 3000);
        assert!(
            slots[16..32]
                .iter()
                .chain(&overflow[4096..4096 + 2984])
                .all(|&b| b == 7)
        );
    }

    #[test]
    fn randomness_differs() {
        assert_ne!(random_u128().expect("rng"), random_u128().expect("rng"));
    }

    #[test]
    fn closed_port_is_reported_through_the_error_queue() {
        use std::os::fd::AsRawFd;
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        enable_recverr(tx.as_raw_fd(), false).expect("IP_RECVERR");
        let dead = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("port");
        send_to_2(tx.as_raw_fd(), &RawSockAddr::new(&dead), b"", b"ping").expect("send");
        let mut got = None;
        for _ in 0..100 {
            got = recv_icmp_error(tx.as_raw_fd()).expect("errqueue");
            if got.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let e = got.expect("an ICMP port unreachable");
        assert_eq!(e.dest, dead);
        assert_eq!(e.errno, libc::ECONNREFUSED);
        assert!(e.from_icmp);
        assert_eq!(recv_icmp_error(tx.as_raw_fd()).expect("empty"), None);
    }
}
