//! How the `acpi` crate reaches firmware memory and registers: ACPI tables
//! through the kernel's direct map (mapped on demand, write-back), register
//! blocks through I/O ports, PCI configuration through ports 0xcf8/0xcfc.

use core::ptr::NonNull;

use acpi::sdt::{SdtHeader, Signature};
use acpi::{AcpiError, AcpiTable, AcpiTables, Handler, PciAddress, PhysicalMapping, RawPhysicalMapping};
use x86_64::instructions::port::Port;

use super::paging;

/// The kernel's [`acpi::Handler`]: stateless, so cloning is free.
#[derive(Clone, Copy, Debug)]
pub struct KernelAcpiHandler;

/// The ACPI tables behind the RSDP at physical address `rsdp` (as the
/// loader reported it). The crate checks the RSDP's signature and checksum
/// before trusting it, and every table's before handing it out; all of it
/// is read through the direct map, mapped on demand.
pub fn tables_at(rsdp: u64) -> Result<AcpiTables<KernelAcpiHandler>, AcpiError> {
    // SAFETY: whatever `rsdp` is, the handler maps it into the direct map
    // (write-back, firmware memory is never handed to the allocators), so
    // reading it is harmless, and nothing is trusted before the signature
    // and checksum match.
    unsafe { AcpiTables::from_rsdp(KernelAcpiHandler, rsdp as usize) }
}

/// A table known only by its header, for reading its body as bytes
/// ([`table_bytes`]): the SRAT or the SLIT (`SIG`).
#[repr(C, packed)]
pub struct RawTable<const SIG: u32> {
    header: SdtHeader,
}

/// `RawTable`'s signature parameter for the SRAT.
pub const SRAT: u32 = u32::from_le_bytes(*b"SRAT");
/// `RawTable`'s signature parameter for the SLIT.
pub const SLIT: u32 = u32::from_le_bytes(*b"SLIT");

// SAFETY: RawTable is exactly an SDT header, valid for any table whose
// signature matches (the crate checks it).
unsafe impl<const SIG: u32> AcpiTable for RawTable<SIG> {
    const SIGNATURE: Signature = match SIG {
        SRAT => Signature::SRAT,
        _ => Signature::SLIT,
    };
    fn header(&self) -> &SdtHeader {
        &self.header
    }
}

/// The whole table (header included) as bytes.
pub fn table_bytes<const SIG: u32>(mapping: &PhysicalMapping<KernelAcpiHandler, RawTable<SIG>>) -> &[u8] {
    let len = { mapping.get().header.length } as usize;
    // SAFETY: the crate mapped the table's whole `length` (through the
    // handler, into the direct map) after validating its checksum.
    unsafe { core::slice::from_raw_parts(mapping.as_ptr() as *const u8, len) }
}

fn direct<T>(phys: usize) -> *mut T {
    paging::phys_to_virt(phys as u64) as *mut T
}

fn pci_config_address(address: PciAddress, offset: u16) -> u32 {
    0x8000_0000
        | (address.bus() as u32) << 16
        | (address.device() as u32) << 11
        | (address.function() as u32) << 8
        | (offset as u32 & 0xfc)
}

fn pci_read(address: PciAddress, offset: u16) -> u32 {
    // SAFETY: the legacy PCI configuration mechanism: writing the address
    // port selects a register, reading the data port reads it.
    unsafe {
        Port::<u32>::new(0xcf8).write(pci_config_address(address, offset));
        Port::<u32>::new(0xcfc).read()
    }
}

fn pci_write(address: PciAddress, offset: u16, value: u32) {
    // SAFETY: as in pci_read; the caller (AML or ACPI register code) asks
    // for this very configuration write.
    unsafe {
        Port::<u32>::new(0xcf8).write(pci_config_address(address, offset));
        Port::<u32>::new(0xcfc).write(value);
    }
}

/// An I/O port delay of roughly a microsecond (a write to the POST port).
fn io_delay() {
    // SAFETY: port 0x80 is the POST diagnostic port; writes have no effect.
    unsafe { Port::<u8>::new(0x80).write(0) };
}

impl Handler for KernelAcpiHandler {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> RawPhysicalMapping<T> {
        paging::ensure_direct_map(physical_address as u64, size as u64);
        let virt = NonNull::new(direct::<T>(physical_address)).expect("direct map is never null");
        // SAFETY: the direct map covers [physical_address, +size) now, and
        // each physical address has exactly one direct-map address.
        unsafe { RawPhysicalMapping::new(physical_address, virt, size, size) }
    }

    unsafe fn unmap_physical_region<T>(&self, _region: RawPhysicalMapping<T>) {
        // The direct map stays: firmware tables remain readable.
    }

    fn read_u8(&self, address: usize) -> u8 {
        paging::ensure_direct_map(address as u64, 1);
        // SAFETY: firmware asks for a register or table byte it owns; the
        // direct map covers it once ensured.
        unsafe { direct::<u8>(address).read_volatile() }
    }
    fn read_u16(&self, address: usize) -> u16 {
        paging::ensure_direct_map(address as u64, 2);
        // SAFETY: as in read_u8.
        unsafe { direct::<u16>(address).read_volatile() }
    }
    fn read_u32(&self, address: usize) -> u32 {
        paging::ensure_direct_map(address as u64, 4);
        // SAFETY: as in read_u8.
        unsafe { direct::<u32>(address).read_volatile() }
    }
    fn read_u64(&self, address: usize) -> u64 {
        paging::ensure_direct_map(address as u64, 8);
        // SAFETY: as in read_u8.
        unsafe { direct::<u64>(address).read_volatile() }
    }
    fn write_u8(&self, address: usize, value: u8) {
        paging::ensure_direct_map(address as u64, 1);
        // SAFETY: firmware-described register or memory, as in read_u8.
        unsafe { direct::<u8>(address).write_volatile(value) }
    }
    fn write_u16(&self, address: usize, value: u16) {
        paging::ensure_direct_map(address as u64, 2);
        // SAFETY: as in write_u8.
        unsafe { direct::<u16>(address).write_volatile(value) }
    }
    fn write_u32(&self, address: usize, value: u32) {
        paging::ensure_direct_map(address as u64, 4);
        // SAFETY: as in write_u8.
        unsafe { direct::<u32>(address).write_volatile(value) }
    }
    fn write_u64(&self, address: usize, value: u64) {
        paging::ensure_direct_map(address as u64, 8);
        // SAFETY: as in write_u8.
        unsafe { direct::<u64>(address).write_volatile(value) }
    }

    fn read_io_u8(&self, port: u16) -> u8 {
        // SAFETY: a firmware-described register block (FADT/GAS).
        unsafe { Port::new(port).read() }
    }
    fn read_io_u16(&self, port: u16) -> u16 {
        // SAFETY: as in read_io_u8.
        unsafe { Port::new(port).read() }
    }
    fn read_io_u32(&self, port: u16) -> u32 {
        // SAFETY: as in read_io_u8.
        unsafe { Port::new(port).read() }
    }
    fn write_io_u8(&self, port: u16, value: u8) {
        // SAFETY: as in read_io_u8.
        unsafe { Port::new(port).write(value) }
    }
    fn write_io_u16(&self, port: u16, value: u16) {
        // SAFETY: as in read_io_u8.
        unsafe { Port::new(port).write(value) }
    }
    fn write_io_u32(&self, port: u16, value: u32) {
        // SAFETY: as in read_io_u8.
        unsafe { Port::new(port).write(value) }
    }

    fn read_pci_u8(&self, address: PciAddress, offset: u16) -> u8 {
        (pci_read(address, offset) >> ((offset & 3) * 8)) as u8
    }
    fn read_pci_u16(&self, address: PciAddress, offset: u16) -> u16 {
        (pci_read(address, offset) >> ((offset & 2) * 8)) as u16
    }
    fn read_pci_u32(&self, address: PciAddress, offset: u16) -> u32 {
        pci_read(address, offset)
    }
    fn write_pci_u8(&self, address: PciAddress, offset: u16, value: u8) {
        let shift = (offset & 3) * 8;
        let old = pci_read(address, offset) & !(0xff << shift);
        pci_write(address, offset, old | (value as u32) << shift);
    }
    fn write_pci_u16(&self, address: PciAddress, offset: u16, value: u16) {
        let shift = (offset & 2) * 8;
        let old = pci_read(address, offset) & !(0xffff << shift);
        pci_write(address, offset, old | (value as u32) << shift);
    }
    fn write_pci_u32(&self, address: PciAddress, offset: u16, value: u32) {
        pci_write(address, offset, value)
    }

    fn nanos_since_boot(&self) -> u64 {
        super::tsc::nanos_since_boot()
    }
    fn stall(&self, microseconds: u64) {
        for _ in 0..microseconds {
            io_delay();
        }
    }
    fn sleep(&self, milliseconds: u64) {
        self.stall(milliseconds * 1000);
    }
}
