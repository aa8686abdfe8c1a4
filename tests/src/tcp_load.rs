//! Many TCP connections to a guest on a tap inside a network namespace
//! ([`netns`](crate::netns)): what `bench conns`, `bench soak` and
//! `tests/conns.rs` drive. Sockets are made by threads that entered the
//! namespace ([`in_netns`]); a socket stays in the namespace it was made in,
//! so any thread may use it afterwards.
//!
//! Also here: a small HTTP/1.1 client (one request in flight per
//! connection), the service's `/stats` as numbers ([`GuestStats`]), and
//! floods of spoofed TCP segments written as raw Ethernet frames onto the
//! namespace's end of the tap ([`Flood`]), from sources the guest believes
//! on its link. Needs root (namespaces, `setns`, packet sockets).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use smoltcp::wire::{EthernetAddress, Ipv4Address, TcpControl, TcpRepr, TcpSeqNumber};

use crate::attack::Rng;

/// The guest's address and prefix on the tap: a /16, so that spoofed
/// sources in 10.0.1.0–10.0.254.255 are on its link (it answers them
/// after an ARP request nobody answers, as for a host that went away).
pub const GUEST_CIDR: &str = "10.0.0.2/16";
/// The guest's HTTP service.
pub const GUEST: SocketAddrV4 = SocketAddrV4::new(std::net::Ipv4Addr::new(10, 0, 0, 2), 80);
/// QEMU's default MAC for the first NIC (Bravo and the Linux peer alike).
pub const GUEST_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

/// Whether this process runs as root (namespaces and packet sockets need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Raises the soft limit on open descriptors to the hard limit; returns
/// the soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads a valid rlimit; the result is checked.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    limit.rlim_cur
}

/// Moves the calling thread into network namespace `name` (made with
/// `ip netns add`): sockets it creates from now on live there.
fn enter_netns(name: &str) -> Result<(), String> {
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).map_err(|e| format!("opening {path}: {e}"))?;
    // SAFETY: a valid namespace descriptor; setns only changes this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns into {name}: {} (needs root)", io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `f` on a thread inside network namespace `netns` and returns its
/// result.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_netns(netns)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err("a client thread panicked".into()))
    })
}

/// Runs `f(i)` for `i` in `0..threads`, each on its own thread inside
/// `netns`; returns their results in order.
pub fn on_threads_in_netns<T: Send>(
    netns: &str,
    threads: usize,
    f: impl Fn(usize) -> T + Sync,
) -> Result<Vec<T>, String> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let f = &f;
                scope.spawn(move || {
                    enter_netns(netns)?;
                    Ok(f(i))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a client thread panicked".into()))).collect()
    })
}

// ---------------------------------------------------------------------------
// HTTP

/// An HTTP response: status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `GET path` on a kept-alive connection.
pub fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: guest\r\n\r\n").into_bytes()
}

/// `GET /health` that asks the server to close after its answer.
pub const HEALTH_CLOSE: &[u8] = b"GET /health HTTP/1.1\r\nHost: guest\r\nConnection: close\r\n\r\n";

/// Reads one response (head, then `Content-Length` bytes of body).
pub fn read_reply(stream: &mut TcpStream) -> io::Result<Reply> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 2048];
    let (head_len, total) = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(ErrorKind::UnexpectedEof, "closed before a whole response"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..at]);
            let length = head
                .lines()
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (at + 4, at + 4 + length);
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::new(ErrorKind::InvalidData, "response head longer than 64 KiB"));
        }
    };
    while buf.len() < total {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(ErrorKind::UnexpectedEof, "closed inside a response body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = buf.get(9..12).and_then(|s| std::str::from_utf8(s).ok()?.parse().ok()).unwrap_or(0);
    Ok(Reply { status, body: buf[head_len..total].to_vec() })
}

/// Sends `request` and reads its response.
pub fn exchange(stream: &mut TcpStream, request: &[u8]) -> io::Result<Reply> {
    stream.write_all(request)?;
    read_reply(stream)
}

/// `GET /health` on `stream`, answered `200 ok`.
pub fn health(stream: &mut TcpStream) -> io::Result<()> {
    expect_ok(exchange(stream, &get_request("/health"))?)
}

fn expect_ok(reply: Reply) -> io::Result<()> {
    if reply.status == 200 && reply.body == b"ok" {
        Ok(())
    } else {
        Err(io::Error::other(format!("answer {} {:?}", reply.status, String::from_utf8_lossy(&reply.body))))
    }
}

/// A kept-alive connection to `addr` with read and write timeouts (the
/// caller's thread must be inside the namespace).
pub fn connect(addr: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// One connection with one request: connect, `GET /health` with
/// `Connection: close`, read the answer, close.
pub fn one_shot(addr: SocketAddrV4, timeout: Duration) -> io::Result<()> {
    let mut stream = connect(addr, timeout)?;
    expect_ok(exchange(&mut stream, HEALTH_CLOSE)?)
}

/// Waits until a new connection to `addr` is served, for at most
/// `timeout`; returns how long that took.
pub fn wait_until_served(netns: &str, addr: SocketAddrV4, timeout: Duration) -> Result<Duration, String> {
    in_netns(netns, || {
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match one_shot(addr, left.clamp(Duration::from_millis(1), Duration::from_millis(500))) {
                Ok(()) => return Ok(start.elapsed()),
                Err(e) if start.elapsed() >= timeout => {
                    return Err(format!("{addr} not served within {timeout:?}: {e}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    })?
}

/// What a churn of connections did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Churn {
    /// Connections that got their answer.
    pub served: usize,
    /// Connections refused, reset, timed out or wrongly answered.
    pub failed: usize,
    pub elapsed: Duration,
}

impl Churn {
    /// Served connections per second.
    pub fn rate(&self) -> f64 {
        self.served as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `threads` clients open connections of one request each ([`one_shot`],
/// 3 s each at most) until `total` were tried or `duration` has passed.
pub fn churn(
    netns: &str,
    addr: SocketAddrV4,
    threads: usize,
    total: usize,
    duration: Duration,
) -> Result<Churn, String> {
    let (served, failed, tried) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    let start = Instant::now();
    on_threads_in_netns(netns, threads, |_| {
        while start.elapsed() < duration && tried.fetch_add(1, Ordering::Relaxed) < total {
            // Every attempt gets the whole 3 s, even the last one (cut to
            // what was left of `duration`, it failed for want of time).
            match one_shot(addr, Duration::from_secs(3)) {
                Ok(()) => served.fetch_add(1, Ordering::Relaxed),
                Err(_) => {
                    // A refused client waits a moment before it tries again.
                    std::thread::sleep(Duration::from_millis(10));
                    failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    })?;
    Ok(Churn { served: served.into_inner(), failed: failed.into_inner(), elapsed: start.elapsed() })
}

// ---------------------------------------------------------------------------
// Many connections at once

/// Starts `count` connections to `addr` at once (non-blocking connects)
/// and waits up to `timeout` for them: the answer for each, in order. The
/// caller's thread must be inside the namespace.
pub fn connect_burst(addr: SocketAddrV4, count: usize, timeout: Duration) -> Vec<io::Result<TcpStream>> {
    let mut pending: Vec<(usize, OwnedFd)> = Vec::new();
    let mut results: Vec<Option<io::Result<TcpStream>>> = (0..count).map(|_| None).collect();
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut sockaddr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sockaddr.sin_family = libc::AF_INET as libc::sa_family_t;
    sockaddr.sin_port = addr.port().to_be();
    sockaddr.sin_addr = libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() };
    for (i, result) in results.iter_mut().enumerate() {
        // SAFETY: plain syscall; the result is checked.
        let fd =
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            *result = Some(Err(io::Error::last_os_error()));
            continue;
        }
        // SAFETY: `fd` is a fresh socket that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `sockaddr` is a valid sockaddr_in of the given length.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&sockaddr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        let error = io::Error::last_os_error();
        if rc == 0 || error.raw_os_error() == Some(libc::EINPROGRESS) {
            pending.push((i, fd));
        } else {
            *result = Some(Err(error));
        }
    }
    let deadline = Instant::now() + timeout;
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut polls: Vec<libc::pollfd> = pending
            .iter()
            .map(|(_, fd)| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 })
            .collect();
        // SAFETY: `polls` is a valid array of `polls.len()` pollfds.
        let ready = unsafe {
            libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, left.as_millis().clamp(1, 1000) as libc::c_int)
        };
        if ready <= 0 {
            continue;
        }
        let mut still = Vec::with_capacity(pending.len());
        for ((i, fd), poll) in pending.into_iter().zip(&polls) {
            if poll.revents == 0 {
                still.push((i, fd));
                continue;
            }
            results[i] = Some(finish_connect(fd));
        }
        pending = still;
    }
    for (i, _) in pending {
        results[i] = Some(Err(io::Error::new(ErrorKind::TimedOut, "connect timed out")));
    }
    results.into_iter().map(|r| r.expect("every connection has an answer")).collect()
}

/// The outcome of a non-blocking connect that polled ready, as a blocking
/// stream.
fn finish_connect(fd: OwnedFd) -> io::Result<TcpStream> {
    let mut error: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket and a c_int-sized output buffer.
    if unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut error as *mut libc::c_int).cast(),
            &mut len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    if error != 0 {
        return Err(io::Error::from_raw_os_error(error));
    }
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Sends `GET path` on every stream, then reads every answer (requests in
/// flight on many connections at once, one per connection), giving up on
/// the rest at `deadline`. Returns whether each was answered `200`.
pub fn request_each(streams: &mut [TcpStream], path: &str, deadline: Instant) -> Vec<bool> {
    let request = get_request(path);
    let mut answered = vec![false; streams.len()];
    const WINDOW: usize = 256;
    for (chunk, answers) in streams.chunks_mut(WINDOW).zip(answered.chunks_mut(WINDOW)) {
        let sent: Vec<bool> = chunk
            .iter_mut()
            .map(|s| {
                let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                s.write_all(&request).is_ok()
            })
            .collect();
        for ((stream, sent), answer) in chunk.iter_mut().zip(sent).zip(answers.iter_mut()) {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            if !sent || stream.set_read_timeout(Some(left)).is_err() {
                continue;
            }
            *answer = read_reply(stream).is_ok_and(|r| r.status == 200);
        }
    }
    answered
}

/// Idle kept-alive connections, each served one request.
pub struct Idle {
    pub streams: Vec<TcpStream>,
    /// Connections refused, timed out or not answered on the way.
    pub failed: usize,
}

/// Opens up to `cap` kept-alive connections to `addr`, `burst` at a time,
/// each served one `GET /health`, and keeps them open. Stops early after
/// `patience` bursts in a row with nothing served, or at `deadline`.
pub fn open_idle(
    netns: &str,
    addr: SocketAddrV4,
    cap: usize,
    burst: usize,
    patience: usize,
    deadline: Instant,
) -> Result<Idle, String> {
    in_netns(netns, || {
        let mut idle = Idle { streams: Vec::with_capacity(cap), failed: 0 };
        let mut fruitless = 0;
        while idle.streams.len() < cap && fruitless < patience && Instant::now() < deadline {
            let want = burst.min(cap - idle.streams.len());
            let left = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(10));
            let mut opened: Vec<TcpStream> =
                connect_burst(addr, want, left).into_iter().filter_map(Result::ok).collect();
            let served = request_each(&mut opened, "/health", Instant::now() + left);
            let before = idle.streams.len();
            idle.streams.extend(opened.into_iter().zip(&served).filter(|(_, &ok)| ok).map(|(s, _)| s));
            let gained = idle.streams.len() - before;
            idle.failed += want - gained;
            fruitless = if gained == 0 { fruitless + 1 } else { 0 };
        }
        idle
    })
}

// ---------------------------------------------------------------------------
// /stats

/// The numbers of a service's `/stats` that connections move.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestStats {
    /// Free memory summed over the NUMA nodes.
    pub free_bytes: u64,
    /// The network stack's counts (`"net":{...}`), where reported.
    pub net: Option<NetStats>,
}

/// `"net":{"sockets":N,"tcp_refused":N,"half_open_evicted":N,"timed_out":N,"rounds":N,"last_round_ms":N}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sockets: u64,
    pub tcp_refused: u64,
    pub half_open_evicted: u64,
    pub timed_out: u64,
    pub rounds: u64,
    pub last_round_ms: u64,
}

/// The number after `"key":` in `json`, from `at` on.
fn number_after(json: &str, key: &str) -> Option<u64> {
    let pattern = format!("\"{key}\":");
    let at = json.find(&pattern)? + pattern.len();
    let digits: String = json[at..].trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Reads `/stats` JSON: every `"free_bytes"` summed, and the `"net"`
/// object when present.
pub fn parse_stats(json: &str) -> Result<GuestStats, String> {
    let mut free = Vec::new();
    let mut rest = json;
    while let Some(at) = rest.find("\"free_bytes\":") {
        free.push(number_after(&rest[at..], "free_bytes").ok_or_else(|| format!("unreadable free_bytes in {json}"))?);
        rest = &rest[at + 1..];
    }
    if free.is_empty() {
        return Err(format!("no free_bytes in /stats: {json}"));
    }
    let net = match json.find("\"net\":{") {
        Some(at) => {
            let object =
                &json[at..at + json[at..].find('}').ok_or_else(|| format!("unterminated net object: {json}"))?];
            let field = |key: &str| number_after(object, key).ok_or_else(|| format!("no net.{key} in /stats: {json}"));
            Some(NetStats {
                sockets: field("sockets")?,
                tcp_refused: field("tcp_refused")?,
                half_open_evicted: field("half_open_evicted")?,
                timed_out: field("timed_out")?,
                rounds: field("rounds")?,
                last_round_ms: field("last_round_ms")?,
            })
        }
        None => None,
    };
    Ok(GuestStats { free_bytes: free.iter().sum(), net })
}

/// `GET /stats` on a kept-alive connection.
pub fn stats(stream: &mut TcpStream) -> Result<GuestStats, String> {
    let reply = exchange(stream, &get_request("/stats")).map_err(|e| format!("GET /stats: {e}"))?;
    if reply.status != 200 {
        return Err(format!("GET /stats answered {}", reply.status));
    }
    parse_stats(&String::from_utf8_lossy(&reply.body))
}

// ---------------------------------------------------------------------------
// Floods

/// Which TCP segments a [`Flood`] sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloodKind {
    /// Connection requests that never complete (half-open connections).
    Syn,
    /// Resets for connections that do not exist.
    Rst,
}

/// Spoofed TCP segments to the guest at a steady rate from a thread in the
/// namespace, until [`Flood::stop`].
pub struct Flood {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<u64, String>>,
}

impl Flood {
    /// Starts `rate` segments per second of `kind` to `target` on the
    /// guest behind tap `tap` of `netns`, each from a random source
    /// address in 10.0.1.0–10.0.254.255, port and sequence number.
    pub fn start(netns: &str, tap: &str, kind: FloodKind, target: SocketAddrV4, rate: u32) -> Result<Flood, String> {
        let (netns, tap) = (netns.to_string(), tap.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || -> Result<u64, String> {
            let socket = enter_netns(&netns).and_then(|()| PacketSocket::bind(&tap));
            let socket = match socket {
                Ok(socket) => {
                    let _ = ready_tx.send(Ok(()));
                    socket
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            let mut random = Rng::seeded();
            let (start, mut sent) = (Instant::now(), 0u64);
            while !stopped.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
                while sent < due {
                    socket.send(&spoofed_segment(&mut random, kind, target))?;
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(sent)
        });
        ready_rx.recv().map_err(|_| "the flood thread ended at once".to_string())??;
        Ok(Flood { stop, thread })
    }

    /// Stops the flood; returns how many segments it sent.
    pub fn stop(self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| "the flood thread panicked".to_string())?
    }
}

/// An AF_PACKET socket bound to one interface: frames written to it leave
/// on that interface (for a tap, into the guest).
struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    fn bind(interface: &str) -> Result<PacketSocket, String> {
        let name = std::ffi::CString::new(interface).map_err(|_| format!("bad interface name {interface:?}"))?;
        // SAFETY: a valid NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(format!("no interface {interface}: {}", io::Error::last_os_error()));
        }
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(protocol)) };
        if fd < 0 {
            return Err(format!("packet socket: {} (needs root)", io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh socket that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = protocol;
        address.sll_ifindex = index as i32;
        // SAFETY: `address` is a valid sockaddr_ll of the given length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&address as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(format!("binding a packet socket to {interface}: {}", io::Error::last_os_error()));
        }
        Ok(PacketSocket { fd })
    }

    /// Writes one frame; a full queue (`ENOBUFS`) drops it, as a wire would.
    fn send(&self, frame: &[u8]) -> Result<(), String> {
        // SAFETY: `frame` is a valid buffer of `frame.len()` bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        let error = io::Error::last_os_error();
        match n {
            n if n >= 0 => Ok(()),
            _ if matches!(error.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR)) => Ok(()),
            _ => Err(format!("sending a frame: {error}")),
        }
    }
}

/// One spoofed segment of `kind` to `target`, as an Ethernet frame with
/// valid checksums: a random on-link source (10.0.1.0–10.0.254.255) with a
/// random locally administered MAC, port and sequence number.
pub fn spoofed_segment(random: &mut Rng, kind: FloodKind, target: SocketAddrV4) -> Vec<u8> {
    let r = random.next_u64();
    let source = Ipv4Address::new(10, 0, 1 + (r % 254) as u8, (r >> 8) as u8);
    let mac = EthernetAddress([0x02, (r >> 16) as u8, (r >> 24) as u8, (r >> 32) as u8, (r >> 40) as u8, 0x01]);
    let (control, max_seg_size) = match kind {
        FloodKind::Syn => (TcpControl::Syn, Some(1460)),
        FloodKind::Rst => (TcpControl::Rst, None),
    };
    let segment = TcpRepr {
        src_port: 1024 + (r >> 48) as u16 % 64000,
        dst_port: target.port(),
        control,
        seq_number: TcpSeqNumber(random.next_u64() as i32),
        ack_number: None,
        window_len: 64240,
        window_scale: None,
        max_seg_size,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    crate::traffic::tcp_frame(mac, GUEST_MAC, source, *target.ip(), &segment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{EthernetFrame, Ipv4Packet, TcpPacket};

    #[test]
    fn stats_are_read_with_and_without_the_net_object() {
        let old = r#"{"uptime_ms":5,"requests":3,"nic":{"rx_packets":1},"memory":[{"node":0,"total_bytes":9,"free_bytes":100},{"node":1,"total_bytes":9,"free_bytes":23}]}"#;
        assert_eq!(parse_stats(old), Ok(GuestStats { free_bytes: 123, net: None }));
        let new = r#"{"requests":3,"net":{"sockets":7,"tcp_refused":1,"half_open_evicted":2,"timed_out":3,"rounds":400,"last_round_ms":12},"memory":[{"node":0,"total_bytes":9,"free_bytes":5}]}"#;
        let net =
            NetStats { sockets: 7, tcp_refused: 1, half_open_evicted: 2, timed_out: 3, rounds: 400, last_round_ms: 12 };
        assert_eq!(parse_stats(new), Ok(GuestStats { free_bytes: 5, net: Some(net) }));
        assert!(parse_stats(r#"{"net":{"sockets":1},"memory":[{"free_bytes":5}]}"#)
            .unwrap_err()
            .contains("tcp_refused"));
        assert!(parse_stats("{}").is_err());
    }

    #[test]
    fn spoofed_segments_parse_with_valid_checksums() {
        let mut random = Rng::seeded();
        for kind in [FloodKind::Syn, FloodKind::Rst] {
            let bytes = spoofed_segment(&mut random, kind, GUEST);
            let frame = EthernetFrame::new_checked(&bytes[..]).unwrap();
            assert_eq!(frame.dst_addr(), GUEST_MAC);
            let packet = Ipv4Packet::new_checked(frame.payload()).unwrap();
            assert!(packet.verify_checksum());
            let source = packet.src_addr().octets();
            assert!(source[0] == 10 && source[1] == 0 && (1..=254).contains(&source[2]), "{source:?}");
            let tcp = TcpPacket::new_checked(packet.payload()).unwrap();
            assert!(tcp.verify_checksum(&packet.src_addr().into(), &packet.dst_addr().into()));
            assert_eq!((tcp.dst_port(), tcp.syn(), tcp.rst()), (80, kind == FloodKind::Syn, kind == FloodKind::Rst));
        }
    }
}
