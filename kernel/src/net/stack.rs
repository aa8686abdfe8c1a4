//! The network cpu: one thread owns the NIC, the smoltcp interface and
//! every socket. Threads on any cpu reach it with requests ([`call`]): a
//! request is an operation run on the network thread against the
//! [`Stack`], retried after each round of packets until it completes or
//! its deadline passes; the caller sleeps until then.
//!
//! Each round: acknowledge the NIC's interrupt if one came, take in at most
//! [`INGRESS_BUDGET`] frames, run the waiting requests, send what sockets
//! have to send, write the NIC's tail registers once, and unmask the NIC's
//! line. With nothing to do the thread sleeps until the next smoltcp timer,
//! request deadline, request or interrupt.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use core::task::Poll;
use core::time::Duration;

use e1000::E1000;
use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::{dhcpv4, tcp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{IpCidr, Ipv4Address, Ipv4Cidr};
use x86_64::instructions::interrupts::without_interrupts;

use super::nic::Nic;
use super::NetError;
use crate::arch::{ioapic, tsc};
use crate::sync::WaitQueue;

/// How long a closed stream may take to finish its close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Frames taken in per round, so that a flood cannot starve requests and
/// transmission.
pub const INGRESS_BUDGET: usize = 128;

/// Everything the network thread owns.
pub struct Stack {
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    pub nic: E1000<Nic>,
    /// Closed streams whose sockets are removed once smoltcp is done with
    /// them, or aborted at the deadline (TSC) if the peer never finishes.
    reap: Vec<(SocketHandle, u64)>,
    /// Bound TCP ports and their listening (or not yet accepted) sockets.
    pub listeners: Vec<(u16, Vec<SocketHandle>)>,
    /// Bound UDP ports.
    pub udp_ports: Vec<u16>,
    next_port: u16,
    dhcp: Option<SocketHandle>,
    pub address: Option<Ipv4Cidr>,
    pub gateway: Option<Ipv4Address>,
    /// The NIC's I/O APIC pin (None: polled).
    pin: Option<u8>,
}

/// An operation waiting to run on the network thread; `expired` tells it
/// its deadline passed. Returns true when done.
type Job = Box<dyn FnMut(&mut Stack, bool) -> bool + Send>;

struct Request {
    job: Job,
    deadline: Option<u64>,
}

/// Requests for the network thread; only the network cpu touches it (with
/// interrupts off).
static INBOX: spin::Mutex<VecDeque<Request>> = spin::Mutex::new(VecDeque::new());
/// The network thread sleeps here.
static WAKE: WaitQueue = WaitQueue::new();
static WORK: AtomicBool = AtomicBool::new(false);
static IRQ: AtomicBool = AtomicBool::new(false);
static IRQ_PIN: AtomicU8 = AtomicU8::new(0);
static RUNNING: AtomicBool = AtomicBool::new(false);

pub fn running() -> bool {
    RUNNING.load(Ordering::Acquire)
}

/// The NIC's interrupt: mask the line (it stays asserted until the
/// network thread reads the cause) and wake the network thread.
pub fn nic_interrupt(_vector: u8) {
    ioapic::mask(IRQ_PIN.load(Ordering::Relaxed));
    IRQ.store(true, Ordering::Release);
    WAKE.notify_one();
}

/// The network cpu (set when its thread starts).
static NET_CPU: AtomicUsize = AtomicUsize::new(0);

/// Hands a request to the network thread: queued by the network cpu
/// itself (directly, or from a message when the caller is on another cpu),
/// so the queue is never shared between cpus.
fn submit(request: Request) {
    let queue = move || {
        INBOX.lock().push_back(request);
        WORK.store(true, Ordering::Release);
        WAKE.notify_one();
    };
    if crate::sched::run_on(NET_CPU.load(Ordering::Relaxed), queue).is_err() {
        log::error!("net: the network cpu is gone");
    }
}

/// The answer to one request, and the caller sleeping for it.
struct Reply<R> {
    value: spin::Mutex<Option<Result<R, NetError>>>,
    ready: WaitQueue,
}

/// Runs `op` on the network thread until it returns `Ready` (retrying it
/// after each round of packets), or until `timeout` passes (then `op` is
/// called once more with `expired = true` to clean up and answer).
pub fn call<R, F>(timeout: Option<Duration>, mut op: F) -> Result<R, NetError>
where
    R: Send + 'static,
    F: FnMut(&mut Stack, bool) -> Poll<Result<R, NetError>> + Send + 'static,
{
    if !running() {
        return Err(NetError::NoNetwork);
    }
    let reply = Arc::new(Reply { value: spin::Mutex::new(None), ready: WaitQueue::new() });
    let theirs = reply.clone();
    let job: Job = Box::new(move |stack, expired| match op(stack, expired) {
        Poll::Ready(result) => {
            *theirs.value.lock() = Some(result);
            theirs.ready.notify_one();
            true
        }
        Poll::Pending if expired => {
            *theirs.value.lock() = Some(Err(NetError::TimedOut));
            theirs.ready.notify_one();
            true
        }
        Poll::Pending => false,
    });
    let deadline = timeout.map(|t| tsc::now().saturating_add(crate::time::duration_to_ticks(t)));
    submit(Request { job, deadline });
    reply.ready.wait_until(|| reply.value.lock().take())
}

fn smol_now() -> SmolInstant {
    SmolInstant::from_micros((tsc::nanos_since_boot() / 1000) as i64)
}

impl Stack {
    pub fn new(mut nic: E1000<Nic>, pin: Option<u8>, options: &crate::cmdline::KernelOptions) -> Self {
        use smoltcp::iface::Config;
        use smoltcp::wire::{EthernetAddress, HardwareAddress};
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(nic.mac())));
        config.random_seed = tsc::now();
        let iface = Interface::new(config, &mut nic, smol_now());
        let mut stack = Stack {
            iface,
            sockets: SocketSet::new(Vec::new()),
            nic,
            reap: Vec::new(),
            listeners: Vec::new(),
            udp_ports: Vec::new(),
            next_port: 49152 + (tsc::now() % 8192) as u16,
            dhcp: None,
            address: None,
            gateway: None,
            pin,
        };
        match options.ip {
            Some((addr, prefix)) => {
                let cidr = Ipv4Cidr::new(addr, prefix);
                stack.configure(cidr, options.gateway);
            }
            None => stack.dhcp = Some(stack.sockets.add(dhcpv4::Socket::new())),
        }
        stack
    }

    fn configure(&mut self, cidr: Ipv4Cidr, gateway: Option<Ipv4Address>) {
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
        match gateway {
            Some(gw) => log::info!("net: address {cidr}, gateway {gw}"),
            None => log::info!("net: address {cidr}, no gateway"),
        }
    }

    fn poll_dhcp(&mut self) {
        let Some(handle) = self.dhcp else { return };
        let event = match self.sockets.get_mut::<dhcpv4::Socket>(handle).poll() {
            Some(dhcpv4::Event::Configured(config)) => Some(Some((config.address, config.router))),
            Some(dhcpv4::Event::Deconfigured) => Some(None),
            None => None,
        };
        match event {
            Some(Some((address, router))) => self.configure(address, router),
            Some(None) if self.address.is_some() => {
                log::warn!("net: DHCP lease lost");
                self.iface.update_ip_addrs(|addrs| addrs.clear());
                self.address = None;
            }
            _ => {}
        }
    }

    /// Frees a closed stream's socket once its close completes (at most
    /// [`CLOSE_TIMEOUT`] later).
    pub fn reap_later(&mut self, handle: SocketHandle) {
        self.reap.push((handle, tsc::now().saturating_add(crate::time::duration_to_ticks(CLOSE_TIMEOUT))));
    }

    /// A local port for an outgoing connection.
    pub fn ephemeral_port(&mut self) -> u16 {
        self.next_port = if self.next_port == u16::MAX { 49152 } else { self.next_port + 1 };
        self.next_port
    }

    /// Removes closed streams' sockets once smoltcp no longer needs them.
    fn reap_closed(&mut self) {
        let sockets = &mut self.sockets;
        let now = tsc::now();
        self.reap.retain(|&(handle, deadline)| {
            let socket = sockets.get_mut::<tcp::Socket>(handle);
            if now >= deadline {
                socket.abort();
            }
            let done = matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait);
            if done {
                sockets.remove(handle);
            }
            !done
        });
    }

    /// One round; returns whether there may be more to do at once.
    fn round(&mut self, requests: &mut Vec<Request>) -> bool {
        let irq = IRQ.swap(false, Ordering::AcqRel);
        if irq {
            self.nic.handle_interrupt();
        }
        let now = smol_now();
        let mut frames = 0;
        while frames < INGRESS_BUDGET {
            match self.iface.poll_ingress_single(now, &mut self.nic, &mut self.sockets) {
                smoltcp::iface::PollIngressSingleResult::None => break,
                smoltcp::iface::PollIngressSingleResult::PacketProcessed => frames += 1,
                smoltcp::iface::PollIngressSingleResult::SocketStateChanged => {
                    frames += 1;
                    // A SYN may have taken a listening socket: put another
                    // in place before the next frame, which may be a SYN
                    // too (smoltcp resets connections nobody listens for).
                    self.top_up_listeners();
                }
            }
        }
        self.iface.poll_maintenance(now);
        self.poll_dhcp();
        self.top_up_listeners();
        let tick = tsc::now();
        requests.retain_mut(|r| {
            let expired = r.deadline.is_some_and(|d| tick >= d);
            !(r.job)(self, expired)
        });
        for _ in 0..INGRESS_BUDGET {
            if self.iface.poll_egress(now, &mut self.nic, &mut self.sockets) == smoltcp::iface::PollResult::None {
                break;
            }
        }
        self.nic.flush();
        self.reap_closed();
        if irq {
            if let Some(pin) = self.pin {
                ioapic::unmask(pin);
            }
        }
        frames == INGRESS_BUDGET || self.nic.rx_ready()
    }

    /// How long the thread may sleep: until smoltcp's next timer or the
    /// earliest request deadline.
    fn sleep_for(&mut self, requests: &[Request]) -> Option<Duration> {
        let smol = self.iface.poll_delay(smol_now(), &self.sockets).map(|d| Duration::from_micros(d.total_micros()));
        let now = tsc::now();
        let request = requests
            .iter()
            .filter_map(|r| r.deadline)
            .min()
            .map(|d| crate::time::ticks_to_duration(d.saturating_sub(now)));
        match (smol, request) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The network thread's loop.
pub fn run(mut stack: Stack) -> ! {
    if let Err(e) = crate::memory::reserve::allow_for_current_thread() {
        log::warn!("net: the network thread cannot use the memory reserve: {e:?}");
    }
    if let Some(pin) = stack.pin {
        IRQ_PIN.store(pin, Ordering::Relaxed);
    }
    NET_CPU.store(crate::sched::current_cpu(), Ordering::Relaxed);
    RUNNING.store(true, Ordering::Release);
    let mut requests: Vec<Request> = Vec::new();
    let mut next_report = tsc::now();
    loop {
        if log::log_enabled!(log::Level::Debug) && tsc::now() >= next_report {
            next_report = tsc::now() + tsc::hz() * 5;
            log::debug!("net: {:?}, {} sockets, {} requests waiting", stack.nic.stats(), stack.sockets.iter().count(), requests.len());
        }
        WORK.store(false, Ordering::Release);
        without_interrupts(|| requests.extend(INBOX.lock().drain(..)));
        if stack.round(&mut requests) {
            crate::sched::yield_now();
            continue;
        }
        let idle = || (WORK.load(Ordering::Acquire) || IRQ.load(Ordering::Acquire)).then_some(());
        // Without an interrupt line, poll the NIC every millisecond.
        let limit = if stack.pin.is_some() { None } else { Some(Duration::from_millis(1)) };
        match (stack.sleep_for(&requests), limit) {
            (Some(d), Some(l)) => drop(WAKE.wait_timeout(idle, d.min(l))),
            (Some(d), None) | (None, Some(d)) => drop(WAKE.wait_timeout(idle, d)),
            (None, None) => WAKE.wait_until(idle),
        }
    }
}
