//! What this cpu can do (CPUID) and the control-register bits the kernel
//! turns on because of it.

use core::arch::x86_64::{__cpuid, __cpuid_count};

#[derive(Clone, Copy, Debug)]
pub struct Features {
    /// Execute-disable bit in page tables (CPUID 0x8000_0001 EDX[20]).
    pub nx: bool,
    /// x2APIC mode (CPUID 1 ECX[21]).
    pub x2apic: bool,
    /// Global pages (CPUID 1 EDX[13]).
    pub global_pages: bool,
    /// The local APIC timer's TSC-deadline mode (CPUID 1 ECX[24]).
    pub tsc_deadline: bool,
}

/// The cpu features, read once on the boot cpu (every core of a VM has the
/// same; CPUID is a VM exit under KVM).
pub fn features() -> Features {
    static FEATURES: spin::Once<Features> = spin::Once::new();
    *FEATURES.call_once(read_features)
}

fn read_features() -> Features {
    let max_ext = __cpuid(0x8000_0000).eax;
    let ext1 = if max_ext >= 0x8000_0001 { __cpuid_count(0x8000_0001, 0).edx } else { 0 };
    let leaf1 = __cpuid(1);
    Features {
        nx: ext1 & (1 << 20) != 0,
        x2apic: leaf1.ecx & (1 << 21) != 0,
        global_pages: leaf1.edx & (1 << 13) != 0,
        tsc_deadline: leaf1.ecx & (1 << 24) != 0,
    }
}

/// Turns on no-execute pages (EFER.NXE), global pages (CR4.PGE) and
/// write protection of read-only pages in ring 0 (CR0.WP), where supported.
pub fn enable_protection(features: &Features) {
    use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
    use x86_64::registers::model_specific::{Efer, EferFlags};
    // SAFETY: these bits only add protection checks; the page tables the
    // kernel installs are built to satisfy them (NX only where supported).
    unsafe {
        if features.nx {
            Efer::update(|f| f.insert(EferFlags::NO_EXECUTE_ENABLE));
        }
        if features.global_pages {
            Cr4::update(|f| f.insert(Cr4Flags::PAGE_GLOBAL));
        }
        Cr0::update(|f| f.insert(Cr0Flags::WRITE_PROTECT));
    }
}

/// This cpu's local APIC id: the x2APIC id (CPUID leaf 0xb) where the cpu
/// has that leaf, else the 8-bit xAPIC id (CPUID leaf 1).
pub fn apic_id() -> u32 {
    if __cpuid(0).eax >= 0xb {
        let leaf = __cpuid_count(0xb, 0);
        if leaf.ebx != 0 {
            return leaf.edx;
        }
    }
    __cpuid(1).ebx >> 24
}
