//! Every transport x every policy, through the real `sockserv` binary:
//! echo and upper round trips, several requests per connection, several
//! clients at once; and which policies really serve clients in parallel.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{listen_for, Conn, Dgram, Sockserv};

const TRANSPORTS: [&str; 4] = ["tcp", "udp", "unix", "unix-dgram"];
const POLICIES: [&str; 4] = ["sync", "fork", "thread", "pool"];
const CLIENTS: usize = 3;
const REQUESTS: usize = 5;

fn expected(service: &str, req: &[u8]) -> Vec<u8> {
    match service {
        "upper" => req.to_ascii_uppercase(),
        _ => req.to_vec(),
    }
}

/// The temp dir holding the socket file (if any) and a server of `service`
/// under `policy` on a fresh address for `transport`. Bound in this order,
/// the server stops before its directory goes.
fn serve(transport: &str, policy: &str, service: &str) -> (Option<tempfile::TempDir>, Sockserv) {
    let (listen, dir) = listen_for(transport);
    let server = Sockserv::start(&[
        "--transport",
        transport,
        "--listen",
        &listen,
        "--policy",
        policy,
        "--service",
        service,
    ]);
    (dir, server)
}

/// CLIENTS clients at once, each sending REQUESTS requests (one connection
/// per stream client), all answered correctly.
fn round_trips(transport: &str, policy: &str, service: &str) {
    let (_dir, server) = serve(transport, policy, service);
    let addr = server.addr.clone();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (transport, addr, service) =
                (transport.to_string(), addr.clone(), service.to_string());
            std::thread::spawn(move || {
                let stream = matches!(transport.as_str(), "tcp" | "unix");
                let mut conn = stream.then(|| Conn::connect(&transport, &addr).unwrap());
                let dgram = (!stream).then(|| Dgram::new(&transport, &addr));
                for r in 0..REQUESTS {
                    let req = format!("client {c} request {r} mixed Case\n").into_bytes();
                    let want = expected(&service, &req);
                    let got = match (&mut conn, &dgram) {
                        (Some(conn), _) => conn.request(&req, want.len()).unwrap(),
                        (_, Some(d)) => d.request(&req).unwrap(),
                        _ => unreachable!(),
                    };
                    assert_eq!(got, want, "{transport} {service} client {c} request {r}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join()
            .unwrap_or_else(|_| panic!("{transport}/{policy}/{service}: a client failed"));
    }
}

#[test]
fn echo_round_trips_over_every_transport_and_policy() {
    for t in TRANSPORTS {
        for p in POLICIES {
            round_trips(t, p, "echo");
        }
    }
}

#[test]
fn upper_round_trips_over_every_transport_and_policy() {
    for t in TRANSPORTS {
        for p in POLICIES {
            round_trips(t, p, "upper");
        }
    }
}

/// Streams `BULK` bytes of mixed case through `upper` while reading the
/// reply, so reads fill the server's buffers and requests span reads.
fn bulk_round_trip(transport: &str, policy: &str) {
    const BULK: usize = 1 << 20;
    let (_dir, server) = serve(transport, policy, "upper");
    let mut conn = Conn::connect(transport, &server.addr).unwrap();
    let mut writer = conn.try_clone().unwrap();
    let sent: Vec<u8> = (0..BULK).map(|i| b"aBcDeFgHiJ\xff\n"[i % 12]).collect();
    let want = sent.to_ascii_uppercase();
    let feeder = std::thread::spawn(move || writer.write_all(&sent));
    let mut got = vec![0u8; BULK];
    conn.read_exact(&mut got).unwrap();
    feeder.join().unwrap().unwrap();
    assert!(got == want, "{transport}/{policy}: the bulk reply differs");
}

#[test]
fn bulk_streams_come_back_whole_under_every_policy() {
    for t in ["tcp", "unix"] {
        for p in POLICIES {
            bulk_round_trip(t, p);
        }
    }
}

/// Opens `n` connections and sends one request on each, keeping all open;
/// returns how many were answered while none had closed.
fn answered_while_all_open(transport: &str, policy: &str, n: usize) -> usize {
    let (listen, _dir) = listen_for(transport);
    let server = Sockserv::start(&[
        "--transport",
        transport,
        "--listen",
        &listen,
        "--policy",
        policy,
        "--threads",
        "8",
    ]);
    let mut conns: Vec<Conn> = (0..n)
        .map(|_| Conn::connect(transport, &server.addr).unwrap())
        .collect();
    let mut answered = 0;
    for (i, c) in conns.iter_mut().enumerate() {
        // A parallel server answers at once; 300 ms is the observation
        // window for a server that is still busy with an earlier client.
        c.set_timeout(Some(Duration::from_millis(if i == 0 { 5000 } else { 300 })));
        let req = format!("hello {i}");
        if let Ok(reply) = c.request(req.as_bytes(), req.len()) {
            assert_eq!(reply, req.as_bytes());
            answered += 1;
        }
    }
    answered
}

#[test]
fn fork_thread_and_pool_serve_held_open_connections_in_parallel() {
    for t in ["tcp", "unix"] {
        for p in ["fork", "thread", "pool"] {
            assert_eq!(answered_while_all_open(t, p, 6), 6, "{t}/{p}");
        }
    }
}

#[test]
fn sync_serves_one_connection_at_a_time() {
    for t in ["tcp", "unix"] {
        let (listen, _dir) = listen_for(t);
        let server = Sockserv::start(&["--transport", t, "--listen", &listen, "--policy", "sync"]);
        let mut first = Conn::connect(t, &server.addr).unwrap();
        let mut second = Conn::connect(t, &server.addr).unwrap();
        assert_eq!(first.request(b"one", 3).unwrap(), b"one");
        // Observation window: the second client waits while the first is open.
        second.set_timeout(Some(Duration::from_millis(300)));
        assert!(
            second.request(b"two", 3).is_err(),
            "{t}: sync answered two clients at once"
        );
        drop(first);
        second.set_timeout(Some(Duration::from_secs(5)));
        let mut reply = [0u8; 3];
        second.read_exact(&mut reply).unwrap();
        assert_eq!(
            &reply, b"two",
            "{t}: the queued client is served once the first leaves"
        );
    }
}

#[test]
fn ipv6_loopback_serves_tcp_and_udp() {
    for (t, p) in [("tcp", "thread"), ("udp", "pool")] {
        let server = Sockserv::start(&["--transport", t, "--listen", "[::1]:0", "--policy", p]);
        assert!(server.addr.starts_with("[::1]:"), "{}", server.addr);
        if t == "tcp" {
            let mut c = Conn::connect(t, &server.addr).unwrap();
            assert_eq!(c.request(b"v6", 2).unwrap(), b"v6");
        } else {
            assert_eq!(Dgram::new(t, &server.addr).request(b"v6").unwrap(), b"v6");
        }
    }
}
