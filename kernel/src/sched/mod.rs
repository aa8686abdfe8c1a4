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
//! Applications use these through [`crate::thread`], which adds join
//! handles (built on `sync`, which sits above this module).

#![deny(unsafe_code)]

mod mailbox;
#[allow(unsafe_code)] // context switches, a new thread's stack, freeing a finished thread
pub(crate) mod scheduler;
#[allow(unsafe_code)] // the control block shared between cpus, the thread lists
pub(crate) mod thread;

use alloc::boxed::Box;
use core::sync::atomic::Ordering;
use core::time::Duration;

pub use scheduler::{yield_now, SpawnError};
pub use thread::ThreadId;

use crate::arch::irq;
use crate::arch::{percpu, tsc};

/// Usable stack of every thread (above its guard page).
pub const STACK_SIZE: usize = 60 * 1024;
/// Usable stack of the application's main thread.
pub const MAIN_STACK_SIZE: usize = 252 * 1024;

/// Starts a thread running `entry` on `cpu`: here, or for another cpu by
/// message (that cpu creates the thread with its own node's memory, while
/// the caller sleeps until it replies with the new thread's id).
pub(crate) fn spawn_entry_on(cpu: usize, entry: Box<dyn FnOnce() + Send>) -> Result<ThreadId, SpawnError> {
    check_cpu(cpu)?;
    if cpu == current_cpu() {
        scheduler::create_local(entry, STACK_SIZE)
    } else {
        let value = request(cpu, |requester| mailbox::Message::Spawn { entry, requester })?;
        ThreadId::from_raw(value).ok_or(SpawnError::OutOfMemory)
    }
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
    scheduler::send(cpu, make(me));
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
        irq::without(|_| f());
    } else {
        scheduler::send(cpu, mailbox::Message::Run(Box::new(f)));
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
