//! End to end: what an operator watches (docs/operations.md, "Metrics
//! reference", "Log format", "Audited denials"). `--metrics` of a running
//! gateway checked by Debian's `promtool` and scraped by a real Prometheus
//! server; idle connections and a log flood that must not hold up other
//! modules' ticks; every kind of denial as one `denied` event and one
//! metric increment.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgeward_tests::{module, policy, GatewayDir};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(30);

/// The families issue 17 asks for, and those edgeward adds (the second
/// list): each must be in `/metrics` with this type.
const FAMILIES: [(&str, &str); 26] = [
    ("edgeward_build_info", "gauge"),
    ("edgeward_module_up", "gauge"),
    ("edgeward_module_state", "gauge"),
    ("edgeward_module_restarts_total", "counter"),
    ("edgeward_module_uptime_seconds", "gauge"),
    ("edgeward_module_memory_bytes", "gauge"),
    ("edgeward_module_private_memory_bytes", "gauge"),
    ("edgeward_module_cpu_seconds_total", "counter"),
    ("edgeward_module_messages_received_total", "counter"),
    ("edgeward_module_messages_sent_total", "counter"),
    ("edgeward_module_messages_dropped_total", "counter"),
    ("edgeward_ring_depth", "gauge"),
    ("edgeward_ring_corrupt_total", "counter"),
    ("edgeward_module_denials_total", "counter"),
    ("edgeward_module_traps_total", "counter"),
    ("edgeward_snapshot_epoch", "gauge"),
    ("edgeward_snapshot_age_seconds", "gauge"),
    ("edgeward_snapshot_bytes", "gauge"),
    ("edgeward_snapshot_flushes_total", "counter"),
    ("edgeward_snapshot_commit_seconds", "histogram"),
    ("edgeward_reloads_total", "counter"),
    ("edgeward_upgrades_total", "counter"),
    ("edgeward_tick_lateness_seconds", "histogram"),
    // edgeward's own additions.
    ("edgeward_module_log_lines_dropped_total", "counter"),
    ("edgeward_log_lines_dropped_total", "counter"),
    ("edgeward_metrics_view_age_seconds", "gauge"),
];

/// The example line of `policies/` (sensor → filter → alarm, counter,
/// temp-alert, hello-command) with metrics on a port the kernel picks.
fn example_gateway(g: &GatewayDir, extra_env: &[(&str, &str)]) -> edgeward_tests::Gateway {
    let policies = g.dir.path().join("example-policies");
    std::fs::create_dir(&policies).unwrap();
    let repo = edgeward_tests::repo_root();
    for entry in std::fs::read_dir(repo.join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            // Absolute wasm and data paths, so the copy runs from here;
            // the counter snapshots every 200 ms.
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("\"../", &format!("\"{}/", repo.display()))
                .replace("\"data/", &format!("\"{}/policies/data/", repo.display()));
            let text = if path.file_stem().unwrap() == "counter" {
                format!("{text}\n[snapshot]\ninterval_ms = 200\n")
            } else {
                text
            };
            std::fs::write(policies.join(path.file_name().unwrap()), text).unwrap();
        }
    }
    let mut env = vec![("EDGEWARD_METRICS", "127.0.0.1:0")];
    env.extend_from_slice(extra_env);
    g.start_on(&policies, &env)
}

/// `# TYPE` lines of an exposition: name → type.
fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

/// The value of the sample line starting with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Polls `/metrics` until `series` has a value satisfying `ok`.
fn wait_sample(
    gateway: &edgeward_tests::Gateway,
    series: &str,
    ok: impl Fn(f64) -> bool,
) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (code, text) = gateway.metrics_get("/metrics");
        assert_eq!(code, 200);
        if sample(&text, series).is_some_and(&ok) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never got there:\n{text}\nlog:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metrics_carry_every_family_and_pass_promtool() {
    let g = GatewayDir::new();
    let gateway = example_gateway(&g, &[]);
    gateway.wait_running(&["counter", "sensor", "filter", "alarm"], PATIENCE);
    // A restart asked for, to count under `requested`.
    let (code, _, err) = gateway.cli(&["restart", "counter"]);
    assert_eq!(code, 0, "{err}");
    wait_sample(
        &gateway,
        r#"edgeward_module_restarts_total{module="counter",cause="requested"}"#,
        |v| v == 1.0,
    );
    let text = wait_sample(
        &gateway,
        r#"edgeward_snapshot_epoch{module="counter"}"#,
        |v| v >= 1.0,
    );
    let found = types(&text);
    for (family, kind) in FAMILIES {
        assert_eq!(
            found.get(family).map(String::as_str),
            Some(kind),
            "{family} ({kind}) missing or mistyped in:\n{text}"
        );
    }
    for series in [
        r#"edgeward_module_up{module="sensor"} 1"#,
        r#"edgeward_module_state{module="sensor",state="running"} 1"#,
        r#"edgeward_module_state{module="sensor",state="failed"} 0"#,
        r#"edgeward_module_restarts_total{module="sensor",cause="trap"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == series),
            "no {series:?} in:\n{text}"
        );
    }
    // Live figures: memory, CPU, messages and a ring carry real numbers.
    for series in [
        r#"edgeward_module_private_memory_bytes{module="sensor"}"#,
        r#"edgeward_module_memory_bytes{module="sensor"}"#,
        r#"edgeward_module_messages_received_total{module="filter"}"#,
        r#"edgeward_snapshot_bytes{module="counter"}"#,
    ] {
        let value = sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
        assert!(value > 0.0, "{series} = {value}");
    }
    let uss = sample(
        &text,
        r#"edgeward_module_private_memory_bytes{module="sensor"}"#,
    )
    .unwrap();
    assert!(uss < 64.0 * 1024.0 * 1024.0, "USS {uss}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("edgeward_ring_depth{channel=")),
        "no ring in:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(r#"edgeward_tick_lateness_seconds_count{module="counter"}"#)),
        "no tick lateness in:\n{text}"
    );
    // Debian's promtool lints the exposition.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/setup installs it)");
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The page and its data come from the same listener.
    let (code, page) = gateway.metrics_get("/");
    assert_eq!(code, 200);
    assert!(page.contains("<table id=\"modules\">"), "{page}");
    let (code, json) = gateway.metrics_get("/status.json");
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&json).expect("status JSON");
    assert_eq!(module(&status, "sensor")["state"], "running");
    assert_eq!(gateway.metrics_get("/nothing").0, 404);
}

/// A free TCP port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_real_prometheus_scrapes_the_gateway_and_answers_a_query_for_restarts() {
    let g = GatewayDir::new();
    let gateway = example_gateway(&g, &[]);
    gateway.wait_running(&["counter"], PATIENCE);
    let target = gateway.metrics_addr(PATIENCE);
    let dir = g.dir.path();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: edgeward\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("prometheus (Debian's package; scripts/setup installs it)");
    let (code, _, err) = gateway.cli(&["restart", "counter"]);
    assert_eq!(code, 0, "{err}");
    let query = "/api/v1/query?query=edgeward_module_restarts_total%7Bmodule%3D%22counter%22%2Ccause%3D%22requested%22%7D";
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let reply = std::net::TcpStream::connect(&web)
            .ok()
            .map(|_| edgeward_tests::http_get(web.parse().unwrap(), query));
        if let Some((200, body)) = reply {
            let json: Value = serde_json::from_str(&body).expect("JSON");
            let value = json["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_string);
            if value.as_deref() == Some("1") {
                break json;
            }
        }
        if Instant::now() > deadline {
            let _ = prometheus.kill();
            panic!(
                "Prometheus never returned the restart; its log:\n{}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert_eq!(answer["data"]["result"][0]["metric"]["job"], "edgeward");
}

/// Tick calls the module made in `window` (its status `ticks` counter).
fn ticks_in(gateway: &edgeward_tests::Gateway, name: &str, window: Duration) -> u64 {
    let ticks = |s: &Value| module(s, name)["ticks"].as_u64().unwrap_or(0);
    let before = ticks(&gateway.try_status().expect("status"));
    std::thread::sleep(window);
    ticks(&gateway.try_status().expect("status")) - before
}

#[test]
fn a_hundred_idle_connections_neither_delay_ticks_nor_lock_out_a_scraper() {
    let g = GatewayDir::new();
    g.add_policy("ticker", &policy("counter", "[schedule]\ntick_us = 1000"));
    let gateway = g.start_with(&[("EDGEWARD_METRICS", "127.0.0.1:0")]);
    gateway.wait_running(&["ticker"], PATIENCE);
    let addr = gateway.metrics_addr(PATIENCE);
    std::thread::sleep(Duration::from_millis(500));
    let window = Duration::from_secs(2);
    let alone = ticks_in(&gateway, "ticker", window);
    let idle: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
        .collect();
    let crowded = ticks_in(&gateway, "ticker", window);
    // A scrape still gets through: the oldest idle connection makes room.
    let started = Instant::now();
    let (code, text) = edgeward_tests::http_get(addr, "/metrics");
    assert_eq!(code, 200);
    assert!(
        text.contains("edgeward_module_up{module=\"ticker\"} 1"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(idle);
    println!("ticks in {window:?}: {alone} alone, {crowded} with 100 idle connections");
    assert!(
        crowded as f64 >= 0.9 * alone as f64,
        "ticks fell from {alone} to {crowded} with 100 idle connections"
    );
}

#[test]
fn a_log_flood_is_cut_and_counted_without_slowing_another_modules_ticks() {
    let run = |flood: bool| {
        let g = GatewayDir::new();
        g.add_policy("ticker", &policy("counter", "[schedule]\ntick_us = 1000"));
        if flood {
            g.add_policy(
                "log-flood",
                &policy("log_flood", "[schedule]\ntick_us = 10000"),
            );
        }
        let gateway = g.start_with(&[("EDGEWARD_METRICS", "127.0.0.1:0")]);
        let names: &[&str] = if flood {
            &["ticker", "log-flood"]
        } else {
            &["ticker"]
        };
        gateway.wait_running(names, PATIENCE);
        std::thread::sleep(Duration::from_millis(500));
        let ticks = ticks_in(&gateway, "ticker", Duration::from_secs(3));
        let dropped = flood.then(|| {
            let text = wait_sample(
                &gateway,
                r#"edgeward_module_log_lines_dropped_total{module="log-flood"}"#,
                |v| v > 0.0,
            );
            sample(
                &text,
                r#"edgeward_module_log_lines_dropped_total{module="log-flood"}"#,
            )
            .unwrap()
        });
        (ticks, dropped, g, gateway)
    };
    let (alone, _, _g1, _gw1) = run(false);
    let (flooded, dropped, _g2, gateway) = run(true);
    println!("ticks in 3 s: {alone} alone, {flooded} beside the flood ({dropped:?} lines dropped)");
    assert!(
        flooded as f64 >= 0.9 * alone as f64,
        "ticks fell from {alone} to {flooded} beside a log flood:\n{}",
        gateway.log()
    );
    assert_eq!(
        module(&gateway.try_status().unwrap(), "log-flood")["state"],
        "running"
    );
}

/// The `denied` events of a JSON log, by kind.
fn denied_events(log: &str) -> BTreeMap<String, Vec<Value>> {
    let mut events: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a JSON log line that does not parse ({e}): {line}"));
        if value["event"] == "denied" {
            let kind = value["kind"].as_str().unwrap_or("?").to_string();
            events.entry(kind).or_default().push(value);
        }
    }
    events
}

#[test]
fn every_kind_of_denial_is_one_audited_event_and_a_metric_increment() {
    let g = GatewayDir::new();
    // channel: a channel the policy does not grant, asked for once.
    g.add_policy(
        "channel-thief",
        &policy(
            "flood",
            "[wasi]\nargs = [\"--burst\", \"1\", \"--oversize\", \"16\", \"--deny\", \"secrets\"]\n\
             [channels]\npublish = [\"flood\"]\n[schedule]\ntick_us = 100000",
        ),
    );
    g.add_policy(
        "sink",
        &policy("echo_log", "[channels]\nsubscribe = [\"flood\"]"),
    );
    // path: a write to a read-only dir, `..` and a symlink out of it
    // (three refusals the host sees; `/etc/passwd` is refused by the
    // guest's libc itself and never reaches edgeward).
    let dir = g.dir.path();
    let ro = dir.join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::write(ro.join("input.txt"), "x").unwrap();
    std::fs::write(dir.join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink("../secret.txt", ro.join("escape")).unwrap();
    g.add_policy(
        "path-thief",
        &policy(
            "wasi_probe",
            &format!(
                "[wasi]\ndirs = [{{ host = \"{}\", guest = \"/ro\", mode = \"ro\" }}]",
                ro.display()
            ),
        ),
    );
    // call_budget: a handler that loops past its budget (restarted, then failed).
    g.add_policy(
        "budget-thief",
        &policy(
            "loop_handler",
            "[schedule]\ntick_us = 10000\n[restart]\npolicy = \"never\"",
        ),
    );
    // seccomp: what a worker's SIGSYS handler reports (rogue-worker's mode).
    g.add_policy(
        "rogue-syscall",
        &policy(
            "counter",
            "[wasi]\nargs = [\"seccomp\"]\n[restart]\npolicy = \"never\"",
        ),
    );
    // network: a connector trying an endpoint not in [network] connect.
    let granted = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (granted_port, other_port) = (
        granted.local_addr().unwrap().port(),
        other.local_addr().unwrap().port(),
    );
    g.add_policy(
        "rogue-net",
        &format!(
            "[connector]\nkind = \"mqtt\"\nbroker = \"127.0.0.1:{granted_port}\"\n\
             try = [\"127.0.0.1:{other_port}\"]\n\
             [network]\nconnect = [\"127.0.0.1:{granted_port}\"]\n"
        ),
    );
    let rogue_worker = edgeward_tests::bin("rogue-worker");
    let rogue_connector = edgeward_tests::bin("rogue-connector");
    let gateway = g.start_with(&[
        ("EDGEWARD_METRICS", "127.0.0.1:0"),
        ("EDGEWARD_LOG_FORMAT", "json"),
        ("EDGEWARD_PROCESS_MODEL", "exec"),
        ("EDGEWARD_WORKER", rogue_worker.to_str().unwrap()),
        ("EDGEWARD_CONNECTOR", rogue_connector.to_str().unwrap()),
    ]);
    let expected = [
        ("channel", "channel-thief", 1.0),
        ("path", "path-thief", 3.0),
        ("call_budget", "budget-thief", 1.0),
        ("seccomp", "rogue-syscall", 1.0),
        ("network", "rogue-net", 1.0),
    ];
    for (kind, name, at_least) in expected {
        let series = format!(r#"edgeward_module_denials_total{{module="{name}",kind="{kind}"}}"#);
        wait_sample(&gateway, &series, |v| v >= at_least);
    }
    // The counts settle (nothing more is denied), then each kind's events
    // are compared with its metric.
    std::thread::sleep(Duration::from_millis(1500));
    let (_, text) = gateway.metrics_get("/metrics");
    let log = gateway.log();
    let events = denied_events(&log);
    for (kind, name, _) in expected {
        let series = format!(r#"edgeward_module_denials_total{{module="{name}",kind="{kind}"}}"#);
        let total = sample(&text, &series).unwrap();
        let lines = events.get(kind).cloned().unwrap_or_default();
        assert!(
            !lines.is_empty(),
            "no denied event of kind {kind} in:\n{log}"
        );
        for line in &lines {
            assert_eq!(line["module"], name, "{line}");
            assert_eq!(line["level"], "warn", "{line}");
            assert!(
                line["time"].as_str().is_some_and(|t| t.ends_with('Z')),
                "{line}"
            );
        }
        // Every denial is in the metric; the events name them all (the
        // first at once, the rest as `held_back` of a later one or not yet
        // due within the second).
        let counted: u64 = lines
            .iter()
            .map(|l| l["count"].as_u64().unwrap() + l["held_back"].as_u64().unwrap())
            .sum();
        assert!(
            counted as f64 <= total,
            "{kind}: {counted} in events, {total} in /metrics"
        );
        let last_total = lines.last().unwrap()["total"].as_f64().unwrap();
        assert!(
            last_total <= total,
            "{kind}: {last_total} in the last event, {total} in /metrics"
        );
        // Other modules are not blamed for it.
        for (_, other_name, _) in expected {
            if other_name != name {
                let series = format!(
                    r#"edgeward_module_denials_total{{module="{other_name}",kind="{kind}"}}"#
                );
                assert_eq!(sample(&text, &series), Some(0.0), "{series}");
            }
        }
    }
    // The first event says what was refused, in words.
    assert!(
        events["network"][0]["msg"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "a connection to 127.0.0.1:{other_port}: not in [network] connect"
            )),
        "{:?}",
        events["network"]
    );
    // The path-thief's own view: refused, as before, and still running.
    assert!(
        log.contains("probe: read /ro/../secret.txt: denied"),
        "{log}"
    );
    let (_, text) = gateway.metrics_get("/metrics");
    assert_eq!(
        sample(
            &text,
            r#"edgeward_module_denials_total{module="path-thief",kind="path"}"#
        ),
        Some(3.0),
        "{text}"
    );
    // Every line of the log is one JSON object (module output included).
    for line in log.lines() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value["event"].is_string() && value["level"].is_string(),
            "{line}"
        );
    }
}
