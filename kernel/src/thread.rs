//! Threads for applications: start them on any cpu, wait for their
//! results, sleep, yield, and see where they run.
//!
//! Each cpu runs its own cooperative scheduler (`sched`), and a thread
//! stays on the cpu that created it for its whole life. A thread for
//! another cpu is created *by that cpu*: [`spawn_on`] sends the closure in
//! a message; the target allocates the control block and stack from its
//! own NUMA node, queues the thread and replies with its id, while the
//! caller sleeps until the reply (two message hops).
//!
//! This module sits above both `sched` (threads, parking) and `sync` (the
//! wait queue a [`JoinHandle`] waits on).

#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};

pub use crate::sched::{
    cpu_count, cpus_online, current_cpu, current_id, ping, runnable_on, sleep, threads_on, yield_now, SpawnError,
    ThreadId,
};
use crate::sync::WaitQueue;

/// The result of a thread, shared between it and its [`JoinHandle`].
struct Packet<T> {
    result: spin::Mutex<Option<T>>,
    done: AtomicBool,
    joiner: WaitQueue,
}

/// Owns a spawned thread's result: [`join`](JoinHandle::join) waits for
/// the thread to finish and returns what its closure returned. Dropping
/// the handle detaches the thread.
pub struct JoinHandle<T> {
    id: ThreadId,
    packet: Arc<Packet<T>>,
}

impl<T> JoinHandle<T> {
    /// The thread's id (its cpu is `id().cpu()`).
    pub fn id(&self) -> ThreadId {
        self.id
    }

    /// Whether the thread has finished.
    pub fn is_finished(&self) -> bool {
        self.packet.done.load(Ordering::Acquire)
    }

    /// Sleeps until the thread finishes and returns its result. (A panic
    /// in any thread ends the whole VM, so there is no error case.)
    pub fn join(self) -> T {
        let packet = &self.packet;
        packet.joiner.wait_until(|| packet.done.load(Ordering::Acquire).then_some(()));
        packet.result.lock().take().expect("a finished thread left its result")
    }
}

/// Wraps `f` so that its result lands in a packet and wakes the joiner.
fn with_packet<F, T>(f: F) -> (Box<dyn FnOnce() + Send>, Arc<Packet<T>>)
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let packet =
        Arc::new(Packet { result: spin::Mutex::new(None), done: AtomicBool::new(false), joiner: WaitQueue::new() });
    let theirs = packet.clone();
    let entry = Box::new(move || {
        let value = f();
        *theirs.result.lock() = Some(value);
        theirs.done.store(true, Ordering::Release);
        theirs.joiner.notify_all();
    });
    (entry, packet)
}

/// Starts a thread running `f` on the current cpu.
///
/// # Panics
/// When memory for its stack is exhausted (use [`spawn_on`] with
/// [`current_cpu`] to get an error instead).
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn_on(current_cpu(), f).unwrap_or_else(|e| panic!("spawn: {e}"))
}

/// Starts a thread running `f` on `cpu`. For another cpu the closure goes
/// there by message and that cpu creates the thread with its own node's
/// memory; the caller sleeps until it replies with the new thread's id.
///
/// ```no_run
/// # #![no_std]
/// # #![no_main]
/// # bravo::main!(main);
/// # fn main() -> Result<(), bravo::thread::SpawnError> {
/// use bravo::thread;
///
/// // One thread per cpu, each summing its share; join collects the sums.
/// let cpus = thread::cpu_count();
/// let mut handles = alloc::vec::Vec::new();
/// for cpu in 0..cpus {
///     handles.push(thread::spawn_on(cpu, move || (cpu..1000).step_by(cpus).sum::<usize>())?);
/// }
/// let total: usize = handles.into_iter().map(|h| h.join()).sum();
/// assert_eq!(total, (0..1000).sum());
/// # Ok(()) }
/// # extern crate alloc;
/// ```
pub fn spawn_on<F, T>(cpu: usize, f: F) -> Result<JoinHandle<T>, SpawnError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (entry, packet) = with_packet(f);
    let id = crate::sched::spawn_entry_on(cpu, entry)?;
    Ok(JoinHandle { id, packet })
}
