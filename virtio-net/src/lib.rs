//! # virtio-net
//!
//! A driver for virtio network devices, virtio 1.x (modern) only, over
//! virtio-mmio version 2 ([`Mmio`]: QEMU's microvm, Firecracker) or PCI
//! ([`Pci`]: QEMU's q35, Cloud Hypervisor), independent of any kernel: it
//! reaches the device only through [`Registers`] and [`Hardware`], so its
//! queue logic runs on the host against a simulated device in the unit
//! tests.
//!
//! What it does: reset the device and negotiate features (VERSION_1
//! required; MAC, STATUS, CSUM, GUEST_CSUM and RING_EVENT_IDX when
//! offered), set up a receive and a transmit split virtqueue of
//! [`QUEUE_LEN`] entries (or the device's maximum if smaller) with 2 KiB
//! buffers, post every receive buffer once and recycle it, and notify the
//! device at most once per queue per batch ([`VirtioNet::flush`]), only
//! when it asked to hear (notification suppression). Device interrupts
//! stay off until [`VirtioNet::enable_interrupts`]; transmit completions
//! never interrupt (they are reclaimed when room is wanted). With CSUM the
//! device completes outgoing TCP/UDP checksums; with GUEST_CSUM the driver
//! completes received partial ones. It counts packets, bytes, drops,
//! errors, doorbells and interrupts ([`Stats`]).
//!
//! [`VirtioNet`] implements smoltcp's [`phy::Device`](smoltcp::phy::Device):
//! `receive` reclaims transmit buffers first, and hands out a transmit
//! token even when the queue is full (that frame is then dropped and
//! counted), so a full transmit queue never stalls reception.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

mod device;
mod header;
mod mmio;
mod pci;
mod queue;
mod rx;
#[cfg(test)]
mod sim;
mod transport;
mod tx;

use core::fmt;
use core::ptr::NonNull;

pub use mmio::Mmio;
pub use pci::{Pci, PciRegions};
pub use transport::{QueueAddresses, Transport};

use queue::{Layout, SplitQueue};
use rx::RxQueue;
use transport::{interrupt_status, status, NO_VECTOR};
use tx::TxQueue;

/// Entries per queue, unless the device allows fewer.
pub const QUEUE_LEN: u16 = 256;
/// Bytes per packet buffer: the 12-byte virtio-net header and a frame.
pub const BUFFER_SIZE: usize = 2048;

const RECEIVE_QUEUE: u16 = 0;
const TRANSMIT_QUEUE: u16 = 1;
/// Status reads to wait for a reset to finish.
const RESET_POLLS: u32 = 1_000_000;
/// Reads of the MAC address before a configuration that keeps changing is
/// given up on.
const CONFIG_READS: u32 = 16;
/// Offsets in the network device's configuration.
const CONFIG_MAC: usize = 0;
const CONFIG_STATUS: usize = 6;
const STATUS_LINK_UP: u16 = 1;
/// The MAC of a device that offers none (no MAC feature): locally
/// administered, fixed.
const FALLBACK_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

/// A window of device registers: a virtio-mmio device's 0x200 bytes, or
/// one region of a PCI BAR that a virtio capability points at. Offsets are
/// bytes from the start of the window; accesses are volatile and naturally
/// aligned.
pub trait Registers {
    fn read8(&self, offset: usize) -> u8;
    fn read16(&self, offset: usize) -> u16;
    fn read32(&self, offset: usize) -> u32;
    fn write8(&self, offset: usize, value: u8);
    fn write16(&self, offset: usize, value: u16);
    fn write32(&self, offset: usize, value: u32);
}

/// DMA memory: zeroed, physically contiguous, mapped at `virt`.
pub struct Dma {
    pub virt: NonNull<u8>,
    pub phys: u64,
    pub size: usize,
}

/// What the driver needs from the kernel besides registers.
pub trait Hardware {
    /// Zeroed, physically contiguous, 4 KiB-aligned memory the device can
    /// read and write, kept for the driver's life. `None` when memory is
    /// exhausted.
    fn alloc_dma(&self, size: usize) -> Option<Dma>;
}

/// How the device interrupts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// PCI with MSI-X: every queue and configuration changes on table entry
    /// `v` (the kernel programs the table).
    Msix(u16),
    /// INTx, or the virtio-mmio interrupt line: acknowledged through the ISR
    /// or InterruptStatus/InterruptACK.
    Line,
    /// No interrupts.
    Polled,
}

/// Why the device could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// No virtio device here (bad magic, device id 0, unknown version).
    NoDevice,
    /// A legacy (virtio 0.9, MMIO version 1) device.
    Legacy,
    /// A virtio device, but not a network card.
    NotNetwork,
    /// The device does not offer VERSION_1.
    NoCommonFeatures,
    /// A queue's maximum size is 0, not a power of two, or too large.
    BadQueueSize(u16),
    /// The device did not take the MSI-X vector.
    MsixRejected,
    /// The device did not keep FEATURES_OK, did not reset, asks for a
    /// reset, or its configuration never stops changing.
    DeviceFailed,
    /// No DMA memory for the queues.
    OutOfMemory,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoDevice => write!(f, "no virtio device"),
            Error::Legacy => write!(f, "legacy virtio device (only virtio 1.x is driven)"),
            Error::NotNetwork => write!(f, "virtio device is not a network card"),
            Error::NoCommonFeatures => write!(f, "virtio device does not offer VERSION_1"),
            Error::BadQueueSize(size) => write!(f, "virtio queue maximum size {size} is not a power of two above 0"),
            Error::MsixRejected => write!(f, "virtio device refused the MSI-X vector"),
            Error::DeviceFailed => write!(f, "virtio device failed during setup"),
            Error::OutOfMemory => write!(f, "no DMA memory for the virtio queues"),
        }
    }
}

/// Feature bits (virtio 1.1, 5.1.3 and 6).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Features(pub u64);

impl Features {
    pub const CSUM: u64 = 1 << 0;
    pub const GUEST_CSUM: u64 = 1 << 1;
    pub const MAC: u64 = 1 << 5;
    pub const MRG_RXBUF: u64 = 1 << 15;
    pub const STATUS: u64 = 1 << 16;
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    pub const VERSION_1: u64 = 1 << 32;
    /// What the driver accepts when offered.
    pub const SUPPORTED: u64 =
        Self::VERSION_1 | Self::MAC | Self::STATUS | Self::CSUM | Self::GUEST_CSUM | Self::RING_EVENT_IDX;

    const NAMES: [(u64, &'static str); 7] = [
        (Self::VERSION_1, "VERSION_1"),
        (Self::MAC, "MAC"),
        (Self::STATUS, "STATUS"),
        (Self::CSUM, "CSUM"),
        (Self::GUEST_CSUM, "GUEST_CSUM"),
        (Self::RING_EVENT_IDX, "RING_EVENT_IDX"),
        (Self::MRG_RXBUF, "MRG_RXBUF"),
    ];

    pub fn contains(self, bits: u64) -> bool {
        self.0 & bits == bits
    }
}

impl fmt::Debug for Features {
    /// The names of the bits, `VERSION_1 | MAC | ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        let mut first = true;
        let mut separator = |f: &mut fmt::Formatter<'_>| {
            let s = if first { "" } else { " | " };
            first = false;
            f.write_str(s)
        };
        for (bit, name) in Self::NAMES {
            if rest & bit != 0 {
                separator(f)?;
                f.write_str(name)?;
                rest &= !bit;
            }
        }
        if rest != 0 || self.0 == 0 {
            separator(f)?;
            write!(f, "{rest:#x}")?;
        }
        Ok(())
    }
}

/// Packets, bytes and trouble, counted by the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames too short, longer than a buffer, or with a bad checksum place.
    pub rx_errors: u64,
    /// Always 0: virtio has no missed-frame counter.
    pub rx_missed: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames dropped because the transmit queue was full.
    pub tx_dropped: u64,
    /// Notifications written to the device.
    pub doorbells: u64,
    pub interrupts: u64,
}

pub struct VirtioNet<T: Transport> {
    transport: T,
    interrupt: Interrupt,
    features: Features,
    mac: [u8; 6],
    link_up: bool,
    rx: RxQueue,
    tx: TxQueue,
    doorbells: u64,
    interrupts: u64,
}

// SAFETY: the driver owns its DMA memory (the raw pointers in its queues);
// moving it to another thread moves that ownership (the kernel uses one
// driver from one cpu at a time).
unsafe impl<T: Transport + Send> Send for VirtioNet<T> {}

/// What setup produced, before the driver exists.
struct Setup {
    features: Features,
    mac: [u8; 6],
    link_up: bool,
    rx: RxQueue,
    tx: TxQueue,
}

impl<T: Transport> VirtioNet<T> {
    /// Resets the device, negotiates features, sets up queue 0 (receive)
    /// and 1 (transmit) with 2 KiB buffers, posts every receive buffer and
    /// sets DRIVER_OK. Interrupts stay suppressed until
    /// [`enable_interrupts`](Self::enable_interrupts). On an error the
    /// device is left FAILED.
    pub fn new(mut transport: T, hw: &impl Hardware, interrupt: Interrupt) -> Result<Self, Error> {
        match set_up(&mut transport, hw, interrupt) {
            Ok(Setup { features, mac, link_up, rx, tx }) => {
                let mut driver =
                    Self { transport, interrupt, features, mac, link_up, rx, tx, doorbells: 0, interrupts: 0 };
                // The receive buffers, and a first notification of them.
                driver.flush();
                Ok(driver)
            }
            Err(error) => {
                transport.set_status(transport.status() | status::FAILED);
                Err(error)
            }
        }
    }

    /// The device's MAC address (02:00:00:00:00:01 for a device without the
    /// MAC feature).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Link state as of the last configuration change (always up without
    /// the STATUS feature).
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// The negotiated features.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Asks for an interrupt when a frame arrives (none with
    /// [`Interrupt::Polled`]). Check [`rx_ready`](Self::rx_ready) after: a
    /// frame that arrived before may bring none.
    pub fn enable_interrupts(&mut self) {
        if self.interrupt != Interrupt::Polled {
            self.rx.queue.set_interrupts(true);
        }
    }

    /// Acknowledges an interrupt. [`Interrupt::Line`]: reads (and thereby or
    /// by InterruptACK clears) the interrupt status and returns it, 0 when
    /// the device did not interrupt; a configuration change re-reads the
    /// link. [`Interrupt::Msix`]: returns 1 (the vector says it was ours) and
    /// re-reads the link, as configuration changes share the vector.
    /// [`Interrupt::Polled`]: 0. The caller then drains the queues.
    pub fn handle_interrupt(&mut self) -> u32 {
        let cause = match self.interrupt {
            Interrupt::Line => self.transport.acknowledge_interrupt(),
            Interrupt::Msix(_) => interrupt_status::USED_BUFFER | interrupt_status::CONFIG_CHANGE,
            Interrupt::Polled => return 0,
        };
        if cause != 0 {
            self.interrupts += 1;
        }
        if cause & interrupt_status::CONFIG_CHANGE != 0 {
            self.link_up = read_link(&self.transport, self.features);
        }
        if matches!(self.interrupt, Interrupt::Msix(_)) {
            1
        } else {
            cause
        }
    }

    /// Whether a received frame waits.
    pub fn rx_ready(&self) -> bool {
        self.rx.ready()
    }

    /// The next received Ethernet frame (without the virtio header), left
    /// in place: `None` when nothing waits or it is bad. A checksum the
    /// device left partial is completed when the frame is taken.
    pub fn peek_frame(&self) -> Option<&[u8]> {
        self.rx.peek_frame()
    }

    /// Passes the next received frame to `f` (`None` when it is bad: too
    /// short, too long, a bad checksum place); returns `None` when nothing
    /// waits. Its buffer goes back to the device at the next flush.
    pub fn receive_with<R>(&mut self, f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        self.rx.take(f)
    }

    /// Whether a frame can be queued now (reclaims sent buffers first).
    pub fn can_transmit(&mut self) -> bool {
        self.tx.reclaim();
        self.tx.has_room()
    }

    /// Queues a frame of `len` bytes (at most 2036) written by `f`, sent at
    /// the next flush; `None` (and a counted drop) when the queue is full.
    pub fn transmit_with<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        self.tx.reclaim();
        if !self.tx.has_room() {
            self.tx.dropped += 1;
            return None;
        }
        Some(self.tx.put(len, f))
    }

    /// Publishes the recycled receive buffers and the queued frames, and
    /// notifies each queue that got some, at most once, and only if the
    /// device asked to hear (RING_EVENT_IDX's avail_event, else the
    /// absence of VIRTQ_USED_F_NO_NOTIFY).
    pub fn flush(&mut self) {
        if self.rx.queue.publish() {
            self.transport.notify(RECEIVE_QUEUE);
            self.doorbells += 1;
        }
        if self.tx.queue.publish() {
            self.transport.notify(TRANSMIT_QUEUE);
            self.doorbells += 1;
        }
    }

    /// The counters.
    pub fn stats(&mut self) -> Stats {
        Stats {
            rx_packets: self.rx.packets,
            rx_bytes: self.rx.bytes,
            rx_errors: self.rx.errors,
            rx_missed: 0,
            tx_packets: self.tx.packets,
            tx_bytes: self.tx.bytes,
            tx_dropped: self.tx.dropped,
            doorbells: self.doorbells,
            interrupts: self.interrupts,
        }
    }
}

/// Device initialization (virtio 1.1, 3.1.1), up to DRIVER_OK.
fn set_up(transport: &mut impl Transport, hw: &impl Hardware, interrupt: Interrupt) -> Result<Setup, Error> {
    transport.set_status(0);
    if !(0..RESET_POLLS).any(|_| transport.status() == 0) {
        return Err(Error::DeviceFailed);
    }
    let mut device_status = status::ACKNOWLEDGE;
    transport.set_status(device_status);
    device_status |= status::DRIVER;
    transport.set_status(device_status);

    let offered = transport.device_features();
    if offered & Features::VERSION_1 == 0 {
        return Err(Error::NoCommonFeatures);
    }
    let features = Features(offered & Features::SUPPORTED);
    transport.set_driver_features(features.0);
    device_status |= status::FEATURES_OK;
    transport.set_status(device_status);
    if transport.status() & status::FEATURES_OK == 0 {
        return Err(Error::DeviceFailed);
    }

    let vector = match interrupt {
        Interrupt::Msix(vector) => vector,
        Interrupt::Line | Interrupt::Polled => NO_VECTOR,
    };
    if !transport.set_config_vector(vector) && vector != NO_VECTOR {
        return Err(Error::MsixRejected);
    }
    let event_idx = features.contains(Features::RING_EVENT_IDX);
    let rx = set_up_queue(transport, hw, RECEIVE_QUEUE, vector, event_idx)?;
    let rx = RxQueue::new(rx.0, rx.1);
    let tx = set_up_queue(transport, hw, TRANSMIT_QUEUE, vector, event_idx)?;
    let tx = TxQueue::new(tx.0, tx.1, features.contains(Features::CSUM));

    let mac = if features.contains(Features::MAC) { read_mac(transport)? } else { FALLBACK_MAC };
    let link_up = read_link(transport, features);

    device_status |= status::DRIVER_OK;
    transport.set_status(device_status);
    if transport.status() & (status::DEVICE_NEEDS_RESET | status::FAILED) != 0 {
        return Err(Error::DeviceFailed);
    }
    Ok(Setup { features, mac, link_up, rx, tx })
}

/// Allocates and announces one queue and its buffers.
fn set_up_queue(
    transport: &mut impl Transport,
    hw: &impl Hardware,
    queue: u16,
    vector: u16,
    event_idx: bool,
) -> Result<(SplitQueue, Dma), Error> {
    let max = transport.queue_max_size(queue);
    if max == 0 || !max.is_power_of_two() {
        return Err(Error::BadQueueSize(max));
    }
    let len = max.min(QUEUE_LEN);
    let alloc = |size| hw.alloc_dma(size).ok_or(Error::OutOfMemory);
    let memory = alloc(Layout::new(len).size)?;
    let buffers = alloc(usize::from(len) * BUFFER_SIZE)?;
    let split = SplitQueue::new(&memory, len, event_idx);
    if !transport.set_queue_vector(queue, vector) && vector != NO_VECTOR {
        return Err(Error::MsixRejected);
    }
    transport.set_up_queue(queue, len, split.addresses());
    Ok((split, buffers))
}

/// The MAC address, read until the configuration generation holds still.
fn read_mac(transport: &impl Transport) -> Result<[u8; 6], Error> {
    for _ in 0..CONFIG_READS {
        let generation = transport.config_generation();
        let mac = core::array::from_fn(|i| transport.read_config8(CONFIG_MAC + i));
        if transport.config_generation() == generation {
            return Ok(mac);
        }
    }
    Err(Error::DeviceFailed)
}

fn read_link(transport: &impl Transport, features: Features) -> bool {
    !features.contains(Features::STATUS) || transport.read_config16(CONFIG_STATUS) & STATUS_LINK_UP != 0
}
