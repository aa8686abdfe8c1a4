//! The split virtqueue (virtio 1.1, 2.6) in one DMA allocation: the
//! descriptor table, the available ring the driver writes, the used ring
//! the device writes; and notification suppression both ways.
//!
//! Driver to device: new available entries are published by one write of
//! the available index per batch ([`SplitQueue::publish`]), which then
//! says whether the device wants a notification: with RING_EVENT_IDX, when
//! the new entries pass the device's `avail_event` (`vring_need_event`),
//! else unless the device set VIRTQ_USED_F_NO_NOTIFY.
//!
//! Device to driver: interrupts are wanted or not
//! ([`SplitQueue::set_interrupts`]); with RING_EVENT_IDX the driver keeps
//! `used_event` at the next entry it will read (wanted) or a whole queue
//! ahead, where the device cannot reach (not wanted); else the
//! VIRTQ_AVAIL_F_NO_INTERRUPT flag says it.
//!
//! Ordering: ring entries (and the buffers they point at) are written
//! before the index that publishes them (a release fence), the index is
//! written before the device's suppression field is read (a full fence);
//! the used index is read before the entries it covers (an acquire fence).

use core::ptr::NonNull;
use core::sync::atomic::{fence, Ordering};

use crate::transport::QueueAddresses;
use crate::Dma;

/// The buffer is device-writable (else device-readable).
pub const DESC_F_WRITE: u16 = 2;
/// In the available ring's flags: the driver wants no interrupts.
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// In the used ring's flags: the device wants no notifications.
pub const USED_F_NO_NOTIFY: u16 = 1;

/// A descriptor-table entry (`struct virtq_desc`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

/// A used-ring entry: which descriptor chain, and how many bytes the
/// device wrote into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    pub id: u32,
    pub len: u32,
}

/// Byte offsets of the rings in a queue's memory (descriptors at 0,
/// 16-byte aligned; available ring 2-byte aligned; used ring 4-byte
/// aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub avail: usize,
    pub used: usize,
    pub size: usize,
}

impl Layout {
    pub fn new(len: u16) -> Self {
        let len = usize::from(len);
        let avail = 16 * len;
        // flags, idx, ring[len], used_event
        let used = (avail + 4 + 2 * len + 2).next_multiple_of(4);
        // flags, idx, ring[len] of 8 bytes, avail_event
        Layout { avail, used, size: used + 4 + 8 * len + 2 }
    }

    pub fn avail_idx(&self) -> usize {
        self.avail + 2
    }

    pub fn avail_ring(&self, slot: u16) -> usize {
        self.avail + 4 + 2 * usize::from(slot)
    }

    pub fn used_event(&self, len: u16) -> usize {
        self.avail_ring(len)
    }

    pub fn used_idx(&self) -> usize {
        self.used + 2
    }

    pub fn used_ring(&self, slot: u16) -> usize {
        self.used + 4 + 8 * usize::from(slot)
    }

    pub fn avail_event(&self, len: u16) -> usize {
        self.used_ring(len)
    }
}

/// Whether moving an index from `old` to `new` passes `event`
/// (`vring_need_event` of the virtio specification, 2.6.7.2 and 2.6.10.2).
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

pub struct SplitQueue {
    memory: NonNull<u8>,
    phys: u64,
    layout: Layout,
    len: u16,
    event_idx: bool,
    /// The available index as filled by the driver.
    next_avail: u16,
    /// The available index the device was last shown.
    published: u16,
    /// The next used index the driver reads.
    next_used: u16,
    interrupts: bool,
}

impl SplitQueue {
    /// A queue of `len` entries (a power of two) in `memory`, at least
    /// [`Layout::new`]`(len).size` zeroed bytes. Interrupts start off.
    pub fn new(memory: &Dma, len: u16, event_idx: bool) -> Self {
        let layout = Layout::new(len);
        assert!(len.is_power_of_two() && memory.size >= layout.size, "the caller sized the queue memory");
        let queue = Self {
            memory: memory.virt,
            phys: memory.phys,
            layout,
            len,
            event_idx,
            next_avail: 0,
            published: 0,
            next_used: 0,
            interrupts: false,
        };
        queue.write_suppression();
        queue
    }

    pub fn len(&self) -> u16 {
        self.len
    }

    pub fn addresses(&self) -> QueueAddresses {
        QueueAddresses {
            descriptors: self.phys,
            driver: self.phys + self.layout.avail as u64,
            device: self.phys + self.layout.used as u64,
        }
    }

    fn read16(&self, offset: usize) -> u16 {
        debug_assert!(offset + 2 <= self.layout.size && offset.is_multiple_of(2));
        // SAFETY: in bounds of the queue memory (offsets come from the
        // layout) and aligned; volatile, as the device writes it.
        u16::from_le(unsafe { self.memory.add(offset).cast::<u16>().read_volatile() })
    }

    fn write16(&self, offset: usize, value: u16) {
        debug_assert!(offset + 2 <= self.layout.size && offset.is_multiple_of(2));
        // SAFETY: as in read16; the fields written are the driver's.
        unsafe { self.memory.add(offset).cast::<u16>().write_volatile(value.to_le()) }
    }

    /// Fills descriptor `id` (the caller owns it: not available, or not yet
    /// published).
    pub fn set_descriptor(&mut self, id: u16, descriptor: Descriptor) {
        assert!(id < self.len);
        let le = Descriptor {
            addr: descriptor.addr.to_le(),
            len: descriptor.len.to_le(),
            flags: descriptor.flags.to_le(),
            next: descriptor.next.to_le(),
        };
        // SAFETY: id < len, so within the descriptor table at offset 0,
        // 16-byte aligned (the memory is 4 KiB aligned).
        unsafe { self.memory.cast::<Descriptor>().add(usize::from(id)).write_volatile(le) }
    }

    /// Appends descriptor `id` to the available ring; the device sees it at
    /// the next [`publish`](Self::publish). The caller never has more than
    /// `len` descriptors available at once.
    pub fn make_available(&mut self, id: u16) {
        self.write16(self.layout.avail_ring(self.next_avail % self.len), id);
        self.next_avail = self.next_avail.wrapping_add(1);
    }

    /// Shows the device every entry made available since the last call;
    /// returns whether it wants a notification for them.
    pub fn publish(&mut self) -> bool {
        if self.next_avail == self.published {
            return false;
        }
        // The entries and buffers before the index that covers them.
        fence(Ordering::Release);
        self.write16(self.layout.avail_idx(), self.next_avail);
        // The index before reading whether the device wants to hear of it:
        // the device writes its suppression field, then reads the index.
        fence(Ordering::SeqCst);
        let old = core::mem::replace(&mut self.published, self.next_avail);
        if self.event_idx {
            need_event(self.read16(self.layout.avail_event(self.len)), self.next_avail, old)
        } else {
            self.read16(self.layout.used) & USED_F_NO_NOTIFY == 0
        }
    }

    /// The next used entry, without taking it.
    pub fn peek_used(&self) -> Option<Used> {
        let mut used_idx = self.read16(self.layout.used_idx());
        if used_idx == self.next_used && self.interrupts {
            // Our interrupt request (written before) against the device's
            // used index (written before it reads our request): after a full
            // fence, at least one side sees the other, so an entry that
            // brings no interrupt is seen here.
            fence(Ordering::SeqCst);
            used_idx = self.read16(self.layout.used_idx());
        }
        if used_idx == self.next_used {
            return None;
        }
        // The index before the entries it covers.
        fence(Ordering::Acquire);
        let offset = self.layout.used_ring(self.next_used % self.len);
        // SAFETY: within the used ring, 4-byte aligned (the layout aligns
        // the ring); volatile as the device writes it.
        let (id, len) = unsafe {
            let entry = self.memory.add(offset).cast::<u32>();
            (entry.read_volatile(), entry.add(1).read_volatile())
        };
        Some(Used { id: u32::from_le(id), len: u32::from_le(len) })
    }

    /// Takes the next used entry.
    pub fn pop_used(&mut self) -> Option<Used> {
        let used = self.peek_used()?;
        self.next_used = self.next_used.wrapping_add(1);
        if self.event_idx {
            self.write_suppression();
        }
        Some(used)
    }

    /// Whether used-buffer interrupts are asked for.
    pub fn interrupts(&self) -> bool {
        self.interrupts
    }

    /// Asks for used-buffer interrupts, or for none.
    pub fn set_interrupts(&mut self, wanted: bool) {
        self.interrupts = wanted;
        self.write_suppression();
        fence(Ordering::SeqCst);
    }

    fn write_suppression(&self) {
        if self.event_idx {
            // Wanted: at the next entry. Not wanted: a whole queue ahead,
            // which the device cannot pass before the driver reads more
            // (at most `len` buffers are outstanding).
            let event = if self.interrupts { self.next_used } else { self.next_used.wrapping_add(self.len) };
            self.write16(self.layout.used_event(self.len), event);
        } else {
            self.write16(self.layout.avail, if self.interrupts { 0 } else { AVAIL_F_NO_INTERRUPT });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_event_is_true_exactly_when_the_move_passes_the_event() {
        assert!(need_event(0, 1, 0));
        assert!(need_event(5, 10, 5));
        assert!(need_event(9, 10, 5));
        assert!(!need_event(10, 10, 5), "the event index itself not yet reached");
        assert!(!need_event(4, 10, 5), "passed before");
        assert!(need_event(u16::MAX, 2, u16::MAX - 1), "across the wrap");
        assert!(!need_event(3, 3, 3), "no move, no event");
    }

    #[test]
    fn the_layout_aligns_each_ring() {
        let layout = Layout::new(256);
        assert_eq!((layout.avail, layout.used % 4), (4096, 0));
        assert!(layout.used >= 4096 + 4 + 512 + 2);
        assert_eq!(layout.avail_event(256) + 2, layout.size);
        let small = Layout::new(1);
        assert_eq!((small.avail, small.used, small.size), (16, 24, 38));
    }
}
