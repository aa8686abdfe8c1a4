//! The network stack's own counters, as atomics written by the network
//! thread and read from anywhere without a request to it, so they can be
//! read (and tell) while the network thread is stuck.

use core::sync::atomic::{AtomicU64, Ordering};

use super::listener::Events;

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
}

static SOCKETS: AtomicU64 = AtomicU64::new(0);
static TCP_REFUSED: AtomicU64 = AtomicU64::new(0);
static HALF_OPEN_EVICTED: AtomicU64 = AtomicU64::new(0);
static TIMED_OUT: AtomicU64 = AtomicU64::new(0);
static ROUNDS: AtomicU64 = AtomicU64::new(0);
static LAST_ROUND_MS: AtomicU64 = AtomicU64::new(0);
static ARP_REQUESTS_DROPPED: AtomicU64 = AtomicU64::new(0);
static BUFFER_BYTES: AtomicU64 = AtomicU64::new(0);

pub fn read() -> NetStats {
    NetStats {
        sockets: SOCKETS.load(Ordering::Relaxed),
        tcp_refused: TCP_REFUSED.load(Ordering::Relaxed),
        half_open_evicted: HALF_OPEN_EVICTED.load(Ordering::Relaxed),
        timed_out: TIMED_OUT.load(Ordering::Relaxed),
        rounds: ROUNDS.load(Ordering::Relaxed),
        last_round_ms: LAST_ROUND_MS.load(Ordering::Relaxed),
        arp_requests_dropped: ARP_REQUESTS_DROPPED.load(Ordering::Relaxed),
        buffer_bytes: BUFFER_BYTES.load(Ordering::Relaxed),
    }
}

pub fn set_sockets(count: usize) {
    SOCKETS.store(count as u64, Ordering::Relaxed);
}

pub fn set_buffer_bytes(bytes: usize) {
    BUFFER_BYTES.store(bytes as u64, Ordering::Relaxed);
}

pub fn set_arp_requests_dropped(count: u64) {
    ARP_REQUESTS_DROPPED.store(count, Ordering::Relaxed);
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

/// Counts a completed round, ended at `now_ms` since boot.
pub fn round_done(now_ms: u64) {
    ROUNDS.fetch_add(1, Ordering::Relaxed);
    LAST_ROUND_MS.store(now_ms, Ordering::Release);
}
