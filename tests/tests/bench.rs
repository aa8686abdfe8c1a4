//! Smoke tests of `bravo-bench pps|http|boot|conns`: each runs for a second or
//! two per measure, Bravo beside the Linux peer (and the raw-ring ceiling for
//! pps), and its report must hold sane numbers: every rate non-zero, every
//! time positive, a Linux column, files written. `pps` runs with two cpu
//! counts (`--cpus 1,2`: rows per count and scaling rows), `http` has the
//! "work" load. `pps` and `boot` run once
//! more on virtio-net (`--nic virtio`, `--machine microvm`). No timing
//! thresholds: speed is for the benchmarks themselves.

use std::path::PathBuf;
use std::process::Command;

/// Builds the Linux peer once for all the tests here (they run at the same
/// time; each benchmark process would otherwise fetch it on its own).
fn linux_peer_built() {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| bravo_tests::linux_peer::build().map(drop));
    assert_eq!(built, &Ok(()), "the Linux peer (Debian hosts) could not be built");
}

/// Held by the `pps` runs: each floods its guest for seconds, and two at
/// once on a 2-cpu host starve each other's guests (a ceiling guest then
/// missed its STOP).
static ONE_PPS_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_pps_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_PPS_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `bravo-bench ARGS` with its reports written to a directory of its
/// own; returns the CSV rows `(group, label, unit, system, value)`.
fn bench(name: &str, args: &[&str]) -> Vec<(String, String, String, String, f64)> {
    linux_peer_built();
    let dir = std::env::temp_dir().join(format!("bravo-bench-smoke-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let output = Command::new(env!("CARGO_BIN_EXE_bravo-bench"))
        .args(args)
        .env("BENCH_DIR", &dir)
        .output()
        .expect("bravo-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bravo-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Bravo/Linux"), "no table printed:\n{stdout}");
    for ext in ["csv", "md", "svg"] {
        let file = dir.join(format!("{name}.{ext}"));
        assert!(file.is_file(), "{} not written", file.display());
    }
    assert!(
        read(&dir.join(format!("{name}.svg"))).starts_with("<svg")
            || read(&dir.join(format!("{name}.svg"))).starts_with("<?xml")
    );
    let rows = parse_csv(&read(&dir.join(format!("{name}.csv"))));
    let _ = std::fs::remove_dir_all(&dir);
    rows
}

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `group,label,unit,system,run,value` lines (fields with commas quoted).
fn parse_csv(text: &str) -> Vec<(String, String, String, String, f64)> {
    text.lines()
        .skip(1)
        .map(|line| {
            let f = split_csv_line(line);
            assert_eq!(f.len(), 6, "CSV line: {line}");
            (
                f[0].clone(),
                f[1].clone(),
                f[2].clone(),
                f[3].clone(),
                f[5].parse().unwrap_or_else(|_| panic!("CSV value: {line}")),
            )
        })
        .collect()
}

fn split_csv_line(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

fn values<'a>(
    rows: &'a [(String, String, String, String, f64)],
    unit: &str,
    system: &str,
) -> Vec<&'a (String, String, String, String, f64)> {
    rows.iter().filter(|r| r.2 == unit && r.3 == system).collect()
}

#[test]
fn pps_bench_reports_packet_rates_for_bravo_the_ceiling_and_linux() {
    let _one = one_pps_at_a_time();
    // Two cpu counts: every system boots with each, and rates get a
    // scaling row (Bravo's and Linux's).
    let rows = bench("pps", &["pps", "--runs", "1", "--secs", "1", "--sizes", "64", "--cpus", "1,2"]);
    for system in ["bravo", "ceiling", "linux"] {
        // RX, TX and echo with 1 and 2 cpus.
        let rates: Vec<_> = rows.iter().filter(|r| (r.2 == "pkt/s" || r.2 == "rt/s") && r.3 == system).collect();
        assert_eq!(rates.len(), 6, "{system}: {rates:?}");
        assert_eq!(rates.iter().filter(|r| r.0.ends_with("· 2 vCPUs")).count(), 3, "{system}: {rates:?}");
        let scaling = values(&rows, "% of 1 vCPU", system);
        assert_eq!(
            scaling.len(),
            if system == "ceiling" { 0 } else { 3 },
            "{system}: scaling of RX, TX, echo: {scaling:?}"
        );
        assert!(
            scaling.iter().all(|r| r.4 > 1.0 && r.4 < 10_000.0 && r.1.contains("scaling, 2 vCPUs / 1")),
            "{system}: {scaling:?}"
        );
        for r in &rates {
            assert!(r.4 > 100.0 && r.4 < 1e8, "{system} {} {}: {} {}", r.0, r.1, r.4, r.2);
        }
        for r in values(&rows, "%", system) {
            assert!((0.0..=100.0).contains(&r.4), "{system} {} {}: {}%", r.0, r.1, r.4);
        }
    }
}

#[test]
fn http_bench_reports_requests_and_latencies_for_bravo_and_linux() {
    let rows = bench("http", &["http", "--runs", "1", "--secs", "2"]);
    for system in ["bravo", "linux"] {
        let rates = values(&rows, "req/s", system);
        assert_eq!(rates.len(), 5, "{system}: 1, 16, 64 keep-alive connections, new connections and work: {rates:?}");
        assert!(rates.iter().all(|r| r.4 > 0.0), "{system}: {rates:?}");
        assert!(rates.iter().any(|r| r.0.starts_with("work: 16 conn., /hash?kib=32")), "{system}: {rates:?}");
        let latencies = values(&rows, "µs", system);
        assert_eq!(latencies.len(), 10, "{system}: p50 and p99 per load: {latencies:?}");
        assert!(latencies.iter().all(|r| r.4 > 0.0 && r.4 < 10e6), "{system}: {latencies:?}");
    }
}

/// Both systems' boot rows: first response after entry to main, which
/// cannot come before QEMU started.
fn assert_boot_times(rows: &[(String, String, String, String, f64)]) {
    for system in ["bravo", "linux"] {
        let times = values(rows, "ms", system);
        assert_eq!(times.len(), 2, "{system}: {times:?}");
        let (first_response, to_main) = (times[0].4, times[1].4);
        assert!(
            to_main > 0.0 && first_response > to_main,
            "{system}: first response {first_response} ms, main {to_main} ms"
        );
    }
}

#[test]
fn boot_bench_reports_boot_times_and_image_sizes() {
    let rows = bench("boot", &["boot", "--runs", "1"]);
    assert_boot_times(&rows);
    let sizes = values(&rows, "KiB", "bravo");
    assert!(sizes.len() >= 5, "one size per example: {sizes:?}");
    assert!(sizes.iter().all(|r| r.4 > 16.0 && r.4 < 64.0 * 1024.0), "{sizes:?}");
}

/// `--machine microvm`: both guests boot by `-kernel` on microvm with
/// virtio-net over MMIO (the Linux peer with its virtio modules).
#[test]
fn boot_bench_runs_on_microvm_with_virtio_beside_linux() {
    let rows = bench("boot", &["boot", "--runs", "1", "--machine", "microvm", "--systems", "bravo,linux"]);
    assert_boot_times(&rows);
    assert!(rows.iter().filter(|r| r.2 == "ms").all(|r| r.0 == "boot (virtio)"), "{rows:?}");
}

/// `--nic virtio`: Bravo, the raw-ring ceiling and Linux on virtio-net
/// over PCI.
#[test]
fn pps_bench_runs_on_virtio() {
    let _one = one_pps_at_a_time();
    let rows = bench("pps", &["pps", "--nic", "virtio", "--runs", "1", "--secs", "1", "--sizes", "64"]);
    for system in ["bravo", "ceiling", "linux"] {
        let rates: Vec<_> = rows.iter().filter(|r| (r.2 == "pkt/s" || r.2 == "rt/s") && r.3 == system).collect();
        assert_eq!(rates.len(), 3, "{system}: RX, TX and echo: {rates:?}");
        assert!(rates.iter().all(|r| r.0.ends_with("(virtio)") && r.4 > 100.0 && r.4 < 1e8), "{system}: {rates:?}");
    }
}

#[test]
fn conns_bench_reports_connection_rates_idle_connections_and_the_flood_for_bravo_and_linux() {
    if !bravo_tests::tcp_load::is_root() {
        bravo_tests::skip("bench conns needs root (a network namespace, raw frames)");
        return;
    }
    let rows = bench("conns", &["conns", "--runs", "1", "--secs", "1", "--cap", "300", "--syn-rate", "200"]);
    for system in ["bravo", "linux"] {
        let of = |unit: &str| values(&rows, unit, system);
        let (conn_rates, req_rates, conns, kib, ms) = (of("conn/s"), of("req/s"), of("conn"), of("KiB"), of("ms"));
        // New connections alone and during the flood; kept-alive alone and
        // during the flood; held and served again.
        assert_eq!(
            (conn_rates.len(), req_rates.len(), conns.len(), kib.len(), ms.len()),
            (2, 2, 2, 1, 1),
            "{system}: {rows:?}"
        );
        for r in conn_rates.iter().chain(&req_rates) {
            assert!(r.4 > 0.0 && r.4 < 1e7, "{system} {} {}: {} {}", r.0, r.1, r.4, r.2);
        }
        for r in &conns {
            assert!(r.4 > 0.0 && r.4 <= 300.0, "{system} {} {}: {}", r.0, r.1, r.4);
        }
        // The idle connections cost something, and less than 1 MiB each.
        assert!(kib[0].4 > 0.0 && kib[0].4 < 1024.0, "{system}: {} KiB per idle connection", kib[0].4);
        assert!(ms[0].4 > 0.0 && ms[0].4 <= 10_000.0, "{system}: served {} ms after the flood", ms[0].4);
    }
}

#[test]
fn bench_rejects_bad_options_with_a_message() {
    for args in [
        &["pps", "--sizes", "20"][..],
        &["pps", "--nic", "rtl8139"],
        &["http", "--machine", "pc"],
        &["boot", "--machine", "microvm", "--nic", "e1000"],
        &["http", "--runs", "x"],
        &["boot", "--what"],
        &["conns", "--cap", "0"],
        &["soak", "--minutes", "-1"],
        &["nothing"],
        &["http", "--cpus", "0"],
        &["pps", "--cpus", "1,x"],
        &["conns", "--cpus", "1,2"],
        &["pps", "--nic", "igb", "--machine", "microvm"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_bravo-bench")).args(args).output().expect("bravo-bench runs");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("bravo-bench:"), "{args:?}: {stderr}");
    }
}
