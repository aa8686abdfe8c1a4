//! Makes Bravo's linker script findable by name from any crate that depends
//! on `bravo`, inside this workspace or in a repository of its own: the
//! script is copied to this build's output directory as `bravo.ld`, and that
//! directory goes on the link search path of every dependent, where
//! `-C link-arg=-Tbravo.ld` (in `.cargo/config.toml`) finds it. A path
//! relative to the workspace would not resolve from another repository, and
//! an absolute one would tie a service to one checkout.

use std::path::PathBuf;

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    std::fs::copy("linker.ld", out_dir.join("bravo.ld")).expect("kernel/linker.ld is readable and OUT_DIR writable");
    println!("cargo::rerun-if-changed=linker.ld");
    println!("cargo::rustc-link-search=native={}", out_dir.display());
}
