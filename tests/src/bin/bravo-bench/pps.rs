//! `bench pps`: packets per second between the host and a guest's e1000,
//! over QEMU's `-netdev dgram` (unix sockets, no host networking), for
//! each frame size: RX (the host floods, the guest's UDP sink counts), TX
//! (the guest's UDP source floods, the host counts) and echo (round trips
//! with a fixed window in flight). Three guests on the same QEMU command
//! line, one after the other: Bravo (smoltcp), Bravo `net=raw` (the
//! ceiling: only descriptors recycled) and the Linux peer.

use std::time::Duration;

use bravo_tests::report::{Better, Report, Row, Samples};
use bravo_tests::traffic::{Wire, HEADERS};
use bravo_tests::{Accel, Running};

use crate::{fail, progress, Options, System};

const SINK: u16 = 9000;
const SOURCE: u16 = SINK + 1;
const ECHO: u16 = SINK + 2;

/// One system's samples per frame size: [rx, tx, echo, rx lost %, tx lost %].
type Measures = Vec<[Vec<f64>; 5]>;

pub fn run(args: &[String]) {
    let o = Options::new().parse(args, &["--runs", "--secs", "--sizes", "--cpus", "--window", "--systems"]);
    let accel = Accel::from_env_or_default().unwrap_or_else(|e| fail(&e));
    let duration = Duration::from_secs_f64(o.secs);
    let (systems, notes) = System::available(&o.systems);
    let mut results: Vec<(System, Measures)> = Vec::new();
    for &system in &systems {
        let measures = measure(system, &o, accel, duration);
        results.push((system, measures));
    }
    eprintln!();

    let mut report = Report::new("pps", &format!(
        "UDP packets per second through QEMU's e1000 under {}, {} vCPU{}, median of {} runs of {} s",
        accel.name().to_uppercase(), o.cpus, if o.cpus == 1 { "" } else { "s" }, o.runs, o.secs
    ));
    report.notes.push("wire: QEMU -netdev dgram over unix sockets to a host tool (bravo-bench); frame size = Ethernet frame without FCS".into());
    report.notes.push("RX: host floods the guest's UDP sink, rate = packets the guest counted / flood time; TX: the guest's UDP source floods the host, rate = packets the host counted / first-to-last arrival".into());
    report.notes.push(format!("echo: {} datagrams in flight to the guest's UDP echo; round trips per second", o.window));
    report.notes.push("ceiling: Bravo with net=raw, a polling loop that only recycles e1000 descriptors (no stack): what QEMU's e1000 model moves".into());
    report.notes.extend(notes);
    let pick = |system: System, size: usize, k: usize| -> Option<Samples> {
        let (_, m) = results.iter().find(|(s, _)| *s == system)?;
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
            report.rows.push(Row {
                group: format!("{what} {size} B"),
                label: label.into(),
                unit: unit.into(),
                better,
                bravo: pick(System::Bravo, size, k).unwrap_or(Samples(Vec::new())),
                linux: pick(System::Linux, size, k),
                ceiling: pick(System::Ceiling, size, k),
            });
        }
    }
    crate::finish(&report);
}

/// Boots `system` once and measures every frame size `runs` times.
fn measure(system: System, o: &Options, accel: Accel, duration: Duration) -> Measures {
    let dir = bravo_tests::report::bench_dir().join(format!("wire-{}", std::process::id()));
    let mut wire = Wire::bind(&dir).unwrap_or_else(|e| fail(&format!("cannot bind the host end of the wire in {}: {e}", dir.display())));
    let machine = system.pps_machine(SINK).accel(accel).cpus(o.cpus).dgram_net(wire.guest_path(), wire.host_path());
    progress(&format!("pps: booting {}", system.name()));
    let mut vm: Running = machine.timeout(Duration::from_secs(3600)).start();
    for line in system.ready_lines() {
        if let Err(e) = vm.wait_for_line(line, Duration::from_secs(120)) {
            fail(&format!("{} did not come up: {e}", system.name()));
        }
    }
    wire.resolve_guest(Duration::from_secs(10)).unwrap_or_else(|e| fail(&format!("{}: {e}", system.name())));
    let mut measures: Measures = vec![Default::default(); o.sizes.len()];
    for run in 0..o.runs {
        for (i, &size) in o.sizes.iter().enumerate() {
            let payload = size - HEADERS;
            let step = |what: &str| progress(&format!("pps: {} run {}/{}, {size} B frames: {what}", system.name(), run + 1, o.runs));
            step("RX");
            let flooded = wire.flood(SINK, payload, duration);
            let counted = wire.stop(SINK, Duration::from_secs(10)).unwrap_or_else(|e| fail(&format!("{}: {e}", system.name())));
            measures[i][0].push(counted.packets as f64 / flooded.elapsed.as_secs_f64());
            measures[i][3].push(lost(flooded.packets, counted.packets));
            step("TX");
            let received = wire.receive_flood(SOURCE, payload, duration).unwrap_or_else(|e| fail(&format!("{}: {e}", system.name())));
            let sent = wire.stop(SOURCE, Duration::from_secs(10)).unwrap_or_else(|e| fail(&format!("{}: {e}", system.name())));
            measures[i][1].push(received.packets as f64 / received.elapsed.as_secs_f64().max(1e-3));
            measures[i][4].push(lost(sent.packets, received.packets));
            step("echo");
            let echoed = wire.echo(ECHO, payload, o.window, duration);
            measures[i][2].push(echoed.round_trips as f64 / echoed.elapsed.as_secs_f64());
            eprintln!(
                "\rpps: {} run {} {size} B: RX host sent {} guest counted {} | TX guest sent {} host got {} | echo {} of {}",
                system.name(), run + 1, flooded.packets, counted.packets, sent.packets, received.packets, echoed.round_trips, echoed.sent
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
