//! # e1000
//!
//! A driver for the Intel 8254x family (QEMU's `e1000` is the 82540EM,
//! PCI 8086:100E), independent of any kernel: it reaches the hardware only
//! through [`Hardware`] (register access, DMA memory), so its ring logic
//! runs on the host against a simulated device in the unit tests.
//!
//! What it does: reset, read the MAC, set up receive and transmit rings of
//! [`RING_LEN`] descriptors with 2 KiB buffers, recycle receive buffers,
//! reclaim sent descriptors, and write each tail register once per batch
//! ([`E1000::flush`]), never once per packet. It never reads a register
//! per packet: the descriptors' done bits in RAM say what the device did.
//! It works polled or by interrupt ([`E1000::handle_interrupt`] reads the
//! cause once; the caller then drains everything), reports link state, and
//! counts packets, bytes, drops, errors and doorbells ([`Stats`]).
//!
//! [`E1000`] implements smoltcp's [`phy::Device`](smoltcp::phy::Device):
//! `receive` reclaims transmit descriptors first, and hands out a transmit
//! token even when the ring is full (that frame is then dropped and
//! counted), so a full transmit ring never stalls reception.

#![cfg_attr(not(test), no_std)]

mod device;
mod regs;
mod ring;
#[cfg(test)]
mod sim;

use core::ptr::NonNull;

use ring::{RxDescriptor, RxRing, TxDescriptor, TxRing};
pub use ring::{Stats, BUFFER_SIZE};

/// Descriptors per ring (a multiple of 8: the length register counts
/// 128-byte units).
pub const RING_LEN: usize = 256;

/// DMA memory: zeroed, physically contiguous, mapped at `virt`.
pub struct Dma {
    /// Where the driver reaches the memory.
    pub virt: NonNull<u8>,
    /// Where the device reaches it (the address its descriptors hold).
    pub phys: u64,
    /// Its length in bytes.
    pub size: usize,
}

/// What the driver needs from the kernel.
pub trait Hardware {
    /// Reads the 32-bit register at byte offset `register`.
    fn read(&self, register: u32) -> u32;
    /// Writes the 32-bit register at byte offset `register`.
    fn write(&self, register: u32, value: u32);
    /// Zeroed, physically contiguous memory of `size` bytes aligned to
    /// 4 KiB, that the device can read and write, kept for the driver's
    /// life. `None` when memory is exhausted.
    fn alloc_dma(&self, size: usize) -> Option<Dma>;
    /// Waits at least `micros` microseconds.
    fn delay_us(&self, micros: u64);
}

/// Why the device could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The device did not come out of reset.
    ResetTimeout,
    /// No DMA memory for the rings.
    OutOfMemory,
}

/// One e1000 NIC: its registers (through `H`), its receive and transmit
/// rings and its counters; a smoltcp `Device`.
pub struct E1000<H: Hardware> {
    hw: H,
    mac: [u8; 6],
    rx: RxRing,
    tx: TxRing,
    stats: Stats,
    link_up: bool,
}

// SAFETY: the driver owns its DMA memory; moving it to another thread moves
// that ownership (the kernel uses one driver from one cpu at a time).
unsafe impl<H: Hardware + Send> Send for E1000<H> {}

impl<H: Hardware> E1000<H> {
    /// Resets the device and sets up its rings; interrupts stay masked
    /// until [`enable_interrupts`](Self::enable_interrupts).
    pub fn new(hw: H) -> Result<Self, Error> {
        use regs::*;
        hw.write(IMC, u32::MAX);
        hw.write(CTRL, hw.read(CTRL) | CTRL_RST);
        hw.delay_us(10);
        let mut waited = 0;
        while hw.read(CTRL) & CTRL_RST != 0 {
            if waited >= 100_000 {
                return Err(Error::ResetTimeout);
            }
            hw.delay_us(100);
            waited += 100;
        }
        hw.write(IMC, u32::MAX);
        let _ = hw.read(ICR);
        let ctrl = (hw.read(CTRL) | CTRL_SLU | CTRL_ASDE) & !(CTRL_LRST | CTRL_ILOS | CTRL_PHY_RST);
        hw.write(CTRL, ctrl);
        for i in 0..128 {
            hw.write(MTA + i * 4, 0);
        }
        let (low, high) = (hw.read(RAL0), hw.read(RAH0));
        let mac = [low as u8, (low >> 8) as u8, (low >> 16) as u8, (low >> 24) as u8, high as u8, (high >> 8) as u8];
        hw.write(RAH0, (high & 0xffff) | RAH_AV);

        let ring_bytes = RING_LEN * core::mem::size_of::<RxDescriptor>();
        const _: () = assert!(core::mem::size_of::<RxDescriptor>() == 16 && core::mem::size_of::<TxDescriptor>() == 16);
        const _: () = assert!(RING_LEN.is_multiple_of(8), "ring length registers count 128-byte units");
        let alloc = |size| hw.alloc_dma(size).ok_or(Error::OutOfMemory);
        let (rx_ring, rx_buffers) = (alloc(ring_bytes)?, alloc(RING_LEN * BUFFER_SIZE)?);
        let (tx_ring, tx_buffers) = (alloc(ring_bytes)?, alloc(RING_LEN * BUFFER_SIZE)?);
        let rx = RxRing::new(&rx_ring, rx_buffers, RING_LEN);
        let tx = TxRing::new(&tx_ring, tx_buffers, RING_LEN);

        hw.write(RDBAL, rx_ring.phys as u32);
        hw.write(RDBAH, (rx_ring.phys >> 32) as u32);
        hw.write(RDLEN, ring_bytes as u32);
        hw.write(RDH, 0);
        hw.write(RDT, rx.initial_tail() as u32);
        hw.write(TDBAL, tx_ring.phys as u32);
        hw.write(TDBAH, (tx_ring.phys >> 32) as u32);
        hw.write(TDLEN, ring_bytes as u32);
        hw.write(TDH, 0);
        hw.write(TDT, 0);
        hw.write(TIPG, TIPG_DEFAULT);
        hw.write(TCTL, TCTL_EN | TCTL_PSP | (0x10 << TCTL_CT_SHIFT) | (0x40 << TCTL_COLD_SHIFT));
        // Written once: QEMU's model pauses reception for a while after
        // each RCTL write.
        hw.write(RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC);
        let link_up = hw.read(STATUS) & STATUS_LU != 0;
        Ok(Self { hw, mac, rx, tx, stats: Stats::default(), link_up })
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Link state, as of the last link-change interrupt (or setup).
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// Unmasks the interrupts the driver handles: frame received, receive
    /// ring running low or overrun, link change.
    pub fn enable_interrupts(&mut self) {
        use regs::*;
        self.hw.write(IMS, INT_RXT0 | INT_RXDMT0 | INT_RXO | INT_LSC);
    }

    /// Acknowledges an interrupt (reading the cause clears it and lowers
    /// the line); returns the cause bits, 0 when the device did not
    /// interrupt. The caller then drains the rings.
    pub fn handle_interrupt(&mut self) -> u32 {
        let cause = self.hw.read(regs::ICR);
        if cause != 0 {
            self.stats.interrupts += 1;
        }
        if cause & regs::INT_LSC != 0 {
            self.link_up = self.hw.read(regs::STATUS) & regs::STATUS_LU != 0;
        }
        cause
    }

    /// Makes the device raise an interrupt now (cause: link change), for
    /// finding which interrupt line it is wired to.
    pub fn raise_test_interrupt(&mut self) {
        self.hw.write(regs::IMS, regs::INT_LSC);
        self.hw.write(regs::ICS, regs::INT_LSC);
    }

    /// Whether a received frame waits.
    pub fn rx_ready(&self) -> bool {
        self.rx.peek().is_some()
    }

    /// The next received frame, left in place (`None` when nothing waits
    /// or the device marked it bad): a stack can choose where it goes.
    pub fn peek_frame(&self) -> Option<&[u8]> {
        self.rx.peek_frame()
    }

    /// Passes the next received frame to `f` (`None` when the device
    /// marked it bad); returns `None` when nothing waits.
    pub fn receive_with<R>(&mut self, f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        self.rx.take(f)
    }

    /// Whether a frame can be queued now (reclaims sent descriptors first).
    pub fn can_transmit(&mut self) -> bool {
        self.tx.reclaim();
        self.tx.has_room()
    }

    /// Queues a frame of `len` bytes written by `f`; `None` (and a counted
    /// drop) when the transmit ring is full.
    pub fn transmit_with<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        self.tx.reclaim();
        if !self.tx.has_room() {
            self.tx.dropped += 1;
            return None;
        }
        Some(self.tx.put(len, f))
    }

    /// Writes the tail registers that moved since the last flush: hands
    /// the device the recycled receive buffers and the queued frames, one
    /// register write per ring per batch.
    pub fn flush(&mut self) {
        if let Some(tail) = self.rx.take_tail() {
            self.hw.write(regs::RDT, tail as u32);
            self.stats.doorbells += 1;
        }
        if let Some(tail) = self.tx.take_tail() {
            self.hw.write(regs::TDT, tail as u32);
            self.stats.doorbells += 1;
        }
    }

    /// The counters (reads the device's missed-packet counter, one
    /// register read).
    pub fn stats(&mut self) -> Stats {
        self.stats.rx_missed += self.hw.read(regs::MPC) as u64;
        Stats {
            rx_packets: self.rx.packets,
            rx_bytes: self.rx.bytes,
            rx_errors: self.rx.errors,
            tx_packets: self.tx.packets,
            tx_bytes: self.tx.bytes,
            tx_dropped: self.tx.dropped,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use smoltcp::phy::{Device, RxToken, TxToken};
    use smoltcp::time::Instant;

    use super::*;
    use crate::regs::*;
    use crate::sim::{Sim, MAC};

    fn driver() -> (E1000<Sim>, Sim) {
        let sim = Sim::new();
        (E1000::new(sim.clone()).expect("the simulated device resets"), sim)
    }

    fn frame(i: usize) -> Vec<u8> {
        (0..60 + i % 100).map(|b| (b + i) as u8).collect()
    }

    #[test]
    fn setup_reads_the_mac_and_programs_both_rings() {
        let (nic, sim) = driver();
        assert_eq!(nic.mac(), MAC);
        assert!(nic.link_up());
        assert_eq!(sim.reg(RDLEN), (RING_LEN * 16) as u32);
        assert_eq!(sim.reg(RDLEN) % 128, 0);
        assert_eq!(sim.reg(RDT), RING_LEN as u32 - 1, "all but one buffer go to the device");
        assert_ne!(sim.reg(RCTL) & RCTL_EN, 0);
        assert_eq!(sim.writes_to(RCTL), 1, "RCTL is written once");
        assert_ne!(sim.reg(TCTL) & TCTL_EN, 0);
        assert_ne!(sim.reg(RAH0) & RAH_AV, 0);
    }

    #[test]
    fn frames_come_out_in_order_and_one_tail_write_returns_the_batch() {
        let (mut nic, sim) = driver();
        for i in 0..3 {
            assert!(sim.deliver(&frame(i)));
        }
        let rdt_writes = sim.writes_to(RDT);
        for i in 0..3 {
            assert_eq!(nic.receive_with(|f| f.unwrap().to_vec()), Some(frame(i)));
        }
        assert_eq!(nic.receive_with(|_| ()), None);
        nic.flush();
        assert_eq!(sim.writes_to(RDT), rdt_writes + 1);
        assert_eq!(sim.reg(RDT), 2, "the last processed descriptor becomes the tail");
        let stats = nic.stats();
        assert_eq!((stats.rx_packets, stats.rx_bytes), (3, (60 + 61 + 62) as u64));
    }

    #[test]
    fn peeking_shows_the_next_frame_without_taking_it() {
        let (mut nic, sim) = driver();
        assert_eq!(nic.peek_frame(), None);
        assert!(sim.deliver(&frame(1)));
        assert!(sim.deliver(&frame(2)));
        assert_eq!(nic.peek_frame(), Some(&frame(1)[..]));
        assert_eq!(nic.peek_frame(), Some(&frame(1)[..]), "peeking twice takes nothing");
        assert_eq!(nic.receive_with(|f| f.unwrap().to_vec()), Some(frame(1)));
        assert_eq!(nic.peek_frame(), Some(&frame(2)[..]));
        assert_eq!(nic.stats().rx_packets, 1, "a peeked frame is counted once, when taken");
    }

    #[test]
    fn the_receive_ring_wraps_around_many_times() {
        let (mut nic, sim) = driver();
        let before = sim.writes_to(RDT);
        for batch in 0..40 {
            for i in 0..100 {
                assert!(sim.deliver(&frame(batch * 100 + i)), "batch {batch} frame {i} found no buffer");
            }
            for i in 0..100 {
                assert_eq!(nic.receive_with(|f| f.unwrap().to_vec()), Some(frame(batch * 100 + i)));
            }
            nic.flush();
        }
        assert_eq!(sim.writes_to(RDT) - before, 40, "one doorbell per batch");
        let stats = nic.stats();
        assert_eq!((stats.rx_packets, stats.rx_missed, stats.doorbells), (4000, 0, 40));
    }

    #[test]
    fn a_full_receive_ring_drops_at_the_device_and_recovers() {
        let (mut nic, sim) = driver();
        let accepted = (0..300).filter(|&i| sim.deliver(&frame(i))).count();
        assert_eq!(accepted, RING_LEN - 1);
        assert_eq!(nic.stats().rx_missed, (300 - accepted) as u64);
        let mut got = 0;
        while nic.receive_with(|_| ()).is_some() {
            got += 1;
        }
        assert_eq!(got, accepted);
        nic.flush();
        assert!(sim.deliver(&frame(7)));
        assert_eq!(nic.receive_with(|f| f.unwrap().to_vec()), Some(frame(7)));
    }

    #[test]
    fn bad_frames_are_counted_and_skipped() {
        let (mut nic, sim) = driver();
        assert!(sim.deliver_with(&frame(0), 0x01));
        assert!(sim.deliver(&frame(1)));
        assert_eq!(nic.receive_with(|f| f.is_none()), Some(true));
        assert_eq!(nic.receive_with(|f| f.unwrap().to_vec()), Some(frame(1)));
        assert_eq!(nic.stats().rx_errors, 1);
    }

    #[test]
    fn frames_to_send_wait_for_one_tail_write() {
        let (mut nic, sim) = driver();
        let before = sim.writes_to(TDT);
        for i in 0..10 {
            let f = frame(i);
            assert!(nic.transmit_with(f.len(), |buf| buf.copy_from_slice(&f)).is_some());
        }
        assert!(sim.0.borrow().sent.is_empty(), "nothing is sent before the flush");
        nic.flush();
        assert_eq!(sim.writes_to(TDT) - before, 1);
        assert_eq!(sim.0.borrow().sent, (0..10).map(frame).collect::<Vec<_>>());
        nic.flush();
        assert_eq!(sim.writes_to(TDT) - before, 1, "no doorbell without new frames");
    }

    #[test]
    fn a_full_transmit_ring_refuses_then_recovers_after_reclaim() {
        let (mut nic, sim) = driver();
        sim.0.borrow_mut().tx_stalled = true;
        let queued = (0..RING_LEN).filter(|&i| nic.transmit_with(60, |b| b.fill(i as u8)).is_some()).count();
        assert_eq!(queued, RING_LEN - 1);
        assert_eq!(nic.stats().tx_dropped, 1);
        nic.flush();
        sim.0.borrow_mut().tx_stalled = false;
        sim.run_tx();
        assert_eq!(sim.0.borrow().sent.len(), RING_LEN - 1);
        assert!(nic.transmit_with(60, |b| b.fill(0xee)).is_some(), "reclaimed descriptors are reused");
        nic.flush();
        assert_eq!(sim.0.borrow().sent.last().unwrap(), &vec![0xee; 60]);
    }

    #[test]
    fn smoltcp_tokens_receive_and_a_full_transmit_ring_never_stalls_reception() {
        let (mut nic, sim) = driver();
        let now = Instant::from_millis(0);
        assert!(nic.receive(now).is_none(), "no token without a frame");
        sim.0.borrow_mut().tx_stalled = true;
        while nic.transmit_with(60, |_| ()).is_some() {}
        assert!(nic.transmit(now).is_none(), "no transmit token with a full ring");
        assert!(sim.deliver(&frame(3)));
        let (rx, tx) = nic.receive(now).expect("a frame waits");
        assert_eq!(rx.consume(|f| f.to_vec()), frame(3));
        tx.consume(60, |b| b.fill(1)); // dropped: the ring is full
        let stats = nic.stats();
        assert_eq!((stats.rx_packets, stats.tx_dropped), (1, 2));
    }

    #[test]
    fn an_interrupt_is_acknowledged_by_one_read() {
        let (mut nic, sim) = driver();
        assert_eq!(nic.handle_interrupt(), 0);
        sim.deliver(&frame(0));
        assert_ne!(nic.handle_interrupt() & INT_RXT0, 0);
        assert_eq!(nic.handle_interrupt(), 0, "reading the cause clears it");
        assert_eq!(nic.stats().interrupts, 1);
    }

    /// An IPv4 frame from smoltcp's emitters, TCP or UDP, with the TCP/UDP
    /// checksum left to the device (zero), as smoltcp writes it with this
    /// driver's capabilities.
    fn ip_frame(tcp: bool, payload: &[u8]) -> Vec<u8> {
        use smoltcp::phy::ChecksumCapabilities;
        use smoltcp::wire::*;
        let (src, dst) = (Ipv4Address::new(10, 0, 0, 2), Ipv4Address::new(10, 0, 0, 1));
        let l4_len = if tcp { 20 } else { 8 } + payload.len();
        let mut bytes = vec![0u8; 14 + 20 + l4_len];
        let eth = EthernetRepr {
            src_addr: EthernetAddress(MAC),
            dst_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            ethertype: EthernetProtocol::Ipv4,
        };
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: if tcp { IpProtocol::Tcp } else { IpProtocol::Udp },
            payload_len: l4_len,
            hop_limit: 64,
        };
        let mut caps = ChecksumCapabilities::default();
        caps.tcp = smoltcp::phy::Checksum::Rx;
        caps.udp = smoltcp::phy::Checksum::Rx;
        let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
        eth.emit(&mut frame);
        let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
        ip.emit(&mut packet, &caps);
        if tcp {
            let repr = TcpRepr {
                src_port: 80,
                dst_port: 40000,
                control: TcpControl::Psh,
                seq_number: TcpSeqNumber(7),
                ack_number: Some(TcpSeqNumber(9)),
                window_len: 1000,
                window_scale: None,
                max_seg_size: None,
                sack_permitted: false,
                sack_ranges: [None; 3],
                timestamp: None,
                payload,
            };
            repr.emit(&mut TcpPacket::new_unchecked(packet.payload_mut()), &src.into(), &dst.into(), &caps);
        } else {
            let repr = UdpRepr { src_port: 9001, dst_port: 40000 };
            repr.emit(
                &mut UdpPacket::new_unchecked(packet.payload_mut()),
                &src.into(),
                &dst.into(),
                payload.len(),
                |b| b.copy_from_slice(payload),
                &caps,
            );
        }
        bytes
    }

    /// Whether a sent frame's TCP/UDP checksum is right.
    fn l4_checksum_ok(bytes: &[u8]) -> bool {
        use smoltcp::wire::*;
        let packet = Ipv4Packet::new_checked(&bytes[14..]).unwrap();
        let (src, dst) = (packet.src_addr().into(), packet.dst_addr().into());
        match packet.next_header() {
            IpProtocol::Tcp => TcpPacket::new_checked(packet.payload()).unwrap().verify_checksum(&src, &dst),
            IpProtocol::Udp => {
                let udp = UdpPacket::new_checked(packet.payload()).unwrap();
                udp.checksum() != 0 && udp.verify_checksum(&src, &dst)
            }
            _ => false,
        }
    }

    #[test]
    fn the_device_fills_in_tcp_and_udp_checksums_with_a_context_per_change() {
        let (mut nic, sim) = driver();
        let now = Instant::from_millis(0);
        let caps = nic.capabilities();
        assert!(
            !caps.checksum.udp.tx() && !caps.checksum.tcp.tx() && caps.checksum.ipv4.tx() && caps.checksum.icmpv4.tx()
        );
        let frames = [
            ip_frame(false, b"first"),
            ip_frame(false, &[0xab; 1458]),
            ip_frame(true, b"GET / HTTP/1.1\r\n\r\n"),
            ip_frame(true, b"odd"),
            ip_frame(false, b""),
        ];
        for f in &frames {
            nic.transmit(now).expect("room").consume(f.len(), |b| b.copy_from_slice(f));
        }
        // An ARP-sized frame that is not IPv4 goes as it is.
        nic.transmit(now).expect("room").consume(60, |b| b.fill(0x5a));
        nic.flush();
        let state = sim.0.borrow();
        assert_eq!(state.sent.len(), frames.len() + 1);
        for (sent, original) in state.sent.iter().zip(&frames) {
            assert!(l4_checksum_ok(sent), "bad checksum in {sent:02x?}");
            assert_eq!(sent.len(), original.len());
        }
        assert_eq!(state.sent[frames.len()], vec![0x5a; 60]);
        // UDP, then TCP, then UDP again: three contexts, not one per frame.
        assert_eq!(state.contexts, 3);
    }

    #[test]
    fn only_whole_ipv4_tcp_and_udp_frames_are_offloaded() {
        let udp = ip_frame(false, b"abc");
        assert!(ring::seed_checksum(&mut udp.clone()).is_some());
        for bad in [
            udp[..udp.len() - 1].to_vec(),      // IP length longer than the frame
            [udp.clone(), vec![0; 4]].concat(), // trailing bytes after the IP packet
            {
                let mut f = udp.clone();
                f[12] = 0x86;
                f
            }, // not IPv4
            {
                let mut f = udp.clone();
                f[14] = 0x44;
                f
            }, // header length 16
            {
                let mut f = udp.clone();
                f[23] = 1;
                f
            }, // ICMP
            udp[..20].to_vec(),                 // truncated
        ] {
            let mut copy = bad.clone();
            assert_eq!(ring::seed_checksum(&mut copy), None, "{bad:02x?}");
            assert_eq!(copy, bad, "a frame that is not offloaded is left alone");
        }
    }

    #[test]
    fn an_offloaded_frame_needing_a_context_never_overruns_the_ring() {
        let (mut nic, sim) = driver();
        let now = Instant::from_millis(0);
        sim.0.borrow_mut().tx_stalled = true;
        while nic.transmit_with(60, |b| b.fill(1)).is_some() {}
        // One slot is left for the hardware's full/empty rule: a token now
        // would have no room for context + data.
        assert!(nic.transmit(now).is_none());
        nic.flush();
        sim.0.borrow_mut().tx_stalled = false;
        sim.run_tx();
        let f = ip_frame(true, b"after");
        nic.transmit(now).expect("room again").consume(f.len(), |b| b.copy_from_slice(&f));
        nic.flush();
        assert!(l4_checksum_ok(sim.0.borrow().sent.last().unwrap()));
    }
}
