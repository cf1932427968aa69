//! `scripts/bench gateway`: issue 13's figures for the 32-module demo
//! (`policies/gateway-32`), each with its same-run baseline and target.
//!
//! - Start-up and idle memory per language: the `start` suite's runs
//!   ([`super::LanguageStarts`]), here with their targets.
//! - `start_gateway32_ms`, `cold_start_gateway32_s`,
//!   `pss_total_gateway32_mib`: the demo itself, copied to a temporary
//!   directory (its relative `wasm` paths made absolute), warm and with an
//!   empty compile cache (`<state>/cache`).
//! - Latencies "under the full demo": the demo plus a round-trip prober
//!   (`guests/c/bench-ping` → `guests/go/bench-echo` → back), in
//!   [`ROUNDS`] rounds. In each round, with the demo running, a bare
//!   timerfd loop and a two-process futex ping-pong (`tests/src/floor.rs`)
//!   run for about a second at a time ([`WINDOWS`] times each), and the
//!   demo's figures are read for the same seconds: the control loops' tick
//!   lateness from `status` (its window is their last 1024 ticks), the
//!   round trips from the prober's log line for the window that began with
//!   the ping-pong. The baselines share the machine with the demo, so a
//!   ratio is what edgeward adds.
//! - `hog_isolation`: each round is followed by one with a CPU hog added
//!   (`guests/c/bench-hog` spinning at its `cpu_percent` quota); the
//!   control loops' tick lateness p99 with it over the same without it.
//!
//! This VM's tails swing a lot from second to second: a round's p99 is the
//! median of its windows, and a figure the median of the rounds, with
//! their range.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgeward_tests::floor::{self, Mechanism};
use edgeward_tests::{children_of, repo_root, Gateway, GatewayDir};
use serde_json::Value;

use super::{
    figure, median, memory_kib, progress, stop, timed_start_of, Figure, LanguageStarts, GO_POLICY,
};

/// Interleaved rounds (without, then with the hog) of the latency figures.
const ROUNDS: usize = 5;
/// Windows of about a second per round and figure; a round's p99 is their
/// median (a single second's p99 is the 11th worst tick of it).
const WINDOWS: usize = 3;
/// Bare-loop ticks per round: about as many as the status window holds.
const TICKS: usize = 1000;
/// The control loops' period, and the bare loop's.
const TICK: Duration = Duration::from_millis(1);
/// The prober's ping period, and the futex ping-pong's.
const PING_EVERY: Duration = Duration::from_millis(2);
/// Round trips per prober log line, and per ping-pong.
const PINGS: usize = 500;
/// After all modules are running: start-up transients leave the status
/// window (the last 1024 ticks) before anything is measured.
const WARM_UP: Duration = Duration::from_millis(1500);
/// How long the demo runs before its memory is read: its Go modules' heaps
/// grow with their garbage for seconds before their first collection.
const DEMO_SETTLE: Duration = Duration::from_secs(5);

/// The field report's figures per module (issue 13).
const SEED_START_S: [f64; 2] = [0.65, 0.84];
const SEED_MEMORY_MIB: [f64; 2] = [98.0, 215.0];
const SEED_JITTER_US: [f64; 2] = [112.0, 347.0];

/// A target: an upper bound on the value, on the ratio, or both.
struct Target {
    at_most: Option<f64>,
    ratio_at_most: Option<f64>,
}

const fn at_most(value: f64) -> Target {
    Target {
        at_most: Some(value),
        ratio_at_most: None,
    }
}

const fn ratio_at_most(ratio: f64) -> Target {
    Target {
        at_most: None,
        ratio_at_most: Some(ratio),
    }
}

impl Figure {
    /// Adds `target` in words and whether this figure meets it.
    fn with_target(mut self, target: Target) -> Self {
        let mut words = Vec::new();
        let mut met = true;
        if let Some(max) = target.at_most {
            words.push(format!("<= {max} {}", self.unit));
            met &= self.value <= max;
        }
        if let Some(max) = target.ratio_at_most {
            words.push(format!("ratio <= {max}"));
            met &= self.ratio.is_some_and(|r| r <= max);
        }
        self.target = Some(words.join(", "));
        self.met = Some(met);
        self
    }

    fn with_range(mut self, values: &[f64]) -> Self {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        self.range = Some([super::round(lo), super::round(hi)]);
        self
    }

    fn with_note(mut self, note: String) -> Self {
        self.note = Some(note);
        self
    }
}

pub(super) fn suite(json: bool, starts: &LanguageStarts) -> Vec<Figure> {
    let demo = Demo::find();
    progress(
        json,
        &format!(
            "gateway demo {} ({} modules, control loops {:?}): warm start-ups",
            demo.source.display(),
            demo.modules.len(),
            demo.control_loops
        ),
    );
    let dir = GatewayDir::new();
    demo.copy_into(&dir.policies());
    let warm = demo_start(&dir, &demo);
    progress(json, "gateway demo: start-up with an empty compile cache");
    let cold = cold_start(&dir, &demo);
    // The same directory from here on: its compile cache is warm.
    add_prober(&dir);
    let hog = dir.policies().join("bench-hog.toml");
    let mut rounds = Vec::new();
    let mut hog_rounds = Vec::new();
    for round in 1..=ROUNDS {
        progress(
            json,
            &format!(
                "full demo + prober, round {round}/{ROUNDS}: bare timerfd loop, futex ping-pong"
            ),
        );
        rounds.push(latency_round(&dir, &demo));
        progress(
            json,
            &format!("full demo + prober + CPU hog, round {round}/{ROUNDS}"),
        );
        add_hog(&dir);
        hog_rounds.push(hog_round(&dir, &demo));
        std::fs::remove_file(&hog).expect("remove the hog's policy");
    }
    figures(starts, &warm, cold, &rounds, &hog_rounds)
}

fn figures(
    starts: &LanguageStarts,
    warm: &DemoStart,
    cold_s: f64,
    rounds: &[Round],
    hog_rounds: &[HogRound],
) -> Vec<Figure> {
    let b_start = Some(("wasmtime_run_start32_ms", starts.base.start_ms));
    let b_uss = Some(("wasmtime_run_uss_kib", starts.base.uss_kib));
    let of = |f: fn(&Round) -> f64| rounds.iter().map(f).collect::<Vec<f64>>();
    let tick_p99 = of(|r| r.tick_p99_us);
    let tick_p50 = of(|r| r.tick_p50_us);
    let timer_p99 = of(|r| r.timer_p99_us);
    let timer_p50 = of(|r| r.timer_p50_us);
    let rtt_p50 = of(|r| r.rtt_p50_us);
    let rtt_p99 = of(|r| r.rtt_p99_us);
    let rtt_jitter = of(|r| r.rtt_p99_us - r.rtt_p50_us);
    let futex_p50 = of(|r| r.futex_p50_us);
    let futex_p99 = of(|r| r.futex_p99_us);
    let futex_jitter = of(|r| r.futex_p99_us - r.futex_p50_us);
    let hog_p99: Vec<f64> = hog_rounds.iter().map(|h| h.tick_p99_us).collect();
    let paired: Vec<f64> = hog_rounds
        .iter()
        .zip(rounds)
        .map(|(h, r)| h.tick_p99_us / r.tick_p99_us.max(1.0))
        .collect();
    let hog_cpu: Vec<f64> = hog_rounds.iter().map(|h| h.hog_cpu_percent).collect();
    let lost: u64 = rounds.iter().map(|r| r.pings_lost).sum();
    let med = |v: &[f64]| median(v.to_vec());
    let pss_per_module_mib = warm.pss_total_mib / warm.modules as f64;
    let jitter = med(&rtt_jitter);
    let seed = format!(
        "field report per module: start {}–{} s, memory {}–{} MiB, RTT jitter {}–{} µs; \
         edgeward: all {} modules started in {:.3} s (warm; {:.1} s cold), {:.2} MiB PSS \
         per module (whole gateway / {}), RTT jitter {:.0} µs (p99 − p50, Go ⇄ C under the demo)",
        SEED_START_S[0],
        SEED_START_S[1],
        SEED_MEMORY_MIB[0],
        SEED_MEMORY_MIB[1],
        SEED_JITTER_US[0],
        SEED_JITTER_US[1],
        warm.modules,
        warm.start_ms / 1000.0,
        cold_s,
        pss_per_module_mib,
        warm.modules,
        jitter,
    );
    let beaten = [
        warm.start_ms / 1000.0 < SEED_START_S[0],
        pss_per_module_mib < SEED_MEMORY_MIB[0],
        jitter < SEED_JITTER_US[0],
    ]
    .iter()
    .filter(|b| **b)
    .count();
    let mut figures = vec![
        figure("start32_ms", starts.rust.start_ms, "ms", b_start).with_target(Target {
            at_most: Some(40.0),
            ratio_at_most: Some(0.5),
        }),
        figure("start_gateway32_ms", warm.start_ms, "ms", b_start).with_target(at_most(100.0)),
        figure("cold_start_gateway32_s", cold_s, "s", None).with_note(
            "one start with <state>/cache emptied: every distinct wasm compiled (in parallel, \
             one `edgeward-worker compile` per CPU)"
                .into(),
        ),
        figure("uss_idle_rust_kib", starts.rust.uss_kib, "KiB", b_uss).with_target(at_most(1024.0)),
        figure("uss_idle_c_kib", starts.c.uss_kib, "KiB", b_uss).with_target(at_most(512.0)),
        figure("uss_idle_go_kib", starts.go.uss_kib, "KiB", b_uss).with_target(at_most(1536.0)),
        figure(
            "pss_total_gateway32_mib",
            warm.pss_total_mib,
            "MiB",
            Some((
                "wasmtime_run_pss_x32_mib",
                starts.base.pss_kib * 32.0 / 1024.0,
            )),
        )
        .with_target(at_most(48.0))
        .with_note(format!(
            "supervisor {:.1} + fork server {:.1} + {} workers {:.1} MiB ({}), {} s after all \
             were ready",
            warm.supervisor_pss_mib,
            warm.zygote_pss_mib,
            warm.modules,
            warm.workers_pss_mib,
            warm.per_language,
            DEMO_SETTLE.as_secs_f64()
        )),
        figure(
            "tick_lateness_p50_us",
            med(&tick_p50),
            "us",
            Some(("timerfd_loop_lateness_p50_us", med(&timer_p50))),
        )
        .with_range(&tick_p50),
        figure(
            "tick_lateness_p99_us",
            med(&tick_p99),
            "us",
            Some(("timerfd_loop_lateness_p99_us", med(&timer_p99))),
        )
        .with_range(&tick_p99)
        .with_target(ratio_at_most(2.0))
        .with_note(format!(
            "the worse of the control loops' p99 (status, last 1024 ticks) per round; \
             baseline: a bare 1 ms timerfd loop in its own process during the same second; \
             baseline range {:?}",
            range(&timer_p99)
        )),
        figure(
            "hog_tick_lateness_p99_us",
            med(&hog_p99),
            "us",
            Some(("tick_lateness_p99_us", med(&tick_p99))),
        )
        .with_range(&hog_p99)
        .with_note(format!(
            "with bench-hog (1 ms ticks spinning 10 ms, cpu_percent = 25) added; \
             it got {:.0}% of a core (range {:?})",
            med(&hog_cpu),
            range(&hog_cpu)
        )),
        figure(
            "hog_isolation",
            med(&hog_p99) / med(&tick_p99),
            "ratio",
            None,
        )
        .with_range(&paired)
        .with_target(at_most(1.10))
        .with_note(
            "the control loops' tick lateness p99 with the hog / without (medians of the \
             rounds; the range is each pair of rounds' ratio)"
                .into(),
        ),
        figure(
            "rtt_p50_us",
            med(&rtt_p50),
            "us",
            Some(("futex_round_trip_p50_us", med(&futex_p50))),
        )
        .with_range(&rtt_p50),
        figure(
            "rtt_p99_us",
            med(&rtt_p99),
            "us",
            Some(("futex_round_trip_p99_us", med(&futex_p99))),
        )
        .with_range(&rtt_p99)
        .with_target(ratio_at_most(2.0))
        .with_note(format!(
            "C bench-ping → Go bench-echo → back every {} ms, {PINGS} per round \
             ({lost} lost in all); baseline: a futex ping-pong between two processes at \
             the same pace during the same second; baseline range {:?}",
            PING_EVERY.as_millis(),
            range(&futex_p99)
        )),
        figure(
            "rtt_jitter_us",
            jitter,
            "us",
            Some(("futex_round_trip_jitter_us", med(&futex_jitter))),
        )
        .with_range(&rtt_jitter)
        .with_note("p99 − p50 of each round".into()),
    ];
    let mut seed_line = figure("seed_table", beaten as f64, "of 3", None).with_note(seed);
    seed_line.target = Some("beats all 3 field figures".into());
    seed_line.met = Some(beaten == 3);
    figures.push(seed_line);
    figures
}

fn range(values: &[f64]) -> [f64; 2] {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    [super::round(lo), super::round(hi)]
}

/// The demo's policy directory and what the bench needs to know about it.
struct Demo {
    source: PathBuf,
    /// Module names (policy file stems).
    modules: Vec<String>,
    /// Those ticking every 1 ms (`tick_us = 1000`).
    control_loops: Vec<String>,
}

impl Demo {
    /// `policies/gateway-32`, or `$EDGEWARD_BENCH_GATEWAY` (another policy
    /// set with the same shape: some modules with `tick_us = 1000`).
    fn find() -> Self {
        let source = std::env::var_os("EDGEWARD_BENCH_GATEWAY")
            .map_or_else(|| repo_root().join("policies/gateway-32"), PathBuf::from);
        let mut modules = Vec::new();
        let mut control_loops = Vec::new();
        let entries = std::fs::read_dir(&source).unwrap_or_else(|e| {
            panic!(
                "gateway demo {}: {e} (or set EDGEWARD_BENCH_GATEWAY)",
                source.display()
            )
        });
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("policy name")
                .to_string();
            let text = std::fs::read_to_string(&path).expect("read policy");
            if text
                .lines()
                .any(|l| l.split('#').next().unwrap_or("").replace(' ', "") == "tick_us=1000")
            {
                control_loops.push(name.clone());
            }
            modules.push(name);
        }
        modules.sort();
        control_loops.sort();
        assert!(
            !control_loops.is_empty(),
            "no module of {} ticks every 1 ms (tick_us = 1000)",
            source.display()
        );
        Self {
            source,
            modules,
            control_loops,
        }
    }

    /// Copies the demo's directory tree into `policies` (a fresh state, the
    /// demo's own data dirs copied along), with every relative `wasm` path,
    /// and any `host` path leaving the tree, made absolute.
    fn copy_into(&self, policies: &Path) {
        copy_tree(&self.source, policies, &self.source);
    }
}

fn copy_tree(from: &Path, to: &Path, root: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &target, root);
        } else if path.extension().is_some_and(|e| e == "toml") && from == root {
            let text = std::fs::read_to_string(&path).expect("read policy");
            std::fs::write(&target, absolute_paths(&text, root)).expect("write policy");
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// `text` with the values of `wasm = "REL"` and `host = "../REL"` made
/// absolute against `dir` (the copy sits elsewhere).
fn absolute_paths(text: &str, dir: &Path) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut line = line.to_string();
        for key in ["wasm", "host"] {
            let needle = format!("{key} = \"");
            let mut from = 0;
            while let Some(at) = line[from..].find(&needle) {
                let start = from + at + needle.len();
                let Some(len) = line[start..].find('"') else {
                    break;
                };
                let value = &line[start..start + len];
                let relative = !value.starts_with('/');
                if relative && (key == "wasm" || value.starts_with("..")) {
                    let absolute = dir.join(value).display().to_string();
                    line.replace_range(start..start + len, &absolute);
                    from = start + absolute.len();
                } else {
                    from = start + len;
                }
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The round-trip prober: C pings on `ping`, Go echoes on `pong`.
fn add_prober(dir: &GatewayDir) {
    dir.add_policy(
        "bench-ping",
        &edgeward_tests::policy(
            "bench_ping",
            &format!(
                "[wasi]\nargs = [\"--every\", \"{PINGS}\"]\n[channels]\npublish = [\"ping\"]\n\
                 subscribe = [\"pong\"]\n[schedule]\ntick_us = {}\n[resources]\nmemory_mib = 16",
                PING_EVERY.as_micros()
            ),
        ),
    );
    dir.add_policy(
        "bench-echo",
        &edgeward_tests::policy(
            "bench_echo",
            &GO_POLICY.replace(
                "[resources]",
                "[channels]\nsubscribe = [\"ping\"]\npublish = [\"pong\"]\n[resources]",
            ),
        ),
    );
}

/// A module spinning at its CPU quota: 1 ms ticks that each spin 10 ms,
/// held to the default 25 % of a core. Its call budget allows for being
/// throttled mid-call (the budget counts wall time, the quota period is
/// 100 ms).
fn add_hog(dir: &GatewayDir) {
    dir.add_policy(
        "bench-hog",
        &edgeward_tests::policy(
            "bench_hog",
            "[wasi]\nargs = [\"--spin-ms\", \"10\"]\n[schedule]\ntick_us = 1000\n\
             [resources]\nmemory_mib = 16\ncpu_percent = 25\ncall_budget_ms = 1000",
        ),
    );
}

struct DemoStart {
    modules: usize,
    start_ms: f64,
    pss_total_mib: f64,
    supervisor_pss_mib: f64,
    zygote_pss_mib: f64,
    workers_pss_mib: f64,
    /// "Go 12 × 3.1 MiB, …": where the workers' memory goes.
    per_language: String,
}

/// Mean worker PSS per module language, in words.
fn per_language_pss(dir: &GatewayDir) -> String {
    let answer = super::control_request(&dir.control(), r#"{"cmd":"status"}"#);
    let mut by_language: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for m in answer["status"]["modules"].as_array().into_iter().flatten() {
        let Some(pid) = m["pid"].as_i64() else {
            continue;
        };
        let language = m["language"].as_str().unwrap_or("unknown").to_string();
        by_language
            .entry(language)
            .or_default()
            .push(memory_kib(pid as i32).1 / 1024.0);
    }
    by_language
        .iter()
        .map(|(language, pss)| {
            format!(
                "{language} {} x {:.2} MiB",
                pss.len(),
                pss.iter().sum::<f64>() / pss.len() as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The demo's warm start-up (median of [`super::RUNS`] after one that fills the
/// compile cache), and the gateway's whole PSS after the last.
fn demo_start(dir: &GatewayDir, demo: &Demo) -> DemoStart {
    let n = demo.modules.len();
    let (times, child) = super::warm_starts(
        |timeout| timed_start_of(dir, "zygote", n, timeout),
        Duration::from_secs(600),
    );
    std::thread::sleep(DEMO_SETTLE);
    let supervisor = child.id() as i32;
    let children = children_of(supervisor);
    let workers: Vec<i32> = children
        .iter()
        .copied()
        .filter(|p| super::comm(*p).starts_with("ew:"))
        .collect();
    let pss = |pids: &mut dyn Iterator<Item = i32>| -> f64 {
        pids.map(|p| memory_kib(p).1).sum::<f64>() / 1024.0
    };
    let supervisor_pss_mib = pss(&mut std::iter::once(supervisor));
    let zygote_pss_mib = pss(&mut children.iter().copied().filter(|p| !workers.contains(p)));
    let workers_pss_mib = pss(&mut workers.iter().copied());
    let per_language = per_language_pss(dir);
    stop(child);
    DemoStart {
        modules: n,
        start_ms: median(times),
        pss_total_mib: supervisor_pss_mib + zygote_pss_mib + workers_pss_mib,
        supervisor_pss_mib,
        zygote_pss_mib,
        workers_pss_mib,
        per_language,
    }
}

/// Seconds from `edgeward run` to all modules ready with `<state>/cache`
/// emptied first (one run: every Go module's compile takes seconds).
fn cold_start(dir: &GatewayDir, demo: &Demo) -> f64 {
    let cache = dir.state().join("cache");
    if cache.exists() {
        std::fs::remove_dir_all(&cache).expect("empty the compile cache");
    }
    let (child, took) = timed_start_of(dir, "zygote", demo.modules.len(), Duration::from_secs(600));
    stop(child);
    took.as_secs_f64()
}

/// One round's figures, µs.
struct Round {
    tick_p50_us: f64,
    tick_p99_us: f64,
    timer_p50_us: f64,
    timer_p99_us: f64,
    rtt_p50_us: f64,
    rtt_p99_us: f64,
    futex_p50_us: f64,
    futex_p99_us: f64,
    pings_lost: u64,
}

struct HogRound {
    tick_p99_us: f64,
    hog_cpu_percent: f64,
}

/// Starts the gateway in `dir` and waits until every module runs and the
/// start-up has left the status windows.
fn start_running(dir: &GatewayDir) -> Gateway {
    let gateway = dir.start();
    gateway.wait_for(Duration::from_secs(120), "every module running", |s| {
        s["modules"]
            .as_array()
            .is_some_and(|ms| ms.iter().all(|m| m["state"] == "running"))
    });
    std::thread::sleep(WARM_UP);
    gateway
}

fn stop_gateway(mut gateway: Gateway) {
    gateway.signal(nix::sys::signal::Signal::SIGTERM);
    gateway.wait_exit(Duration::from_secs(30));
}

/// The worst (largest) of the control loops' tick lateness `field`.
fn control_loops(status: &Value, demo: &Demo, field: &str) -> f64 {
    demo.control_loops
        .iter()
        .map(|name| {
            let m = edgeward_tests::module(status, name);
            m[field].as_f64().unwrap_or_else(|| {
                panic!("{name} reports no {field} (does it tick every 1 ms?): {m}")
            })
        })
        .fold(0.0, f64::max)
}

/// p50 and p99 (nearest rank) of ns samples, in µs.
fn p50_p99_us(mut ns: Vec<u64>) -> (f64, f64) {
    assert!(!ns.is_empty(), "no samples");
    ns.sort_unstable();
    let rank = |pct: usize| ns[(ns.len() * pct).div_ceil(100).clamp(1, ns.len()) - 1] as f64;
    (rank(50) / 1000.0, rank(99) / 1000.0)
}

/// The median of each column of `rows`.
fn medians<const N: usize>(rows: &[[f64; N]]) -> [f64; N] {
    std::array::from_fn(|i| median(rows.iter().map(|r| r[i]).collect()))
}

fn latency_round(dir: &GatewayDir, demo: &Demo) -> Round {
    let gateway = start_running(dir);
    let ticks: Vec<[f64; 4]> = (0..WINDOWS)
        .map(|_| {
            let (timer_p50, timer_p99) = p50_p99_us(floor::timer_lateness(TICKS, TICK));
            let status = gateway.try_status().expect("status");
            [
                control_loops(&status, demo, "tick_lateness_p50_us"),
                control_loops(&status, demo, "tick_lateness_p99_us"),
                timer_p50,
                timer_p99,
            ]
        })
        .collect();
    let [tick_p50_us, tick_p99_us, timer_p50_us, timer_p99_us] = medians(&ticks);
    // Each prober window that starts as a ping-pong starts covers its second.
    let seen = rtt_lines(&gateway).len();
    let deadline = Instant::now() + Duration::from_secs(30);
    let wait_line = |n: usize| loop {
        let lines = rtt_lines(&gateway);
        if lines.len() > n {
            return lines[n].clone();
        }
        assert!(
            Instant::now() < deadline,
            "bench-ping logged no rtt line; log:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    wait_line(seen);
    let mut pings_lost = 0;
    let rtts: Vec<[f64; 4]> = (1..=WINDOWS)
        .map(|k| {
            let (futex_p50, futex_p99) =
                p50_p99_us(floor::round_trip(Mechanism::Futex, PINGS, PING_EVERY));
            let line = wait_line(seen + k);
            pings_lost += super::number_after(&line, "lost=") as u64;
            [
                super::number_after(&line, "p50_ns=") / 1000.0,
                super::number_after(&line, "p99_ns=") / 1000.0,
                futex_p50,
                futex_p99,
            ]
        })
        .collect();
    let [rtt_p50_us, rtt_p99_us, futex_p50_us, futex_p99_us] = medians(&rtts);
    stop_gateway(gateway);
    Round {
        tick_p50_us,
        tick_p99_us,
        timer_p50_us,
        timer_p99_us,
        rtt_p50_us,
        rtt_p99_us,
        futex_p50_us,
        futex_p99_us,
        pings_lost,
    }
}

/// bench-ping's `rtt:` log lines so far.
fn rtt_lines(gateway: &Gateway) -> Vec<String> {
    gateway
        .log()
        .lines()
        .filter(|l| l.contains("rtt: n="))
        .map(str::to_string)
        .collect()
}

fn hog_round(dir: &GatewayDir, demo: &Demo) -> HogRound {
    let gateway = start_running(dir);
    let status = gateway.try_status().expect("status");
    let pid = edgeward_tests::module(&status, "bench-hog")["pid"]
        .as_i64()
        .expect("bench-hog pid") as i32;
    let (cpu_before, at) = (cpu_seconds(pid), Instant::now());
    let windows: Vec<f64> = (0..WINDOWS)
        .map(|_| {
            // As long as the other rounds' bare loop: a status window.
            std::thread::sleep(TICK * TICKS as u32);
            let status = gateway.try_status().expect("status");
            control_loops(&status, demo, "tick_lateness_p99_us")
        })
        .collect();
    let hog_cpu_percent = (cpu_seconds(pid) - cpu_before) / at.elapsed().as_secs_f64() * 100.0;
    stop_gateway(gateway);
    HogRound {
        tick_p99_us: median(windows),
        hog_cpu_percent,
    }
}

/// User + system CPU time of `pid`, seconds.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let ticks: f64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_wasm_and_outside_host_paths_become_absolute() {
        let text = "[module]\nwasm = \"../../guests/out/a.wasm\"\n\
                    [wasi]\ndirs = [{ host = \"data/x\", guest = \"/x\" }, { host = \"../d\", guest = \"/d\" }]\n";
        let out = absolute_paths(text, Path::new("/repo/policies/gw"));
        assert!(out.contains("wasm = \"/repo/policies/gw/../../guests/out/a.wasm\""));
        assert!(out.contains("host = \"data/x\""));
        assert!(out.contains("host = \"/repo/policies/gw/../d\""));
    }
}
