//! The application's view of how it was started.

use spin::Once;

static APP_ARGS: Once<&'static str> = Once::new();

pub(crate) fn init(app_args: &'static str) {
    APP_ARGS.call_once(|| app_args);
}

/// The whole kernel command line, as the loader passed it.
pub fn cmdline() -> &'static str {
    crate::runtime::boot_info().cmdline()
}

/// The application's arguments: the words after `--` on the command line
/// (without the `virtio_mmio.device=` words a monitor may append).
///
/// ```no_run
/// # #![no_std]
/// # #![no_main]
/// # bravo::main!(main);
/// # fn main() {
/// // Booted with `... -- --port 8080 --verbose`.
/// let mut port = 80u16;
/// let mut args = bravo::env::args();
/// while let Some(arg) = args.next() {
///     match arg {
///         "--port" => port = args.next().and_then(|p| p.parse().ok()).unwrap_or(port),
///         other => bravo::println!("ignoring {other}"),
///     }
/// }
/// # }
/// ```
pub fn args() -> impl Iterator<Item = &'static str> {
    crate::cmdline::app_words(APP_ARGS.get().copied().unwrap_or(""))
}

/// Which loader booted the kernel: "Limine" or "PVH".
pub fn loader() -> &'static str {
    crate::runtime::boot_info().loader.name()
}
