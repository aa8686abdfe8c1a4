//! Booting: both boot paths reach the same kmain and run the application.

use std::time::Duration;

use bravo_tests::{limine_dir, ovmf_firmware, Accel, Boot, Machine};

#[test]
fn hello_boots_by_pvh_under_tcg() {
    let run = Machine::new("hello").run();
    run.assert_success();
    run.assert_line("Bravo 0.1.0 booted by PVH");
    run.assert_line("Hello from Bravo!");
}

#[test]
fn hello_boots_under_kvm() {
    if let Err(why) = bravo_tests::kvm_status() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    // On these machines /dev/kvm is a nested software hypervisor (~1000x
    // slower than TCG), so this stays a single short boot.
    let run = Machine::new("hello").accel(Accel::Kvm).timeout(Duration::from_secs(180)).run();
    run.assert_success();
    run.assert_line("Hello from Bravo!");
}

#[test]
fn command_line_reaches_the_application() {
    let run = Machine::new("hello").cmdline("log=warn -- first second").run();
    run.assert_success();
    run.assert_line(r#"kernel command line: "log=warn -- first second""#);
    run.assert_line("arg 0: first");
    run.assert_line("arg 1: second");
    // log=warn hides the info-level boot banner.
    run.assert_no_line("Bravo 0.1.0 booted by");
}

#[test]
fn bad_kernel_options_warn_and_boot_with_defaults() {
    let run = Machine::new("hello").cmdline("log=loud frobnicate=1 verbose -- x").run();
    run.assert_success();
    run.assert_line("kernel option `log=loud`: expected off, error, warn, info, debug or trace; using the default");
    run.assert_line("unknown kernel option `frobnicate=1` ignored");
    run.assert_line("kernel option `verbose` has no `=value`");
    // The default level (info) still applies.
    run.assert_line("booted by PVH");
    run.assert_line("arg 0: x");
}

#[test]
fn in_kernel_selftest_passes() {
    let run = Machine::new("ktest").cmdline("-- selftest").run();
    run.assert_suite_passed("selftest");
}

/// Whether this machine can boot `boot` (says why not, as a skip).
fn limine_available(boot: Boot) -> bool {
    if let Err(why) = limine_dir() {
        eprintln!("SKIPPED: {boot:?} boot: {why}");
        return false;
    }
    if boot == Boot::LimineUefi && ovmf_firmware().is_none() {
        eprintln!("SKIPPED: UEFI boot needs OVMF (Debian package `ovmf`)");
        return false;
    }
    true
}

fn hello_boots_by(boot: Boot, arg: &str) {
    if !limine_available(boot) {
        return;
    }
    let run = Machine::new("hello").boot(boot).cmdline(&format!("-- {arg}")).timeout(Duration::from_secs(120)).run();
    run.assert_success();
    run.assert_line("Bravo 0.1.0 booted by Limine");
    run.assert_line(&format!("arg 0: {arg}"));
}

#[test]
fn hello_boots_by_limine_bios() {
    hello_boots_by(Boot::Limine, "from-limine");
}

#[test]
fn hello_boots_by_limine_uefi() {
    hello_boots_by(Boot::LimineUefi, "uefi");
}

#[test]
fn selftest_passes_when_booted_by_limine() {
    if !limine_available(Boot::Limine) {
        return;
    }
    let run = Machine::new("ktest").boot(Boot::Limine).cmdline("-- selftest").run();
    run.assert_suite_passed("selftest");
}
