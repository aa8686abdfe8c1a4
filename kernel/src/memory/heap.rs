//! The global allocator, NUMA-local: a per-cpu cache of small blocks
//! (`cpu_cache`) in front of per-node buddy heaps (`node_heap`); blocks of
//! 64 KiB and more are frames directly. An allocation is served by the
//! current cpu's node (another node only when that one is exhausted,
//! counted as a fallback); a free goes back to the node that owns the
//! address, whichever cpu frees it. Failure returns null, which Rust turns
//! into `try_reserve` errors or `handle_alloc_error`.
//!
//! This module sits above both `cpu_cache` and `node_heap`, which know
//! nothing of it.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use super::{cpu_cache, node_heap};
use crate::arch::paging::PHYS_MAP_BASE;

pub use node_heap::{alloc_in, free_bytes, leak_in};

/// Frees a block from this allocator: a small one to this cpu's cache
/// when the cpu belongs to the block's node, otherwise to the node that
/// owns its address.
///
/// # Safety
/// `ptr` must come from this allocator with this `layout`, and be live.
pub unsafe fn dealloc(ptr: *mut u8, layout: Layout) {
    let phys = ptr as u64 - PHYS_MAP_BASE;
    if node_heap::is_large(&layout) {
        // SAFETY: large blocks are whole frames of this order (caller's
        // guarantee that ptr/layout match a live allocation).
        return unsafe { super::frames::free_frames(phys, node_heap::frame_order(&layout)) };
    }
    let owner = super::node_of_phys(phys);
    let block = NonNull::new(ptr).expect("allocations are never null");
    if cpu_cache::free(block, layout, owner) {
        return;
    }
    // SAFETY: a live small block of this allocator (caller), of the node
    // owning its address.
    unsafe { node_heap::dealloc_small(block, layout, owner) }
}

/// Bytes a node's heap holds from its frames, and how much of it is in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Taken from the node's frames.
    pub total: usize,
    /// In use by allocations.
    pub allocated: usize,
    /// Allocations for this node that another node's heap served.
    pub fallbacks: usize,
}

/// The heap statistics of `node` (all zero for a node that does not
/// exist).
pub fn stats(node: usize) -> HeapStats {
    let (total, allocated, fallbacks) = node_heap::raw_stats(node);
    // Blocks in cpu caches are free for the node's purposes.
    let allocated = allocated.saturating_sub(cpu_cache::cached_bytes(node));
    HeapStats { total, allocated, fallbacks }
}

/// The kernel's global allocator (public so that benchmarks can call it
/// directly, beside other allocators).
pub struct NumaAllocator;

// SAFETY: alloc returns blocks of at least the layout's size and alignment
// (buddy blocks are naturally aligned to their power-of-two size), each
// handed out once; dealloc returns them to the allocator they came from.
unsafe impl GlobalAlloc for NumaAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(block) = cpu_cache::alloc(layout) {
            return block.as_ptr();
        }
        let node = super::current_node();
        let block = alloc_in(node, layout);
        if !block.is_null() {
            return block;
        }
        // Exhausted: give this cpu's cached blocks back and try once more.
        cpu_cache::flush_this_cpu();
        let block = alloc_in(node, layout);
        if block.is_null() {
            super::reserve::count_refused(layout.size());
        }
        block
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a live allocation of this allocator.
        unsafe { dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: NumaAllocator = NumaAllocator;
