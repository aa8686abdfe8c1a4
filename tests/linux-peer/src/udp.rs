//! The UDP modes: `sink`, `source` and `echo`.
//!
//! `source` protocol: the host sends `GO size=S secs=D`; the peer then sends
//! S-byte datagrams to the GO's sender as fast as it can for D seconds
//! (counting only successful sends), and answers the next `STOP` with
//! `DONE packets=N bytes=B`. Datagrams that arrive during the flood are
//! drained every 256 sends: duplicate GOs are dropped there, and a STOP ends
//! the flood early and is answered at once. A GO that arrives after the flood
//! has ended starts a new flood whose counts add up until the next STOP, so
//! the host should stop repeating GO once it sees traffic.

use crate::say;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Largest datagram we receive.
const MAX_DATAGRAM: usize = 65536;
/// Largest UDP payload over IPv4.
const MAX_PAYLOAD: usize = 65507;
/// Receive/send buffer asked of the kernel (capped by net.core.*mem_max).
const SOCKET_BUFFER: libc::c_int = 4 << 20;
/// Sends between two looks at the clock and the socket during a flood.
const FLOOD_BATCH: u64 = 256;

/// Packet and byte counts since the last `STOP`.
#[derive(Default)]
struct Counts {
    packets: u64,
    bytes: u64,
}

impl Counts {
    fn add(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }

    /// `DONE packets=N bytes=B`; resets the counts.
    fn take_report(&mut self) -> String {
        let report = format!("DONE packets={} bytes={}", self.packets, self.bytes);
        *self = Counts::default();
        report
    }
}

/// Binds 0.0.0.0:`port` with large socket buffers and says it is ready.
fn bind(mode: &str, port: u16) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(("0.0.0.0", port))?;
    for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: a valid socket fd and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&SOCKET_BUFFER as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    say(&format!("peer: ready mode={mode} port={port}"));
    Ok(socket)
}

/// Answers a `STOP` from `to` with the report, prints it and resets.
fn report(socket: &UdpSocket, counts: &mut Counts, to: SocketAddr) -> io::Result<()> {
    let text = counts.take_report();
    socket.send_to(text.as_bytes(), to)?;
    say(&text);
    Ok(())
}

/// `sink PORT`: counts datagrams until a `STOP`.
pub fn sink(port: u16) -> io::Result<()> {
    let socket = bind("sink", port)?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut counts = Counts::default();
    loop {
        let (len, from) = socket.recv_from(&mut buf)?;
        if buf[..len].starts_with(b"STOP") {
            report(&socket, &mut counts, from)?;
        } else {
            counts.add(len);
        }
    }
}

/// `echo PORT`: sends every datagram back to its sender.
pub fn echo(port: u16) -> io::Result<()> {
    let socket = bind("echo", port)?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, from) = socket.recv_from(&mut buf)?;
        // A full queue or an unreachable sender is not our problem.
        let _ = socket.send_to(&buf[..len], from);
    }
}

/// A parsed `GO size=S secs=D`.
#[derive(Debug, PartialEq)]
struct Go {
    size: usize,
    duration: Duration,
}

/// Parses `GO size=S secs=D` (fields in any order; `secs` may be fractional).
fn parse_go(payload: &[u8]) -> Option<Go> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    let mut words = text.split_ascii_whitespace();
    if words.next()? != "GO" {
        return None;
    }
    let (mut size, mut secs) = (None, None);
    for word in words {
        match word.split_once('=')? {
            ("size", v) => size = Some(v.parse::<usize>().ok()?),
            ("secs", v) => secs = Some(v.parse::<f64>().ok()?),
            _ => {}
        }
    }
    let secs = secs?;
    if !(secs.is_finite() && secs >= 0.0) || size? > MAX_PAYLOAD {
        return None;
    }
    Some(Go { size: size?, duration: Duration::from_secs_f64(secs) })
}

/// `source PORT`: floods the sender of each `GO`, reports on `STOP`.
pub fn source(port: u16) -> io::Result<()> {
    let socket = bind("source", port)?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut counts = Counts::default();
    loop {
        let (len, from) = socket.recv_from(&mut buf)?;
        if buf[..len].starts_with(b"STOP") {
            report(&socket, &mut counts, from)?;
        } else if let Some(go) = parse_go(&buf[..len]) {
            if let Some(stop_from) = flood(&socket, &go, from, &mut counts, &mut buf)? {
                report(&socket, &mut counts, stop_from)?;
            }
        }
    }
}

/// Sends `go.size`-byte datagrams to `to` for `go.duration`. Returns the
/// sender of a `STOP` that arrived during the flood (which ends it early).
fn flood(
    socket: &UdpSocket,
    go: &Go,
    to: SocketAddr,
    counts: &mut Counts,
    scratch: &mut [u8],
) -> io::Result<Option<SocketAddr>> {
    let mut payload = vec![0u8; go.size];
    let deadline = Instant::now() + go.duration;
    let mut sequence: u64 = 0;
    loop {
        for _ in 0..FLOOD_BATCH {
            if payload.len() >= 8 {
                payload[..8].copy_from_slice(&sequence.to_be_bytes());
            }
            sequence += 1;
            // Failures (ENOBUFS, EAGAIN, ECONNREFUSED from an ICMP error)
            // are not counted.
            if socket.send_to(&payload, to).is_ok() {
                counts.add(payload.len());
            }
        }
        if let Some(stop_from) = drain(socket, scratch)? {
            return Ok(Some(stop_from));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
    }
}

/// Reads whatever is queued without blocking; returns a `STOP`'s sender.
/// Anything else (duplicate GOs) is dropped.
fn drain(socket: &UdpSocket, scratch: &mut [u8]) -> io::Result<Option<SocketAddr>> {
    socket.set_nonblocking(true)?;
    let mut stop = None;
    loop {
        match socket.recv_from(scratch) {
            Ok((len, from)) if scratch[..len].starts_with(b"STOP") => {
                stop = Some(from);
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            // ICMP errors for earlier sends surface here; ignore them.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            Err(e) => {
                socket.set_nonblocking(false)?;
                return Err(e);
            }
        }
    }
    socket.set_nonblocking(false)?;
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_parses_size_and_fractional_secs() {
        assert_eq!(parse_go(b"GO size=64 secs=1.5"), Some(Go { size: 64, duration: Duration::from_millis(1500) }));
        assert_eq!(parse_go(b"GO secs=2 size=1472\n"), Some(Go { size: 1472, duration: Duration::from_secs(2) }));
    }

    #[test]
    fn go_rejects_garbage() {
        assert_eq!(parse_go(b"GO size=64"), None);
        assert_eq!(parse_go(b"GO size=x secs=1"), None);
        assert_eq!(parse_go(b"GOO size=1 secs=1"), None);
        assert_eq!(parse_go(b"GO size=70000 secs=1"), None);
        assert_eq!(parse_go(b"STOP"), None);
    }

    #[test]
    fn report_resets_counts() {
        let mut counts = Counts::default();
        counts.add(10);
        counts.add(20);
        assert_eq!(counts.take_report(), "DONE packets=2 bytes=30");
        assert_eq!(counts.take_report(), "DONE packets=0 bytes=0");
    }
}
