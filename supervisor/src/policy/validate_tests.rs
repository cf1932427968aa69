//! Policy parsing: each error kind, with its line and column.

use std::path::PathBuf;

use super::super::Policy;
use super::super::PolicyError;
use crate::policy::{load_file, DirMode, GroupStrategy, OnFull, RestartPolicy, WaitMode};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.wasm"), b"\0asm\x01\0\0\0").unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        Self { dir }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn errors(&self, name: &str, text: &str) -> Vec<PolicyError> {
        let path = self.write(name, text);
        load_file(&path)
            .result
            .expect_err("policy should be rejected")
    }

    fn ok(&self, name: &str, text: &str) -> Policy {
        let path = self.write(name, text);
        load_file(&path).result.expect("policy should be valid")
    }
}

const MINIMAL: &str = "[module]\nwasm = \"m.wasm\"\n";

#[test]
fn minimal_policy_gets_documented_defaults() {
    let f = Fixture::new();
    let p = f.ok("alarm.toml", MINIMAL);
    assert_eq!(p.name, "alarm");
    assert_eq!(
        p.wasm,
        std::fs::canonicalize(f.dir.path().join("m.wasm")).unwrap()
    );
    assert_eq!(p.wasm_sha256.len(), 64);
    assert!(p.args.is_empty() && p.env.is_empty() && p.dirs.is_empty());
    assert_eq!(p.resources.memory_mib, 32);
    assert_eq!(p.resources.cpu_percent, 25);
    assert_eq!(p.resources.pids, 8);
    assert_eq!(p.resources.call_budget_ms, 20);
    assert_eq!(p.tick_us, 0);
    assert_eq!(p.restart.policy, RestartPolicy::OnFailure);
    assert_eq!(
        (p.restart.backoff_min_ms, p.restart.backoff_max_ms),
        (5, 5000)
    );
    assert_eq!(
        (p.restart.intensity_max, p.restart.intensity_window_s),
        (5, 60)
    );
    assert_eq!(p.channels.capacity_kib, 64);
    assert_eq!(p.channels.max_message_kib, 16);
    assert_eq!(p.channels.on_full, OnFull::Block);
    assert_eq!(p.channels.wait, WaitMode::Park);
    assert_eq!(p.snapshot_interval_ms, 0);
}

#[test]
fn full_policy_parses_every_key() {
    let f = Fixture::new();
    let p = f.ok(
        "temp-alert.toml",
        r#"
[module]
wasm = "m.wasm"

[wasi]
args = ["--threshold", "85"]
env = { LINE = "3" }
dirs = [{ host = "data", guest = "/data", mode = "rw" }]

[channels]
publish = ["alerts"]
subscribe = ["temperature"]
capacity_kib = 128
max_message_kib = 32
on_full = "drop"
wait = "spin:50"

[resources]
memory_mib = 40
cpu_percent = 50
pids = 4
call_budget_ms = 30

[schedule]
tick_us = 1000

[restart]
policy = "always"
backoff_ms = [10, 2000]
intensity = { max = 3, window_s = 30 }
spare = true

[snapshot]
interval_ms = 500
"#,
    );
    assert_eq!(p.args, vec!["--threshold", "85"]);
    assert_eq!(p.env, vec![("LINE".to_string(), "3".to_string())]);
    assert_eq!(p.dirs.len(), 1);
    assert_eq!(p.dirs[0].guest, "/data");
    assert_eq!(p.dirs[0].mode, DirMode::Rw);
    assert!(p.dirs[0].host.is_absolute());
    assert_eq!(p.channels.publish, vec!["alerts"]);
    assert_eq!(p.channels.on_full, OnFull::Drop);
    assert_eq!(p.channels.wait, WaitMode::Spin { micros: 50 });
    assert_eq!(p.resources.memory_mib, 40);
    assert_eq!(p.tick_us, 1000);
    assert_eq!(p.restart.policy, RestartPolicy::Always);
    assert_eq!(p.restart.intensity_max, 3);
    assert!(p.restart.spare);
    assert_eq!(p.snapshot_interval_ms, 500);
}

#[test]
fn unknown_key_names_file_line_column_and_suggests() {
    let f = Fixture::new();
    let text = "[module]\nwasm = \"m.wasm\"\n\n[resources]\ncpu_percent = 10\n\nmemroy_mib = 32\n";
    let errors = f.errors("alarm.toml", text);
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!((e.line, e.col), (7, 1));
    assert_eq!(e.key, "resources.memroy_mib");
    let path = f.dir.path().join("alarm.toml");
    assert_eq!(
        e.to_string(),
        format!(
            "{}:7:1: unknown key \"memroy_mib\" in [resources]; did you mean \"memory_mib\"?",
            path.display()
        )
    );
}

#[test]
fn unknown_section_is_reported() {
    let f = Fixture::new();
    let errors = f.errors(
        "a.toml",
        "[module]\nwasm = \"m.wasm\"\n[resorces]\npids = 2\n",
    );
    assert_eq!(errors[0].line, 3);
    assert!(
        errors[0].reason.contains("unknown key \"resorces\""),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].fix.contains("did you mean \"resources\""),
        "{}",
        errors[0]
    );
}

#[test]
fn wrong_type_names_the_key() {
    let f = Fixture::new();
    let errors = f.errors(
        "a.toml",
        "[module]\nwasm = \"m.wasm\"\n[resources]\nmemory_mib = \"lots\"\n",
    );
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].line, errors[0].col), (4, 14));
    assert_eq!(errors[0].key, "resources.memory_mib");
    assert!(
        errors[0]
            .reason
            .starts_with("wrong type for resources.memory_mib"),
        "{}",
        errors[0]
    );
}

#[test]
fn unknown_enum_value_lists_the_choices() {
    let f = Fixture::new();
    let errors = f.errors(
        "a.toml",
        "[module]\nwasm = \"m.wasm\"\n[restart]\npolicy = \"on_failure\"\n",
    );
    assert_eq!(errors[0].line, 4);
    assert!(
        errors[0].fix.contains("did you mean \"on-failure\""),
        "{}",
        errors[0]
    );
}

#[test]
fn missing_module_table_says_what_to_add() {
    let f = Fixture::new();
    let errors = f.errors("a.toml", "[resources]\npids = 2\n");
    assert!(
        errors[0].reason.contains("no [module] table"),
        "{}",
        errors[0]
    );
    assert!(errors[0].fix.contains("[module]"), "{}", errors[0]);
}

#[test]
fn syntax_error_is_located() {
    let f = Fixture::new();
    let errors = f.errors("a.toml", "[module]\nwasm = \"m.wasm\n");
    assert_eq!(errors[0].line, 2);
    assert!(
        errors[0].reason.starts_with("not valid TOML"),
        "{}",
        errors[0]
    );
}

#[test]
fn missing_wasm_file_points_at_the_key() {
    let f = Fixture::new();
    let errors = f.errors("a.toml", "# comment\n[module]\nwasm = \"nope.wasm\"\n");
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].line, errors[0].col), (3, 8));
    assert_eq!(errors[0].key, "module.wasm");
    assert!(errors[0].reason.contains("nope.wasm"), "{}", errors[0]);
    assert!(
        errors[0].fix.contains("relative to the policy file"),
        "{}",
        errors[0]
    );
}

#[test]
fn sha256_pin_mismatch_is_refused() {
    let f = Fixture::new();
    let pin = "0".repeat(64);
    let errors = f.errors(
        "a.toml",
        &format!("[module]\nwasm = \"m.wasm\"\nsha256 = \"{pin}\"\n"),
    );
    assert_eq!(errors[0].line, 3);
    assert!(
        errors[0].reason.starts_with("sha256 pin mismatch"),
        "{}",
        errors[0]
    );
    // The right pin is accepted.
    let good = f.ok("b.toml", MINIMAL).wasm_sha256;
    f.ok(
        "c.toml",
        &format!("[module]\nwasm = \"m.wasm\"\nsha256 = \"{good}\"\n"),
    );
}

#[test]
fn every_value_error_is_reported_not_just_the_first() {
    let f = Fixture::new();
    let text = r#"[module]
wasm = "m.wasm"
[wasi]
dirs = [{ host = "missing-dir", guest = "/data" }, { host = "data", guest = "relative" }]
[channels]
publish = ["Bad Name"]
capacity_kib = 100
wait = "spin:forever"
[resources]
memory_mib = 0
cpu_percent = 100000
[restart]
backoff_ms = [500, 5]
intensity = { max = 0, window_s = 60 }
[schedule]
tick_us = 5
"#;
    let errors = f.errors("a.toml", text);
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    for key in [
        "wasi.dirs.host",
        "wasi.dirs.guest",
        "channels.publish",
        "channels.capacity_kib",
        "channels.wait",
        "resources.memory_mib",
        "resources.cpu_percent",
        "restart.backoff_ms",
        "restart.intensity",
        "schedule.tick_us",
    ] {
        assert!(keys.contains(&key), "no error for {key}: {keys:?}");
    }
    let memory = errors
        .iter()
        .find(|e| e.key == "resources.memory_mib")
        .unwrap();
    assert_eq!(memory.line, 10);
    assert!(errors.iter().all(|e| e.line > 0 && !e.fix.is_empty()));
}

#[test]
fn bad_file_name_is_an_error() {
    let f = Fixture::new();
    let errors = f.errors("Bad Name.toml", MINIMAL);
    assert!(errors[0].reason.contains("module name"), "{}", errors[0]);
}

#[test]
fn load_dir_reads_only_toml_files_in_order() {
    let f = Fixture::new();
    f.write("b.toml", MINIMAL);
    f.write("a.toml", "[module]\n");
    f.write("notes.txt", "not a policy");
    f.write(".hidden.toml", "garbage");
    let loaded = crate::policy::load_dir(f.dir.path()).unwrap();
    let names: Vec<&str> = loaded.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, vec!["a", "b"]);
    assert!(loaded[0].result.is_err());
    assert!(loaded[1].result.is_ok());
}

#[test]
fn suggestions_need_a_close_match() {
    use crate::policy::error::did_you_mean;
    assert_eq!(
        did_you_mean("memroy_mib", &["memory_mib", "pids"]),
        Some("memory_mib")
    );
    assert_eq!(did_you_mean("tick", &["tick_us"]), None);
    assert_eq!(did_you_mean("zzzz", &["memory_mib", "pids"]), None);
}

#[test]
fn start_order_group_and_watchdog_defaults() {
    let f = Fixture::new();
    let p = f.ok("alarm.toml", MINIMAL);
    assert!(p.after.is_empty() && p.after_locations.is_empty());
    assert_eq!(p.group, None);
    assert_eq!(p.strategy(), GroupStrategy::OneForOne);
    assert_eq!(p.restart.watchdog_ms, 1000);
    // A `[group]` without a strategy is one_for_one.
    let p = f.ok(
        "b.toml",
        "[module]\nwasm = \"m.wasm\"\n[group]\nname = \"line-1\"\n",
    );
    let group = p.group.as_ref().unwrap();
    assert_eq!(group.name, "line-1");
    assert_eq!(group.strategy, GroupStrategy::OneForOne);
    assert_eq!(group.location, (4, 8));
    // The default watchdog leaves room for three call budgets.
    let p = f.ok(
        "c.toml",
        "[module]\nwasm = \"m.wasm\"\n[resources]\ncall_budget_ms = 800\n",
    );
    assert_eq!(p.restart.watchdog_ms, 2400);
}

#[test]
fn after_group_and_watchdog_parse() {
    let f = Fixture::new();
    let p = f.ok(
        "modbus-logger.toml",
        r#"[module]
wasm = "m.wasm"
after = ["modbus-poller", "clock_1"]
[group]
name = "modbus-line"
strategy = "rest_for_one"
[resources]
call_budget_ms = 50
[restart]
watchdog_ms = 150
"#,
    );
    assert_eq!(p.after, vec!["modbus-poller", "clock_1"]);
    assert_eq!(p.after_locations, vec![(3, 10), (3, 27)]);
    let group = p.group.as_ref().unwrap();
    assert_eq!(group.name, "modbus-line");
    assert_eq!(group.strategy, GroupStrategy::RestForOne);
    assert_eq!(group.location, (6, 12));
    assert_eq!(p.strategy(), GroupStrategy::RestForOne);
    assert_eq!(p.restart.watchdog_ms, 150);
    let off = f.ok(
        "b.toml",
        "[module]\nwasm = \"m.wasm\"\n[resources]\ncall_budget_ms = 60000\n[restart]\nwatchdog_ms = 0\n",
    );
    assert_eq!(off.restart.watchdog_ms, 0);
    let one_for_all = f.ok(
        "c.toml",
        "[module]\nwasm = \"m.wasm\"\n[group]\nstrategy = \"one_for_all\"\nname = \"g\"\n",
    );
    assert_eq!(one_for_all.strategy(), GroupStrategy::OneForAll);
}

#[test]
fn where_after_entries_sit_does_not_change_a_policy() {
    let f = Fixture::new();
    let a = f.ok(
        "a.toml",
        "[module]\nwasm = \"m.wasm\"\nafter = [\"x\", \"y\"]\n[group]\nname = \"g\"\n",
    );
    let b = f.ok(
        "a.toml",
        "# moved\n[module]\nwasm = \"m.wasm\"\nafter = [\"y\",   \"x\"]\n[group]\n\nname = \"g\"\n",
    );
    assert!(a.same_as(&b));
    let c = f.ok(
        "a.toml",
        "[module]\nwasm = \"m.wasm\"\nafter = [\"x\"]\n[group]\nname = \"g\"\n",
    );
    assert!(!a.same_as(&c));
    let d = f.ok(
        "a.toml",
        "[module]\nwasm = \"m.wasm\"\nafter = [\"x\", \"y\"]\n[group]\nname = \"g\"\nstrategy = \"one_for_all\"\n",
    );
    assert!(!a.same_as(&d));
}

#[test]
fn watchdog_bounds_are_errors_with_the_fix() {
    let f = Fixture::new();
    let path = f.dir.path().join("a.toml");
    let short = f.errors(
        "a.toml",
        "[module]\nwasm = \"m.wasm\"\n[restart]\nwatchdog_ms = 50\n",
    );
    assert_eq!(short.len(), 1);
    assert_eq!(short[0].key, "restart.watchdog_ms");
    assert_eq!(
        short[0].to_string(),
        format!(
            "{}:4:15: restart.watchdog_ms = 50 is out of range; use 0 (no watchdog) or 100..=3600000 milliseconds",
            path.display()
        )
    );
    let long = f.errors(
        "a.toml",
        "[module]\nwasm = \"m.wasm\"\n[restart]\nwatchdog_ms = 3600001\n",
    );
    assert_eq!((long[0].line, long[0].col), (4, 15));
    assert!(long[0].reason.contains("out of range"), "{}", long[0]);
    // Below two call budgets: both fields and the fix are named.
    let budget = f.errors(
        "a.toml",
        "[module]\nwasm = \"m.wasm\"\n[resources]\ncall_budget_ms = 300\n[restart]\nwatchdog_ms = 500\n",
    );
    assert_eq!(budget.len(), 1);
    assert_eq!(
        budget[0].to_string(),
        format!(
            "{}:6:15: restart.watchdog_ms = 500 is less than 3 × resources.call_budget_ms = 300: \
             a module busy within its call budget would be killed; raise restart.watchdog_ms to at \
             least 900, lower resources.call_budget_ms to at most 166, or set watchdog_ms = 0 (no watchdog)",
            path.display()
        )
    );
    // Exactly three budgets is enough.
    let p = f.ok(
        "b.toml",
        "[module]\nwasm = \"m.wasm\"\n[resources]\ncall_budget_ms = 300\n[restart]\nwatchdog_ms = 900\n",
    );
    assert_eq!(p.restart.watchdog_ms, 900);
    // A bad budget is reported once, not again through the watchdog.
    let bad_budget = f.errors(
        "a.toml",
        "[module]\nwasm = \"m.wasm\"\n[resources]\ncall_budget_ms = 0\n[restart]\nwatchdog_ms = 100\n",
    );
    assert_eq!(bad_budget.len(), 1);
    assert_eq!(bad_budget[0].key, "resources.call_budget_ms");
    // Not a number of milliseconds.
    let negative = f.errors(
        "a.toml",
        "[module]\nwasm = \"m.wasm\"\n[restart]\nwatchdog_ms = -5\n",
    );
    assert_eq!((negative[0].line, negative[0].col), (4, 15));
    assert!(
        negative[0]
            .reason
            .starts_with("wrong type for restart.watchdog_ms"),
        "{}",
        negative[0]
    );
}

#[test]
fn malformed_after_entries_are_located() {
    let f = Fixture::new();
    let path = f.dir.path().join("logger.toml");
    let errors = f.errors(
        "logger.toml",
        "[module]\nwasm = \"m.wasm\"\nafter = [\"Poller\", \"clock\", \"clock\", \"logger\"]\n",
    );
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let at = |col: usize, rest: &str| format!("{}:3:{col}: {rest}", path.display());
    assert_eq!(
        shown,
        vec![
            at(
                10,
                "module.after names \"Poller\", which is not a module name; use lower-case letters, \
                 digits, '-' and '_' (at most 63, starting with a letter or digit)"
            ),
            at(
                29,
                "module.after lists \"clock\" twice; list each module once"
            ),
            at(
                38,
                "start order cycle: logger → logger; remove one of these from an `after` list"
            ),
        ]
    );
    let not_a_list = f.errors(
        "logger.toml",
        "[module]\nwasm = \"m.wasm\"\nafter = \"poller\"\n",
    );
    assert_eq!((not_a_list[0].line, not_a_list[0].col), (3, 9));
    assert_eq!(not_a_list[0].key, "module.after");
    assert!(
        not_a_list[0]
            .reason
            .starts_with("wrong type for module.after"),
        "{}",
        not_a_list[0]
    );
}

#[test]
fn malformed_groups_are_located() {
    let f = Fixture::new();
    let path = f.dir.path().join("a.toml");
    let typo = f.errors(
        "a.toml",
        "[module]\nwasm = \"m.wasm\"\n[group]\nname = \"line\"\nstrategy = \"one-for-all\"\n",
    );
    assert_eq!((typo[0].line, typo[0].col), (5, 12));
    assert_eq!(typo[0].key, "group.strategy");
    assert!(
        typo[0].fix.contains("did you mean \"one_for_all\""),
        "{}",
        typo[0]
    );
    let bad_name = f.errors(
        "a.toml",
        "[module]\nwasm = \"m.wasm\"\n[group]\nname = \"Line 1\"\n",
    );
    assert_eq!(
        bad_name[0].to_string(),
        format!(
            "{}:4:8: group.name \"Line 1\" is not allowed; use lower-case letters, digits, '-' and '_' \
             (at most 63, starting with a letter or digit)",
            path.display()
        )
    );
    let nameless = f.errors(
        "a.toml",
        "[module]\nwasm = \"m.wasm\"\n[group]\nstrategy = \"one_for_all\"\n",
    );
    assert!(
        nameless[0]
            .reason
            .contains("missing key \"name\" in [group]"),
        "{}",
        nameless[0]
    );
    let unknown = f.errors(
        "a.toml",
        "[module]\nwasm = \"m.wasm\"\n[group]\nname = \"g\"\nstartegy = \"one_for_all\"\n",
    );
    assert_eq!(unknown[0].line, 5);
    assert!(
        unknown[0].fix.contains("did you mean \"strategy\""),
        "{}",
        unknown[0]
    );
}

#[test]
fn a_missing_key_names_its_table() {
    let f = Fixture::new();
    let errors = f.errors("a.toml", "[module]\nsha256 = \"00\"\n");
    assert_eq!(
        errors[0].reason, "missing key \"wasm\" in [module]",
        "{}",
        errors[0]
    );
}

#[test]
fn watchdog_limits_are_documented() {
    use crate::policy::{DEFAULT_WATCHDOG_MS, MAX_WATCHDOG_MS, MIN_WATCHDOG_MS, WATCHDOG_BUDGETS};
    let doc = include_str!("../../../docs/policy.md");
    let flat: String = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    for phrase in [
        format!(
            "| `watchdog_ms` | 0 or {MIN_WATCHDOG_MS}..={MAX_WATCHDOG_MS} | `{DEFAULT_WATCHDOG_MS}`, or {WATCHDOG_BUDGETS} × `call_budget_ms` if that is more |"
        ),
        format!("the default is {DEFAULT_WATCHDOG_MS} ms or {WATCHDOG_BUDGETS} × `call_budget_ms`"),
        "`watchdog: no heartbeat for N ms`".to_string(),
    ] {
        assert!(flat.contains(&phrase), "policy.md lacks {phrase:?}");
    }
}

#[test]
fn a_connector_policy_keeps_its_table_grants_and_named_files() {
    let f = Fixture::new();
    let p = f.ok(
        "north.toml",
        "[connector]\nkind = \"mqtt\"\nbroker = \"broker.local:8883\"\nca_file = \"certs/ca.pem\"\n\
         [[connector.publish]]\nchannel = \"alarms\"\n\
         [network]\nconnect = [\"broker.local:8883\", \"10.0.0.5:502\"]\n\
         [channels]\nsubscribe = [\"alarms\"]\n",
    );
    let c = p.connector.as_ref().expect("a connector");
    assert_eq!(c.kind, "mqtt");
    assert_eq!(c.connect, vec!["broker.local:8883", "10.0.0.5:502"]);
    let ca = f
        .dir
        .path()
        .join("certs/ca.pem")
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        c.read_files,
        vec![ca.clone()],
        "made absolute against the policy's dir"
    );
    let table: toml::Table = c.config_toml.parse().unwrap();
    assert!(table.get("kind").is_none(), "kind is the supervisor's");
    assert_eq!(table["ca_file"].as_str(), Some(ca.as_str()));
    assert_eq!(p.wasm_language, Some("mqtt"));
    assert_eq!(p.wasm.as_os_str(), crate::policy::CONNECTOR_WASM);
    let changed = f.ok(
        "north.toml",
        "[connector]\nkind = \"mqtt\"\nbroker = \"broker.local:1883\"\n[network]\nconnect = [\"broker.local:8883\"]\n",
    );
    assert_ne!(
        p.wasm_sha256, changed.wasm_sha256,
        "a changed table restarts it on reload"
    );
}

#[test]
fn connector_mistakes_name_their_key_and_fix() {
    let f = Fixture::new();
    let cases: [(&str, &str, &str); 6] = [
        (
            "[connector]\nbroker = \"x:1\"\n",
            "connector.kind",
            "kind = \"mqtt\"",
        ),
        (
            "[connector]\nkind = \"profibus\"\n",
            "connector.kind",
            "\"modbus\"",
        ),
        (
            "[connector]\nkind = \"modbus\"\n[network]\nconnect = [\"10.0.0.5\"]\n",
            "network.connect",
            "host:port",
        ),
        (
            "[module]\nwasm = \"m.wasm\"\n[network]\nconnect = [\"10.0.0.5:502\"]\n",
            "network.connect",
            "through a connector",
        ),
        (
            "[module]\nwasm = \"m.wasm\"\n[connector]\nkind = \"mqtt\"\n",
            "module.wasm",
            "policy file of its own",
        ),
        (
            "[connector]\nkind = \"mqtt\"\n[wasi]\nargs = [\"x\"]\n",
            "",
            "remove wasi.args",
        ),
    ];
    for (text, key, fix) in cases {
        let errors = f.errors("c.toml", text);
        assert!(
            errors.iter().any(|e| e.key == key && e.fix.contains(fix)),
            "{text}: {errors:?}"
        );
    }
}

#[test]
fn modules_sharing_a_wasm_get_its_digest_and_a_rewritten_wasm_a_new_one() {
    let f = Fixture::new();
    let mut digests = super::super::WasmDigests::default();
    let wasm = f.dir.path().join("m.wasm");
    let first = digests.of(&wasm).unwrap();
    assert_eq!(
        first.0,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"\0asm\x01\0\0\0"))
    );
    assert_eq!(digests.of(&wasm).unwrap(), first);
    // Another build in its place (a new inode, as a deploy's rename makes).
    let next = f.dir.path().join("m.wasm.new");
    std::fs::write(&next, b"\0asm\x01\0\0\0\0").unwrap();
    std::fs::rename(&next, &wasm).unwrap();
    let second = digests.of(&wasm).unwrap();
    assert_ne!(second, first);
    assert_eq!(
        second.0,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"\0asm\x01\0\0\0\0"))
    );
    // Two policies of one directory load carry the same digest.
    f.write("a.toml", MINIMAL);
    f.write("b.toml", MINIMAL);
    let loaded = super::super::load_dir(f.dir.path()).unwrap();
    let shas: Vec<&str> = loaded
        .iter()
        .map(|l| l.result.as_ref().unwrap().wasm_sha256.as_str())
        .collect();
    assert_eq!(shas, [second.0.as_str(), second.0.as_str()]);
}
