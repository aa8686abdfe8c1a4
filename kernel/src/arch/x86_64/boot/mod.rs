//! What the loader tells the kernel, in one loader-independent shape.
//!
//! Bravo boots two ways: by Limine (64-bit, higher half already mapped) and by
//! PVH (`qemu -kernel`, 32-bit protected mode). Each entry turns what its
//! loader handed over into a [`BootInfo`] — copied into kernel-owned storage,
//! so nothing refers to loader memory afterwards — and hands it to the
//! kernel above arch through [`enter_kernel`].

mod limine;
mod pvh;

/// How many memory-map entries the kernel keeps; more are merged into the log.
pub const MAX_REGIONS: usize = 128;
/// Longest kernel command line kept, in bytes.
pub const MAX_CMDLINE: usize = 2048;

/// Which loader started the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loader {
    Limine,
    Pvh,
}

impl Loader {
    pub fn name(self) -> &'static str {
        match self {
            Loader::Limine => "Limine",
            Loader::Pvh => "PVH",
        }
    }
}

/// What a range of physical memory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Free RAM.
    Usable,
    /// RAM the loader used for its own data; free once the kernel has copied
    /// what it needs (which it does before leaving the entry code).
    BootloaderReclaimable,
    /// The kernel image itself.
    Kernel,
    AcpiReclaimable,
    AcpiNvs,
    Reserved,
    Bad,
}

/// One entry of the physical memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub start: u64,
    pub len: u64,
    pub kind: RegionKind,
}

impl MemoryRegion {
    pub const EMPTY: Self = Self { start: 0, len: 0, kind: RegionKind::Reserved };

    pub fn end(&self) -> u64 {
        self.start + self.len
    }

    /// Whether the range is RAM (as opposed to a hole or device memory).
    pub fn is_ram(&self) -> bool {
        !matches!(self.kind, RegionKind::Reserved | RegionKind::Bad)
    }
}

/// Where the kernel image lives.
#[derive(Clone, Copy, Debug)]
pub struct ImageLocation {
    pub phys_base: u64,
    pub virt_base: u64,
    pub size: u64,
}

/// Everything the kernel needs from its loader, owned by the kernel.
pub struct BootInfo {
    pub loader: Loader,
    regions: [MemoryRegion; MAX_REGIONS],
    region_count: usize,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    /// Physical address of the ACPI RSDP, if the loader found one.
    pub rsdp: Option<u64>,
    pub image: ImageLocation,
    /// Offset at which the loader's page tables map physical memory
    /// (Limine's HHDM; 0 for PVH's identity map of the low 4 GiB). Valid only
    /// until the kernel switches to its own page tables.
    pub loader_phys_offset: u64,
}

impl BootInfo {
    fn new(loader: Loader, image: ImageLocation, loader_phys_offset: u64) -> Self {
        Self {
            loader,
            regions: [MemoryRegion::EMPTY; MAX_REGIONS],
            region_count: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            rsdp: None,
            image,
            loader_phys_offset,
        }
    }

    /// Adds a memory-map entry, skipping empty ones. Entries past
    /// [`MAX_REGIONS`] are dropped (and reported by the caller's log).
    fn push_region(&mut self, region: MemoryRegion) -> bool {
        if region.len == 0 {
            return true;
        }
        if self.region_count == MAX_REGIONS {
            return false;
        }
        self.regions[self.region_count] = region;
        self.region_count += 1;
        true
    }

    /// Marks the image's physical range as [`RegionKind::Kernel`], splitting
    /// any usable entry that contains it (PVH's E820 map reports the image as
    /// plain RAM).
    fn carve_out_image(&mut self) {
        let (lo, hi) = (self.image.phys_base, self.image.phys_base + self.image.size);
        let mut i = 0;
        while i < self.region_count {
            let r = self.regions[i];
            if r.kind == RegionKind::Usable && r.start < hi && lo < r.end() {
                self.regions[i] = MemoryRegion {
                    start: lo.max(r.start),
                    len: hi.min(r.end()) - lo.max(r.start),
                    kind: RegionKind::Kernel,
                };
                if r.start < lo {
                    self.push_region(MemoryRegion { start: r.start, len: lo - r.start, kind: RegionKind::Usable });
                }
                if hi < r.end() {
                    self.push_region(MemoryRegion { start: hi, len: r.end() - hi, kind: RegionKind::Usable });
                }
            }
            i += 1;
        }
        self.regions[..self.region_count].sort_unstable_by_key(|r| r.start);
    }

    fn set_cmdline(&mut self, bytes: &[u8]) {
        let bytes = bytes.split(|&b| b == 0).next().unwrap_or(&[]);
        let mut len = bytes.len().min(MAX_CMDLINE);
        // Never cut a UTF-8 sequence in half.
        while core::str::from_utf8(&bytes[..len]).is_err() {
            len -= 1;
        }
        self.cmdline[..len].copy_from_slice(&bytes[..len]);
        self.cmdline_len = len;
    }

    /// The physical memory map, sorted by address.
    pub fn memory_map(&self) -> &[MemoryRegion] {
        &self.regions[..self.region_count]
    }

    /// The kernel command line as the loader passed it.
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }
}

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// The virtual range the image occupies, from the linker script.
pub fn image_virt_range() -> (u64, u64) {
    // Only the addresses of these linker-script symbols are taken.
    (&raw const __image_start as u64, &raw const __image_end as u64)
}

extern "Rust" {
    /// The kernel's entry above arch (`runtime::kmain`, exported under this
    /// name): reached by symbol, so the hardware layer imports nothing
    /// above it.
    fn __bravo_kernel_main(boot: BootInfo) -> !;
}

/// Leaves the boot protocol for the kernel proper, on the boot stack with
/// interrupts off.
fn enter_kernel(boot: BootInfo) -> ! {
    // SAFETY: `runtime::kmain` is exported as `__bravo_kernel_main` with
    // exactly this signature (the same crate defines both sides, so the
    // types agree); it is called once, from the one boot path that ran.
    unsafe { __bravo_kernel_main(boot) }
}

/// Where the linker script places kernel virtual addresses relative to the
/// physical load address (`KERNEL_VMA` in `linker.ld`).
pub const KERNEL_VMA: u64 = 0xffff_ffff_8000_0000;
