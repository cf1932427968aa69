//! `edgeward check`: every policy and every module's wasm, all errors at once.
//!
//! Policies are checked here; the wasm files are validated, link-checked and
//! compiled by `edgeward-worker inspect` in a child process, so the
//! supervisor binary never contains a compiler.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use serde::Deserialize;

use crate::grant_access;
use crate::policy;

#[derive(Debug, Deserialize)]
struct Inspection {
    file: String,
    ok: bool,
    kind: Option<String>,
    #[serde(default)]
    handles_messages: bool,
    error: Option<String>,
}

/// Runs the check against the state directory `state` that `run` will
/// use; prints one line per module (and one per error) and
/// returns 0 if everything is valid, 1 otherwise.
///
/// # Errors
/// If the policy directory cannot be read or the worker cannot be run.
pub fn run(policies: &Path, state: &Path, worker_bin: &Path) -> anyhow::Result<i32> {
    let loaded = policy::load_dir(policies)
        .with_context(|| format!("cannot read policy directory {}", policies.display()))?;
    // The same rules across policies as `run` applies (rw dirs overlapping
    // each other, the state or the policy directory).
    let loaded = policy::check_across(loaded, state, &[]);
    if loaded.is_empty() {
        println!("no policies (*.toml) in {}", policies.display());
        return Ok(1);
    }
    let wasm_files: Vec<PathBuf> = loaded
        .iter()
        .filter_map(|l| l.result.as_ref().ok())
        .filter(|p| p.connector.is_none())
        .map(|p| p.wasm.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let inspections = inspect(worker_bin, &wasm_files)?;
    // As root, `run` gives each module its own uid: its granted dirs must
    // be reachable by a uid that owns nothing on their paths.
    let modules_get_own_uids = nix::unistd::geteuid().is_root();
    let mut failures = 0;
    for l in &loaded {
        let p = match &l.result {
            Err(errors) => {
                failures += 1;
                println!("{:<20} INVALID  {} error(s)", l.name, errors.len());
                for e in errors {
                    println!("    {e}");
                }
                continue;
            }
            Ok(p) => p,
        };
        let mut errors: Vec<String> = Vec::new();
        if modules_get_own_uids {
            errors.extend(
                grant_access::unreachable_dirs(p, grant_access::Accessor::AnyModule)
                    .iter()
                    .map(ToString::to_string),
            );
        }
        if let Some(connector) = &p.connector {
            errors.extend(check_connector(&l.file, connector)?);
            report(
                &l.name,
                &errors,
                &format!("{} connector", connector.kind),
                &p.wasm_sha256,
            );
            failures += usize::from(!errors.is_empty());
            continue;
        }
        let inspection = inspections.get(&p.wasm.to_string_lossy().into_owned());
        match inspection {
            Some(i)
                if i.ok
                    && i.kind.as_deref() == Some("reactor")
                    && !p.channels.subscribe.is_empty()
                    && !i.handles_messages =>
            {
                errors.push(format!(
                    "{}: channels.subscribe: module {} exports no ew_on_message and ew_alloc, so it cannot receive; add them (the Rust SDK's module! does) or remove the subscriptions",
                    l.file.display(),
                    p.wasm.display()
                ));
            }
            Some(i) if i.ok => {}
            other => {
                let why = other
                    .and_then(|i| i.error.clone())
                    .unwrap_or_else(|| "not inspected".into());
                let (line, col) = p.wasm_location;
                errors.push(format!(
                    "{}:{line}:{col}: module {}: {why}; rebuild it for wasm32-wasip1 or fix [module] wasm",
                    l.file.display(),
                    p.wasm.display()
                ));
            }
        }
        let what = format!(
            "{} ({})",
            p.wasm.display(),
            inspection.and_then(|i| i.kind.as_deref()).unwrap_or("?")
        );
        report(&l.name, &errors, &what, &p.wasm_sha256);
        failures += usize::from(!errors.is_empty());
    }
    for warning in unwired_channels(&loaded) {
        println!("warning: {warning}");
    }
    println!(
        "{} module(s), {} valid, {failures} invalid",
        loaded.len(),
        loaded.len() - failures
    );
    Ok(if failures == 0 { 0 } else { 1 })
}

/// Prints a module's line: ok with what it runs, or its errors.
fn report(name: &str, errors: &[String], what: &str, sha256: &str) {
    if errors.is_empty() {
        println!("{name:<20} ok       {what}, sha256 {}", &sha256[..12]);
    } else {
        println!("{name:<20} INVALID  {} error(s)", errors.len());
        for e in errors {
            println!("    {e}");
        }
    }
}

/// A connector's driver keys, checked by `edgeward-connector check` (which
/// owns their schema): one line per problem, naming the file and key.
///
/// # Errors
/// If the connector binary cannot be run or answers nonsense.
fn check_connector(
    file: &Path,
    connector: &policy::ConnectorPolicy,
) -> anyhow::Result<Vec<String>> {
    use std::io::Write as _;
    let bin = super::connector_bin();
    let mut child = Command::new(&bin)
        .arg("check")
        .arg(connector.kind)
        .args(&connector.connect)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!(
                "cannot run {} (install it beside edgeward or set EDGEWARD_CONNECTOR)",
                bin.display()
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(connector.config_toml.as_bytes())
            .context("cannot write to edgeward-connector check")?;
    }
    let output = child
        .wait_with_output()
        .context("edgeward-connector check")?;
    #[derive(serde::Deserialize)]
    struct Problem {
        key: String,
        message: String,
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let problems: Vec<Problem> = serde_json::from_str(text.trim())
        .with_context(|| format!("unexpected output from edgeward-connector check: {text}"))?;
    Ok(problems
        .into_iter()
        .map(|p| format!("{}: connector.{}: {}", file.display(), p.key, p.message))
        .collect())
}

/// Channels that are published but read by no one, or subscribed to but
/// written by no one (legal, but usually a typo in a channel name).
fn unwired_channels(loaded: &[policy::Loaded]) -> Vec<String> {
    let mut publishers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut subscribers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in loaded.iter().filter_map(|l| l.result.as_ref().ok()) {
        for c in &p.channels.publish {
            publishers.entry(c).or_default().push(&p.name);
        }
        for c in &p.channels.subscribe {
            subscribers.entry(c).or_default().push(&p.name);
        }
    }
    // A near miss is usually a typo: suggest the closest name of the other side.
    let hint = |channel: &str, other_side: &BTreeMap<&str, Vec<&str>>| {
        let names: Vec<&str> = other_side.keys().copied().collect();
        policy::error::did_you_mean(channel, &names)
            .map_or_else(String::new, |name| format!("; did you mean \"{name}\"?"))
    };
    let mut warnings = Vec::new();
    for (channel, who) in &publishers {
        if !subscribers.contains_key(channel) {
            warnings.push(format!(
                "channel \"{channel}\" is published by {} but no module subscribes to it; its messages go nowhere{}",
                who.join(", "),
                hint(channel, &subscribers)
            ));
        }
    }
    for (channel, who) in &subscribers {
        if !publishers.contains_key(channel) {
            warnings.push(format!(
                "channel \"{channel}\" is subscribed to by {} but no module publishes it{}",
                who.join(", "),
                hint(channel, &publishers)
            ));
        }
    }
    warnings
}

fn inspect(worker_bin: &Path, files: &[PathBuf]) -> anyhow::Result<BTreeMap<String, Inspection>> {
    if files.is_empty() {
        return Ok(BTreeMap::new());
    }
    let output = Command::new(worker_bin)
        .arg("inspect")
        .args(files)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| {
            format!(
                "cannot run {} (install it beside edgeward or set EDGEWARD_WORKER)",
                worker_bin.display()
            )
        })?;
    let mut map = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let i: Inspection = serde_json::from_str(line)
            .with_context(|| format!("unexpected output from edgeward-worker inspect: {line}"))?;
        map.insert(i.file.clone(), i);
    }
    Ok(map)
}
