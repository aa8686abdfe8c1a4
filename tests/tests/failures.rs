//! Failure is loud: panics and cpu exceptions are reported with what a
//! developer needs, and the VM ends with failure.

use bravo_tests::ktest_failing as scenario;

#[test]
fn panic_reports_message_location_and_cpu() {
    let run = scenario("panic");
    let line = run.assert_line("PANIC on cpu 0 at tests/images/ktest/src/main.rs:");
    assert!(line.text.ends_with("deliberate panic from ktest"), "{}", line.text);
}

#[test]
fn page_fault_reports_address_and_cause() {
    let run = scenario("page-fault");
    let line = run.assert_line("EXCEPTION on cpu 0: page fault (#PF), vector 14");
    assert!(line.text.contains("cr2=0xdead0000"), "{}", line.text);
    assert!(line.text.contains("read from an unmapped page"), "{}", line.text);
    assert!(line.text.contains("rip=0xffffffff8"), "{}", line.text);
}

#[test]
fn divide_error_is_reported() {
    scenario("divide-error").assert_line("EXCEPTION on cpu 0: divide error (#DE), vector 0 error=0x0 rip=0xffffffff8");
}

#[test]
fn invalid_opcode_is_reported() {
    scenario("invalid-opcode")
        .assert_line("EXCEPTION on cpu 0: invalid opcode (#UD), vector 6 error=0x0 rip=0xffffffff8");
}

#[test]
fn general_protection_fault_is_reported() {
    scenario("general-protection").assert_line("EXCEPTION on cpu 0: general protection fault (#GP), vector 13");
}

#[test]
fn double_fault_runs_on_its_own_stack_and_is_reported() {
    let run = scenario("double-fault");
    let line = run.assert_line("EXCEPTION on cpu 0: double fault (#DF), vector 8");
    assert!(line.text.contains("error=0x0"), "{}", line.text);
    // The faulting context's stack pointer is reported from the IST frame.
    run.assert_line("rsp=0x8000000000000000");
}

#[test]
fn main_returning_an_error_fails_the_vm() {
    scenario("error").assert_line(r#"Error: "deliberate error from ktest""#);
}

#[test]
fn a_thread_running_off_its_lazily_committed_stack_is_a_stack_overflow() {
    let run = scenario("thread-stack-overflow");
    run.assert_line("write to an unmapped page");
    run.assert_line("is the guard page below the running thread's stack");
}

#[test]
fn a_page_fault_with_memory_exhausted_says_so() {
    let run = scenario("lazy-exhaust");
    run.assert_line("EXCEPTION on cpu 0: page fault (#PF), vector 14");
    run.assert_line("cannot commit the lazily committed page at 0xffff");
    run.assert_line(": memory is exhausted");
}
