//! Bench source, a command module: sends `--count` messages of `--size`
//! bytes (at least 8) on channel `bench`, each starting with `now_ns` at
//! sending. `--interval-us N` paces them (sleeping, or busy-waiting under
//! 2 ms); 0 sends flat out, retrying when the ring is full.

use std::time::Duration;

fn main() {
    let bench = edgeward::channel("bench").expect("channel bench granted");
    let count: u64 = edgeward::arg("--count").unwrap_or(100_000);
    let size: usize = edgeward::arg::<usize>("--size").unwrap_or(64).max(8);
    let interval_ns: u64 = edgeward::arg::<u64>("--interval-us").unwrap_or(0) * 1000;
    let mut payload = vec![0u8; size];
    let mut full = 0u64;
    let start = edgeward::now_ns();
    let mut next = start;
    for _ in 0..count {
        if interval_ns > 0 {
            next += interval_ns;
            let now = edgeward::now_ns();
            if next > now + 2_000_000 {
                std::thread::sleep(Duration::from_nanos(next - now - 1_000_000));
            }
            while edgeward::now_ns() < next {}
        }
        loop {
            payload[..8].copy_from_slice(&edgeward::now_ns().to_le_bytes());
            match bench.send(&payload) {
                Ok(()) => break,
                Err(edgeward::error::FULL) => full += 1,
                Err(code) => {
                    edgeward::error(&format!(
                        "source: send failed: {}",
                        edgeward::error::name(code)
                    ));
                    std::process::exit(1);
                }
            }
        }
    }
    edgeward::info(&format!(
        "source: sent {count} in {} ns ({full} full)",
        edgeward::now_ns() - start
    ));
    // Stay up so the supervisor does not count an exit; the bench stops us.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
