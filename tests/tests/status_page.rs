//! `examples/http`'s status page (`/`) in a real headless browser: the DOM
//! Chromium has after the page's script ran is dumped twice, with traffic
//! in between, and checked for what the page shows (cpus and their
//! threads, memory per node, NIC counters, requests served, the chart) and
//! for numbers that moved. Skipped, saying so, where Chromium is missing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bravo_tests::http_client::{connect, request, start_service};

const BROWSERS: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

fn browser() -> Option<&'static str> {
    BROWSERS.into_iter().find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// The DOM of `url` after its scripts ran for `budget` of virtual time
/// (Chromium advances it without waiting, except for the network).
fn dump_dom(browser: &str, url: &str, budget: Duration) -> String {
    let profile = std::env::temp_dir().join(format!("bravo-status-page-{}-{}", std::process::id(), budget.as_millis()));
    let mut child = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the browser starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{browser} took over 60 s to dump {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(out.status.success(), "{browser} failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id` (no nested elements).
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in {dom}"));
    let text = &dom[start..];
    let text = &text[text.find('>').unwrap() + 1..];
    &text[..text.find('<').unwrap()]
}

/// The rows of data (not the header) of the table with `id`, as cells.
fn rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    let start = dom.find(&format!("<table id=\"{id}\"")).unwrap_or_else(|| panic!("no table #{id}"));
    let table = &dom[start..start + dom[start..].find("</table>").unwrap()];
    table
        .split("<tr>")
        .filter(|row| row.starts_with("<td>"))
        .map(|row| row.split("<td>").skip(1).map(|cell| cell.split("</td>").next().unwrap().to_string()).collect())
        .collect()
}

fn number(text: &str) -> f64 {
    text.trim().parse().unwrap_or_else(|_| panic!("{text:?} is not a number"))
}

/// What the page showed.
#[derive(Debug)]
struct Shown {
    requests: f64,
    rx_packets: f64,
    chart_points: usize,
}

fn read_page(dom: &str, cpus: usize) -> Shown {
    assert!(dom.contains("<h1>Bravo http service</h1>") && dom.contains(&format!("{cpus} cpus, up")), "{dom}");
    assert_eq!(text_of(dom, "error"), "", "the page could not read /stats");
    let cpu_rows = rows(dom, "cpus");
    assert_eq!(cpu_rows.len(), cpus, "one row per cpu: {cpu_rows:?}");
    assert!(cpu_rows.iter().all(|r| r.len() == 3 && number(&r[1]) >= 0.0 && number(&r[2]) >= 0.0), "{cpu_rows:?}");
    assert!(cpu_rows.iter().map(|r| number(&r[1])).sum::<f64>() >= 2.0, "threads: {cpu_rows:?}");
    let memory = rows(dom, "memory");
    assert!(
        !memory.is_empty() && memory.iter().all(|r| number(&r[1]) > 100.0 && number(&r[2]) > 0.0),
        "memory: {memory:?}"
    );
    let nic = rows(dom, "nic");
    let rx_packets =
        nic.iter().find(|r| r[0] == "rx_packets").map(|r| number(&r[1])).unwrap_or_else(|| panic!("nic: {nic:?}"));
    let queues = rows(dom, "queues");
    assert!(!queues.is_empty() && queues.iter().all(|r| r.len() == 4 && number(&r[2]) > 0.0), "queues: {queues:?}");
    number(text_of(dom, "rps"));
    let points = dom
        .split("id=\"line\"")
        .nth(1)
        .and_then(|s| s.split("points=\"").nth(1))
        .and_then(|s| s.split('"').next())
        .unwrap();
    Shown { requests: number(text_of(dom, "requests")), rx_packets, chart_points: points.split_whitespace().count() }
}

#[test]
fn status_page_shows_live_numbers_in_a_browser() {
    let Some(browser) = browser() else {
        bravo_tests::skip("chromium not installed");
        return;
    };
    let (_vm, port) = start_service("http", |m| m.cpus(2).timeout(Duration::from_secs(300)));
    let url = format!("http://127.0.0.1:{port}/");
    // 3 s of the page's time: a first read of /stats and at least two
    // refreshes, so the chart has points.
    let first = read_page(&dump_dom(browser, &url, Duration::from_millis(3000)), 2);
    let mut stream = connect(port).unwrap();
    for _ in 0..25 {
        assert_eq!(request(&mut stream, "GET", "/health", b"").unwrap().status, 200);
    }
    let second = read_page(&dump_dom(browser, &url, Duration::from_millis(3500)), 2);
    println!("first: {first:?}\nsecond: {second:?}");
    assert!(first.chart_points >= 2 && second.chart_points >= 2, "the chart has no line");
    assert!(second.requests >= first.requests + 25.0, "requests did not move: {first:?} then {second:?}");
    assert!(second.rx_packets > first.rx_packets, "NIC counters did not move: {first:?} then {second:?}");
}
