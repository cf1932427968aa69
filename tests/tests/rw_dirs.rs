//! End to end: read-write dirs (issue 12, items 10 and 11). A rw dir
//! belongs to one module and never to the gateway; it is a quota volume of
//! `quota_mib` by default, so a module that fills it stops at its quota and
//! the snapshots of every other module go on; a module given an rw dir
//! without a quota that fills the state dir's filesystem is named in the
//! snapshot error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgeward_tests::{module, policy, GatewayDir};

const STARTUP: Duration = Duration::from_secs(20);

fn rw(host: &Path, extra: &str) -> String {
    format!(
        "[wasi]\ndirs = [{{ host = \"{}\", guest = \"/data\", mode = \"rw\"{extra} }}]",
        host.display()
    )
}

#[test]
fn a_rw_dir_belongs_to_one_module_and_never_to_the_gateway() {
    let g = GatewayDir::new();
    let shared = g.dir.path().join("shared");
    std::fs::create_dir_all(&shared).expect("mkdir");
    std::fs::create_dir_all(g.state().join("cache")).expect("mkdir");
    g.add_policy("alpha", &policy("counter", &rw(&shared, ", quota_mib = 0")));
    g.add_policy(
        "beta",
        &policy("counter", &rw(&shared.join("."), ", quota_mib = 0")),
    );
    g.add_policy(
        "gamma",
        &policy("counter", &rw(&g.state().join("cache"), ", quota_mib = 0")),
    );
    g.add_policy(
        "delta",
        &policy("counter", &rw(&g.policies(), ", quota_mib = 0")),
    );
    let gateway = g.start();
    let status = gateway.wait_for(STARTUP, "alpha running, the others failed", |s| {
        module(s, "alpha")["state"] == "running"
            && ["beta", "gamma", "delta"]
                .iter()
                .all(|m| module(s, m)["state"] == "failed")
    });
    let error = |m: &str| {
        module(&status, m)["last_error"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let beta = error("beta");
    assert!(beta.contains("beta.toml:4:"), "{beta}");
    assert!(
        beta.contains("overlaps the rw dir") && beta.contains("of module alpha"),
        "{beta}"
    );
    assert!(
        error("gamma").contains("overlaps the state directory"),
        "{}",
        error("gamma")
    );
    assert!(
        error("delta").contains("overlaps the policy directory"),
        "{}",
        error("delta")
    );
    // check says the same, with the same file:line:col.
    let out = std::process::Command::new(edgeward_tests::bin("edgeward"))
        .args(["check", "--policies"])
        .arg(g.policies())
        .arg("--state")
        .arg(g.state())
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("beta.toml:4:") && text.contains("overlaps the rw dir"),
        "{text}"
    );
}

/// A small filesystem holding both the state dir and the modules' data, so
/// a module can fill it: a tmpfs, unmounted on drop.
struct SmallDisk {
    mount: PathBuf,
}

impl SmallDisk {
    fn new(g: &GatewayDir, mib: u32) -> Self {
        let mount = g.dir.path().join("disk");
        std::fs::create_dir(&mount).expect("mkdir");
        nix::mount::mount(
            Some("tmpfs"),
            &mount,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={mib}m,mode=0755").as_str()),
        )
        .expect("mount tmpfs");
        std::fs::create_dir(mount.join("state")).expect("mkdir");
        std::fs::create_dir(mount.join("data")).expect("mkdir");
        // The gateway's state dir is on the small disk.
        std::os::unix::fs::symlink(mount.join("state"), g.state()).expect("symlink");
        Self { mount }
    }

    fn data(&self) -> PathBuf {
        self.mount.join("data")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Volumes mounted below go first.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.mount.to_string_lossy().into_owned();
        for target in mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|t| t.starts_with(&prefix))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn keeper_policy() -> String {
    policy(
        "counter",
        "[schedule]\ntick_us = 10000\n[snapshot]\ninterval_ms = 200",
    )
}

fn epoch(status: &serde_json::Value, m: &str) -> u64 {
    module(status, m)["snapshot_epoch"].as_u64().unwrap_or(0)
}

#[test]
fn a_module_that_fills_its_quota_volume_stops_there_and_snapshots_go_on() {
    let g = GatewayDir::new();
    let disk = SmallDisk::new(&g, 64);
    g.add_policy("keeper", &keeper_policy());
    g.add_policy(
        "filler",
        &policy(
            "disk_fill",
            &format!(
                "{}\n[schedule]\ntick_us = 20000",
                rw(&disk.data(), ", quota_mib = 8")
            ),
        ),
    );
    let gateway = g.start();
    gateway.wait_running(&["keeper", "filler"], STARTUP);
    gateway.wait_log("disk-fill: stopped after", Duration::from_secs(30));
    let log = gateway.log();
    let stopped =
        edgeward_tests::last_number_after(&log, "disk-fill: stopped after ").expect("MiB written");
    assert!(
        (4..=8).contains(&stopped),
        "wrote {stopped} MiB into an 8 MiB quota"
    );
    assert!(log.contains("No space left on device"), "not ENOSPC");
    assert!(log.contains("is its quota volume"), "no volume made");
    // The disk still has room, and the keeper's snapshots keep coming.
    let before = epoch(&gateway.try_status().expect("status"), "keeper");
    let status = gateway.wait_for(Duration::from_secs(10), "keeper's snapshots go on", |s| {
        epoch(s, "keeper") >= before + 5
    });
    assert!(status["snapshot_error"].is_null(), "{status}");
    let free = nix::sys::statvfs::statvfs(&disk.mount).expect("statvfs");
    assert!(free.blocks_available() * free.fragment_size() > 40 << 20);
    drop(gateway);
}

#[test]
fn a_module_filling_the_state_filesystem_without_a_quota_is_named() {
    let g = GatewayDir::new();
    let disk = SmallDisk::new(&g, 48);
    // Snapshots of 256 KiB: each commit needs new space, more than the
    // filler leaves (a counter's 100-byte records could go on in the
    // space its own compaction frees, and fail only by chance).
    g.add_policy(
        "keeper",
        &policy(
            "big_state",
            "[wasi]\nargs = [\"--kib\", \"256\"]\n[schedule]\ntick_us = 10000\n\
             [snapshot]\ninterval_ms = 200",
        ),
    );
    g.add_policy(
        "filler",
        &policy(
            "disk_fill",
            &format!(
                // The small disk is a tmpfs, whose pages are charged to the
                // writer's memory cgroup: room for all of them, so the disk
                // fills before the module's memory limit is reached.
                "{}\n[schedule]\ntick_us = 5000\n[resources]\nmemory_mib = 96",
                rw(&disk.data(), ", quota_mib = 0")
            ),
        ),
    );
    let gateway = g.start();
    gateway.wait_running(&["keeper", "filler"], STARTUP);
    gateway.wait_log("disk-fill: stopped after", Duration::from_secs(30));
    let status = gateway.wait_for(
        Duration::from_secs(10),
        "the snapshot error names filler",
        |s| {
            s["snapshot_error"]
                .as_str()
                .is_some_and(|e| e.contains("filler (") && e.contains("without a quota"))
        },
    );
    let error = status["snapshot_error"].as_str().unwrap_or("");
    assert!(error.contains("quota_mib"), "{error}");
    drop(gateway);
}
