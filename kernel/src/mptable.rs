//! The Intel MultiProcessor tables (MP specification 1.4): cpus and I/O
//! APICs on machines without ACPI, such as QEMU's `microvm` with
//! `acpi=off` (the setting under which QEMU lists virtio-mmio devices on
//! the command line) and Firecracker.
//!
//! A 16-byte floating pointer (`_MP_`) sits in the first KiB of the EBDA,
//! the last KiB of base memory or the BIOS ROM (0xF0000-0xFFFFF); it points
//! to a `PCMP` configuration table whose entries name each processor and
//! I/O APIC. Both checksums are verified and every read is bounds-checked:
//! a bad table is ignored, never trusted. The parsers take byte slices, so
//! the host unit tests drive them with tables they build.

/// What an MP configuration table says about the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpConfig {
    /// The local APIC's physical address.
    pub local_apic: u64,
    /// Enabled processors' APIC ids, in table order.
    pub cpus: [u8; 256],
    pub cpu_count: usize,
    /// Enabled I/O APICs' register addresses, in table order.
    pub io_apics: [u64; 8],
    pub io_apic_count: usize,
}

impl MpConfig {
    pub fn cpus(&self) -> &[u8] {
        &self.cpus[..self.cpu_count]
    }

    pub fn io_apics(&self) -> &[u64] {
        &self.io_apics[..self.io_apic_count]
    }
}

const FLOATING_LEN: usize = 16;
const HEADER_LEN: usize = 44;
const PROCESSOR: u8 = 0;
const PROCESSOR_LEN: usize = 20;
const IO_APIC: u8 = 2;
const OTHER_ENTRY_LEN: usize = 8;
const ENABLED: u8 = 1;

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)) == 0
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Finds a valid floating pointer in `area` (searched on 16-byte
/// boundaries, as the specification places it) and returns the physical
/// address of its configuration table. `None` when there is none, or when
/// it selects one of the specification's default configurations (no
/// table; no machine this kernel runs on uses them).
pub fn find_floating_pointer(area: &[u8]) -> Option<u32> {
    area.chunks_exact(FLOATING_LEN).filter(|p| &p[..4] == b"_MP_" && p[8] == 1 && checksum_ok(p)).find_map(|p| {
        let table = le_u32(p, 4)?;
        (p[11] == 0 && table != 0).then_some(table)
    })
}

/// The length of the base configuration table whose first bytes are
/// `header` (to know how much to read), when the header is valid.
pub fn table_len(header: &[u8]) -> Option<usize> {
    (header.get(..4)? == b"PCMP").then_some(())?;
    let len = le_u16(header, 4)? as usize;
    (len >= HEADER_LEN).then_some(len)
}

/// Why a configuration table was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    BadSignature,
    BadChecksum,
    /// An entry runs past the table's end, or has an unknown type (whose
    /// length, and so where the next entry starts, is unknown).
    Malformed,
}

/// Reads a base configuration table (`table` holds exactly its base
/// length, whose entries it walks; the header's entry count is ignored). Processors and I/O APICs beyond the fixed capacity are
/// skipped.
pub fn parse(table: &[u8]) -> Result<MpConfig, Problem> {
    if table_len(table) != Some(table.len()) {
        return Err(Problem::BadSignature);
    }
    if !checksum_ok(table) {
        return Err(Problem::BadChecksum);
    }
    let local_apic = le_u32(table, 36).ok_or(Problem::Malformed)?;
    let mut config =
        MpConfig { local_apic: local_apic as u64, cpus: [0; 256], cpu_count: 0, io_apics: [0; 8], io_apic_count: 0 };
    // Entries are walked up to the table's length, not counted: qboot
    // (the firmware of QEMU's microvm) leaves the entry count at 0.
    let mut at = HEADER_LEN;
    while at < table.len() {
        let kind = table[at];
        let len = match kind {
            PROCESSOR => PROCESSOR_LEN,
            1..=4 => OTHER_ENTRY_LEN,
            _ => return Err(Problem::Malformed),
        };
        let entry = table.get(at..at + len).ok_or(Problem::Malformed)?;
        match kind {
            PROCESSOR if entry[3] & ENABLED != 0 && config.cpu_count < config.cpus.len() => {
                config.cpus[config.cpu_count] = entry[1];
                config.cpu_count += 1;
            }
            IO_APIC if entry[3] & ENABLED != 0 && config.io_apic_count < config.io_apics.len() => {
                config.io_apics[config.io_apic_count] = le_u32(entry, 4).ok_or(Problem::Malformed)? as u64;
                config.io_apic_count += 1;
            }
            _ => {}
        }
        at += len;
    }
    Ok(config)
}

/// Reads the MP tables from firmware memory into a topology (one NUMA
/// node: the MP tables know none). `None`, with a log line saying why,
/// when there are none or they are bad.
#[cfg(not(test))]
pub fn discover(boot_apic_id: u32) -> Option<crate::topology::Topology> {
    use crate::arch::paging::firmware_bytes;
    use crate::topology::{self, Entry, IoApic};

    let ebda = (u16::from_le_bytes(firmware_bytes(0x40e, 2).try_into().ok()?) as u64) << 4;
    let base_kib = u16::from_le_bytes(firmware_bytes(0x413, 2).try_into().ok()?) as u64;
    // A loader that fills no BIOS data area (qboot, which QEMU's microvm
    // runs) leaves these at 0: the last KiB of 640 KiB is then the place.
    let base_kib = if base_kib == 0 { 640 } else { base_kib };
    let areas = [(ebda, 1024), ((base_kib - 1) * 1024, 1024), (0xf_0000, 0x1_0000)];
    let table_at = areas
        .into_iter()
        .filter(|&(start, _)| start >= 0x400)
        .find_map(|(start, len)| find_floating_pointer(firmware_bytes(start, len)))?;
    let len = table_len(firmware_bytes(table_at as u64, HEADER_LEN))?;
    let config = match parse(firmware_bytes(table_at as u64, len)) {
        Ok(config) => config,
        Err(problem) => {
            log::warn!("mptable: the MP configuration table at {table_at:#x} is unusable ({problem:?})");
            return None;
        }
    };
    let cpus = config.cpus().iter().map(|&apic_id| Entry::Cpu { apic_id: apic_id as u32 });
    let found = topology::build(boot_apic_id, cpus);
    let mut topology = found.topology;
    if found.ignored > 0 {
        log::warn!("mptable: ignored {} processor entries", found.ignored);
    }
    topology.local_apic = config.local_apic;
    // The MP tables give no interrupt base: I/O APICs take 24 lines each,
    // in table order, as QEMU's and Firecracker's do.
    for (i, &address) in config.io_apics().iter().enumerate() {
        if !topology.add_io_apic(IoApic { address, gsi_base: 24 * i as u32 }) {
            log::warn!("mptable: more than {} I/O APICs; {address:#x} ignored", topology::MAX_IO_APICS);
        }
    }
    log::debug!(
        "mptable: {} cpus, {} I/O APICs from the MP table at {table_at:#x}",
        config.cpu_count,
        config.io_apic_count
    );
    Some(topology)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix_checksum(bytes: &mut [u8], at: usize) {
        bytes[at] = 0;
        let sum = bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        bytes[at] = 0u8.wrapping_sub(sum);
    }

    fn floating(table: u32) -> [u8; 16] {
        let mut p = [0u8; 16];
        p[..4].copy_from_slice(b"_MP_");
        p[4..8].copy_from_slice(&table.to_le_bytes());
        p[8] = 1;
        p[9] = 4;
        fix_checksum(&mut p, 10);
        p
    }

    fn processor(apic_id: u8, flags: u8) -> Vec<u8> {
        let mut e = vec![0u8; PROCESSOR_LEN];
        (e[1], e[2], e[3]) = (apic_id, 0x14, flags);
        e
    }

    fn io_apic(id: u8, flags: u8, address: u32) -> Vec<u8> {
        let mut e = vec![IO_APIC, id, 0x11, flags, 0, 0, 0, 0];
        e[4..8].copy_from_slice(&address.to_le_bytes());
        e
    }

    fn table(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut t = vec![0u8; HEADER_LEN];
        t[..4].copy_from_slice(b"PCMP");
        t[6] = 4;
        t[34..36].copy_from_slice(&(entries.len() as u16).to_le_bytes());
        t[36..40].copy_from_slice(&0xfee0_0000u32.to_le_bytes());
        for e in entries {
            t.extend_from_slice(e);
        }
        let len = t.len() as u16;
        t[4..6].copy_from_slice(&len.to_le_bytes());
        fix_checksum(&mut t, 7);
        t
    }

    #[test]
    fn the_floating_pointer_is_found_on_a_16_byte_boundary_with_a_good_checksum() {
        let mut area = vec![0u8; 1024];
        area[512..528].copy_from_slice(&floating(0x9fc10));
        assert_eq!(find_floating_pointer(&area), Some(0x9fc10));
        let mut misplaced = vec![0u8; 1024];
        misplaced[520..536].copy_from_slice(&floating(0x9fc10));
        assert_eq!(find_floating_pointer(&misplaced), None, "not on a 16-byte boundary");
        area[515] ^= 0xff;
        assert_eq!(find_floating_pointer(&area), None, "a bad checksum is not trusted");
    }

    #[test]
    fn a_default_configuration_has_no_table_to_read() {
        let mut p = floating(0);
        p[11] = 5;
        fix_checksum(&mut p, 10);
        assert_eq!(find_floating_pointer(&p), None);
    }

    #[test]
    fn enabled_processors_and_io_apics_are_read_in_order() {
        let t = table(&[
            processor(0, 0b11),
            processor(1, 0b01),
            processor(7, 0b00),                             // disabled
            vec![1, 0, b'I', b'S', b'A', b' ', b' ', b' '], // a bus
            io_apic(2, 1, 0xfec0_0000),
            io_apic(3, 1, 0xfec1_0000),
            io_apic(4, 0, 0xfec2_0000),   // disabled
            vec![3, 0, 0, 0, 0, 4, 2, 4], // an interrupt assignment
            vec![4, 3, 0, 0, 0, 0, 0xff, 1],
            processor(2, 0b01),
        ]);
        assert_eq!(table_len(&t), Some(t.len()));
        let config = parse(&t).expect("a valid table");
        assert_eq!(config.cpus(), &[0, 1, 2]);
        assert_eq!(config.io_apics(), &[0xfec0_0000, 0xfec1_0000]);
        assert_eq!(config.local_apic, 0xfee0_0000);
    }

    #[test]
    fn bad_tables_are_refused_not_trusted() {
        let good = table(&[processor(0, 1), processor(1, 1)]);
        let mut bad_sum = good.clone();
        bad_sum[HEADER_LEN + 1] = 9;
        assert_eq!(parse(&bad_sum), Err(Problem::BadChecksum));
        assert_eq!(parse(&good[..good.len() - 1]), Err(Problem::BadSignature), "length disagrees with the header");

        let mut unknown = table(&[processor(0, 1), vec![9, 0, 0, 0, 0, 0, 0, 0]]);
        fix_checksum(&mut unknown, 7);
        assert_eq!(parse(&unknown), Err(Problem::Malformed));

        let mut cut = table(&[processor(0, 1), processor(1, 1)]);
        cut.truncate(cut.len() - 4); // the last entry runs past the end
        let len = cut.len() as u16;
        cut[4..6].copy_from_slice(&len.to_le_bytes());
        fix_checksum(&mut cut, 7);
        assert_eq!(parse(&cut), Err(Problem::Malformed));

        let mut not_pcmp = good.clone();
        not_pcmp[0] = b'X';
        assert_eq!(table_len(&not_pcmp), None);
    }

    #[test]
    fn entries_are_walked_to_the_table_length_whatever_the_count_says() {
        let mut t = table(&[processor(0, 1), processor(1, 1), io_apic(2, 1, 0xfec0_0000)]);
        t[34] = 0; // as qboot writes it
        fix_checksum(&mut t, 7);
        let config = parse(&t).expect("a valid table");
        assert_eq!((config.cpus(), config.io_apics()), (&[0u8, 1][..], &[0xfec0_0000u64][..]));
    }

    #[test]
    fn more_processors_than_the_capacity_are_skipped() {
        let entries: Vec<Vec<u8>> = (0..=255u8).chain(0..10).map(|id| processor(id, 1)).collect();
        let config = parse(&table(&entries)).expect("a valid table");
        assert_eq!(config.cpu_count, 256);
    }
}
