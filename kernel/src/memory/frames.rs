//! One buddy frame allocator per NUMA node.
//!
//! Each node's usable RAM goes into a buddy allocator
//! (`buddy_system_allocator::Heap`, whose free lists live inside the free
//! frames themselves, reached through the direct map) that serves
//! naturally aligned blocks of `4 KiB << order` and coalesces buddies on
//! free. It takes the node's RAM in as it needs it (`pending`), so that
//! boot touches only the RAM it uses. [`alloc_frames`] prefers the asked node and falls back to the
//! others in order of SLIT distance only when that node is exhausted,
//! counting each fallback. Every section holding a node's lock runs inside
//! `locked_section`, so the page-fault handler (`lazy`), which may take
//! that lock, knows when the faulting cpu holds it
//! (`locked_by_this_cpu`).
//!
//! Each node also keeps its free bytes in an atomic counter, so that the
//! memory-pressure signal and the reserve (`reserve`) read it without a
//! lock; [`alloc_frames_above`] takes a block only when the node keeps at
//! least a given floor of free bytes afterwards, deciding that on the
//! counter atomically so that cpus racing for the last frames cannot
//! together take the node below the floor.

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{compiler_fence, AtomicUsize, Ordering};

use buddy_system_allocator::Heap;
use spin::{Mutex, Once};

use super::pending::Pending;
use crate::arch::paging::{self, phys_to_virt, PHYS_MAP_BASE};
use crate::arch::percpu;
use crate::topology::{Topology, MAX_NODES};

pub const FRAME_SIZE: usize = 4096;
/// Stack a locked section may use, committed before it takes the lock
/// (its own frames are a few hundred bytes).
const PROBE_BYTES: u64 = 2048;

struct NodeFrames {
    buddy: Mutex<Buddy>,
    /// Bytes of RAM given to this node.
    total: AtomicUsize,
    /// Bytes free: `total` minus the blocks handed out (a block is taken
    /// off before the buddy allocator is asked, and put back if it fails).
    free: AtomicUsize,
    /// Allocations for this node that another node served.
    fallbacks: AtomicUsize,
}

impl NodeFrames {
    const fn new() -> Self {
        Self {
            buddy: Mutex::new(Buddy { heap: Heap::new(), pending: Pending::new() }),
            total: AtomicUsize::new(0),
            free: AtomicUsize::new(0),
            fallbacks: AtomicUsize::new(0),
        }
    }
}

/// A node's buddy allocator and the RAM it grows into when it runs dry.
struct Buddy {
    heap: Heap<40>,
    pending: Pending,
}

impl Buddy {
    /// A block of `layout`, taking more of the node's RAM into the
    /// allocator until one fits or none is left.
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        loop {
            if let Ok(block) = self.heap.alloc(layout) {
                return Some(block);
            }
            let (start, end) = self.pending.take(layout.size() as u64)?;
            // SAFETY: pending RAM is free, belongs to this node only and is
            // reached through the direct map (see `init`).
            unsafe { self.heap.add_to_heap(phys_to_virt(start) as usize, phys_to_virt(end) as usize) };
        }
    }
}

static NODES: [NodeFrames; MAX_NODES] = [const { NodeFrames::new() }; MAX_NODES];
static TOPOLOGY: Once<&'static Topology> = Once::new();

fn topology() -> Option<&'static Topology> {
    TOPOLOGY.get().copied()
}

/// Gives each `(start, end, node)` range to its node; the allocator takes
/// it in as it needs it (see `pending`).
pub(super) fn init(topology: &'static Topology, ranges: &[(u64, u64, usize)]) {
    for &(start, end, node) in ranges {
        let start = start.next_multiple_of(FRAME_SIZE as u64);
        let end = end & !(FRAME_SIZE as u64 - 1);
        if end <= start || node >= MAX_NODES {
            continue;
        }
        let n = &NODES[node];
        let mut buddy = n.buddy.lock();
        if let Err((start, end)) = buddy.pending.push(start, end) {
            // SAFETY: the range is free RAM (usable or reclaimed loader
            // memory, outside the boot page-table frames), given to exactly
            // one node, and reached through the direct map.
            unsafe { buddy.heap.add_to_heap(phys_to_virt(start) as usize, phys_to_virt(end) as usize) };
        }
        n.total.fetch_add((end - start) as usize, Ordering::Relaxed);
        n.free.fetch_add((end - start) as usize, Ordering::Relaxed);
    }
    TOPOLOGY.call_once(|| topology);
}

/// Runs `f`, a section that holds a node's lock, after committing the
/// stack it may use and with this cpu marked as holding the lock
/// (`PerCpu::frame_lock_depth`).
///
/// The page-fault handler (`lazy`) runs with interrupts off wherever the
/// faulting code was, and when its cpu's reserve of frames is empty it
/// takes this allocator's lock: the only lock it ever takes. This cpu holds
/// that lock only inside these short sections, which touch nothing lazily
/// committed but the stack they run on; each first probes (touches) the
/// stack it may use, so it does not fault there. If a fault still happens
/// inside one, the handler sees the mark ([`locked_by_this_cpu`]) and
/// fails loudly instead of spinning on its own lock. Another cpu holding
/// the lock releases it in bounded time: it never waits for this cpu with
/// the lock held (the sections run with interrupts off and call nothing).
#[inline(always)]
fn locked_section<R>(f: impl FnOnce() -> R) -> R {
    probe_stack();
    let depth = &percpu::this().frame_lock_depth;
    depth.store(depth.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    let result = f();
    compiler_fence(Ordering::SeqCst);
    depth.store(depth.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
    result
}

/// Whether this cpu is inside a [`locked_section`] (holds, or is about to
/// take, a node's lock): the page-fault handler must not take it then.
pub(super) fn locked_by_this_cpu() -> bool {
    percpu::this().frame_lock_depth.load(Ordering::Relaxed) != 0
}

/// Touches the running thread's stack down to [`PROBE_BYTES`] below the
/// stack pointer (never into its guard page), committing those pages now:
/// before code that must not fault on its stack (the locked sections, and
/// the refill of `lazy`'s per-cpu reserve of frames).
#[inline(always)]
pub(super) fn probe_stack() {
    const PAGE_SIZE: u64 = FRAME_SIZE as u64;
    let rsp = paging::stack_pointer();
    // Lazily committed stacks live in the region `lazy` lays out from
    // `LAZY_BASE`, below the MMIO window.
    if !(paging::LAZY_BASE..paging::MMIO_BASE).contains(&rsp) {
        return; // not a lazily committed stack (the loop, interrupt stacks)
    }
    let guard = percpu::this().thread_stack_guard.load(Ordering::Relaxed);
    let lowest = guard + PAGE_SIZE;
    if guard == 0 || rsp < lowest {
        return;
    }
    let mut page = rsp.saturating_sub(PROBE_BYTES).max(lowest) & !(PAGE_SIZE - 1);
    while page <= rsp {
        paging::touch(page.max(lowest));
        page += PAGE_SIZE;
    }
}

fn block_layout(order: usize) -> Option<Layout> {
    let size = FRAME_SIZE.checked_shl(order as u32)?;
    Layout::from_size_align(size, size).ok()
}

/// Allocates `4 KiB << order` bytes, aligned to their size, from `node`
/// only. Returns the physical address, or `None` when the node has no
/// block that large. (May use the reserve: for the kernel's own frames.)
pub fn alloc_frames_exact(node: usize, order: usize) -> Option<u64> {
    alloc_frames_above(node, order, 0)
}

/// Like [`alloc_frames_exact`], but only when at least `floor` bytes of
/// `node` stay free afterwards.
pub fn alloc_frames_above(node: usize, order: usize, floor: usize) -> Option<u64> {
    let layout = block_layout(order)?;
    let n = NODES.get(node)?;
    let size = layout.size();
    n.free
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| free.checked_sub(size).filter(|&left| left >= floor))
        .ok()?;
    match crate::arch::irq::without(|_| locked_section(|| n.buddy.lock().alloc(layout))) {
        Some(block) => Some(block.as_ptr() as u64 - PHYS_MAP_BASE),
        None => {
            // Enough bytes, but no block of this order (fragmented).
            n.free.fetch_add(size, Ordering::AcqRel);
            None
        }
    }
}

/// Free bytes of `node` (one atomic load; 0 for a node that does not
/// exist).
pub fn free_bytes(node: usize) -> usize {
    NODES.get(node).map_or(0, |n| n.free.load(Ordering::Relaxed))
}

/// Bytes of RAM given to `node`.
pub fn total_bytes(node: usize) -> usize {
    NODES.get(node).map_or(0, |n| n.total.load(Ordering::Relaxed))
}

/// Allocates from `node`, or, when it is exhausted, from the nearest other
/// node (counted in `node`'s [`NodeStats::fallbacks`]).
pub fn alloc_frames(node: usize, order: usize) -> Option<u64> {
    if let Some(phys) = alloc_frames_exact(node, order) {
        return Some(phys);
    }
    let topology = topology()?;
    let phys = topology.fallback_order(node).find_map(|other| alloc_frames_exact(other, order))?;
    NODES[node.min(MAX_NODES - 1)].fallbacks.fetch_add(1, Ordering::Relaxed);
    Some(phys)
}

/// Counts an allocation for `node` that another node served (for callers
/// that pick the node themselves).
pub(super) fn count_fallback(node: usize) {
    NODES[node.min(MAX_NODES - 1)].fallbacks.fetch_add(1, Ordering::Relaxed);
}

/// Frees a block from [`alloc_frames`] to the node that owns it, whichever
/// cpu calls.
///
/// # Safety
/// `phys` and `order` must be those of a live allocation from this module.
pub unsafe fn free_frames(phys: u64, order: usize) {
    let owner = topology().map_or(0, |t| t.node_of_addr(phys));
    let layout = block_layout(order).expect("order of a live allocation");
    let ptr = NonNull::new(phys_to_virt(phys)).expect("direct map is never null");
    crate::arch::irq::without(|_| {
        // SAFETY: the caller guarantees a live block of this order, which
        // came from its owner node's allocator (nodes never hold memory of
        // another node).
        locked_section(|| unsafe { NODES[owner].buddy.lock().heap.dealloc(ptr, layout) })
    });
    NODES[owner].free.fetch_add(layout.size(), Ordering::AcqRel);
}

/// A node's frame counts, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// RAM given to the node.
    pub total: usize,
    /// In free frames.
    pub free: usize,
    /// Allocations for this node that another node served.
    pub fallbacks: usize,
}

/// Frame statistics of `node`.
pub fn stats(node: usize) -> NodeStats {
    let Some(n) = NODES.get(node) else { return NodeStats::default() };
    let allocated = crate::arch::irq::without(|_| locked_section(|| n.buddy.lock().heap.stats_alloc_actual()));
    let total = n.total.load(Ordering::Relaxed);
    NodeStats { total, free: total - allocated, fallbacks: n.fallbacks.load(Ordering::Relaxed) }
}
