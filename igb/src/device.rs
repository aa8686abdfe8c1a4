//! smoltcp's view of a queue: a `phy::Device` whose tokens borrow one
//! ring each and lend its DMA buffers. Tail registers are not written
//! here: the network loop calls [`Queue::flush`](crate::Queue::flush)
//! after each poll.

use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::ring::{RxRing, TxRing};
use crate::{Hardware, Queue};

pub struct RxToken<'a> {
    ring: &'a mut RxRing,
}

/// A transmit token; with no room in the ring it drops its frame (counted).
pub struct TxToken<'a> {
    ring: &'a mut TxRing,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        // A bad frame reaches smoltcp as an empty one, which it discards.
        self.ring.take(|frame| f(frame.unwrap_or(&[]))).expect("a token exists only for a waiting frame")
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        self.ring.reclaim();
        if self.ring.has_room_offloaded() {
            return self.ring.put_offloaded(len, f);
        }
        self.ring.dropped += 1;
        let mut scratch = [0u8; crate::BUFFER_SIZE];
        f(&mut scratch[..len.min(crate::BUFFER_SIZE)])
    }
}

impl<H: Hardware> phy::Device for Queue<H> {
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
        Some((RxToken { ring: &mut self.rx }, TxToken { ring: &mut self.tx }))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        self.tx.reclaim();
        if !self.tx.has_room_offloaded() {
            return None;
        }
        Some(TxToken { ring: &mut self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps.max_burst_size = Some(crate::RING_LEN / 2);
        // The device checks received TCP and UDP checksums, and the driver
        // hands smoltcp only frames it checked and found right (see
        // `ring::rx_frame_is_bad`); it also computes the ones sent (see
        // `ring::seed_checksum`). smoltcp does neither. IPv4 header
        // checksums stay with smoltcp (20 bytes, cheap).
        caps.checksum.tcp = Checksum::None;
        caps.checksum.udp = Checksum::None;
        caps
    }
}
