//! Memory: ACPI topology, NUMA-local frames and heap, page protection,
//! lazily committed memory and stacks.

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use bravo_tests::{ktest, ktest_failing, Run};

const MIB: u64 = 1 << 20;

fn two_nodes(scenario: &str) -> Run {
    ktest(scenario).two_numa_nodes().run()
}

/// The number after `key=` on `line`.
fn field(line: &str, key: &str) -> u64 {
    let at = line.find(&format!("{key}=")).unwrap_or_else(|| panic!("no {key}= in {line:?}")) + key.len() + 1;
    line[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

#[test]
fn memory_selftest_passes_with_two_numa_nodes() {
    two_nodes("selftest").assert_suite_passed("selftest");
}

#[test]
fn topology_matches_what_qemu_was_told() {
    let run = two_nodes("topology");
    run.assert_success();
    run.assert_line("topology: cpus=4 nodes=2");
    let node0 = run.assert_line("node 0: cpus=[0,1] ");
    let node1 = run.assert_line("node 1: cpus=[2,3] ");
    // QEMU's SRAT leaves the legacy hole (640 KiB to 1 MiB) out of node 0.
    for (line, hole) in [(&node0.text, 384 * 1024), (&node1.text, 0)] {
        let srat = field(line, "srat_bytes");
        assert!((512 * MIB - hole..=512 * MIB).contains(&srat), "{line}");
        // The allocators manage the node's RAM minus firmware, image and
        // low memory: most of it.
        let managed = field(line, "managed_bytes");
        assert!(managed <= srat && managed > 500 * MIB, "{line}");
    }
    run.assert_line("distance 0->1 = 30");
    run.assert_line("distance 1->0 = 30");
    run.assert_line("distance 1->1 = 10");
    // The boot summary, once.
    assert_eq!(
        run.lines.iter().filter(|l| l.text.contains("4 cpus, 4 online (x2APIC), 2 NUMA nodes")).count(),
        1,
        "{}",
        run.serial()
    );
}

#[test]
fn without_srat_there_is_one_node() {
    let run = ktest("topology").cpus(2).run();
    run.assert_success();
    run.assert_line("topology: cpus=2 nodes=1");
    run.assert_line("node 0: cpus=[0,1] ");
}

#[test]
fn a_write_to_kernel_text_faults() {
    let run = ktest_failing("write-text");
    let line = run.assert_line("EXCEPTION on cpu 0: page fault (#PF), vector 14");
    assert!(line.text.contains("write to a read-only page"), "{}", line.text);
    assert!(line.text.contains("cr2=0xffffffff8"), "{}", line.text);
}

#[test]
fn a_runaway_recursion_hits_the_guard_page() {
    let run = ktest_failing("stack-overflow");
    run.assert_line("write to an unmapped page");
    run.assert_line("stack overflow: ");
    run.assert_line("is the guard page below the running thread's stack");
}

#[test]
fn lazily_committed_memory_and_stacks_work() {
    // Two cpus, so that freed stacks wait for another cpu's TLB flush.
    let run = ktest("lazy").cpus(2).run();
    run.assert_suite_passed("lazy");
    for line in ["a fresh thread's stack holds", "blocked on a wait queue holds", "5000 blocked threads hold"] {
        println!("{}", run.assert_line(line).text);
    }
}

#[test]
fn a_thread_blocked_in_a_tcp_read_holds_little_stack() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut vm = ktest("net-idle-read").user_net(&[]).cmdline(&format!("-- net-idle-read {port}")).start();
    // The guest connects once it has an address (bounded: a guest that
    // fails never connects).
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the guest never connected ({e}); serial:\n{}", vm.wait().serial()),
        }
    };
    conn.set_nonblocking(false).unwrap();
    let measured = vm.wait_for_line("net-idle-read: measured", Duration::from_secs(60));
    conn.write_all(b"bye\n").unwrap();
    let run = vm.wait();
    measured.unwrap_or_else(|e| panic!("{e}; serial:\n{}", run.serial()));
    run.assert_success();
    println!("{}", run.assert_line("measured: a thread blocked in TcpStream::read").text);
    run.assert_line("net-idle-read: the blocked read got its data");
}
