//! `bravo-linux-peer`: the benchmark server that runs inside the Linux guest
//! peer (see `tests/src/linux_peer.rs`), so that benchmarks can compare
//! Bravo with Linux on the same QEMU command line.
//!
//! ```text
//! bravo-linux-peer sink PORT     count UDP datagrams until `STOP`
//! bravo-linux-peer source PORT   on `GO size=S secs=D`, flood the sender
//! bravo-linux-peer echo PORT     send every UDP datagram back
//! bravo-linux-peer http PORT     epoll HTTP/1.1 server, a thread per cpu:
//!                                GET /health -> ok, GET /hash?kib=N
//! bravo-linux-peer udp PORT      sink on PORT, source on PORT+1, echo on
//!                                PORT+2, each on its own thread
//! ```
//!
//! Every mode prints `peer: ready mode=MODE port=PORT` once its socket is
//! bound. The UDP control protocol (shared by `sink` and `source`): a datagram
//! whose payload starts with `STOP` is answered with
//! `DONE packets=N bytes=B` (the counts since the previous `STOP`), and the
//! same line is printed on stdout.

mod http;
mod udp;

use std::io::Write;
use std::process::ExitCode;

/// Prints one line on stdout and flushes it (stdout is the serial console).
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn usage() -> ExitCode {
    eprintln!("usage: bravo-linux-peer sink|source|echo|http|udp PORT");
    ExitCode::from(2)
}

/// The three UDP services of `bench pps` at once (the layout of Bravo's
/// `bench-net` image).
fn udp_services(port: u16) -> std::io::Result<()> {
    let sink = std::thread::spawn(move || udp::sink(port));
    let source = std::thread::spawn(move || udp::source(port + 1));
    udp::echo(port + 2)?;
    for service in [sink, source] {
        service.join().map_err(|_| std::io::Error::other("a UDP service panicked"))??;
    }
    Ok(())
}

/// Prints how long after the kernel started this program runs (what
/// `bench boot` reads as the guest's own time from entry to `main`).
fn report_start() {
    let uptime = std::fs::read_to_string("/proc/uptime").ok();
    let secs = uptime.as_deref().and_then(|u| u.split_whitespace().next()).and_then(|s| s.parse::<f64>().ok());
    if let Some(secs) = secs {
        say(&format!("peer: entering main {:.3} ms after kernel entry", secs * 1000.0));
    }
}

fn main() -> ExitCode {
    report_start();
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        return usage();
    }
    let Ok(port) = args[2].parse::<u16>() else {
        return usage();
    };
    let mode = args[1].as_str();
    let result = match mode {
        "sink" => udp::sink(port),
        "source" => udp::source(port),
        "echo" => udp::echo(port),
        "http" => http::serve(port),
        "udp" if port < 65534 => udp_services(port),
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("peer: error mode={mode} port={port}: {e}"));
            ExitCode::FAILURE
        }
    }
}
