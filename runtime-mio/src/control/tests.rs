use super::*;
use mio::{Events, Poll};
use std::os::unix::net::UnixStream as StdStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "alm-control-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A mio loop serving `server` on its own thread until stopped.
struct Running {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<ControlServer>>,
}

impl Running {
    fn start(mut server: ControlServer) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut poll = Poll::new().expect("poll");
            let mut events = Events::with_capacity(64);
            server
                .register(poll.registry(), Token(100))
                .expect("register");
            let mut answer = |req: &Request| match req {
                Request::Status => json!({"node_id": "00ff", "peers": 3}),
                Request::Groups => json!({"groups": ["239.1.2.3"]}),
            };
            while !stop2.load(Ordering::Relaxed) {
                poll.poll(&mut events, Some(Duration::from_millis(10)))
                    .expect("poll");
                for ev in &events {
                    assert!(server.owns(ev.token()), "foreign token {:?}", ev.token());
                    server.handle_event(poll.registry(), ev, &mut answer);
                }
            }
            server
        });
        Running {
            stop,
            handle: Some(handle),
        }
    }

    fn stop(mut self) -> ControlServer {
        self.stop.store(true, Ordering::Relaxed);
        let h = self.handle.take().expect("running");
        match h.join() {
            Ok(s) => s,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

const T: Duration = Duration::from_secs(3);

fn read_line(s: &StdStream) -> String {
    s.set_read_timeout(Some(T)).expect("timeout");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("read line");
    line
}

#[test]
fn parse_requests() {
    assert_eq!(
        Request::parse_line(br#"{"cmd":"status"}"#),
        Ok(Request::Status)
    );
    assert_eq!(
        Request::parse_line(br#" {"cmd" : "groups", "x": 1} "#),
        Ok(Request::Groups)
    );
    let e = Request::parse_line(br#"{"cmd":"reboot"}"#).unwrap_err();
    assert_eq!(
        e,
        "unknown cmd \"reboot\": expected \"status\" or \"groups\""
    );
    assert!(
        Request::parse_line(b"status")
            .unwrap_err()
            .starts_with("request is not valid JSON")
    );
    assert!(
        Request::parse_line(b"[1]")
            .unwrap_err()
            .starts_with("request has no \"cmd\"")
    );
    // The wire form parses back.
    for r in [Request::Status, Request::Groups] {
        let line = r.to_line();
        assert_eq!(Request::parse_line(line.trim_end().as_bytes()), Ok(r));
        assert_eq!(
            serde_json::from_str::<Request>(line.trim_end()).expect("serde form agrees"),
            r
        );
    }
}

#[test]
fn query_round_trip_and_socket_removed_on_drop() {
    let dir = TempDir::new();
    let path = dir.join("almd.sock");
    let server = ControlServer::bind(&path, 4).expect("bind");
    let mode = fs::metadata(&path)
        .expect("socket file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, SOCKET_MODE);
    let run = Running::start(server);

    let status = query(&path, Request::Status, T).expect("status");
    assert_eq!(status, json!({"node_id": "00ff", "peers": 3}));
    let groups = query(&path, Request::Groups, T).expect("groups");
    assert_eq!(groups["groups"][0], "239.1.2.3");

    let server = run.stop();
    assert_eq!(server.client_count(), 0, "finished clients are closed");
    drop(server);
    assert!(!path.exists(), "socket file removed on drop");
}

#[test]
fn pipelined_bad_and_good_requests_on_one_connection() {
    let dir = TempDir::new();
    let path = dir.join("c.sock");
    let run = Running::start(ControlServer::bind(&path, 4).expect("bind"));
    let s = StdStream::connect(&path).expect("connect");
    (&s).write_all(b"not json\n\r\n{\"cmd\":\"groups\"}\r\n{\"cmd\":\"status\"}\n")
        .expect("write");
    let mut r = BufReader::new(&s);
    s.set_read_timeout(Some(T)).expect("timeout");
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut l = String::new();
        r.read_line(&mut l).expect("line");
        lines.push(serde_json::from_str::<Value>(&l).expect("json line"));
    }
    assert!(
        lines[0]["error"]
            .as_str()
            .expect("error")
            .starts_with("request is not valid JSON")
    );
    assert_eq!(lines[1]["groups"][0], "239.1.2.3");
    assert_eq!(lines[2]["peers"], 3);
    drop(r);
    drop(s);
    run.stop();
}

#[test]
fn overlong_request_is_refused_and_connection_closed() {
    let dir = TempDir::new();
    let path = dir.join("c.sock");
    let run = Running::start(ControlServer::bind(&path, 4).expect("bind"));
    let s = StdStream::connect(&path).expect("connect");
    let big = vec![b'x'; MAX_REQUEST_LEN + 2000];
    (&s).write_all(&big).expect("write");
    let line = read_line(&s);
    let v: Value = serde_json::from_str(&line).expect("json");
    assert!(
        v["error"]
            .as_str()
            .expect("error")
            .starts_with("request longer than 4096 bytes"),
        "{v}"
    );
    // The server closes: next read is EOF, or a reset because the server did not
    // read the rest of the oversized line.
    let mut rest = Vec::new();
    match (&s).read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
    // A request of exactly the limit is fine (padded with spaces).
    let mut ok = br#"{"cmd":"status"}"#.to_vec();
    ok.resize(MAX_REQUEST_LEN, b' ');
    ok.push(b'\n');
    let s = StdStream::connect(&path).expect("connect");
    (&s).write_all(&ok).expect("write");
    let v: Value = serde_json::from_str(&read_line(&s)).expect("json");
    assert_eq!(v["peers"], 3);
    drop(s);
    run.stop();
}

#[test]
fn client_limit_is_enforced() {
    let dir = TempDir::new();
    let path = dir.join("c.sock");
    let run = Running::start(ControlServer::bind(&path, 2).expect("bind"));
    let a = StdStream::connect(&path).expect("a");
    let b = StdStream::connect(&path).expect("b");
    // Make sure both are accepted before the third arrives.
    for s in [&a, &b] {
        (&*s).write_all(b"{\"cmd\":\"status\"}\n").expect("write");
        assert!(read_line(s).contains("peers"));
    }
    let c = StdStream::connect(&path).expect("c connects, then is refused");
    let v: Value = serde_json::from_str(&read_line(&c)).expect("json");
    assert_eq!(
        v["error"],
        "too many control clients (at most 2): try again later"
    );
    drop(a);
    // A slot frees up once the server sees a's EOF.
    let deadline = Instant::now() + T;
    loop {
        match query(&path, Request::Groups, T) {
            Ok(v) => {
                assert_eq!(v["groups"][0], "239.1.2.3");
                break;
            }
            Err(ControlError::Server(m)) if Instant::now() < deadline => {
                assert!(m.starts_with("too many"), "{m}");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
    drop(b);
    let server = run.stop();
    assert!(server.rejected_count() >= 1);
}

#[test]
fn stale_socket_is_replaced_but_live_one_is_not() {
    let dir = TempDir::new();
    let path = dir.join("c.sock");
    // A stale socket file: bound, then the listener is gone.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("std bind"));
    assert!(path.exists());
    let e = query(&path, Request::Status, T).unwrap_err();
    assert!(matches!(e, ControlError::Refused { .. }), "{e}");
    assert!(e.to_string().contains("almd is not running"));

    let first = ControlServer::bind(&path, 1).expect("stale file replaced");
    let e = ControlServer::bind(&path, 1).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "another almd is already listening on control socket {}: stop it or choose another --control path",
            path.display()
        )
    );
    assert!(path.exists(), "the live socket was not removed");
    drop(first);
    assert!(!path.exists());
}

#[test]
fn non_socket_file_is_left_alone() {
    let dir = TempDir::new();
    let path = dir.join("notes.txt");
    fs::write(&path, b"keep me").expect("write");
    let e = ControlServer::bind(&path, 1).unwrap_err();
    assert!(matches!(e, ControlError::NotASocket { .. }), "{e}");
    assert_eq!(fs::read(&path).expect("still there"), b"keep me");
}

#[test]
fn missing_directory_and_missing_socket_messages() {
    let dir = TempDir::new();
    let path = dir.join("nope/almd.sock");
    let e = ControlServer::bind(&path, 1).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "control socket {} cannot be created because directory {} does not exist: create it or choose another --control path",
            path.display(),
            dir.join("nope").display()
        )
    );
    let e = query(&dir.join("absent.sock"), Request::Status, T).unwrap_err();
    assert!(matches!(e, ControlError::NotRunning { .. }), "{e}");
}

#[test]
fn error_classification() {
    let p = Path::new("/run/almd.sock");
    let e = bind_error(p, io::Error::from(io::ErrorKind::PermissionDenied));
    assert!(e.to_string().starts_with(
        "control socket /run/almd.sock cannot be created: permission denied: run almd as root"
    ));
    let e = connect_error(p, io::Error::from(io::ErrorKind::PermissionDenied));
    assert!(
        e.to_string()
            .contains("run this command as the user almd runs as")
    );
    let e = connect_error(p, io::Error::from(io::ErrorKind::NotFound));
    assert!(
        e.to_string()
            .starts_with("no almd control socket at /run/almd.sock")
    );
}

#[test]
fn query_times_out_on_a_silent_server() {
    let dir = TempDir::new();
    let path = dir.join("silent.sock");
    // Listens (so connect succeeds) but never answers.
    let _l = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let t0 = Instant::now();
    let e = query(&path, Request::Status, Duration::from_millis(200)).unwrap_err();
    assert!(matches!(e, ControlError::Timeout { .. }), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn server_error_answer_becomes_an_error() {
    let dir = TempDir::new();
    let path = dir.join("e.sock");
    let mut server = ControlServer::bind(&path, 1).expect("bind");
    let handle = std::thread::spawn(move || {
        let mut poll = Poll::new().expect("poll");
        let mut events = Events::with_capacity(8);
        server
            .register(poll.registry(), Token(0))
            .expect("register");
        let answered = std::cell::Cell::new(0);
        let mut answer = |_: &Request| {
            answered.set(answered.get() + 1);
            json!({"error": "not ready"})
        };
        let deadline = Instant::now() + T;
        // Until the one client was answered and has gone away.
        while Instant::now() < deadline && !(answered.get() > 0 && server.client_count() == 0) {
            poll.poll(&mut events, Some(Duration::from_millis(10)))
                .expect("poll");
            for ev in &events {
                server.handle_event(poll.registry(), ev, &mut answer);
            }
        }
        answered.get()
    });
    let e = query(&path, Request::Status, T).unwrap_err();
    assert_eq!(e.to_string(), "almd refused the request: not ready");
    assert_eq!(handle.join().expect("server thread"), 1);
}

#[test]
fn idle_clients_are_closed() {
    let dir = TempDir::new();
    let path = dir.join("i.sock");
    let mut server = ControlServer::bind(&path, 2).expect("bind");
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(8);
    server
        .register(poll.registry(), Token(7))
        .expect("register");
    let client = StdStream::connect(&path).expect("connect");
    let mut answer = |_: &Request| json!({});
    let deadline = Instant::now() + T;
    while server.client_count() == 0 && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(10)))
            .expect("poll");
        for ev in &events {
            server.handle_event(poll.registry(), ev, &mut answer);
        }
    }
    assert_eq!(server.client_count(), 1);
    assert_eq!(server.close_idle(poll.registry(), Instant::now(), T), 0);
    let later = Instant::now() + Duration::from_secs(60);
    assert_eq!(server.close_idle(poll.registry(), later, T), 1);
    assert_eq!(server.client_count(), 0);
    let mut buf = Vec::new();
    client.set_read_timeout(Some(T)).expect("timeout");
    (&client).read_to_end(&mut buf).expect("closed by server");
    assert_eq!(server.tokens(), Some(7..=9));
    assert!(server.owns(Token(9)) && !server.owns(Token(10)) && !server.owns(Token(6)));
}

#[test]
fn human_rendering() {
    let v = json!({
        "node_id": "00ff",
        "peers": 3,
        "groups": ["239.1.2.3", "239.1.2.4"],
        "empty": [],
        "tap": {"name": "alm0", "mtu": 1400},
        "trees": [{"group": "239.1.2.3", "children": 2}]
    });
    let s = render_human(&v);
    assert!(s.contains("node_id: 00ff\n"), "{s}");
    assert!(s.contains("groups: 239.1.2.3, 239.1.2.4\n"), "{s}");
    assert!(s.contains("empty: (none)\n"), "{s}");
    assert!(s.contains("tap:\n  mtu: 1400\n  name: alm0\n"), "{s}");
    assert!(
        s.contains("trees:\n  - [0]\n    children: 2\n    group: 239.1.2.3\n"),
        "{s}"
    );
}

/// Answers `status` at once and defers `groups`.
struct Deferring {
    tickets: Vec<Ticket>,
}

impl Answer for Deferring {
    fn answer(&mut self, req: &Request) -> Value {
        json!({ "now": format!("{req:?}") })
    }
    fn defer(&mut self, req: &Request, ticket: Ticket) -> bool {
        if *req == Request::Groups {
            self.tickets.push(ticket);
            true
        } else {
            false
        }
    }
}

#[test]
fn deferred_answers_keep_request_order() {
    let dir = TempDir::new();
    let path = dir.join("d.sock");
    let mut server = ControlServer::bind(&path, 2).expect("bind");
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(16);
    server
        .register(poll.registry(), Token(10))
        .expect("register");
    let mut answer = Deferring {
        tickets: Vec::new(),
    };
    let client = StdStream::connect(&path).expect("connect");
    // Pipelined: the status must wait behind the deferred groups.
    (&client)
        .write_all(b"{\"cmd\":\"groups\"}\n{\"cmd\":\"status\"}\n")
        .expect("write");
    let deadline = Instant::now() + T;
    while answer.tickets.is_empty() && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(10)))
            .expect("poll");
        for ev in &events {
            server.handle_event(poll.registry(), ev, &mut answer);
        }
    }
    assert_eq!(answer.tickets.len(), 1, "groups was deferred");
    assert_eq!(server.deferred_count(), 1);
    // Nothing answered yet.
    client.set_nonblocking(true).expect("nonblocking");
    let mut b = [0u8; 1];
    assert!(matches!((&client).read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
    client.set_nonblocking(false).expect("blocking");

    let t = answer.tickets[0];
    server.complete(
        poll.registry(),
        t,
        &json!({"groups": ["239.1.2.9"]}),
        &mut answer,
    );
    assert_eq!(server.deferred_count(), 0);
    // A stale ticket is ignored.
    server.complete(poll.registry(), t, &json!({"x": 1}), &mut answer);
    let mut r = BufReader::new(&client);
    client.set_read_timeout(Some(T)).expect("timeout");
    let mut line = String::new();
    r.read_line(&mut line).expect("first");
    assert_eq!(line, "{\"groups\":[\"239.1.2.9\"]}\n");
    line.clear();
    r.read_line(&mut line).expect("second");
    assert_eq!(line, "{\"now\":\"Status\"}\n");
}
