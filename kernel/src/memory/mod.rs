//! Physical memory and the kernel heap, per NUMA node.
//!
//! - `BootFrames` hands out the first page-table frames, before the
//!   topology is known.
//! - `frames`: one buddy frame allocator per node, fed with that node's
//!   usable RAM; falls back to the nearest other node only when exhausted.
//! - `heap`: the global allocator; each allocation comes from the heap of
//!   the current cpu's node, each free returns to the node owning the
//!   address.
//! - `cpu_cache`: per-cpu caches of small blocks in front of the heaps.
//! - `lazy`: lazily committed ranges (a frame per page on first touch).
//! - `stack`: kernel stacks above guard pages, lazily committed or not.
//! - `reserve`: the memory applications cannot take (kept for the
//!   kernel, the network stack and open connections), enforced by the heap
//!   when it takes frames.
//! - `pressure`: the signal services read per request ([`pressure()`](fn@crate::memory::pressure),
//!   [`Level`](crate::memory::Level): `Normal`, `Low`, `Critical`) against each node's marks.

mod boot_frames;
mod cpu_cache;
pub(crate) mod frames;
pub(crate) mod heap;
pub(crate) mod lazy;
mod node_heap;
mod pending;
pub(crate) mod pressure;
pub(crate) mod reserve;
pub(crate) mod stack;

use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;
use x86_64::structures::paging::{FrameAllocator, PhysFrame};
use x86_64::PhysAddr;

pub(crate) use boot_frames::BootFrames;
pub(crate) use frames::alloc_frames;
pub(crate) use heap::leak_in;
/// What lazily committed memory holds now: thread stacks and socket
/// buffers (committed page by page as they are touched), the page-fault
/// frame reserves and the page tables made for them.
pub use lazy::{stats as committed_stats, LazyStats as CommittedStats};
pub use pressure::{node_pressure, pressure, Level, Pressure};
pub use reserve::{stats as reserve_stats, ReserveStats};

use crate::arch::boot::{MemoryRegion, RegionKind};
use crate::arch::paging;
use crate::topology::Topology;

/// Moves `value` into a new `Box`, or hands it back when the allocator
/// refuses the memory (`Box::try_new` is not stable). A `Box<F>` coerces
/// to `Box<dyn Trait>` as usual.
pub(crate) fn try_box<T>(value: T) -> Result<alloc::boxed::Box<T>, T> {
    let layout = core::alloc::Layout::new::<T>();
    if layout.size() == 0 {
        return Ok(alloc::boxed::Box::new(value));
    }
    // SAFETY: the layout has a non-zero size.
    let block = unsafe { alloc::alloc::alloc(layout) } as *mut T;
    if block.is_null() {
        return Err(value);
    }
    // SAFETY: `block` is fresh memory from the global allocator with T's
    // layout, which is what a Box<T> frees; it is written before use.
    unsafe {
        block.write(value);
        Ok(alloc::boxed::Box::from_raw(block))
    }
}

/// `2^order` zeroed frames from `node` (as [`alloc_frames`]): their
/// physical address, reached at `paging::phys_to_virt` of it.
pub(crate) fn alloc_zeroed_frames(node: usize, order: usize) -> Option<u64> {
    let phys = alloc_frames(node, order)?;
    // SAFETY: the frames were just allocated, so nothing else uses them,
    // and all RAM is in the direct map.
    unsafe { core::ptr::write_bytes(paging::phys_to_virt(phys), 0, 4096 << order) };
    Some(phys)
}

/// Low memory stays free for real-mode trampolines.
pub(crate) const LOW_MEMORY_END: u64 = 1 << 20;

/// Boot frames, until the node allocators take over.
static BOOT_FRAMES: Mutex<Option<BootFrames>> = Mutex::new(None);

/// Keeps the boot frame allocator for page tables made before [`init`],
/// and makes [`page_table_frame`] where `arch::paging` takes the frames
/// of the page tables it makes from now on.
pub(crate) fn set_boot_frames(frames: BootFrames) {
    *BOOT_FRAMES.lock() = Some(frames);
    // SAFETY: page_table_frame hands each frame out once, from free RAM
    // nothing else uses (the boot frames, then the node allocators), and
    // all RAM is in the direct map the kernel's tables have from install.
    unsafe { paging::set_table_frame_source(page_table_frame) };
}

/// A frame for a page table: from the boot frames before [`init`], the
/// current node's frames after.
fn page_table_frame() -> Option<PhysFrame> {
    if let Some(boot) = BOOT_FRAMES.lock().as_mut() {
        return boot.allocate_frame();
    }
    let phys = alloc_frames(current_node(), 0)?;
    Some(PhysFrame::containing_address(PhysAddr::new(phys)))
}

/// Builds the node allocators from the memory map and topology: every
/// usable or loader-reclaimable range above 1 MiB, except the frames the
/// boot allocator handed out. From here on, page tables and the heap draw
/// from the nodes.
pub(crate) fn init(map: &[MemoryRegion], topology: &'static Topology) {
    lazy::register_fault_hooks();
    let used = BOOT_FRAMES.lock().take().map_or((0, 0), |b| b.used());
    let mut regions = [(0u64, 0u64, 0usize); 256];
    let mut n = 0;
    for region in map {
        if !matches!(region.kind, RegionKind::Usable | RegionKind::BootloaderReclaimable) {
            continue;
        }
        let (start, end) = (region.start.max(LOW_MEMORY_END), region.end());
        for (s, e) in [(start, end.min(used.0)), (start.max(used.1), end)] {
            split_by_node(topology, s, e, |s, e, node| {
                if n < regions.len() {
                    regions[n] = (s, e, node);
                    n += 1;
                }
            });
        }
    }
    frames::init(topology, &regions[..n]);
    reserve::init(topology.node_count());
    SEVERAL_NODES.store(topology.node_count() > 1, Ordering::Relaxed);
}

/// Calls `f(start, end, node)` for the parts of `[start, end)` that belong
/// to each node (memory outside every SRAT range belongs to node 0).
fn split_by_node(topology: &Topology, start: u64, end: u64, mut f: impl FnMut(u64, u64, usize)) {
    let mut at = start;
    while at < end {
        let node = topology.node_of_addr(at);
        // The next boundary: the end of the range containing `at`, or the
        // start of the next range.
        let boundary =
            topology.ranges().iter().flat_map(|r| [r.start, r.end]).filter(|&b| b > at).min().unwrap_or(end).min(end);
        f(at, boundary, node);
        at = boundary;
    }
}

/// A NUMA node's memory, in bytes: RAM given to the node, what is free
/// (free frames plus free space inside the node's heap), what is used, and
/// how many allocations for this node another node had to serve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// RAM given to the node.
    pub total: usize,
    /// Free frames plus free space inside the node's heap.
    pub free: usize,
    /// `total - free`.
    pub used: usize,
    /// Allocations for this node that another node had to serve.
    pub fallbacks: usize,
}

/// Memory statistics of `node` (all zero for a node that does not exist).
pub fn stats(node: usize) -> MemoryStats {
    let f = frames::stats(node);
    let h = heap::stats(node);
    let free = f.free + (h.total - h.allocated);
    MemoryStats { total: f.total, free, used: f.total - free, fallbacks: f.fallbacks + h.fallbacks }
}

/// The number of NUMA nodes.
pub fn node_count() -> usize {
    crate::topology::get().map_or(1, |t| t.node_count())
}

/// The node of the cpu running this code.
pub fn current_node() -> usize {
    crate::arch::percpu::this().node()
}

/// Whether memory is split over more than one node (set by [`init`]).
static SEVERAL_NODES: AtomicBool = AtomicBool::new(false);

/// The node owning physical address `phys` (no search on one node).
pub(crate) fn node_of_phys(phys: u64) -> usize {
    if !SEVERAL_NODES.load(Ordering::Relaxed) {
        return 0;
    }
    crate::topology::get().map_or(0, |t| t.node_of_addr(phys))
}
