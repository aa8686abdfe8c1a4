//! Bravo's host-side harness: boots kernel images in QEMU and checks them
//! from the outside (serial output and exit status).
//!
//! ```no_run
//! use bravo_tests::{Machine, Boot};
//! let run = Machine::new("hello").boot(Boot::Pvh).cmdline("-- hi").run();
//! run.assert_success();
//! run.assert_line("Hello from Bravo!");
//! ```
//!
//! The kernel ends the VM through QEMU's `isa-debug-exit` device: status 33
//! means success, 35 failure (see `kernel/src/arch/x86_64/power.rs`). A
//! harness-started QEMU is always killed when its handle is dropped.

// The harness is used only by this package's tests and tools: its
// self-explaining fields and helpers are not a published API.
#![allow(missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub mod attack;
pub mod http_client;
pub mod linux_peer;
pub mod netns;
pub mod report;
pub mod rss;
pub mod tcp_load;
pub mod traffic;

/// QEMU exit status for a kernel that ended with success.
pub const QEMU_SUCCESS: i32 = 33;
/// QEMU exit status for a kernel that ended with failure.
pub const QEMU_FAILURE: i32 = 35;

/// The workspace root (where `Cargo.toml`, `target/` and `scripts/` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The path of a built kernel image (an example or a test image).
pub fn image_path(name: &str) -> PathBuf {
    let as_path = Path::new(name);
    if as_path.components().count() > 1 || as_path.is_file() {
        return as_path.to_path_buf();
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
    target.join("x86_64-unknown-none/release").join(name)
}

/// How the VM boots the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boot {
    /// `qemu -kernel`: QEMU loads the ELF and enters its PVH note.
    Pvh,
    /// A Limine ISO (BIOS boot through SeaBIOS).
    Limine,
    /// A Limine ISO booted by UEFI firmware (OVMF).
    LimineUefi,
}

impl Boot {
    /// `BOOT=limine|pvh` from the environment, else Limine when installed,
    /// else PVH.
    pub fn from_env_or_default() -> Result<Self, String> {
        match std::env::var("BOOT").as_deref() {
            Ok("pvh") => Ok(Boot::Pvh),
            Ok("limine") => Ok(Boot::Limine),
            Ok("limine-uefi") => Ok(Boot::LimineUefi),
            Ok("") | Err(_) => Ok(if limine_dir().is_ok() { Boot::Limine } else { Boot::Pvh }),
            Ok(other) => Err(format!("BOOT={other}: expected limine, limine-uefi or pvh")),
        }
    }
}

/// Which accelerator QEMU uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    /// `ACCEL=kvm|tcg` from the environment, else KVM only where the cpu
    /// runs guests natively (`vmx`/`svm` in /proc/cpuinfo and /dev/kvm
    /// usable), else TCG. A nested software KVM is ~1000x slower than TCG.
    pub fn from_env_or_default() -> Result<Self, String> {
        match std::env::var("ACCEL").as_deref() {
            Ok("kvm") => Ok(Accel::Kvm),
            Ok("tcg") => Ok(Accel::Tcg),
            Ok("") | Err(_) => Ok(if native_kvm() { Accel::Kvm } else { Accel::Tcg }),
            Ok(other) => Err(format!("ACCEL={other}: expected kvm or tcg")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// The guest's network card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nic {
    /// QEMU's Intel 82540EM (`-device e1000`), PCI: q35 only.
    E1000,
    /// virtio-net, modern (virtio 1.x) only: `virtio-net-pci,disable-legacy=on`
    /// on q35, `virtio-net-device` (virtio over MMIO) on microvm.
    Virtio,
    /// QEMU's Intel 82576 (`-device igb`): several queue pairs with RSS
    /// and MSI-X, PCI(e): q35 only.
    Igb,
}

impl Nic {
    /// Every card, for tests that run on each.
    pub const ALL: [Nic; 3] = [Nic::E1000, Nic::Virtio, Nic::Igb];

    /// `e1000`, `virtio` or `igb`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "e1000" => Ok(Nic::E1000),
            "virtio" => Ok(Nic::Virtio),
            "igb" => Ok(Nic::Igb),
            other => Err(format!("NIC={other}: expected e1000, virtio or igb")),
        }
    }

    /// `NIC=e1000|virtio` from the environment, else the machine type's
    /// card (virtio on microvm, which has no PCI bus; e1000 on q35).
    pub fn from_env_or_default(machine: MachineType) -> Result<Self, String> {
        match std::env::var("NIC").as_deref() {
            Ok("") | Err(_) => Ok(machine.default_nic()),
            Ok(text) => Nic::parse(text),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Nic::E1000 => "e1000",
            Nic::Virtio => "virtio",
            Nic::Igb => "igb",
        }
    }
}

/// QEMU's machine type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineType {
    /// `-machine q35`: PCI(e), firmware (SeaBIOS, or OVMF), ACPI.
    Q35,
    /// `-M microvm` (Firecracker's machine model): no PCI, no firmware
    /// beyond qboot, the ELF booted by PVH (`-kernel`), devices on
    /// virtio over MMIO. See [`MICROVM_DEFAULTS`] for the options the
    /// harness sets.
    Microvm,
}

/// The `-M` options the harness gives [`MachineType::Microvm`] unless
/// [`Machine::machine_option`] sets the same key. `acpi=off`: only then
/// does QEMU 10 append a `virtio_mmio.device=SIZE@ADDR:IRQ` word per
/// device to the kernel command line (its `auto-kernel-cmdline`), as
/// Firecracker does; with ACPI it describes its transports in the DSDT
/// alone. Without ACPI there is no MADT either: the guest finds one cpu
/// and the I/O APIC at its standard address.
pub const MICROVM_DEFAULTS: &[&str] = &["acpi=off"];

impl MachineType {
    /// Both machine types.
    pub const ALL: [MachineType; 2] = [MachineType::Q35, MachineType::Microvm];

    /// `q35` or `microvm`, optionally followed by QEMU `-M` options
    /// (`microvm,pit=off`): the type and the options.
    pub fn parse(text: &str) -> Result<(Self, Vec<String>), String> {
        let mut parts = text.split(',');
        let kind = match parts.next().unwrap_or("") {
            "q35" => MachineType::Q35,
            "microvm" => MachineType::Microvm,
            other => {
                return Err(format!(
                    "MACHINE={other}: expected q35 or microvm (optionally with QEMU -M options: microvm,pit=off)"
                ))
            }
        };
        let options: Vec<String> = parts.map(String::from).collect();
        if let Some(bad) = options.iter().find(|o| !o.contains('=')) {
            return Err(format!("MACHINE={text}: `{bad}` is not a KEY=VALUE option"));
        }
        Ok((kind, options))
    }

    /// `MACHINE=q35|microvm[,OPTIONS]` from the environment, else q35.
    pub fn from_env_or_default() -> Result<(Self, Vec<String>), String> {
        match std::env::var("MACHINE").as_deref() {
            Ok("") | Err(_) => Ok((MachineType::Q35, Vec::new())),
            Ok(text) => MachineType::parse(text),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MachineType::Q35 => "q35",
            MachineType::Microvm => "microvm",
        }
    }

    /// The card this machine type has when none is chosen.
    pub fn default_nic(self) -> Nic {
        match self {
            MachineType::Q35 => Nic::E1000,
            MachineType::Microvm => Nic::Virtio,
        }
    }

    /// QEMU's `-device` for `nic` on this machine type, attached to netdev
    /// `n0`; `Err` for a card the machine cannot have.
    pub fn nic_device(self, nic: Nic) -> Result<&'static str, String> {
        match (self, nic) {
            (MachineType::Q35, Nic::E1000) => Ok("e1000,netdev=n0"),
            (MachineType::Q35, Nic::Virtio) => Ok("virtio-net-pci,disable-legacy=on,netdev=n0"),
            (MachineType::Q35, Nic::Igb) => Ok("igb,netdev=n0"),
            (MachineType::Microvm, Nic::Virtio) => Ok("virtio-net-device,netdev=n0"),
            (MachineType::Microvm, nic @ (Nic::E1000 | Nic::Igb)) => Err(format!(
                "an {} needs a PCI bus and microvm has none: use NIC=virtio (virtio over MMIO) or MACHINE=q35",
                nic.name()
            )),
        }
    }
}

extern "C" {
    fn sysconf(name: i32) -> i64;
}

/// A TCP port on 127.0.0.1 that is free now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// Whether QEMU can run a guest under KVM here: `Err(why not)` for the
/// test's skip message. /dev/kvm must open, and a paused KVM machine must
/// start (some nested hypervisors refuse the MSRs QEMU sets for
/// `-cpu host`, and QEMU then dies before the guest runs).
pub fn kvm_status() -> Result<(), String> {
    static STATUS: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    STATUS.get_or_init(probe_kvm).clone()
}

/// Whether QEMU can run a guest under KVM here (see [`kvm_status`]).
pub fn kvm_usable() -> bool {
    kvm_status().is_ok()
}

fn probe_kvm() -> Result<(), String> {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").map_err(|e| format!("/dev/kvm: {e}"))?;
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-cpu", "host", "-M", "q35", "-m", "64", "-display", "none", "-nodefaults", "-S"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run qemu-system-x86_64: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = qemu.try_wait() {
            let mut stderr = String::new();
            let _ = std::io::Read::read_to_string(&mut qemu.stderr.take().expect("piped"), &mut stderr);
            return Err(format!(
                "QEMU cannot start a KVM guest here: {}",
                stderr.lines().next().unwrap_or("it exited")
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = qemu.kill();
    let _ = qemu.wait();
    Ok(())
}

fn native_kvm() -> bool {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    hw && kvm_usable()
}

/// Where Limine's files are: `$LIMINE_DIR` or `/usr/share/limine`.
pub fn limine_dir() -> Result<PathBuf, String> {
    let candidates =
        std::env::var_os("LIMINE_DIR").map(PathBuf::from).into_iter().chain([PathBuf::from("/usr/share/limine")]);
    for dir in candidates {
        if dir.join("limine-bios-cd.bin").is_file() && dir.join("limine-uefi-cd.bin").is_file() {
            return Ok(dir);
        }
    }
    Err(format!(
        "Limine is not installed: no limine-bios-cd.bin in $LIMINE_DIR ({}) or /usr/share/limine",
        std::env::var("LIMINE_DIR").unwrap_or_else(|_| "unset".into())
    ))
}

/// UEFI firmware for QEMU, if the `ovmf` package is installed.
pub fn ovmf_firmware() -> Option<PathBuf> {
    ["/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd", "/usr/share/OVMF/OVMF.fd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// The environment variable naming the file [`skip`] appends to (`just
/// test` sets it, empties the file first and prints it after the tests).
pub const SKIPPED_TESTS_FILE: &str = "BRAVO_SKIPPED_TESTS";

/// Marks the calling test as skipped because of `reason` (something this
/// machine lacks); the test then returns without checking anything. Prints
/// `skipped: TEST (REASON)` (seen under `--nocapture`) and, when
/// `$BRAVO_SKIPPED_TESTS` names a file, appends `TEST<TAB>REASON` to it, so
/// that `just test` can end with one line per skipped test. `TEST` is
/// `FILE::NAME`, e.g. `boot::hello_boots_by_limine_uefi`.
///
/// Test processes and their threads append at once: each line is written
/// by one `write` to a file opened with `O_APPEND`, so lines never mix.
pub fn skip(reason: impl std::fmt::Display) {
    let test = current_test_name();
    let reason = reason.to_string().replace(['\t', '\n'], " ");
    eprintln!("skipped: {test} ({reason})");
    let Some(path) = std::env::var_os(SKIPPED_TESTS_FILE) else { return };
    let line = format!("{test}\t{reason}\n");
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()));
    if let Err(e) = appended {
        panic!("cannot record the skip of {test} in {}: {e}", Path::new(&path).display());
    }
}

/// `FILE::NAME` of the running test: the test binary's name without
/// cargo's hash (`boot-0123abcd` is `tests/boot.rs`), and the name libtest
/// gives the test's thread.
fn current_test_name() -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("unnamed test");
    let exe = std::env::current_exe().ok();
    let stem = exe.as_deref().and_then(Path::file_stem).and_then(|s| s.to_str()).unwrap_or("");
    let file = stem.rsplit_once('-').map_or(stem, |(file, _hash)| file);
    if file.is_empty() {
        name.to_string()
    } else {
        format!("{file}::{name}")
    }
}

/// Where a network test runs: a machine type and its card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hardware {
    pub machine: MachineType,
    pub nic: Nic,
    /// The cpus the guest gets whatever the test asks (None: what it asks).
    pub fixed_cpus: Option<usize>,
}

impl Hardware {
    /// q35 with an e1000 (what [`Machine::new`] gives).
    pub const E1000: Hardware = Hardware { machine: MachineType::Q35, nic: Nic::E1000, fixed_cpus: None };
    /// q35 with virtio-net over PCI (modern only).
    pub const VIRTIO_PCI: Hardware = Hardware { machine: MachineType::Q35, nic: Nic::Virtio, fixed_cpus: None };
    /// q35 with an igb (82576) and 2 cpus: a network stack on each, the
    /// connections spread over both by RSS.
    pub const IGB: Hardware = Hardware { machine: MachineType::Q35, nic: Nic::Igb, fixed_cpus: Some(2) };
    /// q35 with an igb and 1 cpu: one queue, one stack.
    pub const IGB_1CPU: Hardware = Hardware { machine: MachineType::Q35, nic: Nic::Igb, fixed_cpus: Some(1) };
    /// microvm with virtio-net over MMIO.
    pub const VIRTIO_MMIO: Hardware = Hardware { machine: MachineType::Microvm, nic: Nic::Virtio, fixed_cpus: None };

    /// How many cpus the guest gets when a test asks for `wanted`: on
    /// microvm without ACPI (see [`MICROVM_DEFAULTS`]) the guest finds one;
    /// a fixed count where the hardware has one.
    pub fn cpus(self, wanted: usize) -> usize {
        match (self.machine, self.fixed_cpus) {
            (MachineType::Microvm, _) => 1,
            (MachineType::Q35, Some(cpus)) => cpus,
            (MachineType::Q35, None) => wanted,
        }
    }

    /// The name the kernel gives the card in its `net:` log line.
    pub fn driver(self) -> &'static str {
        match (self.machine, self.nic) {
            (_, Nic::E1000) => "e1000",
            (_, Nic::Igb) => "igb",
            (MachineType::Q35, Nic::Virtio) => "virtio-net-pci",
            (MachineType::Microvm, Nic::Virtio) => "virtio-net-mmio",
        }
    }
}

/// `#[test]` wrappers that run one test body on several [`Hardware`]s,
/// without repeating it: `on_hardware!(body: e1000 = E1000, virtio_mmio =
/// VIRTIO_MMIO);` makes `mod body { #[test] fn e1000() .. }`, each calling
/// `body(Hardware::E1000)` (a module and a function may share a name).
#[macro_export]
macro_rules! on_hardware {
    ($body:ident: $($test:ident = $hardware:ident),+ $(,)?) => {
        mod $body {
            $(
                #[test]
                fn $test() {
                    super::$body($crate::Hardware::$hardware)
                }
            )+
        }
    };
}

/// One NUMA node of the guest: its cpus and memory.
#[derive(Clone, Debug)]
pub struct NumaNode {
    pub cpus: std::ops::RangeInclusive<usize>,
    pub memory_mib: usize,
}

/// A virtual machine to boot: image, boot path and hardware.
#[derive(Clone, Debug)]
pub struct Machine {
    image: PathBuf,
    boot: Boot,
    accel: Accel,
    cpu_model: Option<String>,
    cpus: usize,
    memory_mib: usize,
    numa: Vec<NumaNode>,
    cmdline: String,
    extra: Vec<String>,
    timeout: Duration,
    gdb: bool,
    netns: Option<String>,
    nic: Nic,
    machine_type: MachineType,
    /// Extra `-M` options (`pit=off`), after the type's own.
    machine_options: Vec<String>,
    /// The `-netdev` of the guest's card, if it has one (the card itself
    /// is added by [`Machine::command`], from `nic` and `machine_type`).
    netdev: Option<String>,
}

impl Machine {
    /// A machine booting image `name` (a package name under
    /// `target/x86_64-unknown-none/release/`, or a path) by PVH under TCG,
    /// 1 cpu, 256 MiB, on q35 with an e1000 (when a network is added).
    pub fn new(name: &str) -> Self {
        Self {
            image: image_path(name),
            boot: Boot::Pvh,
            accel: Accel::Tcg,
            cpu_model: None,
            cpus: 1,
            memory_mib: 256,
            numa: Vec::new(),
            cmdline: String::new(),
            extra: Vec::new(),
            timeout: Duration::from_secs(60),
            gdb: false,
            netns: None,
            nic: Nic::E1000,
            machine_type: MachineType::Q35,
            machine_options: Vec::new(),
            netdev: None,
        }
    }

    /// The network card the network builders ([`Machine::user_net`] and
    /// the others) attach, whenever this is called.
    pub fn nic(mut self, nic: Nic) -> Self {
        self.nic = nic;
        self
    }
    /// QEMU's machine type. [`MachineType::Microvm`] boots by PVH only,
    /// has no NUMA and no PCI (so its card is virtio over MMIO).
    pub fn machine_type(mut self, machine_type: MachineType) -> Self {
        self.machine_type = machine_type;
        self
    }
    /// An extra `-M` option (`pit=off`, `acpi=on`).
    pub fn machine_option(self, option: &str) -> Self {
        self.machine_options([option])
    }
    /// Extra `-M` options, in order.
    pub fn machine_options<I: IntoIterator<Item = S>, S: Into<String>>(mut self, options: I) -> Self {
        self.machine_options.extend(options.into_iter().map(Into::into));
        self
    }
    /// A virtio card on microvm (virtio over MMIO): `machine_type(Microvm)`
    /// and `nic(Virtio)`.
    pub fn microvm(self) -> Self {
        self.machine_type(MachineType::Microvm).nic(Nic::Virtio)
    }
    /// The machine type and card of `hardware`.
    pub fn on(self, hardware: Hardware) -> Self {
        self.machine_type(hardware.machine).nic(hardware.nic)
    }
    pub fn nic_kind(&self) -> Nic {
        self.nic
    }
    pub fn machine_kind(&self) -> MachineType {
        self.machine_type
    }

    pub fn boot(mut self, boot: Boot) -> Self {
        self.boot = boot;
        self
    }
    pub fn accel(mut self, accel: Accel) -> Self {
        self.accel = accel;
        self
    }
    /// QEMU's `-cpu` model (default: `max` under TCG, `host` under KVM).
    pub fn cpu_model(mut self, model: &str) -> Self {
        self.cpu_model = Some(model.into());
        self
    }
    pub fn cpus(mut self, cpus: usize) -> Self {
        self.cpus = cpus;
        self
    }
    pub fn memory_mib(mut self, mib: usize) -> Self {
        self.memory_mib = mib;
        self
    }
    /// Splits cpus and memory into NUMA nodes (total memory becomes the sum).
    pub fn numa(mut self, nodes: &[NumaNode]) -> Self {
        self.numa = nodes.to_vec();
        self.memory_mib = nodes.iter().map(|n| n.memory_mib).sum();
        self
    }
    /// The two-node layout the tests use: cpus 0-1 with 512 MiB on node 0,
    /// cpus 2-3 with 512 MiB on node 1, SLIT distance 30 between them.
    pub fn two_numa_nodes(self) -> Self {
        self.numa(&[NumaNode { cpus: 0..=1, memory_mib: 512 }, NumaNode { cpus: 2..=3, memory_mib: 512 }])
            .cpus(4)
            .args(["-numa", "dist,src=0,dst=1,val=30"])
    }
    /// The guest's card on QEMU user networking (the guest gets 10.0.2.15 by DHCP;
    /// 10.0.2.2 is the host's loopback), with each `(host, guest)` port
    /// pair forwarded from 127.0.0.1 for TCP and UDP.
    pub fn user_net(self, forwards: &[(u16, u16)]) -> Self {
        let rules: String = forwards
            .iter()
            .flat_map(|(host, guest)| ["tcp", "udp"].map(|p| format!(",hostfwd={p}:127.0.0.1:{host}-:{guest}")))
            .collect();
        self.netdev(format!("user,id=n0{rules}"))
    }

    /// The guest's card (see [`Machine::nic`]) on netdev `n0` = `netdev`.
    fn netdev(mut self, netdev: String) -> Self {
        self.netdev = Some(netdev);
        self
    }

    /// The guest's card on restricted QEMU user networking (nothing the guest sends
    /// leaves for the host's networks; each `(host, guest)` TCP port pair
    /// is forwarded from 127.0.0.1) with the harness spliced into the link
    /// by two net filters (see [`attack::Lan`]): frames written to
    /// `lan.inject` reach the guest, and every frame the guest sends goes
    /// to `lan.guest_out`; what the harness writes back to
    /// `lan.to_user_net` goes on to the user network. QEMU connects to the
    /// three sockets as it starts. Restricted user networking offers no
    /// router by DHCP: give the guest [`attack::GUEST_CMDLINE`].
    pub fn user_net_spliced(self, forwards: &[(u16, u16)], lan: &attack::LanPaths) -> Self {
        let rules: String =
            forwards.iter().map(|(host, guest)| format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}")).collect();
        let chardev = |id: &str, path: &Path| format!("socket,id={id},path={}", path.display());
        self.netdev(format!("user,id=n0,restrict=on{rules}"))
            .args(["-chardev", &chardev("lan-inject", &lan.inject)])
            .args(["-chardev", &chardev("lan-guest-out", &lan.guest_out)])
            .args(["-chardev", &chardev("lan-to-user-net", &lan.to_user_net)])
            // A filter's transmit queue carries what the netdev sends (to
            // the guest), its receive queue what the netdev receives.
            .args(["-object", "filter-redirector,id=lan-in,netdev=n0,queue=tx,indev=lan-inject"])
            .args([
                "-object",
                "filter-redirector,id=lan-out,netdev=n0,queue=rx,outdev=lan-guest-out,indev=lan-to-user-net",
            ])
    }

    /// The guest's card with a wire that is a pair of unix datagram sockets, one frame
    /// per datagram: QEMU receives on `guest` and sends to `host`.
    pub fn dgram_net(self, guest: &Path, host: &Path) -> Self {
        let netdev = format!(
            "dgram,id=n0,local.type=unix,local.path={},remote.type=unix,remote.path={}",
            guest.display(),
            host.display()
        );
        self.netdev(netdev)
    }

    /// The guest's card on the tap device `tap` of network namespace `netns`
    /// (QEMU then runs inside that namespace; see [`netns::Netns`]).
    pub fn tap_net(mut self, netns: &str, tap: &str) -> Self {
        self.netns = Some(netns.into());
        self.netdev(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
    }

    pub fn cmdline(mut self, cmdline: &str) -> Self {
        self.cmdline = cmdline.into();
        self
    }
    /// Extra QEMU arguments (devices, netdevs...).
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }
    /// How long [`Machine::run`] waits before killing QEMU.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Starts halted with a gdb stub on :1234.
    pub fn gdb(mut self, on: bool) -> Self {
        self.gdb = on;
        self
    }

    pub fn image(&self) -> &Path {
        &self.image
    }
    pub fn boot_path(&self) -> Boot {
        self.boot
    }

    /// The QEMU command for this machine (builds the ISO for Limine boots).
    pub fn command(&self) -> Result<Command, String> {
        if !self.image.is_file() {
            return Err(format!("kernel image {} not found: build it first (`just build`)", self.image.display()));
        }
        let qemu = std::env::var("QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
        let mut cmd = match &self.netns {
            Some(netns) => {
                // `ip netns exec` enters the namespace and execs QEMU (same pid).
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", netns]).arg(qemu);
                cmd
            }
            None => Command::new(qemu),
        };
        let cpu_model = self.cpu_model.clone().unwrap_or_else(|| match self.accel {
            Accel::Tcg => "max".into(),
            Accel::Kvm => "host".into(),
        });
        let machine = match self.machine_type {
            MachineType::Q35 => "q35".to_string(),
            MachineType::Microvm => {
                if self.boot != Boot::Pvh {
                    return Err(format!(
                        "microvm has no firmware to boot a Limine ISO ({:?}): it boots the ELF by PVH (BOOT=pvh)",
                        self.boot
                    ));
                }
                if !self.numa.is_empty() {
                    return Err("microvm ignores -numa (its guest sees one node): use MACHINE=q35 for NUMA".into());
                }
                let key = |option: &str| option.split('=').next().unwrap_or("").to_string();
                let overridden = |default: &&str| self.machine_options.iter().any(|o| key(o) == key(default));
                MICROVM_DEFAULTS
                    .iter()
                    .filter(|d| !overridden(d))
                    .fold("microvm".to_string(), |m, o| format!("{m},{o}"))
            }
        };
        let machine = self.machine_options.iter().fold(machine, |m, o| format!("{m},{o}"));
        cmd.args(["-machine", &machine, "-accel", self.accel.name(), "-cpu", &cpu_model]);
        cmd.args(["-smp", &self.cpus.to_string(), "-m", &format!("{}M", self.memory_mib)]);
        for (id, node) in self.numa.iter().enumerate() {
            cmd.args(["-object", &format!("memory-backend-ram,id=m{id},size={}M", node.memory_mib)]);
            cmd.args([
                "-numa",
                &format!("node,nodeid={id},cpus={}-{},memdev=m{id}", node.cpus.start(), node.cpus.end()),
            ]);
        }
        cmd.args(["-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot"]);
        if self.machine_type == MachineType::Microvm {
            // No ~/.config/qemu or /etc/qemu files; modern virtio-mmio
            // (QEMU's microvm makes its transports legacy, version 1, by
            // default, and Firecracker's are version 2).
            cmd.args(["-no-user-config", "-global", "virtio-mmio.force-legacy=false"]);
        }
        cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        match self.boot {
            Boot::Pvh => {
                cmd.arg("-kernel").arg(&self.image);
                if !self.cmdline.is_empty() {
                    cmd.args(["-append", &self.cmdline]);
                }
            }
            Boot::Limine | Boot::LimineUefi => {
                if self.boot == Boot::LimineUefi {
                    let firmware = ovmf_firmware().ok_or("UEFI boot needs OVMF (Debian package `ovmf`)")?;
                    cmd.arg("-bios").arg(firmware);
                }
                cmd.arg("-cdrom").arg(self.build_iso()?);
            }
        }
        if self.gdb {
            cmd.args(["-s", "-S"]);
        }
        if let Some(netdev) = &self.netdev {
            cmd.args(["-device", self.machine_type.nic_device(self.nic)?, "-netdev", netdev]);
        }
        cmd.args(&self.extra);
        Ok(cmd)
    }

    /// Builds a Limine ISO for this image and command line, named after
    /// both (so reruns overwrite it), written to a temporary file first so
    /// that concurrent runs never boot a half-written ISO.
    fn build_iso(&self) -> Result<PathBuf, String> {
        use std::hash::{Hash, Hasher};
        limine_dir()?;
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = self.image.file_name().and_then(|n| n.to_str()).unwrap_or("kernel");
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.cmdline.hash(&mut hasher);
        let dir = workspace_root().join("target/iso");
        let iso = dir.join(format!("{name}-{:016x}.iso", hasher.finish()));
        let tmp = dir.join(format!(".{name}-{}-{}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        let out = Command::new(workspace_root().join("scripts/make-iso"))
            .arg(&self.image)
            .arg(&tmp)
            .arg(&self.cmdline)
            .output()
            .map_err(|e| format!("cannot run scripts/make-iso: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("make-iso failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        std::fs::rename(&tmp, &iso).map_err(|e| format!("cannot move the ISO into place: {e}"))?;
        Ok(iso)
    }

    /// Starts the VM with its serial output captured.
    pub fn start(&self) -> Running {
        let mut cmd = self.command().unwrap_or_else(|e| panic!("{e}"));
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start QEMU ({cmd:?}): {e}"));
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("piped stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).split(b'\n') {
                    let Ok(line) = line else { break };
                    let text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_string();
                    if tx.send(Line { at: started.elapsed(), text }).is_err() {
                        break;
                    }
                }
            });
        }
        Running { child, lines: rx, seen: Vec::new(), started, timeout: self.timeout }
    }

    /// Boots, waits for the VM to end (or the timeout), returns what it did.
    pub fn run(&self) -> Run {
        self.start().wait()
    }
}

/// The `ktest` test image running one scenario (`-- SCENARIO`), 1 cpu.
pub fn ktest(scenario: &str) -> Machine {
    Machine::new("ktest").cmdline(&format!("-- {scenario}"))
}

/// Runs a `ktest` scenario that must end the VM with failure.
#[track_caller]
pub fn ktest_failing(scenario: &str) -> Run {
    let run = ktest(scenario).run();
    run.assert_failure();
    run
}

/// One line of serial output (or QEMU's stderr), with when it arrived.
#[derive(Clone, Debug)]
pub struct Line {
    /// Time since QEMU was started.
    pub at: Duration,
    pub text: String,
}

/// How the VM ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The kernel reported success.
    Success,
    /// The kernel reported failure.
    Failure,
    /// QEMU ended with another status (its own error, or a reset with
    /// `-no-reboot`, e.g. after a triple fault).
    Qemu(Option<i32>),
    /// The harness killed QEMU at the timeout.
    TimedOut,
}

impl Exit {
    fn from_status(status: ExitStatus) -> Self {
        match status.code() {
            Some(QEMU_SUCCESS) => Exit::Success,
            Some(QEMU_FAILURE) => Exit::Failure,
            code => Exit::Qemu(code),
        }
    }
}

/// A running VM. Dropping it kills QEMU.
pub struct Running {
    child: Child,
    lines: Receiver<Line>,
    seen: Vec<Line>,
    started: Instant,
    timeout: Duration,
}

impl Running {
    /// Waits until a line containing `needle` arrives; returns it.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<Line, String> {
        if let Some(line) = self.seen.iter().find(|l| l.text.contains(needle)) {
            return Ok(line.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.text.contains(needle);
                    self.seen.push(line.clone());
                    if found {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "no line containing {needle:?} within {timeout:?}; serial so far:\n{}",
                        self.serial()
                    ))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("QEMU ended before printing {needle:?}; serial:\n{}", self.serial()))
                }
            }
        }
    }

    /// Everything printed so far, including lines not yet waited for.
    pub fn serial_now(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.serial()
    }

    /// Everything printed so far.
    pub fn serial(&self) -> String {
        self.seen.iter().map(|l| l.text.as_str()).collect::<Vec<_>>().join("\n")
    }

    /// QEMU's process id (to measure its CPU time, for instance).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The host cpu time (user + system) QEMU has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("QEMU's /proc entry");
        // Fields after the command name (in parentheses): state is field 3,
        // utime and stime are fields 14 and 15, in clock ticks.
        let after_name = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field =
            |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).expect("utime and stime in /proc/PID/stat");
        let ticks = field(11) + field(12);
        // SAFETY: sysconf(_SC_CLK_TCK = 2 on Linux) only reads a constant.
        let hz = unsafe { sysconf(2) }.max(1);
        Duration::from_secs_f64(ticks as f64 / hz as f64)
    }

    /// Waits for the VM to end, killing it at the machine's timeout.
    pub fn wait(mut self) -> Run {
        let deadline = self.started + self.timeout;
        let exit = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Exit::from_status(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break Exit::TimedOut;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("cannot wait for QEMU: {e}"),
            }
        };
        let elapsed = self.started.elapsed();
        // The readers end when QEMU's pipes close.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        Run { lines: std::mem::take(&mut self.seen), exit, elapsed }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished VM did.
#[derive(Debug)]
pub struct Run {
    pub lines: Vec<Line>,
    pub exit: Exit,
    /// From QEMU start to its exit.
    pub elapsed: Duration,
}

impl Run {
    pub fn serial(&self) -> String {
        self.lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>().join("\n")
    }

    /// The first line containing `needle`.
    pub fn line(&self, needle: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.text.contains(needle))
    }

    #[track_caller]
    pub fn assert_line(&self, needle: &str) -> &Line {
        self.line(needle).unwrap_or_else(|| {
            panic!("no serial line contains {needle:?} (exit {:?}); serial:\n{}", self.exit, self.serial())
        })
    }

    #[track_caller]
    pub fn assert_no_line(&self, needle: &str) {
        if let Some(line) = self.line(needle) {
            panic!("unexpected serial line {:?}; serial:\n{}", line.text, self.serial());
        }
    }

    #[track_caller]
    pub fn assert_exit(&self, expected: Exit) -> &Self {
        assert_eq!(self.exit, expected, "unexpected exit; serial:\n{}", self.serial());
        self
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert_exit(Exit::Success)
    }

    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        self.assert_exit(Exit::Failure)
    }

    /// Checks an in-kernel suite's final line: `NAME: N passed, 0 failed`
    /// with N > 0. Returns N.
    #[track_caller]
    pub fn assert_suite_passed(&self, suite: &str) -> usize {
        let prefix = format!("{suite}: ");
        let line = self.assert_line(&prefix);
        let counts = line.text[line.text.find(&prefix).unwrap() + prefix.len()..].to_string();
        let mut numbers =
            counts.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse::<usize>().unwrap());
        let (passed, failed) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(usize::MAX));
        assert!(failed == 0 && passed > 0, "suite {suite}: {counts}; serial:\n{}", self.serial());
        self.assert_success();
        passed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine whose image exists (the test binary itself: `command`
    /// only checks that the file is there).
    fn machine() -> Machine {
        Machine::new(std::env::current_exe().unwrap().to_str().unwrap())
    }

    fn words(machine: &Machine) -> Vec<String> {
        let cmd = machine.command().unwrap();
        cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    fn has(words: &[String], pair: [&str; 2]) -> bool {
        words.windows(2).any(|w| w[0] == pair[0] && w[1] == pair[1])
    }

    #[test]
    fn the_card_follows_the_nic_and_machine_type_whenever_they_are_chosen() {
        let q35 = words(&machine().user_net(&[(8080, 80)]));
        assert!(has(&q35, ["-machine", "q35"]) && has(&q35, ["-device", "e1000,netdev=n0"]), "{q35:?}");
        // The card may be chosen after the network.
        let pci = words(&machine().user_net(&[]).nic(Nic::Virtio));
        assert!(has(&pci, ["-device", "virtio-net-pci,disable-legacy=on,netdev=n0"]), "{pci:?}");
        let mmio = words(&machine().microvm().cpus(1).tap_net("ns", "tap0"));
        assert!(
            has(&mmio, ["-machine", "microvm,acpi=off"]) && has(&mmio, ["-device", "virtio-net-device,netdev=n0"]),
            "{mmio:?}"
        );
        assert!(
            has(&mmio, ["-global", "virtio-mmio.force-legacy=false"])
                && has(&mmio, ["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
        );
        assert!(has(&mmio, ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]) && has(&mmio, ["-serial", "stdio"]));
        assert!(mmio.iter().any(|w| w == "-no-user-config"));
        // No network, no card.
        assert!(!words(&machine().nic(Nic::Virtio)).iter().any(|w| w.contains("virtio-net")));
        let options = words(&machine().microvm().machine_option("pit=off"));
        assert!(has(&options, ["-machine", "microvm,acpi=off,pit=off"]), "{options:?}");
        // An option replaces the harness's default of the same key.
        let acpi = words(&machine().microvm().machine_option("acpi=on"));
        assert!(has(&acpi, ["-machine", "microvm,acpi=on"]), "{acpi:?}");
    }

    #[test]
    fn what_microvm_cannot_do_is_a_clear_error() {
        let err = |m: Machine| m.command().expect_err("an error");
        assert!(err(machine().machine_type(MachineType::Microvm).user_net(&[])).contains("microvm has none"));
        assert!(err(machine().microvm().boot(Boot::Limine)).contains("PVH"));
        assert!(err(machine().microvm().two_numa_nodes()).contains("-numa"));
    }

    #[test]
    fn nic_and_machine_names_are_parsed() {
        assert_eq!(Nic::parse("virtio"), Ok(Nic::Virtio));
        assert_eq!(Nic::parse("e1000"), Ok(Nic::E1000));
        assert!(Nic::parse("rtl8139").unwrap_err().contains("expected e1000, virtio or igb"));
        assert_eq!(Nic::parse("igb"), Ok(Nic::Igb));
        assert_eq!(MachineType::parse("q35"), Ok((MachineType::Q35, vec![])));
        assert_eq!(
            MachineType::parse("microvm,pit=off,rtc=off"),
            Ok((MachineType::Microvm, vec!["pit=off".into(), "rtc=off".into()]))
        );
        assert!(MachineType::parse("pc").unwrap_err().contains("expected q35 or microvm"));
        assert!(MachineType::parse("microvm,fast").unwrap_err().contains("KEY=VALUE"));
        assert_eq!(MachineType::Microvm.default_nic(), Nic::Virtio);
    }
}
