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
//! with requests (`requests::call`, `requests::call_on`): an operation
//! run on the stack's thread until it completes or its deadline passes,
//! while the caller sleeps. What other cpus may touch is the stack's
//! [`Control`]: its wake-up, its interrupt flag, its count of requests,
//! and the neighbours forwarded to it by the home stack; and its inbox of
//! requests (in `stack`, filled by its own cpu, from messages).
//!
//! Neighbours: ARP replies (and requests) reach the home stack only, yet
//! every stack must know the link-layer address of the peers it answers.
//! The home stack copies each ARP frame to the other stacks (a bounded
//! queue each); they take it in as a *reply*, so that smoltcp learns the
//! sender's address but answers nothing (the home stack has answered).

use alloc::collections::VecDeque;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::arch::ioapic;
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

/// What other cpus reach of one network stack.
pub struct Control {
    /// The network cpu that runs the stack.
    cpu: AtomicUsize,
    running: AtomicBool,
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
    pub submitted: AtomicU64,
    pub taken: AtomicU64,
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
