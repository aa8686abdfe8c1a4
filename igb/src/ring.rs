//! One queue pair's receive and transmit rings of advanced descriptors, in
//! DMA memory shared with the device.
//!
//! Ring positions live in RAM: the driver never reads a head register to
//! learn what the device did, it reads the descriptors' done bits. Tail
//! registers are written by [`crate::Queue::flush`], once per batch.

use core::ptr::NonNull;

use crate::Dma;

/// Bytes per packet buffer (SRRCTL.BSIZEPKT = 2 KiB).
pub const BUFFER_SIZE: usize = 2048;

/// An advanced receive descriptor (datasheet 7.1.5). The driver writes the
/// "read" layout (buffer address, header address 0); the device overwrites
/// it with the "write-back" layout: packet type and RSS hash in `info`,
/// status and errors in `status_error`, then length and VLAN tag.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct RxDescriptor {
    /// Read: packet buffer address. Write-back: packet info (low 32 bits),
    /// RSS hash (high 32 bits).
    pub info: u64,
    /// Read: header buffer address (0). Write-back: status and errors.
    pub status_error: u32,
    pub length: u16,
    pub vlan: u16,
}

/// An advanced transmit data descriptor (datasheet 7.2.2.3): buffer,
/// command/type/length, and offload info whose low bits the device
/// overwrites with the done status. (Legacy transmit descriptors are not
/// implemented by QEMU's model.)
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct TxDescriptor {
    pub addr: u64,
    pub cmd_type_len: u32,
    pub olinfo_status: u32,
}

/// Receive status: descriptor done, end of packet, IP checksum checked,
/// TCP/UDP checksum checked.
pub const RX_DD: u32 = 1 << 0;
pub const RX_EOP: u32 = 1 << 1;
pub const RX_L4CS: u32 = 1 << 5;
#[cfg(test)]
pub const RX_IPCS: u32 = 1 << 6;
/// Receive errors: TCP/UDP checksum, IP checksum, frame error.
pub const RX_TCPE: u32 = 1 << 29;
pub const RX_IPE: u32 = 1 << 30;
pub const RX_RXE: u32 = 1 << 31;
/// Packet type bits of the write-back's first dword: IPv4, TCP, UDP.
#[cfg(test)]
pub const PKT_IPV4: u64 = 1 << 4;
pub const PKT_TCP: u64 = 1 << 8;
pub const PKT_UDP: u64 = 1 << 9;

/// Transmit command/type: advanced data descriptor, end of packet, insert
/// the Ethernet CRC, report status (DD).
pub const TX_DTYP_DATA: u32 = 0b0011 << 20;
pub const TX_EOP: u32 = 1 << 24;
pub const TX_IFCS: u32 = 1 << 25;
pub const TX_RS: u32 = 1 << 27;
pub const TX_DEXT: u32 = 1 << 29;
/// olinfo_status: the frame's length in bits 31:14; done bit 0.
pub const TX_PAYLEN_SHIFT: u32 = 14;
pub const TX_DD: u32 = 1 << 0;

/// Why the driver drops a received frame, if it does.
pub fn rx_frame_is_bad(d: &RxDescriptor) -> bool {
    let l4 = d.info & (PKT_TCP | PKT_UDP) != 0;
    d.status_error & RX_EOP == 0
        || d.status_error & (RX_TCPE | RX_IPE | RX_RXE) != 0
        // A TCP or UDP frame the device did not check would reach smoltcp,
        // which is told not to check (see `device.rs`), unchecked.
        || (l4 && d.status_error & RX_L4CS == 0)
        || d.length == 0
}

/// Packets, bytes and trouble of one queue, counted by the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames the device marked bad (checksum or frame errors), left
    /// unchecked, or spanning several buffers.
    pub rx_errors: u64,
    /// Frames the device dropped on this queue for want of a buffer (its
    /// RQDPC counter; 0 where the device model does not count).
    pub rx_missed: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames dropped because the transmit ring was full.
    pub tx_dropped: u64,
    /// Writes to this queue's RDT and TDT registers (doorbells).
    pub doorbells: u64,
    /// Interrupts of this queue acknowledged.
    pub interrupts: u64,
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
        let descriptors = ring.virt.cast::<RxDescriptor>();
        let ring = Self { descriptors, buffers, len, packets: 0, bytes: 0, errors: 0, next: 0, tail: None };
        for i in 0..len {
            ring.post(i);
        }
        ring
    }

    /// Gives descriptor `i` its buffer again (header address 0 also clears
    /// the done bit, which shares its place).
    fn post(&self, i: usize) {
        let descriptor = RxDescriptor { info: self.buffers.phys + (i * BUFFER_SIZE) as u64, ..Default::default() };
        // SAFETY: i < len (the ring holds `len` descriptors, checked by the
        // caller); the descriptor is the driver's until the tail passes it.
        unsafe { self.descriptors.add(i).write_volatile(descriptor) };
    }

    fn descriptor(&self, i: usize) -> RxDescriptor {
        // SAFETY: i < len; the device writes descriptors, hence volatile.
        unsafe { self.descriptors.add(i).read_volatile() }
    }

    /// The initial tail: every descriptor but the last belongs to the device.
    pub fn initial_tail(&self) -> usize {
        self.len - 1
    }

    /// Whether a frame (good or bad) waits in the next descriptor.
    pub fn ready(&self) -> bool {
        self.descriptor(self.next).status_error & RX_DD != 0
    }

    fn frame(&self, d: &RxDescriptor) -> &[u8] {
        let length = usize::from(d.length).min(BUFFER_SIZE);
        // SAFETY: the device is done with the buffer of a descriptor whose
        // done bit is set, until the descriptor is given back, which needs
        // `&mut self` while this borrow of `self` lives.
        unsafe { core::slice::from_raw_parts(self.buffers.virt.as_ptr().add(self.next * BUFFER_SIZE), length) }
    }

    /// The waiting frame, without taking it (None when none waits or it is
    /// bad): lets the caller decide where it goes before it is taken.
    pub fn peek_frame(&self) -> Option<&[u8]> {
        let d = self.descriptor(self.next);
        (d.status_error & RX_DD != 0 && !rx_frame_is_bad(&d)).then(|| self.frame(&d))
    }

    /// Hands the waiting frame to `f` (None when it is bad), then gives the
    /// descriptor back to the device (at the next flush).
    pub fn take<R>(&mut self, f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        let d = self.descriptor(self.next);
        if d.status_error & RX_DD == 0 {
            return None;
        }
        let result = if rx_frame_is_bad(&d) {
            self.errors += 1;
            f(None)
        } else {
            self.packets += 1;
            self.bytes += u64::from(d.length);
            f(Some(self.frame(&d)))
        };
        self.post(self.next);
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
        // The ring is zeroed: no descriptor is pending.
        Self { descriptors: ring.virt.cast(), buffers, len, packets: 0, bytes: 0, dropped: 0, tail: 0, clean: 0, dirty: false }
    }

    /// Frees the descriptors the device has sent (their done bit).
    pub fn reclaim(&mut self) {
        while self.clean != self.tail {
            // SAFETY: clean < len; volatile because the device writes it.
            let d = unsafe { self.descriptors.add(self.clean).read_volatile() };
            if d.olinfo_status & TX_DD == 0 {
                break;
            }
            self.clean = (self.clean + 1) % self.len;
        }
    }

    /// Whether one more frame fits (one slot stays empty so that a full
    /// ring is told apart from an empty one).
    pub fn has_room(&self) -> bool {
        (self.clean + self.len - self.tail - 1) % self.len >= 1
    }

    /// Fills the next descriptor with a frame of `len` bytes written by
    /// `f`. The caller checked `has_room`.
    pub fn put<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        debug_assert!(self.has_room());
        let len = len.min(BUFFER_SIZE);
        let slot = self.tail;
        // SAFETY: the descriptor at `slot` is free (reclaimed), so its
        // buffer is the driver's until the tail register passes it.
        let buffer = unsafe { core::slice::from_raw_parts_mut(self.buffers.virt.as_ptr().add(slot * BUFFER_SIZE), len) };
        let result = f(buffer);
        let descriptor = TxDescriptor {
            addr: self.buffers.phys + (slot * BUFFER_SIZE) as u64,
            cmd_type_len: len as u32 | TX_DTYP_DATA | TX_DEXT | TX_EOP | TX_IFCS | TX_RS,
            olinfo_status: (len as u32) << TX_PAYLEN_SHIFT,
        };
        // SAFETY: slot < len and the descriptor is free (see above).
        unsafe { self.descriptors.add(slot).write_volatile(descriptor) };
        self.tail = (slot + 1) % self.len;
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
