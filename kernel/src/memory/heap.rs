//! The kernel heap behind Rust's global allocator.
//!
//! A buddy allocator (`buddy_system_allocator`) over all usable RAM reached
//! through the direct map. Allocation failure returns null, which Rust turns
//! into `try_reserve` errors or `handle_alloc_error`.

use buddy_system_allocator::LockedHeap;

use crate::arch::paging::phys_to_virt;
use crate::boot::{MemoryRegion, RegionKind};

#[global_allocator]
static HEAP: LockedHeap<33> = LockedHeap::empty();

/// Smallest range worth adding to the heap.
const MIN_RANGE: u64 = 64 * 1024;
const LOW_MEMORY_END: u64 = 1 << 20;

/// Heap totals, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct HeapStats {
    pub total: usize,
    pub allocated: usize,
}

/// Gives the heap every usable or loader-reclaimable range above 1 MiB,
/// except `[reserved.0, reserved.1)` (the page tables' frames).
pub fn init_heap(map: &[MemoryRegion], reserved: (u64, u64)) {
    let mut heap = HEAP.lock();
    for region in map {
        if !matches!(region.kind, RegionKind::Usable | RegionKind::BootloaderReclaimable) {
            continue;
        }
        let (start, end) = (region.start.max(LOW_MEMORY_END), region.end());
        // Split around the reserved range.
        for (s, e) in [(start, end.min(reserved.0)), (start.max(reserved.1), end)] {
            if e > s && e - s >= MIN_RANGE {
                // SAFETY: [s, e) is RAM the memory map reports free (or the
                // loader's, which the kernel no longer uses), outside the
                // page-table frames; each range is added once.
                unsafe { heap.add_to_heap(phys_to_virt(s) as usize, phys_to_virt(e) as usize) };
            }
        }
    }
}

pub fn heap_stats() -> HeapStats {
    let heap = HEAP.lock();
    HeapStats { total: heap.stats_total_bytes(), allocated: heap.stats_alloc_actual() }
}
