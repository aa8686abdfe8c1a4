//! The application's view of how it was started.

use spin::Once;

/// What `runtime::kmain` learnt at boot and hands down (this module imports
/// nothing from `runtime`).
struct Startup {
    cmdline: &'static str,
    loader: &'static str,
    app_args: &'static str,
}

static STARTUP: Once<Startup> = Once::new();

/// Records the kernel command line, the loader's name and the application's
/// part of the command line (once; kmain calls it before `main`).
pub(crate) fn init(cmdline: &'static str, loader: &'static str, app_args: &'static str) {
    STARTUP.call_once(|| Startup { cmdline, loader, app_args });
}

/// The whole kernel command line, as the loader passed it.
pub fn cmdline() -> &'static str {
    STARTUP.get().map_or("", |s| s.cmdline)
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
    crate::cmdline::app_words(STARTUP.get().map_or("", |s| s.app_args))
}

/// Which loader booted the kernel: "Limine" or "PVH".
pub fn loader() -> &'static str {
    STARTUP.get().map_or("", |s| s.loader)
}
