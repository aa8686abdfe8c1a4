//! The standard I/O traits on a real connection: the `io-traits` image
//! drives its `TcpStream` only through `embedded-io`, with `postcard`
//! reading an order the host sends and writing the receipt straight into
//! the stream; the host checks every byte, and that a refused connection's
//! error kind is `ConnectionRefused` (see `tests/images/io-traits`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime};

use bravo_tests::{free_port, Machine};
use serde::{Deserialize, Serialize};

/// The image's `Order`: same fields, same order.
#[derive(Debug, Serialize)]
struct Order {
    id: u32,
    items: Vec<String>,
    quantities: Vec<u16>,
    note: Option<String>,
}

/// The image's `Receipt`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Receipt {
    id: u32,
    lines: Vec<(String, u16)>,
    total: u32,
    note_len: Option<u32>,
}

/// An order that differs from run to run (xorshift from the clock), with
/// long strings and non-ASCII text, so that the receipt cannot be canned.
fn random_order() -> Order {
    let mut state = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let count = 5 + (next() % 20) as usize;
    let items = (0..count).map(|i| format!("item-{}-{}", next() % 1000, "é".repeat(i))).collect();
    let quantities = (0..count).map(|_| (next() % 60_000) as u16).collect();
    let note = (next() % 4 != 0).then(|| "grüße ✓ ".repeat(1 + (next() % 50) as usize));
    Order { id: next() as u32, items, quantities, note }
}

fn expected_receipt(order: &Order) -> Receipt {
    let mut lines: Vec<(String, u16)> = order.items.iter().cloned().zip(order.quantities.iter().copied()).collect();
    lines.sort();
    let total = lines.iter().map(|(_, q)| u32::from(*q)).sum();
    Receipt { id: order.id, lines, total, note_len: order.note.as_ref().map(|n| n.chars().count() as u32) }
}

#[test]
fn postcard_reads_and_writes_a_tcp_stream_through_embedded_io() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let closed = free_port();
    let vm = Machine::new("io-traits")
        .user_net(&[])
        .cmdline(&format!("-- {port} {closed}"))
        .timeout(Duration::from_secs(120))
        .start();
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("the guest never connected: {e}\n{}", vm.serial()),
        }
    };
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("io-traits: hello from cpu "), "greeting: {greeting:?}");

    let order = random_order();
    (&stream).write_all(&postcard::to_stdvec(&order).unwrap()).unwrap();
    // The receipt is all the guest sends after its greeting; postcard's
    // encoding is self-delimiting, so read until it decodes.
    let mut bytes = Vec::new();
    let receipt: Receipt = loop {
        let mut chunk = [0u8; 4096];
        let n = reader.read(&mut chunk).unwrap_or_else(|e| panic!("reading the receipt: {e}\n{}", vm.serial()));
        assert!(n > 0, "the guest closed before a whole receipt ({} bytes)\n{}", bytes.len(), vm.serial());
        bytes.extend_from_slice(&chunk[..n]);
        match postcard::from_bytes(&bytes) {
            Ok(receipt) => break receipt,
            Err(postcard::Error::DeserializeUnexpectedEnd) => continue,
            Err(e) => panic!("the receipt does not decode: {e}"),
        }
    };
    assert_eq!(postcard::to_stdvec(&expected_receipt(&order)).unwrap().len(), bytes.len(), "bytes after the receipt");
    assert_eq!(receipt, expected_receipt(&order));
    drop(reader);
    drop(stream);

    let run = vm.wait();
    run.assert_success();
    run.assert_line(&format!("io-traits: order {} with {} items read", order.id, order.items.len()));
    run.assert_line("io-traits: every check passed");
}
