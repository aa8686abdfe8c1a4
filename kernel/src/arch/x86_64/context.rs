//! Switching between kernel threads on one cpu.
//!
//! A switched-out thread is just its saved stack pointer: [`switch`] pushes
//! the callee-saved registers (the System V ABI's rbx, rbp, r12-r15; the
//! kernel uses no floating-point or vector state), stores `rsp`, loads the
//! other thread's `rsp`, pops its registers and returns into it. A new
//! thread's stack is prepared by [`prepare_stack`] so that its first
//! switch-in "returns" into `thread_start`, which calls the entry.

/// The entry of a new thread: receives the argument given to
/// [`prepare_stack`] and never returns.
pub type ThreadEntry = extern "C" fn(arg: usize) -> !;

/// Saves the current context, storing its stack pointer in `*save`, and
/// resumes the context whose stack pointer is `resume`.
///
/// # Safety
/// `resume` must be a stack pointer saved by `switch` or made by
/// [`prepare_stack`], whose stack is live and not running on any cpu;
/// interrupts must be off.
#[unsafe(naked)]
pub unsafe extern "C" fn switch(save: *mut u64, resume: u64) {
    core::arch::naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov [rdi], rsp",
        "mov rsp, rsi",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    )
}

/// Where a new thread's first switch-in returns to: moves the argument
/// (parked in r12) and entry (r13) into place and calls the entry with a
/// 16-byte aligned stack.
#[unsafe(naked)]
extern "C" fn thread_start() -> ! {
    core::arch::naked_asm!("mov rdi, r12", "xor ebp, ebp", "call r13", "ud2")
}

/// Lays out the stack ending at `top` so that switching to the returned
/// stack pointer calls `entry(arg)`.
///
/// # Safety
/// `top` must be the 16-byte aligned top of a writable stack of at least
/// 64 bytes that nothing else uses.
pub unsafe fn prepare_stack(top: u64, entry: ThreadEntry, arg: usize) -> u64 {
    // Popped by `switch` in this order: r15, r14, r13, r12, rbx, rbp, ret.
    let frame: [u64; 7] = [0, 0, entry as *const () as u64, arg as u64, 0, 0, thread_start as *const () as u64];
    // After the final `ret`, rsp is `top` (16-byte aligned), so the `call`
    // in thread_start gives the entry the ABI's alignment.
    let rsp = top - frame.len() as u64 * 8;
    // SAFETY: the caller guarantees the 56 bytes below `top` are ours.
    unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), rsp as *mut u64, frame.len()) };
    rsp
}
