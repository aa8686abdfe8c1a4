//! Blocking synchronization for threads on any cpu: [`WaitQueue`] (for
//! drivers and sockets), [`Mutex`] and [`channel`] (for applications).
//! A thread that waits sleeps until woken; none of these spin. Built on
//! `sched`'s parking (this module sits above it) with no unsafe code.

#![forbid(unsafe_code)]

pub mod channel;
mod mutex;
mod wait_queue;

pub use mutex::{Mutex, MutexGuard};
pub use wait_queue::WaitQueue;
