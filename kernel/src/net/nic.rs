//! The e1000 driver's view of the machine ([`e1000::Hardware`]): its
//! registers through the uncached BAR 0 mapping, DMA memory from the
//! network cpu's node, and finding and routing its interrupt line.

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use e1000::{Dma, Hardware, E1000};

use crate::arch::{ioapic, paging, percpu, traps, tsc};
use crate::pci;

/// The vector the NIC's interrupt line is routed to.
pub const NIC_VECTOR: u8 = 0x40;
/// The vector used while looking for the NIC's line.
const PROBE_VECTOR: u8 = 0x41;

/// The NIC's registers and the node its DMA memory comes from.
pub struct Nic {
    registers: *mut u8,
    size: u64,
    node: usize,
}

// SAFETY: `registers` is an uncached mapping of the device, valid for good
// on every cpu; the driver that owns this handle is used by one thread.
unsafe impl Send for Nic {}

impl Nic {
    /// Finds QEMU's e1000 (82540EM, 8086:100E), maps BAR 0 and enables
    /// DMA. `None` when there is no such device.
    pub fn find() -> Result<Option<(Nic, pci::Device)>, &'static str> {
        let Some(device) = pci::find(0x8086, 0x100e) else { return Ok(None) };
        let (registers, size) = device.map_bar(0)?;
        device.enable();
        Ok(Some((Nic { registers, size, node: percpu::this().node }, device)))
    }

    /// The same device, taking its DMA memory from the calling cpu's node.
    pub fn rebind_to_this_node(self) -> Self {
        Nic { node: percpu::this().node, ..self }
    }

    fn register(&self, offset: u32) -> *mut u32 {
        assert!((offset as u64) + 4 <= self.size, "e1000 register {offset:#x} outside BAR 0");
        // SAFETY: inside the mapped BAR (checked above).
        unsafe { self.registers.add(offset as usize) as *mut u32 }
    }
}

impl Hardware for Nic {
    fn read(&self, register: u32) -> u32 {
        // SAFETY: an aligned device register inside the uncached BAR mapping.
        unsafe { self.register(register).read_volatile() }
    }

    fn write(&self, register: u32, value: u32) {
        // SAFETY: as in read.
        unsafe { self.register(register).write_volatile(value) }
    }

    fn alloc_dma(&self, size: usize) -> Option<Dma> {
        let frames = size.div_ceil(4096).next_power_of_two();
        let phys = crate::memory::alloc_frames(self.node, frames.trailing_zeros() as usize)?;
        let virt = paging::phys_to_virt(phys);
        // SAFETY: freshly allocated frames, reached through the direct map;
        // kept for good (the driver lives as long as the VM).
        unsafe { core::ptr::write_bytes(virt, 0, frames * 4096) };
        Some(Dma { virt: core::ptr::NonNull::new(virt)?, phys, size })
    }

    fn delay_us(&self, micros: u64) {
        tsc::spin_for_micros(micros);
    }
}

static PROBED: AtomicBool = AtomicBool::new(false);
static PROBE_PIN: AtomicU8 = AtomicU8::new(0);

fn probe_interrupt(_vector: u8) {
    ioapic::mask(PROBE_PIN.load(Ordering::Relaxed));
    PROBED.store(true, Ordering::Release);
}

/// Finds the I/O APIC pin the NIC's INTx line reaches, by making the NIC
/// interrupt with one candidate pin unmasked at a time: the line the
/// firmware wrote, then the PCI pins 16-23. Runs on the cpu that will take
/// the interrupts, with interrupts enabled.
pub fn find_interrupt_pin(nic: &mut E1000<Nic>, line: u8, pins: u8) -> Option<u8> {
    traps::set_handler(PROBE_VECTOR, probe_interrupt);
    let me = percpu::this().apic_id;
    let candidates = core::iter::once(line).filter(|&l| l < 16).chain(16..pins.min(24));
    for pin in candidates {
        PROBE_PIN.store(pin, Ordering::Relaxed);
        PROBED.store(false, Ordering::Release);
        if ioapic::route_level_low(pin, PROBE_VECTOR, me).is_err() {
            continue;
        }
        ioapic::unmask(pin);
        nic.raise_test_interrupt();
        let deadline = tsc::now() + tsc::hz() / 200; // 5 ms
        while !PROBED.load(Ordering::Acquire) && tsc::now() < deadline {
            core::hint::spin_loop();
        }
        ioapic::mask(pin);
        nic.handle_interrupt();
        if PROBED.load(Ordering::Acquire) {
            return Some(pin);
        }
    }
    None
}

/// Routes `pin` to [`NIC_VECTOR`] on this cpu, with `handler`.
pub fn route_interrupt(pin: u8, handler: traps::Handler) -> Result<(), &'static str> {
    traps::set_handler(NIC_VECTOR, handler);
    ioapic::route_level_low(pin, NIC_VECTOR, percpu::this().apic_id)?;
    ioapic::unmask(pin);
    Ok(())
}
