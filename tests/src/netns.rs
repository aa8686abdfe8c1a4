//! A network namespace with a tap device in it, made for one benchmark
//! and deleted when dropped: guests attached to the tap (with
//! [`Machine::tap_net`](crate::Machine::tap_net)) talk to tools run inside
//! the namespace ([`Netns::command`]) and to nothing else. Needs root
//! (CAP_NET_ADMIN).

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The namespaces this process made and has not deleted yet.
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Deletes every namespace this process made that is still there: for a
/// program about to exit without running destructors.
pub fn delete_all() {
    let names = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
    for name in names {
        let _ = ip(&["netns", "delete", &name]);
    }
}

/// The namespace's end of the tap: the host side of the guest's link.
pub const HOST_CIDR: &str = "10.0.0.1/24";
/// The tap's name inside the namespace.
pub const TAP: &str = "tap0";

pub struct Netns {
    name: String,
}

fn ip(args: &[&str]) -> Result<Output, String> {
    let output =
        Command::new("ip").args(args).output().map_err(|e| format!("cannot run `ip` (package iproute2): {e}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

impl Netns {
    /// Creates namespace `bravo-PID-N` with loopback up and tap `tap0`
    /// at 10.0.0.1/24.
    pub fn create() -> Result<Netns, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("bravo-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name]).map_err(|e| format!("{e} (a network namespace needs root)"))?;
        LIVE.lock().unwrap_or_else(|e| e.into_inner()).push(name.clone());
        let netns = Netns { name };
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &netns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all).map(drop)
        };
        inside(&["link", "set", "lo", "up"])?;
        inside(&["tuntap", "add", "dev", TAP, "mode", "tap"])?;
        inside(&["addr", "add", HOST_CIDR, "dev", TAP])?;
        inside(&["link", "set", TAP, "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its tap.
        let _ = ip(&["netns", "delete", &self.name]);
        LIVE.lock().unwrap_or_else(|e| e.into_inner()).retain(|n| n != &self.name);
    }
}
