//! Cpus and threads: every cpu online in x2APIC and xAPIC mode, threads
//! and their memory on the right cpu and node, remote spawns, sleeps,
//! blocking primitives (the in-kernel `smp` suite), plus what only the
//! host can see: idle cpus halt, and a panic names its cpu.

use std::time::{Duration, Instant};

use bravo_tests::ktest;

fn smp_suite(cpus: usize) {
    let run = ktest("smp").cpus(cpus).run();
    run.assert_suite_passed("smp");
    run.assert_line(&format!("{cpus} cpus, {cpus} online (x2APIC)"));
}

#[test]
fn threads_work_on_one_cpu() {
    smp_suite(1);
}

#[test]
fn threads_work_on_two_cpus() {
    smp_suite(2);
}

#[test]
fn threads_work_on_four_cpus() {
    smp_suite(4);
}

#[test]
fn threads_work_in_xapic_mode() {
    // qemu64 has no x2APIC: the kernel must fall back to the xAPIC.
    let run = ktest("smp").cpus(4).cpu_model("qemu64").run();
    run.assert_suite_passed("smp");
    run.assert_line("4 cpus, 4 online (xAPIC)");
}

#[test]
fn threads_and_their_memory_stay_on_their_node() {
    let run = ktest("smp").two_numa_nodes().run();
    run.assert_suite_passed("smp");
    run.assert_line("4 cpus, 4 online (x2APIC), 2 NUMA nodes");
}

#[test]
fn a_panic_on_an_application_core_names_the_cpu() {
    let run = ktest("panic-on-cpu").cpus(4).run();
    run.assert_failure();
    run.assert_line("PANIC on cpu 3 at ");
    run.assert_line("deliberate panic on cpu 3");
}

#[test]
fn idle_cpus_halt_and_cost_the_host_nothing() {
    let mut vm = ktest("idle").cpus(4).start();
    vm.wait_for_line("idle: start", Duration::from_secs(30)).unwrap();
    let (wall, cpu) = (Instant::now(), vm.cpu_time());
    vm.wait_for_line("idle: end", Duration::from_secs(30)).unwrap();
    let (wall, cpu) = (wall.elapsed(), vm.cpu_time() - cpu);
    // Four spinning vCPUs would cost about two host cpus (this host has
    // two); halted ones cost QEMU's own housekeeping only.
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    println!("idle 4-cpu guest: {cpu:?} of host cpu time over {wall:?} ({:.1}% of one host cpu)", share * 100.0);
    assert!(share < 0.15, "an idle guest used {cpu:?} of cpu time in {wall:?}");
    vm.wait().assert_success();
}

#[test]
fn tsc_deadline_timers_wake_sleepers_under_kvm() {
    // TCG has no TSC-deadline mode; KVM's local APIC has.
    if let Err(why) = bravo_tests::kvm_status() {
        bravo_tests::skip(why);
        return;
    }
    let run = ktest("timers").accel(bravo_tests::Accel::Kvm).cpus(2).timeout(Duration::from_secs(120)).run();
    run.assert_suite_passed("timers");
    run.assert_line("TSC-deadline timers");
}
