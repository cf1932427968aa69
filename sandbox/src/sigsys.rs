//! Reporting a denied system call. The seccomp filter answers a call outside
//! the allowlist with `SIGSYS`. The handler looks up the call's name, sends a
//! `Fault` (`seccomp: denied syscall socket`) to the supervisor on the
//! control socket (fd 3), and `_exit`s. It runs in signal context: no
//! allocation, no locks. The message is encoded by hand into a stack buffer.
//! A unit test checks that the encoding decodes as the real message type.
//!
//! It is installed right before the filter is loaded, and the allowlist
//! refuses `rt_sigaction` for SIGSYS: nothing can replace it afterwards.

use edgeward_ipc::control::FaultKind;

use super::arch::Arch;

/// Where the control socket is once the sandbox is up (see `fds.rs` callers).
pub const CONTROL_FD: i32 = 3;

/// Exit code after a denied system call.
pub const EXIT_SECCOMP: i32 = 4;

/// Installs the handler.
pub fn install() {
    // SAFETY: a zeroed sigaction is a valid starting point; we fill in the
    // handler and flags before passing it to the kernel.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigsys as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO;
    // SAFETY: installs a handler that only calls async-signal-safe functions.
    unsafe { libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) };
}

extern "C" fn on_sigsys(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // For SIGSYS the kernel fills `_sigsys { call_addr, syscall, arch }` right
    // after the three leading ints (and padding) of siginfo_t: the syscall
    // number is the int at byte offset 24 on 64-bit Linux.
    let field = info.cast::<u8>().wrapping_add(24).cast::<i32>();
    // SAFETY: `info` points at the kernel-filled siginfo_t of this SIGSYS,
    // which is larger than 28 bytes; `field` is in bounds and aligned.
    let nr = unsafe { field.read() };
    // The kernel's names (aarch64's 79 is `newfstatat`, as on x86_64).
    let name = Arch::native()
        .and_then(|arch| arch.syscall_name(nr as u32))
        .unwrap_or("unknown");
    let mut buf = [0u8; 128];
    let len = encode_fault(name, nr, &mut buf);
    // SAFETY: write(2) is async-signal-safe and `buf[..len]` is initialised.
    // On a seqpacket socket one write is one message.
    unsafe { libc::write(CONTROL_FD, buf.as_ptr().cast(), len) };
    // SAFETY: _exit(2) is async-signal-safe and ends the process at once.
    unsafe { libc::_exit(EXIT_SECCOMP) }
}

/// Encodes `FromWorker::Fault(Fault { kind: Seccomp, message })` in postcard
/// format without allocating. The message is `seccomp: denied syscall NAME`.
/// Returns the length written.
pub fn encode_fault(name: &str, nr: i32, buf: &mut [u8; 128]) -> usize {
    // postcard: enum variant = varint index; String = varint length + bytes.
    const FROM_WORKER_FAULT: u8 = 4;
    let kind = FaultKind::Seccomp as u8;
    let mut text = [0u8; 96];
    let mut t = 0;
    for part in [b"seccomp: denied syscall ".as_slice(), name.as_bytes()] {
        for &b in part {
            if t < text.len() {
                text[t] = b;
                t += 1;
            }
        }
    }
    if name == "unknown" {
        // Add the number so the report is still actionable.
        let mut digits = [0u8; 12];
        let mut n = nr.unsigned_abs();
        let mut d = digits.len();
        loop {
            d -= 1;
            digits[d] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &b in b" #".iter().chain(&digits[d..]) {
            if t < text.len() {
                text[t] = b;
                t += 1;
            }
        }
    }
    buf[0] = FROM_WORKER_FAULT;
    buf[1] = kind;
    buf[2] = t as u8; // < 128: a one-byte varint
    buf[3..3 + t].copy_from_slice(&text[..t]);
    3 + t
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeward_ipc::control::{Fault, FromWorker};

    #[test]
    fn hand_encoded_fault_decodes_as_the_real_message() {
        let mut buf = [0u8; 128];
        let len = encode_fault("socket", 41, &mut buf);
        let decoded: FromWorker = edgeward_ipc::frame::decode(&buf[..len]).unwrap();
        assert_eq!(
            decoded,
            FromWorker::Fault(Fault {
                kind: FaultKind::Seccomp,
                message: "seccomp: denied syscall socket".into()
            })
        );
        let len = encode_fault("unknown", 999, &mut buf);
        let decoded: FromWorker = edgeward_ipc::frame::decode(&buf[..len]).unwrap();
        assert!(
            matches!(decoded, FromWorker::Fault(f) if f.message == "seccomp: denied syscall unknown #999")
        );
    }
}
