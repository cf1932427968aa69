//! End to end: `edgeward reload` and SIGHUP apply only the difference
//! between the policy directory and what runs. Unchanged modules keep their
//! worker (same pid); changed ones restart with their state; removed ones
//! take a final snapshot that a later re-add restores; added ones start; a
//! rejected policy leaves its running module untouched; rings are rewired,
//! restarting only the modules at their ends.

use std::time::Duration;

use edgeward_tests::{cgroup_dir, module, policy, GatewayDir};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// A counter ticking at 1 kHz that snapshots only when asked to or stopped.
fn counter(every: u32) -> String {
    policy(
        "counter",
        &format!("[wasi]\nargs = [\"--every\", \"{every}\"]\n[schedule]\ntick_us = 1000\n[snapshot]\ninterval_ms = 0"),
    )
}

fn pid(status: &Value, name: &str) -> i64 {
    module(status, name)["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("{name} has no pid in {status}"))
}

fn ticks(status: &Value, name: &str) -> u64 {
    module(status, name)["ticks"].as_u64().unwrap_or(0)
}

/// The sensor example publishing `readings` every millisecond.
fn sensor() -> String {
    policy(
        "sensor",
        "[channels]\npublish = [\"readings\"]\n[schedule]\ntick_us = 1000",
    )
}

/// The rings in `status` as `channel from>to`, sorted.
fn rings(status: &Value) -> Vec<String> {
    let mut rings: Vec<String> = status["rings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}>{}", r["channel"], r["from"], r["to"]).replace('"', ""))
        .collect();
    rings.sort();
    rings
}

fn listed(status: &Value, name: &str) -> bool {
    status["modules"]
        .as_array()
        .is_some_and(|ms| ms.iter().any(|m| m["name"] == name))
}

#[test]
fn a_reload_adds_changes_and_removes_modules_and_leaves_the_rest_alone() {
    let g = GatewayDir::new();
    g.add_policy("keep", &counter(100));
    g.add_policy(
        "change",
        &format!("{}\n[resources]\nmemory_mib = 16", counter(100)),
    );
    g.add_policy("gone", &counter(100));
    let gateway = g.start();
    let before = gateway.wait_for(WAIT, "all counting", |s| {
        ["keep", "change", "gone"]
            .iter()
            .all(|m| module(s, m)["state"] == "running" && ticks(s, m) >= 300)
    });
    let gone_ticks = ticks(&before, "gone");
    let change_ticks = ticks(&before, "change");

    let memory_limit = |pid: i64| -> u64 {
        std::fs::read_to_string(cgroup_dir(pid, "memory").join("memory.limit_in_bytes"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let limit_before = memory_limit(pid(&before, "change"));
    g.add_policy(
        "change",
        &format!("{}\n[resources]\nmemory_mib = 24", counter(50)),
    );
    std::fs::remove_file(g.policies().join("gone.toml")).unwrap();
    g.add_policy("fresh", &counter(100));
    let (code, out, err) = gateway.cli(&["reload"]);
    assert_eq!(code, 0, "reload failed: {out}{err}");
    assert_eq!(
        out.trim(),
        "added fresh; changed change; removed gone; restarting change"
    );

    let after = gateway.wait_for(WAIT, "reload applied", |s| {
        !listed(s, "gone")
            && module(s, "fresh")["state"] == "running"
            && module(s, "change")["state"] == "running"
            && module(s, "change")["pid"] != module(&before, "change")["pid"]
    });
    assert_eq!(
        pid(&after, "keep"),
        pid(&before, "keep"),
        "keep was touched"
    );
    gateway.wait_for(WAIT, "keep ticking on", |s| {
        ticks(s, "keep") > ticks(&before, "keep") && pid(s, "keep") == pid(&before, "keep")
    });
    // The changed module runs under its new limits…
    assert_eq!(
        memory_limit(pid(&after, "change")),
        limit_before + (8 << 20),
        "the cgroup memory limit follows memory_mib"
    );
    // …and resumed from the snapshot taken just before.
    let restored = gateway.wait_number_after("[change] info: restored ticks=", WAIT);
    assert!(
        restored >= change_ticks,
        "change restored {restored} < {change_ticks}"
    );
    gateway.wait_log("module gone: removed", WAIT);
    assert!(
        !gateway.log().contains("[keep] info: restored"),
        "keep was restarted"
    );

    // The removed module's final snapshot comes back when it is re-added.
    g.add_policy("gone", &counter(100));
    let (code, out, _) = gateway.cli(&["reload"]);
    assert_eq!((code, out.trim()), (0, "added gone"));
    let restored = gateway.wait_number_after("[gone] info: restored ticks=", WAIT);
    assert!(
        restored >= gone_ticks,
        "gone restored {restored} < {gone_ticks} ticks it had before removal"
    );
    let status = gateway.wait_running(&["keep", "change", "gone", "fresh"], WAIT);
    assert_eq!(pid(&status, "keep"), pid(&before, "keep"));

    // Nothing changed: nothing happens.
    let (code, out, _) = gateway.cli(&["reload"]);
    assert_eq!((code, out.trim()), (0, "no change"));
}

#[test]
fn a_rejected_policy_leaves_its_running_module_untouched() {
    let g = GatewayDir::new();
    g.add_policy("steady", &counter(100));
    let gateway = g.start();
    let before = gateway.wait_running(&["steady"], WAIT);

    // A typo in a running module's policy, and a new module that is broken.
    g.add_policy(
        "steady",
        &format!("{}\n[resources]\nmemry_mib = 8\n", counter(100)),
    );
    g.add_policy("broken", "[module]\nwasm = \"/nonexistent/broken.wasm\"\n");
    let (code, out, err) = gateway.cli(&["reload"]);
    assert_eq!(
        code, 1,
        "a rejected policy must fail the reload: {out}{err}"
    );
    assert!(
        err.contains("steady.toml") && err.contains("memry_mib"),
        "the error names the file and the key: {err}"
    );
    assert!(err.contains("keeps its previous policy"), "{err}");
    assert!(err.contains("broken"), "{err}");
    let status = gateway.wait_for(WAIT, "broken listed as failed", |s| {
        listed(s, "broken") && module(s, "broken")["state"] == "failed"
    });
    assert_eq!(module(&status, "steady")["state"], "running");
    assert_eq!(pid(&status, "steady"), pid(&before, "steady"));
    assert!(module(&status, "steady")["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("reload rejected") && e.contains("memry_mib")));

    // Put the policy back as it was and drop the broken one, by SIGHUP:
    // nothing to restart.
    g.add_policy("steady", &counter(100));
    std::fs::remove_file(g.policies().join("broken.toml")).unwrap();
    gateway.signal(nix::sys::signal::Signal::SIGHUP);
    let status = gateway.wait_for(WAIT, "broken gone", |s| !listed(s, "broken"));
    assert_eq!(pid(&status, "steady"), pid(&before, "steady"));
    gateway.wait_log("reload: removed broken", WAIT);
}

#[test]
fn a_reload_rewires_rings_and_restarts_only_their_ends() {
    let g = GatewayDir::new();
    g.add_policy("sensor", &sensor());
    g.add_policy("bystander", &counter(100));
    let gateway = g.start();
    let before = gateway.wait_running(&["sensor", "bystander"], WAIT);
    assert_eq!(before["rings"].as_array().map(Vec::len), Some(0));

    // A filter and an alarm join: the sensor gains a ring and restarts.
    g.add_policy(
        "filter",
        &policy(
            "filter",
            "[wasi]\nargs = [\"--threshold\", \"50\"]\n[channels]\nsubscribe = [\"readings\"]\npublish = [\"alarms\"]",
        ),
    );
    g.add_policy(
        "alarm",
        &policy(
            "alarm",
            "[wasi]\nargs = [\"--report-every\", \"10\"]\n[channels]\nsubscribe = [\"alarms\"]",
        ),
    );
    let (code, out, err) = gateway.cli(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "added alarm, filter; restarting sensor");
    gateway.wait_log("alarm: 10 alarms in order", WAIT);
    let status = gateway.wait_running(&["sensor", "filter", "alarm", "bystander"], WAIT);
    assert_ne!(pid(&status, "sensor"), pid(&before, "sensor"));
    assert_eq!(pid(&status, "bystander"), pid(&before, "bystander"));
    assert_eq!(
        rings(&status),
        ["alarms filter>alarm", "readings sensor>filter"]
    );

    // The filter goes: both its ends restart, the bystander does not.
    let with_filter = status;
    std::fs::remove_file(g.policies().join("filter.toml")).unwrap();
    let (code, out, _) = gateway.cli(&["reload"]);
    assert_eq!(
        (code, out.trim()),
        (0, "removed filter; restarting alarm, sensor")
    );
    let status = gateway.wait_for(WAIT, "filter removed, its ends restarted", |s| {
        !listed(s, "filter")
            && ["sensor", "alarm"].iter().all(|m| {
                module(s, m)["state"] == "running"
                    && module(s, m)["pid"] != module(&with_filter, m)["pid"]
            })
    });
    assert_eq!(status["rings"].as_array().map(Vec::len), Some(0));
    assert_eq!(pid(&status, "bystander"), pid(&before, "bystander"));
}

#[test]
fn a_module_removed_and_added_back_while_it_still_stops_comes_back_with_its_rings() {
    // A rogue worker that ignores Stop: it stays `stopping` until the stop
    // timeout's SIGKILL, long enough to add its policy back meanwhile.
    let g = GatewayDir::new();
    g.add_policy("sensor", &sensor());
    let stubborn = policy(
        "counter",
        "[wasi]\nargs = [\"ignore-stop\"]\n[channels]\nsubscribe = [\"readings\"]",
    );
    g.add_policy("rogue-filter", &stubborn);
    let rogue = edgeward_tests::bin("rogue-worker");
    let gateway = g.start_with(&[
        ("EDGEWARD_PROCESS_MODEL", "exec"),
        ("EDGEWARD_WORKER", rogue.to_str().expect("utf-8 path")),
        ("EDGEWARD_STOP_TIMEOUT_MS", "3000"),
    ]);
    let before = gateway.wait_running(&["sensor", "rogue-filter"], WAIT);

    std::fs::remove_file(g.policies().join("rogue-filter.toml")).unwrap();
    let (code, out, err) = gateway.cli(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "removed rogue-filter; restarting sensor");
    gateway.wait_for(WAIT, "rogue-filter stopping", |s| {
        module(s, "rogue-filter")["state"] == "stopping"
    });

    g.add_policy("rogue-filter", &stubborn);
    let (code, out, err) = gateway.cli(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rogue-filter"), "{out}");
    // It comes back (after the SIGKILL of the old worker), with its ring.
    let after = gateway.wait_for(WAIT, "rogue-filter back", |s| {
        listed(s, "rogue-filter")
            && module(s, "rogue-filter")["state"] == "running"
            && module(s, "rogue-filter")["pid"] != module(&before, "rogue-filter")["pid"]
    });
    assert_eq!(rings(&after), ["readings sensor>rogue-filter"], "{after}");
    assert!(
        !gateway.log().contains("module rogue-filter: removed"),
        "{}",
        gateway.log()
    );
}
