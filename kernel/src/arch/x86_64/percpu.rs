//! Per-cpu data.
//!
//! - [`PerCpu`]: the architecture's own block, one cache-line-aligned
//!   block per cpu reached through the GS base (`gs:[0]` is the block's own
//!   address, `gs:[8]` the cpu's number), so that [`cpu_id`] is a single
//!   load. The boot cpu's block is a static, installed first thing in
//!   `kmain`; every other cpu's block is allocated from that cpu's NUMA node
//!   before it starts. [`get`] finds any online cpu's block.
//! - [`CpuTable`]: one `&'static T` per cpu, published once (the kernel's
//!   per-cpu registries: these blocks, each cpu's scheduler, each cpu's
//!   allocation cache).
//! - [`CpuLocal`]: a value only its own cpu may touch, borrowed one at a
//!   time: with an [`IrqGuard`] (interrupts off, so no handler of the cpu
//!   finds it borrowed) or, for state an interrupt handler may find busy and
//!   go around, without one ([`CpuLocal::try_borrow`]). A static holds
//!   one per cpu, each owned by the cpu of its index, built by
//!   [`per_cpu_array`] (the local APIC handles, the page-fault frame
//!   reserves).
//!
//! The raw pointers behind these live here and nowhere else.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{compiler_fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use x86_64::registers::model_specific::GsBase;
use x86_64::VirtAddr;

use super::irq::IrqGuard;
use super::MAX_CPUS;

/// What the kernel keeps per cpu at the architecture level.
#[repr(C, align(64))]
pub struct PerCpu {
    /// This block's own address (`gs:[0]`).
    self_address: AtomicU64,
    /// The cpu's number: its index in the topology (`gs:[8]`).
    pub index: usize,
    /// The cpu's local APIC id (see [`apic_id`](Self::apic_id)).
    apic_id: AtomicU32,
    /// The cpu's NUMA node (see [`node`](Self::node)).
    node: AtomicUsize,
    /// Set by the cpu itself once it runs kernel code with its own tables.
    pub online: AtomicBool,
    /// Set while the cpu sits in `hlt` with nothing to do; senders of
    /// messages interrupt it only then.
    pub halted: AtomicBool,
    /// The guard page of the running thread's stack (0 in the scheduler
    /// loop), so that a fault there is reported as a stack overflow.
    pub thread_stack_guard: AtomicU64,
    /// The raw id of the running thread (0 in the scheduler loop and
    /// before this cpu's scheduler exists), so that code below the
    /// scheduler (the memory reserve) can tell who runs.
    pub running_thread: AtomicU64,
    /// Non-zero while this cpu holds the frame allocator's lock, so that
    /// the page-fault handler knows not to take it (`memory::frames`).
    pub frame_lock_depth: AtomicU32,
    /// The generation of freed lazily committed ranges this cpu saw before
    /// it last reloaded CR3 (`memory::lazy`'s TLB quarantine).
    pub tlb_flushed: AtomicU64,
}

impl PerCpu {
    /// The block of cpu number `index`, not yet installed nor online.
    pub const fn new(index: usize, apic_id: u32, node: usize) -> Self {
        Self {
            self_address: AtomicU64::new(0),
            index,
            apic_id: AtomicU32::new(apic_id),
            node: AtomicUsize::new(node),
            online: AtomicBool::new(false),
            halted: AtomicBool::new(false),
            thread_stack_guard: AtomicU64::new(0),
            running_thread: AtomicU64::new(0),
            frame_lock_depth: AtomicU32::new(0),
            tlb_flushed: AtomicU64::new(0),
        }
    }

    /// The cpu's local APIC id.
    #[inline]
    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Acquire)
    }

    /// The cpu's NUMA node.
    #[inline]
    pub fn node(&self) -> usize {
        self.node.load(Ordering::Acquire)
    }
}

static BOOT_CPU: spin::Once<PerCpu> = spin::Once::new();
static CPUS: CpuTable<PerCpu> = CpuTable::new();

/// Installs the boot cpu's block (cpu 0; its APIC id and node are filled
/// in by [`set_boot_cpu_identity`] once ACPI is read).
pub fn init_boot_cpu() {
    install_block(BOOT_CPU.call_once(|| PerCpu::new(0, 0, 0)));
}

/// Records the boot cpu's APIC id and node, once ACPI is read (before
/// other cpus start, so they see the final values; the release stores
/// pair with the acquire loads of [`PerCpu::apic_id`] and
/// [`PerCpu::node`] all the same).
pub fn set_boot_cpu_identity(apic_id: u32, node: usize) {
    let block = this();
    block.apic_id.store(apic_id, Ordering::Release);
    block.node.store(node, Ordering::Release);
}

/// Points this cpu's GS base at `block` and publishes it.
///
/// # Safety
/// `block` must live for good and describe the calling cpu.
pub unsafe fn install(block: *mut PerCpu) {
    // SAFETY: the caller hands over a live block that lives for good.
    install_block(unsafe { &*block });
}

fn install_block(block: &'static PerCpu) {
    let address = block as *const PerCpu as u64;
    block.self_address.store(address, Ordering::Relaxed);
    GsBase::write(VirtAddr::new(address));
    CPUS.publish(block.index, block);
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
    // `pure`: a thread never changes cpu, so the compiler may reuse one
    // read for every call in a function.
    unsafe { core::arch::asm!("mov {}, gs:[8]", out(reg) index, options(pure, nostack, readonly, preserves_flags)) };
    index
}

/// The cpu running this code, read once and kept: a thread never changes
/// cpu and the handle cannot leave its thread (`!Send`), so it stays
/// true. Code that reaches several per-cpu values reads the cpu once.
#[derive(Clone, Copy)]
pub struct ThisCpu {
    id: usize,
    _not_send: PhantomData<*mut ()>,
}

impl ThisCpu {
    /// The cpu running this code now.
    #[inline]
    pub fn get() -> Self {
        Self { id: cpu_id(), _not_send: PhantomData }
    }

    /// Its number.
    #[inline]
    pub fn id(self) -> usize {
        self.id
    }
}

/// The block of cpu `index`, if it was set up.
pub fn get(index: usize) -> Option<&'static PerCpu> {
    CPUS.get(index)
}

/// One `&'static T` per cpu, each published once (by that cpu, or for it)
/// and kept for good; any cpu may read any entry.
pub struct CpuTable<T: 'static> {
    entries: [AtomicPtr<T>; MAX_CPUS],
}

impl<T: Sync + 'static> CpuTable<T> {
    /// A table with no entries.
    pub const fn new() -> Self {
        Self { entries: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS] }
    }

    /// Publishes `value` as `cpu`'s entry unless it has one already;
    /// returns the entry that stays (the first one published).
    ///
    /// # Panics
    /// When `cpu` is not below `MAX_CPUS`.
    pub fn publish(&self, cpu: usize, value: &'static T) -> &'static T {
        let new = core::ptr::from_ref(value).cast_mut();
        match self.entries[cpu].compare_exchange(core::ptr::null_mut(), new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => value,
            // SAFETY: only `&'static T` are published (above), and never
            // taken back.
            Err(first) => unsafe { &*first },
        }
    }

    /// The entry of `cpu`, once published.
    #[inline]
    pub fn get(&self, cpu: usize) -> Option<&'static T> {
        let entry = self.entries.get(cpu)?.load(Ordering::Acquire);
        // SAFETY: only `&'static T` are published (see `publish`).
        (!entry.is_null()).then(|| unsafe { &*entry })
    }

    /// The entry of the cpu running this code, once published.
    #[inline]
    pub fn this_cpu(&self) -> Option<&'static T> {
        self.get(cpu_id())
    }

    /// Every published entry, by cpu number.
    pub fn iter(&self) -> impl Iterator<Item = &'static T> + '_ {
        (0..MAX_CPUS).filter_map(|cpu| self.get(cpu))
    }
}

impl<T: Sync + 'static> Default for CpuTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A value only its owner cpu touches, one borrow at a time.
///
/// Borrowing checks both rules and panics when one is broken (a borrow
/// kept across a context switch, or taken on another cpu), so the value is
/// never reached twice at once. The borrow flag is a plain per-cpu flag:
/// an interrupt handler that borrows finishes (and clears it) before the
/// code it interrupted goes on, so it needs no atomic read-modify-write.
///
/// The owner and the borrow flag share one word, so a borrow costs one
/// load and one store of it (and the cpu number, which the caller has
/// usually read already).
///
/// All-zero bytes are a valid `CpuLocal` (of cpu 0, not borrowed) wherever
/// they are a valid `T`; see [`adopt`](Self::adopt).
pub struct CpuLocal<T> {
    /// `owner << 1`, plus [`BORROWED`] while a `LocalMut` exists.
    state: AtomicUsize,
    value: UnsafeCell<T>,
}

/// The borrow bit of [`CpuLocal`]'s state.
const BORROWED: usize = 1;

// SAFETY: the value is reached only through `LocalMut`, made on the owner
// cpu while no other `LocalMut` of it exists (see `try_borrow`); other cpus
// can only read the owner's number. Contexts of one cpu never run at the
// same time, and a value never moves between cpus: `new` and `adopt`
// record the calling cpu, `for_cpu` hands a value to another cpu only
// when `T: Send`, and `empty_for_cpu` holds no `T` to hand over. So `T`
// need not be `Send` or `Sync`.
unsafe impl<T> Sync for CpuLocal<T> {}

impl<T> CpuLocal<T> {
    /// Makes `value` local to the calling cpu.
    pub fn new(value: T) -> Self {
        Self { state: AtomicUsize::new(cpu_id() << 1), value: UnsafeCell::new(value) }
    }

    /// Makes `value` local to cpu `cpu` (for statics: see [`per_cpu_array`]).
    pub const fn for_cpu(cpu: usize, value: T) -> Self
    where
        T: Send,
    {
        Self { state: AtomicUsize::new(cpu << 1), value: UnsafeCell::new(value) }
    }

    /// Makes the calling cpu the owner (for a `CpuLocal` built in place,
    /// from zeroed memory).
    pub fn adopt(&mut self) {
        *self.state.get_mut() = cpu_id() << 1;
    }

    /// Borrows the value with this cpu's interrupts off, so no interrupt
    /// handler can find it borrowed.
    ///
    /// # Panics
    /// On another cpu than the owner, or while the value is borrowed
    /// already (a borrow held across a context switch).
    #[inline]
    pub fn borrow<'a>(&'a self, _interrupts_off: &'a IrqGuard) -> LocalMut<'a, T> {
        self.try_borrow().expect("a cpu-local value borrowed twice")
    }

    /// Borrows the value without masking interrupts; `None` while it is
    /// borrowed already (for example by the code an interrupt handler
    /// interrupted).
    ///
    /// # Panics
    /// On another cpu than the owner.
    #[inline]
    pub fn try_borrow(&self) -> Option<LocalMut<'_, T>> {
        self.try_borrow_on(ThisCpu::get())
    }

    /// [`try_borrow`](Self::try_borrow) with the cpu number the caller
    /// has read already.
    ///
    /// # Panics
    /// On another cpu than the owner.
    #[inline]
    pub fn try_borrow_on(&self, here: ThisCpu) -> Option<LocalMut<'_, T>> {
        let unborrowed = here.id << 1;
        let state = self.state.load(Ordering::Relaxed);
        if state != unborrowed {
            assert_eq!(state & !BORROWED, unborrowed, "a cpu-local value used on another cpu");
            return None;
        }
        self.state.store(unborrowed | BORROWED, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        Some(LocalMut { cell: self, unborrowed, _this_cpu: PhantomData })
    }
}

impl<T> CpuLocal<Option<T>> {
    /// An empty slot local to cpu `cpu`, which fills it itself (for values
    /// that must not move between cpus, like a local APIC handle).
    pub const fn empty_for_cpu(cpu: usize) -> Self {
        Self { state: AtomicUsize::new(cpu << 1), value: UnsafeCell::new(None) }
    }
}

/// A `[T; MAX_CPUS]` for a static, entry `i` made for cpu `i`:
/// `per_cpu_array!(cpu => make)` evaluates the constant expression `make`
/// once per cpu number `cpu`, for example
/// `per_cpu_array!(cpu => CpuLocal::for_cpu(cpu, [0u64; 16]))`. (`T`
/// must have no destructor.)
macro_rules! per_cpu_array {
    ($cpu:ident => $make:expr) => {{
        let mut entries = [const {
            let $cpu = 0;
            $make
        }; $crate::arch::MAX_CPUS];
        let mut $cpu = 1;
        while $cpu < $crate::arch::MAX_CPUS {
            entries[$cpu] = $make;
            $cpu += 1;
        }
        entries
    }};
}
pub(crate) use per_cpu_array;

/// Mutable access to a [`CpuLocal`]'s value; ends the borrow on drop. Tied
/// to its cpu (`!Send`).
pub struct LocalMut<'a, T> {
    cell: &'a CpuLocal<T>,
    /// The cell's state once this borrow ends.
    unborrowed: usize,
    _this_cpu: PhantomData<*mut ()>,
}

impl<T> Deref for LocalMut<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this is the only `LocalMut` of the value (its borrow flag
        // was clear on the owner cpu when it was made, and stays set).
        unsafe { &*self.cell.value.get() }
    }
}

impl<T> DerefMut for LocalMut<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, borrowed mutably.
        unsafe { &mut *self.cell.value.get() }
    }
}

impl<T> Drop for LocalMut<'_, T> {
    #[inline]
    fn drop(&mut self) {
        compiler_fence(Ordering::SeqCst);
        self.cell.state.store(self.unborrowed, Ordering::Relaxed);
    }
}
