//! `bench pps`: packets per second between the host and a guest's card
//! (e1000 or virtio-net, see `--nic` and `--machine`),
//! over QEMU's `-netdev dgram` (unix sockets, no host networking), for
//! each frame size: RX (the host floods, the guest's UDP sink counts), TX
//! (the guest's UDP source floods, the host counts) and echo (round trips
//! with a fixed window in flight). Three guests on the same QEMU command
//! line, one after the other: Bravo (smoltcp), Bravo `net=raw` (the
//! ceiling: only descriptors recycled) and the Linux peer; with several
//! cards (`--nic virtio,e1000`), all three on each card; with several cpu
//! counts (`--cpus 1,2`), all three at each, and the rates' scaling.

use std::time::Duration;

use bravo_tests::report::{Better, Report, Row, Samples};
use bravo_tests::traffic::{Wire, HEADERS};
use bravo_tests::{Accel, Nic, Running};

use crate::{fail, progress, scaling_row, Options, System};

const SINK: u16 = 9000;
const SOURCE: u16 = SINK + 1;
const ECHO: u16 = SINK + 2;

/// One system's samples per frame size: [rx, tx, echo, rx lost %, tx lost %].
type Measures = Vec<[Vec<f64>; 5]>;

pub fn run(args: &[String]) {
    let o = Options::new()
        .parse(args, &["--runs", "--secs", "--sizes", "--cpus", "--window", "--systems", "--nic", "--machine"]);
    let accel = Accel::from_env_or_default().unwrap_or_else(|e| fail(&e));
    let duration = Duration::from_secs_f64(o.secs);
    let (systems, notes) = System::available(&o.systems);
    let mut results: Vec<(Nic, usize, System, Measures)> = Vec::new();
    for &nic in &o.nics {
        for &cpus in &o.cpus {
            for &system in &systems {
                let measures = measure(system, nic, cpus, &o, accel, duration);
                results.push((nic, cpus, system, measures));
            }
        }
    }
    eprintln!();

    let mut report = Report::new(
        "pps",
        &format!(
            "UDP packets per second through QEMU ({}) under {}, {}, median of {} runs of {} s",
            o.hardware(),
            accel.name().to_uppercase(),
            o.cpus_title(),
            o.runs,
            o.secs
        ),
    );
    report.notes.push("wire: QEMU -netdev dgram over unix sockets to a host tool (bravo-bench); frame size = Ethernet frame without FCS".into());
    report.notes.push("RX: host floods the guest's UDP sink, rate = packets the guest counted / flood time; TX: the guest's UDP source floods the host, rate = packets the host counted / first-to-last arrival".into());
    report
        .notes
        .push(format!("echo: {} datagrams in flight to the guest's UDP echo; round trips per second", o.window));
    report.notes.push("ceiling: Bravo with net=raw, a polling loop that only recycles the card's descriptors (no stack): what QEMU's device model moves".into());
    report.notes.extend(o.hardware_notes());
    report.notes.extend(notes);
    let pick = |nic: Nic, cpus: usize, system: System, size: usize, k: usize| -> Option<Samples> {
        let (_, _, _, m) = results.iter().find(|(n, c, s, _)| *n == nic && *c == cpus && *s == system)?;
        let i = o.sizes.iter().position(|&s| s == size)?;
        Some(Samples(m[i][k].clone()))
    };
    let rows: [(&str, &str, &str, Better); 5] = [
        ("RX", "packets/s received by the guest", "pkt/s", Better::Higher),
        ("TX", "packets/s sent by the guest", "pkt/s", Better::Higher),
        ("echo", "round trips/s", "rt/s", Better::Higher),
        ("RX", "lost (host sent, guest did not count)", "%", Better::Lower),
        ("TX", "lost (guest sent, host did not receive)", "%", Better::Lower),
    ];
    for (k, (what, label, unit, better)) in rows.into_iter().enumerate() {
        for &size in &o.sizes {
            for &nic in &o.nics {
                let group = o.group(&format!("{what} {size} B"), nic);
                let row = |cpus: usize| Row {
                    group: o.group_at(&group, cpus),
                    label: label.into(),
                    unit: unit.into(),
                    better,
                    bravo: pick(nic, cpus, System::Bravo, size, k).unwrap_or(Samples(Vec::new())),
                    linux: pick(nic, cpus, System::Linux, size, k),
                    ceiling: pick(nic, cpus, System::Ceiling, size, k),
                };
                for &cpus in &o.cpus {
                    report.rows.push(row(cpus));
                }
                if better == Better::Higher {
                    let base = row(o.base_cpus());
                    for &cpus in o.cpus.iter().filter(|&&c| c != o.base_cpus()) {
                        report.rows.push(scaling_row(&group, label, o.base_cpus(), cpus, &base, &row(cpus)));
                    }
                }
            }
        }
    }
    crate::finish(&report);
}

/// Boots `system` on `nic` with `cpus` cpus once and measures every frame
/// size `runs` times.
fn measure(system: System, nic: Nic, cpus: usize, o: &Options, accel: Accel, duration: Duration) -> Measures {
    let dir = bravo_tests::report::bench_dir().join(format!("wire-{}", std::process::id()));
    let mut wire = Wire::bind(&dir)
        .unwrap_or_else(|e| fail(&format!("cannot bind the host end of the wire in {}: {e}", dir.display())));
    let machine = o
        .place(system, system.pps_machine(SINK), nic)
        .accel(accel)
        .cpus(cpus)
        .dgram_net(wire.guest_path(), wire.host_path());
    progress(&format!("pps: booting {} on {} with {cpus} vCPU", system.name(), nic.name()));
    let mut vm: Running = machine.timeout(Duration::from_secs(3600)).start();
    for line in system.ready_lines() {
        if let Err(e) = vm.wait_for_line(line, Duration::from_secs(120)) {
            fail(&format!("{} did not come up: {e}", system.name()));
        }
    }
    system.check_cpus(&mut vm, cpus);
    wire.resolve_guest(Duration::from_secs(10)).unwrap_or_else(|e| fail(&format!("{}: {e}", system.name())));
    let mut measures: Measures = vec![Default::default(); o.sizes.len()];
    for run in 0..o.runs {
        for (i, &size) in o.sizes.iter().enumerate() {
            let payload = size - HEADERS;
            let step = |what: &str| {
                progress(&format!(
                    "pps: {} on {}, {cpus} vCPU, run {}/{}, {size} B frames: {what}",
                    system.name(),
                    nic.name(),
                    run + 1,
                    o.runs
                ))
            };
            step("RX");
            let flooded = wire.flood(SINK, payload, duration);
            let counted =
                wire.stop(SINK, Duration::from_secs(10)).unwrap_or_else(|e| fail(&format!("{}: {e}", system.name())));
            measures[i][0].push(counted.packets as f64 / flooded.elapsed.as_secs_f64());
            measures[i][3].push(lost(flooded.packets, counted.packets));
            step("TX");
            let received = wire
                .receive_flood(SOURCE, payload, duration)
                .unwrap_or_else(|e| fail(&format!("{}: {e}", system.name())));
            let sent =
                wire.stop(SOURCE, Duration::from_secs(10)).unwrap_or_else(|e| fail(&format!("{}: {e}", system.name())));
            measures[i][1].push(received.packets as f64 / received.elapsed.as_secs_f64().max(1e-3));
            measures[i][4].push(lost(sent.packets, received.packets));
            step("echo");
            let echoed = wire.echo(ECHO, payload, o.window, duration);
            measures[i][2].push(echoed.round_trips as f64 / echoed.elapsed.as_secs_f64());
            eprintln!(
                "\rpps: {} on {}, {cpus} vCPU, run {} {size} B: RX host sent {} guest counted {} | TX guest sent {} host got {} | echo {} of {}",
                system.name(), nic.name(), run + 1, flooded.packets, counted.packets, sent.packets, received.packets, echoed.round_trips, echoed.sent
            );
        }
    }
    drop(vm);
    let _ = std::fs::remove_dir_all(&dir);
    measures
}

/// Percentage of `sent` that did not arrive (0 when more arrived).
fn lost(sent: u64, arrived: u64) -> f64 {
    if sent == 0 {
        return 0.0;
    }
    sent.saturating_sub(arrived) as f64 * 100.0 / sent as f64
}
