//! # Bravo
//!
//! A unikernel for one Rust microservice per virtual machine. An application
//! is a `no_std`, `no_main` binary that depends on this crate and names its
//! entry with [`main!`]; the kernel provides the boot path (Limine or PVH),
//! console, memory and panic handling.
//!
//! Module map: `boot` (what the loader handed over), `arch` (all direct
//! hardware access), `memory` (frames and heap), `runtime` (kmain, the
//! application's entry and exit), `console` (print and log), `cmdline`
//! (typed kernel options), `topology` and `acpi_tables` (cpus and NUMA
//! nodes from ACPI), `env` (arguments for the application),
//! `testing` (in-kernel checks for test images).

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod cmdline;
pub mod topology;

#[cfg(not(test))]
#[path = "arch/x86_64/mod.rs"]
pub mod arch;
#[cfg(not(test))]
mod acpi_tables;
#[cfg(not(test))]
pub mod boot;
#[cfg(not(test))]
pub mod console;
#[cfg(not(test))]
pub mod env;
#[cfg(not(test))]
pub mod memory;
#[cfg(not(test))]
mod panic;
#[cfg(not(test))]
pub mod runtime;
#[cfg(not(test))]
pub mod testing;

#[cfg(not(test))]
pub use arch::power::ExitCode;
#[cfg(not(test))]
pub use runtime::Termination;

#[doc(hidden)]
pub use alloc::format as alloc_format;
