//! `bench http`: requests per second and latency of an HTTP service with
//! `wrk` (Debian package `wrk`), over a tap device in a network namespace
//! the benchmark creates and deletes: Bravo's `examples/http` against the
//! Linux peer's epoll server, both answering `GET /health` with `ok`, on
//! the same QEMU command line (the card and machine type of `--nic` and
//! `--machine`; with several cards, both systems on each). Loads: 1, 16
//! and 64 keep-alive connections, and 16 connections that each open a new
//! connection per request.

use std::process::Command;
use std::time::{Duration, Instant};

use bravo_tests::netns::{Netns, TAP};
use bravo_tests::report::{Better, Report, Row, Samples};
use bravo_tests::{Accel, Machine, Nic, Running};

use crate::{fail, progress, Options, System};

const URL: &str = "http://10.0.0.2/health";

/// One load: a name for the table, connections, keep-alive or not.
struct Load {
    name: &'static str,
    connections: usize,
    keep_alive: bool,
}

const LOADS: [Load; 4] = [
    Load { name: "1 connection", connections: 1, keep_alive: true },
    Load { name: "16 connections", connections: 16, keep_alive: true },
    Load { name: "64 connections", connections: 64, keep_alive: true },
    Load { name: "16 conn., new per request", connections: 16, keep_alive: false },
];

/// What wrk reported for one run.
#[derive(Debug, Default, PartialEq)]
struct WrkResult {
    requests_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

pub fn run(args: &[String]) {
    let mut options = Options { secs: 5.0, ..Options::new() };
    options = options.parse(args, &["--runs", "--secs", "--cpus", "--systems", "--nic", "--machine"]);
    if options.secs.fract() != 0.0 {
        fail("--secs: wrk takes whole seconds");
    }
    let (runs, secs, cpus) = (options.runs, options.secs as u64, options.cpus);
    let wanted: Vec<System> = options.systems.iter().copied().filter(|&s| s != System::Ceiling).collect();
    if Command::new("wrk").arg("--version").output().is_err() {
        fail("`wrk` is not installed (Debian package `wrk`; `.ci/install-deps` installs it)");
    }
    let accel = Accel::from_env_or_default().unwrap_or_else(|e| fail(&e));
    let (systems, notes) = System::available(&wanted);
    // results[(nic, system)][load] = runs
    let mut results: Vec<(Nic, System, Vec<Vec<WrkResult>>)> = Vec::new();
    for &nic in &options.nics {
        for &system in &systems {
            let machine = options.place(system, system.http_machine(), nic);
            results.push((nic, system, measure(system, machine, runs, secs, cpus, accel)));
        }
    }
    eprintln!();

    let mut report = Report::new("http", &format!(
        "HTTP GET /health with wrk through QEMU ({}) under {}, {cpus} vCPU{}, median of {runs} runs of {secs} s",
        options.hardware(), accel.name().to_uppercase(), if cpus == 1 { "" } else { "s" }
    ));
    report.notes.push("wire: the card on a tap device inside a network namespace made by the benchmark; wrk runs in that namespace".into());
    report.notes.push("Bravo: examples/http; Linux: the peer's single-threaded epoll server (tests/linux-peer), same QEMU command line".into());
    report.notes.extend(options.hardware_notes());
    report.notes.extend(notes);
    let errors: u64 = results.iter().flat_map(|(_, _, l)| l.iter().flatten()).map(|r| r.errors).sum();
    report.notes.push(format!("wrk socket errors and non-2xx answers over all runs: {errors}"));
    let pick = |nic: Nic, system: System, load: usize, f: fn(&WrkResult) -> f64| -> Option<Samples> {
        let (_, _, loads) = results.iter().find(|(n, s, _)| *n == nic && *s == system)?;
        Some(Samples(loads[load].iter().map(f).collect()))
    };
    let measures: [(&str, &str, Better, fn(&WrkResult) -> f64); 3] = [
        ("requests/s", "req/s", Better::Higher, |r| r.requests_per_sec),
        ("latency p50", "µs", Better::Lower, |r| r.p50_us),
        ("latency p99", "µs", Better::Lower, |r| r.p99_us),
    ];
    for (label, unit, better, f) in measures {
        for (l, load) in LOADS.iter().enumerate() {
            for &nic in &options.nics {
                report.rows.push(Row {
                    group: options.group(load.name, nic),
                    label: label.into(),
                    unit: unit.into(),
                    better,
                    bravo: pick(nic, System::Bravo, l, f).unwrap_or_default(),
                    linux: pick(nic, System::Linux, l, f),
                    ceiling: None,
                });
            }
        }
    }
    crate::finish(&report);
}

/// Boots `system`'s HTTP service (`machine`) on a fresh tap and runs
/// every load.
fn measure(system: System, machine: Machine, runs: usize, secs: u64, cpus: usize, accel: Accel) -> Vec<Vec<WrkResult>> {
    let netns = Netns::create().unwrap_or_else(|e| fail(&format!("bench http needs a network namespace: {e}")));
    let nic = machine.nic_kind().name();
    progress(&format!("http: booting {} on {nic}", system.name()));
    let machine = machine.accel(accel).cpus(cpus).tap_net(netns.name(), TAP).timeout(Duration::from_secs(3600));
    let mut vm: Running = machine.start();
    if let Err(e) = vm.wait_for_line(system.http_ready_line(), Duration::from_secs(120)) {
        fail(&format!("{} did not come up: {e}\n{}", system.name(), vm.serial()));
    }
    // The first frames after the guest starts its NIC may be lost.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match wrk(&netns, 1, true, 1) {
            Ok(r) if r.requests_per_sec > 0.0 => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            result => fail(&format!("{} does not answer {URL}: {result:?}\n{}", system.name(), vm.serial())),
        }
    }
    let mut results: Vec<Vec<WrkResult>> = LOADS.iter().map(|_| Vec::new()).collect();
    for run in 0..runs {
        for (l, load) in LOADS.iter().enumerate() {
            progress(&format!("http: {} on {nic} run {}/{runs}: {}", system.name(), run + 1, load.name));
            let result = wrk(&netns, load.connections, load.keep_alive, secs).unwrap_or_else(|e| fail(&format!("{}: {e}", system.name())));
            eprintln!(
                "\rhttp: {} on {nic} run {}: {}: {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs, {} errors",
                system.name(), run + 1, load.name, result.requests_per_sec, result.p50_us, result.p99_us, result.errors
            );
            results[l].push(result);
        }
    }
    drop(vm);
    results
}

/// Runs wrk inside the namespace for `secs` and reads its report.
fn wrk(netns: &Netns, connections: usize, keep_alive: bool, secs: u64) -> Result<WrkResult, String> {
    let mut cmd = netns.command("wrk");
    cmd.args(["-t", &connections.min(2).to_string(), "-c", &connections.to_string(), "-d", &format!("{secs}s")]);
    cmd.args(["--timeout", "5s", "--latency"]);
    if !keep_alive {
        cmd.args(["-H", "Connection: close"]);
    }
    let output = cmd.arg(URL).output().map_err(|e| format!("cannot run wrk: {e}"))?;
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
        assert_eq!(parse_wrk(text), Some(WrkResult { requests_per_sec: 18000.5, p50_us: 812.0, p99_us: 1.2e6, errors: 10 }));
        assert_eq!(parse_wrk("Requests/sec: 10\n"), None);
    }
}
