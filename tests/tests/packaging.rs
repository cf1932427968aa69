//! The deployment files of `packaging/`, checked as a user would meet them:
//!
//! - `packaging/kubernetes/`: every manifest validates, strictly (no field
//!   the API does not know), against the Kubernetes versions of
//!   [`KUBERNETES_VERSIONS`], with PyPI's kubernetes-validate (its schemas
//!   are in the wheel; `scripts/setup` installs it in the peers venv); the
//!   kustomization lists them all; the ConfigMap's policies pass `edgeward
//!   check` laid out as kubelet mounts them, next to the wasm files the
//!   image of `packaging/Containerfile` ships; the reload container of the
//!   DaemonSet, run with busybox on such a mount, turns an atomic ConfigMap
//!   update into a SIGHUP that a real edgeward applies.
//! - `packaging/systemd/edgeward.service`: `systemd-analyze verify` finds
//!   nothing to say about it, it sets none of the options that break
//!   edgeward, and edgeward run with what it leaves (its capability
//!   bounding set and no_new_privs, through setpriv) has every sandbox
//!   layer and a quota volume. (Not under a real systemd: this machine's
//!   PID 1 is not one.)
//! - Across files: the flags and variables the DaemonSet and the unit give
//!   `edgeward` are ones it accepts, the metrics port, probes and scrape
//!   annotations agree, the grace periods are longer than the stop timeout,
//!   and the capabilities granted are exactly the ones
//!   `docs/operations.md` documents (the table `tests/tests/container.rs`
//!   pins and runs with).
//!
//! YAML is read with PyYAML from the same venv (kubernetes-validate needs
//! it).

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeward_tests::{bin, cli_on, guest, module, peers, policy, repo_root, GatewayDir};
use serde_json::Value;

/// The kubernetes-validate `scripts/setup` installs.
const KUBERNETES_VALIDATE: &str = "1.37.0";

/// The Kubernetes versions the manifests are validated against: the first
/// with `securityContext.appArmorProfile` (1.30), and the newest
/// kubernetes-validate 1.37.0 has schemas for.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// Start-up, compiling included, on a cold two-core CI machine.
const STARTUP: Duration = Duration::from_secs(60);

fn kubernetes_dir() -> PathBuf {
    repo_root().join("packaging/kubernetes")
}

fn unit_path() -> PathBuf {
    repo_root().join("packaging/systemd/edgeward.service")
}

/// Every manifest: the `*.yaml` files of `packaging/kubernetes` but the
/// kustomization (not an API object), sorted.
fn manifests() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(kubernetes_dir())
        .expect("read packaging/kubernetes")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no manifest in packaging/kubernetes");
    found
}

/// A program of the peers venv (`scripts/setup`).
fn venv_program(name: &str) -> PathBuf {
    let path = peers::peers_venv().join("bin").join(name);
    assert!(
        path.is_file(),
        "{} not found: run scripts/setup (it installs kubernetes-validate=={KUBERNETES_VALIDATE} there)",
        path.display()
    );
    path
}

/// Every YAML document of `path`, as JSON.
fn yaml(path: &Path) -> Vec<Value> {
    let out = Command::new(venv_program("python"))
        .args([
            "-c",
            "import json, sys, yaml\n\
             with open(sys.argv[1]) as f:\n    json.dump(list(yaml.safe_load_all(f)), sys.stdout)",
        ])
        .arg(path)
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "{} is not valid YAML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("PyYAML's JSON")
}

/// Every object of the manifests (read once).
fn objects() -> &'static [Value] {
    static OBJECTS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    OBJECTS.get_or_init(|| manifests().iter().flat_map(|p| yaml(p)).collect())
}

/// The object of `kind` named `name` in the manifests.
fn object(kind: &str, name: &str) -> Value {
    let found: Vec<Value> = objects()
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .cloned()
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind} {name} expected in packaging/kubernetes, found {}",
        found.len()
    );
    found.into_iter().next().expect("one")
}

fn daemonset() -> Value {
    object("DaemonSet", "edgeward")
}

/// The container `name` of the DaemonSet's pod.
fn container<'a>(daemonset: &'a Value, name: &str) -> &'a Value {
    daemonset["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in the DaemonSet"))
}

/// The value of environment variable `name` in `container`.
fn env<'a>(container: &'a Value, name: &str) -> &'a str {
    container["env"]
        .as_array()
        .and_then(|all| all.iter().find(|e| e["name"] == name))
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("no {name} in the env of container {}", container["name"]))
}

/// Where `container` mounts volume `volume`.
fn mount_path<'a>(container: &'a Value, volume: &str) -> &'a str {
    container["volumeMounts"]
        .as_array()
        .and_then(|all| all.iter().find(|m| m["name"] == volume))
        .and_then(|m| m["mountPath"].as_str())
        .unwrap_or_else(|| panic!("container {} mounts no {volume}", container["name"]))
}

/// The strings of a JSON array.
fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("not a string: {v}"))
                .to_owned()
        })
        .collect()
}

/// `--flag value` pairs of an argument list (each flag of edgeward's
/// `run` and `reload` takes one value, but `--allow-empty`).
fn flag_values(args: &[String]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let flag = &args[i];
        assert!(flag.starts_with("--"), "not a flag: {flag} in {args:?}");
        if let Some((name, value)) = flag.split_once('=') {
            pairs.push((name.to_owned(), value.to_owned()));
            i += 1;
        } else {
            let value = args
                .get(i + 1)
                .unwrap_or_else(|| panic!("{flag} has no value in {args:?}"));
            pairs.push((flag.clone(), value.clone()));
            i += 2;
        }
    }
    pairs
}

/// The capabilities of docs/operations.md's table ("Running in a
/// container"), without the `CAP_` prefix. `tests/tests/container.rs`
/// pins that table to the capabilities its container runs with.
fn documented_capabilities() -> BTreeSet<String> {
    let docs = std::fs::read_to_string(repo_root().join("docs/operations.md"))
        .expect("read docs/operations.md");
    let start = docs
        .find("| capability | why |")
        .expect("the capability table in docs/operations.md");
    let caps: BTreeSet<String> = docs[start..]
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cell = line.trim_matches('|').split(" | ").next().unwrap_or("");
            let cap = cell.trim().trim_matches('`');
            cap.strip_prefix("CAP_")
                .unwrap_or_else(|| panic!("not a capability: {cap}"))
                .to_owned()
        })
        .collect();
    assert!(caps.len() >= 5, "too few capabilities parsed: {caps:?}");
    caps
}

/// The settings of the unit, `(section, key, value)`, in order, comments
/// and blank lines left out.
fn unit_settings() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(unit_path()).expect("read the unit");
    let mut section = String::new();
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a setting: {line}"));
        settings.push((
            section.clone(),
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    settings
}

/// The one value of `[Service] key`.
fn service(key: &str) -> String {
    let values: Vec<String> = unit_settings()
        .into_iter()
        .filter(|(s, k, _)| s == "Service" && k == key)
        .map(|(_, _, v)| v)
        .collect();
    assert_eq!(
        values.len(),
        1,
        "one {key}= expected in the unit: {values:?}"
    );
    values.into_iter().next().expect("one")
}

/// `edgeward SUBCOMMAND --help`.
fn help(subcommand: &str) -> String {
    let out = Command::new(bin("edgeward"))
        .args([subcommand, "--help"])
        .output()
        .expect("run edgeward --help");
    assert!(out.status.success(), "edgeward {subcommand} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The long flags a help text names (`--state <STATE>` → `--state`).
fn help_flags(help: &str) -> BTreeSet<String> {
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.split(['=', '<'])
                .next()
                .unwrap_or(w)
                .trim_end_matches(['.', ':', ')'])
                .to_owned()
        })
        .collect()
}

/// The environment variables a help text names (`[env: EDGEWARD_STATE=]`).
fn help_env(help: &str) -> BTreeSet<String> {
    help.split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_owned)
        .collect()
}

/// A ConfigMap volume as kubelet writes it: each version of the keys in a
/// hidden timestamped directory, `..data` a symlink to the current one,
/// and each key a symlink through `..data`. An update is kubelet's atomic
/// write: the new version in a new directory, `..data` moved to it by one
/// rename, then the links of added keys made and those of removed keys
/// deleted, then the old directory removed.
struct ConfigMapVolume {
    dir: PathBuf,
    version: u32,
}

impl ConfigMapVolume {
    fn new(dir: &Path, data: &[(String, String)]) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir the volume");
        let mut volume = ConfigMapVolume {
            dir: dir.to_path_buf(),
            version: 0,
        };
        volume.update(data);
        volume
    }

    fn update(&mut self, data: &[(String, String)]) {
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        self.version += 1;
        let name = format!("..2024_05_01_12_00_{:02}.000000001", self.version);
        let new = self.dir.join(&name);
        std::fs::create_dir(&new).expect("mkdir a version");
        for (key, text) in data {
            std::fs::write(new.join(key), text).expect("write a key");
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("rename over ..data");
        for (key, _) in data {
            let link = self.dir.join(key);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(key), &link)
                    .expect("symlink a key");
            }
        }
        for entry in std::fs::read_dir(&self.dir)
            .expect("read the volume")
            .flatten()
        {
            let key = entry.file_name().to_string_lossy().into_owned();
            if !key.starts_with("..") && !data.iter().any(|(k, _)| *k == key) {
                std::fs::remove_file(entry.path()).expect("remove a key's link");
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).expect("remove the old version");
        }
    }
}

/// The ConfigMap's keys and texts.
fn configmap_data() -> Vec<(String, String)> {
    let configmap = object("ConfigMap", "edgeward-policies");
    let data = configmap["data"].as_object().expect("the ConfigMap's data");
    assert!(!data.is_empty(), "the ConfigMap holds no policy");
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("a string").to_owned()))
        .collect()
}

/// The wasm files the image ships, by packaging/Containerfile: the
/// sources of its `COPY guests/out/… DEST` and that destination.
fn image_guests() -> (Vec<String>, String) {
    let text = std::fs::read_to_string(repo_root().join("packaging/Containerfile"))
        .expect("read packaging/Containerfile");
    let copy: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .map(str::split_whitespace)
        .map(Iterator::collect::<Vec<&str>>)
        .find(|words| words.first().is_some_and(|w| w.starts_with("guests/out/")))
        .expect("a COPY guests/out/… in packaging/Containerfile");
    let (destination, sources) = copy.split_last().expect("COPY SRC… DEST");
    let stems = sources
        .iter()
        .map(|s| {
            s.strip_prefix("guests/out/")
                .and_then(|s| s.strip_suffix(".wasm"))
                .unwrap_or_else(|| panic!("not a guest: {s}"))
                .to_owned()
        })
        .collect();
    (stems, (*destination).to_owned())
}

/// Under `root`, the pod's view of the image and its volumes: the wasm
/// files where the image has them, and the ConfigMap volume holding
/// `data` where the DaemonSet mounts it. Returns the policy directory.
fn pod_filesystem(root: &Path, data: &[(String, String)]) -> (PathBuf, ConfigMapVolume) {
    let (guests, destination) = image_guests();
    let out = root.join(destination.trim_start_matches('/'));
    std::fs::create_dir_all(&out).expect("mkdir the image's guests");
    for stem in &guests {
        std::fs::copy(guest(stem), out.join(format!("{stem}.wasm"))).expect("copy a guest");
    }
    let daemonset = daemonset();
    let policies = mount_path(container(&daemonset, "edgeward"), "policies");
    let dir = root.join(policies.trim_start_matches('/'));
    let volume = ConfigMapVolume::new(&dir, data);
    (dir, volume)
}

#[test]
fn every_kubernetes_manifest_validates_strictly_against_the_pinned_versions() {
    let validate = venv_program("kubernetes-validate");
    let version = Command::new(&validate)
        .arg("--version")
        .output()
        .expect("run kubernetes-validate --version");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        KUBERNETES_VALIDATE,
        "kubernetes-validate's version in {}: pip install kubernetes-validate=={KUBERNETES_VALIDATE} there",
        peers::peers_venv().display()
    );
    let files = manifests();
    for k8s in KUBERNETES_VERSIONS {
        let out = Command::new(&validate)
            .args(["--strict", "--kubernetes-version", k8s])
            .args(&files)
            .output()
            .expect("run kubernetes-validate");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "kubernetes-validate --strict -k {k8s}:\n{text}"
        );
        // One "passed" line per object, and nothing else: a warning (an
        // unknown kind, a file with no object) fails too.
        let objects = objects().len();
        let passed = text
            .lines()
            .filter(|l| l.contains(" passed for resource "))
            .count();
        assert_eq!(
            passed, objects,
            "kubernetes-validate -k {k8s}: {objects} objects, {passed} passed:\n{text}"
        );
        assert_eq!(
            text.lines().count(),
            passed,
            "kubernetes-validate -k {k8s} said more than that they passed:\n{text}"
        );
    }
}

#[test]
fn the_kustomization_applies_every_manifest_in_the_namespace_they_are_made_for() {
    let kustomization = yaml(&kubernetes_dir().join("kustomization.yaml"));
    assert_eq!(kustomization.len(), 1, "one document in kustomization.yaml");
    let kustomization = &kustomization[0];
    let listed: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
    let files: BTreeSet<String> = manifests()
        .iter()
        .map(|p| {
            p.file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        listed, files,
        "kustomization.yaml's resources and the manifests of packaging/kubernetes differ"
    );
    let namespace = object("Namespace", "edgeward");
    assert_eq!(kustomization["namespace"], namespace["metadata"]["name"]);
    // The image kustomize rewrites is the DaemonSet's.
    let daemonset = daemonset();
    let image = container(&daemonset, "edgeward")["image"]
        .as_str()
        .expect("an image");
    let images = kustomization["images"].as_array().expect("images");
    assert!(
        images.iter().any(|i| i["name"]
            .as_str()
            .is_some_and(|n| image.split(':').next() == Some(n))),
        "kustomization.yaml's images do not name the DaemonSet's image {image}"
    );
    // The pod runs with the runtime class the manifests define.
    let runtime_class = daemonset["spec"]["template"]["spec"]["runtimeClassName"]
        .as_str()
        .expect("runtimeClassName");
    object("RuntimeClass", runtime_class);
}

#[test]
fn the_configmap_policies_pass_edgeward_check_mounted_beside_the_images_wasm() {
    let data = configmap_data();
    for (key, _) in &data {
        assert!(
            key.ends_with(".toml") && !key.starts_with('.'),
            "ConfigMap key {key}: edgeward reads NAME.toml files only"
        );
    }
    let root = tempfile::Builder::new()
        .prefix("edgeward-pod-")
        .tempdir()
        .expect("tempdir");
    let (policies, _volume) = pod_filesystem(root.path(), &data);
    let state = root.path().join("var/lib/edgeward");
    let out = Command::new(bin("edgeward"))
        .arg("check")
        .arg("--policies")
        .arg(&policies)
        .arg("--state")
        .arg(&state)
        .output()
        .expect("run edgeward check");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "edgeward check:\n{text}");
    for (key, _) in &data {
        let name = key.trim_end_matches(".toml");
        assert!(
            text.contains(&format!("{name:<20} ok")),
            "{name} not checked ok:\n{text}"
        );
    }
    let n = data.len();
    assert!(
        text.contains(&format!("{n} module(s), {n} valid, 0 invalid")),
        "{text}"
    );

    // The pod's paths are the image's: the ConfigMap replaces the policies
    // packaging/Containerfile sets EDGEWARD_POLICIES to, and the state and
    // control socket are where its VOLUMEs are.
    let containerfile = std::fs::read_to_string(repo_root().join("packaging/Containerfile"))
        .expect("read packaging/Containerfile");
    let daemonset = daemonset();
    let edgeward = container(&daemonset, "edgeward");
    let policy_dir = env(edgeward, "EDGEWARD_POLICIES");
    assert!(
        containerfile.contains(&format!("EDGEWARD_POLICIES={policy_dir}")),
        "the DaemonSet's EDGEWARD_POLICIES={policy_dir} is not the image's"
    );
    assert_eq!(mount_path(edgeward, "policies"), policy_dir);
    let state = env(edgeward, "EDGEWARD_STATE");
    assert_eq!(mount_path(edgeward, "state"), state);
    let control = env(edgeward, "EDGEWARD_CONTROL");
    assert_eq!(
        Path::new(control).parent(),
        Some(Path::new(mount_path(edgeward, "control")))
    );
    for volume in [state, mount_path(edgeward, "control")] {
        assert!(
            containerfile.contains(&format!("\"{volume}\"")),
            "{volume} is not a VOLUME of packaging/Containerfile"
        );
    }
}

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_reload_container_turns_a_configmap_update_into_a_reload_of_edgeward() {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox not found: apt-get install busybox-static (scripts/setup does)"
    );
    let daemonset = daemonset();
    let edgeward = container(&daemonset, "edgeward");
    let reloader = container(&daemonset, "reload-on-change");
    // It sees what edgeward sees: the same ConfigMap and state volumes, at
    // the paths its variables name, and edgeward's processes.
    assert_eq!(
        daemonset["spec"]["template"]["spec"]["shareProcessNamespace"], true,
        "the reload container cannot signal edgeward without a shared process namespace"
    );
    assert_eq!(mount_path(reloader, "policies"), env(reloader, "POLICIES"));
    assert_eq!(mount_path(reloader, "state"), env(reloader, "STATE"));
    assert_eq!(mount_path(edgeward, "policies"), env(reloader, "POLICIES"));
    assert_eq!(mount_path(edgeward, "state"), env(reloader, "STATE"));
    let command = strings(&reloader["command"]);
    assert_eq!(
        command[..2],
        ["/bin/sh", "-c"],
        "the reload container's command"
    );
    let script = &command[2];

    // edgeward on the ConfigMap's policies, mounted as kubelet does.
    let gateway_dir = GatewayDir::new();
    let mut data = configmap_data();
    let (policies, mut volume) = pod_filesystem(&gateway_dir.dir.path().join("pod"), &data);
    let gateway = gateway_dir.start_on(&policies, &[]);
    let names: Vec<String> = data
        .iter()
        .map(|(k, _)| k.trim_end_matches(".toml").to_owned())
        .collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let before = gateway.wait_running(&name_refs, STARTUP);

    // The script, as busybox runs it in its image.
    let applets = gateway_dir.dir.path().join("busybox-bin");
    std::fs::create_dir(&applets).expect("mkdir applets");
    for applet in ["sh", "readlink", "ls", "cat", "kill", "sleep", "echo", "["] {
        std::os::unix::fs::symlink(busybox, applets.join(applet)).expect("link an applet");
    }
    let log_path = gateway_dir.dir.path().join("reloader.log");
    let log = std::fs::File::create(&log_path).expect("create the log");
    let mut reloader_process = Killed(
        Command::new(applets.join("sh"))
            .arg("-c")
            .arg(script)
            .env_clear()
            .env("PATH", &applets)
            .env("POLICIES", &policies)
            .env("STATE", gateway_dir.state())
            .env("INTERVAL", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            // Its own group: its orphaned `sleep` is then reaped by the
            // test's orphan reaper (tests/src/orphans.rs).
            .process_group(0)
            .spawn()
            .expect("start the reload script"),
    );
    let reloader_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let wait_log = |needle: &str| {
        let deadline = Instant::now() + STARTUP;
        while !reloader_log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the reload script never said {needle:?}:\n{}",
                reloader_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_log("watching ");
    // Nothing changed: no signal, however many rounds.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !reloader_log().contains("SIGHUP"),
        "a signal with no change:\n{}",
        reloader_log()
    );

    // A new version of the ConfigMap: counter's arguments change, and a
    // module is added (a second counter).
    let counter = data
        .iter_mut()
        .find(|(k, _)| k == "counter.toml")
        .expect("a counter.toml in the ConfigMap");
    let changed = counter
        .1
        .replace("\"--every\", \"50\"", "\"--every\", \"5\"");
    assert_ne!(changed, counter.1, "counter.toml's args changed");
    counter.1 = changed.clone();
    data.push(("ticker.toml".into(), changed));
    volume.update(&data);

    wait_log(&format!("SIGHUP to edgeward (pid {})", gateway.pid()));
    let after = gateway.wait_for(STARTUP, "ticker added and counter restarted", |s| {
        s["modules"].as_array().is_some_and(|all| {
            all.iter()
                .any(|m| m["name"] == "ticker" && m["state"] == "running")
        }) && module(s, "counter")["state"] == "running"
            && module(s, "counter")["pid"] != module(&before, "counter")["pid"]
    });
    for name in names.iter().filter(|n| *n != "counter") {
        assert_eq!(
            module(&after, name)["pid"],
            module(&before, name)["pid"],
            "{name} did not change, but its worker was replaced; log:\n{}",
            gateway.log()
        );
    }
    // One signal for one update.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        reloader_log().matches("SIGHUP").count(),
        1,
        "{}",
        reloader_log()
    );

    // Kubelet's SIGTERM ends it at once (the trap), with status 0.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(reloader_process.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let status = edgeward_tests::wait_child(&mut reloader_process.0, Duration::from_secs(5))
        .expect("the reload script still runs 5 s after SIGTERM");
    assert!(status.success(), "the reload script's exit: {status}");
}

#[test]
fn the_flags_and_variables_given_to_edgeward_are_ones_it_accepts() {
    let run_help = help("run");
    let run_flags = help_flags(&run_help);
    let run_env = help_env(&run_help);
    assert!(
        run_flags.contains("--policies") && run_env.contains("EDGEWARD_POLICIES"),
        "the help text was not understood:\n{run_help}"
    );

    // The DaemonSet: arguments to the image's ENTRYPOINT, `edgeward run`.
    let daemonset = daemonset();
    let edgeward = container(&daemonset, "edgeward");
    assert!(
        edgeward["command"].is_null(),
        "the DaemonSet must keep the image's ENTRYPOINT (edgeward run)"
    );
    let args = flag_values(&strings(&edgeward["args"]));
    for (flag, _) in &args {
        assert!(
            run_flags.contains(flag),
            "the DaemonSet passes {flag}, which edgeward run does not take:\n{run_help}"
        );
    }
    for var in edgeward["env"].as_array().expect("env") {
        let name = var["name"].as_str().expect("a name");
        assert!(
            run_env.contains(name),
            "the DaemonSet sets {name}, which edgeward run does not read:\n{run_help}"
        );
    }

    // Its metrics: one port, named as the probes name it, and the one the
    // scrape annotations give.
    let value_of = |args: &[(String, String)], flag: &str| -> String {
        args.iter()
            .find(|(f, _)| f == flag)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {flag} in {args:?}"))
    };
    let metrics = value_of(&args, "--metrics");
    let port: u64 = metrics
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("--metrics {metrics}: no port"));
    let ports = edgeward["ports"].as_array().expect("ports");
    let named = ports
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a port named metrics");
    assert_eq!(named["containerPort"], port, "containerPort and --metrics");
    let annotations = &daemonset["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    let path = annotations["prometheus.io/path"]
        .as_str()
        .expect("prometheus.io/path");
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &edgeward[probe]["httpGet"];
        assert_eq!(get["port"], "metrics", "{probe}'s port");
        assert_eq!(get["path"], path, "{probe}'s path");
    }

    // The stop sequence ends within --stop-timeout-ms; kubelet waits
    // longer before its SIGKILL.
    let stop_ms: u64 = value_of(&args, "--stop-timeout-ms")
        .parse()
        .expect("--stop-timeout-ms is a number");
    let grace = daemonset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace * 1000 >= stop_ms + 5000,
        "terminationGracePeriodSeconds {grace} leaves too little beyond --stop-timeout-ms {stop_ms}"
    );

    // The unit: ExecStart is `edgeward run`, ExecReload `edgeward reload`.
    let exec_start: Vec<String> = service("ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(exec_start[..2], ["/usr/local/bin/edgeward", "run"]);
    let start_args = flag_values(&exec_start[2..]);
    for (flag, _) in &start_args {
        assert!(
            run_flags.contains(flag),
            "the unit passes {flag}, which edgeward run does not take:\n{run_help}"
        );
    }
    let exec_reload: Vec<String> = service("ExecReload")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(exec_reload[..2], ["/usr/local/bin/edgeward", "reload"]);
    let reload_help = help("reload");
    let reload_flags = help_flags(&reload_help);
    let reload_args = flag_values(&exec_reload[2..]);
    for (flag, _) in &reload_args {
        assert!(
            reload_flags.contains(flag),
            "the unit's ExecReload passes {flag}, which edgeward reload does not take:\n{reload_help}"
        );
    }
    // The reload goes to the socket the service listens on, in the
    // directories systemd makes for it.
    let control = value_of(&start_args, "--control");
    assert_eq!(value_of(&reload_args, "--control"), control);
    assert_eq!(
        Path::new(&control).parent(),
        Some(
            Path::new("/run")
                .join(service("RuntimeDirectory"))
                .as_path()
        ),
        "the control socket is not in the RuntimeDirectory"
    );
    assert_eq!(
        value_of(&start_args, "--state"),
        format!("/var/lib/{}", service("StateDirectory")),
        "the state is not the StateDirectory"
    );
    let stop_ms: u64 = value_of(&start_args, "--stop-timeout-ms")
        .parse()
        .expect("--stop-timeout-ms is a number");
    let timeout: u64 = service("TimeoutStopSec")
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .expect("TimeoutStopSec=Ns");
    assert!(
        timeout * 1000 >= stop_ms + 5000,
        "TimeoutStopSec {timeout}s leaves too little beyond --stop-timeout-ms {stop_ms}"
    );
}

#[test]
fn the_capabilities_granted_are_exactly_the_documented_ones() {
    let documented = documented_capabilities();

    let daemonset = daemonset();
    let security = &container(&daemonset, "edgeward")["securityContext"];
    let added: BTreeSet<String> = strings(&security["capabilities"]["add"])
        .into_iter()
        .collect();
    assert_eq!(
        added, documented,
        "the DaemonSet's capabilities and docs/operations.md's table differ"
    );
    assert_eq!(
        strings(&security["capabilities"]["drop"]),
        ["ALL"],
        "the DaemonSet must drop every other capability"
    );
    assert_ne!(
        security["privileged"], true,
        "a privileged pod has every capability"
    );
    // The reload container needs none.
    let reloader = &container(&daemonset, "reload-on-change")["securityContext"];
    assert_eq!(strings(&reloader["capabilities"]["drop"]), ["ALL"]);
    assert!(reloader["capabilities"]["add"].is_null());

    let bounding: BTreeSet<String> = service("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| c.strip_prefix("CAP_").unwrap_or(c).to_owned())
        .collect();
    assert_eq!(
        bounding, documented,
        "the unit's CapabilityBoundingSet and docs/operations.md's table differ"
    );
}

/// Options that break edgeward (each is explained where it is left out,
/// at the end of the unit's [Service] section).
const BREAKING: [(&str, &str); 15] = [
    (
        "ProtectControlGroups",
        "makes /sys/fs/cgroup read-only: no module cgroups",
    ),
    ("RestrictNamespaces", "forbids the workers' namespaces"),
    ("PrivateUsers", "module uids would not be mapped"),
    (
        "PrivateNetwork",
        "no --metrics, no connections for connectors",
    ),
    (
        "MemoryDenyWriteExecute",
        "workers map compiled wasm executable",
    ),
    (
        "SystemCallFilter",
        "binds the workers on top of their own allowlist",
    ),
    ("PrivateDevices", "no loop devices for quota volumes"),
    ("DevicePolicy", "no loop devices for quota volumes"),
    ("ProtectClock", "implies DeviceAllow=: no loop devices"),
    // A mount namespace of the service's own: quota volumes would be
    // mounted there only.
    ("ProtectSystem", "a mount namespace of the service's own"),
    ("ProtectHome", "a mount namespace of the service's own"),
    ("PrivateTmp", "a mount namespace of the service's own"),
    (
        "ProtectKernelTunables",
        "a mount namespace of the service's own",
    ),
    (
        "ProtectKernelModules",
        "a mount namespace of the service's own",
    ),
    ("ProtectProc", "a mount namespace of the service's own"),
];

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_and_keeps_what_edgeward_needs() {
    let settings = unit_settings();
    for (option, why) in BREAKING {
        let set: Vec<&(String, String, String)> = settings
            .iter()
            .filter(|(_, k, v)| {
                k == option && !["no", "false", "", "default"].contains(&v.as_str())
            })
            .collect();
        assert!(set.is_empty(), "the unit sets {option} ({why}): {set:?}");
    }
    for (key, value) in [
        // SIGTERM to edgeward alone: it stops its workers itself, after the
        // final snapshots.
        ("KillMode", "mixed"),
        // Its module cgroups are below the service's.
        ("Delegate", "yes"),
        // A module's OOM kill must not stop the service.
        ("OOMPolicy", "continue"),
    ] {
        assert_eq!(service(key), value, "{key}");
    }

    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        eprintln!("skipped: systemd-analyze is not installed (apt-get install systemd)");
        return;
    };
    // verify checks that each command exists: the same unit, with the
    // binary's path the one this build has.
    let text = std::fs::read_to_string(unit_path()).expect("read the unit");
    let installed = "/usr/local/bin/edgeward ";
    assert_eq!(
        text.matches(installed).count(),
        2,
        "ExecStart and ExecReload run {installed}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("edgeward.service");
    std::fs::write(
        &unit,
        text.replace(installed, &format!("{} ", bin("edgeward").display())),
    )
    .expect("write the unit");
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze verify");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {} ({}):\n{said}",
        unit.display(),
        out.status
    );

    // And it does speak about a unit with mistakes: a key it does not
    // know, a value it cannot parse. (Capability names it does not check:
    // the_capabilities_granted_are_exactly_the_documented_ones does.)
    let broken = std::fs::read_to_string(&unit)
        .expect("read")
        .replace("KillMode=mixed", "KillMode=mixd\nKillMood=mixed");
    std::fs::write(&unit, broken).expect("write");
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze verify");
    let out = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.contains("KillMood") && out.contains("mixd"),
        "systemd-analyze verify did not flag the mistakes:\n{out}"
    );
}

#[test]
fn the_units_capabilities_and_no_new_privs_are_enough_for_every_layer_and_a_quota_volume() {
    // What the unit leaves edgeward, as setpriv (util-linux) gives it: the
    // bounding set (all a root process keeps across exec) and no_new_privs.
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("setpriv not found: apt-get install util-linux");
    let caps: Vec<String> = service("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert_eq!(service("NoNewPrivileges"), "yes");

    let gateway = GatewayDir::new();
    let data = gateway.dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir data");
    gateway.add_policy(
        "counter",
        &policy(
            "counter",
            &format!(
                "[wasi]\nargs = [\"--every\", \"10\"]\n\
                 dirs = [{{ host = \"{}\", guest = \"/data\", mode = \"rw\" }}]\n\
                 [schedule]\ntick_us = 10000",
                data.display()
            ),
        ),
    );
    gateway.add_policy(
        "sensor",
        &policy(
            "sensor",
            "[channels]\npublish = [\"readings\"]\n[schedule]\ntick_us = 100000",
        ),
    );
    let log_path = gateway.dir.path().join("log");
    let log = std::fs::File::create(&log_path).expect("create the log");
    edgeward_tests::orphans::reap_adopted();
    let mut edgeward = Killed(
        Command::new(&setpriv)
            .arg(format!("--bounding-set=-all,{}", caps.join(",")))
            .arg("--no-new-privs")
            .arg("--")
            .arg(bin("edgeward"))
            .arg("run")
            .arg("--policies")
            .arg(gateway.policies())
            .arg("--state")
            .arg(gateway.state())
            .arg("--control")
            .arg(gateway.control())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start setpriv edgeward run"),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + STARTUP;
    let status = loop {
        let (code, out, _) = cli_on(&gateway.control(), &["status", "--json"]);
        if code == 0 {
            let status: Value = serde_json::from_str(&out).expect("status --json");
            if ["counter", "sensor"]
                .iter()
                .all(|m| module(&status, m)["state"] == "running")
            {
                break status;
            }
        }
        if let Ok(Some(exit)) = edgeward.0.try_wait() {
            panic!("edgeward ended ({exit}); log:\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "not running in time; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Every layer in force: own uids, namespaces, cgroups, seccomp,
    // Landlock; and the rw dir is a quota volume (loop device, mke2fs,
    // mount).
    assert_eq!(status["warnings"], serde_json::json!([]), "log:\n{}", log());
    for name in ["counter", "sensor"] {
        assert_eq!(
            module(&status, name)["degraded"],
            serde_json::json!([]),
            "{name}; log:\n{}",
            log()
        );
    }
    assert!(
        log().contains(&format!("rw dir {} is its quota volume", data.display())),
        "no quota volume; log:\n{}",
        log()
    );
    // And it stops as systemd stops it: SIGTERM, exit 0.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(edgeward.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let exit = edgeward_tests::wait_child(&mut edgeward.0, STARTUP).expect("edgeward stops");
    assert!(exit.success(), "{exit}; log:\n{}", log());
}
