//! Kernel stacks carved from a node's frames, each above a guard page.
//!
//! A stack is one buddy block of `4 KiB << order` from the asked node,
//! used through the direct map; its lowest page is made absent there, so
//! running off the end faults (and is reported as a stack overflow)
//! instead of overwriting the neighbour. Dropping the stack maps the guard
//! page again and frees the block to its node.

use super::frames::{self, FRAME_SIZE};
use crate::arch::paging::{phys_to_virt, set_direct_map_present};

pub struct GuardedStack {
    phys: u64,
    order: usize,
}

impl GuardedStack {
    /// A stack of at least `size` usable bytes (plus the guard page) from
    /// `node`'s memory (or, when it is exhausted, the nearest node's).
    /// `None` when memory is exhausted.
    pub fn new(node: usize, size: usize) -> Option<Self> {
        let frames = (size / FRAME_SIZE + 1).next_power_of_two();
        let order = frames.trailing_zeros() as usize;
        let phys = frames::alloc_frames(node, order)?;
        if set_direct_map_present(phys, false).is_err() {
            // SAFETY: the block was allocated just above with this order.
            unsafe { frames::free_frames(phys, order) };
            return None;
        }
        Some(Self { phys, order })
    }

    /// The address just above the stack (where `rsp` starts).
    pub fn top(&self) -> u64 {
        phys_to_virt(self.phys) as u64 + (FRAME_SIZE << self.order) as u64
    }

    /// The guard page's address (the lowest page of the block).
    pub fn guard(&self) -> u64 {
        phys_to_virt(self.phys) as u64
    }

    /// The lowest usable address.
    pub fn bottom(&self) -> u64 {
        self.guard() + FRAME_SIZE as u64
    }

    /// Usable bytes (above the guard page).
    pub fn usable_size(&self) -> usize {
        (FRAME_SIZE << self.order) - FRAME_SIZE
    }

    /// The stack's physical base (its node is the node of this address).
    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// Hands the stack over for good (for cpus' own stacks).
    pub fn leak(self) -> u64 {
        let top = self.top();
        core::mem::forget(self);
        top
    }
}

impl Drop for GuardedStack {
    fn drop(&mut self) {
        // Mapping back a page of a split direct-map table cannot fail.
        let _ = set_direct_map_present(self.phys, true);
        // SAFETY: the block came from `alloc_frames` with this order and
        // nothing uses the stack any more (its owner is dropping it).
        unsafe { frames::free_frames(self.phys, self.order) };
    }
}
