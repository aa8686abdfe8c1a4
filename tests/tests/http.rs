//! The HTTP examples from the outside, through 127.0.0.1. `examples/http`:
//! every route, many keep-alive clients at once, a corpus of malformed
//! requests (each answered with its status or closed, the service fine
//! afterwards), and slow clients that time out without holding up the
//! others. `examples/kv`: mixed operations from concurrent clients, final
//! contents checked. (`examples/threads` needs no network and is here
//! too, as the third example.)
//!
//! Every route and the 64 keep-alive clients run on each card (q35's
//! e1000, virtio-net over PCI on q35 and over MMIO on microvm, igb with 2
//! cpus and with 1, through `on_hardware!`), and so does a client whose
//! 20,000 requests in a row must never wait for a retransmission; the
//! rest is about the service, not the card, and stays on the e1000.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bravo_tests::http_client::{connect, hash_route_digest, read_reply, request, start_service, Reply};
use bravo_tests::{free_port, on_hardware, Hardware, Machine, Running};

fn http_service(cpus: usize, args: &str) -> (Running, u16) {
    http_service_on(Hardware::E1000, cpus, args)
}

/// `examples/http` on `hardware` (with as many of `cpus` as it gives).
fn http_service_on(hardware: Hardware, cpus: usize, args: &str) -> (Running, u16) {
    start_service("http", |m| {
        m.on(hardware).cpus(hardware.cpus(cpus)).cmdline(&format!("-- {args}")).timeout(Duration::from_secs(600))
    })
}

/// Boots an HTTP example, waits until it answers `/health`.
fn service(name: &str, cpus: usize, args: &str) -> (Running, u16) {
    start_service(name, |m| m.cpus(cpus).cmdline(&format!("-- {args}")).timeout(Duration::from_secs(600)))
}

fn get(port: u16, path: &str) -> Reply {
    request(&mut connect(port).unwrap(), "GET", path, b"").unwrap()
}

/// One keep-alive client asking 20,000 times in a row: no answer may wait
/// for a retransmission. A frame the guest loses (as the network round
/// once did with one the device completed while it looked) costs the
/// client its retransmission timer, a second or more on QEMU's user
/// networking, against well under a millisecond per answer here.
fn no_request_waits_for_a_retransmission(hardware: Hardware) {
    let (_vm, port) = http_service_on(hardware, 1, "");
    let mut stream = connect(port).unwrap();
    let mut slowest = Duration::ZERO;
    for i in 0..20_000 {
        let started = Instant::now();
        let reply = request(&mut stream, "GET", "/health", b"").unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(reply.status, 200, "request {i}");
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_millis(500), "an answer waited {slowest:?}: a frame was lost and retransmitted");
}
on_hardware!(no_request_waits_for_a_retransmission: e1000 = E1000, virtio_pci = VIRTIO_PCI, igb = IGB_1CPU);

fn every_route_answers(hardware: Hardware) {
    let cpus = hardware.cpus(2);
    let (_vm, port) = http_service_on(hardware, cpus, "");
    let index = get(port, "/");
    assert_eq!(index.status, 200);
    assert!(index.headers.contains("text/html"));
    let page = String::from_utf8_lossy(&index.body).into_owned();
    assert!(page.contains("Bravo http service") && page.contains(&format!("{cpus} cpu")), "{page}");
    let health = get(port, "/health");
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok"[..]));
    let stats = get(port, "/stats");
    assert_eq!(stats.status, 200);
    let json = String::from_utf8_lossy(&stats.body).into_owned();
    assert_eq!(json.matches(&format!("\"cpus\":{cpus}")).count(), 1, "cpus not {cpus} in /stats: {json}");
    assert!(json.contains("\"nic\":{\"rx_packets\":"), "no NIC counters in /stats: {json}");
    let queues = json
        .split("\"queues\":[")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("no queues in /stats: {json}"));
    assert!(
        queues.starts_with("{\"queue\":0,\"cpu\":")
            && queues.contains("\"rx_packets\":")
            && queues.contains("\"tx_packets\":"),
        "queues: {queues}"
    );
    for key in [
        "\"uptime_ms\":",
        "\"threads_per_cpu\":[",
        "\"requests\":",
        "\"tx_dropped\":",
        "\"free_bytes\":",
        "\"sockets\":",
        "\"tcp_refused\":",
        "\"half_open_evicted\":",
        "\"timed_out\":",
        "\"rounds\":",
        "\"last_round_ms\":",
        "\"stack_bytes\":",
        "\"page_table_bytes\":",
    ] {
        assert_eq!(json.matches(key).count(), 1, "{key} not once in /stats: {json}");
    }
    let echo = request(&mut connect(port).unwrap(), "POST", "/echo", b"some \x00 bytes").unwrap();
    assert_eq!((echo.status, echo.body.as_slice()), (200, &b"some \x00 bytes"[..]));
    // Real work: the guest's digests are the host's over the same input.
    for kib in [1, 3, 64, 1024] {
        let hash = get(port, &format!("/hash?kib={kib}"));
        assert_eq!(
            (hash.status, String::from_utf8_lossy(&hash.body).into_owned()),
            (200, hash_route_digest(kib)),
            "/hash?kib={kib}"
        );
    }
    assert_eq!(String::from_utf8_lossy(&get(port, "/hash").body), hash_route_digest(64), "/hash without kib is 64 KiB");
    for bad in ["kib=0", "kib=1025", "kib=-1", "kib=1.5", "kib=", "kib=99999999999999999999", "size=4"] {
        let reply = get(port, &format!("/hash?{bad}"));
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        assert!(reply.status == 400 && (body.contains("1 to 1024")), "/hash?{bad}: {} {body:?}", reply.status);
    }
    assert_eq!(get(port, "/missing").status, 404);
    assert_eq!(request(&mut connect(port).unwrap(), "DELETE", "/health", b"").unwrap().status, 405);
    assert_eq!(request(&mut connect(port).unwrap(), "GET", "/echo", b"").unwrap().status, 405);
}
on_hardware!(every_route_answers: e1000 = E1000, virtio_pci = VIRTIO_PCI, igb = IGB, igb_1cpu = IGB_1CPU, virtio_mmio = VIRTIO_MMIO);

fn sixty_four_keep_alive_clients_get_every_answer_right(hardware: Hardware) {
    const CLIENTS: usize = 64;
    const REQUESTS: usize = 40;
    let (_vm, port) = http_service_on(hardware, 2, "timeout_ms=120000");
    // Connections are opened one by one, each proven by a first request
    // (QEMU's forwarding drops bursts of new connections), then all
    // clients work at once.
    let started = Instant::now();
    let streams: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let mut stream = connect(port).unwrap();
            assert_eq!(request(&mut stream, "GET", "/health", b"").unwrap().status, 200);
            stream
        })
        .collect();
    println!("opened {CLIENTS} keep-alive connections in {:?}", started.elapsed());
    let clients: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(c, mut stream)| {
            std::thread::spawn(move || -> Result<(), String> {
                for r in 0..REQUESTS {
                    if r % 2 == 0 {
                        let reply = request(&mut stream, "GET", "/health", b"")
                            .map_err(|e| format!("client {c} request {r}: {e}"))?;
                        if reply.status != 200 || reply.body != b"ok" || !reply.headers.contains("keep-alive") {
                            return Err(format!("client {c} request {r}: {reply:?}"));
                        }
                    } else {
                        let body = format!("client {c} request {r}").into_bytes();
                        let reply = request(&mut stream, "POST", "/echo", &body)
                            .map_err(|e| format!("client {c} request {r}: {e}"))?;
                        if reply.status != 200 || reply.body != body {
                            return Err(format!("client {c} request {r}: {reply:?}"));
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    let errors: Vec<String> = clients.into_iter().filter_map(|c| c.join().unwrap().err()).collect();
    assert!(errors.is_empty(), "{} clients saw errors, first: {:?}", errors.len(), errors.first());
    let stats = String::from_utf8_lossy(&get(port, "/stats").body).into_owned();
    let served: usize =
        stats.split("\"requests\":").nth(1).and_then(|s| s.split(',').next()).and_then(|n| n.parse().ok()).unwrap();
    assert!(served >= CLIENTS * REQUESTS, "/stats counts {served} requests");
}
on_hardware!(sixty_four_keep_alive_clients_get_every_answer_right: e1000 = E1000, virtio_pci = VIRTIO_PCI, igb = IGB, igb_1cpu = IGB_1CPU, virtio_mmio = VIRTIO_MMIO);

/// Sends `raw` on a new connection; returns the status of the answer, or
/// None when the service closed the connection without one.
fn send_raw(port: u16, raw: &[u8], then_close: bool) -> Option<u16> {
    let mut stream = connect(port).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = stream.write_all(raw);
    if then_close {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    read_reply(&mut stream).ok().map(|r| r.status)
}

#[test]
fn malformed_requests_get_their_status_and_the_service_stays_up() {
    let (_vm, port) = http_service(2, "timeout_ms=3000");
    let huge_header = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    let many_headers: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
    let binary: Vec<u8> = (0..2000u32).map(|i| (i * 7919 % 256) as u8).collect();
    let corpus: Vec<(&str, Vec<u8>, bool, Option<u16>)> = vec![
        ("binary garbage", binary, false, Some(400)),
        ("no version", b"GET /\r\n\r\n".to_vec(), false, Some(400)),
        ("bad method token", b"G(T / HTTP/1.1\r\n\r\n".to_vec(), false, Some(400)),
        ("huge header", huge_header.into_bytes(), false, Some(431)),
        ("too many headers", format!("GET / HTTP/1.1\r\n{many_headers}\r\n").into_bytes(), false, Some(431)),
        ("bad content length", b"POST /echo HTTP/1.1\r\nContent-Length: -5\r\n\r\n".to_vec(), false, Some(400)),
        (
            "conflicting lengths",
            b"POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
            false,
            Some(400),
        ),
        ("body too large", b"POST /echo HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n".to_vec(), false, Some(413)),
        (
            "chunked",
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
            false,
            Some(501),
        ),
        // The body is shorter than announced, then the client stops sending:
        // the request never completes and the connection is closed.
        ("short body then close", b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc".to_vec(), true, None),
        ("truncated head then close", b"GET /health HTT".to_vec(), true, None),
        // A short body and a client that waits: 408 after the timeout.
        (
            "short body, client waits",
            b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
            false,
            Some(408),
        ),
    ];
    for (name, raw, close, expected) in &corpus {
        let got = send_raw(port, raw, *close);
        assert_eq!(got, *expected, "{name}: got {got:?}");
        assert_eq!(get(port, "/health").status, 200, "the service stopped answering after: {name}");
    }
    // Pipelined: a good request, then garbage on the same connection.
    let mut stream = connect(port).unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\n\r\n\x01\x02garbage\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut stream).unwrap().status, 200);
    assert_eq!(read_reply(&mut stream).unwrap().status, 400);
    assert_eq!(get(port, "/health").status, 200);
}

#[test]
fn slow_clients_time_out_without_holding_up_the_others() {
    let (_vm, port) = http_service(2, "timeout_ms=3000");
    // Slow clients: a request trickling in a byte at a time, and idle ones.
    let mut idle: Vec<TcpStream> = (0..4).map(|_| connect(port).unwrap()).collect();
    let trickler = std::thread::spawn(move || {
        let mut stream = connect(port).unwrap();
        for byte in b"GET /health HTTP/1.1\r\nX-Slow: yes".iter().take(12) {
            if stream.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(400));
        }
        read_reply(&mut stream).map(|r| r.status).ok()
    });
    for i in 0..20 {
        let started = Instant::now();
        assert_eq!(get(port, "/health").status, 200, "request {i} while slow clients hang on");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "request {i} took {:?} while slow clients hang on",
            started.elapsed()
        );
    }
    for stream in &mut idle {
        assert_eq!(
            read_reply(stream).map(|r| r.status).ok(),
            Some(408),
            "an idle connection was not timed out with 408"
        );
    }
    assert_eq!(trickler.join().unwrap(), Some(408), "a trickling request was not timed out with 408");
}

#[test]
fn kv_keeps_exactly_what_mixed_concurrent_operations_leave() {
    use std::collections::BTreeMap;
    const CLIENTS: usize = 8;
    const OPS: usize = 150;
    let (_vm, port) = service("kv", 4, "");
    let streams: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(port).unwrap()).collect();
    let clients: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(c, mut stream)| {
            std::thread::spawn(move || -> Result<BTreeMap<String, Vec<u8>>, String> {
                // Each client owns its keys, so its own model is exact.
                let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ c as u64;
                for op in 0..OPS {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let key = format!("c{c}-k{}", (seed >> 33) % 12);
                    let path = format!("/kv/{key}");
                    let fail = |what: &str, reply: &Reply| Err(format!("client {c} op {op} {what} {key}: {reply:?}"));
                    match (seed >> 20) % 3 {
                        0 => {
                            let value = format!("value {c} {op}").into_bytes();
                            let reply = request(&mut stream, "PUT", &path, &value).map_err(|e| e.to_string())?;
                            let expected = if model.contains_key(&key) { 200 } else { 201 };
                            if reply.status != expected {
                                return fail("PUT", &reply);
                            }
                            model.insert(key, value);
                        }
                        1 => {
                            let reply = request(&mut stream, "GET", &path, b"").map_err(|e| e.to_string())?;
                            match model.get(&key) {
                                Some(v) if reply.status == 200 && &reply.body == v => {}
                                None if reply.status == 404 => {}
                                _ => return fail("GET", &reply),
                            }
                        }
                        _ => {
                            let reply = request(&mut stream, "DELETE", &path, b"").map_err(|e| e.to_string())?;
                            let expected = if model.remove(&key).is_some() { 204 } else { 404 };
                            if reply.status != expected {
                                return fail("DELETE", &reply);
                            }
                        }
                    }
                }
                Ok(model)
            })
        })
        .collect();
    let mut expected = BTreeMap::new();
    for client in clients {
        expected.extend(client.join().unwrap().unwrap());
    }
    // The final contents, key by key, on a fresh connection.
    let mut stream = connect(port).unwrap();
    for c in 0..CLIENTS {
        for k in 0..12 {
            let key = format!("c{c}-k{k}");
            let reply = request(&mut stream, "GET", &format!("/kv/{key}"), b"").unwrap();
            match expected.get(&key) {
                Some(v) => assert!(reply.status == 200 && &reply.body == v, "{key}: {reply:?}"),
                None => assert_eq!(reply.status, 404, "{key} should be absent"),
            }
        }
    }
    assert_eq!(request(&mut stream, "POST", "/kv/x", b"").unwrap().status, 405);
    assert_eq!(request(&mut stream, "GET", "/elsewhere", b"").unwrap().status, 404);
}

#[test]
fn the_threads_example_creates_threads_everywhere_and_rings_the_token() {
    let run = Machine::new("threads").two_numa_nodes().timeout(Duration::from_secs(120)).run();
    run.assert_success();
    for cpu in 0..4 {
        let node = cpu / 2;
        run.assert_line(&format!("for cpu {cpu} ran on cpu {cpu}: stack on node {node}, heap block on node {node}"));
    }
    run.assert_line("ring: the token went 1000 times around 4 cpus (4000 passes)");
}

/// A client whose handshake ACK comes late (a loaded host) still gets its
/// answer: the service must not take a half-open connection for one the
/// client already closed. (Found by `bench http` on a busy host: new
/// connections were answered with a bare FIN.) The client is written by
/// hand over a unix-datagram wire so that it can hold its ACK back.
#[test]
fn a_connection_whose_handshake_completes_late_is_still_served() {
    use bravo_tests::traffic::{TcpFlags, Wire};
    let dir = std::env::temp_dir().join(format!("bravo-late-ack-{}-{}", std::process::id(), free_port()));
    let mut wire = Wire::bind(&dir).unwrap();
    let mut vm = Machine::new("http")
        .dgram_net(wire.guest_path(), wire.host_path())
        .cmdline("ip=10.0.0.2/24")
        .timeout(Duration::from_secs(120))
        .start();
    vm.wait_for_line("http: serving on", Duration::from_secs(60)).unwrap();
    wire.resolve_guest(Duration::from_secs(10)).unwrap();

    let (port, isn) = (41000u16, 7_000u32);
    let syn_ack = (0..20)
        .find_map(|_| {
            wire.send_tcp(port, 80, isn, None, TcpFlags { syn: true, ..Default::default() }, &[]);
            wire.next_tcp(port, Duration::from_millis(500)).filter(|s| s.syn && s.ack == Some(isn + 1))
        })
        .expect("a SYN-ACK from the service");
    // Long enough for the service to take the connection, were it to take
    // it half-open.
    std::thread::sleep(Duration::from_millis(800));
    let (seq, ack) = (isn + 1, syn_ack.seq.wrapping_add(1));
    wire.send_tcp(port, 80, seq, Some(ack), TcpFlags::default(), &[]);
    let request = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n";
    wire.send_tcp(port, 80, seq, Some(ack), TcpFlags { psh: true, ..Default::default() }, request);

    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !answer.ends_with(b"\r\n\r\nok") {
        let Some(segment) = wire.next_tcp(port, Duration::from_millis(500)) else { continue };
        assert!(!segment.rst, "the service reset the connection");
        if segment.syn {
            continue; // a repeated SYN-ACK
        }
        if segment.fin && segment.payload.is_empty() && answer.is_empty() {
            panic!("the service closed the connection without answering");
        }
        answer.extend_from_slice(&segment.payload);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("\r\n\r\nok"), "answer: {answer:?}");
    drop(vm);
    let _ = std::fs::remove_dir_all(&dir);
}
