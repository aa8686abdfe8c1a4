//! Bravo's test image. The host harness boots it with one scenario as the
//! application argument (`-- NAME`):
//!
//! - `selftest`: in-kernel checks, ending in `selftest: N passed, M failed`;
//! - `panic`, `page-fault`, `divide-error`, `invalid-opcode`,
//!   `general-protection`, `double-fault`, `write-text`, `stack-overflow`:
//!   each fails on purpose, to check the report;
//! - `error`: `main` returns an `Err`;
//! - `topology`: prints cpus, nodes, memory ranges and distances;
//! - `smp`: in-kernel checks of cpus, threads and blocking primitives;
//!   `timers`: only its cpu and sleep checks;
//! - `idle`: sleeps 3 s between two lines while the host measures the
//!   VM's cpu time; `panic-on-cpu`: a thread on the last cpu panics;
//! - `clock`: prints the guest's uptime, sleeps 1.5 s, prints it again,
//!   for the host to compare with its own clock;
//! - `net-refused PORT`: a connection to a closed host port must fail
//!   with `Refused`; `net-exhaust`: sockets until memory runs out;
//!   `net-starved`: a thread hogs the network cpu for 2.5 s;
//!   `net-idle-read PORT`: the stack of a thread blocked in a read.
//! - `lazy`: in-kernel checks of lazily committed memory and stacks;
//!   `thread-stack-overflow`: a thread runs into its guard page;
//!   `lazy-exhaust`: a page fault with memory exhausted.

#![no_std]
#![no_main]

extern crate alloc;

mod lazy;
mod net;
mod smp;

use alloc::string::String;
use alloc::vec::Vec;

use bravo::internals::testing::{check, check_eq, run_tests, Test};
use bravo::ExitCode;

bravo::main!(main);

fn main() -> Result<(), String> {
    let mut args = bravo::env::args();
    let scenario = args.next().unwrap_or("selftest");
    match scenario {
        "selftest" => suite("selftest", SELFTESTS),
        "smp" => suite("smp", smp::SMP_TESTS),
        "timers" => suite("timers", smp::TIMER_TESTS),
        "lazy" => suite("lazy", lazy::LAZY_TESTS),
        "thread-stack-overflow" => lazy::thread_stack_overflow(),
        "lazy-exhaust" => lazy::exhaust(),
        "idle" => smp::idle(),
        "clock" => smp::clock(),
        "net-refused" => net::refused(args.next()),
        "net-exhaust" => net::exhaust(),
        "net-starved" => net::starved(),
        "net-idle-read" => net::idle_read(args.next()),
        "net-lent" => net::lent(args.next()),
        "panic-on-cpu" => smp::panic_on_last_cpu(),
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
            // SAFETY: none; with a non-canonical stack pointer the push
            // raises a stack fault whose delivery faults again (same
            // stack), which the cpu turns into a double fault, handled on
            // its own IST stack.
            unsafe { core::arch::asm!("mov rsp, 0x8000000000000000", "push rax", options(noreturn)) }
        }
        "write-text" => {
            let text = main as *const () as *mut u8;
            // SAFETY: none; kernel text is mapped read-only, so this write
            // is meant to fault.
            unsafe { text.write_volatile(0xcc) };
            Err("a write to kernel text succeeded".into())
        }
        "stack-overflow" => {
            let depth = recurse(0);
            Err(alloc::format!("recursion returned at depth {depth}"))
        }
        "topology" => {
            print_topology();
            Ok(())
        }
        "error" => Err("deliberate error from ktest".into()),
        other => Err(alloc::format!("unknown scenario `{other}`")),
    }
}

/// Recurses until the stack runs into its guard page.
#[inline(never)]
#[allow(unconditional_recursion)] // on purpose: it ends in the guard page
fn recurse(depth: u64) -> u64 {
    let frame = [depth; 64];
    // black_box keeps the frame (and the recursion) from being optimized out.
    core::hint::black_box(&frame);
    1 + recurse(core::hint::black_box(depth + 1))
}

fn print_topology() {
    let t = bravo::internals::topology::get().expect("topology is known before main");
    bravo::println!("topology: cpus={} nodes={}", t.cpu_count(), t.node_count());
    for node in 0..t.node_count() {
        let cpus: Vec<String> =
            t.cpus().iter().enumerate().filter(|(_, c)| c.node == node).map(|(i, _)| alloc::format!("{i}")).collect();
        let srat: u64 = t.ranges().iter().filter(|r| r.node == node).map(|r| r.end - r.start).sum();
        let stats = bravo::memory::stats(node);
        bravo::println!("node {node}: cpus=[{}] srat_bytes={srat} managed_bytes={}", cpus.join(","), stats.total);
        for other in 0..t.node_count() {
            bravo::println!("distance {node}->{other} = {}", t.distance(node, other));
        }
    }
}

const SELFTESTS: &[Test] = &[
    Test { name: "command line reaches the kernel", run: command_line_reaches_the_kernel },
    Test { name: "heap serves and frees", run: heap_serves_and_frees },
    Test { name: "impossible allocation fails cleanly", run: impossible_allocation_fails_cleanly },
    Test { name: "frames come from the node asked for", run: frames_come_from_the_node_asked_for },
    Test { name: "heap blocks come from the node asked for", run: heap_blocks_come_from_the_node_asked_for },
    Test { name: "frees from another node go home", run: frees_go_to_the_owning_node },
    Test { name: "exhausting a node fails cleanly and leaks nothing", run: exhausting_a_node_fails_cleanly },
    Test { name: "exhausting all memory fails cleanly and leaks nothing", run: exhausting_all_memory_fails_cleanly },
    Test { name: "mmio mappings are uncached and stable", run: mmio_mappings_are_stable },
];

/// Runs a suite of in-kernel checks; an error when any failed.
fn suite(name: &str, tests: &[Test]) -> Result<(), String> {
    match run_tests(name, tests) {
        ExitCode::Success => Ok(()),
        ExitCode::Failure => Err("in-kernel tests failed".into()),
    }
}

pub(crate) fn topology() -> &'static bravo::internals::topology::Topology {
    bravo::internals::topology::get().expect("topology is known before main")
}

/// Free bytes per node (a fixed array: measuring must not allocate).
fn free_counts() -> [usize; bravo::internals::topology::MAX_NODES] {
    let mut counts = [0; bravo::internals::topology::MAX_NODES];
    for (node, count) in counts.iter_mut().enumerate().take(topology().node_count()) {
        *count = bravo::memory::stats(node).free;
    }
    counts
}

fn command_line_reaches_the_kernel() -> Result<(), String> {
    check!(bravo::env::cmdline().contains("-- selftest"), "cmdline is {:?}", bravo::env::cmdline());
    check_eq!(bravo::env::args().next(), Some("selftest"));
    Ok(())
}

fn heap_serves_and_frees() -> Result<(), String> {
    let before = free_counts();
    {
        let mut blocks: Vec<Vec<u8>> = (0..64).map(|i| alloc::vec![i as u8; 1 << (i % 16)]).collect();
        blocks.retain(|b| b.len() > 100);
        for (i, b) in blocks.iter().enumerate() {
            check!(b.iter().all(|&x| x == b[0]), "block {i} corrupted");
        }
    }
    check_eq!(free_counts(), before);
    Ok(())
}

fn impossible_allocation_fails_cleanly() -> Result<(), String> {
    let mut v: Vec<u8> = Vec::new();
    check!(v.try_reserve(1 << 40).is_err(), "a 1 TiB reservation succeeded");
    v.try_reserve(4096).map_err(|e| alloc::format!("a 4 KiB reservation failed: {e}"))?;
    Ok(())
}

fn frames_come_from_the_node_asked_for() -> Result<(), String> {
    let t = topology();
    for node in 0..t.node_count() {
        for order in [0, 3, 9] {
            let phys = bravo::internals::memory::alloc_frames_exact(node, order)
                .ok_or_else(|| alloc::format!("node {node} has no block of order {order}"))?;
            let owner = t.node_of_addr(phys);
            let aligned = phys % (4096 << order) == 0;
            // SAFETY: the block was just allocated with this order.
            unsafe { bravo::internals::memory::free_frames(phys, order) };
            check!(owner == node, "order-{order} block {phys:#x} for node {node} belongs to node {owner}");
            check!(aligned, "order-{order} block {phys:#x} is not aligned to its size");
        }
    }
    Ok(())
}

fn heap_blocks_come_from_the_node_asked_for() -> Result<(), String> {
    let t = topology();
    for node in 0..t.node_count() {
        for size in [24usize, 1000, 200_000] {
            let layout = core::alloc::Layout::from_size_align(size, 8).unwrap();
            let block = bravo::internals::memory::alloc_in(node, layout);
            check!(!block.is_null(), "no {size}-byte block on node {node}");
            let owner = t.node_of_addr(bravo::internals::paging::virt_to_phys(block as u64));
            // SAFETY: the block was just allocated with this layout.
            unsafe { bravo::internals::memory::heap::dealloc(block, layout) };
            check!(owner == node, "{size}-byte block for node {node} belongs to node {owner}");
        }
    }
    Ok(())
}

fn frees_go_to_the_owning_node() -> Result<(), String> {
    let t = topology();
    let last = t.node_count() - 1;
    let before = free_counts();
    // Blocks of the last node, freed through the global allocator from
    // this cpu (on node 0): each must return to the last node.
    let layout = core::alloc::Layout::from_size_align(4000, 8).unwrap();
    let blocks: Vec<*mut u8> = (0..100).map(|_| bravo::internals::memory::alloc_in(last, layout)).collect();
    check!(blocks.iter().all(|b| !b.is_null()), "allocation on node {last} failed");
    for block in blocks {
        // SAFETY: allocated above with this layout; freed once.
        unsafe { alloc::alloc::dealloc(block, layout) };
    }
    check_eq!(free_counts(), before);
    Ok(())
}

/// Takes every block of `node` (largest orders first) without fallback.
pub(crate) fn drain_node(node: usize, blocks: &mut Vec<(u64, usize)>) {
    for order in (0..=12).rev() {
        while blocks.len() < blocks.capacity() {
            match bravo::internals::memory::alloc_frames_exact(node, order) {
                Some(phys) => blocks.push((phys, order)),
                None => break,
            }
        }
    }
}

fn exhausting_a_node_fails_cleanly() -> Result<(), String> {
    let t = topology();
    let node = t.node_count() - 1;
    let before = free_counts();
    let fallbacks_before = bravo::memory::stats(node).fallbacks;
    let mut blocks = Vec::with_capacity(64 * 1024);
    drain_node(node, &mut blocks);
    check!(blocks.len() < blocks.capacity(), "ran out of room to record blocks");
    let left = bravo::internals::memory::frames::stats(node).free;
    let exact = bravo::internals::memory::alloc_frames_exact(node, 0);
    let fallback = bravo::internals::memory::alloc_frames(node, 0);
    let fallback_owner = fallback.map(|p| t.node_of_addr(p));
    let fallbacks_after = bravo::memory::stats(node).fallbacks;
    if let Some(phys) = fallback {
        // SAFETY: allocated just above, order 0.
        unsafe { bravo::internals::memory::free_frames(phys, 0) };
    }
    for &(phys, order) in &blocks {
        // SAFETY: each block was allocated above with this order.
        unsafe { bravo::internals::memory::free_frames(phys, order) };
    }
    drop(blocks);
    check_eq!(left, 0);
    check!(exact.is_none(), "an exhausted node still gave a frame");
    if t.node_count() > 1 {
        check!(fallback_owner.is_some_and(|o| o != node), "fallback frame came from node {fallback_owner:?}");
        check_eq!(fallbacks_after, fallbacks_before + 1);
    } else {
        check!(fallback.is_none(), "a frame appeared on an exhausted single-node machine");
    }
    check_eq!(free_counts(), before);
    Ok(())
}

fn exhausting_all_memory_fails_cleanly() -> Result<(), String> {
    let before = free_counts();
    let total: usize = (0..topology().node_count()).map(|n| bravo::memory::stats(n).total).sum();
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(total / (1 << 20) + 16);
    let mut failed = false;
    while held.len() < held.capacity() {
        let mut block = Vec::new();
        if block.try_reserve_exact(1 << 20).is_err() {
            failed = true;
            break;
        }
        held.push(block);
    }
    let count = held.len();
    drop(held);
    check!(failed, "{count} MiB allocated without running out");
    check!(count > 0, "not even one MiB could be allocated");
    check_eq!(free_counts(), before);
    Ok(())
}

fn mmio_mappings_are_stable() -> Result<(), String> {
    // The local APIC's registers: its version register is readable.
    let base = topology().local_apic;
    let a = bravo::internals::paging::map_mmio(base, 4096).map_err(String::from)?;
    let b = bravo::internals::paging::map_mmio(base, 4096).map_err(String::from)?;
    check_eq!(a, b);
    #[allow(
        clippy::cast_ptr_alignment,
        reason = "map_mmio returns a page-aligned address; 0x30 keeps 4-byte alignment"
    )]
    let register = a.wrapping_add(0x30).cast::<u32>();
    // SAFETY: offset 0x30 is the local APIC version register, read-only.
    let version = unsafe { register.read_volatile() };
    check!(version & 0xff != 0 && version != u32::MAX, "local APIC version register reads {version:#x}");
    check!(bravo::internals::paging::map_mmio(1 << 50, 4096).is_err(), "an impossible MMIO range was mapped");
    Ok(())
}
