//! `bravo-run` as people meet it: through `just run-example` (a wrong
//! example name, a host port already taken) and as a cargo runner (cargo
//! runs `bravo-run IMAGE ARGS...`). A mistake is named with what to do
//! instead, before QEMU starts.

use std::process::{Command, Output};

use bravo_tests::image_path;

fn bravo_run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bravo-run"));
    cmd.args(args).env_remove("FORWARD").env_remove("PORT").env_remove("CMDLINE");
    cmd.envs(env.iter().copied()).env("BOOT", "pvh").env("ACCEL", "tcg");
    let output = cmd.output().expect("bravo-run starts");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    output
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_unknown_example_is_named_and_the_examples_are_listed() {
    // The path `just run-example nosuch` passes.
    let output = bravo_run(&["target/x86_64-unknown-none/release/nosuch"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(stderr.contains("there is no example `nosuch`"), "{stderr}");
    let listed = stderr.split("the examples are: ").nth(1).unwrap_or_else(|| panic!("no list of examples: {stderr}"));
    let listed: Vec<&str> = listed.trim().split(", ").collect();
    for example in ["echo", "hello", "http", "kv", "threads"] {
        assert!(listed.contains(&example), "{example} is not listed: {stderr}");
    }
    // A library is not an example one can boot.
    assert!(!listed.contains(&"microhttp"), "{stderr}");
    assert!(!stderr.contains("booting"), "QEMU must not start: {stderr}");
}

#[test]
fn a_known_example_not_built_is_told_to_build() {
    let output = bravo_run(&["/nonexistent/x86_64-unknown-none/release/http"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output)
            .contains("kernel image /nonexistent/x86_64-unknown-none/release/http not found: build it first"),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn a_taken_host_port_is_named_with_how_to_pick_another() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port");
    let port = taken.local_addr().expect("bound").port().to_string();
    let image = image_path("hello");
    let output = bravo_run(&[image.to_str().expect("utf-8 path")], &[("PORT", &port)]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(stderr.contains(&format!("port {port} on 127.0.0.1 is taken")), "{stderr}");
    let suggested: u16 = stderr
        .split("PORT=, e.g. PORT=")
        .nth(1)
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no PORT= suggestion: {stderr}"));
    assert!(std::net::TcpListener::bind(("127.0.0.1", suggested)).is_ok(), "suggested port {suggested} is not free");
    assert!(!stderr.contains("booting") && !stderr.contains("QEMU"), "QEMU must not start: {stderr}");

    let output = bravo_run(&[image.to_str().expect("utf-8 path")], &[("FORWARD", &format!("{port}:80"))]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output)
            .contains(&format!("pick another in FORWARD (FORWARD={port}:80: host port {port} is the one taken)")),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn words_after_the_image_are_the_applications_arguments_as_cargo_passes_them() {
    let image = image_path("hello");
    let output = bravo_run(&[image.to_str().expect("utf-8 path"), "one", "--two"], &[("FORWARD", "none")]);
    let serial = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{serial}");
    assert!(serial.contains("arg 0: one\n") || serial.contains("arg 0: one\r\n"), "{serial}");
    assert!(serial.contains("arg 1: --two"), "{serial}");

    let output = bravo_run(&[image.to_str().expect("utf-8 path"), "two words"], &[("FORWARD", "none")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_of(&output).contains("cannot be empty or contain it"), "{}", stderr_of(&output));
}
