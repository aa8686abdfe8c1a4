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
