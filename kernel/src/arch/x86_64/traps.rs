//! Interrupt and exception entry.
//!
//! Every vector gets a 16-byte stub (generated below) that pushes a uniform
//! [`TrapFrame`] and calls [`trap_dispatch`]. CPU exceptions are fatal in a
//! unikernel: they are reported (vector, name, error code, RIP, CR2 for page
//! faults) and the VM ends with failure, except a page fault the memory
//! layer resolves through the hooks it registers ([`set_page_fault_hooks`]:
//! `memory::lazy` commits a lazily committed page, and the access is
//! retried). Vectors from 32 on go to the handler registered with
//! [`set_handler`], followed by end-of-interrupt. Fault reports are printed
//! by the function `kmain` registers, the console's emergency print
//! ([`set_report_printer`]).
//!
//! Page faults, double faults and interrupts each run on an interrupt
//! stack of their own (IST). Interrupts never use the interrupted thread's
//! stack: its next page may not be committed yet, and a page fault while
//! the cpu pushes an interrupt's frame would lose that interrupt (it is
//! already acknowledged). Interrupt handlers never re-enable interrupts,
//! so one stack per cpu suffices.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};

use spin::Once;
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::VirtAddr;

use super::gdt::{DOUBLE_FAULT_IST, INTERRUPT_IST, PAGE_FAULT_IST};

/// Bytes between two consecutive vector stubs.
const STUB_SIZE: u64 = 16;

/// Registers saved on entry, in the order the stubs push them (last pushed
/// first), followed by what the cpu pushed.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    /// The cpu's error code, or 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// Vectors for which the cpu pushes an error code: 8, 10-14, 17, 21, 29, 30.
core::arch::global_asm!(
    ".pushsection .text.trap_stubs, \"ax\"",
    ".balign 16",
    ".global bravo_trap_stubs",
    "bravo_trap_stubs:",
    ".set vector, 0",
    ".rept 256",
    ".balign 16",
    ".if !(vector == 8 || (vector >= 10 && vector <= 14) || vector == 17 || vector == 21 || vector == 29 || vector == 30)",
    "push 0",
    ".endif",
    "push vector",
    "jmp {common}",
    ".set vector, vector + 1",
    ".endr",
    ".popsection",
    common = sym trap_common,
);

extern "C" {
    static bravo_trap_stubs: u8;
}

#[unsafe(naked)]
extern "C" fn trap_common() {
    core::arch::naked_asm!(
        "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
        "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14", "push r15",
        "mov rdi, rsp",
        "cld",
        "call {dispatch}",
        "pop r15", "pop r14", "pop r13", "pop r12", "pop r11", "pop r10", "pop r9", "pop r8",
        "pop rbp", "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rbx", "pop rax",
        "add rsp, 16", // vector and error code
        "iretq",
        dispatch = sym trap_dispatch,
    )
}

static IDT: Once<InterruptDescriptorTable> = Once::new();

fn stub_address(vector: u8) -> VirtAddr {
    let base = &raw const bravo_trap_stubs as u64;
    VirtAddr::new(base + vector as u64 * STUB_SIZE)
}

/// Builds the IDT (once) and loads it on this cpu.
pub fn init() {
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        // SAFETY: for every set_handler_addr call, the address is the entry of
        // the stub for that very vector, which saves state in the layout
        // trap_common expects and returns with iretq.
        unsafe {
            idt.divide_error.set_handler_addr(stub_address(0));
            idt.debug.set_handler_addr(stub_address(1));
            idt.non_maskable_interrupt.set_handler_addr(stub_address(2));
            idt.breakpoint.set_handler_addr(stub_address(3));
            idt.overflow.set_handler_addr(stub_address(4));
            idt.bound_range_exceeded.set_handler_addr(stub_address(5));
            idt.invalid_opcode.set_handler_addr(stub_address(6));
            idt.device_not_available.set_handler_addr(stub_address(7));
            idt.double_fault.set_handler_addr(stub_address(8)).set_stack_index(DOUBLE_FAULT_IST);
            idt.invalid_tss.set_handler_addr(stub_address(10));
            idt.segment_not_present.set_handler_addr(stub_address(11));
            idt.stack_segment_fault.set_handler_addr(stub_address(12));
            idt.general_protection_fault.set_handler_addr(stub_address(13));
            idt.page_fault.set_handler_addr(stub_address(14)).set_stack_index(PAGE_FAULT_IST);
            idt.x87_floating_point.set_handler_addr(stub_address(16));
            idt.alignment_check.set_handler_addr(stub_address(17));
            idt.machine_check.set_handler_addr(stub_address(18));
            idt.simd_floating_point.set_handler_addr(stub_address(19));
            idt.virtualization.set_handler_addr(stub_address(20));
            idt.cp_protection_exception.set_handler_addr(stub_address(21));
            for vector in 32..=255u8 {
                idt[vector].set_handler_addr(stub_address(vector)).set_stack_index(INTERRUPT_IST);
            }
        }
        idt
    });
    idt.load();
}

fn exception_name(vector: u64) -> &'static str {
    match vector {
        0 => "divide error (#DE)",
        1 => "debug (#DB)",
        2 => "non-maskable interrupt",
        3 => "breakpoint (#BP)",
        4 => "overflow (#OF)",
        5 => "bound range exceeded (#BR)",
        6 => "invalid opcode (#UD)",
        7 => "device not available (#NM)",
        8 => "double fault (#DF)",
        10 => "invalid TSS (#TS)",
        11 => "segment not present (#NP)",
        12 => "stack-segment fault (#SS)",
        13 => "general protection fault (#GP)",
        14 => "page fault (#PF)",
        16 => "x87 floating-point error (#MF)",
        17 => "alignment check (#AC)",
        18 => "machine check (#MC)",
        19 => "SIMD floating-point error (#XM)",
        20 => "virtualization exception (#VE)",
        21 => "control protection (#CP)",
        _ => "reserved exception",
    }
}

/// Describes a page fault's error code, e.g. "write to a present page".
fn page_fault_cause(code: u64) -> &'static str {
    let write = code & 0b10 != 0;
    let present = code & 0b1 != 0;
    let fetch = code & 0b1_0000 != 0;
    match (fetch, write, present) {
        (true, _, true) => "instruction fetch from a no-execute page",
        (true, _, false) => "instruction fetch from an unmapped page",
        (false, true, true) => "write to a read-only page",
        (false, true, false) => "write to an unmapped page",
        (false, false, true) => "read violating page protection",
        (false, false, false) => "read from an unmapped page",
    }
}

/// A handler for a device or kernel interrupt vector. It runs with
/// interrupts off on the interrupted cpu's stack; the dispatcher sends the
/// end-of-interrupt after it returns.
pub type Handler = fn(vector: u8);

static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

/// Routes `vector` (32 and above) to `handler` on every cpu.
pub fn set_handler(vector: u8, handler: Handler) {
    assert!(vector >= 32, "vectors below 32 are cpu exceptions");
    HANDLERS[vector as usize].store(handler as usize, Ordering::Release);
}

/// What a page-fault hook did with a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageFaultOutcome {
    /// The page is mapped now: the access is retried.
    Resolved,
    /// Not a fault the hook handles (guard page, unmapped address,
    /// protection violation): reported as a fatal exception.
    NotHandled,
    /// The hook's page could not be mapped, for this reason (reported).
    Failed(&'static str),
}

/// How the memory layer takes part in page faults.
#[derive(Clone, Copy)]
pub struct PageFaultHooks {
    /// Tries to resolve a fault at `addr` with the cpu's error code. Runs
    /// on the page-fault stack with interrupts off.
    pub resolve: fn(addr: u64, error_code: u64) -> PageFaultOutcome,
    /// When `addr` is a guard page the memory layer laid out, what the
    /// guarded range is for (named in the fault report).
    pub guard_page_of: fn(addr: u64) -> Option<&'static str>,
}

static PAGE_FAULT_HOOKS: Once<PageFaultHooks> = Once::new();

/// Registers the memory layer's page-fault hooks (once; later calls keep
/// the first). Until then every page fault is fatal.
pub fn set_page_fault_hooks(hooks: PageFaultHooks) {
    PAGE_FAULT_HOOKS.call_once(|| hooks);
}

/// Prints one line of a fault report; it must work while the interrupted
/// code holds any lock (the console's emergency print).
pub type ReportPrinter = fn(fmt::Arguments);

static REPORT_PRINTER: Once<ReportPrinter> = Once::new();

/// Registers how fault reports are printed (once; later calls keep the
/// first). Until then they go straight to COM1.
pub fn set_report_printer(print: ReportPrinter) {
    REPORT_PRINTER.call_once(|| print);
}

fn report(args: fmt::Arguments) {
    match REPORT_PRINTER.get() {
        Some(print) => print(args),
        None => {
            let _ = writeln!(super::serial::Uart::com1(), "{args}");
        }
    }
}

extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    if frame.vector == 14 {
        let cr2 = x86_64::registers::control::Cr2::read_raw();
        let outcome =
            PAGE_FAULT_HOOKS.get().map_or(PageFaultOutcome::NotHandled, |hooks| (hooks.resolve)(cr2, frame.error_code));
        match outcome {
            PageFaultOutcome::Resolved => return,
            PageFaultOutcome::NotHandled => fatal_exception(frame, None),
            PageFaultOutcome::Failed(why) => fatal_exception(frame, Some(why)),
        }
    }
    if frame.vector < 32 {
        fatal_exception(frame, None);
    }
    let vector = frame.vector as u8;
    if vector == super::apic::SPURIOUS_VECTOR {
        return; // no end-of-interrupt for spurious interrupts
    }
    match HANDLERS[vector as usize].load(Ordering::Acquire) {
        0 => log::warn!("unexpected interrupt on vector {vector} (cpu {})", super::cpu_id()),
        // SAFETY: only `Handler` function pointers are stored (set_handler).
        handler => unsafe { core::mem::transmute::<usize, Handler>(handler)(vector) },
    }
    super::apic::end_of_interrupt();
}

/// Reports a cpu exception and ends the VM. `uncommitted` says why a
/// lazily committed page could not get a frame.
fn fatal_exception(frame: &TrapFrame, uncommitted: Option<&str>) -> ! {
    let name = exception_name(frame.vector);
    let cpu = super::cpu_id();
    if frame.vector == 14 {
        let cr2 = x86_64::registers::control::Cr2::read_raw();
        report(format_args!(
            "EXCEPTION on cpu {cpu}: {name}, vector {} error={:#x} rip={:#x} cr2={:#x}: {}",
            frame.vector,
            frame.error_code,
            frame.rip,
            cr2,
            page_fault_cause(frame.error_code),
        ));
        let thread_guard = super::percpu::this().thread_stack_guard.load(Ordering::Relaxed);
        if let Some(why) = uncommitted {
            report(format_args!("  cannot commit the lazily committed page at {cr2:#x}: {why}"));
        } else if let Some(stack) = super::paging::guarded_stack_at(cr2) {
            report(format_args!("  stack overflow: {cr2:#x} is the guard page below the {stack}"));
        } else if thread_guard != 0 && cr2 & !0xfff == thread_guard {
            report(format_args!("  stack overflow: {cr2:#x} is the guard page below the running thread's stack"));
        } else if let Some(kind) = PAGE_FAULT_HOOKS.get().and_then(|hooks| (hooks.guard_page_of)(cr2)) {
            report(format_args!("  {cr2:#x} is the guard page below a lazily committed range ({kind})"));
        }
    } else {
        report(format_args!(
            "EXCEPTION on cpu {cpu}: {name}, vector {} error={:#x} rip={:#x}",
            frame.vector, frame.error_code, frame.rip,
        ));
    }
    report(format_args!(
        "  rsp={:#x} rbp={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x}",
        frame.rsp, frame.rbp, frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi,
    ));
    super::power::exit(super::power::ExitCode::Failure)
}
