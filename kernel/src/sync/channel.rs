//! Channels: any number of senders on any cpus, one receiver that sleeps
//! until a value arrives or every sender is gone.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::time::Duration;

use super::WaitQueue;
use crate::arch::irq;

struct Shared<T> {
    queue: spin::Mutex<VecDeque<T>>,
    senders: AtomicUsize,
    receiver_alive: AtomicBool,
    receiver: WaitQueue,
}

/// Sends values to the channel's [`Receiver`]; clone it for more senders.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// Receives the values sent, in the order each sender sent them.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// The receiver is gone; the value comes back.
#[derive(Debug, PartialEq, Eq)]
pub struct SendError<T>(pub T);

/// Why nothing was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvError {
    /// Every sender is gone and the channel is empty.
    Disconnected,
    /// Nothing arrived in time (or, for `try_recv`, nothing is there).
    Empty,
}

/// A new channel (unbounded).
///
/// ```no_run
/// # #![no_std]
/// # #![no_main]
/// # bravo::main!(main);
/// # fn main() {
/// use bravo::sync::channel;
/// use bravo::thread;
///
/// // Work for a thread on the last cpu, and its answers.
/// let (jobs, inbox) = channel::channel::<u64>();
/// let (answers_send, answers) = channel::channel::<u64>();
/// let last = thread::cpu_count() - 1;
/// let worker = thread::spawn_on(last, move || {
///     while let Ok(n) = inbox.recv() {
///         let _ = answers_send.send(n * n);
///     }
/// });
/// for n in 1..=3 {
///     let _ = jobs.send(n);
/// }
/// drop(jobs); // the worker's recv fails once the queue is empty: it ends
/// let sum: u64 = (0..3).filter_map(|_| answers.recv().ok()).sum();
/// bravo::println!("sum of squares: {sum}");
/// # let _ = worker;
/// # }
/// ```
pub fn channel<T: Send>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        queue: spin::Mutex::new(VecDeque::new()),
        senders: AtomicUsize::new(1),
        receiver_alive: AtomicBool::new(true),
        receiver: WaitQueue::new(),
    });
    (Sender { shared: shared.clone() }, Receiver { shared })
}

impl<T> Sender<T> {
    /// Queues `value` and wakes the receiver; fails only when the receiver
    /// was dropped.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        if !self.shared.receiver_alive.load(Ordering::Acquire) {
            return Err(SendError(value));
        }
        irq::without(|_| self.shared.queue.lock().push_back(value));
        self.shared.receiver.notify_one();
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self { shared: self.shared.clone() }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.receiver.notify_all();
        }
    }
}

impl<T> Receiver<T> {
    fn poll(&self) -> Option<Result<T, RecvError>> {
        // Senders first, queue second: a last sender that sent and then
        // dropped is seen gone only together with what it sent.
        let disconnected = self.shared.senders.load(Ordering::Acquire) == 0;
        if let Some(value) = irq::without(|_| self.shared.queue.lock().pop_front()) {
            return Some(Ok(value));
        }
        disconnected.then_some(Err(RecvError::Disconnected))
    }

    /// Sleeps until a value arrives (or every sender is gone).
    pub fn recv(&self) -> Result<T, RecvError> {
        self.shared.receiver.wait_until(|| self.poll())
    }

    /// Like [`recv`](Self::recv), giving up after `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvError> {
        self.shared.receiver.wait_timeout(|| self.poll(), timeout).unwrap_or(Err(RecvError::Empty))
    }

    /// Takes a value if one is there, without sleeping.
    pub fn try_recv(&self) -> Result<T, RecvError> {
        self.poll().unwrap_or(Err(RecvError::Empty))
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.receiver_alive.store(false, Ordering::Release);
    }
}
