//! The time-stamp counter as the kernel's clock: its frequency, found once
//! (CPUID leaf 0x15 when it names the crystal, else leaf 0x16's base
//! frequency, otherwise measured against the PIT), and nanoseconds since calibration.

use core::arch::x86_64::{__cpuid, _rdtsc};
use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSC_AT_CALIBRATION: AtomicU64 = AtomicU64::new(0);
static TSC_AT_ENTRY: AtomicU64 = AtomicU64::new(0);

const PIT_HZ: u64 = 1_193_182;
/// How long the PIT measurement lasts (in PIT ticks): 10 ms.
const PIT_TICKS: u64 = PIT_HZ / 100;

/// Reads the TSC.
pub fn now() -> u64 {
    // SAFETY: rdtsc has no side effects and exists on every x86_64 cpu.
    unsafe { _rdtsc() }
}

/// Notes the TSC at kernel entry (first thing in `kmain`).
pub fn mark_entry() {
    TSC_AT_ENTRY.store(now(), Ordering::Relaxed);
}

/// Nanoseconds since kernel entry (0 before calibration).
pub fn nanos_since_entry() -> u64 {
    nanos_since(TSC_AT_ENTRY.load(Ordering::Relaxed))
}

fn nanos_since(start: u64) -> u64 {
    match hz() {
        0 => 0,
        hz => (now().saturating_sub(start) as u128 * 1_000_000_000 / hz as u128) as u64,
    }
}

/// Where the frequency came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Cpuid,
    Pit,
}

/// Finds the TSC frequency (once; later calls return the first result).
pub fn calibrate() -> (u64, Source) {
    if TSC_HZ.load(Ordering::Relaxed) != 0 {
        return (TSC_HZ.load(Ordering::Relaxed), Source::Cpuid);
    }
    let (hz, source) = match from_cpuid() {
        Some(hz) => (hz, Source::Cpuid),
        None => (measure_with_pit(), Source::Pit),
    };
    TSC_AT_CALIBRATION.store(now(), Ordering::Relaxed);
    TSC_HZ.store(hz.max(1), Ordering::Relaxed);
    (hz, source)
}

/// TSC ticks per second (0 before [`calibrate`]).
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

fn from_cpuid() -> Option<u64> {
    let max_leaf = __cpuid(0).eax;
    if max_leaf >= 0x15 {
        // eax/ebx: TSC/crystal ratio; ecx: crystal frequency (0 if not given).
        let leaf = __cpuid(0x15);
        if leaf.eax != 0 && leaf.ebx != 0 && leaf.ecx != 0 {
            return Some(leaf.ecx as u64 * leaf.ebx as u64 / leaf.eax as u64);
        }
    }
    // Leaf 0x16 eax: the base frequency in MHz, which the TSC runs at on
    // cpus that have the leaf but no crystal frequency.
    (max_leaf >= 0x16).then(|| __cpuid(0x16).eax as u64 * 1_000_000).filter(|&hz| hz != 0)
}

/// Counts TSC ticks while PIT channel 2 counts down 10 ms.
fn measure_with_pit() -> u64 {
    let mut gate = Port::<u8>::new(0x61);
    let mut command = Port::<u8>::new(0x43);
    let mut channel2 = Port::<u8>::new(0x42);
    // SAFETY: channel 2 of the PIT (the speaker timer) is used by nothing
    // else; the speaker output stays off (bit 1 of port 0x61 cleared).
    unsafe {
        let saved = gate.read();
        gate.write((saved & !0x02) | 0x01); // gate on, speaker off
        command.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0
        channel2.write((PIT_TICKS & 0xff) as u8);
        channel2.write((PIT_TICKS >> 8) as u8);
        let start = now();
        let mut spins = 0u64;
        // Output (bit 5) goes high when the count reaches zero.
        while gate.read() & 0x20 == 0 && spins < 100_000_000 {
            spins += 1;
        }
        let ticks = now() - start;
        gate.write(saved);
        ticks * PIT_HZ / PIT_TICKS
    }
}
