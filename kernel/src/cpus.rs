//! Bringing every cpu the MADT lists online, one after the other.
//!
//! For each secondary cpu the boot cpu prepares, in memory of that cpu's
//! node, its per-cpu block, its own stack and its three interrupt stacks
//! (each above a guard page), then starts it through the trampoline. The
//! new cpu loads its own GDT/TSS, IDT and page tables, enables its local
//! APIC, sets up its scheduler, reports online and enters its scheduler
//! loop. A cpu that does not report in time is logged and left out.

use core::sync::atomic::Ordering;

use crate::arch::gdt::{IstTops, SECONDARY_IST_STACK_SIZE};
use crate::arch::percpu::{self, PerCpu};
use crate::arch::smp::{Startup, Trampoline, CPU_STACK_SIZE, LOW_MEMORY_NEEDED, START_TIMEOUT_MS};
use crate::boot::{MemoryRegion, RegionKind};
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
    let mut started = 0;
    for (index, cpu) in topology.cpus().iter().enumerate().skip(1) {
        let node = topology.node_of_cpu(index);
        match prepare(index, cpu.apic_id, node) {
            Some((stack_top, startup)) => {
                if trampoline.start(cpu.apic_id, stack_top, startup) {
                    started += 1;
                } else {
                    log::warn!("cpu {index} (APIC id {}) did not answer within {START_TIMEOUT_MS} ms: left out", cpu.apic_id);
                }
            }
            None => log::warn!("no memory to start cpu {index}: left out"),
        }
    }
    started
}

/// A page-aligned window below 1 MiB of usable RAM for the trampoline,
/// above the first page (the real-mode interrupt table and BIOS data).
fn trampoline_window(map: &[MemoryRegion]) -> Option<u64> {
    map.iter()
        .filter(|r| matches!(r.kind, RegionKind::Usable | RegionKind::BootloaderReclaimable))
        .find_map(|r| {
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
    let startup = leak_in(node, Startup { percpu, ist, main: secondary_main })?;
    Some((stack.leak(), startup))
}

/// A secondary cpu's kernel code, once its tables and APIC are set up.
fn secondary_main() -> ! {
    crate::sched::scheduler::init_this_cpu();
    percpu::this().online.store(true, Ordering::Release);
    crate::sched::scheduler::run()
}
