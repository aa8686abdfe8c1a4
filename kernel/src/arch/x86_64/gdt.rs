//! Segments: one GDT per cpu, and its TSS whose interrupt stack table gives
//! the double-fault and page-fault handlers stacks of their own (a kernel
//! stack overflow would otherwise take the handler down with it).

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

impl Tables {
    fn new(tss: &'static TaskStateSegment) -> Self {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        Tables { gdt, code, data, tss }
    }

    fn load(&'static self) {
        self.gdt.load();
        // SAFETY: the selectors index descriptors of the GDT just loaded,
        // which lives for good.
        unsafe {
            CS::set_reg(self.code);
            DS::set_reg(self.data);
            ES::set_reg(self.data);
            SS::set_reg(self.data);
            load_tss(self.tss);
        }
    }
}

fn tss_with_stacks(double_fault_top: u64, page_fault_top: u64) -> TaskStateSegment {
    let mut tss = TaskStateSegment::new();
    tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] = VirtAddr::new(double_fault_top);
    tss.interrupt_stack_table[PAGE_FAULT_IST as usize] = VirtAddr::new(page_fault_top);
    tss
}

static BOOT_CPU_TSS: Once<TaskStateSegment> = Once::new();
static BOOT_CPU_TABLES: Once<Tables> = Once::new();

/// Loads the boot cpu's GDT and TSS (their stacks are in the image).
pub fn init_boot_cpu() {
    let tss = BOOT_CPU_TSS.call_once(|| {
        let top = |stack: *const IstStack| stack as u64 + IST_STACK_SIZE as u64;
        tss_with_stacks(top(&raw const BOOT_CPU_DOUBLE_FAULT_STACK), top(&raw const BOOT_CPU_PAGE_FAULT_STACK))
    });
    BOOT_CPU_TABLES.call_once(|| Tables::new(tss)).load();
}

/// The size of each interrupt stack of a secondary cpu.
pub const SECONDARY_IST_STACK_SIZE: usize = IST_STACK_SIZE;

/// Builds and loads a GDT and TSS for a secondary cpu, in memory of the
/// calling cpu's node, with the given interrupt stacks (stack tops).
pub fn init_secondary_cpu(double_fault_top: u64, page_fault_top: u64) {
    let tss: &'static TaskStateSegment = alloc::boxed::Box::leak(alloc::boxed::Box::new(tss_with_stacks(double_fault_top, page_fault_top)));
    let tables: &'static Tables = alloc::boxed::Box::leak(alloc::boxed::Box::new(Tables::new(tss)));
    tables.load();
}
