//! The panic handler: report message, location and cpu, end the VM with
//! failure. A panic inside the panic report ends the VM at once.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::power::{exit, ExitCode};

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    if PANICKING.swap(true, Ordering::SeqCst) {
        exit(ExitCode::Failure);
    }
    let cpu = crate::arch::cpu_id();
    match info.location() {
        Some(at) => crate::console::emergency_println(format_args!(
            "PANIC on cpu {cpu} at {}:{}:{}: {}",
            at.file(),
            at.line(),
            at.column(),
            info.message()
        )),
        None => crate::console::emergency_println(format_args!("PANIC on cpu {cpu}: {}", info.message())),
    }
    exit(ExitCode::Failure)
}
