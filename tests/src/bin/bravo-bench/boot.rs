//! `bench boot`: how fast a service is up. From QEMU's start to the first
//! HTTP response of `GET /health` (the host polls the forwarded port), and
//! the guest's own time from kernel entry to the application's `main`
//! (each guest prints it), for Bravo's `examples/http` and the Linux
//! peer's HTTP server on the same QEMU command line (the card and machine
//! type of `--nic` and `--machine`: `--machine microvm` is a PVH boot
//! with virtio over MMIO); then the size of every example image.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bravo_tests::report::{Better, Report, Row, Samples};
use bravo_tests::{free_port, image_path, linux_peer, workspace_root, Accel, Machine, Nic};

use crate::{fail, progress, Options, System};

pub fn run(args: &[String]) {
    let options = Options { runs: 11, ..Options::new() }.parse(args, &["--runs", "--systems", "--nic", "--machine"]);
    let runs = options.runs;
    let wanted: Vec<System> = options.systems.iter().copied().filter(|&s| s != System::Ceiling).collect();
    let accel = Accel::from_env_or_default().unwrap_or_else(|e| fail(&e));
    let (systems, notes) = System::available(&wanted);
    // (card, system, to first response ms, entry to main ms)
    let mut results: Vec<(Nic, System, Vec<f64>, Vec<f64>)> = Vec::new();
    for &nic in &options.nics {
        for &system in &systems {
            let (mut first, mut main) = (Vec::new(), Vec::new());
            for run in 0..runs {
                progress(&format!("boot: {} on {} run {}/{runs}", system.name(), nic.name(), run + 1));
                let (to_response, to_main) =
                    boot_once(system, options.place(system, system.boot_machine(), nic), accel);
                first.push(to_response.as_secs_f64() * 1000.0);
                main.push(to_main);
            }
            results.push((nic, system, first, main));
        }
    }
    eprintln!();

    let mut report = Report::new(
        "boot",
        &format!(
            "Boot of an HTTP service on QEMU ({}) under {}, 1 vCPU, median of {runs} runs",
            options.hardware(),
            accel.name().to_uppercase()
        ),
    );
    report.notes.push("QEMU start to first response: from the moment the host starts QEMU, it starts a GET /health through QEMU's port forwarding every 5 ms (up to 32 in flight, overlapping, so that one stuck on QEMU's slow SYN retry to a guest not yet up does not hide a ready one)".into());
    report.notes.push("entry to main: the guest's own clock (Bravo: TSC from kmain's first instruction; Linux: /proc/uptime when the peer starts)".into());
    report.notes.push("Bravo boots by PVH (-kernel, no firmware beyond QEMU's); Linux by -kernel/-initrd (bzImage through QEMU's boot code)".into());
    report.notes.extend(options.hardware_notes());
    report.notes.extend(notes);
    let pick = |nic: Nic, system: System, k: usize| -> Option<Samples> {
        results
            .iter()
            .find(|r| r.0 == nic && r.1 == system)
            .map(|r| Samples(if k == 0 { r.2.clone() } else { r.3.clone() }))
    };
    for (k, label) in
        ["QEMU start to first HTTP response", "kernel entry to main (guest clock)"].into_iter().enumerate()
    {
        for &nic in &options.nics {
            report.rows.push(Row {
                group: options.group("boot", nic),
                label: label.into(),
                unit: "ms".into(),
                better: Better::Lower,
                bravo: pick(nic, System::Bravo, k).unwrap_or_default(),
                linux: pick(nic, System::Linux, k),
                ceiling: None,
            });
        }
    }
    let linux_size = systems.contains(&System::Linux).then(|| {
        let peer = linux_peer::build().unwrap_or_else(|e| fail(&e));
        let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
        (size(&peer.kernel) + size(&peer.initrd)) as f64 / 1024.0
    });
    for example in examples() {
        let path = image_path(&example);
        let Ok(bytes) = std::fs::read(&path) else { continue };
        report.rows.push(Row {
            group: format!("image {example}"),
            label: "loaded size (ELF segments; Linux: bzImage + initrd)".into(),
            unit: "KiB".into(),
            better: Better::Lower,
            bravo: Samples(vec![loaded_size(&bytes).unwrap_or(0) as f64 / 1024.0]),
            linux: if example == "http" { linux_size.map(|s| Samples(vec![s])) } else { None },
            ceiling: None,
        });
    }
    crate::finish(&report);
}

/// The example programs (every `examples/*` with a `main.rs`).
fn examples() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workspace_root().join("examples"))
        .map(|dir| {
            dir.flatten()
                .filter(|e| e.path().join("src/main.rs").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Boots `system`'s HTTP service (`machine`) once: (QEMU start to first
/// response, guest-reported ms from kernel entry to main).
fn boot_once(system: System, machine: Machine, accel: Accel) -> (Duration, f64) {
    let port = free_port();
    let machine = machine.accel(accel).user_net(&[(port, 80)]).timeout(Duration::from_secs(300));
    let mut vm = machine.start();
    let started = Instant::now();
    let answered = first_answer(port, started).unwrap_or_else(|| {
        fail(&format!("{} did not answer HTTP within {} s:\n{}", system.name(), GIVE_UP.as_secs(), vm.serial_now()))
    });
    let line = vm.wait_for_line("entering main ", Duration::from_secs(10)).unwrap_or_else(|e| fail(&e));
    let to_main = line
        .text
        .split("entering main ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|ms| ms.parse::<f64>().ok())
        .unwrap_or_else(|| fail(&format!("unreadable line: {}", line.text)));
    (answered, to_main)
}

/// How long a guest may take to answer at all.
const GIVE_UP: Duration = Duration::from_secs(120);
/// A new probe starts this often...
const PROBE_EVERY: Duration = Duration::from_millis(5);
/// ...while fewer than this many wait for an answer.
const PROBES_IN_FLIGHT: usize = 32;

/// When the first `GET /health` on the forwarded port was answered 200,
/// counted from `started`. QEMU's forwarding accepts a connection before
/// the guest is up and then retries its SYN to the guest on its own slow
/// timer, so a probe that started too early can wait long after the guest
/// is ready: probes start every few milliseconds, overlapping, and the
/// first answer wins.
fn first_answer(port: u16, started: Instant) -> Option<Duration> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};

    let (answers, answer) = mpsc::channel();
    let in_flight = Arc::new(AtomicUsize::new(0));
    while started.elapsed() < GIVE_UP {
        if in_flight.load(Ordering::Acquire) < PROBES_IN_FLIGHT {
            in_flight.fetch_add(1, Ordering::AcqRel);
            let (answers, in_flight) = (answers.clone(), in_flight.clone());
            std::thread::spawn(move || {
                if health(port) {
                    let _ = answers.send(started.elapsed());
                }
                in_flight.fetch_sub(1, Ordering::AcqRel);
            });
        }
        if let Ok(at) = answer.recv_timeout(PROBE_EVERY) {
            return Some(at);
        }
    }
    None
}

/// Whether `GET /health` on the forwarded port answers 200 within a
/// second.
fn health(port: u16) -> bool {
    let timeout = Duration::from_secs(1);
    let Ok(mut stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    if stream.write_all(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).is_ok() && answer.starts_with(b"HTTP/1.1 200")
}

/// The bytes an ELF64 image loads (sum of its PT_LOAD segments' file
/// sizes): what a VM gets, without debug info and symbols.
fn loaded_size(elf: &[u8]) -> Option<u64> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    if elf.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64_at(0x20)? as usize, u16_at(0x36)? as usize, u16_at(0x38)? as usize);
    let mut total = 0;
    for i in 0..phnum {
        let header = phoff + i * phentsize;
        if u32_at(header)? == 1 {
            total += u64_at(header + 0x20)?;
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaded_size_sums_load_segments_and_rejects_non_elf() {
        let mut elf = vec![0u8; 0x40 + 2 * 56];
        elf[..5].copy_from_slice(b"\x7fELF\x02");
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        // A PT_LOAD of 4096 bytes and a PT_NOTE of 100.
        elf[0x40..0x44].copy_from_slice(&1u32.to_le_bytes());
        elf[0x40 + 0x20..0x40 + 0x28].copy_from_slice(&4096u64.to_le_bytes());
        elf[0x78..0x7c].copy_from_slice(&4u32.to_le_bytes());
        elf[0x78 + 0x20..0x78 + 0x28].copy_from_slice(&100u64.to_le_bytes());
        assert_eq!(loaded_size(&elf), Some(4096));
        assert_eq!(loaded_size(b"MZ not an elf"), None);
        assert_eq!(loaded_size(&elf[..0x50]), None);
    }
}
