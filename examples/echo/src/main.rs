//! TCP and UDP echo on port 7 (or the port given as the first argument).
//!
//! Each TCP connection gets its own thread, created with `spawn_on` on the
//! cpu whose network stack holds the connection (the target cpu allocates
//! it from its own memory); UDP
//! datagrams are echoed by one thread, on the cpu that holds the socket. Run it with
//! `just run-example echo` and talk to it through the forwarded port.

#![no_std]
#![no_main]

extern crate alloc;

use core::time::Duration;

use bravo::net::{NetError, TcpListener, TcpStream, UdpSocket};
use bravo::{println, thread};

bravo::main!(main);

fn main() -> Result<(), NetError> {
    let port = bravo::env::args().next().and_then(|p| p.parse().ok()).unwrap_or(7);
    let (address, prefix) = bravo::net::wait_for_address(Duration::from_secs(30))?;
    let listener = TcpListener::bind(port)?;
    let udp = UdpSocket::bind(port)?;
    let cpu = udp.cpu();
    if let Err(e) = thread::spawn_on(cpu, move || udp_echo(udp)) {
        println!("echo: no thread for UDP: {e}");
    }
    println!("echo: listening on {address}/{prefix} port {port} (tcp and udp)");
    loop {
        let (stream, _peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                println!("echo: accept failed: {e}");
                continue;
            }
        };
        if let Err(e) = thread::spawn_on(stream.cpu(), move || tcp_echo(stream)) {
            println!("echo: no thread for a connection: {e}");
        }
    }
}

/// Sends back everything until the peer closes.
fn tcp_echo(mut stream: TcpStream) {
    stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
}

fn udp_echo(socket: UdpSocket) {
    let mut buf = [0u8; 2048];
    loop {
        if let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], peer);
        }
    }
}
