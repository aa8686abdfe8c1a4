//! Everything that touches x86_64 hardware directly: the boot protocols
//! (Limine, PVH) and what they hand over, boot stack, serial
//! port, segments, interrupt entry, paging, cpu features, per-cpu data,
//! local and I/O APICs, the TSC and the timers it is calibrated against,
//! device register windows, MSI-X tables, PCI configuration space, starting
//! cpus, context switches and VM exit.

pub mod acpi_handler;
pub mod apic;
pub mod boot;
pub mod boot_stack;
pub mod calibration;
pub mod context;
pub mod cpu;
pub mod gdt;
pub mod ioapic;
pub mod irq;
mod limits;
pub mod mmio;
pub mod msix;
pub mod paging;
pub mod pci;
pub mod percpu;
pub mod power;
pub mod serial;
pub mod smp;
pub mod timers;
pub mod traps;
pub mod tsc;
pub mod tsc_rate;

/// Reports a failure that happens before the console is set up, and ends
/// the VM with failure.
pub fn early_fail(message: &str) -> ! {
    let mut uart = serial::Uart::com1();
    uart.init();
    uart.write_bytes(b"bravo: fatal early boot error: ");
    uart.write_bytes(message.as_bytes());
    uart.write_bytes(b"\n");
    power::exit(power::ExitCode::Failure)
}

pub use limits::{MAX_CPUS, MAX_IO_APICS};
pub use percpu::cpu_id;
