//! The interrupt guard: the one way the kernel masks and unmasks this
//! cpu's interrupts.
//!
//! [`disable`] returns an [`IrqGuard`]; while it lives, interrupts are off
//! on this cpu, and dropping it restores the state it found. State that an
//! interrupt handler of the same cpu may also touch is reached through an
//! `&IrqGuard` (see [`CpuLocal`](super::percpu::CpuLocal)). The guard is
//! neither `Send` nor `Sync`: it describes the cpu that made it.
//!
//! The scheduler needs interrupts on for a while *inside* an interrupts-off
//! region: a thread's body runs with them on, and the idle loop sleeps in
//! `hlt` waiting for one. Both take the guard mutably
//! ([`IrqGuard::enabled_during`], [`IrqGuard::halt_until_interrupt`]), so
//! nothing borrowed under the guard can be alive while interrupts are on.

use core::marker::PhantomData;

use x86_64::instructions::interrupts;

/// Interrupts are off on this cpu while an `IrqGuard` lives; dropping it
/// restores the state [`disable`] found.
pub struct IrqGuard {
    /// Whether interrupts were on when the guard was made (and come back
    /// on when it is dropped).
    were_enabled: bool,
    /// Ties the guard to its cpu: `!Send` and `!Sync`.
    _this_cpu: PhantomData<*mut ()>,
}

/// Turns this cpu's interrupts off until the returned guard is dropped.
/// Guards nest: an inner guard found them off and leaves them off.
#[inline]
pub fn disable() -> IrqGuard {
    let were_enabled = interrupts::are_enabled();
    if were_enabled {
        interrupts::disable();
    }
    IrqGuard { were_enabled, _this_cpu: PhantomData }
}

/// Runs `f` with this cpu's interrupts off, then restores them.
#[inline]
pub fn without<R>(f: impl FnOnce(&IrqGuard) -> R) -> R {
    let guard = disable();
    f(&guard)
}

impl IrqGuard {
    /// Runs `f` with interrupts on, and turns them off again before
    /// returning. A new thread's first code uses this for the thread's
    /// body: it starts with interrupts off (switched in by its cpu's
    /// scheduler loop), takes a guard, and runs its body inside.
    #[inline]
    pub fn enabled_during<R>(&mut self, f: impl FnOnce() -> R) -> R {
        interrupts::enable();
        let result = f();
        interrupts::disable();
        result
    }

    /// Enables interrupts and halts in one step (`sti; hlt`: an interrupt
    /// is taken only once the cpu halts, so none slips in between a check
    /// and the halt), then turns them off again after the interrupt that
    /// woke the cpu was handled. The idle loop sleeps this way.
    #[inline]
    pub fn halt_until_interrupt(&mut self) {
        interrupts::enable_and_hlt();
        interrupts::disable();
    }
}

impl Drop for IrqGuard {
    #[inline]
    fn drop(&mut self) {
        if self.were_enabled {
            interrupts::enable();
        }
    }
}
