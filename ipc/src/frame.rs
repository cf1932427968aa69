//! One message per `SOCK_SEQPACKET` datagram, with optional file descriptors.
//!
//! Every received frame is untrusted: a frame that is truncated, carries
//! truncated ancillary data, does not decode, or has bytes left over after
//! decoding is rejected with a [`FrameError`] and its fds are closed. The
//! caller decides what a bad frame means (the supervisor kills the worker).
//!
//! A read of zero bytes without fds is either the end of the stream or a
//! zero-length datagram, which a live peer may send on `SOCK_SEQPACKET`.
//! The kernel reports both the same way, so [`recv_bytes`] then polls the
//! socket without waiting: end of stream always leaves `POLLRDHUP` set (the
//! peer's close or `shutdown(SHUT_WR)` marks our end, and the mark is never
//! cleared), a live peer never does. An empty datagram is
//! [`FrameError::Empty`], a rejected frame like any other. One that the peer
//! followed by its close before we looked is reported as
//! [`FrameError::Closed`]: the two cannot be told apart then, and either way
//! the conversation is over.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{MAX_FDS_PER_FRAME, MAX_FRAME_BYTES};

/// Why a frame could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed its end.
    #[error("peer closed the control socket")]
    Closed,
    /// Nothing to read on a non-blocking socket, or no room to send without
    /// waiting (a non-blocking socket, or [`try_send`]).
    #[error("control socket not ready: nothing to read, or no room to send without waiting")]
    WouldBlock,
    /// A zero-length datagram from a peer that is still connected (no
    /// message is empty, so this is a broken or hostile peer).
    #[error("empty frame: a peer that is still connected sent a zero-length datagram")]
    Empty,
    /// The datagram was larger than [`MAX_FRAME_BYTES`].
    #[error("frame larger than {MAX_FRAME_BYTES} bytes")]
    TooLarge,
    /// More fds arrived than the receiver accepts, or the kernel truncated them.
    #[error("frame carried too many file descriptors")]
    TooManyFds,
    /// The bytes are not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A system call failed.
    #[error("control socket: {0}")]
    Os(#[from] Errno),
    /// The message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Creates a connected `SOCK_SEQPACKET` pair, close-on-exec.
///
/// # Errors
/// The `socketpair(2)` errno (e.g. `EMFILE`).
pub fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), FrameError> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Encodes `message` and sends it as one datagram, with `fds` attached.
///
/// # Errors
/// [`FrameError::TooLarge`] if the encoding exceeds [`MAX_FRAME_BYTES`];
/// [`FrameError::Closed`] if the peer is gone; [`FrameError::WouldBlock`]
/// if a non-blocking socket is full; otherwise the errno.
pub fn send<T: Serialize>(sock: impl AsFd, message: &T, fds: &[RawFd]) -> Result<(), FrameError> {
    let bytes = postcard::to_stdvec(message).map_err(|e| FrameError::Encode(e.to_string()))?;
    send_bytes(sock, &bytes, fds)
}

/// Encodes `message` and sends it as one datagram only if the socket has
/// room for it now, whatever the socket's blocking mode (`MSG_DONTWAIT`).
/// For messages a newer one replaces or that may be dropped and counted
/// (heartbeats, log lines): a slow receiver must not stall the sender.
///
/// # Errors
/// [`FrameError::WouldBlock`] if the socket's send buffer is full (nothing
/// was sent); otherwise as [`send`].
pub fn try_send<T: Serialize>(
    sock: impl AsFd,
    message: &T,
    fds: &[RawFd],
) -> Result<(), FrameError> {
    let bytes = postcard::to_stdvec(message).map_err(|e| FrameError::Encode(e.to_string()))?;
    send_datagram(sock, &bytes, fds, MsgFlags::MSG_DONTWAIT)
}

/// Sends raw bytes as one datagram. Exposed for tests that need to send a
/// frame no well-behaved peer would produce.
///
/// # Errors
/// As [`send`].
pub fn send_bytes(sock: impl AsFd, bytes: &[u8], fds: &[RawFd]) -> Result<(), FrameError> {
    send_datagram(sock, bytes, fds, MsgFlags::empty())
}

/// Sends one datagram with `flags` (besides `MSG_NOSIGNAL`).
fn send_datagram(
    sock: impl AsFd,
    bytes: &[u8],
    fds: &[RawFd],
    flags: MsgFlags,
) -> Result<(), FrameError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge);
    }
    if fds.len() > MAX_FDS_PER_FRAME {
        return Err(FrameError::TooManyFds);
    }
    let iov = [IoSlice::new(bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(
            sock.as_fd().as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL | flags,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Err(FrameError::WouldBlock),
            Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(FrameError::Closed),
            Err(e) => return Err(FrameError::Os(e)),
        }
    }
}

/// Receives one datagram and decodes it, returning the fds that came with it.
///
/// # Errors
/// [`FrameError::Closed`] on end of stream, [`FrameError::WouldBlock`] on an
/// empty non-blocking socket, [`FrameError::Empty`] for a zero-length
/// datagram, and the rejections listed in the module docs.
pub fn recv<T: DeserializeOwned>(sock: impl AsFd) -> Result<(T, Vec<OwnedFd>), FrameError> {
    let (bytes, fds) = recv_bytes(sock)?;
    Ok((decode(&bytes)?, fds))
}

/// Decodes one message, requiring that it uses every byte.
///
/// # Errors
/// [`FrameError::Malformed`] if the bytes are not exactly one `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((message, [])) => Ok(message),
        Ok((_, rest)) => Err(FrameError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        ))),
        Err(e) => Err(FrameError::Malformed(e.to_string())),
    }
}

/// Receives one datagram without decoding it.
///
/// # Errors
/// As [`recv`], without the decoding errors.
pub fn recv_bytes(sock: impl AsFd) -> Result<(Vec<u8>, Vec<OwnedFd>), FrameError> {
    RECEIVE_BUFFER.with_borrow_mut(|buf| recv_into(sock, buf))
}

thread_local! {
    /// Where a thread receives datagrams: one byte more than the limit, so
    /// an oversized frame is seen as truncated. Made (and zeroed) once per
    /// thread, not per call: most calls on a non-blocking socket find
    /// nothing, and zeroing 64 KiB for each cost the supervisor about 2 ms
    /// of CPU in a 32-module start.
    static RECEIVE_BUFFER: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(vec![0u8; MAX_FRAME_BYTES + 1]);
}

fn recv_into(sock: impl AsFd, buf: &mut [u8]) -> Result<(Vec<u8>, Vec<OwnedFd>), FrameError> {
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS_PER_FRAME]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<()>(
            sock.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Err(FrameError::WouldBlock),
            Err(Errno::ECONNRESET) => return Err(FrameError::Closed),
            Err(e) => return Err(FrameError::Os(e)),
        };
        // Take ownership of every fd first, so that any rejection below closes them.
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                for fd in raw {
                    // SAFETY: the kernel just installed `fd` in our table for this
                    // message and nothing else refers to it; we are its only owner.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) || fds.len() > MAX_FDS_PER_FRAME {
            return Err(FrameError::TooManyFds);
        }
        if msg.flags.contains(MsgFlags::MSG_TRUNC) || msg.bytes > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge);
        }
        let len = msg.bytes;
        if len == 0 && fds.is_empty() {
            return Err(if peer_hung_up(&sock)? {
                FrameError::Closed
            } else {
                FrameError::Empty
            });
        }
        return Ok((buf[..len].to_vec(), fds));
    }
}

/// Whether the peer closed or shut down its sending side: `POLLRDHUP` (or
/// `POLLHUP`) on our end, read without waiting. The kernel sets it for a
/// Unix socket when the peer's close or `shutdown(SHUT_WR)` marks our end
/// `RCV_SHUTDOWN`, and never clears it.
fn peer_hung_up(sock: &impl AsFd) -> Result<bool, FrameError> {
    // nix's PollFlags has no POLLRDHUP, hence libc directly.
    let mut pollfd = nix::libc::pollfd {
        fd: sock.as_fd().as_raw_fd(),
        events: nix::libc::POLLRDHUP,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd for the duration of the call, whose fd
        // is borrowed from `sock`; a zero timeout never blocks.
        let rc = unsafe { nix::libc::poll(&mut pollfd, 1, 0) };
        if rc >= 0 {
            return Ok(pollfd.revents & (nix::libc::POLLRDHUP | nix::libc::POLLHUP) != 0);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(FrameError::Os(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{DirGrant, Fault, FaultKind, FromWorker, Init, LogLevel, ToWorker};
    use crate::zygote::{FromZygote, ToZygote};
    use crate::PROTOCOL_VERSION;
    use std::io::{Read, Write};

    fn sample_init() -> Init {
        Init {
            protocol_version: PROTOCOL_VERSION,
            module: "temp-alert".into(),
            artifact: "/var/lib/edgeward/cache/ab.cwasm".into(),
            args: vec!["--threshold".into(), "85".into()],
            env: vec![("LINE".into(), "3".into())],
            dirs: vec![DirGrant {
                host: "/srv/data".into(),
                guest: "/data".into(),
                writable: false,
                passed: false,
            }],
            memory_limit_bytes: 32 << 20,
            tick_us: 1000,
            call_budget_ms: 20,
            sandbox: crate::control::SandboxPlan {
                cgroup_procs: vec!["/sys/fs/cgroup/edgeward/temp-alert/cgroup.procs".into()],
                identity: Some((60001, 60001)),
                max_fds: 64,
                max_threads: 8,
            },
            channels: vec![],
            on_full: crate::control::OnFull::Block,
            max_message_bytes: 16384,
            spin_us: 0,
            restore: None,
            stdin: false,
            connector: None,
        }
    }

    #[test]
    fn every_control_message_round_trips() {
        let (a, b) = seqpacket_pair().unwrap();
        let to_worker = [ToWorker::Init(Box::new(sample_init())), ToWorker::Stop];
        for m in &to_worker {
            send(&a, m, &[]).unwrap();
            let (got, fds): (ToWorker, _) = recv(&b).unwrap();
            assert_eq!(&got, m);
            assert!(fds.is_empty());
        }
        let from_worker = [
            FromWorker::Hello {
                protocol_version: PROTOCOL_VERSION,
                pid: 42,
            },
            FromWorker::Ready {
                kind: crate::control::ModuleKind::Reactor,
                degraded: vec!["landlock: not supported by this kernel".into()],
                snapshots: true,
            },
            FromWorker::SnapshotData(vec![1, 2, 3]),
            FromWorker::Log {
                level: LogLevel::Warn,
                text: "high temperature: 91.5".into(),
            },
            FromWorker::Fault(Fault {
                kind: FaultKind::Trap,
                message: "trap: unreachable".into(),
            }),
        ];
        for m in &from_worker {
            send(&b, m, &[]).unwrap();
            let (got, _): (FromWorker, _) = recv(&a).unwrap();
            assert_eq!(&got, m);
        }
        let z = [
            FromZygote::Hello {
                protocol_version: 1,
                engine_fingerprint: "abc".into(),
            },
            FromZygote::Spawned {
                request: 3,
                pid: 7,
                placement: crate::zygote::Placement::Joins {
                    why: "cgroup v1".into(),
                },
            },
        ];
        for m in &z {
            send(&a, m, &[]).unwrap();
            let (got, _): (FromZygote, _) = recv(&b).unwrap();
            assert_eq!(&got, m);
        }
    }

    #[test]
    fn fds_travel_with_the_message() {
        let (a, b) = seqpacket_pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        send(
            &a,
            &ToZygote::Spawn {
                request: 9,
                module: "counter".into(),
                artifact: "/a.cwasm".into(),
                cgroup_procs: vec!["/sys/fs/cgroup/m/cgroup.procs".into()],
            },
            &[w.as_raw_fd()],
        )
        .unwrap();
        drop(w);
        let (msg, mut fds): (ToZygote, _) = recv(&b).unwrap();
        assert_eq!(
            msg,
            ToZygote::Spawn {
                request: 9,
                module: "counter".into(),
                artifact: "/a.cwasm".into(),
                cgroup_procs: vec!["/sys/fs/cgroup/m/cgroup.procs".into()],
            }
        );
        assert_eq!(fds.len(), 1);
        let mut writer = std::fs::File::from(fds.pop().unwrap());
        writer.write_all(b"hi").unwrap();
        drop(writer);
        let mut got = String::new();
        std::fs::File::from(r).read_to_string(&mut got).unwrap();
        assert_eq!(got, "hi");
    }

    #[test]
    fn garbage_frames_are_rejected() {
        let (a, b) = seqpacket_pair().unwrap();
        // An enum tag no message has.
        send_bytes(&a, &[0xff, 0xff, 0xff, 0x0f], &[]).unwrap();
        assert!(matches!(
            recv::<FromWorker>(&b),
            Err(FrameError::Malformed(_))
        ));
        // A valid message followed by junk.
        let mut bytes = postcard::to_stdvec(&ToWorker::Stop).unwrap();
        bytes.push(7);
        send_bytes(&a, &bytes, &[]).unwrap();
        assert!(matches!(
            recv::<ToWorker>(&b),
            Err(FrameError::Malformed(_))
        ));
        // A string length pointing past the end.
        send_bytes(&a, &[2, 0xff, 0x7f, b'x'], &[]).unwrap();
        assert!(matches!(
            recv::<FromWorker>(&b),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_frames_are_refused_both_ways() {
        let (a, b) = seqpacket_pair().unwrap();
        let big = vec![0u8; MAX_FRAME_BYTES + 1];
        assert!(matches!(
            send_bytes(&a, &big, &[]),
            Err(FrameError::TooLarge)
        ));
        // A peer that bypasses our sender: write the datagram directly.
        let raw = nix::sys::socket::send(a.as_raw_fd(), &big, MsgFlags::empty());
        if raw.is_ok() {
            assert!(matches!(recv::<ToWorker>(&b), Err(FrameError::TooLarge)));
        }
    }

    #[test]
    fn an_empty_datagram_from_a_live_peer_is_not_end_of_file() {
        let (a, b) = seqpacket_pair().unwrap();
        send_bytes(&a, &[], &[]).unwrap();
        assert!(matches!(recv::<ToWorker>(&b), Err(FrameError::Empty)));
        // The peer is still there: what it sends next arrives.
        send(&a, &ToWorker::Stop, &[]).unwrap();
        assert!(matches!(recv::<ToWorker>(&b), Ok((ToWorker::Stop, _))));
    }

    #[test]
    fn a_peer_that_only_shut_down_its_sending_side_is_closed() {
        let (a, b) = seqpacket_pair().unwrap();
        nix::sys::socket::shutdown(a.as_raw_fd(), nix::sys::socket::Shutdown::Write).unwrap();
        assert!(matches!(recv::<ToWorker>(&b), Err(FrameError::Closed)));
    }

    #[test]
    fn an_empty_datagram_followed_by_a_close_reads_as_closed() {
        // Documented limit: once the peer is gone, its last empty datagram
        // and the end of the stream look the same; both end the conversation.
        let (a, b) = seqpacket_pair().unwrap();
        send_bytes(&a, &[], &[]).unwrap();
        drop(a);
        assert!(matches!(recv::<ToWorker>(&b), Err(FrameError::Closed)));
        assert!(matches!(recv::<ToWorker>(&b), Err(FrameError::Closed)));
    }

    #[test]
    fn try_send_refuses_to_wait_on_a_full_socket() {
        let (a, b) = seqpacket_pair().unwrap();
        let line = FromWorker::Log {
            level: LogLevel::Info,
            text: "x".repeat(1000),
        };
        // The default send buffer holds a few hundred such frames; a blocking
        // send would hang here once it is full.
        let mut sent = 0;
        let full = loop {
            match try_send(&a, &line, &[]) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 100_000, "the socket never filled up");
        };
        assert!(matches!(full, FrameError::WouldBlock), "{full}");
        assert!(sent > 0);
        // Every frame that was accepted arrives whole; reading makes room.
        let (got, _): (FromWorker, _) = recv(&b).unwrap();
        assert_eq!(got, line);
        try_send(&a, &line, &[]).unwrap();
        drop(a);
        let mut received = 1;
        while let Ok((got, _)) = recv::<FromWorker>(&b) {
            assert_eq!(got, line);
            received += 1;
        }
        assert_eq!(received, sent + 1);
    }

    #[test]
    fn try_send_to_a_closed_peer_is_closed() {
        let (a, b) = seqpacket_pair().unwrap();
        drop(b);
        assert!(matches!(
            try_send(&a, &ToWorker::Stop, &[]),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn closed_peer_is_reported() {
        let (a, b) = seqpacket_pair().unwrap();
        drop(a);
        assert!(matches!(recv::<ToWorker>(&b), Err(FrameError::Closed)));
        assert!(matches!(
            send(&b, &ToWorker::Stop, &[]),
            Err(FrameError::Closed)
        ));
    }
}
