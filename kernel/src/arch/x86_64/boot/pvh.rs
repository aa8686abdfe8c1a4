//! The PVH entry: `qemu -kernel` (and microVMs) start the kernel here.
//!
//! QEMU finds the 32-bit entry point in the `.note.pvh` ELF note and enters it
//! in protected mode with paging off and `%ebx` pointing at an
//! `hvm_start_info`. The stub below builds just enough page tables to reach
//! the higher half (identity map of the low 4 GiB, and the kernel window at
//! `KERNEL_VMA`), enters long mode and calls [`pvh_entry`], which copies the
//! start info into a [`BootInfo`].

use super::{BootInfo, ImageLocation, Loader, MemoryRegion, RegionKind, KERNEL_VMA};

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the note QEMU's PVH loader looks for.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const HVM_START_MAGIC: u32 = 0x336e_c578;

// The note: name "Xen\0", type 18, descriptor = 32-bit physical entry address.
core::arch::global_asm!(
    ".pushsection .note.pvh, \"a\", @note",
    ".balign 4",
    ".long 4",                  // name size
    ".long 4",                  // descriptor size
    ".long {note_type}",
    ".asciz \"Xen\"",
    ".balign 4",
    ".long pvh_start32 - {vma}",
    ".balign 4",
    ".popsection",
    note_type = const XEN_ELFNOTE_PHYS32_ENTRY,
    vma = const KERNEL_VMA,
);

// Early page tables and the 32-bit to 64-bit trampoline. Addresses are
// physical (`symbol - KERNEL_VMA`) until the jump to the higher half.
core::arch::global_asm!(
    ".pushsection .bss.pvh_tables, \"aw\", @nobits",
    ".balign 4096",
    "pvh_pml4:      .skip 4096",
    "pvh_pdpt_low:  .skip 4096",
    "pvh_pdpt_high: .skip 4096",
    "pvh_pd:        .skip 4096 * 4",   // 4 x 512 x 2 MiB = the low 4 GiB
    ".popsection",

    ".pushsection .rodata.pvh_gdt, \"a\"",
    ".balign 16",
    "pvh_gdt:",
    ".quad 0",
    ".quad 0x00af9a000000ffff",       // 0x08: 64-bit code
    ".quad 0x00cf92000000ffff",       // 0x10: data
    "pvh_gdt_end:",
    "pvh_gdt_ptr:",
    ".word pvh_gdt_end - pvh_gdt - 1",
    ".long pvh_gdt - {vma}",
    ".popsection",

    ".pushsection .text.boot32, \"ax\"",
    ".code32",
    ".global pvh_start32",
    "pvh_start32:",
    "cli",
    "cld",
    "mov esi, ebx",                   // hvm_start_info, kept for pvh_entry

    // QEMU zero-fills .bss, but do not rely on a loader for that.
    "lea edi, [__bss_start - {vma}]",
    "lea ecx, [__bss_end - {vma}]",
    "sub ecx, edi",
    "shr ecx, 2",
    "xor eax, eax",
    "rep stosd",

    // pd[i] = i * 2 MiB | PRESENT | WRITABLE | HUGE, for the low 4 GiB.
    "lea edi, [pvh_pd - {vma}]",
    "mov eax, 0x83",
    "mov ecx, 2048",
    "2:",
    "mov [edi], eax",
    "add eax, 0x200000",
    "add edi, 8",
    "dec ecx",
    "jnz 2b",

    // pdpt_low[0..4] = the four page directories.
    "lea edi, [pvh_pdpt_low - {vma}]",
    "lea eax, [pvh_pd - {vma} + 3]",
    "mov ecx, 4",
    "3:",
    "mov [edi], eax",
    "add eax, 4096",
    "add edi, 8",
    "dec ecx",
    "jnz 3b",

    // pdpt_high[510] = the first GiB again, at KERNEL_VMA.
    "lea eax, [pvh_pd - {vma} + 3]",
    "mov [pvh_pdpt_high - {vma} + 510 * 8], eax",
    "lea eax, [pvh_pdpt_low - {vma} + 3]",
    "mov [pvh_pml4 - {vma}], eax",
    "lea eax, [pvh_pdpt_high - {vma} + 3]",
    "mov [pvh_pml4 - {vma} + 511 * 8], eax",

    "lea eax, [pvh_pml4 - {vma}]",
    "mov cr3, eax",
    "mov eax, cr4",
    "or eax, 1 << 5",                 // PAE
    "mov cr4, eax",
    "mov ecx, 0xc0000080",            // EFER
    "rdmsr",
    "or eax, 1 << 8",                 // LME
    "wrmsr",
    "mov eax, cr0",
    "or eax, (1 << 31) | (1 << 16) | 1", // PG | WP | PE
    "mov cr0, eax",

    "lgdt [pvh_gdt_ptr - {vma}]",
    "push 0x08",
    "lea eax, [pvh_start64 - {vma}]",
    "push eax",
    "retf",

    ".code64",
    "pvh_start64:",
    "mov ax, 0x10",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "xor eax, eax",
    "mov fs, ax",
    "mov gs, ax",
    "movabs rax, offset pvh_higher_half",
    "jmp rax",
    "pvh_higher_half:",                 // now running in the higher half
    "lea rsp, [rip + {stack} + {stack_size}]",
    "mov edi, esi",
    "call {entry}",
    "ud2",
    ".popsection",
    vma = const KERNEL_VMA,
    stack = sym crate::arch::boot_stack::BOOT_STACK,
    stack_size = const crate::arch::boot_stack::BOOT_STACK_SIZE,
    entry = sym pvh_entry,
);

/// `struct hvm_start_info` (Xen public header `arch-x86/hvm/start_info.h`).
#[repr(C)]
struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    // Version 1 and later:
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

/// `struct hvm_memmap_table_entry`; `kind` uses the E820 numbering.
#[repr(C)]
struct HvmMemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

fn e820_kind(kind: u32) -> RegionKind {
    match kind {
        1 => RegionKind::Usable,
        3 => RegionKind::AcpiReclaimable,
        4 => RegionKind::AcpiNvs,
        5 => RegionKind::Bad,
        _ => RegionKind::Reserved,
    }
}

/// Reads a NUL-terminated string at a physical address below 4 GiB.
///
/// # Safety
/// `phys` must point at a NUL-terminated string in identity-mapped memory.
unsafe fn c_string(phys: u64) -> &'static [u8] {
    // SAFETY: the caller guarantees a readable, terminated string.
    unsafe { core::ffi::CStr::from_ptr(phys as *const core::ffi::c_char).to_bytes() }
}

/// Called by the stub above in long mode, on the boot stack, with the low
/// 4 GiB identity-mapped.
extern "C" fn pvh_entry(start_info: u32) -> ! {
    let (virt_start, virt_end) = super::image_virt_range();
    let image =
        ImageLocation { phys_base: virt_start - KERNEL_VMA, virt_base: virt_start, size: virt_end - virt_start };
    let mut boot = BootInfo::new(Loader::Pvh, image, 0);

    // SAFETY: QEMU passes the physical address of an hvm_start_info in %ebx;
    // it lies below 4 GiB, which the stub identity-mapped. The magic number
    // is checked before anything else is trusted.
    let info = unsafe { &*(start_info as u64 as *const HvmStartInfo) };
    if info.magic != HVM_START_MAGIC {
        crate::arch::early_fail("PVH: bad hvm_start_info magic");
    }
    if info.cmdline_paddr != 0 {
        // SAFETY: the loader gives a NUL-terminated command line in low memory.
        boot.set_cmdline(unsafe { c_string(info.cmdline_paddr) });
    }
    boot.rsdp = (info.rsdp_paddr != 0).then_some(info.rsdp_paddr);
    if info.version >= 1 && info.memmap_paddr != 0 {
        // SAFETY: version 1 start info points at `memmap_entries` entries in
        // identity-mapped low memory.
        let entries = unsafe {
            core::slice::from_raw_parts(info.memmap_paddr as *const HvmMemmapEntry, info.memmap_entries as usize)
        };
        for e in entries {
            boot.push_region(MemoryRegion { start: e.addr, len: e.size, kind: e820_kind(e.kind) });
        }
    } else {
        crate::arch::early_fail("PVH: start info without a memory map (version 0)");
    }
    boot.carve_out_image();
    super::enter_kernel(boot)
}
