//! The NIC without a network stack (`net=raw` on the command line): the
//! application takes the NIC and moves Ethernet frames itself, polled.
//! The benchmarks use it to measure what the device model can move with
//! a driver that does nothing but recycle buffers (their "ceiling").

use super::device::{NetDevice, NicStats};
use super::drivers::{Found, Nic};
use super::NetError;

/// The NIC found at boot, until the application takes it.
static UNCLAIMED: spin::Mutex<Option<Found>> = spin::Mutex::new(None);

/// Keeps the NIC for [`RawNic::open`] (called at boot with `net=raw`).
pub(super) fn keep(nic: Found) {
    *UNCLAIMED.lock() = Some(nic);
}

/// The NIC, driven directly by the thread that opened it (with the kernel
/// option `net=raw`, which starts no network stack).
///
/// ```no_run
/// # #![no_std]
/// # #![no_main]
/// # bravo::main!(main);
/// # fn main() -> Result<(), bravo::net::NetError> {
/// // Sends every received frame back out, unchanged.
/// let mut nic = bravo::net::RawNic::open()?;
/// let mut frame = [0u8; 1514];
/// loop {
///     if let Some(Some(len)) = nic.receive_with(|f| f.map(|f| { frame[..f.len()].copy_from_slice(f); f.len() })) {
///         nic.transmit_with(len, |out| out.copy_from_slice(&frame[..len]));
///     }
///     nic.flush();
/// }
/// # }
/// ```
pub struct RawNic {
    driver: Nic,
}

fn unused_interrupt(_vector: u8) {}

impl RawNic {
    /// Takes the NIC and sets it up for the calling thread, polled, with
    /// its rings in the calling cpu's node. `NoNetwork` without `net=raw`,
    /// without a NIC, when it is already taken, or when its setup fails.
    pub fn open() -> Result<RawNic, NetError> {
        let nic = UNCLAIMED.lock().take().ok_or(NetError::NoNetwork)?;
        let name = nic.name();
        let (driver, _) = nic.start(true, unused_interrupt).map_err(|e| {
            log::warn!("net: {name} setup failed: {e}");
            NetError::NoNetwork
        })?;
        Ok(RawNic { driver })
    }

    /// The NIC's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.driver.mac()
    }

    /// Passes the next received frame to `f` (`None` for a frame the
    /// device marked bad); `None` when nothing waits. The buffer goes back
    /// to the device at the next [`flush`](Self::flush).
    pub fn receive_with<R>(&mut self, f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        self.driver.receive_with(f)
    }

    /// Whether a frame can be queued now.
    pub fn can_transmit(&mut self) -> bool {
        self.driver.can_transmit()
    }

    /// Queues a frame of `len` bytes written by `f`; `None` (and a counted
    /// drop) when the transmit ring is full. Sent at the next flush.
    pub fn transmit_with<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        self.driver.transmit_with(len, f)
    }

    /// Hands the device the recycled receive buffers and the queued frames
    /// (one doorbell per ring).
    pub fn flush(&mut self) {
        self.driver.flush()
    }

    /// The NIC's counters.
    pub fn stats(&mut self) -> NicStats {
        self.driver.stats()
    }
}
