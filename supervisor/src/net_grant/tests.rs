//! Tests of the network grants: the endpoint parser and resolver, and the
//! connect guard end to end against a real seccomp filter in a forked
//! "connector" that sits in an empty network namespace (root only).

use super::resolve::{parse_endpoint, resolve, Endpoint};
use super::*;

mod endpoints {
    use super::*;

    #[test]
    fn names_ipv4_and_bracketed_ipv6_are_accepted_with_their_port() {
        let name = parse_endpoint("broker.local:1883").unwrap();
        assert_eq!(
            name,
            Endpoint {
                written: "broker.local:1883".to_string(),
                host: "broker.local".to_string(),
                port: 1883,
            }
        );
        let v4 = parse_endpoint("10.0.0.5:502").unwrap();
        assert_eq!((v4.host.as_str(), v4.port), ("10.0.0.5", 502));
        let v6 = parse_endpoint("[::1]:4840").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 4840));
        let underscored = parse_endpoint("plc_7.site-a:502").unwrap();
        assert_eq!(underscored.host, "plc_7.site-a");
    }

    #[test]
    fn malformed_endpoints_are_refused_with_the_expected_form() {
        for (written, why) in [
            ("broker.local", "no :port"),
            ("broker.local:", "port \"\" is not a number"),
            ("broker.local:http", "port \"http\" is not a number"),
            ("broker.local:65536", "is not a number from 1 to 65535"),
            ("broker.local:0", "port 0"),
            (":502", "no host"),
            ("::1:502", "needs brackets"),
            ("[::1]", "no :port after the ]"),
            ("[::1:502", "without its closing ]"),
            ("[10.0.0.5]:502", "is not an IPv6 address"),
            ("10.0.0.256:502", "is not an IPv4 address"),
            ("evil host:502", "' ' in host name"),
            ("a#b:502", "'#' in host name"),
            ("-x.local:502", "is not a host name"),
            ("x..local:502", "is not a host name"),
        ] {
            let error = parse_endpoint(written).unwrap_err();
            assert!(error.contains(why), "{written}: {error}");
            assert!(error.contains("expected host:port"), "{written}: {error}");
        }
    }
}

mod grants {
    use super::*;

    fn resolved(written: &[&str]) -> ResolvedGrants {
        let endpoints: Vec<Endpoint> = written.iter().map(|w| parse_endpoint(w).unwrap()).collect();
        resolve(&endpoints).unwrap()
    }

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn literals_allow_their_exact_address_and_port_only() {
        let grants = resolved(&["10.0.0.5:502", "[fd00::5]:4840"]);
        assert!(grants.allows(&at("10.0.0.5:502")));
        assert!(!grants.allows(&at("10.0.0.5:503")));
        assert!(!grants.allows(&at("10.0.0.6:502")));
        assert!(grants.allows(&at("[fd00::5]:4840")));
        assert!(!grants.allows(&at("[fd00::6]:4840")));
        // An IPv4-mapped IPv6 address reaches the IPv4 host: same grant.
        assert!(grants.allows(&at("[::ffff:10.0.0.5]:502")));
        assert!(!grants.allows(&at("[::ffff:10.0.0.6]:502")));
        assert_eq!(grants.ports(), vec![502, 4840]);
        // Literals need no name lines.
        assert!(!grants.hosts_file().contains("10.0.0.5"));
        assert!(!grants.hosts_file().contains("localhost"));
    }

    #[test]
    fn localhost_resolves_as_the_host_says_and_gets_its_hosts_lines() {
        let grants = resolved(&["localhost:1883"]);
        let host: Vec<std::net::SocketAddr> =
            std::net::ToSocketAddrs::to_socket_addrs("localhost:1883")
                .unwrap()
                .collect();
        for addr in &host {
            assert!(grants.allows(addr), "{addr}");
        }
        assert!(!grants.allows(&at("127.0.0.2:1883")));
        let hosts = grants.hosts_file();
        let lines: Vec<String> = hosts
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        let expected: Vec<String> = host
            .iter()
            .map(|a| format!("{} localhost", a.ip()))
            .collect();
        assert_eq!(lines, expected, "in the resolver's order");
    }

    #[test]
    fn a_name_granted_on_two_ports_has_one_line_per_address() {
        let grants = resolved(&["localhost:1883", "localhost:8883", "10.0.0.5:502"]);
        let hosts = grants.hosts_file();
        assert_eq!(hosts.matches("127.0.0.1 localhost\n").count(), 1, "{hosts}");
        assert_eq!(grants.ports(), vec![502, 1883, 8883]);
        assert!(grants.allows(&at("127.0.0.1:8883")));
        assert!(!grants.allows(&at("10.0.0.5:1883")));
    }

    #[test]
    fn a_name_that_does_not_resolve_is_an_error_naming_it() {
        // .invalid never resolves (RFC 6761).
        let endpoint = parse_endpoint("nowhere.invalid:502").unwrap();
        let error = resolve(&[endpoint]).unwrap_err();
        assert!(error.contains("\"nowhere.invalid\""), "{error}");
        assert!(error.contains("nowhere.invalid:502"), "{error}");
    }

    #[test]
    fn nothing_granted_allows_nothing() {
        let grants = resolved(&[]);
        assert!(!grants.allows(&at("127.0.0.1:80")));
        assert!(grants.ports().is_empty());
        assert!(grants.hosts_file().lines().all(|l| l.starts_with('#')));
    }
}

/// The guard against a real connector-like child process.
mod guard {
    use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
    use std::net::TcpListener;
    use std::os::fd::{AsFd, AsRawFd, FromRawFd};
    use std::thread::JoinHandle;

    use nix::poll::{poll, PollFd, PollFlags};
    use nix::sched::{unshare, CloneFlags};
    use nix::sys::signal::{kill, Signal};
    use nix::sys::socket::{
        connect, getsockopt, recv, recvmsg, send, sendmsg, socketpair, ControlMessage,
        ControlMessageOwned, MsgFlags, UnixAddr,
    };
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, read, write, ForkResult};
    use serde::{Deserialize, Serialize};

    use super::*;

    /// How long the test waits for a side that should answer at once
    /// before calling it hung (a failure, not a measurement).
    const HANG: u16 = 30_000;

    /// What the connector saw of one granted connect and exchange.
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Exchange {
        /// connect's errno (0: connected at once).
        connect: i32,
        /// SO_ERROR once writable.
        so_error: i32,
        nonblocking: bool,
        nodelay: bool,
        /// What the peer answered to "ping".
        reply: String,
    }

    /// Everything the connector saw, sent to the test as JSON.
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Report {
        /// A connect of its own before the filter (errno).
        before_filter: i32,
        granted: Exchange,
        from_thread: Exchange,
        v6: Option<Exchange>,
        ungranted_port: i32,
        other_address: i32,
        unix: i32,
        udp: i32,
        /// A step that failed before the connects, in words.
        setup: Option<String>,
    }

    fn root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        eprintln!("skipped: needs root (a network namespace and another process's memory)");
        false
    }

    /// A peer in the supervisor's network namespace: answers `count`
    /// connections' "ping" line with "pong", and gives back who it saw.
    fn peer(listener: TcpListener, count: usize) -> JoinHandle<Vec<SocketAddr>> {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..count {
                let (mut stream, from) = listener.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line).unwrap();
                assert_eq!(line, "ping\n");
                stream.write_all(b"pong\n").unwrap();
                seen.push(from);
            }
            seen
        })
    }

    /// `connect` → SECCOMP_RET_USER_NOTIF, everything else allowed, with a
    /// new listener (what `edgeward-connector` stacks on its allowlist).
    fn trap_connect() -> Result<OwnedFd, String> {
        let stmt = |code: u32, k: u32| libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        };
        let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        };
        let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
        let ret = libc::BPF_RET | libc::BPF_K;
        let mut program = Vec::new();
        if let Some(arch) = NATIVE_ARCH {
            program.push(stmt(load, 4)); // seccomp_data.arch
            program.push(jump(arch, 1, 0));
            program.push(stmt(ret, libc::SECCOMP_RET_KILL_PROCESS));
        }
        program.push(stmt(load, 0)); // seccomp_data.nr
        program.push(jump(libc::SYS_connect as u32, 0, 1));
        program.push(stmt(ret, libc::SECCOMP_RET_USER_NOTIF));
        program.push(stmt(ret, libc::SECCOMP_RET_ALLOW));
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_mut_ptr(),
        };
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
        // SAFETY: seccomp(SET_MODE_FILTER) reads the program through
        // `fprog`, which points into `program`; both outlive the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &raw const fprog,
            )
        };
        let fd = Errno::result(fd).map_err(|e| format!("seccomp: {e}"))?;
        // SAFETY: the kernel just returned this listener to us alone.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    fn errno_of(result: nix::Result<()>) -> i32 {
        match result {
            Ok(()) => 0,
            Err(e) => e as i32,
        }
    }

    /// A connect to `addr` over a socket of type `ty`, which the guard must
    /// refuse: its errno.
    fn refused(ty: SockType, addr: SocketAddr) -> i32 {
        let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
        match socket(AddressFamily::Inet, ty, flags, None) {
            Ok(s) => errno_of(notify::connect_inet(s.as_fd(), addr)),
            Err(e) => -(e as i32),
        }
    }

    /// A connect to a Unix socket path, which the guard must refuse: its errno.
    fn refused_unix(path: &str) -> i32 {
        let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
        match (
            socket(AddressFamily::Unix, SockType::Stream, flags, None),
            UnixAddr::new(path),
        ) {
            (Ok(s), Ok(addr)) => errno_of(connect(s.as_raw_fd(), &addr)),
            (Err(e), _) | (_, Err(e)) => -(e as i32),
        }
    }

    /// Connects like tokio does (non-blocking, TCP_NODELAY), waits until
    /// writable, sends "ping" and reads the answer.
    fn exchange(addr: SocketAddr) -> Exchange {
        let family = if addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let mut seen = Exchange::default();
        let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
        let s = match socket(family, SockType::Stream, flags, None) {
            Ok(s) => s,
            Err(e) => {
                seen.reply = format!("socket: {e}");
                return seen;
            }
        };
        let _ = setsockopt(&s, sockopt::TcpNoDelay, &true);
        seen.connect = errno_of(notify::connect_inet(s.as_fd(), addr));
        if seen.connect != 0 && seen.connect != libc::EINPROGRESS {
            return seen;
        }
        let mut writable = [PollFd::new(s.as_fd(), PollFlags::POLLOUT)];
        if poll(&mut writable, HANG) != Ok(1) {
            seen.reply = "never writable".to_string();
            return seen;
        }
        seen.so_error = getsockopt(&s, sockopt::SocketError).unwrap_or(-1);
        seen.nonblocking = fcntl(&s, FcntlArg::F_GETFL)
            .is_ok_and(|f| OFlag::from_bits_retain(f).contains(OFlag::O_NONBLOCK));
        seen.nodelay = getsockopt(&s, sockopt::TcpNoDelay).unwrap_or(false);
        if write(&s, b"ping\n") != Ok(5) {
            seen.reply = "write failed".to_string();
            return seen;
        }
        let mut reply = Vec::new();
        while !reply.ends_with(b"\n") {
            let mut readable = [PollFd::new(s.as_fd(), PollFlags::POLLIN)];
            if poll(&mut readable, HANG) != Ok(1) {
                break;
            }
            let mut buf = [0u8; 64];
            match read(&s, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
        seen.reply = String::from_utf8_lossy(&reply).into_owned();
        seen
    }

    /// The ports the child connects to.
    #[derive(Clone, Copy)]
    struct Ports {
        granted: u16,
        ungranted: u16,
        v6: Option<u16>,
    }

    /// The connector's side (in the forked child): empty netns, the trap,
    /// the listener to the test, then the connects.
    fn connector(to_test: RawFd, ports: Ports) -> Report {
        let mut report = Report::default();
        if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
            report.setup = Some(format!("unshare(CLONE_NEWNET): {e}"));
            return report;
        }
        let loopback = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let direct = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .and_then(|s| notify::connect_inet(s.as_fd(), loopback(ports.granted)));
        report.before_filter = errno_of(direct);
        let listener = match trap_connect() {
            Ok(listener) => listener,
            Err(e) => {
                report.setup = Some(e);
                return report;
            }
        };
        let fds = [listener.as_raw_fd()];
        let sent = sendmsg::<()>(
            to_test,
            &[IoSlice::new(b"L")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        );
        if let Err(e) = sent {
            report.setup = Some(format!("sending the listener: {e}"));
            return report;
        }
        drop(listener);

        report.granted = exchange(loopback(ports.granted));
        report.from_thread = std::thread::spawn(move || exchange(loopback(ports.granted)))
            .join()
            .unwrap_or_default();
        report.v6 = ports
            .v6
            .map(|port| exchange(SocketAddr::from((Ipv6Addr::LOCALHOST, port))));
        let inet = |ip: Ipv4Addr, port| SocketAddr::from((ip, port));
        report.ungranted_port =
            refused(SockType::Stream, inet(Ipv4Addr::LOCALHOST, ports.ungranted));
        report.other_address = refused(
            SockType::Stream,
            inet(Ipv4Addr::new(127, 0, 0, 2), ports.granted),
        );
        report.unix = refused_unix("/run/edgeward-net-grant-test.sock");
        report.udp = refused(SockType::Datagram, inet(Ipv4Addr::LOCALHOST, ports.granted));
        report
    }

    /// Forks a child running `body`, which gets one end of a seqpacket
    /// pair; returns its pid and the other end. The child sends what `body`
    /// returns, then exits when the test sends a word or closes its end.
    fn fork_connector(body: impl FnOnce(RawFd) -> Vec<u8>) -> (Pid, OwnedFd) {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        // SAFETY: the child runs only `body` and then _exits: no return
        // into the test harness. It allocates (glibc's malloc is safe after
        // fork) and never prints (another test thread may hold stdout).
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                drop(ours);
                let bytes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    body(theirs.as_raw_fd())
                }))
                .unwrap_or_else(|_| b"panicked".to_vec());
                let _ = send(theirs.as_raw_fd(), &bytes, MsgFlags::empty());
                // Until the test says so (or closes its end), to be alive
                // while the test looks at an idle listener.
                let _ = recv(theirs.as_raw_fd(), &mut [0u8; 8], MsgFlags::empty());
                // SAFETY: _exit ends the child without running the parent's
                // atexit handlers or destructors.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => (child, ours),
        }
    }

    /// Receives the listener the child sent.
    fn receive_listener(from: &OwnedFd) -> OwnedFd {
        let mut byte = [0u8; 1];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!(RawFd);
        let message = recvmsg::<()>(
            from.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .unwrap();
        for cmsg in message.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                // SAFETY: SCM_RIGHTS just gave us this descriptor.
                return unsafe { OwnedFd::from_raw_fd(fds[0]) };
            }
        }
        let text = String::from_utf8_lossy(&byte).into_owned();
        panic!("the connector sent no listener (it says {text:?})");
    }

    fn wait_readable(fd: BorrowedFd<'_>, what: &str) {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, HANG), Ok(1), "{what}: hung");
    }

    #[test]
    fn granted_connects_reach_the_peer_and_everything_else_is_refused_and_counted() {
        if !root() {
            return;
        }
        let granted = TcpListener::bind("127.0.0.1:0").unwrap();
        // Listening, so a connect that wrongly went through would succeed.
        let ungranted = TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = TcpListener::bind("[::1]:0").ok();
        let ports = Ports {
            granted: granted.local_addr().unwrap().port(),
            ungranted: ungranted.local_addr().unwrap().port(),
            v6: v6.as_ref().map(|l| l.local_addr().unwrap().port()),
        };
        let mut endpoints = vec![parse_endpoint(&format!("127.0.0.1:{}", ports.granted)).unwrap()];
        if let Some(port) = ports.v6 {
            endpoints.push(parse_endpoint(&format!("[::1]:{port}")).unwrap());
        }
        let grants = resolve(&endpoints).unwrap();
        let peer4 = peer(granted, 2);
        let peer6 = v6.map(|l| peer(l, 1));

        let (pid, channel) =
            fork_connector(|to_test| serde_json::to_vec(&connector(to_test, ports)).unwrap());
        let guard = ConnectGuard::new(receive_listener(&channel), pid, grants);
        let mut verdicts = Vec::new();
        let report: Report = loop {
            let mut fds = [
                PollFd::new(guard.fd(), PollFlags::POLLIN),
                PollFd::new(channel.as_fd(), PollFlags::POLLIN),
            ];
            assert!(poll(&mut fds, HANG).unwrap() > 0, "the connector hung");
            let [notified, reported] = fds.map(|f| f.any().unwrap_or(false));
            if reported {
                let mut buf = vec![0u8; 1 << 16];
                let n = recv(channel.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                break serde_json::from_str(&text).unwrap_or_else(|_| panic!("connector: {text}"));
            }
            if notified {
                match guard.answer_one() {
                    Ok(verdict) => verdicts.extend(verdict),
                    Err(e) => panic!("{e}, before the connector reported"),
                }
            }
        };
        assert_eq!(report.setup, None);
        // The connector's own connect has nowhere to go.
        assert_eq!(report.before_filter, libc::ENETUNREACH);

        for (what, seen) in [
            ("granted", Some(&report.granted)),
            ("from a second thread", Some(&report.from_thread)),
            ("IPv6", report.v6.as_ref()),
        ] {
            let Some(seen) = seen else { continue };
            assert!(
                seen.connect == libc::EINPROGRESS || seen.connect == 0,
                "{what}: {seen:?}"
            );
            assert_eq!(seen.so_error, 0, "{what}: {seen:?}");
            assert_eq!(seen.reply, "pong\n", "{what}: {seen:?}");
            assert!(seen.nonblocking, "{what}: O_NONBLOCK lost: {seen:?}");
            assert!(seen.nodelay, "{what}: TCP_NODELAY lost: {seen:?}");
        }
        assert_eq!(report.ungranted_port, libc::EACCES);
        assert_eq!(report.other_address, libc::EACCES);
        assert_eq!(report.unix, libc::EACCES);
        assert_eq!(report.udp, libc::EACCES);

        // The peers saw connections from their own namespace's loopback.
        let seen4 = peer4.join().unwrap();
        assert_eq!(seen4.len(), 2);
        assert!(seen4.iter().all(|a| a.ip() == Ipv4Addr::LOCALHOST));
        if let Some(peer6) = peer6 {
            assert_eq!(peer6.join().unwrap()[0].ip(), Ipv6Addr::LOCALHOST);
        }

        let granted_to: Vec<String> = verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::Granted { addr } => Some(addr.to_string()),
                _ => None,
            })
            .collect();
        let mut expected = vec![format!("127.0.0.1:{}", ports.granted); 2];
        expected.extend(ports.v6.map(|p| format!("[::1]:{p}")));
        assert_eq!(granted_to, expected);
        let denied: Vec<&str> = verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::Denied { what } => Some(what.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            denied,
            vec![
                format!("127.0.0.1:{}", ports.ungranted).as_str(),
                format!("127.0.0.2:{}", ports.granted).as_str(),
                "an AF_UNIX address",
                format!("127.0.0.1:{} over a non-TCP socket", ports.granted).as_str(),
            ]
        );
        assert!(
            !verdicts.iter().any(|v| matches!(v, Verdict::Failed { .. })),
            "{verdicts:?}"
        );

        // Nothing waits (the connector waits for the test's word to exit):
        // answering does not block.
        assert!(guard.answer_one().unwrap().is_none());
        send(channel.as_raw_fd(), b"exit", MsgFlags::empty()).unwrap();
        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 0));
        // Once the connector is gone, the guard says so.
        assert!(matches!(guard.answer_one(), Err(GuardError::Gone)));
        drop(ungranted);
    }

    #[test]
    fn a_connector_killed_in_the_middle_of_a_connect_leaves_no_hanging_guard() {
        if !root() {
            return;
        }
        let (pid, channel) = fork_connector(|to_test| {
            if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
                return format!("unshare: {e}").into_bytes();
            }
            let listener = match trap_connect() {
                Ok(listener) => listener,
                Err(e) => return e.into_bytes(),
            };
            let fds = [listener.as_raw_fd()];
            let iov = [IoSlice::new(b"L")];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            if sendmsg::<()>(to_test, &iov, &cmsg, MsgFlags::empty(), None).is_err() {
                return b"sendmsg failed".to_vec();
            }
            // Blocks until answered, which the test never does.
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
            let s = socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK,
                None,
            );
            let _ = s.map(|s| notify::connect_inet(s.as_fd(), addr));
            b"connect returned".to_vec()
        });
        let guard = ConnectGuard::new(
            receive_listener(&channel),
            pid,
            resolve(&[parse_endpoint("127.0.0.1:9").unwrap()]).unwrap(),
        );
        wait_readable(guard.fd(), "the connector's connect");
        kill(pid, Signal::SIGKILL).unwrap();
        assert_eq!(
            waitpid(pid, None).unwrap(),
            WaitStatus::Signaled(pid, Signal::SIGKILL, false)
        );
        // The notification went with its task; the listener hangs up.
        assert!(matches!(guard.answer_one(), Err(GuardError::Gone)));
    }
}
