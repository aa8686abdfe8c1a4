//! A small HTTP/1.1 client for tests of the HTTP examples through QEMU's
//! port forwarding on 127.0.0.1, and the boot of such an example.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::{free_port, Machine, Running};

/// Boots example `name` as `configure` sets up the machine (cpus, memory,
/// arguments), with guest port 80 forwarded from a free host port; waits
/// until it answers `/health`. Returns the VM and the host port.
pub fn start_service(name: &str, configure: impl Fn(Machine) -> Machine) -> (Running, u16) {
    // A port free a moment ago may be taken by the time QEMU binds it
    // (then QEMU exits at once): try again with another.
    let mut attempts = 0;
    let (vm, port) = loop {
        let port = free_port();
        let mut vm = configure(Machine::new(name)).user_net(&[(port, 80)]).start();
        match vm.wait_for_line(&format!("{name}: serving on http://10.0.2.15:80"), Duration::from_secs(60)) {
            Ok(_) => break (vm, port),
            Err(e) if attempts < 2 && e.contains("QEMU ended") => attempts += 1,
            Err(e) => panic!("{e}"),
        }
    };
    // The first packets may be lost while the NIC starts: wait for /health.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = connect(port)
            .ok()
            .and_then(|mut c| request(&mut c, "GET", "/health", b"").ok())
            .is_some_and(|r| r.status == 200);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the service never answered /health");
        std::thread::sleep(Duration::from_millis(200));
    }
    (vm, port)
}

/// A connection to the forwarded port, with a 30 s read timeout.
pub fn connect(port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(stream)
}

/// A response: status, head as text, body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

/// Reads one response (head, then `Content-Length` bytes of body).
pub fn read_reply(stream: &mut TcpStream) -> std::io::Result<Reply> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a full response head"));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length =
        head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).and_then(|l| l.trim().parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(Reply { status, headers: head, body })
}

/// Sends one request with `body` and reads its response.
pub fn request(stream: &mut TcpStream, method: &str, path: &str, body: &[u8]) -> std::io::Result<Reply> {
    let mut raw =
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    raw.extend_from_slice(body);
    stream.write_all(&raw)?;
    read_reply(stream)
}

/// What `examples/http` answers to `GET /hash?kib=KIB`, computed on the
/// host: the lowercase hex SHA-256 of `kib` KiB whose byte `i` is
/// `(i * 7 + i / 251) as u8` (the generator the guest documents; written
/// here again so that the two are checked against each other).
pub fn hash_route_digest(kib: usize) -> String {
    use sha2::{Digest, Sha256};
    let input: Vec<u8> = (0..kib * 1024).map(|i| (i * 7 + i / 251) as u8).collect();
    Sha256::digest(&input).iter().map(|b| format!("{b:02x}")).collect()
}
