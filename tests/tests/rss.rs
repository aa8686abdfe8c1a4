//! Receive-side scaling with a network stack per cpu, from the outside:
//! the `rss-probe` image on QEMU's multi-queue `igb` with 2 cpus.
//!
//! NEEDS the igb driver and the per-cpu network stacks (issue 14): on a
//! kernel with one network stack (every connection on the network cpu,
//! `bravo::net::rss()` None, one queue) these tests fail, by design, at
//! the first check that needs RSS.
//!
//! - 32 connections through QEMU's port forwarding, 4 request/response
//!   rounds each (a reset fails the test): every connection answers from
//!   one cpu, every round; that cpu is the one the host predicts with its
//!   own Toeplitz hash (`bravo_tests::rss`) over the addresses the guest
//!   sees, with the key and redirection table the guest prints at start;
//!   both cpus hold connections; both queues' packet counters grew.
//! - From a thread on each cpu, an outgoing connection to a host listener
//!   (10.0.2.2 in the guest): each succeeds, and the stack holding it is
//!   the one the NIC's hash sends its replies to.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bravo_tests::rss::Rss;
use bravo_tests::{free_port, Machine, Nic, Running};

const CPUS: usize = 2;
const CONNECTIONS: usize = 32;
const ROUNDS: usize = 4;
const GUEST_PORT: u16 = 7000;

/// The probe on igb with 2 cpus, its port forwarded from a free host port;
/// the RSS it printed (or why there is none).
fn probe() -> (Running, u16, Result<Rss, String>) {
    let port = free_port();
    let mut vm = Machine::new("rss-probe")
        .nic(Nic::Igb)
        .cpus(CPUS)
        .cmdline(&format!("-- port={GUEST_PORT}"))
        .user_net(&[(port, GUEST_PORT)])
        .timeout(Duration::from_secs(120))
        .start();
    vm.wait_for_line("rss-probe: ready", Duration::from_secs(60)).unwrap_or_else(|e| {
        panic!("{e}\n(the probe needs the kernel's igb driver and per-cpu network stacks, issue 14)")
    });
    let cpus = vm.wait_for_line("rss-probe: cpus=", Duration::from_secs(1)).unwrap();
    assert!(cpus.text.ends_with(&format!("cpus={CPUS}")), "the guest runs other than {CPUS} cpus: {}", cpus.text);
    let rss = vm.wait_for_line("rss-probe: rss ", Duration::from_secs(1)).unwrap();
    let rss = Rss::parse(&rss.text)
        .map_err(|e| format!("{e} (needs the igb driver and per-cpu stacks)\nserial:\n{}", vm.serial_now()));
    (vm, port, rss)
}

/// A command and its one-line answer.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects through the forwarding, retrying while the guest's NIC
    /// starts (QEMU accepts the host side before the guest answers).
    fn connect(port: u16) -> Client {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let attempt = TcpStream::connect(("127.0.0.1", port)).and_then(|s| {
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut client = Client { reader: BufReader::new(s.try_clone()?), writer: s };
                client.try_ask("where").map(|_| client)
            });
            match attempt {
                Ok(client) => return client,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => panic!("cannot reach the probe: {e}"),
            }
        }
    }

    fn try_ask(&mut self, command: &str) -> std::io::Result<String> {
        self.writer.write_all(format!("{command}\n").as_bytes())?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the probe closed the connection"));
        }
        Ok(line.trim_end().to_string())
    }

    #[track_caller]
    fn ask(&mut self, command: &str) -> String {
        self.try_ask(command).unwrap_or_else(|e| panic!("{command}: {e}"))
    }
}

/// `KEY=VALUE` of a space-separated answer.
fn field<'a>(answer: &'a str, key: &str) -> &'a str {
    answer
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|w| w.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {answer:?}"))
}

/// (queue, cpu, rx, tx) of a `queues` answer.
fn queues(answer: &str) -> Vec<(usize, usize, u64, u64)> {
    answer
        .split(';')
        .map(|q| {
            let n = |key: &str| field(q, key).parse::<u64>().unwrap_or_else(|e| panic!("{key} in {q:?}: {e}"));
            (n("queue") as usize, n("cpu") as usize, n("rx"), n("tx"))
        })
        .collect()
}

#[test]
fn connections_stay_on_the_cpu_the_hash_chooses_and_both_queues_carry_them() {
    let (vm, port, rss) = probe();
    let rss = rss.unwrap_or_else(|e| panic!("no RSS: {e}"));
    let mut control = Client::connect(port);
    let before = queues(&control.ask("queues"));

    // Open one by one (QEMU's forwarding drops bursts of new connections).
    let mut clients: Vec<Client> = (0..CONNECTIONS).map(|_| Client::connect(port)).collect();
    let mut per_cpu = [0usize; CPUS];
    for (c, client) in clients.iter_mut().enumerate() {
        let first = client.ask("where");
        let local: SocketAddrV4 = field(&first, "local").parse().unwrap();
        let peer: SocketAddrV4 = field(&first, "peer").parse().unwrap();
        let cpu: usize = field(&first, "cpu").parse().unwrap();
        // The NIC hashes what it receives: from the peer to us.
        let predicted = rss.cpu_of_tcp4(peer, local);
        assert_eq!(
            cpu, predicted,
            "connection {c} ({peer} -> {local}) is on cpu {cpu}, RSS sends it to cpu {predicted}"
        );
        for round in 1..ROUNDS {
            let again = client.ask("where");
            assert_eq!(again, first, "connection {c} moved at round {round}");
        }
        per_cpu[cpu] += 1;
    }
    println!("connections per cpu: {per_cpu:?}");
    assert!(per_cpu.iter().all(|&n| n > 0), "not every cpu holds connections: {per_cpu:?}");

    let after = queues(&control.ask("queues"));
    println!("queues before {before:?}, after {after:?}");
    assert_eq!(after.len(), CPUS, "expected a queue per cpu: {after:?}");
    for (queue, cpu, rx, tx) in &after {
        let (_, _, rx0, tx0) = before.iter().find(|q| q.0 == *queue).copied().unwrap_or((*queue, *cpu, 0, 0));
        assert!(
            *rx > rx0 && *tx > tx0,
            "queue {queue} (cpu {cpu}) carried nothing: rx {rx0} -> {rx}, tx {tx0} -> {tx}"
        );
    }
    drop(vm);
}

#[test]
fn an_outgoing_connection_from_each_cpu_works() {
    let (vm, port, rss) = probe();
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    // The host's side: greets back each connection's line, until CPUS
    // connections or 30 s.
    host.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let mut greeted = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while greeted.len() < CPUS && Instant::now() < deadline {
            let Ok((stream, _)) = host.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut line = String::new();
            if BufReader::new(stream.try_clone().unwrap()).read_line(&mut line).is_ok() {
                let _ = (&stream).write_all(format!("welcome {line}").as_bytes());
            }
            greeted.push(line.trim_end().to_string());
        }
        greeted
    });
    let mut control = Client::connect(port);
    let answer = control.ask(&format!("connect {host_port}"));
    println!("outgoing: {answer}");
    let results: Vec<&str> = answer.split(';').collect();
    assert_eq!(results.len(), CPUS, "one result per cpu: {answer}");
    for (cpu, result) in results.iter().enumerate() {
        assert!(result.starts_with(&format!("from={cpu} ok ")), "the connection from cpu {cpu} failed: {result}");
        assert_eq!(field(result, "reply"), format!("welcome_hello_from_cpu_{cpu}"), "cpu {cpu}");
        if let Ok(rss) = &rss {
            let local: SocketAddrV4 = field(result, "local").parse().unwrap();
            let held: usize = field(result, "held").parse().unwrap();
            let host = SocketAddrV4::new([10, 0, 2, 2].into(), host_port);
            let predicted = rss.cpu_of_tcp4(host, local);
            assert_eq!(
                held, predicted,
                "cpu {cpu}'s connection from {local} is held by cpu {held}, its replies reach cpu {predicted}"
            );
        }
    }
    let greeted = server.join().unwrap();
    for cpu in 0..CPUS {
        assert!(
            greeted.contains(&format!("hello from cpu {cpu}")),
            "the host was not greeted from cpu {cpu}: {greeted:?}"
        );
    }
    rss.unwrap_or_else(|e| panic!("no RSS: {e}"));
    drop(vm);
}
