//! Measures the scheduler and the heap across cpus, one line per result:
//!
//! `bench NAME VALUE UNIT`
//!
//! - `switch`: ns per switch between two threads yielding to each other
//!   on one cpu (each yield goes through the cpu's scheduler loop);
//! - `spawn-join-local`: ns per spawn and join of an empty thread;
//! - `spawn-remote`: ns from `spawn_on(1, ..)` on cpu 0 to its reply;
//! - `spawn-join-remote`: ns per remote spawn and join;
//! - `ping`: ns per mailbox round trip, cpu 0 to cpu 1 and back;
//! - `pair`/`locked-pair`: ns per 64-byte allocation freed at once, on one
//!   cpu, with Bravo's heap and with one global locked buddy heap;
//! - `heap-K`/`locked-K`: million allocations+frees per second with K
//!   cpus at once (64-byte blocks, batches of 64), with Bravo's per-node
//!   heaps and with one global locked heap.
//!
//! Remote measures need two cpus; they are skipped on one.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};

use bravo::internals::memory::heap::NumaAllocator;
use bravo::internals::paging::phys_to_virt;
use bravo::internals::tsc;
use bravo::thread;
use buddy_system_allocator::LockedHeap;

bravo::main!(main);

const ITERATIONS: u64 = 20_000;

fn nanos(ticks: u64) -> u64 {
    (ticks as u128 * 1_000_000_000 / tsc::hz().max(1) as u128) as u64
}

fn report(name: &str, value: f64, unit: &str) {
    bravo::println!("bench {name} {value:.1} {unit}");
}

fn per_op(name: &str, ops: u64, run: impl FnOnce()) {
    let start = tsc::now();
    run();
    report(name, nanos(tsc::now() - start) as f64 / ops as f64, "ns");
}

fn switch() {
    let start = tsc::now();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            thread::spawn(|| {
                for _ in 0..ITERATIONS {
                    thread::yield_now();
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join());
    report("switch", nanos(tsc::now() - start) as f64 / (2 * ITERATIONS) as f64, "ns");
}

fn spawns(remote: usize) {
    let n = ITERATIONS / 4;
    per_op("spawn-join-local", n, || (0..n).for_each(|_| thread::spawn(|| ()).join()));
    if remote == 0 {
        return;
    }
    let mut handles = Vec::with_capacity(n as usize);
    per_op("spawn-remote", n, || {
        for _ in 0..n {
            handles.push(thread::spawn_on(remote, || ()).expect("cpu 1 is online"));
        }
    });
    handles.into_iter().for_each(|h| h.join());
    per_op("spawn-join-remote", n, || {
        (0..n).for_each(|_| thread::spawn_on(remote, || ()).expect("cpu 1 is online").join())
    });
    per_op("ping", ITERATIONS, || (0..ITERATIONS).for_each(|_| thread::ping(remote).expect("cpu 1 is online")));
}

const BATCH: usize = 64;
const HEAP_ROUNDS: u64 = 1500;

/// Allocates and frees batches of 64-byte blocks.
fn churn<A: GlobalAlloc>(a: &A) {
    let layout = Layout::from_size_align(64, 8).expect("valid layout");
    let mut blocks = [core::ptr::null_mut::<u8>(); BATCH];
    for _ in 0..HEAP_ROUNDS {
        for slot in blocks.iter_mut() {
            // SAFETY: non-zero size.
            let p = unsafe { a.alloc(layout) };
            assert!(!p.is_null(), "heap exhausted during the benchmark");
            // SAFETY: a fresh block of 64 bytes.
            unsafe { p.write_volatile(1) };
            *slot = p;
        }
        for &p in &blocks {
            // SAFETY: allocated just above with this layout.
            unsafe { a.dealloc(p, layout) };
        }
    }
}

/// One allocation, freed at once.
fn alloc_free<A: GlobalAlloc>(a: &A, layout: Layout) {
    // SAFETY: non-zero size; the block is freed with the same layout.
    unsafe {
        let p = a.alloc(layout);
        assert!(!p.is_null(), "heap exhausted during the benchmark");
        core::hint::black_box(p).write_volatile(1);
        a.dealloc(p, layout);
    }
}

/// Runs `churn` on cpus `0..k` at once (after a start barrier); returns
/// million alloc+free pairs per second over all of them.
fn heap_throughput<A: GlobalAlloc + Sync + 'static>(a: &'static A, k: usize) -> f64 {
    let ready = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..k)
        .map(|cpu| {
            let ready = ready.clone();
            thread::spawn_on(cpu, move || {
                churn(a); // warm up: grow the heaps
                ready.fetch_add(1, Ordering::AcqRel);
                // Yield, not spin: threads are cooperative, and this cpu may
                // still owe another thread (or a spawn reply) its turn.
                while ready.load(Ordering::Acquire) < k {
                    thread::yield_now();
                }
                let start = tsc::now();
                churn(a);
                (start, tsc::now())
            })
            .expect("cpu is online")
        })
        .collect();
    let spans: Vec<(u64, u64)> = handles.into_iter().map(|h| h.join()).collect();
    let start = spans.iter().map(|s| s.0).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.1).max().unwrap_or(0);
    let ops = k as u64 * HEAP_ROUNDS * BATCH as u64;
    ops as f64 * 1000.0 / nanos(end - start).max(1) as f64
}

fn main() -> Result<(), &'static str> {
    let cpus = thread::cpu_count();
    bravo::println!("bench-sched on {cpus} cpus");
    switch();
    spawns(if cpus > 1 { 1 } else { 0 });

    let phys = bravo::internals::memory::alloc_frames(0, 14).ok_or("no 64 MiB block for the locked heap")?;
    let locked: &'static LockedHeap<33> = alloc::boxed::Box::leak(alloc::boxed::Box::new(LockedHeap::new()));
    // SAFETY: the block was just allocated for this heap alone and is never
    // freed (the VM ends after main).
    unsafe { locked.lock().init(phys_to_virt(phys) as usize, 4096 << 14) };
    let layout = Layout::from_size_align(64, 8).map_err(|_| "bad layout")?;
    per_op("pair", ITERATIONS * 10, || (0..ITERATIONS * 10).for_each(|_| alloc_free(&NumaAllocator, layout)));
    per_op("locked-pair", ITERATIONS * 10, || (0..ITERATIONS * 10).for_each(|_| alloc_free(locked, layout)));
    let mut ks: Vec<usize> = [1, 2, cpus].into_iter().filter(|&k| k <= cpus).collect();
    ks.dedup();
    for k in ks {
        report(&alloc::format!("heap-{k}"), heap_throughput(&NumaAllocator, k), "Mops/s");
        report(&alloc::format!("locked-{k}"), heap_throughput(locked, k), "Mops/s");
    }
    Ok(())
}
