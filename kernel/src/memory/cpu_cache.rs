//! Per-cpu caches of small free blocks in front of the node heaps.
//!
//! Each cpu keeps, per size class (16 B to 2 KiB, the buddy heap's own
//! power-of-two block sizes), a short stack of free blocks of *its own
//! node*. Allocation pops from it with no lock at all; when it is empty
//! the cpu takes a batch from its node's heap under one lock acquisition,
//! and when it is full it gives a batch back. A block freed by a cpu of
//! another node goes straight back to its owner's heap, so memory never
//! changes node. Cached bytes count as free in the node's statistics.
//!
//! A cache is touched only by its own cpu (its stacks are a
//! [`CpuLocal`]). Instead of masking interrupts (slow under emulation), the
//! stacks are borrowed with [`CpuLocal::try_borrow`]: an interrupt handler
//! that allocates meanwhile finds them borrowed and goes to the node heap
//! (which is always taken with interrupts off).

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::arch::percpu::{self, CpuLocal, CpuTable, ThisCpu};

const MIN_CLASS_SHIFT: u32 = 4; // 16 B
const CLASSES: usize = 8; // 16 B .. 2 KiB
/// Blocks kept per class; a refill or flush moves half of it.
const DEPTH: usize = 128;

struct Stack {
    len: usize,
    blocks: [*mut u8; DEPTH],
}

struct CpuCache {
    node: usize,
    /// Bytes in this cache (written by its cpu only, read by statistics).
    cached: AtomicUsize,
    classes: CpuLocal<[Stack; CLASSES]>,
}

impl CpuCache {
    /// Adjusts the cached byte count (only this cache's cpu calls this, so
    /// a plain load and store suffice and no cache line is fought over).
    fn account(&self, added: usize, removed: usize) {
        self.cached.store(self.cached.load(Ordering::Relaxed) + added - removed, Ordering::Relaxed);
    }
}

static CACHES: CpuTable<CpuCache> = CpuTable::new();

/// The block size the buddy heap uses for `layout`, and its class, when
/// small enough to cache.
fn class_of(layout: &Layout) -> Option<(usize, usize)> {
    let size = layout.size().max(layout.align()).max(core::mem::size_of::<usize>()).next_power_of_two();
    let class = (size.trailing_zeros().checked_sub(MIN_CLASS_SHIFT)?) as usize;
    (class < CLASSES).then_some((class, size.max(1 << MIN_CLASS_SHIFT)))
}

/// The bytes of `node`'s heap that sit free in cpu caches.
pub(super) fn cached_bytes(node: usize) -> usize {
    CACHES.iter().filter(|c| c.node == node).map(|c| c.cached.load(Ordering::Relaxed)).sum()
}

#[cold]
#[inline(never)]
fn make_cache() -> Option<&'static CpuCache> {
    let cpu = percpu::cpu_id();
    let node = super::current_node();
    #[allow(clippy::cast_ptr_alignment, reason = "allocated with CpuCache's own layout")]
    let cache = super::node_heap::alloc_in(node, Layout::new::<CpuCache>()).cast::<CpuCache>();
    if cache.is_null() {
        return None;
    }
    // SAFETY: freshly allocated with CpuCache's layout and kept for good
    // (unless freed below, unpublished). All-zero bytes are a valid empty
    // cache (node 0, nothing cached, stacks of cpu 0, not borrowed, empty,
    // of null pointers); then the node and owner are set. Built in place:
    // a cache is too big to build on the stack of an allocation.
    let ours: &'static mut CpuCache = unsafe {
        core::ptr::write_bytes(cache, 0, 1);
        &mut *cache
    };
    ours.node = node;
    ours.classes.adopt();
    // An interrupt handler may have made one meanwhile: keep the first.
    let first = CACHES.publish(cpu, ours);
    if !core::ptr::eq(first, cache) {
        let block = NonNull::new(cache as *mut u8).expect("checked above");
        let owner = super::node_of_phys(cache as u64 - crate::arch::paging::PHYS_MAP_BASE);
        // SAFETY: a small block of the node heaps (a cache is under 64 KiB)
        // from the memory of `owner`; ours was never published, and is not
        // used again.
        unsafe { super::node_heap::dealloc_small(block, Layout::new::<CpuCache>(), owner) };
    }
    Some(first)
}

/// Runs `f` on this cpu's cache. `None` when there is no cache, or it is
/// busy (an interrupt handler interrupted its own cpu's allocator).
fn with_cache<R>(f: impl FnOnce(&CpuCache, &mut [Stack; CLASSES]) -> R) -> Option<R> {
    let here = ThisCpu::get();
    let cache = CACHES.get(here.id()).or_else(make_cache)?;
    let mut stacks = cache.classes.try_borrow_on(here)?;
    Some(f(cache, &mut stacks))
}

/// Allocates a small block from this cpu's cache (refilling it from the
/// node heap). `None` for blocks too large to cache or when the node heap
/// is exhausted.
pub(super) fn alloc(layout: Layout) -> Option<NonNull<u8>> {
    let (class, size) = class_of(&layout)?;
    with_cache(|cache, stacks| {
        let stack = &mut stacks[class];
        if stack.len == 0 && !refill(cache, stack, size) {
            return None;
        }
        stack.len -= 1;
        cache.account(0, size);
        NonNull::new(stack.blocks[stack.len])
    })
    .flatten()
}

/// Fills an empty class stack with half its depth of blocks of `size`
/// from the node heap; returns whether it got any. (Out of line: the
/// common path of `alloc` stays small.)
#[cold]
#[inline(never)]
fn refill(cache: &CpuCache, stack: &mut Stack, size: usize) -> bool {
    let Ok(block_layout) = Layout::from_size_align(size, size) else { return false };
    stack.len = super::node_heap::alloc_batch(cache.node, block_layout, &mut stack.blocks[..DEPTH / 2]);
    cache.account(stack.len * size, 0);
    stack.len > 0
}

/// Gives the upper half of a full class stack of blocks of `size` back to
/// the node heap (out of line, as `refill`).
#[cold]
#[inline(never)]
fn give_back_half(cache: &CpuCache, stack: &mut Stack, size: usize) {
    let block_layout = Layout::from_size_align(size, size).expect("power-of-two class");
    super::node_heap::free_batch(cache.node, block_layout, &stack.blocks[DEPTH / 2..]);
    stack.len = DEPTH / 2;
    cache.account(0, DEPTH / 2 * size);
}

/// Takes a freed small block of `node` into this cpu's cache when the cpu
/// belongs to that node (giving a batch back to the heap when full).
/// Returns false when the caller must free it to the node heap itself.
pub(super) fn free(ptr: NonNull<u8>, layout: Layout, node: usize) -> bool {
    let Some((class, size)) = class_of(&layout) else { return false };
    with_cache(|cache, stacks| {
        if cache.node != node {
            return false;
        }
        let stack = &mut stacks[class];
        if stack.len == DEPTH {
            give_back_half(cache, stack, size);
        }
        stack.blocks[stack.len] = ptr.as_ptr();
        stack.len += 1;
        cache.account(size, 0);
        true
    })
    .unwrap_or(false)
}

/// Gives every block of this cpu's cache back to its node heap (when the
/// node is exhausted, so that a retry can use them).
pub(super) fn flush_this_cpu() {
    with_cache(|cache, stacks| {
        for (class, stack) in stacks.iter_mut().enumerate() {
            let size = 1usize << (class as u32 + MIN_CLASS_SHIFT);
            let block_layout = Layout::from_size_align(size, size).expect("power-of-two class");
            super::node_heap::free_batch(cache.node, block_layout, &stack.blocks[..stack.len]);
            cache.account(0, stack.len * size);
            stack.len = 0;
        }
    });
}
