//! Per-cpu data: one cache-line-aligned [`PerCpu`] block per cpu, reached
//! through the GS base (`gs:[0]` is the block's own address, `gs:[8]` the
//! cpu's number), so that [`cpu_id`] is a single load.
//!
//! The boot cpu's block is a static, installed first thing in `kmain`;
//! every other cpu's block is allocated from that cpu's NUMA node before
//! it starts. [`get`] finds any online cpu's block.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use x86_64::registers::model_specific::GsBase;
use x86_64::VirtAddr;

use crate::topology::MAX_CPUS;

/// What the kernel keeps per cpu at the architecture level.
#[repr(C, align(64))]
pub struct PerCpu {
    /// This block's own address (`gs:[0]`).
    self_ptr: *const PerCpu,
    /// The cpu's number: its index in the topology (`gs:[8]`).
    pub index: usize,
    /// The cpu's local APIC id.
    pub apic_id: u32,
    /// The cpu's NUMA node.
    pub node: usize,
    /// Set by the cpu itself once it runs kernel code with its own tables.
    pub online: AtomicBool,
    /// Set while the cpu sits in `hlt` with nothing to do; senders of
    /// messages interrupt it only then.
    pub halted: AtomicBool,
    /// The guard page of the running thread's stack (0 in the scheduler
    /// loop), so that a fault there is reported as a stack overflow.
    pub thread_stack_guard: AtomicU64,
    /// Non-zero while this cpu holds the frame allocator's lock, so that
    /// the page-fault handler knows not to take it (`memory::lazy`).
    pub frame_lock_depth: AtomicU32,
    /// The generation of freed lazily committed ranges this cpu saw before
    /// it last reloaded CR3 (`memory::lazy`'s TLB quarantine).
    pub tlb_flushed: AtomicU64,
}

// SAFETY: the raw self pointer is only ever read; the other fields are
// plain data or atomics.
unsafe impl Sync for PerCpu {}
// SAFETY: as above; a block is created on one cpu and used by another.
unsafe impl Send for PerCpu {}

impl PerCpu {
    pub const fn new(index: usize, apic_id: u32, node: usize) -> Self {
        Self {
            self_ptr: core::ptr::null(),
            index,
            apic_id,
            node,
            online: AtomicBool::new(false),
            halted: AtomicBool::new(false),
            thread_stack_guard: AtomicU64::new(0),
            frame_lock_depth: AtomicU32::new(0),
            tlb_flushed: AtomicU64::new(0),
        }
    }
}

static BOOT_CPU: spin::Once<PerCpu> = spin::Once::new();
static CPUS: [AtomicPtr<PerCpu>; MAX_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];

/// Installs the boot cpu's block (cpu 0; its APIC id and node are filled
/// in by [`set_boot_cpu_identity`] once ACPI is read).
pub fn init_boot_cpu() {
    let block = BOOT_CPU.call_once(|| PerCpu::new(0, 0, 0));
    // SAFETY: the block is a static that lives for good.
    unsafe { install(block as *const PerCpu as *mut PerCpu) };
}

/// Records the boot cpu's APIC id and node (the block is not shared yet).
pub fn set_boot_cpu_identity(apic_id: u32, node: usize) {
    let block = this() as *const PerCpu as *mut PerCpu;
    // SAFETY: called once on the boot cpu before any other cpu starts, so
    // nothing else reads the block while it changes.
    unsafe {
        (*block).apic_id = apic_id;
        (*block).node = node;
    }
}

/// Points this cpu's GS base at `block` and publishes it.
///
/// # Safety
/// `block` must live for good and describe the calling cpu.
pub unsafe fn install(block: *mut PerCpu) {
    // SAFETY: the caller hands over a live, 'static block.
    unsafe { (*block).self_ptr = block };
    GsBase::write(VirtAddr::from_ptr(block));
    // SAFETY: as above.
    let index = unsafe { (*block).index };
    CPUS[index].store(block, Ordering::Release);
}

/// This cpu's block.
pub fn this() -> &'static PerCpu {
    let block: *const PerCpu;
    // SAFETY: GS points at this cpu's 'static block from the first line of
    // kmain (boot cpu) or of the secondary entry (other cpus) on.
    unsafe { core::arch::asm!("mov {}, gs:[0]", out(reg) block, options(nostack, readonly, preserves_flags)) };
    // SAFETY: see above.
    unsafe { &*block }
}

/// The number of the cpu running this code.
#[inline]
pub fn cpu_id() -> usize {
    let index: usize;
    // SAFETY: as in `this`: gs:[8] is the index field of this cpu's block.
    unsafe { core::arch::asm!("mov {}, gs:[8]", out(reg) index, options(nostack, readonly, preserves_flags)) };
    index
}

/// The block of cpu `index`, if it was set up.
pub fn get(index: usize) -> Option<&'static PerCpu> {
    let block = CPUS.get(index)?.load(Ordering::Acquire);
    // SAFETY: only 'static blocks are published.
    (!block.is_null()).then(|| unsafe { &*block })
}
