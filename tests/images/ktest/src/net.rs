//! Network scenarios the host checks from outside (`net-refused PORT`).

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

/// Binds TCP listeners until memory runs out: the error must be
/// `NoBufferSpace` (no panic), and after the listeners are dropped the
/// memory comes back and binding works again.
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
    let peer = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 2), 1);
    match TcpStream::connect(peer, Duration::from_secs(5)) {
        Err(NetError::NoBufferSpace) => {}
        other => return Err(alloc::format!("connect with memory exhausted: {:?}", other.map(|_| ()))),
    }
    drop(listeners);
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
