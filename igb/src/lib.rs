//! # igb
//!
//! A driver for the Intel 82576 (QEMU's `igb`, PCI 8086:10C9) with several
//! queue pairs, receive-side scaling and one MSI-X vector per queue,
//! independent of any kernel: it reaches the hardware only through
//! [`Hardware`] (register access, DMA memory), so it runs on the host
//! against a simulated device in the unit tests.
//!
//! Use: [`Igb::new`] once, on one cpu, does the global setup; then each
//! queue's owner calls [`Igb::queue`] on its own cpu, which allocates that
//! queue's rings there and enables it. A [`Queue`] touches only its own
//! registers (tails, its interrupt bit, its drop counter), so queues run
//! on different cpus without sharing anything but the register window.
//!
//! ## What QEMU's model does (hw/net/igb_core.c, QEMU 8.1 to 10) and how the driver uses it
//!
//! - **Descriptors.** Receive uses advanced descriptors: SRRCTL.DESCTYPE =
//!   001b (one buffer), BSIZEPKT = 2 KiB. QEMU never uses the legacy
//!   receive layout (`igb_rx_use_legacy_descriptor` is `false`) and does
//!   not implement legacy transmit descriptors at all (the "legacy
//!   descriptor" branch of `igb_process_tx_desc` is a TODO): transmit uses
//!   advanced data descriptors (DEXT, DTYP = 0011b, EOP, IFCS, RS). A
//!   transmit tail write sends every pending descriptor inside that
//!   register write (`igb_set_tdt` → `igb_start_xmit`); done descriptors
//!   get DD in their status word.
//! - **Queues.** A queue works when RXDCTL/TXDCTL.ENABLE (bit 25) is set
//!   (`igb_receive_internal` skips a disabled receive queue, dropping its
//!   frames; `igb_tx_enabled` checks TCTL.EN and TXDCTL.ENABLE). Reset
//!   enables queue 0 only; the driver disables all 16 and enables each
//!   when its rings exist.
//! - **RSS** is on when MRQC.MRQE = 010b, RXCSUM.PCSD is set (the
//!   descriptor then carries the hash instead of the IP id) and
//!   descriptors are advanced (`igb_rss_enabled`). The queue is
//!   RETA\[hash & 0x7f\] & 0x0f (`E1000_RSS_QUEUE`), so up to 16 queues;
//!   the key is RSSRK read as bytes (byte 0 = bits 7:0 of RSSRK0).
//!   **Only TCP over IPv4 is spread**: MRQC sets only the TCP/IPv4 field
//!   (bit 16). In `igb_rss_get_hash_type` an IPv4 frame is hashed as
//!   TCP/IPv4 when its L4 protocol is TCP and bit 16 is set; UDP only with
//!   the IPv4/UDP field (bit 22), anything else IPv4 only with the IPv4
//!   field (bit 17) — both left clear; IPv6 fields are clear too. A frame
//!   of hash type NONE goes to queue 0. IPv4 fragments have no L4 protocol
//!   (`eth_get_protocols` returns before it for a fragment), so fragments,
//!   UDP, ICMP, ARP and non-IP frames all land on queue 0.
//! - **Receive checksums.** With RXCSUM.IPOFLD and TUOFLD, QEMU checks
//!   IPv4 and TCP/UDP checksums and reports IPCS/L4CS with IPE/TCPE on
//!   error (`igb_verify_csum_in_sw`; or trusts the tap's vnet header). The
//!   driver drops (and counts in `rx_errors`) a frame with an error, and a
//!   TCP/UDP frame left unchecked, and tells smoltcp not to check TCP and
//!   UDP checksums of what it receives.
//! - **Transmit checksums.** A context descriptor (DEXT, DTYP = 0010b,
//!   datasheet 7.2.2.2) loads one of the queue's two contexts, chosen by
//!   IDX = bit 4 of its MSS_L4LEN_IDX dword; its VLAN_MACIP_LENS dword
//!   holds IPLEN (bits 8:0) and MACLEN (15:9), its TYPE_TUCMD_MLHL dword
//!   TUCMD (19:9: IPV4 = bit 10, L4T = bits 12:11, 00b UDP, 01b TCP).
//!   A data descriptor with POPTS.TXSM (olinfo bit 9) gets its TCP/UDP
//!   checksum inserted using the context at IDX (olinfo bit 4); IXSM (bit
//!   8) would insert the IPv4 header checksum. In QEMU,
//!   `igb_process_tx_desc` only stores a context (`tx->ctx[idx]`, nothing
//!   sent, DD written back only if RS is set), remembers the first data
//!   descriptor's cmd_type_len/olinfo, and at EOP `igb_setup_tx_offloads`
//!   reads IDX from olinfo bit 4: with TXSM it asks `net_tx_pkt` for the
//!   checksum, which parses the frame itself (MACLEN, IPLEN and L4T are
//!   not used, except L4T = SCTP) and, for TCP or UDP only, either
//!   computes it in software (zeroing the field, pseudo-header from the
//!   IP header, over the frame to its end, a UDP 0 sent as 0xffff) or,
//!   when the backend takes vnet headers (tap), hands it to the host as
//!   NEEDS_CSUM with csum_start/offset, and the host completes the seed in
//!   the field as the 82576 does. So the driver seeds the field with the
//!   pseudo-header sum and fills the context as the datasheet asks. The
//!   contexts persist per queue (the datasheet: until overwritten), so
//!   the driver keeps UDP in index 0 and TCP in index 1 and writes a
//!   context descriptor only when a frame needs different header lengths
//!   than the device holds: one slot per frame in the common case (see
//!   `ring.rs`). The context descriptor has no RS (the datasheet defines
//!   no status for it) and is reclaimed with its frame's data descriptor.
//!   smoltcp is told to compute no TCP/UDP checksum (`Checksum::None`);
//!   IPv4 header checksums stay with smoltcp. [`Queue::transmit_with`]
//!   sends frames as they are.
//! - **Interrupts, MSI-X.** GPIE.MSIX_MODE; IVAR byte (i < 8: register i
//!   byte 0, else register i-8 byte 2) of queue i's receive cause = vector
//!   i | VALID (`igb_rx_wb_eic`). A frame sets EICR bit i and sends vector
//!   i only when bit i goes from clear to set in EICR & EIMS
//!   (`igb_raise_interrupts`); after sending, EICR bits in EIAC are
//!   cleared (`igb_msix_notify`); QEMU does not implement EIAM auto-mask.
//!   The driver leaves EIAC clear: bit i stays set after an interrupt, so
//!   no further interrupt comes until the queue re-arms by writing 1 to its
//!   own EICR bit (write-one-to-clear, `igb_set_eicr`) before draining its
//!   ring. Nothing shared is read per packet or per interrupt (reading
//!   EICR would clear every queue's bits). Transmit causes are left
//!   unmapped: transmission completes inside the doorbell write, so a
//!   transmit interrupt would only wake the queue's cpu for nothing; link
//!   changes (IVAR_MISC) are unmapped too, [`Queue::link_up`] reads STATUS.
//!   QEMU's igb has 10 MSI-X vectors for the physical function
//!   (`IGB_MSIX_VEC_NUM`), hence at most 10 queues with one vector each.
//! - **Legacy interrupt** (no MSI-X): one queue, IMS/ICR as on the 8254x
//!   (ICR clears on read and lowers the line).
//! - **Link.** Reset clears STATUS.LU and stops auto-negotiation; QEMU
//!   brings the link up 500 ms after auto-negotiation restarts
//!   (`e1000x_restart_autoneg`), which the driver asks for through MDIC
//!   (PHY control: auto-negotiation enable + restart), after setting
//!   CTRL.SLU; [`Igb::new`] then waits for STATUS.LU (up to 3 s).
//!
//! [`Queue`] implements smoltcp's [`phy::Device`](smoltcp::phy::Device):
//! the receive token lends the DMA buffer, the transmit token writes
//! straight into it; `receive` reclaims transmit descriptors first and
//! always hands out a transmit token (a frame with no room is dropped and
//! counted), so a full transmit ring never stalls reception.

#![cfg_attr(not(test), no_std)]

mod device;
mod regs;
mod ring;
pub mod rss;
#[cfg(test)]
mod sim;

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

use ring::{RxDescriptor, RxRing, TxDescriptor, TxRing};
pub use ring::{Stats, BUFFER_SIZE};
use rss::Rss;

/// Descriptors per ring (a multiple of 8: length registers count 128
/// bytes).
pub const RING_LEN: usize = 256;

/// Queue pairs the device has, all reachable by RSS (a redirection table
/// entry holds a 4-bit queue number).
pub const MAX_QUEUES: usize = 16;

/// How long [`Igb::new`] waits for the link after restarting
/// auto-negotiation (QEMU takes 500 ms).
const LINK_WAIT_US: u64 = 3_000_000;

/// DMA memory: zeroed, physically contiguous, mapped at `virt`.
pub struct Dma {
    /// Where the driver reaches the memory.
    pub virt: NonNull<u8>,
    /// Where the device reaches it (the address its descriptors hold).
    pub phys: u64,
    /// Its length in bytes.
    pub size: usize,
}

/// What the driver needs from the kernel. Every queue holds a clone; the
/// register accesses of different queues touch different registers.
pub trait Hardware: Clone {
    /// Reads the 32-bit register at byte offset `register`.
    fn read(&self, register: u32) -> u32;
    /// Writes the 32-bit register at byte offset `register`.
    fn write(&self, register: u32, value: u32);
    /// Zeroed, physically contiguous memory of `size` bytes aligned to
    /// 4 KiB, that the device can read and write, kept for the driver's
    /// life, preferably near the calling cpu. `None` when memory is
    /// exhausted.
    fn alloc_dma(&self, size: usize) -> Option<Dma>;
    /// Waits at least `micros` microseconds.
    fn delay_us(&self, micros: u64);
}

/// Why the device or a queue could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The device did not come out of reset.
    ResetTimeout,
    /// The PHY did not answer a register write.
    PhyTimeout,
    /// No DMA memory for the rings.
    OutOfMemory,
    /// Zero queues, or more than [`MAX_QUEUES`].
    BadQueueCount(usize),
    /// A queue index at or above the number of queues set up.
    NoSuchQueue(usize),
    /// The queue was already started.
    QueueTaken(usize),
}

/// The device after its global setup (see the crate documentation).
pub struct Igb<H: Hardware> {
    hw: H,
    mac: [u8; 6],
    queues: usize,
    msix: bool,
    rss: Rss,
    /// Bit i: queue i was started.
    started: AtomicU32,
}

impl<H: Hardware> Igb<H> {
    /// Resets the device and sets it up for `queues` queue pairs with RSS
    /// under [`rss::DEFAULT_KEY`]: with `msix`, queue i interrupts on
    /// MSI-X vector i; without, there is one queue on the legacy
    /// interrupt (`queues` is then taken as 1). Interrupts stay masked
    /// until each queue enables its own.
    pub fn new(hw: H, queues: usize, msix: bool) -> Result<Self, Error> {
        Self::with_key(hw, queues, msix, rss::DEFAULT_KEY)
    }

    /// [`new`](Self::new) with the caller's RSS key.
    pub fn with_key(hw: H, queues: usize, msix: bool, key: [u8; 40]) -> Result<Self, Error> {
        use regs::*;
        if queues == 0 || queues > MAX_QUEUES {
            return Err(Error::BadQueueCount(queues));
        }
        let queues = if msix { queues } else { 1 };
        hw.write(IMC, u32::MAX);
        hw.write(EIMC, u32::MAX);
        hw.write(CTRL, hw.read(CTRL) | CTRL_RST);
        wait(&hw, 100_000, || hw.read(CTRL) & CTRL_RST == 0).ok_or(Error::ResetTimeout)?;
        hw.write(IMC, u32::MAX);
        hw.write(EIMC, u32::MAX);
        hw.write(CTRL, hw.read(CTRL) | CTRL_SLU);
        let bmcr = BMCR_AUTOEN | BMCR_ANRESTART | BMCR_SPEED1000 | BMCR_FULL_DUPLEX;
        hw.write(MDIC, bmcr | PHY_BMCR << MDIC_REG_SHIFT | MDIC_PHY_ADDRESS << MDIC_PHY_SHIFT | MDIC_OP_WRITE);
        wait(&hw, 10_000, || hw.read(MDIC) & (MDIC_READY | MDIC_ERROR) != 0).ok_or(Error::PhyTimeout)?;
        if hw.read(MDIC) & MDIC_ERROR != 0 {
            return Err(Error::PhyTimeout);
        }

        for i in 0..128 {
            hw.write(MTA + i * 4, 0);
        }
        let (low, high) = (hw.read(RAL0), hw.read(RAH0));
        let mac = [low as u8, (low >> 8) as u8, (low >> 16) as u8, (low >> 24) as u8, high as u8, (high >> 8) as u8];
        hw.write(RAH0, (high & 0xffff) | RAH_AV);

        for q in 0..MAX_QUEUES {
            hw.write(rxdctl(q), 0);
            hw.write(txdctl(q), 0);
        }
        let rss = Rss::spread(key, queues);
        for (i, value) in rss.key_registers().into_iter().enumerate() {
            hw.write(RSSRK + 4 * i as u32, value);
        }
        for (i, value) in rss.reta_registers().into_iter().enumerate() {
            hw.write(RETA + 4 * i as u32, value);
        }
        hw.write(RXCSUM, RXCSUM_IPOFLD | RXCSUM_TUOFLD | RXCSUM_PCSD);
        hw.write(MRQC, MRQC_RSS | MRQC_RSS_FIELD_IPV4_TCP);

        if msix {
            hw.write(GPIE, GPIE_MSIX_MODE | GPIE_PBA);
            let mut ivar = [0u32; 8];
            for q in 0..queues {
                // Queue q's receive cause: register q % 8, byte 0 (q < 8)
                // or byte 2.
                ivar[q % 8] |= (q as u32 | IVAR_VALID) << if q < 8 { 0 } else { 16 };
            }
            for (i, value) in ivar.into_iter().enumerate() {
                hw.write(IVAR0 + 4 * i as u32, value);
            }
            hw.write(IVAR_MISC, 0);
            for v in 0..queues as u32 {
                hw.write(EITR0 + 4 * v, 0);
            }
        } else {
            hw.write(GPIE, 0);
        }

        hw.write(TCTL, TCTL_EN | TCTL_PSP | (0x0f << TCTL_CT_SHIFT) | (0x40 << TCTL_COLD_SHIFT));
        hw.write(RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC);
        // Auto-negotiation was restarted above; the link comes up later.
        let _ = wait(&hw, LINK_WAIT_US, || hw.read(STATUS) & STATUS_LU != 0);
        Ok(Self { hw, mac, queues, msix, rss, started: AtomicU32::new(0) })
    }

    /// The most queue pairs usable with RSS.
    pub const fn max_queues() -> usize {
        MAX_QUEUES
    }

    /// The queue pairs set up.
    pub fn queues(&self) -> usize {
        self.queues
    }

    /// Whether queues interrupt by MSI-X (else by the legacy interrupt).
    pub fn msix(&self) -> bool {
        self.msix
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The device's RSS key and redirection table.
    pub fn rss(&self) -> &Rss {
        &self.rss
    }

    /// Link state (reads STATUS).
    pub fn link_up(&self) -> bool {
        self.hw.read(regs::STATUS) & regs::STATUS_LU != 0
    }

    /// Starts queue `index`: allocates its rings and buffers (through
    /// [`Hardware::alloc_dma`], so on the calling cpu's memory), enables it
    /// and gives its receive buffers to the device. Call it on the cpu
    /// that will own the queue; each queue once.
    pub fn queue(&self, index: usize) -> Result<Queue<H>, Error> {
        use regs::*;
        if index >= self.queues {
            return Err(Error::NoSuchQueue(index));
        }
        if self.started.fetch_or(1 << index, Ordering::AcqRel) & (1 << index) != 0 {
            return Err(Error::QueueTaken(index));
        }
        let hw = &self.hw;
        const _: () = assert!(core::mem::size_of::<RxDescriptor>() == 16 && core::mem::size_of::<TxDescriptor>() == 16);
        const _: () = assert!(RING_LEN.is_multiple_of(8), "ring length registers count 128-byte units");
        let ring_bytes = RING_LEN * 16;
        let alloc = |size| hw.alloc_dma(size).ok_or(Error::OutOfMemory);
        let allocated = (|| {
            Ok((alloc(ring_bytes)?, alloc(RING_LEN * BUFFER_SIZE)?, alloc(ring_bytes)?, alloc(RING_LEN * BUFFER_SIZE)?))
        })();
        let (rx_ring, rx_buffers, tx_ring, tx_buffers) = match allocated {
            Ok(memory) => memory,
            Err(e) => {
                self.started.fetch_and(!(1 << index), Ordering::AcqRel);
                return Err(e);
            }
        };
        let rx = RxRing::new(&rx_ring, rx_buffers, RING_LEN);
        let tx = TxRing::new(&tx_ring, tx_buffers, RING_LEN);

        hw.write(rdbal(index), rx_ring.phys as u32);
        hw.write(rdbah(index), (rx_ring.phys >> 32) as u32);
        hw.write(rdlen(index), ring_bytes as u32);
        hw.write(srrctl(index), (BUFFER_SIZE as u32 >> SRRCTL_BSIZEPKT_SHIFT) | SRRCTL_DESCTYPE_ADV_ONEBUF);
        hw.write(rdh(index), 0);
        hw.write(rdt(index), 0);
        hw.write(rxdctl(index), QUEUE_ENABLE);
        hw.write(tdbal(index), tx_ring.phys as u32);
        hw.write(tdbah(index), (tx_ring.phys >> 32) as u32);
        hw.write(tdlen(index), ring_bytes as u32);
        hw.write(tdh(index), 0);
        hw.write(tdt(index), 0);
        hw.write(txdctl(index), QUEUE_ENABLE);
        // The buffers go to the device once the queue is enabled.
        hw.write(rdt(index), rx.initial_tail() as u32);
        Ok(Queue {
            hw: hw.clone(),
            index,
            mac: self.mac,
            msix: self.msix,
            rss: self.rss,
            rx,
            tx,
            stats: Stats::default(),
        })
    }
}

/// Polls `done` every 100 µs for up to `micros`; `None` on timeout.
fn wait<H: Hardware>(hw: &H, micros: u64, mut done: impl FnMut() -> bool) -> Option<()> {
    let mut waited = 0;
    while !done() {
        if waited >= micros {
            return None;
        }
        hw.delay_us(100);
        waited += 100;
    }
    Some(())
}

/// One queue pair, owned by one cpu.
pub struct Queue<H: Hardware> {
    hw: H,
    index: usize,
    mac: [u8; 6],
    msix: bool,
    rss: Rss,
    rx: RxRing,
    tx: TxRing,
    stats: Stats,
}

// SAFETY: the queue owns its rings' DMA memory; moving it to another
// thread moves that ownership (one cpu uses a queue at a time), and `H`
// is itself `Send`.
unsafe impl<H: Hardware + Send> Send for Queue<H> {}

impl<H: Hardware> Queue<H> {
    /// This queue's index (and MSI-X vector).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The device's RSS key and redirection table.
    pub fn rss(&self) -> &Rss {
        &self.rss
    }

    /// Link state (reads STATUS: one register read, not meant per packet).
    pub fn link_up(&self) -> bool {
        self.hw.read(regs::STATUS) & regs::STATUS_LU != 0
    }

    /// This queue's interrupt cause bit: its MSI-X vector's bit in EICR,
    /// or the legacy causes.
    fn cause_bit(&self) -> u32 {
        1 << self.index
    }

    /// Unmasks this queue's interrupt: its own MSI-X vector, or (legacy)
    /// frame received, ring low or overrun, link change.
    pub fn enable_interrupts(&mut self) {
        use regs::*;
        if self.msix {
            self.hw.write(EIMS, self.cause_bit());
        } else {
            self.hw.write(IMS, INT_RXDW | INT_RXDMT0 | INT_RXO | INT_LSC);
        }
    }

    /// Re-arms this queue's interrupt; call it before draining the ring.
    /// With MSI-X the vector is this queue's alone: its EICR bit is cleared
    /// (one register write, no read) and that bit is returned. Legacy: the
    /// cause is read (which clears it and lowers the line) and returned,
    /// 0 when the device did not interrupt.
    pub fn acknowledge_interrupt(&mut self) -> u32 {
        let cause = if self.msix {
            self.hw.write(regs::EICR, self.cause_bit());
            self.cause_bit()
        } else {
            self.hw.read(regs::ICR)
        };
        if cause != 0 {
            self.stats.interrupts += 1;
        }
        cause
    }

    /// Legacy interrupt only: makes the device interrupt now (cause: link
    /// change), for finding which interrupt line it is wired to.
    pub fn raise_test_interrupt(&mut self) {
        self.hw.write(regs::IMS, regs::INT_LSC);
        self.hw.write(regs::ICS, regs::INT_LSC);
    }

    /// Whether a received frame (good or bad) waits.
    pub fn rx_ready(&self) -> bool {
        self.rx.ready()
    }

    /// The next received frame, left in place (`None` when nothing waits
    /// or it is bad).
    pub fn peek_frame(&self) -> Option<&[u8]> {
        self.rx.peek_frame()
    }

    /// Passes the next received frame to `f` (`None` for a bad frame);
    /// returns `None` when nothing waits.
    pub fn receive_with<R>(&mut self, f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        self.rx.take(f)
    }

    /// Whether a frame can be queued now, by either path (reclaims sent
    /// descriptors first): counts room for a context descriptor too, as
    /// smoltcp's transmit token does.
    pub fn can_transmit(&mut self) -> bool {
        self.tx.reclaim();
        self.tx.has_room_offloaded()
    }

    /// Queues a frame of `len` bytes written by `f`, sent as it is (no
    /// checksum offload: the caller completes its frame); `None` (and a
    /// counted drop) when the transmit ring is full.
    pub fn transmit_with<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        self.tx.reclaim();
        if !self.tx.has_room() {
            self.tx.dropped += 1;
            return None;
        }
        Some(self.tx.put(len, f))
    }

    /// Writes this queue's tail registers that moved since the last flush:
    /// one register write per ring per batch.
    pub fn flush(&mut self) {
        if let Some(tail) = self.rx.take_tail() {
            self.hw.write(regs::rdt(self.index), tail as u32);
            self.stats.doorbells += 1;
        }
        if let Some(tail) = self.tx.take_tail() {
            self.hw.write(regs::tdt(self.index), tail as u32);
            self.stats.doorbells += 1;
        }
    }

    /// This queue's counters (reads its drop counter, one register read).
    pub fn stats(&mut self) -> Stats {
        self.stats.rx_missed += u64::from(self.hw.read(regs::rqdpc(self.index)));
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
mod tests;
