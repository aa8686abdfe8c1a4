//! The time-stamp counter as the kernel's clock: its rate, found once at
//! boot (by `calibration`), and nanoseconds since calibration.

use core::arch::x86_64::_rdtsc;
use core::sync::atomic::{AtomicU64, Ordering};

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSC_AT_CALIBRATION: AtomicU64 = AtomicU64::new(0);
static TSC_AT_ENTRY: AtomicU64 = AtomicU64::new(0);

/// Reads the TSC.
pub fn now() -> u64 {
    // SAFETY: rdtsc has no side effects and exists on every x86_64 cpu.
    unsafe { _rdtsc() }
}

/// Notes the TSC at kernel entry (first thing in `kmain`).
pub fn mark_entry() {
    TSC_AT_ENTRY.store(now(), Ordering::Relaxed);
}

/// The TSC at kernel entry.
pub fn at_entry() -> u64 {
    TSC_AT_ENTRY.load(Ordering::Relaxed)
}

/// Nanoseconds since kernel entry (0 before calibration).
pub fn nanos_since_entry() -> u64 {
    nanos_since(at_entry())
}

fn nanos_since(start: u64) -> u64 {
    ticks_to_nanos(now().saturating_sub(start))
}

/// Nanoseconds in `ticks` TSC ticks (0 before calibration).
pub fn ticks_to_nanos(ticks: u64) -> u64 {
    match hz() {
        0 => 0,
        hz => (ticks as u128 * 1_000_000_000 / hz as u128) as u64,
    }
}

/// Sets the rate calibration found; the clock counts from now.
pub(super) fn set_rate(hz: u64) {
    TSC_AT_CALIBRATION.store(now(), Ordering::Relaxed);
    TSC_HZ.store(hz, Ordering::Relaxed);
}

/// TSC ticks per second (0 before calibration).
pub fn hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Nanoseconds since calibration (0 before it).
pub fn nanos_since_boot() -> u64 {
    nanos_since(TSC_AT_CALIBRATION.load(Ordering::Relaxed))
}

/// Busy-waits `micros` microseconds (for hardware delays before the
/// scheduler runs).
pub fn spin_for_micros(micros: u64) {
    let ticks = hz() / 1_000_000 * micros;
    let start = now();
    while now().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}
