//! alm-tap: the Linux TAP device the multicast middleware sits behind.
//!
//! [`Tap::create`] opens `/dev/net/tun` in TAP mode (Ethernet frames, no packet
//! info header), makes the fd non-blocking and configures the interface the way
//! the middleware needs it (DESIGN.md, "Multicast semantics"):
//!
//! - the IPv4 address and netmask the management ring allocated (e.g. 172.16.0.5/20),
//! - the MTU (see [`tap_mtu_for_path`]: path MTU minus overheads, so nothing fragments),
//! - link flags `IFF_UP | IFF_RUNNING | IFF_MULTICAST`,
//! - the route `224.0.0.0/4 dev <tap>`, so applications' multicast (and the kernel's
//!   IGMP reports) leave through the TAP,
//! - IPv6 disabled on the interface, so no MLD/ND frames reach the middleware.
//!
//! Configuration uses ioctls on an `AF_INET` datagram socket, not the `ip` tool; only
//! if `SIOCADDRT` fails does it fall back to `ip route replace`, and it logs when it does.
//!
//! The fd is non-blocking: [`Tap::recv`] and [`Tap::send`] return
//! [`io::ErrorKind::WouldBlock`] instead of waiting. `Tap` implements [`AsRawFd`], so a
//! mio 1.x event loop registers it with `mio::unix::SourceFd(&tap.as_raw_fd())`.
//! Dropping the `Tap` removes the route and closes the fd; the kernel then deletes
//! the interface.
//!
//! Everything here acts in the network namespace of the thread that calls
//! [`Tap::create`] (namespaces are per thread on Linux); the tests rely on that.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Command, Stdio};

use tun_tap::{Iface, Mode};

/// The character device every TUN/TAP interface is created through.
pub const TUN_DEVICE: &str = "/dev/net/tun";

/// Smallest MTU [`tap_mtu_for_path`] returns and [`Tap::create`] accepts: 576 bytes is
/// the IPv4 datagram size every host must be able to receive (RFC 791, RFC 1122 §3.3.3).
pub const MIN_TAP_MTU: u16 = 576;

/// Longest interface name Linux accepts (`IFNAMSIZ` − 1 for the terminating NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// Bytes of Ethernet framing around an IP packet of MTU size as read from a TAP:
/// 14-byte header plus room for one 802.1Q tag.
pub const ETHERNET_OVERHEAD: usize = 18;

/// The multicast route every TAP gets: 224.0.0.0/4.
const MCAST_NET: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 0);
const MCAST_MASK: Ipv4Addr = Ipv4Addr::new(240, 0, 0, 0);

/// MTU to give the TAP so a full-size TAP packet, once wrapped in every overlay
/// header, still fits the underlay path without fragmenting.
///
/// `overhead` is the sum of everything the caller adds around the captured IPv4
/// packet (underlay IPv4 + UDP headers, alm's data header, an AEAD tag if a PSK is
/// used, …); this crate does not know it, the caller does.
///
/// The result never goes below [`MIN_TAP_MTU`] (576): on a path so small that the
/// overheads leave less than that, underlay fragmentation is preferable to a TAP on
/// which ordinary applications cannot send.
///
/// ```
/// assert_eq!(alm_tap::tap_mtu_for_path(1500, 60), 1440);
/// assert_eq!(alm_tap::tap_mtu_for_path(600, 100), 576);
/// ```
#[must_use]
pub fn tap_mtu_for_path(path_mtu: u16, overhead: u16) -> u16 {
    path_mtu.saturating_sub(overhead).max(MIN_TAP_MTU)
}

/// How to create and configure a TAP device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    /// Interface name, e.g. `"alm0"`: 1 to 15 letters, digits, `-`, `_` or `.`.
    pub name: String,
    /// The TAP's own IPv4 address, e.g. 172.16.0.5.
    pub addr: Ipv4Addr,
    /// Prefix length of the TAP subnet, e.g. 20 for 172.16.0.0/20.
    pub prefix_len: u8,
    /// Interface MTU (IP packet size, without the Ethernet header); at least 576.
    pub mtu: u16,
}

impl TapConfig {
    /// Checks the configuration without touching the system.
    pub fn validate(&self) -> Result<(), TapError> {
        validate_name(&self.name)?;
        let bad = |reason: &'static str| TapError::InvalidConfig {
            name: self.name.clone(),
            reason: reason.to_owned(),
        };
        if self.prefix_len == 0 || self.prefix_len > 32 {
            return Err(TapError::InvalidConfig {
                name: self.name.clone(),
                reason: format!(
                    "prefix length /{} is not between /1 and /32",
                    self.prefix_len
                ),
            });
        }
        if self.addr.is_unspecified()
            || self.addr.is_multicast()
            || self.addr.is_broadcast()
            || self.addr.is_loopback()
        {
            return Err(bad(
                "the address must be a unicast address that is not 0.0.0.0, loopback or broadcast",
            ));
        }
        if self.mtu < MIN_TAP_MTU {
            return Err(TapError::InvalidConfig {
                name: self.name.clone(),
                reason: format!("MTU {} is below the minimum of {MIN_TAP_MTU}", self.mtu),
            });
        }
        Ok(())
    }

    /// The netmask for `prefix_len` (e.g. 255.255.240.0 for /20).
    #[must_use]
    pub fn netmask(&self) -> Ipv4Addr {
        prefix_to_mask(self.prefix_len)
    }
}

fn prefix_to_mask(prefix_len: u8) -> Ipv4Addr {
    let bits = u32::from(prefix_len.min(32));
    // A shift by 32 would overflow, hence checked_shl.
    Ipv4Addr::from(u32::MAX.checked_shl(32 - bits).unwrap_or(0))
}

/// Checks that `name` can be a TAP interface name: 1 to 15 bytes of ASCII letters,
/// digits, `-`, `_` or `.` (no `%d` templates, no `/`, not `.` or `..`).
pub fn validate_name(name: &str) -> Result<(), TapError> {
    let invalid = |reason: &'static str| TapError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("it is longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are reserved"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(invalid(
            "it contains a character other than letters, digits, '-', '_' or '.'",
        ));
    }
    Ok(())
}

/// The configuration step a [`TapError::Configure`] happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapStep {
    /// `FIONBIO` on the TAP fd.
    NonBlocking,
    /// `socket(AF_INET, SOCK_DGRAM)` for the configuration ioctls.
    ControlSocket,
    /// `SIOCSIFADDR`.
    Address,
    /// `SIOCSIFNETMASK`.
    Netmask,
    /// `SIOCSIFMTU`.
    Mtu,
    /// `SIOCGIFFLAGS` / `SIOCSIFFLAGS`.
    LinkUp,
    /// `SIOCGIFHWADDR`.
    HardwareAddress,
    /// `SIOCADDRT` (and the `ip route replace` fallback).
    MulticastRoute,
}

impl fmt::Display for TapStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TapStep::NonBlocking => "setting the device non-blocking",
            TapStep::ControlSocket => "opening an AF_INET control socket",
            TapStep::Address => "setting the IPv4 address",
            TapStep::Netmask => "setting the netmask",
            TapStep::Mtu => "setting the MTU",
            TapStep::LinkUp => "bringing the link up",
            TapStep::HardwareAddress => "reading the MAC address",
            TapStep::MulticastRoute => "adding the route 224.0.0.0/4",
        })
    }
}

/// Why a TAP device could not be created. Each message is one sentence that says
/// what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TapError {
    /// `/dev/net/tun` does not exist or its driver is not loaded.
    #[error(
        "/dev/net/tun is missing: load the tun module (modprobe tun) or run in a container with --device /dev/net/tun"
    )]
    NoTunDevice,
    /// EPERM/EACCES: not root and no CAP_NET_ADMIN.
    #[error(
        "creating TAP device {name} needs root or CAP_NET_ADMIN: run almd with sudo or grant cap_net_admin"
    )]
    NotPermitted {
        /// Requested interface name.
        name: String,
    },
    /// EBUSY: another process holds a TAP with this name.
    #[error(
        "TAP device name {name} is already in use by another process: stop that process or choose another name"
    )]
    NameBusy {
        /// Requested interface name.
        name: String,
    },
    /// The name fails our checks, or the kernel refused it (EINVAL: typically an
    /// existing interface that is not a TAP has it).
    #[error("TAP device name {name:?} cannot be used because {reason}: choose another name")]
    InvalidName {
        /// Requested interface name.
        name: String,
        /// Why, as a clause.
        reason: &'static str,
    },
    /// Address, prefix length or MTU out of range.
    #[error("TAP device {name} cannot be configured because {reason}: fix the configuration")]
    InvalidConfig {
        /// Requested interface name.
        name: String,
        /// Why, as a clause.
        reason: String,
    },
    /// Opening `/dev/net/tun` or `TUNSETIFF` failed for another reason.
    #[error("creating TAP device {name} through /dev/net/tun failed: {source}")]
    Open {
        /// Requested interface name.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The device exists but one configuration step failed (the device is removed again).
    #[error("configuring TAP device {name} failed while {step}: {source}")]
    Configure {
        /// Interface name.
        name: String,
        /// Which step.
        step: TapStep,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl TapError {
    /// Classifies an error from opening `/dev/net/tun` + `TUNSETIFF`.
    #[must_use]
    pub fn from_open_error(name: &str, err: io::Error) -> TapError {
        let name_owned = || name.to_owned();
        match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
                return TapError::NoTunDevice;
            }
            Some(libc::EPERM) | Some(libc::EACCES) => {
                return TapError::NotPermitted { name: name_owned() };
            }
            Some(libc::EBUSY) => return TapError::NameBusy { name: name_owned() },
            Some(libc::EINVAL) => {
                return TapError::InvalidName {
                    name: name_owned(),
                    reason: "the kernel refused it (an interface that is not a TAP may already have it)",
                };
            }
            _ => {}
        }
        // Errors without an errno (e.g. built by hand) still map by kind.
        match err.kind() {
            io::ErrorKind::NotFound => TapError::NoTunDevice,
            io::ErrorKind::PermissionDenied => TapError::NotPermitted { name: name_owned() },
            io::ErrorKind::ResourceBusy => TapError::NameBusy { name: name_owned() },
            _ => TapError::Open {
                name: name_owned(),
                source: err,
            },
        }
    }

    /// Classifies an error from a configuration step. Permission errors get the
    /// "needs root" message whatever the step.
    #[must_use]
    pub fn from_configure_error(name: &str, step: TapStep, err: io::Error) -> TapError {
        match err.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => TapError::NotPermitted {
                name: name.to_owned(),
            },
            _ => TapError::Configure {
                name: name.to_owned(),
                step,
                source: err,
            },
        }
    }
}

/// How the multicast route was installed, so Drop can remove it the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteInstall {
    Ioctl,
    IpCommand,
}

/// A configured, non-blocking Linux TAP device. Dropping it removes the interface.
#[derive(Debug)]
pub struct Tap {
    // Field order matters only for readability: Drop removes the route, then the
    // fields drop and closing `iface` deletes the interface.
    iface: Iface,
    /// AF_INET datagram socket in the namespace the TAP was created in; used for
    /// ioctls, including the route removal on drop.
    ctl: OwnedFd,
    name: String,
    addr: Ipv4Addr,
    prefix_len: u8,
    mac: [u8; 6],
    mtu: u16,
    route: Option<RouteInstall>,
}

impl Tap {
    /// Creates the TAP device and configures address, netmask, MTU, link state,
    /// the 224.0.0.0/4 route, and disables IPv6 on it.
    ///
    /// On any failure after the device exists, the device is removed again.
    pub fn create(cfg: &TapConfig) -> Result<Tap, TapError> {
        cfg.validate()?;
        if !Path::new(TUN_DEVICE).exists() {
            return Err(TapError::NoTunDevice);
        }
        let iface = Iface::without_packet_info(&cfg.name, Mode::Tap)
            .map_err(|e| TapError::from_open_error(&cfg.name, e))?;
        let name = iface.name().to_owned();
        let step_err = |step: TapStep| {
            let name = name.clone();
            move |e: io::Error| TapError::from_configure_error(&name, step, e)
        };
        iface
            .set_non_blocking()
            .map_err(step_err(TapStep::NonBlocking))?;
        let ctl = control_socket().map_err(step_err(TapStep::ControlSocket))?;

        // Before the link goes up, so the kernel never sends MLD/ND frames on it.
        disable_ipv6(&name);

        let fd = ctl.as_raw_fd();
        let mut ifr = ifreq_for(&name);
        ifr.ifr_ifru.ifru_addr = sockaddr_v4(cfg.addr);
        ifreq_ioctl(fd, libc::SIOCSIFADDR, &mut ifr).map_err(step_err(TapStep::Address))?;

        let mut ifr = ifreq_for(&name);
        ifr.ifr_ifru.ifru_netmask = sockaddr_v4(cfg.netmask());
        ifreq_ioctl(fd, libc::SIOCSIFNETMASK, &mut ifr).map_err(step_err(TapStep::Netmask))?;

        let mut ifr = ifreq_for(&name);
        ifr.ifr_ifru.ifru_mtu = libc::c_int::from(cfg.mtu);
        ifreq_ioctl(fd, libc::SIOCSIFMTU, &mut ifr).map_err(step_err(TapStep::Mtu))?;

        set_link_up(fd, &name).map_err(step_err(TapStep::LinkUp))?;
        let mac = read_mac(fd, &name).map_err(step_err(TapStep::HardwareAddress))?;

        let route = add_multicast_route(fd, &name).map_err(step_err(TapStep::MulticastRoute))?;
        tracing::info!(
            tap = %name, addr = %cfg.addr, prefix_len = cfg.prefix_len, mtu = cfg.mtu,
            mac = %format_mac(&mac), "TAP device up"
        );
        Ok(Tap {
            iface,
            ctl,
            name,
            addr: cfg.addr,
            prefix_len: cfg.prefix_len,
            mac,
            mtu: cfg.mtu,
            route: Some(route),
        })
    }

    /// Reads one Ethernet frame into `buf`; returns its length. Non-blocking:
    /// `WouldBlock` when no frame is queued. A frame longer than `buf` is truncated,
    /// so size `buf` with [`Tap::frame_capacity`].
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.iface.recv(buf)
    }

    /// Writes one Ethernet frame into the TAP (the host receives it as if from the
    /// wire). Non-blocking: `WouldBlock` passes through.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        self.iface.send(frame)
    }

    /// The interface name the kernel gave the device.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface's MAC address.
    #[must_use]
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The MTU the interface was configured with.
    #[must_use]
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// The TAP's IPv4 address.
    #[must_use]
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The TAP subnet's prefix length.
    #[must_use]
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// A receive buffer size that holds any frame the TAP can deliver: MTU plus
    /// Ethernet header and one VLAN tag.
    #[must_use]
    pub fn frame_capacity(&self) -> usize {
        usize::from(self.mtu) + ETHERNET_OVERHEAD
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.iface.as_raw_fd()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        // Closing the fd deletes the interface and with it the route; removing the
        // route first keeps the order explicit and errors are irrelevant here.
        match self.route.take() {
            Some(RouteInstall::Ioctl) => {
                if let Ok(mut rt) = multicast_rtentry(&self.name) {
                    let _ = route_ioctl(self.ctl.as_raw_fd(), libc::SIOCDELRT, &mut rt.entry);
                }
            }
            Some(RouteInstall::IpCommand) => {
                let _ = Command::new("ip")
                    .args(["route", "del", "224.0.0.0/4", "dev", &self.name])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            None => {}
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`.
#[must_use]
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

// ---------------------------------------------------------------------------
// ioctl plumbing

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; we check the result before using it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created, valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A zeroed `ifreq` carrying `name` (already validated to fit IFNAMSIZ − 1).
fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is a plain C struct of integers, byte arrays and a raw pointer
    // in a union; all-zero bytes are a valid value of every member.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes().take(MAX_NAME_LEN)) {
        *dst = src as libc::c_char;
    }
    ifr
}

/// Builds a `sockaddr` holding an AF_INET address (the `sockaddr_in` layout:
/// port in `sa_data[0..2]`, address in `sa_data[2..6]`), without any unsafe cast.
fn sockaddr_v4(addr: Ipv4Addr) -> libc::sockaddr {
    let mut sa = libc::sockaddr {
        sa_family: libc::AF_INET as libc::sa_family_t,
        sa_data: [0; 14],
    };
    for (dst, src) in sa.sa_data[2..6].iter_mut().zip(addr.octets()) {
        *dst = src as libc::c_char;
    }
    sa
}

fn ifreq_ioctl(fd: RawFd, request: libc::c_ulong, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: `fd` is an open socket; `ifr` is a valid, exclusively borrowed `ifreq`
    // that outlives the call, and every request passed here (SIOC[GS]IF*) reads and
    // writes exactly one `ifreq`.
    let rc = unsafe { libc::ioctl(fd, request as _, ifr as *mut libc::ifreq) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_link_up(fd: RawFd, name: &str) -> io::Result<()> {
    let mut ifr = ifreq_for(name);
    ifreq_ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS filled `ifru_flags`; it is a plain c_short, any bit
    // pattern is valid.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    // IFF_RUNNING is reported by the kernel (carrier on while our fd is open); the
    // kernel ignores it in SIOCSIFFLAGS, setting it is harmless.
    let wanted = (libc::IFF_UP | libc::IFF_RUNNING | libc::IFF_MULTICAST) as libc::c_short;
    ifr.ifr_ifru.ifru_flags = flags | wanted;
    ifreq_ioctl(fd, libc::SIOCSIFFLAGS, &mut ifr)
}

fn read_flags(fd: RawFd, name: &str) -> io::Result<libc::c_int> {
    let mut ifr = ifreq_for(name);
    ifreq_ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS filled `ifru_flags`, a plain integer.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    // The kernel's flags word is 16 bits here; reinterpret, don't sign-extend.
    Ok(libc::c_int::from(flags as u16))
}

fn read_mac(fd: RawFd, name: &str) -> io::Result<[u8; 6]> {
    let mut ifr = ifreq_for(name);
    ifreq_ioctl(fd, libc::SIOCGIFHWADDR, &mut ifr)?;
    // SAFETY: SIOCGIFHWADDR filled `ifru_hwaddr`, a plain `sockaddr` of integers.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(sa.sa_data) {
        *dst = src as u8;
    }
    Ok(mac)
}

/// The kernel's `struct rtentry` (include/uapi/linux/route.h). Defined here
/// because the libc crate has it only for musl/uclibc.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// An `RtEntry` together with the device-name string its `rt_dev` points into.
struct OwnedRtEntry {
    entry: RtEntry,
    _dev: CString,
}

const RTF_UP: libc::c_ushort = 0x0001;

fn multicast_rtentry(name: &str) -> io::Result<OwnedRtEntry> {
    let dev = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let unspecified = libc::sockaddr {
        sa_family: 0,
        sa_data: [0; 14],
    };
    let entry = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_v4(MCAST_NET),
        rt_gateway: unspecified,
        rt_genmask: sockaddr_v4(MCAST_MASK),
        rt_flags: RTF_UP,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        // The kernel only reads through this pointer (copies the name in).
        rt_dev: dev.as_ptr().cast_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // Moving a CString does not move its heap buffer, so `rt_dev` stays valid.
    Ok(OwnedRtEntry { entry, _dev: dev })
}

fn route_ioctl(fd: RawFd, request: libc::c_ulong, rt: &mut RtEntry) -> io::Result<()> {
    // SAFETY: `fd` is an open AF_INET socket; `rt` is a valid `struct rtentry` whose
    // `rt_dev` points to a NUL-terminated string owned by the caller for the whole
    // call; SIOCADDRT/SIOCDELRT only read the struct.
    let rc = unsafe { libc::ioctl(fd, request as _, rt as *mut RtEntry) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn add_multicast_route(fd: RawFd, name: &str) -> io::Result<RouteInstall> {
    let mut rt = multicast_rtentry(name)?;
    let ioctl_err = match route_ioctl(fd, libc::SIOCADDRT, &mut rt.entry) {
        Ok(()) => return Ok(RouteInstall::Ioctl),
        Err(e) => e,
    };
    tracing::warn!(
        tap = %name, error = %ioctl_err,
        "SIOCADDRT for 224.0.0.0/4 failed; falling back to `ip route replace 224.0.0.0/4 dev {name}`"
    );
    let out = Command::new("ip")
        .args(["route", "replace", "224.0.0.0/4", "dev", name])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(RouteInstall::IpCommand),
        Ok(o) => Err(io::Error::new(
            ioctl_err.kind(),
            format!(
                "{ioctl_err}; `ip route replace` also failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        )),
        Err(e) => Err(io::Error::new(
            ioctl_err.kind(),
            format!("{ioctl_err}; running `ip` also failed: {e}"),
        )),
    }
}

/// Writes "1" to /proc/sys/net/ipv6/conf/NAME/disable_ipv6. Absent file (no IPv6
/// in this kernel) is fine; other failures are logged and ignored, since IPv6
/// frames are only noise the middleware filters by ethertype anyway.
fn disable_ipv6(name: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    match std::fs::write(&path, b"1") {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::debug!(tap = %name, error = %e, "could not disable IPv6 via {path}"),
    }
}

/// Introspection helpers, public for tests of code that creates TAPs (they act in
/// the calling thread's network namespace).
pub mod inspect {
    use super::*;

    /// Interface flags (`IFF_*`) of `name`.
    pub fn flags(name: &str) -> io::Result<libc::c_int> {
        let ctl = control_socket()?;
        read_flags(ctl.as_raw_fd(), name)
    }

    /// MTU of `name`.
    pub fn mtu(name: &str) -> io::Result<u32> {
        let ctl = control_socket()?;
        let mut ifr = ifreq_for(name);
        ifreq_ioctl(ctl.as_raw_fd(), libc::SIOCGIFMTU, &mut ifr)?;
        // SAFETY: SIOCGIFMTU filled `ifru_mtu`, a plain c_int.
        let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
        u32::try_from(mtu).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
    }

    /// IPv4 address and netmask of `name`.
    pub fn addr(name: &str) -> io::Result<(Ipv4Addr, Ipv4Addr)> {
        let ctl = control_socket()?;
        let mut ifr = ifreq_for(name);
        ifreq_ioctl(ctl.as_raw_fd(), libc::SIOCGIFADDR, &mut ifr)?;
        // SAFETY: SIOCGIFADDR filled `ifru_addr`, a plain sockaddr.
        let addr = unsafe { ifr.ifr_ifru.ifru_addr };
        let mut ifr = ifreq_for(name);
        ifreq_ioctl(ctl.as_raw_fd(), libc::SIOCGIFNETMASK, &mut ifr)?;
        // SAFETY: SIOCGIFNETMASK filled `ifru_netmask`, a plain sockaddr.
        let mask = unsafe { ifr.ifr_ifru.ifru_netmask };
        Ok((sockaddr_to_v4(&addr), sockaddr_to_v4(&mask)))
    }

    fn sockaddr_to_v4(sa: &libc::sockaddr) -> Ipv4Addr {
        let d = &sa.sa_data;
        Ipv4Addr::new(d[2] as u8, d[3] as u8, d[4] as u8, d[5] as u8)
    }

    /// True if the calling thread's namespace has the route `224.0.0.0/4 dev name`
    /// (read from /proc/thread-self/net/route, which follows the thread's netns).
    pub fn has_multicast_route(name: &str) -> io::Result<bool> {
        let table = std::fs::read_to_string("/proc/thread-self/net/route")?;
        // Columns: Iface Destination Gateway Flags RefCnt Use Metric Mask ...; the
        // addresses are little-endian hex of the network-order u32.
        let dst = format!("{:08X}", u32::from_ne_bytes(MCAST_NET.octets()));
        let mask = format!("{:08X}", u32::from_ne_bytes(MCAST_MASK.octets()));
        Ok(table.lines().skip(1).any(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 7 && cols[0] == name && cols[1] == dst && cols[7] == mask
        }))
    }
}

#[cfg(test)]
mod tests;
