//! Networking: what a service listens, connects and sends with.
//!
//! - [`TcpListener`] and [`TcpStream`]: TCP servers and clients, usable from
//!   any cpu; a stream is also an `embedded_io` stream ([`embedded_io`]).
//! - [`UdpSocket`] (and [`Datagrams`] for batches): UDP.
//! - [`wait_for_address`]: the first call of a service, until DHCP (or
//!   `ip=`) has given the interface its address.
//! - [`stats`], [`nic_stats`], [`queue_stats`], [`rss`]: counters for a
//!   service's metrics.
//! - [`RawNic`]: the NIC itself, for a service that brings its own stack
//!   (`net=raw`).
//!
//! Every call fails with a [`NetError`] rather than panicking.
//!
//! ```no_run
//! # #![no_std]
//! # #![no_main]
//! # bravo::main!(main);
//! # fn main() -> Result<(), bravo::net::NetError> {
//! use core::time::Duration;
//!
//! let (address, prefix) = bravo::net::wait_for_address(Duration::from_secs(30))?;
//! bravo::println!("up at {address}/{prefix}");
//! let listener = bravo::net::TcpListener::bind(80)?;
//! let (mut stream, peer) = listener.accept()?;
//! stream.write_last(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nhi\n")?;
//! bravo::println!("answered {peer}");
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! A NIC (QEMU's e1000 through the `e1000` crate, virtio-net
//! through `virtio-net`, igb through `igb`) and smoltcp. Each network cpu
//! runs one network stack, its own smoltcp interface and sockets over its
//! own queue pair of the NIC, and takes that queue's interrupts (or polls
//! it every millisecond when idle, with `netpoll=on` or when no interrupt
//! is found). A multi-queue NIC (igb) spreads TCP connections over the
//! queues by RSS, so a connection lives on one cpu from its SYN on; every
//! cpu is a network cpu by default (`netcpus=`), as many as the NIC has
//! queues. A single-queue NIC has one stack, on `netcpu=` (default the
//! last cpu). Addresses come from DHCP, or from `ip=`/`gw=`. ARP, IPv4,
//! ICMP echo, UDP, TCP.
//!
//! Applications use [`TcpListener`], [`TcpStream`] and [`UdpSocket`] from
//! any cpu: each call is a request to the stack that holds the socket,
//! and the caller sleeps until it is answered (data arrived, buffer space
//! freed, timeout). A listening port listens on every stack; an accepted
//! stream tells its cpu ([`TcpStream::cpu`]), where a thread serving it
//! makes no cross-cpu hop. An outgoing connection is made by the calling
//! cpu's stack, from a port whose replies the NIC steers back to it.
//!
//! With `net=raw` no stack starts and the application drives the NIC
//! itself through [`RawNic`].
//!
//! Submodules: `device` (the interface every NIC driver offers, and the
//! kernel's [`NicStats`]), `drivers` (each driver's hardware glue, finding
//! the NIC, interrupt routing),
//! `netcpus` (the stacks, one per network cpu, and what other cpus reach
//! of each), `stack` (one stack's thread, its rounds and its inbox of
//! requests), `requests` (a call from any thread to a stack, and its
//! reply), `lent`
//! (requests that borrow the caller's bytes instead of copying them),
//! `ingress_guard` (frames
//! dropped before smoltcp: ARP request floods), `listener` (a TCP port's
//! bounded handshakes and accept queue), `accept` (which stacks have
//! connections waiting for a port's acceptors), `sockets` (the socket
//! sets a frame's connection picks), `socket_memory` (TCP buffers,
//! committed as used), `tcp`, `udp`, `raw`, `counters`
//! (the stacks' statistics), `watchdog`.
//!
//! Imports within `net` point one way, from the bottom: the leaves
//! (`device`, `drivers`, `sockets`, `listener`, `socket_memory`,
//! `ingress_guard`) < `netcpus` (which cpus; each stack's `Control`: wake,
//! interrupt flag, running, forwarded neighbours) < `counters`, `accept`
//! < `stack` (the smoltcp interface and its loop, which runs requests from
//! its inbox) < `requests` (`call`, `call_on`), `lent` < `tcp`, `udp`,
//! `raw`, `watchdog` and this module.

mod accept;
mod counters;
mod device;
mod drivers;
mod error;
mod ingress_guard;
#[allow(unsafe_code)]
mod lent;
mod listener;
mod netcpus;
mod raw;
mod requests;
#[allow(unsafe_code)]
mod socket_memory;
mod sockets;
mod stack;
mod tcp;
mod udp;
mod watchdog;

use core::net::{Ipv4Addr, SocketAddrV4};
use core::task::Poll;
use core::time::Duration;

use alloc::vec::Vec;

use device::NetDevice;

pub use counters::NetStats;
pub use device::NicStats;
/// The I/O traits [`TcpStream`] implements (`Read`, `Write`, `ReadReady`,
/// `WriteReady`), for services without a dependency of their own on them.
pub use embedded_io;
pub use error::NetError;
pub use raw::RawNic;
pub use stack::BUFFER_SIZE;
pub use tcp::{TcpListener, TcpStream, DEFAULT_BACKLOG};
pub use udp::{Datagrams, UdpSocket};

/// Finds the NIC and starts a network stack on each network cpu (from
/// the main thread, before the application's `main`). Logs and returns
/// quietly when there is no NIC or it cannot start.
pub(crate) fn start(options: crate::cmdline::KernelOptions) {
    let Some(found) = drivers::find(&options) else { return };
    if options.net_raw {
        log::info!("net: {} left to the application (net=raw)", found.name());
        raw::keep(found);
        return;
    }
    let cpus = network_cpus(&options, found.name(), found.max_queues());
    // The device-wide setup (and each queue's interrupt routed to its
    // cpu), here; each queue's rings on its own cpu, below.
    let queues = match found.split(&cpus) {
        Ok(queues) => queues,
        Err(e) => {
            log::warn!("net: {e}; networking is off");
            return;
        }
    };
    netcpus::plan(&cpus);
    let (ready_send, ready) = crate::sync::channel::channel::<(usize, bool)>();
    let mut expected = 0;
    for (index, (queue, &cpu)) in queues.into_iter().zip(&cpus).enumerate() {
        let ready_send = ready_send.clone();
        let started = crate::thread::spawn_on(cpu, move || {
            // DMA memory comes from this (the network) cpu's node, and the
            // queue's interrupt comes here.
            let (nic, interrupt) = match queue.start(options.net_poll, netcpus::nic_interrupt) {
                Ok(started) => started,
                Err(e) => {
                    log::warn!("net: {e}; no network stack on cpu {cpu}");
                    let _ = ready_send.send((index, false));
                    return;
                }
            };
            log::info!(
                "net: {} {} queue {} on cpu {cpu}, link {}, {interrupt}",
                nic.name(),
                device::Mac(nic.mac()),
                nic.queue(),
                if nic.link_up() { "up" } else { "down" },
            );
            let stack = stack::Stack::new(nic, interrupt, &options, index);
            // Running before the ready reply: requests made as soon as the
            // main thread hears it wait in the inbox for `run`'s first
            // round instead of failing with `NoNetwork`.
            netcpus::set_running(index);
            let _ = ready_send.send((index, true));
            stack::run(stack)
        });
        match started {
            Ok(_) => expected += 1,
            Err(e) => log::warn!("net: cannot start the network thread on cpu {cpu}: {e}"),
        }
    }
    let mut home_up = false;
    for _ in 0..expected {
        match ready.recv_timeout(Duration::from_secs(10)) {
            Ok((index, up)) => home_up |= index == netcpus::HOME && up,
            Err(_) => break,
        }
    }
    if !home_up {
        log::warn!("net: the network did not start");
        return;
    }
    watchdog::start();
}

/// The cpus that run a network stack each: `netcpus=` (else `netcpu=`,
/// else every cpu) for a NIC of several queue pairs, as many as it has;
/// for a single-queue NIC, the first of those or the last cpu.
fn network_cpus(options: &crate::cmdline::KernelOptions, nic: &str, max_queues: usize) -> Vec<usize> {
    let count = crate::sched::cpu_count();
    let mut cpus: Vec<usize> = match (options.net_cpus, options.net_cpu) {
        (Some(list), _) => list.iter().collect(),
        (None, Some(cpu)) => alloc::vec![cpu],
        (None, None) if max_queues > 1 => (0..count).collect(),
        (None, None) => alloc::vec![count - 1],
    };
    if cpus.iter().any(|&cpu| cpu >= count) {
        log::warn!("net: network cpus {cpus:?} asked for, but there are {count} cpus; leaving out the others");
        cpus.retain(|&cpu| cpu < count);
    }
    if cpus.is_empty() {
        cpus.push(count - 1);
    }
    if cpus.len() > max_queues {
        log::warn!(
            "net: {nic} has {max_queues} queue pair{} with its own interrupt: network stacks on cpu{} {:?} only, not on {:?}",
            if max_queues == 1 { "" } else { "s" },
            if max_queues == 1 { "" } else { "s" },
            &cpus[..max_queues],
            &cpus[max_queues..]
        );
        cpus.truncate(max_queues);
    }
    cpus
}

/// The interface's address and prefix length (once every stack has it),
/// waiting up to `timeout` for DHCP. `NoNetwork` without a NIC,
/// `TimedOut` when no address came in time.
pub fn wait_for_address(timeout: Duration) -> Result<(Ipv4Addr, u8), NetError> {
    if !netcpus::running() {
        return Err(NetError::NoNetwork);
    }
    let deadline = crate::time::Instant::now() + timeout;
    loop {
        let mut address = None;
        let mut everywhere = true;
        for index in netcpus::all() {
            let here = requests::call(index, None, |stack, _| {
                Poll::Ready(Ok(stack.address.map(|c| (c.address(), c.prefix_len()))))
            })?;
            everywhere &= here.is_some();
            address = address.or(here);
        }
        if let (Some(address), true) = (address, everywhere) {
            return Ok(address);
        }
        if crate::time::Instant::now() >= deadline {
            return Err(NetError::TimedOut);
        }
        crate::sched::sleep(Duration::from_millis(20));
    }
}

/// The NIC's counters: every queue's together.
pub fn nic_stats() -> Result<NicStats, NetError> {
    let queues = queue_stats();
    if queues.is_empty() {
        return Err(NetError::NoNetwork);
    }
    let mut total = NicStats::default();
    for queue in queues {
        total += queue.nic;
    }
    Ok(total)
}

/// One NIC queue pair's counters, and the cpu whose stack runs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// The queue (pair) index on the NIC.
    pub queue: usize,
    /// The cpu whose network stack drives the queue.
    pub cpu: usize,
    /// The queue's own counters (with one queue, the whole NIC's).
    pub nic: NicStats,
}

/// Every NIC queue pair's counters, by queue (one entry for a
/// single-queue NIC); empty without a network or memory for the list.
pub fn queue_stats() -> Vec<QueueStats> {
    let mut queues = Vec::new();
    for index in netcpus::all() {
        let Ok((queue, nic)) =
            requests::call(index, None, |stack, _| Poll::Ready(Ok((stack.nic.queue(), stack.nic.stats()))))
        else {
            continue;
        };
        if queues.try_reserve(1).is_err() {
            return Vec::new();
        }
        queues.push(QueueStats { queue, cpu: netcpus::control(index).cpu(), nic });
    }
    queues
}

/// The RSS key and, for each entry of the NIC's redirection table, the
/// cpu whose stack takes the flows hashed there: how a NIC of several
/// queue pairs spreads TCP connections. `None` for a single-queue NIC.
pub fn rss() -> Option<(Vec<u8>, Vec<usize>)> {
    let (key, table) = requests::call(netcpus::HOME, None, |stack, _| Poll::Ready(Ok(stack.nic.rss()))).ok()??;
    let cpu_of_queue = |queue: usize| netcpus::control(queue.min(netcpus::count().saturating_sub(1))).cpu();
    Some((key.to_vec(), table.iter().map(|&q| cpu_of_queue(q as usize)).collect()))
}

/// The network stack's counters (sockets, refused and timed-out
/// connections, the network thread's rounds). Answered without a request
/// to the network thread, so it works even when that thread is stuck.
pub fn stats() -> NetStats {
    counters::read()
}

/// Whether the network is up (a NIC was found and its home stack runs).
pub fn is_up() -> bool {
    netcpus::running()
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
