//! Bravo's test image for the standard I/O traits: `TcpStream` through
//! `embedded-io` only, driven by an ecosystem crate written against them
//! (`postcard`, whose `from_eio`/`to_eio` read and write serde values on
//! any `embedded_io::Read`/`Write`). Run as `-- io-traits PORT CLOSED`
//! with the host listening on its loopback `PORT` (`tests/tests/io_traits.rs`):
//!
//! 1. connects to the host; nothing has arrived (`read_ready` false) and
//!    the send buffer is empty (`write_ready` true);
//! 2. greets with `write_fmt` and `flush`es; the host answers the greeting
//!    with an [`Order`] in postcard;
//! 3. waits for `read_ready`, reads the order with `postcard::from_eio`,
//!    writes its [`Receipt`] with `postcard::to_eio` (which flushes);
//! 4. reads the host's close: `read` gives 0 and `read_ready` stays true;
//! 5. connects to the host's `CLOSED` port: the error's
//!    `embedded_io::ErrorKind` is `ConnectionRefused`.
//!
//! Prints `io-traits: every check passed` and returns; an `Err` says which
//! check failed.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::time::Duration;

use bravo::net::embedded_io::{Error as _, ErrorKind, Read, ReadReady, Write, WriteReady};
use bravo::net::TcpStream;
use serde::{Deserialize, Serialize};

bravo::main!(main);

/// What the host sends (the same fields, in the same order, as the host
/// test's copy).
#[derive(Debug, Deserialize)]
struct Order {
    id: u32,
    items: Vec<String>,
    quantities: Vec<u16>,
    note: Option<String>,
}

/// What the guest answers: the order's lines sorted by item, their total,
/// the note's length.
#[derive(Debug, Serialize)]
struct Receipt {
    id: u32,
    lines: Vec<(String, u16)>,
    total: u32,
    note_len: Option<u32>,
}

fn receipt(order: Order) -> Receipt {
    let mut lines: Vec<(String, u16)> = order.items.into_iter().zip(order.quantities).collect();
    lines.sort();
    let total = lines.iter().map(|(_, q)| u32::from(*q)).sum();
    Receipt { id: order.id, lines, total, note_len: order.note.map(|n| n.chars().count() as u32) }
}

/// The host's loopback as QEMU user networking shows it to the guest.
const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

fn main() -> Result<(), String> {
    let mut args = bravo::env::args();
    let usage = "usage: io-traits PORT CLOSED_PORT";
    let port: u16 = args.next().and_then(|p| p.parse().ok()).ok_or(usage)?;
    let closed: u16 = args.next().and_then(|p| p.parse().ok()).ok_or(usage)?;
    bravo::net::wait_for_address(Duration::from_secs(30)).map_err(|e| format!("no address: {e}"))?;
    let mut stream = TcpStream::connect(SocketAddrV4::new(HOST, port), Duration::from_secs(20))
        .map_err(|e| format!("connect to the host: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)));
    stream.set_write_timeout(Some(Duration::from_secs(20)));
    exchange(&mut stream)?;
    refused(closed)?;
    bravo::println!("io-traits: every check passed");
    Ok(())
}

/// Steps 1 to 4, through the traits only.
fn exchange<S: Read + Write + ReadReady + WriteReady>(stream: &mut S) -> Result<(), String>
where
    S::Error: core::fmt::Display,
{
    // 1. The host sends nothing before our greeting.
    if stream.read_ready().map_err(|e| format!("read_ready: {e}"))? {
        return Err("read_ready is true before the host sent anything".into());
    }
    if !stream.write_ready().map_err(|e| format!("write_ready: {e}"))? {
        return Err("write_ready is false on a new connection".into());
    }
    // 2.
    writeln!(stream, "io-traits: hello from cpu {}", bravo::thread::current_cpu())
        .map_err(|e| format!("write_fmt: {e:?}"))?;
    stream.flush().map_err(|e| format!("flush: {e}"))?;
    // 3.
    let waited = bravo::time::Instant::now();
    while !stream.read_ready().map_err(|e| format!("read_ready: {e}"))? {
        if waited.elapsed() > Duration::from_secs(20) {
            return Err("the host's order never arrived (read_ready stayed false)".into());
        }
        bravo::thread::sleep(Duration::from_millis(5));
    }
    let mut scratch = [0u8; 4096];
    let (order, _) =
        postcard::from_eio::<Order, _>((&mut *stream, &mut scratch)).map_err(|e| format!("postcard::from_eio: {e}"))?;
    bravo::println!("io-traits: order {} with {} items read", order.id, order.items.len());
    postcard::to_eio(&receipt(order), &mut *stream).map_err(|e| format!("postcard::to_eio: {e}"))?;
    // 4. The host closes once it has the receipt.
    let mut rest = [0u8; 16];
    match stream.read(&mut rest) {
        Ok(0) => {}
        Ok(n) => return Err(format!("{n} bytes after the order")),
        Err(e) => return Err(format!("reading the host's close: {e}")),
    }
    if !stream.read_ready().map_err(|e| format!("read_ready after the close: {e}"))? {
        return Err("read_ready is false after the peer's FIN (a read would not sleep)".into());
    }
    Ok(())
}

/// Step 5.
fn refused(port: u16) -> Result<(), String> {
    match TcpStream::connect(SocketAddrV4::new(HOST, port), Duration::from_secs(20)) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(format!("a connection to a closed port failed with kind {:?} ({e})", e.kind())),
        Ok(_) => Err("a connection to a closed port succeeded".into()),
    }
}
