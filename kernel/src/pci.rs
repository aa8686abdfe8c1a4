//! PCI devices: enumeration of configuration space (bus 0 and every bus
//! behind a bridge), lookup by vendor/device id or class, BAR decoding and
//! mapping, bus mastering, the capability list and MSI-X's enable bits. (Configuration access itself is in
//! `arch::pci`; interrupt routing in `net`'s device glue and
//! `arch::ioapic`.)

use alloc::vec::Vec;

use crate::arch::pci::{read32, write32};

/// A PCI function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
    pub vendor_id: u16,
    pub device_id: u16,
    pub class: u8,
    pub subclass: u8,
    /// The legacy interrupt line the firmware wrote (0xff: none).
    pub interrupt_line: u8,
    /// INTA..INTD as 1..4, 0 for none.
    pub interrupt_pin: u8,
}

/// A base address register's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar {
    Memory { phys: u64, size: u64 },
    Io { port: u16, size: u32 },
}

/// A capability in a function's configuration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// Its id (0x09 vendor-specific, 0x11 MSI-X, ...).
    pub id: u8,
    /// Its offset in configuration space.
    pub offset: u8,
}

/// Capability id of MSI-X.
pub const CAP_MSIX: u8 = 0x11;

/// A function's MSI-X capability: where its table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msix {
    /// Offset of the capability in configuration space.
    offset: u8,
    /// Table entries.
    pub table_size: u16,
    /// The BAR holding the table, and the table's offset in it.
    pub table_bar: u8,
    pub table_offset: u32,
}

const MSIX_ENABLE: u32 = 1 << 31;
const MSIX_FUNCTION_MASK: u32 = 1 << 30;

const STATUS_CAPABILITIES: u32 = 1 << 20;
const CAPABILITIES_POINTER: u8 = 0x34;
/// Capabilities fit in the 192 bytes after the header (4-byte aligned):
/// a list longer than that loops.
const MAX_CAPABILITIES: usize = 48;

const COMMAND: u8 = 0x04;
const COMMAND_IO: u32 = 1 << 0;
const COMMAND_MEMORY: u32 = 1 << 1;
const COMMAND_BUS_MASTER: u32 = 1 << 2;
const COMMAND_INTX_DISABLE: u32 = 1 << 10;

impl Device {
    fn read(&self, offset: u8) -> u32 {
        read32(self.bus, self.device, self.function, offset)
    }

    fn write(&self, offset: u8, value: u32) {
        write32(self.bus, self.device, self.function, offset, value)
    }

    /// Reads the 32-bit configuration register at `offset` (aligned down
    /// to 4 bytes).
    pub fn config_read32(&self, offset: u8) -> u32 {
        self.read(offset & !3)
    }

    /// Reads the byte at `offset` in configuration space.
    pub fn config_read8(&self, offset: u8) -> u8 {
        (self.read(offset & !3) >> ((offset & 3) * 8)) as u8
    }

    /// The capability list (empty when the function has none). Bounded: a
    /// list that loops ends after [`MAX_CAPABILITIES`] entries.
    pub fn capabilities(&self) -> impl Iterator<Item = Capability> + '_ {
        let has_list = self.read(COMMAND) & STATUS_CAPABILITIES != 0;
        let mut next = if has_list { self.config_read8(CAPABILITIES_POINTER) & !3 } else { 0 };
        core::iter::from_fn(move || {
            if next < 0x40 {
                return None;
            }
            let offset = next;
            let header = self.read(offset);
            next = (header >> 8) as u8 & !3;
            Some(Capability { id: header as u8, offset })
        })
        .take(MAX_CAPABILITIES)
    }

    /// The MSI-X capability, when the function has one.
    pub fn msix(&self) -> Option<Msix> {
        let cap = self.capabilities().find(|c| c.id == CAP_MSIX)?;
        let control = self.read(cap.offset);
        let table = self.read(cap.offset + 4);
        Some(Msix {
            offset: cap.offset,
            table_size: ((control >> 16) & 0x7ff) as u16 + 1,
            table_bar: (table & 7) as u8,
            table_offset: table & !7,
        })
    }

    /// Turns MSI-X on (with the function mask off) or off. With MSI-X on
    /// the function no longer raises its INTx line.
    pub fn set_msix(&self, msix: &Msix, enabled: bool) {
        let control = self.read(msix.offset) & !(MSIX_ENABLE | MSIX_FUNCTION_MASK);
        self.write(msix.offset, if enabled { control | MSIX_ENABLE } else { control });
    }

    /// Decodes BAR `index` (0-5), sizing it by the standard write-ones
    /// probe (decoding is turned off meanwhile). `None` for an empty BAR.
    pub fn bar(&self, index: u8) -> Option<Bar> {
        if index > 5 {
            return None;
        }
        let offset = 0x10 + index * 4;
        let low = self.read(offset);
        let command = self.read(COMMAND);
        self.write(COMMAND, command & !(COMMAND_IO | COMMAND_MEMORY));
        let bar = if low & 1 == 1 {
            self.write(offset, u32::MAX);
            let mask = self.read(offset) & !0x3;
            self.write(offset, low);
            let size = (!mask).wrapping_add(1) & 0xffff;
            (size != 0).then_some(Bar::Io { port: (low & !0x3) as u16, size })
        } else {
            let is_64 = (low >> 1) & 0x3 == 0x2;
            let high = if is_64 { self.read(offset + 4) } else { 0 };
            self.write(offset, u32::MAX);
            let mut mask = (self.read(offset) & !0xf) as u64;
            self.write(offset, low);
            if is_64 {
                self.write(offset + 4, u32::MAX);
                mask |= (self.read(offset + 4) as u64) << 32;
                self.write(offset + 4, high);
            } else {
                mask |= 0xffff_ffff_0000_0000;
            }
            let size = (!mask).wrapping_add(1);
            let phys = (low & !0xf) as u64 | (high as u64) << 32;
            (size != 0 && mask != 0).then_some(Bar::Memory { phys, size })
        };
        self.write(COMMAND, command);
        bar
    }

    /// Turns on memory decoding and bus mastering (DMA), and lets the
    /// device raise its INTx line.
    pub fn enable(&self) {
        let command = self.read(COMMAND);
        self.write(COMMAND, (command | COMMAND_MEMORY | COMMAND_BUS_MASTER) & !COMMAND_INTX_DISABLE);
    }
}

/// Every PCI function: bus 0, then each bus behind a PCI-to-PCI bridge.
pub fn devices() -> Vec<Device> {
    let mut found = Vec::new();
    let mut buses = alloc::vec![0u8];
    let mut scanned = [false; 256];
    while let Some(bus) = buses.pop() {
        if core::mem::replace(&mut scanned[bus as usize], true) {
            continue;
        }
        for device in 0..32 {
            for function in 0..8 {
                let id = read32(bus, device, function, 0);
                if id & 0xffff == 0xffff {
                    if function == 0 {
                        break; // no device in this slot
                    }
                    continue;
                }
                let class = read32(bus, device, function, 0x08);
                let header = (read32(bus, device, function, 0x0c) >> 16) as u8;
                let interrupt = read32(bus, device, function, 0x3c);
                found.push(Device {
                    bus,
                    device,
                    function,
                    vendor_id: id as u16,
                    device_id: (id >> 16) as u16,
                    class: (class >> 24) as u8,
                    subclass: (class >> 16) as u8,
                    interrupt_line: interrupt as u8,
                    interrupt_pin: (interrupt >> 8) as u8,
                });
                if header & 0x7f == 0x01 {
                    // A bridge: its secondary bus number.
                    buses.push((read32(bus, device, function, 0x18) >> 8) as u8);
                }
                if function == 0 && header & 0x80 == 0 {
                    break; // single-function device
                }
            }
        }
    }
    found
}

/// The first function with this vendor and device id.
pub fn find(vendor_id: u16, device_id: u16) -> Option<Device> {
    devices().into_iter().find(|d| d.vendor_id == vendor_id && d.device_id == device_id)
}
