//! The network stacks' own counters, as atomics written by each stack's
//! thread and read from anywhere without a request to it, so they can be
//! read (and tell) while a stack's thread is stuck.

use core::sync::atomic::{AtomicU64, Ordering};

use super::listener::Events;
use super::netcpus::{self, MAX_STACKS};

/// The network stack's counters, read with [`stats`](super::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Sockets the stack holds (TCP, UDP, DHCP; listening ones included).
    pub sockets: u64,
    /// New TCP connections refused with a reset: memory short, or a port's
    /// handshake slots all taken by connections waiting for `accept`.
    pub tcp_refused: u64,
    /// Half-open connections (SYN-RECEIVED) dropped for a newer one.
    pub half_open_evicted: u64,
    /// Connections dropped for outliving their state's bound: silent in
    /// SYN-RECEIVED, never accepted, or not finishing their close.
    pub timed_out: u64,
    /// Rounds the network thread has completed.
    pub rounds: u64,
    /// When the last round ended, in milliseconds since boot.
    pub last_round_ms: u64,
    /// ARP requests dropped over the rate smoltcp is given (a flood).
    pub arp_requests_dropped: u64,
    /// Memory committed in TCP sockets' buffers (updated every second).
    pub buffer_bytes: u64,
    /// ARP frames the home stack could not forward to another stack, its
    /// queue of them full (that stack asks again if it needs the address).
    pub neighbours_dropped: u64,
}

/// Counters each stack sets (the total is their sum).
struct PerStack {
    sockets: AtomicU64,
    buffer_bytes: AtomicU64,
    arp_requests_dropped: AtomicU64,
    last_round_ms: AtomicU64,
    rounds: AtomicU64,
}

static STACKS: [PerStack; MAX_STACKS] = [const {
    PerStack {
        sockets: AtomicU64::new(0),
        buffer_bytes: AtomicU64::new(0),
        arp_requests_dropped: AtomicU64::new(0),
        last_round_ms: AtomicU64::new(0),
        rounds: AtomicU64::new(0),
    }
}; MAX_STACKS];
static TCP_REFUSED: AtomicU64 = AtomicU64::new(0);
static HALF_OPEN_EVICTED: AtomicU64 = AtomicU64::new(0);
static TIMED_OUT: AtomicU64 = AtomicU64::new(0);

/// Every stack's counters together; `last_round_ms` is the oldest of the
/// running stacks' last rounds.
pub fn read() -> NetStats {
    let sum =
        |field: fn(&PerStack) -> &AtomicU64| netcpus::all().map(|i| field(&STACKS[i]).load(Ordering::Relaxed)).sum();
    NetStats {
        sockets: sum(|s| &s.sockets),
        tcp_refused: TCP_REFUSED.load(Ordering::Relaxed),
        half_open_evicted: HALF_OPEN_EVICTED.load(Ordering::Relaxed),
        timed_out: TIMED_OUT.load(Ordering::Relaxed),
        rounds: sum(|s| &s.rounds),
        last_round_ms: netcpus::all().map(last_round_ms).min().unwrap_or(0),
        arp_requests_dropped: sum(|s| &s.arp_requests_dropped),
        buffer_bytes: sum(|s| &s.buffer_bytes),
        neighbours_dropped: netcpus::all()
            .map(|i| netcpus::control(i).neighbours_dropped.load(Ordering::Relaxed))
            .sum(),
    }
}

/// When stack `stack` last completed a round, in milliseconds since boot.
pub fn last_round_ms(stack: usize) -> u64 {
    STACKS[stack].last_round_ms.load(Ordering::Acquire)
}

pub fn set_sockets(stack: usize, count: usize) {
    STACKS[stack].sockets.store(count as u64, Ordering::Relaxed);
}

pub fn set_buffer_bytes(stack: usize, bytes: usize) {
    STACKS[stack].buffer_bytes.store(bytes as u64, Ordering::Relaxed);
}

pub fn set_arp_requests_dropped(stack: usize, count: u64) {
    STACKS[stack].arp_requests_dropped.store(count, Ordering::Relaxed);
}

pub fn add_listener_events(events: Events) {
    if events != Events::default() {
        TCP_REFUSED.fetch_add(events.refused, Ordering::Relaxed);
        HALF_OPEN_EVICTED.fetch_add(events.evicted, Ordering::Relaxed);
        TIMED_OUT.fetch_add(events.timed_out, Ordering::Relaxed);
    }
}

pub fn add_timed_out(count: u64) {
    TIMED_OUT.fetch_add(count, Ordering::Relaxed);
}

/// Counts a completed round of stack `stack`, ended at `now_ms` since boot.
pub fn round_done(stack: usize, now_ms: u64) {
    STACKS[stack].rounds.fetch_add(1, Ordering::Relaxed);
    STACKS[stack].last_round_ms.store(now_ms, Ordering::Release);
}
