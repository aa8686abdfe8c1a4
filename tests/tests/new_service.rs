//! `just new` as a person would use it: a service in a repository of its
//! own, outside this workspace, whose `cargo run` builds the image and boots
//! it through `bravo-run` (found on PATH, as `cargo install` puts it), and
//! whose unit tests run on the host.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bravo_tests::http_client::{connect, request};
use bravo_tests::{free_port, workspace_root};

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("bravo-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `cargo run` and everything it started (bravo-run, QEMU), in a process
/// group of their own, killed on drop.
struct ProcessGroup(Child);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the group this test created (its leader is
        // the child, whose pid is the group id); no memory is involved.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// The target directory the harness builds in, shared with the service so
/// that Bravo's dependencies are compiled once.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// Cargo in `dir` as a user's shell would run it, with `bravo-run` on PATH.
fn cargo_in(dir: &Path) -> Command {
    let bravo_run_dir =
        Path::new(env!("CARGO_BIN_EXE_bravo-run")).parent().expect("bravo-run is in a directory").to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(bravo_run_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH entries without separators");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(dir).env("PATH", path).env("CARGO_TARGET_DIR", target_dir());
    cmd
}

/// Runs `scripts/new-service` (what `just new PATH` runs) from `cwd`.
fn new_service(cwd: &Path, path: &str) -> Output {
    Command::new(workspace_root().join("scripts/new-service"))
        .arg(path)
        .current_dir(cwd)
        .output()
        .expect("scripts/new-service runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_new_service_builds_boots_answers_and_tests_its_logic_on_the_host() {
    let tmp = TempDir::new("new-service");
    // A relative path, from the directory the user is in.
    let made = new_service(&tmp.0, "greeter");
    assert!(made.status.success(), "{}{}", text(&made.stdout), text(&made.stderr));
    let service = tmp.0.join("greeter");
    let manifest = std::fs::read_to_string(service.join("Cargo.toml")).expect("Cargo.toml");
    assert!(manifest.contains("name = \"greeter\""), "{manifest}");
    assert!(manifest.contains(&format!("path = \"{}/kernel\"", workspace_root().display())), "{manifest}");
    let config = std::fs::read_to_string(service.join(".cargo/config.toml")).expect(".cargo/config.toml");
    assert!(
        config.contains("target = \"x86_64-unknown-none\"") && config.contains("runner = \"bravo-run\""),
        "{config}"
    );
    assert!(service.join("README.md").is_file() && service.join(".git").is_dir());

    // The unit tests of its routes, on the host.
    let tested = cargo_in(&service).arg("test-host").output().expect("cargo runs");
    let stdout = text(&tested.stdout);
    assert!(tested.status.success(), "{stdout}{}", text(&tested.stderr));
    assert!(stdout.contains("test result: ok. 3 passed"), "{stdout}");
    // A plain `cargo test` builds for the unikernel target: it must say
    // where the tests run.
    let plain = cargo_in(&service).arg("test").output().expect("cargo runs");
    assert!(!plain.status.success());
    assert!(
        text(&plain.stderr).contains("these unit tests run on the host: `cargo test-host`"),
        "{}",
        text(&plain.stderr)
    );

    // `cargo run`: builds the image, and cargo hands it to bravo-run.
    let port = free_port();
    let child = cargo_in(&service)
        .arg("run")
        .env("PORT", port.to_string())
        .env("BOOT", "pvh")
        .env("ACCEL", "tcg")
        .env_remove("FORWARD")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cargo run starts");
    let mut run = ProcessGroup(child);
    let (tx, lines) = mpsc::channel();
    for stream in [
        Box::new(run.0.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
        Box::new(run.0.stderr.take().expect("piped")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    // Building Bravo's dependencies the first time takes most of this.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("greeter: serving on http://10.0.2.15:80") {
                    break;
                }
            }
            Err(_) => panic!("the service never said it was serving:\n{seen}"),
        }
    }
    assert!(seen.contains("bravo-run: booting"), "{seen}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let reply = loop {
        if let Some(reply) = connect(port).ok().and_then(|mut c| request(&mut c, "GET", "/hello/bravo", b"").ok()) {
            break reply;
        }
        assert!(Instant::now() < deadline, "no answer on port {port}:\n{seen}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((reply.status, text(&reply.body)), (200, "Hello, bravo!\n".to_string()));
    let mut connection = connect(port).expect("connects");
    let refused = request(&mut connection, "GET", "/hello/not%20a%20name", b"").expect("a reply");
    assert_eq!(refused.status, 400, "{}", text(&refused.body));
}

#[test]
fn new_refuses_a_bad_name_a_directory_in_use_and_a_path_inside_bravo() {
    let tmp = TempDir::new("new-service-refusals");
    let refused = |path: &str, why: &str| {
        let out = new_service(&tmp.0, path);
        assert_eq!(out.status.code(), Some(2), "{path}: {}", text(&out.stdout));
        assert!(text(&out.stderr).contains(why), "{path}: {}", text(&out.stderr));
    };
    refused("9lives", "cannot name a crate");
    refused("bad name", "cannot name a crate");
    refused("bravo", "is taken");
    std::fs::create_dir_all(tmp.0.join("used")).expect("mkdir");
    std::fs::write(tmp.0.join("used/notes.txt"), "mine").expect("write");
    refused("used", "exists and is not empty");
    refused(workspace_root().join("examples/mine").to_str().expect("utf-8 path"), "inside Bravo's checkout");
    assert_eq!(std::fs::read_to_string(tmp.0.join("used/notes.txt")).expect("still there"), "mine");
    assert!(!workspace_root().join("examples/mine").exists());
    let usage = new_service(&tmp.0, "");
    assert_eq!(usage.status.code(), Some(2));
    assert!(text(&usage.stderr).contains("usage:"), "{}", text(&usage.stderr));
}
