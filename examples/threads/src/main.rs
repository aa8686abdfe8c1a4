//! Threads across the cpus:
//!
//! 1. a thread is created on every cpu *by that cpu* (`spawn_on` sends the
//!    closure there in a message; that cpu allocates the thread's control
//!    block and stack from its own NUMA node) and reports where its stack
//!    and a heap block of its own came from;
//! 2. a token goes around a ring of threads, one per cpu, each passing it
//!    to the next cpu's thread over a channel, `ROUNDS` times.
//!
//! Run it with `CPUS=4 just run-example threads`.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;

use bravo::internals::paging::virt_to_phys;
use bravo::println;
use bravo::sync::channel;
use bravo::thread::{self, SpawnError};
use bravo::time::Instant;

bravo::main!(main);

const ROUNDS: u64 = 1000;
const STOP: u64 = u64::MAX;

fn node_of(addr: u64) -> usize {
    bravo::internals::memory::node_of_phys(virt_to_phys(addr))
}

fn main() -> Result<(), SpawnError> {
    let cpus = thread::cpu_count();
    println!("threads: {cpus} cpus, {} NUMA nodes", bravo::memory::node_count());
    for cpu in 0..cpus {
        let report = thread::spawn_on(cpu, move || {
            let on_stack = 0u8;
            let stack = core::hint::black_box(&on_stack) as *const u8 as u64;
            let block = Box::new([0u8; 256]);
            let heap = &*block as *const [u8; 256] as u64;
            (thread::current_cpu(), thread::current_id(), node_of(stack), node_of(heap))
        })?
        .join();
        let (ran_on, id, stack_node, heap_node) = report;
        let id = id.map(|i| alloc::format!("{i}")).unwrap_or_default();
        println!(
            "thread {id} for cpu {cpu} ran on cpu {ran_on}: stack on node {stack_node}, heap block on node {heap_node}"
        );
    }

    // The ring: thread i waits for the token from i-1 and passes it on.
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..cpus).map(|_| channel::channel::<u64>()).unzip();
    let mut receivers: Vec<_> = receivers.into_iter().map(Some).collect();
    let started = Instant::now();
    let mut members = Vec::new();
    for cpu in 0..cpus {
        let inbox = receivers[cpu].take().expect("one receiver per member");
        let next = senders[(cpu + 1) % cpus].clone();
        members.push(thread::spawn_on(cpu, move || {
            let mut passes = 0u64;
            while let Ok(token) = inbox.recv() {
                if token == STOP {
                    let _ = next.send(STOP); // goes around once, ending each member
                    break;
                }
                passes += 1;
                let out = if token == ROUNDS * cpus as u64 { STOP } else { token + 1 };
                if next.send(out).is_err() {
                    break;
                }
            }
            passes
        })?);
    }
    senders[0].send(1).expect("the first member waits");
    drop(senders);
    let passes: u64 = members.into_iter().map(|m| m.join()).sum();
    let elapsed = started.elapsed();
    println!(
        "ring: the token went {ROUNDS} times around {cpus} cpus ({passes} passes) in {} ms, {} ns per pass",
        elapsed.as_millis(),
        elapsed.as_nanos() / passes.max(1) as u128
    );
    Ok(())
}
