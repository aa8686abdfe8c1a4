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

# Run every test: `just lint`, host unit tests, then kernel images booted in QEMU; ends with the skipped tests
test: lint build
    #!/usr/bin/env bash
    set -euo pipefail
    # The harness's `skip` appends `TEST<TAB>REASON` here (tests/src/lib.rs).
    skipped="$(realpath -m "${CARGO_TARGET_DIR:-target}")/skipped-tests"
    mkdir -p "$(dirname "$skipped")"
    : > "$skipped"
    export BRAVO_SKIPPED_TESTS="$skipped"
    just miri
    cargo test --lib -p bravo -p bravo-collections -p e1000 -p virtio-net -p igb -p microhttp -p todo -p prometheus-text -p hash-work
    # The API docs' examples, type-checked against the kernel target (they are `no_run`).
    cargo test --doc -p bravo --target {{kernel_target}}
    status=0
    cargo test -p bravo-tests || status=$?
    if [ -s "$skipped" ]; then
        sort "$skipped" | awk -F '\t' '{ printf "skipped: %s (%s)\n", $1, $2 }'
    else
        echo "skipped: none"
    fi
    exit "$status"

# Crates built for the host, with their tests (clippy sees `cfg(test)` code)
host_crates := "-p bravo-collections -p bravo-tests -p bravo-linux-peer -p e1000 -p igb -p virtio-net -p microhttp -p prometheus-text -p hash-work"

# Check formatting and lint with clippy (warnings denied), host crates first, then the kernel target; lists what failed
lint:
    #!/usr/bin/env bash
    set -uo pipefail
    failed=()
    step() { echo "lint: $*" >&2; "$@" || failed+=("$*"); }
    step cargo clippy {{host_crates}} --all-targets -- -D warnings
    # todo's binary needs the kernel (target_os = "none"): its library and tests on the host.
    step cargo clippy -p todo --lib --tests -- -D warnings
    # The kernel's host unit tests, then every image for the kernel target.
    step cargo clippy -p bravo --lib --tests -- -D warnings
    step cargo clippy --release --target {{kernel_target}} --workspace --exclude bravo-tests --exclude bravo-linux-peer -- -D warnings
    step cargo fmt --all -- --check
    # The API docs: a broken intra-doc link fails.
    step just doc
    if [ ${#failed[@]} -gt 0 ]; then
        printf 'lint failed: %s\n' "${failed[@]}" >&2
        exit 1
    fi

# Run bravo-collections' tests under Miri (undefined behaviour checks); skips, saying why, without nightly's miri
miri:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! cargo +nightly miri --version >/dev/null 2>&1 || [ ! -d "$(rustc +nightly --print sysroot)/lib/rustlib/src/rust/library" ]; then
        reason="the nightly toolchain's miri and rust-src are not installed; .ci/install-deps installs them"
        echo "skipped: miri ($reason)"
        if [ -n "${BRAVO_SKIPPED_TESTS:-}" ]; then printf 'miri\t%s\n' "$reason" >> "$BRAVO_SKIPPED_TESTS"; fi
        exit 0
    fi
    MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}" cargo +nightly miri test -p bravo-collections

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
