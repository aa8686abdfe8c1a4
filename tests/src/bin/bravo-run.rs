//! `bravo-run`: boots a Bravo image in QEMU with the terminal as its serial
//! console (what `just run-example` and `just debug` use).
//!
//! ```text
//! bravo-run [--gdb] [--append CMDLINE] IMAGE [ARGS...]
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
//!
//! Words after `IMAGE` go to the application (after `--` on the kernel
//! command line), which makes `bravo-run` a cargo runner: cargo runs it as
//! `bravo-run IMAGE ARGS...` (`runner = "bravo-run"` in a service's
//! `.cargo/config.toml`, see `just new`). Kernel options come from
//! `--append`, else from `CMDLINE`. A missing image is named with the list
//! of examples, a taken host port with how to pick another, before QEMU
//! starts.

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
    Some(
        spec.split(',')
            .map(|p| {
                pair(p).unwrap_or_else(|| fail(&format!("FORWARD={spec}: expected HOST:GUEST[,HOST:GUEST] or none")))
            })
            .collect(),
    )
}

/// Why `image` cannot be booted when it is not a file: an example that is
/// not built yet, or no such example (with the list of those there are).
fn missing_image(image: &str) -> String {
    let name = std::path::Path::new(image).file_name().and_then(|n| n.to_str()).unwrap_or(image);
    let binaries_in = |dir: &str| -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(bravo_tests::workspace_root().join(dir)) else { return Vec::new() };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().join("src/main.rs").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    };
    let examples = binaries_in("examples");
    if examples.iter().chain(&binaries_in("tests/images")).any(|e| e == name) {
        format!("kernel image {image} not found: build it first (`just build`)")
    } else {
        format!("there is no example `{name}` (no kernel image at {image}); the examples are: {}", examples.join(", "))
    }
}

/// Fails with how to pick another port when a forwarded host port is
/// taken, before QEMU would fail on it with a less helpful message.
fn check_ports_free(forwards: &[(u16, u16)]) {
    for &(host, _) in forwards {
        let taken = std::net::TcpListener::bind(("127.0.0.1", host)).is_err()
            || std::net::UdpSocket::bind(("127.0.0.1", host)).is_err();
        if !taken {
            continue;
        }
        let free = (host.saturating_add(1)..=u16::MAX).find(|&p| {
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
        });
        let another = free.map_or_else(|| "another port".to_string(), |p| p.to_string());
        let how = match std::env::var("FORWARD") {
            Ok(f) if !f.is_empty() => {
                format!("pick another in FORWARD (FORWARD={f}: host port {host} is the one taken)")
            }
            _ => format!("pick another with PORT=, e.g. PORT={another}"),
        };
        fail(&format!("port {host} on 127.0.0.1 is taken (another program, or another VM, is using it): {how}"));
    }
}

/// The kernel command line: `append` (else `CMDLINE`), then the
/// application's arguments after `--`.
fn kernel_cmdline(append: String, app_args: &[String]) -> String {
    let append = if append.is_empty() { std::env::var("CMDLINE").unwrap_or_default() } else { append };
    if let Some(arg) = app_args.iter().find(|a| a.is_empty() || a.contains(char::is_whitespace)) {
        fail(&format!("application argument {arg:?}: the kernel command line is split on whitespace, so arguments cannot be empty or contain it"));
    }
    match app_args {
        [] => append,
        _ => format!("{append} -- {}", app_args.join(" ")),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut gdb, mut append, mut image) = (false, String::new(), None);
    let mut app_args = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            _ if image.is_some() => app_args.push(arg),
            "--gdb" => gdb = true,
            "--append" => append = args.next().unwrap_or_else(|| fail("--append needs a value")),
            "-h" | "--help" => {
                println!("usage: bravo-run [--gdb] [--append CMDLINE] IMAGE [ARGS...]   (env: MACHINE, NIC, BOOT, ACCEL, CPUS, MEM, PORT, FORWARD, CMDLINE, QEMU_ARGS)");
                return;
            }
            _ if image.is_none() && !arg.starts_with('-') => image = Some(arg),
            _ => fail(&format!("unexpected argument `{arg}` (see --help)")),
        }
    }
    if let Some(missing) = image.as_deref().filter(|i| !std::path::Path::new(i).is_file()) {
        fail(&missing_image(missing));
    }
    let append = kernel_cmdline(append, &app_args);

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
    check_ports_free(forwards.as_deref().unwrap_or_default());
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
        eprintln!(
            "bravo-run: network card: {} (NIC=e1000|virtio to change)",
            machine_type.nic_device(nic).map(|d| d.split(',').next().unwrap_or(d)).unwrap_or_else(|e| fail(&e))
        );
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
