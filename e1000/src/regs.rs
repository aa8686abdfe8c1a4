//! Register offsets and bits of the 8254x used by the driver (Intel
//! 8254x Family of Gigabit Ethernet Controllers Software Developer's
//! Manual, section 13).

pub const CTRL: u32 = 0x0000;
pub const STATUS: u32 = 0x0008;
pub const ICR: u32 = 0x00c0;
/// Interrupt cause set: raises the given causes.
pub const ICS: u32 = 0x00c8;
pub const IMS: u32 = 0x00d0;
pub const IMC: u32 = 0x00d8;
pub const RCTL: u32 = 0x0100;
pub const TCTL: u32 = 0x0400;
pub const TIPG: u32 = 0x0410;
pub const RDBAL: u32 = 0x2800;
pub const RDBAH: u32 = 0x2804;
pub const RDLEN: u32 = 0x2808;
pub const RDH: u32 = 0x2810;
pub const RDT: u32 = 0x2818;
pub const TDBAL: u32 = 0x3800;
pub const TDBAH: u32 = 0x3804;
pub const TDLEN: u32 = 0x3808;
pub const TDH: u32 = 0x3810;
pub const TDT: u32 = 0x3818;
/// Multicast table array: 128 registers.
pub const MTA: u32 = 0x5200;
pub const RAL0: u32 = 0x5400;
pub const RAH0: u32 = 0x5404;
/// Missed packets (no receive buffer), clear on read.
pub const MPC: u32 = 0x4010;

pub const CTRL_ASDE: u32 = 1 << 5;
pub const CTRL_SLU: u32 = 1 << 6;
pub const CTRL_RST: u32 = 1 << 26;
pub const CTRL_LRST: u32 = 1 << 3;
pub const CTRL_ILOS: u32 = 1 << 7;
pub const CTRL_PHY_RST: u32 = 1 << 31;

pub const STATUS_LU: u32 = 1 << 1;

/// Interrupt causes (ICR, IMS, IMC).
pub const INT_LSC: u32 = 1 << 2;
pub const INT_RXDMT0: u32 = 1 << 4;
pub const INT_RXO: u32 = 1 << 6;
pub const INT_RXT0: u32 = 1 << 7;

pub const RCTL_EN: u32 = 1 << 1;
pub const RCTL_BAM: u32 = 1 << 15;
/// Strip the Ethernet CRC from received frames.
pub const RCTL_SECRC: u32 = 1 << 26;
// Buffer size 2048: BSIZE = 00, BSEX = 0.

pub const TCTL_EN: u32 = 1 << 1;
pub const TCTL_PSP: u32 = 1 << 3;
pub const TCTL_CT_SHIFT: u32 = 4;
pub const TCTL_COLD_SHIFT: u32 = 12;
/// Recommended inter-packet gap for 802.3 (IPGT 10, IPGR1 8, IPGR2 6).
pub const TIPG_DEFAULT: u32 = 10 | (8 << 10) | (6 << 20);

pub const RAH_AV: u32 = 1 << 31;
