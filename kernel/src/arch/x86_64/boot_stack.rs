//! The stack both boot paths run `kmain` on, in the image's `.bss`, above
//! an unmapped guard page (see `linker.ld`).
//!
//! Entry code points `rsp` at `BOOT_STACK + BOOT_STACK_SIZE` (stacks grow
//! down).

/// Size of the boot stack (the boot cpu keeps running on it).
pub const BOOT_STACK_SIZE: usize = 256 * 1024;

#[repr(C, align(4096))]
pub struct Stack(pub [u8; BOOT_STACK_SIZE]);

#[unsafe(link_section = ".bss.stack.boot")]
pub static mut BOOT_STACK: Stack = Stack([0; BOOT_STACK_SIZE]);
