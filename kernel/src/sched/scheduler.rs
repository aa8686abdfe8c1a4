//! One scheduler per cpu: its run queue, its timers, its mailbox, and the
//! loop that runs on the cpu's own stack between threads.
//!
//! Threads are cooperative and never move: a thread runs until it yields,
//! parks or finishes, and each of those switches to the cpu's scheduler
//! loop, which then receives messages, wakes threads whose timers expired,
//! frees the thread that finished, and switches to the next runnable one.
//! With nothing to run it arms the local APIC timer for the earliest timer
//! (or stops it), marks the cpu halted and sleeps in `hlt` until an
//! interrupt: the timer, a message's IPI, or a device.
//!
//! A cpu's `Local` state is a [`CpuLocal`]: touched only by that cpu,
//! borrowed with interrupts off (an interrupt handler may wake threads of
//! its cpu), and never across a context switch (the switch takes the
//! interrupt guard mutably, so no borrow made under it can be alive).
//!
//! Thread stacks are lazily committed (`memory::lazy`): a thread holds the
//! pages it touched. Between threads the loop lets `memory::lazy` top up
//! this cpu's frames for page faults and flush the TLB after frees.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::mailbox::{Mailbox, Message};
use super::thread::{RunLink, Thread, ThreadId, ThreadList, ThreadRef, TimerLink};
use crate::arch::irq::{self, IrqGuard};
use crate::arch::percpu::{self, CpuLocal, CpuTable, LocalMut};
use crate::arch::{apic, context, tsc};
use crate::memory::stack::GuardedStack;

/// A cpu's scheduler: the mailbox other cpus write to, and state only the
/// cpu itself touches.
pub(crate) struct Core {
    /// Messages from other cpus.
    pub mailbox: Mailbox,
    local: CpuLocal<Local>,
    /// The scheduler loop's saved stack pointer while a thread runs (its
    /// own slot: `Local` is not borrowed across a switch).
    loop_rsp: AtomicU64,
    /// Threads alive on this cpu (readable from anywhere).
    pub threads: AtomicUsize,
    /// Threads in the run queue, waiting for this cpu (readable from
    /// anywhere; written only by this cpu, with interrupts off).
    pub runnable: AtomicUsize,
}

struct Local {
    /// Runnable threads, oldest first (queueing never allocates).
    run_queue: ThreadList<RunLink>,
    /// Sleeping threads by deadline, soonest first (sleeping never
    /// allocates). A thread leaves them before it returns from `park`.
    timers: ThreadList<TimerLink>,
    current: Option<ThreadRef>,
    /// The thread that just finished, freed by the loop.
    finished: Option<ThreadRef>,
    /// Stacks of finished threads kept for new ones (default size, little
    /// committed): reusing one skips reserving address space and the first
    /// page faults. A spare keeps its frames and mapping, so it is reused
    /// on this cpu with no TLB flush anywhere.
    spare_stacks: alloc::vec::Vec<GuardedStack>,
    next_thread: u64,
}

/// Spare stacks a cpu keeps at most.
const SPARE_STACKS: usize = 16;
/// A finished thread's stack is kept as a spare only if at most this much
/// of it is committed, so spares hold at most 16 x 16 KiB per cpu.
const SPARE_COMMITTED_MAX: usize = 16 * 1024;

static CORES: CpuTable<Core> = CpuTable::new();

/// The scheduler of `cpu`, once that cpu has set it up.
pub(crate) fn core(cpu: usize) -> Option<&'static Core> {
    CORES.get(cpu)
}

fn this_core() -> &'static Core {
    CORES.this_cpu().expect("scheduler used on a cpu before its init")
}

impl Core {
    /// This cpu's local state (the caller found `self` with
    /// [`this_core`]), borrowed with interrupts off. Keep the borrow short:
    /// it must end before anything that may borrow it again (waking a
    /// thread through `wake`, a switch).
    fn local<'a>(&'a self, interrupts_off: &'a IrqGuard) -> LocalMut<'a, Local> {
        self.local.borrow(interrupts_off)
    }

    /// Appends a thread of this cpu to its run queue.
    fn enqueue(&self, local: &mut Local, thread: ThreadRef) {
        local.run_queue.push_back(thread);
        // Only this cpu writes its count, with interrupts off.
        self.runnable.store(self.runnable.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// This cpu's local state, borrowed with interrupts off (see
/// [`Core::local`]).
fn local(interrupts_off: &IrqGuard) -> LocalMut<'_, Local> {
    this_core().local(interrupts_off)
}

/// Sets up this cpu's scheduler in memory of its node.
pub(crate) fn init_this_cpu() {
    let cpu = percpu::cpu_id();
    let node = percpu::this().node();
    let core = Box::leak(Box::new(Core {
        mailbox: Mailbox::new(node),
        local: CpuLocal::new(Local {
            run_queue: ThreadList::new(),
            timers: ThreadList::new(),
            current: None,
            finished: None,
            spare_stacks: alloc::vec::Vec::with_capacity(SPARE_STACKS),
            next_thread: 1,
        }),
        loop_rsp: AtomicU64::new(0),
        threads: AtomicUsize::new(0),
        runnable: AtomicUsize::new(0),
    }));
    CORES.publish(cpu, core);
    crate::arch::traps::set_handler(apic::TIMER_VECTOR, |_| {});
    crate::arch::traps::set_handler(apic::WAKE_VECTOR, |_| {});
}

/// Why a thread could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnError {
    /// No cpu with this number exists.
    NoSuchCpu(usize),
    /// The cpu exists but did not come online.
    CpuOffline(usize),
    /// The cpu's node (and every fallback) had no memory for the stack.
    OutOfMemory,
    /// Called outside a thread (there is no one to wait for the reply).
    NotInThread,
}

impl core::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            SpawnError::NoSuchCpu(cpu) => write!(f, "no cpu {cpu}"),
            SpawnError::CpuOffline(cpu) => write!(f, "cpu {cpu} is offline"),
            SpawnError::OutOfMemory => write!(f, "out of memory for a thread"),
            SpawnError::NotInThread => write!(f, "not called from a thread"),
        }
    }
}

/// Creates a thread on this cpu (control block and stack from this cpu's
/// node) and queues it.
pub(crate) fn create_local(entry: Box<dyn FnOnce() + Send>, stack_size: usize) -> Result<ThreadId, SpawnError> {
    let cpu = percpu::cpu_id();
    let (seq, spare) = irq::without(|irq| {
        let mut l = local(irq);
        l.next_thread += 1;
        let spare = if stack_size == super::STACK_SIZE { l.spare_stacks.pop() } else { None };
        (l.next_thread - 1, spare)
    });
    let stack = match spare {
        Some(stack) => stack,
        // Its pages come from this cpu's node as the thread touches them.
        None => GuardedStack::new_lazy(stack_size).ok_or(SpawnError::OutOfMemory)?,
    };
    let id = ThreadId::new(cpu, seq);
    // The control block is allocated fallibly (a plain Box would abort when
    // memory is exhausted); the loop frees it when the thread has finished.
    let block = crate::memory::try_box(Thread::new(id, cpu, stack, entry)).map_err(|_| SpawnError::OutOfMemory)?;
    let thread = ThreadRef::leak(block);
    // SAFETY: the stack is new (or a finished thread's) and unused; its top
    // is page aligned.
    let rsp = unsafe { context::prepare_stack(thread.stack.top(), thread_main, 0) };
    thread.rsp.store(rsp, Ordering::Relaxed);
    this_core().threads.fetch_add(1, Ordering::Relaxed);
    make_runnable(thread);
    Ok(id)
}

/// Queues a thread of this cpu that was woken.
pub(crate) fn make_runnable(thread: ThreadRef) {
    debug_assert_eq!(thread.cpu, percpu::cpu_id());
    let core = this_core();
    irq::without(|irq| core.enqueue(&mut core.local(irq), thread));
}

/// Wakes `thread` (any cpu's): queues it here, or asks its cpu by message.
pub(crate) fn wake(thread: ThreadRef) {
    if thread.notify() {
        if thread.cpu == percpu::cpu_id() {
            make_runnable(thread);
        } else {
            send(thread.cpu, Message::Wake(thread));
        }
    }
}

/// Sends `message` to cpu `target`'s mailbox, interrupting it if it is
/// halted. The caller has checked that `target` is online.
pub(crate) fn send(target: usize, message: Message) {
    let core = core(target).expect("message to a cpu that is not online");
    let cpu = percpu::get(target).expect("online cpus have per-cpu data");
    irq::without(|irq| core.mailbox.push(irq, message));
    // Pairs with the receiver's store to `halted` before it checks
    // `has_pending` (both SeqCst): either it sees the message or we see it
    // halted.
    if cpu.halted.load(Ordering::SeqCst) {
        apic::send_ipi(cpu.apic_id(), apic::WAKE_VECTOR);
    }
}

/// The thread running on this cpu (None in the scheduler loop).
pub(crate) fn current() -> Option<ThreadRef> {
    irq::without(|irq| local(irq).current)
}

/// Switches from the running thread to the scheduler loop; returns when
/// the loop resumes the thread. Taking the guard mutably ends every borrow
/// of `Local` made under it first.
fn switch_to_loop(_interrupts_off: &mut IrqGuard, core: &Core, thread: ThreadRef) {
    let loop_rsp = core.loop_rsp.load(Ordering::Relaxed);
    // SAFETY: interrupts are off; the loop's stack pointer was saved when
    // it switched to this thread (the one running), and the loop is not
    // running.
    unsafe { context::switch(thread.rsp.as_ptr(), loop_rsp) };
}

/// Lets the other runnable threads of this cpu run first.
pub fn yield_now() {
    let core = this_core();
    let mut irq = irq::disable();
    let thread = {
        let mut local = core.local(&irq);
        let Some(thread) = local.current else { return };
        core.enqueue(&mut local, thread);
        thread
    };
    switch_to_loop(&mut irq, core, thread);
}

/// Parks the running thread until [`wake`] (or its timer) wakes it, or
/// `deadline` (TSC ticks) passes. Spurious returns are possible; callers
/// re-check what they wait for.
pub(crate) fn park(deadline: Option<u64>) {
    let core = this_core();
    let mut irq = irq::disable();
    let thread = {
        let mut local = core.local(&irq);
        let thread = local.current.expect("only threads can block");
        if let Some(d) = deadline {
            thread.deadline.set(d);
            // After every timer with the same or an earlier deadline.
            local.timers.insert_sorted(thread, |new, old| new.deadline.get() < old.deadline.get());
        }
        thread
    };
    if thread.prepare_park() {
        switch_to_loop(&mut irq, core, thread);
        thread.finish_park();
    }
    // An expired timer left the list when it fired; otherwise it leaves
    // here.
    if deadline.is_some() {
        core.local(&irq).timers.remove(thread);
    }
}

/// The first code of every thread, on its own stack (switched to by the
/// loop, with interrupts off).
extern "C" fn thread_main(_: usize) -> ! {
    let core = this_core();
    let mut irq = irq::disable();
    let thread = core.local(&irq).current.expect("a new thread is its cpu's current one");
    let entry = thread.entry.lock().take().expect("a thread's entry runs once");
    irq.enabled_during(entry);
    core.threads.fetch_sub(1, Ordering::Relaxed);
    // The loop frees the control block (and this stack) after switching
    // away from it, never before.
    core.local(&irq).finished = Some(thread);
    switch_to_loop(&mut irq, core, thread);
    unreachable!("a finished thread is never resumed");
}

/// Handles one message addressed to this cpu.
fn receive(message: Message) {
    match message {
        Message::Wake(thread) => make_runnable(thread),
        Message::Spawn { entry, requester } => {
            let value = create_local(entry, super::STACK_SIZE).map_or(0, ThreadId::as_raw);
            send(requester.cpu, Message::Reply { requester, value });
        }
        Message::Reply { requester, value } => {
            requester.reply.store(value, Ordering::Release);
            wake(requester);
        }
        Message::Ping { requester } => send(requester.cpu, Message::Reply { requester, value: 1 }),
        Message::Run(f) => f(),
    }
}

/// Wakes the threads whose timers expired (they are this cpu's, so waking
/// one is queueing it here); returns the next deadline.
fn fire_timers(core: &Core, local: &mut Local) -> Option<u64> {
    let now = tsc::now();
    while let Some(soonest) = local.timers.front() {
        if soonest.deadline.get() > now {
            return Some(soonest.deadline.get());
        }
        let thread = local.timers.pop_front().expect("the soonest timer is in the list");
        if thread.notify() {
            core.enqueue(local, thread);
        }
    }
    None
}

/// How long an idle cpu watches its mailbox before it halts, in µs.
const IDLE_POLL_MICROS: u64 = 20;

/// Spins up to [`IDLE_POLL_MICROS`] (or until `next_timer`) waiting for a
/// message; returns whether one came.
fn poll_mailbox(core: &Core, next_timer: Option<u64>) -> bool {
    let start = tsc::now();
    let end = (start + tsc::hz() / 1_000_000 * IDLE_POLL_MICROS).min(next_timer.unwrap_or(u64::MAX));
    while tsc::now() < end {
        if core.mailbox.has_pending() {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// Frees the control block of the thread that finished (its stack is kept
/// as a spare when small).
fn free_finished(local: &mut Local) {
    let Some(thread) = local.finished.take() else { return };
    // SAFETY: the control block was leaked by `create_local` and the thread
    // has finished: it switched away for good, is in no queue and no timer,
    // and nothing holds a ThreadRef to it any more (see ThreadRef). Its
    // stack is not the one we run on.
    let block = unsafe { Box::from_raw(thread.as_ptr()) };
    let stack = (*block).into_stack();
    let small = stack.committed_bytes() <= SPARE_COMMITTED_MAX;
    if stack.usable_size() == super::STACK_SIZE && small && local.spare_stacks.len() < SPARE_STACKS {
        local.spare_stacks.push(stack);
    }
}

/// This cpu's scheduler loop; never returns. The calling context (the
/// boot stack, or a secondary cpu's own stack) becomes the loop.
pub(crate) fn run() -> ! {
    let mut irq = irq::disable();
    let core = this_core();
    let cpu = percpu::this();
    loop {
        crate::memory::lazy::between_threads(&irq);
        core.mailbox.drain(receive);
        // One borrow for the timers, the finished thread and the next one.
        let (next_timer, next) = {
            let mut local = core.local(&irq);
            let next_timer = fire_timers(core, &mut local);
            free_finished(&mut local);
            let next = local.run_queue.pop_front();
            if let Some(thread) = next {
                // Only this cpu writes its count, with interrupts off: no
                // read-modify-write is needed.
                core.runnable.store(core.runnable.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
                local.current = Some(thread);
            }
            (next_timer, next)
        };
        if let Some(thread) = next {
            cpu.thread_stack_guard.store(thread.stack.guard(), Ordering::Relaxed);
            cpu.running_thread.store(thread.id.as_raw(), Ordering::Relaxed);
            switch_to_thread(&mut irq, core, thread);
            cpu.running_thread.store(0, Ordering::Relaxed);
            cpu.thread_stack_guard.store(0, Ordering::Relaxed);
            core.local(&irq).current = None;
            continue;
        }
        // Nothing to run. Watch the mailbox a little before halting: a
        // reply often follows a request within microseconds, and waking a
        // halted cpu costs far more (an IPI, and under a hypervisor a host
        // thread wake-up).
        if poll_mailbox(core, next_timer) {
            continue;
        }
        // Sleep until a timer, message or device interrupt.
        apic::set_timer(next_timer);
        cpu.halted.store(true, Ordering::SeqCst);
        if !core.mailbox.has_pending() {
            // `sti; hlt` admits interrupts only once the cpu is halted, so
            // none is handled between the check and the halt.
            irq.halt_until_interrupt();
        }
        cpu.halted.store(false, Ordering::SeqCst);
    }
}

/// Switches from the loop to `thread`; returns when the thread switches
/// back (it yielded, parked or finished).
fn switch_to_thread(_interrupts_off: &mut IrqGuard, core: &Core, thread: ThreadRef) {
    // SAFETY: interrupts are off; the thread is runnable, so it was
    // switched out with a saved stack pointer (or prepared by
    // `create_local`), belongs to this cpu, and does not run.
    unsafe { context::switch(core.loop_rsp.as_ptr(), thread.rsp.load(Ordering::Relaxed)) };
}
