//! Reads the ACPI tables into a [`Topology`]: the `acpi` crate finds the
//! tables and reads the MADT (cpus, I/O APIC); the SRAT (NUMA affinity) and
//! SLIT (distances) bodies are read by [`crate::topology`]'s bounds-checked
//! parsers, because acpi 7.0.0-pre1 misreads both for more than one node.
//! The FADT gives the ACPI PM timer the TSC is calibrated against.
//! Without an RSDP (QEMU's microvm with `acpi=off`, Firecracker) the MP
//! tables stand in ([`crate::mptable`]).

use acpi::address::AddressSpace;
use acpi::sdt::fadt::Fadt;
use acpi::sdt::madt::{Madt, MadtEntry};
use acpi::AcpiTables;

use crate::arch::acpi_handler::{self, table_bytes, KernelAcpiHandler, RawTable, SLIT, SRAT};
use crate::arch::timers::FirmwareTimers;
use crate::topology::{self, Entry, Topology};

const ENABLED: u32 = 1;
const ONLINE_CAPABLE: u32 = 2;

/// Reads the tables behind `rsdp`: the topology and the timers. Any
/// problem is logged and answered with a safe fallback (the boot cpu
/// alone, one node; no PM timer).
pub fn discover(rsdp: Option<u64>, boot_apic_id: u32) -> (Topology, FirmwareTimers) {
    let Some(rsdp) = rsdp else {
        if let Some(topology) = crate::mptable::discover(boot_apic_id) {
            log::info!("acpi: the loader gave no RSDP; cpus and I/O APICs from the MP tables");
            return (topology, FirmwareTimers::default());
        }
        log::warn!("acpi: the loader gave no RSDP and there are no MP tables; assuming one cpu and one node");
        return (Topology::single(boot_apic_id), FirmwareTimers::default());
    };
    let tables = match acpi_handler::tables_at(rsdp) {
        Ok(tables) => tables,
        Err(e) => {
            log::warn!("acpi: cannot read tables at RSDP {rsdp:#x} ({e:?}); assuming one cpu and one node");
            return (Topology::single(boot_apic_id), FirmwareTimers::default());
        }
    };

    let madt = tables.find_table::<Madt>();
    let srat = tables.find_table::<RawTable<SRAT>>();
    if madt.is_none() {
        log::warn!("acpi: no MADT; only the boot cpu will run");
    }
    let madt_entries = madt.iter().flat_map(|m| m.get().entries()).filter_map(|e| match e {
        MadtEntry::LocalApic(c) if c.flags & (ENABLED | ONLINE_CAPABLE) != 0 => {
            Some(Entry::Cpu { apic_id: c.apic_id as u32 })
        }
        MadtEntry::LocalX2Apic(c) if { c.flags } & (ENABLED | ONLINE_CAPABLE) != 0 => {
            Some(Entry::Cpu { apic_id: { c.x2apic_id } })
        }
        _ => None,
    });
    // Collected into fixed arrays: the heap does not exist yet.
    let mut entries = [Entry::Cpu { apic_id: 0 }; topology::MAX_CPUS * 2 + topology::MAX_RANGES];
    let mut n = 0;
    let mut overflow = 0;
    let mut push = |entry| {
        if n < entries.len() {
            entries[n] = entry;
            n += 1;
        } else {
            overflow += 1;
        }
    };
    madt_entries.for_each(&mut push);
    let srat_problems = srat.as_ref().map_or(0, |srat| topology::parse_srat(table_bytes(srat), &mut push));
    if srat_problems > 0 {
        log::warn!("acpi: the SRAT is truncated or malformed; read what came before the problem");
    }
    let found = topology::build(boot_apic_id, entries[..n].iter().copied());
    let mut topology = found.topology;
    if found.ignored + overflow > 0 {
        log::warn!(
            "acpi: ignored {} MADT/SRAT entries (unknown cpus, too many nodes or ranges)",
            found.ignored + overflow
        );
    }
    if srat.is_none() {
        log::debug!("acpi: no SRAT; one NUMA node");
    }

    if let Some(madt) = &madt {
        topology.local_apic = madt.get().local_apic_address as u64;
        for entry in madt.get().entries() {
            if let MadtEntry::IoApic(io) = entry {
                let io_apic =
                    topology::IoApic { address: io.io_apic_address as u64, gsi_base: io.global_system_interrupt_base };
                if !topology.add_io_apic(io_apic) {
                    log::warn!("acpi: more than {} I/O APICs; {:#x} ignored", topology::MAX_IO_APICS, io_apic.address);
                }
            }
        }
    }
    if let Some(slit) = tables.find_table::<RawTable<SLIT>>() {
        match topology::parse_slit(table_bytes(&slit)) {
            Some((n, matrix)) if topology::set_distances(&mut topology, n, matrix) => {}
            Some((n, _)) => {
                log::warn!("acpi: SLIT for {n} domains does not match {} nodes; ignored", topology.node_count())
            }
            None => log::warn!("acpi: SLIT is truncated; distances ignored"),
        }
    }
    (topology, firmware_timers(&tables))
}

/// The ACPI PM timer from the FADT, when it has one in I/O space (a
/// hardware-reduced FADT, as on microvm, has none).
fn firmware_timers(tables: &AcpiTables<KernelAcpiHandler>) -> FirmwareTimers {
    let Some(fadt) = tables.find_table::<Fadt>() else {
        return FirmwareTimers::default();
    };
    let fadt = fadt.get();
    let pm_timer = match fadt.pm_timer_block() {
        Ok(Some(block)) if block.address_space == AddressSpace::SystemIo => {
            u16::try_from(block.address).ok().map(|port| (port, { fadt.flags }.pm_timer_is_32_bit()))
        }
        Ok(_) => None,
        Err(e) => {
            log::warn!("acpi: unreadable PM timer block in the FADT ({e:?}); ignored");
            None
        }
    };
    FirmwareTimers { pm_timer }
}
