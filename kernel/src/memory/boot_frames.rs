//! A bump allocator of 4 KiB frames for building the first page tables.

use x86_64::structures::paging::{FrameAllocator, PhysFrame, Size4KiB};
use x86_64::PhysAddr;

use crate::arch::boot::{MemoryRegion, RegionKind};

const FRAME: u64 = 4096;
/// Low memory stays free for real-mode trampolines.
const LOW_MEMORY_END: u64 = 1 << 20;
/// Both loaders map at least the low 4 GiB while the kernel builds tables.
const LOADER_REACH: u64 = 1 << 32;

/// Hands out frames from the front of one usable region.
pub struct BootFrames {
    start: u64,
    next: u64,
    end: u64,
}

impl BootFrames {
    /// Takes the largest usable region between 1 MiB and 4 GiB.
    pub fn new(map: &[MemoryRegion]) -> Option<Self> {
        map.iter()
            .filter(|r| r.kind == RegionKind::Usable)
            .map(|r| {
                let start = r.start.max(LOW_MEMORY_END).next_multiple_of(FRAME);
                let end = r.end().min(LOADER_REACH) & !(FRAME - 1);
                (start, end)
            })
            .filter(|(start, end)| start < end)
            .max_by_key(|(start, end)| end - start)
            .map(|(start, end)| Self { start, next: start, end })
    }

    /// The range handed out so far, `[start, end)`: it must not be reused.
    pub fn used(&self) -> (u64, u64) {
        (self.start, self.next)
    }
}

// SAFETY: each frame is handed out once (the cursor only moves forward) and
// lies in RAM the memory map reports usable.
unsafe impl FrameAllocator<Size4KiB> for BootFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        if self.next >= self.end {
            return None;
        }
        let frame = PhysFrame::containing_address(PhysAddr::new(self.next));
        self.next += FRAME;
        Some(frame)
    }
}
