//! The kernel's own page tables.
//!
//! After entry the kernel leaves the loader's tables for its own:
//! - a direct map of all RAM at [`PHYS_MAP_BASE`] (2 MiB pages, no-execute),
//! - the image at its link address, each section with its rights: text
//!   read+execute, rodata read-only, data and bss read+write; no-execute
//!   everywhere but text.
//! - an unmapped guard page below each kernel stack in the image,
//! - device memory, uncached, at [`MMIO_BASE`] + its physical address, on
//!   request ([`map_mmio`]).
//! - lazily committed ranges at [`LAZY_BASE`] (see `memory::lazy`): their
//!   page tables are made when a range is reserved
//!   ([`ensure_leaf_tables`]), and their leaf entries are written without
//!   a lock through [`leaf_entry`], from the page-fault handler too.
//!
//! Nothing else is mapped, so stray pointers fault instead of corrupting.

use core::sync::atomic::{AtomicU64, Ordering};

use spin::{Mutex, Once};
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::mapper::MapToError;
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as Flags, PhysFrame, Size2MiB, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use super::boot::{BootInfo, ImageLocation, MemoryRegion, RegionKind, KERNEL_VMA};
use super::cpu::Features;

/// Where the direct map of physical memory starts.
pub const PHYS_MAP_BASE: u64 = 0xffff_8000_0000_0000;
/// Where device memory is mapped (uncached), at this base + physical address.
pub const MMIO_BASE: u64 = 0xffff_c000_0000_0000;
/// Where lazily committed ranges live (between the direct map and the
/// MMIO window; `memory::lazy` lays them out).
pub const LAZY_BASE: u64 = 0xffff_a000_0000_0000;
/// A leaf entry of a reserved but uncommitted page: not present, with a
/// bit the cpu ignores in absent entries set, so the fault handler can
/// tell it from a guard page or unreserved address (entry 0).
pub const LAZY_RESERVED_PTE: u64 = 1 << 10;

const SIZE_2M: u64 = 2 * 1024 * 1024;
/// Upper-level entries allow everything; the leaf entries set the rights.
const PARENT_FLAGS: Flags = Flags::PRESENT.union(Flags::WRITABLE);

/// The virtual address of physical address `phys` in the direct map.
pub fn phys_to_virt(phys: u64) -> *mut u8 {
    (PHYS_MAP_BASE + phys) as *mut u8
}

/// The direct-map address of the page table in the frame at `phys`.
pub(crate) fn table_at(phys: u64) -> *mut PageTable {
    debug_assert_eq!(phys % 4096, 0, "a page table fills one 4 KiB frame");
    #[allow(clippy::cast_ptr_alignment, reason = "frames are 4 KiB aligned, as a page table must be")]
    phys_to_virt(phys).cast::<PageTable>()
}

/// The physical address of a direct-map or image virtual address.
pub fn virt_to_phys(virt: u64) -> u64 {
    if virt >= KERNEL_VMA {
        let image = IMAGE.get().expect("virt_to_phys of an image address before paging::install");
        virt - image.virt_base + image.phys_base
    } else if (LAZY_BASE..MMIO_BASE).contains(&virt) {
        let entry = leaf_entry(virt).map_or(0, |e| e.load(Ordering::Acquire));
        let frame = present_frame(entry).expect("virt_to_phys of an uncommitted lazily committed page");
        frame + (virt & 0xfff)
    } else {
        virt - PHYS_MAP_BASE
    }
}

extern "C" {
    static __text_end: u8;
    static __rodata_end: u8;
    static __guard_boot_stack: u8;
    static __guard_double_fault_stack: u8;
    static __guard_page_fault_stack: u8;
    static __guard_interrupt_stack: u8;
}

/// The guard pages the image keeps unmapped, with the stack each protects.
fn image_guard_pages() -> [(u64, &'static str); 4] {
    [
        (&raw const __guard_boot_stack as u64, "boot stack"),
        (&raw const __guard_double_fault_stack as u64, "double-fault stack"),
        (&raw const __guard_page_fault_stack as u64, "page-fault stack"),
        (&raw const __guard_interrupt_stack as u64, "interrupt stack"),
    ]
}

/// If `addr` lies in a stack's guard page, names that stack.
pub fn guarded_stack_at(addr: u64) -> Option<&'static str> {
    image_guard_pages().into_iter().find(|&(page, _)| page <= addr && addr < page + 4096).map(|(_, name)| name)
}

/// Where the image is, as the loader said (set by [`install`]).
static IMAGE: Once<ImageLocation> = Once::new();
/// Where page tables made after [`install`] get their frames (the memory
/// layer registers it: [`set_table_frame_source`]).
static TABLE_FRAME_SOURCE: Once<fn() -> Option<PhysFrame>> = Once::new();

/// Makes `source` where the page tables made after [`install`] (direct-map
/// additions, MMIO, split huge pages, the lazy region's tables) get their
/// frames (once; later calls keep the first). Until then such mappings
/// fail for want of a page table.
///
/// # Safety
/// `source` hands out each frame at most once, from RAM nothing else uses,
/// and every frame it gives is in the direct map.
pub unsafe fn set_table_frame_source(source: fn() -> Option<PhysFrame>) {
    TABLE_FRAME_SOURCE.call_once(|| source);
}

/// The registered source as the `x86_64` crate's frame allocator.
struct TableFrames;

// SAFETY: the registered source hands out each frame once, from unused RAM
// (set_table_frame_source's contract).
unsafe impl FrameAllocator<Size4KiB> for TableFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        TABLE_FRAME_SOURCE.get().and_then(|source| source())
    }
}

/// Physical address of the kernel's PML4, once installed.
static KERNEL_PML4: Mutex<Option<PhysFrame>> = Mutex::new(None);

/// Builds the kernel's page tables with frames from `frames` (reached
/// through the loader's mapping) and switches to them.
pub fn install(boot: &BootInfo, features: &Features, frames: &mut impl FrameAllocator<Size4KiB>) {
    let nx = if features.nx { Flags::NO_EXECUTE } else { Flags::empty() };
    let global = if features.global_pages { Flags::GLOBAL } else { Flags::empty() };
    let loader_offset = VirtAddr::new(boot.loader_phys_offset);
    IMAGE.call_once(|| boot.image);

    let pml4_frame = frames.allocate_frame().expect("no memory for the kernel's page tables");
    let pml4_ptr = (loader_offset + pml4_frame.start_address().as_u64()).as_mut_ptr::<PageTable>();
    // SAFETY: the frame was just handed out by the boot frame allocator, so
    // nothing else uses it, and the loader's tables map it at this address.
    let pml4 = unsafe {
        pml4_ptr.write(PageTable::new());
        &mut *pml4_ptr
    };
    // SAFETY: the loader maps all physical memory the allocator hands out at
    // `loader_offset`, which is what OffsetPageTable needs while building.
    let mut table = unsafe { OffsetPageTable::new(pml4, loader_offset) };

    for region in boot.memory_map().iter().filter(|r| r.is_ram()) {
        map_direct(&mut table, region, Flags::PRESENT | Flags::WRITABLE | nx | global, frames);
    }
    map_image(&mut table, boot, nx | global, frames);

    // SAFETY: the new tables map the image (code, stack, statics) at the
    // same virtual addresses as the loader's, so execution continues; the
    // loader's mappings are not used after this point (BootInfo was copied).
    unsafe { Cr3::write(pml4_frame, Cr3Flags::empty()) };
    *KERNEL_PML4.lock() = Some(pml4_frame);
}

fn map_direct(
    table: &mut OffsetPageTable,
    region: &MemoryRegion,
    flags: Flags,
    frames: &mut impl FrameAllocator<Size4KiB>,
) {
    let start = region.start & !(SIZE_2M - 1);
    let end = region.end().div_ceil(SIZE_2M) * SIZE_2M;
    for phys in (start..end).step_by(SIZE_2M as usize) {
        let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(phys));
        let page = Page::<Size2MiB>::containing_address(VirtAddr::new(PHYS_MAP_BASE + phys));
        // SAFETY: the direct map aliases RAM only through this dedicated
        // window; the tables are not active yet, so no flush is needed.
        match unsafe { table.map_to_with_table_flags(page, frame, flags | Flags::HUGE_PAGE, PARENT_FLAGS, frames) } {
            Ok(flush) => flush.ignore(),
            // Two regions may share a 2 MiB page: mapped once is enough.
            Err(MapToError::PageAlreadyMapped(_)) => {}
            Err(e) => panic!("cannot build the direct map at {phys:#x}: {e:?}"),
        }
    }
}

fn map_image(table: &mut OffsetPageTable, boot: &BootInfo, extra: Flags, frames: &mut impl FrameAllocator<Size4KiB>) {
    let image = boot.image;
    let (text_end, rodata_end) = (&raw const __text_end as u64, &raw const __rodata_end as u64);
    let nx = extra & Flags::NO_EXECUTE;
    let global = extra & Flags::GLOBAL;
    let guards = image_guard_pages();
    for virt in (image.virt_base..image.virt_base + image.size).step_by(4096) {
        if guards.iter().any(|&(page, _)| page == virt) {
            continue;
        }
        let flags = if virt < text_end {
            Flags::PRESENT | global
        } else if virt < rodata_end {
            Flags::PRESENT | nx | global
        } else {
            Flags::PRESENT | Flags::WRITABLE | nx | global
        };
        let frame = PhysFrame::<Size4KiB>::containing_address(PhysAddr::new(virt - image.virt_base + image.phys_base));
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt));
        // SAFETY: maps the image onto the physical pages the loader put it
        // in, at its link address; the tables are not active yet.
        unsafe { table.map_to_with_table_flags(page, frame, flags, PARENT_FLAGS, frames) }
            .expect("cannot map the kernel image")
            .ignore();
    }
}

/// The physical address of the kernel's PML4 (after [`install`]).
pub fn kernel_pml4_phys() -> u64 {
    KERNEL_PML4.lock().expect("kernel page tables not installed").start_address().as_u64()
}

/// Switches this cpu to the kernel's page tables (secondary cpus, which
/// arrive on the trampoline's tables).
pub fn activate_kernel_tables() {
    let frame = KERNEL_PML4.lock().expect("kernel page tables not installed");
    // SAFETY: the kernel's tables map everything the trampoline's higher
    // half did (they share those entries), so execution continues.
    unsafe { Cr3::write(frame, Cr3Flags::empty()) };
}

/// Runs `f` on the kernel's page tables (after [`install`]).
fn with_kernel_tables<R>(f: impl FnOnce(&mut OffsetPageTable) -> R) -> R {
    let guard = KERNEL_PML4.lock();
    let pml4 = guard.expect("kernel page tables used before they were installed");
    // SAFETY: the PML4 is the active one, reached through the direct map;
    // holding KERNEL_PML4's lock makes this the only mutable view of it.
    let table = unsafe { &mut *table_at(pml4.start_address().as_u64()) };
    // SAFETY: all RAM (so every page-table frame) is in the direct map.
    let mut mapper = unsafe { OffsetPageTable::new(table, VirtAddr::new(PHYS_MAP_BASE)) };
    f(&mut mapper)
}

/// Makes sure the direct map covers `[phys, phys + len)` with write-back
/// caching: for firmware tables outside the RAM ranges of the memory map.
pub fn ensure_direct_map(phys: u64, len: u64) {
    let region = MemoryRegion { start: phys, len: len.max(1), kind: RegionKind::Reserved };
    let flags = Flags::PRESENT | Flags::WRITABLE | nx_flag();
    with_kernel_tables(|table| {
        let mut frames = TableFrames;
        let start = region.start & !(SIZE_2M - 1);
        let end = region.end().div_ceil(SIZE_2M) * SIZE_2M;
        for phys in (start..end).step_by(SIZE_2M as usize) {
            let page = Page::<Size2MiB>::containing_address(VirtAddr::new(PHYS_MAP_BASE + phys));
            if table.translate_page(page).is_ok() {
                continue;
            }
            let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(phys));
            // SAFETY: maps firmware memory into the direct-map window, where
            // nothing else is mapped at this address.
            match unsafe {
                table.map_to_with_table_flags(page, frame, flags | Flags::HUGE_PAGE, PARENT_FLAGS, &mut frames)
            } {
                Ok(flush) => flush.flush(),
                Err(MapToError::PageAlreadyMapped(_)) => {}
                Err(e) => panic!("cannot map firmware memory at {phys:#x}: {e:?}"),
            }
        }
    });
}

/// The firmware memory `[phys, phys + len)` (BIOS data area, EBDA, ROM,
/// firmware tables), read through the direct map.
pub fn firmware_bytes(phys: u64, len: usize) -> &'static [u8] {
    ensure_direct_map(phys, len as u64);
    // SAFETY: the direct map now covers the range, write-back; firmware
    // memory is never handed to the allocators, so nothing writes it while
    // the kernel reads it.
    unsafe { core::slice::from_raw_parts(phys_to_virt(phys), len) }
}

/// Maps device memory `[phys, phys + len)` uncached and returns its virtual
/// address. Mapping the same range again returns the same address.
pub fn map_mmio(phys: u64, len: u64) -> Result<*mut u8, &'static str> {
    if len == 0 || phys.checked_add(len).is_none_or(|end| end > (1 << 46)) {
        return Err("MMIO range outside the 64 TiB the MMIO window covers");
    }
    let flags = Flags::PRESENT | Flags::WRITABLE | Flags::NO_CACHE | Flags::WRITE_THROUGH | nx_flag();
    with_kernel_tables(|table| {
        let mut frames = TableFrames;
        let start = phys & !0xfff;
        for page_phys in (start..phys + len).step_by(4096) {
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(MMIO_BASE + page_phys));
            let frame = PhysFrame::<Size4KiB>::containing_address(PhysAddr::new(page_phys));
            // SAFETY: the MMIO window maps each physical page at one fixed
            // address, uncached; nothing else is mapped there.
            match unsafe { table.map_to_with_table_flags(page, frame, flags, PARENT_FLAGS, &mut frames) } {
                Ok(flush) => flush.flush(),
                Err(MapToError::PageAlreadyMapped(_)) => {}
                Err(MapToError::FrameAllocationFailed) => return Err("no memory for page tables"),
                Err(MapToError::ParentEntryHugePage) => return Err("MMIO window overlaps a huge page"),
            }
        }
        Ok((MMIO_BASE + phys) as *mut u8)
    })
}

/// Makes the 4 KiB page at physical `phys` present or absent in the direct
/// map (for guard pages under stacks carved from RAM), splitting its 2 MiB
/// mapping into 4 KiB pages the first time. Only this cpu's TLB is
/// flushed: a guard page guards the stack of a thread that runs here, and
/// a page made present again cannot be cached as absent elsewhere.
pub fn set_direct_map_present(phys: u64, present: bool) -> Result<(), &'static str> {
    use x86_64::structures::paging::page_table::PageTableLevel;
    let virt = VirtAddr::new(PHYS_MAP_BASE + (phys & !0xfff));
    with_kernel_tables(|table| {
        let mut entries = table.level_4_table_mut() as *mut PageTable;
        for level in [PageTableLevel::Four, PageTableLevel::Three] {
            // SAFETY: `entries` is a live page table reached through the
            // direct map, and the KERNEL_PML4 lock (held by
            // with_kernel_tables) makes this the only writer.
            let entry = &unsafe { &*entries }[virt.page_table_index(level)];
            if !entry.flags().contains(Flags::PRESENT) || entry.flags().contains(Flags::HUGE_PAGE) {
                return Err("address outside the 2 MiB-paged direct map");
            }
            entries = table_at(entry.addr().as_u64());
        }
        // SAFETY: as above, for the page directory.
        let pde = &mut unsafe { &mut *entries }[virt.page_table_index(PageTableLevel::Two)];
        if !pde.flags().contains(Flags::PRESENT) {
            return Err("address outside the direct map");
        }
        if pde.flags().contains(Flags::HUGE_PAGE) {
            let frame = TableFrames.allocate_frame().ok_or("no memory for a page table")?;
            let table_ptr = table_at(frame.start_address().as_u64());
            let leaf_flags = pde.flags() - Flags::HUGE_PAGE;
            let base = pde.addr().as_u64();
            // SAFETY: the frame was just allocated for this table alone.
            let new_table = unsafe {
                table_ptr.write(PageTable::new());
                &mut *table_ptr
            };
            for (i, entry) in new_table.iter_mut().enumerate() {
                entry.set_addr(PhysAddr::new(base + i as u64 * 4096), leaf_flags);
            }
            // The same translation with finer pages: stale 2 MiB TLB
            // entries elsewhere stay correct.
            pde.set_addr(frame.start_address(), PARENT_FLAGS);
        }
        // SAFETY: as above, for the page table the directory points to.
        let table = unsafe { &mut *table_at(pde.addr().as_u64()) };
        let pte = &mut table[virt.page_table_index(PageTableLevel::One)];
        let flags = if present { pte.flags() | Flags::PRESENT } else { pte.flags() - Flags::PRESENT };
        pte.set_flags(flags);
        x86_64::instructions::tlb::flush(virt);
        Ok(())
    })
}

/// NO_EXECUTE where the cpu supports it, else nothing.
fn nx_flag() -> Flags {
    if super::cpu::features().nx {
        Flags::NO_EXECUTE
    } else {
        Flags::empty()
    }
}

/// Mask of the physical address in a page-table entry.
const ENTRY_ADDRESS: u64 = 0x000f_ffff_ffff_f000;

/// The entry of `table` (a page table's physical address) at `index`, as
/// an atomic: entries of the lazy region are written without a lock while
/// other cpus (and their page walkers) read them.
fn table_entry(table: u64, index: usize) -> &'static AtomicU64 {
    #[allow(clippy::cast_ptr_alignment, reason = "a page table's frame is 4 KiB aligned")]
    let entries = phys_to_virt(table).cast::<AtomicU64>();
    // SAFETY: page tables are whole 4 KiB frames of RAM, reached through
    // the direct map and never freed; an entry is an aligned u64, which
    // AtomicU64 may view.
    unsafe { &*entries.add(index) }
}

fn table_index(virt: u64, level: u32) -> usize {
    ((virt >> (12 + 9 * (level - 1))) & 511) as usize
}

/// Makes sure the page tables down to the last level exist for every page
/// of `[start, end)` (the lazy region, which has no huge pages), making
/// the missing ones from the current node's frames. Leaf entries are left
/// as they are (0 in new tables). Returns how many tables it made. Normal
/// context only: it takes the kernel tables' lock and the frame allocator.
pub fn ensure_leaf_tables(start: u64, end: u64) -> Result<usize, &'static str> {
    let guard = KERNEL_PML4.lock();
    let pml4 = guard.ok_or("kernel page tables not installed")?.start_address().as_u64();
    let mut made = 0;
    let mut at = start & !(SIZE_2M - 1);
    while at < end {
        let mut table = pml4;
        for level in [4, 3, 2] {
            let entry = table_entry(table, table_index(at, level));
            let value = entry.load(Ordering::Acquire);
            if value & Flags::PRESENT.bits() == 0 {
                let frame = TableFrames.allocate_frame().ok_or("no memory for a page table")?;
                let phys = frame.start_address().as_u64();
                // SAFETY: the frame was just allocated for this table alone.
                unsafe { table_at(phys).write(PageTable::new()) };
                // Release: the zeroed table is visible before the entry that
                // links it (to lock-free walkers on other cpus).
                entry.store(phys | PARENT_FLAGS.bits(), Ordering::Release);
                made += 1;
                table = phys;
            } else if value & Flags::HUGE_PAGE.bits() != 0 {
                return Err("address mapped by a huge page");
            } else {
                table = value & ENTRY_ADDRESS;
            }
        }
        at += SIZE_2M;
    }
    Ok(made)
}

/// The leaf entry for `virt` when its page tables exist (None otherwise,
/// or under a huge page). Takes no lock: callable from the page-fault
/// handler; tables are never freed, so the entry stays valid.
pub fn leaf_entry(virt: u64) -> Option<&'static AtomicU64> {
    let mut table = Cr3::read().0.start_address().as_u64();
    for level in [4, 3, 2] {
        let value = table_entry(table, table_index(virt, level)).load(Ordering::Acquire);
        if value & Flags::PRESENT.bits() == 0 || value & Flags::HUGE_PAGE.bits() != 0 {
            return None;
        }
        table = value & ENTRY_ADDRESS;
    }
    Some(table_entry(table, table_index(virt, 1)))
}

/// A present leaf entry mapping the frame at `phys` read+write (accessed
/// and dirty preset, no-execute, not global: a CR3 reload flushes it).
pub fn lazy_leaf(phys: u64) -> u64 {
    (phys & ENTRY_ADDRESS) | (Flags::PRESENT | Flags::WRITABLE | Flags::ACCESSED | Flags::DIRTY | nx_flag()).bits()
}

/// The frame a leaf entry maps, when present.
pub fn present_frame(entry: u64) -> Option<u64> {
    (entry & Flags::PRESENT.bits() != 0).then_some(entry & ENTRY_ADDRESS)
}

/// Drops this cpu's TLB entry for the page holding `virt`.
pub fn flush_local_page(virt: u64) {
    x86_64::instructions::tlb::flush(VirtAddr::new(virt));
}

/// Drops every non-global TLB entry of this cpu (reloads CR3).
pub fn flush_local_tlb() {
    x86_64::instructions::tlb::flush_all();
}

/// The stack pointer of the caller.
#[inline(always)]
pub fn stack_pointer() -> u64 {
    let rsp: u64;
    // SAFETY: reads a register.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    rsp
}

/// Reads a byte at `addr` for its side effect (committing a lazily
/// committed page, faulting on a guard page).
#[inline(always)]
pub fn touch(addr: u64) {
    // SAFETY: a one-byte read; the caller names an address of memory the
    // kernel mapped (or reserved to commit on first touch). Done in asm so
    // that no Rust object is read.
    unsafe {
        core::arch::asm!("mov {tmp}, byte ptr [{addr}]", addr = in(reg) addr, tmp = out(reg_byte) _, options(nostack, readonly, preserves_flags))
    };
}
