//! virtio-net's glue: finding a modern virtio-net device on PCI (its
//! vendor capabilities point at the register regions; MSI-X for its
//! interrupt) or over MMIO (the `virtio_mmio.device=` words of the command
//! line; its interrupt is an I/O APIC line), and what the `virtio-net`
//! crate needs from the kernel: register windows ([`Registers`] over
//! `arch::mmio::Window`) and DMA memory from the network cpu's node.

use alloc::format;
use alloc::string::String;

use virtio_net::{Dma, Hardware, Mmio, Pci, PciRegions, Registers, Transport, VirtioNet};

use super::{Interrupt, NIC_VECTOR};
use crate::arch::ioapic::Trigger;
use crate::arch::mmio::Window;
use crate::arch::msix::MsixTable;
use crate::arch::percpu;
use crate::cmdline::MmioDevice;
use crate::net::device::{NetDevice, NicStats};
use crate::pci;

impl Registers for Window {
    fn read8(&self, offset: usize) -> u8 {
        Window::read8(self, offset)
    }

    fn read16(&self, offset: usize) -> u16 {
        Window::read16(self, offset)
    }

    fn read32(&self, offset: usize) -> u32 {
        Window::read32(self, offset)
    }

    fn write8(&self, offset: usize, value: u8) {
        Window::write8(self, offset, value)
    }

    fn write16(&self, offset: usize, value: u16) {
        Window::write16(self, offset, value)
    }

    fn write32(&self, offset: usize, value: u32) {
        Window::write32(self, offset, value)
    }
}

/// DMA memory from one node.
struct NodeMemory {
    node: usize,
}

impl Hardware for NodeMemory {
    fn alloc_dma(&self, size: usize) -> Option<Dma> {
        let (virt, phys) = super::alloc_dma(self.node, size)?;
        Some(Dma { virt, phys, size })
    }
}

/// The calling cpu's node's memory.
fn this_node() -> NodeMemory {
    NodeMemory { node: percpu::this().node() }
}

impl<T: Transport> NetDevice for VirtioNet<T> {
    fn mac(&self) -> [u8; 6] {
        VirtioNet::mac(self)
    }

    fn link_up(&self) -> bool {
        VirtioNet::link_up(self)
    }

    fn enable_interrupts(&mut self) {
        VirtioNet::enable_interrupts(self)
    }

    fn acknowledge_interrupt(&mut self) -> u32 {
        self.handle_interrupt()
    }

    fn rx_ready(&self) -> bool {
        VirtioNet::rx_ready(self)
    }

    fn peek_frame(&self) -> Option<&[u8]> {
        VirtioNet::peek_frame(self)
    }

    fn receive_with<R>(&mut self, f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        VirtioNet::receive_with(self, f)
    }

    fn can_transmit(&mut self) -> bool {
        VirtioNet::can_transmit(self)
    }

    fn interrupt_when_transmit_room(&mut self) -> bool {
        VirtioNet::interrupt_when_transmit_room(self)
    }

    fn transmit_with<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        VirtioNet::transmit_with(self, len, f)
    }

    fn flush(&mut self) {
        VirtioNet::flush(self)
    }

    fn stats(&mut self) -> NicStats {
        let s = VirtioNet::stats(self);
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

const VIRTIO_VENDOR: u16 = 0x1af4;
/// A modern (virtio 1.x only) network device: 0x1040 + device type 1.
const MODERN_NET: u16 = 0x1041;
/// A transitional network device (legacy and modern interfaces).
const TRANSITIONAL_NET: u16 = 0x1000;
/// Capability id of the virtio vendor capabilities.
const CAP_VIRTIO: u8 = 0x09;
/// `cfg_type`s of the regions the driver needs: common (1), notify (2),
/// ISR (3), device configuration (4).
const COMMON_CFG: u8 = 1;
const NOTIFY_CFG: u8 = 2;
const DEVICE_CFG: u8 = 4;

/// A modern virtio-net device found on PCI, its regions mapped.
pub struct PciFound {
    device: pci::Device,
    regions: PciRegions<Window>,
    msix: Option<(pci::Msix, MsixTable)>,
}

/// Finds a modern virtio-net device on PCI and maps its regions. A
/// transitional device (1af4:1000) is refused with a log line.
pub fn find_pci() -> Option<Result<PciFound, String>> {
    let devices = pci::devices();
    for d in devices.iter().filter(|d| d.vendor_id == VIRTIO_VENDOR && d.device_id == TRANSITIONAL_NET) {
        log::warn!(
            "net: virtio-net at PCI {:02x}:{:02x}.{} is a transitional device (1af4:1000); only modern virtio is driven (QEMU: disable-legacy=on)",
            d.bus, d.device, d.function
        );
    }
    let device = *devices.iter().find(|d| d.vendor_id == VIRTIO_VENDOR && d.device_id == MODERN_NET)?;
    Some(
        map_pci(device).map_err(|e| {
            format!("virtio-net-pci at {:02x}:{:02x}.{}: {e}", device.bus, device.device, device.function)
        }),
    )
}

fn map_pci(device: pci::Device) -> Result<PciFound, &'static str> {
    let mut regions: [Option<Window>; 4] = [None, None, None, None];
    let mut notify_off_multiplier = 0;
    for cap in device.capabilities().filter(|c| c.id == CAP_VIRTIO) {
        let cfg_type = device.config_read8(cap.offset + 3);
        if !(COMMON_CFG..=DEVICE_CFG).contains(&cfg_type) || regions[cfg_type as usize - 1].is_some() {
            continue; // another kind of region, or a later alternative
        }
        let cap_len = device.config_read8(cap.offset + 2);
        if cap_len < 16 || (cfg_type == NOTIFY_CFG && cap_len < 20) {
            return Err("a virtio capability is shorter than its structure");
        }
        let bar = device.config_read8(cap.offset + 4);
        let offset = device.config_read32(cap.offset + 8) as u64;
        let length = device.config_read32(cap.offset + 12) as u64;
        if cfg_type == NOTIFY_CFG {
            notify_off_multiplier = device.config_read32(cap.offset + 16);
        }
        regions[cfg_type as usize - 1] =
            Some(Window::map(super::bar_range(&device, bar, offset, length)?, length as usize)?);
    }
    let [Some(common), Some(notify), Some(isr), Some(device_cfg)] = regions else {
        return Err("a virtio region (common, notify, ISR or device configuration) is missing");
    };
    let msix = match device.msix() {
        Some(cap) => {
            let table = super::bar_range(&device, cap.table_bar, cap.table_offset as u64, cap.table_size as u64 * 16)?;
            Some((cap, MsixTable::map(table, cap.table_size)?))
        }
        None => None,
    };
    device.enable();
    let regions = PciRegions { common, notify, notify_off_multiplier, isr, device: device_cfg };
    Ok(PciFound { device, regions, msix })
}

impl PciFound {
    /// Sets the driver up on the calling cpu, its MSI-X table entry 0
    /// sent to this cpu's [`NIC_VECTOR`] unless `poll`.
    pub fn start(self, poll: bool) -> Result<(VirtioNet<Pci<Window>>, Interrupt), String> {
        let (wanted, interrupt) = match &self.msix {
            _ if poll => (virtio_net::Interrupt::Polled, Interrupt::Polled("netpoll=on")),
            None => (virtio_net::Interrupt::Polled, Interrupt::Polled("the device has no MSI-X")),
            Some((cap, table)) => match table.route(0, NIC_VECTOR, percpu::this().apic_id()) {
                Ok(()) => {
                    self.device.set_msix(cap, true);
                    (virtio_net::Interrupt::Msix(0), Interrupt::Message)
                }
                Err(why) => (virtio_net::Interrupt::Polled, Interrupt::Polled(why)),
            },
        };
        match VirtioNet::new(Pci::new(self.regions), &this_node(), wanted) {
            Ok(driver) => Ok((driver, interrupt)),
            Err(e) => {
                if let Some((cap, table)) = &self.msix {
                    table.mask(0);
                    self.device.set_msix(cap, false);
                }
                Err(format!("virtio-net-pci: {e}"))
            }
        }
    }
}

/// A virtio-net device found over MMIO.
pub struct MmioFound {
    transport: Mmio<Window>,
    address: u64,
    irq: u32,
}

/// The smallest window that holds a virtio-mmio device's registers and a
/// network device's configuration.
const MMIO_MIN_SIZE: u64 = 0x200;
/// What is mapped of a larger window (Firecracker announces 4 KiB).
const MMIO_MAX_MAPPED: u64 = 0x1000;

/// Finds the first virtio-net device among the command line's virtio-mmio
/// devices. Empty slots and other kinds of devices are skipped quietly.
pub fn find_mmio(devices: &[MmioDevice]) -> Option<Result<MmioFound, String>> {
    for device in devices {
        let at = device.address;
        if device.size < MMIO_MIN_SIZE {
            log::warn!("net: virtio-mmio device at {at:#x}: a {}-byte window is too small; ignored", device.size);
            continue;
        }
        let window = match Window::map(at, device.size.min(MMIO_MAX_MAPPED) as usize) {
            Ok(window) => window,
            Err(e) => return Some(Err(format!("virtio-mmio device at {at:#x}: {e}"))),
        };
        match Mmio::new(window) {
            Ok(transport) => return Some(Ok(MmioFound { transport, address: at, irq: device.irq })),
            Err(virtio_net::Error::NoDevice | virtio_net::Error::NotNetwork) => {
                log::debug!("net: virtio-mmio slot at {at:#x}: no network device");
            }
            Err(e) => return Some(Err(format!("virtio-net-mmio at {at:#x}: {e}"))),
        }
    }
    None
}

impl MmioFound {
    /// Sets the driver up on the calling cpu; its interrupt line (level,
    /// active high, as microvm's ACPI tables describe it) is routed by the
    /// caller unless `poll`.
    pub fn start(self, poll: bool) -> Result<(VirtioNet<Mmio<Window>>, Interrupt), String> {
        let (wanted, interrupt) = if poll {
            (virtio_net::Interrupt::Polled, Interrupt::Polled("netpoll=on"))
        } else {
            (virtio_net::Interrupt::Line, Interrupt::Line { gsi: self.irq, trigger: Trigger::LevelHigh })
        };
        let driver = VirtioNet::new(self.transport, &this_node(), wanted)
            .map_err(|e| format!("virtio-net-mmio at {:#x}: {e}", self.address))?;
        Ok((driver, interrupt))
    }
}
