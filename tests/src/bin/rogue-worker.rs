//! A worker that breaks the control protocol, for the e2e suite
//! (`EDGEWARD_PROCESS_MODEL=exec EDGEWARD_WORKER=rogue-worker`). It
//! compiles by copying and, as a worker, sends a garbage frame instead of Hello.

use std::os::fd::{FromRawFd, OwnedFd};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fingerprint") => println!("rogue"),
        Some("compile") => {
            std::fs::copy(&args[1], &args[2]).expect("copy");
        }
        Some("serve") => {
            // SAFETY: the supervisor passes our control socket as fd 3 and
            // nothing else in this process owns it.
            let control = unsafe { OwnedFd::from_raw_fd(3) };
            let garbage = [0xffu8, 0xff, 0xff, 0xff, 0x0f, 0x42];
            nix::sys::socket::send(
                std::os::fd::AsRawFd::as_raw_fd(&control),
                &garbage,
                nix::sys::socket::MsgFlags::empty(),
            )
            .expect("send");
            // Stay alive: the supervisor must kill us.
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
        _ => std::process::exit(64),
    }
}
