//! Measures allocation+free throughput on one cpu, for several sizes, with
//! Bravo's global allocator (per-node heaps) and, in the same run, with a
//! single global locked buddy heap (`buddy_system_allocator::LockedHeap`)
//! over memory of the same node. Prints one line per size:
//!
//! `alloc size=S ops=N bravo_ns=X locked_ns=Y`
//!
//! Each round allocates a batch of 64 blocks, touches each, then frees them.

#![no_std]
#![no_main]

extern crate alloc;

use core::alloc::{GlobalAlloc, Layout};

use bravo::internals::memory::heap::NumaAllocator;
use bravo::internals::paging::phys_to_virt;
use bravo::internals::tsc;
use buddy_system_allocator::LockedHeap;

bravo::main!(main);

const BATCH: usize = 64;
const SIZES: [usize; 6] = [16, 64, 256, 1024, 4096, 65536];
/// The locked heap's memory: 64 MiB from node 0.
const LOCKED_ORDER: usize = 14;

fn round<A: GlobalAlloc>(a: &A, layout: Layout, blocks: &mut [*mut u8; BATCH]) -> Result<(), &'static str> {
    for slot in blocks.iter_mut() {
        // SAFETY: layout has a non-zero size.
        let p = unsafe { a.alloc(layout) };
        if p.is_null() {
            return Err("allocation failed during the benchmark");
        }
        // SAFETY: p is a fresh block of at least one byte.
        unsafe { p.write_volatile(1) };
        *slot = p;
    }
    for &p in blocks.iter() {
        // SAFETY: allocated just above with this layout.
        unsafe { a.dealloc(p, layout) };
    }
    Ok(())
}

fn nanos_per_op<A: GlobalAlloc>(a: &A, layout: Layout, rounds: usize) -> Result<u64, &'static str> {
    let mut blocks = [core::ptr::null_mut(); BATCH];
    round(a, layout, &mut blocks)?; // warm up (heap growth)
    let start = tsc::now();
    for _ in 0..rounds {
        round(a, layout, &mut blocks)?;
    }
    let ticks = tsc::now() - start;
    Ok((ticks as u128 * 1_000_000_000 / tsc::hz().max(1) as u128 / (rounds * BATCH) as u128) as u64)
}

fn main() -> Result<(), &'static str> {
    let rounds: usize = bravo::env::args().next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let phys = bravo::internals::memory::alloc_frames(0, LOCKED_ORDER).ok_or("no 64 MiB block for the locked heap")?;
    let locked = LockedHeap::<33>::new();
    let start = phys_to_virt(phys) as usize;
    // SAFETY: the block was just allocated for this heap alone and is never
    // freed while the heap lives (the VM ends after main).
    unsafe { locked.lock().init(start, 4096 << LOCKED_ORDER) };
    for size in SIZES {
        let layout = Layout::from_size_align(size, 8).map_err(|_| "bad layout")?;
        let rounds = if size >= 65536 { rounds / 4 } else { rounds }.max(1);
        let bravo_ns = nanos_per_op(&NumaAllocator, layout, rounds)?;
        let locked_ns = nanos_per_op(&locked, layout, rounds)?;
        bravo::println!("alloc size={size} ops={} bravo_ns={bravo_ns} locked_ns={locked_ns}", rounds * BATCH);
    }
    Ok(())
}
