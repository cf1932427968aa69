//! Test guest for the e2e suite: reports, one `probe:` line each, what its
//! WASI context grants (args, env, directory access), then idles.

use std::time::Duration;

fn report(what: &str, result: std::io::Result<String>) {
    match result {
        Ok(v) => println!("probe: {what}: ok {v}"),
        Err(e) => println!("probe: {what}: denied ({e})"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("probe: args={args:?}");
    let mut env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    env.sort();
    println!("probe: env={env:?}");
    report(
        "read /ro/input.txt",
        std::fs::read_to_string("/ro/input.txt").map(|s| s.trim().to_string()),
    );
    report(
        "write /ro/new.txt",
        std::fs::write("/ro/new.txt", "x").map(|()| String::new()),
    );
    report(
        "write /rw/out.txt",
        std::fs::write("/rw/out.txt", "written by the guest").map(|()| String::new()),
    );
    report(
        "read /etc/passwd",
        std::fs::read_to_string("/etc/passwd").map(|s| s.len().to_string()),
    );
    report(
        "read /ro/../secret.txt",
        std::fs::read_to_string("/ro/../secret.txt").map(|s| s.len().to_string()),
    );
    report(
        "read /ro/escape (symlink out of the grant)",
        std::fs::read_to_string("/ro/escape").map(|s| s.len().to_string()),
    );
    println!("probe: done");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
