//! The receive queue: one 2 KiB device-writable buffer per descriptor,
//! all posted at setup and each recycled (the same descriptor made
//! available again) once its frame is taken. A buffer holds the virtio-net
//! header, then the frame.

use crate::header::{complete_checksum, NetHeader, HEADER_LEN, NEEDS_CSUM};
use crate::queue::{Descriptor, SplitQueue, Used, DESC_F_WRITE};
use crate::{Dma, BUFFER_SIZE};

/// The shortest frame handed on: an Ethernet header.
const MIN_FRAME: usize = 14;

pub struct RxQueue {
    pub queue: SplitQueue,
    buffers: Dma,
    pub packets: u64,
    pub bytes: u64,
    /// Used entries naming no buffer of ours, frames too short, longer
    /// than a buffer, or with a checksum place outside the frame.
    pub errors: u64,
}

impl RxQueue {
    /// Gives every descriptor its buffer and makes them all available
    /// (published at the next flush).
    pub fn new(mut queue: SplitQueue, buffers: Dma) -> Self {
        debug_assert!(buffers.size >= usize::from(queue.len()) * BUFFER_SIZE);
        for id in 0..queue.len() {
            let addr = buffers.phys + (usize::from(id) * BUFFER_SIZE) as u64;
            queue.set_descriptor(id, Descriptor { addr, len: BUFFER_SIZE as u32, flags: DESC_F_WRITE, next: 0 });
            queue.make_available(id);
        }
        Self { queue, buffers, packets: 0, bytes: 0, errors: 0 }
    }

    /// The buffer and frame length of a used entry, if it is a good frame.
    fn frame_of(&self, used: Used) -> Option<(u16, usize)> {
        let id = u16::try_from(used.id).ok().filter(|&id| id < self.queue.len())?;
        let len = used.len as usize;
        (HEADER_LEN + MIN_FRAME..=BUFFER_SIZE).contains(&len).then_some((id, len - HEADER_LEN))
    }

    fn buffer(&self, id: u16) -> *mut u8 {
        debug_assert!(id < self.queue.len());
        // SAFETY: id < len, and the buffers hold len * BUFFER_SIZE bytes.
        unsafe { self.buffers.virt.as_ptr().add(usize::from(id) * BUFFER_SIZE) }
    }

    pub fn ready(&self) -> bool {
        self.queue.peek_used().is_some()
    }

    /// The waiting frame, left in place (`None` when none waits or it is
    /// bad). A partial checksum is completed only when it is taken.
    pub fn peek_frame(&self) -> Option<&[u8]> {
        let (id, len) = self.frame_of(self.queue.peek_used()?)?;
        // SAFETY: the device is done with a used buffer until the driver
        // makes it available again, which needs `&mut self` while this
        // borrow of `self` lives.
        Some(unsafe { core::slice::from_raw_parts(self.buffer(id).add(HEADER_LEN), len) })
    }

    /// Hands the waiting frame to `f` (`None` when it is bad), then
    /// recycles its buffer; `None` when nothing waits.
    pub fn take<R>(&mut self, f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        let used = self.queue.pop_used()?;
        let Some((id, len)) = self.frame_of(used) else {
            self.errors += 1;
            // A buffer of ours with a bad length goes back to the device; an
            // id that is not ours has nothing to recycle.
            if let Some(id) = u16::try_from(used.id).ok().filter(|&id| id < self.queue.len()) {
                self.queue.make_available(id);
            }
            return Some(f(None));
        };
        // SAFETY: the device is done with this used buffer until it is made
        // available again below; nothing else borrows it (`&mut self`).
        let buffer = unsafe { core::slice::from_raw_parts_mut(self.buffer(id), HEADER_LEN + len) };
        let (header, frame) = buffer.split_at_mut(HEADER_LEN);
        let header = NetHeader::read((&*header).try_into().expect("HEADER_LEN bytes"));
        let good = header.flags & NEEDS_CSUM == 0 || complete_checksum(frame, &header);
        let result = if good {
            self.packets += 1;
            self.bytes += len as u64;
            f(Some(frame))
        } else {
            self.errors += 1;
            f(None)
        };
        self.queue.make_available(id);
        Some(result)
    }
}
