//! One network stack: the thread on a network cpu that owns its NIC
//! queue pair, its smoltcp interface and its sockets (see `netcpus` for
//! how there is one per network cpu and how other cpus reach it). A
//! request ([`Request`], made by `requests::call`) is an operation run by
//! this thread against the [`Stack`], retried after rounds that may have
//! changed what it waits for, until it completes or its deadline passes.
//!
//! Each round: acknowledge the NIC's interrupt if one came, take in the
//! neighbours the home stack forwarded and at most [`INGRESS_BUDGET`]
//! frames (each with its connection's socket set, see `sockets`), run the
//! requests waiting on the socket sets that changed (and every new or
//! expired one), pass over the changed sets and those whose timer is due
//! for what they have to send, write the NIC's tail registers once, and
//! unmask the NIC's line. The work of a round thus follows what changed,
//! not how many connections are open. With nothing to do the thread
//! sleeps until the next smoltcp timer, request deadline, request or
//! interrupt. The first round 100 ms after the last full one looks at
//! everything, a bound on anything the marks miss.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use core::time::Duration;

use smoltcp::iface::Interface;
use smoltcp::socket::{dhcpv4, tcp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{IpCidr, Ipv4Address, Ipv4Cidr};

use super::accept::AcceptReady;
use super::device::NetDevice;
use super::drivers::{Interrupt, Nic};
use super::ingress_guard::{Guarded, IngressGuard};
use super::listener::{Events, Listener, Table};
use super::netcpus::{self, Control, ARP_FRAME, HOME, MAX_STACKS};
use super::socket_memory::{NewSocket, SocketMemory};
use super::sockets::{SocketId, Sockets, SETS};
use super::{counters, NetError};
use crate::arch::{ioapic, tsc};
use crate::time::RateLimit;

/// How long a closed stream may take to finish its close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a full transmit ring is waited for before it is looked at
/// again, should its interrupt not come.
const TRANSMIT_WAIT: Duration = Duration::from_millis(1);

/// Frames taken in per round, so that a flood cannot starve requests and
/// transmission.
pub const INGRESS_BUDGET: usize = 128;

/// Receive and send buffer of each connection.
pub const BUFFER_SIZE: usize = 64 * 1024;

/// Everything a network stack's thread owns.
pub struct Stack {
    /// Which stack this is (and which NIC queue pair it runs).
    pub index: usize,
    control: &'static Control,
    pub iface: Interface,
    pub sockets: Sockets,
    pub nic: Nic,
    /// Closed streams whose sockets are removed once smoltcp is done with
    /// them, or reset at their deadline if the peer never finishes.
    reap: Vec<Reaped>,
    /// Bound TCP ports, each with its listening sockets, handshakes and
    /// accept queue.
    pub listeners: Vec<Listener<SocketId>>,
    /// Each bound port's signal to its acceptors.
    pub accept_ready: Vec<(u16, Arc<AcceptReady>)>,
    /// Bound UDP ports.
    pub udp_ports: Vec<u16>,
    next_port: u16,
    dhcp: Option<SocketId>,
    pub address: Option<Ipv4Cidr>,
    pub gateway: Option<Ipv4Address>,
    /// How the NIC interrupts (or that it is polled).
    interrupt: Interrupt,
    /// Whether memory allows new connections (checked once per round).
    admit: bool,
    /// Drops what smoltcp should not see (an ARP request flood).
    guard: IngressGuard,
    /// The TCP sockets' buffers.
    pub socket_memory: SocketMemory,
    /// When idle send buffers are next given back (TSC).
    next_sweep: u64,
    /// Each socket set's next timer, as smoltcp last computed it (None:
    /// none); recomputed after each transmit pass over the set.
    next_at: [Option<SmolInstant>; SETS],
    /// Sets passed over for transmission last round (their sockets may
    /// have changed: timeouts, retransmissions).
    transmitted: u32,
    /// The transmit ring is full and the device will interrupt when it has
    /// room: the thread sleeps until then instead of polling it (on a
    /// device that sends from another host thread, QEMU's virtio-net,
    /// polling takes the host cpu that would send).
    transmit_blocked: bool,
    /// When every request and every set is next looked at, changed or not
    /// (TSC): a bound on any change the marks would miss.
    next_full_pass: u64,
}

/// An operation waiting to run on a stack's thread; `expired` tells it
/// its deadline passed. Returns true when done.
pub type Job = Box<dyn FnMut(&mut Stack, bool) -> bool + Send>;

pub struct Request {
    pub job: Job,
    /// When it is run one last time with `expired` (TSC ticks).
    pub deadline: Option<u64>,
    /// The socket set of the socket it waits on (None: any change).
    pub set: Option<usize>,
}

/// Each stack's requests for its thread; only the stack's own cpu touches
/// its inbox (with interrupts off).
static INBOXES: [spin::Mutex<VecDeque<Request>>; MAX_STACKS] =
    [const { spin::Mutex::new(VecDeque::new()) }; MAX_STACKS];

/// Hands a request to stack `index`'s thread: queued by its network cpu
/// itself (directly, or from a message when the caller is on another
/// cpu), so the inbox is never shared between cpus.
pub fn submit(index: usize, request: Request) {
    let control = netcpus::control(index);
    let inbox = &INBOXES[index];
    control.submitted.fetch_add(1, Ordering::Release);
    let queue = move || {
        inbox.lock().push_back(request);
        control.work.store(true, Ordering::Release);
        control.wake.notify_one();
    };
    if crate::sched::run_on(control.cpu(), queue).is_err() {
        log::error!("net: the network cpu of stack {index} is gone");
    }
}

/// Runs `f` once on stack `index`'s thread, without waiting for it (the
/// home stack telling the others its DHCP address). Logged and dropped
/// when memory is exhausted.
fn tell(index: usize, f: impl FnOnce(&mut Stack) + Send + 'static) {
    let mut f = Some(f);
    let job = move |stack: &mut Stack, _expired: bool| {
        if let Some(f) = f.take() {
            f(stack);
        }
        true
    };
    match crate::memory::try_box(job) {
        Ok(job) => submit(index, Request { job, deadline: None, set: None }),
        Err(_) => log::error!("net: no memory to tell stack {index} of a change"),
    }
}

/// Moves the requests waiting in `inbox` (stack `control`'s) to `take` (on
/// the stack's own cpu, with interrupts off while the inbox is held).
fn take_requests(control: &Control, inbox: &spin::Mutex<VecDeque<Request>>, mut take: impl FnMut(Request)) {
    crate::arch::irq::without(|_| {
        let mut inbox = inbox.lock();
        control.taken.fetch_add(inbox.len() as u64, Ordering::Release);
        inbox.drain(..).for_each(&mut take);
    });
}

/// A closed stream waiting for its close to complete.
struct Reaped {
    handle: SocketId,
    /// When it is reset if still not closed (TSC ticks).
    deadline: u64,
    /// Reset at the deadline: removed at the next reaping.
    aborted: bool,
}

/// The requests waiting for the network thread, in one list per socket
/// set (those waiting on a socket) and one for the rest, so that a round
/// looks only at the lists it may have woken: ten thousand reads waiting
/// on idle connections cost nothing per round.
struct Waiting {
    lists: [List; SETS + 1],
}

#[derive(Default)]
struct List {
    requests: Vec<Request>,
    /// Requests not run yet.
    fresh: bool,
    /// The earliest deadline in the list.
    earliest: Option<u64>,
}

/// The earlier of two optional deadlines (None: no deadline).
fn earlier(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The list of requests waiting on no particular socket.
const ANY: usize = SETS;

impl Waiting {
    fn new() -> Self {
        Waiting { lists: core::array::from_fn(|_| List::default()) }
    }

    fn add(&mut self, request: Request) {
        let list = &mut self.lists[request.set.unwrap_or(ANY)];
        list.fresh = true;
        list.earliest = earlier(list.earliest, request.deadline);
        list.requests.push(request);
    }

    fn len(&self) -> usize {
        self.lists.iter().map(|l| l.requests.len()).sum()
    }

    /// The earliest deadline of any request.
    fn earliest(&self) -> Option<u64> {
        self.lists.iter().filter_map(|l| l.earliest).min()
    }
}

/// The most sockets a stack holds: one per 16 KiB of RAM (a connection
/// needs more than that), between 1,024 and 65,536, shared by the stacks.
fn max_sockets() -> usize {
    let ram: usize = (0..crate::memory::node_count()).map(|n| crate::memory::stats(n).total).sum();
    (ram / (16 << 10)).clamp(1024, 65536) / netcpus::count().max(1)
}

fn smol_now() -> SmolInstant {
    SmolInstant::from_micros((tsc::nanos_since_boot() / 1000) as i64)
}

impl Stack {
    /// Stack `index` over `nic` (its queue pair), whose interrupt (routed
    /// to this cpu) is enabled here. The home stack runs DHCP unless the
    /// address is static, and tells the others what it learns.
    pub fn new(mut nic: Nic, interrupt: Interrupt, options: &crate::cmdline::KernelOptions, index: usize) -> Self {
        use smoltcp::iface::Config;
        use smoltcp::wire::{EthernetAddress, HardwareAddress};
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(nic.mac())));
        config.random_seed = tsc::now();
        let iface = Interface::new(config, &mut nic, smol_now());
        let mut stack = Stack {
            index,
            control: netcpus::control(index),
            iface,
            sockets: Sockets::new(max_sockets(), tsc::now()),
            nic,
            reap: Vec::new(),
            listeners: Vec::new(),
            accept_ready: Vec::new(),
            udp_ports: Vec::new(),
            next_port: 49152 + (tsc::now() % 8192) as u16,
            dhcp: None,
            address: None,
            gateway: None,
            interrupt,
            admit: true,
            guard: IngressGuard::new(),
            socket_memory: SocketMemory::new(),
            next_sweep: 0,
            next_at: [None; SETS],
            transmitted: 0,
            transmit_blocked: false,
            next_full_pass: 0,
        };
        match options.ip {
            Some((addr, prefix)) => {
                let cidr = Ipv4Cidr::new(addr, prefix);
                stack.configure(cidr, options.gateway);
            }
            None if index == HOME => stack.dhcp = stack.add_socket(0, dhcpv4::Socket::new()).ok(),
            // Told by the home stack (`configure`).
            None => {}
        }
        stack.control.set_irq_line(match interrupt {
            Interrupt::Line { gsi, .. } => Some(gsi),
            Interrupt::Message | Interrupt::Polled(_) => None,
        });
        if !matches!(interrupt, Interrupt::Polled(_)) {
            stack.nic.enable_interrupts();
        }
        stack
    }

    /// Sets the interface's address and gateway; on the home stack (which
    /// runs DHCP), tells every other stack too.
    fn configure(&mut self, cidr: Ipv4Cidr, gateway: Option<Ipv4Address>) {
        if self.index == HOME {
            for index in netcpus::all().filter(|&i| i != HOME) {
                tell(index, move |stack| stack.configure(cidr, gateway));
            }
        }
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            let _ = addrs.push(IpCidr::Ipv4(cidr));
        });
        self.iface.routes_mut().remove_default_ipv4_route();
        if let Some(gw) = gateway {
            let _ = self.iface.routes_mut().add_default_ipv4_route(gw);
        }
        self.address = Some(cidr);
        self.gateway = gateway;
        if self.index != HOME {
            return;
        }
        match gateway {
            Some(gw) => log::info!("net: address {cidr}, gateway {gw}"),
            None => log::info!("net: address {cidr}, no gateway"),
        }
    }

    fn poll_dhcp(&mut self) {
        let Some(handle) = self.dhcp else { return };
        let event = match self.sockets.get_mut_quietly::<dhcpv4::Socket>(handle).poll() {
            Some(dhcpv4::Event::Configured(config)) => Some(Some((config.address, config.router))),
            Some(dhcpv4::Event::Deconfigured) => Some(None),
            None => None,
        };
        match event {
            Some(Some((address, router))) => self.configure(address, router),
            Some(None) if self.address.is_some() => {
                log::warn!("net: DHCP lease lost");
                for index in netcpus::all() {
                    tell(index, |stack| {
                        stack.iface.update_ip_addrs(|addrs| addrs.clear());
                        stack.address = None;
                    });
                }
            }
            _ => {}
        }
    }

    /// Adds a socket to `set` (see `sockets`); `NoBufferSpace` when the
    /// stack holds its most sockets or memory is gone.
    pub fn add_socket<T: smoltcp::socket::AnySocket<'static>>(
        &mut self,
        set: usize,
        socket: T,
    ) -> Result<SocketId, NetError> {
        self.sockets.add(set, socket)
    }

    /// Adds a TCP socket to `set` and keeps its buffers.
    pub fn add_tcp_socket(&mut self, set: usize, new: NewSocket) -> Result<SocketId, NetError> {
        let sockets = &mut self.sockets;
        self.socket_memory.keep(new, |socket| sockets.add(set, socket))
    }

    /// Removes a socket, then frees its buffers.
    pub fn remove_socket(&mut self, id: SocketId) {
        drop(self.sockets.remove(id));
        self.socket_memory.release(id);
    }

    /// A TCP socket, to change (its socket set is marked changed).
    pub fn tcp(&mut self, handle: SocketId) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    /// A TCP socket, to look at.
    pub fn tcp_ref(&self, handle: SocketId) -> &tcp::Socket<'static> {
        self.sockets.get::<tcp::Socket>(handle)
    }

    /// Frees a closed stream's socket once its close completes (at most
    /// [`CLOSE_TIMEOUT`] later).
    pub fn reap_later(&mut self, handle: SocketId) {
        let deadline = tsc::now().saturating_add(crate::time::duration_to_ticks(CLOSE_TIMEOUT));
        self.reap.push(Reaped { handle, deadline, aborted: false });
    }

    /// A local port for an outgoing connection.
    pub fn ephemeral_port(&mut self) -> u16 {
        self.next_port = if self.next_port == u16::MAX { 49152 } else { self.next_port + 1 };
        self.next_port
    }

    /// Removes closed streams' sockets once smoltcp no longer needs them;
    /// one whose close outlives its deadline (a peer that never answers
    /// our FIN, or never sends its own) is reset, and removed next round,
    /// once the reset has left.
    fn reap_closed(&mut self) {
        let now = tsc::now();
        let mut reap = core::mem::take(&mut self.reap);
        let mut timed_out = 0;
        reap.retain_mut(|entry| {
            let socket = self.sockets.get_mut::<tcp::Socket>(entry.handle);
            let done = entry.aborted || matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait);
            if done {
                self.remove_socket(entry.handle);
            } else if now >= entry.deadline {
                socket.abort();
                entry.aborted = true;
                timed_out += 1;
            }
            !done
        });
        self.reap = reap;
        counters::add_timed_out(timed_out);
    }

    /// Whether memory allows new connections: not while the network cpu's
    /// node is under pressure (below its low-water mark), so that a new
    /// connection's buffers do not take what open connections and the
    /// kernel need.
    pub fn admits_connections(&self) -> bool {
        self.admit
    }

    /// One round; returns whether there may be more to do at once.
    fn round(&mut self, waiting: &mut Waiting) -> bool {
        self.admit = crate::memory::node_pressure(crate::memory::current_node()).is_normal();
        let irq = self.control.irq.swap(false, Ordering::AcqRel);
        if irq {
            self.nic.acknowledge_interrupt();
        }
        let now = smol_now();
        self.take_neighbours(now);
        let mut frames = 0;
        let forwards = self.index == HOME && netcpus::count() > 1;
        while frames < INGRESS_BUDGET {
            // Whether a frame waits is asked first, and only then what it
            // is: the device may complete a frame at any moment, so a frame
            // `peek_frame` did not show may be there a moment later, good.
            // Once one waits, it stays until taken, and `peek_frame` not
            // showing it means it is bad.
            if !self.nic.rx_ready() {
                break;
            }
            // smoltcp sees the frame with its connection's socket set only.
            let mut forward = None;
            let peeked = self.nic.peek_frame().map(|frame| {
                let arp = frame.get(12..14) == Some(&[0x08, 0x06]);
                if arp && forwards {
                    forward = frame.get(..ARP_FRAME).and_then(|f| <[u8; ARP_FRAME]>::try_from(f).ok());
                }
                (self.sockets.set_of_frame(frame), arp)
            });
            let Some((set, arp)) = peeked else {
                // A bad frame: taken here (and counted by the driver), as
                // smoltcp would discard it.
                self.nic.receive_with(|_| ());
                frames += 1;
                continue;
            };
            let dropped_before = self.guard.arp_dropped;
            let mut nic = Guarded { device: &mut self.nic, guard: &mut self.guard };
            let result = self.iface.poll_ingress_single(now, &mut nic, self.sockets.set_mut(set));
            // What the guard kept from smoltcp here (an ARP request
            // flood) is kept from the other stacks too.
            if self.guard.arp_dropped != dropped_before {
                forward = None;
            }
            if arp {
                // A neighbour's address may have come: sockets of every set
                // may have been waiting for it.
                self.sockets.touch_all();
            }
            if let Some(frame) = forward {
                netcpus::forward_neighbour(&frame);
            }
            match result {
                smoltcp::iface::PollIngressSingleResult::None => break,
                smoltcp::iface::PollIngressSingleResult::PacketProcessed => frames += 1,
                smoltcp::iface::PollIngressSingleResult::SocketStateChanged => {
                    frames += 1;
                    // A SYN may have taken a listening socket.
                    self.refill_listeners();
                }
            }
        }
        self.iface.poll_maintenance(now);
        self.poll_dhcp();
        self.update_listeners();
        let tick = tsc::now();
        let full_pass = tick >= self.next_full_pass;
        if full_pass {
            self.next_full_pass = tick + tsc::hz() / 10;
            self.sockets.touch_all();
        }
        // A request waiting on a socket runs again only if its set changed
        // (or it is new, or its deadline passed).
        let woken = self.sockets.touched() | self.transmitted;
        let mut waiting_sets = 0u32;
        for (at, list) in waiting.lists.iter_mut().enumerate() {
            let due = list.earliest.is_some_and(|d| tick >= d);
            if at == ANY || list.fresh || due || woken & (1 << at) != 0 {
                list.fresh = false;
                let mut earliest = None;
                list.requests.retain_mut(|r| {
                    let expired = r.deadline.is_some_and(|d| tick >= d);
                    let done = (r.job)(self, expired);
                    if !done {
                        earliest = earlier(earliest, r.deadline);
                    }
                    !done
                });
                list.earliest = earliest;
            }
            if at != ANY && !list.requests.is_empty() {
                waiting_sets |= 1 << at;
            }
        }
        // Transmit passes over the sets that changed or whose timer is due.
        let touched = self.sockets.take_touched();
        self.transmitted = 0;
        let mut timers_due = 0u32;
        for set in 0..SETS {
            let due = self.next_at[set].is_some_and(|at| at <= now);
            if touched & (1 << set) == 0 && !due {
                continue;
            }
            timers_due |= (due as u32) << set;
            for _ in 0..INGRESS_BUDGET {
                let sockets = self.sockets.set_for_transmit(set);
                if self.iface.poll_egress(now, &mut self.nic, sockets) == smoltcp::iface::PollResult::None {
                    break;
                }
            }
            self.next_at[set] = self.iface.poll_at(now, &self.sockets.sets()[set]);
            self.transmitted |= 1 << set;
        }
        self.nic.flush();
        self.reap_closed();
        if tsc::now() >= self.next_sweep {
            self.next_sweep = tsc::now() + tsc::hz();
            self.socket_memory.sweep(&self.sockets);
            counters::set_buffer_bytes(self.index, self.socket_memory.committed_bytes());
        }
        counters::set_sockets(self.index, self.sockets.len());
        counters::set_arp_requests_dropped(self.index, self.guard.arp_dropped);
        counters::round_done(self.index, tsc::nanos_since_boot() / 1_000_000);
        if let (true, Interrupt::Line { gsi, .. }) = (irq, self.interrupt) {
            ioapic::unmask(gsi);
        }
        self.transmit_blocked = !self.nic.can_transmit()
            && !matches!(self.interrupt, Interrupt::Polled(_))
            && self.nic.interrupt_when_transmit_room()
            && !self.nic.can_transmit();
        // Requests waiting on sets whose timers just ran look again at once
        // (a timer may have closed their socket), unless what they wait for
        // is room in the transmit ring.
        frames == INGRESS_BUDGET || self.nic.rx_ready() || (timers_due & waiting_sets != 0 && !self.transmit_blocked)
    }

    /// Takes in the ARP frames the home stack forwarded, as replies: smoltcp
    /// learns the sender's address and answers nothing (see `netcpus`).
    fn take_neighbours(&mut self, now: SmolInstant) {
        let mut learnt = false;
        // smoltcp takes a frame in only with a transmit token beside it: with
        // the transmit ring full, the neighbours wait for the next round
        // rather than be lost.
        while self.nic.can_transmit() {
            let Some(mut frame) = self.control.take_neighbour() else { break };
            // The ARP operation (after the 14-byte Ethernet header, 6 bytes
            // in): 2, a reply.
            frame[20..22].copy_from_slice(&[0, 2]);
            let mut device = Forwarded { frame: Some(&frame), nic: &mut self.nic };
            self.iface.poll_ingress_single(now, &mut device, self.sockets.set_mut(0));
            learnt = true;
        }
        if learnt {
            self.sockets.touch_all();
        }
    }

    /// How long the thread may sleep: until smoltcp's next timer or the
    /// earliest request deadline.
    fn sleep_for(&mut self, waiting: &Waiting) -> Option<Duration> {
        let now_smol = smol_now();
        let smol = self
            .next_at
            .iter()
            .flatten()
            .min()
            .map(|&at| Duration::from_micros(if at > now_smol { (at - now_smol).total_micros() } else { 0 }));
        let now = tsc::now();
        let request = waiting.earliest().map(|d| crate::time::ticks_to_duration(d.saturating_sub(now)));
        match (smol, request) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A socket with its buffers (see `socket_memory`); `NoBufferSpace` when
/// memory is exhausted.
pub fn new_socket() -> Result<NewSocket, NetError> {
    let mut new = NewSocket::new(BUFFER_SIZE)?;
    new.socket.set_nagle_enabled(false);
    Ok(new)
}

/// The stack's sockets as the listeners see them.
pub struct ListenerSockets<'a>(pub &'a mut Stack);

impl Table for ListenerSockets<'_> {
    type Handle = SocketId;

    fn state(&self, handle: SocketId) -> tcp::State {
        self.0.sockets.get::<tcp::Socket>(handle).state()
    }

    fn sets(&self) -> usize {
        SETS
    }

    fn set_of(&self, handle: SocketId) -> usize {
        handle.set()
    }

    fn listen(&mut self, port: u16, set: usize) -> Result<SocketId, NetError> {
        let mut new = new_socket()?;
        new.socket.listen(port).map_err(|_| NetError::InvalidInput)?;
        self.0.add_tcp_socket(set, new)
    }

    fn forget(&mut self, handle: SocketId) {
        self.0.remove_socket(handle);
    }

    fn refuse(&mut self, handle: SocketId) {
        self.0.tcp(handle).abort();
        self.0.reap_later(handle);
    }
}

impl Stack {
    /// Brings every listening port up to date, once per round (see
    /// `listener`), and tells the ports' acceptors of waiting connections.
    pub fn update_listeners(&mut self) {
        self.each_listener(|listener, sockets, now, admit| listener.update(sockets, now, admit));
        for (port, ready) in &self.accept_ready {
            if self.listeners.iter().any(|l| l.port == *port && l.queued() > 0) {
                ready.signal(self.index);
            }
        }
    }

    /// Puts a socket back in LISTEN wherever a frame's SYN took one, before
    /// the next frame (which may be a SYN too: smoltcp resets connections
    /// nobody listens for).
    pub fn refill_listeners(&mut self) {
        self.each_listener(|listener, sockets, now, admit| listener.refill(sockets, now, admit));
    }

    fn each_listener(&mut self, step: impl Fn(&mut Listener<SocketId>, &mut ListenerSockets<'_>, u64, bool) -> Events) {
        let now = tsc::now();
        let admit = self.admits_connections();
        let mut listeners = core::mem::take(&mut self.listeners);
        let mut events = Events::default();
        for listener in &mut listeners {
            events += step(listener, &mut ListenerSockets(self), now, admit);
        }
        self.listeners = listeners;
        static SHORT: RateLimit = RateLimit::new();
        if events.refused > 0 && !admit && SHORT.allow(Duration::from_secs(10)) {
            log::warn!(
                "net: memory is short: refusing new connections ({} refused so far)",
                counters::read().tcp_refused + events.refused
            );
        }
        counters::add_listener_events(events);
    }
}

/// The network thread's loop.
pub fn run(mut stack: Stack) -> ! {
    if let Err(e) = crate::memory::reserve::allow_for_current_thread() {
        log::warn!("net: the network thread cannot use the memory reserve: {e:?}");
    }
    let control = stack.control;
    let inbox = &INBOXES[stack.index];
    let mut waiting = Waiting::new();
    let mut next_report = tsc::now();
    loop {
        if log::log_enabled!(log::Level::Debug) && tsc::now() >= next_report {
            next_report = tsc::now() + tsc::hz() * 5;
            let half_open: usize = stack.listeners.iter().map(|l| l.half_open()).sum();
            log::debug!(
                "net: stack {}: {:?}, {half_open} half-open, {} requests waiting; all stacks: {:?}",
                stack.index,
                stack.nic.stats(),
                waiting.len(),
                counters::read()
            );
        }
        control.work.store(false, Ordering::Release);
        take_requests(control, inbox, |request| waiting.add(request));
        if stack.round(&mut waiting) {
            crate::sched::yield_now();
            continue;
        }
        let idle = || control.has_work().then_some(());
        // Without an interrupt, poll the NIC every millisecond.
        let limit = matches!(stack.interrupt, Interrupt::Polled(_)).then_some(Duration::from_millis(1));
        // With a full transmit ring, the timers smoltcp sets for what it
        // could not send are due at once: wait for the ring's interrupt
        // instead, a millisecond at most.
        let sleep = stack.sleep_for(&waiting).map(|d| if stack.transmit_blocked { d.max(TRANSMIT_WAIT) } else { d });
        match (sleep, limit) {
            (Some(d), Some(l)) => drop(control.wake.wait_timeout(idle, d.min(l))),
            (Some(d), None) | (None, Some(d)) => drop(control.wake.wait_timeout(idle, d)),
            (None, None) => control.wake.wait_until(idle),
        }
    }
}

/// A network device that yields one frame given to it (a neighbour
/// forwarded by the home stack) and sends through the stack's NIC.
struct Forwarded<'a> {
    frame: Option<&'a [u8]>,
    nic: &'a mut Nic,
}

/// The forwarded frame, lent to smoltcp.
struct FrameToken<'a>(&'a [u8]);

impl smoltcp::phy::RxToken for FrameToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl smoltcp::phy::Device for Forwarded<'_> {
    type RxToken<'b>
        = FrameToken<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = <Nic as smoltcp::phy::Device>::TxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, now: SmolInstant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.frame.take()?;
        Some((FrameToken(frame), self.nic.transmit(now)?))
    }

    fn transmit(&mut self, now: SmolInstant) -> Option<Self::TxToken<'_>> {
        self.nic.transmit(now)
    }

    fn capabilities(&self) -> smoltcp::phy::DeviceCapabilities {
        self.nic.capabilities()
    }
}
