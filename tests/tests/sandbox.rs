//! End to end: every worker is a jail, read back from /proc as an operator
//! (or an attacker) would see it; the self-test proves each forbidden call
//! is denied and named.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use edgeward_tests::{bin, cgroup_dir, children_of, module, repo_root, GatewayDir};

fn status_field(pid: i64, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn read(path: std::path::PathBuf) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn every_worker_is_jailed_and_sees_only_what_it_was_given() {
    let g = GatewayDir::new();
    let gateway = g.start_on(&repo_root().join("policies"), &[]);
    let status = gateway.wait_running(&edgeward_tests::EXAMPLES, Duration::from_secs(20));
    let supervisor_net = std::fs::read_link(format!("/proc/{}/ns/net", gateway.pid())).unwrap();
    let mut uids = BTreeSet::new();
    for (name, memory_mib, cpu_percent) in [
        ("counter", 16, 10),
        ("temp-alert", 16, 25),
        ("hello-command", 16, 25),
    ] {
        let m = module(&status, name);
        let pid = m["pid"].as_i64().unwrap();
        assert!(m["degraded"].as_array().unwrap().is_empty(), "{name}: {m}");
        assert_eq!(status_field(pid, "Seccomp"), "2", "{name}");
        assert_eq!(status_field(pid, "NoNewPrivs"), "1", "{name}");
        assert_eq!(status_field(pid, "CapEff"), "0000000000000000", "{name}");
        assert_eq!(status_field(pid, "CapBnd"), "0000000000000000", "{name}");
        assert_eq!(status_field(pid, "CapPrm"), "0000000000000000", "{name}");
        let uid: Vec<u32> = status_field(pid, "Uid")
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        let gid: Vec<u32> = status_field(pid, "Gid")
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        assert!(
            uid.iter().all(|u| *u == uid[0] && *u != 0),
            "{name} uid {uid:?}"
        );
        assert!(
            gid.iter().all(|g| *g == gid[0] && *g != 0),
            "{name} gid {gid:?}"
        );
        assert!(
            uids.insert(uid[0]),
            "{name} shares uid {} with another module",
            uid[0]
        );
        // Its own cgroups, with the policy's limits written.
        let memory = cgroup_dir(pid, "memory");
        assert!(
            memory.ends_with(name)
                && memory
                    .parent()
                    .and_then(|p| p.file_name())
                    .is_some_and(|g| g.to_string_lossy().starts_with("edgeward-")),
            "{}",
            memory.display()
        );
        assert_eq!(
            read(memory.join("memory.limit_in_bytes")),
            ((memory_mib + 8u64) << 20).to_string()
        );
        let cpu = cgroup_dir(pid, "cpu");
        assert!(cpu.ends_with(name));
        assert_eq!(
            read(cpu.join("cpu.cfs_quota_us")),
            (cpu_percent * 1000).to_string()
        );
        let pids = cgroup_dir(pid, "pids");
        assert!(pids.ends_with(name));
        assert_eq!(read(pids.join("pids.max")), "11");
        // No network: a namespace of its own, not the host's.
        assert_ne!(
            std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
            supervisor_net,
            "{name}"
        );
        // Open fds: stdio, control socket, its own artifact, its own grants,
        // and the worker's own event fds. Nothing from other modules.
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
            let target = std::fs::read_link(entry.unwrap().path()).unwrap();
            let t = target.to_string_lossy();
            let allowed = t == "/dev/null"
                || t.starts_with("pipe:")
                || t.starts_with("socket:")
                || t.starts_with("anon_inode:")
                || (t.ends_with(".cwasm") && t.contains(&g.state().to_string_lossy().to_string()))
                || (name == "temp-alert" && t.ends_with("policies/data/temp-alert"));
            assert!(allowed, "{name} holds an fd it was not given: {t}");
        }
        let cwasm = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter(|e| {
                std::fs::read_link(e.as_ref().unwrap().path())
                    .is_ok_and(|t| t.to_string_lossy().ends_with(".cwasm"))
            })
            .count();
        assert!(
            cwasm <= 1,
            "{name} holds {cwasm} artifacts: other modules' code leaked in"
        );
    }
    // The fork server is hardened too.
    let workers: Vec<i64> = status["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["pid"].as_i64().unwrap())
        .collect();
    let zygote = children_of(gateway.pid())
        .into_iter()
        .map(i64::from)
        .find(|p| !workers.contains(p))
        .expect("fork server");
    assert_eq!(status_field(zygote, "NoNewPrivs"), "1");
    assert_eq!(status_field(zygote, "Seccomp"), "2");
    let bounding = u64::from_str_radix(&status_field(zygote, "CapBnd"), 16).unwrap();
    assert!(
        bounding.count_ones() <= 6,
        "fork server keeps too many capabilities: {bounding:x}"
    );
}

#[test]
fn self_test_denies_and_names_every_forbidden_syscall() {
    let out = Command::new(bin("edgeward-worker"))
        .arg("self-test")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checks: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for name in [
        "socket",
        "connect",
        "execve",
        "fork",
        "vfork",
        "ptrace",
        "mount",
        "bpf",
        "io_uring_setup",
        "userfaultfd",
        "clone (new process)",
        "landlock",
    ] {
        let check = checks
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("self-test has no check {name}"));
        assert_eq!(check["ok"], true, "{check}");
        if name != "landlock" && name != "clone (new process)" {
            assert!(
                check["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("seccomp: denied syscall {name}")),
                "{check}"
            );
        }
    }
    // A compromised worker cannot swap the reporter of denied calls for a
    // handler of its own (which could make them fail silently), however it
    // spells SIGSYS; other handlers stay allowed; and blocking SIGSYS does
    // not let a denied call return.
    let check = |name: &str| {
        checks
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("self-test has no check {name}: {stdout}"))
            .clone()
    };
    for name in ["rt_sigaction(SIGSYS)", "rt_sigaction(SIGSYS | 1 << 32)"] {
        let check = check(name);
        assert_eq!(check["ok"], true, "{check}");
        assert!(
            check["detail"]
                .as_str()
                .unwrap()
                .starts_with("seccomp: denied syscall rt_sigaction"),
            "{check}"
        );
    }
    for name in ["rt_sigaction(SIGUSR1)", "socket with SIGSYS blocked"] {
        let check = check(name);
        assert_eq!(check["ok"], true, "{check}");
    }
}

#[test]
fn check_sandbox_lists_every_layer_this_host_enforces() {
    let out = Command::new(bin("edgeward"))
        .args(["check", "--sandbox"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for layer in [
        "cgroups",
        "uid switching",
        "namespaces",
        "landlock",
        "seccomp",
    ] {
        assert!(stdout.contains(&format!("  {layer}")), "{stdout}");
    }
    // This box (root, cgroup v1, Landlock, seccomp) enforces all of them.
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("every layer is enforced"), "{stdout}");
}

#[test]
fn seccomp_table_gives_a_reason_for_every_syscall_and_docs_list_them() {
    let out = Command::new(bin("edgeward-worker"))
        .arg("seccomp-table")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let docs = std::fs::read_to_string(repo_root().join("docs/security.md")).unwrap();
    for row in table.lines().skip(2) {
        // | system call | arch | allowed when | why |
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(
            ["both", "x86_64", "aarch64"].contains(&cells[2]),
            "no architecture in {row}"
        );
        assert!(cells[4].len() >= 8, "no reason in {row}");
        assert!(
            docs.contains(row),
            "docs/security.md does not show this row of `edgeward-worker seccomp-table`: {row}"
        );
    }
}

/// The connector's allowlist as the binary prints it is, row for row, the
/// table of docs/security.md's "Connector seccomp allowlist" section: an
/// operator reading the docs sees exactly what a connector may call.
#[test]
fn connector_seccomp_table_gives_a_reason_for_every_syscall_and_docs_show_it_exactly() {
    let out = Command::new(bin("edgeward-connector"))
        .arg("seccomp-table")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "edgeward-connector seccomp-table: {out:?}"
    );
    let table = String::from_utf8_lossy(&out.stdout);
    for row in table.lines().skip(2) {
        // | system call | arch | allowed when | why |
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(
            ["both", "x86_64", "aarch64"].contains(&cells[2]),
            "no architecture in {row}"
        );
        assert!(cells[4].len() >= 8, "no reason in {row}");
    }
    let docs = std::fs::read_to_string(repo_root().join("docs/security.md")).unwrap();
    let section = docs
        .split("\n## Connector seccomp allowlist\n")
        .nth(1)
        .expect("docs/security.md has a section \"Connector seccomp allowlist\"");
    let section = section.split("\n## ").next().unwrap_or(section);
    let documented: Vec<&str> = section
        .lines()
        .skip_while(|l| !l.starts_with("| system call |"))
        .take_while(|l| l.starts_with('|'))
        .collect();
    let printed: Vec<&str> = table.lines().collect();
    assert_eq!(
        documented, printed,
        "docs/security.md's connector table differs from `edgeward-connector seccomp-table`: paste its output there"
    );
}

#[test]
fn a_cgroup_oom_kill_is_reported_and_touches_no_other_module() {
    let g = GatewayDir::new();
    g.add_policy(
        "steady",
        &edgeward_tests::policy("counter", "[schedule]\ntick_us = 10000"),
    );
    g.add_policy(
        "bomb",
        &edgeward_tests::policy(
            "memory_bomb",
            "[resources]\nmemory_mib = 64\n[schedule]\ntick_us = 200000\n[restart]\npolicy = \"never\"",
        ),
    );
    let gateway = g.start();
    let before = gateway.wait_running(&["steady", "bomb"], Duration::from_secs(20));
    // The wasm limit (64 MiB) normally stops a bomb first. Here the operator
    // lowers the cgroup limit under it, so the kernel's OOM killer acts.
    let bomb_pid = module(&before, "bomb")["pid"].as_i64().unwrap();
    let memory = cgroup_dir(bomb_pid, "memory");
    std::fs::write(
        memory.join("memory.limit_in_bytes"),
        (24u64 << 20).to_string(),
    )
    .unwrap();
    let status = gateway.wait_for(Duration::from_secs(20), "bomb failed", |s| {
        module(s, "bomb")["state"] == "failed"
    });
    let error = module(&status, "bomb")["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(error, "out of memory: cgroup limit 24 MiB");
    let steady = module(&status, "steady");
    assert_eq!(steady["pid"], module(&before, "steady")["pid"]);
    assert_eq!(steady["restarts"], 0);
    assert_eq!(steady["state"], "running");
}
