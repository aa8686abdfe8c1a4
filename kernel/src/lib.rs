//! # Bravo
//!
//! A unikernel for one Rust microservice per virtual machine. An application
//! is a `no_std`, `no_main` binary that depends on this crate and names its
//! entry with [`main!`]; the kernel provides the boot path (Limine or PVH),
//! console, memory, every cpu with its own scheduler ([`thread`]),
//! blocking primitives ([`sync`]), TCP/UDP sockets ([`net`]), time and
//! panic handling.
//!
//! Module map: `arch` (all direct hardware access, and what the loader
//! handed over), `memory` (frames, heap, stacks), `sched` (per-cpu
//! schedulers, threads, messages between cpus), `sync` (wait queue, mutex,
//! channel), `time` (monotonic clock),
//! `boot_phases` (how long each boot step took), `pci` (devices), `net` (e1000 +
//! smoltcp on the network cpu, sockets), `runtime` (kmain, the
//! application's entry and exit), `console` (print and log), `cmdline`
//! (typed kernel options), `topology` and `acpi_tables` (cpus and NUMA
//! nodes from ACPI), `env` (arguments for the application),
//! `testing` (in-kernel checks for test images).

#![cfg_attr(not(test), no_std)]
// Unsafe code only where a module declaration below allows it: `arch`
// (hardware, boot protocols), `memory` (frames, heap, lazily committed
// memory), `sched` (context switches, thread control blocks and the
// lists through them), `runtime` (the entry symbols between
// `arch::boot`, the kernel and the application) and, in `net`, `lent` and
// `socket_memory` (buffers lent across threads, lazily committed socket
// buffers).
#![deny(unsafe_code)]

extern crate alloc;

pub mod cmdline;
pub mod topology;
mod mptable;

/// The lazily committed region's bookkeeping, tested on the host (in the
/// kernel it is `memory::lazy`'s own module).
#[cfg(test)]
#[path = "memory/lazy/slots.rs"]
mod lazy_slots;
/// The frame allocators' not-yet-given RAM, tested on the host.
#[cfg(test)]
#[path = "memory/pending.rs"]
mod memory_pending;

#[cfg(not(test))]
#[path = "arch/x86_64/mod.rs"]
#[allow(unsafe_code)]
pub mod arch;
/// The parts of `arch` that are pure logic (capacities, choosing the TSC
/// rate), tested on the host.
#[cfg(test)]
#[path = "arch/x86_64"]
pub mod arch {
    mod limits;
    pub mod tsc_rate;
    pub use limits::{MAX_CPUS, MAX_IO_APICS};
}
#[cfg(not(test))]
mod acpi_tables;
#[cfg(not(test))]
mod boot_phases;
#[cfg(not(test))]
pub mod console;
#[cfg(not(test))]
mod cpus;
#[cfg(not(test))]
pub mod env;
#[cfg(not(test))]
#[allow(unsafe_code)]
pub mod memory;
#[cfg(not(test))]
pub mod net;
/// The parts of `net` that are pure logic, unit-tested on the host.
#[cfg(test)]
#[path = "net"]
mod net {
    #[allow(dead_code)] // only NetError::NoBufferSpace is used by the tests
    mod error;
    // Parts the kernel uses but these tests do not.
    #[allow(dead_code)]
    mod ingress_guard;
    mod listener;
    #[allow(dead_code)]
    mod sockets;
    pub use error::NetError;
}
#[cfg(not(test))]
mod panic;
#[cfg(not(test))]
pub mod pci;
#[cfg(not(test))]
#[allow(unsafe_code)]
pub mod runtime;
#[cfg(not(test))]
#[allow(unsafe_code)]
pub mod sched;
#[cfg(not(test))]
pub mod sync;
#[cfg(not(test))]
pub mod testing;
#[cfg(not(test))]
pub mod thread;
#[cfg(not(test))]
pub mod time;

#[cfg(not(test))]
pub use arch::power::ExitCode;
#[cfg(not(test))]
pub use runtime::Termination;


#[doc(hidden)]
pub use alloc::format as alloc_format;
