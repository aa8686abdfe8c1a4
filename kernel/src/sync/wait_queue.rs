//! A queue of threads waiting for a condition; the building block of every
//! blocking call (join, mutex, channel, and later sockets and drivers).
//!
//! Waiters sleep (parked, using no cpu) until a `notify_*` wakes them;
//! notifiers may run on any cpu or in an interrupt handler. A waiter is
//! removed from the queue under the queue's lock before it is woken, and a
//! waiter that gives up (timeout) removes itself under the same lock, so a
//! wake-up never reaches a thread that has moved on.

use alloc::collections::VecDeque;
use core::time::Duration;

use x86_64::instructions::interrupts::without_interrupts;

use crate::arch::tsc;
use crate::sched::scheduler::{current, park, wake};
use crate::sched::thread::ThreadRef;

pub struct WaitQueue {
    waiters: spin::Mutex<VecDeque<ThreadRef>>,
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitQueue {
    pub const fn new() -> Self {
        Self { waiters: spin::Mutex::new(VecDeque::new()) }
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
        let deadline = tsc::now().saturating_add(crate::sched::duration_to_ticks(timeout));
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
            without_interrupts(|| {
                let mut waiters = self.waiters.lock();
                if let Some(at) = waiters.iter().position(|w| *w == me) {
                    waiters.remove(at);
                }
            });
        }
    }

    /// Wakes the longest-waiting thread; returns whether there was one.
    pub fn notify_one(&self) -> bool {
        without_interrupts(|| {
            let mut waiters = self.waiters.lock();
            match waiters.pop_front() {
                Some(w) => {
                    wake(w);
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
            let n = waiters.len();
            for w in waiters.drain(..) {
                wake(w);
            }
            n
        })
    }

    /// Whether no thread waits.
    pub fn is_empty(&self) -> bool {
        without_interrupts(|| self.waiters.lock().is_empty())
    }
}
