//! A node's RAM that its buddy allocator has not been given yet. The
//! allocator starts empty and takes RAM from here in pieces of at least
//! [`GROW_STEP`] as it runs dry, lowest addresses first, so that booting
//! touches only the RAM it uses: the buddy allocator keeps its free lists
//! inside the free blocks, and writing them all over RAM at once made the
//! host back every far-flung huge page of a VM's memory at boot (tens of
//! ms under QEMU, whose guest RAM is allocated on first touch).

/// The smallest piece handed over at once: a host huge page.
pub const GROW_STEP: u64 = 2 << 20;
/// Ranges kept per node (the memory map of a VM has a handful).
pub const MAX_PENDING: usize = 32;

/// Ascending, disjoint `[start, end)` ranges.
pub struct Pending {
    ranges: [(u64, u64); MAX_PENDING],
    count: usize,
}

impl Pending {
    pub const fn new() -> Self {
        Self { ranges: [(0, 0); MAX_PENDING], count: 0 }
    }

    /// Keeps `[start, end)` for later; gives it back when the list is full
    /// (the caller then hands it over at once). Ranges come in ascending
    /// order.
    pub fn push(&mut self, start: u64, end: u64) -> Result<(), (u64, u64)> {
        if end <= start {
            return Ok(());
        }
        match self.ranges.get_mut(self.count) {
            Some(slot) => {
                *slot = (start, end);
                self.count += 1;
                Ok(())
            }
            None => Err((start, end)),
        }
    }

    /// Takes the next piece for a request of `size` bytes: from the lowest
    /// range, up to the next multiple of `size` rounded up to a power of
    /// two and at least [`GROW_STEP`] (so an aligned range yields a whole
    /// naturally aligned block of that size). `None` when nothing is left.
    pub fn take(&mut self, size: u64) -> Option<(u64, u64)> {
        let step = size.max(GROW_STEP).checked_next_power_of_two()?;
        let (start, end) = *self.ranges[..self.count].first()?;
        let cut = start.checked_div(step).and_then(|blocks| (blocks + 1).checked_mul(step)).map_or(end, |c| c.min(end));
        if cut == end {
            self.ranges.copy_within(1..self.count, 0);
            self.count -= 1;
        } else {
            self.ranges[0].0 = cut;
        }
        Some((start, cut))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn pieces_come_lowest_first_and_end_on_a_step() {
        let mut p = Pending::new();
        p.push(3 * MIB, 9 * MIB).unwrap();
        p.push(16 * MIB, 17 * MIB).unwrap();
        assert_eq!(p.take(4096), Some((3 * MIB, 4 * MIB)));
        assert_eq!(p.take(4096), Some((4 * MIB, 6 * MIB)));
        assert_eq!(p.take(4096), Some((6 * MIB, 8 * MIB)));
        assert_eq!(p.take(4096), Some((8 * MIB, 9 * MIB)));
        assert_eq!(p.take(4096), Some((16 * MIB, 17 * MIB)));
        assert_eq!(p.take(4096), None);
    }

    #[test]
    fn a_large_request_gets_an_aligned_block_of_its_size() {
        let mut p = Pending::new();
        p.push(2 * MIB, 64 * MIB).unwrap();
        // 8 MiB: first the piece up to 8 MiB, then a whole aligned block.
        assert_eq!(p.take(8 * MIB), Some((2 * MIB, 8 * MIB)));
        assert_eq!(p.take(8 * MIB), Some((8 * MIB, 16 * MIB)));
    }

    #[test]
    fn a_full_list_gives_the_range_back_and_empty_ranges_are_ignored() {
        let mut p = Pending::new();
        for i in 0..MAX_PENDING as u64 {
            p.push(i * 4 * MIB, i * 4 * MIB + MIB).unwrap();
        }
        assert_eq!(p.push(1000 * MIB, 1001 * MIB), Err((1000 * MIB, 1001 * MIB)));
        assert_eq!(p.push(5, 5), Ok(()));
    }

    #[test]
    fn absurd_sizes_take_nothing() {
        let mut p = Pending::new();
        p.push(0, MIB).unwrap();
        assert_eq!(p.take(u64::MAX), None);
        assert_eq!(p.take(0), Some((0, MIB)));
    }
}
