//! Prints `ready` and sleeps forever: the idle Rust module that the bench
//! runs under both `edgeward` and `wasmtime run` to compare memory and start-up.

use std::io::Write;
use std::time::Duration;

fn main() {
    println!("ready");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
