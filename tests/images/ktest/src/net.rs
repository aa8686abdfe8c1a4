//! Network scenarios the host checks from outside (`net-refused PORT`,
//! `net-exhaust`, `net-idle-read PORT`, `net-lent PORT`).

use alloc::string::String;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::time::Duration;

use bravo::net::{NetError, TcpStream};

/// Connects to the host's loopback `port` (through QEMU user networking,
/// where nothing listens) and prints the error the connection gets.
pub fn refused(port: Option<&str>) -> Result<(), String> {
    let port: u16 = port.and_then(|p| p.parse().ok()).ok_or("usage: net-refused PORT")?;
    bravo::net::wait_for_address(Duration::from_secs(30)).map_err(|e| alloc::format!("no address: {e}"))?;
    let peer = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 2), port);
    match TcpStream::connect(peer, Duration::from_secs(20)) {
        Err(NetError::Refused) => {
            bravo::println!("net-refused: connection refused, as expected");
            Ok(())
        }
        Err(e) => Err(alloc::format!("connect to a closed port failed with {e:?}, not Refused")),
        Ok(_) => Err("connect to a closed port succeeded".into()),
    }
}

/// Binds TCP listeners until the stack's sockets or memory run out: the
/// error must be `NoBufferSpace` (no panic), and after the listeners are
/// dropped the memory comes back and binding works again.
pub fn exhaust() -> Result<(), String> {
    use bravo::net::{TcpListener, UdpSocket};
    let mut listeners = alloc::vec::Vec::new();
    let error = loop {
        match TcpListener::bind(1000 + listeners.len() as u16) {
            Ok(listener) => listeners.push(listener),
            Err(e) => break e,
        }
        if listeners.len() > 10_000 {
            return Err("memory never ran out".into());
        }
    };
    if error != NetError::NoBufferSpace {
        return Err(alloc::format!("binding with memory exhausted failed with {error:?}, not NoBufferSpace"));
    }
    bravo::println!("net-exhaust: {} listeners bound before memory ran out", listeners.len());
    // A listener takes a socket in every socket set at once: fill what
    // room is left with single sockets.
    let mut udp = alloc::vec::Vec::new();
    while let Ok(socket) = UdpSocket::bind(20_000 + udp.len() as u16) {
        udp.push(socket);
        if udp.len() > 1_000 {
            return Err("UDP sockets never ran out".into());
        }
    }
    let peer = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 2), 1);
    match TcpStream::connect(peer, Duration::from_secs(5)) {
        Err(NetError::NoBufferSpace) => {}
        other => return Err(alloc::format!("connect with memory exhausted: {:?}", other.map(|_| ()))),
    }
    drop(listeners);
    drop(udp);
    // Aborted sockets are freed by the network thread's next rounds.
    let mut again = None;
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(999) {
            again = Some(listener);
            break;
        }
        bravo::thread::sleep(Duration::from_millis(20));
    }
    again.ok_or("binding failed after the listeners were dropped")?;
    UdpSocket::bind(999).map_err(|e| alloc::format!("UDP bind after the exhaustion: {e}"))?;
    bravo::println!("net-exhaust: memory came back");
    Ok(())
}

/// Starves the network cpu (the last one) with a thread that spins for
/// 2.5 s without yielding, while this thread waits for an answer from the
/// network thread: the watchdog must warn, the stack's counters must stay
/// readable meanwhile, and the answer must come once the spinner ends.
pub fn starved() -> Result<(), String> {
    use bravo::time::Instant;
    bravo::net::wait_for_address(Duration::from_secs(30)).map_err(|e| alloc::format!("no address: {e}"))?;
    let net_cpu = bravo::thread::cpu_count() - 1;
    if net_cpu == 0 {
        return Err("net-starved needs two cpus".into());
    }
    let spinner = bravo::thread::spawn_on(net_cpu, || {
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(2500) {
            core::hint::spin_loop();
        }
    })
    .map_err(|e| alloc::format!("spawn: {e}"))?;
    // Let the spinner take the cpu, then ask the network thread.
    bravo::thread::sleep(Duration::from_millis(100));
    let reader = bravo::thread::spawn(|| {
        bravo::thread::sleep(Duration::from_millis(1500));
        bravo::net::stats()
    });
    let asked = Instant::now();
    bravo::net::nic_stats().map_err(|e| alloc::format!("nic_stats: {e}"))?;
    let waited = asked.elapsed();
    let during = reader.join();
    spinner.join();
    // The round that answered ends after its answers; give it time to.
    bravo::thread::sleep(Duration::from_millis(50));
    let after = bravo::net::stats();
    bravo::println!(
        "net-starved: answered after {} ms; during the stall rounds={} last_round_ms={}, after rounds={}",
        waited.as_millis(),
        during.rounds,
        during.last_round_ms,
        after.rounds
    );
    if after.rounds <= during.rounds {
        return Err("the network thread completed no round after the stall".into());
    }
    Ok(())
}

/// Connects to the host's loopback `port`, where the host test listens,
/// and measures the stack a thread holds while blocked in
/// `TcpStream::read`; the host then sends a line, which the thread must
/// read.
pub fn idle_read(port: Option<&str>) -> Result<(), String> {
    use alloc::sync::Arc;
    use core::sync::atomic::{AtomicU64, Ordering};
    let port: u16 = port.and_then(|p| p.parse().ok()).ok_or("usage: net-idle-read PORT")?;
    bravo::net::wait_for_address(Duration::from_secs(30)).map_err(|e| alloc::format!("no address: {e}"))?;
    let peer = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 2), port);
    let mut stream = TcpStream::connect(peer, Duration::from_secs(20)).map_err(|e| alloc::format!("connect: {e:?}"))?;
    let stack = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let theirs = stack.clone();
    let reader = bravo::thread::spawn(move || {
        let (guard, top) = bravo::internals::sched::current_stack().expect("in a thread");
        theirs.0.store(guard, Ordering::Release);
        theirs.1.store(top, Ordering::Release);
        let mut buf = [0u8; 64];
        stream.read(&mut buf).map(|n| buf[..n].to_vec())
    });
    while stack.1.load(Ordering::Acquire) == 0 {
        bravo::thread::yield_now();
    }
    // Long enough for the reader to be parked in `read`.
    bravo::thread::sleep(Duration::from_millis(300));
    let committed = bravo::internals::memory::lazy::committed_between(
        stack.0.load(Ordering::Acquire),
        stack.1.load(Ordering::Acquire),
    );
    bravo::println!("measured: a thread blocked in TcpStream::read holds {} KiB of stack", committed / 1024);
    if committed == 0 || committed > 8 * 1024 {
        return Err(alloc::format!("a thread blocked in read holds {committed} bytes of stack"));
    }
    bravo::println!("net-idle-read: measured");
    let got = reader.join().map_err(|e| alloc::format!("read: {e:?}"))?;
    if got != b"bye\n" {
        return Err(alloc::format!("read {got:?}"));
    }
    bravo::println!("net-idle-read: the blocked read got its data");
    Ok(())
}

/// The byte at `at` of the test streams of `net-lent` (and of the host
/// test): not periodic at any power of two, so a chunk landing at the
/// wrong offset shows.
fn lent_byte(at: usize) -> u8 {
    (at % 251) as u8 ^ (at / 251) as u8
}

/// Bytes the host sends to `net-lent`.
const LENT_STREAM: usize = 300_000;
/// `net-lent` sends back [`LENT_BACK_TIMES`] times the first
/// [`LENT_BACK`] bytes of the pattern.
const LENT_BACK: usize = 1 << 20;
const LENT_BACK_TIMES: usize = 2;

/// Connects to the host's loopback `port`: a read that times out must
/// leave its buffer as it was; then reads [`LENT_STREAM`] bytes the host
/// sends in reads of 100,000 bytes (more than a socket buffer: each spans
/// several segments and the buffer's wrap), and sends megabytes back with
/// `write_all` and then `write_last` (more than its final request takes),
/// which ends the stream.
pub fn lent(port: Option<&str>) -> Result<(), String> {
    let port: u16 = port.and_then(|p| p.parse().ok()).ok_or("usage: net-lent PORT")?;
    bravo::net::wait_for_address(Duration::from_secs(30)).map_err(|e| alloc::format!("no address: {e}"))?;
    let peer = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 2), port);
    let mut stream = TcpStream::connect(peer, Duration::from_secs(20)).map_err(|e| alloc::format!("connect: {e:?}"))?;
    stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut untouched = [0xa5u8; 4096];
    match stream.read(&mut untouched) {
        Err(NetError::TimedOut) if untouched.iter().all(|&b| b == 0xa5) => {}
        Err(NetError::TimedOut) => return Err("a read that timed out changed its buffer".into()),
        other => return Err(alloc::format!("a read with nothing sent returned {other:?}, not TimedOut")),
    }
    bravo::println!("net-lent: a timed-out read left its buffer alone");
    stream.set_read_timeout(Some(Duration::from_secs(20)));
    stream.write_all(b"go").map_err(|e| alloc::format!("write: {e:?}"))?;
    let mut received = alloc::vec![0u8; LENT_STREAM];
    let mut filled = 0;
    while filled < LENT_STREAM {
        let end = (filled + 100_000).min(LENT_STREAM);
        match stream.read(&mut received[filled..end]) {
            Ok(0) => return Err(alloc::format!("the host closed after {filled} bytes")),
            Ok(n) => filled += n,
            Err(e) => return Err(alloc::format!("read after {filled} bytes: {e:?}")),
        }
    }
    if let Some(at) = (0..LENT_STREAM).find(|&at| received[at] != lent_byte(at)) {
        return Err(alloc::format!("byte {at} read as {}, sent as {}", received[at], lent_byte(at)));
    }
    bravo::println!("net-lent: {LENT_STREAM} bytes read intact");
    let back: alloc::vec::Vec<u8> = (0..LENT_BACK).map(lent_byte).collect();
    for _ in 1..LENT_BACK_TIMES {
        stream.write_all(&back).map_err(|e| alloc::format!("write_all: {e:?}"))?;
    }
    stream.write_last(&back).map_err(|e| alloc::format!("write_last: {e:?}"))?;
    // The VM ends when this returns: first let the host have it all.
    stream.flush().map_err(|e| alloc::format!("flush: {e:?}"))?;
    bravo::println!("net-lent: {} bytes written back", LENT_BACK * LENT_BACK_TIMES);
    Ok(())
}
