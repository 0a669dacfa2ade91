//! Python's BaseServer contract, in-process through the library:
//! shutdown, handle_request with a timeout, verify_request, handle_error,
//! service_actions, pool back-pressure, server_close.

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::wait_until;
use socketserver::{
    Address, AllowList, Handler, Hooks, Policy, Request, RequestError, Server, ServerBuilder,
    Transport,
};

/// Echoes one chunk per read until EOF; panics on "panic".
struct Echo;

impl Handler for Echo {
    fn handle(&mut self, req: &mut Request) -> io::Result<()> {
        let Request::Stream(s) = req else {
            return Ok(());
        };
        let mut buf = [0u8; 1024];
        loop {
            let n = s.read_some(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            if &buf[..n] == b"panic" {
                panic!("asked to panic");
            }
            s.write_all(&buf[..n])?;
        }
    }
}

#[derive(Default)]
struct Counts {
    timeouts: AtomicUsize,
    actions: AtomicUsize,
    verified: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

#[derive(Clone, Default)]
struct Counting(Arc<Counts>);

impl Hooks for Counting {
    fn verify_request(&self, _peer: &Address) -> bool {
        self.0.verified.fetch_add(1, Ordering::SeqCst);
        true
    }
    fn handle_timeout(&self) {
        self.0.timeouts.fetch_add(1, Ordering::SeqCst);
    }
    fn service_actions(&self) {
        self.0.actions.fetch_add(1, Ordering::SeqCst);
    }
    fn handle_error(&self, _peer: &Address, err: &RequestError, _log: &slog::Logger) {
        self.0.errors.lock().unwrap().push(err.to_string());
    }
}

fn tcp_server(policy: Policy, hooks: impl Hooks) -> Server {
    let addr = Transport::Tcp.parse_address("127.0.0.1:0").unwrap();
    ServerBuilder::new(Transport::Tcp, addr)
        .policy(policy)
        .hooks(hooks)
        .build(|| Echo)
        .unwrap()
}

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.address().as_inet().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn round_trip(c: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
    c.write_all(msg)?;
    let mut buf = vec![0u8; msg.len()];
    c.read_exact(&mut buf)?;
    Ok(buf)
}

/// Runs serve_forever on a thread; returns the server back when it stops.
fn serve_in_thread(
    mut server: Server,
    poll: Duration,
) -> (
    socketserver::ShutdownHandle,
    std::thread::JoinHandle<Server>,
) {
    let handle = server.shutdown_handle();
    let t = std::thread::spawn(move || {
        server.serve_forever(poll).unwrap();
        server
    });
    (handle, t)
}

#[test]
fn shutdown_from_another_thread_returns_within_100ms() {
    for policy in [Policy::Sync, Policy::THREAD, Policy::pool_default()] {
        let server = tcp_server(policy, Counting::default());
        let mut c = connect(&server);
        // A long poll interval: only the wake-up makes shutdown prompt.
        let (handle, t) = serve_in_thread(server, Duration::from_secs(30));
        assert_eq!(round_trip(&mut c, b"up").unwrap(), b"up");
        drop(c);
        let start = Instant::now();
        handle.shutdown();
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(100),
            "{policy:?}: shutdown took {took:?}"
        );
        t.join().unwrap();
    }
}

#[test]
fn serve_forever_calls_service_actions_each_loop() {
    let hooks = Counting::default();
    let server = tcp_server(Policy::Sync, hooks.clone());
    let (handle, t) = serve_in_thread(server, Duration::from_millis(10));
    assert!(wait_until(Duration::from_secs(5), || hooks
        .0
        .actions
        .load(Ordering::SeqCst)
        >= 3));
    handle.shutdown();
    t.join().unwrap();
}

#[test]
fn handle_request_with_timeout_calls_handle_timeout() {
    let hooks = Counting::default();
    let addr = Transport::Tcp.parse_address("127.0.0.1:0").unwrap();
    let mut server = ServerBuilder::new(Transport::Tcp, addr)
        .timeout(Some(Duration::from_millis(50)))
        .hooks(hooks.clone())
        .build(|| Echo)
        .unwrap();
    server.handle_request().unwrap();
    assert_eq!(hooks.0.timeouts.load(Ordering::SeqCst), 1);
    assert_eq!(hooks.0.verified.load(Ordering::SeqCst), 0);
    // With a client waiting, handle_request serves it instead.
    let mut c = connect(&server);
    c.write_all(b"hi").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    server.handle_request().unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"hi");
    assert_eq!(hooks.0.timeouts.load(Ordering::SeqCst), 1);
}

#[test]
fn verify_request_rejects_a_client_before_any_handler_runs() {
    struct Counted(Arc<AtomicUsize>);
    impl Handler for Counted {
        fn handle(&mut self, _req: &mut Request) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
    let ran = Arc::new(AtomicUsize::new(0));
    let made = Arc::clone(&ran);
    let addr = Transport::Tcp.parse_address("127.0.0.1:0").unwrap();
    let mut server = ServerBuilder::new(Transport::Tcp, addr)
        .hooks(AllowList::parse(["10.0.0.0/8"]).unwrap())
        .timeout(Some(Duration::from_secs(5)))
        .build(move || Counted(Arc::clone(&made)))
        .unwrap();
    let mut c = connect(&server);
    server.handle_request().unwrap();
    let mut buf = Vec::new();
    let n = c.read_to_end(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a refused client gets no reply");
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "the handler ran for a refused client"
    );
}

#[test]
fn a_panicking_handler_is_reported_and_the_server_keeps_serving() {
    for policy in [Policy::Sync, Policy::THREAD, Policy::pool_default()] {
        let hooks = Counting::default();
        let server = tcp_server(policy, hooks.clone());
        let mut bad = connect(&server);
        let mut good = connect(&server);
        let (handle, t) = serve_in_thread(server, Duration::from_millis(100));
        bad.write_all(b"panic").unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            bad.read_to_end(&mut buf).unwrap_or(0),
            0,
            "panicking handler's connection is closed"
        );
        assert!(wait_until(Duration::from_secs(5), || !hooks
            .0
            .errors
            .lock()
            .unwrap()
            .is_empty()));
        let errors = hooks.0.errors.lock().unwrap().clone();
        assert!(
            errors[0].contains("asked to panic"),
            "{policy:?}: {errors:?}"
        );
        assert_eq!(round_trip(&mut good, b"still here").unwrap(), b"still here");
        drop(good);
        handle.shutdown();
        t.join().unwrap();
    }
}

#[test]
fn pool_stops_accepting_when_threads_and_queue_are_full() {
    // One thread, one queue slot: at most two clients are taken off the
    // backlog while the first one holds the only thread.
    let hooks = Counting::default();
    let server = tcp_server(
        Policy::Pool {
            threads: 1,
            queue: 1,
        },
        hooks.clone(),
    );
    let mut clients: Vec<TcpStream> = (0..4).map(|_| connect(&server)).collect();
    let (handle, t) = serve_in_thread(server, Duration::from_millis(50));
    assert_eq!(round_trip(&mut clients[0], b"first").unwrap(), b"first");
    assert!(wait_until(Duration::from_secs(5), || hooks
        .0
        .verified
        .load(Ordering::SeqCst)
        == 2));
    // Observation window: no third accept while the pool is full.
    assert!(!wait_until(Duration::from_millis(200), || hooks
        .0
        .verified
        .load(Ordering::SeqCst)
        > 2));
    // The first client leaves: the queued one runs, one more is accepted.
    clients.remove(0);
    assert_eq!(round_trip(&mut clients[0], b"second").unwrap(), b"second");
    assert!(wait_until(Duration::from_secs(5), || hooks
        .0
        .verified
        .load(Ordering::SeqCst)
        == 3));
    drop(clients);
    handle.shutdown();
    t.join().unwrap();
}

#[test]
fn server_close_joins_threads_in_flight() {
    struct Slow(Arc<AtomicUsize>);
    impl Handler for Slow {
        fn handle(&mut self, req: &mut Request) -> io::Result<()> {
            let Request::Stream(s) = req else {
                return Ok(());
            };
            let mut b = [0u8; 1];
            s.read_some(&mut b)?;
            std::thread::sleep(Duration::from_millis(200));
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
    let done = Arc::new(AtomicUsize::new(0));
    let d = Arc::clone(&done);
    let addr = Transport::Tcp.parse_address("127.0.0.1:0").unwrap();
    let mut server = ServerBuilder::new(Transport::Tcp, addr)
        .policy(Policy::THREAD)
        .timeout(Some(Duration::from_secs(5)))
        .build(move || Slow(Arc::clone(&d)))
        .unwrap();
    let mut c = connect(&server);
    c.write_all(b"x").unwrap();
    server.handle_request().unwrap();
    assert_eq!(server.active_requests(), 1);
    server.server_close();
    assert_eq!(
        done.load(Ordering::SeqCst),
        1,
        "server_close returned before the thread finished"
    );
}

#[test]
fn fork_policy_is_refused_in_a_multithreaded_process() {
    let addr = Transport::Tcp.parse_address("127.0.0.1:0").unwrap();
    let err = ServerBuilder::new(Transport::Tcp, addr)
        .policy(Policy::FORK)
        .build(|| Echo)
        .err()
        .expect("the test harness runs threads, so fork must be refused");
    assert!(err.to_string().contains("single-threaded"), "{err}");
}

#[test]
fn unix_server_removes_its_socket_file_on_close() {
    let (_dir, path) = common::temp_socket("lib.sock");
    let addr = Transport::UnixStream
        .parse_address(path.to_str().unwrap())
        .unwrap();
    let server = ServerBuilder::new(Transport::UnixStream, addr)
        .build(|| Echo)
        .unwrap();
    assert!(path.exists());
    drop(server);
    assert!(!path.exists());
}
