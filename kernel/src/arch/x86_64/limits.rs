//! The fixed capacities the hardware layer sizes its tables by (and the
//! kernel above it with them): how many cpus and I/O APICs a machine may
//! have. Plain constants, so the host tests of `topology` use them too.

/// Most cpus the kernel runs on (APIC ids need not be dense: this bounds
/// the count, not the ids).
pub const MAX_CPUS: usize = 256;
/// Most I/O APICs the kernel maps (QEMU's microvm has two).
pub const MAX_IO_APICS: usize = 4;
