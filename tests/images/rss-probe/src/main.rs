//! Bravo's test image for receive-side scaling (`tests/tests/rss.rs`):
//! shows from the inside where the network stacks put connections, so the
//! host can check it against its own Toeplitz hash.
//!
//! At start it prints `rss-probe: cpus=N`, then the NIC's RSS as
//! `rss-probe: rss key=HEX cpus=C0,C1,...` (the 40-byte key and, for each
//! redirection-table entry, the cpu whose queue it names) or
//! `rss-probe: rss none` (a single-queue NIC), then
//! `rss-probe: ready port=P`. On port `P` (`-- port=P`, default 7000),
//! every connection gets a thread on the cpu whose stack holds it
//! ([`TcpStream::cpu`]) and answers, line by line:
//!
//! - `where` → `cpu=C local=A:P peer=B:Q` (the stack holding the
//!   connection, both ends as the guest sees them);
//! - `queues` → `queue=Q cpu=C rx=R tx=T;...` (per-queue packets, from
//!   `bravo::net::queue_stats`);
//! - `connect HOST_PORT` → from a thread on each cpu in turn, a connection
//!   to 10.0.2.2:HOST_PORT (the host's loopback through QEMU's user
//!   networking) that sends `hello from cpu C` and reads a line back; the
//!   answer is `from=C ok held=H local=A:P;...` (`held`: the cpu whose
//!   stack holds the outgoing connection) or `from=C error=WHY;...`;
//! - anything else → `error unknown command`.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::time::Duration;

use bravo::net::{NetError, TcpListener, TcpStream};
use bravo::{println, thread};

bravo::main!(main);

/// Longest command line read.
const MAX_LINE: usize = 64;
/// How long an outgoing connection may take to connect and answer.
const OUTGOING_TIMEOUT: Duration = Duration::from_secs(5);
/// The host as QEMU's user networking shows it to the guest.
const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

fn main() -> Result<(), NetError> {
    let mut port = 7000;
    for arg in bravo::env::args() {
        match arg.split_once('=') {
            Some(("port", v)) => port = v.parse().map_err(|_| NetError::InvalidInput)?,
            _ => println!("rss-probe: ignoring argument {arg:?} (expected port=N)"),
        }
    }
    bravo::net::wait_for_address(Duration::from_secs(30))?;
    println!("rss-probe: cpus={}", thread::cpu_count());
    match bravo::net::rss() {
        Some((key, cpus)) => {
            let key: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let cpus: Vec<String> = cpus.iter().map(|c| format!("{c}")).collect();
            println!("rss-probe: rss key={key} cpus={}", cpus.join(","));
        }
        None => println!("rss-probe: rss none"),
    }
    let listener = TcpListener::bind(port)?;
    println!("rss-probe: ready port={port}");
    loop {
        let Ok((stream, _)) = listener.accept() else { continue };
        let cpu = stream.cpu();
        if let Err(e) = thread::spawn_on(cpu, move || serve(stream)) {
            println!("rss-probe: no thread on cpu {cpu}: {e}");
        }
    }
}

/// Answers one connection's commands until it closes.
fn serve(mut stream: TcpStream) {
    while let Some(line) = read_line(&mut stream) {
        let answer = match line.split_once(' ').unwrap_or((line.as_str(), "")) {
            ("where", "") => where_is(&stream),
            ("queues", "") => queues(),
            ("connect", port) => match port.parse::<u16>() {
                Ok(port) => connect_from_every_cpu(port),
                Err(_) => String::from("error connect takes a port"),
            },
            _ => String::from("error unknown command"),
        };
        if stream.write_all(answer.as_bytes()).and_then(|()| stream.write_all(b"\n")).is_err() {
            return;
        }
    }
}

/// One `\n`-ended line (without it), `None` at the end of the stream, on
/// an error, or for a line longer than [`MAX_LINE`].
fn read_line(stream: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return String::from_utf8(line).ok(),
            Ok(1) if line.len() < MAX_LINE => line.push(byte[0]),
            _ => return None,
        }
    }
}

fn where_is(stream: &TcpStream) -> String {
    match (stream.local_addr(), stream.peer_addr()) {
        (Ok(local), Ok(peer)) => format!("cpu={} local={local} peer={peer}", stream.cpu()),
        (Err(e), _) | (_, Err(e)) => format!("error {e:?}"),
    }
}

fn queues() -> String {
    let queues: Vec<String> = bravo::net::queue_stats()
        .iter()
        .map(|q| format!("queue={} cpu={} rx={} tx={}", q.queue, q.cpu, q.nic.rx_packets, q.nic.tx_packets))
        .collect();
    queues.join(";")
}

/// Connects to the host's `port` from a thread on each cpu in turn.
fn connect_from_every_cpu(port: u16) -> String {
    let results: Vec<String> = (0..thread::cpu_count())
        .map(|cpu| {
            let outcome = thread::spawn_on(cpu, move || outgoing(cpu, SocketAddrV4::new(HOST, port)))
                .map(|handle| handle.join())
                .unwrap_or_else(|e| Err(format!("no thread: {e}")));
            match outcome {
                Ok(said) => format!("from={cpu} ok {said}"),
                Err(why) => format!("from={cpu} error={why}"),
            }
        })
        .collect();
    results.join(";")
}

/// One outgoing connection from this cpu: greets, reads the host's line.
fn outgoing(cpu: usize, host: SocketAddrV4) -> Result<String, String> {
    let mut stream = TcpStream::connect(host, OUTGOING_TIMEOUT).map_err(|e| format!("connect:{e:?}"))?;
    stream.set_read_timeout(Some(OUTGOING_TIMEOUT));
    stream.write_all(format!("hello from cpu {cpu}\n").as_bytes()).map_err(|e| format!("write:{e:?}"))?;
    let reply = read_line(&mut stream).ok_or("no-reply")?;
    let local = stream.local_addr().map_err(|e| format!("local_addr:{e:?}"))?;
    let held = stream.cpu();
    let _ = stream.close();
    Ok(format!("held={held} local={local} reply={}", reply.replace([' ', ';'], "_")))
}
