//! Segments: one GDT per cpu, and its TSS whose interrupt stack table gives
//! the double-fault and page-fault handlers stacks of their own (a kernel
//! stack overflow would otherwise take the handler down with it), and
//! interrupts a third one (a thread's stack may not be committed where an
//! interrupt would push its frame: see `traps`).

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
/// IST slot used for every interrupt (vectors 32-255).
pub const INTERRUPT_IST: u16 = 2;
const IST_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(4096))]
struct IstStack([u8; IST_STACK_SIZE]);

// Each above a guard page (see `linker.ld`).
#[unsafe(link_section = ".bss.stack.double_fault")]
static mut BOOT_CPU_DOUBLE_FAULT_STACK: IstStack = IstStack([0; IST_STACK_SIZE]);
#[unsafe(link_section = ".bss.stack.page_fault")]
static mut BOOT_CPU_PAGE_FAULT_STACK: IstStack = IstStack([0; IST_STACK_SIZE]);
#[unsafe(link_section = ".bss.stack.interrupt")]
static mut BOOT_CPU_INTERRUPT_STACK: IstStack = IstStack([0; IST_STACK_SIZE]);

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

/// The tops of a cpu's interrupt stacks.
#[derive(Clone, Copy)]
pub struct IstTops {
    pub double_fault: u64,
    pub page_fault: u64,
    pub interrupt: u64,
}

fn tss_with_stacks(tops: IstTops) -> TaskStateSegment {
    let mut tss = TaskStateSegment::new();
    tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] = VirtAddr::new(tops.double_fault);
    tss.interrupt_stack_table[PAGE_FAULT_IST as usize] = VirtAddr::new(tops.page_fault);
    tss.interrupt_stack_table[INTERRUPT_IST as usize] = VirtAddr::new(tops.interrupt);
    tss
}

static BOOT_CPU_TSS: Once<TaskStateSegment> = Once::new();
static BOOT_CPU_TABLES: Once<Tables> = Once::new();

/// Loads the boot cpu's GDT and TSS (their stacks are in the image).
pub fn init_boot_cpu() {
    let tss = BOOT_CPU_TSS.call_once(|| {
        let top = |stack: *const IstStack| stack as u64 + IST_STACK_SIZE as u64;
        tss_with_stacks(IstTops {
            double_fault: top(&raw const BOOT_CPU_DOUBLE_FAULT_STACK),
            page_fault: top(&raw const BOOT_CPU_PAGE_FAULT_STACK),
            interrupt: top(&raw const BOOT_CPU_INTERRUPT_STACK),
        })
    });
    BOOT_CPU_TABLES.call_once(|| Tables::new(tss)).load();
}

/// The size of each interrupt stack of a secondary cpu.
pub const SECONDARY_IST_STACK_SIZE: usize = IST_STACK_SIZE;

/// Builds and loads a GDT and TSS for a secondary cpu, in memory of the
/// calling cpu's node, with the given interrupt stacks (stack tops).
pub fn init_secondary_cpu(tops: IstTops) {
    let tss: &'static TaskStateSegment = alloc::boxed::Box::leak(alloc::boxed::Box::new(tss_with_stacks(tops)));
    let tables: &'static Tables = alloc::boxed::Box::leak(alloc::boxed::Box::new(Tables::new(tss)));
    tables.load();
}
