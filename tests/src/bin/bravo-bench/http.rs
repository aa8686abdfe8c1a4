//! `bench http`: requests per second and latency of an HTTP service with
//! `wrk` (Debian package `wrk`), over a tap device in a network namespace
//! the benchmark creates and deletes: Bravo's `examples/http` against the
//! Linux peer's epoll server (a thread per cpu), both answering `GET
//! /health` with `ok` and `GET /hash?kib=N` with the same SHA-256, on
//! the same QEMU command line (the card and machine type of `--nic` and
//! `--machine`; with several cards, both systems on each; with several cpu
//! counts, both systems at each). Loads: 1, 16
//! and 64 keep-alive connections, and 16 connections that each open a new
//! connection per request, on `/health`; and "work": 16 keep-alive
//! connections on `/hash?kib=32` (about 1 ms of guest cpu per request
//! under TCG), where the load generator does not use up this host before
//! the guest's cpus do, so that scaling with cpus shows.

use std::process::Command;
use std::time::{Duration, Instant};

use bravo_tests::http_client::hash_route_digest;
use bravo_tests::netns::{Netns, TAP};
use bravo_tests::report::{Better, Report, Row, Samples};
use bravo_tests::{Accel, Machine, Nic, Running};

use crate::{fail, progress, scaling_row, Options, System};

/// The guest's address on the tap.
const GUEST: &str = "http://10.0.0.2";
/// The KiB `/hash` digests for the work load (~1 ms of guest cpu under TCG).
const WORK_KIB: usize = 32;

/// One load: a name for the table, connections, keep-alive or not, path.
struct Load {
    name: &'static str,
    connections: usize,
    keep_alive: bool,
    path: &'static str,
}

const LOADS: [Load; 5] = [
    Load { name: "1 connection", connections: 1, keep_alive: true, path: "/health" },
    Load { name: "16 connections", connections: 16, keep_alive: true, path: "/health" },
    Load { name: "64 connections", connections: 64, keep_alive: true, path: "/health" },
    Load { name: "16 conn., new per request", connections: 16, keep_alive: false, path: "/health" },
    Load { name: "work: 16 conn., /hash?kib=32", connections: 16, keep_alive: true, path: "/hash?kib=32" },
];

/// What wrk reported for one run.
#[derive(Debug, Default, PartialEq)]
struct WrkResult {
    requests_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

/// One system's runs on one card with one cpu count: runs per load, and
/// what the guest said of its cpus and queues.
struct Measured {
    nic: Nic,
    system: System,
    cpus: usize,
    loads: Vec<Vec<WrkResult>>,
    seen: String,
}

pub fn run(args: &[String]) {
    let mut options = Options { secs: 5.0, ..Options::new() };
    options = options.parse(args, &["--runs", "--secs", "--cpus", "--systems", "--nic", "--machine"]);
    if options.secs.fract() != 0.0 {
        fail("--secs: wrk takes whole seconds");
    }
    let (runs, secs) = (options.runs, options.secs as u64);
    let wanted: Vec<System> = options.systems.iter().copied().filter(|&s| s != System::Ceiling).collect();
    if Command::new("wrk").arg("--version").output().is_err() {
        fail("`wrk` is not installed (Debian package `wrk`; `.ci/install-deps` installs it)");
    }
    let accel = Accel::from_env_or_default().unwrap_or_else(|e| fail(&e));
    let (systems, notes) = System::available(&wanted);
    let mut results: Vec<Measured> = Vec::new();
    for &nic in &options.nics {
        for &cpus in &options.cpus {
            for &system in &systems {
                let machine = options.place(system, system.http_machine(), nic);
                let (loads, seen) = measure(system, machine, runs, secs, cpus, accel);
                results.push(Measured { nic, system, cpus, loads, seen });
            }
        }
    }
    eprintln!();

    let mut report = Report::new(
        "http",
        &format!(
            "HTTP with wrk through QEMU ({}) under {}, {}, median of {runs} runs of {secs} s",
            options.hardware(),
            accel.name().to_uppercase(),
            options.cpus_title()
        ),
    );
    report.notes.push(
        "wire: the card on a tap device inside a network namespace made by the benchmark; wrk runs in that namespace"
            .into(),
    );
    report.notes.push("Bravo: examples/http; Linux: the peer's epoll server, one thread per cpu on SO_REUSEPORT listeners (tests/linux-peer), same QEMU command line".into());
    report.notes.push(format!(
        "loads on GET /health but \"work\": GET /hash?kib={WORK_KIB}, SHA-256 over {WORK_KIB} KiB the guest generates (both systems' answers checked against the host's digest before measuring)"
    ));
    report.notes.extend(options.hardware_notes());
    report.notes.extend(notes);
    report.notes.extend(
        results.iter().map(|m| format!("{} on {}, {} vCPU: {}", m.system.name(), m.nic.name(), m.cpus, m.seen)),
    );
    let errors: u64 = results.iter().flat_map(|m| m.loads.iter().flatten()).map(|r| r.errors).sum();
    report.notes.push(format!("wrk socket errors and non-2xx answers over all runs: {errors}"));
    let pick = |nic: Nic, system: System, cpus: usize, load: usize, f: fn(&WrkResult) -> f64| -> Option<Samples> {
        let m = results.iter().find(|m| m.nic == nic && m.system == system && m.cpus == cpus)?;
        Some(Samples(m.loads[load].iter().map(f).collect()))
    };
    /// A measure's label, unit, better direction, and value in a wrk result.
    type Measure = (&'static str, &'static str, Better, fn(&WrkResult) -> f64);
    let measures: [Measure; 3] = [
        ("requests/s", "req/s", Better::Higher, |r| r.requests_per_sec),
        ("latency p50", "µs", Better::Lower, |r| r.p50_us),
        ("latency p99", "µs", Better::Lower, |r| r.p99_us),
    ];
    for (label, unit, better, f) in measures {
        for (l, load) in LOADS.iter().enumerate() {
            for &nic in &options.nics {
                let row = |cpus: usize| Row {
                    group: options.group_at(&options.group(load.name, nic), cpus),
                    label: label.into(),
                    unit: unit.into(),
                    better,
                    bravo: pick(nic, System::Bravo, cpus, l, f).unwrap_or_default(),
                    linux: pick(nic, System::Linux, cpus, l, f),
                    ceiling: None,
                };
                let base = row(options.base_cpus());
                for &cpus in &options.cpus {
                    report.rows.push(row(cpus));
                }
                if better == Better::Higher {
                    for &cpus in options.cpus.iter().filter(|&&c| c != options.base_cpus()) {
                        report.rows.push(scaling_row(
                            &options.group(load.name, nic),
                            label,
                            options.base_cpus(),
                            cpus,
                            &base,
                            &row(cpus),
                        ));
                    }
                }
            }
        }
    }
    crate::finish(&report);
}

/// Boots `system`'s HTTP service (`machine`) with `cpus` cpus on a fresh
/// tap, checks that it runs them and answers `/hash` right, and runs every
/// load. Returns the runs per load and what the guest said of its cpus
/// and queues.
fn measure(
    system: System,
    machine: Machine,
    runs: usize,
    secs: u64,
    cpus: usize,
    accel: Accel,
) -> (Vec<Vec<WrkResult>>, String) {
    let netns = Netns::create().unwrap_or_else(|e| fail(&format!("bench http needs a network namespace: {e}")));
    let nic = machine.nic_kind().name();
    progress(&format!("http: booting {} on {nic} with {cpus} vCPU", system.name()));
    let machine = machine.accel(accel).cpus(cpus).tap_net(netns.name(), TAP).timeout(Duration::from_secs(3600));
    let mut vm: Running = machine.start();
    let ready = vm
        .wait_for_line(system.http_ready_line(), Duration::from_secs(120))
        .unwrap_or_else(|e| fail(&format!("{} did not come up: {e}", system.name())));
    // The first frames after the guest starts its NIC may be lost.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match wrk(&netns, 1, true, 1, "/health") {
            Ok(r) if r.requests_per_sec > 0.0 => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            result => fail(&format!("{} does not answer {GUEST}/health: {result:?}\n{}", system.name(), vm.serial())),
        }
    }
    let seen = guest_cpus_and_queues(system, &mut vm, &netns, &ready.text, cpus);
    let work =
        curl(&netns, &format!("/hash?kib={WORK_KIB}")).unwrap_or_else(|e| fail(&format!("{}: {e}", system.name())));
    if work != hash_route_digest(WORK_KIB) {
        fail(&format!(
            "{} answers /hash?kib={WORK_KIB} with {work:?}, the host computes {}",
            system.name(),
            hash_route_digest(WORK_KIB)
        ));
    }
    let mut results: Vec<Vec<WrkResult>> = LOADS.iter().map(|_| Vec::new()).collect();
    for run in 0..runs {
        for (l, load) in LOADS.iter().enumerate() {
            progress(&format!("http: {} on {nic}, {cpus} vCPU, run {}/{runs}: {}", system.name(), run + 1, load.name));
            let result = wrk(&netns, load.connections, load.keep_alive, secs, load.path)
                .unwrap_or_else(|e| fail(&format!("{}: {e}", system.name())));
            eprintln!(
                "\rhttp: {} on {nic}, {cpus} vCPU, run {}: {}: {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs, {} errors",
                system.name(),
                run + 1,
                load.name,
                result.requests_per_sec,
                result.p50_us,
                result.p99_us,
                result.errors
            );
            results[l].push(result);
        }
    }
    drop(vm);
    (results, seen)
}

/// Checks that the guest runs `cpus` cpus (Bravo's ready line, Linux's
/// boot line) and says how many NIC queues it uses (Bravo's `/stats`
/// `queues`, the receive queues Linux's driver made); fails otherwise.
fn guest_cpus_and_queues(system: System, vm: &mut Running, netns: &Netns, ready: &str, cpus: usize) -> String {
    match system {
        System::Bravo | System::Ceiling => {
            if !ready.contains(&format!(" with {cpus} cpu")) {
                fail(&format!("Bravo was given {cpus} vCPUs but says: {ready}"));
            }
            let stats = curl(netns, "/stats").unwrap_or_else(|e| fail(&format!("Bravo's /stats: {e}")));
            let queues = stats.split("\"queues\":[").nth(1).and_then(|rest| rest.split(']').next()).unwrap_or("");
            let owners: Vec<&str> =
                queues.split("\"cpu\":").skip(1).filter_map(|rest| rest.split([',', '}']).next()).collect();
            format!("{cpus} cpu(s), {} NIC queue(s) on cpu(s) {}", owners.len(), owners.join(","))
        }
        System::Linux => {
            let up = vm.wait_for_line("peer: linux", Duration::from_secs(1)).unwrap_or_else(|e| fail(&e));
            let field = |key: &str| {
                up.text
                    .split(&format!("{key}="))
                    .nth(1)
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<usize>().ok())
            };
            if field("cpus") != Some(cpus) {
                fail(&format!("Linux was given {cpus} vCPUs but says: {}", up.text));
            }
            let threads =
                vm.wait_for_line("peer: ready mode=http", Duration::from_secs(1)).map(|l| l.text).unwrap_or_default();
            let threads = threads.split("threads=").nth(1).unwrap_or("?").to_string();
            format!(
                "{cpus} cpu(s), eth0 with {} receive queue(s), {threads} server thread(s)",
                field("eth0_rx_queues").map_or("?".into(), |q| q.to_string())
            )
        }
    }
}

/// The body of `GET path` from the guest (curl inside the namespace).
fn curl(netns: &Netns, path: &str) -> Result<String, String> {
    let output = netns
        .command("curl")
        .args(["-sS", "--fail", "--max-time", "10", &format!("{GUEST}{path}")])
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    if !output.status.success() {
        return Err(format!("curl {GUEST}{path} failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs wrk inside the namespace for `secs` on `path` and reads its report.
fn wrk(netns: &Netns, connections: usize, keep_alive: bool, secs: u64, path: &str) -> Result<WrkResult, String> {
    let mut cmd = netns.command("wrk");
    cmd.args(["-t", &connections.min(2).to_string(), "-c", &connections.to_string(), "-d", &format!("{secs}s")]);
    cmd.args(["--timeout", "5s", "--latency"]);
    if !keep_alive {
        cmd.args(["-H", "Connection: close"]);
    }
    let output = cmd.arg(format!("{GUEST}{path}")).output().map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("wrk failed: {}{}", text, String::from_utf8_lossy(&output.stderr)));
    }
    parse_wrk(&text).ok_or_else(|| format!("unreadable wrk output:\n{text}"))
}

/// Reads requests/s, the 50th and 99th latency percentiles and the error
/// counts from wrk's `--latency` report.
fn parse_wrk(text: &str) -> Option<WrkResult> {
    let mut result = WrkResult::default();
    let (mut rate, mut p50, mut p99) = (None, None, None);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => rate = value.parse().ok(),
            ["50%", value] => p50 = micros(value),
            ["99%", value] => p99 = micros(value),
            ["Socket", "errors:", rest @ ..] => {
                result.errors += rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>()
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => result.errors += n.parse::<u64>().ok()?,
            _ => {}
        }
    }
    result.requests_per_sec = rate?;
    result.p50_us = p50?;
    result.p99_us = p99?;
    Some(result)
}

/// `812.00us`, `3.20ms`, `1.01s` in microseconds.
fn micros(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_reports_are_read() {
        let text = "Running 5s test @ http://10.0.0.2/health
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.45ms    1.23ms  20.00ms   80.00%
    Req/Sec     9.00k   500.00    10.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    4.00ms
     90%    5.00ms
     99%    1.20s
  90000 requests in 5.00s, 8.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 5
Requests/sec:  18000.50
Transfer/sec:      1.60MB
";
        assert_eq!(
            parse_wrk(text),
            Some(WrkResult { requests_per_sec: 18000.5, p50_us: 812.0, p99_us: 1.2e6, errors: 10 })
        );
        assert_eq!(parse_wrk("Requests/sec: 10\n"), None);
    }
}
