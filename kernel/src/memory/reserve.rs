//! The memory reserve: what applications cannot take, so that the kernel,
//! the network stack and the connections already open keep working when
//! the application has used the rest.
//!
//! Each node keeps two marks, in proportion to its share of RAM (for the
//! machine, their sums):
//!
//! - the **reserve** `R = min(max(4 MiB, RAM/32), RAM/8)`, about 3% of
//!   RAM: 8 MiB in a 256 MiB guest. It must carry the kernel through a
//!   burst while applications sit at their limit: the network thread's
//!   receive copies (up to 4 KiB per read in flight) and request queue,
//!   page-table frames, the stacks of threads that already run, and the
//!   small allocations that let a request in flight reach its answer. At
//!   RAM/32 it scales with what a guest of that size holds (connections,
//!   threads); the 4 MiB floor covers the network thread's needs in a tiny
//!   guest, and the RAM/8 cap leaves a tiny guest most of its memory.
//! - the **low-water mark** `L = 2R`, below which [`pressure`] reports
//!   `Low`: services stop taking new data (a store answers 507, a proxy
//!   503) while requests in flight finish in the band between `L` and `R`.
//!
//! The global allocator enforces them where memory leaves the free pool,
//! i.e. when it takes frames (heap growth, and blocks of 64 KiB and more,
//! which are frames directly): an *ordinary* allocation gets frames only
//! if its node keeps at least `R` free afterwards, a *bulk* one (more than
//! 64 KiB: bodies, values, buffers, which is what data fills memory with)
//! only if it keeps `L`. Otherwise it returns null, so `try_reserve` fails
//! cleanly and only infallible allocations (`Box::new`, `Vec::push`) abort.
//! Allocations served from space the heap already holds are never refused.
//! The band between `L` and `R` thus stays for small allocations: a
//! network call's box, a thread's control block, a short reply.
//!
//! *Critical* allocations may use the reserve: the scheduler loop's (no
//! thread runs: messages, timers, remote thread creation), those of threads
//! that called [`allow_for_current_thread`] (the network thread, for good),
//! and the frames the kernel takes directly (page tables, thread stacks
//! and socket buffers, committed page by page: `frames::alloc_frames` has
//! no floor). Applications cannot reach the reserve through the network
//! thread: it refuses new connections once memory is under pressure.
//! Thread control blocks are ordinary: under pressure `spawn_on` fails
//! with `OutOfMemory` instead of using the reserve.
//!
//! Counters: allocations the global allocator refused (and their bytes),
//! and critical allocations that took a node below its reserve.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::frames;
use crate::topology::MAX_NODES;

/// The smallest reserve a machine gets.
const MIN_RESERVE: usize = 4 << 20;
/// Allocations above this size are bulk: refused below the low-water mark.
pub const BULK: usize = 64 * 1024;
/// Threads that may use the reserve (the kernel needs one or two).
const MARKS: usize = 8;

static RESERVE: [AtomicUsize; MAX_NODES] = [const { AtomicUsize::new(0) }; MAX_NODES];

/// Raw ids of the threads that may use the reserve (0: a free slot).
static MARKED: [AtomicU64; MARKS] = [const { AtomicU64::new(0) }; MARKS];

static REFUSED: AtomicUsize = AtomicUsize::new(0);
static REFUSED_BYTES: AtomicUsize = AtomicUsize::new(0);
static RESERVE_USES: AtomicUsize = AtomicUsize::new(0);

/// The reserve of a machine with `total` bytes of RAM.
pub fn reserve_for(total: usize) -> usize {
    MIN_RESERVE.max(total / 32).min(total / 8)
}

/// Sets each node's reserve from the RAM the frame allocators hold
/// (called once their memory is known).
pub(super) fn init(nodes: usize) {
    let totals = (0..nodes.min(MAX_NODES)).map(frames::total_bytes);
    let total: usize = totals.clone().sum();
    let machine = reserve_for(total) as u128;
    for (node, node_total) in totals.enumerate() {
        let share = machine * node_total as u128 / (total as u128).max(1);
        RESERVE[node].store(share as usize, Ordering::Relaxed);
    }
}

/// `node`'s reserve, in bytes.
pub fn reserve(node: usize) -> usize {
    RESERVE.get(node).map_or(0, |r| r.load(Ordering::Relaxed))
}

/// `node`'s low-water mark, in bytes.
pub fn low_water(node: usize) -> usize {
    2 * reserve(node)
}

/// Why a thread could not be marked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkError {
    /// Called outside a thread (the scheduler loop may use it anyway).
    NotInThread,
    /// Every slot is taken.
    NoSlot,
}

/// The running thread's raw id, or `None` in the scheduler loop or before
/// this cpu's scheduler exists (the scheduler records it in the per-cpu
/// block when it switches to a thread).
fn current_thread() -> Option<u64> {
    let raw = crate::arch::percpu::this().running_thread.load(Ordering::Relaxed);
    (raw != 0).then_some(raw)
}

fn slot_of(thread: u64) -> Option<usize> {
    MARKED.iter().position(|m| m.load(Ordering::Acquire) == thread)
}

/// Lets the calling thread use the reserve from now on, for good (meant
/// for kernel threads that live as long as the machine: the network
/// thread calls it when it starts).
pub fn allow_for_current_thread() -> Result<(), MarkError> {
    let me = current_thread().ok_or(MarkError::NotInThread)?;
    if slot_of(me).is_some() {
        return Ok(());
    }
    for mark in &MARKED {
        if mark.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return Ok(());
        }
    }
    Err(MarkError::NoSlot)
}

/// Whether the running code may use the reserve.
pub fn current_may_use() -> bool {
    match current_thread() {
        None => true,
        Some(me) => slot_of(me).is_some(),
    }
}

/// The free bytes `node` must keep after frames are taken for an
/// allocation of `bytes` (`critical`: by code that may use the reserve).
pub(super) fn floor(node: usize, bytes: usize, critical: bool) -> usize {
    if critical {
        0
    } else if bytes > BULK {
        low_water(node)
    } else {
        reserve(node)
    }
}

/// Counts an allocation the global allocator returned null for.
pub(super) fn count_refused(bytes: usize) {
    REFUSED.fetch_add(1, Ordering::Relaxed);
    REFUSED_BYTES.fetch_add(bytes, Ordering::Relaxed);
}

/// Counts a critical allocation when it left `node` below its reserve.
pub(super) fn note_critical_use(node: usize) {
    if frames::free_bytes(node) < reserve(node) {
        RESERVE_USES.fetch_add(1, Ordering::Relaxed);
    }
}

/// The reserve's counters, for the machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReserveStats {
    /// Bytes kept for critical allocations (sum over nodes).
    pub reserve: usize,
    /// Below this many free bytes, pressure is `Low`.
    pub low_water: usize,
    /// Allocations the global allocator refused (returned null for).
    pub refused: usize,
    /// Their bytes.
    pub refused_bytes: usize,
    /// Critical allocations of frames that left a node below its reserve.
    pub reserve_uses: usize,
}

/// The reserve's marks and counters, summed over the nodes: what the
/// global allocator refused, and how often critical allocations dipped
/// into the reserve.
pub fn stats() -> ReserveStats {
    let nodes = super::node_count().min(MAX_NODES);
    ReserveStats {
        reserve: (0..nodes).map(reserve).sum(),
        low_water: (0..nodes).map(low_water).sum(),
        refused: REFUSED.load(Ordering::Relaxed),
        refused_bytes: REFUSED_BYTES.load(Ordering::Relaxed),
        reserve_uses: RESERVE_USES.load(Ordering::Relaxed),
    }
}
