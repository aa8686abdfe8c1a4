//! The local APIC of each cpu, through the `x2apic` crate: x2APIC mode
//! (registers as MSRs) where CPUID offers it, xAPIC (registers in an
//! uncached MMIO page) otherwise.
//!
//! Owns the interrupt vectors the kernel itself uses, IPIs (start-up and
//! wake-up), end-of-interrupt, and the per-cpu one-shot timer: the
//! TSC-deadline MSR where the cpu has it, else the APIC's own counter,
//! calibrated once against the TSC (by `calibration`). A stopped timer raises nothing, so an
//! idle cpu is not woken by ticks.

use core::sync::atomic::{AtomicU64, Ordering};

use spin::Once;
use x2apic::lapic::{LocalApic, LocalApicBuilder, TimerDivide, TimerMode};
use x86_64::registers::model_specific::Msr;

use super::percpu::{cpu_id, per_cpu_array, CpuLocal};
use super::timers::Counter;
use super::MAX_CPUS;

/// The timer's vector.
pub const TIMER_VECTOR: u8 = 0x30;
/// The vector of the IPI that wakes a halted cpu for its mailbox.
pub const WAKE_VECTOR: u8 = 0x31;
const ERROR_VECTOR: u8 = 0x3e;
/// The spurious-interrupt vector (no end-of-interrupt is sent for it).
pub const SPURIOUS_VECTOR: u8 = 0xff;

const IA32_TSC_DEADLINE: u32 = 0x6e0;

/// How the local APICs are driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    X2Apic,
    XApic { base: u64 },
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::X2Apic => "x2APIC",
            Mode::XApic { .. } => "xAPIC",
        }
    }
}

/// Facts shared by all cpus, found once on the boot cpu.
struct Shared {
    mode: Mode,
    tsc_deadline: bool,
    /// APIC timer ticks per second at divide-by-16 (when not TSC-deadline).
    timer_hz: AtomicU64,
}

static SHARED: Once<Shared> = Once::new();

/// Each cpu's APIC handle, set by the cpu itself ([`init_this_cpu`]) and
/// borrowed only with its interrupts off, so an interrupt handler (EOI, a
/// wake IPI) never finds it borrowed by the code it interrupted.
static LOCAL: [CpuLocal<Option<LocalApic>>; MAX_CPUS] = per_cpu_array!(cpu => CpuLocal::empty_for_cpu(cpu));

fn with_local<R>(f: impl FnOnce(&mut LocalApic) -> R) -> R {
    super::irq::without(|interrupts_off| {
        let mut apic = LOCAL[cpu_id()].borrow(interrupts_off);
        f(apic.as_mut().expect("local APIC used before its cpu enabled it"))
    })
}

/// The APIC mode in use (after [`init_boot_cpu`]).
pub fn mode() -> Mode {
    SHARED.get().expect("APIC mode read before init").mode
}

/// Whether timers use the TSC-deadline MSR.
pub fn has_tsc_deadline() -> bool {
    SHARED.get().is_some_and(|s| s.tsc_deadline)
}

/// Chooses the mode, maps the xAPIC page if needed, masks the legacy PIC
/// and enables the boot cpu's APIC. The one-shot timer is usable after
/// `calibration::calibrate_apic_timer`, which needs the TSC rate.
pub fn init_boot_cpu() -> Mode {
    let features = super::cpu::features();
    let shared = SHARED.call_once(|| {
        let mode = if features.x2apic {
            Mode::X2Apic
        } else {
            // SAFETY: reading IA32_APIC_BASE has no side effects.
            let phys = unsafe { x2apic::lapic::xapic_base() };
            let base = super::paging::map_mmio(phys, 4096).expect("cannot map the local APIC") as u64;
            Mode::XApic { base }
        };
        Shared { mode, tsc_deadline: features.tsc_deadline, timer_hz: AtomicU64::new(0) }
    });
    mask_legacy_pic();
    init_this_cpu();
    shared.mode
}

/// The local APIC timer's input clock when the hypervisor fixes it: QEMU
/// (TCG) and KVM both run it at 1 GHz (a 1 ns bus cycle).
pub fn hypervisor_bus_hz() -> Option<u64> {
    use core::arch::x86_64::__cpuid;
    if __cpuid(1).ecx & (1 << 31) == 0 {
        return None;
    }
    let leaf = __cpuid(0x4000_0000);
    let mut vendor = [0u8; 12];
    vendor[..4].copy_from_slice(&leaf.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&leaf.ecx.to_le_bytes());
    vendor[8..].copy_from_slice(&leaf.edx.to_le_bytes());
    matches!(&vendor, b"TCGTCGTCGTCG" | b"KVMKVMKVM\0\0\0").then_some(1_000_000_000)
}

/// The boot cpu's APIC timer counting down from its largest count with its
/// interrupt masked, as a [`Counter`] for calibrating the TSC. Dropping it
/// stops the count and unmasks the (silent) timer.
pub struct FreeRunningTimer {
    hz: u64,
}

impl FreeRunningTimer {
    /// Starts the count; `bus_hz` is the timer's input clock.
    pub fn start(bus_hz: u64) -> Self {
        // SAFETY: the timer is this cpu's and nothing arms it yet; it is
        // masked while it runs.
        with_local(|apic| unsafe {
            apic.disable_timer();
            apic.set_timer_initial(u32::MAX);
        });
        Self { hz: bus_hz / 16 }
    }
}

impl Counter for FreeRunningTimer {
    fn read(&mut self) -> u64 {
        // SAFETY: reading the current count has no side effects.
        with_local(|apic| unsafe { apic.timer_current() }) as u64
    }
    fn hz(&self) -> u64 {
        self.hz
    }
    fn bits(&self) -> u32 {
        32
    }
    fn counts_down(&self) -> bool {
        true
    }
}

impl Drop for FreeRunningTimer {
    fn drop(&mut self) {
        // SAFETY: a zero count stops the one-shot timer, which then raises
        // nothing once unmasked.
        with_local(|apic| unsafe {
            apic.set_timer_initial(0);
            apic.enable_timer();
        });
    }
}

/// Enables this cpu's local APIC (every cpu calls this once).
pub fn init_this_cpu() {
    let shared = SHARED.get().expect("boot cpu sets up the APIC first");
    let mut builder = LocalApicBuilder::new();
    builder
        .timer_vector(TIMER_VECTOR as usize)
        .error_vector(ERROR_VECTOR as usize)
        .spurious_vector(SPURIOUS_VECTOR as usize)
        .timer_divide(TimerDivide::Div16)
        // A one-shot timer with count 0 (or a TSC-deadline timer with no
        // deadline) stays silent until armed.
        .timer_mode(if shared.tsc_deadline { TimerMode::TscDeadline } else { TimerMode::OneShot })
        .timer_initial(0);
    if let Mode::XApic { base } = shared.mode {
        builder.set_xapic_base(base);
    }
    let apic = builder.build().expect("local APIC configuration is complete");
    super::irq::without(|interrupts_off| {
        let mut slot = LOCAL[cpu_id()].borrow(interrupts_off);
        let apic = slot.insert(apic);
        // SAFETY: the vectors above have handlers (see `traps`), the timer
        // is silent, and the legacy PIC is masked, so enabling raises
        // nothing unexpected.
        unsafe {
            // The crate programs the LVT entries before it sets the
            // software-enable bit, and a software-disabled APIC (every cpu
            // after INIT) keeps LVT entries masked whatever is written (as
            // KVM enforces; TCG does not). The second call programs them
            // on an enabled APIC, so the timer can fire.
            apic.enable();
            apic.enable();
        }
    });
}

/// The 8259 PIC stays masked: every interrupt comes through the APICs.
fn mask_legacy_pic() {
    use x86_64::instructions::port::Port;
    // SAFETY: writing the interrupt masks of both 8259s only masks their
    // lines; the kernel uses none of them.
    unsafe {
        Port::<u8>::new(0xa1).write(0xff);
        Port::<u8>::new(0x21).write(0xff);
    }
}

/// Sets the one-shot timer's rate (divide by 16), which
/// `calibration::calibrate_apic_timer` finds on the boot cpu.
pub(super) fn set_timer_hz(hz: u64) {
    let shared = SHARED.get().expect("boot cpu sets up the APIC first");
    shared.timer_hz.store(hz, Ordering::Relaxed);
}

/// Arms this cpu's timer to fire once at TSC value `deadline`, or stops it.
pub fn set_timer(deadline: Option<u64>) {
    let shared = SHARED.get().expect("timer used before APIC init");
    if shared.tsc_deadline {
        // SAFETY: IA32_TSC_DEADLINE exists (CPUID said so); writing it arms
        // (or, with 0, disarms) only this cpu's timer.
        unsafe { Msr::new(IA32_TSC_DEADLINE).write(deadline.map_or(0, |d| d.max(1))) };
        return;
    }
    let count = deadline.map_or(0, |d| {
        let ticks = d.saturating_sub(super::tsc::now()) as u128;
        let apic_ticks = ticks * shared.timer_hz.load(Ordering::Relaxed) as u128 / super::tsc::hz().max(1) as u128;
        // Too far ahead: fire at the longest count and re-arm then.
        apic_ticks.clamp(1, u32::MAX as u128) as u32
    });
    // SAFETY: writing the initial count arms (or, with 0, stops) this
    // cpu's one-shot timer.
    with_local(|apic| unsafe { apic.set_timer_initial(count) });
}

/// Signals the end of the interrupt being handled.
pub fn end_of_interrupt() {
    // SAFETY: called at the end of a handler of an APIC-delivered vector.
    with_local(|apic| unsafe { apic.end_of_interrupt() });
}

/// The ICR destination field for `apic_id`: x2APIC takes the 32-bit id,
/// xAPIC the 8-bit id in the top byte (the crate writes the high half as is).
fn destination(apic_id: u32) -> u32 {
    match mode() {
        Mode::X2Apic => apic_id,
        Mode::XApic { .. } => apic_id << 24,
    }
}

/// Waits until an xAPIC has sent the previous IPI (x2APIC needs no wait).
fn wait_for_delivery(apic: &LocalApic) {
    if matches!(mode(), Mode::XApic { .. }) {
        // SAFETY: reading the ICR's delivery status has no side effects.
        while unsafe { apic.get_ipi_delivery_status() } {
            core::hint::spin_loop();
        }
    }
}

/// Sends interrupt `vector` to the cpu with `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) {
    with_local(|apic| {
        wait_for_delivery(apic);
        // SAFETY: a fixed interrupt on a vector the kernel handles.
        unsafe { apic.send_ipi(vector, destination(apic_id)) };
    });
}

/// INIT, then a start-up IPI pointing at `page` (the trampoline's page
/// number), without the MP specification's 10 ms wait: current cpus,
/// QEMU and KVM take the start-up IPI right after INIT (as Linux relies on
/// for modern cpus). The caller polls for the cpu and sends
/// [`resend_startup`] if it does not show up.
pub fn start_cpu(apic_id: u32, page: u8) {
    let dest = destination(apic_id);
    // SAFETY: INIT resets only the target cpu, which the kernel has not
    // started yet (or gave up on).
    with_local(|apic| unsafe { apic.send_init_ipi(dest) });
    resend_startup(apic_id, page);
}

/// A (further) start-up IPI to `apic_id`; a cpu already running ignores it.
pub fn resend_startup(apic_id: u32, page: u8) {
    let dest = destination(apic_id);
    with_local(|apic| {
        wait_for_delivery(apic);
        // SAFETY: the start-up IPI makes the target run the trampoline at
        // `page`, which the caller has prepared.
        unsafe { apic.send_sipi(page, dest) };
    });
}

/// Puts a cpu that did not answer back into wait-for-SIPI.
pub fn reset_cpu(apic_id: u32) {
    let dest = destination(apic_id);
    // SAFETY: INIT resets only that cpu, which the kernel has given up on.
    with_local(|apic| unsafe { apic.send_init_ipi(dest) });
}
