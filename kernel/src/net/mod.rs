//! Networking: a NIC (QEMU's e1000 through the `e1000` crate, or
//! virtio-net through the `virtio-net` crate) and smoltcp, run
//! by one thread on the network cpu (`netcpu=`, default the last cpu),
//! which also takes the NIC's interrupts (or polls it every millisecond
//! when idle, with `netpoll=on` or when no interrupt line is found).
//! Addresses come from DHCP, or from `ip=`/`gw=` on the command line.
//! ARP, IPv4, ICMP echo, UDP, TCP.
//!
//! Applications use [`TcpListener`], [`TcpStream`] and [`UdpSocket`] from
//! any cpu: each call is a request to the network thread, and the caller
//! sleeps until it is answered (data arrived, buffer space freed, timeout).
//!
//! With `net=raw` no stack starts and the application drives the NIC
//! itself through [`RawNic`].
//!
//! Submodules: `device` (the interface every NIC driver offers, and the
//! kernel's [`NicStats`]), `drivers` (each driver's hardware glue, finding
//! the NIC, interrupt routing),
//! `stack` (the network thread and requests), `lent` (requests that
//! borrow the caller's bytes instead of copying them), `ingress_guard` (frames
//! dropped before smoltcp: ARP request floods), `listener` (a TCP port's
//! bounded handshakes and accept queue), `sockets` (the socket sets a
//! frame's connection picks), `socket_memory` (TCP buffers,
//! committed as used), `tcp`, `udp`, `raw`, `counters`
//! (the stack's statistics), `watchdog`.

mod counters;
mod device;
mod drivers;
mod error;
mod ingress_guard;
mod lent;
mod listener;
mod raw;
mod socket_memory;
mod sockets;
mod stack;
mod tcp;
mod udp;
mod watchdog;

use core::net::{Ipv4Addr, SocketAddrV4};
use core::task::Poll;
use core::time::Duration;

use device::NetDevice;

pub use counters::NetStats;
pub use error::NetError;
pub use device::NicStats;
pub use raw::RawNic;
pub use tcp::{TcpListener, TcpStream};
pub use udp::{Datagrams, UdpSocket};
/// The I/O traits [`TcpStream`] implements (`Read`, `Write`, `ReadReady`,
/// `WriteReady`), for services without a dependency of their own on them.
pub use embedded_io;

/// Finds the NIC and starts the network thread on the network cpu (from
/// the main thread, before the application's `main`). Logs and returns
/// quietly when there is no NIC or it cannot start.
pub(crate) fn start(options: crate::cmdline::KernelOptions) {
    let Some(found) = drivers::find(&options) else { return };
    if options.net_raw {
        log::info!("net: {} left to the application (net=raw)", found.name());
        raw::keep(found);
        return;
    }
    let cpus = crate::sched::cpu_count();
    let cpu = match options.net_cpu {
        Some(cpu) if cpu < cpus => cpu,
        Some(cpu) => {
            log::warn!("net: netcpu={cpu} but there are {cpus} cpus; using cpu {}", cpus - 1);
            cpus - 1
        }
        None => cpus - 1,
    };
    let (ready_send, ready) = crate::sync::channel::channel::<bool>();
    let started = crate::sched::spawn_on(cpu, move || {
        // DMA memory comes from this (the network) cpu's node, and the
        // interrupt comes here.
        let (nic, interrupt) = match found.start(options.net_poll, stack::nic_interrupt) {
            Ok(started) => started,
            Err(e) => {
                log::warn!("net: {e}; networking is off");
                let _ = ready_send.send(false);
                return;
            }
        };
        log::info!(
            "net: {} {} on cpu {cpu}, link {}, {interrupt}",
            nic.name(),
            device::Mac(nic.mac()),
            if nic.link_up() { "up" } else { "down" },
        );
        let stack = stack::Stack::new(nic, interrupt, &options);
        let _ = ready_send.send(true);
        stack::run(stack)
    });
    if let Err(e) = started {
        log::warn!("net: cannot start the network thread on cpu {cpu}: {e}");
        return;
    }
    if ready.recv_timeout(Duration::from_secs(10)) != Ok(true) {
        log::warn!("net: the network did not start");
        return;
    }
    watchdog::start(cpu);
}

/// The interface's address, waiting up to `timeout` for DHCP.
pub fn wait_for_address(timeout: Duration) -> Result<(Ipv4Addr, u8), NetError> {
    if !stack::running() {
        return Err(NetError::NoNetwork);
    }
    let deadline = crate::time::Instant::now() + timeout;
    loop {
        let address = stack::call(None, |stack, _| Poll::Ready(Ok(stack.address.map(|c| (c.address(), c.prefix_len())))))?;
        if let Some(address) = address {
            return Ok(address);
        }
        if crate::time::Instant::now() >= deadline {
            return Err(NetError::TimedOut);
        }
        crate::sched::sleep(Duration::from_millis(20));
    }
}

/// The NIC's counters.
pub fn nic_stats() -> Result<NicStats, NetError> {
    stack::call(None, |stack, _| Poll::Ready(Ok(stack.nic.stats())))
}

/// The network stack's counters (sockets, refused and timed-out
/// connections, the network thread's rounds). Answered without a request
/// to the network thread, so it works even when that thread is stuck.
pub fn stats() -> NetStats {
    counters::read()
}

/// Whether the network is up (a NIC was found and its thread runs).
pub fn is_up() -> bool {
    stack::running()
}

/// A zeroed buffer of `len` bytes, or `NoBufferSpace` when memory is
/// exhausted (instead of the abort a plain `vec!` would end in).
fn buffer(len: usize) -> Result<alloc::vec::Vec<u8>, NetError> {
    let mut buffer = alloc::vec::Vec::new();
    buffer.try_reserve_exact(len).map_err(|_| NetError::NoBufferSpace)?;
    buffer.resize(len, 0);
    Ok(buffer)
}

/// Converts a smoltcp endpoint to a socket address (IPv4 only).
fn socket_addr(endpoint: smoltcp::wire::IpEndpoint) -> SocketAddrV4 {
    let smoltcp::wire::IpAddress::Ipv4(ip) = endpoint.addr;
    SocketAddrV4::new(ip, endpoint.port)
}
