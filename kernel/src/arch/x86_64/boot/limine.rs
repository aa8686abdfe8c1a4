//! The Limine entry: Limine loads the ELF at its higher-half addresses, maps
//! all physical memory at its HHDM offset, answers the requests below and
//! jumps to `_start` (the ELF entry point) in long mode.

use limine::memory_map::EntryType;
use limine::request::{
    ExecutableAddressRequest, ExecutableFileRequest, HhdmRequest, MemoryMapRequest, RequestsEndMarker,
    RequestsStartMarker, RsdpRequest,
};
use limine::BaseRevision;

use super::{BootInfo, ImageLocation, Loader, MemoryRegion, RegionKind};

// Limine 8.x serves base revision 2; the crate's `new()` asks for 3.
#[used]
#[unsafe(link_section = ".requests")]
static BASE_REVISION: BaseRevision = BaseRevision::with_revision(2);
#[used]
#[unsafe(link_section = ".requests")]
static MEMORY_MAP: MemoryMapRequest = MemoryMapRequest::new();
#[used]
#[unsafe(link_section = ".requests")]
static HHDM: HhdmRequest = HhdmRequest::new();
#[used]
#[unsafe(link_section = ".requests")]
static RSDP: RsdpRequest = RsdpRequest::new();
#[used]
#[unsafe(link_section = ".requests")]
static EXECUTABLE_FILE: ExecutableFileRequest = ExecutableFileRequest::new();
#[used]
#[unsafe(link_section = ".requests")]
static EXECUTABLE_ADDRESS: ExecutableAddressRequest = ExecutableAddressRequest::new();

#[used]
#[unsafe(link_section = ".requests_start_marker")]
static REQUESTS_START: RequestsStartMarker = RequestsStartMarker::new();
#[used]
#[unsafe(link_section = ".requests_end_marker")]
static REQUESTS_END: RequestsEndMarker = RequestsEndMarker::new();

/// The ELF entry point, used by Limine. Moves to the kernel's own boot stack
/// (the same one the PVH path uses) and enters Rust.
#[unsafe(naked)]
#[unsafe(no_mangle)]
extern "C" fn _start() -> ! {
    core::arch::naked_asm!(
        "lea rsp, [rip + {stack} + {stack_size}]",
        "xor ebp, ebp",
        "call {entry}",
        "ud2",
        stack = sym crate::arch::boot_stack::BOOT_STACK,
        stack_size = const crate::arch::boot_stack::BOOT_STACK_SIZE,
        entry = sym limine_entry,
    )
}

fn region_kind(t: EntryType) -> RegionKind {
    match t {
        EntryType::USABLE => RegionKind::Usable,
        EntryType::BOOTLOADER_RECLAIMABLE => RegionKind::BootloaderReclaimable,
        EntryType::EXECUTABLE_AND_MODULES => RegionKind::Kernel,
        EntryType::ACPI_RECLAIMABLE => RegionKind::AcpiReclaimable,
        EntryType::ACPI_NVS => RegionKind::AcpiNvs,
        EntryType::BAD_MEMORY => RegionKind::Bad,
        _ => RegionKind::Reserved,
    }
}

extern "C" fn limine_entry() -> ! {
    if !BASE_REVISION.is_supported() {
        crate::arch::early_fail("Limine: base revision 2 not supported by this bootloader");
    }
    let (Some(hhdm), Some(address), Some(memory_map)) =
        (HHDM.get_response(), EXECUTABLE_ADDRESS.get_response(), MEMORY_MAP.get_response())
    else {
        crate::arch::early_fail("Limine: missing HHDM, executable address or memory map response");
    };
    let (virt_start, virt_end) = super::image_virt_range();
    let image = ImageLocation {
        phys_base: address.physical_base() + (virt_start - address.virtual_base()),
        virt_base: virt_start,
        size: virt_end - virt_start,
    };
    let mut boot = BootInfo::new(Loader::Limine, image, hhdm.offset());
    for entry in memory_map.entries() {
        boot.push_region(MemoryRegion { start: entry.base, len: entry.length, kind: region_kind(entry.entry_type) });
    }
    if let Some(file) = EXECUTABLE_FILE.get_response() {
        boot.set_cmdline(file.file().string().to_bytes());
    }
    // Base revisions below 3 report the RSDP as an HHDM address.
    boot.rsdp = RSDP.get_response().map(|r| {
        let addr = r.address() as u64;
        if addr >= hhdm.offset() {
            addr - hhdm.offset()
        } else {
            addr
        }
    });
    super::enter_kernel(boot)
}
