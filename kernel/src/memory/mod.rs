//! Physical memory and the kernel heap.
//!
//! At boot, [`BootFrames`] hands out page-table frames from the largest
//! usable region below 4 GiB (reachable through either loader's mapping).
//! Once the kernel runs on its own page tables, every remaining usable and
//! loader-reclaimable range becomes heap.

mod boot_frames;
mod heap;

pub use boot_frames::BootFrames;
pub use heap::{init_heap, HeapStats, heap_stats};
