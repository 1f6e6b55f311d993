//! `almd` command line and configuration file.
//!
//! Owns no runtime state: it turns argv (clap derive) and an optional TOML file
//! (serde, `deny_unknown_fields`) into a validated [`RunConfig`] for `almd run`,
//! or a [`QueryArgs`] for `almd status` / `almd groups`.
//!
//! The file uses the same keys as the long options of `almd run` (without the
//! dashes, kebab-case: `listen`, `advertise`, `bootstrap`, `tap`, `tap-addr`, `tap-prefix`,
//! `control`, `max-children`, `node-id`, `seed`, `mtu`, `psk-file`). A value given on the
//! command line overrides the file's; `--bootstrap` given at all replaces the
//! file's whole list.
//!
//! ```toml
//! listen = "10.77.0.1:4000"   # or "0.0.0.0:4000" with advertise = "10.77.0.1:4000"
//! bootstrap = ["10.77.0.2:4000", "10.77.0.3:4000"]
//! tap = "alm0"
//! tap-addr = "auto"            # the default with tap; or e.g. "172.16.0.5/20"
//! tap-prefix = "172.16.0.0/20" # the pool auto addresses come from
//! max-children = 8
//! node-id = "0123456789abcdef0123456789abcdef"
//! ```
//!
//! Every error is one sentence naming the option (or file and key) and the fix.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

/// TAP name used when only `--tap-addr` is given.
pub const DEFAULT_TAP_NAME: &str = "alm0";

/// The pool `--tap-addr auto` allocates from when `--tap-prefix` is not given
/// (the engine's default, `alm_core::mgmt::MgmtConfig`).
pub const DEFAULT_TAP_PREFIX: (Ipv4Addr, u8) = (Ipv4Addr::new(172, 16, 0, 0), 20);

/// Control socket path when running as root.
pub const ROOT_CONTROL_PATH: &str = "/run/almd.sock";

/// Longest path a Unix socket address can hold (`sun_path` is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The smallest MTU alm accepts (same floor as the TAP crate).
pub const MIN_MTU: u16 = alm_tap::MIN_TAP_MTU;

/// `almd`: unmodified IP-multicast applications over a Pastry/Scribe overlay.
#[derive(Debug, Parser)]
#[command(name = "almd", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `almd` subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once per process")]
pub enum Command {
    /// Run an overlay node (and, with --tap, the multicast middleware).
    Run(RunArgs),
    /// Print the running node's status.
    Status(QueryArgs),
    /// Print the multicast groups the running node knows.
    Groups(QueryArgs),
}

/// Options of `almd run`, as typed. Turn them into a [`RunConfig`] with
/// [`RunArgs::resolve`].
#[derive(Debug, Default, Clone, Args)]
pub struct RunArgs {
    /// Underlay address to listen on (UDP and TCP), e.g. 10.77.0.1:4000, or
    /// 0.0.0.0:4000 together with --advertise.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<String>,
    /// The address other nodes use to reach this node [default: --listen;
    /// required when --listen has the unspecified address 0.0.0.0 or ::].
    #[arg(long, value_name = "IP:PORT")]
    pub advertise: Option<String>,
    /// An overlay node to join through; repeat for several. None: start a new overlay.
    #[arg(long, value_name = "IP:PORT")]
    pub bootstrap: Vec<String>,
    /// Create a TAP device with this name and act as the host's multicast router.
    #[arg(long, value_name = "NAME")]
    pub tap: Option<String>,
    /// Address of the TAP device, e.g. 172.16.0.5/20, or `auto` to allocate a
    /// unique one from --tap-prefix once joined [default with --tap: auto]
    /// (implies --tap alm0).
    #[arg(long, value_name = "CIDR|auto")]
    pub tap_addr: Option<String>,
    /// Address pool of --tap-addr auto [default: 172.16.0.0/20].
    #[arg(long, value_name = "CIDR")]
    pub tap_prefix: Option<String>,
    /// Control socket path [default: /run/almd.sock as root, else $XDG_RUNTIME_DIR/almd.sock].
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// TOML configuration file; command-line options override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Most children this node accepts in each multicast tree (its out-degree).
    #[arg(long, value_name = "N")]
    pub max_children: Option<u16>,
    /// This node's 128-bit id as hex [default: random].
    #[arg(long, value_name = "HEX")]
    pub node_id: Option<String>,
    /// Seed for the node's random number generator [default: random].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// MTU of the TAP device [default: underlay path MTU minus overheads].
    #[arg(long, value_name = "N")]
    pub mtu: Option<u16>,
    /// File holding the overlay's pre-shared key; without it traffic is not sealed.
    #[arg(long, value_name = "PATH")]
    pub psk_file: Option<PathBuf>,
}

/// Options of `almd status` and `almd groups`.
#[derive(Debug, Default, Clone, Args)]
pub struct QueryArgs {
    /// Control socket of the running almd [default: as for `almd run`].
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Print the raw JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl QueryArgs {
    /// The control socket to connect to: `--control` or the default.
    #[must_use]
    pub fn control_path(&self) -> PathBuf {
        self.control.clone().unwrap_or_else(default_control_path)
    }
}

/// How the TAP device gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapAddr {
    /// Given on the command line.
    Fixed {
        /// Interface address.
        addr: Ipv4Addr,
        /// Subnet prefix length.
        prefix_len: u8,
    },
    /// Allocated in the overlay from this pool (`--tap-addr auto`); the TAP
    /// is created once the address is ours.
    Auto {
        /// The pool's network address.
        prefix: Ipv4Addr,
        /// The pool's prefix length (also the TAP's).
        prefix_len: u8,
    },
}

/// The TAP device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSpec {
    /// Interface name.
    pub name: String,
    /// Interface address, or how to get one.
    pub addr: TapAddr,
}

/// A validated configuration for `almd run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    /// Underlay listen address (UDP and TCP).
    pub listen: SocketAddr,
    /// The address this node gives the overlay (`--advertise`); `None`: the
    /// bound listen address, which then is a specific IP.
    pub advertise: Option<SocketAddr>,
    /// Overlay nodes to join through; empty: start a new overlay.
    pub bootstrap: Vec<SocketAddr>,
    /// TAP device, if the middleware is enabled.
    pub tap: Option<TapSpec>,
    /// Control socket path.
    pub control: PathBuf,
    /// Per-tree out-degree limit.
    pub max_children: Option<u16>,
    /// Fixed node id.
    pub node_id: Option<u128>,
    /// RNG seed.
    pub seed: Option<u64>,
    /// TAP MTU override (≥ 576).
    pub mtu: Option<u16>,
    /// Pre-shared key file (not read here).
    pub psk_file: Option<PathBuf>,
}

/// The configuration file's contents, before validation. Keys are the long
/// option names.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// See `--listen`.
    pub listen: Option<String>,
    /// See `--advertise`.
    pub advertise: Option<String>,
    /// See `--bootstrap`.
    pub bootstrap: Option<Vec<String>>,
    /// See `--tap`.
    pub tap: Option<String>,
    /// See `--tap-addr`.
    pub tap_addr: Option<String>,
    /// See `--tap-prefix`.
    pub tap_prefix: Option<String>,
    /// See `--control`.
    pub control: Option<PathBuf>,
    /// See `--max-children`.
    pub max_children: Option<u16>,
    /// See `--node-id`.
    pub node_id: Option<String>,
    /// See `--seed`.
    pub seed: Option<u64>,
    /// See `--mtu`.
    pub mtu: Option<u16>,
    /// See `--psk-file`.
    pub psk_file: Option<PathBuf>,
}

/// The keys [`FileConfig`] accepts, for "did you mean" hints.
pub const FILE_KEYS: &[&str] = &[
    "listen",
    "advertise",
    "bootstrap",
    "tap",
    "tap-addr",
    "tap-prefix",
    "control",
    "max-children",
    "node-id",
    "seed",
    "mtu",
    "psk-file",
];

/// A configuration that cannot be used. Display is one sentence.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is missing, malformed or out of range (the message names it).
    #[error("{0}")]
    Invalid(String),
    /// The configuration file could not be read.
    #[error("config file {} cannot be read: {source}: check the --config path", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The default control socket: `/run/almd.sock` for root, otherwise
/// `$XDG_RUNTIME_DIR/almd.sock`, otherwise `/tmp/almd-UID.sock`.
#[must_use]
pub fn default_control_path() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    default_control_path_for(euid, std::env::var_os("XDG_RUNTIME_DIR"))
}

/// [`default_control_path`] with its inputs made explicit (for tests).
#[must_use]
pub fn default_control_path_for(euid: u32, xdg_runtime_dir: Option<OsString>) -> PathBuf {
    if euid == 0 {
        return PathBuf::from(ROOT_CONTROL_PATH);
    }
    match xdg_runtime_dir.map(PathBuf::from) {
        // The XDG spec says to ignore a relative value.
        Some(dir) if dir.is_absolute() => dir.join("almd.sock"),
        _ => PathBuf::from(format!("/tmp/almd-{euid}.sock")),
    }
}

/// Where a value came from, for error messages.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Cli,
    File(&'a Path),
}

impl Origin<'_> {
    /// `--tap-addr` or `config file /x.toml: tap-addr`.
    fn label(self, key: &str) -> String {
        match self {
            Origin::Cli => format!("--{key}"),
            Origin::File(p) => format!("config file {}: {key}", p.display()),
        }
    }
}

/// The command-line value if given, else the file's, with its origin.
fn pick<'a, T>(cli: Option<T>, file: Option<T>, path: Option<&'a Path>) -> Option<(T, Origin<'a>)> {
    match (cli, file, path) {
        (Some(v), _, _) => Some((v, Origin::Cli)),
        (None, Some(v), Some(p)) => Some((v, Origin::File(p))),
        (None, Some(v), None) => Some((v, Origin::Cli)),
        (None, None, _) => None,
    }
}

impl RunArgs {
    /// Reads `--config` (if given) and validates everything into a [`RunConfig`].
    pub fn resolve(&self) -> Result<RunConfig, ConfigError> {
        match &self.config {
            None => resolve_run(self, None),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let file = parse_file(path, &text)?;
                resolve_run(self, Some((path, &file)))
            }
        }
    }
}

/// Parses a configuration file's text. Unknown keys get a "did you mean" hint,
/// type errors name the line.
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    let at_line = |span: Option<std::ops::Range<usize>>| match span {
        Some(s) => format!(
            " line {}",
            text[..s.start.min(text.len())].matches('\n').count() + 1
        ),
        None => String::new(),
    };
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigError::Invalid(format!(
            "config file {}{}: {}",
            path.display(),
            at_line(e.span()),
            e.message().trim_end()
        ))
    })?;
    for key in table.keys() {
        if !FILE_KEYS.contains(&key.as_str()) {
            let hint = match closest_key(key) {
                Some(k) => format!(" (did you mean '{k}'?)"),
                None => format!(" (known keys: {})", FILE_KEYS.join(", ")),
            };
            return Err(ConfigError::Invalid(format!(
                "config file {}: unknown key '{key}'{hint}",
                path.display()
            )));
        }
    }
    toml::from_str::<FileConfig>(text).map_err(|e| {
        ConfigError::Invalid(format!(
            "config file {}{}: {}",
            path.display(),
            at_line(e.span()),
            e.message().trim_end()
        ))
    })
}

/// The known key closest to `key` (edit distance ≤ 2, or `_` written for `-`).
fn closest_key(key: &str) -> Option<&'static str> {
    let normalized = key.to_ascii_lowercase().replace('_', "-");
    FILE_KEYS
        .iter()
        .map(|k| (edit_distance(&normalized, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Merges command line and file (command line wins) and validates.
pub fn resolve_run(
    cli: &RunArgs,
    file: Option<(&Path, &FileConfig)>,
) -> Result<RunConfig, ConfigError> {
    let empty = FileConfig::default();
    let (path, f) = match file {
        Some((p, f)) => (Some(p), f),
        None => (None, &empty),
    };
    let invalid = |msg: String| ConfigError::Invalid(msg);

    let listen = match pick(cli.listen.clone(), f.listen.clone(), path) {
        Some((v, o)) => parse_socket_addr(&v, o.label("listen"), "10.77.0.1:4000")?,
        None => {
            return Err(invalid(
                "--listen is required: give the underlay address to listen on, e.g. --listen 10.77.0.1:4000 (or listen = \"10.77.0.1:4000\" in the config file)".into(),
            ));
        }
    };
    let listen_origin = pick(cli.listen.as_ref(), f.listen.as_ref(), path).map(|(_, o)| o);

    let advertise = match pick(cli.advertise.clone(), f.advertise.clone(), path) {
        Some((v, o)) => Some(parse_advertise(&v, o, listen)?),
        None if listen.ip().is_unspecified() => {
            return Err(invalid(unspecified_listen_message(
                listen,
                listen_origin.unwrap_or(Origin::Cli),
            )));
        }
        None => None,
    };

    let bootstrap_src = if cli.bootstrap.is_empty() {
        f.bootstrap
            .clone()
            .map(|b| (b, path.map_or(Origin::Cli, Origin::File)))
    } else {
        Some((cli.bootstrap.clone(), Origin::Cli))
    };
    let mut bootstrap = Vec::new();
    if let Some((list, origin)) = bootstrap_src {
        for v in list {
            let addr = parse_socket_addr(&v, origin.label("bootstrap"), "10.77.0.1:4000")?;
            if addr == listen {
                return Err(invalid(format!(
                    "{} {v} is this node's own --listen address: give the address of another node",
                    origin.label("bootstrap")
                )));
            }
            if Some(addr) == advertise {
                return Err(invalid(format!(
                    "{} {v} is this node's own --advertise address: give the address of another node",
                    origin.label("bootstrap")
                )));
            }
            if !bootstrap.contains(&addr) {
                bootstrap.push(addr);
            }
        }
    }

    let tap_name = pick(cli.tap.clone(), f.tap.clone(), path);
    let tap_addr = pick(cli.tap_addr.clone(), f.tap_addr.clone(), path);
    let tap_prefix = match pick(cli.tap_prefix.clone(), f.tap_prefix.clone(), path) {
        Some((v, o)) => Some((parse_tap_prefix(&v, o)?, v, o)),
        None => None,
    };
    let tap = match (tap_name, tap_addr) {
        (None, None) => {
            if let Some((_, v, o)) = tap_prefix {
                return Err(invalid(format!(
                    "{} {v} is only used with --tap: add --tap {DEFAULT_TAP_NAME}",
                    o.label("tap-prefix")
                )));
            }
            None
        }
        (name, addr) => {
            let name = match name {
                Some((name, no)) => {
                    check_tap_name(&name, no)?;
                    name
                }
                None => DEFAULT_TAP_NAME.to_owned(),
            };
            let addr = match addr {
                Some((cidr, o)) if !cidr.trim().eq_ignore_ascii_case("auto") => {
                    if let Some((_, v, po)) = tap_prefix {
                        return Err(invalid(format!(
                            "{} {v} is only used with --tap-addr auto, but {} is {cidr}: drop one of them",
                            po.label("tap-prefix"),
                            o.label("tap-addr")
                        )));
                    }
                    let (addr, prefix_len) = parse_tap_cidr(&cidr, o)?;
                    TapAddr::Fixed { addr, prefix_len }
                }
                _ => {
                    let (prefix, prefix_len) = tap_prefix.map_or(DEFAULT_TAP_PREFIX, |(p, _, _)| p);
                    TapAddr::Auto { prefix, prefix_len }
                }
            };
            Some(TapSpec { name, addr })
        }
    };

    let control = match pick(cli.control.clone(), f.control.clone(), path) {
        Some((p, o)) => {
            check_control_path(&p, o.label("control"))?;
            p
        }
        None => default_control_path(),
    };

    let node_id = match pick(cli.node_id.clone(), f.node_id.clone(), path) {
        Some((v, o)) => Some(parse_node_id(&v).ok_or_else(|| {
            invalid(format!(
                "{} {v} is not a node id of 1 to 32 hex digits like 0123456789abcdef0123456789abcdef",
                o.label("node-id")
            ))
        })?),
        None => None,
    };

    let mtu = match pick(cli.mtu, f.mtu, path) {
        Some((m, o)) if m < MIN_MTU => {
            return Err(invalid(format!(
                "{} {m} is below {MIN_MTU}, the smallest MTU alm supports: give {MIN_MTU} or more",
                o.label("mtu")
            )));
        }
        other => other.map(|(m, _)| m),
    };

    let psk_file = match pick(cli.psk_file.clone(), f.psk_file.clone(), path) {
        Some((p, o)) if p.as_os_str().is_empty() => {
            return Err(invalid(format!(
                "{} is empty: give the path of the pre-shared key file",
                o.label("psk-file")
            )));
        }
        other => other.map(|(p, _)| p),
    };

    Ok(RunConfig {
        listen,
        advertise,
        bootstrap,
        tap,
        control,
        max_children: pick(cli.max_children, f.max_children, path).map(|(v, _)| v),
        node_id,
        seed: pick(cli.seed, f.seed, path).map(|(v, _)| v),
        mtu,
        psk_file,
    })
}

fn parse_socket_addr(v: &str, label: String, example: &str) -> Result<SocketAddr, ConfigError> {
    v.trim().parse().map_err(|_| {
        ConfigError::Invalid(format!(
            "{label} {v} is not an IP:PORT address like {example}"
        ))
    })
}

/// The error for an unspecified `--listen` IP without `--advertise`: other
/// nodes would learn 0.0.0.0 (or ::) as this node's address.
fn unspecified_listen_message(listen: SocketAddr, o: Origin<'_>) -> String {
    let port = match listen.port() {
        0 => "PORT".to_owned(),
        p => p.to_string(),
    };
    let host = if listen.is_ipv6() {
        "[<this host's IP>]"
    } else {
        "<this host's IP>"
    };
    let fix = match o {
        Origin::Cli => format!("--advertise {host}:{port}"),
        Origin::File(_) => format!("advertise = \"{host}:{port}\""),
    };
    format!(
        "{} {listen} does not say which address other hosts should use: add {fix}",
        o.label("listen")
    )
}

/// Parses `--advertise`: a specific unicast IP of the listen address's
/// family, and a port.
fn parse_advertise(v: &str, o: Origin<'_>, listen: SocketAddr) -> Result<SocketAddr, ConfigError> {
    let label = o.label("advertise");
    let addr = parse_socket_addr(v, label.clone(), "10.77.0.1:4000")?;
    let ip = addr.ip();
    let unusable = match ip {
        std::net::IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
        std::net::IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
    };
    if unusable {
        return Err(ConfigError::Invalid(format!(
            "{label} {v} is not an address other hosts can send to: give this host's unicast IP, e.g. 10.77.0.1:{}",
            listen.port().max(1)
        )));
    }
    if addr.port() == 0 {
        return Err(ConfigError::Invalid(format!(
            "{label} {v} has port 0: give the port other hosts reach this node on, e.g. {ip}:{}",
            if listen.port() == 0 {
                4000
            } else {
                listen.port()
            }
        )));
    }
    if addr.is_ipv4() != listen.is_ipv4() {
        let fam = |a: SocketAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
        return Err(ConfigError::Invalid(format!(
            "{label} {v} is {} but --listen {listen} is {}: give addresses of the same family",
            fam(addr),
            fam(listen)
        )));
    }
    Ok(addr)
}

fn check_tap_name(name: &str, o: Origin<'_>) -> Result<(), ConfigError> {
    match alm_tap::validate_name(name) {
        Ok(()) => Ok(()),
        Err(alm_tap::TapError::InvalidName { reason, .. }) => Err(ConfigError::Invalid(format!(
            "{} {name:?} is not a usable interface name because {reason}: use 1 to 15 letters, digits, '-', '_' or '.'",
            o.label("tap")
        ))),
        Err(other) => Err(ConfigError::Invalid(format!("{}: {other}", o.label("tap")))),
    }
}

/// Parses `A.B.C.D/N` into a host address and prefix length.
fn parse_tap_cidr(v: &str, o: Origin<'_>) -> Result<(Ipv4Addr, u8), ConfigError> {
    let label = o.label("tap-addr");
    let not_cidr = || {
        ConfigError::Invalid(format!(
            "{label} {v} is not an IPv4 CIDR like 172.16.0.5/20"
        ))
    };
    let (a, p) = v.trim().split_once('/').ok_or_else(not_cidr)?;
    let addr: Ipv4Addr = a.parse().map_err(|_| not_cidr())?;
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_cidr());
    }
    let prefix_len: u8 = p.parse().map_err(|_| not_cidr())?;
    if prefix_len == 0 || prefix_len > 32 {
        return Err(not_cidr());
    }
    if addr.is_unspecified()
        || addr.is_multicast()
        || addr.is_broadcast()
        || addr.is_loopback()
        || addr.octets()[0] == 0
        || addr.octets()[0] >= 240
    {
        return Err(ConfigError::Invalid(format!(
            "{label} {v} is not a unicast host address: give one such as 172.16.0.5/20"
        )));
    }
    if prefix_len <= 30 {
        let host_mask = u32::MAX >> prefix_len;
        let host = u32::from(addr) & host_mask;
        if host == 0 || host == host_mask {
            let which = if host == 0 { "network" } else { "broadcast" };
            return Err(ConfigError::Invalid(format!(
                "{label} {v} is the {which} address of its subnet: give a host address such as 172.16.0.5/20"
            )));
        }
    }
    Ok((addr, prefix_len))
}

/// Parses the `--tap-prefix` pool: `A.B.C.D/N`, a network address, N from
/// 16 to 30 (what the engine's allocator supports).
fn parse_tap_prefix(v: &str, o: Origin<'_>) -> Result<(Ipv4Addr, u8), ConfigError> {
    let label = o.label("tap-prefix");
    let not_cidr = || {
        ConfigError::Invalid(format!(
            "{label} {v} is not an IPv4 network like 172.16.0.0/20"
        ))
    };
    let (a, p) = v.trim().split_once('/').ok_or_else(not_cidr)?;
    let addr: Ipv4Addr = a.parse().map_err(|_| not_cidr())?;
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_cidr());
    }
    let prefix_len: u8 = p.parse().map_err(|_| not_cidr())?;
    let (min, max) = (
        alm_core::mgmt::MIN_PREFIX_LEN,
        alm_core::mgmt::MAX_PREFIX_LEN,
    );
    if !(min..=max).contains(&prefix_len) {
        return Err(ConfigError::Invalid(format!(
            "{label} {v}: the pool's prefix length must be /{min} to /{max}, such as 172.16.0.0/20"
        )));
    }
    if addr.is_multicast() || addr.is_loopback() || addr.octets()[0] == 0 || addr.octets()[0] >= 240
    {
        return Err(ConfigError::Invalid(format!(
            "{label} {v} is not a unicast network: give a private one such as 172.16.0.0/20"
        )));
    }
    let network = Ipv4Addr::from(u32::from(addr) & (u32::MAX << (32 - u32::from(prefix_len))));
    if network != addr {
        return Err(ConfigError::Invalid(format!(
            "{label} {v} has host bits set: give the network address {network}/{prefix_len}"
        )));
    }
    Ok((addr, prefix_len))
}

fn parse_node_id(v: &str) -> Option<u128> {
    let hex = v.trim();
    let hex = hex
        .strip_prefix("0x")
        .or_else(|| hex.strip_prefix("0X"))
        .unwrap_or(hex);
    if hex.is_empty() || hex.len() > 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(hex, 16).ok()
}

fn check_control_path(p: &Path, label: String) -> Result<(), ConfigError> {
    let len = p.as_os_str().len();
    if len == 0 {
        return Err(ConfigError::Invalid(format!(
            "{label} is empty: give a socket path such as {ROOT_CONTROL_PATH}"
        )));
    }
    if len > MAX_SOCKET_PATH {
        return Err(ConfigError::Invalid(format!(
            "{label} {} is {len} bytes long but a Unix socket path holds at most {MAX_SOCKET_PATH}: choose a shorter path",
            p.display()
        )));
    }
    Ok(())
}

/// Renders a `RunConfig` as the TOML file that would produce it (for `--help`
/// examples and logs).
#[must_use]
pub fn to_toml(cfg: &RunConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "listen = \"{}\"", cfg.listen);
    if let Some(a) = cfg.advertise {
        let _ = writeln!(s, "advertise = \"{a}\"");
    }
    if !cfg.bootstrap.is_empty() {
        let list: Vec<String> = cfg.bootstrap.iter().map(|a| format!("\"{a}\"")).collect();
        let _ = writeln!(s, "bootstrap = [{}]", list.join(", "));
    }
    if let Some(t) = &cfg.tap {
        let _ = writeln!(s, "tap = {:?}", t.name);
        match t.addr {
            TapAddr::Fixed { addr, prefix_len } => {
                let _ = writeln!(s, "tap-addr = \"{addr}/{prefix_len}\"");
            }
            TapAddr::Auto { prefix, prefix_len } => {
                let _ = writeln!(s, "tap-addr = \"auto\"");
                let _ = writeln!(s, "tap-prefix = \"{prefix}/{prefix_len}\"");
            }
        }
    }
    let _ = writeln!(s, "control = {:?}", cfg.control.display().to_string());
    if let Some(v) = cfg.max_children {
        let _ = writeln!(s, "max-children = {v}");
    }
    if let Some(v) = cfg.node_id {
        let _ = writeln!(s, "node-id = \"{v:032x}\"");
    }
    if let Some(v) = cfg.seed {
        let _ = writeln!(s, "seed = {v}");
    }
    if let Some(v) = cfg.mtu {
        let _ = writeln!(s, "mtu = {v}");
    }
    if let Some(p) = &cfg.psk_file {
        let _ = writeln!(s, "psk-file = {:?}", p.display().to_string());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(argv: &[&str]) -> RunArgs {
        let mut full = vec!["almd", "run"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full) {
            Ok(Cli {
                command: Command::Run(a),
            }) => a,
            other => panic!("not a run command: {other:?}"),
        }
    }

    fn err(r: Result<RunConfig, ConfigError>) -> String {
        r.expect_err("must be rejected").to_string()
    }

    fn file(text: &str) -> FileConfig {
        parse_file(Path::new("/x.toml"), text).expect("valid file")
    }

    #[test]
    fn cli_parses_every_option() {
        let a = run_args(&[
            "--listen",
            "10.77.0.1:4000",
            "--bootstrap",
            "10.77.0.2:4000",
            "--bootstrap",
            "10.77.0.3:4001",
            "--tap",
            "alm1",
            "--tap-addr",
            "172.16.0.5/20",
            "--control",
            "/tmp/a.sock",
            "--max-children",
            "8",
            "--node-id",
            "0xff",
            "--seed",
            "42",
            "--mtu",
            "1400",
            "--psk-file",
            "/etc/alm.psk",
        ]);
        let c = resolve_run(&a, None).expect("valid");
        assert_eq!(
            c,
            RunConfig {
                listen: "10.77.0.1:4000".parse().expect("addr"),
                advertise: None,
                bootstrap: vec![
                    "10.77.0.2:4000".parse().expect("addr"),
                    "10.77.0.3:4001".parse().expect("addr")
                ],
                tap: Some(TapSpec {
                    name: "alm1".into(),
                    addr: TapAddr::Fixed {
                        addr: Ipv4Addr::new(172, 16, 0, 5),
                        prefix_len: 20
                    }
                }),
                control: "/tmp/a.sock".into(),
                max_children: Some(8),
                node_id: Some(0xff),
                seed: Some(42),
                mtu: Some(1400),
                psk_file: Some("/etc/alm.psk".into()),
            }
        );
    }

    #[test]
    fn file_parses_every_key_and_round_trips() {
        let text = r#"
            listen = "10.77.0.1:4000"
            bootstrap = ["10.77.0.2:4000"]
            tap = "alm1"
            tap-addr = "172.16.0.5/20"
            control = "/tmp/b.sock"
            max-children = 3
            node-id = "0123456789abcdef0123456789ABCDEF"
            seed = 7
            mtu = 1300
            psk-file = "/k"
        "#;
        let f = file(text);
        let c = resolve_run(&RunArgs::default(), Some((Path::new("/x.toml"), &f))).expect("ok");
        assert_eq!(c.listen, "10.77.0.1:4000".parse().expect("addr"));
        assert_eq!(c.bootstrap.len(), 1);
        assert_eq!(c.tap.as_ref().map(|t| t.name.as_str()), Some("alm1"));
        assert_eq!(c.control, PathBuf::from("/tmp/b.sock"));
        assert_eq!(c.max_children, Some(3));
        assert_eq!(c.node_id, Some(0x0123456789abcdef0123456789abcdef));
        assert_eq!(c.seed, Some(7));
        assert_eq!(c.mtu, Some(1300));
        assert_eq!(c.psk_file, Some(PathBuf::from("/k")));

        // to_toml produces a file that parses back to the same config.
        let again = file(&to_toml(&c));
        let c2 = resolve_run(&RunArgs::default(), Some((Path::new("/y.toml"), &again)));
        assert_eq!(c2.expect("round trip"), c);
    }

    #[test]
    fn unspecified_listen_needs_advertise() {
        let e = err(resolve_run(&run_args(&["--listen", "0.0.0.0:4000"]), None));
        assert_eq!(
            e,
            "--listen 0.0.0.0:4000 does not say which address other hosts should use: add --advertise <this host's IP>:4000"
        );
        let e = err(resolve_run(&run_args(&["--listen", "[::]:4001"]), None));
        assert_eq!(
            e,
            "--listen [::]:4001 does not say which address other hosts should use: add --advertise [<this host's IP>]:4001"
        );
        let e = err(resolve_run(&run_args(&["--listen", "0.0.0.0:0"]), None));
        assert!(e.ends_with("add --advertise <this host's IP>:PORT"), "{e}");
        // From the file, the fix is the file's key.
        let f = file("listen = \"0.0.0.0:4000\"\n");
        let e = err(resolve_run(
            &RunArgs::default(),
            Some((Path::new("/x.toml"), &f)),
        ));
        assert_eq!(
            e,
            "config file /x.toml: listen 0.0.0.0:4000 does not say which address other hosts should use: add advertise = \"<this host's IP>:4000\""
        );
    }

    #[test]
    fn advertise_is_resolved() {
        // Bind everywhere, advertise one address.
        let c = resolve_run(
            &run_args(&["--listen", "0.0.0.0:4000", "--advertise", "10.77.0.1:4000"]),
            None,
        )
        .expect("ok");
        assert_eq!(c.listen, "0.0.0.0:4000".parse().expect("addr"));
        assert_eq!(c.advertise, Some("10.77.0.1:4000".parse().expect("addr")));
        // A specific listen address needs no --advertise; one may still be
        // given (a forwarded port, say).
        let c = resolve_run(&run_args(&["--listen", "10.77.0.1:4000"]), None).expect("ok");
        assert_eq!(c.advertise, None);
        let c = resolve_run(
            &run_args(&[
                "--listen",
                "10.77.0.1:4000",
                "--advertise",
                "192.0.2.7:14000",
            ]),
            None,
        )
        .expect("ok");
        assert_eq!(c.advertise, Some("192.0.2.7:14000".parse().expect("addr")));
        // From the file; the command line wins; to_toml round-trips it.
        let f = file("listen = \"0.0.0.0:4000\"\nadvertise = \"10.77.0.2:4000\"\n");
        let c = resolve_run(&RunArgs::default(), Some((Path::new("/x.toml"), &f))).expect("ok");
        assert_eq!(c.advertise, Some("10.77.0.2:4000".parse().expect("addr")));
        let again = file(&to_toml(&c));
        let c2 = resolve_run(&RunArgs::default(), Some((Path::new("/y.toml"), &again)));
        assert_eq!(c2.expect("round trip"), c);
        let c = resolve_run(
            &run_args(&["--advertise", "10.77.0.3:4000"]),
            Some((Path::new("/x.toml"), &f)),
        )
        .expect("ok");
        assert_eq!(c.advertise, Some("10.77.0.3:4000".parse().expect("addr")));
    }

    #[test]
    fn advertise_errors_are_clear() {
        let bad = |adv: &str| {
            err(resolve_run(
                &run_args(&["--listen", "0.0.0.0:4000", "--advertise", adv]),
                None,
            ))
        };
        assert_eq!(
            bad("10.77.0.1"),
            "--advertise 10.77.0.1 is not an IP:PORT address like 10.77.0.1:4000"
        );
        assert_eq!(
            bad("0.0.0.0:4000"),
            "--advertise 0.0.0.0:4000 is not an address other hosts can send to: give this host's unicast IP, e.g. 10.77.0.1:4000"
        );
        assert!(
            bad("239.1.2.3:4000").contains("is not an address other hosts can send to"),
            "multicast"
        );
        assert!(
            bad("255.255.255.255:4000").contains("is not an address other hosts can send to"),
            "broadcast"
        );
        assert_eq!(
            bad("10.77.0.1:0"),
            "--advertise 10.77.0.1:0 has port 0: give the port other hosts reach this node on, e.g. 10.77.0.1:4000"
        );
        assert_eq!(
            bad("[2001:db8::1]:4000"),
            "--advertise [2001:db8::1]:4000 is IPv6 but --listen 0.0.0.0:4000 is IPv4: give addresses of the same family"
        );
        let e = err(resolve_run(
            &run_args(&[
                "--listen",
                "0.0.0.0:4000",
                "--advertise",
                "10.77.0.1:4000",
                "--bootstrap",
                "10.77.0.1:4000",
            ]),
            None,
        ));
        assert_eq!(
            e,
            "--bootstrap 10.77.0.1:4000 is this node's own --advertise address: give the address of another node"
        );
        let f = file("listen = \"0.0.0.0:4000\"\nadvertise = \"x\"\n");
        let e = err(resolve_run(
            &RunArgs::default(),
            Some((Path::new("/x.toml"), &f)),
        ));
        assert_eq!(
            e,
            "config file /x.toml: advertise x is not an IP:PORT address like 10.77.0.1:4000"
        );
    }

    #[test]
    fn cli_overrides_file() {
        let f = file(
            "listen = \"10.77.0.1:4000\"\nbootstrap = [\"10.77.0.2:4000\", \"10.77.0.3:4000\"]\nseed = 1\nmax-children = 4\n",
        );
        let a = run_args(&[
            "--listen",
            "10.77.0.9:5000",
            "--bootstrap",
            "10.77.0.4:4000",
            "--seed",
            "2",
        ]);
        let c = resolve_run(&a, Some((Path::new("/x.toml"), &f))).expect("ok");
        assert_eq!(c.listen, "10.77.0.9:5000".parse().expect("addr"));
        assert_eq!(
            c.bootstrap,
            vec!["10.77.0.4:4000".parse::<SocketAddr>().expect("addr")],
            "a CLI --bootstrap replaces the whole file list"
        );
        assert_eq!(c.seed, Some(2));
        assert_eq!(
            c.max_children,
            Some(4),
            "file value kept when CLI is silent"
        );
    }

    #[test]
    fn tap_addr_errors_are_clear() {
        let e = err(resolve_run(
            &run_args(&["--listen", "10.0.0.9:1", "--tap-addr", "300.1.2.3/20"]),
            None,
        ));
        assert_eq!(
            e,
            "--tap-addr 300.1.2.3/20 is not an IPv4 CIDR like 172.16.0.5/20"
        );
        for bad in [
            "172.16.0.5",
            "172.16.0.5/33",
            "172.16.0.5/",
            "172.16.0.5/+2",
            "x/20",
        ] {
            let e = err(resolve_run(
                &run_args(&["--listen", "10.0.0.9:1", "--tap-addr", bad]),
                None,
            ));
            assert_eq!(
                e,
                format!("--tap-addr {bad} is not an IPv4 CIDR like 172.16.0.5/20")
            );
        }
        let e = err(resolve_run(
            &run_args(&["--listen", "10.0.0.9:1", "--tap-addr", "172.16.0.0/20"]),
            None,
        ));
        assert!(e.contains("is the network address of its subnet"), "{e}");
        let e = err(resolve_run(
            &run_args(&["--listen", "10.0.0.9:1", "--tap-addr", "239.0.0.1/8"]),
            None,
        ));
        assert!(e.contains("is not a unicast host address"), "{e}");
        // From the file, the message names the file and key.
        let f = file("listen = \"10.0.0.9:1\"\ntap-addr = \"1.2.3/4\"\n");
        let e = err(resolve_run(
            &RunArgs::default(),
            Some((Path::new("/x.toml"), &f)),
        ));
        assert_eq!(
            e,
            "config file /x.toml: tap-addr 1.2.3/4 is not an IPv4 CIDR like 172.16.0.5/20"
        );
    }

    #[test]
    fn tap_defaults_and_tap_without_address() {
        let c = resolve_run(
            &run_args(&["--listen", "10.0.0.9:1", "--tap-addr", "172.16.0.5/20"]),
            None,
        )
        .expect("ok");
        assert_eq!(c.tap.map(|t| t.name), Some(DEFAULT_TAP_NAME.to_owned()));
        // --tap alone: the address is allocated from the default pool.
        let c = resolve_run(
            &run_args(&["--listen", "10.0.0.9:1", "--tap", "alm3"]),
            None,
        )
        .expect("ok");
        assert_eq!(
            c.tap,
            Some(TapSpec {
                name: "alm3".into(),
                addr: TapAddr::Auto {
                    prefix: Ipv4Addr::new(172, 16, 0, 0),
                    prefix_len: 20
                }
            })
        );
        let e = err(resolve_run(
            &run_args(&[
                "--listen",
                "10.0.0.9:1",
                "--tap",
                "a/b",
                "--tap-addr",
                "172.16.0.5/20",
            ]),
            None,
        ));
        assert!(
            e.starts_with("--tap \"a/b\" is not a usable interface name"),
            "{e}"
        );
    }

    #[test]
    fn tap_addr_auto_and_tap_prefix() {
        // Explicit auto, any case, implies --tap alm0.
        let c = resolve_run(
            &run_args(&["--listen", "10.0.0.9:1", "--tap-addr", "AUTO"]),
            None,
        )
        .expect("ok");
        let t = c.tap.expect("tap");
        assert_eq!(t.name, DEFAULT_TAP_NAME);
        assert_eq!(
            t.addr,
            TapAddr::Auto {
                prefix: Ipv4Addr::new(172, 16, 0, 0),
                prefix_len: 20
            }
        );
        let c = resolve_run(
            &run_args(&[
                "--listen",
                "10.0.0.9:1",
                "--tap",
                "alm0",
                "--tap-prefix",
                "10.99.0.0/24",
            ]),
            None,
        )
        .expect("ok");
        assert_eq!(
            c.tap.as_ref().map(|t| t.addr),
            Some(TapAddr::Auto {
                prefix: Ipv4Addr::new(10, 99, 0, 0),
                prefix_len: 24
            })
        );
        // From a file, and back through to_toml.
        let f = file(
            "listen = \"10.0.0.9:1\"\ntap = \"alm2\"\ntap-addr = \"auto\"\ntap-prefix = \"10.1.0.0/16\"\n",
        );
        let c = resolve_run(&RunArgs::default(), Some((Path::new("/x.toml"), &f))).expect("ok");
        let again = file(&to_toml(&c));
        let c2 = resolve_run(&RunArgs::default(), Some((Path::new("/y.toml"), &again)));
        assert_eq!(c2.expect("round trip"), c);

        for (bad, want) in [
            ("10.0.0.0", "is not an IPv4 network like 172.16.0.0/20"),
            ("x/20", "is not an IPv4 network like 172.16.0.0/20"),
            ("10.0.0.0/8", "the pool's prefix length must be /16 to /30"),
            ("10.0.0.0/31", "the pool's prefix length must be /16 to /30"),
            (
                "10.0.0.5/24",
                "has host bits set: give the network address 10.0.0.0/24",
            ),
            ("239.0.0.0/16", "is not a unicast network"),
        ] {
            let e = err(resolve_run(
                &run_args(&["--listen", "10.0.0.9:1", "--tap", "a", "--tap-prefix", bad]),
                None,
            ));
            assert!(e.starts_with(&format!("--tap-prefix {bad}")), "{e}");
            assert!(e.contains(want), "{e}");
        }
        let e = err(resolve_run(
            &run_args(&["--listen", "10.0.0.9:1", "--tap-prefix", "10.0.0.0/24"]),
            None,
        ));
        assert_eq!(
            e,
            "--tap-prefix 10.0.0.0/24 is only used with --tap: add --tap alm0"
        );
        let e = err(resolve_run(
            &run_args(&[
                "--listen",
                "10.0.0.9:1",
                "--tap-addr",
                "172.16.0.5/20",
                "--tap-prefix",
                "10.0.0.0/24",
            ]),
            None,
        ));
        assert!(e.contains("is only used with --tap-addr auto"), "{e}");
    }

    #[test]
    fn unknown_key_suggests_the_right_one() {
        let e = parse_file(Path::new("/x.toml"), "listn = \"0.0.0.0:1\"\n")
            .expect_err("unknown key")
            .to_string();
        assert_eq!(
            e,
            "config file /x.toml: unknown key 'listn' (did you mean 'listen'?)"
        );
        let e = parse_file(Path::new("/x.toml"), "tap_addr = \"172.16.0.5/20\"\n")
            .expect_err("unknown key")
            .to_string();
        assert!(e.ends_with("(did you mean 'tap-addr'?)"), "{e}");
        let e = parse_file(Path::new("/x.toml"), "[metrics]\nport = 1\n")
            .expect_err("unknown table")
            .to_string();
        assert!(
            e.contains("unknown key 'metrics' (known keys: listen,"),
            "{e}"
        );
    }

    #[test]
    fn file_type_and_syntax_errors_name_the_line() {
        let e = parse_file(
            Path::new("/x.toml"),
            "listen = \"10.0.0.9:1\"\nseed = \"x\"\n",
        )
        .expect_err("wrong type")
        .to_string();
        assert!(e.starts_with("config file /x.toml line 2: "), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        let e = parse_file(Path::new("/x.toml"), "listen = \n")
            .expect_err("syntax")
            .to_string();
        assert!(e.starts_with("config file /x.toml line 1: "), "{e}");
        let e = parse_file(Path::new("/x.toml"), "mtu = 70000\n")
            .expect_err("range")
            .to_string();
        assert!(e.starts_with("config file /x.toml line 1: "), "{e}");
    }

    #[test]
    fn other_value_errors() {
        let e = err(resolve_run(&RunArgs::default(), None));
        assert!(e.starts_with("--listen is required"), "{e}");
        let e = err(resolve_run(
            &run_args(&["--listen", "localhost:4000"]),
            None,
        ));
        assert_eq!(
            e,
            "--listen localhost:4000 is not an IP:PORT address like 10.77.0.1:4000"
        );
        let e = err(resolve_run(
            &run_args(&["--listen", "10.0.0.9:1", "--bootstrap", "10.77.0.2"]),
            None,
        ));
        assert_eq!(
            e,
            "--bootstrap 10.77.0.2 is not an IP:PORT address like 10.77.0.1:4000"
        );
        let e = err(resolve_run(
            &run_args(&["--listen", "10.0.0.1:1", "--bootstrap", "10.0.0.1:1"]),
            None,
        ));
        assert!(e.contains("own --listen address"), "{e}");
        for bad in ["", "xyz", "+1", "0x", &"f".repeat(33)] {
            let e = err(resolve_run(
                &run_args(&["--listen", "10.0.0.9:1", "--node-id", bad]),
                None,
            ));
            assert!(
                e.ends_with(
                    "is not a node id of 1 to 32 hex digits like 0123456789abcdef0123456789abcdef"
                ),
                "{e}"
            );
        }
        let e = err(resolve_run(
            &run_args(&["--listen", "10.0.0.9:1", "--mtu", "500"]),
            None,
        ));
        assert_eq!(
            e,
            "--mtu 500 is below 576, the smallest MTU alm supports: give 576 or more"
        );
        let long = format!("/tmp/{}.sock", "a".repeat(120));
        let e = err(resolve_run(
            &run_args(&["--listen", "10.0.0.9:1", "--control", &long]),
            None,
        ));
        assert!(e.contains("a Unix socket path holds at most 107"), "{e}");
    }

    #[test]
    fn bootstrap_duplicates_are_removed() {
        let c = resolve_run(
            &run_args(&[
                "--listen",
                "10.0.0.9:1",
                "--bootstrap",
                "10.0.0.2:1",
                "--bootstrap",
                "10.0.0.2:1",
            ]),
            None,
        )
        .expect("ok");
        assert_eq!(c.bootstrap.len(), 1);
    }

    #[test]
    fn missing_config_file_is_reported() {
        let a = run_args(&[
            "--listen",
            "10.0.0.9:1",
            "--config",
            "/nonexistent/alm.toml",
        ]);
        let e = err(a.resolve());
        assert!(
            e.starts_with("config file /nonexistent/alm.toml cannot be read: "),
            "{e}"
        );
        assert!(e.ends_with(": check the --config path"), "{e}");
    }

    #[test]
    fn default_control_path_depends_on_user() {
        assert_eq!(
            default_control_path_for(0, Some("/run/user/0".into())),
            PathBuf::from("/run/almd.sock")
        );
        assert_eq!(
            default_control_path_for(1000, Some("/run/user/1000".into())),
            PathBuf::from("/run/user/1000/almd.sock")
        );
        assert_eq!(
            default_control_path_for(1000, None),
            PathBuf::from("/tmp/almd-1000.sock")
        );
        assert_eq!(
            default_control_path_for(1000, Some("relative".into())),
            PathBuf::from("/tmp/almd-1000.sock")
        );
    }

    #[test]
    fn status_and_groups_parse() {
        let cli = Cli::try_parse_from(["almd", "status", "--control", "/tmp/c.sock", "--json"])
            .expect("parse");
        match cli.command {
            Command::Status(q) => {
                assert!(q.json);
                assert_eq!(q.control_path(), PathBuf::from("/tmp/c.sock"));
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["almd", "groups"]).expect("parse");
        match cli.command {
            Command::Groups(q) => {
                assert!(!q.json);
                assert_eq!(q.control_path(), default_control_path());
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["almd", "run", "--listn", "x"]).is_err());
    }

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("listn", "listen"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("seed", "seed"), 0);
        assert_eq!(closest_key("zzzzzz"), None);
    }
}
