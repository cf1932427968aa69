//! Test guest for `edgeward exec`: an ordinary WASI preview 1 program that
//! does what its arguments say, one step each, and reports every step on
//! stdout as `step: ok …` or `step: denied (…)`:
//!
//! | argument | what it does |
//! | --- | --- |
//! | `args` | prints its arguments, argv\[0\] included |
//! | `env:KEY` | prints the variable |
//! | `stdin` | copies stdin to stdout (to its end) |
//! | `stderr:TEXT` | writes TEXT to stderr |
//! | `read:PATH` / `write:PATH` / `ls:PATH` | reads, writes (`written by exec-probe`), lists |
//! | `clocks` | wall clock after 2020 and a monotonic clock that advances over a 10 ms sleep |
//! | `random` | 32 random bytes, not all zero |
//! | `wait-stdin` | blocks until stdin has a line (so a test can look at the process) |
//! | `trap` | executes `unreachable` |
//! | `exit:N` | exits with code N |

use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime};

fn report<T: std::fmt::Display>(step: &str, result: std::io::Result<T>) {
    match result {
        Ok(v) => println!("{step}: ok {v}"),
        Err(e) => println!("{step}: denied ({e})"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    for arg in &args[1..] {
        let (step, value) = arg.split_once(':').unwrap_or((arg.as_str(), ""));
        match step {
            "args" => println!("args: ok {args:?}"),
            "env" => println!("env: ok {value}={:?}", std::env::var(value).ok()),
            "stdin" => {
                let mut text = String::new();
                report(
                    "stdin",
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .map(|_| text.trim().to_string()),
                );
            }
            "stderr" => {
                eprintln!("{value}");
            }
            "read" => report(
                arg,
                std::fs::read_to_string(value).map(|s| s.trim().to_string()),
            ),
            "write" => report(
                arg,
                std::fs::write(value, "written by exec-probe").map(|()| ""),
            ),
            "ls" => report(
                arg,
                std::fs::read_dir(value).map(|d| {
                    let mut names: Vec<String> = d
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    names.sort();
                    names.join(",")
                }),
            ),
            "clocks" => {
                let wall = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let start = Instant::now();
                std::thread::sleep(Duration::from_millis(10));
                let slept = start.elapsed();
                let ok = wall > 1_577_836_800 && slept >= Duration::from_millis(10);
                println!(
                    "clocks: {} wall={wall} slept_ms={}",
                    if ok { "ok" } else { "wrong" },
                    slept.as_millis()
                );
            }
            "random" => {
                let mut bytes = [0u8; 32];
                let got = getrandom(&mut bytes);
                let ok = got && bytes.iter().any(|&b| b != 0);
                println!("random: {}", if ok { "ok" } else { "wrong" });
            }
            "wait-stdin" => {
                println!("waiting: ok");
                std::io::stdout().flush().ok();
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
            }
            "trap" => {
                std::io::stdout().flush().ok();
                core::arch::wasm32::unreachable()
            }
            "exit" => {
                std::io::stdout().flush().ok();
                std::process::exit(value.parse().unwrap_or(1))
            }
            other => println!("{other}: unknown step"),
        }
    }
}

/// WASI `random_get`, through std's hash seed source being private: read
/// the bytes with the import directly.
fn getrandom(buf: &mut [u8]) -> bool {
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    extern "C" {
        fn random_get(buf: *mut u8, len: usize) -> u16;
    }
    // SAFETY: the import writes exactly `len` bytes into `buf`, which we
    // own mutably for the call.
    unsafe { random_get(buf.as_mut_ptr(), buf.len()) == 0 }
}
