//! An HTTP/1.1 microservice on port 80 (`port=N` to change):
//!
//! - `GET /`: a live status page (`status.html`, one self-contained page:
//!   cpus, threads per cpu, requests per second and a chart of the last
//!   minute, memory per node, NIC counters, refreshed every second from
//!   `/stats`);
//! - `GET /health`: `ok`;
//! - `GET /metrics`: the same and more for Prometheus (text format 0.0.4,
//!   see `metrics`): responses by route and status class, latency
//!   histograms, threads and run queues per cpu, memory per node, NIC and
//!   network-stack counters;
//! - `GET /stats`: JSON with uptime, cpus, threads and run-queue length
//!   per cpu, requests served, the NIC's packets, bytes, drops and errors,
//!   its packets and bytes per queue (`queues`: queue, cpu), the network
//!   stack's sockets, refused, evicted and timed-out connections and
//!   rounds and socket buffer memory, the memory committed in thread
//!   stacks (and the page tables of lazily committed memory), and free
//!   memory per NUMA node;
//! - `POST /echo`: the request body back;
//! - `GET /hash?kib=N`: the SHA-256 of N KiB (1 to 1024, default 64) the
//!   guest generates (see the `hash-work` crate): work per request, for
//!   scaling.
//!
//! Every cpu runs a thread accepting connections, which takes those its
//! cpu's network stack holds first; each connection gets a thread on the
//! cpu whose stack holds it (`TcpStream::cpu`; the target cpu allocates
//! it from its own memory): with a multi-queue NIC the connections, and
//! their threads, spread over the cpus with no cross-cpu hop. Requests
//! are parsed by `microhttp` (httparse underneath): keep-alive, pipelining,
//! and 400/404/405/408/413/431 for what deserves them. A connection has
//! `timeout_ms=` (default 10 s) per request, whether the client is idle
//! or just slow; then it gets 408 and is closed.

#![no_std]
#![no_main]

extern crate alloc;

mod metrics;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt::Write;
use core::time::Duration;

use bravo::net::{NetError, TcpListener, TcpStream};
use bravo::time::Instant;
use bravo::{println, thread};
use metrics::{CpuCounters, Metrics, Route};
use microhttp::{Limits, Request, Response, Status, Transport, TransportError};

bravo::main!(main);

/// The status page, served at `/` with its cpu count filled in.
const STATUS_PAGE: &str = include_str!("status.html");

struct Config {
    port: u16,
    timeout: Duration,
}

fn config() -> Config {
    let mut config = Config { port: 80, timeout: Duration::from_secs(10) };
    for arg in bravo::env::args() {
        match arg.split_once('=') {
            Some(("port", v)) => config.port = v.parse().unwrap_or(config.port),
            Some(("timeout_ms", v)) => config.timeout = v.parse().map(Duration::from_millis).unwrap_or(config.timeout),
            _ => println!("http: ignoring argument {arg:?} (expected port=N or timeout_ms=N)"),
        }
    }
    config
}

fn main() -> Result<(), NetError> {
    let config = config();
    let (address, _) = bravo::net::wait_for_address(Duration::from_secs(30))?;
    let listener: &'static TcpListener =
        alloc::boxed::Box::leak(alloc::boxed::Box::new(TcpListener::bind(config.port)?));
    let cpus = thread::cpu_count();
    let metrics = Metrics::leak();
    let timeout = config.timeout;
    // An accepting thread on every cpu: each takes the connections its
    // cpu's network stack holds first (see `TcpListener::accept`).
    for cpu in 1..cpus {
        if let Err(e) = thread::spawn_on(cpu, move || accept_loop(listener, timeout, metrics)) {
            println!("http: no accepting thread on cpu {cpu}: {e}");
        }
    }
    println!("http: serving on http://{address}:{} with {cpus} cpu{}", config.port, if cpus == 1 { "" } else { "s" });
    accept_loop(listener, timeout, metrics)
}

/// Accepts connections for good, each served by a thread of its own on
/// the cpu whose network stack holds it (usually this one): no cross-cpu
/// hop.
fn accept_loop(listener: &TcpListener, timeout: Duration, metrics: &'static Metrics) -> ! {
    loop {
        let Ok((stream, _peer)) = listener.accept() else { continue };
        if let Err(e) = thread::spawn_on(stream.cpu(), move || connection(stream, timeout, metrics)) {
            println!("http: no thread for a connection: {e}");
        }
    }
}

/// A TCP stream as microhttp's transport, with a time budget per request:
/// reads give up when the budget since the last response is spent. Counts
/// each response in its cpu's counters when written.
struct Connection<'a> {
    stream: TcpStream,
    budget: Duration,
    deadline: Instant,
    counters: &'static CpuCounters,
    /// The route being answered and when its request was parsed (set by
    /// the handler; empty for the answers microhttp makes itself).
    answering: &'a Cell<Option<(Route, Instant)>>,
}

impl Transport for Connection<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        let now = Instant::now();
        if now >= self.deadline {
            return Err(TransportError::TimedOut);
        }
        self.stream.set_read_timeout(Some(self.deadline.duration_since(now)));
        self.stream.read(buf).map_err(|e| match e {
            NetError::TimedOut => TransportError::TimedOut,
            _ => TransportError::Closed,
        })
    }

    fn write_all(&mut self, data: &[u8]) -> Result<(), TransportError> {
        self.stream.write_all(data).map_err(|_| TransportError::Closed)?;
        self.deadline = Instant::now() + self.budget;
        Ok(())
    }

    fn write_last(&mut self, data: &[u8]) -> Result<(), TransportError> {
        self.stream.write_last(data).map_err(|_| TransportError::Closed)
    }

    fn answered(&mut self, status: Status) {
        let (route, latency) = match self.answering.take() {
            Some((route, parsed)) => (route, Some(Instant::now().duration_since(parsed))),
            None => (Route::Unparsed, None),
        };
        self.counters.answered(route, status.code(), latency);
    }
}

fn connection(stream: TcpStream, budget: Duration, metrics: &'static Metrics) {
    let answering = Cell::new(None);
    let counters = metrics.this_cpu();
    let mut connection =
        Connection { stream, budget, deadline: Instant::now() + budget, counters, answering: &answering };
    microhttp::serve(&mut connection, &Limits::default(), |request| {
        let route = Route::of(&request.path);
        answering.set(Some((route, Instant::now())));
        respond(route, request, metrics)
    });
}

fn respond(route: Route, request: &Request, metrics: &Metrics) -> Response {
    match (route, request.method.as_str()) {
        (Route::Index, "GET") => Response::new(Status::Ok, "text/html; charset=utf-8", index()),
        (Route::Health, "GET") => Response::text(Status::Ok, "ok"),
        (Route::Stats, "GET") => Response::new(Status::Ok, "application/json", stats(metrics)),
        (Route::Metrics, "GET") => match metrics.page() {
            Ok(page) => Response::new(Status::Ok, prometheus_text::CONTENT_TYPE, page),
            Err(e) => Response::text(Status::InternalServerError, &format!("metrics not written: {e}")),
        },
        (Route::Echo, "POST") => echo(request),
        (Route::Hash, "GET") => match hash_work::kib_of(request.path.split_once('?').map(|(_, query)| query)) {
            Ok(kib) => Response::text(Status::Ok, &hash_work::digest_hex(kib)),
            Err(why) => Response::text(Status::BadRequest, &why),
        },
        (Route::Other | Route::Unparsed, _) => Response::text(Status::NotFound, "Not Found"),
        _ => Response::text(Status::MethodNotAllowed, "Method Not Allowed"),
    }
}

/// The body back, copied fallibly: 503 when memory for the copy cannot be
/// had (many large bodies at once), instead of an abort.
fn echo(request: &Request) -> Response {
    Response::try_copy(Status::Ok, "application/octet-stream", &request.body)
        .unwrap_or_else(|_| Response::text(Status::ServiceUnavailable, "no memory for the echo"))
}

/// The status page; it names the cpus before its script first runs.
fn index() -> String {
    STATUS_PAGE.replacen("@CPUS@", &format!("{}", thread::cpu_count()), 1)
}

fn stats(metrics: &Metrics) -> String {
    let cpus = thread::cpu_count();
    let threads: Vec<String> = (0..cpus).map(|c| format!("{}", thread::threads_on(c))).collect();
    let run_queues: Vec<String> = (0..cpus).map(|c| format!("{}", thread::runnable_on(c))).collect();
    let nodes = bravo::memory::node_count();
    let memory: Vec<String> = (0..nodes)
        .map(|n| {
            let s = bravo::memory::stats(n);
            format!("{{\"node\":{n},\"total_bytes\":{},\"free_bytes\":{}}}", s.total, s.free)
        })
        .collect();
    let mut json = String::new();
    let _ = write!(
        json,
        "{{\"uptime_ms\":{},\"cpus\":{cpus},\"threads_per_cpu\":[{}],\"run_queue_per_cpu\":[{}],\"requests\":{},",
        bravo::time::uptime().as_millis(),
        threads.join(","),
        run_queues.join(","),
        metrics.requests()
    );
    match bravo::net::nic_stats() {
        Ok(n) => {
            let _ = write!(
                json,
                "\"nic\":{{\"rx_packets\":{},\"rx_bytes\":{},\"tx_packets\":{},\"tx_bytes\":{},\"rx_missed\":{},\"rx_errors\":{},\"tx_dropped\":{},\"doorbells\":{},\"interrupts\":{}}},",
                n.rx_packets, n.rx_bytes, n.tx_packets, n.tx_bytes, n.rx_missed, n.rx_errors, n.tx_dropped, n.doorbells, n.interrupts
            );
        }
        Err(_) => json.push_str("\"nic\":null,"),
    }
    let queues: Vec<String> = bravo::net::queue_stats()
        .iter()
        .map(|q| {
            format!(
                "{{\"queue\":{},\"cpu\":{},\"rx_packets\":{},\"rx_bytes\":{},\"tx_packets\":{},\"tx_bytes\":{}}}",
                q.queue, q.cpu, q.nic.rx_packets, q.nic.rx_bytes, q.nic.tx_packets, q.nic.tx_bytes
            )
        })
        .collect();
    let _ = write!(json, "\"queues\":[{}],", queues.join(","));
    let net = bravo::net::stats();
    let _ = write!(
        json,
        "\"net\":{{\"sockets\":{},\"tcp_refused\":{},\"half_open_evicted\":{},\"timed_out\":{},\"arp_requests_dropped\":{},\"buffer_bytes\":{},\"rounds\":{},\"last_round_ms\":{}}},",
        net.sockets,
        net.tcp_refused,
        net.half_open_evicted,
        net.timed_out,
        net.arp_requests_dropped,
        net.buffer_bytes,
        net.rounds,
        net.last_round_ms
    );
    let lazy = bravo::memory::committed_stats();
    let _ = write!(
        json,
        "\"lazy\":{{\"stack_bytes\":{},\"page_table_bytes\":{}}},",
        lazy.stack_bytes, lazy.page_table_bytes
    );
    let _ = writeln!(json, "\"memory\":[{}]}}", memory.join(","));
    json
}
