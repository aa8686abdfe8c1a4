//! `bravo-run`: boots a Bravo image in QEMU with the terminal as its serial
//! console (what `just run-example` and `just debug` use).
//!
//! ```text
//! bravo-run [--gdb] [--append CMDLINE] IMAGE
//! ```
//!
//! The environment chooses the machine: `MACHINE=q35|microvm` (default
//! q35; microvm is QEMU's Firecracker-like machine: PVH boot, no PCI, the
//! card on virtio over MMIO; QEMU `-M` options may follow, e.g.
//! `microvm,pit=off`), `NIC=e1000|virtio` (default: e1000 on q35, virtio on
//! microvm), `BOOT=limine|limine-uefi|pvh`
//! (default: Limine when installed, else PVH; always PVH on microvm),
//! `ACCEL=kvm|tcg` (default: KVM
//! only where the cpu runs guests natively), `CPUS`, `MEM` (MiB),
//! `FORWARD` (the guest's network: the card on QEMU user networking with
//! `HOST:GUEST` port pairs forwarded from 127.0.0.1 for TCP and UDP,
//! comma-separated; default `$PORT:80` with `PORT` 8080; `none` for no
//! NIC) and `QEMU_ARGS`
//! (extra QEMU arguments, split on spaces). The exit status is 0 when the
//! kernel ends with success, 1 when it ends with failure.

use std::process::{exit, Stdio};

use bravo_tests::{limine_dir, Accel, Boot, Machine, MachineType, Nic, QEMU_FAILURE, QEMU_SUCCESS};

fn fail(message: &str) -> ! {
    eprintln!("bravo-run: {message}");
    exit(2)
}

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().unwrap_or_else(|_| fail(&format!("{name}={v}: expected a number"))),
        _ => default,
    }
}

/// Parses `FORWARD` (`8080:80,8007:7`, or `none`).
fn forwards() -> Option<Vec<(u16, u16)>> {
    let port = std::env::var("PORT").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "8080".into());
    let spec = std::env::var("FORWARD").ok().filter(|f| !f.is_empty()).unwrap_or_else(|| format!("{port}:80"));
    if spec == "none" {
        return None;
    }
    let pair = |p: &str| -> Option<(u16, u16)> {
        let (host, guest) = p.trim().split_once(':')?;
        Some((host.parse().ok()?, guest.parse().ok()?))
    };
    Some(spec.split(',').map(|p| pair(p).unwrap_or_else(|| fail(&format!("FORWARD={spec}: expected HOST:GUEST[,HOST:GUEST] or none")))).collect())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut gdb, mut append, mut image) = (false, String::new(), None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--gdb" => gdb = true,
            "--append" => append = args.next().unwrap_or_else(|| fail("--append needs a value")),
            "-h" | "--help" => {
                println!("usage: bravo-run [--gdb] [--append CMDLINE] IMAGE   (env: MACHINE, NIC, BOOT, ACCEL, CPUS, MEM, PORT, FORWARD, QEMU_ARGS)");
                return;
            }
            _ if image.is_none() && !arg.starts_with('-') => image = Some(arg),
            _ => fail(&format!("unexpected argument `{arg}` (see --help)")),
        }
    }
    let image = image.unwrap_or_else(|| fail("which image? (see --help)"));
    let (machine_type, machine_options) = MachineType::from_env_or_default().unwrap_or_else(|e| fail(&e));
    let nic = Nic::from_env_or_default(machine_type).unwrap_or_else(|e| fail(&e));
    let boot_chosen = std::env::var("BOOT").is_ok_and(|b| !b.is_empty());
    let boot = match machine_type {
        // microvm has no firmware that boots an ISO: PVH unless asked
        // otherwise (and then `Machine::command` says why not).
        MachineType::Microvm if !boot_chosen => Boot::Pvh,
        _ => Boot::from_env_or_default().unwrap_or_else(|e| fail(&e)),
    };
    let accel = Accel::from_env_or_default().unwrap_or_else(|e| fail(&e));

    let machine = Machine::new(&image)
        .machine_type(machine_type)
        .machine_options(&machine_options)
        .nic(nic)
        .boot(boot)
        .accel(accel)
        .cpus(env_number("CPUS", 1))
        .memory_mib(env_number("MEM", 256))
        .cmdline(&append)
        .gdb(gdb);
    let forwards = forwards();
    let machine = match &forwards {
        Some(forwards) => machine.user_net(forwards),
        None => machine,
    };
    let machine = machine.args(std::env::var("QEMU_ARGS").unwrap_or_default().split_whitespace());
    let why = match (boot, boot_chosen) {
        (_, true) => "chosen by BOOT".to_string(),
        (Boot::Pvh, false) if machine_type == MachineType::Microvm => "microvm boots by PVH".to_string(),
        (Boot::Pvh, false) => format!("{}; BOOT=limine to change", limine_dir().unwrap_err()),
        _ => "Limine found; BOOT=pvh to change".to_string(),
    };
    eprintln!(
        "bravo-run: booting {} by {boot:?} under {} on {} ({why})",
        machine.image().display(),
        accel.name().to_uppercase(),
        machine_type.name(),
    );
    if forwards.is_some() {
        eprintln!("bravo-run: network card: {} (NIC=e1000|virtio to change)", machine_type.nic_device(nic).map(|d| d.split(',').next().unwrap_or(d)).unwrap_or_else(|e| fail(&e)));
    }
    for (host, guest) in forwards.iter().flatten() {
        match guest {
            80 => eprintln!("bravo-run: the service's port 80 is at http://127.0.0.1:{host}/ (Ctrl-C to stop)"),
            _ => eprintln!("bravo-run: guest port {guest} is at 127.0.0.1:{host} (tcp and udp)"),
        }
    }
    if gdb {
        eprintln!("bravo-run: QEMU is halted with a gdb stub on :1234; in another terminal run:");
        eprintln!(
            "    gdb {} -ex 'set architecture i386:x86-64' -ex 'target remote :1234' -ex 'hbreak bravo::runtime::kmain' -ex continue",
            machine.image().display()
        );
    }

    let mut cmd = machine.command().unwrap_or_else(|e| fail(&e));
    // QEMU gets the terminal: serial on stdio, Ctrl-C ends it.
    cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit()).stderr(Stdio::inherit());
    let status = cmd.status().unwrap_or_else(|e| fail(&format!("cannot start QEMU: {e}")));
    match status.code() {
        Some(QEMU_SUCCESS) => exit(0),
        Some(QEMU_FAILURE) => exit(1),
        None => {
            eprintln!("bravo-run: QEMU stopped by a signal");
            exit(130)
        }
        Some(code) => {
            fail(&format!("QEMU exited with status {code} without the kernel reporting an exit (QEMU error, or a reset such as a triple fault)"))
        }
    }
}
