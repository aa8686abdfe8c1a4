//! The Linux guest peer: Debian's kernel, busybox and `bravo-linux-peer` in
//! an initramfs, booted on the same QEMU command line (`-kernel`, `-initrd`,
//! `-append`, the same card: e1000, virtio-net over PCI or, on microvm,
//! over MMIO) as a Bravo image, so that benchmarks can put Linux beside
//! Bravo in the same run.
//!
//! ```no_run
//! let peer = bravo_tests::linux_peer::build().expect("a Debian host");
//! let append = bravo_tests::linux_peer::cmdline("http", 80, "10.0.2.15/24");
//! // qemu-system-x86_64 ... -kernel peer.kernel -initrd peer.initrd -append append
//! ```
//!
//! The guest prints `peer: linux VERSION up, cpus=N eth0_rx_queues=Q`
//! (the cpus Linux runs and the receive queues its driver made), then the
//! server prints
//! `peer: ready mode=MODE port=PORT`; a failure prints a line starting with
//! `peer: error` and powers the VM off.
//!
//! Everything is cached under `target/linux-peer/`: the kernel, its modules
//! and busybox per kernel release (`apt-get download` + `dpkg-deb -x`, once),
//! the peer binary (its own cargo target dir, built static) and the initrd
//! (rebuilt when the peer binary or the init script changes).

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

/// A built Linux peer.
#[derive(Clone, Debug)]
pub struct LinuxPeer {
    /// The kernel image (`-kernel`).
    pub kernel: PathBuf,
    /// The gzip'd newc initramfs (`-initrd`).
    pub initrd: PathBuf,
    /// The kernel release, as `uname -r` prints it (e.g. `6.1.0-56-amd64`).
    pub version: String,
}

/// Debian's meta package that depends on the current kernel image package.
const META_PACKAGE: &str = "linux-image-amd64";
/// Modules the guest loads, with their dependencies resolved at build time
/// (Debian builds all of these as modules): the three cards (`igb` needs
/// `dca`, `i2c-algo-bit` and more, read from its `depends=`; it spreads
/// flows over one queue per cpu with RSS by itself), and virtio's two
/// transports (`virtio_mmio` finds microvm's in ACPI: see
/// [`machine_options`]).
const MODULES: &[&str] = &["e1000", "igb", "virtio_net", "virtio_pci", "virtio_mmio"];
/// The peer's binary target (static glibc).
const PEER_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Marks a complete kernel cache directory.
const COMPLETE: &str = "complete";

/// Serialises builds within this process (tests run on several threads).
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Builds (or reuses from the cache) a Linux guest: Debian's kernel +
/// busybox + bravo-linux-peer. `Err` says what is missing (callers skip the
/// Linux column then).
pub fn build() -> Result<LinuxPeer, String> {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache_dir();
    fs::create_dir_all(&cache).map_err(|e| format!("creating {}: {e}", cache.display()))?;
    let peer = build_peer_binary(&cache)?;
    let version = ensure_kernel(&cache)?;
    let dir = cache.join(&version);
    let initrd = dir.join("initrd.cpio.gz");
    let init = init_script(&read_module_order(&dir)?);
    if initrd_stale(&initrd, &peer, &dir.join("init"), &init) {
        write_initrd(&dir, &peer, &init, &initrd)?;
        fs::write(dir.join("init"), &init).map_err(|e| format!("writing the init copy: {e}"))?;
    }
    Ok(LinuxPeer { kernel: dir.join("vmlinuz"), initrd, version })
}

/// The `-M` options the peer needs on `machine` beside the harness's own:
/// on microvm, ACPI (`acpi=on`), because Debian's kernel is built without
/// `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`, so its `virtio_mmio` ignores the
/// `virtio_mmio.device=` words QEMU appends without ACPI and finds the
/// transports only in the DSDT.
pub fn machine_options(machine: crate::MachineType) -> &'static [&'static str] {
    match machine {
        crate::MachineType::Q35 => &[],
        crate::MachineType::Microvm => &["acpi=on"],
    }
}

/// Kernel command line for a mode: e.g. `cmdline("sink", 9000, "10.0.0.2/24")`.
///
/// `mitigations=off` because Bravo has none either; `tsc=reliable` spares
/// the TSC watchdog under TCG; `tsc_early_khz=` gives the TSC rate (the
/// host's: TCG's guest TSC is the host's, and so is KVM's without scaling)
/// because on microvm, with no HPET and no ACPI PM timer, Linux's
/// calibration against the PIT fails on a loaded host about one boot in
/// two ("tsc: Unable to calibrate against PIT"), and the guest then hangs.
pub fn cmdline(mode: &str, port: u16, ip_cidr: &str) -> String {
    let tsc = host_tsc_khz().map(|khz| format!("tsc_early_khz={khz} ")).unwrap_or_default();
    format!(
        "console=ttyS0 quiet panic=-1 tsc=reliable {tsc}mitigations=off \
         bravo.mode={mode} bravo.port={port} bravo.ip={ip_cidr}"
    )
}

/// The host's TSC rate in kHz, measured once against the monotonic clock
/// over 100 ms (0.1% is well within what Linux's TSC needs); `None` off
/// x86_64.
fn host_tsc_khz() -> Option<u64> {
    static KHZ: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *KHZ.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::time::{Duration, Instant};
            // SAFETY: RDTSC only reads the time-stamp counter, present on
            // every x86_64 cpu.
            let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
            let (start, ticks_before) = (Instant::now(), tsc());
            std::thread::sleep(Duration::from_millis(100));
            let (ticks, elapsed) = (tsc().wrapping_sub(ticks_before), start.elapsed());
            Some((ticks as f64 / elapsed.as_secs_f64() / 1000.0) as u64).filter(|&khz| khz > 0)
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    })
}

/// `<workspace>/target/linux-peer`.
fn cache_dir() -> PathBuf {
    crate::workspace_root().join("target/linux-peer")
}

// ---------------------------------------------------------------------------
// The peer binary

/// Builds `bravo-linux-peer` statically in its own target directory (so the
/// flags do not churn the main build) and returns its path.
fn build_peer_binary(cache: &Path) -> Result<PathBuf, String> {
    let target_dir = cache.join("cargo");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(crate::workspace_root())
        .args(["build", "--release", "-q", "-p", "bravo-linux-peer", "--target", PEER_TARGET])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        // A small initrd boots faster: no debug info in the guest.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building bravo-linux-peer for {PEER_TARGET} failed (is the static glibc, libc6-dev, installed?):\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(target_dir.join(PEER_TARGET).join("release/bravo-linux-peer"))
}

// ---------------------------------------------------------------------------
// The kernel, its modules and busybox

/// Makes sure `cache/<release>/` holds `vmlinuz`, `busybox`, the modules and
/// their load order; returns the release.
fn ensure_kernel(cache: &Path) -> Result<String, String> {
    let package = match kernel_package() {
        Ok(package) => package,
        // No apt (or no package lists): a kernel cached earlier still serves.
        Err(e) => return newest_cached(cache).ok_or(e),
    };
    let version = package.strip_prefix("linux-image-").unwrap_or(&package).to_string();
    if is_complete(&cache.join(&version)) {
        return Ok(version);
    }
    fetch_kernel(cache, &package, &version)?;
    Ok(version)
}

/// The kernel image package the meta package depends on for this host's
/// default suite (apt's candidate, so backports are only used when pinned).
fn kernel_package() -> Result<String, String> {
    let output = run(Command::new("apt-cache").args(["depends", META_PACKAGE]))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let package = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends:"))
        .map(|dep| dep.trim().trim_start_matches('<').trim_end_matches('>'))
        .find(|dep| dep.starts_with("linux-image-") && dep.ends_with("-amd64"));
    package.map(str::to_string).ok_or_else(|| {
        format!(
            "apt-cache knows no {META_PACKAGE} with a linux-image-*-amd64 dependency \
             (package lists missing? run `apt-get update`; the Linux peer needs a Debian host){}",
            stderr_tail(&output)
        )
    })
}

/// The newest complete kernel in the cache.
fn newest_cached(cache: &Path) -> Option<String> {
    let mut versions: Vec<String> = fs::read_dir(cache)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter(|entry| is_complete(&entry.path()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    versions.sort();
    versions.pop()
}

/// Downloads and unpacks the kernel and busybox, keeping only what the
/// guest needs in `cache/<version>/`.
fn fetch_kernel(cache: &Path, package: &str, version: &str) -> Result<(), String> {
    let work = cache.join(format!("work-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
    let result = fetch_into(&work, cache, package, version);
    let _ = fs::remove_dir_all(&work);
    result
}

fn fetch_into(work: &Path, cache: &Path, package: &str, version: &str) -> Result<(), String> {
    // apt-get downloads as user _apt where it can: let it write here.
    let _ = Command::new("chmod").arg("0777").arg(work).status();
    let output = run(Command::new("apt-get").current_dir(work).args(["download", package, "busybox-static"]))?;
    if !output.status.success() {
        return Err(format!(
            "apt-get download {package} busybox-static failed (run `apt-get update` if the package lists are missing){}",
            stderr_tail(&output)
        ));
    }
    let tree = work.join("root");
    for deb in debs_in(work)? {
        let output = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
        if !output.status.success() {
            return Err(format!("dpkg-deb -x {} failed{}", deb.display(), stderr_tail(&output)));
        }
    }

    let staging = cache.join(format!("{version}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(staging.join("modules")).map_err(|e| format!("creating {}: {e}", staging.display()))?;
    copy(&tree.join(format!("boot/vmlinuz-{version}")), &staging.join("vmlinuz"))?;
    copy(&tree.join("bin/busybox"), &staging.join("busybox"))?;
    let modules = tree.join(format!("lib/modules/{version}"));
    let order = resolve_modules(&modules, MODULES)?;
    for (name, path) in &order {
        fs::write(staging.join("modules").join(format!("{name}.ko")), module_bytes(path)?)
            .map_err(|e| format!("writing module {name}: {e}"))?;
    }
    let names: Vec<&str> = order.iter().map(|(name, _)| name.as_str()).collect();
    fs::write(staging.join("modules.order"), names.join("\n") + "\n").map_err(|e| e.to_string())?;
    fs::write(staging.join(COMPLETE), complete_marker(package)).map_err(|e| e.to_string())?;

    // Another process may have cached the same kernel meanwhile: keep its.
    let dest = cache.join(version);
    if !is_complete(&dest) {
        let _ = fs::remove_dir_all(&dest);
        if let Err(e) = fs::rename(&staging, &dest) {
            if !is_complete(&dest) {
                return Err(format!("renaming {} to {}: {e}", staging.display(), dest.display()));
            }
        }
    }
    let _ = fs::remove_dir_all(&staging);
    Ok(())
}

/// What the `complete` file of a kernel cache directory says: the package
/// and the modules wanted when it was made (a cache made for other modules
/// is made again).
fn complete_marker(package: &str) -> String {
    format!("{package}\nmodules: {}\n", MODULES.join(","))
}

/// Whether `dir` is a complete kernel cache for today's [`MODULES`].
fn is_complete(dir: &Path) -> bool {
    fs::read_to_string(dir.join(COMPLETE)).is_ok_and(|text| text.lines().nth(1) == complete_marker("").lines().nth(1))
}

/// The `.deb` files in a directory.
fn debs_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let debs: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .collect();
    if debs.len() < 2 {
        return Err(format!("apt-get download left {} .deb file(s) in {}, expected 2", debs.len(), dir.display()));
    }
    Ok(debs)
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    fs::copy(from, to).map(|_| ()).map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))
}

/// The module load order written when the kernel was cached.
fn read_module_order(dir: &Path) -> Result<Vec<String>, String> {
    let text = fs::read_to_string(dir.join("modules.order"))
        .map_err(|e| format!("reading {}: {e}", dir.join("modules.order").display()))?;
    Ok(text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
}

/// Module names are spelled with `_` or `-` interchangeably.
fn module_key(name: &str) -> String {
    name.replace('-', "_")
}

/// Resolves `wanted` and their `depends=` (there is no `modules.dep` in the
/// package) into a load order, dependencies first. Built-in modules are
/// skipped.
fn resolve_modules(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<(String, PathBuf)>, String> {
    let mut index = std::collections::HashMap::new();
    index_modules(&modules_dir.join("kernel"), &mut index)?;
    let builtin: std::collections::HashSet<String> = fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.rsplit('/').next())
        .map(|file| module_key(file.trim_end_matches(".ko")))
        .collect();
    let mut order = Vec::new();
    for name in wanted {
        visit_module(&module_key(name), &index, &builtin, &mut order, &mut Vec::new())?;
    }
    Ok(order)
}

fn visit_module(
    name: &str,
    index: &std::collections::HashMap<String, PathBuf>,
    builtin: &std::collections::HashSet<String>,
    order: &mut Vec<(String, PathBuf)>,
    stack: &mut Vec<String>,
) -> Result<(), String> {
    if order.iter().any(|(n, _)| n == name) || builtin.contains(name) {
        return Ok(());
    }
    if stack.iter().any(|n| n == name) {
        return Err(format!("module dependency cycle through {name}"));
    }
    let path = index.get(name).ok_or_else(|| format!("module {name} is neither in the kernel package nor built in"))?;
    stack.push(name.to_string());
    for dep in module_depends(&module_bytes(path)?) {
        visit_module(&module_key(&dep), index, builtin, order, stack)?;
    }
    stack.pop();
    order.push((name.to_string(), path.clone()));
    Ok(())
}

/// Maps module names to their files (`.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`).
fn index_modules(dir: &Path, index: &mut std::collections::HashMap<String, PathBuf>) -> Result<(), String> {
    for entry in fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            index_modules(&path, index)?;
        } else if let Some(file) = path.file_name().and_then(|f| f.to_str()) {
            if let Some((stem, _)) = file.split_once(".ko") {
                index.insert(module_key(stem), path.clone());
            }
        }
    }
    Ok(())
}

/// A module's ELF, decompressed on the host when the package ships it
/// compressed (busybox's insmod takes plain `.ko` files only).
fn module_bytes(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.zst") {
        "zstd"
    } else if name.ends_with(".ko.gz") {
        "gzip"
    } else {
        return fs::read(path).map_err(|e| format!("reading {name}: {e}"));
    };
    let output =
        Command::new(tool).arg("-dc").arg(path).output().map_err(|e| format!("{tool} (to decompress {name}): {e}"))?;
    if !output.status.success() {
        return Err(format!("{tool} -dc {name} failed{}", stderr_tail(&output)));
    }
    Ok(output.stdout)
}

/// The `depends=` entry of a module's `.modinfo` (what `modinfo -F depends`
/// prints), split at commas.
fn module_depends(elf: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = elf.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &elf[at + KEY.len()..];
    let value = &value[..value.iter().position(|&b| b == 0).unwrap_or(value.len())];
    String::from_utf8_lossy(value).split(',').filter(|d| !d.is_empty()).map(str::to_string).collect()
}

// ---------------------------------------------------------------------------
// The initramfs

/// The guest's `/init`: mounts, loads the modules, configures eth0 from the
/// command line and execs the peer on the console.
fn init_script(modules: &[String]) -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fail() {{ echo "peer: error: $*" > /dev/console; poweroff -f; sleep 10; }}
mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
for m in {modules}; do
    # As modprobe does: MODULE.KEY=VALUE words of the command line are the
    # module's parameters.
    params=
    for arg in $(cat /proc/cmdline); do
        case "$arg" in "$m".*=*) params="$params ${{arg#"$m".}}" ;; esac
    done
    insmod /lib/modules/$m.ko $params || fail "insmod $m$params"
done
MODE= PORT= IP=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        bravo.mode=*) MODE="${{arg#bravo.mode=}}" ;;
        bravo.port=*) PORT="${{arg#bravo.port=}}" ;;
        bravo.ip=*) IP="${{arg#bravo.ip=}}" ;;
    esac
done
[ -n "$MODE" ] && [ -n "$PORT" ] && [ -n "$IP" ] || fail "bravo.mode=, bravo.port= and bravo.ip= are required"
n=0
while [ ! -e /sys/class/net/eth0 ]; do
    n=$((n + 1)); [ $n -le 50 ] || fail "no eth0"; sleep 0.1
done
echo 4194304 > /proc/sys/net/core/rmem_max
echo 4194304 > /proc/sys/net/core/wmem_max
echo 8192 > /proc/sys/net/core/somaxconn
echo 8192 > /proc/sys/net/ipv4/tcp_max_syn_backlog
ip link set lo up || fail "ip link set lo up"
ip link set eth0 up || fail "ip link set eth0 up"
ip addr add "$IP" dev eth0 || fail "ip addr add $IP dev eth0"
QUEUES=$(ls -d /sys/class/net/eth0/queues/rx-* | wc -l)
echo "peer: linux $(uname -r) up, cpus=$(grep -c ^processor /proc/cpuinfo) eth0_rx_queues=$QUEUES" > /dev/console
exec /bin/bravo-linux-peer "$MODE" "$PORT" > /dev/console 2>&1
fail "exec bravo-linux-peer"
"#,
        modules = modules.join(" ")
    )
}

/// The initrd needs rebuilding when missing, older than the peer binary, or
/// built from another init script.
fn initrd_stale(initrd: &Path, peer: &Path, init_copy: &Path, init: &str) -> bool {
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(initrd), modified(peer)) {
        (Some(built), Some(peer)) if built >= peer => fs::read_to_string(init_copy).ok().as_deref() != Some(init),
        _ => true,
    }
}

/// Writes the gzip'd newc cpio archive.
fn write_initrd(dir: &Path, peer: &Path, init: &str, initrd: &Path) -> Result<(), String> {
    let read = |p: &Path| fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"] {
        cpio.dir(d);
    }
    cpio.char_device("dev/console", 5, 1);
    cpio.file("bin/busybox", 0o755, &read(&dir.join("busybox"))?);
    cpio.symlink("bin/sh", "busybox");
    cpio.file("bin/bravo-linux-peer", 0o755, &read(peer)?);
    cpio.file("init", 0o755, init.as_bytes());
    for name in read_module_order(dir)? {
        cpio.file(&format!("lib/modules/{name}.ko"), 0o644, &read(&dir.join("modules").join(format!("{name}.ko")))?);
    }
    let archive = cpio.finish();
    let gz = gzip(&archive)?;
    let tmp = initrd.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, gz).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    fs::rename(&tmp, initrd).map_err(|e| format!("renaming {}: {e}", tmp.display()))
}

/// Compresses with the host's `gzip`.
fn gzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new("gzip")
        .args(["-c", "-6"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running gzip: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Write from another thread: gzip's output pipe would fill otherwise.
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let output = child.wait_with_output().map_err(|e| format!("gzip: {e}"))?;
    writer.join().map_err(|_| "gzip writer panicked".to_string())?.map_err(|e| format!("feeding gzip: {e}"))?;
    if !output.status.success() {
        return Err("gzip failed".into());
    }
    Ok(output.stdout)
}

/// A newc ("070701") cpio archive writer: enough for an initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    next_inode: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Cpio {
    fn dir(&mut self, path: &str) {
        self.entry(path, S_IFDIR | 0o755, 2, (0, 0), &[]);
    }

    fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.entry(path, S_IFREG | perm, 1, (0, 0), data);
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    fn char_device(&mut self, path: &str, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | 0o600, 1, (major, minor), &[]);
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_inode += 1;
        let fields = [
            self.next_inode,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.out
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// Runs a host tool; a missing tool means this is no Debian host.
fn run(command: &mut Command) -> Result<Output, String> {
    let program = command.get_program().to_string_lossy().into_owned();
    command.stdin(Stdio::null()).output().map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            format!("{program} not found: the Linux peer needs a Debian or Ubuntu host (apt-get, apt-cache, dpkg-deb)")
        } else {
            format!("running {program}: {e}")
        }
    })
}

/// The last lines of a command's stderr, for error messages.
fn stderr_tail(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("W: ")).collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("\n");
    if tail.is_empty() {
        String::new()
    } else {
        format!(":\n{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_names_mode_port_and_address() {
        let line = cmdline("sink", 9000, "10.0.0.2/24");
        assert!(line.starts_with("console=ttyS0 "));
        assert!(line.ends_with("bravo.mode=sink bravo.port=9000 bravo.ip=10.0.0.2/24"));
    }

    #[test]
    fn modinfo_depends_are_read() {
        let elf = b"junk\0license=GPL\0depends=mii,libphy\0name=x\0";
        assert_eq!(module_depends(elf), ["mii", "libphy"]);
        assert!(module_depends(b"\0depends=\0name=e1000\0").is_empty());
        assert!(module_depends(b"no modinfo").is_empty());
    }

    #[test]
    fn cpio_entries_are_aligned_newc() {
        let mut cpio = Cpio::default();
        cpio.file("init", 0o755, b"abc");
        let out = cpio.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        // Header (110) + "init\0" padded to 116, data "abc" padded to 120.
        assert_eq!(&out[110..115], b"init\0");
        assert_eq!(&out[116..119], b"abc");
        assert_eq!(&out[120..126], b"070701");
    }
}
