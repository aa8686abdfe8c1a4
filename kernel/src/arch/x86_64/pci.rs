//! PCI configuration space through the legacy I/O ports (0xCF8 address,
//! 0xCFC data): the mechanism every PC-compatible machine and QEMU model
//! has. One lock keeps the address/data pair together.

use spin::Mutex;
use x86_64::instructions::port::Port;

const ADDRESS: u16 = 0xcf8;
const DATA: u16 = 0xcfc;

static PORTS: Mutex<()> = Mutex::new(());

fn address(bus: u8, device: u8, function: u8, offset: u8) -> u32 {
    (1 << 31)
        | (bus as u32) << 16
        | ((device as u32) & 0x1f) << 11
        | ((function as u32) & 0x7) << 8
        | (offset as u32 & 0xfc)
}

/// Reads the 32-bit configuration register at `offset` (4-byte aligned).
pub fn read32(bus: u8, device: u8, function: u8, offset: u8) -> u32 {
    let _guard = PORTS.lock();
    // SAFETY: the configuration ports only select and read configuration
    // registers; the lock keeps the select and the read together.
    unsafe {
        Port::<u32>::new(ADDRESS).write(address(bus, device, function, offset));
        Port::<u32>::new(DATA).read()
    }
}

/// Writes the 32-bit configuration register at `offset` (4-byte aligned).
pub fn write32(bus: u8, device: u8, function: u8, offset: u8, value: u32) {
    let _guard = PORTS.lock();
    // SAFETY: as in read32; callers write only registers whose meaning
    // they know (command, BARs while sizing them).
    unsafe {
        Port::<u32>::new(ADDRESS).write(address(bus, device, function, offset));
        Port::<u32>::new(DATA).write(value);
    }
}
