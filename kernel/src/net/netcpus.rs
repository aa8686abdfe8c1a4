//! The network cpus and how the rest of the kernel reaches them.
//!
//! Each network cpu runs one network stack (see `stack`): its own smoltcp
//! interface and sockets over its own queue pair of the NIC, all on the
//! network cpu's own memory. A multi-queue NIC (igb) steers each TCP
//! connection to one queue by a hash of its addresses (RSS), so the stack
//! that took a connection's SYN sees all of its frames; everything else
//! (ARP, ICMP, UDP, DHCP) arrives on queue 0, whose stack is the *home*
//! stack ([`HOME`]). A single-queue NIC has one stack, the home one.
//!
//! A stack is changed only by its own thread. Threads on any cpu reach it
//! with requests ([`call`], [`call_on`]): an operation run on the stack's
//! thread until it completes or its deadline passes, while the caller
//! sleeps. What other cpus may touch is the stack's [`Control`]: its
//! inbox (filled by its own cpu, from messages), its wake-up, its
//! interrupt flag, and the neighbours forwarded to it by the home stack.
//!
//! Neighbours: ARP replies (and requests) reach the home stack only, yet
//! every stack must know the link-layer address of the peers it answers.
//! The home stack copies each ARP frame to the other stacks (a bounded
//! queue each); they take it in as a *reply*, so that smoltcp learns the
//! sender's address but answers nothing (the home stack has answered).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use core::task::Poll;
use core::time::Duration;

use super::sockets::SocketId;
use super::stack::Stack;
use super::NetError;
use crate::arch::{ioapic, tsc};
use crate::sync::WaitQueue;
use crate::topology::MAX_CPUS;

/// The most network stacks (queue pairs used).
pub const MAX_STACKS: usize = 16;

/// The stack that takes every frame that is not TCP over IPv4: UDP and
/// DHCP sockets live there, and it forwards neighbours to the others.
pub const HOME: usize = 0;

/// An ARP frame for IPv4 over Ethernet, without padding.
pub const ARP_FRAME: usize = 14 + 28;

/// ARP frames a stack may have waiting from the home stack; more are
/// dropped (and counted): a stack that misses one asks again.
const NEIGHBOURS_WAITING: usize = 32;

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

/// What other cpus reach of one network stack.
pub struct Control {
    /// The network cpu that runs the stack.
    cpu: AtomicUsize,
    running: AtomicBool,
    /// Requests for the stack's thread; only its own cpu touches it (with
    /// interrupts off).
    inbox: spin::Mutex<VecDeque<Request>>,
    /// The stack's thread sleeps here.
    pub wake: WaitQueue,
    /// A request or forwarded neighbour came since the thread last looked.
    pub work: AtomicBool,
    /// The NIC queue interrupted since the thread last looked.
    pub irq: AtomicBool,
    /// The queue's I/O APIC line, masked by the interrupt handler
    /// ([`NO_LINE`]: none, an MSI-X message).
    irq_line: AtomicU32,
    /// Requests submitted (counted by their callers, on any cpu) and taken
    /// in by the stack's thread: a difference is work waiting, even while
    /// the request is still a message for the network cpu.
    submitted: AtomicU64,
    taken: AtomicU64,
    /// ARP frames forwarded by the home stack, not yet taken in.
    neighbours: spin::Mutex<VecDeque<[u8; ARP_FRAME]>>,
    /// Forwarded ARP frames dropped for a full queue.
    pub neighbours_dropped: AtomicU64,
}

const NO_LINE: u32 = u32::MAX;
const NO_STACK: usize = usize::MAX;

impl Control {
    const fn new() -> Self {
        Control {
            cpu: AtomicUsize::new(0),
            running: AtomicBool::new(false),
            inbox: spin::Mutex::new(VecDeque::new()),
            wake: WaitQueue::new(),
            work: AtomicBool::new(false),
            irq: AtomicBool::new(false),
            irq_line: AtomicU32::new(NO_LINE),
            submitted: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            neighbours: spin::Mutex::new(VecDeque::new()),
            neighbours_dropped: AtomicU64::new(0),
        }
    }

    /// The network cpu that runs this stack.
    pub fn cpu(&self) -> usize {
        self.cpu.load(Ordering::Relaxed)
    }

    pub fn running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Whether a request or an interrupt is waiting for the thread's next
    /// round.
    pub fn work_waiting(&self) -> bool {
        self.taken.load(Ordering::Acquire) < self.submitted.load(Ordering::Acquire) || self.irq.load(Ordering::Acquire)
    }

    /// Whether the thread has something to look at (for its sleep).
    pub fn has_work(&self) -> bool {
        self.work.load(Ordering::Acquire) || self.irq.load(Ordering::Acquire)
    }

    /// Sets the queue's I/O APIC line for the interrupt handler to mask
    /// (None: a message, nothing to mask).
    pub fn set_irq_line(&self, line: Option<u32>) {
        self.irq_line.store(line.unwrap_or(NO_LINE), Ordering::Relaxed);
    }

    /// Moves the requests waiting in the inbox to `take` (on the stack's
    /// own cpu, with interrupts off while the inbox is held).
    pub fn take_requests(&self, mut take: impl FnMut(Request)) {
        crate::arch::irq::without(|_| {
            let mut inbox = self.inbox.lock();
            self.taken.fetch_add(inbox.len() as u64, Ordering::Release);
            inbox.drain(..).for_each(&mut take);
        });
    }

    /// The next neighbour forwarded by the home stack.
    pub fn take_neighbour(&self) -> Option<[u8; ARP_FRAME]> {
        crate::arch::irq::without(|_| self.neighbours.lock().pop_front())
    }
}

static STACKS: [Control; MAX_STACKS] = [const { Control::new() }; MAX_STACKS];
/// Stacks started (their indices are `0..count`).
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// The stack each cpu runs ([`NO_STACK`]: none).
static STACK_OF_CPU: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(NO_STACK) }; MAX_CPUS];

/// Stack `index`'s control.
pub fn control(index: usize) -> &'static Control {
    &STACKS[index]
}

/// How many stacks there are (set before any starts).
pub fn count() -> usize {
    COUNT.load(Ordering::Acquire)
}

/// Sets how many stacks there will be and on which cpus (`cpus[i]` runs
/// stack `i`), before they start.
pub fn plan(cpus: &[usize]) {
    for (index, &cpu) in cpus.iter().enumerate().take(MAX_STACKS) {
        STACKS[index].cpu.store(cpu, Ordering::Relaxed);
        STACK_OF_CPU[cpu].store(index, Ordering::Relaxed);
    }
    COUNT.store(cpus.len().min(MAX_STACKS), Ordering::Release);
}

/// Marks stack `index` running: requests to it are now answered.
pub fn set_running(index: usize) {
    STACKS[index].running.store(true, Ordering::Release);
}

/// Whether the network is up (the home stack runs).
pub fn running() -> bool {
    count() > 0 && STACKS[HOME].running()
}

/// The stack that runs on the calling cpu, if any.
pub fn on_this_cpu() -> Option<usize> {
    let index = STACK_OF_CPU[crate::sched::current_cpu()].load(Ordering::Relaxed);
    (index < count()).then_some(index)
}

/// The running stacks' indices.
pub fn all() -> impl Iterator<Item = usize> {
    (0..count()).filter(|&i| STACKS[i].running())
}

/// The NIC queue's interrupt, on its network cpu: mask its I/O APIC line
/// if it has one (the line stays asserted until the stack's thread
/// acknowledges the device) and wake the stack's thread.
pub fn nic_interrupt(_vector: u8) {
    let Some(index) = on_this_cpu() else { return };
    let control = &STACKS[index];
    let line = control.irq_line.load(Ordering::Relaxed);
    if line != NO_LINE {
        ioapic::mask(line);
    }
    control.irq.store(true, Ordering::Release);
    control.wake.notify_one();
}

/// Hands a request to stack `index`'s thread: queued by its network cpu
/// itself (directly, or from a message when the caller is on another
/// cpu), so the inbox is never shared between cpus.
fn submit(index: usize, request: Request) {
    let control = &STACKS[index];
    control.submitted.fetch_add(1, Ordering::Release);
    let queue = move || {
        control.inbox.lock().push_back(request);
        control.work.store(true, Ordering::Release);
        control.wake.notify_one();
    };
    if crate::sched::run_on(control.cpu(), queue).is_err() {
        log::error!("net: the network cpu of stack {index} is gone");
    }
}

/// Forwards an ARP frame taken in by the home stack to every other stack
/// (see the module doc). Called on the home stack's thread.
pub fn forward_neighbour(frame: &[u8]) {
    let Some(frame) = frame.get(..ARP_FRAME) else { return };
    let mut copy = [0u8; ARP_FRAME];
    copy.copy_from_slice(frame);
    for index in all().filter(|&i| i != HOME) {
        let control = &STACKS[index];
        let queued = crate::arch::irq::without(|_| {
            let mut neighbours = control.neighbours.lock();
            if neighbours.len() >= NEIGHBOURS_WAITING || neighbours.try_reserve(1).is_err() {
                return false;
            }
            neighbours.push_back(copy);
            true
        });
        if queued {
            control.work.store(true, Ordering::Release);
            control.wake.notify_one();
        } else {
            control.neighbours_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs `f` once on stack `index`'s thread, without waiting for it (the
/// home stack telling the others its DHCP address). Logged and dropped
/// when memory is exhausted.
pub fn tell(index: usize, f: impl FnOnce(&mut Stack) + Send + 'static) {
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

/// The answer to one request, and the caller sleeping for it.
struct Reply<R> {
    value: spin::Mutex<Option<Result<R, NetError>>>,
    ready: WaitQueue,
}

/// Runs `op` on stack `index`'s thread until it returns `Ready` (retrying
/// it after each round), or until `timeout` passes (then `op` is called
/// once more with `expired = true` to clean up and answer). Returns only
/// after `op`'s last run, and `op` never runs after that: `lent` lends
/// the caller's buffers to requests on this promise.
pub fn call<R, F>(index: usize, timeout: Option<Duration>, op: F) -> Result<R, NetError>
where
    R: Send + 'static,
    F: FnMut(&mut Stack, bool) -> Poll<Result<R, NetError>> + Send + 'static,
{
    call_on(index, None, timeout, op)
}

/// Like [`call`], for an operation that waits on one socket: it is
/// retried only after rounds that changed that socket's set.
pub fn call_on<R, F>(
    index: usize,
    socket: Option<SocketId>,
    timeout: Option<Duration>,
    mut op: F,
) -> Result<R, NetError>
where
    R: Send + 'static,
    F: FnMut(&mut Stack, bool) -> Poll<Result<R, NetError>> + Send + 'static,
{
    if index >= count() || !STACKS[index].running() {
        return Err(NetError::NoNetwork);
    }
    let reply = Arc::new(Reply { value: spin::Mutex::new(None), ready: WaitQueue::new() });
    let theirs = reply.clone();
    let job = move |stack: &mut Stack, expired| match op(stack, expired) {
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
    };
    // The operation's closure holds what the caller sent (a write's
    // bytes): allocated fallibly, like them.
    let job: Job = crate::memory::try_box(job).map_err(|_| NetError::NoBufferSpace)?;
    let deadline = timeout.map(|t| tsc::now().saturating_add(crate::time::duration_to_ticks(t)));
    submit(index, Request { job, deadline, set: socket.map(SocketId::set) });
    reply.ready.wait_until(|| reply.value.lock().take())
}
