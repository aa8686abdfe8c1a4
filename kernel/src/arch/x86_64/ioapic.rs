//! The I/O APICs (through the `x2apic` crate): route device interrupt
//! lines, named by their global system interrupt (GSI), to a vector on a
//! chosen cpu. A machine may have several I/O APICs, each carrying the
//! GSIs from its base (QEMU's microvm: 0-23 and 24-47).

use spin::{Mutex, Once};
use x2apic::ioapic::{IoApic, IrqFlags, IrqMode, RedirectionTableEntry};

use super::MAX_IO_APICS;

struct Chip {
    apic: IoApic,
    gsi_base: u32,
    pins: u8,
}

// SAFETY: the IoApic handle only holds the address of memory-mapped
// registers, which any cpu may use; the mutex serializes them.
unsafe impl Send for Chip {}

static CHIPS: Once<Mutex<[Option<Chip>; MAX_IO_APICS]>> = Once::new();

/// How a line signals an interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A PCI INTx line: level-triggered, active low.
    LevelLow,
    /// A level-triggered, active-high line (virtio-mmio on microvm, as its
    /// ACPI tables describe it).
    LevelHigh,
}

/// Maps the I/O APICs (physical address, GSI base) and masks every pin
/// (once; later calls keep the first set). Returns how many GSIs the
/// chip at base 0 carries (0 if none).
pub fn init(chips: impl Iterator<Item = (u64, u32)>) -> Result<u8, &'static str> {
    let chips = CHIPS.try_call_once(|| {
        let mut mapped: [Option<Chip>; MAX_IO_APICS] = [const { None }; MAX_IO_APICS];
        for (slot, (address, gsi_base)) in mapped.iter_mut().zip(chips) {
            let base = super::paging::map_mmio(address, 4096)?;
            // SAFETY: `base` maps the I/O APIC's registers uncached, for
            // good, and this is the only handle to them.
            let mut apic = unsafe { IoApic::new(base as u64) };
            // SAFETY: reading the version register has no side effects.
            let last = unsafe { apic.max_table_entry() };
            // Nothing at the address reads as all ones.
            let pins = last.checked_add(1).ok_or("no I/O APIC answers at its address")?;
            for pin in 0..pins {
                // SAFETY: masking a pin only stops its interrupts.
                unsafe { apic.disable_irq(pin) };
            }
            *slot = Some(Chip { apic, gsi_base, pins });
        }
        Ok::<_, &'static str>(Mutex::new(mapped))
    })?;
    let chips = chips.lock();
    Ok(chips.iter().flatten().find(|c| c.gsi_base == 0).map_or(0, |c| c.pins))
}

/// Runs `f` with the chip carrying `gsi` and the pin it is there.
fn with_pin<R>(gsi: u32, f: impl FnOnce(&mut IoApic, u8) -> R) -> Result<R, &'static str> {
    let chips = CHIPS.get().ok_or("no I/O APIC")?;
    super::irq::without(|_| {
        let mut chips = chips.lock();
        let chip = chips
            .iter_mut()
            .flatten()
            .find(|c| gsi >= c.gsi_base && gsi - c.gsi_base < c.pins as u32)
            .ok_or("no I/O APIC pin carries this GSI")?;
        let pin = (gsi - chip.gsi_base) as u8;
        Ok(f(&mut chip.apic, pin))
    })
}

/// Routes `gsi` (masked) to `vector` on the cpu with `apic_id`. Then
/// [`unmask`] it.
pub fn route(gsi: u32, trigger: Trigger, vector: u8, apic_id: u32) -> Result<(), &'static str> {
    if apic_id > 0xff {
        return Err("the I/O APIC cannot reach an APIC id above 255 without interrupt remapping");
    }
    with_pin(gsi, |apic, pin| {
        let mut entry = RedirectionTableEntry::default();
        entry.set_vector(vector);
        entry.set_mode(IrqMode::Fixed);
        let polarity = match trigger {
            Trigger::LevelLow => IrqFlags::LOW_ACTIVE,
            Trigger::LevelHigh => IrqFlags::empty(),
        };
        entry.set_flags(IrqFlags::LEVEL_TRIGGERED | polarity | IrqFlags::MASKED);
        entry.set_dest(apic_id as u8);
        // SAFETY: the entry sends a fixed interrupt on a vector the kernel
        // handles; it stays masked until `unmask`.
        unsafe { apic.set_table_entry(pin, entry) };
    })
}

/// Stops interrupts from `gsi`.
pub fn mask(gsi: u32) {
    // SAFETY: masking a pin only stops its interrupts.
    let _ = with_pin(gsi, |apic, pin| unsafe { apic.disable_irq(pin) });
}

/// Lets interrupts from `gsi` through (after [`route`]).
pub fn unmask(gsi: u32) {
    // SAFETY: the pin was routed to a handled vector first.
    let _ = with_pin(gsi, |apic, pin| unsafe { apic.enable_irq(pin) });
}
