//! Bravo's test image. The host harness boots it with one scenario as the
//! application argument (`-- NAME`):
//!
//! - `selftest`: in-kernel checks, ending in `selftest: N passed, M failed`;
//! - `panic`, `page-fault`, `divide-error`, `invalid-opcode`,
//!   `general-protection`, `double-fault`: each fails on purpose, to check the report;
//! - `error`: `main` returns an `Err`.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

use bravo::testing::{run_tests, Test};
use bravo::{check, check_eq, ExitCode};

bravo::main!(main);

fn main() -> Result<(), String> {
    let scenario = bravo::env::args().next().unwrap_or("selftest");
    match scenario {
        "selftest" => match run_tests("selftest", SELFTESTS) {
            ExitCode::Success => Ok(()),
            ExitCode::Failure => Err("in-kernel tests failed".into()),
        },
        "panic" => panic!("deliberate panic from ktest"),
        "page-fault" => {
            // SAFETY: none; this read is meant to fault. 0xdead_0000 is not
            // mapped by the kernel (low memory is not identity-mapped).
            let value = unsafe { core::ptr::read_volatile(0xdead_0000 as *const u64) };
            Err(alloc::format!("read of an unmapped address returned {value:#x}"))
        }
        "divide-error" => {
            // SAFETY: none; `div` by zero is meant to raise #DE.
            unsafe { core::arch::asm!("xor ecx, ecx", "div ecx", out("eax") _, out("ecx") _, out("edx") _) };
            Err("division by zero did not fault".into())
        }
        "invalid-opcode" => {
            // SAFETY: none; `ud2` is meant to raise #UD.
            unsafe { core::arch::asm!("ud2") };
            Err("ud2 did not fault".into())
        }
        "general-protection" => {
            // SAFETY: none; a non-canonical address is meant to raise #GP.
            let value = unsafe { core::ptr::read_volatile(0x8000_0000_0000_0000 as *const u64) };
            Err(alloc::format!("non-canonical read returned {value:#x}"))
        }
        "double-fault" => {
            // SAFETY: none; with the stack pointer on an unmapped page the
            // cpu cannot push the page fault's frame, so it raises a double
            // fault, whose handler runs on its own IST stack.
            unsafe { core::arch::asm!("mov rsp, 0xdead0000", "push rax", options(noreturn)) }
        }
        "error" => Err("deliberate error from ktest".into()),
        other => Err(alloc::format!("unknown scenario `{other}`")),
    }
}

const SELFTESTS: &[Test] = &[
    Test { name: "command line reaches the kernel", run: command_line_reaches_the_kernel },
    Test { name: "heap serves and frees", run: heap_serves_and_frees },
    Test { name: "impossible allocation fails cleanly", run: impossible_allocation_fails_cleanly },
];

fn command_line_reaches_the_kernel() -> Result<(), String> {
    check!(bravo::env::cmdline().contains("-- selftest"), "cmdline is {:?}", bravo::env::cmdline());
    check_eq!(bravo::env::args().next(), Some("selftest"));
    Ok(())
}

fn heap_serves_and_frees() -> Result<(), String> {
    let before = bravo::memory::heap_stats().allocated;
    {
        let mut blocks: Vec<Vec<u8>> = (0..64).map(|i| alloc::vec![i as u8; 1 << (i % 16)]).collect();
        blocks.retain(|b| b.len() > 100);
        for (i, b) in blocks.iter().enumerate() {
            check!(b.iter().all(|&x| x == b[0]), "block {i} corrupted");
        }
    }
    check_eq!(bravo::memory::heap_stats().allocated, before);
    Ok(())
}

fn impossible_allocation_fails_cleanly() -> Result<(), String> {
    let mut v: Vec<u8> = Vec::new();
    check!(v.try_reserve(1 << 40).is_err(), "a 1 TiB reservation succeeded");
    v.try_reserve(4096).map_err(|e| alloc::format!("a 4 KiB reservation failed: {e}"))?;
    Ok(())
}
