//! smoltcp's view of the driver: a `phy::Device` whose tokens borrow one
//! queue each. Nothing is published here: the network loop calls
//! [`VirtioNet::flush`](crate::VirtioNet::flush) after each poll.

use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::rx::RxQueue;
use crate::tx::{TxQueue, MAX_FRAME};
use crate::{Features, Transport, VirtioNet};

pub struct RxToken<'a> {
    queue: &'a mut RxQueue,
}

/// A transmit token; with no room in the queue it drops its frame (counted).
pub struct TxToken<'a> {
    queue: &'a mut TxQueue,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        // A bad frame reaches smoltcp as an empty one, which it discards.
        self.queue.take(|frame| f(frame.unwrap_or(&[]))).expect("a token exists only for a waiting frame")
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        self.queue.reclaim();
        if self.queue.has_room() {
            return self.queue.put(len, f);
        }
        self.queue.dropped += 1;
        let mut scratch = [0u8; MAX_FRAME];
        f(&mut scratch[..len.min(MAX_FRAME)])
    }
}

impl<T: Transport> phy::Device for VirtioNet<T> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if !self.rx.ready() {
            return None;
        }
        self.tx.reclaim();
        Some((RxToken { queue: &mut self.rx }, TxToken { queue: &mut self.tx }))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        self.tx.reclaim();
        if !self.tx.has_room() {
            return None;
        }
        Some(TxToken { queue: &mut self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps.max_burst_size = Some(usize::from(self.tx.queue.len()) / 2);
        // With CSUM the device completes the TCP and UDP checksums of what
        // we send (see `header::partial_checksum`). Received checksums stay
        // smoltcp's to verify: partial ones are completed by the driver
        // first, so every frame carries a whole checksum.
        if self.features.contains(Features::CSUM) {
            caps.checksum.tcp = Checksum::Rx;
            caps.checksum.udp = Checksum::Rx;
        }
        caps
    }
}
