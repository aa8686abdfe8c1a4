//! The network-device interface: what the stack, [`RawNic`](super::RawNic)
//! and the statistics need from a NIC driver, whichever it is.
//!
//! [`NetDevice`] is smoltcp's [`phy::Device`] plus the MAC address, link
//! state, interrupt acknowledgement, the batched doorbell ([`flush`]),
//! in-place reception for the stack's per-connection dispatch, and
//! counters in the kernel's own [`NicStats`]. Each driver implements it in
//! its glue (`drivers::e1000`, `drivers::igb`, `drivers::virtio`); smoltcp's `Device` has
//! generic associated types, so the stack holds one concrete type,
//! [`drivers::Nic`](super::drivers::Nic), an enum that dispatches to the
//! driver found at boot (a `match` per call, no indirect call).
//!
//! [`flush`]: NetDevice::flush

use smoltcp::phy;

/// A NIC's counters, the same for every driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NicStats {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received (whole frames).
    pub rx_bytes: u64,
    /// Frames the device or driver marked bad (errors, wrong length).
    pub rx_errors: u64,
    /// Frames the device dropped for want of a receive buffer (0 where the
    /// device has no such counter, as virtio).
    pub rx_missed: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent (whole frames).
    pub tx_bytes: u64,
    /// Frames dropped because the transmit ring was full.
    pub tx_dropped: u64,
    /// Doorbells (tail-register writes or queue notifications) written.
    pub doorbells: u64,
    /// Interrupts the device raised.
    pub interrupts: u64,
}

impl core::ops::AddAssign for NicStats {
    fn add_assign(&mut self, other: NicStats) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.rx_errors += other.rx_errors;
        self.rx_missed += other.rx_missed;
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
        self.tx_dropped += other.tx_dropped;
        self.doorbells += other.doorbells;
        self.interrupts += other.interrupts;
    }
}

/// A NIC driver as the kernel uses it.
pub trait NetDevice: phy::Device {
    fn mac(&self) -> [u8; 6];
    fn link_up(&self) -> bool;
    /// Lets the device interrupt (after setup, when an interrupt is routed).
    fn enable_interrupts(&mut self);
    /// Acknowledges an interrupt; returns its cause (0: not this device's).
    /// The caller then drains the rings.
    fn acknowledge_interrupt(&mut self) -> u32;
    /// Whether a received frame waits; once it does, it waits until taken.
    fn rx_ready(&self) -> bool;
    /// The next received frame, left in place (`None`: nothing waits, or
    /// the frame is bad). The device may complete a frame between two
    /// calls: only after [`rx_ready`](Self::rx_ready) does `None` mean bad.
    fn peek_frame(&self) -> Option<&[u8]>;
    /// Passes the next received frame to `f` (`None` for a bad frame);
    /// `None` when nothing waits. The buffer goes back at [`flush`](Self::flush).
    fn receive_with<R>(&mut self, f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R>;
    /// Whether a frame can be queued now.
    fn can_transmit(&mut self) -> bool;
    /// Asks for an interrupt when a full transmit ring has room again, for
    /// a thread that would rather sleep than poll; returns whether one will
    /// come. The default is none: a device that sends as its doorbell is
    /// written (QEMU's e1000) never stays full for long.
    fn interrupt_when_transmit_room(&mut self) -> bool {
        false
    }
    /// Queues a frame of `len` bytes written by `f`; `None` (and a counted
    /// drop) when the transmit ring is full. Sent at the next flush.
    fn transmit_with<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R>;
    /// Hands the device the recycled receive buffers and the queued
    /// frames: at most one doorbell per ring per batch.
    fn flush(&mut self);
    fn stats(&mut self) -> NicStats;
    /// This device's queue pair (0 on a single-queue NIC).
    fn queue(&self) -> usize {
        0
    }
    /// The queue the NIC puts a TCP connection's incoming frames on, the
    /// connection seen from here (`peer` sends to `local`).
    fn receive_queue(&self, _peer: core::net::SocketAddrV4, _local: core::net::SocketAddrV4) -> usize {
        0
    }
    /// The RSS key and redirection table (entry: queue), on a NIC that
    /// spreads connections over queues.
    fn rss(&self) -> Option<([u8; 40], [u8; 128])> {
        None
    }
}

impl From<e1000::Stats> for NicStats {
    fn from(s: e1000::Stats) -> Self {
        NicStats {
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            rx_errors: s.rx_errors,
            rx_missed: s.rx_missed,
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes,
            tx_dropped: s.tx_dropped,
            doorbells: s.doorbells,
            interrupts: s.interrupts,
        }
    }
}

impl From<igb::Stats> for NicStats {
    fn from(s: igb::Stats) -> Self {
        NicStats {
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            rx_errors: s.rx_errors,
            rx_missed: s.rx_missed,
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes,
            tx_dropped: s.tx_dropped,
            doorbells: s.doorbells,
            interrupts: s.interrupts,
        }
    }
}

/// A MAC address as `52:54:00:12:34:56`.
pub struct Mac(pub [u8; 6]);

impl core::fmt::Display for Mac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}
