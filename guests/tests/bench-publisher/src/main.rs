//! Bench publisher, a command module driven by triggers (the connectors
//! bench, `tests/src/bench_connectors.rs`). It waits on channel `go` for a
//! trigger, `CHANNEL COUNT INTERVAL_US SIZE` in ASCII (e.g. `q1 20000 0 32`),
//! then sends COUNT messages of SIZE bytes (at least 16) on CHANNEL: each
//! starts with its `now_ns` at sending (u64 LE) and its number in the burst
//! (u64 LE). INTERVAL_US 0 sends as fast as the ring takes them (`send`
//! blocks while it is full, `on_full = "block"`); otherwise each message is
//! due INTERVAL_US after the previous one, waited for by sleeping (a
//! busy-wait would take a core from the connector and the broker on a small
//! machine). It logs `publisher: go CHANNEL COUNT` on a trigger and
//! `publisher: sent COUNT on CHANNEL in T ns (F full)` after the burst, then
//! waits for the next trigger: one module serves every round of the bench.

use std::time::Duration;

/// What a trigger asks for.
struct Burst {
    channel: String,
    count: u64,
    interval_ns: u64,
    size: usize,
}

/// Parses `CHANNEL COUNT INTERVAL_US SIZE`.
fn parse(trigger: &[u8]) -> Option<Burst> {
    let text = std::str::from_utf8(trigger).ok()?;
    let mut words = text.split_whitespace();
    let channel = words.next()?.to_owned();
    let count = words.next()?.parse().ok()?;
    let interval_us: u64 = words.next()?.parse().ok()?;
    let size: usize = words.next()?.parse().ok()?;
    Some(Burst {
        channel,
        count,
        interval_ns: interval_us * 1000,
        size: size.max(16),
    })
}

/// Sends one burst; returns how often the ring was still full after
/// `send`'s wait.
fn send_burst(burst: &Burst) -> Result<u64, String> {
    let channel = edgeward::channel(&burst.channel)
        .map_err(|code| format!("channel {}: {}", burst.channel, edgeward::error::name(code)))?;
    let mut payload = vec![0u8; burst.size];
    let mut full = 0u64;
    let mut due = edgeward::now_ns();
    for seq in 0..burst.count {
        if burst.interval_ns > 0 {
            due += burst.interval_ns;
            let now = edgeward::now_ns();
            if due > now {
                std::thread::sleep(Duration::from_nanos(due - now));
            }
        }
        payload[8..16].copy_from_slice(&seq.to_le_bytes());
        loop {
            payload[..8].copy_from_slice(&edgeward::now_ns().to_le_bytes());
            match channel.send(&payload) {
                Ok(()) => break,
                Err(edgeward::error::FULL) => full += 1,
                Err(code) => {
                    return Err(format!(
                        "send on {}: {}",
                        burst.channel,
                        edgeward::error::name(code)
                    ))
                }
            }
        }
    }
    Ok(full)
}

fn main() {
    let go = edgeward::channel("go").expect("channel go granted");
    let mut buffer = Vec::new();
    loop {
        if let Err(code) = go.recv(&mut buffer) {
            edgeward::error(&format!(
                "publisher: recv on go: {}",
                edgeward::error::name(code)
            ));
            std::process::exit(1);
        }
        let Some(burst) = parse(&buffer) else {
            edgeward::warn(&format!(
                "publisher: ignored trigger {:?}: want CHANNEL COUNT INTERVAL_US SIZE",
                String::from_utf8_lossy(&buffer)
            ));
            continue;
        };
        edgeward::info(&format!("publisher: go {} {}", burst.channel, burst.count));
        let start = edgeward::now_ns();
        match send_burst(&burst) {
            Ok(full) => edgeward::info(&format!(
                "publisher: sent {} on {} in {} ns ({full} full)",
                burst.count,
                burst.channel,
                edgeward::now_ns() - start
            )),
            Err(why) => edgeward::error(&format!("publisher: {why}")),
        }
    }
}
