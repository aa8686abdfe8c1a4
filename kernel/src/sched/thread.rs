//! A thread's control block, its id, and parking: the one way a thread
//! sleeps until something (another thread, a timer, a message, an
//! interrupt handler) wakes it.

use alloc::boxed::Box;
use core::cell::UnsafeCell;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

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
    pub id: ThreadId,
    pub cpu: usize,
    /// The saved stack pointer while the thread is switched out (written
    /// by `context::switch` through its address).
    pub rsp: AtomicU64,
    park: AtomicU8,
    /// Where a reply to this thread's request to another cpu lands.
    pub reply: AtomicU64,
    pub stack: GuardedStack,
    /// What the thread runs; taken by the thread when it starts.
    pub entry: spin::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// The next thread in its cpu's run queue (only that cpu touches it,
    /// with interrupts off; a thread is queued at most once).
    pub run_next: UnsafeCell<*mut Thread>,
}

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
            run_next: UnsafeCell::new(core::ptr::null_mut()),
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

// SAFETY: the control block is shared only through its atomics, its
// lock and its ids (its run-queue link is touched only by its own cpu);
// see the lifetime rule above.
unsafe impl Send for ThreadRef {}

impl ThreadRef {
    /// Refers to `thread` (which must stay alive while the reference is
    /// held, see the type's documentation).
    pub fn new(thread: &Thread) -> Self {
        Self(NonNull::from(thread))
    }

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
