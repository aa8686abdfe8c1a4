//! Threads: each cpu runs its own cooperative scheduler, and a thread
//! stays on the cpu that created it for its whole life.
//!
//! A thread for another cpu is created *by that cpu*: [`spawn_on`] sends
//! the closure in a message; the target allocates the control block and
//! stack from its own NUMA node, queues the thread and replies with its
//! id, while the caller sleeps until the reply (two message hops).
//!
//! Submodules: `thread` (control block, id, parking), `scheduler` (the
//! per-cpu run queue, timers and loop), `mailbox` (messages between cpus).

mod mailbox;
pub(crate) mod scheduler;
pub(crate) mod thread;

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;

pub use scheduler::{yield_now, SpawnError};
pub use thread::ThreadId;

use crate::arch::{percpu, tsc};
use crate::sync::WaitQueue;

/// Usable stack of every thread (above its guard page).
pub const STACK_SIZE: usize = 60 * 1024;
/// Usable stack of the application's main thread.
pub const MAIN_STACK_SIZE: usize = 252 * 1024;

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
    let packet = Arc::new(Packet { result: spin::Mutex::new(None), done: AtomicBool::new(false), joiner: WaitQueue::new() });
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
    check_cpu(cpu)?;
    let (entry, packet) = with_packet(f);
    let id = if cpu == current_cpu() {
        scheduler::create_local(entry, STACK_SIZE)?
    } else {
        let value = request(cpu, |requester| mailbox::Message::Spawn { entry, requester })?;
        ThreadId::from_raw(value).ok_or(SpawnError::OutOfMemory)?
    };
    Ok(JoinHandle { id, packet })
}

/// Starts the application's main thread (bigger stack) on this cpu.
pub(crate) fn spawn_main(f: impl FnOnce() + Send + 'static) -> Result<ThreadId, SpawnError> {
    scheduler::create_local(Box::new(f), MAIN_STACK_SIZE)
}

fn check_cpu(cpu: usize) -> Result<(), SpawnError> {
    if cpu >= cpu_count() {
        return Err(SpawnError::NoSuchCpu(cpu));
    }
    if scheduler::core(cpu).is_none() || !percpu::get(cpu).is_some_and(|c| c.online.load(Ordering::Acquire)) {
        return Err(SpawnError::CpuOffline(cpu));
    }
    Ok(())
}

/// Sends the message `make(me)` to `cpu` and sleeps until its reply.
fn request(cpu: usize, make: impl FnOnce(thread::ThreadRef) -> mailbox::Message) -> Result<u64, SpawnError> {
    const PENDING: u64 = u64::MAX;
    let me = scheduler::current().ok_or(SpawnError::NotInThread)?;
    me.reply.store(PENDING, Ordering::Relaxed);
    mailbox::send(cpu, make(me));
    loop {
        let value = me.reply.load(Ordering::Acquire);
        if value != PENDING {
            return Ok(value);
        }
        scheduler::park(None);
    }
}

/// Sends a message to `cpu` and sleeps until it answers: one mailbox
/// round trip (for measurements and liveness checks).
pub fn ping(cpu: usize) -> Result<(), SpawnError> {
    check_cpu(cpu)?;
    request(cpu, |requester| mailbox::Message::Ping { requester }).map(|_| ())
}

/// Runs `f` on `cpu`: here and now when that is the current cpu,
/// otherwise by message, in that cpu's scheduler loop (interrupts off), so
/// `f` must be short and must not block — typically it queues work for a
/// thread of that cpu and wakes it. Does not wait for `f` to run.
pub fn run_on(cpu: usize, f: impl FnOnce() + Send + 'static) -> Result<(), SpawnError> {
    check_cpu(cpu)?;
    if cpu == current_cpu() {
        x86_64::instructions::interrupts::without_interrupts(f);
    } else {
        mailbox::send(cpu, mailbox::Message::Run(Box::new(f)));
    }
    Ok(())
}

/// Sleeps for at least `duration` (other threads of this cpu run
/// meanwhile; an idle cpu halts until the timer).
pub fn sleep(duration: Duration) {
    sleep_until(tsc::now().saturating_add(crate::time::duration_to_ticks(duration)));
}

fn sleep_until(deadline: u64) {
    while tsc::now() < deadline {
        scheduler::park(Some(deadline));
    }
}

/// The cpu running the caller.
pub fn current_cpu() -> usize {
    percpu::cpu_id()
}

/// The number of cpus (numbered `0..cpu_count()`).
pub fn cpu_count() -> usize {
    crate::topology::get().map_or(1, |t| t.cpu_count())
}

/// The number of cpus that came online.
pub fn cpus_online() -> usize {
    (0..cpu_count()).filter(|&c| percpu::get(c).is_some_and(|p| p.online.load(Ordering::Acquire))).count()
}

/// The running thread's id (None outside threads).
pub fn current_id() -> Option<ThreadId> {
    scheduler::current().map(|t| t.id)
}

/// Live threads on `cpu`.
pub fn threads_on(cpu: usize) -> usize {
    scheduler::core(cpu).map_or(0, |c| c.threads.load(Ordering::Relaxed))
}

/// Threads on `cpu` ready to run and waiting for it (its run queue's
/// length; the thread running now is not counted).
pub fn runnable_on(cpu: usize) -> usize {
    scheduler::core(cpu).map_or(0, |c| c.runnable.load(Ordering::Relaxed))
}

/// The running thread's stack as (guard page, top), for fault reports and
/// tests that check where it lives.
pub fn current_stack() -> Option<(u64, u64)> {
    scheduler::current().map(|t| (t.stack.guard(), t.stack.top()))
}

/// The running thread's control block address (tests check its node).
pub fn current_control_block() -> Option<u64> {
    scheduler::current().map(|t| t.as_ptr() as u64)
}
