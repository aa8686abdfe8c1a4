//! MSI-X: a device's table of interrupt messages (in one of its BARs).
//! An entry is 16 bytes: message address (low, high), data, vector control
//! (bit 0 masks the entry). A message to the local APIC is a write to
//! 0xFEE00000 with the destination APIC id in bits 12-19 (physical mode),
//! and the vector in the data (fixed delivery, edge).

use super::mmio::Window;

const ENTRY_SIZE: usize = 16;
const MESSAGE_ADDRESS_LOW: usize = 0;
const MESSAGE_ADDRESS_HIGH: usize = 4;
const MESSAGE_DATA: usize = 8;
const VECTOR_CONTROL: usize = 12;
const VECTOR_CONTROL_MASKED: u32 = 1;

/// The local APICs' message address.
const APIC_MESSAGE_BASE: u32 = 0xfee0_0000;

/// A device's MSI-X table, mapped.
pub struct MsixTable {
    window: Window,
    entries: u16,
}

impl MsixTable {
    /// Maps the table of `entries` entries at physical `phys`.
    pub fn map(phys: u64, entries: u16) -> Result<MsixTable, &'static str> {
        if entries == 0 {
            return Err("MSI-X table without entries");
        }
        Ok(MsixTable { window: Window::map(phys, entries as usize * ENTRY_SIZE)?, entries })
    }

    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// Sends entry `entry`'s interrupts to `vector` on the cpu with
    /// `apic_id` (fixed delivery, edge) and unmasks it. Ids above 255 need
    /// interrupt remapping, which the kernel does not set up.
    pub fn route(&self, entry: u16, vector: u8, apic_id: u32) -> Result<(), &'static str> {
        if entry >= self.entries {
            return Err("no such MSI-X table entry");
        }
        if apic_id > 0xff {
            return Err("MSI cannot reach an APIC id above 255 without interrupt remapping");
        }
        let at = entry as usize * ENTRY_SIZE;
        self.window.write32(at + VECTOR_CONTROL, VECTOR_CONTROL_MASKED);
        self.window.write32(at + MESSAGE_ADDRESS_LOW, APIC_MESSAGE_BASE | apic_id << 12);
        self.window.write32(at + MESSAGE_ADDRESS_HIGH, 0);
        self.window.write32(at + MESSAGE_DATA, vector as u32);
        self.window.write32(at + VECTOR_CONTROL, 0);
        Ok(())
    }

    /// Masks entry `entry`.
    pub fn mask(&self, entry: u16) {
        if entry < self.entries {
            self.window.write32(entry as usize * ENTRY_SIZE + VECTOR_CONTROL, VECTOR_CONTROL_MASKED);
        }
    }
}
