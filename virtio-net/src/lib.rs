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
pub use transport::{interrupt_status, QueueAddresses, Transport};

use queue::{Layout, SplitQueue};
use rx::RxQueue;
use transport::{status, NO_VECTOR};
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
    /// Reads the byte at `offset`.
    fn read8(&self, offset: usize) -> u8;
    /// Reads the 16-bit register at `offset`.
    fn read16(&self, offset: usize) -> u16;
    /// Reads the 32-bit register at `offset`.
    fn read32(&self, offset: usize) -> u32;
    /// Writes the byte at `offset`.
    fn write8(&self, offset: usize, value: u8);
    /// Writes the 16-bit register at `offset`.
    fn write16(&self, offset: usize, value: u16);
    /// Writes the 32-bit register at `offset`.
    fn write32(&self, offset: usize, value: u32);
}

/// DMA memory: zeroed, physically contiguous, mapped at `virt`.
pub struct Dma {
    /// Where the driver reaches the memory.
    pub virt: NonNull<u8>,
    /// Where the device reaches it (the address its descriptors hold).
    pub phys: u64,
    /// Its length in bytes.
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
    /// The device completes the partial checksum of frames it sends.
    pub const CSUM: u64 = 1 << 0;
    /// The driver takes frames with a partial checksum, and the device
    /// marks those whose checksum it checked.
    pub const GUEST_CSUM: u64 = 1 << 1;
    /// The device has a MAC address in its configuration space.
    pub const MAC: u64 = 1 << 5;
    /// The device may spread a received frame over several buffers.
    pub const MRG_RXBUF: u64 = 1 << 15;
    /// The configuration space has a link status field.
    pub const STATUS: u64 = 1 << 16;
    /// Used and available rings carry event indexes (notification
    /// suppression).
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// A virtio 1.x (modern) device.
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

    /// Whether every bit of `bits` is set.
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
    /// Frames received and handed up.
    pub rx_packets: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames too short, longer than a buffer, or with a bad checksum place.
    pub rx_errors: u64,
    /// Always 0: virtio has no missed-frame counter.
    pub rx_missed: u64,
    /// Frames queued for the device to send.
    pub tx_packets: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames dropped because the transmit queue was full.
    pub tx_dropped: u64,
    /// Notifications written to the device.
    pub doorbells: u64,
    /// Interrupts the driver handled.
    pub interrupts: u64,
}

/// One virtio-net device on transport `T` (PCI or MMIO): its receive and
/// transmit queues, negotiated features and counters; a smoltcp `Device`.
pub struct VirtioNet<T: Transport> {
    transport: T,
    interrupt: Interrupt,
    features: Features,
    mac: [u8; 6],
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
            Ok(Setup { features, mac, rx, tx }) => {
                let mut driver = Self { transport, interrupt, features, mac, rx, tx, doorbells: 0, interrupts: 0 };
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

    /// Link state, read from the device when asked (always up without the
    /// STATUS feature): one configuration read, kept off the interrupt
    /// path.
    pub fn link_up(&self) -> bool {
        read_link(&self.transport, self.features)
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
    /// the device did not interrupt. [`Interrupt::Msix`]: returns 1 (the
    /// vector says it was ours) without touching the device.
    /// [`Interrupt::Polled`]: 0. The caller then drains the queues.
    pub fn handle_interrupt(&mut self) -> u32 {
        let cause = match self.interrupt {
            Interrupt::Line => self.transport.acknowledge_interrupt(),
            Interrupt::Msix(_) => 1,
            Interrupt::Polled => return 0,
        };
        if cause != 0 {
            self.interrupts += 1;
        }
        cause
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

    /// For a caller that found the transmit queue full and would rather
    /// sleep than poll: asks for one interrupt when the device has sent a
    /// frame (transmit completions otherwise never interrupt); the request
    /// ends when sent buffers are next reclaimed. Returns whether an
    /// interrupt will come (never with [`Interrupt::Polled`]). Check
    /// [`can_transmit`](Self::can_transmit) after: a frame sent before the
    /// request brings none.
    pub fn interrupt_when_transmit_room(&mut self) -> bool {
        if self.interrupt == Interrupt::Polled {
            return false;
        }
        self.tx.queue.set_interrupts(true);
        true
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
    device_status |= status::DRIVER_OK;
    transport.set_status(device_status);
    if transport.status() & (status::DEVICE_NEEDS_RESET | status::FAILED) != 0 {
        return Err(Error::DeviceFailed);
    }
    Ok(Setup { features, mac, rx, tx })
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

#[cfg(test)]
mod tests {
    use smoltcp::phy::{Device, RxToken, TxToken};
    use smoltcp::time::Instant;

    use super::*;
    use crate::header::{NetHeader, NEEDS_CSUM};
    use crate::queue::USED_F_NO_NOTIFY;
    use crate::sim::{Sim, SimWindow, State, Window, MAC, NOTIFY_OFF_MULTIPLIER};

    type Driver = VirtioNet<Mmio<SimWindow>>;

    fn driver_with(configure: impl FnOnce(&mut State)) -> (Driver, Sim) {
        let sim = Sim::with(configure);
        let transport = Mmio::new(sim.window(Window::Mmio)).expect("a virtio-mmio network device");
        (VirtioNet::new(transport, &sim, Interrupt::Line).expect("the simulated device sets up"), sim)
    }

    fn driver() -> (Driver, Sim) {
        driver_with(|_| {})
    }

    /// A device without RING_EVENT_IDX: suppression by the flags.
    fn driver_without_event_idx() -> (Driver, Sim) {
        driver_with(|s| s.offered &= !Features::RING_EVENT_IDX)
    }

    fn setup_error(configure: impl FnOnce(&mut State)) -> (Error, Sim) {
        let sim = Sim::with(configure);
        let error = Mmio::new(sim.window(Window::Mmio))
            .and_then(|transport| VirtioNet::new(transport, &sim, Interrupt::Line))
            .err()
            .expect("setup fails");
        (error, sim)
    }

    fn frame(i: usize) -> Vec<u8> {
        (0..60 + i % 100).map(|b| (b + i) as u8).collect()
    }

    fn pci_driver(
        configure: impl FnOnce(&mut State),
        interrupt: Interrupt,
    ) -> (Result<VirtioNet<Pci<SimWindow>>, Error>, Sim) {
        let sim = Sim::with(configure);
        let regions = PciRegions {
            common: sim.window(Window::Common),
            notify: sim.window(Window::Notify),
            notify_off_multiplier: NOTIFY_OFF_MULTIPLIER,
            isr: sim.window(Window::Isr),
            device: sim.window(Window::Device),
        };
        (VirtioNet::new(Pci::new(regions), &sim, interrupt), sim)
    }

    #[test]
    fn setup_walks_the_status_sequence_and_takes_only_the_features_it_knows() {
        let (nic, sim) = driver();
        let s = sim.state();
        use status::*;
        assert_eq!(
            s.status_writes,
            [
                0,
                ACKNOWLEDGE,
                ACKNOWLEDGE | DRIVER,
                ACKNOWLEDGE | DRIVER | FEATURES_OK,
                ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
            ]
        );
        assert_eq!(s.accepted, Features::SUPPORTED, "everything known, not MRG_RXBUF");
        assert_eq!(nic.features(), Features(Features::SUPPORTED));
        assert_eq!(format!("{:?}", nic.features()), "VERSION_1 | MAC | STATUS | CSUM | GUEST_CSUM | RING_EVENT_IDX");
        for q in &s.queues {
            assert!(q.ready);
            assert_eq!(q.size, QUEUE_LEN);
        }
        assert_eq!(s.notifications, [1, 0], "the receive buffers are announced once, the empty transmit queue not");
        assert_eq!(s.queues[0].desc % 16, 0);
    }

    #[test]
    fn a_device_without_version_1_is_refused_and_marked_failed() {
        let (error, sim) = setup_error(|s| s.offered &= !Features::VERSION_1);
        assert_eq!(error, Error::NoCommonFeatures);
        assert_ne!(sim.state().status & status::FAILED, 0);
        assert_eq!(sim.state().accepted, 0, "no features written");
    }

    #[test]
    fn legacy_empty_and_foreign_mmio_devices_are_refused() {
        assert_eq!(setup_error(|s| s.version = 1).0, Error::Legacy);
        assert_eq!(setup_error(|s| s.device_id = 0).0, Error::NoDevice);
        assert_eq!(setup_error(|s| s.magic = 0xffff_ffff).0, Error::NoDevice);
        assert_eq!(setup_error(|s| s.device_id = 2).0, Error::NotNetwork);
        let (legacy, sim) = setup_error(|s| s.version = 1);
        assert_eq!(legacy, Error::Legacy);
        assert!(sim.state().status_writes.is_empty(), "a refused device is not touched");
    }

    #[test]
    fn a_device_that_drops_features_ok_has_failed() {
        let (error, sim) = setup_error(|s| s.refuse_features_ok = true);
        assert_eq!(error, Error::DeviceFailed);
        let s = sim.state();
        assert_ne!(s.status & status::FAILED, 0);
        assert!(!s.queues[0].ready, "no queue set up");
    }

    #[test]
    fn a_device_that_does_not_reset_or_asks_for_a_reset_has_failed() {
        let (error, sim) = setup_error(|s| {
            s.status = status::ACKNOWLEDGE;
            s.reset_stuck = true;
        });
        assert_eq!(error, Error::DeviceFailed);
        assert_eq!(sim.state().status_writes, [0, status::ACKNOWLEDGE | status::FAILED], "nothing after the reset");
        let (error, sim) = setup_error(|s| s.fails_at_driver_ok = true);
        assert_eq!(error, Error::DeviceFailed);
        assert_ne!(sim.state().status & status::FAILED, 0);
        assert_eq!(sim.state().notifications, [0, 0], "a failed device is not notified");
    }

    #[test]
    fn queue_sizes_must_be_powers_of_two_above_zero_and_smaller_ones_are_used() {
        let (error, sim) = setup_error(|s| s.queues[0].max = 0);
        assert_eq!(error, Error::BadQueueSize(0));
        assert_ne!(sim.state().status & status::FAILED, 0);
        assert_eq!(setup_error(|s| s.queues[1].max = 100).0, Error::BadQueueSize(100));
        let (mut nic, sim) = driver_with(|s| {
            s.queues = s.queues.map(|mut q| {
                q.max = 64;
                q
            })
        });
        assert_eq!(sim.state().queues.map(|q| q.size), [64, 64]);
        let accepted = (0..70).filter(|&i| sim.deliver(&frame(i))).count();
        assert_eq!(accepted, 64, "64 receive buffers");
        sim.state().tx_stalled = true;
        assert_eq!((0..70).filter(|_| nic.transmit_with(60, |_| ()).is_some()).count(), 64);
    }

    #[test]
    fn no_memory_for_the_queues_is_out_of_memory() {
        let (error, sim) = setup_error(|s| s.dma_budget = Some(3));
        assert_eq!(error, Error::OutOfMemory);
        assert_ne!(sim.state().status & status::FAILED, 0);
    }

    #[test]
    fn the_mac_is_read_under_a_stable_config_generation() {
        let (nic, sim) = driver();
        assert_eq!(nic.mac(), MAC);
        assert!(nic.link_up());
        let changed = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
        let (nic, sim2) = driver_with(|s| s.mac_change_during_read = Some(changed));
        assert_eq!(nic.mac(), changed, "a read torn by a change is read again");
        assert_eq!(sim2.state().config_generation, 1);
        drop(sim);
        let (nic, _) = driver_with(|s| s.offered &= !(Features::MAC | Features::STATUS));
        assert_eq!(nic.mac(), FALLBACK_MAC);
        assert!(nic.link_up(), "without STATUS the link is up");
    }

    #[test]
    fn a_config_change_interrupt_rereads_the_link() {
        let (mut nic, sim) = driver();
        sim.set_link(false);
        assert_eq!(nic.handle_interrupt(), interrupt_status::CONFIG_CHANGE);
        assert!(!nic.link_up());
        sim.set_link(true);
        nic.handle_interrupt();
        assert!(nic.link_up());
        assert_eq!(nic.stats().interrupts, 2);
    }

    #[test]
    fn frames_come_out_in_order_and_one_notification_returns_the_batch() {
        let (mut nic, sim) = driver_without_event_idx();
        for i in 0..3 {
            assert!(sim.deliver(&frame(i)));
        }
        let before = sim.state().notifications[0];
        for i in 0..3 {
            assert_eq!(nic.receive_with(|f| f.unwrap().to_vec()), Some(frame(i)));
        }
        assert_eq!(nic.receive_with(|_| ()), None);
        assert_eq!(sim.state().notifications[0], before, "nothing before the flush");
        nic.flush();
        assert_eq!(sim.state().notifications[0], before + 1);
        nic.flush();
        assert_eq!(sim.state().notifications[0], before + 1, "no notification without new buffers");
        let stats = nic.stats();
        assert_eq!((stats.rx_packets, stats.rx_bytes, stats.doorbells), (3, (60 + 61 + 62) as u64, 2));
    }

    #[test]
    fn peeking_shows_the_next_frame_without_taking_it() {
        let (mut nic, sim) = driver();
        assert_eq!(nic.peek_frame(), None);
        assert!(!nic.rx_ready());
        assert!(sim.deliver(&frame(1)));
        assert!(sim.deliver(&frame(2)));
        assert!(nic.rx_ready());
        assert_eq!(nic.peek_frame(), Some(&frame(1)[..]));
        assert_eq!(nic.peek_frame(), Some(&frame(1)[..]), "peeking twice takes nothing");
        assert_eq!(nic.receive_with(|f| f.unwrap().to_vec()), Some(frame(1)));
        assert_eq!(nic.peek_frame(), Some(&frame(2)[..]));
        assert_eq!(nic.stats().rx_packets, 1, "a peeked frame is counted once, when taken");
    }

    #[test]
    fn frames_to_send_wait_for_one_notification_at_flush() {
        for (mut nic, sim) in [driver(), driver_without_event_idx()] {
            for i in 0..10 {
                let f = frame(i);
                assert!(nic.transmit_with(f.len(), |buf| buf.copy_from_slice(&f)).is_some());
            }
            assert!(sim.state().sent.is_empty(), "nothing is sent before the flush");
            nic.flush();
            assert_eq!(sim.state().notifications[1], 1);
            assert_eq!(sim.state().sent, (0..10).map(frame).collect::<Vec<_>>());
            assert!(
                sim.state().sent_headers.iter().all(|h| *h == NetHeader::default()),
                "no checksum asked for a non-IP frame"
            );
            nic.flush();
            assert_eq!(sim.state().notifications[1], 1, "no notification without new frames");
            let stats = nic.stats();
            assert_eq!((stats.tx_packets, stats.tx_bytes), (10, (60..70).sum::<u64>()));
        }
    }

    #[test]
    fn the_devices_avail_event_decides_whether_a_flush_notifies() {
        let (mut nic, sim) = driver();
        sim.state().tx_stalled = true;
        for _ in 0..10 {
            nic.transmit_with(60, |b| b.fill(1));
        }
        nic.flush();
        assert_eq!(sim.state().notifications[1], 1, "the device waits at entry 0");
        for _ in 0..5 {
            nic.transmit_with(60, |b| b.fill(2));
        }
        nic.flush();
        assert_eq!(sim.state().notifications[1], 1, "the device has not reached entry 10 yet: it will see these");
        sim.run_tx();
        assert_eq!(sim.state().sent.len(), 15);
        nic.transmit_with(60, |b| b.fill(3));
        nic.flush();
        assert_eq!(sim.state().notifications[1], 2, "the device caught up and asked to hear of entry 15");
        // Receive: a device with buffers to spare is not told of recycled ones.
        for i in 0..3 {
            sim.deliver(&frame(i));
            nic.receive_with(|_| ());
        }
        let before = sim.state().notifications[0];
        nic.flush();
        assert_eq!(sim.state().notifications[0], before);
        // A device that ran out of buffers is told of recycled ones.
        let mut delivered = 0;
        while sim.deliver(&frame(delivered)) {
            delivered += 1;
        }
        assert_eq!(delivered, usize::from(QUEUE_LEN));
        while nic.receive_with(|_| ()).is_some() {}
        nic.flush();
        assert_eq!(sim.state().notifications[0], before + 1);
        sim.set_avail_event(0, 0);
        assert!(sim.deliver(&frame(0)));
        nic.receive_with(|_| ());
        nic.flush();
        assert_eq!(sim.state().notifications[0], before + 1, "an avail_event the flush does not pass");
        assert_eq!(nic.stats().doorbells, 4, "setup, two on transmit, one on receive");
    }

    #[test]
    fn the_no_notify_flag_suppresses_notifications() {
        let (mut nic, sim) = driver_without_event_idx();
        sim.set_used_flags(1, USED_F_NO_NOTIFY);
        nic.transmit_with(60, |b| b.fill(1));
        nic.flush();
        assert_eq!(sim.state().notifications[1], 0);
        sim.run_tx(); // a polling device finds the frame itself
        assert_eq!(sim.state().sent.len(), 1);
        sim.set_used_flags(1, 0);
        nic.transmit_with(60, |b| b.fill(2));
        nic.flush();
        assert_eq!(sim.state().notifications[1], 1);
        assert_eq!(sim.state().sent.len(), 2);
    }

    #[test]
    fn interrupts_stay_off_until_enabled_then_come_once_per_drained_batch() {
        let (mut nic, sim) = driver();
        sim.deliver(&frame(0));
        assert_eq!(sim.state().interrupts_raised, 0, "suppressed after setup");
        assert_eq!(nic.handle_interrupt(), 0);
        nic.enable_interrupts();
        assert!(nic.rx_ready(), "the frame that came before waits");
        sim.deliver(&frame(1));
        assert_eq!(sim.state().interrupts_raised, 0, "the driver has not read the entry that came before");
        while nic.receive_with(|_| ()).is_some() {}
        sim.deliver(&frame(2));
        sim.deliver(&frame(3));
        assert_eq!(sim.state().interrupts_raised, 1, "one interrupt for frames the driver has not yet seen");
        assert_eq!(nic.handle_interrupt(), interrupt_status::USED_BUFFER);
        assert_eq!(nic.handle_interrupt(), 0, "InterruptACK cleared it");
        while nic.receive_with(|_| ()).is_some() {}
        nic.flush();
        sim.deliver(&frame(4));
        assert_eq!(sim.state().interrupts_raised, 2, "re-armed by reading");
        // Sent frames never interrupt.
        nic.transmit_with(60, |_| ());
        nic.flush();
        assert_eq!(sim.state().sent.len(), 1);
        assert_eq!(sim.state().interrupts_raised, 2);
        assert_eq!(nic.stats().interrupts, 1);
    }

    #[test]
    fn interrupt_flags_stay_off_until_enabled() {
        let (mut nic, sim) = driver_without_event_idx();
        sim.deliver(&frame(0));
        assert_eq!(sim.state().interrupts_raised, 0);
        nic.enable_interrupts();
        sim.deliver(&frame(1));
        sim.deliver(&frame(2));
        assert_eq!(sim.state().interrupts_raised, 2, "without EVENT_IDX every used buffer interrupts");
        nic.transmit_with(60, |_| ());
        nic.flush();
        assert_eq!(sim.state().interrupts_raised, 2, "not sent frames");
    }

    #[test]
    fn polled_drivers_ask_for_no_interrupts() {
        let sim = Sim::new();
        let mut nic = VirtioNet::new(Mmio::new(sim.window(Window::Mmio)).unwrap(), &sim, Interrupt::Polled).unwrap();
        nic.enable_interrupts();
        sim.deliver(&frame(0));
        assert_eq!(sim.state().interrupts_raised, 0);
        assert_eq!(nic.handle_interrupt(), 0);
        assert!(!nic.interrupt_when_transmit_room(), "nor when the transmit queue is full");
    }

    #[test]
    fn the_queues_wrap_around_many_times_and_past_the_16_bit_index() {
        for (mut nic, sim) in [driver(), driver_without_event_idx()] {
            nic.enable_interrupts();
            let batches = 70_000 / 200;
            for batch in 0..batches {
                for i in 0..200 {
                    assert!(sim.deliver(&frame(batch * 200 + i)), "batch {batch} frame {i} found no buffer");
                }
                for i in 0..200 {
                    assert_eq!(nic.receive_with(|f| f.unwrap().to_vec()), Some(frame(batch * 200 + i)));
                }
                for i in 0..200 {
                    let f = frame(i);
                    assert!(nic.transmit_with(f.len(), |b| b.copy_from_slice(&f)).is_some(), "batch {batch}: no room");
                    if i % 100 == 99 {
                        nic.flush();
                    }
                }
                nic.handle_interrupt();
            }
            let frames = (batches * 200) as u64;
            let stats = nic.stats();
            assert_eq!((stats.rx_packets, stats.rx_errors, stats.tx_packets, stats.tx_dropped), (frames, 0, frames, 0));
            let s = sim.state();
            assert_eq!(s.sent.len() as u64, frames);
            assert_eq!(s.sent[s.sent.len() - 1], frame(199));
            assert!(s.notifications[1] <= 2 * batches, "at most one notification per flush");
            if nic.features().contains(Features::RING_EVENT_IDX) {
                assert_eq!(s.interrupts_raised, batches, "one per batch: its first frame after the driver drained");
            } else {
                assert_eq!(s.interrupts_raised as u64, frames, "the flags ask for one per frame");
            }
        }
    }

    #[test]
    fn a_full_transmit_queue_refuses_then_recovers_after_reclaim() {
        let (mut nic, sim) = driver();
        sim.state().tx_stalled = true;
        let queued = (0..=QUEUE_LEN).filter(|&i| nic.transmit_with(60, |b| b.fill(i as u8)).is_some()).count();
        assert_eq!(queued, usize::from(QUEUE_LEN), "a split queue holds a whole queue of frames");
        assert!(!nic.can_transmit());
        assert_eq!(nic.stats().tx_dropped, 1);
        nic.flush();
        sim.state().tx_stalled = false;
        sim.run_tx();
        assert_eq!(sim.state().sent.len(), usize::from(QUEUE_LEN));
        assert!(nic.can_transmit());
        assert!(nic.transmit_with(60, |b| b.fill(0xee)).is_some(), "reclaimed buffers are reused");
        nic.flush();
        assert_eq!(sim.state().sent.last().unwrap(), &vec![0xee; 60]);
    }

    #[test]
    fn a_full_transmit_queue_can_ask_for_one_interrupt_when_it_has_room() {
        let (mut nic, sim) = driver();
        nic.enable_interrupts();
        sim.state().tx_stalled = true;
        while nic.transmit_with(60, |_| ()).is_some() {}
        nic.flush();
        assert!(!nic.can_transmit());
        assert!(nic.interrupt_when_transmit_room());
        assert!(!nic.can_transmit(), "nothing sent yet");
        assert_eq!(sim.state().interrupts_raised, 0);
        sim.state().tx_stalled = false;
        sim.run_tx();
        let raised = sim.state().interrupts_raised;
        assert!(raised >= 1, "the device's sending interrupts");
        assert!(nic.can_transmit(), "and makes room");
        nic.transmit_with(60, |_| ());
        nic.flush();
        assert_eq!(sim.state().interrupts_raised, raised, "asked for once: later sends do not interrupt");
    }

    #[test]
    fn bad_frames_are_counted_and_skipped() {
        let (mut nic, sim) = driver();
        let header = NetHeader { num_buffers: 1, ..NetHeader::default() };
        assert!(sim.deliver_with(header, &frame(0)[..10], None), "shorter than an Ethernet header");
        assert!(sim.deliver_with(header, &frame(1), Some(BUFFER_SIZE as u32 + 1)), "longer than the buffer");
        let bad_place = NetHeader { flags: NEEDS_CSUM, csum_start: 58, csum_offset: 6, ..header };
        assert!(sim.deliver_with(bad_place, &frame(2), None), "checksum place beyond the frame");
        assert!(sim.deliver(&frame(3)));
        assert_eq!(nic.peek_frame(), None, "a bad frame is not shown");
        for _ in 0..3 {
            assert_eq!(nic.receive_with(|f| f.is_none()), Some(true));
        }
        assert_eq!(nic.receive_with(|f| f.unwrap().to_vec()), Some(frame(3)));
        let stats = nic.stats();
        assert_eq!((stats.rx_errors, stats.rx_packets), (3, 1));
        nic.flush();
        let accepted = (0..300).filter(|&i| sim.deliver(&frame(i))).count();
        assert_eq!(accepted, usize::from(QUEUE_LEN), "the bad frames' buffers came back");
    }

    #[test]
    fn smoltcp_tokens_receive_and_a_full_transmit_queue_never_stalls_reception() {
        let (mut nic, sim) = driver();
        let now = Instant::from_millis(0);
        assert!(nic.receive(now).is_none(), "no token without a frame");
        sim.state().tx_stalled = true;
        while nic.transmit_with(60, |_| ()).is_some() {}
        assert!(nic.transmit(now).is_none(), "no transmit token with a full queue");
        assert!(sim.deliver(&frame(3)));
        let (rx, tx) = nic.receive(now).expect("a frame waits");
        assert_eq!(rx.consume(|f| f.to_vec()), frame(3));
        tx.consume(60, |b| b.fill(1)); // dropped: the queue is full
        let stats = nic.stats();
        assert_eq!((stats.rx_packets, stats.tx_dropped), (1, 2));
        let caps = nic.capabilities();
        assert_eq!(caps.max_transmission_unit, 1514);
    }

    /// An Ethernet/IPv4 frame around a TCP or UDP segment that smoltcp
    /// emits, its checksum filled in only with `tx_checksum` (else zero, as
    /// smoltcp leaves it to a device that offloads).
    fn ip_frame(tcp: bool, payload: &[u8], tx_checksum: bool) -> Vec<u8> {
        use smoltcp::phy::{Checksum, ChecksumCapabilities};
        use smoltcp::wire::*;
        let mut caps = ChecksumCapabilities::default();
        if !tx_checksum {
            (caps.tcp, caps.udp) = (Checksum::Rx, Checksum::Rx);
        }
        let (src, dst) = (Ipv4Address::new(192, 168, 7, 2), Ipv4Address::new(192, 168, 7, 1));
        let mut segment = vec![0; if tcp { 20 } else { 8 } + payload.len()];
        if tcp {
            let repr = TcpRepr {
                src_port: 8080,
                dst_port: 51000,
                control: TcpControl::Psh,
                seq_number: TcpSeqNumber(1000),
                ack_number: Some(TcpSeqNumber(2000)),
                window_len: 4096,
                window_scale: None,
                max_seg_size: None,
                sack_permitted: false,
                sack_ranges: [None; 3],
                timestamp: None,
                payload,
            };
            repr.emit(&mut TcpPacket::new_unchecked(&mut segment[..]), &src.into(), &dst.into(), &caps);
        } else {
            let udp = UdpRepr { src_port: 5353, dst_port: 51001 };
            let fill = |buffer: &mut [u8]| buffer.copy_from_slice(payload);
            udp.emit(
                &mut UdpPacket::new_unchecked(&mut segment[..]),
                &src.into(),
                &dst.into(),
                payload.len(),
                fill,
                &caps,
            );
        }
        let protocol = if tcp { IpProtocol::Tcp } else { IpProtocol::Udp };
        let mut bytes = vec![0; 34 + segment.len()];
        EthernetRepr {
            src_addr: EthernetAddress(MAC),
            dst_addr: EthernetAddress([2, 0, 0, 0, 0, 9]),
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut bytes[..]));
        Ipv4Repr { src_addr: src, dst_addr: dst, next_header: protocol, payload_len: segment.len(), hop_limit: 64 }
            .emit(&mut Ipv4Packet::new_unchecked(&mut bytes[14..34]), &caps);
        bytes[34..].copy_from_slice(&segment);
        bytes
    }

    /// Whether a frame's TCP/UDP checksum is right: smoltcp's parsers,
    /// which verify it (a UDP checksum of 0, "none", does not count).
    fn l4_checksum_ok(bytes: &[u8]) -> bool {
        use smoltcp::phy::ChecksumCapabilities;
        use smoltcp::wire::*;
        let ip = Ipv4Packet::new_checked(&bytes[14..]).expect("an IPv4 frame");
        let (src, dst) = (IpAddress::from(ip.src_addr()), IpAddress::from(ip.dst_addr()));
        let verify = ChecksumCapabilities::default();
        match ip.next_header() {
            IpProtocol::Tcp => {
                TcpPacket::new_checked(ip.payload()).is_ok_and(|tcp| TcpRepr::parse(&tcp, &src, &dst, &verify).is_ok())
            }
            IpProtocol::Udp => UdpPacket::new_checked(ip.payload())
                .is_ok_and(|udp| udp.checksum() != 0 && UdpRepr::parse(&udp, &src, &dst, &verify).is_ok()),
            _ => false,
        }
    }

    #[test]
    fn sent_tcp_and_udp_frames_carry_a_partial_checksum_the_device_completes() {
        let (mut nic, sim) = driver();
        let now = Instant::from_millis(0);
        let caps = nic.capabilities();
        assert!(
            !caps.checksum.tcp.tx() && !caps.checksum.udp.tx() && caps.checksum.tcp.rx() && caps.checksum.ipv4.tx()
        );
        let frames = [
            ip_frame(true, b"GET / HTTP/1.1\r\n\r\n", false),
            ip_frame(true, b"odd", false),
            ip_frame(false, &[0xab; 1458], false),
            ip_frame(false, b"", false),
        ];
        for f in &frames {
            nic.transmit(now).expect("room").consume(f.len(), |b| b.copy_from_slice(f));
        }
        nic.transmit(now).expect("room").consume(60, |b| b.fill(0x5a)); // not IPv4: as it is
        nic.flush();
        let s = sim.state();
        for ((sent, header), original) in s.sent.iter().zip(&s.sent_headers).zip(&frames) {
            let tcp = original[23] == 6;
            assert_eq!(
                (header.flags, header.csum_start, header.csum_offset),
                (NEEDS_CSUM, 34, if tcp { 16 } else { 6 })
            );
            assert!(l4_checksum_ok(sent), "bad checksum in {sent:02x?}");
            assert!(!l4_checksum_ok(original), "smoltcp left it to the device");
            assert_eq!(sent.len(), original.len());
        }
        assert_eq!((s.sent[4].clone(), s.sent_headers[4]), (vec![0x5a; 60], NetHeader::default()));
    }

    #[test]
    fn only_whole_unfragmented_ipv4_tcp_and_udp_frames_are_offloaded() {
        let udp = ip_frame(false, b"abc", false);
        assert!(header::partial_checksum(&mut udp.clone()).is_some());
        for bad in [
            udp[..udp.len() - 1].to_vec(),      // IP length longer than the frame
            [udp.clone(), vec![0; 4]].concat(), // trailing bytes after the IP packet
            {
                let mut f = udp.clone();
                f[12] = 0x86;
                f
            }, // not IPv4
            {
                let mut f = udp.clone();
                f[20] = 0x20;
                f
            }, // more fragments
            {
                let mut f = udp.clone();
                f[23] = 1;
                f
            }, // ICMP
            udp[..20].to_vec(),                 // truncated
        ] {
            let mut copy = bad.clone();
            assert_eq!(header::partial_checksum(&mut copy), None, "{bad:02x?}");
            assert_eq!(copy, bad, "a frame that is not offloaded is left alone");
        }
    }

    #[test]
    fn a_received_frame_needing_a_checksum_comes_out_with_a_valid_one() {
        let (mut nic, sim) = driver();
        assert!(nic.features().contains(Features::GUEST_CSUM));
        for (i, tcp) in [true, false].into_iter().enumerate() {
            let mut partial = ip_frame(tcp, b"partial from a local peer", false);
            let place = header::partial_checksum(&mut partial).expect("TCP/UDP over IPv4");
            let header = NetHeader { num_buffers: 1, ..place };
            assert!(!l4_checksum_ok(&partial));
            assert!(sim.deliver_with(header, &partial, None));
            let received = nic.receive_with(|f| f.unwrap().to_vec()).unwrap();
            assert!(l4_checksum_ok(&received), "frame {i}: {received:02x?}");
            assert_eq!(received[..34], partial[..34]);
        }
        // smoltcp accepts it: its own verification stays on.
        let mut partial = ip_frame(true, b"to smoltcp", false);
        let header = NetHeader { num_buffers: 1, ..header::partial_checksum(&mut partial).unwrap() };
        sim.deliver_with(header, &partial, None);
        let (rx, _) = nic.receive(Instant::from_millis(0)).unwrap();
        assert!(rx.consume(l4_checksum_ok));
    }

    #[test]
    fn without_offload_features_frames_pass_untouched() {
        let (mut nic, sim) = driver_with(|s| s.offered &= !(Features::CSUM | Features::GUEST_CSUM));
        let caps = nic.capabilities();
        assert!(caps.checksum.tcp.tx() && caps.checksum.udp.tx() && caps.checksum.tcp.rx());
        let whole = ip_frame(true, b"checksummed by smoltcp", true);
        assert!(l4_checksum_ok(&whole));
        nic.transmit(Instant::from_millis(0)).unwrap().consume(whole.len(), |b| b.copy_from_slice(&whole));
        nic.flush();
        assert_eq!(sim.state().sent, std::slice::from_ref(&whole));
        assert_eq!(sim.state().sent_headers, [NetHeader::default()]);
        assert!(sim.deliver(&whole));
        assert_eq!(nic.receive_with(|f| f.unwrap().to_vec()), Some(whole));
    }

    #[test]
    fn pci_sets_up_queues_and_rings_each_doorbell_at_notify_off_times_multiplier() {
        let (nic, sim) = pci_driver(|_| {}, Interrupt::Line);
        let mut nic = nic.expect("the simulated PCI device sets up");
        assert_eq!(nic.mac(), MAC);
        assert!(nic.link_up());
        assert_eq!(sim.state().queues.map(|q| q.msix_vector), [NO_VECTOR; 2], "INTx: no vectors");
        assert_eq!(sim.state().notifications, [1, 0]);
        for i in 0..3 {
            let f = frame(i);
            nic.transmit_with(f.len(), |b| b.copy_from_slice(&f));
        }
        nic.flush();
        assert_eq!(sim.state().notifications, [1, 1]);
        assert_eq!(sim.state().sent, (0..3).map(frame).collect::<Vec<_>>());
        assert!(sim.deliver(&frame(9)));
        assert_eq!(nic.receive_with(|f| f.unwrap().to_vec()), Some(frame(9)));
    }

    #[test]
    fn a_boxed_transport_drives_the_device_as_well() {
        let sim = Sim::new();
        let transport: Box<dyn Transport> = Box::new(Mmio::new(sim.window(Window::Mmio)).unwrap());
        let mut nic = VirtioNet::new(transport, &sim, Interrupt::Line).expect("sets up through the box");
        assert!(sim.deliver(&frame(5)));
        assert_eq!(nic.receive_with(|f| f.unwrap().to_vec()), Some(frame(5)));
        nic.transmit_with(60, |b| b.fill(7));
        nic.flush();
        assert_eq!(sim.state().sent, [vec![7; 60]]);
    }

    #[test]
    fn pci_isr_read_acknowledges_the_interrupt() {
        let (nic, sim) = pci_driver(|_| {}, Interrupt::Line);
        let mut nic = nic.unwrap();
        nic.enable_interrupts();
        assert_eq!(nic.handle_interrupt(), 0);
        sim.deliver(&frame(0));
        assert_eq!(nic.handle_interrupt(), interrupt_status::USED_BUFFER);
        assert_eq!(nic.handle_interrupt(), 0, "reading the ISR cleared it");
        sim.set_link(false);
        assert_eq!(nic.handle_interrupt(), interrupt_status::CONFIG_CHANGE);
        assert!(!nic.link_up());
    }

    #[test]
    fn msix_vectors_are_programmed_and_a_refusal_is_an_error() {
        let (nic, sim) = pci_driver(|_| {}, Interrupt::Msix(3));
        let mut nic = nic.unwrap();
        assert_eq!(sim.state().msix_config, 3);
        assert_eq!(sim.state().queues.map(|q| q.msix_vector), [3, 3]);
        sim.set_link(false);
        assert_eq!(nic.handle_interrupt(), 1, "the vector says it was ours");
        assert!(!nic.link_up(), "configuration changes share the vector");
        assert_eq!(nic.stats().interrupts, 1);

        let (refused, sim) = pci_driver(|s| s.accept_msix = false, Interrupt::Msix(3));
        assert_eq!(refused.err(), Some(Error::MsixRejected));
        assert_ne!(sim.state().status & status::FAILED, 0);
        let sim = Sim::new();
        let mmio = VirtioNet::new(Mmio::new(sim.window(Window::Mmio)).unwrap(), &sim, Interrupt::Msix(1));
        assert_eq!(mmio.err(), Some(Error::MsixRejected), "MMIO has no MSI-X");
    }

    #[test]
    fn errors_read_as_one_clear_line() {
        assert_eq!(Error::BadQueueSize(100).to_string(), "virtio queue maximum size 100 is not a power of two above 0");
        assert_eq!(format!("{:?}", Features(Features::VERSION_1 | 1 << 40)), "VERSION_1 | 0x10000000000");
    }
}
