//! The guest side of `just bench pps`: three UDP services on consecutive
//! ports, speaking the same small protocol as the Linux peer's program
//! (`tests/linux-peer`):
//!
//! - sink, `PORT`: counts datagrams and payload bytes; a datagram starting
//!   with `STOP` is answered with `DONE packets=N bytes=B` (the counts
//!   since the previous `STOP`), which resets them;
//! - source, `PORT+1`: `GO size=S secs=D` starts a flood of S-byte
//!   datagrams to the sender for D seconds; `STOP` answers with what was
//!   sent;
//! - echo, `PORT+2`: every datagram goes back to its sender.
//!
//! Arguments: `[port=9000]` for the services over Bravo's network stack
//! (smoltcp), or `raw ip=A.B.C.D [port=9000]` with the kernel option
//! `net=raw`: the same services straight on the e1000 rings, polled, with
//! no stack at all (only what it takes to answer ARP and turn a frame
//! around): the ceiling of what the device model moves.

#![no_std]
#![no_main]

extern crate alloc;

mod raw;

use core::net::{Ipv4Addr, SocketAddrV4};
use core::time::Duration;

use bravo::net::{Datagrams, NetError, UdpSocket};
use bravo::time::Instant;
use bravo::{println, thread};

bravo::main!(main);

/// The parsed arguments.
struct Args {
    raw: bool,
    ip: Option<Ipv4Addr>,
    port: u16,
}

fn parse_args() -> Result<Args, &'static str> {
    let mut args = Args { raw: false, ip: None, port: 9000 };
    for arg in bravo::env::args() {
        match arg.split_once('=') {
            None if arg == "raw" => args.raw = true,
            Some(("ip", v)) => args.ip = Some(v.parse().map_err(|_| "ip=: expected an IPv4 address")?),
            Some(("port", v)) => {
                args.port = v.parse().ok().filter(|&p: &u16| p != 0 && p < 65533).ok_or("port=: expected 1-65532")?
            }
            _ => return Err("usage: bench-net [raw ip=A.B.C.D] [port=9000]"),
        }
    }
    Ok(args)
}

fn main() -> Result<(), NetError> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(usage) => {
            println!("bench-net: {usage}");
            return Err(NetError::InvalidInput);
        }
    };
    if args.raw {
        let Some(ip) = args.ip else {
            println!("bench-net: raw needs ip=A.B.C.D");
            return Err(NetError::InvalidInput);
        };
        return raw::serve(ip, args.port);
    }
    let (address, prefix) = bravo::net::wait_for_address(Duration::from_secs(30))?;
    let sink = UdpSocket::bind(args.port)?;
    let source = UdpSocket::bind(args.port + 1)?;
    let echo = UdpSocket::bind(args.port + 2)?;
    // On the cpu whose network stack holds the sockets: no cross-cpu hop.
    let cpu = sink.cpu();
    let no_thread = |e| {
        println!("bench-net: no thread on cpu {cpu}: {e}");
        NetError::NoBufferSpace
    };
    thread::spawn_on(cpu, move || run_source(source)).map_err(no_thread)?;
    thread::spawn_on(cpu, move || run_echo(echo)).map_err(no_thread)?;
    let sink = thread::spawn_on(cpu, move || run_sink(sink)).map_err(no_thread)?;
    println!(
        "bench-net: ready on {address}/{prefix}: sink {}, source {}, echo {} (smoltcp), cpus={}",
        args.port,
        args.port + 1,
        args.port + 2,
        thread::cpu_count()
    );
    sink.join();
    Ok(())
}

/// The answer to `STOP`.
fn done_message(packets: u64, bytes: u64) -> alloc::string::String {
    alloc::format!("DONE packets={packets} bytes={bytes}")
}

/// Parses `GO size=S secs=D` into (S, D); D may have a fraction.
pub fn parse_go(payload: &[u8]) -> Option<(usize, Duration)> {
    let text = core::str::from_utf8(payload.strip_prefix(b"GO ")?).ok()?;
    let (mut size, mut secs) = (None, None);
    for word in text.split_whitespace() {
        match word.split_once('=')? {
            ("size", v) => size = v.parse::<usize>().ok().filter(|&s| s <= 1472),
            ("secs", v) => secs = parse_secs(v),
            _ => {}
        }
    }
    Some((size?, secs?))
}

/// `12`, `1.5` or `0.25` seconds (no floats needed: at most 3 decimals).
fn parse_secs(text: &str) -> Option<Duration> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis = fraction.parse::<u64>().unwrap_or(0) * 10u64.pow(3 - fraction.len() as u32);
    let secs = whole.parse::<u64>().ok().filter(|&s| s <= 3600)?;
    Some(Duration::from_secs(secs) + Duration::from_millis(millis))
}

/// Datagrams taken or sent per request to the network thread (a whole
/// socket buffer: more than the network thread takes in per round).
const BATCH: usize = 256;

fn run_sink(socket: UdpSocket) {
    let (mut packets, mut bytes) = (0u64, 0u64);
    let mut batch = Datagrams::new();
    loop {
        batch = match socket.recv_batch(batch, BATCH) {
            Ok(batch) => batch,
            Err(_) => Datagrams::new(),
        };
        let mut stop = None;
        for (data, peer) in batch.iter() {
            if data.starts_with(b"STOP") {
                stop = Some(peer);
            } else {
                packets += 1;
                bytes += data.len() as u64;
            }
        }
        if let Some(peer) = stop {
            let done = done_message(packets, bytes);
            println!("bench-net: sink {done}");
            let _ = socket.send_to(done.as_bytes(), peer);
            (packets, bytes) = (0, 0);
        }
    }
}

fn run_source(socket: UdpSocket) {
    let mut buf = [0u8; 2048];
    let (mut packets, mut bytes) = (0u64, 0u64);
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else { continue };
        if buf[..n].starts_with(b"STOP") {
            let done = done_message(packets, bytes);
            println!("bench-net: source {done}");
            let _ = socket.send_to(done.as_bytes(), peer);
            (packets, bytes) = (0, 0);
        } else if let Some((size, secs)) = parse_go(&buf[..n]) {
            let (sent, sent_bytes) = flood(&socket, peer, size, secs);
            packets += sent;
            bytes += sent_bytes;
        }
    }
}

/// Sends `size`-byte datagrams to `peer` for `secs`, a batch per request;
/// returns what was sent.
fn flood(socket: &UdpSocket, peer: SocketAddrV4, size: usize, secs: Duration) -> (u64, u64) {
    let payload = [0u8; 1472];
    let mut batch = Datagrams::new();
    for _ in 0..BATCH {
        batch.push(&payload[..size], peer);
    }
    let start = Instant::now();
    let mut packets = 0u64;
    while start.elapsed() < secs {
        match socket.send_batch(batch) {
            Ok(sent) => {
                packets += sent.len() as u64;
                batch = sent;
            }
            Err(_) => break,
        }
    }
    (packets, packets * size as u64)
}

/// Sends every batch of datagrams back as it came.
fn run_echo(socket: UdpSocket) {
    let mut batch = Datagrams::new();
    loop {
        batch = match socket.recv_batch(batch, BATCH).and_then(|received| socket.send_batch(received)) {
            Ok(batch) => batch,
            Err(_) => Datagrams::new(),
        };
    }
}
