//! End to end: the demo's production line, `policies/gateway-32`
//! (docs/gateway-32.md): 32 modules in Go, C and Rust wired by channels.
//! All 32 reach `running`; readings go all the way from the simulated
//! sensors to the last stages (every subscriber handles messages, and the
//! reporter's summary counts messages from each of its upstream channels);
//! the Go AlertOnHighTemp raises an ALERT on a reading above 85.0 without
//! anyone touching the line; nothing restarts, traps or runs out of budget
//! (the two 1 ms control loops included); and a stop is clean.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgeward_tests::{guest, module, repo_root, GatewayDir};
use serde_json::Value;

/// A first start compiles 14 Go modules (seconds of CPU each) on a 2-core
/// box; later starts use the compile cache.
const START: Duration = Duration::from_secs(600);
const WAIT: Duration = Duration::from_secs(120);

/// The line's policies, copied with the layout they expect: the policy
/// directory `policies/gateway-32` two levels below a `guests/out` that
/// holds the built modules (`wasm = "../../guests/out/…"`).
struct Line {
    dir: GatewayDir,
    /// (module name, whether its policy subscribes to anything)
    modules: Vec<(String, bool)>,
}

impl Line {
    fn copy() -> Self {
        let dir = GatewayDir::new();
        let from = repo_root().join("policies/gateway-32");
        copy_dir(&from, &dir.policies().join("gateway-32"));
        let out = guest("gw_line").parent().expect("guests/out").to_path_buf();
        std::fs::create_dir(dir.dir.path().join("guests")).expect("mkdir guests");
        std::os::unix::fs::symlink(out, dir.dir.path().join("guests/out")).expect("symlink out");
        let mut modules: Vec<(String, bool)> = std::fs::read_dir(&from)
            .expect("read policies/gateway-32")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).expect("read policy");
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                // Every module of the line has the gw- prefix and its wasm.
                let wasm = text
                    .lines()
                    .find_map(|l| l.strip_prefix("wasm = \"../../guests/out/"))
                    .unwrap_or_else(|| panic!("{}: no wasm in guests/out", p.display()));
                assert!(name.starts_with("gw-"), "{name}");
                guest(wasm.split(".wasm\"").next().unwrap_or(wasm));
                let subscribes = text.lines().any(|l| l.starts_with("subscribe = ["));
                (name, subscribes)
            })
            .collect();
        modules.sort();
        assert_eq!(modules.len(), 32, "{modules:?}");
        Line { dir, modules }
    }

    fn policies(&self) -> PathBuf {
        self.dir.policies().join("gateway-32")
    }

    fn names(&self) -> Vec<&str> {
        self.modules.iter().map(|(n, _)| n.as_str()).collect()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The counts of the reporter's last summary line:
/// `summary: temp-filtered=150 stats=12 … | alarms seen 2, …`.
fn last_summary(log: &str) -> Option<(Vec<(String, u64)>, String)> {
    let line = log
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("[gw-reporter] info: summary: "))?;
    let (counts, rest) = line.split_once(" | ")?;
    let counts = counts
        .split_whitespace()
        .map(|pair| {
            let (name, n) = pair.split_once('=')?;
            Some((name.to_string(), n.parse().ok()?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((counts, rest.to_string()))
}

/// The temperatures of gw-temp-alert's ALERT lines.
fn alerts(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| l.strip_prefix("[gw-temp-alert] warn: ALERT: temperature "))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect()
}

#[test]
fn the_production_line_runs_32_modules_end_to_end_and_alerts_above_85() {
    let line = Line::copy();
    let names = line.names();
    let mut gateway = line.dir.start_on(&line.policies(), &[]);
    let status = gateway.wait_running(&names, START);
    let languages = |language: &str| {
        names
            .iter()
            .filter(|n| module(&status, n)["language"] == language)
            .count()
    };
    assert_eq!(
        (languages("go"), languages("c"), languages("rust")),
        (14, 9, 9),
        "{status}"
    );
    gateway.wait_log("all 32 module(s) ready", WAIT);

    // End to end: the reporter (the last stage) has heard from every one
    // of its upstream channels, alarms included.
    gateway.wait_for(WAIT, "a summary counting every upstream", |_| {
        last_summary(&gateway.log())
            .is_some_and(|(counts, _)| counts.len() == 9 && counts.iter().all(|(_, n)| *n > 0))
    });
    let (counts, rest) = last_summary(&gateway.log()).expect("a summary");
    assert!(rest.starts_with("alarms seen "), "{rest}");
    assert!(!rest.starts_with("alarms seen 0,"), "{counts:?} | {rest}");

    // The alarm fires on its own: the simulated barrel overheats every
    // 10 s, and the Go AlertOnHighTemp logs every reading above 85.0.
    gateway.wait_for(WAIT, "an ALERT from gw-temp-alert", |_| {
        !alerts(&gateway.log()).is_empty()
    });
    let log = gateway.log();
    let seen = alerts(&log);
    assert!(seen.iter().all(|&c| c > 85.0), "{seen:?}");
    assert!(
        log.contains("[gw-alarm-manager] warn: alarm temp-high raised"),
        "{log}"
    );

    // Every module that subscribes has handled messages (the 1 ms loops
    // their measurements, the historian the statistics, …), and every
    // module kept running: no restart, no error.
    let status = gateway.wait_for(WAIT, "messages at every subscriber", |s| {
        line.modules
            .iter()
            .filter(|(_, subscribes)| *subscribes)
            .all(|(n, _)| module(s, n)["msgs_in"].as_u64().unwrap_or(0) > 0)
    });
    for name in &names {
        let m = module(&status, name);
        assert_eq!(m["state"], "running", "{name}: {m}");
        assert_eq!(m["restarts"], 0, "{name}: {m}");
        assert_eq!(m["last_error"], Value::Null, "{name}: {m}");
    }
    // The two control loops tick every millisecond.
    for name in ["gw-pressure-pid", "gw-motor-pid"] {
        let ticks = module(&status, name)["ticks"].as_u64().unwrap_or(0);
        assert!(ticks > 1000, "{name}: {ticks} ticks");
    }
    let log = gateway.log();
    for bad in [
        "trap",
        "exceeded call budget",
        "panic",
        "memory limit",
        "out of memory",
        "restarting",
    ] {
        let found: Vec<&str> = log.lines().filter(|l| l.contains(bad)).collect();
        assert!(found.is_empty(), "{bad:?} in the log: {found:#?}");
    }

    // A stop is clean, with the final snapshots taken.
    let (code, out, err) = gateway.cli(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    let exit = gateway.wait_exit(WAIT).expect("edgeward exits");
    assert!(exit.success(), "{exit}\n{}", gateway.log());
    assert!(
        gateway
            .log()
            .contains("edgeward: all modules stopped; exiting"),
        "{}",
        gateway.log()
    );
}
