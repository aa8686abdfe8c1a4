//! Memory exhausted by data is an answer, not a crash: `examples/kv`
//! filled by concurrent clients until it answers 507 keeps what it stored,
//! serves reads and deletes, and takes writes again once keys are
//! deleted; `examples/http` under many large `POST /echo` bodies at once
//! answers each with its body or 503 and stays up. Small guests, so that
//! memory runs out in seconds.

use std::net::TcpStream;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use bravo_tests::http_client::{connect, request, start_service, Reply};
use bravo_tests::Running;

/// Fails when the guest panicked or QEMU ended.
fn assert_alive(vm: &mut Running) {
    match vm.wait_for_line("PANIC", Duration::from_millis(300)) {
        Ok(line) => panic!("the guest panicked: {}\n{}", line.text, vm.serial()),
        Err(e) if e.contains("QEMU ended") => panic!("the VM ended: {e}"),
        Err(_) => {}
    }
}

/// The value client `c` stores under its `i`th key: `len` bytes that
/// differ per key.
fn value(c: usize, i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| ((c * 131 + i * 7 + j) % 251) as u8).collect()
}

/// A new keep-alive connection, proven by a request. Connections are
/// opened one at a time, and retried: QEMU's forwarding and the guest's
/// listener drop bursts of new connections (issue 12, item 3), which is not
/// what these tests are about.
fn open_one(port: u16) -> Result<TcpStream, String> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut last = String::new();
    for _ in 0..10 {
        match connect(port).and_then(|mut s| request(&mut s, "GET", "/health", b"").map(|r| (s, r))) {
            Ok((stream, reply)) if reply.status == 200 => return Ok(stream),
            Ok((_, reply)) => last = format!("/health answered {}", reply.status),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("no connection: {last}"))
}

/// Opens `n` keep-alive connections.
fn open(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| open_one(port).unwrap()).collect()
}

/// Runs `work(client, stream)` on every stream at once; returns the
/// streams and results in client order.
fn on_every_stream<T: Send + 'static>(
    streams: Vec<TcpStream>,
    work: impl Fn(usize, &mut TcpStream) -> Result<T, String> + Send + Sync + 'static,
) -> (Vec<TcpStream>, Vec<T>) {
    let work = Arc::new(work);
    let threads: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(c, mut stream)| {
            let work = work.clone();
            std::thread::spawn(move || work(c, &mut stream).map(|r| (stream, r)))
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap().unwrap_or_else(|e| panic!("{e}"))).unzip()
}

fn call(stream: &mut TcpStream, method: &str, path: &str, body: &[u8]) -> Result<Reply, String> {
    request(stream, method, path, body).map_err(|e| format!("{method} {path}: {e}"))
}

#[test]
fn kv_filled_until_it_refuses_keeps_its_data_serves_and_takes_writes_after_deletes() {
    const CLIENTS: usize = 6;
    const VALUE: usize = 8 * 1024;
    /// More PUTs than a 64 MiB guest can hold: the store must refuse first.
    const MOST_PER_CLIENT: usize = 2_000;
    let (mut vm, port) = start_service("kv", |m| m.cpus(2).memory_mib(64).timeout(Duration::from_secs(600)));
    let started = Instant::now();

    // Fill: every client PUTs new keys until it gets 507.
    let (streams, stored) = on_every_stream(open(port, CLIENTS), |c, stream| {
        for i in 0..MOST_PER_CLIENT {
            let reply = call(stream, "PUT", &format!("/kv/c{c}-{i}"), &value(c, i, VALUE))?;
            match reply.status {
                201 => {}
                507 => return Ok(i),
                _ => return Err(format!("client {c} PUT {i}: {reply:?}")),
            }
        }
        Err(format!("client {c}: {MOST_PER_CLIENT} values stored and never a 507"))
    });
    let total: usize = stored.iter().sum();
    println!("kv: {total} values of {VALUE} B stored before 507 ({stored:?}) in {:?}", started.elapsed());
    assert!(total * VALUE > 16 << 20, "only {total} values fit in a 64 MiB guest");
    assert_alive(&mut vm);

    // Full: writes are refused, reads of every stored key are byte-exact.
    let stored = Arc::new(stored);
    let counts = stored.clone();
    let (streams, _) = on_every_stream(streams, move |c, stream| {
        // Memory the kernel gives back meanwhile (idle socket buffers)
        // may let a few more in; the store must still be refusing soon.
        let refused =
            (0..100).find_map(|k| match call(stream, "PUT", &format!("/kv/c{c}-new{k}"), &value(c, k, VALUE)) {
                Ok(reply) if reply.status == 507 => Some(Ok(())),
                Ok(reply) if reply.status == 201 => None,
                Ok(reply) => Some(Err(format!("client {c}: a PUT to the full store got {}", reply.status))),
                Err(e) => Some(Err(e)),
            });
        refused.unwrap_or_else(|| Err(format!("client {c}: 100 more PUTs to the full store were all taken")))?;
        for i in 0..counts[c] {
            let reply = call(stream, "GET", &format!("/kv/c{c}-{i}"), b"")?;
            if reply.status != 200 || reply.body != value(c, i, VALUE) {
                return Err(format!("client {c} GET {i}: status {}, {} bytes", reply.status, reply.body.len()));
            }
        }
        Ok(())
    });
    assert_alive(&mut vm);

    // Delete half of each client's keys, then writes are taken again.
    let counts = stored.clone();
    let (_streams, _) = on_every_stream(streams, move |c, stream| {
        for i in 0..counts[c] / 2 {
            let reply = call(stream, "DELETE", &format!("/kv/c{c}-{i}"), b"")?;
            if reply.status != 204 {
                return Err(format!("client {c} DELETE {i}: {reply:?}"));
            }
        }
        for i in 0..20 {
            let (path, body) = (format!("/kv/c{c}-again-{i}"), value(c, 10_000 + i, VALUE));
            let reply = call(stream, "PUT", &path, &body)?;
            if reply.status != 201 {
                return Err(format!("client {c}: PUT {path} after the deletes got {}", reply.status));
            }
            let reply = call(stream, "GET", &path, b"")?;
            if reply.status != 200 || reply.body != body {
                return Err(format!("client {c}: GET {path} after the deletes: {}", reply.status));
            }
        }
        let deleted = call(stream, "GET", &format!("/kv/c{c}-0"), b"")?;
        let kept = call(stream, "GET", &format!("/kv/c{c}-{}", counts[c] - 1), b"")?;
        if deleted.status != 404 || kept.status != 200 || kept.body != value(c, counts[c] - 1, VALUE) {
            return Err(format!("client {c}: deleted key {}, kept key {}", deleted.status, kept.status));
        }
        Ok(())
    });
    // A new connection is served too.
    let mut fresh = connect(port).unwrap();
    assert_eq!(request(&mut fresh, "GET", "/health", b"").unwrap().status, 200);
    assert_alive(&mut vm);
    println!("kv: filled, read back, deleted and written again in {:?}", started.elapsed());
}

#[test]
fn many_large_echo_bodies_at_once_get_their_body_or_503_and_the_service_stays_up() {
    const CLIENTS: usize = 32;
    const ROUNDS: usize = 3;
    const BODY: usize = 1 << 20;
    let (mut vm, port) = start_service("http", |m| {
        m.cpus(2).memory_mib(64).cmdline("-- timeout_ms=120000").timeout(Duration::from_secs(600))
    });
    let started = Instant::now();
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let barrier = barrier.clone();
            std::thread::spawn(move || -> Result<(usize, usize), String> {
                let (mut echoed, mut refused) = (0, 0);
                let mut stream = open_one(port)?;
                barrier.wait();
                for round in 0..ROUNDS {
                    let body = value(c, round, BODY);
                    let reply = call(&mut stream, "POST", "/echo", &body)
                        .map_err(|e| format!("client {c} round {round}: {e}"))?;
                    match reply.status {
                        200 if reply.body == body => echoed += 1,
                        503 => {
                            refused += 1;
                            // The service may have closed the connection.
                            stream = open_one(port)?;
                        }
                        status => {
                            return Err(format!("client {c} round {round}: {status}, {} bytes", reply.body.len()))
                        }
                    }
                }
                Ok((echoed, refused))
            })
        })
        .collect();
    let results: Vec<Result<(usize, usize), String>> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_alive(&mut vm);
    let (mut echoed, mut refused) = (0, 0);
    for result in results {
        let (e, r) = result.unwrap_or_else(|e| panic!("{e}; serial:\n{}", vm.serial()));
        (echoed, refused) = (echoed + e, refused + r);
    }
    println!("echo: {echoed} bodies of 1 MiB echoed, {refused} answered 503, in {:?}", started.elapsed());
    assert_eq!(echoed + refused, CLIENTS * ROUNDS);
    assert!(echoed > 0, "no body was echoed");
    assert!(refused > 0, "memory never ran out: the test proves nothing");
    assert_alive(&mut vm);
    let health = request(&mut connect(port).unwrap(), "GET", "/health", b"").unwrap();
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok"[..]));
    // Memory came back: a large body is echoed again.
    let body = value(99, 0, BODY);
    let reply = request(&mut connect(port).unwrap(), "POST", "/echo", &body).unwrap();
    assert!(reply.status == 200 && reply.body == body, "a body after the burst: {}", reply.status);
}
