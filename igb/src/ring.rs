//! One queue pair's receive and transmit rings of advanced descriptors, in
//! DMA memory shared with the device.
//!
//! Ring positions live in RAM: the driver never reads a head register to
//! learn what the device did, it reads the descriptors' done bits. Tail
//! registers are written by [`crate::Queue::flush`], once per batch.
//!
//! Frames from smoltcp leave their TCP/UDP checksum to the device: the
//! driver seeds the checksum field with the pseudo-header sum
//! ([`seed_checksum`]) and marks the data descriptor TXSM with the index
//! of a context saying where the L4 header starts and which protocol it
//! is. The device keeps two contexts per queue; the driver keeps UDP in
//! index 0 and TCP in index 1 and writes a context descriptor only when
//! the one the device holds for that kind differs (in practice once per
//! kind: smoltcp always sends 14-byte Ethernet and 20-byte IPv4 headers),
//! so a frame usually takes one descriptor. Room is still counted for
//! two, the context descriptor possibly needed ahead of the frame.

use core::ptr::NonNull;

use smoltcp::wire::{checksum, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet};

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
/// implemented by QEMU's model.) An advanced context descriptor (7.2.2.2)
/// shares the 16 bytes: VLAN/MACLEN/IPLEN in the low half of `addr`, its
/// type and TUCMD in `cmd_type_len`, MSS/L4LEN/IDX in `olinfo_status`
/// (see [`context_descriptor`]).
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
/// olinfo_status of a data descriptor: POPTS (bits 13:8) TXSM, insert the
/// TCP/UDP checksum; the context to use in IDX (bit 4; bits 6:5 reserved,
/// two contexts per queue).
pub const TX_POPTS_TXSM: u32 = 1 << 9;
pub const TX_IDX_SHIFT: u32 = 4;
/// A context descriptor: DTYP = 0010b (with DEXT), in `cmd_type_len`
/// (type_tucmd_mlhl), with TUCMD in bits 19:9: IPv4 (bit 10), L4T TCP
/// (bits 12:11 = 01b; 00b is UDP).
pub const TX_DTYP_CONTEXT: u32 = 0b0010 << 20;
pub const TX_DTYP_MASK: u32 = 0b1111 << 20;
pub const TUCMD_IPV4: u32 = 1 << 10;
pub const TUCMD_L4T_TCP: u32 = 1 << 11;
/// vlan_macip_lens of a context: IP header length in bits 8:0, MAC header
/// length in bits 15:9.
pub const CONTEXT_MACLEN_SHIFT: u32 = 9;
pub const CONTEXT_IPLEN_MASK: u32 = 0x1ff;

const ETHERNET_HEADER: usize = 14;

/// What a checksum context tells the device: an IPv4 frame whose TCP or
/// UDP header follows a 14-byte Ethernet header and an `ip_header`-byte
/// IPv4 header. TCP frames use context index 1, UDP frames index 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChecksumContext {
    pub ip_header: u8,
    pub tcp: bool,
}

impl ChecksumContext {
    pub fn index(self) -> usize {
        usize::from(self.tcp)
    }
}

/// Finds the TCP or UDP checksum of a whole (unfragmented) IPv4 packet
/// filling `frame` and seeds it with the pseudo-header sum (addresses,
/// protocol, length), which the device then completes by summing from the
/// L4 header to the end of the frame (the 82576, and a host completing
/// QEMU's offload through a tap's vnet header; QEMU's own software path
/// recomputes the whole checksum). `None` for any other frame (ARP, ICMP,
/// a fragment, a frame with trailing bytes), which is sent as it is.
pub fn seed_checksum(frame: &mut [u8]) -> Option<ChecksumContext> {
    let eth = EthernetFrame::new_checked(&*frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    let (tcp, field) = match ip.next_header() {
        IpProtocol::Tcp => (true, 16),
        IpProtocol::Udp => (false, 6),
        _ => return None,
    };
    let (header, total) = (usize::from(ip.header_len()), usize::from(ip.total_len()));
    if ip.version() != 4
        || ip.more_frags()
        || ip.frag_offset() != 0
        || ETHERNET_HEADER + total != frame.len()
        || total < header + field + 2
    {
        return None;
    }
    let seed = checksum::pseudo_header_v4(&ip.src_addr(), &ip.dst_addr(), ip.next_header(), (total - header) as u32);
    let at = ETHERNET_HEADER + header + field;
    frame[at..at + 2].copy_from_slice(&seed.to_be_bytes());
    Some(ChecksumContext { ip_header: header as u8, tcp })
}

/// The context descriptor loading `context` into the device's slot
/// `context.index()`. No RS: the datasheet defines no status for context
/// descriptors, so none is written back (QEMU would write DD with RS);
/// the slot is reclaimed with the data descriptor after it.
pub fn context_descriptor(context: ChecksumContext) -> TxDescriptor {
    TxDescriptor {
        addr: u64::from(
            (ETHERNET_HEADER as u32) << CONTEXT_MACLEN_SHIFT | (u32::from(context.ip_header) & CONTEXT_IPLEN_MASK),
        ),
        cmd_type_len: TX_DTYP_CONTEXT | TX_DEXT | TUCMD_IPV4 | if context.tcp { TUCMD_L4T_TCP } else { 0 },
        olinfo_status: (context.index() as u32) << TX_IDX_SHIFT,
    }
}

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
    /// Frames received and handed up.
    pub rx_packets: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames the device marked bad (checksum or frame errors), left
    /// unchecked, or spanning several buffers.
    pub rx_errors: u64,
    /// Frames the device dropped on this queue for want of a buffer (its
    /// RQDPC counter; 0 where the device model does not count).
    pub rx_missed: u64,
    /// Frames queued for the device to send.
    pub tx_packets: u64,
    /// Bytes of those frames.
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
    /// The checksum contexts the device holds (UDP, TCP), as last loaded.
    contexts: [Option<ChecksumContext>; 2],
}

impl TxRing {
    pub fn new(ring: &Dma, buffers: Dma, len: usize) -> Self {
        // The ring is zeroed: no descriptor is pending, no context loaded.
        let (packets, bytes, dropped, tail, clean) = (0, 0, 0, 0, 0);
        Self {
            descriptors: ring.virt.cast(),
            buffers,
            len,
            packets,
            bytes,
            dropped,
            tail,
            clean,
            dirty: false,
            contexts: [None; 2],
        }
    }

    fn descriptor(&self, i: usize) -> TxDescriptor {
        // SAFETY: i < len; volatile because the device writes descriptors.
        unsafe { self.descriptors.add(i % self.len).read_volatile() }
    }

    /// Frees the descriptors the device has sent. A data descriptor is
    /// done when its done bit is set; a context descriptor gets no status
    /// and is freed with the data descriptor that follows it (written
    /// together, sent in order), so a frame's slots are freed together.
    pub fn reclaim(&mut self) {
        while self.clean != self.tail {
            let d = self.descriptor(self.clean);
            let slots = if d.olinfo_status & TX_DD != 0 {
                1
            } else if d.cmd_type_len & (TX_DEXT | TX_DTYP_MASK) == TX_DEXT | TX_DTYP_CONTEXT
                && (self.clean + 1) % self.len != self.tail
                && self.descriptor(self.clean + 1).olinfo_status & TX_DD != 0
            {
                2
            } else {
                break;
            };
            self.clean = (self.clean + slots) % self.len;
        }
    }

    /// Whether one more frame sent as it is fits (one slot stays empty so
    /// that a full ring is told apart from an empty one).
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
        // A frame uses the buffer of its first slot, whether that holds a
        // context or the data descriptor: its slots are freed together,
        // so the buffer is free whenever the first slot is.
        let slot = self.tail;
        // SAFETY: the descriptor at `slot` is free (reclaimed), so its
        // buffer is the driver's until the tail register passes it.
        let buffer =
            unsafe { core::slice::from_raw_parts_mut(self.buffers.virt.as_ptr().add(slot * BUFFER_SIZE), len) };
        let result = f(buffer);
        let mut data = TxDescriptor {
            addr: self.buffers.phys + (slot * BUFFER_SIZE) as u64,
            cmd_type_len: len as u32 | TX_DTYP_DATA | TX_DEXT | TX_EOP | TX_IFCS | TX_RS,
            olinfo_status: (len as u32) << TX_PAYLEN_SHIFT,
        };
        if let Some(context) = offload.then(|| seed_checksum(buffer)).flatten() {
            if self.contexts[context.index()] != Some(context) {
                self.write_descriptor(context_descriptor(context));
                self.contexts[context.index()] = Some(context);
            }
            data.olinfo_status |= TX_POPTS_TXSM | (context.index() as u32) << TX_IDX_SHIFT;
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
