//! Which stacks have connections waiting for a listening port's
//! acceptors ([`AcceptReady`]): set by each stack's round (see `stack`),
//! taken by [`TcpListener::accept`](super::TcpListener::accept).

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;

use super::netcpus::{self, MAX_STACKS};
use crate::arch::tsc;
use crate::sync::WaitQueue;

/// How long a stack's waiting connections are left to the threads
/// accepting on its own cpu before any acceptor may take them.
const ACCEPT_NUDGE: Duration = Duration::from_millis(1);

/// Which stacks have connections waiting in a port's accept queue: set by
/// the stacks (each round, while their queue is not empty), taken by
/// [`TcpListener::accept`](super::TcpListener::accept), which sleeps until one is set.
///
/// The connections of a stack on whose cpu the service accepts are left
/// to the threads accepting there, and only they are woken for them
/// (others may take them once they have waited [`ACCEPT_NUDGE`] with none
/// of those in `accept`): a service accepting on every cpu takes each
/// connection where it lives, with no cross-cpu wake-up, and one
/// accepting on a single cpu takes them all at once.
pub struct AcceptReady {
    waiting: [AtomicBool; MAX_STACKS],
    /// Threads waiting in `accept` on each stack's cpu.
    acceptors: [AtomicUsize; MAX_STACKS],
    /// Whether a thread ever accepted on each stack's cpu: the service
    /// accepts on that cpu, and its connections are left to it.
    accepted_here: [AtomicBool; MAX_STACKS],
    /// When each stack's connections were last announced (TSC).
    announced: [AtomicU64; MAX_STACKS],
    /// Where those threads sleep, one queue per stack's cpu, and a last
    /// one for threads on cpus without a stack.
    wake: [WaitQueue; MAX_STACKS + 1],
}

impl AcceptReady {
    pub fn new() -> Self {
        AcceptReady {
            waiting: [const { AtomicBool::new(false) }; MAX_STACKS],
            acceptors: [const { AtomicUsize::new(0) }; MAX_STACKS],
            accepted_here: [const { AtomicBool::new(false) }; MAX_STACKS],
            announced: [const { AtomicU64::new(0) }; MAX_STACKS],
            wake: [const { WaitQueue::new() }; MAX_STACKS + 1],
        }
    }

    /// Stack `index` has connections waiting (told each round while it
    /// does): wakes its own cpu's acceptors if the service accepts there,
    /// else every acceptor; and every acceptor again when they have waited
    /// [`ACCEPT_NUDGE`] with no thread of their own cpu in `accept` (it
    /// is busy, or gone).
    pub fn signal(&self, index: usize) {
        let now = tsc::now();
        if !self.waiting[index].swap(true, Ordering::SeqCst) {
            self.announced[index].store(now, Ordering::Relaxed);
            if self.accepted_here[index].load(Ordering::SeqCst) {
                self.wake[index].notify_all();
            } else {
                self.wake_all();
            }
        } else if self.left_over(index, now) {
            self.announced[index].store(now, Ordering::Relaxed);
            self.wake_all();
        }
    }

    /// Whether stack `index`'s waiting connections are for any acceptor:
    /// none accepts on its cpu, or none has for [`ACCEPT_NUDGE`].
    fn left_over(&self, index: usize, now: u64) -> bool {
        !self.accepted_here[index].load(Ordering::SeqCst)
            || (self.acceptors[index].load(Ordering::SeqCst) == 0
                && now.saturating_sub(self.announced[index].load(Ordering::Relaxed))
                    >= crate::time::duration_to_ticks(ACCEPT_NUDGE))
    }

    fn wake_all(&self) {
        for queue in &self.wake {
            queue.notify_all();
        }
    }

    /// The queue a thread on `local`'s cpu (None: a cpu without a stack)
    /// sleeps on.
    pub fn queue(&self, local: Option<usize>) -> &WaitQueue {
        &self.wake[local.unwrap_or(MAX_STACKS)]
    }

    /// A stack with connections waiting for a thread on `local`'s cpu (or
    /// on a cpu without a stack): its own, or one with no thread of its
    /// own waiting, from `start` on in turn so that none starves; its
    /// mark taken.
    pub fn take_any(&self, start: usize, local: Option<usize>) -> Option<usize> {
        let (count, now) = (netcpus::count(), tsc::now());
        (0..count)
            .map(|i| (start + i) % count)
            .filter(|&i| Some(i) == local || self.left_over(i, now))
            .find(|&i| self.waiting[i].swap(false, Ordering::AcqRel))
    }
}

/// Counts a thread waiting in `accept` on a stack's cpu while it lives.
pub struct Acceptor<'a> {
    ready: &'a AcceptReady,
    local: Option<usize>,
}

impl<'a> Acceptor<'a> {
    pub fn enter(ready: &'a AcceptReady, local: Option<usize>) -> Self {
        if let Some(i) = local {
            ready.accepted_here[i].store(true, Ordering::SeqCst);
            ready.acceptors[i].fetch_add(1, Ordering::SeqCst);
        }
        Acceptor { ready, local }
    }
}

impl Drop for Acceptor<'_> {
    fn drop(&mut self) {
        // Connections its stack signalled to it alone meanwhile are taken
        // by its next call, or by the others after ACCEPT_NUDGE.
        if let Some(i) = self.local {
            self.ready.acceptors[i].fetch_sub(1, Ordering::SeqCst);
        }
    }
}
