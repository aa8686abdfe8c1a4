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
