//! Starting the other cpus: INIT-SIPI-SIPI through the local APIC, into a
//! real-mode trampoline copied to a free page below 1 MiB, which climbs to
//! long mode and jumps to [`secondary_entry`] on the cpu's own stack.
//!
//! Low memory layout while a cpu starts (four pages from `base`): the
//! trampoline code and its parameters, then a PML4, PDPT and page
//! directory that identity-map the first 2 MiB (where the trampoline runs
//! when paging comes on) and share the kernel's higher half (where it
//! jumps next). The new cpu switches to the kernel's own tables at once.
//! Cpus leave the trampoline one at a time (they share it), then set
//! themselves up in parallel; one that does not arrive within
//! [`START_TIMEOUT_MS`] is reset and left out.

use core::sync::atomic::Ordering;

use x86_64::structures::paging::PageTableFlags as Flags;
use x86_64::PhysAddr;

use super::paging::{kernel_pml4_phys, phys_to_virt};
use super::percpu::PerCpu;

/// How long a starting cpu has to report online.
pub const START_TIMEOUT_MS: u64 = 1000;
/// When a second start-up IPI goes out to a cpu not yet online (one that
/// is already running ignores it).
const RESEND_AFTER_MS: u64 = 10;
/// Bytes of low memory the trampoline needs (code page + 3 page tables).
pub const LOW_MEMORY_NEEDED: u64 = 4 * 4096;
/// Size of each secondary cpu's own kernel stack.
pub const CPU_STACK_SIZE: usize = 64 * 1024;

// The trampoline. It is data, copied to `base` (a page below 1 MiB) and
// patched there: the far-jump targets and the GDT pointer hold absolute
// addresses; the parameters are read relative to `base` (found from CS in
// real mode and kept in ebx/rbx).
core::arch::global_asm!(
    ".pushsection .rodata.ap_trampoline, \"a\"",
    ".balign 16",
    ".global bravo_ap_trampoline",
    "bravo_ap_trampoline:",
    ".code16",
    "jmp bravo_ap_code16",
    // Data at fixed offsets (checked against the labels in `install`).
    ".balign 8",
    "bravo_ap_gdt:", // offset 8
    ".quad 0",
    ".quad 0x00cf9a000000ffff", // 0x08: 32-bit code
    ".quad 0x00cf92000000ffff", // 0x10: data
    ".quad 0x00af9a000000ffff", // 0x18: 64-bit code
    ".global bravo_ap_gdtr",
    "bravo_ap_gdtr:", // offset 40
    ".word 4 * 8 - 1",
    ".long 0",
    ".balign 8",
    ".global bravo_ap_cr3",
    "bravo_ap_cr3: .long 0",   // offset 48
    "bravo_ap_efer: .long 0",  // offset 52
    "bravo_ap_stack: .quad 0", // offset 56
    "bravo_ap_entry: .quad 0", // offset 64
    "bravo_ap_arg: .quad 0",   // offset 72
    "bravo_ap_code16:",
    "cli",
    "cld",
    "mov ax, cs",
    "mov ds, ax",
    "movzx ebx, ax",
    "shl ebx, 4",
    "lgdt [40]",
    "mov eax, cr0",
    "or eax, 1",
    "mov cr0, eax",
    // jmp far dword 0x08:pm32 (operand-size prefix: a 32-bit offset)
    ".byte 0x66, 0xea",
    ".global bravo_ap_jump32",
    "bravo_ap_jump32:",
    ".long 0",
    ".word 0x08",
    ".code32",
    ".global bravo_ap_pm32",
    "bravo_ap_pm32:",
    "mov ax, 0x10",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "mov eax, cr4",
    "or eax, 0x20", // PAE
    "mov cr4, eax",
    "mov eax, [ebx + 48]",
    "mov cr3, eax",
    "mov ecx, 0xc0000080", // EFER
    "rdmsr",
    "or eax, [ebx + 52]",
    "wrmsr",
    "mov eax, cr0",
    "or eax, 0x80000001", // PG | PE
    "mov cr0, eax",
    // jmp far 0x18:lm64
    ".byte 0xea",
    ".global bravo_ap_jump64",
    "bravo_ap_jump64:",
    ".long 0",
    ".word 0x18",
    ".code64",
    ".global bravo_ap_lm64",
    "bravo_ap_lm64:",
    "mov ebx, ebx",
    "xor eax, eax",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "mov rsp, [rbx + 56]",
    "mov rdi, [rbx + 72]",
    "mov rax, [rbx + 64]",
    "xor ebp, ebp",
    "jmp rax",
    ".global bravo_ap_trampoline_end",
    "bravo_ap_trampoline_end:",
    ".popsection",
);

/// Offsets of the trampoline's parameters (see the data block above).
const GDT: u64 = 8;
const GDTR: u64 = 40;
const CR3: u64 = 48;
const EFER: u64 = 52;
const STACK: u64 = 56;
const ENTRY: u64 = 64;
const ARG: u64 = 72;

extern "C" {
    static bravo_ap_trampoline: u8;
    static bravo_ap_trampoline_end: u8;
    static bravo_ap_jump32: u8;
    static bravo_ap_pm32: u8;
    static bravo_ap_jump64: u8;
    static bravo_ap_lm64: u8;
    static bravo_ap_gdtr: u8;
    static bravo_ap_cr3: u8;
}

/// The offset of a trampoline symbol from the trampoline's start.
fn offset(symbol: *const u8) -> u64 {
    symbol as u64 - &raw const bravo_ap_trampoline as u64
}

/// What a starting cpu needs before it can run Rust code of its own.
#[repr(C)]
pub struct Startup {
    pub percpu: *mut PerCpu,
    /// Its interrupt stacks.
    pub ist: super::gdt::IstTops,
    /// The kernel code the cpu runs once its tables are loaded.
    pub main: fn() -> !,
    /// Set by the cpu once it has left the trampoline (its parameters may
    /// then be rewritten for the next cpu).
    pub arrived: core::sync::atomic::AtomicBool,
}

/// The low-memory window the trampoline runs in.
pub struct Trampoline {
    base: u64,
}

impl Trampoline {
    /// Copies the trampoline to `base` (page aligned, below 1 MiB, with
    /// [`LOW_MEMORY_NEEDED`] bytes of free RAM) and builds its page tables.
    pub fn install(base: u64) -> Self {
        assert!(
            base.is_multiple_of(4096) && base + LOW_MEMORY_NEEDED <= 1 << 20,
            "trampoline window must lie below 1 MiB"
        );
        super::paging::ensure_direct_map(base, LOW_MEMORY_NEEDED);
        let start = &raw const bravo_ap_trampoline;
        let len = offset(&raw const bravo_ap_trampoline_end) as usize;
        assert!(len <= 4096, "the trampoline fits one page");
        assert!(
            offset(&raw const bravo_ap_gdtr) == GDTR && offset(&raw const bravo_ap_cr3) == CR3,
            "trampoline layout"
        );
        let code = phys_to_virt(base);
        // SAFETY: the window is free low RAM reserved for this (the
        // allocators never hand out memory below 1 MiB), mapped by the
        // direct map; the source is the trampoline's bytes in rodata.
        unsafe { core::ptr::copy_nonoverlapping(start, code, len) };
        let t = Self { base };
        t.write_u32(offset(&raw const bravo_ap_jump32), (base + offset(&raw const bravo_ap_pm32)) as u32);
        t.write_u32(offset(&raw const bravo_ap_jump64), (base + offset(&raw const bravo_ap_lm64)) as u32);
        t.write_u32(GDTR + 2, (base + GDT) as u32);
        t.build_page_tables();
        t
    }

    /// Writes `value` at `at`, byte by byte: the jump operands and the
    /// GDT pointer's base sit at unaligned offsets in the code.
    fn write_u32(&self, at: u64, value: u32) {
        let field = phys_to_virt(self.base + at);
        for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
            // SAFETY: `at..at + 4` lies inside the trampoline page copied
            // above; a byte pointer needs no alignment.
            unsafe { field.add(i).write_volatile(byte) };
        }
    }

    fn write_u64(&self, at: u64, value: u64) {
        #[allow(clippy::cast_ptr_alignment, reason = "the parameter fields are 8-byte aligned")]
        let field = phys_to_virt(self.base + at).cast::<u64>();
        // SAFETY: as in write_u32.
        unsafe { field.write_volatile(value) };
    }

    /// PML4 (page 1), PDPT (page 2), PD (page 3): identity-map 0-2 MiB and
    /// share the kernel's higher-half entries.
    fn build_page_tables(&self) {
        let table = |i: u64| {
            let phys = self.base + i * 4096;
            // SAFETY: pages 1-3 of the window are reserved for these tables.
            let table = unsafe { &mut *super::paging::table_at(phys) };
            table.zero();
            (phys, table)
        };
        let (pml4_phys, pml4) = table(1);
        let (pdpt_phys, pdpt) = table(2);
        let (pd_phys, pd) = table(3);
        let rw = Flags::PRESENT | Flags::WRITABLE;
        pd[0].set_addr(PhysAddr::new(0), rw | Flags::HUGE_PAGE);
        pdpt[0].set_addr(PhysAddr::new(pd_phys), rw);
        pml4[0].set_addr(PhysAddr::new(pdpt_phys), rw);
        // SAFETY: the kernel's PML4 is live and reached through the direct
        // map; only its higher-half entries are read.
        let kernel = unsafe { &*super::paging::table_at(kernel_pml4_phys()) };
        for i in 256..512 {
            pml4[i] = kernel[i].clone();
        }
        self.write_u32(CR3, pml4_phys as u32);
    }

    /// Starts the cpu with `apic_id` on `stack_top`, running
    /// [`secondary_entry`] with `startup`, and waits until it has left the
    /// trampoline (not until it is online: cpus set themselves up in
    /// parallel). Returns whether it arrived within [`START_TIMEOUT_MS`];
    /// one that did not is reset.
    pub fn launch(&self, apic_id: u32, stack_top: u64, startup: &'static Startup) -> bool {
        let efer = (1u32 << 8) | if super::cpu::features().nx { 1 << 11 } else { 0 }; // LME, NXE
        self.write_u32(EFER, efer);
        self.write_u64(STACK, stack_top);
        self.write_u64(ENTRY, secondary_entry as *const () as u64);
        self.write_u64(ARG, startup as *const Startup as u64);
        core::sync::atomic::fence(Ordering::SeqCst);
        let page = (self.base >> 12) as u8;
        super::apic::start_cpu(apic_id, page);
        let started = super::tsc::now();
        let ticks_per_ms = super::tsc::hz() / 1000;
        let mut resent = false;
        while super::tsc::now() - started < ticks_per_ms * START_TIMEOUT_MS {
            if startup.arrived.load(Ordering::Acquire) {
                return true;
            }
            if !resent && super::tsc::now() - started >= ticks_per_ms * RESEND_AFTER_MS {
                super::apic::resend_startup(apic_id, page);
                resent = true;
            }
            core::hint::spin_loop();
        }
        super::apic::reset_cpu(apic_id);
        false
    }
}

/// Waits until the cpu of `startup` reports online, until TSC `deadline`.
pub fn wait_online(startup: &Startup, deadline: u64) -> bool {
    // SAFETY: the caller made `percpu` a live block for good.
    let percpu = unsafe { &*startup.percpu };
    loop {
        if percpu.online.load(Ordering::Acquire) {
            return true;
        }
        if super::tsc::now() >= deadline {
            return false;
        }
        core::hint::spin_loop();
    }
}

/// The first Rust code a secondary cpu runs, on its own stack, still on
/// the trampoline's page tables and GDT, interrupts off.
extern "C" fn secondary_entry(startup: &'static Startup) -> ! {
    startup.arrived.store(true, Ordering::Release);
    super::paging::activate_kernel_tables();
    // SAFETY: the boot cpu made this block for this cpu, for good.
    unsafe { super::percpu::install(startup.percpu) };
    super::gdt::init_secondary_cpu(startup.ist);
    super::traps::init();
    super::cpu::enable_protection(&super::cpu::features());
    super::apic::init_this_cpu();
    (startup.main)()
}
