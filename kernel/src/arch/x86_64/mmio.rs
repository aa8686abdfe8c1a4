//! Device registers in memory space: a [`Window`] is an uncached mapping
//! of a device's register range with bounds-checked, naturally aligned
//! volatile access (an access outside the window is a driver bug: it
//! panics instead of touching whatever lies beyond).

/// An uncached mapping of `len` bytes of device registers.
#[derive(Debug)]
pub struct Window {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is of device registers, valid for good on every cpu
// (the MMIO window is never unmapped); whoever owns the window decides
// which thread uses it.
unsafe impl Send for Window {}

// SAFETY: every access is one naturally aligned volatile load or store of a
// device register, a single bus transaction whichever cpu makes it; a
// device shared by several cpus (one queue each) has its driver decide
// which registers each cpu touches.
unsafe impl Sync for Window {}

impl Window {
    /// Maps `len` bytes of registers at physical `phys`, uncached.
    pub fn map(phys: u64, len: usize) -> Result<Window, &'static str> {
        let base = super::paging::map_mmio(phys, len as u64)?;
        Ok(Window { base, len })
    }

    /// The register of type `T` at `offset`, checked to be inside the
    /// window and aligned.
    fn at<T>(&self, offset: usize) -> *mut T {
        let size = core::mem::size_of::<T>();
        assert!(
            offset.checked_add(size).is_some_and(|end| end <= self.len) && offset.is_multiple_of(size),
            "device register access of {size} bytes at {offset:#x} outside its {:#x}-byte window or misaligned",
            self.len
        );
        // SAFETY: inside the mapping (checked above).
        unsafe { self.base.add(offset) as *mut T }
    }

    pub fn read8(&self, offset: usize) -> u8 {
        // SAFETY: an aligned register inside the uncached mapping.
        unsafe { self.at::<u8>(offset).read_volatile() }
    }

    pub fn read16(&self, offset: usize) -> u16 {
        // SAFETY: as in read8.
        unsafe { self.at::<u16>(offset).read_volatile() }
    }

    pub fn read32(&self, offset: usize) -> u32 {
        // SAFETY: as in read8.
        unsafe { self.at::<u32>(offset).read_volatile() }
    }

    pub fn write8(&self, offset: usize, value: u8) {
        // SAFETY: as in read8; the owner of the window knows the register.
        unsafe { self.at::<u8>(offset).write_volatile(value) }
    }

    pub fn write16(&self, offset: usize, value: u16) {
        // SAFETY: as in write8.
        unsafe { self.at::<u16>(offset).write_volatile(value) }
    }

    pub fn write32(&self, offset: usize, value: u32) {
        // SAFETY: as in write8.
        unsafe { self.at::<u32>(offset).write_volatile(value) }
    }
}
