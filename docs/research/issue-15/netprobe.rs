// Research probe for issue 15 (docs/research/issue-15/README.md, section 3): Landlock network
// rules and seccomp user notification for connect(), run as root on kernel 6.18. Not part of any
// build; kept as the reference for the connectors' network grants.
//! Research probe for issue 15 network grants.
//! `netprobe landlock` : Landlock ConnectTcp is port-only (address ignored), UDP not covered, audit records.
//! `netprobe notif`    : seccomp user notification on connect(); the "supervisor" (parent) validates the
//!                       sockaddr, connects a socket of its own netns and installs it over the child's fd
//!                       (SECCOMP_IOCTL_NOTIF_ADDFD + SETFD), child in an empty netns.
use std::io::{Read, Write};
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{FromRawFd, RawFd};
use std::time::{Duration, Instant};

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("landlock") => landlock_probe(),
        Some("notif") => notif_probe(),
        _ => eprintln!("usage: netprobe landlock|notif"),
    }
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

// ---------------------------------------------------------------- Landlock
fn landlock_probe() {
    use landlock::{Access, AccessNet, NetPort, Ruleset, RulesetAttr, RulesetCreatedAttr, ABI};
    let ok = TcpListener::bind("0.0.0.0:0").unwrap();
    let bad = TcpListener::bind("0.0.0.0:0").unwrap();
    let okp = ok.local_addr().unwrap().port();
    let badp = bad.local_addr().unwrap().port();
    let udp_peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let audit = audit_open();
    let status = Ruleset::default()
        .handle_access(AccessNet::from_all(ABI::V7))
        .unwrap()
        .create()
        .unwrap()
        .add_rule(NetPort::new(okp, AccessNet::ConnectTcp))
        .unwrap()
        .restrict_self()
        .unwrap();
    println!("landlock status: {:?}", status.ruleset);
    for (what, addr) in [
        ("granted port, 127.0.0.1", format!("127.0.0.1:{okp}")),
        ("granted port, OTHER address 127.0.0.2", format!("127.0.0.2:{okp}")),
        ("granted port, OTHER address 127.1.2.3", format!("127.1.2.3:{okp}")),
        ("other port, 127.0.0.1", format!("127.0.0.1:{badp}")),
    ] {
        let r = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1));
        println!("connect {what:45} -> {}", r.map(|_| "OK".to_string()).unwrap_or_else(|e| e.to_string()));
    }
    let u = UdpSocket::bind("127.0.0.1:0");
    match u {
        Ok(u) => {
            let r = u.send_to(b"udp is not covered", udp_peer.local_addr().unwrap());
            println!("UDP bind+sendto to an ungranted port -> {r:?}");
        }
        Err(e) => println!("UDP bind -> {e}"),
    }
    let r = TcpListener::bind("127.0.0.1:0");
    println!("TCP bind (BindTcp handled, no rule) -> {:?}", r.map(|_| ()));
    if let Some(fd) = audit {
        audit_drain(fd);
    }
}

/// Opens NETLINK_AUDIT, reports whether audit is enabled, and joins the read-log multicast group.
fn audit_open() -> Option<RawFd> {
    // SAFETY: plain socket/bind/send calls on a new fd with initialised buffers.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_AUDIT);
        if fd < 0 {
            println!("audit: socket: {}", errno());
            return None;
        }
        let mut sa: libc::sockaddr_nl = std::mem::zeroed();
        sa.nl_family = libc::AF_NETLINK as u16;
        sa.nl_groups = 1; // AUDIT_NLGRP_READLOG
        if libc::bind(fd, &sa as *const _ as *const libc::sockaddr, size_of::<libc::sockaddr_nl>() as u32) < 0 {
            println!("audit: bind READLOG group: {}", errno());
            return None;
        }
        // AUDIT_GET (1000): status.enabled
        let mut req = [0u8; 16];
        req[0..4].copy_from_slice(&16u32.to_ne_bytes());
        req[4..6].copy_from_slice(&1000u16.to_ne_bytes());
        req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
        let q = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_AUDIT);
        libc::send(q, req.as_ptr() as *const _, 16, 0);
        let mut buf = [0u8; 8192];
        let n = libc::recv(q, buf.as_mut_ptr() as *mut _, buf.len(), 0);
        if n >= 16 + 8 {
            let mask = u32::from_ne_bytes(buf[16..20].try_into().unwrap());
            let enabled = u32::from_ne_bytes(buf[20..24].try_into().unwrap());
            let pid = u32::from_ne_bytes(buf[28..32].try_into().unwrap());
            println!("audit: AUDIT_GET mask={mask:#x} enabled={enabled} auditd_pid={pid}");
        } else {
            println!("audit: AUDIT_GET reply {n} bytes: {}", errno());
        }
        if std::env::var("AUDIT_ENABLE").is_ok() {
            audit_set_enabled(q, 1);
        }
        libc::close(q);
        Some(fd)
    }
}

/// AUDIT_SET (1001) with mask AUDIT_STATUS_ENABLED: host-global switch.
unsafe fn audit_set_enabled(q: RawFd, on: u32) {
    let mut req = [0u8; 16 + 44];
    req[0..4].copy_from_slice(&60u32.to_ne_bytes());
    req[4..6].copy_from_slice(&1001u16.to_ne_bytes());
    req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    req[16..20].copy_from_slice(&1u32.to_ne_bytes());
    req[20..24].copy_from_slice(&on.to_ne_bytes());
    // SAFETY: send of a local buffer.
    let r = unsafe { libc::send(q, req.as_ptr() as *const _, req.len(), 0) };
    println!("audit: AUDIT_SET enabled={on} -> sent {r}");
}

fn audit_drain(fd: RawFd) {
    let t = Instant::now();
    let mut buf = [0u8; 8192];
    let mut n_records = 0;
    while t.elapsed() < Duration::from_millis(500) {
        // SAFETY: recv into a local buffer on our own fd.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut _, buf.len(), libc::MSG_DONTWAIT) };
        if n <= 0 {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let ty = u16::from_ne_bytes(buf[4..6].try_into().unwrap());
        let text = String::from_utf8_lossy(&buf[16..n as usize]);
        println!("audit record type={ty}: {}", text.trim_end_matches('\0'));
        n_records += 1;
    }
    println!("audit: {n_records} record(s) read in 500 ms");
    if std::env::var("AUDIT_ENABLE").is_ok() {
        // SAFETY: a fresh netlink socket for one request.
        unsafe {
            let q = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_AUDIT);
            audit_set_enabled(q, 0);
            libc::close(q);
        }
    }
}

// ------------------------------------------------------- seccomp user notif
const NOTIF_RECV: libc::c_ulong = 0xC050_2100;
const NOTIF_SEND: libc::c_ulong = 0xC018_2101;
const NOTIF_ID_VALID: libc::c_ulong = 0x4008_2102;
const NOTIF_ADDFD: libc::c_ulong = 0x4018_2103;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const FLAG_NEW_LISTENER: libc::c_ulong = 1 << 3;
const ADDFD_FLAG_SETFD: u32 = 1;

#[repr(C)]
#[derive(Default, Debug)]
struct SeccompData {
    nr: i32,
    arch: u32,
    ip: u64,
    args: [u64; 6],
}
#[repr(C)]
#[derive(Default, Debug)]
struct Notif {
    id: u64,
    pid: u32,
    flags: u32,
    data: SeccompData,
}
#[repr(C)]
#[derive(Default)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}
#[repr(C)]
#[derive(Default)]
struct NotifAddfd {
    id: u64,
    flags: u32,
    srcfd: u32,
    newfd: u32,
    newfd_flags: u32,
}

fn bpf(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// connect -> USER_NOTIF, everything else ALLOW (x86_64 only; the probe's job is the mechanism).
fn install_notif_filter() -> RawFd {
    let prog = [
        bpf((libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, 4, 0, 0), // arch
        bpf((libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16, 0xC000_003E, 1, 0),
        bpf((libc::BPF_RET | libc::BPF_K) as u16, libc::SECCOMP_RET_KILL_PROCESS, 0, 0),
        bpf((libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, 0, 0, 0), // nr
        bpf((libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16, libc::SYS_connect as u32, 0, 1),
        bpf((libc::BPF_RET | libc::BPF_K) as u16, RET_USER_NOTIF, 0, 0),
        bpf((libc::BPF_RET | libc::BPF_K) as u16, libc::SECCOMP_RET_ALLOW, 0, 0),
    ];
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut _ };
    // SAFETY: prctl/seccomp with a valid program that outlives the call.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        let fd = libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, FLAG_NEW_LISTENER, &fprog);
        assert!(fd >= 0, "seccomp: {}", errno());
        fd as RawFd
    }
}

fn send_fd(sock: RawFd, fd: RawFd) {
    let mut space = [0u8; 64];
    let iov_byte = [0u8; 1];
    // SAFETY: standard SCM_RIGHTS message built in local buffers.
    unsafe {
        let mut iov = libc::iovec { iov_base: iov_byte.as_ptr() as *mut _, iov_len: 1 };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr() as *mut _;
        msg.msg_controllen = libc::CMSG_SPACE(size_of::<RawFd>() as u32) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
        assert!(libc::sendmsg(sock, &msg, 0) >= 0);
    }
}

fn recv_fd(sock: RawFd) -> RawFd {
    let mut space = [0u8; 64];
    let mut b = [0u8; 1];
    // SAFETY: standard SCM_RIGHTS receive into local buffers.
    unsafe {
        let mut iov = libc::iovec { iov_base: b.as_mut_ptr() as *mut _, iov_len: 1 };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr() as *mut _;
        msg.msg_controllen = space.len();
        assert!(libc::recvmsg(sock, &mut msg, 0) >= 0);
        let c = libc::CMSG_FIRSTHDR(&msg);
        std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const RawFd)
    }
}

/// Child: empty netns, notif filter, then a nonblocking connect like mio/tokio does.
fn child(sock: RawFd, okp: u16, badp: u16) -> ! {
    // SAFETY: unshare in a single-threaded child.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    println!("[connector] unshare(CLONE_NEWNET) = {rc}");
    let direct = TcpStream::connect_timeout(&format!("127.0.0.1:{okp}").parse().unwrap(), Duration::from_millis(200));
    println!("[connector] before filter, own connect in the empty netns -> {:?}", direct.map(|_| ()).map_err(|e| e.to_string()));
    let listener = install_notif_filter();
    send_fd(sock, listener);
    // SAFETY: closing our copy; the parent has the listener now.
    unsafe { libc::close(listener) };
    for (what, port, ip) in [("granted", okp, Ipv4Addr::LOCALHOST), ("ungranted port", badp, Ipv4Addr::LOCALHOST), ("granted port, other address", okp, Ipv4Addr::new(127, 0, 0, 2))] {
        // SAFETY: raw socket/connect/poll on fds we own, sockaddr built locally.
        unsafe {
            let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0);
            let one: libc::c_int = 1;
            libc::setsockopt(s, libc::IPPROTO_TCP, libc::TCP_NODELAY, &one as *const _ as *const _, 4);
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
                sin_zero: [0; 8],
            };
            let t = Instant::now();
            let rc = libc::connect(s, &sa as *const _ as *const _, size_of::<libc::sockaddr_in>() as u32);
            let e = errno();
            let took = t.elapsed();
            if rc == 0 || e.raw_os_error() == Some(libc::EINPROGRESS) {
                let mut p = libc::pollfd { fd: s, events: libc::POLLOUT, revents: 0 };
                libc::poll(&mut p, 1, 1000);
                let mut err: libc::c_int = 0;
                let mut len = 4u32;
                libc::getsockopt(s, libc::SOL_SOCKET, libc::SO_ERROR, &mut err as *mut _ as *mut _, &mut len);
                let mut nd: libc::c_int = 0;
                libc::getsockopt(s, libc::IPPROTO_TCP, libc::TCP_NODELAY, &mut nd as *mut _ as *mut _, &mut len);
                let fl = libc::fcntl(s, libc::F_GETFL);
                libc::fcntl(s, libc::F_SETFL, fl & !libc::O_NONBLOCK);
                let mut st = TcpStream::from_raw_fd(s);
                let _ = st.write_all(b"hello from the empty netns\n");
                let mut reply = [0u8; 64];
                let n = st.read(&mut reply).unwrap_or(0);
                println!(
                    "[connector] {what:28} 127.x:{port} connect rc={rc} ({e}) in {took:?}; SO_ERROR={err} nodelay={nd} nonblock={} reply={:?}",
                    fl & libc::O_NONBLOCK != 0,
                    String::from_utf8_lossy(&reply[..n])
                );
            } else {
                println!("[connector] {what:28} 127.x:{port} connect -> {e} in {took:?}");
                libc::close(s);
            }
        }
    }
    std::process::exit(0)
}

fn notif_probe() {
    let ok = TcpListener::bind("0.0.0.0:0").unwrap();
    let okp = ok.local_addr().unwrap().port();
    let bad = TcpListener::bind("127.0.0.1:0").unwrap();
    let badp = bad.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in ok.incoming() {
            let mut s = s.unwrap();
            let mut b = [0u8; 64];
            let _ = s.read(&mut b);
            let _ = s.write_all(format!("peer saw {}", s.peer_addr().unwrap()).as_bytes());
        }
    });
    let grants = [SocketAddrV4::new(Ipv4Addr::LOCALHOST, okp)];
    let mut sv = [0; 2];
    // SAFETY: socketpair into a local array.
    unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) };
    // SAFETY: the child only runs async-signal-safe-enough code for a probe (no locks held by other threads that it needs: the accept thread holds none it uses).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        child(sv[1], okp, badp);
    }
    let listener = recv_fd(sv[0]);
    println!("[supervisor] got notification listener fd {listener}; grants {grants:?}");
    let mut denied = 0;
    for _ in 0..3 {
        let mut n = Notif::default();
        // SAFETY: ioctl with a correctly sized, zeroed struct seccomp_notif.
        let rc = unsafe { libc::ioctl(listener, NOTIF_RECV, &mut n) };
        if rc < 0 {
            println!("[supervisor] NOTIF_RECV: {}", errno());
            break;
        }
        let t0 = Instant::now();
        let (fd, ptr, len) = (n.data.args[0] as i32, n.data.args[1], n.data.args[2] as usize);
        // Copy the sockaddr once out of the connector's memory; only this copy is used.
        let mut sa = [0u8; 128];
        let len = len.min(sa.len());
        let local = libc::iovec { iov_base: sa.as_mut_ptr() as *mut _, iov_len: len };
        let remote = libc::iovec { iov_base: ptr as *mut _, iov_len: len };
        // SAFETY: reading another process's memory into our buffer (needs ptrace access; we are root).
        let got = unsafe { libc::process_vm_readv(n.pid as i32, &local, 1, &remote, 1, 0) };
        let fam = u16::from_ne_bytes([sa[0], sa[1]]);
        let target = (fam == libc::AF_INET as u16 && got as usize >= size_of::<libc::sockaddr_in>()).then(|| {
            SocketAddrV4::new(Ipv4Addr::new(sa[4], sa[5], sa[6], sa[7]), u16::from_be_bytes([sa[2], sa[3]]))
        });
        // SAFETY: ID_VALID with a pointer to the id.
        let valid = unsafe { libc::ioctl(listener, NOTIF_ID_VALID, &n.id) } == 0;
        let mut resp = NotifResp { id: n.id, ..Default::default() };
        match target {
            Some(t) if valid && grants.contains(&t) => {
                // SAFETY: pidfd_open/pidfd_getfd/socket/connect/ioctl on fds we own.
                unsafe {
                    let pidfd = libc::syscall(libc::SYS_pidfd_open, n.pid, 0) as RawFd;
                    let orig = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as RawFd;
                    let fl = libc::fcntl(orig, libc::F_GETFL);
                    let mut nd: libc::c_int = 0;
                    let mut l = 4u32;
                    libc::getsockopt(orig, libc::IPPROTO_TCP, libc::TCP_NODELAY, &mut nd as *mut _ as *mut _, &mut l);
                    let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | (fl & libc::O_NONBLOCK), 0);
                    libc::setsockopt(s, libc::IPPROTO_TCP, libc::TCP_NODELAY, &nd as *const _ as *const _, 4);
                    let sin = libc::sockaddr_in {
                        sin_family: libc::AF_INET as u16,
                        sin_port: t.port().to_be(),
                        sin_addr: libc::in_addr { s_addr: u32::from(*t.ip()).to_be() },
                        sin_zero: [0; 8],
                    };
                    let crc = libc::connect(s, &sin as *const _ as *const _, size_of::<libc::sockaddr_in>() as u32);
                    let cerr = errno().raw_os_error().unwrap_or(0);
                    let add = NotifAddfd { id: n.id, flags: ADDFD_FLAG_SETFD, srcfd: s as u32, newfd: fd as u32, newfd_flags: libc::O_CLOEXEC as u32 };
                    let arc = libc::ioctl(listener, NOTIF_ADDFD, &add);
                    println!("[supervisor] pid {} connect(fd {fd}, {t}) granted: own connect rc={crc} errno={cerr}, ADDFD over fd {fd} rc={arc} (copied nonblock={} nodelay={nd}) in {:?}", n.pid, fl & libc::O_NONBLOCK != 0, t0.elapsed());
                    if crc < 0 {
                        resp.error = -cerr;
                    }
                    libc::close(s);
                    libc::close(orig);
                    libc::close(pidfd);
                }
            }
            other => {
                denied += 1;
                resp.error = -libc::EACCES;
                println!("[supervisor] pid {} connect to {other:?} DENIED (denials so far: {denied})", n.pid);
            }
        }
        // SAFETY: ioctl with a correctly sized response.
        let rc = unsafe { libc::ioctl(listener, NOTIF_SEND, &resp) };
        if rc < 0 {
            println!("[supervisor] NOTIF_SEND: {}", errno());
        }
    }
    let mut st = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    println!("[supervisor] connector exited, status {st}; denials counted by the supervisor: {denied}");
    drop(bad);
}
