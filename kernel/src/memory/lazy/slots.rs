//! Where lazily committed ranges live and when their address space may be
//! used again: pure bookkeeping (no page tables, no cpus), so that the
//! host can test it.
//!
//! The region is cut into one 512 GiB window (one PML4 entry) per kind
//! of range and size class. Class `c` holds ranges of up to `2^c` pages in
//! slots of `2^c + 1` pages: the slot's first page is the guard page, the
//! range's pages follow, and whatever the range leaves of its slot stays
//! unmapped (so running off either end faults).
//!
//! A freed slot is quarantined until every cpu has flushed its TLB since
//! the free: [`Region::release`] tags it with the next *generation*, a
//! batch of releases closes by bumping [`Region::generation`], and
//! [`Region::reserve`] reuses the oldest slot only once the caller says
//! every cpu has flushed after seeing its generation. Until then it takes
//! a fresh slot, so reserving never waits.

use alloc::collections::VecDeque;

/// Bytes per page.
pub const PAGE_SIZE: u64 = 4096;
/// Size classes: class `c` holds ranges of up to `2^c` pages (up to
/// 256 MiB).
pub const CLASSES: usize = 17;
/// Bytes of address space each kind and class gets (one PML4 entry).
pub const WINDOW_SIZE: u64 = 1 << 39;
/// Releases quarantined before their batch is closed on its own (a
/// reservation that needs a slot closes it earlier).
pub const BATCH: usize = 32;

/// What a range is for; each kind has its own windows, so that committed
/// memory can be counted per kind from a faulting address alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Thread stacks.
    Stack = 0,
    /// Buffers (socket buffers).
    Buffer = 1,
}

/// Kinds of ranges.
pub const KINDS: usize = 2;

impl Kind {
    /// Every kind, in index order.
    pub const ALL: [Kind; KINDS] = [Kind::Stack, Kind::Buffer];

    /// The kind's name in fault reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Stack => "Stack",
            Kind::Buffer => "Buffer",
        }
    }
}

/// The class holding a range of `pages` pages (None when too large or
/// empty).
pub fn class_of(pages: u64) -> Option<usize> {
    if pages == 0 {
        return None;
    }
    let class = pages.next_power_of_two().trailing_zeros() as usize;
    (class < CLASSES).then_some(class)
}

/// Pages per slot of `class`: the guard page and room for `2^class` pages.
pub fn slot_pages(class: usize) -> u64 {
    (1 << class) + 1
}

/// Slots one window holds.
pub fn slots_per_window(class: usize) -> u32 {
    (WINDOW_SIZE / (slot_pages(class) * PAGE_SIZE)).min(u32::MAX as u64) as u32
}

/// The region's layout from its base address.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub base: u64,
}

impl Layout {
    /// The region's end (exclusive).
    pub fn end(&self) -> u64 {
        self.base + (KINDS * CLASSES) as u64 * WINDOW_SIZE
    }

    pub fn contains(&self, addr: u64) -> bool {
        (self.base..self.end()).contains(&addr)
    }

    fn window(&self, kind: Kind, class: usize) -> u64 {
        self.base + ((kind as usize * CLASSES + class) as u64) * WINDOW_SIZE
    }

    /// The address of `slot`'s guard page (the slot's start).
    pub fn slot_start(&self, kind: Kind, class: usize, slot: u32) -> u64 {
        self.window(kind, class) + slot as u64 * slot_pages(class) * PAGE_SIZE
    }

    /// The kind of range whose window holds `addr` (None outside).
    pub fn kind_at(&self, addr: u64) -> Option<Kind> {
        if !self.contains(addr) {
            return None;
        }
        let window = ((addr - self.base) / WINDOW_SIZE) as usize;
        Kind::ALL.get(window / CLASSES).copied()
    }

    /// Whether `addr` lies in the first page of a slot: a guard page.
    pub fn is_guard_page(&self, addr: u64) -> bool {
        if !self.contains(addr) {
            return false;
        }
        let offset = (addr - self.base) % WINDOW_SIZE;
        let class = ((addr - self.base) / WINDOW_SIZE) as usize % CLASSES;
        let slot_bytes = slot_pages(class) * PAGE_SIZE;
        offset / slot_bytes < slots_per_window(class) as u64 && offset % slot_bytes < PAGE_SIZE
    }
}

/// The slots of one kind and class.
#[derive(Default)]
struct Pool {
    /// Slots handed out at least once: `0..created`.
    created: u32,
    /// Freed slots with the generation each waits for, oldest first. Its
    /// capacity is kept at `created`, so a release never allocates.
    quarantine: VecDeque<(u32, u64)>,
}

/// A slot handed out by [`Region::reserve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserved {
    pub slot: u32,
    /// Never used before: its page tables may not exist yet.
    pub fresh: bool,
}

/// Why no slot could be handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReserveError {
    /// The size class has no room (or the range is empty or too large).
    NoAddressSpace,
    /// No memory for the bookkeeping.
    NoMemory,
}

/// The slots of every kind and class, and the flush generation.
pub struct Region {
    pools: [[Pool; CLASSES]; KINDS],
    /// The last closed batch of releases.
    generation: u64,
    /// Releases since the last batch closed.
    pending: usize,
    /// Slots handed out and not released.
    in_use: usize,
}

impl Default for Region {
    fn default() -> Self {
        Self::new()
    }
}

impl Region {
    pub const fn new() -> Self {
        const POOL: Pool = Pool { created: 0, quarantine: VecDeque::new() };
        const CLASS_POOLS: [Pool; CLASSES] = [POOL; CLASSES];
        Self { pools: [CLASS_POOLS; KINDS], generation: 0, pending: 0, in_use: 0 }
    }

    /// The last closed generation: cpus flush their TLB after seeing it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Slots in use, and slots waiting in quarantine.
    pub fn counts(&self) -> (usize, usize) {
        let quarantined = self.pools.iter().flatten().map(|p| p.quarantine.len()).sum();
        (self.in_use, quarantined)
    }

    /// A slot of `kind` and `class`. `flushed` is the smallest generation
    /// every online cpu has flushed its TLB after seeing: the oldest
    /// quarantined slot is reused when its generation is at most that,
    /// otherwise a fresh slot is taken (and when the oldest slot's batch
    /// is still open it is closed, so that the cpus start flushing).
    /// Returns the slot and whether the generation was bumped.
    pub fn reserve(&mut self, kind: Kind, class: usize, flushed: u64) -> Result<(Reserved, bool), ReserveError> {
        if class >= CLASSES {
            return Err(ReserveError::NoAddressSpace);
        }
        let mut bumped = false;
        let pool = &mut self.pools[kind as usize][class];
        match pool.quarantine.front() {
            // Closed, and flushed by every cpu since.
            Some(&(slot, generation)) if generation <= flushed.min(self.generation) => {
                pool.quarantine.pop_front();
                self.in_use += 1;
                return Ok((Reserved { slot, fresh: false }, false));
            }
            Some(&(_, generation)) if generation > self.generation => {
                self.generation += 1;
                self.pending = 0;
                bumped = true;
            }
            _ => {}
        }
        let pool = &mut self.pools[kind as usize][class];
        if pool.created >= slots_per_window(class) {
            return Err(ReserveError::NoAddressSpace);
        }
        // Room to quarantine every slot ever created, taken now so that
        // releasing never allocates.
        pool.quarantine
            .try_reserve(pool.created as usize + 1 - pool.quarantine.len())
            .map_err(|_| ReserveError::NoMemory)?;
        let slot = pool.created;
        pool.created += 1;
        self.in_use += 1;
        Ok((Reserved { slot, fresh: true }, bumped))
    }

    /// Quarantines `slot` (whose pages are unmapped already). Returns
    /// whether this closed a batch (bumped the generation).
    ///
    /// # Panics
    /// When `slot` was never handed out (a caller's bug).
    pub fn release(&mut self, kind: Kind, class: usize, slot: u32) -> bool {
        let pool = &mut self.pools[kind as usize][class];
        assert!(slot < pool.created, "release of a slot never reserved");
        pool.quarantine.push_back((slot, self.generation + 1));
        self.in_use -= 1;
        self.pending += 1;
        if self.pending >= BATCH {
            self.generation += 1;
            self.pending = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: Layout = Layout { base: 0xffff_a000_0000_0000 };

    #[test]
    fn fault_reports_name_each_kind() {
        assert_eq!(Kind::ALL.map(Kind::name), ["Stack", "Buffer"]);
    }

    #[test]
    fn classes_round_up_to_powers_of_two() {
        assert_eq!(class_of(0), None);
        assert_eq!(class_of(1), Some(0));
        assert_eq!(class_of(15), Some(4));
        assert_eq!(class_of(16), Some(4));
        assert_eq!(class_of(17), Some(5));
        assert_eq!(class_of(1 << 16), Some(16));
        assert_eq!(class_of((1 << 16) + 1), None);
        assert_eq!(slot_pages(4), 17);
    }

    #[test]
    fn slots_do_not_overlap_and_stay_in_their_window() {
        let a = LAYOUT.slot_start(Kind::Stack, 4, 0);
        let b = LAYOUT.slot_start(Kind::Stack, 4, 1);
        assert_eq!(b - a, 17 * PAGE_SIZE);
        let last = LAYOUT.slot_start(Kind::Stack, 4, slots_per_window(4) - 1);
        assert!(last + 17 * PAGE_SIZE <= LAYOUT.slot_start(Kind::Stack, 5, 0));
        let buffer = LAYOUT.slot_start(Kind::Buffer, 0, 0);
        assert_eq!(LAYOUT.kind_at(buffer), Some(Kind::Buffer));
        assert_eq!(LAYOUT.kind_at(last), Some(Kind::Stack));
        assert_eq!(LAYOUT.kind_at(LAYOUT.end()), None);
        assert!(LAYOUT.end() <= 0xffff_c000_0000_0000, "the region must end below the MMIO window");
    }

    #[test]
    fn guard_pages_are_the_first_page_of_each_slot() {
        let slot = LAYOUT.slot_start(Kind::Buffer, 4, 3);
        assert!(LAYOUT.is_guard_page(slot));
        assert!(LAYOUT.is_guard_page(slot + 4095));
        assert!(!LAYOUT.is_guard_page(slot + 4096));
        assert!(!LAYOUT.is_guard_page(slot + 16 * 4096));
        assert!(LAYOUT.is_guard_page(slot + 17 * 4096));
        assert!(!LAYOUT.is_guard_page(LAYOUT.base - 1));
    }

    #[test]
    fn fresh_slots_come_in_order() {
        let mut region = Region::new();
        for expected in 0..3 {
            let (reserved, bumped) = region.reserve(Kind::Stack, 4, 0).unwrap();
            assert_eq!(reserved, Reserved { slot: expected, fresh: true });
            assert!(!bumped);
        }
        assert_eq!(region.counts(), (3, 0));
    }

    #[test]
    fn a_freed_slot_waits_until_every_cpu_has_flushed() {
        let mut region = Region::new();
        let (first, _) = region.reserve(Kind::Stack, 4, 0).unwrap();
        assert!(!region.release(Kind::Stack, 4, first.slot));
        assert_eq!(region.counts(), (0, 1));
        // Its batch is open: the reservation closes it and takes a fresh slot.
        let (second, bumped) = region.reserve(Kind::Stack, 4, 0).unwrap();
        assert!(bumped);
        assert_eq!(region.generation(), 1);
        assert_eq!(second, Reserved { slot: 1, fresh: true });
        // Closed, but not every cpu has flushed since.
        let (third, bumped) = region.reserve(Kind::Stack, 4, 0).unwrap();
        assert!(!bumped);
        assert_eq!(third, Reserved { slot: 2, fresh: true });
        // Every cpu flushed after seeing generation 1: reused.
        let (fourth, _) = region.reserve(Kind::Stack, 4, 1).unwrap();
        assert_eq!(fourth, Reserved { slot: first.slot, fresh: false });
        assert_eq!(region.counts(), (3, 0));
    }

    #[test]
    fn a_batch_closes_after_enough_releases() {
        let mut region = Region::new();
        let slots: Vec<u32> = (0..BATCH).map(|_| region.reserve(Kind::Buffer, 0, 0).unwrap().0.slot).collect();
        let closed: Vec<bool> = slots.iter().map(|&s| region.release(Kind::Buffer, 0, s)).collect();
        assert_eq!(closed.iter().filter(|&&c| c).count(), 1);
        assert!(closed[BATCH - 1]);
        assert_eq!(region.generation(), 1);
        // Oldest first, once flushed.
        assert_eq!(region.reserve(Kind::Buffer, 0, 1).unwrap().0, Reserved { slot: 0, fresh: false });
        assert_eq!(region.reserve(Kind::Buffer, 0, 1).unwrap().0, Reserved { slot: 1, fresh: false });
    }

    #[test]
    fn kinds_and_classes_have_separate_pools() {
        let mut region = Region::new();
        let (stack, _) = region.reserve(Kind::Stack, 4, 0).unwrap();
        region.release(Kind::Stack, 4, stack.slot);
        // Other pools do not see the freed slot (and leave its batch open).
        assert_eq!(region.reserve(Kind::Buffer, 4, u64::MAX).unwrap(), (Reserved { slot: 0, fresh: true }, false));
        assert_eq!(region.reserve(Kind::Stack, 5, u64::MAX).unwrap(), (Reserved { slot: 0, fresh: true }, false));
        // Not reused while its batch is open, whatever the cpus say.
        assert_eq!(region.reserve(Kind::Stack, 4, u64::MAX).unwrap(), (Reserved { slot: 1, fresh: true }, true));
        assert_eq!(region.reserve(Kind::Stack, 4, u64::MAX).unwrap().0, Reserved { slot: 0, fresh: false });
    }

    #[test]
    fn a_full_window_is_an_error() {
        let mut region = Region::new();
        let class = CLASSES - 1;
        let n = slots_per_window(class);
        for _ in 0..n {
            region.reserve(Kind::Buffer, class, 0).unwrap();
        }
        assert_eq!(region.reserve(Kind::Buffer, class, 0), Err(ReserveError::NoAddressSpace));
        assert_eq!(region.reserve(Kind::Buffer, CLASSES, 0), Err(ReserveError::NoAddressSpace));
    }

    #[test]
    fn releasing_never_grows_the_quarantine() {
        let mut region = Region::new();
        let slots: Vec<u32> = (0..100).map(|_| region.reserve(Kind::Stack, 2, 0).unwrap().0.slot).collect();
        let capacity = region.pools[0][2].quarantine.capacity();
        for s in slots {
            region.release(Kind::Stack, 2, s);
        }
        assert_eq!(region.pools[0][2].quarantine.capacity(), capacity);
    }

    #[test]
    #[should_panic(expected = "never reserved")]
    fn releasing_an_unknown_slot_is_a_bug() {
        Region::new().release(Kind::Stack, 0, 0);
    }
}
