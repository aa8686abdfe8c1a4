//! Networking from the outside: DHCP, TCP and UDP echo through QEMU user
//! networking (forwarded from 127.0.0.1), many concurrent connections, a
//! refused connection, and a flood of bad frames written straight onto the
//! NIC's wire (a unix datagram socket) after which the service still
//! answers.
//!
//! DHCP, the byte-exact echo, the 100 connections and the bad-frame flood
//! run on each card: q35's e1000, virtio-net over PCI on q35 (MSI-X) and
//! over MMIO on microvm (an I/O APIC line, one cpu), igb with 2 cpus (a
//! network stack on each, connections spread by RSS) and with 1, through
//! `on_hardware!`; together they add about 10 s to the file. The rest
//! stays on the e1000: it tests the kernel, not the card.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use bravo_tests::{free_port, ktest, on_hardware, Hardware, Machine, Running};

/// Boots `examples/echo` with user networking on `hardware`; returns the
/// VM and the host port forwarded to the guest's port 7.
fn echo_service(hardware: Hardware, cpus: usize) -> (Running, u16) {
    echo_service_with(hardware, cpus, &[])
}

fn echo_service_with(hardware: Hardware, cpus: usize, more: &[(u16, u16)]) -> (Running, u16) {
    echo_service_on(Machine::new("echo").on(hardware).cpus(hardware.cpus(cpus)), more)
}

fn echo_service_on(machine: Machine, more: &[(u16, u16)]) -> (Running, u16) {
    // A port free a moment ago may be taken by the time QEMU binds it
    // (then QEMU exits at once): try again with another.
    for _ in 0..3 {
        let port = free_port();
        let forwards: Vec<(u16, u16)> = std::iter::once((port, 7)).chain(more.iter().copied()).collect();
        let mut vm = machine.clone().user_net(&forwards).timeout(Duration::from_secs(600)).start();
        match vm.wait_for_line("echo: listening on 10.0.2.15/24", Duration::from_secs(60)) {
            Ok(_) => return (vm, port),
            Err(e) if e.contains("QEMU ended") => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("QEMU kept failing to start (host ports taken?)")
}

/// Connects, retrying while the guest's NIC is still starting (QEMU's e1000
/// holds reception back for a moment after setup).
fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            // Slirp accepts at once; a byte through proves the guest is there.
            s.write_all(b"?")?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)?;
            Ok(s)
        });
        match attempt {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("cannot reach the echo service: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Sends `data` and reads the echo back (writing and reading at once, so
/// that large transfers cannot deadlock on full buffers).
fn echo(stream: TcpStream, data: Vec<u8>) -> Vec<u8> {
    let mut writer = stream.try_clone().unwrap();
    let send = std::thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    let mut reader = stream;
    reader.read_to_end(&mut back).unwrap();
    send.join().unwrap();
    back
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + seed * 7) % 251) as u8).collect()
}

#[test]
fn an_idle_network_service_sleeps() {
    let (vm, port) = echo_service(Hardware::E1000, 2);
    drop(connect(port)); // traffic first, then quiet
    std::thread::sleep(Duration::from_millis(500));
    let (wall, cpu) = (Instant::now(), vm.cpu_time());
    std::thread::sleep(Duration::from_secs(3));
    let (wall, cpu) = (wall.elapsed(), vm.cpu_time() - cpu);
    // The network thread waits for the NIC's interrupt or smoltcp's next
    // timer; a polling one would keep a host cpu busy.
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    println!(
        "idle echo service: {cpu:?} of host cpu over {wall:?} ({:.1}% of one cpu; {:?} since boot)",
        share * 100.0,
        vm.cpu_time()
    );
    assert!(share < 0.15, "an idle network service used {cpu:?} of cpu time in {wall:?}");
}

fn dhcp_gives_the_guest_an_address(hardware: Hardware) {
    let (mut vm, _) = echo_service(hardware, 1);
    vm.wait_for_line("net: address 10.0.2.15/24, gateway 10.0.2.2", Duration::from_secs(1)).unwrap();
    vm.wait_for_line(&format!("net: {} 52:54:00:12:34:56", hardware.driver()), Duration::from_secs(1)).unwrap();
}
on_hardware!(dhcp_gives_the_guest_an_address: e1000 = E1000, virtio_pci = VIRTIO_PCI, igb = IGB, igb_1cpu = IGB_1CPU, virtio_mmio = VIRTIO_MMIO);

fn tcp_echo_is_byte_exact_from_one_byte_to_megabytes(hardware: Hardware) {
    let (_vm, port) = echo_service(hardware, 2);
    for (i, size) in [1, 1000, 65_536, 1 << 20, 3 << 20].into_iter().enumerate() {
        let data = pattern(size, i);
        let started = Instant::now();
        let back = echo(connect(port), data.clone());
        assert_eq!(back.len(), size, "echo of {size} bytes returned {} bytes", back.len());
        assert!(back == data, "echo of {size} bytes differs");
        let secs = started.elapsed().as_secs_f64();
        println!("tcp echo {size} B in {secs:.2} s ({:.2} MB/s each way)", size as f64 / secs / 1e6);
    }
}
on_hardware!(tcp_echo_is_byte_exact_from_one_byte_to_megabytes: e1000 = E1000, virtio_pci = VIRTIO_PCI, igb = IGB, igb_1cpu = IGB_1CPU, virtio_mmio = VIRTIO_MMIO);

#[test]
fn the_polled_nic_serves_too() {
    let (mut vm, port) = echo_service_on(Machine::new("echo").cpus(2).cmdline("netpoll=on netcpu=0"), &[]);
    vm.wait_for_line("on cpu 0, link up, polling (netpoll=on)", Duration::from_secs(1)).unwrap();
    let data = pattern(256 * 1024, 3);
    assert!(echo(connect(port), data.clone()) == data, "echo through the polled NIC differs");
}

#[test]
fn igb_without_msix_runs_one_queue_on_its_legacy_interrupt() {
    let (mut vm, port) = echo_service_on(Machine::new("echo").on(Hardware::IGB).cpus(2).cmdline("msix=off"), &[]);
    vm.wait_for_line("net: igb without MSI-X (msix=off): one queue on the legacy interrupt", Duration::from_secs(1))
        .unwrap();
    vm.wait_for_line("queue 0 on cpu 1, link up, interrupt on I/O APIC pin", Duration::from_secs(1)).unwrap();
    let data = pattern(256 * 1024, 5);
    assert!(echo(connect(port), data.clone()) == data, "echo through the legacy interrupt differs");
}

fn a_hundred_concurrent_connections_all_complete(hardware: Hardware) {
    let (_vm, port) = echo_service(hardware, 2);
    // Open the connections one after the other (QEMU's port forwarding
    // accepts host connections slowly, and drops bursts of them), keep all
    // 100 open at once in the guest, then echo on all of them concurrently.
    let streams: Vec<TcpStream> = (0..100).map(|_| connect(port)).collect();
    let clients: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            std::thread::spawn(move || {
                let data = pattern(16 * 1024, i);
                let back = echo(stream, data.clone());
                assert!(back == data, "client {i}: echo differs ({} bytes back)", back.len());
            })
        })
        .collect();
    let failed = clients.into_iter().map(|c| c.join()).filter(Result::is_err).count();
    assert_eq!(failed, 0, "{failed} of 100 concurrent clients failed");
}
on_hardware!(a_hundred_concurrent_connections_all_complete: e1000 = E1000, virtio_pci = VIRTIO_PCI, igb = IGB, igb_1cpu = IGB_1CPU, virtio_mmio = VIRTIO_MMIO);

#[test]
fn udp_echo_answers() {
    let (_vm, port) = echo_service(Hardware::E1000, 1);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut answered = 0;
    for i in 0..40 {
        let data = pattern(100 + i, i);
        socket.send_to(&data, ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 2048];
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            assert_eq!(&buf[..n], &data[..], "datagram {i} came back changed");
            answered += 1;
        }
    }
    // The first datagrams may be lost while the NIC starts.
    assert!(answered >= 30, "only {answered} of 40 datagrams answered");
}

#[test]
fn a_connection_to_a_closed_port_is_refused() {
    // Guest side: connecting to a host port where nothing listens fails
    // with `Refused`.
    let closed = free_port();
    let run = ktest("net-refused").user_net(&[]).cmdline(&format!("-- net-refused {closed}")).run();
    run.assert_success();
    run.assert_line("net-refused: connection refused, as expected");
    // Host side: the guest resets a connection to a port it does not serve
    // (QEMU accepts on the host, then closes it when the guest resets).
    let unserved = free_port();
    let (_vm, port) = echo_service_with(Hardware::E1000, 1, &[(unserved, 9)]);
    connect(port); // the guest is up
    let mut stream = TcpStream::connect(("127.0.0.1", unserved)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = stream.write_all(b"anyone?");
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("a connection to an unserved guest port got {other:?} instead of being closed"),
    }
}

/// The first `len` bytes of `net-lent`'s test stream (see
/// `tests/images/ktest`).
fn lent_stream(len: usize) -> Vec<u8> {
    (0..len).map(|at| (at % 251) as u8 ^ (at / 251) as u8).collect()
}

#[test]
fn reads_and_writes_use_the_callers_buffers_whole() {
    // Reads and writes borrow the application's buffers (no copy on the
    // way to the network thread, on another cpu): a read that times out
    // leaves its buffer alone, reads larger than the socket buffer fill
    // theirs in order, and `write_last` longer than its final request
    // sends everything once.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let vm = ktest("net-lent").cpus(2).user_net(&[]).cmdline(&format!("-- net-lent {port}")).start();
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the guest never connected ({e}); serial:\n{}", vm.wait().serial()),
        }
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut go = [0u8; 2];
    if let Err(e) = conn.read_exact(&mut go) {
        panic!("no go from the guest ({e}); serial:\n{}", vm.wait().serial());
    }
    conn.write_all(&lent_stream(300_000)).unwrap();
    let mut back = Vec::new();
    conn.read_to_end(&mut back).unwrap();
    let run = vm.wait();
    run.assert_success();
    run.assert_line("net-lent: a timed-out read left its buffer alone");
    run.assert_line("net-lent: 300000 bytes read intact");
    let expected = lent_stream(1 << 20).repeat(2);
    assert_eq!(back.len(), expected.len(), "the guest sent back {} bytes of {}", back.len(), expected.len());
    let first_bad = back.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(first_bad, None, "the stream sent back differs from byte {first_bad:?}");
}

// --- Raw frames on the wire -------------------------------------------

const GUEST_IP: [u8; 4] = [10, 0, 0, 2];
const HOST_IP: [u8; 4] = [10, 0, 0, 1];
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const BROADCAST: [u8; 6] = [0xff; 6];

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in data.chunks(2) {
        sum += u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ethernet(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn arp_request() -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&HOST_MAC);
    a.extend_from_slice(&HOST_IP);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&GUEST_IP);
    ethernet(BROADCAST, 0x0806, &a)
}

fn udp_frame(guest_mac: [u8; 6], src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    use smoltcp::wire::{EthernetAddress, Ipv4Address};
    let ip = |a: [u8; 4]| Ipv4Address::new(a[0], a[1], a[2], a[3]);
    bravo_tests::traffic::udp_frame(
        EthernetAddress(HOST_MAC),
        EthernetAddress(guest_mac),
        ip(HOST_IP),
        ip(GUEST_IP),
        src_port,
        dst_port,
        payload,
    )
}

fn icmp_echo_request(guest_mac: [u8; 6], id: u16, payload: &[u8]) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&1u16.to_be_bytes());
    icmp.extend_from_slice(payload);
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 2, 0, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&HOST_IP);
    ip.extend_from_slice(&GUEST_IP);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&icmp);
    ethernet(guest_mac, 0x0800, &ip)
}

/// Bad frames of every kind: random bytes, truncated headers, lies in
/// length fields, oversized frames.
fn bad_frames(guest_mac: [u8; 6]) -> Vec<Vec<u8>> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let good = udp_frame(guest_mac, 4000, 7, b"0123456789");
    let mut frames = Vec::new();
    for i in 0..600 {
        let len = 1 + (random() % 1600) as usize;
        frames.push((0..len).map(|_| random() as u8).collect());
        // A valid start, cut anywhere (but not empty: QEMU's datagram
        // backend takes an empty datagram for the end of the connection).
        frames.push(good[..1 + i % (good.len() - 1)].to_vec());
        // Header fields corrupted one byte at a time.
        let mut f = good.clone();
        let at = 14 + (i % (good.len() - 14));
        f[at] = random() as u8;
        frames.push(f);
    }
    for size in [1515, 1600, 4000, 9000, 16000] {
        let mut f = good.clone();
        f.resize(size, 0xab);
        frames.push(f);
    }
    // IPv4 total length larger than the frame; UDP length larger than IP.
    let mut f = good.clone();
    f[16..18].copy_from_slice(&9000u16.to_be_bytes());
    frames.push(f);
    let mut f = good.clone();
    f[38..40].copy_from_slice(&60000u16.to_be_bytes());
    frames.push(f);
    frames
}

fn a_flood_of_bad_frames_leaves_the_service_answering(hardware: Hardware) {
    let dir = std::env::temp_dir().join(format!("bravo-wire-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (guest_path, host_path) = (dir.join("guest.sock"), dir.join("host.sock"));
    let wire = UnixDatagram::bind(&host_path).unwrap();
    wire.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    // The flood never blocks the test for long if QEMU stops reading.
    wire.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut vm = Machine::new("echo")
        .on(hardware)
        .cpus(hardware.cpus(2))
        .dgram_net(&guest_path, &host_path)
        .cmdline("ip=10.0.0.2/24")
        .timeout(Duration::from_secs(300))
        .start();
    vm.wait_for_line("echo: listening on 10.0.0.2/24", Duration::from_secs(60)).unwrap();

    // Learn the guest's MAC from its answer to our ARP request (which also
    // teaches it ours).
    let arp_reply = |wire: &UnixDatagram| -> Option<[u8; 6]> {
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let Ok(n) = wire.recv(&mut buf) else { continue };
            if n >= 42 && buf[12..14] == [0x08, 0x06] && buf[20..22] == [0, 2] && buf[28..32] == GUEST_IP {
                return Some(buf[22..28].try_into().unwrap());
            }
        }
        None
    };
    let udp_echo = |wire: &UnixDatagram, mac: [u8; 6], payload: &[u8]| -> bool {
        wire.send_to(&udp_frame(mac, 4000, 7, payload), &guest_path).unwrap();
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let Ok(n) = wire.recv(&mut buf) else { continue };
            if n >= 42 && buf[12..14] == [0x08, 0x00] && buf[23] == 17 && buf[36..38] == 4000u16.to_be_bytes() {
                return &buf[42..n] == payload;
            }
        }
        false
    };
    let mut mac = None;
    for _ in 0..20 {
        wire.send_to(&arp_request(), &guest_path).unwrap();
        mac = arp_reply(&wire);
        if mac.is_some() {
            break;
        }
    }
    let mac = mac.expect("the guest answers ARP");
    assert!(udp_echo(&wire, mac, b"before the flood"), "no UDP echo before the flood");

    // The kernel answers pings (ICMP echo) by itself.
    wire.send_to(&icmp_echo_request(mac, 0x4242, b"ping payload"), &guest_path).unwrap();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut pong = false;
    while !pong && Instant::now() < deadline {
        let Ok(n) = wire.recv(&mut buf) else { continue };
        pong = n >= 42
            && buf[12..14] == [0x08, 0x00]
            && buf[23] == 1
            && buf[34] == 0
            && buf[38..40] == 0x4242u16.to_be_bytes()
            && &buf[42..n] == b"ping payload";
    }
    assert!(pong, "no ICMP echo reply");

    let frames = bad_frames(mac);
    for frame in &frames {
        // QEMU refuses datagrams it cannot take; that is fine.
        let _ = wire.send_to(frame, &guest_path);
    }
    // Drain whatever the guest answered to the garbage.
    let deadline = Instant::now() + Duration::from_secs(5);
    while wire.recv(&mut [0u8; 2048]).is_ok() && Instant::now() < deadline {}

    assert!(
        udp_echo(&wire, mac, b"after the flood"),
        "the service stopped answering after {} bad frames",
        frames.len()
    );
    drop(vm);
    let _ = std::fs::remove_dir_all(&dir);
}
on_hardware!(a_flood_of_bad_frames_leaves_the_service_answering: e1000 = E1000, virtio_pci = VIRTIO_PCI, igb = IGB, igb_1cpu = IGB_1CPU, virtio_mmio = VIRTIO_MMIO);

#[test]
fn running_out_of_socket_memory_is_an_error_not_a_crash() {
    let run = ktest("net-exhaust").cpus(2).user_net(&[]).run();
    run.assert_success();
    run.assert_line("listeners bound before memory ran out");
    run.assert_line("net-exhaust: memory came back");
}

#[test]
fn a_stuck_network_cpu_is_reported_and_its_counters_stay_readable() {
    let run = ktest("net-starved").cpus(2).user_net(&[]).run();
    run.assert_success();
    let warning = run.assert_line("net: the network cpu has work waiting but has completed no round for");
    assert!(warning.text.contains("WARN"), "{}", warning.text);
    let line = run.assert_line("net-starved: answered after");
    let waited: u64 = line
        .text
        .split("after ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .expect("a wait in ms");
    assert!(waited >= 1000, "the call was answered during the stall: {}", line.text);
}
