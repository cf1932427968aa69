//! The connector profile, applied for real (as root) in forked children of
//! the test process, which plays the supervisor: it receives the connect
//! guard's listener over the child's fd 3 and answers the notifications.
//! The child reports what it saw as text datagrams on fd 3.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use edgeward_ipc::control::{Fault, FaultKind, FromWorker, SandboxPlan};
use edgeward_ipc::frame;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::seccomp::{compile_for, CompiledFilter};
use crate::{fds, sigsys, Allowlist, Applied, ConnectorGrants, Profile, Runbook};

/// The connector's uid and gid in these tests (otherwise unused).
const UID: u32 = 299_998;

const HOSTS: &str = "10.9.8.7 broker.test\n";
const GRANTED: &str = "granted CA bundle\n";

/// A connector's files in a fresh temporary directory, removed on drop.
struct Fixture {
    dir: PathBuf,
    grants: ConnectorGrants,
    secret: PathBuf,
}

impl Fixture {
    fn new(tag: &str, ports: Vec<u16>) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the connector profile needs root (namespaces, the hosts bind, a uid switch): run these tests as root"
        );
        let dir =
            std::env::temp_dir().join(format!("edgeward-sandbox-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, GRANTED).unwrap();
        // Writable by anyone and in a dir anyone may write to: only
        // Landlock keeps the connector from writing them.
        set_mode(&ca, 0o666);
        set_mode(&dir, 0o777);
        let secret = dir.join("secret.txt");
        std::fs::write(&secret, "not granted\n").unwrap();
        let hosts_file = dir.join("hosts");
        std::fs::write(&hosts_file, HOSTS).unwrap();
        let state_dir = dir.join("state");
        std::fs::create_dir(&state_dir).unwrap();
        nix::unistd::chown(
            &state_dir,
            Some(nix::unistd::Uid::from_raw(UID)),
            Some(nix::unistd::Gid::from_raw(UID)),
        )
        .unwrap();
        Fixture {
            grants: ConnectorGrants {
                ports,
                read_files: vec![ca],
                state_dir,
                hosts_file,
            },
            secret,
            dir,
        }
    }
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `text` (and `fds`) to the parent on fd 3.
fn report(text: &str, fds: &[RawFd]) {
    // SAFETY: fd 3 is the control socket, open for the child's whole life.
    let control = unsafe { BorrowedFd::borrow_raw(sigsys::CONTROL_FD) };
    let _ = frame::send_bytes(control, text.as_bytes(), fds);
}

/// Waits for the parent's go-ahead on fd 3 (any datagram).
fn wait_for_parent() {
    // SAFETY: as in `report`.
    let control = unsafe { BorrowedFd::borrow_raw(sigsys::CONTROL_FD) };
    let _ = frame::recv_bytes(control);
}

/// The errno of the last failed call in the child.
fn errno() -> i32 {
    nix::errno::Errno::last_raw()
}

/// Forks a child that applies the connector profile with `grants`, reports
/// the degraded layers, then runs `body` and exits with its code. Returns
/// the parent's end of the child's control socket and the child's pid.
fn spawn(
    grants: &ConnectorGrants,
    filter: &CompiledFilter,
    body: impl FnOnce(Applied) -> i32,
) -> (OwnedFd, Pid) {
    let (ours, theirs) = frame::seqpacket_pair().unwrap();
    let parent = nix::unistd::getpid();
    // SAFETY: the child applies the runbook and runs `body`, then _exits;
    // it touches nothing another thread of the test process could hold
    // but the allocator, which glibc keeps usable across fork.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            drop(ours);
            // SAFETY: dup2 onto fd 3 in this fresh, single-threaded child.
            unsafe { libc::dup2(theirs.as_raw_fd(), sigsys::CONTROL_FD) };
            drop(theirs);
            let inherited = fds::open_fds();
            let plan = SandboxPlan {
                cgroup_procs: Vec::new(),
                identity: Some((UID, UID)),
                max_fds: 64,
                max_threads: 8,
            };
            let runbook = Runbook {
                plan: &plan,
                profile: Profile::Connector(grants),
                dirs: &[],
                inherited_fds: &inherited,
                keep_fds: &[0, 1, 2, sigsys::CONTROL_FD],
                supervisor: parent,
                inherited_namespaces: None,
                seccomp: filter,
            };
            let code = match runbook.apply() {
                Ok(applied) => {
                    report(&format!("degraded: {:?}", applied.degraded), &[]);
                    body(applied)
                }
                Err(e) => {
                    report(&format!("sandbox failed: {e}"), &[]);
                    90
                }
            };
            // SAFETY: leave the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => (ours, child),
    }
}

/// The next datagram from the child, with its fds. Panics if none comes
/// (a failsafe against a hung child, not a timing assertion).
fn recv(control: &OwnedFd) -> (Vec<u8>, Vec<OwnedFd>) {
    wait_readable(control.as_fd(), "the child's control socket");
    frame::recv_bytes(control).expect("the child's control socket")
}

fn recv_text(control: &OwnedFd) -> String {
    String::from_utf8(recv(control).0).unwrap()
}

/// Receives the degraded-layers report and checks that only the cgroup
/// layer (none given here) is missing: nothing degrades silently.
fn expect_sandboxed(control: &OwnedFd) {
    let degraded = recv_text(control);
    assert_eq!(
        degraded,
        r#"degraded: ["cgroups: none usable on this host (no memory/CPU/pids limits)"]"#
    );
}

fn wait_readable(fd: BorrowedFd<'_>, what: &str) {
    let mut poll = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
    let ready = nix::poll::poll(&mut poll, nix::poll::PollTimeout::from(30_000u16)).unwrap();
    assert_eq!(ready, 1, "nothing came on {what}");
}

fn exited(child: Pid) -> WaitStatus {
    waitpid(child, None).unwrap()
}

fn sockaddr_v4(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// `connect(2)` to 127.0.0.1:`port` on a new non-blocking TCP socket, as
/// tokio does; returns the socket and connect's result (0 or an errno).
fn tcp_connect(port: u16) -> (RawFd, i32) {
    // SAFETY: socket(2) with integer arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return (fd, errno());
    }
    let addr = sockaddr_v4(port);
    // SAFETY: `addr` is a valid sockaddr_in of the length given.
    let rc = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    (fd, if rc == 0 { 0 } else { errno() })
}

/// The supervisor's side of one connect notification: receives it, checks
/// it is a connect from `child` and reads its address.
fn next_connect(listener: &OwnedFd, child: Pid) -> (libc::seccomp_notif, SocketAddr) {
    wait_readable(listener.as_fd(), "the connect guard's listener");
    // SAFETY: the kernel requires a zeroed seccomp_notif; all-zero is valid.
    let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: NOTIF_RECV fills `notif`, which is of the size the ioctl encodes.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut notif,
        )
    };
    assert_eq!(rc, 0, "NOTIF_RECV: {}", std::io::Error::last_os_error());
    assert_eq!(notif.data.nr, libc::SYS_connect as i32);
    assert_eq!(notif.pid as i32, child.as_raw());
    // Copy the sockaddr once from the child's memory.
    // SAFETY: an all-zero sockaddr_in is valid; the kernel writes at most its size.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let len = (notif.data.args[2] as usize).min(std::mem::size_of::<libc::sockaddr_in>());
    let local = libc::iovec {
        iov_base: (&mut addr as *mut libc::sockaddr_in).cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: notif.data.args[1] as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: writes at most `len` bytes into `addr`; reading the child's
    // memory cannot harm this process.
    let copied = unsafe { libc::process_vm_readv(child.as_raw(), &local, 1, &remote, 1, 0) };
    assert_eq!(
        copied,
        len as isize,
        "process_vm_readv: {}",
        std::io::Error::last_os_error()
    );
    assert_eq!(addr.sin_family, libc::AF_INET as libc::sa_family_t);
    let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
    (
        notif,
        SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(addr.sin_port))),
    )
}

/// Answers notification `id` with `error` (a negative errno, or 0).
fn answer(listener: &OwnedFd, id: u64, error: i32) {
    let response = libc::seccomp_notif_resp {
        id,
        val: 0,
        error,
        flags: 0,
    };
    // SAFETY: NOTIF_SEND reads `response`, of the size the ioctl encodes.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &response,
        )
    };
    assert_eq!(rc, 0, "NOTIF_SEND: {}", std::io::Error::last_os_error());
}

#[test]
fn connects_leave_only_through_the_guard_and_the_supervisor_decides() {
    let peer = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = peer.local_addr().unwrap().port();
    let fixture = Fixture::new("connect", vec![port]);
    let filter = compile_for(Allowlist::Connector).unwrap();
    let (control, child) = spawn(&fixture.grants, &filter, |applied| {
        let Some(listener) = applied.connect_listener else {
            report("no listener", &[]);
            return 2;
        };
        report("listener", &[listener.as_raw_fd()]);
        // Nobody in this process may answer its own connects.
        drop(listener);
        // Granted by the supervisor: it connects and installs its socket.
        let (fd, rc) = tcp_connect(port);
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        unsafe { libc::poll(&mut poll, 1, -1) };
        let mut so_error: i32 = -1;
        let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
        // SAFETY: SO_ERROR writes one int into `so_error`.
        unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut so_error as *mut i32).cast(),
                &mut len,
            )
        };
        let hello = b"through the guard";
        // SAFETY: send from a valid buffer on the connected socket.
        unsafe { libc::send(fd, hello.as_ptr().cast(), hello.len(), libc::MSG_NOSIGNAL) };
        let mut reply = [0u8; 64];
        poll.events = libc::POLLIN;
        // SAFETY: as above.
        unsafe { libc::poll(&mut poll, 1, -1) };
        // SAFETY: recv into `reply`, within its length.
        let n = unsafe { libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0) };
        let reply = String::from_utf8_lossy(&reply[..n.max(0) as usize]).into_owned();
        report(
            &format!("granted: connect={rc} so_error={so_error} reply={reply}"),
            &[],
        );
        // Refused by the supervisor.
        let (_, rc) = tcp_connect(port);
        report(&format!("refused: connect={rc}"), &[]);
        0
    });
    expect_sandboxed(&control);
    let (text, mut listeners) = recv(&control);
    assert_eq!(text, b"listener", "{}", String::from_utf8_lossy(&text));
    let listener = listeners.pop().unwrap();

    // Granted: connect on our side, install over the child's socket, answer
    // EINPROGRESS as a non-blocking connect would.
    let (notif, addr) = next_connect(&listener, child);
    assert_eq!(addr, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let ours = std::net::TcpStream::connect(addr).unwrap();
    let addfd = libc::seccomp_notif_addfd {
        id: notif.id,
        flags: libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
        srcfd: ours.as_raw_fd() as u32,
        newfd: notif.data.args[0] as u32,
        newfd_flags: libc::O_CLOEXEC as u32,
    };
    // SAFETY: NOTIF_ADDFD reads `addfd`, of the size the ioctl encodes.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ADDFD,
            &addfd,
        )
    };
    assert_eq!(
        rc as u64,
        notif.data.args[0],
        "NOTIF_ADDFD: {}",
        std::io::Error::last_os_error()
    );
    answer(&listener, notif.id, -libc::EINPROGRESS);
    drop(ours);
    let (mut accepted, _) = peer.accept().unwrap();
    let mut hello = [0u8; 17];
    std::io::Read::read_exact(&mut accepted, &mut hello).unwrap();
    assert_eq!(&hello, b"through the guard");
    std::io::Write::write_all(&mut accepted, b"hello from the peer").unwrap();
    assert_eq!(
        recv_text(&control),
        format!(
            "granted: connect={} so_error=0 reply=hello from the peer",
            libc::EINPROGRESS
        )
    );

    // Refused: the child sees exactly the supervisor's answer.
    let (notif, addr) = next_connect(&listener, child);
    assert_eq!(addr.port(), port);
    answer(&listener, notif.id, -libc::EACCES);
    assert_eq!(
        recv_text(&control),
        format!("refused: connect={}", libc::EACCES)
    );
    assert_eq!(exited(child), WaitStatus::Exited(child, 0));
}

#[test]
fn other_sockets_fail_with_eacces_names_resolve_from_the_hosts_file_and_the_child_lives() {
    let fixture = Fixture::new("sockets", vec![]);
    let filter = compile_for(Allowlist::Connector).unwrap();
    let (control, child) = spawn(&fixture.grants, &filter, |_applied| {
        let socket = |domain, kind, protocol| {
            // SAFETY: socket(2) with integer arguments.
            let fd = unsafe { libc::socket(domain, kind, protocol) };
            if fd >= 0 {
                // SAFETY: closing the fd just opened.
                unsafe { libc::close(fd) };
                0
            } else {
                errno()
            }
        };
        let results = [
            socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0),
            socket(libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP),
            socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0),
            socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
            socket(libc::AF_PACKET, libc::SOCK_RAW, 0),
            socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0),
        ];
        report(&format!("sockets: {results:?}"), &[]);
        // glibc's getaddrinfo: nscd and DNS fail with EACCES, /etc/hosts answers.
        use std::net::ToSocketAddrs;
        let known = "broker.test:8883"
            .to_socket_addrs()
            .map(|a| a.map(|a| a.to_string()).collect::<Vec<_>>());
        let unknown = "elsewhere.test:8883".to_socket_addrs().map(|a| a.count());
        report(
            &format!(
                "resolve: {known:?}, unknown is an error: {}",
                unknown.is_err()
            ),
            &[],
        );
        0
    });
    expect_sandboxed(&control);
    let eacces = libc::EACCES;
    assert_eq!(
        recv_text(&control),
        format!("sockets: [{eacces}, {eacces}, {eacces}, {eacces}, {eacces}, 0]")
    );
    assert_eq!(
        recv_text(&control),
        r#"resolve: Ok(["10.9.8.7:8883"]), unknown is an error: true"#
    );
    assert_eq!(exited(child), WaitStatus::Exited(child, 0));
}

#[test]
fn bind_is_refused_and_reported_by_name() {
    let fixture = Fixture::new("bind", vec![]);
    let filter = compile_for(Allowlist::Connector).unwrap();
    let (control, child) = spawn(&fixture.grants, &filter, |_applied| {
        // SAFETY: socket(2) with integer arguments.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        report(&format!("socket: {}", fd >= 0), &[]);
        let addr = sockaddr_v4(0);
        // SAFETY: `addr` is a valid sockaddr_in of the length given.
        unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        report("bind returned", &[]);
        0
    });
    expect_sandboxed(&control);
    assert_eq!(recv_text(&control), "socket: true");
    let fault: FromWorker = frame::decode(&recv(&control).0).unwrap();
    assert_eq!(
        fault,
        FromWorker::Fault(Fault {
            kind: FaultKind::Seccomp,
            message: "seccomp: denied syscall bind".into(),
        })
    );
    assert_eq!(
        exited(child),
        WaitStatus::Exited(child, sigsys::EXIT_SECCOMP)
    );
}

#[test]
fn only_granted_files_are_readable_and_etc_hosts_is_the_granted_one_in_the_child_only() {
    let fixture = Fixture::new("files", vec![]);
    let host_hosts = std::fs::read("/etc/hosts").unwrap();
    let filter = compile_for(Allowlist::Connector).unwrap();
    let ca = fixture.grants.read_files[0].clone();
    let secret = fixture.secret.clone();
    let state = fixture.grants.state_dir.clone();
    let (control, child) = spawn(&fixture.grants, &filter, move |_applied| {
        let read = |path: &std::path::Path| match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => format!("error {}", e.raw_os_error().unwrap_or(0)),
        };
        let write_granted = std::fs::OpenOptions::new().append(true).open(&ca);
        // The durable queue's calls, in the state dir.
        let queue = (|| -> std::io::Result<String> {
            std::fs::create_dir(state.join("queue"))?;
            let segment = state.join("queue/0.tmp");
            let mut file = std::fs::File::create(&segment)?;
            std::io::Write::write_all(&mut file, b"record")?;
            file.sync_all()?;
            file.sync_data()?;
            file.set_len(3)?;
            drop(file);
            std::fs::rename(&segment, state.join("queue/0"))?;
            std::fs::File::open(state.join("queue"))?.sync_all()?;
            let names = std::fs::read_dir(state.join("queue"))?.count();
            let text = std::fs::read_to_string(state.join("queue/0"))?;
            std::fs::remove_file(state.join("queue/0"))?;
            std::fs::remove_dir(state.join("queue"))?;
            Ok(format!("{names} {text}"))
        })();
        let outside_state = std::fs::write(state.join("../planted"), b"x");
        report(
            &format!(
                "granted={:?} secret={:?} passwd={:?} hosts={:?} write_granted={:?} queue={:?} outside_state={:?}",
                read(&ca),
                read(&secret),
                read(std::path::Path::new("/etc/passwd")),
                read(std::path::Path::new("/etc/hosts")),
                write_granted.map_err(|e| e.raw_os_error()).map(|_| ()),
                queue.map_err(|e| e.to_string()),
                outside_state.map_err(|e| e.raw_os_error()),
            ),
            &[],
        );
        wait_for_parent();
        0
    });
    expect_sandboxed(&control);
    let eacces = libc::EACCES;
    assert_eq!(
        recv_text(&control),
        format!(
            "granted={GRANTED:?} secret=\"error {eacces}\" passwd=\"error {eacces}\" hosts={HOSTS:?} write_granted=Err(Some({eacces})) queue=Ok(\"1 rec\") outside_state=Err(Some({eacces}))"
        )
    );
    // While the child's bind is in place, the host's /etc/hosts is as it
    // was, and no mount appeared in this namespace.
    assert_eq!(std::fs::read("/etc/hosts").unwrap(), host_hosts);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/etc/hosts")),
        "the child's bind leaked into the host: {mountinfo}"
    );
    frame::send_bytes(&control, b"done", &[]).unwrap();
    assert_eq!(exited(child), WaitStatus::Exited(child, 0));
    assert!(!fixture.dir.join("planted").exists());
}

#[test]
fn a_module_filter_is_refused_for_a_connector_before_any_step() {
    let fixture = Fixture::new("mismatch", vec![]);
    let filter = compile_for(Allowlist::Module).unwrap();
    let plan = SandboxPlan {
        cgroup_procs: Vec::new(),
        identity: None,
        max_fds: 64,
        max_threads: 8,
    };
    let runbook = Runbook {
        plan: &plan,
        profile: Profile::Connector(&fixture.grants),
        dirs: &[],
        inherited_fds: &[],
        keep_fds: &[],
        supervisor: nix::unistd::getppid(),
        inherited_namespaces: None,
        seccomp: &filter,
    };
    // Fails before step 1, so running it in the test process changes nothing.
    let error = runbook.apply().unwrap_err().to_string();
    assert!(
        error.contains("compiled from the module allowlist, the profile needs the connector one"),
        "{error}"
    );
}
