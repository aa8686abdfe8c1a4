//! In-kernel checks of cpus, threads and the blocking primitives
//! (scenario `smp`), and the scenarios the host watches from outside
//! (`idle`, `panic-on-cpu`).

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;

use bravo::internals::paging::virt_to_phys;
use bravo::internals::testing::{check, check_eq, Test};
use bravo::sync::{channel, Mutex};
use bravo::thread::{self, SpawnError};
use bravo::time::Instant;

use crate::topology;

/// The timer checks alone (scenario `timers`), cheap enough for slow
/// accelerators: the one where TSC-deadline timers can be exercised.
pub const TIMER_TESTS: &[Test] = &[
    Test { name: "every cpu is online", run: every_cpu_is_online },
    Test { name: "sleeps last at least as asked and not much longer", run: sleeps_are_accurate },
];

pub const SMP_TESTS: &[Test] = &[
    Test { name: "every cpu is online", run: every_cpu_is_online },
    Test { name: "a thread spawned on each cpu runs there", run: a_thread_spawned_on_each_cpu_runs_there },
    Test { name: "a thread's stack and control block are on its cpu's node", run: thread_memory_is_on_its_node },
    Test { name: "a bad cpu number is an error", run: a_bad_cpu_number_is_an_error },
    Test { name: "local spawns all run and are joined", run: local_spawns_all_run },
    Test { name: "remote spawns between every pair of cpus run exactly once", run: remote_spawns_between_every_pair },
    Test { name: "yield lets the other threads of the cpu run", run: yield_alternates },
    Test {
        name: "a cpu's run-queue length counts the threads waiting for it",
        run: run_queue_length_counts_waiting_threads,
    },
    Test { name: "heap blocks freed on another cpu go home without a leak", run: cross_cpu_frees_go_home },
    Test { name: "sleeps last at least as asked and not much longer", run: sleeps_are_accurate },
    Test { name: "sleepers on one cpu wake in deadline order", run: sleepers_wake_in_order },
    Test { name: "a mutex shared by every cpu loses no update", run: a_mutex_loses_no_update },
    Test { name: "a channel from every cpu delivers everything once", run: a_channel_delivers_everything },
    Test { name: "mailbox round trips to every cpu", run: mailbox_round_trips },
    Test { name: "a reply sent just before its sender drops is received", run: last_reply_is_received },
    Test {
        name: "spawning with no memory left is an error, then works again",
        run: spawning_without_memory_is_an_error,
    },
];

fn node_of_virt(addr: u64) -> usize {
    topology().node_of_addr(virt_to_phys(addr))
}

fn every_cpu_is_online() -> Result<(), String> {
    check_eq!(thread::cpus_online(), thread::cpu_count());
    check_eq!(thread::cpu_count(), topology().cpu_count());
    Ok(())
}

fn a_thread_spawned_on_each_cpu_runs_there() -> Result<(), String> {
    let handles: Vec<_> = (0..thread::cpu_count())
        .map(|cpu| thread::spawn_on(cpu, thread::current_cpu).map_err(|e| alloc::format!("spawn_on({cpu}): {e}")))
        .collect::<Result<_, _>>()?;
    for (cpu, handle) in handles.into_iter().enumerate() {
        check_eq!(handle.id().cpu(), cpu);
        check_eq!(handle.join(), cpu);
    }
    Ok(())
}

fn thread_memory_is_on_its_node() -> Result<(), String> {
    for cpu in 0..thread::cpu_count() {
        let handle = thread::spawn_on(cpu, || {
            let (guard, top) = bravo::internals::sched::current_stack().expect("in a thread");
            let block = bravo::internals::sched::current_control_block().expect("in a thread");
            let local = 0u64;
            let on_stack = core::hint::black_box(&local) as *const u64 as u64;
            (guard, top, block, on_stack)
        })
        .map_err(|e| alloc::format!("spawn_on({cpu}): {e}"))?;
        let (guard, top, block, on_stack) = handle.join();
        let node = topology().node_of_cpu(cpu);
        check!(
            guard < on_stack && on_stack < top,
            "cpu {cpu}: a local at {on_stack:#x} is outside the stack {guard:#x}..{top:#x}"
        );
        check_eq!(node_of_virt(on_stack), node);
        check_eq!(node_of_virt(block), node);
    }
    Ok(())
}

fn a_bad_cpu_number_is_an_error() -> Result<(), String> {
    let n = thread::cpu_count();
    check_eq!(thread::spawn_on(n, || ()).err(), Some(SpawnError::NoSuchCpu(n)));
    check_eq!(thread::spawn_on(usize::MAX, || ()).err(), Some(SpawnError::NoSuchCpu(usize::MAX)));
    check!(bravo::thread::ping(n).is_err());
    Ok(())
}

fn local_spawns_all_run() -> Result<(), String> {
    let ran = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..500)
        .map(|i| {
            let ran = ran.clone();
            thread::spawn(move || {
                ran.fetch_add(1, Ordering::Relaxed);
                i * 2
            })
        })
        .collect();
    for (i, handle) in handles.into_iter().enumerate() {
        check_eq!(handle.join(), i * 2);
    }
    check_eq!(ran.load(Ordering::Relaxed), 500);
    Ok(())
}

/// From a thread on every cpu, spawn `PER_PAIR` threads on every cpu
/// (itself included) in batches, join them all, and count runs per pair.
fn remote_spawns_between_every_pair() -> Result<(), String> {
    const PER_PAIR: usize = 200;
    const BATCH: usize = 50;
    let cpus = thread::cpu_count();
    let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..cpus * cpus).map(|_| AtomicUsize::new(0)).collect());
    let drivers: Vec<_> = (0..cpus)
        .map(|from| {
            let runs = runs.clone();
            thread::spawn_on(from, move || -> Result<usize, String> {
                let mut joined = 0;
                for to in 0..cpus {
                    for _ in 0..PER_PAIR / BATCH {
                        let mut batch = Vec::with_capacity(BATCH);
                        for k in 0..BATCH {
                            let runs = runs.clone();
                            let handle = thread::spawn_on(to, move || {
                                runs[from * cpus + thread::current_cpu()].fetch_add(1, Ordering::Relaxed);
                                k
                            })
                            .map_err(|e| alloc::format!("spawn_on({to}) from {from}: {e}"))?;
                            if handle.id().cpu() != to {
                                return Err(alloc::format!("thread for cpu {to} got id {:?}", handle.id()));
                            }
                            batch.push(handle);
                        }
                        for (k, handle) in batch.into_iter().enumerate() {
                            if handle.join() != k {
                                return Err("a joined thread returned another thread's result".into());
                            }
                            joined += 1;
                        }
                    }
                }
                Ok(joined)
            })
            .map_err(|e| alloc::format!("driver on {from}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut joined = 0;
    for driver in drivers {
        joined += driver.join()?;
    }
    check_eq!(joined, cpus * cpus * PER_PAIR);
    for from in 0..cpus {
        for to in 0..cpus {
            let n = runs[from * cpus + to].load(Ordering::Relaxed);
            check!(n == PER_PAIR, "{n} threads ran for the pair {from} -> {to}, not {PER_PAIR}");
        }
    }
    bravo::println!("remote spawns: {} across {} pairs, all joined", joined, cpus * cpus);
    Ok(())
}

fn yield_alternates() -> Result<(), String> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..2)
        .map(|who| {
            let log = log.clone();
            thread::spawn(move || {
                for _ in 0..3 {
                    log.lock().push(who);
                    thread::yield_now();
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join());
    check_eq!(*log.lock(), [0, 1, 0, 1, 0, 1]);
    Ok(())
}

/// Threads spawned here wait in this cpu's run queue until the caller
/// lets them run; another cpu reads the same length meanwhile; it is back
/// where it was once they ran.
fn run_queue_length_counts_waiting_threads() -> Result<(), String> {
    let cpu = thread::current_cpu();
    let other = (cpu + 1) % thread::cpu_count();
    // The reader on the other cpu waits for `go`, then reports the length
    // it read plus one in `seen` (0: nothing read yet).
    let (go, seen) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reader = (other != cpu)
        .then(|| {
            let (go, seen) = (go.clone(), seen.clone());
            thread::spawn_on(other, move || {
                while go.load(Ordering::Acquire) == 0 {
                    thread::yield_now();
                }
                seen.store(thread::runnable_on(cpu) + 1, Ordering::Release);
            })
        })
        .transpose()
        .map_err(|e| alloc::format!("{e}"))?;
    let before = thread::runnable_on(cpu);
    let handles: Vec<_> = (0..5).map(|i| thread::spawn(move || i)).collect();
    check_eq!(thread::runnable_on(cpu), before + 5);
    if let Some(reader) = reader {
        // Spin without yielding: the five stay queued until the read.
        go.store(1, Ordering::Release);
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.load(Ordering::Acquire) == 0 && Instant::now() < deadline {
            core::hint::spin_loop();
        }
        check_eq!(seen.load(Ordering::Acquire), before + 5 + 1);
        reader.join();
    }
    for (i, handle) in handles.into_iter().enumerate() {
        check_eq!(handle.join(), i);
    }
    check_eq!(thread::runnable_on(cpu), before);
    check_eq!(thread::runnable_on(thread::cpu_count()), 0);
    Ok(())
}

/// Blocks allocated by a thread on the first cpu, freed by a thread on the
/// last cpu (another node when there are two), return to the first cpu's
/// node: after a warm-up round (which leaves the scheduler's and channel's
/// own structures allocated), the node's heap use comes back to exactly
/// where it was.
fn cross_cpu_frees_go_home() -> Result<(), String> {
    let (from, to) = (0, thread::cpu_count() - 1);
    let home = topology().node_of_cpu(from);
    let (send, receive) = channel::channel::<Vec<Box<[u8; 200]>>>();
    let (done_send, done) = channel::channel::<usize>();
    let freer = thread::spawn_on(to, move || {
        while let Ok(blocks) = receive.recv() {
            let n = blocks.len();
            drop(blocks);
            if done_send.send(n).is_err() {
                break;
            }
        }
    })
    .map_err(|e| alloc::format!("{e}"))?;
    let allocator = thread::spawn_on(from, move || -> Result<(), String> {
        let round = |r: usize| -> Result<(), String> {
            let blocks: Vec<Box<[u8; 200]>> = (0..100).map(|i| Box::new([(r + i) as u8; 200])).collect();
            for block in &blocks {
                let node = node_of_virt(&**block as *const [u8; 200] as u64);
                if node != home {
                    return Err(alloc::format!("a block for cpu {from} came from node {node}, not {home}"));
                }
            }
            send.send(blocks).map_err(|_| "the freeing thread is gone")?;
            match done.recv() {
                Ok(100) => Ok(()),
                other => Err(alloc::format!("the freeing thread answered {other:?}")),
            }
        };
        round(0)?;
        let before = bravo::internals::memory::heap::stats(home).allocated;
        for r in 1..20 {
            round(r)?;
        }
        // The other cpu's last frees may still be under way.
        let deadline = Instant::now() + Duration::from_secs(2);
        while bravo::internals::memory::heap::stats(home).allocated != before && Instant::now() < deadline {
            thread::yield_now();
        }
        let after = bravo::internals::memory::heap::stats(home).allocated;
        if after != before {
            return Err(alloc::format!("node {home} heap use {before} before, {after} after the remote frees"));
        }
        Ok(())
    })
    .map_err(|e| alloc::format!("{e}"))?;
    allocator.join()?;
    freer.join();
    Ok(())
}

fn sleeps_are_accurate() -> Result<(), String> {
    // Generous upper bound: TCG on a busy 2-core host can be late.
    const SLACK: Duration = Duration::from_millis(200);
    let handles: Vec<_> = (0..thread::cpu_count())
        .map(|cpu| {
            thread::spawn_on(cpu, || {
                [1u64, 5, 20, 50]
                    .iter()
                    .map(|&ms| {
                        let asked = Duration::from_millis(ms);
                        let start = Instant::now();
                        thread::sleep(asked);
                        (asked, start.elapsed())
                    })
                    .collect::<Vec<_>>()
            })
            .map_err(|e| alloc::format!("{e}"))
        })
        .collect::<Result<_, _>>()?;
    for (cpu, handle) in handles.into_iter().enumerate() {
        for (asked, slept) in handle.join() {
            check!(slept >= asked, "cpu {cpu}: asked {asked:?}, woke after {slept:?}");
            check!(slept <= asked + SLACK, "cpu {cpu}: asked {asked:?}, woke only after {slept:?}");
        }
    }
    Ok(())
}

fn sleepers_wake_in_order() -> Result<(), String> {
    let woken = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..20u64)
        .map(|i| {
            let woken = woken.clone();
            // Started in one order, due in the reverse one.
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(3 * (20 - i)));
                woken.lock().push(i);
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join());
    let expected: Vec<u64> = (0..20).rev().collect();
    check_eq!(*woken.lock(), expected);
    Ok(())
}

fn a_mutex_loses_no_update() -> Result<(), String> {
    const PER_THREAD: u64 = 300;
    let counter = Arc::new(Mutex::new(0u64));
    let mut handles = Vec::new();
    for cpu in 0..thread::cpu_count() {
        for _ in 0..2 {
            let counter = counter.clone();
            handles.push(
                thread::spawn_on(cpu, move || {
                    for i in 0..PER_THREAD {
                        let mut value = counter.lock();
                        let seen = *value;
                        if i % 16 == 0 {
                            thread::yield_now(); // hold the lock across a switch
                        }
                        *value = seen + 1;
                    }
                })
                .map_err(|e| alloc::format!("{e}"))?,
            );
        }
    }
    let threads = handles.len() as u64;
    handles.into_iter().for_each(|h| h.join());
    check_eq!(*counter.lock(), threads * PER_THREAD);
    Ok(())
}

fn a_channel_delivers_everything() -> Result<(), String> {
    const PER_CPU: u64 = 500;
    let (send, receive) = channel::channel::<(usize, u64)>();
    for cpu in 0..thread::cpu_count() {
        let send = send.clone();
        thread::spawn_on(cpu, move || {
            for i in 0..PER_CPU {
                send.send((cpu, i)).expect("receiver alive");
            }
        })
        .map_err(|e| alloc::format!("{e}"))?;
    }
    drop(send);
    let mut next = alloc::vec![0u64; thread::cpu_count()];
    while let Ok((cpu, i)) = receive.recv() {
        check!(next[cpu] == i, "from cpu {cpu}: got {i}, expected {}", next[cpu]);
        next[cpu] += 1;
    }
    check!(next.iter().all(|&n| n == PER_CPU), "received {next:?}");
    check_eq!(receive.recv_timeout(Duration::from_millis(1)), Err(channel::RecvError::Disconnected));
    Ok(())
}

/// One-shot replies from another cpu: the replier sends, then drops its
/// sender at once; the receiver must get the value, never `Disconnected`.
fn last_reply_is_received() -> Result<(), String> {
    let other = thread::cpu_count() - 1;
    for i in 0..2000u32 {
        let (send, receive) = channel::channel::<u32>();
        thread::spawn_on(other, move || {
            let _ = send.send(i);
        })
        .map_err(|e| alloc::format!("{e}"))?;
        let got = receive.recv();
        check!(got == Ok(i), "reply {i}: got {got:?}");
    }
    Ok(())
}

/// Takes every frame of every node, then spawns threads that stay alive
/// on the last cpu until one fails: it must fail with `OutOfMemory` (not
/// abort), and once the frames are back spawning works again.
fn spawning_without_memory_is_an_error() -> Result<(), String> {
    use core::sync::atomic::AtomicBool;
    let target = thread::cpu_count() - 1;
    // Room in the heap for the small allocations made meanwhile.
    drop((0..4000).map(|i| Box::new([i as u8; 128])).collect::<Vec<_>>());
    let release = Arc::new(AtomicBool::new(false));
    let mut taken = Vec::with_capacity(64 * 1024);
    for node in 0..bravo::memory::node_count() {
        crate::drain_node(node, &mut taken);
    }
    let mut handles = Vec::new();
    let error = loop {
        let release = release.clone();
        match thread::spawn_on(target, move || {
            while !release.load(Ordering::Acquire) {
                thread::yield_now();
            }
        }) {
            Ok(handle) => handles.push(handle),
            Err(e) => break Some(e),
        }
        if handles.len() > 1000 {
            break None;
        }
    };
    release.store(true, Ordering::Release);
    let spawned = handles.len();
    handles.into_iter().for_each(|h| h.join());
    for &(phys, order) in &taken {
        // SAFETY: each block was allocated by drain_node with this order.
        unsafe { bravo::internals::memory::free_frames(phys, order) };
    }
    check_eq!(error, Some(SpawnError::OutOfMemory));
    bravo::println!("out of memory after {spawned} spawns (spare stacks first)");
    let again = thread::spawn_on(target, || 7).map(|h| h.join());
    check_eq!(again, Ok(7));
    Ok(())
}

fn mailbox_round_trips() -> Result<(), String> {
    for cpu in 0..thread::cpu_count() {
        for _ in 0..100 {
            thread::ping(cpu).map_err(|e| alloc::format!("ping {cpu}: {e}"))?;
        }
    }
    Ok(())
}

/// `idle`: every cpu but this one has nothing to do; this thread sleeps.
/// The host measures the VM's cpu time meanwhile.
pub fn idle() -> Result<(), String> {
    thread::sleep(Duration::from_millis(200));
    bravo::println!("idle: start");
    thread::sleep(Duration::from_secs(3));
    bravo::println!("idle: end");
    Ok(())
}

/// How long `clock` sleeps between its two lines.
pub const CLOCK_SLEEP: Duration = Duration::from_millis(1500);

/// `clock`: the guest's uptime before and after a sleep of
/// [`CLOCK_SLEEP`], in microseconds, for the host to hold against its own
/// clock (a wrong TSC rate stretches or shrinks both the sleep and the
/// guest's idea of it).
pub fn clock() -> Result<(), String> {
    bravo::println!("clock: start {}", bravo::time::uptime().as_micros());
    thread::sleep(CLOCK_SLEEP);
    bravo::println!("clock: end {}", bravo::time::uptime().as_micros());
    Ok(())
}

/// `panic-on-cpu`: a thread on the last cpu panics.
pub fn panic_on_last_cpu() -> Result<(), String> {
    let cpu = thread::cpu_count() - 1;
    let handle = thread::spawn_on(cpu, move || panic!("deliberate panic on cpu {}", thread::current_cpu()))
        .map_err(|e| alloc::format!("{e}"))?;
    handle.join();
    Err("the panicking thread was joined".into())
}
