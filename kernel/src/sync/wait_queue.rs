//! A queue of threads waiting for a condition; the building block of every
//! blocking call (join, mutex, channel, and later sockets and drivers).
//!
//! Waiters sleep (parked, using no cpu) until a `notify_*` wakes them;
//! notifiers may run on any cpu or in an interrupt handler. A waiter is
//! removed from the queue under the queue's lock before it is woken, and a
//! waiter that gives up (timeout) removes itself under the same lock, so a
//! wake-up never reaches a thread that has moved on.
//!
//! The queue is an intrusive list whose entries live on the waiting
//! threads' own stacks, so waiting never allocates.

use core::ptr::null_mut;
use core::time::Duration;

use x86_64::instructions::interrupts::without_interrupts;

use crate::arch::tsc;
use crate::sched::scheduler::{current, park, wake};
use crate::sched::thread::ThreadRef;

/// Threads sleeping until a condition holds, woken by whoever makes it
/// hold.
pub struct WaitQueue {
    waiters: spin::Mutex<List>,
}

/// A waiting thread's entry, on its stack while it waits.
struct Waiter {
    thread: ThreadRef,
    prev: *mut Waiter,
    next: *mut Waiter,
    linked: bool,
}

/// The waiters, oldest first. Only touched under the queue's lock.
struct List {
    head: *mut Waiter,
    tail: *mut Waiter,
}

// SAFETY: the entries are reached only under the queue's lock, and each
// entry stays valid while linked (its thread does not return from waiting
// before it is unlinked, see `wait_until_deadline`).
unsafe impl Send for List {}

impl List {
    fn push_back(&mut self, w: *mut Waiter) {
        // SAFETY: `w` is a live, unlinked entry; the list's entries are
        // live while linked (see above).
        unsafe {
            (*w).prev = self.tail;
            (*w).next = null_mut();
            (*w).linked = true;
            match self.tail.is_null() {
                true => self.head = w,
                false => (*self.tail).next = w,
            }
        }
        self.tail = w;
    }

    fn unlink(&mut self, w: *mut Waiter) {
        // SAFETY: `w` is a live entry of this list.
        unsafe {
            let (prev, next) = ((*w).prev, (*w).next);
            match prev.is_null() {
                true => self.head = next,
                false => (*prev).next = next,
            }
            match next.is_null() {
                true => self.tail = prev,
                false => (*next).prev = prev,
            }
            (*w).linked = false;
        }
    }

    /// Unlinks the oldest waiter and returns its thread.
    fn pop_front(&mut self) -> Option<ThreadRef> {
        let w = self.head;
        if w.is_null() {
            return None;
        }
        // SAFETY: linked entries are live; the thread is read before the
        // entry is unlinked (after which its owner may return).
        let thread = unsafe { (*w).thread };
        self.unlink(w);
        Some(thread)
    }
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        Self { waiters: spin::Mutex::new(List { head: null_mut(), tail: null_mut() }) }
    }

    /// Sleeps until `condition` returns `Some`, and returns that.
    pub fn wait_until<R>(&self, mut condition: impl FnMut() -> Option<R>) -> R {
        loop {
            if let Some(r) = self.wait_until_deadline(&mut condition, None) {
                return r;
            }
        }
    }

    /// Like [`wait_until`](Self::wait_until), giving up after `timeout`
    /// (then returns `None`).
    pub fn wait_timeout<R>(&self, mut condition: impl FnMut() -> Option<R>, timeout: Duration) -> Option<R> {
        let deadline = tsc::now().saturating_add(crate::time::duration_to_ticks(timeout));
        self.wait_until_deadline(&mut condition, Some(deadline))
    }

    fn wait_until_deadline<R>(&self, condition: &mut impl FnMut() -> Option<R>, deadline: Option<u64>) -> Option<R> {
        let mut entry = Waiter { thread: current().expect("only threads can wait"), prev: null_mut(), next: null_mut(), linked: false };
        let me: *mut Waiter = &mut entry;
        loop {
            if let Some(r) = condition() {
                return Some(r);
            }
            if deadline.is_some_and(|d| tsc::now() >= d) {
                return None;
            }
            let registered = without_interrupts(|| {
                let mut waiters = self.waiters.lock();
                // Checked again under the lock: a notifier changes the
                // condition first and takes the lock second, so either we
                // see the change or it sees us.
                match condition() {
                    Some(r) => Err(r),
                    None => {
                        waiters.push_back(me);
                        Ok(())
                    }
                }
            });
            if let Err(r) = registered {
                return Some(r);
            }
            park(deadline);
            // Unlinked by a notifier, or still linked (a timeout or a
            // spurious wake-up): either way not linked once the lock is
            // released, so the entry may go out of scope.
            without_interrupts(|| {
                let mut waiters = self.waiters.lock();
                // SAFETY: our own entry; `linked` changes only under the lock.
                if unsafe { (*me).linked } {
                    waiters.unlink(me);
                }
            });
        }
    }

    /// Wakes the longest-waiting thread; returns whether there was one.
    pub fn notify_one(&self) -> bool {
        without_interrupts(|| {
            let mut waiters = self.waiters.lock();
            match waiters.pop_front() {
                Some(thread) => {
                    wake(thread);
                    true
                }
                None => false,
            }
        })
    }

    /// Wakes every waiting thread; returns how many there were.
    pub fn notify_all(&self) -> usize {
        without_interrupts(|| {
            let mut waiters = self.waiters.lock();
            let mut n = 0;
            while let Some(thread) = waiters.pop_front() {
                wake(thread);
                n += 1;
            }
            n
        })
    }

    /// Whether no thread waits.
    pub fn is_empty(&self) -> bool {
        without_interrupts(|| self.waiters.lock().head.is_null())
    }
}
