//! Blocking synchronization for threads on any cpu: [`WaitQueue`] (for
//! drivers and sockets), [`Mutex`] and [`channel`] (for applications).
//! A thread that waits sleeps until woken; none of these spin.

pub mod channel;
mod mutex;
mod wait_queue;

pub use mutex::{Mutex, MutexGuard};
pub use wait_queue::WaitQueue;
