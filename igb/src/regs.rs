//! Register offsets and bits of the 82576 used by the driver (Intel 82576EB
//! datasheet, section 8; QEMU's hw/net/igb_regs.h and e1000x_regs.h).
//! Queue registers use the 0xC000/0xE000 blocks, which hold all 16 queues
//! (the 0x2800/0x3800 blocks alias queues 0-3 only).

pub const CTRL: u32 = 0x0000;
pub const STATUS: u32 = 0x0008;
/// PHY access through the MDI interface.
pub const MDIC: u32 = 0x0020;
/// Legacy interrupt cause (clear on read), set, mask set, mask clear.
pub const ICR: u32 = 0x00c0;
pub const ICS: u32 = 0x00c8;
pub const IMS: u32 = 0x00d0;
pub const IMC: u32 = 0x00d8;
pub const RCTL: u32 = 0x0100;
pub const TCTL: u32 = 0x0400;
/// General purpose interrupt enable (MSI-X mode).
pub const GPIE: u32 = 0x1514;
/// Extended interrupt mask set, mask clear, auto-clear, and cause (one
/// bit per MSI-X vector in MSI-X mode). EIAM is never written: QEMU's
/// write handler sets the complement of what is written.
pub const EIMS: u32 = 0x1524;
pub const EIMC: u32 = 0x1528;
#[cfg(test)]
pub const EIAC: u32 = 0x152c;
pub const EICR: u32 = 0x1580;
/// Interrupt throttle, one per vector.
pub const EITR0: u32 = 0x1680;
/// Interrupt vector allocation: 8 registers, one byte per queue cause.
pub const IVAR0: u32 = 0x1700;
pub const IVAR_MISC: u32 = 0x1740;
pub const RXCSUM: u32 = 0x5000;
pub const MTA: u32 = 0x5200;
pub const RAL0: u32 = 0x5400;
pub const RAH0: u32 = 0x5404;
/// Multiple receive queues command.
pub const MRQC: u32 = 0x5818;
/// Redirection table: 32 registers, 128 one-byte entries.
pub const RETA: u32 = 0x5c00;
/// RSS random key: 10 registers, 40 bytes, byte 0 in bits 7:0 of RSSRK0.
pub const RSSRK: u32 = 0x5c80;

/// Receive queue `n`'s registers.
pub const fn rdbal(n: usize) -> u32 {
    0xc000 + 0x40 * n as u32
}
pub const fn rdbah(n: usize) -> u32 {
    rdbal(n) + 0x04
}
pub const fn rdlen(n: usize) -> u32 {
    rdbal(n) + 0x08
}
pub const fn srrctl(n: usize) -> u32 {
    rdbal(n) + 0x0c
}
pub const fn rdh(n: usize) -> u32 {
    rdbal(n) + 0x10
}
pub const fn rdt(n: usize) -> u32 {
    rdbal(n) + 0x18
}
pub const fn rxdctl(n: usize) -> u32 {
    rdbal(n) + 0x28
}
/// Frames dropped on queue `n` for want of a descriptor, clear on read.
pub const fn rqdpc(n: usize) -> u32 {
    rdbal(n) + 0x30
}
/// Transmit queue `n`'s registers.
pub const fn tdbal(n: usize) -> u32 {
    0xe000 + 0x40 * n as u32
}
pub const fn tdbah(n: usize) -> u32 {
    tdbal(n) + 0x04
}
pub const fn tdlen(n: usize) -> u32 {
    tdbal(n) + 0x08
}
pub const fn tdh(n: usize) -> u32 {
    tdbal(n) + 0x10
}
pub const fn tdt(n: usize) -> u32 {
    tdbal(n) + 0x18
}
pub const fn txdctl(n: usize) -> u32 {
    tdbal(n) + 0x28
}

pub const CTRL_SLU: u32 = 1 << 6;
pub const CTRL_RST: u32 = 1 << 26;
pub const STATUS_LU: u32 = 1 << 1;

/// MDIC: data in bits 15:0, PHY register in 20:16, PHY address in 25:21.
pub const MDIC_REG_SHIFT: u32 = 16;
pub const MDIC_PHY_SHIFT: u32 = 21;
/// The internal PHY's address.
pub const MDIC_PHY_ADDRESS: u32 = 1;
pub const MDIC_OP_WRITE: u32 = 1 << 26;
pub const MDIC_READY: u32 = 1 << 28;
pub const MDIC_ERROR: u32 = 1 << 30;
/// PHY control register (MII BMCR) and its bits: 1000 Mb/s, full duplex,
/// auto-negotiation enabled, restart auto-negotiation.
pub const PHY_BMCR: u32 = 0;
pub const BMCR_SPEED1000: u32 = 1 << 6;
pub const BMCR_FULL_DUPLEX: u32 = 1 << 8;
pub const BMCR_ANRESTART: u32 = 1 << 9;
pub const BMCR_AUTOEN: u32 = 1 << 12;

/// Legacy interrupt causes (ICR, IMS, IMC).
pub const INT_LSC: u32 = 1 << 2;
pub const INT_RXDMT0: u32 = 1 << 4;
pub const INT_RXO: u32 = 1 << 6;
/// Receive descriptor written back.
pub const INT_RXDW: u32 = 1 << 7;

pub const GPIE_MSIX_MODE: u32 = 1 << 4;
/// Pending-bit-array support (what the device model expects with MSI-X).
pub const GPIE_PBA: u32 = 1 << 31;

/// An IVAR byte: vector number in bits 4:0, bit 7 valid.
pub const IVAR_VALID: u32 = 0x80;

pub const RCTL_EN: u32 = 1 << 1;
pub const RCTL_BAM: u32 = 1 << 15;
pub const RCTL_SECRC: u32 = 1 << 26;

pub const TCTL_EN: u32 = 1 << 1;
pub const TCTL_PSP: u32 = 1 << 3;
pub const TCTL_CT_SHIFT: u32 = 4;
pub const TCTL_COLD_SHIFT: u32 = 12;

/// SRRCTL: packet buffer size in 1 KiB units (bits 6:0), descriptor type
/// "advanced, one buffer" (bits 27:25 = 001).
pub const SRRCTL_BSIZEPKT_SHIFT: u32 = 10;
pub const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 1 << 25;

/// RXDCTL / TXDCTL: the queue is enabled.
pub const QUEUE_ENABLE: u32 = 1 << 25;

/// RXCSUM: IP and TCP/UDP checksum offload, and "packet checksum
/// disable" (the descriptor then carries the RSS hash; RSS needs it).
pub const RXCSUM_IPOFLD: u32 = 1 << 8;
pub const RXCSUM_TUOFLD: u32 = 1 << 9;
pub const RXCSUM_PCSD: u32 = 1 << 13;

/// MRQC: multiple receive queues by RSS (MRQE = 010b) and the hash
/// fields; only TCP over IPv4 is hashed (see the crate documentation).
pub const MRQC_RSS: u32 = 0b010;
pub const MRQC_RSS_FIELD_IPV4_TCP: u32 = 1 << 16;

pub const RAH_AV: u32 = 1 << 31;
