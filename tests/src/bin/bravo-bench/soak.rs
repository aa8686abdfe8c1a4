//! `bench soak` (`just soak`): minutes of mixed load against
//! `examples/http` (1 vCPU by default, 256 MiB, its default 10 s request
//! timeout) over a tap in a network namespace (root). Four kept-alive
//! clients ask `GET /health` all along; beside them, phases of 20 s take
//! turns: a churn of one-request connections, malformed requests, slow
//! clients (trickling a request, or falling silent halfway), a SYN flood,
//! an RST flood, and a burst of idle connections held then closed. At the
//! end, once the guest is quiet, free memory and the socket count from
//! `/stats` are compared with the start. Prints a summary (and writes it
//! to `soak.md` in the bench directory); exits 1 when the service stopped
//! answering, leaked, or a phase saw a request go unanswered.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bravo_tests::netns::{Netns, TAP};
use bravo_tests::report::bench_dir;
use bravo_tests::tcp_load::{self, Flood, FloodKind, GuestStats, GUEST};
use bravo_tests::Accel;

use crate::{fail, progress, Options, System};

/// How long each phase lasts.
const PHASE: Duration = Duration::from_secs(20);
/// Kept-alive clients running all along.
const STEADY_CLIENTS: usize = 4;
/// Spoofed segments per second in the floods.
const FLOOD_RATE: u32 = 2_000;
/// Bravo's per-request timeout in the soak (its default).
const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// How long a client waits after a failure before it tries again.
const REFUSED_PAUSE: Duration = Duration::from_millis(100);
/// How long the guest gets to become quiet after the load.
const SETTLE: Duration = Duration::from_secs(60);

/// Requests that deserve a 4xx (501 for a transfer coding the service
/// does not implement, as RFC 9110 says) or a closed connection, never a
/// hang.
const MALFORMED: &[&[u8]] = &[
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /health HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n",
    b"GET /health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /health HTTP/1.1\r\nHost\r\n\r\n",
    b"\x00\x01\x02\xff\xfe\r\n\r\n",
    b"GET /\x7f HTTP/1.1\r\n\r\n",
];

/// The kinds of phase, in the order they take turns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Churn,
    Malformed,
    SlowClients,
    SynFlood,
    RstFlood,
    IdleBurst,
}

const PHASES: [Phase; 6] =
    [Phase::Churn, Phase::Malformed, Phase::SlowClients, Phase::SynFlood, Phase::RstFlood, Phase::IdleBurst];

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Churn => "churn of one-request connections",
            Phase::Malformed => "malformed requests (answered 4xx/501 or closed)",
            Phase::SlowClients => "slow clients (trickling, or silent halfway)",
            Phase::SynFlood => "SYN flood (new connections tried meanwhile)",
            Phase::RstFlood => "RST flood (new connections tried meanwhile)",
            Phase::IdleBurst => "500 idle connections held 5 s, then closed",
        }
    }
}

/// Counts for one kind of phase over the whole soak.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    runs: u64,
    ok: u64,
    failed: u64,
}

pub fn run(args: &[String]) {
    let options = Options::new().parse(args, &["--minutes", "--cpus"]);
    if !tcp_load::is_root() {
        fail("bench soak needs root: it makes a network namespace with a tap, enters it and writes raw frames (run it with sudo)");
    }
    tcp_load::raise_fd_limit();
    let accel = Accel::from_env_or_default().unwrap_or_else(|e| fail(&e));
    let netns = Netns::create().unwrap_or_else(|e| fail(&format!("bench soak needs a network namespace: {e}")));
    let machine = System::Bravo
        .conns_machine(REQUEST_TIMEOUT_MS)
        .accel(accel)
        .cpus(options.single_cpu_count("soak"))
        .tap_net(netns.name(), TAP)
        .timeout(Duration::from_secs(48 * 3600));
    let mut vm = machine.start();
    if let Err(e) = vm.wait_for_line("http: serving on", Duration::from_secs(120)) {
        fail(&format!("examples/http did not come up: {e}"));
    }
    if let Err(e) = tcp_load::wait_until_served(netns.name(), GUEST, Duration::from_secs(30)) {
        fail(&format!("{e}\n{}", vm.serial()));
    }
    let start_stats = fresh_stats(&netns).unwrap_or_else(|e| fail(&e));
    let total = Duration::from_secs_f64(options.minutes * 60.0);
    let started = Instant::now();

    let stop = AtomicBool::new(false);
    let (steady_ok, steady_failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut tallies = [Tally::default(); PHASES.len()];
    std::thread::scope(|scope| {
        let steady = scope.spawn(|| {
            tcp_load::on_threads_in_netns(netns.name(), STEADY_CLIENTS, |_| {
                steady_client(&stop, &steady_ok, &steady_failed)
            })
        });
        let mut turn = 0;
        while started.elapsed() < total {
            let phase = PHASES[turn % PHASES.len()];
            let length = PHASE.min(total.saturating_sub(started.elapsed())).max(Duration::from_secs(1));
            progress(&format!(
                "soak: {:>4.1}/{} min: {} (steady clients: {} served, {} failed)",
                started.elapsed().as_secs_f64() / 60.0,
                options.minutes,
                phase.name(),
                steady_ok.load(Ordering::Relaxed),
                steady_failed.load(Ordering::Relaxed)
            ));
            let (ok, failed) = run_phase(phase, &netns, length);
            let tally = &mut tallies[turn % PHASES.len()];
            tally.runs += 1;
            tally.ok += ok;
            tally.failed += failed;
            turn += 1;
        }
        stop.store(true, Ordering::Relaxed);
        if let Err(e) = steady.join().unwrap_or_else(|_| Err("a steady client panicked".into())) {
            fail(&e);
        }
    });
    let load_time = started.elapsed();
    progress("soak: letting the guest become quiet");
    let (end_stats, settled_in) = settle(&netns, &start_stats);
    let served_after = tcp_load::wait_until_served(netns.name(), GUEST, Duration::from_secs(5));
    eprintln!();
    let panicked = vm.wait_for_line("PANIC", Duration::from_millis(200)).ok().map(|l| l.text);

    let mut summary = format!(
        "# Soak: examples/http under mixed load for {:.1} min\n\n{} vCPU, 256 MiB, {} under {}; phases of {} s in turn; {STEADY_CLIENTS} kept-alive clients all along; floods at {FLOOD_RATE} segments/s.\n\n",
        load_time.as_secs_f64() / 60.0,
        options.single_cpu_count("soak"),
        "e1000 on a tap in a network namespace",
        accel.name().to_uppercase(),
        PHASE.as_secs()
    );
    summary.push_str("| load | phases | served | failed |\n|---|--:|--:|--:|\n");
    summary.push_str(&format!(
        "| {STEADY_CLIENTS} kept-alive clients, all along | - | {} | {} |\n",
        steady_ok.load(Ordering::Relaxed),
        steady_failed.load(Ordering::Relaxed)
    ));
    for (phase, tally) in PHASES.iter().zip(&tallies) {
        summary.push_str(&format!("| {} | {} | {} | {} |\n", phase.name(), tally.runs, tally.ok, tally.failed));
    }
    let sockets = |s: &GuestStats| s.net.map_or("not reported".to_string(), |n| n.sockets.to_string());
    summary.push_str(&format!(
        "\n| at | free memory | sockets |\n|---|--:|--:|\n| start | {} B | {} |\n",
        start_stats.free_bytes,
        sockets(&start_stats)
    ));
    let mut problems = Vec::new();
    match &end_stats {
        Ok(end) => {
            let free_delta = end.free_bytes as i64 - start_stats.free_bytes as i64;
            let memory_back = end.free_bytes.abs_diff(start_stats.free_bytes) * 100 <= start_stats.free_bytes;
            summary.push_str(&format!(
                "| end ({:.1} s after the load) | {} B ({free_delta:+} B, {}) | {} |\n\n",
                settled_in.as_secs_f64(),
                end.free_bytes,
                if memory_back { "within 1%" } else { "more than 1% apart" },
                sockets(end)
            ));
            if !memory_back {
                problems.push(format!("free memory {free_delta:+} bytes from the start"));
            }
            match (start_stats.net, end.net) {
                (Some(a), Some(b)) if a.sockets != b.sockets => {
                    problems.push(format!("sockets {} at the start, {} at the end", a.sockets, b.sockets))
                }
                (Some(_), Some(_)) => {}
                _ => problems.push(
                    "/stats does not report sockets (\"net\":{\"sockets\":N}): the socket count was not compared"
                        .into(),
                ),
            }
        }
        Err(e) => {
            summary.push_str(&format!(
                "| end ({:.1} s after the load) | no /stats: {e} | - |\n\n",
                settled_in.as_secs_f64()
            ));
            problems.push(format!("no /stats at the end: {e}"));
        }
    }
    if let Err(e) = &served_after {
        problems.push(format!("no longer serving new connections: {e}"));
    }
    if let Some(line) = &panicked {
        problems.push(format!("the guest panicked: {line}"));
    }
    if steady_failed.load(Ordering::Relaxed) > 0 {
        problems.push("kept-alive clients saw failed requests".into());
    }
    for (phase, tally) in PHASES.iter().zip(&tallies) {
        if tally.failed > 0 {
            problems.push(format!("{}: {} failed", phase.name(), tally.failed));
        }
    }
    if problems.is_empty() {
        summary.push_str("Verdict: **passed**: served throughout, nothing leaked.\n");
    } else {
        summary.push_str("Verdict: **failed**:\n\n");
        for p in &problems {
            summary.push_str(&format!("- {p}\n"));
        }
    }
    println!("{summary}");
    let path = bench_dir().join("soak.md");
    if std::fs::create_dir_all(bench_dir()).and_then(|()| std::fs::write(&path, &summary)).is_ok() {
        println!("wrote {}", path.display());
    }
    drop(vm);
    drop(netns);
    std::process::exit(if problems.is_empty() { 0 } else { 1 });
}

/// `/stats` on a connection of its own.
fn fresh_stats(netns: &Netns) -> Result<GuestStats, String> {
    tcp_load::in_netns(netns.name(), || {
        let mut stream =
            tcp_load::connect(GUEST, Duration::from_secs(10)).map_err(|e| format!("/stats connection: {e}"))?;
        tcp_load::stats(&mut stream)
    })?
}

/// Waits until memory and sockets are back to `start` (or [`SETTLE`] has
/// passed); returns the last `/stats` (or why there was none) and how long
/// that took.
fn settle(netns: &Netns, start: &GuestStats) -> (Result<GuestStats, String>, Duration) {
    let begun = Instant::now();
    loop {
        let now = fresh_stats(netns);
        let back = now.as_ref().is_ok_and(|now| {
            now.free_bytes.abs_diff(start.free_bytes) * 100 <= start.free_bytes
                && now.net.map(|n| n.sockets) == start.net.map(|n| n.sockets)
        });
        if back || begun.elapsed() >= SETTLE {
            return (now, begun.elapsed());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A kept-alive client: `GET /health` about 100 times a second until
/// `stop`, reconnecting after a failure (which it counts).
fn steady_client(stop: &AtomicBool, ok: &AtomicU64, failed: &AtomicU64) {
    let mut stream: Option<TcpStream> = None;
    while !stop.load(Ordering::Relaxed) {
        let result = match stream.as_mut() {
            Some(s) => tcp_load::health(s),
            None => tcp_load::connect(GUEST, Duration::from_secs(5)).and_then(|mut s| {
                let served = tcp_load::health(&mut s);
                stream = Some(s);
                served
            }),
        };
        match result {
            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => {
                stream = None;
                failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs one phase for `length`; returns (served, failed).
fn run_phase(phase: Phase, netns: &Netns, length: Duration) -> (u64, u64) {
    let result = match phase {
        Phase::Churn => {
            tcp_load::churn(netns.name(), GUEST, 4, usize::MAX, length).map(|c| (c.served as u64, c.failed as u64))
        }
        Phase::Malformed => tcp_load::on_threads_in_netns(netns.name(), 2, |_| malformed(length)).map(sum),
        Phase::SlowClients => {
            tcp_load::on_threads_in_netns(netns.name(), 16, |i| slow_client(i % 2 == 0, length)).map(sum)
        }
        Phase::SynFlood | Phase::RstFlood => {
            let kind = if phase == Phase::SynFlood { FloodKind::Syn } else { FloodKind::Rst };
            let flood = Flood::start(netns.name(), TAP, kind, GUEST, FLOOD_RATE).unwrap_or_else(|e| fail(&e));
            let churn = tcp_load::churn(netns.name(), GUEST, 1, usize::MAX, length);
            flood.stop().unwrap_or_else(|e| fail(&e));
            // After the flood, a new connection within 1 s.
            let after = tcp_load::wait_until_served(netns.name(), GUEST, Duration::from_secs(1)).is_ok();
            churn.map(|c| (c.served as u64 + after as u64, c.failed as u64 + !after as u64))
        }
        Phase::IdleBurst => {
            let deadline = Instant::now() + length;
            tcp_load::open_idle(netns.name(), GUEST, 500, 100, 2, deadline).map(|idle| {
                std::thread::sleep(Duration::from_secs(5).min(deadline.saturating_duration_since(Instant::now())));
                (idle.streams.len() as u64, idle.failed as u64)
            })
        }
    };
    result.unwrap_or_else(|e| fail(&e))
}

fn sum(counts: Vec<(u64, u64)>) -> (u64, u64) {
    counts.into_iter().fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
}

/// Sends malformed requests on fresh connections for `length`: each must
/// be answered with a 4xx (or 501) or see its connection closed within
/// 15 s.
fn malformed(length: Duration) -> (u64, u64) {
    let start = Instant::now();
    let (mut ok, mut failed) = (0, 0);
    let mut oversized = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
    oversized.resize(20_000, b'a');
    oversized.extend_from_slice(b"\r\n\r\n");
    let mut which = 0;
    while start.elapsed() < length {
        let request: &[u8] = MALFORMED.get(which % (MALFORMED.len() + 1)).copied().unwrap_or(&oversized);
        which += 1;
        let refused = tcp_load::connect(GUEST, Duration::from_secs(15)).map(|mut stream| {
            let _ = stream.write_all(request);
            refused_cleanly(&mut stream)
        });
        match refused {
            Ok(true) => ok += 1,
            Ok(false) => failed += 1,
            Err(_) => {
                failed += 1;
                std::thread::sleep(REFUSED_PAUSE);
            }
        }
    }
    (ok, failed)
}

/// Whether the server answered a 4xx or 501, or closed or reset the
/// connection, before the read timeout.
fn refused_cleanly(stream: &mut TcpStream) -> bool {
    let mut head = [0u8; 12];
    let mut got = 0;
    loop {
        match stream.read(&mut head[got..]) {
            Ok(0) => return true,
            Ok(n) => {
                got += n;
                if got == head.len() {
                    return head.starts_with(b"HTTP/1.1 4") || head.starts_with(b"HTTP/1.1 501");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A slow client for `length`: `trickle` sends a request a byte every
/// 100 ms and must be answered (or told 408 when its 10 s run out); the
/// other sends half a request and falls silent, and must be closed with a
/// 408 once the service's timeout passes.
fn slow_client(trickle: bool, length: Duration) -> (u64, u64) {
    let start = Instant::now();
    let (mut ok, mut failed) = (0, 0);
    let request = tcp_load::get_request("/health");
    loop {
        let served = tcp_load::connect(GUEST, Duration::from_secs(15)).and_then(|mut stream| {
            if trickle {
                for byte in &request {
                    stream.write_all(std::slice::from_ref(byte))?;
                    std::thread::sleep(Duration::from_millis(100));
                }
                let status = tcp_load::read_reply(&mut stream)?.status;
                Ok(status == 200 || status == 408)
            } else {
                stream.write_all(&request[..request.len() / 2])?;
                Ok(tcp_load::read_reply(&mut stream).is_ok_and(|r| r.status == 408))
            }
        });
        match served {
            Ok(true) => ok += 1,
            _ => {
                failed += 1;
                std::thread::sleep(REFUSED_PAUSE);
            }
        }
        if !trickle || start.elapsed() + Duration::from_secs(5) >= length {
            break;
        }
    }
    (ok, failed)
}
