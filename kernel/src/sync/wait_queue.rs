//! A queue of threads waiting for a condition; the building block of every
//! blocking call (join, mutex, channel, and later sockets and drivers).
//!
//! Waiters sleep (parked, using no cpu) until a `notify_*` wakes them;
//! notifiers may run on any cpu or in an interrupt handler. A waiter is
//! removed from the queue under the queue's lock before it is woken, and a
//! waiter that gives up (timeout) removes itself under the same lock, so a
//! wake-up never reaches a thread that has moved on.
//!
//! The queue is an intrusive list linked through the waiting threads'
//! control blocks (a thread waits in one queue at a time), so waiting
//! never allocates.

use core::time::Duration;

use crate::arch::{irq, tsc};
use crate::sched::scheduler::{current, park, wake};
use crate::sched::thread::{ThreadList, WaitLink};

/// Threads sleeping until a condition holds, woken by whoever makes it
/// hold.
pub struct WaitQueue {
    /// The waiters, oldest first, linked through their control blocks.
    waiters: spin::Mutex<ThreadList<WaitLink>>,
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        Self { waiters: spin::Mutex::new(ThreadList::new()) }
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
        let me = current().expect("only threads can wait");
        loop {
            if let Some(r) = condition() {
                return Some(r);
            }
            if deadline.is_some_and(|d| tsc::now() >= d) {
                return None;
            }
            let registered = irq::without(|_| {
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
            // released, so the thread may wait elsewhere or finish.
            irq::without(|_| self.waiters.lock().remove(me));
        }
    }

    /// Wakes the longest-waiting thread; returns whether there was one.
    pub fn notify_one(&self) -> bool {
        irq::without(|_| {
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
        irq::without(|_| {
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
        irq::without(|_| self.waiters.lock().is_empty())
    }
}
