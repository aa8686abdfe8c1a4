//! The NIC drivers' glue: finding the NIC (first QEMU's e1000 on PCI, else
//! its igb, else a modern virtio-net on PCI, else a virtio-net over MMIO
//! announced on the command line), splitting a multi-queue NIC into one
//! [`Found`] per queue ([`Found::split`]), setting each up on its network
//! cpu, routing its interrupt there, and [`Nic`], the one type a stack
//! holds: an enum
//! over the drivers that implements [`NetDevice`] and smoltcp's
//! [`phy::Device`] by dispatch. Register access is `arch::mmio`'s.

mod e1000;
mod igb;
mod virtio;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use smoltcp::phy::{self, DeviceCapabilities};
use smoltcp::time::Instant;

use super::device::{NetDevice, NicStats};
use crate::arch::ioapic::{self, Trigger};
use crate::arch::mmio::Window;
use crate::arch::{paging, percpu, traps, tsc};
use crate::pci;

/// The vector the NIC's interrupt is routed to, on the network cpu.
pub const NIC_VECTOR: u8 = 0x40;

/// How the NIC's interrupts reach the network cpu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// An I/O APIC line: masked by the interrupt handler until the network
    /// thread has acknowledged the device.
    Line { gsi: u32, trigger: Trigger },
    /// An MSI-X message (edge: nothing to mask).
    Message,
    /// None: the network thread polls the NIC, for this reason.
    Polled(&'static str),
}

impl fmt::Display for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interrupt::Line { gsi, .. } => write!(f, "interrupt on I/O APIC pin {gsi}"),
            Interrupt::Message => write!(f, "MSI-X interrupt on vector {NIC_VECTOR:#x}"),
            Interrupt::Polled(why) => write!(f, "polling ({why})"),
        }
    }
}

/// The NIC, whichever driver runs it.
pub enum Nic {
    E1000(E1000Device),
    Igb(IgbQueueDevice),
    VirtioPci(VirtioPciDevice),
    VirtioMmio(VirtioMmioDevice),
}

type E1000Device = ::e1000::E1000<e1000::Registers>;
type IgbQueueDevice = ::igb::Queue<igb::Registers>;
type VirtioPciDevice = virtio_net::VirtioNet<virtio_net::Pci<Window>>;
type VirtioMmioDevice = virtio_net::VirtioNet<virtio_net::Mmio<Window>>;

/// Runs `$body` with `$driver` bound to the driver inside `$nic`.
macro_rules! dispatch {
    ($nic:expr, $driver:ident => $body:expr) => {
        match $nic {
            Nic::E1000($driver) => $body,
            Nic::Igb($driver) => $body,
            Nic::VirtioPci($driver) => $body,
            Nic::VirtioMmio($driver) => $body,
        }
    };
}

/// A NIC found at boot, its driver not set up yet.
pub enum Found {
    E1000(e1000::Found),
    /// An igb not split into queues yet ([`Found::start`] runs it with one).
    Igb(igb::Found),
    /// One queue of an igb, after [`Found::split`].
    IgbQueue(igb::QueueFound),
    VirtioPci(virtio::PciFound),
    VirtioMmio(virtio::MmioFound),
}

/// Finds the NIC (see the module doc). `None`, with one log line, when
/// there is none or it cannot be used.
pub fn find(options: &crate::cmdline::KernelOptions) -> Option<Found> {
    let found = e1000::find()
        .map(|r| r.map(Found::E1000))
        .or_else(|| igb::find(options.msix).map(|r| r.map(Found::Igb)))
        .or_else(|| virtio::find_pci().map(|r| r.map(Found::VirtioPci)))
        .or_else(|| virtio::find_mmio(options.mmio_devices.as_slice()).map(|r| r.map(Found::VirtioMmio)));
    match found {
        Some(Ok(found)) => Some(found),
        Some(Err(e)) => {
            log::warn!("net: cannot use the NIC: {e}; networking is off");
            None
        }
        None => {
            log::info!("net: no NIC found; networking is off");
            None
        }
    }
}

impl Found {
    pub fn name(&self) -> &'static str {
        match self {
            Found::E1000(_) => "e1000",
            Found::Igb(_) | Found::IgbQueue(_) => "igb",
            Found::VirtioPci(_) => "virtio-net-pci",
            Found::VirtioMmio(_) => "virtio-net-mmio",
        }
    }

    /// How many queues [`split`](Self::split) can make: 1 for single-queue
    /// drivers; for igb one per MSI-X vector up to its 16 queues, 1 without
    /// MSI-X (none on the device, or `msix=off`).
    pub fn max_queues(&self) -> usize {
        match self {
            Found::Igb(found) => found.max_queues(),
            _ => 1,
        }
    }

    /// Splits a multi-queue NIC into one `Found` per queue, queue i's
    /// interrupt going to cpu `cpus[i]` (1 <= `cpus.len()` <= [`max_queues`]).
    /// Does the device's global setup on the calling cpu; each queue is
    /// then started by [`start`](Self::start) on its own cpu. A
    /// single-queue driver returns itself.
    ///
    /// [`max_queues`]: Self::max_queues
    pub fn split(self, cpus: &[usize]) -> Result<Vec<Found>, String> {
        if cpus.is_empty() || cpus.len() > self.max_queues() {
            return Err(alloc::format!(
                "{}: {} queues asked for, 1 to {} possible",
                self.name(),
                cpus.len(),
                self.max_queues()
            ));
        }
        match self {
            Found::Igb(found) => Ok(found.split(cpus)?.into_iter().map(Found::IgbQueue).collect()),
            found => Ok(alloc::vec![found]),
        }
    }

    /// Sets the driver up on the calling cpu (DMA memory from its node)
    /// and, unless `poll`, routes its interrupt to this cpu's
    /// [`NIC_VECTOR`] with `handler`. The caller then enables the device's
    /// interrupts. An error is one log line's worth.
    pub fn start(self, poll: bool, handler: traps::Handler) -> Result<(Nic, Interrupt), String> {
        let (nic, interrupt) = match self {
            Found::E1000(found) => {
                let (driver, interrupt) = found.start(poll)?;
                (Nic::E1000(driver), interrupt)
            }
            Found::Igb(found) => {
                // Unsplit: one queue, on this cpu.
                let queue = found.split(&[percpu::this().index])?.pop().ok_or("igb: no queue")?;
                let (driver, interrupt) = queue.start(poll)?;
                (Nic::Igb(driver), interrupt)
            }
            Found::IgbQueue(found) => {
                let (driver, interrupt) = found.start(poll)?;
                (Nic::Igb(driver), interrupt)
            }
            Found::VirtioPci(found) => {
                let (driver, interrupt) = found.start(poll)?;
                (Nic::VirtioPci(driver), interrupt)
            }
            Found::VirtioMmio(found) => {
                let (driver, interrupt) = found.start(poll)?;
                (Nic::VirtioMmio(driver), interrupt)
            }
        };
        if !nic.link_up() {
            return Err(alloc::format!("{}: link down", nic.name()));
        }
        let interrupt = match interrupt {
            Interrupt::Line { gsi, trigger } => {
                match route_line(gsi, trigger, handler, matches!(nic, Nic::VirtioMmio(_))) {
                    Ok(()) => interrupt,
                    Err(why) => Interrupt::Polled(why),
                }
            }
            Interrupt::Message => {
                traps::set_handler(NIC_VECTOR, handler);
                interrupt
            }
            Interrupt::Polled(_) => interrupt,
        };
        Ok((nic, interrupt))
    }
}

/// Routes I/O APIC line `gsi` to [`NIC_VECTOR`] on this cpu, with
/// `handler`, and unmasks it (see [`init_io_apics`] for
/// `standard_fallback`).
fn route_line(
    gsi: u32,
    trigger: Trigger,
    handler: traps::Handler,
    standard_fallback: bool,
) -> Result<(), &'static str> {
    init_io_apics(standard_fallback).ok_or("no I/O APIC")?;
    traps::set_handler(NIC_VECTOR, handler);
    ioapic::route(gsi, trigger, NIC_VECTOR, percpu::this().apic_id())?;
    ioapic::unmask(gsi);
    Ok(())
}

/// Where a PC's (only) I/O APIC is when no ACPI table says so: QEMU's
/// microvm with `acpi=off` and Firecracker, which announce their
/// virtio-mmio devices on the command line instead.
const STANDARD_IO_APIC: crate::topology::IoApic = crate::topology::IoApic { address: 0xfec0_0000, gsi_base: 0 };

/// Maps the I/O APICs the firmware describes (once), or without any, when
/// `standard_fallback`, the one at the standard address. Returns the
/// number of lines of the one at GSI 0; `None` without any.
fn init_io_apics(standard_fallback: bool) -> Option<u8> {
    let topology = crate::topology::get()?;
    let described = topology.io_apics().next().is_some();
    if !described && !standard_fallback {
        return None;
    }
    let standard = (!described).then_some(STANDARD_IO_APIC);
    ioapic::init(topology.io_apics().chain(standard).map(|chip| (chip.address, chip.gsi_base))).ok()
}

/// The physical address of `length` bytes at `offset` in memory BAR
/// `bar`, checked to lie inside it.
pub(super) fn bar_range(device: &pci::Device, bar: u8, offset: u64, length: u64) -> Result<u64, &'static str> {
    let Some(pci::Bar::Memory { phys, size }) = device.bar(bar) else {
        return Err("a capability points at a BAR that is not a memory window");
    };
    if phys == 0 {
        return Err("a BAR is not assigned by the firmware");
    }
    if length == 0 || offset.checked_add(length).is_none_or(|end| end > size) {
        return Err("a capability's region lies outside its BAR");
    }
    Ok(phys + offset)
}

/// The vector used while looking for a NIC's INTx line.
const PROBE_VECTOR: u8 = 0x41;

static PROBED: AtomicBool = AtomicBool::new(false);
static PROBE_GSI: AtomicU32 = AtomicU32::new(0);

fn probe_interrupt(_vector: u8) {
    ioapic::mask(PROBE_GSI.load(Ordering::Relaxed));
    PROBED.store(true, Ordering::Release);
}

/// A PCI NIC's legacy interrupt: the I/O APIC line its INTx reaches (see
/// [`find_interrupt_line`]; level, active-low), or polling when none is
/// found.
fn legacy_interrupt(line: u8, nic: impl FnMut(bool)) -> Interrupt {
    match find_interrupt_line(line, nic) {
        Some(gsi) => Interrupt::Line { gsi, trigger: Trigger::LevelLow },
        None => Interrupt::Polled("no interrupt line found"),
    }
}

/// Finds the I/O APIC line a NIC's INTx reaches, by making it interrupt
/// (`nic(true)`; `nic(false)` acknowledges) with one candidate line
/// unmasked at a time: the line the firmware wrote, then the PCI lines
/// 16-23. Runs on the cpu that will take the interrupts, with interrupts
/// enabled.
fn find_interrupt_line(line: u8, mut nic: impl FnMut(bool)) -> Option<u32> {
    let pins = init_io_apics(false)?;
    traps::set_handler(PROBE_VECTOR, probe_interrupt);
    let me = percpu::this().apic_id();
    let candidates = core::iter::once(line).filter(|&l| l < 16).chain(16..pins.min(24));
    for gsi in candidates.map(u32::from) {
        PROBE_GSI.store(gsi, Ordering::Relaxed);
        PROBED.store(false, Ordering::Release);
        if ioapic::route(gsi, Trigger::LevelLow, PROBE_VECTOR, me).is_err() {
            continue;
        }
        ioapic::unmask(gsi);
        nic(true);
        let deadline = tsc::now() + tsc::hz() / 200; // 5 ms
        while !PROBED.load(Ordering::Acquire) && tsc::now() < deadline {
            core::hint::spin_loop();
        }
        ioapic::mask(gsi);
        nic(false);
        if PROBED.load(Ordering::Acquire) {
            return Some(gsi);
        }
    }
    None
}

/// `size` bytes of zeroed DMA memory from `node` (whole frames, a power of
/// two of them), kept for good: the drivers live as long as the VM.
fn alloc_dma(node: usize, size: usize) -> Option<(NonNull<u8>, u64)> {
    let frames = size.div_ceil(4096).next_power_of_two();
    let phys = crate::memory::alloc_zeroed_frames(node, frames.trailing_zeros() as usize)?;
    Some((NonNull::new(paging::phys_to_virt(phys))?, phys))
}

impl Nic {
    /// The driver's name for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Nic::E1000(_) => "e1000",
            Nic::Igb(_) => "igb",
            Nic::VirtioPci(_) => "virtio-net-pci",
            Nic::VirtioMmio(_) => "virtio-net-mmio",
        }
    }
}

impl NetDevice for Nic {
    fn mac(&self) -> [u8; 6] {
        dispatch!(self, d => d.mac())
    }

    fn link_up(&self) -> bool {
        dispatch!(self, d => d.link_up())
    }

    fn enable_interrupts(&mut self) {
        dispatch!(self, d => d.enable_interrupts())
    }

    fn acknowledge_interrupt(&mut self) -> u32 {
        dispatch!(self, d => d.acknowledge_interrupt())
    }

    fn rx_ready(&self) -> bool {
        dispatch!(self, d => d.rx_ready())
    }

    fn peek_frame(&self) -> Option<&[u8]> {
        dispatch!(self, d => NetDevice::peek_frame(d))
    }

    fn receive_with<R>(&mut self, f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        dispatch!(self, d => NetDevice::receive_with(d, f))
    }

    fn can_transmit(&mut self) -> bool {
        dispatch!(self, d => NetDevice::can_transmit(d))
    }

    fn interrupt_when_transmit_room(&mut self) -> bool {
        dispatch!(self, d => NetDevice::interrupt_when_transmit_room(d))
    }

    fn transmit_with<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        dispatch!(self, d => NetDevice::transmit_with(d, len, f))
    }

    fn flush(&mut self) {
        dispatch!(self, d => NetDevice::flush(d))
    }

    fn stats(&mut self) -> NicStats {
        dispatch!(self, d => NetDevice::stats(d))
    }

    fn queue(&self) -> usize {
        dispatch!(self, d => NetDevice::queue(d))
    }

    fn receive_queue(&self, peer: core::net::SocketAddrV4, local: core::net::SocketAddrV4) -> usize {
        dispatch!(self, d => NetDevice::receive_queue(d, peer, local))
    }

    fn rss(&self) -> Option<([u8; 40], [u8; 128])> {
        dispatch!(self, d => NetDevice::rss(d))
    }
}

/// A receive token of the driver that runs the NIC.
pub enum RxToken<'a> {
    E1000(<E1000Device as phy::Device>::RxToken<'a>),
    Igb(<IgbQueueDevice as phy::Device>::RxToken<'a>),
    VirtioPci(<VirtioPciDevice as phy::Device>::RxToken<'a>),
    VirtioMmio(<VirtioMmioDevice as phy::Device>::RxToken<'a>),
}

/// A transmit token of the driver that runs the NIC.
pub enum TxToken<'a> {
    E1000(<E1000Device as phy::Device>::TxToken<'a>),
    Igb(<IgbQueueDevice as phy::Device>::TxToken<'a>),
    VirtioPci(<VirtioPciDevice as phy::Device>::TxToken<'a>),
    VirtioMmio(<VirtioMmioDevice as phy::Device>::TxToken<'a>),
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        match self {
            RxToken::E1000(token) => token.consume(f),
            RxToken::Igb(token) => token.consume(f),
            RxToken::VirtioPci(token) => token.consume(f),
            RxToken::VirtioMmio(token) => token.consume(f),
        }
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self {
            TxToken::E1000(token) => token.consume(len, f),
            TxToken::Igb(token) => token.consume(len, f),
            TxToken::VirtioPci(token) => token.consume(len, f),
            TxToken::VirtioMmio(token) => token.consume(len, f),
        }
    }
}

impl phy::Device for Nic {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        match self {
            Nic::E1000(d) => d.receive(now).map(|(rx, tx)| (RxToken::E1000(rx), TxToken::E1000(tx))),
            Nic::Igb(d) => d.receive(now).map(|(rx, tx)| (RxToken::Igb(rx), TxToken::Igb(tx))),
            Nic::VirtioPci(d) => d.receive(now).map(|(rx, tx)| (RxToken::VirtioPci(rx), TxToken::VirtioPci(tx))),
            Nic::VirtioMmio(d) => d.receive(now).map(|(rx, tx)| (RxToken::VirtioMmio(rx), TxToken::VirtioMmio(tx))),
        }
    }

    fn transmit(&mut self, now: Instant) -> Option<TxToken<'_>> {
        match self {
            Nic::E1000(d) => d.transmit(now).map(TxToken::E1000),
            Nic::Igb(d) => d.transmit(now).map(TxToken::Igb),
            Nic::VirtioPci(d) => d.transmit(now).map(TxToken::VirtioPci),
            Nic::VirtioMmio(d) => d.transmit(now).map(TxToken::VirtioMmio),
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        dispatch!(self, d => d.capabilities())
    }
}
