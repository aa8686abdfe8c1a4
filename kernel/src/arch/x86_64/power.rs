//! Ending the virtual machine with a status the host can read.
//!
//! QEMU's `isa-debug-exit` device (port 0xf4) makes QEMU exit with
//! `(value << 1) | 1`; Bravo writes 0x10 for success (QEMU status 33) and
//! 0x11 for failure (status 35), so neither can be mistaken for QEMU's own
//! errors. Without that device the write is ignored and the cpu halts.

use x86_64::instructions::port::PortWriteOnly;

const DEBUG_EXIT_PORT: u16 = 0xf4;

/// How the kernel ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// The application succeeded (QEMU exits with status 33).
    Success,
    /// The application failed or panicked (QEMU exits with status 35).
    Failure,
}

pub fn exit(code: ExitCode) -> ! {
    let value: u32 = match code {
        ExitCode::Success => 0x10,
        ExitCode::Failure => 0x11,
    };
    // SAFETY: writing the debug-exit port either ends the VM (QEMU with
    // isa-debug-exit) or is ignored; it touches no memory.
    unsafe { PortWriteOnly::<u32>::new(DEBUG_EXIT_PORT).write(value) };
    halt_forever()
}

/// Stops this cpu for good: interrupts off, `hlt` in a loop.
pub fn halt_forever() -> ! {
    // Never dropped: the loop does not end. An NMI that wakes `hlt`
    // returns with interrupts still off.
    let _interrupts_off = super::irq::disable();
    loop {
        x86_64::instructions::hlt();
    }
}
