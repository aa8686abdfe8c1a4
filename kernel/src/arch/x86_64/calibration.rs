//! Finding the clock rates at boot, the one place that uses the TSC, the
//! fixed-rate timers and the local APIC timer together: the TSC's rate
//! ([`calibrate_tsc`], which starts the clock in `tsc`), then the local
//! APIC one-shot timer's ([`calibrate_apic_timer`]).
//!
//! The TSC rate comes from what the cpu or hypervisor declares (CPUID 0x15,
//! 0x4000_0010, 0x16) and from short measurements against whichever
//! fixed-rate timers the machine has (ACPI PM timer, the local APIC timer
//! on QEMU/KVM's 1 GHz bus, PIT channel 0, the RTC), in that order, until
//! two sources agree ([`super::tsc_rate::choose`]). Under TCG nothing is
//! declared (the guest TSC runs at the host's rate), so q35 measures
//! against the PM timer and the APIC timer, microvm against the APIC timer
//! and the PIT, microvm without a PIT against the APIC timer and the RTC
//! (0.75 ms in all; 2.5 ms with the RTC, whose flag only rules out gross
//! errors, polled a few microseconds apart so that QEMU can raise it on time). A rate no second source
//! confirms, or an impossible one, is logged as an error.

use core::arch::x86_64::__cpuid;
use core::sync::atomic::{AtomicU64, Ordering};

use super::apic;
use super::timers::{self, Counter, FirmwareTimers};
use super::tsc;
use super::tsc_rate::{self, Estimate, Source, Verdict};

/// The TSC rate the local APIC timer gave, if it was measured (0 if not):
/// the APIC timer's own rate follows from it.
static LOCAL_APIC_ESTIMATE: AtomicU64 = AtomicU64::new(0);

/// The first measurement lasts 1/2000 s (0.5 ms: a bracketed read is
/// exact to a fraction of a microsecond, so the error stays near 0.05%);
/// confirmations, which only need to be within 1%, half as long.
const FIRST_WINDOW_PER_SECOND: u64 = 2000;
const CONFIRM_WINDOW_PER_SECOND: u64 = 4000;
/// RTC periods counted (4 periods of 2048 Hz: 1.95 ms).
const RTC_PERIODS: u64 = 4;
/// RTC measurements made at most (a busy host can delay one edge).
const RTC_ATTEMPTS: usize = 2;
/// Time between two polls of the RTC's flag (each poll adds up to this
/// much to an edge: 0.5% of 4 periods at most, well inside its tolerance).
const RTC_POLL_MICROS: u64 = 5;
/// Reads of a counter before a measurement is abandoned (a timer that
/// stops moving halfway).
const MAX_READS: u32 = 10_000_000;
/// The rate used when no source gives one, so that time still moves.
const FALLBACK_HZ: u64 = 1_000_000_000;

/// Finds the TSC rate (once; later calls return the first verdict's rate)
/// and starts the clock (`tsc`) with it. `apic_bus_hz` is the local APIC's
/// timer input when the hypervisor is known to fix it.
pub fn calibrate_tsc(firmware: &FirmwareTimers, apic_bus_hz: Option<u64>) -> u64 {
    if tsc::hz() != 0 {
        return tsc::hz();
    }
    let mut estimates = Estimates::default();
    from_cpuid(&mut estimates);
    // Fixed-rate timers, in order of preference, until two sources agree.
    for source in [Source::PmTimer, Source::LocalApic, Source::Pit, Source::Rtc] {
        if tsc_rate::choose(estimates.as_slice()).is_confirmed() {
            break;
        }
        let per_second = if estimates.measured == 0 { FIRST_WINDOW_PER_SECOND } else { CONFIRM_WINDOW_PER_SECOND };
        let attempts = if source == Source::Rtc { RTC_ATTEMPTS } else { 1 };
        for _ in 0..attempts {
            let measured = match source {
                Source::PmTimer => firmware
                    .pm_timer
                    .and_then(|(port, wide)| measure(&mut timers::PmTimer::new(port, wide), per_second)),
                Source::Pit => measure(&mut timers::Pit::start(), per_second),
                Source::LocalApic => {
                    apic_bus_hz.and_then(|bus| measure(&mut apic::FreeRunningTimer::start(bus), per_second))
                }
                _ => measure_rtc(estimates.as_slice().first().map_or(0, |e| e.hz)),
            };
            let Some(hz) = measured else { break };
            if source == Source::LocalApic {
                LOCAL_APIC_ESTIMATE.store(hz, Ordering::Relaxed);
            }
            estimates.push(Estimate { source, hz });
            estimates.measured += 1;
            if tsc_rate::choose(estimates.as_slice()).is_confirmed() {
                break;
            }
        }
    }
    for estimate in estimates.as_slice() {
        log::debug!("tsc: {} says {}.{:03} MHz", estimate.source, estimate.hz / 1_000_000, estimate.hz / 1000 % 1000);
    }
    let verdict = tsc_rate::choose(estimates.as_slice());
    let hz = match verdict {
        Verdict::Confirmed { chosen, by } => {
            log::debug!("tsc: {} MHz from the {}, confirmed by the {by}", chosen.hz / 1_000_000, chosen.source);
            chosen.hz
        }
        Verdict::Unconfirmed { chosen } => {
            log::error!(
                "TSC rate {} MHz from the {} is confirmed by no other timer: times may be wrong",
                chosen.hz / 1_000_000,
                chosen.source
            );
            chosen.hz
        }
        Verdict::Implausible { first } => {
            let clamped = first.hz.clamp(tsc_rate::MIN_PLAUSIBLE_HZ, tsc_rate::MAX_PLAUSIBLE_HZ);
            log::error!(
                "TSC rate {} Hz from the {} is impossible and no timer gives a sane one: using {} MHz, times will be wrong",
                first.hz,
                first.source,
                clamped / 1_000_000
            );
            clamped
        }
        Verdict::Nothing => {
            log::error!(
                "no timer to measure the TSC against: assuming {} MHz, times will be wrong",
                FALLBACK_HZ / 1_000_000
            );
            FALLBACK_HZ
        }
    };
    tsc::set_rate(hz);
    hz
}

/// The estimates gathered so far (a fixed array: there is no heap yet).
struct Estimates {
    list: [Estimate; 8],
    count: usize,
    /// How many of them were measured (not declared).
    measured: usize,
}

impl Default for Estimates {
    fn default() -> Self {
        Self { list: [Estimate { source: Source::Pit, hz: 0 }; 8], count: 0, measured: 0 }
    }
}

impl Estimates {
    fn push(&mut self, estimate: Estimate) {
        if let Some(slot) = self.list.get_mut(self.count) {
            *slot = estimate;
            self.count += 1;
        }
    }

    fn as_slice(&self) -> &[Estimate] {
        &self.list[..self.count]
    }
}

/// The TSC rate measured against the local APIC timer during
/// [`calibrate_tsc`], if it was.
fn local_apic_estimate() -> Option<u64> {
    Some(LOCAL_APIC_ESTIMATE.load(Ordering::Relaxed)).filter(|&hz| hz != 0)
}

/// The rates CPUID declares, in order of trust.
fn from_cpuid(estimates: &mut Estimates) {
    let max_leaf = __cpuid(0).eax;
    if max_leaf >= 0x15 {
        // eax/ebx: TSC/crystal ratio; ecx: crystal frequency (0 if not given).
        let leaf = __cpuid(0x15);
        if leaf.eax != 0 && leaf.ebx != 0 && leaf.ecx != 0 {
            estimates.push(Estimate {
                source: Source::CpuidCrystal,
                hz: leaf.ecx as u64 * leaf.ebx as u64 / leaf.eax as u64,
            });
        }
    }
    // The hypervisor's timing leaf (VMware's, also offered by KVM-based
    // monitors): eax is the TSC rate in kHz.
    if __cpuid(1).ecx & (1 << 31) != 0 && __cpuid(0x4000_0000).eax >= 0x4000_0010 {
        let khz = __cpuid(0x4000_0010).eax as u64;
        if khz != 0 {
            estimates.push(Estimate { source: Source::HypervisorLeaf, hz: khz * 1000 });
        }
    }
    // Leaf 0x16 eax: the base frequency in MHz, which the TSC runs at on
    // most cpus that have the leaf.
    if max_leaf >= 0x16 {
        let mhz = __cpuid(0x16).eax as u64 & 0xffff;
        if mhz != 0 {
            estimates.push(Estimate { source: Source::CpuidBase, hz: mhz * 1_000_000 });
        }
    }
}

/// One reading of a counter bracketed by two TSC reads.
struct Sample {
    /// The TSC halfway between the two reads.
    tsc: u64,
    /// The counter's value.
    count: u64,
}

/// The tightest of five bracketed reads (the one least delayed).
///
/// Never inlined, so that every caller runs the same code: under a binary
/// translator (QEMU's TCG) code is translated the first time it runs, and
/// translating the five (unrolled) reads took 8-20 us inside their
/// brackets, which moved a cold sample's midpoint by microseconds (the
/// PIT's 0.25 ms window came out 1.1-1.5% slow, so it never confirmed).
/// [`measure`] therefore takes one sample to warm the code up first.
#[inline(never)]
fn sample(counter: &mut impl Counter) -> Sample {
    let mut best = (u64::MAX, Sample { tsc: 0, count: 0 });
    for _ in 0..5 {
        let before = tsc::now();
        let count = counter.read();
        let after = tsc::now();
        let spread = after.wrapping_sub(before);
        if spread < best.0 {
            best = (spread, Sample { tsc: before + spread / 2, count });
        }
    }
    best.1
}

/// TSC ticks per second, counted while `counter` advances by its rate
/// divided by `per_second`; `None` if the counter is absent or stalls.
fn measure(counter: &mut impl Counter, per_second: u64) -> Option<u64> {
    if !timers::is_moving(counter) {
        return None;
    }
    let (bits, down) = (counter.bits(), counter.counts_down());
    let window = (counter.hz() / per_second).max(1);
    sample(counter); // translated now, so that the timed samples run warm
    let start = sample(counter);
    let mut reads = 0;
    while tsc_rate::elapsed_count(start.count, counter.read(), bits, down) < window {
        reads += 1;
        if reads == MAX_READS {
            return None;
        }
    }
    let end = sample(counter);
    tsc_rate::rate(
        end.tsc.wrapping_sub(start.tsc),
        tsc_rate::elapsed_count(start.count, end.count, bits, down),
        counter.hz(),
    )
}

/// TSC ticks per second over [`RTC_PERIODS`] rises of the RTC's periodic
/// flag; `None` without an RTC or if the flag does not rise. `rough_hz`,
/// an earlier estimate of the TSC rate (0 if none), spaces the polls
/// [`RTC_POLL_MICROS`] apart.
fn measure_rtc(rough_hz: u64) -> Option<u64> {
    let mut rtc = timers::Rtc::start()?;
    // One period is 488 us; a poll takes at least 1 us, so 100,000 polls
    // mean the flag is not rising.
    const MAX_POLLS: u32 = 100_000;
    let pause = rough_hz / 1_000_000 * RTC_POLL_MICROS;
    rtc.wait_period(MAX_POLLS, || spin_ticks(pause)).then_some(())?;
    let start = tsc::now();
    for _ in 0..RTC_PERIODS {
        rtc.wait_period(MAX_POLLS, || spin_ticks(pause)).then_some(())?;
    }
    tsc_rate::rate(tsc::now() - start, RTC_PERIODS, timers::RTC_PERIODIC_HZ)
}

/// Busy-waits `ticks` TSC ticks (the rate is not known yet).
fn spin_ticks(ticks: u64) {
    let start = tsc::now();
    while tsc::now().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

/// Finds the local APIC one-shot timer's rate (divide by 16), once, on the
/// boot cpu, after the TSC is calibrated (nothing to do with TSC-deadline
/// timers). When the TSC was measured against this timer (`bus_hz`
/// known), the rate follows from that measurement; otherwise it is
/// measured against the TSC over `TIMER_CALIBRATION_MICROS`.
pub fn calibrate_apic_timer(bus_hz: Option<u64>) {
    if apic::has_tsc_deadline() {
        return;
    }
    let tsc_hz = tsc::hz().max(1);
    // The TSC measurement found `estimate` TSC ticks per `bus_hz / 16`
    // timer ticks.
    let derived =
        bus_hz.zip(local_apic_estimate()).map(|(bus, estimate)| (bus / 16) as u128 * tsc_hz as u128 / estimate as u128);
    let hz = derived.map(|hz| hz as u64).unwrap_or_else(|| measure_apic_timer(tsc_hz));
    apic::set_timer_hz(hz);
}

/// The one-shot timer's ticks per second (divide by 16), counted against
/// the TSC.
fn measure_apic_timer(tsc_hz: u64) -> u64 {
    let mut timer = apic::FreeRunningTimer::start(0);
    sample(&mut timer); // warms the code up (see `sample`)
    let start = sample(&mut timer);
    let window = tsc_hz / 1_000_000 * TIMER_CALIBRATION_MICROS;
    while tsc::now().wrapping_sub(start.tsc) < window {
        core::hint::spin_loop();
    }
    let end = sample(&mut timer);
    let counted = tsc_rate::elapsed_count(start.count, end.count, 32, true);
    tsc_rate::rate(counted, end.tsc.wrapping_sub(start.tsc).max(1), tsc_hz).unwrap_or(0)
}

/// How long the one-shot timer's rate is measured.
const TIMER_CALIBRATION_MICROS: u64 = 200;
