//! `bench conns`: many connections to an HTTP service in a 256 MiB guest,
//! Bravo's `examples/http` beside the Linux peer's epoll server, over a
//! tap in a network namespace the benchmark creates and deletes (root).
//! Each run boots a fresh guest for each of three measures:
//!
//! - **rate**: 16 clients open connections of one request each
//!   (`GET /health` with `Connection: close`, answer read, close);
//! - **SYN flood**: one kept-alive client's `GET /health` rate, first
//!   alone, then while spoofed SYNs (`--syn-rate` per second, random
//!   on-link sources, written onto the tap with a packet socket) hit port
//!   80, with new connections tried meanwhile; then how long after the
//!   flood's end a new connection is served;
//! - **idle**: kept-alive connections opened 256 at a time, each served one
//!   request, up to `--cap`; then each one asked again. Free memory from
//!   `/stats` before and after, per connection held.

use std::time::{Duration, Instant};

use bravo_tests::netns::{Netns, TAP};
use bravo_tests::report::{Better, Report, Row, Samples};
use bravo_tests::tcp_load::{self, Flood, FloodKind, GUEST};
use bravo_tests::{Accel, Running};

use crate::{fail, progress, Options, System};

/// Clients opening connections at once in the rate measure.
const CHURN_CLIENTS: usize = 16;
/// Connections started at once while opening idle ones.
const IDLE_BURST: usize = 256;
/// Bursts in a row that opened nothing before the idle measure stops.
const IDLE_PATIENCE: usize = 3;
/// How long a new connection may take to be served after a flood before
/// the measure gives up (and reports this bound).
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);
/// Bravo closes connections idle for longer (its `timeout_ms=`): longer
/// than any measure.
const IDLE_MS: u64 = 3_600_000;

/// A row of the report: group, label, unit, which way is better, and the
/// number it takes from a run.
type Measure<'a> = (&'a str, &'a str, &'a str, Better, fn(&Measured) -> Option<f64>);

/// One run's numbers for one system (`None`: not measured).
#[derive(Clone, Copy, Debug, Default)]
struct Measured {
    connections_per_sec: Option<f64>,
    keep_alive: Option<f64>,
    keep_alive_flood: Option<f64>,
    new_during_flood: Option<f64>,
    recovery_ms: Option<f64>,
    held: Option<f64>,
    served_again: Option<f64>,
    kib_per_connection: Option<f64>,
}

pub fn run(args: &[String]) {
    let options = Options { secs: 5.0, ..Options::new() }
        .parse(args, &["--runs", "--secs", "--cpus", "--cap", "--syn-rate", "--systems"]);
    if !tcp_load::is_root() {
        fail("bench conns needs root: it makes a network namespace with a tap, enters it and writes raw frames (run it with sudo)");
    }
    let descriptors = tcp_load::raise_fd_limit();
    if descriptors < options.cap as u64 + 256 {
        fail(&format!(
            "--cap {} needs as many open files, and the limit here is {descriptors} (raise it with `ulimit -n`)",
            options.cap
        ));
    }
    let wanted: Vec<System> = options.systems.iter().copied().filter(|&s| s != System::Ceiling).collect();
    let accel = Accel::from_env_or_default().unwrap_or_else(|e| fail(&e));
    let (systems, mut notes) = System::available(&wanted);
    let mut results: Vec<(System, Vec<Measured>)> = Vec::new();
    for &system in &systems {
        let netns = Netns::create().unwrap_or_else(|e| fail(&format!("bench conns needs a network namespace: {e}")));
        let runs: Vec<Measured> =
            (1..=options.runs).map(|run| measure(system, run, &options, &netns, accel, &mut notes)).collect();
        results.push((system, runs));
    }
    eprintln!();

    let cpus = options.single_cpu_count("conns");
    let mut report = Report::new(
        "conns",
        &format!(
            "Connections to GET /health under {}, {cpus} vCPU{}, 256 MiB, median of {} runs",
            accel.name().to_uppercase(),
            if cpus == 1 { "" } else { "s" },
            options.runs
        ),
    );
    report.notes.push("wire: e1000 on a tap inside a network namespace made by the benchmark; the clients and the flood run in that namespace; a fresh guest for each measure".into());
    report.notes.push("Bravo: examples/http; Linux: the peer's single-threaded epoll server (tests/linux-peer), same QEMU command line".into());
    report.notes.push(format!(
        "SYN flood: {} SYN/s from random sources in 10.0.1.0-10.0.254.255 (on the guests' /16 link, never answering ARP) for {} s; recovery capped at {} s",
        options.syn_rate, options.secs, RECOVERY_LIMIT.as_secs()
    ));
    report.notes.push(format!(
        "idle: up to {} connections opened {IDLE_BURST} at a time, each served one request, then all asked again",
        options.cap
    ));
    let held = |system| {
        let (_, runs) = results.iter().find(|(s, _)| *s == system)?;
        Samples(runs.iter().filter_map(|m| m.served_again).collect()).median()
    };
    for system in &systems {
        let served = held(*system).unwrap_or(0.0);
        report.notes.push(format!(
            "goal 10,000 idle connections held and served again: {} {} ({})",
            system.name(),
            served as u64,
            if served >= 10_000.0 { "met" } else { "not met" }
        ));
    }
    report.notes.extend(notes);
    let pick = |system: System, f: fn(&Measured) -> Option<f64>| -> Option<Samples> {
        let (_, runs) = results.iter().find(|(s, _)| *s == system)?;
        Some(Samples(runs.iter().filter_map(f).collect()))
    };
    let flood = format!("SYN flood {}/s", options.syn_rate);
    let idle = format!("idle, cap {}", options.cap);
    let measures: [Measure; 8] = [
        ("new connections", "one request each, 16 clients", "conn/s", Better::Higher, |m| m.connections_per_sec),
        ("1 kept-alive client", "no flood", "req/s", Better::Higher, |m| m.keep_alive),
        (&flood, "1 kept-alive client", "req/s", Better::Higher, |m| m.keep_alive_flood),
        (&flood, "new connections served", "conn/s", Better::Higher, |m| m.new_during_flood),
        (&flood, "after its end, a new connection served in", "ms", Better::Lower, |m| m.recovery_ms),
        (&idle, "connections held (each served once)", "conn", Better::Higher, |m| m.held),
        (&idle, "held ones served a second request", "conn", Better::Higher, |m| m.served_again),
        (&idle, "memory per idle connection", "KiB", Better::Lower, |m| m.kib_per_connection),
    ];
    for (group, label, unit, better, f) in measures {
        report.rows.push(Row {
            group: group.into(),
            label: label.into(),
            unit: unit.into(),
            better,
            bravo: pick(System::Bravo, f).unwrap_or_default(),
            linux: pick(System::Linux, f),
            ceiling: None,
        });
    }
    crate::finish(&report);
}

/// One run of the three measures on `system`, each on a fresh guest.
fn measure(
    system: System,
    run: usize,
    options: &Options,
    netns: &Netns,
    accel: Accel,
    notes: &mut Vec<String>,
) -> Measured {
    let mut m = Measured::default();
    let secs = Duration::from_secs_f64(options.secs);
    let name = system.name();

    progress(&format!("conns: {name} run {run}: new connections"));
    let mut vm = boot(system, netns, accel, options.single_cpu_count("conns"));
    match tcp_load::churn(netns.name(), GUEST, CHURN_CLIENTS, usize::MAX, secs) {
        Ok(churn) => {
            eprintln!(
                "\rconns: {name} run {run}: {:.0} connections/s ({} served, {} failed)",
                churn.rate(),
                churn.served,
                churn.failed
            );
            m.connections_per_sec = Some(churn.rate());
        }
        Err(e) => fail(&format!("{name}: {e}")),
    }
    note_panic(&mut vm, system, run, "new connections", notes);
    drop(vm);

    progress(&format!("conns: {name} run {run}: SYN flood"));
    let mut vm = boot(system, netns, accel, options.single_cpu_count("conns"));
    flood(&mut m, netns, options, secs);
    eprintln!(
        "\rconns: {name} run {run}: kept-alive {:.0} req/s alone, {:.0} req/s in the flood; {:.1} new conn/s in the flood; served again {:.0} ms after it",
        m.keep_alive.unwrap_or(0.0), m.keep_alive_flood.unwrap_or(0.0), m.new_during_flood.unwrap_or(0.0), m.recovery_ms.unwrap_or(f64::NAN)
    );
    note_panic(&mut vm, system, run, "SYN flood", notes);
    drop(vm);

    progress(&format!("conns: {name} run {run}: idle connections"));
    let mut vm = boot(system, netns, accel, options.single_cpu_count("conns"));
    idle(&mut m, netns, options.cap, notes, name);
    eprintln!(
        "\rconns: {name} run {run}: {:.0} idle connections held, {:.0} served again, {:.1} KiB each",
        m.held.unwrap_or(0.0),
        m.served_again.unwrap_or(0.0),
        m.kib_per_connection.unwrap_or(f64::NAN)
    );
    note_panic(&mut vm, system, run, "idle connections", notes);
    m
}

/// Boots `system`'s service on the namespace's tap; waits until it serves.
fn boot(system: System, netns: &Netns, accel: Accel, cpus: usize) -> Running {
    let machine = system
        .conns_machine(IDLE_MS)
        .accel(accel)
        .cpus(cpus)
        .tap_net(netns.name(), TAP)
        .timeout(Duration::from_secs(3600));
    let mut vm = machine.start();
    if let Err(e) = vm.wait_for_line(system.http_ready_line(), Duration::from_secs(120)) {
        fail(&format!("{} did not come up: {e}", system.name()));
    }
    // The first frames after the guest starts its NIC may be lost.
    if let Err(e) = tcp_load::wait_until_served(netns.name(), GUEST, Duration::from_secs(30)) {
        fail(&format!("{}: {e}\n{}", system.name(), vm.serial()));
    }
    vm
}

/// Notes a panic the guest printed (its service is gone then).
fn note_panic(vm: &mut Running, system: System, run: usize, measure: &str, notes: &mut Vec<String>) {
    if let Ok(line) = vm.wait_for_line("PANIC", Duration::from_millis(200)) {
        notes.push(format!("{} run {run}, {measure}: the guest panicked: {}", system.name(), line.text.trim()));
    }
}

/// `GET /health` on `stream` for `secs`: answers per second (the loop
/// stops at the first failure; the rate is still over the whole window).
fn keep_alive_rate(stream: &mut std::net::TcpStream, secs: Duration) -> f64 {
    let start = Instant::now();
    let mut served = 0u64;
    while start.elapsed() < secs && tcp_load::health(stream).is_ok() {
        served += 1;
    }
    served as f64 / secs.as_secs_f64()
}

/// The SYN-flood measures.
fn flood(m: &mut Measured, netns: &Netns, options: &Options, secs: Duration) {
    let mut stream = match tcp_load::in_netns(netns.name(), || tcp_load::connect(GUEST, Duration::from_secs(5))) {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => fail(&format!("a kept-alive connection: {e}")),
        Err(e) => fail(&e),
    };
    m.keep_alive = Some(keep_alive_rate(&mut stream, secs));
    let flood = Flood::start(netns.name(), TAP, FloodKind::Syn, GUEST, options.syn_rate).unwrap_or_else(|e| fail(&e));
    let (kept, fresh) = std::thread::scope(|scope| {
        let fresh = scope.spawn(|| tcp_load::churn(netns.name(), GUEST, 1, usize::MAX, secs));
        (keep_alive_rate(&mut stream, secs), fresh.join())
    });
    let sent = flood.stop().unwrap_or_else(|e| fail(&e));
    if sent == 0 {
        fail("the SYN flood sent nothing");
    }
    m.keep_alive_flood = Some(kept);
    m.new_during_flood = match fresh {
        Ok(Ok(churn)) => Some(churn.served as f64 / secs.as_secs_f64()),
        Ok(Err(e)) => fail(&e),
        Err(_) => fail("the client thread panicked"),
    };
    let recovery = tcp_load::wait_until_served(netns.name(), GUEST, RECOVERY_LIMIT).unwrap_or(RECOVERY_LIMIT);
    m.recovery_ms = Some(recovery.as_secs_f64() * 1000.0);
}

/// The idle-connection measures.
fn idle(m: &mut Measured, netns: &Netns, cap: usize, notes: &mut Vec<String>, name: &str) {
    let mut stats = match tcp_load::in_netns(netns.name(), || tcp_load::connect(GUEST, Duration::from_secs(10))) {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => fail(&format!("the /stats connection: {e}")),
        Err(e) => fail(&e),
    };
    let before = tcp_load::stats(&mut stats);
    let open_by = Instant::now() + Duration::from_secs(60 + cap as u64 / 50);
    let mut idle =
        tcp_load::open_idle(netns.name(), GUEST, cap, IDLE_BURST, IDLE_PATIENCE, open_by).unwrap_or_else(|e| fail(&e));
    let held = idle.streams.len();
    m.held = Some(held as f64);
    // Let the guest finish whatever the last burst started.
    std::thread::sleep(Duration::from_secs(1));
    match (before, tcp_load::stats(&mut stats)) {
        (Ok(before), Ok(after)) if held > 0 => {
            m.kib_per_connection =
                Some(before.free_bytes.saturating_sub(after.free_bytes) as f64 / held as f64 / 1024.0);
        }
        (Err(e), _) | (_, Err(e)) => notes.push(format!("{name}: no memory figure: {e}")),
        _ => {}
    }
    let answered = tcp_load::request_each(
        &mut idle.streams,
        "/health",
        Instant::now() + Duration::from_secs(60 + held as u64 / 50),
    );
    m.served_again = Some(answered.iter().filter(|&&ok| ok).count() as f64);
}
