//! Everything that touches x86_64 hardware directly: boot stack, serial
//! port, segments, interrupt entry, paging, cpu features and VM exit.

pub mod acpi_handler;
pub mod boot_stack;
pub mod cpu;
pub mod gdt;
pub mod paging;
pub mod power;
pub mod serial;
pub mod traps;
pub mod tsc;

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

/// The number of the cpu running this code. Only the boot cpu (0) runs
/// until secondary cpus are brought up.
pub fn cpu_id() -> usize {
    0
}
