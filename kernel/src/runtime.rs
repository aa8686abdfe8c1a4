//! Start-up and shut-down: the one `kmain` both boot paths reach, and how the
//! application's `main` is called and its result turned into the VM's exit.

use spin::Once;

use crate::arch::boot::BootInfo;
use crate::arch::{self, power};
use crate::boot_phases as phases;
use crate::cmdline::{CommandLine, KernelOptions, Problem};

static BOOT_INFO: Once<BootInfo> = Once::new();
static OPTIONS: Once<KernelOptions> = Once::new();

/// What the loader told the kernel (valid after the first lines of `kmain`).
pub fn boot_info() -> &'static BootInfo {
    BOOT_INFO.get().expect("boot info read before kmain stored it")
}

extern "Rust" {
    /// The application's entry, defined by [`crate::main!`].
    fn __bravo_app_main() -> power::ExitCode;
}

/// The kernel's entry, reached from either loader's entry code on the boot
/// stack with interrupts off (`arch::boot` calls it by this symbol name).
// The export is sound: the name is the kernel's own; only `arch::boot`
// declares it, with this signature, and nothing else exports it.
#[unsafe(export_name = "__bravo_kernel_main")]
pub fn kmain(boot: BootInfo) -> ! {
    arch::tsc::mark_entry();
    arch::percpu::init_boot_cpu();
    crate::console::init();
    arch::traps::set_report_printer(crate::console::emergency_println);
    let boot = BOOT_INFO.call_once(|| boot);

    // Problems are reported once the log level is known.
    let mut problems: [Option<Problem>; 8] = [None; 8];
    let mut dropped = 0;
    let cmdline = CommandLine::parse(boot.cmdline(), |p| match problems.iter_mut().find(|s| s.is_none()) {
        Some(slot) => *slot = Some(p),
        None => dropped += 1,
    });
    crate::console::init_log(cmdline.options.log_level);
    OPTIONS.call_once(|| cmdline.options);
    log::info!("Bravo {} booted by {}", env!("CARGO_PKG_VERSION"), boot.loader.name());
    for problem in problems.iter().flatten() {
        log::warn!("cmdline: {problem}");
    }
    if dropped > 0 {
        log::warn!("cmdline: {dropped} more problems not shown");
    }

    arch::gdt::init_boot_cpu();
    arch::traps::init();
    phases::done("console, traps");

    let features = arch::cpu::features();
    arch::cpu::enable_protection(&features);
    let Some(mut frames) = crate::memory::BootFrames::new(boot.memory_map()) else {
        panic!("no usable memory between 1 MiB and 4 GiB for page tables");
    };
    arch::paging::install(boot, &features, &mut frames);
    crate::memory::set_boot_frames(frames);
    phases::done("page tables");

    let (topology, timers) = crate::acpi_tables::discover(boot.rsdp, arch::cpu::apic_id());
    let topology = crate::topology::set(topology);
    arch::percpu::set_boot_cpu_identity(topology.cpus()[0].apic_id, topology.node_of_cpu(0));
    phases::done("acpi");
    arch::apic::init_boot_cpu();
    phases::done("apic");
    let apic_bus_hz = arch::apic::hypervisor_bus_hz();
    arch::calibration::calibrate_tsc(&timers, apic_bus_hz);
    phases::done("tsc");
    arch::calibration::calibrate_apic_timer(apic_bus_hz);
    phases::done("apic timer");

    crate::memory::init(boot.memory_map(), topology);
    phases::done("memory");
    crate::cpus::init_boot_cpu();
    phases::done("scheduler");
    let secondaries = crate::cpus::start_secondary_cpus(topology, boot.memory_map());
    phases::done("cpus");
    log_summary(topology, secondaries + 1);

    crate::env::init(boot.cmdline(), boot.loader.name(), cmdline.app_args);
    if let Err(e) = crate::sched::spawn_main(run_app_main) {
        panic!("cannot start the main thread: {e}");
    }
    phases::done("main thread");
    crate::sched::scheduler::run()
}

/// The application's main thread: runs `main`, then ends the VM with its
/// result (whatever other threads are doing).
fn run_app_main() {
    phases::done("first switch");
    crate::net::start(*OPTIONS.get().expect("options are parsed first thing in kmain"));
    phases::done("net");
    phases::log();
    let since_entry = crate::arch::tsc::nanos_since_entry();
    log::info!("entering main {}.{:03} ms after kernel entry", since_entry / 1_000_000, since_entry / 1000 % 1000);
    // SAFETY: `__bravo_app_main` is defined by the application's `main!`
    // invocation with exactly this signature.
    let code = unsafe { __bravo_app_main() };
    log::debug!("main returned {code:?}");
    power::exit(code)
}

/// The boot summary: cpus, nodes, memory per node (once).
fn log_summary(topology: &crate::topology::Topology, online: usize) {
    let timer = if arch::apic::has_tsc_deadline() { "TSC-deadline" } else { "APIC one-shot" };
    log::info!(
        "{} cpus, {online} online ({}), {} NUMA nodes, TSC {} MHz, {timer} timers",
        topology.cpu_count(),
        arch::apic::mode().name(),
        topology.node_count(),
        arch::tsc::hz() / 1_000_000
    );
    for node in 0..topology.node_count() {
        let stats = crate::memory::stats(node);
        let cpus = topology.cpus().iter().enumerate().filter(|(_, c)| c.node == node).count();
        log::info!("node {node}: {cpus} cpus, {} MiB RAM, {} MiB free", stats.total >> 20, stats.free >> 20);
    }
    for region in boot_info().memory_map() {
        log::debug!("memory {:#012x}-{:#012x} {:?}", region.start, region.end(), region.kind);
    }
}

/// What an application's `main` may return: `()`, or a `Result` whose error
/// is printed before the VM ends with failure.
pub trait Termination {
    /// How the virtual machine ends after `main` returned `self`.
    fn report(self) -> power::ExitCode;
}

impl Termination for () {
    fn report(self) -> power::ExitCode {
        power::ExitCode::Success
    }
}

impl<E: core::fmt::Debug> Termination for Result<(), E> {
    fn report(self) -> power::ExitCode {
        match self {
            Ok(()) => power::ExitCode::Success,
            Err(e) => {
                crate::println!("Error: {e:?}");
                power::ExitCode::Failure
            }
        }
    }
}

/// Declares the application's `main`; the kernel boots, calls it, and shuts
/// the VM down with success when it returns (or failure for an `Err`).
///
/// `main` runs in a thread on cpu 0 and returns `()` or `Result<(), E>`
/// with `E: Debug` (see [`Termination`](crate::Termination)); a panic
/// anywhere also ends the VM with failure.
///
/// ```no_run
/// #![no_std]
/// #![no_main]
///
/// bravo::main!(main);
///
/// fn main() {
///     bravo::println!("hello");
/// }
/// ```
///
/// Returning an error prints it and ends with failure:
///
/// ```no_run
/// #![no_std]
/// #![no_main]
///
/// bravo::main!(main);
///
/// fn main() -> Result<(), &'static str> {
///     let port: u16 = bravo::env::args().next().and_then(|p| p.parse().ok()).ok_or("usage: -- PORT")?;
///     bravo::println!("port {port}");
///     Ok(())
/// }
/// ```
#[macro_export]
macro_rules! main {
    ($main:path) => {
        // SAFETY: the name is the one the kernel declares and calls, with
        // this signature; one `main!` per application exports it.
        #[unsafe(export_name = "__bravo_app_main")]
        fn __bravo_app_main() -> $crate::ExitCode {
            $crate::Termination::report($main())
        }
    };
}
