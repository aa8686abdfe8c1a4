//! What the service counts, and its `/metrics` page in the Prometheus text
//! format 0.0.4 (written by `prometheus-text`): responses by route and
//! status class, response latency per route, and the kernel's statistics
//! read at the scrape (threads and run queues per cpu, memory per node,
//! the NIC's counters, whole and per queue, and the network stack's).
//!
//! Counting takes no lock: each cpu has its own block of atomic counters
//! (threads never move, so a connection's thread keeps its cpu's block),
//! and a scrape adds the blocks up.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use bravo::thread;
use prometheus_text::{Encoder, Error, Histogram, HistogramSnapshot, Kind};

/// What a response is counted under: the service's routes, whatever else
/// was asked (one label for every unknown path, so that clients cannot
/// grow the label set), and what `microhttp` refused before routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Index,
    Health,
    Stats,
    Metrics,
    Echo,
    Hash,
    Other,
    Unparsed,
}

impl Route {
    const ALL: [Route; 8] = [
        Route::Index,
        Route::Health,
        Route::Stats,
        Route::Metrics,
        Route::Echo,
        Route::Hash,
        Route::Other,
        Route::Unparsed,
    ];

    /// The route of a request target (its query, after `?`, does not count).
    pub fn of(target: &str) -> Route {
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        match path {
            "/" => Route::Index,
            "/health" => Route::Health,
            "/stats" => Route::Stats,
            "/metrics" => Route::Metrics,
            "/echo" => Route::Echo,
            "/hash" => Route::Hash,
            _ => Route::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Route::Index => "/",
            Route::Health => "/health",
            Route::Stats => "/stats",
            Route::Metrics => "/metrics",
            Route::Echo => "/echo",
            Route::Hash => "/hash",
            Route::Other => "other",
            Route::Unparsed => "unparsed",
        }
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Latency bucket bounds, in microseconds: 100 µs to 10 s.
const LATENCY_BOUNDS: [u64; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];
type Latency = Histogram<{ LATENCY_BOUNDS.len() }>;

/// One cpu's counters, on a cache line of its own.
#[repr(align(64))]
pub struct CpuCounters {
    /// Responses by route and status class.
    responses: [[AtomicU64; CLASSES.len()]; Route::ALL.len()],
    /// Latency by route (from the request parsed to its response
    /// written), for the routes a handler answered.
    latency: [Latency; Route::ALL.len()],
}

impl CpuCounters {
    fn new() -> Self {
        CpuCounters {
            responses: core::array::from_fn(|_| core::array::from_fn(|_| AtomicU64::new(0))),
            latency: core::array::from_fn(|_| Histogram::new(LATENCY_BOUNDS)),
        }
    }

    /// Counts a response with `code`, and its latency when a handler
    /// answered it.
    pub fn answered(&self, route: Route, code: u16, latency: Option<Duration>) {
        // (Codes are 100 to 599; anything else would be counted as 5xx.)
        let class = usize::from(code / 100).clamp(1, CLASSES.len()) - 1;
        self.responses[route as usize][class].fetch_add(1, Ordering::Relaxed);
        if let Some(latency) = latency {
            self.latency[route as usize].observe(latency.as_micros().try_into().unwrap_or(u64::MAX));
        }
    }
}

/// Every cpu's counters.
pub struct Metrics {
    cpus: Box<[CpuCounters]>,
}

impl Metrics {
    /// Counters for every cpu, for good.
    pub fn leak() -> &'static Metrics {
        let cpus = (0..thread::cpu_count()).map(|_| CpuCounters::new()).collect();
        Box::leak(Box::new(Metrics { cpus }))
    }

    /// The counters of the cpu running the caller.
    pub fn this_cpu(&self) -> &CpuCounters {
        &self.cpus[thread::current_cpu() % self.cpus.len()]
    }

    /// Requests answered so far (every response but those microhttp made
    /// before routing).
    pub fn requests(&self) -> u64 {
        let routed = |c: &'_ CpuCounters| {
            c.responses[..Route::Unparsed as usize].iter().flatten().map(|n| n.load(Ordering::Relaxed)).sum::<u64>()
        };
        self.cpus.iter().map(routed).sum()
    }

    /// The `/metrics` page.
    pub fn page(&self) -> Result<String, Error> {
        let mut text = String::new();
        let mut out = Encoder::new(&mut text);
        self.encode_http(&mut out)?;
        encode_kernel(&mut out)?;
        Ok(text)
    }

    fn encode_http(&self, out: &mut Encoder<&mut String>) -> Result<(), Error> {
        out.family("bravo_http_requests_total", "HTTP responses sent, by route and status class (route=\"unparsed\": refused before routing, or a client idle past its timeout).", Kind::Counter)?;
        for route in Route::ALL {
            for (class, code) in CLASSES.iter().enumerate() {
                let total: u64 =
                    self.cpus.iter().map(|c| c.responses[route as usize][class].load(Ordering::Relaxed)).sum();
                out.sample(&[("route", &route.label()), ("code", code)], total)?;
            }
        }
        out.family(
            "bravo_http_request_duration_seconds",
            "Time from a request parsed to its response written, by route.",
            Kind::Histogram,
        )?;
        for route in Route::ALL.into_iter().filter(|&r| r != Route::Unparsed) {
            let mut total =
                HistogramSnapshot { bounds: LATENCY_BOUNDS, counts: [0; LATENCY_BOUNDS.len()], above: 0, sum: 0 };
            for cpu in self.cpus.iter() {
                total.merge(&cpu.latency[route as usize].snapshot())?;
            }
            out.histogram(&[("route", &route.label())], &total, 1e6)?;
        }
        Ok(())
    }
}

/// A family of one sample with no labels.
fn single(out: &mut Encoder<&mut String>, name: &'static str, help: &str, kind: Kind, value: u64) -> Result<(), Error> {
    out.family(name, help, kind)?;
    out.sample(&[], value)
}

fn encode_kernel(out: &mut Encoder<&mut String>) -> Result<(), Error> {
    out.family("bravo_uptime_seconds", "Time since boot.", Kind::Gauge)?;
    out.sample(&[], bravo::time::uptime().as_secs_f64())?;
    let cpus = thread::cpu_count();
    single(out, "bravo_cpus", "Cpus of the machine.", Kind::Gauge, cpus as u64)?;
    out.family("bravo_threads", "Live threads, by cpu.", Kind::Gauge)?;
    for cpu in 0..cpus {
        out.sample(&[("cpu", &cpu)], thread::threads_on(cpu))?;
    }
    out.family("bravo_run_queue_length", "Threads ready to run and waiting for their cpu, by cpu.", Kind::Gauge)?;
    for cpu in 0..cpus {
        out.sample(&[("cpu", &cpu)], thread::runnable_on(cpu))?;
    }
    let nodes: Vec<_> = (0..bravo::memory::node_count()).map(bravo::memory::stats).collect();
    out.family("bravo_memory_total_bytes", "Memory, by NUMA node.", Kind::Gauge)?;
    for (node, stats) in nodes.iter().enumerate() {
        out.sample(&[("node", &node)], stats.total)?;
    }
    out.family("bravo_memory_free_bytes", "Memory free (frames and heap), by NUMA node.", Kind::Gauge)?;
    for (node, stats) in nodes.iter().enumerate() {
        out.sample(&[("node", &node)], stats.free)?;
    }
    let lazy = bravo::memory::committed_stats();
    single(
        out,
        "bravo_memory_thread_stack_bytes",
        "Memory committed in thread stacks.",
        Kind::Gauge,
        lazy.stack_bytes as u64,
    )?;
    single(
        out,
        "bravo_memory_page_table_bytes",
        "Memory in the page tables of lazily committed memory.",
        Kind::Gauge,
        lazy.page_table_bytes as u64,
    )?;
    // No NIC, no NIC families.
    if let Ok(nic) = bravo::net::nic_stats() {
        let counters = [
            ("bravo_nic_rx_packets_total", "Frames received.", nic.rx_packets),
            ("bravo_nic_rx_bytes_total", "Bytes received.", nic.rx_bytes),
            ("bravo_nic_rx_errors_total", "Frames received bad (errors, wrong length).", nic.rx_errors),
            ("bravo_nic_rx_missed_total", "Frames the device dropped for want of a receive buffer.", nic.rx_missed),
            ("bravo_nic_tx_packets_total", "Frames sent.", nic.tx_packets),
            ("bravo_nic_tx_bytes_total", "Bytes sent.", nic.tx_bytes),
            ("bravo_nic_tx_dropped_total", "Frames dropped because the transmit ring was full.", nic.tx_dropped),
            ("bravo_nic_doorbells_total", "Doorbells (tail writes, queue notifications) written.", nic.doorbells),
            ("bravo_nic_interrupts_total", "Interrupts the NIC raised.", nic.interrupts),
        ];
        for (name, help, value) in counters {
            single(out, name, help, Kind::Counter, value)?;
        }
    }
    let queues = bravo::net::queue_stats();
    /// A family's name, help text, and value in a queue's counters.
    type PerQueue = (&'static str, &'static str, fn(&bravo::net::NicStats) -> u64);
    let per_queue: [PerQueue; 4] = [
        ("bravo_nic_queue_rx_packets_total", "Frames received, by NIC queue and the cpu that owns it.", |n| {
            n.rx_packets
        }),
        ("bravo_nic_queue_rx_bytes_total", "Bytes received, by NIC queue and the cpu that owns it.", |n| n.rx_bytes),
        ("bravo_nic_queue_tx_packets_total", "Frames sent, by NIC queue and the cpu that owns it.", |n| n.tx_packets),
        ("bravo_nic_queue_tx_bytes_total", "Bytes sent, by NIC queue and the cpu that owns it.", |n| n.tx_bytes),
    ];
    if !queues.is_empty() {
        for (name, help, value) in per_queue {
            out.family(name, help, Kind::Counter)?;
            for q in &queues {
                out.sample(&[("queue", &q.queue), ("cpu", &q.cpu)], value(&q.nic))?;
            }
        }
    }
    let net = bravo::net::stats();
    single(
        out,
        "bravo_net_sockets",
        "Sockets the network stack holds (TCP, UDP, DHCP; listening ones too).",
        Kind::Gauge,
        net.sockets,
    )?;
    single(
        out,
        "bravo_net_socket_buffer_bytes",
        "Memory committed in TCP sockets' buffers.",
        Kind::Gauge,
        net.buffer_bytes,
    )?;
    let counters = [
        ("bravo_net_tcp_refused_total", "New TCP connections refused with a reset.", net.tcp_refused),
        ("bravo_net_half_open_evicted_total", "Half-open connections dropped for a newer one.", net.half_open_evicted),
        ("bravo_net_timed_out_total", "Connections dropped for outliving their state's bound.", net.timed_out),
        (
            "bravo_net_arp_requests_dropped_total",
            "ARP requests dropped over the rate allowed.",
            net.arp_requests_dropped,
        ),
        ("bravo_net_rounds_total", "Rounds of the network thread.", net.rounds),
    ];
    for (name, help, value) in counters {
        single(out, name, help, Kind::Counter, value)?;
    }
    Ok(())
}
