//! The smallest Bravo program: greets, shows how it was started, returns.
//! Returning from `main` shuts the virtual machine down with success.

#![no_std]
#![no_main]

bravo::main!(main);

fn main() {
    bravo::println!("Hello from Bravo!");
    bravo::println!("booted by {}", bravo::env::loader());
    bravo::println!("kernel command line: {:?}", bravo::env::cmdline());
    for (i, arg) in bravo::env::args().enumerate() {
        bravo::println!("arg {i}: {arg}");
    }
}
