# Bravo's commands. `just` lists them.
#
# Environment: BOOT=limine|limine-uefi|pvh, ACCEL=kvm|tcg, CPUS, MEM (MiB),
# MACHINE=q35|microvm (microvm: PVH boot, virtio over MMIO), NIC=e1000|virtio,
# LIMINE_DIR (where Limine's files are, else /usr/share/limine).

set shell := ["bash", "-euo", "pipefail", "-c"]

kernel_target := "x86_64-unknown-none"
images := "target/" + kernel_target + "/release"

# List the commands
default:
    @just --list

# Build the kernel, every example and every test image
build:
    cargo build --release --target {{kernel_target}} --workspace --exclude bravo-tests --exclude bravo-linux-peer

# Boot an example in QEMU; arguments after NAME go to the application
run-example NAME *ARGS: build
    cargo run -q -p bravo-tests --bin bravo-run -- --append "${CMDLINE:-}{{ if ARGS != "" { " -- " + ARGS } else { "" } }}" {{images}}/{{NAME}}

# Create a service in a repository of its own at PATH (outside this checkout)
new PATH:
    @scripts/new-service "{{ if PATH =~ '^/' { PATH } else { invocation_directory() / PATH } }}"

# Build a hybrid BIOS/UEFI Limine ISO of an example: target/iso/NAME.iso
iso NAME: build
    scripts/make-iso {{images}}/{{NAME}} target/iso/{{NAME}}.iso "${CMDLINE:-}"

# Boot an example halted, with a gdb stub on :1234 (prints the gdb command)
debug NAME: build
    cargo run -q -p bravo-tests --bin bravo-run -- --gdb --append "${CMDLINE:-}" {{images}}/{{NAME}}

# Run every test: host unit tests, then kernel images booted in QEMU
test: build
    cargo test --lib -p bravo -p e1000 -p virtio-net -p igb -p microhttp -p todo -p prometheus-text -p hash-work
    cargo test --doc -p bravo --target {{kernel_target}}
    cargo test -p bravo-tests

# Build the application API's docs (a broken link fails): target/x86_64-unknown-none/doc/bravo/index.html
doc:
    RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" cargo doc --no-deps -p bravo --target {{kernel_target}}
    @echo "API docs: ${CARGO_TARGET_DIR:-target}/{{kernel_target}}/doc/bravo/index.html"

# Run a benchmark: pps, http, conns, boot (each beside a Linux guest), alloc, sched
bench WHAT *ARGS: build
    cargo run -q --release -p bravo-tests --bin bravo-bench -- {{WHAT}} {{ARGS}}

# Mixed load and floods against examples/http for ~10 minutes (root; not in `just test`): --minutes N
soak *ARGS: build
    cargo run -q --release -p bravo-tests --bin bravo-bench -- soak {{ARGS}}
