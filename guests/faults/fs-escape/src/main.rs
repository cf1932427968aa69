//! Fault injection: a command module that tries to reach files outside its
//! grants (`..`, absolute paths, a symlink inside a granted dir pointing out)
//! and to change a dir granted read-only. Prints one `escape:` line per try
//! and exits 0 only when every attempt was refused.

use std::fs;
use std::io;

fn attempt(what: &str, result: io::Result<()>) -> bool {
    match result {
        Ok(()) => {
            println!("escape: {what}: SUCCEEDED");
            false
        }
        Err(e) => {
            println!("escape: {what}: refused ({e})");
            true
        }
    }
}

fn main() {
    let read = |p: &str| fs::read(p).map(|_| ());
    let results = [
        attempt("read /ro/../secret.txt", read("/ro/../secret.txt")),
        attempt("read /ro/../../etc/passwd", read("/ro/../../etc/passwd")),
        attempt("read /etc/passwd", read("/etc/passwd")),
        attempt("read /proc/self/status", read("/proc/self/status")),
        attempt(
            "read /ro/link-out (symlink to ../secret.txt)",
            read("/ro/link-out"),
        ),
        attempt(
            "read /ro/abs-link (symlink to /etc/passwd)",
            read("/ro/abs-link"),
        ),
        attempt("write /ro/new.txt", fs::write("/ro/new.txt", "x")),
        attempt(
            "append /ro/input.txt",
            fs::OpenOptions::new()
                .append(true)
                .open("/ro/input.txt")
                .map(|_| ()),
        ),
        attempt("remove /ro/input.txt", fs::remove_file("/ro/input.txt")),
        attempt("mkdir /ro/sub", fs::create_dir("/ro/sub")),
        attempt(
            "rename /ro/input.txt",
            fs::rename("/ro/input.txt", "/ro/moved.txt"),
        ),
    ];
    if results.iter().all(|refused| *refused) {
        println!("escape: all {} attempts refused", results.len());
    } else {
        std::process::exit(1);
    }
}
