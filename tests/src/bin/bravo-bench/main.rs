//! `bravo-bench`: Bravo's benchmarks (what `just bench WHAT` runs). Each
//! prints a table (medians and min–max over runs) and writes CSV, Markdown
//! and an SVG chart under `target/bench/`.
//!
//! ```text
//! bravo-bench pps   [--runs 3] [--secs 2] [--sizes 64,512,1500] [--cpus 1[,2,4]] [--window 16] [--systems bravo,ceiling,linux] [--nic e1000] [--machine q35]
//! bravo-bench http  [--runs 3] [--secs 5] [--cpus 1[,2,4]] [--systems bravo,linux] [--nic e1000] [--machine q35]
//! bravo-bench conns [--runs 3] [--secs 5] [--cap 12000] [--syn-rate 2000] [--systems bravo,linux]
//! bravo-bench soak  [--minutes 10]
//! bravo-bench boot  [--runs 11] [--systems bravo,linux] [--nic e1000] [--machine q35]
//! bravo-bench alloc [--runs 5]
//! bravo-bench sched [--runs 5] [--cpus 1,2,4]
//! ```
//!
//! `conns` measures many connections (new ones per second, idle ones a
//! 256 MiB guest holds, service during a SYN flood), and `soak` runs mixed
//! load and floods against `examples/http` for minutes, then compares its
//! memory and sockets with the start (see each module).
//!
//! `pps`, `http`, `conns` and `boot` put Bravo beside a Linux guest (Debian's kernel,
//! busybox and `tests/linux-peer`, built on the fly and cached) on the same
//! QEMU command line, and `pps` beside its ceiling (Bravo with `net=raw`:
//! only the card's descriptors recycled). See each module. The accelerator comes
//! from `ACCEL` (default: KVM where it runs guests natively, else TCG).
//!
//! `--nic` and `--machine` choose the guests' card and machine type for
//! `pps`, `http` and `boot`: `--nic virtio` (virtio-net over PCI on q35),
//! `--machine microvm` (virtio over MMIO; QEMU `-M` options may follow:
//! `microvm,pit=off`). `--nic virtio,e1000` measures every system on each
//! card in the same run, one group of rows per card. `--nic igb` is QEMU's
//! multi-queue 82576 (RSS): Linux's `igb` driver makes a queue per cpu by
//! itself, Bravo a network stack per cpu (`netcpus=` left at its default,
//! every cpu).
//!
//! `pps` and `http` take a list of cpu counts (`--cpus 1,2,4`): every
//! system boots once per count (`-smp N`, Linux and Bravo alike; the
//! benchmark checks that each guest reports N cpus), the table has a group
//! of rows per count, and for every rate a "scaling" row: the median at N
//! cpus over the median at 1 cpu (or the smallest count measured), in
//! percent (170 = 1.7 times), Bravo's beside Linux's.
//!
//! `sched` boots the `bench-sched` image N times for each cpu count:
//! context switch, local and remote spawn (+join), mailbox round trip, one
//! allocation freed at once, and heap throughput (batches of 64 blocks)
//! with 1, 2 and all cpus at once for Bravo's per-node heaps with per-cpu
//! caches beside one global locked heap. `alloc` boots `bench-alloc`: per
//! block size, ns per allocation+free with Bravo's NUMA heap and with one
//! global locked heap in the same run.

mod boot;
mod conns;
mod http;
mod pps;
mod soak;

use std::time::Duration;

use bravo_tests::report::{bench_dir, Better, Report, Row, Samples};
use bravo_tests::{linux_peer, workspace_root, Accel, Exit, Machine, MachineType, Nic, Running};

fn fail(message: &str) -> ! {
    eprintln!("\nbravo-bench: {message}");
    // Exiting skips destructors: delete the network namespaces made so far.
    bravo_tests::netns::delete_all();
    std::process::exit(2)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // `--accel` is common to every benchmark: it sets what ACCEL would.
    if let Some(at) = args.iter().position(|a| a == "--accel") {
        match args.get(at + 1).map(String::as_str) {
            Some(accel @ ("tcg" | "kvm")) => std::env::set_var("ACCEL", accel),
            _ => fail("--accel: expected tcg or kvm"),
        }
        args.drain(at..at + 2);
    }
    match args.first().map(String::as_str) {
        Some("boot") => boot::run(&args[1..]),
        Some("alloc") => alloc(&args[1..]),
        Some("sched") => sched(&args[1..]),
        Some("pps") => pps::run(&args[1..]),
        Some("http") => http::run(&args[1..]),
        Some("conns") => conns::run(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
        Some("help" | "--help" | "-h") => println!("{USAGE}"),
        _ => fail(USAGE),
    }
}

const USAGE: &str = "usage: bravo-bench WHAT [--accel tcg|kvm] [OPTIONS]
  pps   [--runs 3] [--secs 2] [--sizes 64,512,1500] [--cpus 1[,2,4]] [--window 16] [--systems bravo,ceiling,linux] [--nic e1000|virtio|igb[,...]] [--machine q35|microvm]
  http  [--runs 3] [--secs 5] [--cpus 1[,2,4]] [--systems bravo,linux] [--nic e1000|virtio|igb[,...]] [--machine q35|microvm]   (root)
  conns [--runs 3] [--secs 5] [--cpus 1] [--cap 12000] [--syn-rate 2000] [--systems bravo,linux]   (root)
  soak  [--minutes 10] [--cpus 1]   (root)
  boot  [--runs 11] [--systems bravo,linux] [--nic e1000|virtio[,...]] [--machine q35|microvm]
  alloc [--runs 5]
  sched [--runs 5] [--cpus 1,2,4]
environment: ACCEL=tcg|kvm, QEMU_ARGS=\"extra QEMU arguments for every guest\", BRAVO_CMDLINE=\"kernel options for the Bravo guests\" (e.g. netpoll=on), BENCH_DIR (default target/bench)";

/// The options of the network benchmarks; each takes the flags it names.
struct Options {
    runs: usize,
    secs: f64,
    /// The cpu counts every system is measured with (`pps`, `http`: each
    /// in turn; the others take one).
    cpus: Vec<usize>,
    sizes: Vec<usize>,
    window: usize,
    systems: Vec<System>,
    /// `conns`: the most idle connections opened.
    cap: usize,
    /// `conns`: SYNs per second in the flood.
    syn_rate: u32,
    /// `soak`: how long it runs.
    minutes: f64,
    /// The cards every system is measured on, one after the other (empty:
    /// the machine type's own).
    nics: Vec<Nic>,
    /// The guests' machine type and its extra `-M` options.
    machine: MachineType,
    machine_options: Vec<String>,
}

impl Options {
    /// Defaults: 3 runs of 2 s on 1 cpu; 64/512/1500-byte frames, 16 in
    /// flight; every system.
    fn new() -> Self {
        Options {
            runs: 3,
            secs: 2.0,
            cpus: vec![1],
            sizes: vec![64, 512, 1500],
            window: 16,
            systems: vec![System::Bravo, System::Ceiling, System::Linux],
            cap: 12_000,
            syn_rate: 2_000,
            minutes: 10.0,
            nics: Vec::new(),
            machine: MachineType::Q35,
            machine_options: Vec::new(),
        }
    }

    /// Reads `args`, accepting only the flags in `accepted` (e.g. `--runs`).
    fn parse(mut self, args: &[String], accepted: &[&str]) -> Self {
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if !accepted.contains(&arg.as_str()) {
                fail(&format!("unexpected argument `{arg}` (this benchmark takes {})", accepted.join(", ")));
            }
            let value = it.next().cloned().unwrap_or_else(|| fail(&format!("{arg} needs a value")));
            match arg.as_str() {
                "--runs" => {
                    self.runs =
                        value.parse().ok().filter(|&r| r > 0).unwrap_or_else(|| fail("--runs: expected a number > 0"))
                }
                "--secs" => {
                    self.secs = value
                        .parse()
                        .ok()
                        .filter(|&s| s > 0.0 && s <= 600.0)
                        .unwrap_or_else(|| fail("--secs: expected 0-600"))
                }
                "--cpus" => {
                    self.cpus = value
                        .split(',')
                        .map(|c| {
                            c.trim()
                                .parse()
                                .ok()
                                .filter(|&c| (1..=64).contains(&c))
                                .unwrap_or_else(|| fail("--cpus: expected cpu counts 1-64, e.g. 1 or 1,2,4"))
                        })
                        .collect();
                    self.cpus.sort();
                    self.cpus.dedup();
                }
                "--sizes" => {
                    self.sizes = value
                        .split(',')
                        .map(|s| {
                            s.trim()
                                .parse()
                                .ok()
                                .filter(|&s| (64..=1514).contains(&s))
                                .unwrap_or_else(|| fail("--sizes: frame sizes 64-1514, e.g. 64,512,1500"))
                        })
                        .collect()
                }
                "--window" => {
                    self.window = value
                        .parse()
                        .ok()
                        .filter(|&w| w > 0 && w <= 256)
                        .unwrap_or_else(|| fail("--window: expected 1-256"))
                }
                "--systems" => self.systems = System::parse_list(&value).unwrap_or_else(|e| fail(&e)),
                "--cap" => {
                    self.cap = value
                        .parse()
                        .ok()
                        .filter(|&c| (1..=60_000).contains(&c))
                        .unwrap_or_else(|| fail("--cap: expected 1-60000"))
                }
                "--syn-rate" => {
                    self.syn_rate = value
                        .parse()
                        .ok()
                        .filter(|&r| (1..=1_000_000).contains(&r))
                        .unwrap_or_else(|| fail("--syn-rate: expected 1-1000000 per second"))
                }
                "--minutes" => {
                    self.minutes = value
                        .parse()
                        .ok()
                        .filter(|&m: &f64| m > 0.0 && m <= 24.0 * 60.0)
                        .unwrap_or_else(|| fail("--minutes: expected more than 0, at most a day"))
                }
                "--nic" => {
                    self.nics = value
                        .split(',')
                        .map(|n| Nic::parse(n.trim()).unwrap_or_else(|e| fail(&format!("--nic: {e}"))))
                        .collect();
                    self.nics.dedup();
                }
                "--machine" => {
                    (self.machine, self.machine_options) =
                        MachineType::parse(&value).unwrap_or_else(|e| fail(&format!("--machine: {e}")))
                }
                _ => unreachable!("an accepted flag without a parser: {arg}"),
            }
        }
        if self.nics.is_empty() {
            self.nics = vec![self.machine.default_nic()];
        }
        for &nic in &self.nics {
            if let Err(e) = self.machine.nic_device(nic) {
                fail(&format!("--nic {} --machine {}: {e}", nic.name(), self.machine.name()));
            }
        }
        self
    }

    /// `system`'s `machine` on the chosen machine type with card `nic`
    /// (and what the Linux peer needs there, see
    /// [`linux_peer::machine_options`]).
    fn place(&self, system: System, machine: Machine, nic: Nic) -> Machine {
        let machine = machine.machine_type(self.machine).nic(nic);
        let peer_options = match system {
            System::Linux => linux_peer::machine_options(self.machine),
            System::Bravo | System::Ceiling => &[],
        };
        machine.machine_options(peer_options.iter().copied()).machine_options(&self.machine_options)
    }

    /// The report's group for `group` measured on `nic`: as it is on the
    /// default hardware (q35, e1000 alone), else with the card named.
    fn group(&self, group: &str, nic: Nic) -> String {
        if self.nics == [Nic::E1000] {
            group.to_string()
        } else {
            format!("{group} ({})", nic.name())
        }
    }

    /// What the report should say of the machine type, if anything.
    fn hardware_notes(&self) -> Vec<String> {
        match self.machine {
            MachineType::Q35 => Vec::new(),
            MachineType::Microvm => vec![format!(
                "microvm: Bravo with -M microvm,{} (virtio-mmio transports announced on the kernel command line, as Firecracker does), \
                 Linux with -M microvm,{} (Debian's virtio_mmio finds them only in ACPI)",
                bravo_tests::MICROVM_DEFAULTS.join(","),
                linux_peer::machine_options(self.machine).join(",")
            )],
        }
    }

    /// The one cpu count of a benchmark that measures a single one.
    fn single_cpu_count(&self, bench: &str) -> usize {
        match self.cpus.as_slice() {
            [cpus] => *cpus,
            _ => fail(&format!("{bench} takes one cpu count (--cpus N)")),
        }
    }

    /// For titles: `1 vCPU`, `1 and 2 vCPUs`.
    fn cpus_title(&self) -> String {
        let counts: Vec<String> = self.cpus.iter().map(|c| c.to_string()).collect();
        let last = self.cpus.last().copied().unwrap_or(1);
        let counts = match counts.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
            None => String::new(),
        };
        format!("{counts} vCPU{}", if last == 1 && self.cpus.len() == 1 { "" } else { "s" })
    }

    /// A row group at `cpus` cpus: named with its count when several are
    /// measured, as it always was with one.
    fn group_at(&self, group: &str, cpus: usize) -> String {
        if self.cpus.len() > 1 {
            with_cpus(group, cpus)
        } else {
            group.to_string()
        }
    }

    /// The cpu count scaling is measured against: 1 when measured, else
    /// the smallest.
    fn base_cpus(&self) -> usize {
        self.cpus.first().copied().unwrap_or(1)
    }

    /// For titles: `q35, e1000` or `microvm, virtio`.
    fn hardware(&self) -> String {
        let machine = std::iter::once(self.machine.name().to_string())
            .chain(self.machine_options.iter().cloned())
            .collect::<Vec<_>>()
            .join(",");
        let nics: Vec<&str> = self.nics.iter().map(|n| n.name()).collect();
        format!("{machine}, {}", nics.join(" and "))
    }
}

/// A group name with its cpu count: `16 connections · 2 vCPUs`.
fn with_cpus(group: &str, cpus: usize) -> String {
    format!("{group} · {cpus} vCPU{}", if cpus == 1 { "" } else { "s" })
}

/// Scaling of a rate: the median at more cpus over the median at the base
/// count, in percent (170 = 1.7 times), as one sample (empty when either
/// is missing).
fn scaling(more: &Samples, base: &Samples) -> Samples {
    match (more.median(), base.median()) {
        (Some(more), Some(base)) if base > 0.0 => Samples(vec![100.0 * more / base]),
        _ => Samples(Vec::new()),
    }
}

/// The row of a rate's scaling from `base` to `more` cpus (Bravo beside
/// Linux), from the rows of the same measure at each count.
fn scaling_row(group: &str, label: &str, base: usize, more: usize, at_base: &Row, at_more: &Row) -> Row {
    Row {
        group: with_cpus(group, more),
        label: format!("{label}: scaling, {more} vCPUs / {base}"),
        unit: format!("% of {base} vCPU{}", if base == 1 { "" } else { "s" }),
        better: Better::Higher,
        bravo: scaling(&at_more.bravo, &at_base.bravo),
        linux: match (&at_more.linux, &at_base.linux) {
            (Some(more), Some(base)) => Some(scaling(more, base)),
            _ => None,
        },
        ceiling: None,
    }
}

/// A progress line on the terminal (overwritten by the next one).
fn progress(text: &str) {
    use std::io::Write;
    eprint!("\r\x1b[2K{text}");
    let _ = std::io::stderr().flush();
}

/// Prints a report and writes its files under `target/bench/`.
fn finish(report: &Report) {
    println!("{report}");
    match report.write(&bench_dir()) {
        Ok(paths) => {
            for path in paths {
                println!("wrote {}", path.display());
            }
        }
        Err(e) => eprintln!("bravo-bench: cannot write the report under {}: {e}", bench_dir().display()),
    }
}

/// Kernel options added to every Bravo guest's command line, from
/// `BRAVO_CMDLINE` (e.g. `netpoll=on` to measure the NIC polled).
fn extra_options() -> String {
    match std::env::var("BRAVO_CMDLINE") {
        Ok(options) if !options.trim().is_empty() => format!(" {}", options.trim()),
        _ => String::new(),
    }
}

/// Extra QEMU arguments for every guest, Bravo and Linux alike, from
/// `QEMU_ARGS` (e.g. `-global e1000.mitigation=off`).
fn qemu_args() -> Vec<String> {
    std::env::var("QEMU_ARGS").unwrap_or_default().split_whitespace().map(String::from).collect()
}

/// The guests the network benchmarks compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    /// Bravo with its network stack (smoltcp).
    Bravo,
    /// Bravo with `net=raw`: the card's rings with no stack at all.
    Ceiling,
    /// The Linux peer (Debian's kernel, busybox, `bravo-linux-peer`).
    Linux,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Bravo => "Bravo",
            System::Ceiling => "ceiling",
            System::Linux => "Linux",
        }
    }

    /// Builds (or finds in its cache) the Linux peer.
    fn linux_available() -> Result<(), String> {
        linux_peer::build().map(drop)
    }

    /// The Linux peer serving `mode` at `port` on `ip_cidr`.
    fn linux_machine(mode: &str, port: u16, ip_cidr: &str) -> Machine {
        let peer = linux_peer::build().unwrap_or_else(|e| fail(&e));
        Machine::new(peer.kernel.to_str().unwrap_or_else(|| fail("non-UTF-8 path")))
            .args(["-initrd".to_string(), peer.initrd.display().to_string()])
            .memory_mib(512)
            .cmdline(&linux_peer::cmdline(mode, port, ip_cidr))
    }

    /// `bravo,ceiling,linux` (any subset).
    fn parse_list(text: &str) -> Result<Vec<System>, String> {
        text.split(',')
            .map(|name| match name.trim() {
                "bravo" => Ok(System::Bravo),
                "ceiling" => Ok(System::Ceiling),
                "linux" => Ok(System::Linux),
                other => Err(format!("--systems: unknown system `{other}` (bravo, ceiling, linux)")),
            })
            .collect()
    }

    /// The systems of `wanted` that can run here, and a note for each
    /// one that cannot (the Linux peer needs a Debian-like host).
    fn available(wanted: &[System]) -> (Vec<System>, Vec<String>) {
        let mut notes = Vec::new();
        let systems = wanted
            .iter()
            .copied()
            .filter(|&system| match system {
                System::Linux => match System::linux_available() {
                    Ok(()) => true,
                    Err(e) => {
                        eprintln!("bravo-bench: no Linux column: {e}");
                        notes.push(format!("Linux peer skipped: {e}"));
                        false
                    }
                },
                _ => true,
            })
            .collect();
        (systems, notes)
    }

    /// The guest of `bench pps` with its UDP services at `port`..`port+2`
    /// on 10.0.0.2/24.
    fn pps_machine(self, port: u16) -> Machine {
        let machine = match self {
            System::Bravo => Machine::new("bench-net")
                .memory_mib(512)
                .cmdline(&format!("log=warn ip=10.0.0.2/24{} -- port={port}", extra_options())),
            System::Ceiling => Machine::new("bench-net")
                .memory_mib(512)
                .cmdline(&format!("log=warn net=raw{} -- raw ip=10.0.0.2 port={port}", extra_options())),
            System::Linux => System::linux_machine("udp", port, "10.0.0.2/24"),
        };
        machine.args(qemu_args())
    }

    /// The guest of `bench http`: an HTTP service on port 80 of 10.0.0.2/24.
    fn http_machine(self) -> Machine {
        let machine = match self {
            System::Bravo | System::Ceiling => {
                Machine::new("http").memory_mib(512).cmdline(&format!("log=warn ip=10.0.0.2/24{}", extra_options()))
            }
            System::Linux => System::linux_machine("http", 80, "10.0.0.2/24"),
        };
        machine.args(qemu_args())
    }

    /// The guest of `bench boot`: the HTTP service at 10.0.2.15 behind
    /// QEMU's user networking (static address: no DHCP wait).
    fn boot_machine(self) -> Machine {
        let machine = match self {
            System::Bravo | System::Ceiling => Machine::new("http")
                .memory_mib(512)
                .cmdline(&format!("log=info ip=10.0.2.15/24 gw=10.0.2.2{}", extra_options())),
            System::Linux => System::linux_machine("http", 80, "10.0.2.15/24"),
        };
        machine.args(qemu_args())
    }

    /// The guest of `bench conns` and `bench soak`: an HTTP service on
    /// port 80 of [`GUEST_CIDR`](bravo_tests::tcp_load::GUEST_CIDR) in
    /// 256 MiB; Bravo's keeps idle connections for `idle_ms`.
    fn conns_machine(self, idle_ms: u64) -> Machine {
        use bravo_tests::tcp_load::GUEST_CIDR;
        let machine = match self {
            System::Bravo | System::Ceiling => Machine::new("http")
                .cmdline(&format!("log=warn ip={GUEST_CIDR}{} -- timeout_ms={idle_ms}", extra_options())),
            System::Linux => System::linux_machine("http", 80, GUEST_CIDR),
        };
        machine.memory_mib(256).args(qemu_args())
    }

    fn http_ready_line(self) -> &'static str {
        match self {
            System::Bravo | System::Ceiling => "http: serving on",
            System::Linux => "peer: ready",
        }
    }

    /// Checks that the `bench pps` guest runs `cpus` cpus (its `cpus=N`
    /// on Bravo's ready line, or on Linux's boot line); fails otherwise.
    fn check_cpus(self, vm: &mut Running, cpus: usize) {
        let line = match self {
            System::Bravo | System::Ceiling => "bench-net: ready",
            System::Linux => "peer: linux",
        };
        let text = vm.wait_for_line(line, Duration::from_secs(1)).unwrap_or_else(|e| fail(&e)).text;
        let said =
            text.split("cpus=").nth(1).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse::<usize>().ok());
        if said != Some(cpus) {
            fail(&format!("{} was given {cpus} vCPUs but says: {text}", self.name()));
        }
    }

    /// What the `bench pps` guest prints once all its services listen.
    fn ready_lines(self) -> &'static [&'static str] {
        match self {
            System::Bravo | System::Ceiling => &["bench-net: ready"],
            System::Linux => &["peer: ready mode=sink", "peer: ready mode=source", "peer: ready mode=echo"],
        }
    }
}

fn alloc(args: &[String]) {
    let runs = match args {
        [] => 5,
        [flag, n] if flag == "--runs" => n.parse().unwrap_or_else(|_| fail("--runs: expected a number")),
        _ => fail("usage: bravo-bench alloc [--runs N]"),
    };
    let accel = Accel::from_env_or_default().unwrap_or_else(|e| fail(&e));
    let machine =
        Machine::new("bench-alloc").accel(accel).memory_mib(512).cmdline("log=warn").timeout(Duration::from_secs(300));
    // size -> (bravo samples, locked samples)
    let mut results: Vec<(u64, Vec<u64>, Vec<u64>)> = Vec::new();
    for i in 0..runs.max(1) {
        eprint!("\ralloc: run {}/{runs}", i + 1);
        let run = machine.run();
        if run.exit != Exit::Success {
            fail(&format!("bench-alloc ended with {:?}:\n{}", run.exit, run.serial()));
        }
        for line in run.lines.iter().filter(|l| l.text.starts_with("alloc size=")) {
            let field = |key: &str| -> u64 {
                let at =
                    line.text.find(&format!("{key}=")).map(|i| i + key.len() + 1).unwrap_or_else(|| fail(&line.text));
                line.text[at..].split(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| fail(&line.text))
            };
            let size = field("size");
            let entry = match results.iter_mut().position(|r| r.0 == size) {
                Some(i) => &mut results[i],
                None => {
                    results.push((size, Vec::new(), Vec::new()));
                    results.last_mut().unwrap()
                }
            };
            entry.1.push(field("bravo_ns"));
            entry.2.push(field("locked_ns"));
        }
    }
    eprintln!();
    let median = |v: &mut Vec<u64>| {
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "allocation+free on one cpu under {}, median of {runs} runs (ns per alloc+free)",
        accel.name().to_uppercase()
    );
    println!("| size B | Bravo NUMA heap | one locked heap | Bravo/locked |");
    println!("|--------|-----------------|-----------------|--------------|");
    let mut csv = String::from("size,bravo_ns,locked_ns\n");
    for (size, bravo, locked) in &mut results {
        let (b, l) = (median(bravo), median(locked));
        println!("| {size:>6} | {b:>15} | {l:>15} | {:>12.2} |", b as f64 / l.max(1) as f64);
        csv.push_str(&format!("{size},{b},{l}\n"));
    }
    let dir = workspace_root().join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    if std::fs::write(dir.join("alloc.csv"), csv).is_ok() {
        println!("medians: {}", dir.join("alloc.csv").display());
    }
}

/// What `bench-sched` measures, in table order: (name, label, unit).
const SCHED_MEASURES: &[(&str, &str, &str)] = &[
    ("switch", "context switch (yield, one cpu)", "ns"),
    ("spawn-join-local", "spawn + join, same cpu", "ns"),
    ("spawn-remote", "remote spawn, request to reply", "ns"),
    ("spawn-join-remote", "remote spawn + join", "ns"),
    ("ping", "mailbox round trip, cpu 0 to 1", "ns"),
    ("pair", "alloc then free 64 B, 1 cpu: Bravo heap", "ns"),
    ("locked-pair", "alloc then free 64 B, 1 cpu: one locked heap", "ns"),
    ("heap-1", "heap alloc+free, 1 cpu: per-node + cpu caches", "Mops/s"),
    ("locked-1", "heap alloc+free, 1 cpu: one locked heap", "Mops/s"),
    ("heap-2", "heap alloc+free, 2 cpus: per-node + cpu caches", "Mops/s"),
    ("locked-2", "heap alloc+free, 2 cpus: one locked heap", "Mops/s"),
    ("heap-4", "heap alloc+free, 4 cpus: per-node + cpu caches", "Mops/s"),
    ("locked-4", "heap alloc+free, 4 cpus: one locked heap", "Mops/s"),
];

fn sched(args: &[String]) {
    let mut runs = 5usize;
    let mut cpu_counts = vec![1usize, 2, 4];
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_else(|| fail(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--runs" => runs = value().parse().unwrap_or_else(|_| fail("--runs: expected a number")),
            "--cpus" => {
                cpu_counts = value()
                    .split(',')
                    .map(|c| {
                        c.trim().parse().ok().filter(|&c| c > 0).unwrap_or_else(|| fail("--cpus: expected e.g. 1,2,4"))
                    })
                    .collect()
            }
            other => fail(&format!("unexpected argument `{other}`")),
        }
    }
    let runs = runs.max(1);
    let accel = Accel::from_env_or_default().unwrap_or_else(|e| fail(&e));
    // samples[measure][cpu count index]
    let mut samples: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); cpu_counts.len()]; SCHED_MEASURES.len()];
    for (c, &cpus) in cpu_counts.iter().enumerate() {
        let machine = Machine::new("bench-sched")
            .accel(accel)
            .cpus(cpus)
            .memory_mib(512)
            .cmdline("log=warn")
            .timeout(Duration::from_secs(300));
        for i in 0..runs {
            eprint!("\rsched: {cpus} cpus, run {}/{runs}   ", i + 1);
            let run = machine.run();
            if run.exit != Exit::Success {
                fail(&format!("bench-sched on {cpus} cpus ended with {:?}:\n{}", run.exit, run.serial()));
            }
            for line in run.lines.iter().filter_map(|l| l.text.strip_prefix("bench ")) {
                let mut words = line.split_whitespace();
                let (Some(name), Some(value)) = (words.next(), words.next().and_then(|v| v.parse::<f64>().ok())) else {
                    fail(&format!("unreadable result line: {line}"));
                };
                if let Some(m) = SCHED_MEASURES.iter().position(|(n, _, _)| *n == name) {
                    samples[m][c].push(value);
                }
            }
        }
    }
    eprintln!();
    let median = |v: &[f64]| -> Option<f64> {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    println!("scheduler and heap under {}, median of {runs} runs per cpu count", accel.name().to_uppercase());
    let header: String =
        cpu_counts.iter().map(|c| format!(" {:>7} |", format!("{c} cpu{}", if *c == 1 { "" } else { "s" }))).collect();
    println!("| measure                                          | unit   |{header}");
    println!("|--------------------------------------------------|--------|{}", "---------|".repeat(cpu_counts.len()));
    let mut csv = String::from("measure,unit,cpus,median\n");
    for (m, (name, label, unit)) in SCHED_MEASURES.iter().enumerate() {
        let cells: String = (0..cpu_counts.len())
            .map(|c| match median(&samples[m][c]) {
                Some(v) => {
                    csv.push_str(&format!("{name},{unit},{},{v:.1}\n", cpu_counts[c]));
                    format!(" {v:>7.1} |")
                }
                None => "       - |".to_string(),
            })
            .collect();
        println!("| {label:<48} | {unit:<6} |{cells}");
    }
    println!(
        "(- = needs more cpus; the host has {} cpus, so more vCPUs than that share them)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let dir = workspace_root().join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    if std::fs::write(dir.join("sched.csv"), csv).is_ok() {
        println!("medians: {}", dir.join("sched.csv").display());
    }
}
