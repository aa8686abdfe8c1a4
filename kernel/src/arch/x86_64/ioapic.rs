//! The I/O APIC (through the `x2apic` crate): routes device interrupt
//! lines (global system interrupts) to a vector on a chosen cpu.

use spin::{Mutex, Once};
use x2apic::ioapic::{IoApic, IrqFlags, IrqMode, RedirectionTableEntry};

struct Chip {
    apic: IoApic,
    pins: u8,
}

// SAFETY: the IoApic handle only holds the address of memory-mapped
// registers, which any cpu may use; the mutex serializes them.
unsafe impl Send for Chip {}

static CHIP: Once<Mutex<Chip>> = Once::new();

/// Maps the I/O APIC at physical `phys` and masks every pin.
pub fn init(phys: u64) -> Result<u8, &'static str> {
    let chip = CHIP.try_call_once(|| {
        let base = super::paging::map_mmio(phys, 4096)?;
        // SAFETY: `base` maps the I/O APIC's registers uncached, for good,
        // and this is the only handle to them.
        let mut apic = unsafe { IoApic::new(base as u64) };
        // SAFETY: reading the version register has no side effects.
        let pins = unsafe { apic.max_table_entry() } + 1;
        for pin in 0..pins {
            // SAFETY: masking a pin only stops its interrupts.
            unsafe { apic.disable_irq(pin) };
        }
        Ok::<_, &'static str>(Mutex::new(Chip { apic, pins }))
    })?;
    Ok(chip.lock().pins)
}

fn with_chip<R>(f: impl FnOnce(&mut Chip) -> R) -> Option<R> {
    let chip = CHIP.get()?;
    Some(x86_64::instructions::interrupts::without_interrupts(|| f(&mut chip.lock())))
}

/// Routes pin `gsi` (masked) to `vector` on the cpu with `apic_id`, as a
/// PCI line: level-triggered, active low. Then [`unmask`] it.
pub fn route_level_low(gsi: u8, vector: u8, apic_id: u32) -> Result<(), &'static str> {
    with_chip(|chip| {
        if gsi >= chip.pins {
            return Err("no such I/O APIC pin");
        }
        let mut entry = RedirectionTableEntry::default();
        entry.set_vector(vector);
        entry.set_mode(IrqMode::Fixed);
        entry.set_flags(IrqFlags::LEVEL_TRIGGERED | IrqFlags::LOW_ACTIVE | IrqFlags::MASKED);
        entry.set_dest(apic_id as u8);
        // SAFETY: the entry sends a fixed interrupt on a vector the kernel
        // handles; it stays masked until `unmask`.
        unsafe { chip.apic.set_table_entry(gsi, entry) };
        Ok(())
    })
    .unwrap_or(Err("no I/O APIC"))
}

/// Stops interrupts from pin `gsi`.
pub fn mask(gsi: u8) {
    // SAFETY: masking a pin only stops its interrupts.
    with_chip(|chip| unsafe { chip.apic.disable_irq(gsi) });
}

/// Lets interrupts from pin `gsi` through (after [`route_level_low`]).
pub fn unmask(gsi: u8) {
    // SAFETY: the pin was routed to a handled vector first.
    with_chip(|chip| unsafe { chip.apic.enable_irq(gsi) });
}
