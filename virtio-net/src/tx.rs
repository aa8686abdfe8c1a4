//! The transmit queue: one 2 KiB device-readable buffer per descriptor
//! (the virtio-net header, then the frame), a free list of the
//! descriptors the driver owns, refilled from the used ring.

use alloc::vec::Vec;

use crate::header::{partial_checksum, HEADER_LEN};
use crate::queue::{Descriptor, SplitQueue};
use crate::{Dma, BUFFER_SIZE};

/// The longest frame a buffer holds after the header.
pub const MAX_FRAME: usize = BUFFER_SIZE - HEADER_LEN;

pub struct TxQueue {
    pub queue: SplitQueue,
    buffers: Dma,
    /// Descriptors the driver owns.
    free: Vec<u16>,
    /// Which descriptors the device holds (a used entry for another one is
    /// ignored: a device bug must not free a buffer twice).
    with_device: Vec<bool>,
    /// The device completes TCP/UDP checksums (CSUM negotiated).
    offload: bool,
    pub packets: u64,
    pub bytes: u64,
    pub dropped: u64,
}

impl TxQueue {
    pub fn new(queue: SplitQueue, buffers: Dma, offload: bool) -> Self {
        let len = queue.len();
        debug_assert!(buffers.size >= usize::from(len) * BUFFER_SIZE);
        // Popped from the end: descriptor 0 goes first.
        let free = (0..len).rev().collect();
        let with_device = alloc::vec![false; usize::from(len)];
        Self { queue, buffers, free, with_device, offload, packets: 0, bytes: 0, dropped: 0 }
    }

    /// Takes back the descriptors the device has sent. Once some came
    /// back, an interrupt asked for by
    /// [`VirtioNet::interrupt_when_transmit_room`](crate::VirtioNet::interrupt_when_transmit_room)
    /// is no longer wanted.
    pub fn reclaim(&mut self) {
        let mut reclaimed = false;
        while let Some(used) = self.queue.pop_used() {
            if let Some(sent) = self.with_device.get_mut(used.id as usize).filter(|sent| **sent) {
                *sent = false;
                self.free.push(used.id as u16);
                reclaimed = true;
            }
        }
        if reclaimed && self.queue.interrupts() {
            self.queue.set_interrupts(false);
        }
    }

    pub fn has_room(&self) -> bool {
        !self.free.is_empty()
    }

    /// Fills a free descriptor with a frame of `len` bytes (at most
    /// [`MAX_FRAME`]) written by `f`; it goes at the next flush. The caller
    /// checked `has_room`.
    pub fn put<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let id = self.free.pop().expect("the caller checked has_room");
        let len = len.min(MAX_FRAME);
        let offset = usize::from(id) * BUFFER_SIZE;
        // SAFETY: a free descriptor's buffer is the driver's until it is
        // made available below; id < len, within the buffers.
        let buffer =
            unsafe { core::slice::from_raw_parts_mut(self.buffers.virt.as_ptr().add(offset), HEADER_LEN + len) };
        let (header, frame) = buffer.split_at_mut(HEADER_LEN);
        let result = f(frame);
        let net_header = if self.offload { partial_checksum(frame) } else { None };
        net_header.unwrap_or_default().write(header.try_into().expect("HEADER_LEN bytes"));
        let addr = self.buffers.phys + offset as u64;
        self.queue.set_descriptor(id, Descriptor { addr, len: (HEADER_LEN + len) as u32, flags: 0, next: 0 });
        self.queue.make_available(id);
        self.with_device[usize::from(id)] = true;
        self.packets += 1;
        self.bytes += len as u64;
        result
    }
}
