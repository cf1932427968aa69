//! A plain WASI program (`_start`) that edgeward runs as a long-lived
//! service: no SDK needed; stdout reaches the supervisor's log.

use std::time::Duration;

fn main() {
    let line = std::env::var("LINE").unwrap_or_else(|_| "?".into());
    println!("hello from a command module on line {line}");
    for n in 1.. {
        std::thread::sleep(Duration::from_secs(5));
        println!("still running ({n})");
    }
}
