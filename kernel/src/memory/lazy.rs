//! Lazily committed virtual memory: ranges of address space whose pages
//! get a frame only when first touched (thread stacks, socket buffers).
//!
//! A [`Range`] is an unmapped guard page followed by N pages, in a slot of
//! the region at `paging::LAZY_BASE` (layout and slot reuse: `slots`).
//! Reserving a range (normal context) makes the page tables covering its
//! slot and marks each of its pages *reserved* in its leaf entry
//! (`LAZY_RESERVED_PTE`: not present, a software bit set). The first
//! touch of such a page faults; [`handle_page_fault`] maps a zeroed frame
//! there and the access is retried. A guard page (entry 0) is not
//! reserved, so a fault there stays fatal and is reported as a stack
//! overflow. [`Range::decommit`] gives a range's frames back and marks its
//! pages reserved again; dropping a range frees its frames and its slot.
//!
//! # The page-fault handler cannot deadlock
//!
//! It runs on the page-fault IST stack with interrupts off, and the code
//! that faulted may be anywhere in the kernel, holding any spin lock. So:
//! - it takes no lock to find the page: the tables exist from the
//!   reservation and are never freed, so it walks them and writes the
//!   leaf entry with one compare-and-swap (`paging::leaf_entry`);
//! - its frame comes from this cpu's *reserve* of pre-zeroed frames, a
//!   `CpuLocal` that only this cpu touches: refilled in the scheduler
//!   loop ([`between_threads`], on the cpu's own committed stack,
//!   interrupts off, after probing, borrowed under the `IrqGuard`),
//!   popped by the handler with `try_borrow`. A fault cannot land in the
//!   middle of a refill (the refill touches only committed memory), and
//!   if it did (interrupts off do not mask a fault) the handler would find
//!   the reserve borrowed and go to the allocator instead;
//! - when the reserve is empty it falls back to the frame allocator,
//!   whose lock is the only one it ever takes. The allocator's locked
//!   sections probe the stack they may use and mark the cpu first
//!   (`frames::locked_section`, where the argument is spelled out), so
//!   the handler knows when this cpu holds that lock
//!   (`frames::locked_by_this_cpu`) and fails loudly instead of
//!   spinning on its own lock. Another cpu holding the lock releases it in
//!   bounded time;
//! - when memory is exhausted it fails loudly: the VM ends with a report.
//!
//! Interrupts never push onto a thread's stack (they run on an IST stack
//! of their own, see `arch::traps`): a fault while the cpu delivers an
//! external interrupt would lose the interrupt.
//!
//! # TLB coherence: freed address space waits for every cpu
//!
//! Leaf entries here are never global, so reloading CR3 drops them. A
//! range's pages may be cached in other cpus' TLBs (a thread's stack holds
//! wait-queue entries that other cpus read), so when a range is dropped
//! its pages are unmapped and its frames freed at once, but its slot is
//! quarantined: reused only after every online cpu has reloaded CR3 since.
//! A freed slot is tagged with the next generation; a batch of releases
//! closes by bumping [`GENERATION`]; each cpu, between threads, reloads CR3
//! when it sees a newer generation and records the one it saw
//! (`PerCpu::tlb_flushed`). A slot is reused once every online cpu
//! recorded its generation or later; until then a fresh slot is taken
//! (reserving never waits), and halted cpus that lag are woken by an IPI
//! so they catch up. Until reuse no legitimate code touches the old
//! addresses, so the stale entries are harmless, and the freed frames are
//! reachable only through them. (Ordering: the entries are cleared before
//! the release takes the region lock; the bump happens under that lock
//! and is published with release ordering; a cpu that reads it with
//! acquire ordering and then reloads CR3 walks the cleared entries.)
//!
//! [`Range::decommit`] keeps the slot, so its caller promises that only
//! the calling cpu touched the range (its own TLB is flushed page by
//! page); thread stacks are never decommitted, and the scheduler's spare
//! stacks keep their frames.

mod slots;

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;

pub use slots::Kind;
use slots::{Layout, Region, KINDS, PAGE_SIZE};

use super::frames;
use crate::arch::irq::IrqGuard;
use crate::arch::paging::{self, LAZY_RESERVED_PTE};
use crate::arch::percpu::{self, CpuLocal};
use crate::arch::traps::{self, PageFaultHooks, PageFaultOutcome};
use crate::topology::MAX_CPUS;

const LAYOUT: Layout = Layout { base: paging::LAZY_BASE };

/// Slots of every kind and class (normal context only: never taken by
/// the fault handler).
static REGION: Mutex<Region> = Mutex::new(Region::new());
/// The last closed generation of freed ranges (a copy of the region's,
/// readable without its lock).
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Committed pages, per kind.
static COMMITTED: [AtomicUsize; KINDS] = [const { AtomicUsize::new(0) }; KINDS];
/// Page tables made for the region (they are kept for good).
static PAGE_TABLES: AtomicUsize = AtomicUsize::new(0);

/// Pre-zeroed frames each cpu keeps for its page faults.
const RESERVE_FRAMES: usize = 16;

/// A cpu's frames for the page-fault handler.
#[repr(align(64))]
struct Reserve {
    /// The frames, touched only by their own cpu: by the refill (normal
    /// context, interrupts off, borrowed under its guard) and by the
    /// page-fault handler, which may interrupt the refill (interrupts off
    /// do not mask a fault) and therefore only tries to borrow: it finds
    /// the reserve borrowed during a refill and goes to the allocator.
    frames: CpuLocal<Frames>,
    /// How many frames it holds (a copy of `Frames::len`, readable by
    /// every cpu: the refill threshold and the statistics).
    held: AtomicUsize,
}

struct Frames {
    frames: [u64; RESERVE_FRAMES],
    /// Frames in `frames[..len]`.
    len: usize,
}

static RESERVES: [Reserve; MAX_CPUS] = percpu::per_cpu_array!(cpu => Reserve::for_cpu(cpu));

impl Reserve {
    const fn for_cpu(cpu: usize) -> Self {
        let frames = Frames { frames: [0; RESERVE_FRAMES], len: 0 };
        Self { frames: CpuLocal::for_cpu(cpu, frames), held: AtomicUsize::new(0) }
    }

    fn this_cpu() -> &'static Reserve {
        &RESERVES[percpu::cpu_id()]
    }

    /// A pre-zeroed frame (page-fault handler); `None` when empty or being
    /// refilled.
    fn pop(&self) -> Option<u64> {
        let mut frames = self.frames.try_borrow()?;
        frames.len = frames.len.checked_sub(1)?;
        self.held.store(frames.len, Ordering::Relaxed);
        Some(frames.frames[frames.len])
    }

    /// Gives back a zeroed frame popped just before (the handler lost a
    /// race): there is room, since nothing was pushed meanwhile.
    fn push_back(&self, frame: u64) -> bool {
        let Some(mut frames) = self.frames.try_borrow() else { return false };
        let len = frames.len;
        if len == RESERVE_FRAMES {
            return false;
        }
        frames.frames[len] = frame;
        frames.len = len + 1;
        self.held.store(len + 1, Ordering::Relaxed);
        true
    }

    /// Fills the reserve from the frame allocator (normal context, this
    /// cpu). Stops quietly when memory is exhausted.
    fn refill(&self, interrupts_off: &IrqGuard) {
        frames::probe_stack();
        let node = super::current_node();
        let mut reserve = self.frames.borrow(interrupts_off);
        while reserve.len < RESERVE_FRAMES {
            let Some(frame) = frames::alloc_frames(node, 0) else { break };
            zero_frame(frame);
            let len = reserve.len;
            reserve.frames[len] = frame;
            reserve.len = len + 1;
        }
        self.held.store(reserve.len, Ordering::Relaxed);
    }
}

fn zero_frame(phys: u64) {
    // SAFETY: a frame just taken from the allocator, owned by the caller
    // and reached through the direct map.
    unsafe { core::ptr::write_bytes(paging::phys_to_virt(phys), 0, PAGE_SIZE as usize) };
}

/// Tops up this cpu's reserve when it is half empty, and reloads CR3 when
/// ranges were freed since the last reload. The scheduler calls it
/// between threads (interrupts off, on the cpu's own stack).
pub fn between_threads(interrupts_off: &IrqGuard) {
    let reserve = Reserve::this_cpu();
    if reserve.held.load(Ordering::Relaxed) < RESERVE_FRAMES / 2 {
        reserve.refill(interrupts_off);
    }
    catch_up_tlb();
}

/// Fills this cpu's reserve completely (tests use it to make memory
/// statistics comparable).
pub fn fill_reserve() {
    crate::arch::irq::without(|interrupts_off| Reserve::this_cpu().refill(interrupts_off));
}

/// Reloads CR3 if a generation of freed ranges closed since the last
/// reload, and records the generation seen.
fn catch_up_tlb() {
    let cpu = percpu::this();
    let generation = GENERATION.load(Ordering::Acquire);
    if cpu.tlb_flushed.load(Ordering::Relaxed) < generation {
        paging::flush_local_tlb();
        cpu.tlb_flushed.store(generation, Ordering::Release);
    }
}

/// The oldest generation some online cpu still has to flush past: freed
/// slots of that generation or older are safe to reuse.
fn flushed_by_every_cpu() -> u64 {
    online_cpus().map(|c| c.tlb_flushed.load(Ordering::Acquire)).min().unwrap_or(u64::MAX)
}

fn online_cpus() -> impl Iterator<Item = &'static percpu::PerCpu> {
    let count = crate::topology::get().map_or(1, |t| t.cpu_count());
    (0..count).filter_map(percpu::get).filter(|c| c.online.load(Ordering::Acquire))
}

/// Wakes the halted cpus that have not flushed the latest generation, so
/// that their scheduler loop catches up and freed slots can be reused.
fn wake_lagging_cpus() {
    let generation = GENERATION.load(Ordering::Acquire);
    let me = percpu::cpu_id();
    for cpu in online_cpus() {
        if cpu.index != me && cpu.halted.load(Ordering::Acquire) && cpu.tlb_flushed.load(Ordering::Acquire) < generation
        {
            crate::arch::apic::send_ipi(cpu.apic_id(), crate::arch::apic::WAKE_VECTOR);
        }
    }
}

/// Makes `arch::traps` call [`handle_page_fault`] on page faults and name
/// this region's guard pages in fault reports ([`is_guard_page`]).
pub fn register_fault_hooks() {
    traps::set_page_fault_hooks(PageFaultHooks {
        resolve: handle_page_fault,
        guard_page_of: |addr| is_guard_page(addr).map(Kind::name),
    });
}

/// The page-fault hook: commits a zeroed frame at the reserved page
/// holding `addr`. `error_code` is the cpu's page-fault error code. Runs
/// on the page-fault IST stack with interrupts off; takes no lock but, as
/// a last resort, the frame allocator's (see the module documentation).
/// `NotHandled` means not a reserved page (guard page, unreserved address,
/// protection violation): the fault is the kernel's bug, reported as before.
pub fn handle_page_fault(addr: u64, error_code: u64) -> PageFaultOutcome {
    const PRESENT: u64 = 1 << 0;
    const RESERVED_BIT: u64 = 1 << 3;
    const FETCH: u64 = 1 << 4;
    if !LAYOUT.contains(addr) || error_code & (PRESENT | RESERVED_BIT | FETCH) != 0 {
        return PageFaultOutcome::NotHandled;
    }
    let Some(entry) = paging::leaf_entry(addr) else { return PageFaultOutcome::NotHandled };
    match entry.load(Ordering::Acquire) {
        LAZY_RESERVED_PTE => {}
        // Another cpu committed it meanwhile: retry.
        value if paging::present_frame(value).is_some() => return PageFaultOutcome::Resolved,
        _ => return PageFaultOutcome::NotHandled,
    }
    let reserve = Reserve::this_cpu();
    let (frame, from_reserve) = match reserve.pop() {
        Some(frame) => (frame, true),
        None => {
            if frames::locked_by_this_cpu() {
                return PageFaultOutcome::Failed(
                    "touched inside the frame allocator's locked section with this cpu's reserve empty",
                );
            }
            let Some(frame) = frames::alloc_frames(super::current_node(), 0) else {
                return PageFaultOutcome::Failed("memory is exhausted");
            };
            zero_frame(frame);
            (frame, false)
        }
    };
    // Not-present entries are never cached in TLBs: no flush is needed.
    match entry.compare_exchange(LAZY_RESERVED_PTE, paging::lazy_leaf(frame), Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            if let Some(kind) = LAYOUT.kind_at(addr) {
                COMMITTED[kind as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
        Err(_) => {
            // Lost a race for the page (or it was released meanwhile):
            // the frame goes back where it came from.
            if !(from_reserve && reserve.push_back(frame)) {
                // SAFETY: allocated above with order 0 and never mapped.
                unsafe { frames::free_frames(frame, 0) };
            }
        }
    }
    PageFaultOutcome::Resolved
}

/// Whether `addr` lies in the guard page of a slot of the region (for
/// fault reports).
pub fn is_guard_page(addr: u64) -> Option<Kind> {
    LAYOUT.is_guard_page(addr).then(|| LAYOUT.kind_at(addr)).flatten()
}

/// A range of lazily committed memory: a guard page, then `len()` bytes
/// whose pages get frames when first touched (from the toucher's node).
/// Dropping it frees the frames and, once every cpu has flushed, the
/// address space.
pub struct Range {
    kind: Kind,
    class: usize,
    slot: u32,
    /// The guard page's address.
    guard: u64,
    pages: u64,
}

impl Range {
    /// Reserves `bytes` (rounded up to pages) of `kind`. `None` when the
    /// size is 0 or above 256 MiB, or memory for page tables or
    /// bookkeeping is exhausted.
    pub fn new(kind: Kind, bytes: usize) -> Option<Range> {
        let pages = (bytes as u64).div_ceil(PAGE_SIZE);
        let class = slots::class_of(pages)?;
        let flushed = flushed_by_every_cpu();
        let (reserved, lagging) = crate::arch::irq::without(|_| {
            let mut region = REGION.lock();
            let reserved = region.reserve(kind, class, flushed);
            GENERATION.store(region.generation(), Ordering::Release);
            let lagging = region.counts().1 > 0 && reserved.is_ok_and(|(r, _)| r.fresh);
            (reserved, lagging)
        });
        if lagging {
            wake_lagging_cpus();
        }
        let (reserved, _) = reserved.ok()?;
        let guard = LAYOUT.slot_start(kind, class, reserved.slot);
        let mut range = Range { kind, class, slot: reserved.slot, guard, pages: 0 };
        // Fresh slots need tables; a reused one has them, unless making
        // them failed the first time (then this finishes the job). On
        // failure the range, with no pages yet, gives its slot back.
        let end = guard + slots::slot_pages(class) * PAGE_SIZE;
        let made = paging::ensure_leaf_tables(guard, end).ok()?;
        PAGE_TABLES.fetch_add(made, Ordering::Relaxed);
        for page in 1..=pages {
            let entry = paging::leaf_entry(guard + page * PAGE_SIZE).expect("tables of a reserved slot exist");
            entry.store(LAZY_RESERVED_PTE, Ordering::Release);
            range.pages = page;
        }
        Some(range)
    }

    /// The first usable byte (just above the guard page).
    pub fn start(&self) -> u64 {
        self.guard + PAGE_SIZE
    }

    /// Just past the last usable byte.
    pub fn end(&self) -> u64 {
        self.start() + self.pages * PAGE_SIZE
    }

    /// The guard page's address.
    pub fn guard(&self) -> u64 {
        self.guard
    }

    /// Usable bytes.
    pub fn len(&self) -> usize {
        (self.pages * PAGE_SIZE) as usize
    }

    /// Whether it has no usable page.
    pub fn is_empty(&self) -> bool {
        self.pages == 0
    }

    /// Bytes committed (pages touched since the range was made or last
    /// decommitted).
    pub fn committed_bytes(&self) -> usize {
        committed_between(self.start(), self.end())
    }

    /// Commits the pages of `[from, to)` (clamped to the range) now, in
    /// normal context, with zeroed frames of this cpu's node: so that
    /// running out of memory is an error here rather than a fatal fault
    /// later. False when memory is exhausted (pages committed so far stay).
    pub fn commit(&self, from: u64, to: u64) -> bool {
        let (from, to) = (from.max(self.start()) & !(PAGE_SIZE - 1), to.min(self.end()));
        let mut page = from;
        while page < to {
            let entry = paging::leaf_entry(page).expect("tables of a reserved slot exist");
            if entry.load(Ordering::Acquire) == LAZY_RESERVED_PTE {
                let Some(frame) = frames::alloc_frames(super::current_node(), 0) else { return false };
                zero_frame(frame);
                if entry
                    .compare_exchange(LAZY_RESERVED_PTE, paging::lazy_leaf(frame), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    COMMITTED[self.kind as usize].fetch_add(1, Ordering::Relaxed);
                } else {
                    // SAFETY: allocated above with order 0 and never mapped.
                    unsafe { frames::free_frames(frame, 0) };
                }
            }
            page += PAGE_SIZE;
        }
        true
    }

    /// Gives every committed page's frame back; the pages read as zero
    /// when touched again. Returns the bytes given back.
    ///
    /// # Safety
    /// The contents are lost while references to them may live: nothing
    /// may rely on them. And only this cpu may have touched the range
    /// since it was made or last decommitted (only this cpu's TLB is
    /// flushed, and the address space is reused at once).
    pub unsafe fn decommit(&self) -> usize {
        self.unmap_pages(LAZY_RESERVED_PTE) * PAGE_SIZE as usize
    }

    /// Writes `empty` into every page's entry, freeing the frames of the
    /// committed ones (after flushing this cpu's TLB entry for each).
    /// Returns how many were committed.
    fn unmap_pages(&self, empty: u64) -> usize {
        let mut freed = 0;
        for page in 0..self.pages {
            let addr = self.start() + page * PAGE_SIZE;
            let entry = paging::leaf_entry(addr).expect("tables of a reserved slot exist");
            if let Some(frame) = paging::present_frame(entry.swap(empty, Ordering::AcqRel)) {
                paging::flush_local_page(addr);
                // SAFETY: the frame was allocated with order 0 for this page
                // alone and is mapped nowhere else any more.
                unsafe { frames::free_frames(frame, 0) };
                freed += 1;
            }
        }
        COMMITTED[self.kind as usize].fetch_sub(freed, Ordering::Relaxed);
        freed
    }
}

impl Drop for Range {
    fn drop(&mut self) {
        self.unmap_pages(0);
        crate::arch::irq::without(|_| {
            let mut region = REGION.lock();
            region.release(self.kind, self.class, self.slot);
            GENERATION.store(region.generation(), Ordering::Release);
        });
    }
}

/// Bytes committed among the pages of `[start, end)` (0 outside the
/// region): for measuring a stack from its guard page and top.
pub fn committed_between(start: u64, end: u64) -> usize {
    let mut page = start & !(PAGE_SIZE - 1);
    let mut committed = 0;
    while page < end {
        if LAYOUT.contains(page) {
            let entry = paging::leaf_entry(page).map_or(0, |e| e.load(Ordering::Acquire));
            if paging::present_frame(entry).is_some() {
                committed += PAGE_SIZE as usize;
            }
        }
        page += PAGE_SIZE;
    }
    committed
}

/// A buffer in lazily committed memory, for socket buffers: only the
/// pages written get frames, and an idle, empty buffer can give them back
/// ([`decommit`](Self::decommit)).
///
/// ```ignore
/// // On the network cpu, which alone touches the buffers:
/// let mut rx = memory::lazy::Buffer::new(64 * 1024).ok_or(NetError::NoBufferSpace)?;
/// // SAFETY: the socket is dropped before `rx` (both live in one entry
/// // of the socket table, the socket first), and only this cpu uses it.
/// let rx_slice = unsafe { rx.as_static_mut() };
/// let socket = tcp::Socket::new(tcp::SocketBuffer::new(ManagedSlice::Borrowed(rx_slice)), ...);
/// // Later, when the socket's receive buffer is empty and idle:
/// // SAFETY: empty (smoltcp writes before it reads, from offset 0), and
/// // only this cpu touched it.
/// unsafe { rx.decommit() };
/// ```
pub struct Buffer {
    range: Range,
    len: usize,
}

impl Buffer {
    /// A zeroed buffer of `len` bytes (1 to 256 MiB), no memory committed
    /// yet. `None` when `len` is out of bounds or memory for its page
    /// tables is exhausted.
    pub fn new(len: usize) -> Option<Buffer> {
        let range = Range::new(Kind::Buffer, len)?;
        Some(Buffer { range, len })
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether its length is 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer's bytes, for a consumer that wants a `'static` slice
    /// (smoltcp's `ManagedSlice::Borrowed`).
    ///
    /// # Safety
    /// The slice must not be used after this `Buffer` is dropped (drop its
    /// consumer first), and at most one slice from this buffer may be live
    /// at a time.
    pub unsafe fn as_static_mut(&mut self) -> &'static mut [u8] {
        // SAFETY: the range is reserved for this buffer alone, readable and
        // writable (committed on first touch) for `len` bytes, and lives
        // until the buffer is dropped; the caller keeps the slice within
        // that life and unique.
        unsafe { core::slice::from_raw_parts_mut(self.range.start() as *mut u8, self.len) }
    }

    /// Bytes committed (pages touched since made or last decommitted).
    pub fn committed_bytes(&self) -> usize {
        self.range.committed_bytes()
    }

    /// Gives the buffer's frames back; it reads as zero afterwards.
    /// Returns the bytes given back.
    ///
    /// # Safety
    /// Nothing may rely on the contents (call it on an empty buffer), and
    /// only the calling cpu may have touched the buffer since it was made
    /// or last decommitted (for socket buffers: the network cpu).
    pub unsafe fn decommit(&self) -> usize {
        // SAFETY: the caller's promise is the range's.
        unsafe { self.range.decommit() }
    }
}

/// The lazily committed region's memory, in bytes (and ranges).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LazyStats {
    /// Committed in thread stacks.
    pub stack_bytes: usize,
    /// Committed in buffers.
    pub buffer_bytes: usize,
    /// Pre-zeroed frames held in the cpus' reserves.
    pub reserve_bytes: usize,
    /// Page tables made for the region (kept for good).
    pub page_table_bytes: usize,
    /// Ranges alive.
    pub ranges: usize,
    /// Freed slots not reused yet (each is reused only once every cpu has
    /// flushed its TLB since it was freed).
    pub free_slots: usize,
}

/// The lazily committed region's counters now.
pub fn stats() -> LazyStats {
    let (ranges, free_slots) = crate::arch::irq::without(|_| REGION.lock().counts());
    let page = PAGE_SIZE as usize;
    LazyStats {
        stack_bytes: COMMITTED[Kind::Stack as usize].load(Ordering::Relaxed) * page,
        buffer_bytes: COMMITTED[Kind::Buffer as usize].load(Ordering::Relaxed) * page,
        reserve_bytes: RESERVES.iter().map(|r| r.held.load(Ordering::Relaxed)).sum::<usize>() * page,
        page_table_bytes: PAGE_TABLES.load(Ordering::Relaxed) * page,
        ranges,
        free_slots,
    }
}
