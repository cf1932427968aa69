//! Both drivers on temp-dir fixtures shaped like `/sys/fs/cgroup`.

use super::*;

const HYBRID: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/box/1\n1:cpu,cpuacct:/\n0::/\n";
const PURE_V2: &str = "0::/system.slice/gateway.service\n";

fn limits() -> Limits {
    Limits {
        memory_bytes: 48 << 20,
        cpu_percent: 25,
        pids: 8,
    }
}

fn v1_fixture() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for c in ["memory", "cpu", "pids"] {
        std::fs::create_dir_all(root.path().join(c)).unwrap();
    }
    root
}

#[test]
fn v1_is_chosen_on_a_hybrid_host_and_writes_every_limit() {
    let root = v1_fixture();
    let driver = detect(root.path(), HYBRID, "edgeward-t").unwrap();
    assert!(driver.describe().starts_with("cgroup v1"));
    let cg = driver.create("temp-alert", &limits()).unwrap();
    let memory = root.path().join("memory/box/1/edgeward-t/temp-alert");
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
    assert_eq!(
        read(memory.join("memory.limit_in_bytes")),
        (48u64 << 20).to_string()
    );
    let cpu = root.path().join("cpu/edgeward-t/temp-alert");
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "25000");
    assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(
        read(root.path().join("pids/edgeward-t/temp-alert/pids.max")),
        "8"
    );
    assert_eq!(cg.procs.len(), 3);
    assert!(cg.procs.contains(&memory.join("cgroup.procs")));
    std::fs::write(
        &cg.oom_events,
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    )
    .unwrap();
    assert_eq!(driver.oom_kills(&cg), 2);
    assert_eq!(cg.memory_limit_bytes(), Some(48 << 20));
}

#[test]
fn v2_is_chosen_on_a_pure_v2_host_and_enables_controllers() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    let own = root.path().join("system.slice/gateway.service");
    std::fs::create_dir_all(&own).unwrap();
    let driver = detect(root.path(), PURE_V2, "edgeward-t").unwrap();
    assert!(driver.describe().starts_with("cgroup v2"));
    let cg = driver.create("alarm", &limits()).unwrap();
    let dir = own.join("edgeward-t/alarm");
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
    assert_eq!(read(dir.join("memory.max")), (48u64 << 20).to_string());
    assert_eq!(read(dir.join("cpu.max")), "25000 100000");
    assert_eq!(read(dir.join("pids.max")), "8");
    assert_eq!(
        read(own.join("cgroup.subtree_control")),
        "+memory +cpu +pids"
    );
    assert_eq!(
        read(own.join("edgeward-t/cgroup.subtree_control")),
        "+memory +cpu +pids"
    );
    assert_eq!(cg.procs, vec![dir.join("cgroup.procs")]);
    std::fs::write(&cg.oom_events, "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n").unwrap();
    assert_eq!(driver.oom_kills(&cg), 1);
    assert_eq!(cg.memory_limit_bytes(), Some(48 << 20));
    driver.remove(&cg);
}

#[test]
fn hybrid_host_with_an_empty_unified_tree_uses_v1_not_v2() {
    let root = v1_fixture();
    std::fs::create_dir_all(root.path().join("unified")).unwrap();
    std::fs::write(root.path().join("unified/cgroup.controllers"), "").unwrap();
    assert!(detect(root.path(), HYBRID, "edgeward-t")
        .unwrap()
        .describe()
        .starts_with("cgroup v1"));
}

#[test]
fn v2_without_delegated_controllers_is_reported() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("cgroup.controllers"), "cpu\n").unwrap();
    let err = detect(root.path(), PURE_V2, "edgeward-t").err().unwrap();
    assert!(err.contains("not delegated"), "{err}");
}

#[test]
fn proc_self_cgroup_is_parsed() {
    let parsed = parse_proc_cgroup(HYBRID);
    assert!(parsed.contains(&(4, "memory".into(), "/box/1".into())));
    assert!(parsed.contains(&(0, String::new(), "/".into())));
}
