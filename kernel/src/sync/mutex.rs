//! A mutual-exclusion lock whose waiters sleep instead of spinning: a
//! spin lock that is only ever *tried*, and a wait queue for the threads
//! that found it taken.

use core::ops::{Deref, DerefMut};

use super::WaitQueue;

/// A lock for data shared by threads on any cpus; a thread that finds it
/// taken sleeps until it is released.
///
/// ```no_run
/// # #![no_std]
/// # #![no_main]
/// # bravo::main!(main);
/// # extern crate alloc;
/// # fn main() {
/// use alloc::sync::Arc;
/// use bravo::sync::Mutex;
/// use bravo::thread;
///
/// let hits = Arc::new(Mutex::new(0u64));
/// let workers: alloc::vec::Vec<_> = (0..thread::cpu_count())
///     .filter_map(|cpu| {
///         let hits = hits.clone();
///         thread::spawn_on(cpu, move || *hits.lock() += 1).ok()
///     })
///     .collect();
/// for worker in workers {
///     worker.join();
/// }
/// bravo::println!("{} threads ran", *hits.lock());
/// # }
/// ```
pub struct Mutex<T: ?Sized> {
    waiters: WaitQueue,
    value: spin::Mutex<T>,
}

impl<T> Mutex<T> {
    /// An unlocked mutex holding `value`.
    pub const fn new(value: T) -> Self {
        Self { waiters: WaitQueue::new(), value: spin::Mutex::new(value) }
    }

    /// The value, taking the mutex apart.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Takes the lock, sleeping while another thread holds it.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        if let Some(guard) = self.try_lock() {
            return guard;
        }
        self.waiters.wait_until(|| self.try_lock())
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.value.try_lock().map(|value| MutexGuard { value: Some(value), waiters: &self.waiters })
    }
}

/// Access to a [`Mutex`]'s value; unlocks (and wakes one waiter) on drop.
pub struct MutexGuard<'a, T: ?Sized> {
    /// Always `Some` until the guard is dropped, which unlocks before it
    /// wakes a waiter (woken first, the waiter would find it still locked
    /// and sleep again, with no one left to wake it).
    value: Option<spin::MutexGuard<'a, T>>,
    waiters: &'a WaitQueue,
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.value.as_deref().expect("a live guard holds the lock")
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_deref_mut().expect("a live guard holds the lock")
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        drop(self.value.take());
        self.waiters.notify_one();
    }
}
