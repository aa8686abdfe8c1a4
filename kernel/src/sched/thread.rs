//! A thread's control block, its id, parking (the one way a thread sleeps
//! until something — another thread, a timer, a message, an interrupt
//! handler — wakes it), and [`ThreadList`], the lists threads wait in (run
//! queue, timers, wait queues), linked through the control blocks.

use alloc::boxed::Box;
use core::cell::Cell;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use bravo_collections::list::{Adapter, Link, List};

use crate::memory::stack::GuardedStack;

/// A thread's id: the cpu it runs on and a number unique on that cpu.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadId(u64);

const CPU_SHIFT: u32 = 40;

impl ThreadId {
    /// The id of thread number `seq` of `cpu`.
    pub(crate) fn new(cpu: usize, seq: u64) -> Self {
        Self(((cpu as u64) << CPU_SHIFT) | (seq & ((1 << CPU_SHIFT) - 1)))
    }

    /// The id whose [`as_raw`](Self::as_raw) is `raw` (`None` for 0, which
    /// is no thread's).
    pub(crate) fn from_raw(raw: u64) -> Option<Self> {
        (raw != 0).then_some(Self(raw))
    }

    /// The id as one number (never 0).
    pub(crate) fn as_raw(self) -> u64 {
        self.0
    }

    /// The cpu the thread runs on (for its whole life).
    pub fn cpu(self) -> usize {
        (self.0 >> CPU_SHIFT) as usize
    }
}

impl fmt::Debug for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ThreadId({}.{})", self.cpu(), self.0 & ((1 << CPU_SHIFT) - 1))
    }
}

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}.{}", self.cpu(), self.0 & ((1 << CPU_SHIFT) - 1))
    }
}

/// Park states.
const EMPTY: u8 = 0;
const PARKED: u8 = 1;
const NOTIFIED: u8 = 2;

/// A thread's control block. It lives in memory of its cpu's node, is
/// touched by other cpus only through its atomics, and is freed by its
/// own cpu once the thread has finished.
pub(crate) struct Thread {
    /// The thread's id.
    pub id: ThreadId,
    /// The cpu it runs on (for its whole life).
    pub cpu: usize,
    /// The saved stack pointer while the thread is switched out (written
    /// by `context::switch` through its address).
    pub rsp: AtomicU64,
    park: AtomicU8,
    /// Where a reply to this thread's request to another cpu lands.
    pub reply: AtomicU64,
    /// Its stack (kept as a spare, or freed, when it finishes).
    pub stack: GuardedStack,
    /// What the thread runs; taken by the thread when it starts.
    pub entry: spin::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Its place in its cpu's run queue (only that cpu touches it, with
    /// interrupts off).
    run_link: Link,
    /// Its place in its cpu's timers while it sleeps with a deadline (only
    /// that cpu touches it, with interrupts off).
    timer_link: Link,
    /// When its timer fires (TSC ticks), while it is in the timers.
    pub deadline: Cell<u64>,
    /// Its place in the wait queue it waits on (only under that queue's
    /// lock).
    wait_link: Link,
}

bravo_collections::adapter!(
    /// Links threads into a cpu's run queue.
    pub(crate) RunLink = Thread { run_link: Link }
);
bravo_collections::adapter!(
    /// Links threads into a cpu's timers.
    pub(crate) TimerLink = Thread { timer_link: Link }
);
bravo_collections::adapter!(
    /// Links threads into a wait queue.
    pub(crate) WaitLink = Thread { wait_link: Link }
);

impl Thread {
    /// A control block for a thread that has not started yet.
    pub fn new(id: ThreadId, cpu: usize, stack: GuardedStack, entry: Box<dyn FnOnce() + Send>) -> Self {
        Self {
            id,
            cpu,
            rsp: AtomicU64::new(0),
            park: AtomicU8::new(EMPTY),
            reply: AtomicU64::new(0),
            stack,
            entry: spin::Mutex::new(Some(entry)),
            run_link: Link::new(),
            timer_link: Link::new(),
            deadline: Cell::new(0),
            wait_link: Link::new(),
        }
    }

    /// Frees the control block, keeping the stack.
    pub fn into_stack(self) -> GuardedStack {
        let Thread { stack, .. } = self;
        stack
    }

    /// Marks the thread as about to park. Returns false when a wake-up is
    /// already pending (consumed here), so the thread must not sleep.
    pub fn prepare_park(&self) -> bool {
        if self.park.compare_exchange(NOTIFIED, EMPTY, Ordering::Acquire, Ordering::Acquire).is_ok() {
            return false;
        }
        match self.park.compare_exchange(EMPTY, PARKED, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(_) => {
                self.park.store(EMPTY, Ordering::Release);
                false
            }
        }
    }

    /// Called when the thread runs again after parking.
    pub fn finish_park(&self) {
        self.park.store(EMPTY, Ordering::Release);
    }

    /// Leaves a wake-up for the thread. Returns true when it was parked,
    /// so the caller must make it runnable (on its cpu).
    pub fn notify(&self) -> bool {
        self.park.swap(NOTIFIED, Ordering::AcqRel) == PARKED
    }
}

/// A pointer to a live thread control block, passed between cpus.
///
/// Whoever holds one must know the thread cannot finish meanwhile: a
/// parked thread waits for exactly the wake-up the holder will deliver
/// (wait queues remove a waiter under their lock before waking it; a
/// thread waiting for a reply does not return before the reply came).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThreadRef(NonNull<Thread>);

// SAFETY: other cpus reach the control block only through its atomics,
// its locks, its ids and its wait-queue link under the queue's lock; its
// run-queue and timer links and its deadline are touched only by its own
// cpu. See the lifetime rule above.
unsafe impl Send for ThreadRef {}

impl ThreadRef {
    /// Hands a new control block over to its thread: it is freed (with
    /// `Box::from_raw` on [`as_ptr`](Self::as_ptr)) once the thread has
    /// finished.
    pub fn leak(thread: Box<Thread>) -> Self {
        Self(NonNull::from(Box::leak(thread)))
    }

    /// The control block's address.
    pub fn as_ptr(self) -> *mut Thread {
        self.0.as_ptr()
    }
}

impl core::ops::Deref for ThreadRef {
    type Target = Thread;

    fn deref(&self) -> &Thread {
        // SAFETY: a ThreadRef is only held while the thread is alive (see
        // the type's documentation).
        unsafe { self.0.as_ref() }
    }
}

/// Threads linked through their `A` link, oldest (or soonest) first: a
/// cpu's run queue ([`RunLink`]) or timers ([`TimerLink`]), or a wait
/// queue ([`WaitLink`]). Linking never allocates.
///
/// It relies on rules its users in `sched` and `sync` keep: a thread's
/// `RunLink` and `TimerLink` are linked only in its own cpu's run queue
/// and timers (reached only by that cpu, with interrupts off), and its
/// `WaitLink` only in the one wait queue it waits on (under that queue's
/// lock); and a thread is in no list when it finishes (it is running then,
/// and it leaves its timer and its wait queue before it returns from
/// waiting), so every linked thread is alive.
pub(crate) struct ThreadList<A: Adapter<Item = Thread>> {
    list: List<A>,
}

impl<A: Adapter<Item = Thread>> ThreadList<A> {
    /// An empty list.
    pub const fn new() -> Self {
        Self { list: List::new() }
    }

    /// Whether no thread is linked.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The first thread, left linked.
    pub fn front(&self) -> Option<&Thread> {
        self.list.front()
    }

    /// Unlinks and returns the first thread.
    pub fn pop_front(&mut self) -> Option<ThreadRef> {
        self.list.pop_front().map(ThreadRef)
    }

    /// Links `thread` at the end.
    ///
    /// # Panics
    /// If the thread is linked through this link already.
    pub fn push_back(&mut self, thread: ThreadRef) {
        // SAFETY: the control block is alive while linked and never moved
        // or borrowed mutably (it is reached through ThreadRefs only), and
        // its link is read only where this list is reachable (the rules
        // above).
        unsafe { self.list.push_back(thread.0) }
    }

    /// Links `thread` before the first thread `t` with
    /// `goes_before(thread, t)` (at the end if none).
    ///
    /// # Panics
    /// If the thread is linked through this link already.
    pub fn insert_sorted(&mut self, thread: ThreadRef, goes_before: impl FnMut(&Thread, &Thread) -> bool) {
        // SAFETY: as in `push_back`.
        unsafe { self.list.insert_sorted(thread.0, goes_before) }
    }

    /// Unlinks `thread` if it is linked; returns whether it was.
    pub fn remove(&mut self, thread: ThreadRef) -> bool {
        // SAFETY: the control block is alive (ThreadRef), and when linked
        // through this link it is linked in this list: the only list of
        // its kind it can be in (the rules above).
        unsafe { self.list.remove(thread.0) }
    }
}
