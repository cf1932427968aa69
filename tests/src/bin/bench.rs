//! `scripts/bench [SUITE] [--json]`: edgeward's figures beside baselines
//! measured in the same run on the same machine.
//!
//! Each figure is one line: `{"bench","value","unit","baseline","baseline_value","ratio"}`
//! with `--json`, an aligned table otherwise; a figure with a target adds
//! `"target"` (in words) and `"met"`, one taken as the median of several
//! runs adds their `"range"` (`[min, max]`), and a `"note"` says more.
//! Suites: `start` (start-up and memory of 32 modules), `ring` (the data
//! plane), `state` (snapshots: recovery time, commit latency, device
//! flushes), `gateway` (issue 13's figures for the 32-module demo,
//! `tests/src/bench_gateway.rs`), `connectors` (MQTT and Modbus connectors
//! against real peers, `tests/src/bench_connectors.rs`), `observability`
//! (tick lateness beside the metrics listener and a log flood,
//! `tests/src/bench_observability.rs`). With no suite, all run.

// Beside the library's files, not in src/bin/, where Cargo would take it
// for a binary of its own.
#[path = "../bench_connectors.rs"]
mod connectors;
#[path = "../bench_gateway.rs"]
mod gateway;
#[path = "../bench_observability.rs"]
mod observability;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edgeward_tests::{bin, children_of, guest, policy, GatewayDir};
use serde::Serialize;

/// Modules per gateway in the start suite (the field report's count).
const MODULES: usize = 32;
/// Timed start-ups per configuration (the median is reported).
const RUNS: usize = 5;
/// Idle time before memory is read, so start-up transients are gone.
const SETTLE: Duration = Duration::from_millis(1000);

#[derive(Serialize)]
struct Figure {
    bench: String,
    value: f64,
    unit: &'static str,
    baseline: Option<String>,
    baseline_value: Option<f64>,
    ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    met: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    range: Option<[f64; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

fn figure(bench: &str, value: f64, unit: &'static str, baseline: Option<(&str, f64)>) -> Figure {
    Figure {
        bench: bench.to_string(),
        value: round(value),
        unit,
        baseline: baseline.map(|(n, _)| n.to_string()),
        baseline_value: baseline.map(|(_, v)| round(v)),
        ratio: baseline.map(|(_, v)| round(value / v)),
        target: None,
        met: None,
        range: None,
        note: None,
    }
}

/// Three decimals, or four significant digits for small values (a ratio
/// like 0.0002 wake-ups per message must not print as 0).
fn round(x: f64) -> f64 {
    if x != 0.0 && x.abs() < 1.0 {
        let scale = 10f64.powi(3 - x.abs().log10().floor() as i32);
        return (x * scale).round() / scale;
    }
    (x * 1000.0).round() / 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let suites: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let all = suites.is_empty() || suites.contains(&"all");
    let mut figures = Vec::new();
    for suite in &suites {
        if ![
            "all",
            "start",
            "ring",
            "state",
            "gateway",
            "connectors",
            "observability",
        ]
        .contains(suite)
        {
            eprintln!(
                "unknown suite {suite:?}; suites: start, ring, state, gateway, connectors, \
                 observability (default: all)"
            );
            std::process::exit(2);
        }
    }
    let wants = |suite: &str| all || suites.contains(&suite);
    // Measured once for both suites that report them.
    let starts = (wants("start") || wants("gateway")).then(|| language_starts(json));
    if let Some(starts) = &starts {
        if wants("start") {
            figures.extend(start_suite(json, starts));
        }
    }
    if all || suites.contains(&"ring") {
        figures.extend(ring_suite(json));
    }
    if all || suites.contains(&"state") {
        figures.extend(state_suite(json));
    }
    if let Some(starts) = &starts {
        if wants("gateway") {
            figures.extend(gateway::suite(json, starts));
        }
    }
    if wants("connectors") {
        figures.extend(connectors::suite(json));
    }
    if wants("observability") {
        figures.extend(observability::suite(json));
    }
    for f in &figures {
        if json {
            println!("{}", serde_json::to_string(f).expect("serialize"));
        }
    }
    if !json {
        print_table(&figures);
    }
}

fn print_table(figures: &[Figure]) {
    println!(
        "{:<28} {:>12} {:<6} {:<32} {:>12} {:>8}  {:<24} {:<4}  range",
        "bench", "value", "unit", "baseline", "baseline", "ratio", "target", "met"
    );
    for f in figures {
        println!(
            "{:<28} {:>12} {:<6} {:<32} {:>12} {:>8}  {:<24} {:<4}  {}",
            f.bench,
            f.value,
            f.unit,
            f.baseline.as_deref().unwrap_or("-"),
            f.baseline_value.map_or("-".into(), |v| v.to_string()),
            f.ratio.map_or("-".into(), |v| v.to_string()),
            f.target.as_deref().unwrap_or("-"),
            f.met.map_or("-", |m| if m { "yes" } else { "NO" }),
            f.range.map_or("-".into(), |[lo, hi]| format!("{lo}..{hi}")),
        );
    }
    for f in figures {
        if let Some(note) = &f.note {
            println!("{}: {note}", f.bench);
        }
    }
}

fn progress(json: bool, what: &str) {
    if !json {
        eprintln!("bench: {what}");
    }
}

/// Start-up and idle memory of 32 copies of one module per language (fork
/// server), and the `wasmtime run` baseline: the `start` and `gateway`
/// suites both report them.
struct LanguageStarts {
    base: StartFigures,
    rust: StartFigures,
    c: StartFigures,
    go: StartFigures,
}

fn language_starts(json: bool) -> LanguageStarts {
    progress(
        json,
        "baseline: 32 `wasmtime run` of a precompiled idle Rust command",
    );
    let base = wasmtime_run_32();
    progress(json, "edgeward, fork-server workers: 32 x counter");
    let rust = gateway_32("counter", "zygote");
    progress(
        json,
        "edgeward, fork-server workers: 32 x C alert (guests/c/c-alert)",
    );
    let c = gateway_32("c_alert", "zygote");
    progress(
        json,
        "edgeward, fork-server workers: 32 x Go alert (guests/go/go-alert)",
    );
    let go = gateway_32_with("go_alert", "zygote", GO_POLICY);
    LanguageStarts { base, rust, c, go }
}

fn start_suite(json: bool, starts: &LanguageStarts) -> Vec<Figure> {
    let LanguageStarts {
        base,
        rust: zygote,
        c,
        go,
    } = starts;
    progress(json, "edgeward, exec-per-worker: 32 x counter");
    let exec = gateway_32("counter", "exec");
    progress(json, "edgeward, fork-server workers: 32 x idle command");
    let command = gateway_32("idle_command", "zygote");
    let b_start = Some(("wasmtime_run_start32_ms", base.start_ms));
    let b_uss = Some(("wasmtime_run_uss_kib", base.uss_kib));
    let b_pss = Some(("wasmtime_run_pss_kib", base.pss_kib));
    vec![
        figure("start32_ms", zygote.start_ms, "ms", b_start),
        figure("uss_idle_rust_kib", zygote.uss_kib, "KiB", b_uss),
        figure("pss_idle_rust_kib", zygote.pss_kib, "KiB", b_pss),
        figure("start32_exec_ms", exec.start_ms, "ms", b_start),
        figure("uss_idle_rust_exec_kib", exec.uss_kib, "KiB", b_uss),
        figure("pss_idle_rust_exec_kib", exec.pss_kib, "KiB", b_pss),
        figure("start32_command_ms", command.start_ms, "ms", b_start),
        figure("uss_idle_command_kib", command.uss_kib, "KiB", b_uss),
        figure("pss_idle_command_kib", command.pss_kib, "KiB", b_pss),
        figure("start32_c_ms", c.start_ms, "ms", b_start),
        figure("uss_idle_c_kib", c.uss_kib, "KiB", b_uss),
        figure("pss_idle_c_kib", c.pss_kib, "KiB", b_pss),
        figure("start32_go_ms", go.start_ms, "ms", b_start),
        figure("uss_idle_go_kib", go.uss_kib, "KiB", b_uss),
        figure("pss_idle_go_kib", go.pss_kib, "KiB", b_pss),
        figure("zygote_uss_kib", zygote.zygote_uss_kib, "KiB", None),
        figure("supervisor_uss_kib", zygote.supervisor_uss_kib, "KiB", None),
    ]
}

struct StartFigures {
    start_ms: f64,
    uss_kib: f64,
    pss_kib: f64,
    zygote_uss_kib: f64,
    supervisor_uss_kib: f64,
}

/// Private (USS) and proportional (PSS) memory of a process, KiB.
fn memory_kib(pid: i32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    (
        field("Private_Clean:") + field("Private_Dirty:"),
        field("Pss:"),
    )
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Starts `edgeward run` on `dir` and returns it with the time from just
/// before its spawn to its "all `modules` module(s) ready" line, waiting at
/// most `timeout`.
fn timed_start_of(
    dir: &GatewayDir,
    model: &str,
    modules: usize,
    timeout: Duration,
) -> (Child, Duration) {
    let start = Instant::now();
    let mut child = Command::new(bin("edgeward"))
        .arg("run")
        .arg("--policies")
        .arg(dir.policies())
        .arg("--state")
        .arg(dir.state())
        .arg("--control")
        .arg(dir.control())
        .env("EDGEWARD_PROCESS_MODEL", model)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start edgeward");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let needle = format!("all {modules} module(s) ready");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(&needle) {
                let _ = tx.send(Instant::now());
            }
        }
    });
    let ready = rx.recv_timeout(timeout).unwrap_or_else(|_| {
        panic!(
            "edgeward did not report all modules ready within {} s",
            timeout.as_secs()
        )
    });
    (child, ready - start)
}

/// One start through `start` (given its timeout) that fills the compile
/// and page caches, then [`RUNS`] timed ones: their milliseconds, and the
/// last one's supervisor, still running.
fn warm_starts(
    start: impl Fn(Duration) -> (Child, Duration),
    first_timeout: Duration,
) -> (Vec<f64>, Child) {
    let (child, _) = start(first_timeout);
    stop(child);
    let mut times = Vec::new();
    let mut last = None;
    for run in 0..RUNS {
        let (child, took) = start(Duration::from_secs(60));
        times.push(took.as_secs_f64() * 1000.0);
        if run + 1 == RUNS {
            last = Some(child);
        } else {
            stop(child);
        }
    }
    (times, last.expect("at least one run"))
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

fn gateway_32(guest_name: &str, model: &str) -> StartFigures {
    gateway_32_with(guest_name, model, "[resources]\nmemory_mib = 16")
}

/// What a Go module's policy needs beyond the defaults (docs/guest-abi.md).
const GO_POLICY: &str =
    "[wasi]\nenv = { GOMEMLIMIT = \"48MiB\" }\n[resources]\nmemory_mib = 64\ncall_budget_ms = 100";

fn gateway_32_with(guest_name: &str, model: &str, policy_extra: &str) -> StartFigures {
    let dir = GatewayDir::new();
    for i in 0..MODULES {
        dir.add_policy(&format!("m{i:02}"), &policy(guest_name, policy_extra));
    }
    let (times, child) = warm_starts(
        |timeout| timed_start_of(&dir, model, MODULES, timeout),
        Duration::from_secs(60),
    );
    std::thread::sleep(SETTLE);
    let supervisor = child.id() as i32;
    let children = children_of(supervisor);
    let workers: Vec<i32> = children
        .iter()
        .copied()
        .filter(|p| comm(*p).starts_with("ew:"))
        .collect();
    assert_eq!(
        workers.len(),
        MODULES,
        "expected {MODULES} workers, found {children:?}"
    );
    let zygote_uss: f64 = children
        .iter()
        .filter(|p| !workers.contains(p))
        .map(|p| memory_kib(*p).0)
        .sum();
    let (uss, pss): (Vec<f64>, Vec<f64>) = workers.iter().map(|p| memory_kib(*p)).unzip();
    let figures = StartFigures {
        start_ms: median(times),
        uss_kib: mean(&uss),
        pss_kib: mean(&pss),
        zygote_uss_kib: zygote_uss,
        supervisor_uss_kib: memory_kib(supervisor).0,
    };
    stop(child);
    figures
}

fn wasmtime_cli() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGEWARD_WASMTIME") {
        return PathBuf::from(p);
    }
    let tools = std::env::var_os("EDGEWARD_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/edgeward/tools")
        });
    let path = tools.join("bin/wasmtime");
    assert!(
        path.exists(),
        "wasmtime CLI not found at {} (scripts/setup installs it; or set EDGEWARD_WASMTIME)",
        path.display()
    );
    path
}

/// The baseline: 32 `wasmtime run` processes of a precompiled idle Rust
/// command module, started together; ready when each printed `ready`.
fn wasmtime_run_32() -> StartFigures {
    let wasmtime = wasmtime_cli();
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwasm = tmp.path().join("idle.cwasm");
    let status = Command::new(&wasmtime)
        .arg("compile")
        .arg(guest("idle_command"))
        .arg("-o")
        .arg(&cwasm)
        .status()
        .expect("wasmtime compile");
    assert!(status.success(), "wasmtime compile failed");
    let mut times = Vec::new();
    let mut memory = (Vec::new(), Vec::new());
    for run in 0..=RUNS {
        let (children, took) = start_wasmtime_32(&wasmtime, &cwasm);
        if run > 0 {
            // Run 0 warms the page cache.
            times.push(took.as_secs_f64() * 1000.0);
        }
        if run == RUNS {
            std::thread::sleep(SETTLE);
            for c in &children {
                let (u, p) = memory_kib(c.id() as i32);
                memory.0.push(u);
                memory.1.push(p);
            }
        }
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    StartFigures {
        start_ms: median(times),
        uss_kib: mean(&memory.0),
        pss_kib: mean(&memory.1),
        zygote_uss_kib: 0.0,
        supervisor_uss_kib: 0.0,
    }
}

fn start_wasmtime_32(wasmtime: &Path, cwasm: &Path) -> (Vec<Child>, Duration) {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let mut children = Vec::new();
    for _ in 0..MODULES {
        let mut child = Command::new(wasmtime)
            .arg("run")
            .arg("--allow-precompiled")
            .arg(cwasm)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wasmtime run");
        let stdout = child.stdout.take().expect("stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            if BufReader::new(stdout).read_line(&mut line).is_ok() && line.starts_with("ready") {
                let _ = tx.send(Instant::now());
            }
        });
        children.push(child);
    }
    let mut last = start;
    for _ in 0..MODULES {
        last = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a wasmtime run did not print ready");
    }
    (children, last - start)
}

/// Messages per throughput run.
const RING_MESSAGES: u64 = 5_000_000;

fn ring_suite(json: bool) -> Vec<Figure> {
    progress(
        json,
        "ring: 64-byte messages between two processes, raw ring vs Unix seqpacket socket",
    );
    let ring = median((0..3).map(|_| ring_throughput(64)).collect());
    let socket = median((0..3).map(|_| socket_throughput(64)).collect());
    let mut figures = vec![figure(
        "ring_throughput_64b",
        ring,
        "msg/s",
        Some(("unix_seqpacket_throughput_64b", socket)),
    )];
    progress(
        json,
        "guest → guest through edgeward: 64-byte messages, flat out",
    );
    let (guest, wakes) = guest_throughput();
    figures.push(figure(
        "guest_throughput_64b",
        guest,
        "msg/s",
        Some(("ring_throughput_64b", ring)),
    ));
    // A socket or pipe needs one system call per message to wake or feed
    // the reader (the seqpacket baseline above does exactly that).
    figures.push(figure(
        "wake_syscalls_per_msg",
        wakes,
        "ratio",
        Some(("unix_seqpacket_syscalls_per_msg", 1.0)),
    ));
    progress(
        json,
        "floors: two-process futex and socketpair wake-ups, one way",
    );
    let futex = floor_latencies(Floor::Futex);
    let socketpair = floor_latencies(Floor::Socketpair);
    progress(
        json,
        "guest → guest hop, consumer parked, one message per ms",
    );
    let parked = hop_latencies(None);
    progress(
        json,
        "guest → guest hop, consumer wait = spin:50, one message per 20 µs",
    );
    let spin = hop_latencies(Some(50));
    figures.extend([
        figure(
            "hop_latency_p50_ns",
            parked.0,
            "ns",
            Some(("futex_wake_p50_ns", futex.0)),
        ),
        figure(
            "hop_latency_p99_ns",
            parked.1,
            "ns",
            Some(("futex_wake_p99_ns", futex.1)),
        ),
        figure(
            "socketpair_wake_p50_ns",
            socketpair.0,
            "ns",
            Some(("futex_wake_p50_ns", futex.0)),
        ),
        figure(
            "socketpair_wake_p99_ns",
            socketpair.1,
            "ns",
            Some(("futex_wake_p99_ns", futex.1)),
        ),
        figure(
            "hop_latency_spin50_p50_ns",
            spin.0,
            "ns",
            Some(("futex_wake_p50_ns", futex.0)),
        ),
        figure(
            "hop_latency_spin50_p99_ns",
            spin.1,
            "ns",
            Some(("futex_wake_p99_ns", futex.1)),
        ),
    ]);
    figures
}

/// Messages in the guest throughput run.
const GUEST_MESSAGES: u64 = 2_000_000;
/// Messages per latency run (one per pacing interval).
const HOP_MESSAGES: u64 = 3000;

/// A source → sink gateway of the bench guests; returns it and its dir.
fn source_sink(
    source_args: &str,
    sink_args: &str,
    sink_extra: &str,
) -> (GatewayDir, edgeward_tests::Gateway) {
    let dir = GatewayDir::new();
    dir.add_policy(
        "source",
        &policy(
            "bench_source",
            &format!(
                "[wasi]\nargs = [{source_args}]\n[channels]\npublish = [\"bench\"]\n[resources]\ncpu_percent = 100\n[restart]\npolicy = \"never\""
            ),
        ),
    );
    dir.add_policy(
        "sink",
        &policy(
            "bench_sink",
            &format!(
                "[wasi]\nargs = [{sink_args}]\n[channels]\nsubscribe = [\"bench\"]\ncapacity_kib = 1024\n{sink_extra}\n[resources]\ncpu_percent = 100"
            ),
        ),
    );
    let gateway = dir.start();
    (dir, gateway)
}

/// The value after `key=` in the line of `log` containing `needle`.
fn logged(gateway: &edgeward_tests::Gateway, needle: &str, timeout: Duration) -> String {
    gateway.wait_log(needle, timeout);
    let log = gateway.log();
    log.lines()
        .find(|l| l.contains(needle))
        .expect("line")
        .to_string()
}

fn number_after(line: &str, key: &str) -> f64 {
    line.split(key)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {key:?} in {line:?}"))
}

/// msgs/s from the sink's first to last arrival, and the source's wake
/// syscalls per message.
fn guest_throughput() -> (f64, f64) {
    let (_dir, gateway) = source_sink(
        &format!("\"--count\", \"{GUEST_MESSAGES}\", \"--size\", \"64\""),
        &format!("\"--count\", \"{GUEST_MESSAGES}\""),
        "",
    );
    let line = logged(&gateway, "info: sink: ", Duration::from_secs(60));
    let ns = number_after(&line, "messages in ");
    // The source's counters arrive with its next heartbeat (≤ 100 ms).
    let status = gateway.wait_for(Duration::from_secs(5), "source counters", |s| {
        edgeward_tests::module(s, "source")["msgs_out"].as_u64() == Some(GUEST_MESSAGES)
    });
    let wakes = edgeward_tests::module(&status, "source")["wakes"]
        .as_f64()
        .unwrap_or(0.0);
    (
        (GUEST_MESSAGES - 1) as f64 * 1e9 / ns,
        wakes / GUEST_MESSAGES as f64,
    )
}

/// One-way guest → guest latency (p50, p99) in ns; `spin`: the sink's
/// `wait = "spin:N"` (then messages come every 20 µs, inside the spin).
fn hop_latencies(spin: Option<u32>) -> (f64, f64) {
    let interval = if spin.is_some() { 20 } else { 1000 };
    let wait = spin.map_or(String::new(), |us| format!("wait = \"spin:{us}\""));
    let (_dir, gateway) = source_sink(
        &format!("\"--count\", \"{HOP_MESSAGES}\", \"--interval-us\", \"{interval}\""),
        &format!("\"--count\", \"{HOP_MESSAGES}\", \"--latency\""),
        &wait,
    );
    let line = logged(&gateway, "info: sink: latency", Duration::from_secs(60));
    (number_after(&line, "p50="), number_after(&line, "p99="))
}

/// A baseline wake-up mechanism between two processes.
#[derive(Clone, Copy)]
enum Floor {
    /// The waiter sleeps in `futex_wait` on a shared word.
    Futex,
    /// The waiter sleeps in `read` on a Unix socketpair.
    Socketpair,
}

/// One-way wake-up latency (p50, p99) in ns of `floor`, paced like the
/// parked hop (one message per ms, the sender busy-waiting between).
fn floor_latencies(floor: Floor) -> (f64, f64) {
    let mut latencies = edgeward_tests::floor::one_way(
        match floor {
            Floor::Futex => edgeward_tests::floor::Mechanism::Futex,
            Floor::Socketpair => edgeward_tests::floor::Mechanism::Socketpair,
        },
        HOP_MESSAGES as usize,
        Duration::from_millis(1),
    );
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64;
    (at(0.50), at(0.99))
}

/// Starts `ring-peer MODE N SIZE` with `fd` as its fd 3.
fn ring_peer(mode: &str, count: u64, size: usize, fd: std::os::fd::RawFd) -> Child {
    edgeward_tests::command_with_fds(&bin("ring-peer"), &[fd])
        .arg(mode)
        .arg(count.to_string())
        .arg(size.to_string())
        .spawn()
        .expect("start ring-peer")
}

fn ring_throughput(size: usize) -> f64 {
    use std::os::fd::AsRawFd;
    let ring = edgeward_ipc::ring::create("bench", 1 << 20, 16 << 10).expect("ring");
    let mut consumer = edgeward_ipc::ring::Consumer::attach(&ring).expect("consumer");
    let mut producer = ring_peer("flood", RING_MESSAGES, size, ring.as_raw_fd());
    let mut received = 0u64;
    let mut start = None;
    // The worker's path: header checked, payload copied once into a
    // reused buffer and CRC-checked there, then committed.
    let mut buffer = vec![0u8; 16 << 10];
    while received < RING_MESSAGES {
        match consumer.next_frame().expect("ring corrupt") {
            Some(pending) => {
                start.get_or_insert_with(Instant::now);
                consumer
                    .read_payload(&pending, &mut buffer[..pending.len])
                    .expect("ring corrupt");
                consumer.commit_pending(&pending);
                received += 1;
            }
            None => std::hint::spin_loop(),
        }
    }
    let elapsed = start.expect("received").elapsed().as_secs_f64();
    let _ = producer.wait();
    (RING_MESSAGES - 1) as f64 / elapsed
}

fn socket_throughput(size: usize) -> f64 {
    use std::os::fd::AsRawFd;
    let count = RING_MESSAGES / 10;
    let (ours, theirs) = edgeward_ipc::frame::seqpacket_pair().expect("socketpair");
    let mut producer = ring_peer("sockflood", count, size, theirs.as_raw_fd());
    drop(theirs);
    let mut buf = vec![0u8; size + 1];
    let mut start = None;
    for _ in 0..count {
        let n = nix::sys::socket::recv(
            ours.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::empty(),
        )
        .expect("recv");
        assert_eq!(n, size);
        start.get_or_insert_with(Instant::now);
    }
    let elapsed = start.expect("received").elapsed().as_secs_f64();
    let _ = producer.wait();
    (count - 1) as f64 / elapsed
}

/// Percentile `q` (0..=1) of `values` (sorted here).
fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// One request on the control socket, raw (no CLI process in the timing).
fn control_request(socket: &Path, json: &str) -> serde_json::Value {
    use std::io::Write;
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("control socket");
    stream
        .write_all(format!("{json}\n").as_bytes())
        .expect("request");
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("answer");
    serde_json::from_str(&line).expect("json answer")
}

fn state_suite(json: bool) -> Vec<Figure> {
    progress(
        json,
        "snapshot commit: asked to durable (rounds, and `edgeward snapshot`), vs write+fdatasync",
    );
    let (commit, command, floor) = commit_latency();
    progress(
        json,
        "device flushes: 32 modules snapshotting every 500 ms, 5 s",
    );
    let flushes = flushes_per_s_32();
    progress(
        json,
        "recovery: kill -9 of a subscriber (spare worker) to its first message with restored state, 100 kills",
    );
    let mut rto = recovery_times(true);
    progress(
        json,
        "recovery without a spare worker (the default), 100 kills",
    );
    let mut rto_cold = recovery_times(false);
    let mut spawn = fork_exec_times();
    vec![
        figure(
            "snapshot_commit_p50_us",
            commit,
            "us",
            Some(("write_fdatasync_p50_us", floor)),
        ),
        figure(
            "snapshot_command_p50_us",
            command,
            "us",
            Some(("write_fdatasync_p50_us", floor)),
        ),
        figure(
            "flushes_per_s_32",
            flushes,
            "1/s",
            Some(("per_module_file_flushes_per_s_32", 128.0)),
        ),
        figure(
            "rto_p50_ms",
            percentile(&mut rto, 0.5),
            "ms",
            Some(("fork_exec_wait_p50_ms", percentile(&mut spawn, 0.5))),
        ),
        figure(
            "rto_p99_ms",
            percentile(&mut rto, 0.99),
            "ms",
            Some(("fork_exec_wait_p99_ms", percentile(&mut spawn, 0.99))),
        ),
        figure(
            "rto_no_spare_p50_ms",
            percentile(&mut rto_cold, 0.5),
            "ms",
            Some(("fork_exec_wait_p50_ms", percentile(&mut spawn, 0.5))),
        ),
        figure(
            "rto_no_spare_p99_ms",
            percentile(&mut rto_cold, 0.99),
            "ms",
            Some(("fork_exec_wait_p99_ms", percentile(&mut spawn, 0.99))),
        ),
    ]
}

fn counter_with_snapshots(interval_ms: u64) -> String {
    policy(
        "counter",
        &format!(
            "[wasi]\nargs = [\"--every\", \"1000000\"]\n[schedule]\ntick_us = 1000\n\
             [snapshot]\ninterval_ms = {interval_ms}\n[resources]\nmemory_mib = 16\ncpu_percent = 10"
        ),
    )
}

/// Snapshot commit latencies, µs: the p50 of periodic rounds from the
/// supervisor asking the module to durable (as `status` reports it, over
/// 256 rounds of a counter snapshotting every 10 ms); the p50 of
/// `edgeward snapshot` requests answered durable, one every 10 ms (that
/// plus the control socket's two hops); and the floor: the p50 of a raw
/// 100-byte append plus fdatasync in the same state directory, also one
/// every 10 ms. The cadence matters: on this VM a flush issued every 10 ms
/// costs about twice one issued back to back (the journal thread and the
/// virtio queue go idle in between), so the floor is measured the way the
/// store flushes.
fn commit_latency() -> (f64, f64, f64) {
    const FLUSH_CADENCE: Duration = Duration::from_millis(10);
    let dir = GatewayDir::new();
    dir.add_policy("counter", &counter_with_snapshots(10));
    let gateway = dir.start();
    gateway.wait_running(&["counter"], Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(3500));
    let round = gateway.try_status().expect("status")["snapshot_commit_p50_us"]
        .as_f64()
        .expect("snapshot_commit_p50_us in status");
    drop(gateway);
    dir.add_policy("counter", &counter_with_snapshots(0));
    let gateway = dir.start();
    gateway.wait_running(&["counter"], Duration::from_secs(30));
    let mut commits = Vec::new();
    for _ in 0..200 {
        // Let the count change, so every snapshot is new state.
        std::thread::sleep(FLUSH_CADENCE);
        let start = Instant::now();
        let answer = control_request(&dir.control(), r#"{"cmd":"snapshot","module":"counter"}"#);
        commits.push(start.elapsed().as_secs_f64() * 1e6);
        assert_eq!(answer["ok"], true, "{answer}");
    }
    drop(gateway);
    let file_path = dir.state().join("floor.bin");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file_path)
        .expect("floor file");
    let mut floors = Vec::new();
    for i in 0..200u64 {
        use std::io::Write;
        std::thread::sleep(FLUSH_CADENCE);
        let start = Instant::now();
        file.write_all(&[i as u8; 100]).expect("write");
        file.sync_data().expect("fdatasync");
        floors.push(start.elapsed().as_secs_f64() * 1e6);
    }
    (
        round,
        percentile(&mut commits, 0.5),
        percentile(&mut floors, 0.5),
    )
}

/// Device flushes per second of the snapshot store with 32 modules
/// snapshotting every 500 ms.
fn flushes_per_s_32() -> f64 {
    let dir = GatewayDir::new();
    for i in 0..MODULES {
        dir.add_policy(&format!("counter-{i:02}"), &counter_with_snapshots(500));
    }
    let gateway = dir.start();
    let names: Vec<String> = (0..MODULES).map(|i| format!("counter-{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    gateway.wait_running(&names, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1200));
    let flushes = |g: &edgeward_tests::Gateway| {
        g.try_status().expect("status")["snapshot_flushes"]
            .as_f64()
            .unwrap_or(0.0)
    };
    let (before, start) = (flushes(&gateway), Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    (flushes(&gateway) - before) / start.elapsed().as_secs_f64()
}

/// Recovery times in ms: SIGKILL of a subscriber that snapshots every
/// 10 ms, to its first message handled with its restored count (with a
/// spare worker when `spare`).
fn recovery_times(spare: bool) -> Vec<f64> {
    let dir = GatewayDir::new();
    dir.add_policy(
        "source",
        &policy(
            "bench_source",
            "[wasi]\nargs = [\"--count\", \"100000000\", \"--interval-us\", \"200\"]\n\
             [channels]\npublish = [\"bench\"]\non_full = \"drop\"\n[resources]\ncpu_percent = 100",
        ),
    );
    dir.add_policy(
        "sink",
        &policy(
            "bench_sink",
            &format!(
                "[channels]\nsubscribe = [\"bench\"]\n[snapshot]\ninterval_ms = 10\n\
                 [restart]\nbackoff_ms = [1, 1]\nintensity = {{ max = 1000, window_s = 60 }}\n\
                 spare = {spare}"
            ),
        ),
    );
    let gateway = dir.start();
    gateway.wait_running(&["source", "sink"], Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let mut rto = Vec::new();
    for round in 0..100 {
        let status = gateway.wait_for(Duration::from_secs(10), "sink running", |s| {
            edgeward_tests::module(s, "sink")["state"] == "running"
        });
        let pid = edgeward_tests::module(&status, "sink")["pid"]
            .as_i64()
            .expect("pid");
        let seen = gateway.log().matches("first message after restore").count();
        let killed_at = monotonic_ns();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill");
        let deadline = Instant::now() + Duration::from_secs(10);
        let at = loop {
            let log = gateway.log();
            if let Some(line) = log
                .lines()
                .filter(|l| l.contains("first message after restore at "))
                .nth(seen)
            {
                break number_after(line, "restore at ");
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no recovery; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        rto.push((at - killed_at as f64) / 1e6);
        // Time for the next spare to be forked and ready.
        std::thread::sleep(Duration::from_millis(30));
    }
    rto
}

/// fork + exec + wait of `/bin/true`, ms: the cost of any new process.
fn fork_exec_times() -> Vec<f64> {
    let mut spawn = Vec::new();
    for _ in 0..100 {
        let start = Instant::now();
        Command::new("/bin/true").status().expect("/bin/true");
        spawn.push(start.elapsed().as_secs_f64() * 1e3);
    }
    spawn
}
