//! Kernel stacks, each above a guard page, in one of two kinds of memory:
//!
//! - *lazily committed* ([`GuardedStack::new_lazy`], thread stacks): a
//!   range of `memory::lazy`; a page gets a frame (from the node of the
//!   cpu touching it, the thread's own) when the thread first reaches it,
//!   so a thread costs the stack it used, not the stack it may use;
//! - *committed up front* ([`GuardedStack::new`], a cpu's own stack and
//!   its interrupt stacks, which must never fault and which a starting cpu
//!   uses before it leaves the trampoline's page tables): one buddy block
//!   of `4 KiB << order` from the asked node, used through the direct map,
//!   its lowest page made absent there.
//!
//! Running off the end faults on the guard page (reported as a stack
//! overflow) instead of overwriting the neighbour. Dropping the stack
//! frees its memory.

use super::frames::{self, FRAME_SIZE};
use super::lazy::{Kind, Range};
use crate::arch::paging::{phys_to_virt, set_direct_map_present};

pub struct GuardedStack(Memory);

enum Memory {
    /// A buddy block whose lowest page is absent from the direct map.
    Committed {
        phys: u64,
        order: usize,
    },
    Lazy(Range),
}

impl GuardedStack {
    /// A stack committed up front, of at least `size` usable bytes (plus
    /// the guard page) from `node`'s memory (or, when it is exhausted, the
    /// nearest node's). `None` when memory is exhausted.
    pub fn new(node: usize, size: usize) -> Option<Self> {
        let frames = (size / FRAME_SIZE + 1).next_power_of_two();
        let order = frames.trailing_zeros() as usize;
        let phys = frames::alloc_frames(node, order)?;
        if set_direct_map_present(phys, false).is_err() {
            // SAFETY: the block was allocated just above with this order.
            unsafe { frames::free_frames(phys, order) };
            return None;
        }
        Some(Self(Memory::Committed { phys, order }))
    }

    /// A lazily committed stack of `size` usable bytes (rounded up to
    /// pages) above its guard page, its top page committed now (from this
    /// cpu's node: make it on the cpu that will run it), the others as the
    /// thread reaches them. `None` when memory is exhausted (so a thread
    /// that cannot get its first page is an error, not a fault) or `size`
    /// is 0 or above 256 MiB.
    pub fn new_lazy(size: usize) -> Option<Self> {
        let range = Range::new(Kind::Stack, size)?;
        let top = range.end();
        range.commit(top - FRAME_SIZE as u64, top).then(|| Self(Memory::Lazy(range)))
    }

    /// The address just above the stack (where `rsp` starts).
    pub fn top(&self) -> u64 {
        match &self.0 {
            Memory::Committed { phys, order } => phys_to_virt(*phys) as u64 + (FRAME_SIZE << order) as u64,
            Memory::Lazy(range) => range.end(),
        }
    }

    /// The guard page's address.
    pub fn guard(&self) -> u64 {
        match &self.0 {
            Memory::Committed { phys, .. } => phys_to_virt(*phys) as u64,
            Memory::Lazy(range) => range.guard(),
        }
    }

    /// The lowest usable address.
    pub fn bottom(&self) -> u64 {
        self.guard() + FRAME_SIZE as u64
    }

    /// Usable bytes (above the guard page).
    pub fn usable_size(&self) -> usize {
        (self.top() - self.bottom()) as usize
    }

    /// Bytes that hold memory: all of a committed stack, the touched pages
    /// of a lazy one.
    pub fn committed_bytes(&self) -> usize {
        match &self.0 {
            Memory::Committed { .. } => self.usable_size(),
            Memory::Lazy(range) => range.committed_bytes(),
        }
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
        // A lazy range frees itself.
        if let Memory::Committed { phys, order } = self.0 {
            // Mapping back a page of a split direct-map table cannot fail.
            let _ = set_direct_map_present(phys, true);
            // SAFETY: the block came from `alloc_frames` with this order and
            // nothing uses the stack any more (its owner is dropping it).
            unsafe { frames::free_frames(phys, order) };
        }
    }
}
