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
//! A cpu's `Local` state is touched only by that cpu, with interrupts off
//! (an interrupt handler may wake threads of its cpu).
//!
//! Thread stacks are lazily committed (`memory::lazy`): a thread holds the
//! pages it touched. Between threads the loop lets `memory::lazy` top up
//! this cpu's frames for page faults and flush the TLB after frees.

use alloc::boxed::Box;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use x86_64::instructions::interrupts;

use super::mailbox::{self, Mailbox, Message};
use super::thread::{Thread, ThreadId, ThreadRef};
use crate::arch::{apic, context, percpu, tsc};
use crate::memory::stack::GuardedStack;
use crate::topology::MAX_CPUS;

/// A cpu's scheduler: the mailbox other cpus write to, and state only the
/// cpu itself touches.
pub(crate) struct Core {
    pub mailbox: Mailbox,
    local: UnsafeCell<Local>,
    /// Threads alive on this cpu (readable from anywhere).
    pub threads: AtomicUsize,
    /// Threads in the run queue, waiting for this cpu (readable from
    /// anywhere; written only by this cpu, with interrupts off).
    pub runnable: AtomicUsize,
}

// SAFETY: `local` is only touched by the owning cpu with interrupts off
// (see `local`); everything else is atomics or the mailbox, built for
// sharing.
unsafe impl Sync for Core {}

struct Local {
    run_queue: RunQueue,
    timers: Timers,
    current: Option<ThreadRef>,
    /// The scheduler loop's saved stack pointer while a thread runs.
    loop_rsp: u64,
    /// The thread that just finished, freed by the loop.
    finished: Option<Box<Thread>>,
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

/// Runnable threads, oldest first, linked through their control blocks
/// (queueing never allocates).
struct RunQueue {
    head: *mut Thread,
    tail: *mut Thread,
}

impl RunQueue {
    fn push_back(&mut self, thread: ThreadRef) {
        let t = thread.as_ptr();
        // SAFETY: live control blocks of this cpu, touched only by this cpu
        // with interrupts off; a thread is in the queue at most once.
        unsafe {
            *(*t).run_next.get() = core::ptr::null_mut();
            match self.tail.is_null() {
                true => self.head = t,
                false => *(*self.tail).run_next.get() = t,
            }
        }
        self.tail = t;
    }

    fn pop_front(&mut self) -> Option<ThreadRef> {
        let t = self.head;
        if t.is_null() {
            return None;
        }
        // SAFETY: as in push_back.
        unsafe {
            self.head = *(*t).run_next.get();
            if self.head.is_null() {
                self.tail = core::ptr::null_mut();
            }
            Some(ThreadRef::new(&*t))
        }
    }
}

/// A sleeping thread's timer, on the thread's own stack while it sleeps.
struct TimerEntry {
    deadline: u64,
    thread: ThreadRef,
    prev: *mut TimerEntry,
    next: *mut TimerEntry,
    linked: bool,
}

/// Sleeping threads by deadline (TSC ticks), soonest first, linked
/// through entries on their stacks (sleeping never allocates). An entry
/// is unlinked before its thread can return from `park`.
struct Timers {
    head: *mut TimerEntry,
}

impl Timers {
    /// Inserts `e` after every entry with the same or an earlier deadline.
    fn insert(&mut self, e: *mut TimerEntry) {
        // SAFETY: linked entries live on parked threads' stacks of this
        // cpu and are touched only by this cpu with interrupts off; `e` is
        // a live, unlinked entry.
        unsafe {
            let mut prev: *mut TimerEntry = core::ptr::null_mut();
            let mut at = self.head;
            while !at.is_null() && (*at).deadline <= (*e).deadline {
                prev = at;
                at = (*at).next;
            }
            (*e).prev = prev;
            (*e).next = at;
            (*e).linked = true;
            if !at.is_null() {
                (*at).prev = e;
            }
            match prev.is_null() {
                true => self.head = e,
                false => (*prev).next = e,
            }
        }
    }

    fn unlink(&mut self, e: *mut TimerEntry) {
        // SAFETY: as in insert; `e` is linked here.
        unsafe {
            let (prev, next) = ((*e).prev, (*e).next);
            match prev.is_null() {
                true => self.head = next,
                false => (*prev).next = next,
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*e).linked = false;
        }
    }

    /// Unlinks and returns the thread of the soonest entry, if it is due.
    fn pop_due(&mut self, now: u64) -> Option<ThreadRef> {
        let e = self.head;
        // SAFETY: as in insert.
        if e.is_null() || unsafe { (*e).deadline } > now {
            return None;
        }
        // SAFETY: as in insert; read before unlinking.
        let thread = unsafe { (*e).thread };
        self.unlink(e);
        Some(thread)
    }

    fn next_deadline(&self) -> Option<u64> {
        // SAFETY: as in insert.
        (!self.head.is_null()).then(|| unsafe { (*self.head).deadline })
    }
}

static CORES: [AtomicPtr<Core>; MAX_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];

/// The scheduler of `cpu`, once that cpu has set it up.
pub(crate) fn core(cpu: usize) -> Option<&'static Core> {
    let core = CORES.get(cpu)?.load(Ordering::Acquire);
    // SAFETY: published cores live for good.
    (!core.is_null()).then(|| unsafe { &*core })
}

fn this_core() -> &'static Core {
    core(percpu::cpu_id()).expect("scheduler used on a cpu before its init")
}

/// This cpu's local state.
///
/// # Safety
/// Interrupts must be off, and the pointer used only in short statements
/// that do not overlap another use (no reference kept across a switch or
/// a call back into the scheduler).
unsafe fn local() -> *mut Local {
    this_core().local.get()
}

/// Sets up this cpu's scheduler in memory of its node.
pub(crate) fn init_this_cpu() {
    let cpu = percpu::cpu_id();
    let node = percpu::this().node;
    let core = Box::leak(Box::new(Core {
        mailbox: Mailbox::new(node),
        local: UnsafeCell::new(Local {
            run_queue: RunQueue { head: core::ptr::null_mut(), tail: core::ptr::null_mut() },
            timers: Timers { head: core::ptr::null_mut() },
            current: None,
            loop_rsp: 0,
            finished: None,
            spare_stacks: alloc::vec::Vec::with_capacity(SPARE_STACKS),
            next_thread: 1,
        }),
        threads: AtomicUsize::new(0),
        runnable: AtomicUsize::new(0),
    }));
    CORES[cpu].store(core, Ordering::Release);
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
    let (seq, spare) = interrupts::without_interrupts(|| {
        // SAFETY: interrupts are off; one short use.
        let l = unsafe { &mut *local() };
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
    // memory is exhausted); it is freed as a Box when the thread finishes.
    let block = alloc_control_block().ok_or(SpawnError::OutOfMemory)?;
    // SAFETY: `block` is fresh memory with Thread's layout from the global
    // allocator, so writing it and treating it as a leaked Box is sound.
    let thread = unsafe {
        block.write(Thread::new(id, cpu, stack, entry));
        &mut *block
    };
    // SAFETY: the stack is new and unused; its top is page aligned.
    let rsp = unsafe { context::prepare_stack(thread.stack.top(), thread_main, thread as *mut Thread as usize) };
    *thread.rsp.get_mut() = rsp;
    this_core().threads.fetch_add(1, Ordering::Relaxed);
    make_runnable(ThreadRef::new(thread));
    Ok(id)
}

/// Memory for one control block from the global allocator, or None.
fn alloc_control_block() -> Option<*mut Thread> {
    let layout = core::alloc::Layout::new::<Thread>();
    // SAFETY: Thread has a non-zero size.
    let block = unsafe { alloc::alloc::alloc(layout) } as *mut Thread;
    (!block.is_null()).then_some(block)
}

/// Queues a thread of this cpu that was woken.
pub(crate) fn make_runnable(thread: ThreadRef) {
    debug_assert_eq!(thread.cpu, percpu::cpu_id());
    interrupts::without_interrupts(|| {
        queue(thread);
    });
}

/// Appends a thread of this cpu to its run queue. Interrupts must be off.
fn queue(thread: ThreadRef) {
    // SAFETY: interrupts are off (the caller's contract); one short use.
    unsafe { (*local()).run_queue.push_back(thread) };
    let core = this_core();
    // Only this cpu writes its count, with interrupts off.
    core.runnable.store(core.runnable.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Wakes `thread` (any cpu's): queues it here, or asks its cpu by message.
pub(crate) fn wake(thread: ThreadRef) {
    if thread.notify() {
        if thread.cpu == percpu::cpu_id() {
            make_runnable(thread);
        } else {
            mailbox::send(thread.cpu, Message::Wake(thread));
        }
    }
}

/// The thread running on this cpu (None in the scheduler loop).
pub(crate) fn current() -> Option<ThreadRef> {
    interrupts::without_interrupts(|| {
        // SAFETY: interrupts are off; one short read.
        unsafe { (*local()).current }
    })
}

/// Switches from the running thread to the scheduler loop. Interrupts
/// must be off; they are off again when the thread is resumed.
fn switch_to_loop(thread: ThreadRef) {
    // SAFETY: interrupts are off; the loop's stack pointer was saved when
    // it switched to this thread, and the loop is not running.
    unsafe {
        let loop_rsp = (*local()).loop_rsp;
        context::switch(thread.rsp.get(), loop_rsp);
    }
}

/// Lets the other runnable threads of this cpu run first.
pub fn yield_now() {
    let Some(thread) = current() else { return };
    interrupts::without_interrupts(|| {
        queue(thread);
        switch_to_loop(thread);
    });
}

/// Parks the running thread until [`wake`] (or its timer) wakes it, or
/// `deadline` (TSC ticks) passes. Spurious returns are possible; callers
/// re-check what they wait for.
pub(crate) fn park(deadline: Option<u64>) {
    let thread = current().expect("only threads can block");
    interrupts::without_interrupts(|| {
        let mut entry = TimerEntry { deadline: 0, thread, prev: core::ptr::null_mut(), next: core::ptr::null_mut(), linked: false };
        let entry: *mut TimerEntry = &mut entry;
        if let Some(d) = deadline {
            // SAFETY: interrupts are off; the entry outlives its time in the
            // list (it is unlinked below, before this frame ends).
            unsafe {
                (*entry).deadline = d;
                (*local()).timers.insert(entry);
            }
        }
        if thread.prepare_park() {
            switch_to_loop(thread);
            thread.finish_park();
        }
        // SAFETY: interrupts are off; an expired entry was unlinked when it
        // fired, otherwise it is unlinked here.
        unsafe {
            if (*entry).linked {
                (*local()).timers.unlink(entry);
            }
        }
    });
}

/// The first code of every thread, on its own stack.
extern "C" fn thread_main(arg: usize) -> ! {
    // SAFETY: `arg` is the control block create_local made for this thread.
    let thread = unsafe { &*(arg as *const Thread) };
    // SAFETY: only this thread touches its entry, once.
    let entry = unsafe { (*thread.entry.get()).take() }.expect("a thread's entry runs once");
    interrupts::enable();
    entry();
    interrupts::disable();
    this_core().threads.fetch_sub(1, Ordering::Relaxed);
    // SAFETY: interrupts are off. The loop frees the control block (and
    // this stack) after switching away from it, never before.
    unsafe {
        let l = local();
        (*l).finished = Some(Box::from_raw(arg as *mut Thread));
        let loop_rsp = (*l).loop_rsp;
        context::switch(thread.rsp.get(), loop_rsp);
    }
    unreachable!("a finished thread is never resumed");
}

/// Handles one message addressed to this cpu.
fn receive(message: Message) {
    match message {
        Message::Wake(thread) => make_runnable(thread),
        Message::Spawn { entry, requester } => {
            let value = create_local(entry, super::STACK_SIZE).map_or(0, ThreadId::as_raw);
            mailbox::send(requester.cpu, Message::Reply { requester, value });
        }
        Message::Reply { requester, value } => {
            requester.reply.store(value, Ordering::Release);
            wake(requester);
        }
        Message::Ping { requester } => mailbox::send(requester.cpu, Message::Reply { requester, value: 1 }),
        Message::Run(f) => f(),
    }
}

/// Wakes the threads whose timers expired; returns the next deadline.
fn fire_timers() -> Option<u64> {
    let now = tsc::now();
    // SAFETY: called from the loop with interrupts off; short uses.
    while let Some(thread) = unsafe { (*local()).timers.pop_due(now) } {
        wake(thread);
    }
    // SAFETY: as above.
    unsafe { (*local()).timers.next_deadline() }
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

/// This cpu's scheduler loop; never returns. The calling context (the
/// boot stack, or a secondary cpu's own stack) becomes the loop.
pub(crate) fn run() -> ! {
    interrupts::disable();
    let core = this_core();
    let cpu = percpu::this();
    loop {
        crate::memory::lazy::between_threads();
        core.mailbox.drain(receive);
        let next_timer = fire_timers();
        // SAFETY: interrupts are off; the finished thread's stack is not
        // the one we run on.
        if let Some(thread) = unsafe { (*local()).finished.take() } {
            let stack = (*thread).into_stack();
            // SAFETY: as above; one short use.
            let spares = unsafe { &mut (*local()).spare_stacks };
            let small = stack.committed_bytes() <= SPARE_COMMITTED_MAX;
            if stack.usable_size() == super::STACK_SIZE && small && spares.len() < SPARE_STACKS {
                spares.push(stack);
            }
        }
        // SAFETY: interrupts are off; one short use.
        let next = unsafe { (*local()).run_queue.pop_front() };
        if let Some(thread) = next {
            // Only this cpu writes its count, with interrupts off: no
            // read-modify-write is needed.
            core.runnable.store(core.runnable.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
            // SAFETY: interrupts are off; the thread is runnable, so it is
            // switched out with a saved stack pointer, and belongs here.
            unsafe {
                let l = local();
                (*l).current = Some(thread);
                cpu.thread_stack_guard.store(thread.stack.guard(), Ordering::Relaxed);
                context::switch(&raw mut (*l).loop_rsp, *thread.rsp.get());
                cpu.thread_stack_guard.store(0, Ordering::Relaxed);
                (*local()).current = None;
            }
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
            interrupts::enable_and_hlt();
            interrupts::disable();
        }
        cpu.halted.store(false, Ordering::SeqCst);
    }
}
