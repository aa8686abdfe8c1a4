//! `examples/http`'s `/metrics` read as Prometheus reads it: scraped twice
//! with known traffic in between, both scrapes parsed on the host by the
//! Python `prometheus_client` package's own parser
//! (`tests/scripts/prometheus_samples.py`). Checked: the content type, the
//! families and their types and labels, that no counter goes down, that
//! the request counters grew by exactly the traffic sent, and that the
//! latency histograms are cumulative and agree with their counts.
//! Skipped, saying why, where python3 or `prometheus_client` is missing.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bravo_tests::http_client::{connect, read_reply, request, start_service};

const PARSER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/prometheus_samples.py");

/// Why the parser cannot run here, if it cannot.
fn parser_missing() -> Option<String> {
    match Command::new("python3").args([PARSER, "--check"]).output() {
        Err(e) => Some(format!("python3 not runnable: {e}")),
        Ok(out) if !out.status.success() => Some(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Ok(_) => None,
    }
}

/// One scrape as the parser read it: family types, and sample values by
/// (sample name, labels as sorted JSON).
#[derive(Default)]
struct Scrape {
    families: BTreeMap<String, String>,
    samples: BTreeMap<(String, String), f64>,
    /// Each sample's family.
    family_of: BTreeMap<(String, String), String>,
}

impl Scrape {
    fn value(&self, name: &str, labels: &str) -> f64 {
        *self.samples.get(&(name.to_string(), labels.to_string())).unwrap_or_else(|| panic!("no sample {name}{labels}"))
    }

    /// The labels of `name`'s samples.
    fn labels_of(&self, name: &str) -> Vec<&str> {
        self.samples.keys().filter(|(n, _)| n == name).map(|(_, l)| l.as_str()).collect()
    }
}

fn parse(text: &str) -> Scrape {
    let mut child = Command::new("python3")
        .arg(PARSER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut scrape = Scrape::default();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        match line.split('\t').collect::<Vec<_>>()[..] {
            ["family", name, kind] => {
                scrape.families.insert(name.into(), kind.into());
            }
            ["sample", family, name, labels, value] => {
                let key = (name.to_string(), labels.to_string());
                scrape.samples.insert(key.clone(), value.parse().unwrap_or_else(|_| panic!("value {value:?}")));
                scrape.family_of.insert(key, family.into());
            }
            _ => panic!("unexpected parser output {line:?}"),
        }
    }
    scrape
}

fn scrape(port: u16) -> Scrape {
    let reply = request(&mut connect(port).unwrap(), "GET", "/metrics", b"").unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.headers.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"), "{}", reply.headers);
    parse(&String::from_utf8(reply.body).expect("UTF-8 exposition"))
}

fn requests(route: &str, code: &str) -> (String, String) {
    ("bravo_http_requests_total".into(), format!(r#"{{"code":"{code}","route":"{route}"}}"#))
}

#[test]
fn scrapes_parse_and_count_the_traffic_sent() {
    if let Some(why) = parser_missing() {
        bravo_tests::skip(format!("{why}; .ci/install-deps installs it"));
        return;
    }
    let (_vm, port) = start_service("http", |m| m.cpus(2).timeout(Duration::from_secs(300)));
    let before = scrape(port);

    // Known traffic: 7 x /health and 2 x /echo answered 2xx; 405 for a
    // DELETE /health; 3 unknown paths (404, "other"); one malformed
    // request, refused (400) before routing.
    let mut keep_alive = connect(port).unwrap();
    for _ in 0..7 {
        assert_eq!(request(&mut keep_alive, "GET", "/health", b"").unwrap().status, 200);
    }
    for body in [&b"one"[..], b"two"] {
        assert_eq!(request(&mut keep_alive, "POST", "/echo", body).unwrap().status, 200);
    }
    assert_eq!(request(&mut keep_alive, "DELETE", "/health", b"").unwrap().status, 405);
    for path in ["/missing", "/metrics/x", "/%00"] {
        assert_eq!(request(&mut keep_alive, "GET", path, b"").unwrap().status, 404);
    }
    let mut garbage = connect(port).unwrap();
    garbage.write_all(b"\x00\x01 nonsense\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut garbage).unwrap().status, 400);
    let sent: BTreeMap<(String, String), f64> = [
        (requests("/health", "2xx"), 7.0),
        (requests("/echo", "2xx"), 2.0),
        (requests("/health", "4xx"), 1.0),
        (requests("other", "4xx"), 3.0),
        (requests("unparsed", "4xx"), 1.0),
    ]
    .into();

    // A response is counted just after its last byte leaves: scrape again
    // until the counts have caught up (each scrape counts the one before).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut scrapes = 1;
    let after = loop {
        let after = scrape(port);
        scrapes += 1;
        let caught_up =
            sent.iter().all(|(key, n)| after.samples.get(key).copied().unwrap_or(0.0) - before.samples[key] >= *n);
        if caught_up || Instant::now() > deadline {
            break after;
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    // Families, types, labels.
    let types = [
        ("bravo_http_requests", "counter"),
        ("bravo_http_request_duration_seconds", "histogram"),
        ("bravo_cpus", "gauge"),
        ("bravo_threads", "gauge"),
        ("bravo_run_queue_length", "gauge"),
        ("bravo_memory_total_bytes", "gauge"),
        ("bravo_memory_free_bytes", "gauge"),
        ("bravo_nic_rx_packets", "counter"),
        ("bravo_nic_tx_bytes", "counter"),
        ("bravo_nic_rx_missed", "counter"),
        ("bravo_nic_rx_errors", "counter"),
        ("bravo_nic_tx_dropped", "counter"),
        ("bravo_nic_interrupts", "counter"),
        ("bravo_nic_queue_rx_packets", "counter"),
        ("bravo_nic_queue_tx_packets", "counter"),
        ("bravo_nic_queue_rx_bytes", "counter"),
        ("bravo_nic_queue_tx_bytes", "counter"),
        ("bravo_net_sockets", "gauge"),
        ("bravo_net_tcp_refused", "counter"),
        ("bravo_net_rounds", "counter"),
    ];
    for (family, kind) in types {
        assert_eq!(after.families.get(family).map(String::as_str), Some(kind), "family {family}");
    }
    assert_eq!(after.value("bravo_cpus", "{}"), 2.0);
    for gauge in ["bravo_threads", "bravo_run_queue_length"] {
        assert_eq!(after.labels_of(gauge), [r#"{"cpu":"0"}"#, r#"{"cpu":"1"}"#], "{gauge}");
    }
    assert!(after.value("bravo_threads", r#"{"cpu":"0"}"#) + after.value("bravo_threads", r#"{"cpu":"1"}"#) >= 2.0);
    let (total, free) = (
        after.value("bravo_memory_total_bytes", r#"{"node":"0"}"#),
        after.value("bravo_memory_free_bytes", r#"{"node":"0"}"#),
    );
    assert!(total > 200e6 && free > 0.0 && free < total, "memory: {free} free of {total}");

    // Counters (and histograms' samples) never go down, and none vanish.
    for (key, old) in &before.samples {
        let kind = &before.families[&before.family_of[key]];
        if kind == "counter" || kind == "histogram" {
            let new = after.samples.get(key).unwrap_or_else(|| panic!("{key:?} vanished"));
            assert!(new >= old, "{key:?} went down: {old} then {new}");
        }
    }
    assert!(after.value("bravo_nic_rx_packets_total", "{}") > before.value("bravo_nic_rx_packets_total", "{}"));
    assert!(after.value("bravo_net_rounds_total", "{}") > before.value("bravo_net_rounds_total", "{}"));
    // Per queue: labelled by queue and cpu; the queues add up to the NIC
    // (read in one scrape, so nothing moved between them).
    let queues = after.labels_of("bravo_nic_queue_rx_packets_total");
    assert!(
        !queues.is_empty() && queues.iter().all(|l| l.contains(r#""queue":""#) && l.contains(r#""cpu":""#)),
        "queue labels: {queues:?}"
    );
    let by_queue: f64 = queues.iter().map(|l| after.value("bravo_nic_queue_rx_packets_total", l)).sum();
    let whole = after.value("bravo_nic_rx_packets_total", "{}");
    assert!(
        by_queue > 0.0 && (by_queue - whole).abs() <= whole * 0.05 + 4.0,
        "queues received {by_queue} frames, the NIC {whole}"
    );

    // Request counters grew by the traffic sent, and nothing else did.
    for (key, old) in before.samples.iter().filter(|(k, _)| k.0 == "bravo_http_requests_total") {
        let expected = if *key == requests("/metrics", "2xx") {
            (scrapes - 1) as f64
        } else {
            sent.get(key).copied().unwrap_or(0.0)
        };
        assert_eq!(after.samples[key] - old, expected, "{key:?}");
    }

    // Histograms: cumulative buckets ending in +Inf = _count, and a count
    // per route that grew by the requests its handler answered.
    let histogram = "bravo_http_request_duration_seconds";
    for (route, answered) in [("/health", 8.0), ("/echo", 2.0), ("other", 3.0), ("/", 0.0)] {
        let mut buckets: Vec<(f64, f64)> = after
            .samples
            .iter()
            .filter(|((name, labels), _)| {
                name == &format!("{histogram}_bucket") && labels.contains(&format!(r#""route":"{route}""#))
            })
            .map(|((_, labels), v)| {
                let le = labels.split(r#""le":""#).nth(1).and_then(|s| s.split('"').next()).unwrap();
                (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, *v)
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(buckets.len() > 5 && buckets.last().unwrap().0 == f64::INFINITY, "{route}: {buckets:?}");
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{route}: not cumulative: {buckets:?}");
        let labels = format!(r#"{{"route":"{route}"}}"#);
        let count = after.value(&format!("{histogram}_count"), &labels);
        assert_eq!(buckets.last().unwrap().1, count, "{route}: +Inf bucket and _count differ");
        assert_eq!(count - before.value(&format!("{histogram}_count"), &labels), answered, "{route}: observations");
        assert!(after.value(&format!("{histogram}_sum"), &labels) >= 0.0);
    }
    println!("{} families, {} samples; {scrapes} scrapes", after.families.len(), after.samples.len());
}
