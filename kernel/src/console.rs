//! The console: `print!`/`println!` for applications and the `log` backend,
//! both on the COM1 serial port.
//!
//! Output is formatted into a buffer first and sent to the UART in one burst,
//! because every port access is a VM exit.

use core::fmt::{self, Write};

use spin::Mutex;

use crate::arch::serial::Uart;

static UART: Mutex<Uart> = Mutex::new(Uart::com1());

/// Formats into a fixed buffer, flushing to the UART whenever it fills.
struct Burst<'a> {
    uart: &'a mut Uart,
    buf: [u8; 256],
    len: usize,
}

impl<'a> Burst<'a> {
    fn new(uart: &'a mut Uart) -> Self {
        Self { uart, buf: [0; 256], len: 0 }
    }

    fn flush(&mut self) {
        self.uart.write_bytes(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl Write for Burst<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

fn write_to(uart: &mut Uart, args: fmt::Arguments, newline: bool) {
    let mut burst = Burst::new(uart);
    let _ = burst.write_fmt(args);
    if newline {
        let _ = burst.write_str("\n");
    }
    burst.flush();
}

/// Sets up the serial port. Called once, first thing in `kmain`.
pub fn init() {
    UART.lock().init();
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments, newline: bool) {
    crate::arch::irq::without(|_| write_to(&mut UART.lock(), args, newline));
}

/// Prints a line even when the console lock is held (for panics and fatal
/// exceptions, which may strike in the middle of a print).
pub fn emergency_println(args: fmt::Arguments) {
    for _ in 0..1000 {
        if let Some(mut uart) = UART.try_lock() {
            return write_to(&mut uart, args, true);
        }
        core::hint::spin_loop();
    }
    write_to(&mut Uart::com1(), args, true);
}

/// Prints to the console (the serial port), like `std`'s `print!`.
///
/// The text goes out in one burst once formatted; output of threads on
/// different cpus does not interleave within one call.
///
/// ```no_run
/// # #![no_std]
/// # #![no_main]
/// # bravo::main!(main);
/// # fn main() {
/// bravo::print!("loading... ");
/// bravo::println!("done");
/// # }
/// ```
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::internals::print(format_args!($($arg)*), false) };
}

/// Prints a line to the console (the serial port), like `std`'s
/// `println!`.
///
/// ```no_run
/// # #![no_std]
/// # #![no_main]
/// # bravo::main!(main);
/// # fn main() {
/// let cpus = bravo::thread::cpu_count();
/// bravo::println!("running on {cpus} cpus");
/// # }
/// ```
#[macro_export]
macro_rules! println {
    () => { $crate::internals::print(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::internals::print(format_args!($($arg)*), true) };
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            _print(format_args!("[{:>5}] {}", record.level(), record.args()), true);
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Routes the `log` crate to the console at `level`.
pub fn init_log(level: log::LevelFilter) {
    // A second call keeps the first logger; only the level changes.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
