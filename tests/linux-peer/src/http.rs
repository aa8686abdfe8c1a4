//! The `http` mode: a small level-triggered epoll HTTP/1.1 server, one
//! thread per cpu, each with its own listening socket on the port
//! (`SO_REUSEPORT`: the kernel spreads new connections over them), so that
//! the server uses every cpu as Bravo's `examples/http` does. `GET /health`
//! answers `ok`; `GET /stats` answers the guest's
//! memory as `{"memory":[{"node":0,"total_bytes":T,"free_bytes":F}]}` (the
//! keys of Bravo's `examples/http`, from `/proc/meminfo`); `GET
//! /hash?kib=N` answers what Bravo's does, with the same code (the
//! `hash-work` crate: the hex SHA-256 of N KiB, 1 to 1024, default 64,
//! whose byte `i` is `(i * 7 + i / 251) as u8`; a 400 for another N);
//! every other path
//! is a 404. It holds tens of thousands of connections: the descriptor
//! limit is raised at start and the backlog is 8192 (the init script raises
//! `somaxconn` to match).
//!
//! Connections are kept alive by default for HTTP/1.1 and closed after the
//! response for `Connection: close` or HTTP/1.0 without `keep-alive`.
//! Pipelined requests are answered in order. A request head that does not end
//! within 8 KiB gets a 400 and the connection is closed. Request bodies
//! (`Content-Length`) are skipped; chunked bodies are refused with a 400.

use crate::say;
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Longest request head (request line + headers + blank line).
pub const MAX_HEAD: usize = 8192;
/// Longest request body we are willing to skip.
pub const MAX_BODY: usize = 1 << 20;
/// Listen backlog (capped by `net.core.somaxconn`, which the guest's init
/// script raises to the same value).
const BACKLOG: libc::c_int = 8192;
/// Open descriptors the server asks for: connections plus a few.
const MAX_FILES: libc::rlim_t = 65536;
/// Epoll token of the listening socket.
const LISTENER: u64 = u64::MAX;
/// Bytes read from one connection per readiness event (fairness).
const READ_BUDGET: usize = 64 * 1024;

/// What is at the front of a connection's input buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole request yet.
    Partial,
    /// Malformed, or a head longer than [`MAX_HEAD`]: answer 400 and close.
    Bad,
    /// One whole request (head and body).
    Request(Request),
}

/// The parts of a request that decide the response.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// Bytes of the buffer this request takes, body included.
    pub consumed: usize,
    /// `GET` or `HEAD` of `/health`.
    pub health: bool,
    /// `GET` or `HEAD` of `/stats`.
    pub stats: bool,
    /// `GET` or `HEAD` of `/hash`: the KiB asked for, or why the query is
    /// refused.
    pub hash: Option<Result<usize, String>>,
    /// `HEAD`: the response has no body.
    pub head_only: bool,
    /// The connection stays open after the response.
    pub keep_alive: bool,
    /// HTTP/1.0 (keep-alive then needs to be said in the response).
    pub http10: bool,
}

/// Frames the first request in `buf`.
pub fn parse_request(buf: &[u8]) -> Parsed {
    let Some(head_len) = find_head_end(buf) else {
        return if buf.len() >= MAX_HEAD { Parsed::Bad } else { Parsed::Partial };
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_len]) else {
        return Parsed::Bad;
    };
    let mut lines = head.split("\r\n");
    let Some((method, target, version)) = lines.next().and_then(parse_request_line) else {
        return Parsed::Bad;
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Parsed::Bad,
    };
    let mut keep_alive = !http10;
    let mut body_len = 0usize;
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Bad;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) if n <= MAX_BODY => body_len = n,
                _ => return Parsed::Bad,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad;
        }
    }
    let consumed = head_len + body_len;
    if buf.len() < consumed {
        return Parsed::Partial;
    }
    let path = target.split('?').next().unwrap_or(target);
    let head_only = method == "HEAD";
    let get = method == "GET" || head_only;
    let (health, stats) = (get && path == "/health", get && path == "/stats");
    let hash = (get && path == "/hash").then(|| hash_work::kib_of(target.split_once('?').map(|(_, query)| query)));
    Parsed::Request(Request { consumed, health, stats, hash, head_only, keep_alive, http10 })
}

/// The length of the head (through `\r\n\r\n`), if it is within [`MAX_HEAD`].
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    window.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// `METHOD SP TARGET SP VERSION`.
fn parse_request_line(line: &str) -> Option<(&str, &str, &str)> {
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || method.is_empty() || !target.starts_with('/') {
        return None;
    }
    Some((method, target, version))
}

/// Appends the response to `request` to `out`.
pub fn respond(request: &Request, out: &mut Vec<u8>) {
    let stats;
    let (status, content_type, body): (&str, &str, &[u8]) = if request.health {
        ("200 OK", "text/plain", b"ok")
    } else if let Some(hash) = &request.hash {
        stats = match hash {
            Ok(kib) => hash_work::digest_hex(*kib),
            Err(why) => why.clone(),
        };
        (if hash.is_ok() { "200 OK" } else { "400 Bad Request" }, "text/plain", stats.as_bytes())
    } else if request.stats {
        stats = memory_json(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
        ("200 OK", "application/json", stats.as_bytes())
    } else {
        ("404 Not Found", "text/plain", b"not found\n")
    };
    let connection = match (request.keep_alive, request.http10) {
        (false, _) => "Connection: close\r\n",
        (true, true) => "Connection: keep-alive\r\n",
        (true, false) => "",
    };
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{connection}\r\n",
        body.len()
    );
    if !request.head_only {
        out.extend_from_slice(body);
    }
}

/// `/stats`: MemTotal and MemFree of `/proc/meminfo` (in kB there) as
/// Bravo's `memory` array, so that one parser reads both guests.
pub fn memory_json(meminfo: &str) -> String {
    let kib = |key: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    format!(
        "{{\"memory\":[{{\"node\":0,\"total_bytes\":{},\"free_bytes\":{}}}]}}\n",
        kib("MemTotal") * 1024,
        kib("MemFree") * 1024
    )
}

/// Raises the soft and hard limits on open descriptors to [`MAX_FILES`]
/// (the guest runs the server as root; the default soft limit is 1024).
fn raise_descriptor_limit() -> io::Result<()> {
    let limit = libc::rlimit { rlim_cur: MAX_FILES, rlim_max: MAX_FILES };
    // SAFETY: plain syscall reading a valid rlimit; the result is checked.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }).map(drop)
}

/// Appends a 400 (the connection then closes).
fn respond_bad(out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nbad request\n",
    );
}

/// One client connection.
struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    /// Close once `output` is flushed.
    closing: bool,
    /// The interest registered with epoll (`EPOLLIN` or `EPOLLOUT`).
    interest: u32,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Conn { stream, input: Vec::new(), output: Vec::new(), written: 0, closing: false, interest: EPOLLIN }
    }

    /// Reads what is there and answers every whole request. `false`: the
    /// connection is broken.
    fn read_and_answer(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let mut budget = READ_BUDGET;
        while budget > 0 && !self.closing {
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closing = true,
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.answer();
        true
    }

    /// Answers every whole request in `input`.
    fn answer(&mut self) {
        let mut start = 0;
        loop {
            match parse_request(&self.input[start..]) {
                Parsed::Partial => break,
                Parsed::Bad => {
                    respond_bad(&mut self.output);
                    self.closing = true;
                    start = self.input.len();
                    break;
                }
                Parsed::Request(request) => {
                    respond(&request, &mut self.output);
                    start += request.consumed;
                    if !request.keep_alive {
                        self.closing = true;
                        start = self.input.len();
                        break;
                    }
                }
            }
        }
        self.input.drain(..start);
    }

    /// Writes pending output. `false`: the connection is broken.
    fn flush(&mut self) -> bool {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return false,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.output.clear();
        self.written = 0;
        true
    }

    fn has_output(&self) -> bool {
        self.written < self.output.len()
    }
}

const EPOLLIN: u32 = libc::EPOLLIN as u32;
const EPOLLOUT: u32 = libc::EPOLLOUT as u32;

/// A thin epoll handle.
struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Epoll { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: valid epoll fd and a pointer to a live epoll_event.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) }).map(|_| ())
    }

    fn wait(&self, events: &mut [libc::epoll_event]) -> io::Result<usize> {
        loop {
            // SAFETY: `events` is a writable buffer of `events.len()` entries.
            let n =
                unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), events.len() as libc::c_int, -1) };
            match cvt(n) {
                Ok(n) => return Ok(n as usize),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A non-blocking listener on 0.0.0.0:`port` with SO_REUSEADDR,
/// SO_REUSEPORT (one per thread on the same port) and a backlog of [`BACKLOG`] (std's `TcpListener::bind` picks its own backlog).
fn listen(port: u16) -> io::Result<TcpListener> {
    // SAFETY: plain syscall; the result is checked.
    let fd =
        cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a fresh socket that nothing else owns.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: valid socket fd and a c_int option value of the right size.
        cvt(unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
    }
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_port = port.to_be();
    addr.sin_addr = libc::in_addr { s_addr: libc::INADDR_ANY };
    // SAFETY: `addr` is a valid sockaddr_in of the given length.
    cvt(unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })?;
    // SAFETY: valid, bound socket fd.
    cvt(unsafe { libc::listen(fd, BACKLOG) })?;
    Ok(listener)
}

/// `http PORT`: serves forever, one thread per cpu.
pub fn serve(port: u16) -> io::Result<()> {
    if let Err(e) = raise_descriptor_limit() {
        say(&format!("peer: cannot raise the descriptor limit to {MAX_FILES}: {e}"));
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Every listener is bound before the first is announced ready.
    let listeners = (0..threads).map(|_| listen(port)).collect::<io::Result<Vec<_>>>()?;
    say(&format!("peer: ready mode=http port={port} threads={threads}"));
    let servers: Vec<_> =
        listeners.into_iter().map(|listener| std::thread::spawn(move || serve_on(listener))).collect();
    for server in servers {
        server.join().map_err(|_| io::Error::other("an HTTP thread panicked"))??;
    }
    Ok(())
}

/// One thread's server: its listener and the connections it accepted.
fn serve_on(listener: TcpListener) -> io::Result<()> {
    let epoll = Epoll::new()?;
    epoll.ctl(libc::EPOLL_CTL_ADD, listener.as_raw_fd(), EPOLLIN, LISTENER)?;
    let mut conns: HashMap<RawFd, Conn> = HashMap::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    loop {
        let n = epoll.wait(&mut events)?;
        for event in &events[..n] {
            let (token, flags) = (event.u64, event.events);
            if token == LISTENER {
                accept_all(&listener, &epoll, &mut conns);
            } else {
                service(token as RawFd, flags, &epoll, &mut conns);
            }
        }
    }
}

/// Accepts every pending connection.
fn accept_all(listener: &TcpListener, epoll: &Epoll, conns: &mut HashMap<RawFd, Conn>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let fd = stream.as_raw_fd();
                if epoll.ctl(libc::EPOLL_CTL_ADD, fd, EPOLLIN, fd as u64).is_ok() {
                    conns.insert(fd, Conn::new(stream));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // WouldBlock, or out of descriptors/memory: try at the next event.
            Err(_) => return,
        }
    }
}

/// Handles readiness of one connection: read and answer, write, close.
fn service(fd: RawFd, flags: u32, epoll: &Epoll, conns: &mut HashMap<RawFd, Conn>) {
    let Some(conn) = conns.get_mut(&fd) else { return };
    let mut alive = true;
    if conn.interest == EPOLLIN && flags & (EPOLLIN | libc::EPOLLHUP as u32 | libc::EPOLLERR as u32) != 0 {
        alive = conn.read_and_answer();
    }
    if alive && conn.has_output() {
        alive = conn.flush();
    }
    if !alive || (conn.closing && !conn.has_output()) {
        let _ = epoll.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
        conns.remove(&fd);
        return;
    }
    // While output is pending, stop reading: that is the back-pressure.
    let want = if conn.has_output() { EPOLLOUT } else { EPOLLIN };
    if want != conn.interest {
        conn.interest = want;
        if epoll.ctl(libc::EPOLL_CTL_MOD, fd, want, fd as u64).is_err() {
            conns.remove(&fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(buf: &[u8]) -> Request {
        match parse_request(buf) {
            Parsed::Request(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn complete_request_keeps_alive_by_default() {
        let r = request(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            r,
            Request {
                consumed: 33,
                health: true,
                stats: false,
                hash: None,
                head_only: false,
                keep_alive: true,
                http10: false
            }
        );
    }

    #[test]
    fn partial_request_waits() {
        assert_eq!(parse_request(b""), Parsed::Partial);
        assert_eq!(parse_request(b"GET /health HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial);
        assert_eq!(parse_request(b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"), Parsed::Partial);
    }

    #[test]
    fn pipelined_requests_frame_one_at_a_time() {
        let buf = b"GET /health HTTP/1.1\r\n\r\nPOST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyzGET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
        let first = request(buf);
        assert!(first.health && first.keep_alive);
        let rest = &buf[first.consumed..];
        let second = request(rest);
        assert!(!second.health && second.keep_alive);
        assert_eq!(second.consumed, "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz".len());
        let third = request(&rest[second.consumed..]);
        assert!(!third.health && !third.keep_alive);
        assert_eq!(second.consumed + third.consumed, rest.len());
    }

    #[test]
    fn connection_semantics() {
        assert!(!request(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(request(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!request(b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n").keep_alive);
        assert!(request(b"GET /health?x=1 HTTP/1.1\r\n\r\n").health);
        assert!(!request(b"POST /health HTTP/1.1\r\n\r\n").health);
    }

    #[test]
    fn bad_requests() {
        assert_eq!(parse_request(&vec![b'a'; MAX_HEAD]), Parsed::Bad);
        assert_eq!(parse_request(b"GARBAGE\r\n\r\n"), Parsed::Bad);
        assert_eq!(parse_request(b"GET / HTTP/2\r\n\r\n"), Parsed::Bad);
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), Parsed::Bad);
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), Parsed::Bad);
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        respond(&request(b"GET /health HTTP/1.1\r\n\r\n"), &mut out);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok");
        out.clear();
        respond(&request(b"GET /nope HTTP/1.0\r\n\r\n"), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n") && text.contains("Connection: close\r\n"));
    }

    #[test]
    fn hash_answers_the_digest_of_the_generated_input() {
        assert_eq!(request(b"GET /hash?kib=3 HTTP/1.1\r\n\r\n").hash, Some(Ok(3)));
        assert_eq!(request(b"GET /hash HTTP/1.1\r\n\r\n").hash, Some(Ok(64)));
        assert!(request(b"GET /hash?kib=1025 HTTP/1.1\r\n\r\n").hash.unwrap().unwrap_err().contains("1 to 1024"));
        assert!(request(b"GET /hash?n=1 HTTP/1.1\r\n\r\n").hash.unwrap().is_err());
        let mut out = Vec::new();
        respond(&request(b"GET /hash?kib=0 HTTP/1.1\r\n\r\n"), &mut out);
        assert!(String::from_utf8(out).unwrap().starts_with("HTTP/1.1 400 Bad Request\r\n"));
    }

    #[test]
    fn stats_reports_meminfo_in_bytes() {
        assert!(request(b"GET /stats HTTP/1.1\r\n\r\n").stats);
        let meminfo = "MemTotal:         254000 kB\nMemFree:          200000 kB\nMemAvailable:     210000 kB\n";
        assert_eq!(
            memory_json(meminfo),
            "{\"memory\":[{\"node\":0,\"total_bytes\":260096000,\"free_bytes\":204800000}]}\n"
        );
    }
}
