//! The receive and transmit descriptor rings, in DMA memory shared with
//! the device.
//!
//! Ring positions live in RAM: the driver never reads a head register to
//! learn what the device did, it reads the descriptors' done bits. Tail
//! registers are written by [`crate::E1000::flush`], once per batch.
//!
//! Transmission can leave TCP and UDP checksums to the device: the frame
//! goes in an extended data descriptor asking for the checksum, after a
//! context descriptor saying where it lies whenever that place changes
//! (manual 3.3.5–3.3.7); the driver seeds the checksum field with the
//! pseudo-header sum, as the device sums from the TCP/UDP header to the end
//! of the frame.

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

/// Transmit descriptor (manual 3.3.3), legacy layout. Extended data and
/// context descriptors share its 16 bytes; see [`TxRing::put_offloaded`].
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
/// Extended descriptor (context or data), in `cmd`.
pub const CMD_DEXT: u8 = 1 << 5;
/// Descriptor type "data" (DTYP = 1, bits 23:20 of the length dword), in
/// `cso`; a context descriptor has DTYP = 0.
pub const DTYP_DATA: u8 = 1 << 4;
/// In a context descriptor's `cmd` (TUCMD): IPv4, and TCP (else UDP).
pub const TUCMD_IP: u8 = 1 << 1;
pub const TUCMD_TCP: u8 = 1 << 0;
/// In a data descriptor's `css` (POPTS): insert the TCP/UDP checksum.
pub const POPTS_TXSM: u8 = 1 << 1;

/// Where the device is to put a TCP/UDP checksum: from `start` (the TCP or
/// UDP header) to the end of the frame, stored at `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChecksumPlace {
    pub start: u8,
    pub offset: u8,
    pub tcp: bool,
}

/// Finds the TCP or UDP checksum of an IPv4 frame and seeds it with the
/// pseudo-header sum (addresses, protocol, length), which the device then
/// completes. `None` for any other frame (ARP, ICMP, ...), which leaves
/// its checksums to its sender.
pub fn seed_checksum(frame: &mut [u8]) -> Option<ChecksumPlace> {
    const ETH: usize = 14;
    if frame.len() < ETH + 20 || frame[12..14] != [0x08, 0x00] || frame[ETH] >> 4 != 4 {
        return None;
    }
    let header = usize::from(frame[ETH] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[ETH + 2], frame[ETH + 3]]));
    let (protocol, field) = match frame[ETH + 9] {
        6 => (6u8, 16),
        17 => (17u8, 6),
        _ => return None,
    };
    let start = ETH + header;
    // The frame must end with the IP packet (the device sums to its end)
    // and hold the checksum field.
    if header < 20 || total < header + field + 2 || ETH + total != frame.len() || start + field > u8::MAX as usize {
        return None;
    }
    let mut sum = u32::from(protocol) + (total - header) as u32;
    for word in frame[ETH + 12..ETH + 20].chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[start + field..start + field + 2].copy_from_slice(&(sum as u16).to_be_bytes());
    Some(ChecksumPlace { start: start as u8, offset: (start + field) as u8, tcp: protocol == 6 })
}

/// Packets, bytes and trouble, counted by the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames received and handed up.
    pub rx_packets: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames the device marked bad or that spanned several buffers.
    pub rx_errors: u64,
    /// Frames the device dropped for want of a buffer (its MPC counter).
    pub rx_missed: u64,
    /// Frames queued for the device to send.
    pub tx_packets: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames dropped because the transmit ring was full.
    pub tx_dropped: u64,
    /// Writes to the RDT and TDT registers (doorbells).
    pub doorbells: u64,
    /// Interrupts the driver handled.
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

    /// The waiting frame, without taking it (None when none waits or it is
    /// bad): lets the caller decide where it goes before it is taken.
    pub fn peek_frame(&self) -> Option<&[u8]> {
        let d = self.descriptor(self.next);
        let length = (d.length as usize).min(BUFFER_SIZE);
        let good = d.status & STATUS_DD != 0 && d.status & STATUS_EOP != 0 && d.errors == 0 && length > 0;
        // SAFETY: as in `take`: the device is done with a buffer whose
        // descriptor has DD, until the descriptor is given back, which
        // needs `&mut self` while this borrow of `self` lives.
        good.then(|| unsafe {
            core::slice::from_raw_parts(self.buffers.virt.as_ptr().add(self.next * BUFFER_SIZE), length)
        })
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
            let frame =
                unsafe { core::slice::from_raw_parts(self.buffers.virt.as_ptr().add(self.next * BUFFER_SIZE), length) };
            f(Some(frame))
        } else {
            self.errors += 1;
            f(None)
        };
        let recycled =
            RxDescriptor { addr: self.buffers.phys + (self.next * BUFFER_SIZE) as u64, ..Default::default() };
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
    /// The checksum context the device holds (from the last context
    /// descriptor).
    context: Option<ChecksumPlace>,
}

impl TxRing {
    pub fn new(ring: &Dma, buffers: Dma, len: usize) -> Self {
        let descriptors = descriptors::<TxDescriptor>(ring);
        for i in 0..len {
            // SAFETY: `ring` holds `len` descriptors. Status DD marks a
            // descriptor free.
            unsafe { descriptors.add(i).write_volatile(TxDescriptor { status: STATUS_DD, ..Default::default() }) };
        }
        Self {
            descriptors,
            buffers,
            len,
            packets: 0,
            bytes: 0,
            dropped: 0,
            tail: 0,
            clean: 0,
            dirty: false,
            context: None,
        }
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
        self.free_slots() >= 1
    }

    /// Whether one more frame fits with a context descriptor before it.
    pub fn has_room_offloaded(&self) -> bool {
        self.free_slots() >= 2
    }

    /// Descriptors that can be filled now.
    fn free_slots(&self) -> usize {
        (self.clean + self.len - self.tail - 1) % self.len
    }

    /// Fills the next descriptor with a frame of `len` bytes written by
    /// `f`, sent as it is. The caller checked `has_room`.
    pub fn put<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        self.put_frame(len, false, f)
    }

    /// Like [`put`](Self::put), but a TCP or UDP frame over IPv4 gets its
    /// checksum from the device (the frame's own checksum field is
    /// overwritten). The caller checked `has_room_offloaded`.
    pub fn put_offloaded<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        self.put_frame(len, true, f)
    }

    fn put_frame<R>(&mut self, len: usize, offload: bool, f: impl FnOnce(&mut [u8]) -> R) -> R {
        debug_assert!(if offload { self.has_room_offloaded() } else { self.has_room() });
        let len = len.min(BUFFER_SIZE);
        let slot = self.tail;
        // SAFETY: the descriptor at `slot` is free (reclaimed), so its
        // buffer is the driver's until the tail register passes it.
        let buffer =
            unsafe { core::slice::from_raw_parts_mut(self.buffers.virt.as_ptr().add(slot * BUFFER_SIZE), len) };
        let result = f(buffer);
        let place = if offload { seed_checksum(buffer) } else { None };
        let mut data = TxDescriptor {
            addr: self.buffers.phys + (slot * BUFFER_SIZE) as u64,
            length: len as u16,
            cmd: CMD_EOP | CMD_IFCS | CMD_RS,
            ..Default::default()
        };
        if let Some(place) = place {
            if self.context != Some(place) {
                // The data descriptor then goes one slot further, still
                // pointing at this slot's buffer: both are reclaimed, in
                // order, before this slot is filled again.
                self.write_descriptor(context_descriptor(place));
                self.context = Some(place);
            }
            data.cso = DTYP_DATA;
            data.cmd |= CMD_DEXT;
            data.css = POPTS_TXSM;
        }
        self.write_descriptor(data);
        self.packets += 1;
        self.bytes += len as u64;
        result
    }

    fn write_descriptor(&mut self, d: TxDescriptor) {
        // SAFETY: tail < len, and the descriptor there is free (the caller
        // checked the room for every descriptor of the frame).
        unsafe { self.descriptors.add(self.tail).write_volatile(d) };
        self.tail = (self.tail + 1) % self.len;
        self.dirty = true;
    }

    /// The tail to write, if frames were queued since the last flush.
    pub fn take_tail(&mut self) -> Option<usize> {
        core::mem::take(&mut self.dirty).then_some(self.tail)
    }
}

/// A context descriptor (manual 3.3.6) for TCP/UDP checksums at `place`,
/// to the end of each frame (TUCSE = 0); no IP checksum offload (IPCSS =
/// IPCSO = 0), no segmentation.
fn context_descriptor(place: ChecksumPlace) -> TxDescriptor {
    TxDescriptor {
        // IPCSS, IPCSO, IPCSE, then TUCSS, TUCSO, TUCSE (bytes 0-7).
        addr: u64::from(place.start) << 32 | u64::from(place.offset) << 40,
        cmd: CMD_DEXT | CMD_RS | TUCMD_IP | if place.tcp { TUCMD_TCP } else { 0 },
        ..Default::default()
    }
}
