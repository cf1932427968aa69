//! A command module that keeps a count across restarts: it counts once per
//! millisecond, hands its state to edgeward with `snapshot::put` every 10
//! counts, and starts from `snapshot::restored()`. The state is the count
//! followed by `--kib N` KiB (default 0) of bytes derived from it, checked
//! on restore. Logs `count=N` every `--every` counts (default 100).

use std::time::Duration;

use edgeward::Message;

fn pattern(count: u64, i: usize) -> u8 {
    (count as usize)
        .wrapping_mul(7)
        .wrapping_add(i.wrapping_mul(31)) as u8
}

fn state(count: u64, kib: usize) -> Vec<u8> {
    let mut state = count.to_bytes();
    state.extend((0..kib * 1024).map(|i| pattern(count, i)));
    state
}

fn restore() -> u64 {
    let Some(state) = edgeward::snapshot::restored() else {
        return 0;
    };
    let Some(count) = u64::decode(&state[..8.min(state.len())]) else {
        edgeward::error("command-counter: restored state too short");
        return 0;
    };
    if (8..state.len()).any(|i| state[i] != pattern(count, i - 8)) {
        edgeward::error("command-counter: restored state damaged");
        return 0;
    }
    edgeward::info(&format!(
        "command-counter: restored count={count}, {} bytes verified",
        state.len()
    ));
    count
}

fn main() {
    let every: u64 = edgeward::arg("--every").unwrap_or(100);
    let kib: usize = edgeward::arg("--kib").unwrap_or(0);
    let mut count = restore();
    loop {
        std::thread::sleep(Duration::from_millis(1));
        count += 1;
        if count.is_multiple_of(10) {
            if let Err(code) = edgeward::snapshot::put(&state(count, kib)) {
                edgeward::error(&format!("command-counter: snapshot_put: {code}"));
            }
        }
        if count.is_multiple_of(every) {
            edgeward::info(&format!("count={count}"));
        }
    }
}
