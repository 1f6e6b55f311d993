//! The control socket: how `almd status` / `almd groups` talk to a running almd.
//!
//! A Unix stream socket carrying line-delimited JSON. Each request is one line,
//! `{"cmd":"status"}` or `{"cmd":"groups"}`; each answer is one line of JSON
//! (`{"error":"..."}` for a request that cannot be served). A client may send
//! several requests on one connection.
//!
//! Server side ([`ControlServer`]): non-blocking, driven by the runtime's mio
//! event loop. It owns the listener and the client connections and nothing
//! else; the loop supplies the data through an [`Answer`] (any
//! `FnMut(&Request) -> serde_json::Value`). An [`Answer`] may also take a
//! request for later ([`Answer::defer`]: the answer needs the overlay, e.g.
//! the group directory): it keeps the [`Ticket`] and hands the answer to
//! [`ControlServer::complete`]; until then that client's further requests
//! wait, so answers stay in request order. Request lines are bounded
//! ([`MAX_REQUEST_LEN`]), so are the number of concurrent clients and the
//! unsent output per client, so a misbehaving local client costs bounded memory.
//!
//! Client side ([`query`]): blocking, with a timeout; used by the CLI.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Longest request line accepted, newline excluded.
pub const MAX_REQUEST_LEN: usize = 4096;

/// Default limit of simultaneously connected control clients.
pub const DEFAULT_MAX_CLIENTS: usize = 8;

/// Unsent answer bytes per client above which the server stops reading that
/// client's requests until it reads its answers.
pub const MAX_PENDING_OUTPUT: usize = 256 * 1024;

/// Longest answer line [`query`] accepts.
pub const MAX_ANSWER_LEN: usize = 16 * 1024 * 1024;

/// Permissions of the socket file: owner only (connecting needs write permission).
pub const SOCKET_MODE: u32 = 0o600;

/// A control request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// Node status: id, addresses, overlay and tree summary.
    Status,
    /// Multicast groups this node knows.
    Groups,
}

impl Request {
    /// Parses one request line (without its newline). The error is a sentence
    /// suitable for an `{"error": ...}` answer.
    pub fn parse_line(line: &[u8]) -> Result<Request, String> {
        let v: Value = serde_json::from_slice(line)
            .map_err(|e| format!("request is not valid JSON ({e}): send {{\"cmd\":\"status\"}}"))?;
        let cmd = v
            .as_object()
            .and_then(|o| o.get("cmd"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                "request has no \"cmd\" string: send {\"cmd\":\"status\"} or {\"cmd\":\"groups\"}"
                    .to_owned()
            })?;
        match cmd {
            "status" => Ok(Request::Status),
            "groups" => Ok(Request::Groups),
            other => Err(format!(
                "unknown cmd {other:?}: expected \"status\" or \"groups\""
            )),
        }
    }

    /// The request as it goes on the wire, newline included.
    #[must_use]
    pub fn to_line(self) -> String {
        match self {
            Request::Status => "{\"cmd\":\"status\"}\n".to_owned(),
            Request::Groups => "{\"cmd\":\"groups\"}\n".to_owned(),
        }
    }
}

/// A request whose answer comes later, through [`ControlServer::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(pub u64);

/// What the event loop provides: the answer to a request, as JSON.
pub trait Answer {
    /// Answers `req`. Return `{"error": "..."}` to report a failure.
    fn answer(&mut self, req: &Request) -> Value;

    /// Return true to answer `req` later: call [`ControlServer::complete`]
    /// with `ticket` (once). Default: answer now.
    fn defer(&mut self, _req: &Request, _ticket: Ticket) -> bool {
        false
    }
}

impl<F: FnMut(&Request) -> Value> Answer for F {
    fn answer(&mut self, req: &Request) -> Value {
        self(req)
    }
}

/// Errors of the control socket, server and client side. Display is one
/// sentence that says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The socket's directory does not exist.
    #[error(
        "control socket {} cannot be created because directory {} does not exist: create it or choose another --control path",
        path.display(), dir.display()
    )]
    NoDirectory {
        /// Socket path.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
    },
    /// No permission to create the socket file.
    #[error(
        "control socket {} cannot be created: permission denied: run almd as root or choose a --control path in a directory you can write, such as $XDG_RUNTIME_DIR",
        path.display()
    )]
    BindPermission {
        /// Socket path.
        path: PathBuf,
    },
    /// Another process is listening on the socket.
    #[error(
        "another almd is already listening on control socket {}: stop it or choose another --control path",
        path.display()
    )]
    InUse {
        /// Socket path.
        path: PathBuf,
    },
    /// The path exists and is not a socket; it is left alone.
    #[error("{} exists and is not a socket: remove it or choose another --control path", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Binding failed for another reason.
    #[error("binding control socket {} failed: {source}", path.display())]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// Client: no socket file.
    #[error(
        "no almd control socket at {}: start almd, or pass --control with the path it uses",
        path.display()
    )]
    NotRunning {
        /// Socket path.
        path: PathBuf,
    },
    /// Client: the socket file exists but nobody listens.
    #[error(
        "nothing is listening on control socket {}: almd is not running (the socket file is stale)",
        path.display()
    )]
    Refused {
        /// Socket path.
        path: PathBuf,
    },
    /// Client: not allowed to connect.
    #[error(
        "permission denied connecting to control socket {}: run this command as the user almd runs as (e.g. with sudo)",
        path.display()
    )]
    ConnectPermission {
        /// Socket path.
        path: PathBuf,
    },
    /// Client: no answer in time.
    #[error("almd did not answer on {} within {} s: check that it is not stuck", path.display(), timeout.as_secs_f32())]
    Timeout {
        /// Socket path.
        path: PathBuf,
        /// The timeout.
        timeout: Duration,
    },
    /// Client: other I/O failure.
    #[error("talking to almd over {} failed: {source}", path.display())]
    Io {
        /// Socket path.
        path: PathBuf,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// Client: the answer is not one JSON line.
    #[error("almd answered on {} with something that is not one JSON line: {detail}", path.display())]
    BadAnswer {
        /// Socket path.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// Client: the server answered `{"error": ...}`.
    #[error("almd refused the request: {0}")]
    Server(String),
}

/// Classifies an error from binding the listener (other than "address in use",
/// which [`ControlServer::bind`] handles itself).
#[must_use]
pub fn bind_error(path: &Path, err: io::Error) -> ControlError {
    match err.kind() {
        io::ErrorKind::PermissionDenied => ControlError::BindPermission {
            path: path.to_owned(),
        },
        io::ErrorKind::AddrInUse => ControlError::InUse {
            path: path.to_owned(),
        },
        io::ErrorKind::NotFound => ControlError::NoDirectory {
            path: path.to_owned(),
            dir: socket_dir(path),
        },
        _ => ControlError::Bind {
            path: path.to_owned(),
            source: err,
        },
    }
}

/// Classifies an error from connecting to the socket.
#[must_use]
pub fn connect_error(path: &Path, err: io::Error) -> ControlError {
    let path = path.to_owned();
    match err.kind() {
        io::ErrorKind::NotFound => ControlError::NotRunning { path },
        io::ErrorKind::ConnectionRefused => ControlError::Refused { path },
        io::ErrorKind::PermissionDenied => ControlError::ConnectPermission { path },
        _ => ControlError::Io { path, source: err },
    }
}

fn socket_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// No more requests will be read (peer closed, or it broke the protocol);
    /// close once `out` is flushed.
    done_reading: bool,
    last_activity: Instant,
    /// A deferred request not answered yet: later lines wait for it.
    waiting: Option<Ticket>,
}

/// The server end of the control socket, for a mio event loop.
///
/// Usage: [`bind`](Self::bind), [`register`](Self::register) with a first token
/// (the server uses that token and the next `max_clients` ones), then for every
/// event whose token [`owns`](Self::owns) returns true, call
/// [`handle_event`](Self::handle_event). Optionally call
/// [`close_idle`](Self::close_idle) from a timer. Dropping it removes the
/// socket file (if it is still the one it created).
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// (dev, ino) of the socket file we created, so Drop removes only ours.
    file_id: Option<(u64, u64)>,
    first_token: Option<Token>,
    clients: Vec<Option<Client>>,
    rejected: u64,
    next_ticket: u64,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("path", &self.path)
            .field("clients", &self.client_count())
            .field("max_clients", &self.clients.len())
            .finish()
    }
}

impl ControlServer {
    /// Binds the control socket at `path`, accepting at most `max_clients`
    /// (at least 1) connections at a time.
    ///
    /// An existing socket file is removed only if nothing listens on it (a
    /// connect attempt is refused); a live one gives [`ControlError::InUse`], a
    /// non-socket file [`ControlError::NotASocket`].
    pub fn bind(path: &Path, max_clients: usize) -> Result<ControlServer, ControlError> {
        let dir = socket_dir(path);
        if !dir.is_dir() {
            return Err(ControlError::NoDirectory {
                path: path.to_owned(),
                dir,
            });
        }
        let listener = match UnixListener::bind(path) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                Self::remove_if_stale(path)?;
                UnixListener::bind(path).map_err(|e| bind_error(path, e))?
            }
            Err(e) => return Err(bind_error(path, e)),
        };
        if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE)) {
            tracing::warn!(path = %path.display(), error = %e, "could not restrict control socket permissions");
        }
        let file_id = fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()));
        let max_clients = max_clients.max(1);
        let mut clients = Vec::with_capacity(max_clients);
        clients.resize_with(max_clients, || None);
        tracing::info!(path = %path.display(), "control socket listening");
        Ok(ControlServer {
            listener,
            path: path.to_owned(),
            file_id,
            first_token: None,
            clients,
            rejected: 0,
            next_ticket: 0,
        })
    }

    fn remove_if_stale(path: &Path) -> Result<(), ControlError> {
        let meta = fs::symlink_metadata(path).map_err(|e| bind_error(path, e))?;
        if !meta.file_type().is_socket() {
            return Err(ControlError::NotASocket {
                path: path.to_owned(),
            });
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err(ControlError::InUse {
                path: path.to_owned(),
            }),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "removing stale control socket (nothing listens on it)");
                match fs::remove_file(path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(bind_error(path, e)),
                }
            }
            Err(e) => Err(bind_error(path, e)),
        }
    }

    /// Registers the listener under `first_token`; clients will use the tokens
    /// `first_token + 1 ..= first_token + max_clients`.
    pub fn register(&mut self, registry: &Registry, first_token: Token) -> io::Result<()> {
        registry.register(&mut self.listener, first_token, Interest::READABLE)?;
        self.first_token = Some(first_token);
        Ok(())
    }

    /// The tokens this server uses (listener first), once registered.
    #[must_use]
    pub fn tokens(&self) -> Option<std::ops::RangeInclusive<usize>> {
        self.first_token
            .map(|Token(t)| t..=t.saturating_add(self.clients.len()))
    }

    /// True if `token` belongs to this server.
    #[must_use]
    pub fn owns(&self, token: Token) -> bool {
        self.tokens().is_some_and(|r| r.contains(&token.0))
    }

    /// The socket path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connected clients.
    #[must_use]
    pub fn client_count(&self) -> usize {
        self.clients.iter().filter(|c| c.is_some()).count()
    }

    /// Connections refused because all client slots were taken.
    #[must_use]
    pub fn rejected_count(&self) -> u64 {
        self.rejected
    }

    /// Handles a mio event for one of [`tokens`](Self::tokens).
    pub fn handle_event<A: Answer + ?Sized>(
        &mut self,
        registry: &Registry,
        event: &mio::event::Event,
        answer: &mut A,
    ) {
        self.handle_token(registry, event.token(), answer);
    }

    /// Same as [`handle_event`](Self::handle_event) given only the token (the
    /// server always tries both directions, so readiness kinds do not matter).
    pub fn handle_token<A: Answer + ?Sized>(
        &mut self,
        registry: &Registry,
        token: Token,
        answer: &mut A,
    ) {
        let Some(Token(first)) = self.first_token else {
            return;
        };
        if token.0 == first {
            self.accept_all(registry);
        } else if let Some(idx) = token
            .0
            .checked_sub(first + 1)
            .filter(|&i| i < self.clients.len())
        {
            self.service(registry, idx, answer);
        }
    }

    /// Closes clients idle for longer than `max_idle`; returns how many.
    pub fn close_idle(&mut self, registry: &Registry, now: Instant, max_idle: Duration) -> usize {
        let mut closed = 0;
        for slot in &mut self.clients {
            let idle = slot
                .as_ref()
                .is_some_and(|c| now.saturating_duration_since(c.last_activity) > max_idle);
            if idle {
                if let Some(mut c) = slot.take() {
                    let _ = registry.deregister(&mut c.stream);
                    closed += 1;
                }
            }
        }
        closed
    }

    fn accept_all(&mut self, registry: &Registry) {
        let Some(Token(first)) = self.first_token else {
            return;
        };
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let Some(idx) = self.clients.iter().position(Option::is_none) else {
                        self.rejected += 1;
                        let msg = json!({"error": format!(
                            "too many control clients (at most {}): try again later",
                            self.clients.len()
                        )});
                        // Best effort: a fresh socket's buffer takes one short line.
                        let _ = stream.write_all(format!("{msg}\n").as_bytes());
                        tracing::warn!(
                            "control client refused: all {} slots busy",
                            self.clients.len()
                        );
                        continue;
                    };
                    if let Err(e) = registry.register(
                        &mut stream,
                        Token(first + 1 + idx),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        tracing::warn!(error = %e, "cannot register control client");
                        continue;
                    }
                    self.clients[idx] = Some(Client {
                        stream,
                        inbuf: Vec::new(),
                        out: Vec::new(),
                        done_reading: false,
                        last_activity: Instant::now(),
                        waiting: None,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // E.g. EMFILE: stop for now; the next connection retries.
                    tracing::warn!(error = %e, "control socket accept failed");
                    break;
                }
            }
        }
    }

    /// Answers the deferred request `ticket` with `value`, then serves that
    /// client's requests that waited behind it (with `answer`). A ticket
    /// whose client has gone is ignored.
    pub fn complete<A: Answer + ?Sized>(
        &mut self,
        registry: &Registry,
        ticket: Ticket,
        value: &Value,
        answer: &mut A,
    ) {
        let Some(idx) = self
            .clients
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.waiting == Some(ticket)))
        else {
            return;
        };
        if let Some(c) = self.clients[idx].as_mut() {
            c.waiting = None;
            push_reply(&mut c.out, value);
            c.last_activity = Instant::now();
            process_lines(c, answer, &mut self.next_ticket);
        }
        self.service(registry, idx, answer);
    }

    /// Clients waiting for a deferred answer.
    #[must_use]
    pub fn deferred_count(&self) -> usize {
        self.clients
            .iter()
            .filter(|c| c.as_ref().is_some_and(|c| c.waiting.is_some()))
            .count()
    }

    fn service<A: Answer + ?Sized>(&mut self, registry: &Registry, idx: usize, answer: &mut A) {
        let Some(client) = self.clients[idx].as_mut() else {
            return;
        };
        let keep = service_client(client, answer, &mut self.next_ticket);
        if !keep {
            if let Some(mut c) = self.clients[idx].take() {
                let _ = registry.deregister(&mut c.stream);
            }
        }
    }
}

/// Drives one client as far as it goes without blocking. Returns false when the
/// connection should be closed.
fn service_client<A: Answer + ?Sized>(
    c: &mut Client,
    answer: &mut A,
    next_ticket: &mut u64,
) -> bool {
    let mut chunk = [0u8; 1024];
    loop {
        while !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(0) => return false,
                Ok(n) => {
                    c.out.drain(..n);
                    c.last_activity = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if c.waiting.is_some() {
            // Read nothing more until the deferred answer is out (complete
            // services the client again).
            return true;
        }
        if c.done_reading {
            // Close once everything is sent; otherwise wait for WRITABLE.
            return !c.out.is_empty();
        }
        if c.out.len() >= MAX_PENDING_OUTPUT {
            return true; // resume reading when the peer has read its answers
        }
        match c.stream.read(&mut chunk) {
            Ok(0) => c.done_reading = true,
            Ok(n) => {
                c.last_activity = Instant::now();
                c.inbuf.extend_from_slice(&chunk[..n]);
                process_lines(c, answer, next_ticket);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn process_lines<A: Answer + ?Sized>(c: &mut Client, answer: &mut A, next_ticket: &mut u64) {
    while c.waiting.is_none()
        && let Some(pos) = c.inbuf.iter().position(|&b| b == b'\n')
    {
        let mut line: Vec<u8> = c.inbuf.drain(..=pos).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reply = if line.len() > MAX_REQUEST_LEN {
            too_long()
        } else {
            match Request::parse_line(&line) {
                Ok(req) => {
                    *next_ticket += 1;
                    let ticket = Ticket(*next_ticket);
                    if answer.defer(&req, ticket) {
                        c.waiting = Some(ticket);
                        return;
                    }
                    answer.answer(&req)
                }
                Err(msg) => json!({ "error": msg }),
            }
        };
        push_reply(&mut c.out, &reply);
    }
    if c.waiting.is_none() && c.inbuf.len() > MAX_REQUEST_LEN {
        // No newline within the limit: answer once and stop reading.
        push_reply(&mut c.out, &too_long());
        c.inbuf = Vec::new();
        c.done_reading = true;
    }
}

fn too_long() -> Value {
    json!({"error": format!("request longer than {MAX_REQUEST_LEN} bytes: send one short JSON line such as {{\"cmd\":\"status\"}}")})
}

fn push_reply(out: &mut Vec<u8>, v: &Value) {
    // Serializing a Value into a Vec cannot fail (no I/O, string keys only).
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.extend_from_slice(b"{\"error\":\"internal: answer not serializable\"}");
    }
    out.push(b'\n');
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if ours.is_some() && ours == self.file_id {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Sends `req` to the almd listening at `path` and returns its answer.
/// Blocking, bounded by `timeout` for each of connect/write/read. An
/// `{"error": "..."}` answer becomes [`ControlError::Server`].
pub fn query(path: &Path, req: Request, timeout: Duration) -> Result<Value, ControlError> {
    let stream =
        std::os::unix::net::UnixStream::connect(path).map_err(|e| connect_error(path, e))?;
    let io_err = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ControlError::Timeout {
            path: path.to_owned(),
            timeout,
        },
        _ => ControlError::Io {
            path: path.to_owned(),
            source: e,
        },
    };
    let timeout_opt = Some(timeout).filter(|t| !t.is_zero());
    stream.set_read_timeout(timeout_opt).map_err(io_err)?;
    stream.set_write_timeout(timeout_opt).map_err(io_err)?;
    // A server with no free client slot answers with an error line and
    // closes at once, maybe before our request is written: read that line
    // rather than report the broken pipe.
    let write_err = match (&stream).write_all(req.to_line().as_bytes()) {
        Ok(()) => None,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) =>
        {
            Some(e)
        }
        Err(e) => return Err(io_err(e)),
    };
    let mut line = Vec::new();
    let read =
        BufReader::new((&stream).take(MAX_ANSWER_LEN as u64 + 1)).read_until(b'\n', &mut line);
    match (read, write_err) {
        (Ok(_), Some(e)) if line.is_empty() => return Err(io_err(e)),
        (Err(_), Some(e)) => return Err(io_err(e)),
        (Err(e), None) => return Err(io_err(e)),
        _ => {}
    }
    let bad = |detail: String| ControlError::BadAnswer {
        path: path.to_owned(),
        detail,
    };
    if line.last() != Some(&b'\n') {
        return Err(bad(if line.len() > MAX_ANSWER_LEN {
            format!("the answer is longer than {MAX_ANSWER_LEN} bytes")
        } else {
            "the connection closed before a full line arrived".to_owned()
        }));
    }
    let v: Value = serde_json::from_slice(&line).map_err(|e| bad(e.to_string()))?;
    let server_error = v
        .as_object()
        .filter(|obj| obj.len() == 1)
        .and_then(|obj| obj.get("error"))
        .and_then(Value::as_str);
    if let Some(msg) = server_error {
        return Err(ControlError::Server(msg.to_owned()));
    }
    Ok(v)
}

/// Renders an answer for humans: one `key: value` per line, nested objects
/// indented, arrays of scalars comma-separated, arrays of objects as blocks.
#[must_use]
pub fn render_human(v: &Value) -> String {
    let mut out = String::new();
    render_into(&mut out, v, 0);
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn render_into(out: &mut String, v: &Value, indent: usize) {
    let pad = "  ".repeat(indent);
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                match val {
                    Value::Object(_) => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        render_into(out, val, indent + 1);
                    }
                    Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        render_into(out, val, indent + 1);
                    }
                    Value::Array(items) => {
                        let list: Vec<String> = items.iter().map(scalar).collect();
                        let shown = if list.is_empty() {
                            "(none)".to_owned()
                        } else {
                            list.join(", ")
                        };
                        out.push_str(&format!("{pad}{k}: {shown}\n"));
                    }
                    _ => out.push_str(&format!("{pad}{k}: {}\n", scalar(val))),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if item.is_object() || item.is_array() {
                    out.push_str(&format!("{pad}- [{i}]\n"));
                    render_into(out, item, indent + 1);
                } else {
                    out.push_str(&format!("{pad}- {}\n", scalar(item)));
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

#[cfg(test)]
mod tests;
