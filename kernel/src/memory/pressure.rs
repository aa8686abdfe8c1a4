//! The memory-pressure signal services read per request.
//!
//! A node's free memory is its free frames plus the free space its heap
//! already holds (two atomic loads; blocks sitting in cpu caches are left
//! out, which under-reports by at most about half a MiB per cpu). Against
//! the node's marks (`reserve`) it gives a level:
//!
//! - `Normal`: more than the low-water mark is free;
//! - `Low`: at most the low-water mark: take no new data (answer 507 or
//!   503), let the work in flight finish;
//! - `Critical`: at most the reserve: ordinary allocations that need new
//!   frames fail; only the kernel's critical ones still get memory.
//!
//! [`pressure`] is the machine's (sums over nodes), [`node_pressure`] one
//! node's.

use super::{frames, heap, reserve};

/// How scarce memory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// More than the low-water mark is free: take new data.
    Normal,
    /// At most the low-water mark is free: take no new data, let the work
    /// in flight finish.
    Low,
    /// At most the reserve is free: ordinary allocations needing new
    /// frames fail.
    Critical,
}

/// Free memory against the marks, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pressure {
    /// The level `free` is at.
    pub level: Level,
    /// Free frames plus free space inside the heap.
    pub free: usize,
    /// `level` is `Low` at or below this.
    pub low_water: usize,
    /// `level` is `Critical` at or below this: kept for the kernel.
    pub reserve: usize,
}

impl Pressure {
    fn new(free: usize, low_water: usize, reserve: usize) -> Self {
        let level = if free <= reserve {
            Level::Critical
        } else if free <= low_water {
            Level::Low
        } else {
            Level::Normal
        };
        Pressure { level, free, low_water, reserve }
    }

    /// Whether services may take new data.
    pub fn is_normal(&self) -> bool {
        self.level == Level::Normal
    }
}

/// The free bytes of `node` as the signal counts them.
fn free(node: usize) -> usize {
    frames::free_bytes(node) + heap::free_bytes(node)
}

/// The pressure on `node`.
pub fn node_pressure(node: usize) -> Pressure {
    Pressure::new(free(node), reserve::low_water(node), reserve::reserve(node))
}

/// The pressure on the whole machine (cheap: a few atomic loads per node).
pub fn pressure() -> Pressure {
    let nodes = super::node_count();
    let (mut free_sum, mut low_sum, mut reserve_sum) = (0, 0, 0);
    for node in 0..nodes {
        free_sum += free(node);
        low_sum += reserve::low_water(node);
        reserve_sum += reserve::reserve(node);
    }
    Pressure::new(free_sum, low_sum, reserve_sum)
}
