//! The metrics endpoint (`--metrics ADDR`): `GET /metrics` over HTTP, in
//! the Prometheus text exposition format (`text/plain; version=0.0.4`),
//! with the same numbers as `sockserv status`.
//!
//! The master serves it from its own loop, through the same nonblocking
//! [`Responder`](super::control::Responder) as the control socket: no
//! thread (a forking master stays single-threaded), nothing on the
//! request path, and a scraper that connects and sends nothing, or never
//! reads, is dropped after the client deadline while the loop goes on.
//! Requests are parsed by `httparse`; the exposition is written by the
//! `prometheus` crate's `TextEncoder` from a registry filled afresh on
//! each scrape from the shared counters.
//!
//! The metrics (counters are totals over the master's life, as `status`'s
//! `totals`):
//!
//! | name | type | what |
//! |---|---|---|
//! | `sockserv_connections_total` | counter | connections accepted (datagrams received) |
//! | `sockserv_requests_total` | counter | requests answered |
//! | `sockserv_errors_total` | counter | handler errors, panics, children killed by a signal |
//! | `sockserv_rejected_total` | counter | clients refused by `--allow` / `verify_request` |
//! | `sockserv_truncated_datagrams_total` | counter | oversized datagrams dropped |
//! | `sockserv_worker_restarts_total` | counter | workers replaced after dying unasked |
//! | `sockserv_in_flight` | gauge | connections or datagrams being handled |
//! | `sockserv_workers` | gauge | worker processes |
//! | `sockserv_children` | gauge | live fork children |
//! | `sockserv_threads` | gauge | threads of the worker processes |
//! | `sockserv_listen_queue_length`, `_limit` | gauge | TCP accept queue (TCP only) |
//! | `sockserv_uptime_seconds` | gauge | the master's age |
//! | `sockserv_info` | gauge | 1, labelled with transport, addr, policy, service |
//! | `sockserv_worker_*` | per worker | `connections_total`, `requests_total`, `in_flight`, `children`, `threads`, `resident_memory_bytes`, `proportional_memory_bytes`, `uptime_seconds`, labelled `pid`, `generation`, `state` |
//! | `sockserv_resident_memory_bytes`, `sockserv_proportional_memory_bytes` | gauge | summed over the workers' process trees |

use prometheus::{Encoder, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use super::status::Status;

/// The longest request head read; a longer one gets 431.
pub(crate) const MAX_REQUEST: usize = 8192;

/// Whether `input` is enough to answer: a whole request head (requests
/// to this endpoint have no body), or one `httparse` already refuses.
/// Asking `httparse` itself, which also ends a head at `\n\r\n` or
/// `\r\n\n`, means a head it sees whole is never left waiting.
pub(crate) fn head_complete(input: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let parsed = httparse::Request::new(&mut headers).parse(input);
    !matches!(parsed, Ok(httparse::Status::Partial))
}

/// The whole HTTP response to `input`.
pub(crate) fn answer(input: &[u8], status: &dyn Fn() -> Status) -> Vec<u8> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(input) {
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("/");
            route(req.method.unwrap_or(""), path, status)
        }
        Ok(httparse::Status::Partial) if input.len() > MAX_REQUEST => response(
            "431 Request Header Fields Too Large",
            &format!("request head longer than {MAX_REQUEST} bytes\n"),
            false,
        ),
        Ok(httparse::Status::Partial) => response("400 Bad Request", "request cut short\n", false),
        Err(e) => response(
            "400 Bad Request",
            &format!("cannot parse the request: {e}\n"),
            false,
        ),
    }
}

fn route(method: &str, path: &str, status: &dyn Fn() -> Status) -> Vec<u8> {
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        let mut r = response(
            "405 Method Not Allowed",
            &format!("method {method} not allowed: use GET\n"),
            false,
        );
        // Allow: is required on a 405; put it among the headers.
        let at = r.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
        r.splice(at..at, b"\r\nAllow: GET, HEAD".iter().copied());
        return r;
    }
    match path.split('?').next().unwrap_or("") {
        "/metrics" => match render(&status()) {
            Ok(text) => response_typed("200 OK", CONTENT_TYPE, &text, head_only),
            Err(e) => response(
                "500 Internal Server Error",
                &format!("cannot encode the metrics: {e}\n"),
                head_only,
            ),
        },
        "/" => response(
            "200 OK",
            "sockserv: the metrics are at /metrics\n",
            head_only,
        ),
        other => {
            let shown: String = other.chars().take(64).collect();
            response(
                "404 Not Found",
                &format!("no page {shown:?}: the metrics are at /metrics\n"),
                head_only,
            )
        }
    }
}

/// The Prometheus text format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn response(code: &str, body: &str, head_only: bool) -> Vec<u8> {
    response_typed(code, "text/plain; charset=utf-8", body, head_only)
}

fn response_typed(code: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        r.extend_from_slice(body.as_bytes());
    }
    r
}

/// The exposition of `s`.
pub(crate) fn render(s: &Status) -> prometheus::Result<String> {
    let r = Registry::new();
    let t = &s.totals;
    for (name, help, v) in [
        (
            "sockserv_connections_total",
            "Stream connections accepted (datagram transports: datagrams received).",
            t.connections,
        ),
        ("sockserv_requests_total", "Requests answered.", t.requests),
        (
            "sockserv_errors_total",
            "Handler errors and panics, and fork children killed by a signal.",
            t.errors,
        ),
        (
            "sockserv_rejected_total",
            "Clients refused by --allow (verify_request).",
            t.rejected,
        ),
        (
            "sockserv_truncated_datagrams_total",
            "Oversized datagrams dropped.",
            t.truncated_datagrams,
        ),
        (
            "sockserv_worker_restarts_total",
            "Workers replaced because they died unasked (crash, kill, timeout).",
            s.worker_restarts,
        ),
    ] {
        let c = IntCounter::with_opts(Opts::new(name, help))?;
        c.inc_by(v);
        r.register(Box::new(c))?;
    }
    let threads: u64 = s.workers.iter().map(|w| w.threads).sum();
    let rss: u64 = s.workers.iter().map(|w| w.rss_kib).sum();
    let pss: u64 = s.workers.iter().map(|w| w.pss_kib).sum();
    let mut gauges = vec![
        (
            "sockserv_in_flight",
            "Connections or datagrams being handled now (fork: live children).",
            t.in_flight as i64,
        ),
        (
            "sockserv_workers",
            "Worker processes.",
            s.workers.len() as i64,
        ),
        (
            "sockserv_children",
            "Live fork children of the workers.",
            t.children as i64,
        ),
        (
            "sockserv_threads",
            "Threads of the worker processes.",
            threads as i64,
        ),
        (
            "sockserv_resident_memory_bytes",
            "Resident memory of the workers and their children.",
            (rss * 1024) as i64,
        ),
        (
            "sockserv_proportional_memory_bytes",
            "Proportional set size (PSS) of the workers and their children.",
            (pss * 1024) as i64,
        ),
    ];
    if let Some((len, limit)) = s.listen_queue {
        gauges.push((
            "sockserv_listen_queue_length",
            "Connections waiting in the TCP accept queue.",
            i64::from(len),
        ));
        gauges.push((
            "sockserv_listen_queue_limit",
            "The TCP accept queue's limit (backlog).",
            i64::from(limit),
        ));
    }
    for (name, help, v) in gauges {
        let g = IntGauge::with_opts(Opts::new(name, help))?;
        g.set(v);
        r.register(Box::new(g))?;
    }
    let up = prometheus::Gauge::with_opts(Opts::new(
        "sockserv_uptime_seconds",
        "How long the master has run.",
    ))?;
    up.set(s.uptime.as_secs_f64());
    r.register(Box::new(up))?;
    let info = IntGauge::with_opts(
        Opts::new("sockserv_info", "What is served, as labels; always 1.")
            .const_label("transport", &s.transport)
            .const_label("addr", &s.addr)
            .const_label("policy", &s.policy)
            .const_label("service", &s.service),
    )?;
    info.set(1);
    r.register(Box::new(info))?;
    register_workers(&r, s)?;
    let mut out = Vec::new();
    TextEncoder::new().encode(&r.gather(), &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// One series per worker for each per-process figure.
fn register_workers(r: &Registry, s: &Status) -> prometheus::Result<()> {
    let labels = ["pid", "generation", "state"];
    type Figure = fn(&super::status::WorkerStatus) -> i64;
    let counters: [(&str, &str, Figure); 2] = [
        (
            "sockserv_worker_connections_total",
            "Connections this worker accepted.",
            |w| w.counters.connections as i64,
        ),
        (
            "sockserv_worker_requests_total",
            "Requests this worker answered.",
            |w| w.counters.requests as i64,
        ),
    ];
    for (name, help, figure) in counters {
        let v = prometheus::IntCounterVec::new(Opts::new(name, help), &labels)?;
        for w in &s.workers {
            let (pid, generation) = (w.pid.to_string(), w.generation.to_string());
            v.with_label_values(&[pid.as_str(), generation.as_str(), w.state])
                .inc_by(figure(w) as u64);
        }
        r.register(Box::new(v))?;
    }
    let gauges: [(&str, &str, Figure); 6] = [
        (
            "sockserv_worker_in_flight",
            "Connections this worker is handling.",
            |w| w.counters.in_flight as i64,
        ),
        (
            "sockserv_worker_children",
            "This worker's live fork children.",
            |w| w.counters.children as i64,
        ),
        (
            "sockserv_worker_threads",
            "This worker process's threads.",
            |w| w.threads as i64,
        ),
        (
            "sockserv_worker_resident_memory_bytes",
            "Resident memory of this worker and its children.",
            |w| (w.rss_kib * 1024) as i64,
        ),
        (
            "sockserv_worker_proportional_memory_bytes",
            "PSS of this worker and its children.",
            |w| (w.pss_kib * 1024) as i64,
        ),
        (
            "sockserv_worker_uptime_seconds",
            "How long this worker has run (whole seconds).",
            |w| w.uptime.as_secs() as i64,
        ),
    ];
    for (name, help, figure) in gauges {
        let v = IntGaugeVec::new(Opts::new(name, help), &labels)?;
        for w in &s.workers {
            let (pid, generation) = (w.pid.to_string(), w.generation.to_string());
            v.with_label_values(&[pid.as_str(), generation.as_str(), w.state])
                .set(figure(w));
        }
        r.register(Box::new(v))?;
    }
    Ok(())
}

/// The endpoint's contract, checked on arbitrary bytes a client may send
/// (the fuzz target `metrics` and the unit tests call it): whatever pieces
/// the bytes arrive in, the responder stops reading once the head is
/// whole as `httparse` sees it (or at the size limit), and never while
/// `httparse` still wants more; the
/// reply is one well-formed HTTP/1.1 response (`Connection: close`, a
/// `Content-Length` that matches the body, none for `HEAD`, `Allow` on a
/// 405) and, but for the metrics themselves, at most 2 KiB.
///
/// # Panics
///
/// When the contract is broken.
pub(crate) fn check_request(data: &[u8]) {
    use super::control::{read_as_responder, sample_status, Protocol};
    let st = sample_status();
    let read = read_as_responder(Protocol::Metrics, data);
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(read);
    let head_only =
        matches!(parsed, Ok(httparse::Status::Complete(_))) && req.method == Some("HEAD");
    if let Ok(httparse::Status::Complete(n)) = parsed {
        assert!(
            head_complete(&read[..n]),
            "a whole head {:?} is not seen",
            &read[..n]
        );
    }
    if head_complete(read) {
        assert!(
            !matches!(parsed, Ok(httparse::Status::Partial)),
            "{read:?} is seen as a whole head, but httparse wants more"
        );
    }
    let reply = answer(read, &|| st.clone());
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut res = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(at)) = res.parse(&reply) else {
        panic!(
            "not an HTTP response: {:?}",
            String::from_utf8_lossy(&reply)
        );
    };
    assert_eq!(res.version, Some(1), "not HTTP/1.1");
    let code = res.code.unwrap_or(0);
    let header = |name: &str| {
        res.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    assert_eq!(header("Connection").as_deref(), Some("close"));
    let length: usize = header("Content-Length")
        .and_then(|v| v.parse().ok())
        .expect("a Content-Length");
    let body = &reply[at..];
    assert_eq!(
        body.len(),
        if head_only { 0 } else { length },
        "body length"
    );
    if code == 405 {
        assert_eq!(header("Allow").as_deref(), Some("GET, HEAD"));
    }
    assert!(
        code == 200 && body.starts_with(b"# HELP") || reply.len() <= 2048,
        "{} byte {code} reply",
        reply.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Counters;
    use std::time::Duration;

    fn sample() -> Status {
        Status {
            pid: 7,
            uptime: Duration::from_millis(1500),
            transport: "tcp".into(),
            addr: "127.0.0.1:9000".into(),
            policy: "fork".into(),
            service: "echo".into(),
            workers: vec![super::super::status::WorkerStatus {
                pid: 8,
                generation: 2,
                state: "serving",
                uptime: Duration::from_secs(1),
                counters: Counters {
                    connections: 3,
                    requests: 5,
                    children: 1,
                    in_flight: 1,
                    ..Counters::default()
                },
                threads: 1,
                rss_kib: 100,
                pss_kib: 50,
            }],
            totals: Counters {
                connections: 30,
                requests: 50,
                errors: 4,
                in_flight: 1,
                children: 1,
                ..Counters::default()
            },
            worker_restarts: 2,
            listen_queue: Some((3, 128)),
            master: None,
        }
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn the_exposition_carries_the_status_numbers() {
        let text = render(&sample()).unwrap();
        assert_eq!(
            value(&text, "sockserv_requests_total"),
            Some(50.0),
            "{text}"
        );
        assert_eq!(value(&text, "sockserv_connections_total"), Some(30.0));
        assert_eq!(value(&text, "sockserv_errors_total"), Some(4.0));
        assert_eq!(value(&text, "sockserv_worker_restarts_total"), Some(2.0));
        assert_eq!(value(&text, "sockserv_workers"), Some(1.0));
        assert_eq!(value(&text, "sockserv_children"), Some(1.0));
        assert_eq!(value(&text, "sockserv_listen_queue_length"), Some(3.0));
        assert_eq!(value(&text, "sockserv_listen_queue_limit"), Some(128.0));
        assert_eq!(
            value(
                &text,
                "sockserv_worker_resident_memory_bytes{generation=\"2\",pid=\"8\",state=\"serving\"}"
            ),
            Some(102400.0),
            "{text}"
        );
        assert!(
            text.contains("# TYPE sockserv_requests_total counter"),
            "{text}"
        );
        assert!(text.contains("# TYPE sockserv_in_flight gauge"), "{text}");
    }

    #[test]
    fn the_fuzz_contract_holds_on_sample_requests() {
        let samples: [&[u8]; 12] = [
            b"",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HEAD /metrics HTTP/1.0\r\n\r\n",
            b"HEAD /nothing HTTP/1.0\r\n\r\n",
            b"POST / HTTP/1.1\r\n\r\n",
            b"GET /metrics?x=1 HTTP/1.1\n\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"\x00\x01garbage\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: x",
            &[b'a'; MAX_REQUEST + 10],
        ];
        for s in samples {
            check_request(s);
        }
    }

    #[test]
    fn a_head_ended_by_lf_crlf_is_answered_at_once() {
        // Found by the fuzz target `metrics`: httparse ends a head at
        // "\n\r\n", but the old check looked only for "\r\n\r\n" and
        // "\n\n", so the responder kept waiting until the deadline.
        let crash = b"GET /metrsic HTTP/1.1\r\nHost: localhost\r\naccept: */*\x8e\n\r\n";
        assert!(head_complete(crash));
        check_request(crash);
        for ending in [&b"\n\r\n"[..], b"\r\n\n", b"\n\n", b"\r\n\r\n"] {
            let req = [&b"GET /metrics HTTP/1.1"[..], ending].concat();
            assert!(head_complete(&req), "{req:?}");
            assert!(!head_complete(&req[..req.len() - 1]), "{req:?} cut");
        }
        assert!(
            head_complete(b"\x00junk"),
            "a refused head is answered at once"
        );
        assert!(!head_complete(b"\r\n"), "leading blank lines wait");
    }

    #[test]
    fn requests_are_routed_and_bad_ones_answered_with_an_error() {
        let ok = answer(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &sample);
        let ok = String::from_utf8(ok).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        let body = ok.split("\r\n\r\n").nth(1).unwrap();
        assert!(ok.contains(&format!("Content-Length: {}\r\n", body.len())));
        let head = String::from_utf8(answer(b"HEAD /metrics HTTP/1.0\r\n\r\n", &sample)).unwrap();
        assert!(
            head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        for (req, code) in [
            (&b"POST /metrics HTTP/1.1\r\n\r\n"[..], "405"),
            (b"GET /nothing HTTP/1.1\r\n\r\n", "404"),
            (b"\x00\x01garbage\r\n\r\n", "400"),
            (b"GET /metrics HTTP/1.1\r\nHost: x", "400"),
        ] {
            let r = String::from_utf8(answer(req, &sample)).unwrap();
            assert!(r.starts_with(&format!("HTTP/1.1 {code} ")), "{req:?}: {r}");
        }
        let long = [
            b"GET /metrics HTTP/1.1\r\nX: ".as_slice(),
            &[b'a'; MAX_REQUEST],
        ]
        .concat();
        let r = String::from_utf8(answer(&long, &sample)).unwrap();
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        let r = String::from_utf8(answer(b"PUT / HTTP/1.1\r\n\r\n", &sample)).unwrap();
        assert!(r.contains("\r\nAllow: GET, HEAD\r\n"), "{r}");
    }
}
