//! Frames smoltcp is better off not seeing, dropped before it does.
//!
//! smoltcp learns a neighbour from every ARP request for our address and,
//! with its cache full, forgets the entry that expires first: a flood of
//! ARP requests from thousands of forged addresses would otherwise push
//! out the neighbours the service is talking to (the gateway first), and
//! every reply to them would wait for a new ARP exchange. The cache keeps
//! 64 entries (smoltcp's `iface-neighbor-cache-count-64`, set in the
//! workspace) and refreshes one on every packet from it, so an
//! active neighbour outlives the flood's entries as long as requests come
//! in slower than the cache turns over: ARP requests are let through at
//! most [`ARP_REQUESTS_PER_SECOND`] (a token bucket); a real host whose
//! request is dropped asks again a second later.
//!
//! [`Guarded`] wraps the NIC for smoltcp: a dropped frame reaches smoltcp
//! as an empty one, which it discards (as the driver does with bad
//! frames).

use smoltcp::phy::{self, DeviceCapabilities};
use smoltcp::time::Instant;

/// ARP requests handed to smoltcp per second, at most (and in a burst).
pub const ARP_REQUESTS_PER_SECOND: u64 = 32;

/// The guard's state: ARP request tokens.
pub struct IngressGuard {
    tokens: u64,
    /// When the tokens were last refilled, in microseconds.
    refilled_at: i64,
    /// ARP requests dropped so far.
    pub arp_dropped: u64,
}

impl IngressGuard {
    pub const fn new() -> Self {
        IngressGuard { tokens: ARP_REQUESTS_PER_SECOND, refilled_at: 0, arp_dropped: 0 }
    }

    /// Whether `frame`, arriving at `now`, goes on to smoltcp.
    pub fn admit(&mut self, frame: &[u8], now: Instant) -> bool {
        if !is_arp_request(frame) {
            return true;
        }
        let elapsed = now.total_micros().saturating_sub(self.refilled_at).max(0) as u64;
        let earned = elapsed * ARP_REQUESTS_PER_SECOND / 1_000_000;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(ARP_REQUESTS_PER_SECOND);
            self.refilled_at = now.total_micros();
        }
        if self.tokens == 0 {
            self.arp_dropped += 1;
            return false;
        }
        self.tokens -= 1;
        true
    }
}

impl Default for IngressGuard {
    fn default() -> Self {
        Self::new()
    }
}

/// An Ethernet frame carrying an ARP request (EtherType 0x0806, op 1).
fn is_arp_request(frame: &[u8]) -> bool {
    frame.len() >= 22 && frame[12..14] == [0x08, 0x06] && frame[20..22] == [0x00, 0x01]
}

/// A NIC seen through the guard.
pub struct Guarded<'a, D> {
    pub device: &'a mut D,
    pub guard: &'a mut IngressGuard,
}

pub struct RxToken<'a, T> {
    inner: T,
    guard: &'a mut IngressGuard,
    now: Instant,
}

impl<T: phy::RxToken> phy::RxToken for RxToken<'_, T> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let (guard, now) = (self.guard, self.now);
        self.inner.consume(|frame| if guard.admit(frame, now) { f(frame) } else { f(&[]) })
    }
}

impl<D: phy::Device> phy::Device for Guarded<'_, D> {
    type RxToken<'a>
        = RxToken<'a, D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = D::TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (rx, tx) = self.device.receive(now)?;
        Some((RxToken { inner: rx, guard: self.guard, now }, tx))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        self.device.transmit(now)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.device.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp(op: u8) -> [u8; 42] {
        let mut frame = [0u8; 42];
        frame[12..14].copy_from_slice(&[0x08, 0x06]);
        frame[21] = op;
        frame
    }

    fn ipv4() -> [u8; 60] {
        let mut frame = [0u8; 60];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame
    }

    #[test]
    fn an_arp_request_flood_is_cut_to_the_rate_and_nothing_else_is() {
        let mut guard = IngressGuard::new();
        let t = Instant::from_secs(10);
        let admitted = (0..1000).filter(|_| guard.admit(&arp(1), t)).count();
        assert_eq!(admitted as u64, ARP_REQUESTS_PER_SECOND);
        assert_eq!(guard.arp_dropped, 1000 - ARP_REQUESTS_PER_SECOND);
        assert!((0..1000).all(|_| guard.admit(&ipv4(), t)), "IP frames always pass");
        assert!((0..1000).all(|_| guard.admit(&arp(2), t)), "ARP replies always pass");
    }

    #[test]
    fn tokens_come_back_with_time_up_to_one_second_of_them() {
        let mut guard = IngressGuard::new();
        let t = Instant::from_secs(10);
        while guard.admit(&arp(1), t) {}
        let half = Instant::from_millis(10_500);
        let admitted = (0..1000).filter(|_| guard.admit(&arp(1), half)).count();
        assert_eq!(admitted as u64, ARP_REQUESTS_PER_SECOND / 2);
        let much_later = Instant::from_secs(100);
        let admitted = (0..1000).filter(|_| guard.admit(&arp(1), much_later)).count();
        assert_eq!(admitted as u64, ARP_REQUESTS_PER_SECOND);
    }

    #[test]
    fn short_frames_are_left_to_smoltcp() {
        let mut guard = IngressGuard::new();
        assert!((0..100).all(|_| guard.admit(&[0x08; 13], Instant::from_secs(1))));
    }
}
