//! The receive and transmit descriptor rings, in DMA memory shared with
//! the device.
//!
//! Ring positions live in RAM: the driver never reads a head register to
//! learn what the device did, it reads the descriptors' done bits. Tail
//! registers are written by [`crate::E1000::flush`], once per batch.

use core::ptr::NonNull;

use crate::Dma;

/// Bytes per packet buffer (RCTL.BSIZE = 2048).
pub const BUFFER_SIZE: usize = 2048;

/// Legacy receive descriptor (manual 3.2.3).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct RxDescriptor {
    pub addr: u64,
    pub length: u16,
    pub checksum: u16,
    pub status: u8,
    pub errors: u8,
    pub special: u16,
}

/// Legacy transmit descriptor (manual 3.3.3).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct TxDescriptor {
    pub addr: u64,
    pub length: u16,
    pub cso: u8,
    pub cmd: u8,
    pub status: u8,
    pub css: u8,
    pub special: u16,
}

pub const STATUS_DD: u8 = 1 << 0;
pub const STATUS_EOP: u8 = 1 << 1;
pub const CMD_EOP: u8 = 1 << 0;
pub const CMD_IFCS: u8 = 1 << 1;
pub const CMD_RS: u8 = 1 << 3;

/// Packets, bytes and trouble, counted by the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames the device marked bad or that spanned several buffers.
    pub rx_errors: u64,
    /// Frames the device dropped for want of a buffer (its MPC counter).
    pub rx_missed: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames dropped because the transmit ring was full.
    pub tx_dropped: u64,
    /// Writes to the RDT and TDT registers (doorbells).
    pub doorbells: u64,
    pub interrupts: u64,
}

fn descriptors<T>(dma: &Dma) -> NonNull<T> {
    dma.virt.cast()
}

pub struct RxRing {
    descriptors: NonNull<RxDescriptor>,
    buffers: Dma,
    len: usize,
    pub packets: u64,
    pub bytes: u64,
    pub errors: u64,
    /// The next descriptor the device fills.
    next: usize,
    /// The tail to write at the next flush, if it moved.
    tail: Option<usize>,
}

impl RxRing {
    /// Gives every descriptor a buffer; the device owns all but the last.
    pub fn new(ring: &Dma, buffers: Dma, len: usize) -> Self {
        let descriptors = descriptors::<RxDescriptor>(ring);
        for i in 0..len {
            let descriptor = RxDescriptor { addr: buffers.phys + (i * BUFFER_SIZE) as u64, ..Default::default() };
            // SAFETY: `ring` holds `len` descriptors (checked by the caller).
            unsafe { descriptors.add(i).write_volatile(descriptor) };
        }
        Self { descriptors, buffers, len, packets: 0, bytes: 0, errors: 0, next: 0, tail: None }
    }

    fn descriptor(&self, i: usize) -> RxDescriptor {
        // SAFETY: i < len; the device writes descriptors, hence volatile.
        unsafe { self.descriptors.add(i).read_volatile() }
    }

    /// The initial tail: every descriptor but the last belongs to the device.
    pub fn initial_tail(&self) -> usize {
        self.len - 1
    }

    /// The length of the frame waiting in the next descriptor, if any.
    pub fn peek(&self) -> Option<usize> {
        let d = self.descriptor(self.next);
        (d.status & STATUS_DD != 0).then_some(d.length as usize)
    }

    /// Hands the waiting frame to `f` (None when it is bad), then gives the
    /// descriptor back to the device (at the next flush).
    pub fn take<R>(&mut self, f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        let d = self.descriptor(self.next);
        if d.status & STATUS_DD == 0 {
            return None;
        }
        let length = (d.length as usize).min(BUFFER_SIZE);
        let good = d.status & STATUS_EOP != 0 && d.errors == 0 && length > 0;
        let result = if good {
            self.packets += 1;
            self.bytes += length as u64;
            // SAFETY: the device is done with this buffer (DD) and does not
            // touch it until the descriptor is given back below.
            let frame = unsafe { core::slice::from_raw_parts(self.buffers.virt.as_ptr().add(self.next * BUFFER_SIZE), length) };
            f(Some(frame))
        } else {
            self.errors += 1;
            f(None)
        };
        let recycled = RxDescriptor { addr: self.buffers.phys + (self.next * BUFFER_SIZE) as u64, ..Default::default() };
        // SAFETY: next < len; this descriptor is the driver's until the tail
        // passes it.
        unsafe { self.descriptors.add(self.next).write_volatile(recycled) };
        // The descriptor just processed becomes the new tail: the device
        // may fill everything before it.
        self.tail = Some(self.next);
        self.next = (self.next + 1) % self.len;
        Some(result)
    }

    /// The tail to write, if it moved since the last flush.
    pub fn take_tail(&mut self) -> Option<usize> {
        self.tail.take()
    }
}

pub struct TxRing {
    descriptors: NonNull<TxDescriptor>,
    buffers: Dma,
    len: usize,
    pub packets: u64,
    pub bytes: u64,
    pub dropped: u64,
    /// The next descriptor to fill.
    tail: usize,
    /// The oldest descriptor not yet known to be sent.
    clean: usize,
    /// Whether descriptors were filled since the last flush.
    dirty: bool,
}

impl TxRing {
    pub fn new(ring: &Dma, buffers: Dma, len: usize) -> Self {
        let descriptors = descriptors::<TxDescriptor>(ring);
        for i in 0..len {
            // SAFETY: `ring` holds `len` descriptors. Status DD marks a
            // descriptor free.
            unsafe { descriptors.add(i).write_volatile(TxDescriptor { status: STATUS_DD, ..Default::default() }) };
        }
        Self { descriptors, buffers, len, packets: 0, bytes: 0, dropped: 0, tail: 0, clean: 0, dirty: false }
    }

    /// Frees the descriptors the device has sent (their done bit).
    pub fn reclaim(&mut self) {
        while self.clean != self.tail {
            // SAFETY: clean < len; volatile because the device writes it.
            let d = unsafe { self.descriptors.add(self.clean).read_volatile() };
            if d.status & STATUS_DD == 0 {
                break;
            }
            self.clean = (self.clean + 1) % self.len;
        }
    }

    /// Whether one more frame fits (one slot stays empty so that a full
    /// ring is told apart from an empty one).
    pub fn has_room(&self) -> bool {
        (self.tail + 1) % self.len != self.clean
    }

    /// Fills the next descriptor with a frame of `len` bytes written by
    /// `f`. The caller checked `has_room`.
    pub fn put<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        debug_assert!(self.has_room());
        let len = len.min(BUFFER_SIZE);
        // SAFETY: the descriptor at `tail` is free (reclaimed), so its
        // buffer is the driver's until the tail register passes it.
        let buffer = unsafe { core::slice::from_raw_parts_mut(self.buffers.virt.as_ptr().add(self.tail * BUFFER_SIZE), len) };
        let result = f(buffer);
        let d = TxDescriptor {
            addr: self.buffers.phys + (self.tail * BUFFER_SIZE) as u64,
            length: len as u16,
            cmd: CMD_EOP | CMD_IFCS | CMD_RS,
            ..Default::default()
        };
        // SAFETY: tail < len; the descriptor is free (see above).
        unsafe { self.descriptors.add(self.tail).write_volatile(d) };
        self.tail = (self.tail + 1) % self.len;
        self.dirty = true;
        self.packets += 1;
        self.bytes += len as u64;
        result
    }

    /// The tail to write, if frames were queued since the last flush.
    pub fn take_tail(&mut self) -> Option<usize> {
        core::mem::take(&mut self.dirty).then_some(self.tail)
    }
}
