//! {{name}} in its VM: listens on port 80 (`port=N` after `--` to change),
//! serves each connection on a thread of its own, spread over every cpu,
//! with the routes of src/lib.rs. HTTP (keep-alive, limits, error statuses)
//! is Bravo's `microhttp`.

#![no_std]
#![no_main]

use core::time::Duration;

use bravo::net::{NetError, TcpListener, TcpStream};
use bravo::{println, thread};
use microhttp::{Limits, Transport, TransportError};

bravo::main!(main);

/// How long a connection may stay silent before it gets 408 and is closed.
const IDLE: Duration = Duration::from_secs(10);

fn main() -> Result<(), NetError> {
    let mut port = 80;
    for arg in bravo::env::args() {
        match arg.strip_prefix("port=").map(str::parse) {
            Some(Ok(p)) => port = p,
            _ => println!("{}: ignoring argument {arg:?} (expected port=N)", env!("CARGO_PKG_NAME")),
        }
    }
    let (address, _) = bravo::net::wait_for_address(Duration::from_secs(30))?;
    let listener = TcpListener::bind(port)?;
    println!("{}: serving on http://{address}:{port}", env!("CARGO_PKG_NAME"));
    let mut next_cpu = 0;
    loop {
        let Ok((stream, _peer)) = listener.accept() else { continue };
        next_cpu = (next_cpu + 1) % thread::cpu_count();
        if let Err(e) = thread::spawn_on(next_cpu, move || serve(stream)) {
            println!("{}: no thread for a connection: {e}", env!("CARGO_PKG_NAME"));
        }
    }
}

fn serve(mut stream: TcpStream) {
    stream.set_read_timeout(Some(IDLE));
    microhttp::serve(&mut Connection(stream), &Limits::default(), {{crate}}::route);
}

/// A TCP connection as microhttp's transport.
struct Connection(TcpStream);

impl Transport for Connection {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        self.0.read(buf).map_err(|e| match e {
            NetError::TimedOut => TransportError::TimedOut,
            _ => TransportError::Closed,
        })
    }

    fn write_all(&mut self, data: &[u8]) -> Result<(), TransportError> {
        self.0.write_all(data).map_err(|_| TransportError::Closed)
    }

    fn write_last(&mut self, data: &[u8]) -> Result<(), TransportError> {
        self.0.write_last(data).map_err(|_| TransportError::Closed)
    }
}
