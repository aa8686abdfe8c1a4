//! In-kernel checks of lazily committed memory (scenario `lazy`): pages
//! get frames when touched and give them back, thread stacks cost what
//! they use, and thousands of idle threads fit in a 256 MiB guest. Also
//! the deliberate failures `thread-stack-overflow` and `lazy-exhaust`.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bravo::internals::memory::lazy::{self, Buffer, Kind, Range};
use bravo::internals::testing::{check, check_eq, Test};
use bravo::sync::WaitQueue;
use bravo::thread;

const PAGE: usize = 4096;

pub const LAZY_TESTS: &[Test] = &[
    Test { name: "touching a range commits exactly the touched pages", run: touching_commits_the_touched_pages },
    Test { name: "decommit gives the frames back", run: decommit_gives_the_frames_back },
    Test { name: "a dropped range frees its frames and its slot comes back", run: dropped_ranges_come_back },
    Test { name: "a fresh thread commits a page or two of stack", run: a_fresh_thread_commits_little },
    Test { name: "deep recursion within 60 KiB works", run: deep_recursion_within_the_stack_works },
    Test { name: "a blocked thread holds only the stack it used", run: a_blocked_thread_holds_little },
    Test { name: "5,000 sleeping threads fit in 256 MiB", run: five_thousand_sleeping_threads_fit },
    Test { name: "freed stacks are reused once every cpu flushed", run: freed_stacks_are_reused },
];

/// Free bytes of every node plus the frames in the cpus' fault reserves
/// (which are allocated but still free memory for this purpose), with
/// this cpu's reserve full.
fn free_bytes() -> usize {
    lazy::fill_reserve();
    let nodes: usize = (0..bravo::memory::node_count()).map(|n| bravo::memory::stats(n).free).sum();
    nodes + lazy::stats().reserve_bytes
}

fn write_page(range: &Range, page: usize, value: u8) {
    let at = range.start() as usize + page * PAGE + 7;
    // SAFETY: inside the range, which this test owns.
    unsafe { (at as *mut u8).write_volatile(value) };
}

fn read_page(range: &Range, page: usize) -> u8 {
    let at = range.start() as usize + page * PAGE + 7;
    // SAFETY: as in write_page.
    unsafe { (at as *const u8).read_volatile() }
}

fn touching_commits_the_touched_pages() -> Result<(), String> {
    let before = lazy::stats().buffer_bytes;
    let range = Range::new(Kind::Buffer, 16 * PAGE).ok_or("no range")?;
    check_eq!(range.len(), 16 * PAGE);
    check_eq!(range.committed_bytes(), 0);
    for (page, value) in [(0, 1u8), (3, 2), (15, 3)] {
        write_page(&range, page, value);
    }
    check_eq!(range.committed_bytes(), 3 * PAGE);
    check_eq!(lazy::stats().buffer_bytes - before, 3 * PAGE);
    check_eq!((read_page(&range, 0), read_page(&range, 3), read_page(&range, 15)), (1, 2, 3));
    // A read commits a zeroed page.
    check_eq!(read_page(&range, 8), 0);
    check_eq!(range.committed_bytes(), 4 * PAGE);
    drop(range);
    check_eq!(lazy::stats().buffer_bytes, before);
    Ok(())
}

fn decommit_gives_the_frames_back() -> Result<(), String> {
    let mut buffer = Buffer::new(64 * 1024).ok_or("no buffer")?;
    // SAFETY: the slice is dropped before the buffer, used on this cpu only.
    let slice = unsafe { buffer.as_static_mut() };
    let before = free_bytes();
    for page in 0..8 {
        slice[page * PAGE] = page as u8 + 1;
    }
    check_eq!(buffer.committed_bytes(), 8 * PAGE);
    check_eq!(free_bytes(), before - 8 * PAGE);
    // SAFETY: nothing relies on the contents; only this cpu touched it.
    let released = unsafe { buffer.decommit() };
    check_eq!(released, 8 * PAGE);
    check_eq!(buffer.committed_bytes(), 0);
    check_eq!(free_bytes(), before);
    // The pages read as zero again, and come back on demand.
    check!(slice[..8 * PAGE].iter().all(|&b| b == 0), "a decommitted page kept data");
    check_eq!(buffer.committed_bytes(), 8 * PAGE);
    slice[0] = 9;
    check_eq!(slice[0], 9);
    Ok(())
}

fn dropped_ranges_come_back() -> Result<(), String> {
    let stats = lazy::stats();
    let before = free_bytes();
    for _ in 0..3 {
        let range = Range::new(Kind::Buffer, 32 * PAGE).ok_or("no range")?;
        for page in 0..32 {
            write_page(&range, page, 1);
        }
        check_eq!(lazy::stats().buffer_bytes - stats.buffer_bytes, 32 * PAGE);
    }
    let after = lazy::stats();
    check_eq!(after.buffer_bytes, stats.buffer_bytes);
    check_eq!(after.ranges, stats.ranges);
    // Every frame is back: what is missing is page tables and a few bytes
    // of bookkeeping per new slot (each drop quarantines its slot, so the
    // next range takes a fresh one).
    let missing = before - free_bytes() - (after.page_table_bytes - stats.page_table_bytes);
    check!(missing <= 256, "{missing} bytes did not come back");
    Ok(())
}

/// Runs `f` in a new thread on this cpu and returns the bytes committed
/// in that thread's stack as `f` sees them, with `f`'s result.
fn in_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> (usize, T) {
    thread::spawn(move || {
        let value = f();
        let (guard, top) = bravo::internals::sched::current_stack().expect("in a thread");
        (lazy::committed_between(guard, top), value)
    })
    .join()
}

fn a_fresh_thread_commits_little() -> Result<(), String> {
    let (committed, ()) = in_thread(|| ());
    bravo::println!("measured: a fresh thread's stack holds {} KiB", committed / 1024);
    check!(committed > 0 && committed <= 2 * PAGE, "a fresh thread commits {committed} bytes of stack");
    Ok(())
}

/// Recurses `depth` times with a 1 KiB frame; returns a checksum.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = [depth; 128];
    core::hint::black_box(&frame);
    if depth == 0 {
        return frame[127];
    }
    frame[0] + recurse(depth - 1)
}

fn deep_recursion_within_the_stack_works() -> Result<(), String> {
    let depth = 48;
    let (committed, sum) = in_thread(move || recurse(depth));
    check_eq!(sum, depth * (depth + 1) / 2);
    bravo::println!("measured: 48 KiB of recursion committed {} KiB of stack", committed / 1024);
    check!(committed >= 48 * 1024, "recursion of 48 KiB committed only {committed} bytes");
    check!(committed <= bravo::internals::sched::STACK_SIZE, "more than the stack committed: {committed}");
    Ok(())
}

fn a_blocked_thread_holds_little() -> Result<(), String> {
    let gate = Arc::new((AtomicBool::new(false), WaitQueue::new(), AtomicU64::new(0), AtomicU64::new(0)));
    let theirs = gate.clone();
    let handle = thread::spawn(move || {
        let (open, queue, guard, top) = &*theirs;
        let (g, t) = bravo::internals::sched::current_stack().expect("in a thread");
        guard.store(g, Ordering::Release);
        top.store(t, Ordering::Release);
        queue.wait_until(|| open.load(Ordering::Acquire).then_some(()));
    });
    while gate.3.load(Ordering::Acquire) == 0 {
        thread::yield_now();
    }
    thread::yield_now();
    let committed = lazy::committed_between(gate.2.load(Ordering::Acquire), gate.3.load(Ordering::Acquire));
    gate.0.store(true, Ordering::Release);
    gate.1.notify_all();
    handle.join();
    bravo::println!("measured: a thread blocked on a wait queue holds {} KiB of stack", committed / 1024);
    check!(committed > 0 && committed <= 2 * PAGE, "a blocked thread holds {committed} bytes of stack");
    Ok(())
}

fn five_thousand_sleeping_threads_fit() -> Result<(), String> {
    const THREADS: usize = 5000;
    let before = free_bytes();
    let stacks_before = lazy::stats().stack_bytes;
    let gate = Arc::new((AtomicBool::new(false), WaitQueue::new()));
    let mut handles = Vec::new();
    handles.try_reserve(THREADS).map_err(|_| "no room for handles")?;
    for i in 0..THREADS {
        let gate = gate.clone();
        match thread::spawn_on(thread::current_cpu(), move || {
            gate.1.wait_until(|| gate.0.load(Ordering::Acquire).then_some(()))
        }) {
            Ok(handle) => handles.push(handle),
            Err(e) => return Err(alloc::format!("thread {i} could not be spawned: {e}")),
        }
    }
    // Let every one of them run until it blocks.
    thread::yield_now();
    let stacks = lazy::stats().stack_bytes - stacks_before;
    let used = before - free_bytes();
    gate.0.store(true, Ordering::Release);
    gate.1.notify_all();
    handles.into_iter().for_each(|h| h.join());
    bravo::println!(
        "measured: {THREADS} blocked threads hold {} bytes of stack each, {} bytes of memory each in all",
        stacks / THREADS,
        used / THREADS
    );
    // Committed up front, 64 KiB each would not even fit in 256 MiB.
    check!(used / THREADS <= 16 * 1024, "each blocked thread costs {} bytes", used / THREADS);
    Ok(())
}

fn freed_stacks_are_reused() -> Result<(), String> {
    // Threads on every cpu, so that every cpu's TLB may cache stacks; each
    // commits 24 KiB or more, too much to be kept as a spare, so every
    // stack is freed and its slot quarantined.
    let spawn_round = || -> Result<(), String> {
        let handles: Vec<_> = (0..thread::cpu_count())
            .flat_map(|cpu| (0..20).map(move |_| cpu))
            .map(|cpu| thread::spawn_on(cpu, move || recurse(24)).map_err(|e| alloc::format!("{e}")))
            .collect::<Result<_, _>>()?;
        for handle in handles {
            core::hint::black_box(handle.join());
        }
        Ok(())
    };
    spawn_round()?;
    let tables = lazy::stats().page_table_bytes;
    for _ in 0..40 {
        spawn_round()?;
    }
    let stats = lazy::stats();
    bravo::println!(
        "measured: after {} threads, {} ranges, {} free slots, {} KiB of page tables",
        41 * 20 * thread::cpu_count(),
        stats.ranges,
        stats.free_slots,
        stats.page_table_bytes / 1024
    );
    // 800+ stacks went through: without reuse they would need about 27
    // more page tables per 800 on each cpu.
    check!(
        stats.page_table_bytes - tables <= 8 * PAGE,
        "page tables grew by {} bytes",
        stats.page_table_bytes - tables
    );
    Ok(())
}

/// `thread-stack-overflow`: a thread with the default stack recurses
/// until it hits its guard page.
pub fn thread_stack_overflow() -> Result<(), String> {
    let depth = thread::spawn(|| crate::recurse(0)).join();
    Err(alloc::format!("recursion returned at depth {depth}"))
}

/// `lazy-exhaust`: takes every frame, then touches more pages of a buffer
/// than the cpu's fault reserve holds: the page fault must fail loudly.
pub fn exhaust() -> Result<(), String> {
    let mut buffer = Buffer::new(1 << 20).ok_or("no buffer")?;
    let mut taken = Vec::with_capacity(64 * 1024);
    for node in 0..bravo::memory::node_count() {
        crate::drain_node(node, &mut taken);
    }
    // SAFETY: used on this cpu only, before the buffer is dropped.
    let slice = unsafe { buffer.as_static_mut() };
    for page in 0..256 {
        slice[page * PAGE] = 1;
    }
    Err("256 pages were committed with no free memory".into())
}
