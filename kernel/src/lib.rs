//! # Bravo
//!
//! A unikernel for one Rust microservice per virtual machine. The kernel
//! boots (Limine or PVH), brings up every cpu with its own scheduler, the
//! memory of each NUMA node and the network, then calls the application's
//! `main` on cpu 0. When `main` returns the virtual machine shuts down.
//!
//! An application is a `no_std`, `no_main` binary that depends on this
//! crate, names its entry with [`main!`] and uses:
//!
//! | module | what a service uses it for |
//! |---|---|
//! | [`thread`] | threads pinned to a cpu: [`thread::spawn`], [`thread::spawn_on`], [`thread::sleep`], [`thread::cpu_count`] |
//! | [`sync`] | [`sync::Mutex`] and [`sync::channel`] between threads on any cpu |
//! | [`net`] | [`net::TcpListener`], [`net::TcpStream`], [`net::UdpSocket`] |
//! | [`time`] | the monotonic clock: [`time::Instant`], [`time::uptime`] |
//! | [`env`](mod@env) | the application's arguments: [`env::args`] |
//! | [`memory`] | per-node memory statistics and pressure: [`memory::stats`], [`memory::pressure`] |
//! | [`println!`], [`print!`] | the serial console |
//!
//! `alloc` works as usual (`Box`, `Vec`, `String`, `Arc`): each allocation
//! comes from the NUMA node of the cpu that makes it.
//!
//! # An application
//!
//! A TCP service that answers every connection on its own thread, on the
//! cpu whose network stack accepted it (so no request crosses cpus):
//!
//! ```no_run
//! #![no_std]
//! #![no_main]
//!
//! use core::time::Duration;
//!
//! use bravo::net::{NetError, TcpListener, TcpStream};
//! use bravo::{println, thread};
//!
//! bravo::main!(main);
//!
//! fn main() -> Result<(), NetError> {
//!     // The port comes from the command line: `... -- 8080`.
//!     let port = bravo::env::args().next().and_then(|p| p.parse().ok()).unwrap_or(8080);
//!     let (address, _prefix) = bravo::net::wait_for_address(Duration::from_secs(30))?;
//!     let listener = TcpListener::bind(port)?;
//!     println!("listening on {address}:{port}, {} cpus", thread::cpu_count());
//!     loop {
//!         let (stream, peer) = listener.accept()?;
//!         let cpu = stream.cpu();
//!         if let Err(e) = thread::spawn_on(cpu, move || serve(stream)) {
//!             println!("{peer}: no thread on cpu {cpu}: {e}");
//!         }
//!     }
//! }
//!
//! /// Echoes what the client sends until it closes.
//! fn serve(mut stream: TcpStream) -> Result<(), NetError> {
//!     let mut buf = [0u8; 1024];
//!     loop {
//!         let n = stream.read(&mut buf)?;
//!         if n == 0 {
//!             return stream.close();
//!         }
//!         stream.write_all(&buf[..n])?;
//!     }
//! }
//! ```
//!
//! Its `Cargo.toml` depends on `bravo`, and `panic = "abort"` in its
//! profiles; `just new PATH` creates such a service, `just run-example
//! NAME` boots one of `examples/` in QEMU.
//!
//! # Where things run
//!
//! A thread stays on the cpu it was created on. [`thread::spawn`] starts a
//! thread on the current cpu, [`thread::spawn_on`] on any cpu (that cpu
//! allocates the thread's stack from its own node). Scheduling is
//! cooperative: a thread runs until it blocks (a socket call, a channel
//! receive, a mutex, [`thread::sleep`]) or calls [`thread::yield_now`].
//! A thread that panics ends the virtual machine with failure.
//!
//! # Kernel internals
//!
//! Module map of the kernel itself (none of it is public), from the bottom
//! up; each imports only modules below it: `arch` (all direct hardware
//! access: the interrupt guard and per-cpu data, boot protocols and what
//! the loader handed over, paging, traps, APIC, TSC), `topology`,
//! `acpi_tables`, `cmdline` and `pci` (what the machine is made of),
//! `memory` (frames, node heaps, per-cpu caches, lazily committed stacks),
//! `sched` (per-cpu schedulers, run queues, timers, messages between
//! cpus), `sync` (wait queue, mutex, channel), `thread` (spawning and
//! joining), `time` (monotonic clock), `net` (NIC drivers + smoltcp on
//! the network cpus, sockets), `console` (print and log), `env`
//! (arguments for the application), `boot_phases` (how long each boot
//! step took), `runtime` (kmain, the application's entry and exit),
//! `testing` (in-kernel checks for test images). The intrusive list and
//! the mailboxes' ring are the `bravo-collections` crate.

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

pub(crate) mod cmdline;
// On the host only the parsers' tests use it, not the kernel's callers.
mod mptable;
#[cfg_attr(test, allow(dead_code))]
pub(crate) mod topology;

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
pub(crate) mod arch;
/// The parts of `arch` that are pure logic (capacities, choosing the TSC
/// rate), tested on the host.
#[cfg(test)]
#[path = "arch/x86_64"]
pub(crate) mod arch {
    mod limits;
    #[allow(dead_code)] // the sources the kernel measures are not built here
    pub mod tsc_rate;
    pub use limits::{MAX_CPUS, MAX_IO_APICS};
}
#[cfg(not(test))]
mod acpi_tables;
#[cfg(not(test))]
mod boot_phases;
#[cfg(not(test))]
pub(crate) mod console;
#[cfg(not(test))]
mod cpus;
/// How the application was started: its arguments ([`env::args`], the
/// words after `--` on the kernel command line), the whole command line
/// and the loader.
#[cfg(not(test))]
pub mod env;
/// Memory as a service sees it: per-node statistics ([`memory::stats`],
/// [`memory::node_count`]) for its metrics, and the pressure signal
/// ([`memory::pressure`]) it reads per request to refuse new data before
/// memory runs out. Allocation itself is `alloc`'s (`Box`, `Vec`, ...):
/// each allocation comes from the current cpu's NUMA node, and
/// `Vec::try_reserve` fails cleanly when the node is short.
///
/// ```no_run
/// # #![no_std]
/// # #![no_main]
/// # bravo::main!(main);
/// # fn main() {
/// use bravo::memory::{self, Level};
///
/// for node in 0..memory::node_count() {
///     let stats = memory::stats(node);
///     bravo::println!("node {node}: {} of {} bytes free", stats.free, stats.total);
/// }
/// match memory::pressure().level {
///     Level::Normal => { /* take new data */ }
///     Level::Low | Level::Critical => { /* answer 503; finish what is in flight */ }
/// }
/// # }
/// ```
///
/// The rest of this page describes how the kernel manages memory.
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
pub(crate) mod pci;
#[cfg(not(test))]
#[allow(unsafe_code)]
pub(crate) mod runtime;
#[cfg(not(test))]
#[allow(unsafe_code)]
pub(crate) mod sched;
#[cfg(not(test))]
pub mod sync;
#[cfg(not(test))]
pub(crate) mod testing;
#[cfg(not(test))]
pub mod time;

#[cfg(not(test))]
pub use arch::power::ExitCode;
#[cfg(not(test))]
pub use runtime::Termination;

#[cfg(not(test))]
pub mod thread;

/// What the kernel's own test and benchmark images (`tests/images/*`,
/// `examples/threads`) reach below the application API, and what the
/// exported macros expand to. Not part of the API: it changes with the
/// kernel, without notice.
#[doc(hidden)]
#[cfg(not(test))]
pub mod internals {
    /// Console output behind `print!` and `println!`.
    pub use crate::console::_print as print;
    /// `format!` for the `check!` macros (the caller may not name `alloc`).
    pub use alloc::format;

    /// Address translation and device mappings.
    pub mod paging {
        pub use crate::arch::paging::{map_mmio, phys_to_virt, virt_to_phys};
    }

    /// The time stamp counter, for benchmarks measuring in ticks.
    pub mod tsc {
        /// TSC ticks per second (0 before the clock is calibrated).
        pub fn hz() -> u64 {
            crate::arch::tsc::hz()
        }

        /// The time stamp counter now.
        pub fn now() -> u64 {
            crate::arch::tsc::now()
        }
    }

    /// Frames, the node heaps and the lazily committed ranges.
    pub mod memory {
        pub use crate::memory::frames::{alloc_frames, alloc_frames_exact, free_frames};
        pub use crate::memory::heap::alloc_in;

        /// The node owning physical address `phys`.
        pub fn node_of_phys(phys: u64) -> usize {
            crate::memory::node_of_phys(phys)
        }

        /// The buddy frame allocators.
        pub mod frames {
            pub use crate::memory::frames::{stats, NodeStats};
        }

        /// The node heaps and the global allocator.
        pub mod heap {
            pub use crate::memory::heap::{dealloc, stats, HeapStats, NumaAllocator};
        }

        /// Lazily committed ranges.
        pub mod lazy {
            pub use crate::memory::lazy::{committed_between, fill_reserve, stats, Buffer, Kind, LazyStats, Range};
        }
    }

    /// The running thread's stack and control block.
    pub mod sched {
        pub use crate::sched::{current_control_block, current_stack, STACK_SIZE};
    }

    /// In-kernel test suites: a list of `Test`s run by `run_tests`, each
    /// failing through `check!`/`check_eq!`.
    pub mod testing {
        pub use crate::testing::{run_tests, Test};
        pub use crate::{__bravo_check as check, __bravo_check_eq as check_eq};
    }

    /// Cpus and NUMA nodes as found in ACPI.
    pub mod topology {
        pub use crate::topology::{get, Topology, MAX_NODES};
    }
}
