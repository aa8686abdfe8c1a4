//! Bringing every cpu the MADT lists online.
//!
//! For each secondary cpu the boot cpu prepares, in memory of that cpu's
//! node, its per-cpu block, its own stack and its three interrupt stacks
//! (each above a guard page); then it starts them through the trampoline,
//! one after the other, each as soon as the previous one has left it. Each
//! new cpu loads its own GDT/TSS, IDT and page tables, enables its local
//! APIC, sets up its scheduler, reports online and enters its scheduler
//! loop, while the next ones start. A cpu that does not report in time is
//! logged and left out.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::boot::{MemoryRegion, RegionKind};
use crate::arch::gdt::{IstTops, SECONDARY_IST_STACK_SIZE};
use crate::arch::percpu::{self, PerCpu};
use crate::arch::smp::{wait_online, Startup, Trampoline, CPU_STACK_SIZE, LOW_MEMORY_NEEDED, START_TIMEOUT_MS};
use crate::memory::leak_in;
use crate::memory::stack::GuardedStack;
use crate::topology::Topology;

/// Sets up the boot cpu's scheduler (its local APIC is already on).
pub fn init_boot_cpu() {
    crate::sched::scheduler::init_this_cpu();
    percpu::this().online.store(true, Ordering::Release);
}

/// Starts every other cpu; returns how many came online.
pub fn start_secondary_cpus(topology: &Topology, map: &[MemoryRegion]) -> usize {
    if topology.cpu_count() < 2 {
        return 0;
    }
    let Some(base) = trampoline_window(map) else {
        log::warn!("no free low memory for the cpu start-up trampoline: running on the boot cpu only");
        return 0;
    };
    let trampoline = Trampoline::install(base);
    // Everything is allocated before any cpu runs, so that no page table
    // changes (guard pages) happen while other cpus are starting.
    let prepared: Vec<_> = topology
        .cpus()
        .iter()
        .enumerate()
        .skip(1)
        .filter_map(|(index, cpu)| match prepare(index, cpu.apic_id, topology.node_of_cpu(index)) {
            Some((stack_top, startup)) => Some((index, cpu.apic_id, stack_top, startup)),
            None => {
                log::warn!("no memory to start cpu {index}: left out");
                None
            }
        })
        .collect();
    let mut arrived = Vec::with_capacity(prepared.len());
    for (index, apic_id, stack_top, startup) in prepared {
        if trampoline.launch(apic_id, stack_top, startup) {
            arrived.push((index, apic_id, startup));
        } else {
            log::warn!("cpu {index} (APIC id {apic_id}) did not answer within {START_TIMEOUT_MS} ms: left out");
        }
    }
    let deadline = crate::arch::tsc::now() + crate::arch::tsc::hz() / 1000 * START_TIMEOUT_MS;
    let mut started = 0;
    for (index, apic_id, startup) in arrived {
        if wait_online(startup, deadline) {
            started += 1;
        } else {
            log::warn!("cpu {index} (APIC id {apic_id}) started but did not come online within {START_TIMEOUT_MS} ms");
        }
    }
    started
}

/// A page-aligned window below 1 MiB of usable RAM for the trampoline,
/// above the first page (the real-mode interrupt table and BIOS data).
fn trampoline_window(map: &[MemoryRegion]) -> Option<u64> {
    map.iter().filter(|r| matches!(r.kind, RegionKind::Usable | RegionKind::BootloaderReclaimable)).find_map(|r| {
        let start = r.start.max(0x1000).next_multiple_of(4096);
        (start + LOW_MEMORY_NEEDED <= r.end().min(0xa0000)).then_some(start)
    })
}

/// Allocates a secondary cpu's per-cpu block, stacks and start-up record
/// on its node. Returns its stack top and start-up record.
fn prepare(index: usize, apic_id: u32, node: usize) -> Option<(u64, &'static Startup)> {
    let stack = GuardedStack::new(node, CPU_STACK_SIZE)?;
    let double_fault = GuardedStack::new(node, SECONDARY_IST_STACK_SIZE)?;
    let page_fault = GuardedStack::new(node, SECONDARY_IST_STACK_SIZE)?;
    let interrupt = GuardedStack::new(node, SECONDARY_IST_STACK_SIZE)?;
    let percpu = leak_in(node, PerCpu::new(index, apic_id, node))?;
    let ist = IstTops { double_fault: double_fault.leak(), page_fault: page_fault.leak(), interrupt: interrupt.leak() };
    let startup = leak_in(node, Startup { percpu, ist, main: secondary_main, arrived: AtomicBool::new(false) })?;
    Some((stack.leak(), startup))
}

/// A secondary cpu's kernel code, once its tables and APIC are set up.
fn secondary_main() -> ! {
    crate::sched::scheduler::init_this_cpu();
    percpu::this().online.store(true, Ordering::Release);
    crate::sched::scheduler::run()
}
