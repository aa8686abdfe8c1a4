//! Segments: the GDT, and the TSS whose interrupt stack table gives the
//! double-fault handler a stack of its own (a kernel stack overflow would
//! otherwise take the handler down with it).

use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// IST slot used for double faults (index into the TSS's table).
pub const DOUBLE_FAULT_IST: u16 = 0;
/// IST slot used for page faults, so that a stack overflow into a guard
/// page can still be reported.
pub const PAGE_FAULT_IST: u16 = 1;
const IST_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(4096))]
struct IstStack([u8; IST_STACK_SIZE]);

// Each above a guard page (see `linker.ld`).
#[unsafe(link_section = ".bss.stack.double_fault")]
static mut BOOT_CPU_DOUBLE_FAULT_STACK: IstStack = IstStack([0; IST_STACK_SIZE]);
#[unsafe(link_section = ".bss.stack.page_fault")]
static mut BOOT_CPU_PAGE_FAULT_STACK: IstStack = IstStack([0; IST_STACK_SIZE]);

struct Tables {
    gdt: GlobalDescriptorTable,
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

static BOOT_CPU_TSS: Once<TaskStateSegment> = Once::new();
static BOOT_CPU_TABLES: Once<Tables> = Once::new();

/// Loads the boot cpu's GDT and TSS.
pub fn init_boot_cpu() {
    let tss = BOOT_CPU_TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        let top = |stack: *const IstStack| VirtAddr::from_ptr(stack) + IST_STACK_SIZE as u64;
        tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] = top(&raw const BOOT_CPU_DOUBLE_FAULT_STACK);
        tss.interrupt_stack_table[PAGE_FAULT_IST as usize] = top(&raw const BOOT_CPU_PAGE_FAULT_STACK);
        tss
    });
    let tables = BOOT_CPU_TABLES.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        Tables { gdt, code, data, tss }
    });
    tables.gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, which
    // lives in a static and so outlives every use.
    unsafe {
        CS::set_reg(tables.code);
        DS::set_reg(tables.data);
        ES::set_reg(tables.data);
        SS::set_reg(tables.data);
        load_tss(tables.tss);
    }
}
