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
        bravo_tests::skip(why);
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
        bravo_tests::skip(why);
        return false;
    }
    if boot == Boot::LimineUefi && ovmf_firmware().is_none() {
        bravo_tests::skip("UEFI boot needs OVMF (Debian package `ovmf`)");
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

/// The number after `prefix` in `line`.
fn number_after(line: &str, prefix: &str) -> f64 {
    let rest = &line[line.find(prefix).unwrap_or_else(|| panic!("no {prefix:?} in {line:?}")) + prefix.len()..];
    let digits: String = rest.trim_start().chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    digits.parse().unwrap_or_else(|_| panic!("no number after {prefix:?} in {line:?}"))
}

/// Boots the `clock` scenario on `machine` and checks the guest's clock
/// against the host's: the boot summary names a plausible TSC rate, and
/// the 1.5 s the guest sleeps (and measures) last 1.5 s of host time.
/// Returns the serial output. `machine` is spelt as `MACHINE=` is:
/// `microvm,pit=off` (without `acpi=on`, microvm has no ACPI: see
/// `bravo_tests::MICROVM_DEFAULTS`).
fn clock_agrees_with_host(machine: &str, cpus: usize) -> String {
    let (machine_type, options) = bravo_tests::MachineType::parse(machine).unwrap();
    let mut vm = bravo_tests::ktest("clock").machine_type(machine_type).machine_options(options).cpus(cpus).start();
    let start = vm.wait_for_line("clock: start", Duration::from_secs(30)).unwrap();
    let end = vm.wait_for_line("clock: end", Duration::from_secs(30)).unwrap();
    let serial = vm.serial();
    vm.wait().assert_success();

    let summary = serial.lines().find(|l| l.contains(" MHz, ")).unwrap_or_else(|| panic!("no boot summary:\n{serial}"));
    let mhz = number_after(summary, "TSC");
    assert!((100.0..=10_000.0).contains(&mhz), "{machine}: implausible TSC rate in {summary:?}");

    let guest = (number_after(&end.text, "clock: end") - number_after(&start.text, "clock: start")) / 1e6;
    let host = (end.at - start.at).as_secs_f64();
    println!(
        "{machine}, {cpus} cpus: TSC {mhz} MHz; the guest slept {guest:.4} s of its clock, {host:.4} s of the host's"
    );
    // The sleep lasts at least what was asked; a busy host may wake the
    // guest late, but both clocks see the same lateness.
    assert!((1.5..1.8).contains(&guest), "{machine}: the guest measured {guest} s for a 1.5 s sleep");
    assert!(
        (host - guest).abs() < 0.04 * guest,
        "{machine}: the guest measured {guest:.4} s where the host saw {host:.4} s"
    );
    serial
}

#[test]
fn clock_is_right_on_q35() {
    let serial = clock_agrees_with_host("q35", 1);
    assert!(!serial.contains("TSC rate"), "no error about the TSC rate expected:\n{serial}");
}

#[test]
fn clock_is_right_on_microvm() {
    // With ACPI, for its MADT: without, the guest finds one cpu.
    let serial = clock_agrees_with_host("microvm,acpi=on", 4);
    assert!(!serial.contains("TSC rate"), "no error about the TSC rate expected:\n{serial}");
}

#[test]
fn clock_is_right_on_microvm_without_a_pit() {
    let serial = clock_agrees_with_host("microvm,pit=off", 1);
    assert!(!serial.contains("TSC rate"), "no error about the TSC rate expected:\n{serial}");
}

#[test]
fn a_tsc_rate_no_timer_confirms_is_an_error() {
    // Without PIT and RTC only the local APIC timer is left: its rate is
    // right (QEMU's 1 GHz bus) but nothing can confirm it, which is said.
    let serial = clock_agrees_with_host("microvm,pit=off,rtc=off", 1);
    assert!(
        serial.contains("[ERROR] TSC rate") && serial.contains("confirmed by no other timer"),
        "no error line:\n{serial}"
    );
}
