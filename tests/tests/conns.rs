//! Many connections to `examples/http` (1 vCPU, 256 MiB) over a tap in a
//! network namespace each test makes and deletes (root; skipped with the
//! reason otherwise): a churn of connections leaves free memory and the
//! socket count as they were; a burst of 2,000 connects is accepted in
//! full; 2,000 idle kept-alive connections and one more request are all
//! served. Counts are sized for CI under TCG (each test well under a
//! minute); `just bench conns` carries the full figures.

use std::time::{Duration, Instant};

use bravo_tests::netns::{Netns, TAP};
use bravo_tests::tcp_load::{self, GuestStats, GUEST, GUEST_CIDR};
use bravo_tests::{Machine, Running};

/// Connections opened and closed in the churn test.
const CHURN: usize = 20_000;
/// Connects in one burst.
const BURST: usize = 2_000;
/// Idle connections held at once.
const IDLE: usize = 2_000;

/// `examples/http` on a fresh namespace's tap, serving; `None` (with the
/// reason printed) when this is not root.
fn service() -> Option<(Netns, Running)> {
    if !tcp_load::is_root() {
        bravo_tests::skip("needs root (a network namespace with a tap)");
        return None;
    }
    assert!(tcp_load::raise_fd_limit() >= (IDLE + 256) as u64, "too few open files allowed (ulimit -n)");
    let netns = Netns::create().expect("a network namespace");
    // Idle connections must outlive the test: the service's per-request
    // timeout is 10 minutes here.
    let mut vm = Machine::new("http")
        .cmdline(&format!("log=warn ip={GUEST_CIDR} -- timeout_ms=600000"))
        .tap_net(netns.name(), TAP)
        .timeout(Duration::from_secs(300))
        .start();
    vm.wait_for_line("http: serving on", Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    // The first frames after the NIC starts may be lost.
    tcp_load::wait_until_served(netns.name(), GUEST, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.serial()));
    Some((netns, vm))
}

/// A kept-alive connection for `/stats`, made inside the namespace.
fn stats_connection(netns: &Netns) -> std::net::TcpStream {
    tcp_load::in_netns(netns.name(), || tcp_load::connect(GUEST, Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("the /stats connection: {e}"))
}

fn read_stats(stream: &mut std::net::TcpStream, vm: &mut Running) -> GuestStats {
    tcp_load::stats(stream).unwrap_or_else(|e| panic!("{e}\n{}", serial(vm)))
}

/// The last lines the guest printed so far (a panic, warnings).
fn serial(vm: &mut Running) -> String {
    let _ = vm.wait_for_line("\u{0}never", Duration::from_millis(100));
    let serial = vm.serial();
    let lines: Vec<&str> = serial.lines().collect();
    format!("guest's last lines:\n{}", lines[lines.len().saturating_sub(30)..].join("\n"))
}

#[test]
fn a_churn_of_connections_leaves_free_memory_and_sockets_as_they_were() {
    let Some((netns, mut vm)) = service() else { return };
    let mut stats = stats_connection(&netns);
    // Warm up: whatever the first connections allocate for good (caches,
    // a thread stack per cpu) is not a leak.
    let warm = tcp_load::churn(netns.name(), GUEST, 8, 200, Duration::from_secs(20)).unwrap();
    assert_eq!(warm.failed, 0, "{warm:?}\n{}", serial(&mut vm));
    std::thread::sleep(Duration::from_secs(1));
    let before = read_stats(&mut stats, &mut vm);

    let churn = tcp_load::churn(netns.name(), GUEST, 8, CHURN, Duration::from_secs(40)).unwrap();
    eprintln!("churn: {} served, {} failed in {:?} ({:.0}/s)", churn.served, churn.failed, churn.elapsed, churn.rate());
    assert_eq!((churn.served, churn.failed), (CHURN, 0), "every connection served\n{}", serial(&mut vm));

    // Closing states end on their own: wait for the counts to come back.
    let deadline = Instant::now() + Duration::from_secs(20);
    let sockets = |s: &GuestStats| s.net.map(|n| n.sockets);
    let after = loop {
        let after = read_stats(&mut stats, &mut vm);
        let memory_back = after.free_bytes.abs_diff(before.free_bytes) * 100 <= before.free_bytes;
        if (sockets(&after) == sockets(&before) && memory_back) || Instant::now() >= deadline {
            break after;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("before {before:?}\nafter  {after:?}");
    assert!(
        after.free_bytes.abs_diff(before.free_bytes) * 100 <= before.free_bytes,
        "free memory {} bytes before, {} after {CHURN} connections closed: more than 1% apart",
        before.free_bytes,
        after.free_bytes
    );
    assert!(
        before.net.is_some() && after.net.is_some(),
        "/stats has no \"net\" object (sockets, tcp_refused, half_open_evicted, timed_out, rounds, last_round_ms): sockets not compared"
    );
    assert_eq!(sockets(&after), sockets(&before), "sockets after {CHURN} connections closed");
}

#[test]
fn a_burst_of_two_thousand_connects_is_accepted_in_full() {
    let Some((netns, mut vm)) = service() else { return };
    let (mut streams, refused) = tcp_load::in_netns(netns.name(), || {
        let results = tcp_load::connect_burst(GUEST, BURST, Duration::from_secs(20));
        let mut refused = Vec::new();
        let streams: Vec<_> =
            results.into_iter().filter_map(|r| r.map_err(|e| refused.push(e.to_string())).ok()).collect();
        (streams, refused)
    })
    .unwrap();
    let accepted = streams.len();
    let served = tcp_load::request_each(&mut streams, "/health", Instant::now() + Duration::from_secs(30))
        .iter()
        .filter(|&&ok| ok)
        .count();
    eprintln!("burst of {BURST}: {accepted} connected, {served} served");
    assert!(
        refused.is_empty(),
        "{} of {BURST} connects failed (first: {:?})\n{}",
        refused.len(),
        refused.first(),
        serial(&mut vm)
    );
    assert_eq!(served, BURST, "connections served one request\n{}", serial(&mut vm));
}

#[test]
fn two_thousand_idle_connections_and_one_more_request_are_all_served() {
    let Some((netns, mut vm)) = service() else { return };
    let opened_by = Instant::now() + Duration::from_secs(30);
    let mut idle = tcp_load::open_idle(netns.name(), GUEST, IDLE, 200, 2, opened_by).unwrap();
    eprintln!("idle: {} held, {} failed on the way", idle.streams.len(), idle.failed);
    assert_eq!(idle.streams.len(), IDLE, "idle connections held, each served once\n{}", serial(&mut vm));
    tcp_load::in_netns(netns.name(), || tcp_load::one_shot(GUEST, Duration::from_secs(10)))
        .unwrap()
        .unwrap_or_else(|e| panic!("one more connection beside {IDLE} idle ones: {e}\n{}", serial(&mut vm)));
    let again = tcp_load::request_each(&mut idle.streams, "/health", Instant::now() + Duration::from_secs(30));
    let served = again.iter().filter(|&&ok| ok).count();
    assert_eq!(served, IDLE, "idle connections served a second request\n{}", serial(&mut vm));
}
