//! The per-node buddy heaps under the global allocator.
//!
//! Small blocks come from a per-node buddy heap, grown in 1 MiB chunks from
//! that node's frames; blocks of 64 KiB and more are frames directly. An
//! allocation is served by the asked-for node (another node only when that
//! one is exhausted, counted as a fallback); a free goes back to the node
//! that owns the address. Failure returns null.
//!
//! Taking frames (heap growth, large blocks) obeys the reserve (see
//! `reserve`): ordinary code gets them only above the node's floor. The
//! heap never gives memory back on its own; when a large block finds too
//! few free frames, [`reclaim`] first returns the heap's wholly free 1 MiB
//! chunks to the frames (memory freed by many small blocks, say a store's
//! deleted values, thus serves large blocks again). Each node's free space
//! inside its heap is kept in an atomic for the pressure signal.
//!
//! The per-cpu caches (`cpu_cache`) take batches from here, and the
//! global allocator (`heap`) sits above both.

use core::alloc::Layout;
use core::ptr::{null_mut, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};

use buddy_system_allocator::Heap;
use spin::Mutex;

use super::frames::{self, FRAME_SIZE};
use crate::arch::irq;
use crate::arch::paging::{phys_to_virt, PHYS_MAP_BASE};
use crate::topology::MAX_NODES;

/// Allocations at least this large (or this aligned) are whole frames.
const LARGE: usize = 64 * 1024;
/// Heaps grow by this many frames (1 MiB) at a time.
const GROW_ORDER: usize = 8;

/// The heap's growth step, in bytes (every chunk is one such frame block).
const CHUNK: usize = FRAME_SIZE << GROW_ORDER;

struct NodeHeap {
    heap: Mutex<Heap<33>>,
    fallbacks: AtomicUsize,
    /// Bytes free inside the heap (as of its last change).
    free: AtomicUsize,
}

static HEAPS: [NodeHeap; MAX_NODES] =
    [const { NodeHeap { heap: Mutex::new(Heap::new()), fallbacks: AtomicUsize::new(0), free: AtomicUsize::new(0) } };
        MAX_NODES];

/// Runs `f` on `node`'s heap under its lock (the caller has interrupts
/// off), then records the heap's free bytes.
fn with_heap<R>(node: usize, f: impl FnOnce(&mut Heap<33>) -> R) -> R {
    let mut heap = HEAPS[node].heap.lock();
    let result = f(&mut heap);
    let free = heap.stats_total_bytes() - heap.stats_alloc_actual();
    HEAPS[node].free.store(free, Ordering::Relaxed);
    result
}

/// Bytes free inside `node`'s heap, not counting blocks in cpu caches
/// (one atomic load).
pub fn free_bytes(node: usize) -> usize {
    HEAPS.get(node).map_or(0, |h| h.free.load(Ordering::Relaxed))
}

/// The order of the frame block that holds `layout`.
pub(super) fn frame_order(layout: &Layout) -> usize {
    let frames = layout.size().max(layout.align()).div_ceil(FRAME_SIZE).next_power_of_two();
    frames.trailing_zeros() as usize
}

/// Whether `layout` is served by whole frames rather than a heap.
pub(super) fn is_large(layout: &Layout) -> bool {
    layout.size() >= LARGE || layout.align() > FRAME_SIZE
}

/// Allocates from `node`'s heap, growing it from `node`'s own frames when
/// the reserve allows.
fn alloc_small(node: usize, layout: Layout) -> Option<NonNull<u8>> {
    if let Some(block) = with_heap(node, |heap| heap.alloc(layout).ok()) {
        return Some(block);
    }
    let critical = super::reserve::current_may_use();
    let floor = super::reserve::floor(node, layout.size(), critical);
    // (Chunks are exactly one CHUNK: `reclaim` relies on it; small blocks
    // are under 64 KiB, so one chunk always holds them.)
    let phys = frames::alloc_frames_above(node, GROW_ORDER, floor)?;
    if critical {
        super::reserve::note_critical_use(node);
    }
    let start = phys_to_virt(phys) as usize;
    with_heap(node, |heap| {
        // SAFETY: the chunk was just allocated from this node's frames for
        // this heap alone; it stays in the heap until `reclaim` takes it
        // back whole.
        unsafe { heap.add_to_heap(start, start + CHUNK) };
        heap.alloc(layout).ok()
    })
}

/// Takes a block of frames for a large allocation of `bytes` from `node`
/// above its floor, reclaiming the heap's free chunks when frames are short.
fn large_on(node: usize, order: usize, bytes: usize, critical: bool) -> Option<u64> {
    let floor = super::reserve::floor(node, bytes, critical);
    let phys = frames::alloc_frames_above(node, order, floor).or_else(|| {
        let short = (FRAME_SIZE << order) + floor;
        (reclaim(node, short.saturating_sub(frames::free_bytes(node))) > 0)
            .then(|| frames::alloc_frames_above(node, order, floor))
            .flatten()
    })?;
    if critical {
        super::reserve::note_critical_use(node);
    }
    Some(phys)
}

fn alloc_on(node: usize, layout: Layout) -> *mut u8 {
    if is_large(&layout) {
        let (order, critical) = (frame_order(&layout), super::reserve::current_may_use());
        if let Some(phys) = large_on(node, order, layout.size(), critical) {
            return phys_to_virt(phys);
        }
        let Some(topology) = crate::topology::get() else { return null_mut() };
        for other in topology.fallback_order(node) {
            if let Some(phys) = large_on(other, order, layout.size(), critical) {
                frames::count_fallback(node);
                return phys_to_virt(phys);
            }
        }
        return null_mut();
    }
    if let Some(block) = alloc_small(node, layout) {
        return block.as_ptr();
    }
    let Some(topology) = crate::topology::get() else { return null_mut() };
    for other in topology.fallback_order(node) {
        if let Some(block) = alloc_small(other, layout) {
            HEAPS[node].fallbacks.fetch_add(1, Ordering::Relaxed);
            return block.as_ptr();
        }
    }
    null_mut()
}

/// Gives wholly free 1 MiB chunks of `node`'s heap back to its frames
/// until at least `bytes` are back (or none is left); returns the bytes.
/// (The heap counts a reclaimed chunk as allocated for good, so its free
/// space and the node's statistics stay right.)
pub fn reclaim(node: usize, bytes: usize) -> usize {
    if node >= MAX_NODES {
        return 0;
    }
    let chunk = Layout::from_size_align(CHUNK, CHUNK).expect("power of two");
    let mut back = 0;
    while back < bytes {
        let Some(block) = irq::without(|_| with_heap(node, |heap| heap.alloc(chunk).ok())) else { break };
        // SAFETY: a free, 1 MiB-aligned 1 MiB block of this heap is exactly
        // one chunk the heap took from `node`'s frames at order GROW_ORDER
        // (chunks are 1 MiB-aligned frame blocks of that order), and the
        // heap will not hand it out again: it is now allocated there.
        unsafe { frames::free_frames(block.as_ptr() as u64 - PHYS_MAP_BASE, GROW_ORDER) };
        back += CHUNK;
    }
    back
}

/// Allocates `layout` from `node` (falling back like the global allocator).
/// Free with [`heap::dealloc`](super::heap::dealloc) or let a `Box`/`Vec` built from it drop normally.
/// (Served by the node heap itself, bypassing the cpu caches.)
pub fn alloc_in(node: usize, layout: Layout) -> *mut u8 {
    if node >= MAX_NODES || layout.size() == 0 {
        return null_mut();
    }
    irq::without(|_| alloc_on(node, layout))
}

/// Moves `value` into memory of `node` for good (per-cpu structures that
/// must live on their cpu's node). `None` when memory is exhausted.
pub fn leak_in<T>(node: usize, value: T) -> Option<&'static mut T> {
    let ptr = alloc_in(node, Layout::new::<T>()) as *mut T;
    if ptr.is_null() {
        return None;
    }
    // SAFETY: freshly allocated with T's layout, never freed.
    unsafe {
        ptr.write(value);
        Some(&mut *ptr)
    }
}

/// Fills `out` with blocks of `layout` from `node`'s own heap under one
/// lock acquisition; returns how many it got.
pub(super) fn alloc_batch(node: usize, layout: Layout, out: &mut [*mut u8]) -> usize {
    irq::without(|_| alloc_batch_locked(node, layout, out))
}

fn alloc_batch_locked(node: usize, layout: Layout, out: &mut [*mut u8]) -> usize {
    let mut got = 0;
    while got < out.len() {
        got += with_heap(node, |heap| {
            let mut n = 0;
            while got + n < out.len() {
                let Ok(block) = heap.alloc(layout) else { break };
                out[got + n] = block.as_ptr();
                n += 1;
            }
            n
        });
        if got == out.len() {
            break;
        }
        // The heap is empty: grow it (or find the node exhausted).
        let Some(block) = alloc_small(node, layout) else { break };
        out[got] = block.as_ptr();
        got += 1;
    }
    got
}

/// Frees small blocks of `layout` to `node`'s heap, which owns them.
pub(super) fn free_batch(node: usize, layout: Layout, blocks: &[*mut u8]) {
    irq::without(|_| {
        with_heap(node, |heap| {
            for &block in blocks {
                // SAFETY: the caller passes live blocks of this layout owned
                // by `node`'s heap (cached blocks never change node).
                unsafe { heap.dealloc(NonNull::new(block).expect("cached blocks are never null"), layout) };
            }
        })
    });
}

/// Frees a small block to `owner`'s heap.
///
/// # Safety
/// `block` must be a live small block of this allocator with this
/// `layout`, from the memory of node `owner`.
pub(super) unsafe fn dealloc_small(block: NonNull<u8>, layout: Layout, owner: usize) {
    irq::without(|_| {
        with_heap(owner, |heap| {
            // SAFETY: a small block lives in the heap of the node owning
            // its memory, since heaps grow only from their own node's
            // frames (and the caller passes a live one).
            unsafe { heap.dealloc(block, layout) }
        })
    });
}

/// A node heap's bytes from its frames, bytes in use (cached blocks
/// included) and fallbacks.
pub(super) fn raw_stats(node: usize) -> (usize, usize, usize) {
    let Some(h) = HEAPS.get(node) else { return (0, 0, 0) };
    let (total, allocated) = irq::without(|_| {
        let heap = h.heap.lock();
        (heap.stats_total_bytes(), heap.stats_alloc_actual())
    });
    (total, allocated, h.fallbacks.load(Ordering::Relaxed))
}
