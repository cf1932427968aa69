//! From TOML text to a [`Policy`]: syntax and schema errors first (the
//! first one stops parsing), then every value check, collecting all errors.
//!
//! Defaults (also in `docs/policy.md`): no args, env or dirs; no channels;
//! `capacity_kib = 64`, `max_message_kib = 16`, `on_full = "block"`,
//! `wait = "park"`; `memory_mib = 32`, `cpu_percent = 25`, `pids = 8`,
//! `call_budget_ms = 20`; `tick_us = 0`; `policy = "on-failure"`,
//! `backoff_ms = [5, 5000]`, `intensity = { max = 5, window_s = 60 }`,
//! `watchdog_ms = max(1000, 3 × call_budget_ms)`; `interval_ms = 0`;
//! `after = []`; no `[group]` (a group of its own), and `strategy =
//! "one_for_one"` in a `[group]` that does not give it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use toml::Spanned;

use super::error::{did_you_mean, PolicyError};
use super::schema::{self, WaitMode};
use super::{
    Channels, ConnectorPolicy, Dir, Group, Policy, Resources, Restart, CONNECTOR_KINDS,
    CONNECTOR_WASM, DEFAULT_WATCHDOG_MS, MAX_WATCHDOG_MS, MIN_WATCHDOG_MS, WATCHDOG_BUDGETS,
};

/// The fix for a name that breaks the module-name rules.
const NAME_RULES: &str =
    "use lower-case letters, digits, '-' and '_' (at most 63, starting with a letter or digit)";

/// Parses and validates the policy `text` read from `file`.
pub(super) fn parse(
    file: &Path,
    name: &str,
    text: &str,
    digests: &mut super::WasmDigests,
) -> Result<Policy, Vec<PolicyError>> {
    let mut errors = Vec::new();
    if !valid_name(name) {
        errors.push(PolicyError::whole_file(
            file,
            format!("module name \"{name}\" (the file name) is not allowed"),
            "rename the file to lower-case letters, digits, '-' and '_' (at most 63, starting with a letter or digit), e.g. temp-alert.toml",
        ));
    }
    let raw: schema::File = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            errors.push(from_toml_error(file, text, &e));
            return Err(errors);
        }
    };
    let mut v = Validator {
        file,
        text,
        errors,
        digests,
    };
    let policy = v.policy(name, raw);
    if v.errors.is_empty() {
        Ok(policy)
    } else {
        Err(v.errors)
    }
}

struct Validator<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<PolicyError>,
    digests: &'a mut super::WasmDigests,
}

impl Validator<'_> {
    fn error<T>(&mut self, at: &Spanned<T>, key: &str, reason: String, fix: &str) {
        self.errors.push(PolicyError::at(
            self.file,
            self.text,
            at.span().start,
            key,
            reason,
            fix,
        ));
    }

    /// Checks an optional number against `range`, returning it or `default`.
    fn number<N>(
        &mut self,
        value: Option<Spanned<N>>,
        key: &str,
        default: N,
        range: std::ops::RangeInclusive<N>,
        fix: &str,
    ) -> N
    where
        N: Copy + PartialOrd + std::fmt::Display,
    {
        match value {
            None => default,
            Some(v) if range.contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                let reason = format!(
                    "{key} = {} is out of range {}..={}",
                    v.get_ref(),
                    range.start(),
                    range.end()
                );
                self.error(&v, key, reason, fix);
                default
            }
        }
    }

    fn policy(&mut self, name: &str, raw: schema::File) -> Policy {
        let module_at = raw.module.as_ref().map(|m| m.span().start);
        let module = raw.module.map(Spanned::into_inner).unwrap_or_default();
        let connector = match raw.connector {
            Some(table) => self.connector(table, raw.network.connect),
            None => {
                if let Some(first) = raw.network.connect.first() {
                    self.error(
                        first,
                        "network.connect",
                        "[network] connect is for connectors: a wasm module has no network".into(),
                        "remove it, and reach the network through a connector's channels (docs/connectors.md)",
                    );
                }
                None
            }
        };
        let ((wasm, wasm_sha256, wasm_language), wasm_location) = match (&module.wasm, &connector) {
            (Some(path), None) => (
                self.wasm(path, module.sha256.as_ref()),
                super::error::line_col(self.text, path.span().start),
            ),
            (None, Some((c, at))) => (
                (
                    PathBuf::from(CONNECTOR_WASM),
                    connector_sha256(c),
                    Some(c.kind),
                ),
                *at,
            ),
            (Some(path), Some(_)) => {
                self.error(
                    path,
                    "module.wasm",
                    "a policy has either [module] wasm or a [connector], not both".into(),
                    "remove module.wasm (a connector is a native worker), or put the connector in a policy file of its own",
                );
                ((PathBuf::new(), String::new(), None), (0, 0))
            }
            (None, None) => {
                const FIX: &str = "add wasm = \"path/to/module.wasm\" to [module], or a [connector] table (docs/connectors.md)";
                self.errors.push(match module_at {
                    Some(at) => PolicyError::at(
                        self.file,
                        self.text,
                        at,
                        "module.wasm",
                        "missing key \"wasm\" in [module]",
                        FIX,
                    ),
                    None => PolicyError::whole_file(
                        self.file,
                        "no [module] table (a wasm module) and no [connector] table",
                        FIX,
                    ),
                });
                ((PathBuf::new(), String::new(), None), (0, 0))
            }
        };
        let connector = connector.map(|(c, _)| c);
        if connector.is_some() {
            let wasm_only = [
                ("wasi.args", !raw.wasi.args.is_empty()),
                ("wasi.env", !raw.wasi.env.is_empty()),
                ("wasi.dirs", !raw.wasi.dirs.is_empty()),
                ("schedule.tick_us", raw.schedule.tick_us.is_some()),
                ("restart.spare", raw.restart.spare == Some(true)),
                ("module.sha256", module.sha256.is_some()),
                // A connector's sends never block: a full ring drops for
                // that subscriber; its reader sleeps on the eventfds.
                ("channels.on_full", raw.channels.on_full.is_some()),
                ("channels.wait", raw.channels.wait.is_some()),
            ];
            for (key, given) in wasm_only {
                if given {
                    self.errors.push(PolicyError::whole_file(
                        self.file,
                        format!("{key} is for wasm modules, not connectors"),
                        format!("remove {key}: a connector's keys are in [connector] (docs/connectors.md)"),
                    ));
                }
            }
        }
        let (after, after_locations) = self.after(name, module.after);
        let group = raw.group.and_then(|g| self.group(g));
        let env = self.env(raw.wasi.env);
        let dirs = self.dirs(raw.wasi.dirs);
        let channels = self.channels(raw.channels);
        let resources = self.resources(raw.resources);
        let tick_us = match raw.schedule.tick_us {
            Some(t) if *t.get_ref() != 0 && !(100..=3_600_000_000).contains(t.get_ref()) => {
                let reason = format!("schedule.tick_us = {} is out of range", t.get_ref());
                self.error(
                    &t,
                    "schedule.tick_us",
                    reason,
                    "use 0 (no ticks) or 100..=3600000000 microseconds",
                );
                0
            }
            Some(t) => t.into_inner(),
            None => 0,
        };
        let restart = self.restart(raw.restart, resources.call_budget_ms);
        let snapshot_interval_ms = match raw.snapshot.interval_ms {
            Some(i) if *i.get_ref() != 0 && *i.get_ref() < 10 => {
                let reason = format!("snapshot.interval_ms = {} is too short", i.get_ref());
                self.error(
                    &i,
                    "snapshot.interval_ms",
                    reason,
                    "use 0 (only on stop, upgrade or request) or at least 10",
                );
                0
            }
            Some(i) => i.into_inner(),
            None => 0,
        };
        Policy {
            name: name.to_string(),
            file: self.file.to_path_buf(),
            wasm,
            wasm_location,
            wasm_sha256,
            wasm_language,
            args: raw.wasi.args,
            env,
            dirs,
            channels,
            resources,
            tick_us,
            restart,
            snapshot_interval_ms,
            after,
            after_locations,
            group,
            connector,
        }
    }

    /// `[connector]` with `[network] connect`: a known kind, valid
    /// endpoints; the rest of the table is the driver's (checked by
    /// `edgeward-connector check` in `edgeward check` and when it starts).
    /// Returns the policy part and the location of `kind`.
    fn connector(
        &mut self,
        table: Spanned<toml::Table>,
        connect: Vec<Spanned<String>>,
    ) -> Option<(ConnectorPolicy, (usize, usize))> {
        let at = super::error::line_col(self.text, table.span().start);
        let mut table = table.into_inner();
        let kind = match table.remove("kind") {
            Some(toml::Value::String(kind)) => CONNECTOR_KINDS.iter().copied().find(|k| *k == kind),
            _ => None,
        };
        let Some(kind) = kind else {
            self.errors.push(PolicyError::at(
                self.file,
                self.text,
                self.text.find("[connector]").unwrap_or(0),
                "connector.kind",
                "[connector] needs kind = one of the connector kinds".to_string(),
                format!(
                    "add kind = \"{}\" (see docs/connectors.md)",
                    CONNECTOR_KINDS.join("\", \"")
                ),
            ));
            return None;
        };
        let mut endpoints = Vec::new();
        for entry in connect {
            match crate::net_grant::resolve::parse_endpoint(entry.get_ref()) {
                Ok(_) if endpoints.contains(entry.get_ref()) => {
                    let reason = format!("network.connect lists \"{}\" twice", entry.get_ref());
                    self.error(&entry, "network.connect", reason, "list each endpoint once");
                }
                Ok(_) => endpoints.push(entry.into_inner()),
                Err(reason) => self.error(
                    &entry,
                    "network.connect",
                    format!(
                        "network.connect entry \"{}\" is not an endpoint",
                        entry.get_ref()
                    ),
                    &reason,
                ),
            }
        }
        let mut read_files = Vec::new();
        let base = self.file.parent().unwrap_or(Path::new("."));
        named_files(&mut table, base, &mut read_files);
        read_files.sort();
        read_files.dedup();
        let config_toml = toml::to_string(&table).unwrap_or_default();
        Some((
            ConnectorPolicy {
                kind,
                config_toml,
                connect: endpoints,
                read_files,
            },
            at,
        ))
    }

    /// `[module] after`: valid module names, none twice, not the module
    /// itself; with the location of each.
    fn after(
        &mut self,
        name: &str,
        raw: Vec<Spanned<String>>,
    ) -> (Vec<String>, Vec<(usize, usize)>) {
        let mut after = Vec::new();
        let mut locations = Vec::new();
        for entry in raw {
            let other = entry.get_ref();
            if !valid_name(other) {
                let reason = format!("module.after names \"{other}\", which is not a module name");
                self.error(&entry, "module.after", reason, NAME_RULES);
            } else if after.contains(other) {
                let reason = format!("module.after lists \"{other}\" twice");
                self.error(&entry, "module.after", reason, "list each module once");
            } else if other == name {
                let reason = format!("start order cycle: {name} → {name}");
                self.error(
                    &entry,
                    "module.after",
                    reason,
                    "remove one of these from an `after` list",
                );
            } else {
                locations.push(super::error::line_col(self.text, entry.span().start));
                after.push(entry.into_inner());
            }
        }
        (after, locations)
    }

    /// `[group]`, or `None` (with an error) if its name is not allowed.
    fn group(&mut self, raw: schema::GroupSection) -> Option<Group> {
        if !valid_name(raw.name.get_ref()) {
            let reason = format!("group.name \"{}\" is not allowed", raw.name.get_ref());
            self.error(&raw.name, "group.name", reason, NAME_RULES);
            return None;
        }
        let at = raw
            .strategy
            .as_ref()
            .map_or(raw.name.span().start, |s| s.span().start);
        Some(Group {
            location: super::error::line_col(self.text, at),
            strategy: raw.strategy.map(Spanned::into_inner).unwrap_or_default(),
            name: raw.name.into_inner(),
        })
    }

    /// The module's absolute path, sha256 and language (see
    /// `wasm_language.rs`).
    fn wasm(
        &mut self,
        path: &Spanned<String>,
        pin: Option<&Spanned<String>>,
    ) -> (PathBuf, String, Option<&'static str>) {
        let base = self.file.parent().unwrap_or(Path::new("."));
        let wasm = base.join(path.get_ref());
        let wasm = std::fs::canonicalize(&wasm)
            .or_else(|_| std::path::absolute(&wasm))
            .unwrap_or(wasm);
        let (sha, language) = match self.digests.of(&wasm) {
            Ok(digest) => digest,
            Err(e) => {
                let reason = format!("cannot read module file {}: {e}", wasm.display());
                self.error(
                    path,
                    "module.wasm",
                    reason,
                    "build it (scripts/setup builds the examples) or fix the path; it is relative to the policy file",
                );
                return (wasm, String::new(), None);
            }
        };
        if let Some(pin) = pin {
            let want = pin.get_ref().to_ascii_lowercase();
            if want.len() != 64 || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.error(
                    pin,
                    "module.sha256",
                    "module.sha256 is not 64 hex digits".into(),
                    "put the output of `sha256sum FILE.wasm` here, or remove the pin",
                );
            } else if want != sha {
                let reason = format!(
                    "sha256 pin mismatch: {} has sha256 {sha}, the policy pins {want}",
                    wasm.display()
                );
                self.error(
                    pin,
                    "module.sha256",
                    reason,
                    "deploy the pinned build, or update the pin if this file is the one you mean to run",
                );
            }
        }
        (wasm, sha, language)
    }

    fn env(
        &mut self,
        raw: std::collections::BTreeMap<Spanned<String>, String>,
    ) -> Vec<(String, String)> {
        let mut env = Vec::new();
        for (key, value) in raw {
            let k = key.get_ref();
            if k.is_empty() || k.contains('=') || k.contains('\0') || value.contains('\0') {
                self.error(
                    &key,
                    "wasi.env",
                    format!("environment variable name \"{k}\" is not valid"),
                    "use a non-empty name without '=' or NUL",
                );
                continue;
            }
            env.push((k.clone(), value));
        }
        env
    }

    fn dirs(&mut self, raw: Vec<Spanned<schema::DirEntry>>) -> Vec<Dir> {
        let mut dirs = Vec::new();
        let mut guests = BTreeSet::new();
        for entry in raw {
            let d = entry.get_ref();
            // Relative host paths are relative to the policy file, like `wasm`.
            let base = self.file.parent().unwrap_or(Path::new("."));
            let host = base.join(&d.host);
            let host = std::fs::canonicalize(&host).unwrap_or(host);
            if !host.is_dir() {
                let reason = format!("wasi.dirs host \"{}\" is not an existing directory", d.host);
                self.error(
                    &entry,
                    "wasi.dirs.host",
                    reason,
                    "create it (mkdir -p) or fix the path",
                );
                continue;
            }
            if !d.guest.starts_with('/') || d.guest.split('/').any(|c| c == "..") {
                let reason = format!(
                    "wasi.dirs guest \"{}\" must be an absolute path without \"..\"",
                    d.guest
                );
                self.error(
                    &entry,
                    "wasi.dirs.guest",
                    reason,
                    "use a path such as /data",
                );
                continue;
            }
            if !guests.insert(d.guest.clone()) {
                let reason = format!("wasi.dirs guest \"{}\" is granted twice", d.guest);
                self.error(
                    &entry,
                    "wasi.dirs.guest",
                    reason,
                    "keep one entry per guest path",
                );
                continue;
            }
            if d.mode == schema::DirMode::Rw && host == Path::new("/") {
                self.error(
                    &entry,
                    "wasi.dirs.host",
                    "wasi.dirs grants \"/\" read-write".into(),
                    "grant a directory of the module's own",
                );
                continue;
            }
            let quota_mib = match (&d.quota_mib, d.mode) {
                (None, schema::DirMode::Rw) => super::DEFAULT_QUOTA_MIB,
                (None, schema::DirMode::Ro) => 0,
                (Some(q), schema::DirMode::Ro) => {
                    self.error(
                        q,
                        "wasi.dirs.quota_mib",
                        "wasi.dirs quota_mib is set on a read-only dir".into(),
                        "remove it, or make the dir mode = \"rw\"",
                    );
                    continue;
                }
                (Some(q), schema::DirMode::Rw) if *q.get_ref() > super::MAX_QUOTA_MIB => {
                    let reason = format!(
                        "wasi.dirs quota_mib = {} is out of range 0..={}",
                        q.get_ref(),
                        super::MAX_QUOTA_MIB
                    );
                    self.error(
                        q,
                        "wasi.dirs.quota_mib",
                        reason,
                        "use at most 1048576 (1 TiB)",
                    );
                    continue;
                }
                (Some(q), schema::DirMode::Rw) => *q.get_ref(),
            };
            dirs.push(Dir {
                host,
                guest: d.guest.clone(),
                mode: d.mode,
                quota_mib,
                location: super::error::line_col(self.text, entry.span().start),
            });
        }
        dirs
    }

    fn channels(&mut self, raw: schema::ChannelsSection) -> Channels {
        let publish = self.channel_names(raw.publish, "channels.publish");
        let subscribe = self.channel_names(raw.subscribe, "channels.subscribe");
        let capacity_kib = match raw.capacity_kib {
            Some(c) if !(4..=65536).contains(c.get_ref()) || !c.get_ref().is_power_of_two() => {
                let reason = format!(
                    "channels.capacity_kib = {} is not a power of two in 4..=65536",
                    c.get_ref()
                );
                self.error(&c, "channels.capacity_kib", reason, "use e.g. 64");
                64
            }
            Some(c) => c.into_inner(),
            None => 64,
        };
        let max_message_kib = match raw.max_message_kib {
            Some(m) if *m.get_ref() == 0 || *m.get_ref() > capacity_kib / 2 => {
                let reason = format!(
                    "channels.max_message_kib = {} must be between 1 and half of capacity_kib ({capacity_kib})",
                    m.get_ref()
                );
                self.error(
                    &m,
                    "channels.max_message_kib",
                    reason,
                    "lower it or raise capacity_kib",
                );
                16.min(capacity_kib / 2)
            }
            Some(m) => m.into_inner(),
            None => 16.min(capacity_kib / 2),
        };
        let wait = match raw.wait {
            None => WaitMode::Park,
            Some(w) => match parse_wait(w.get_ref()) {
                Some(mode) => mode,
                None => {
                    let reason = format!("channels.wait = \"{}\" is not a wait mode", w.get_ref());
                    self.error(
                        &w,
                        "channels.wait",
                        reason,
                        "use \"park\" or \"spin:<µs>\" with 1..=10000 µs, e.g. \"spin:50\"",
                    );
                    WaitMode::Park
                }
            },
        };
        Channels {
            publish,
            subscribe,
            capacity_kib,
            max_message_kib,
            on_full: raw.on_full.unwrap_or_default(),
            wait,
        }
    }

    fn channel_names(&mut self, raw: Vec<Spanned<String>>, key: &str) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut names = Vec::new();
        for name in raw {
            if !valid_name(name.get_ref()) {
                let reason = format!("channel name \"{}\" is not allowed", name.get_ref());
                self.error(
                    &name,
                    key,
                    reason,
                    "use lower-case letters, digits, '-' and '_' (at most 63)",
                );
            } else if !seen.insert(name.get_ref().clone()) {
                let reason = format!("channel \"{}\" is listed twice", name.get_ref());
                self.error(&name, key, reason, "list each channel once");
            } else {
                names.push(name.into_inner());
            }
        }
        names
    }

    fn resources(&mut self, raw: schema::ResourcesSection) -> Resources {
        Resources {
            memory_mib: self.number(
                raw.memory_mib,
                "resources.memory_mib",
                32,
                1..=65536,
                "give the guest's memory cap in MiB, e.g. 32",
            ),
            cpu_percent: self.number(
                raw.cpu_percent,
                "resources.cpu_percent",
                25,
                1..=6400,
                "give percent of one core, e.g. 25 (200 = two cores)",
            ),
            pids: self.number(
                raw.pids,
                "resources.pids",
                8,
                1..=4096,
                "give the number of processes/threads, e.g. 8",
            ),
            call_budget_ms: self.number(
                raw.call_budget_ms,
                "resources.call_budget_ms",
                20,
                1..=60_000,
                "give the budget of one guest call in ms, e.g. 20",
            ),
        }
    }

    /// `[restart]`; `call_budget_ms` is the module's (validated) budget,
    /// which the watchdog must leave room for.
    fn restart(&mut self, raw: schema::RestartSection, call_budget_ms: u32) -> Restart {
        let (backoff_min_ms, backoff_max_ms) = match raw.backoff_ms {
            None => (5, 5000),
            Some(b) => match b.get_ref().as_slice() {
                [min, max] if 1 <= *min && min <= max && *max <= 3_600_000 => (*min, *max),
                other => {
                    let reason = format!("restart.backoff_ms = {other:?} is not [min, max] with 1 <= min <= max <= 3600000");
                    self.error(
                        &b,
                        "restart.backoff_ms",
                        reason,
                        "use two numbers of milliseconds, e.g. [5, 5000]",
                    );
                    (5, 5000)
                }
            },
        };
        let (intensity_max, intensity_window_s) = match raw.intensity {
            None => (5, 60),
            Some(i) if i.get_ref().max >= 1 && i.get_ref().window_s >= 1 => {
                (i.get_ref().max, i.get_ref().window_s)
            }
            Some(i) => {
                self.error(
                    &i,
                    "restart.intensity",
                    "restart.intensity needs max >= 1 and window_s >= 1".into(),
                    "e.g. { max = 5, window_s = 60 }",
                );
                (5, 60)
            }
        };
        // A module busy within its call budget sends no heartbeat: the
        // watchdog must wait at least WATCHDOG_BUDGETS budgets before it kills.
        let budget = u64::from(call_budget_ms);
        let budget_given = !self
            .errors
            .iter()
            .any(|e| e.key == "resources.call_budget_ms");
        let default_watchdog = DEFAULT_WATCHDOG_MS.max(WATCHDOG_BUDGETS * budget);
        let watchdog_ms = match raw.watchdog_ms {
            None => default_watchdog,
            Some(w) if *w.get_ref() == 0 => 0,
            Some(w) if !(MIN_WATCHDOG_MS..=MAX_WATCHDOG_MS).contains(w.get_ref()) => {
                let reason = format!("restart.watchdog_ms = {} is out of range", w.get_ref());
                let fix = format!(
                    "use 0 (no watchdog) or {MIN_WATCHDOG_MS}..={MAX_WATCHDOG_MS} milliseconds"
                );
                self.error(&w, "restart.watchdog_ms", reason, &fix);
                default_watchdog
            }
            Some(w) if budget_given && *w.get_ref() < WATCHDOG_BUDGETS * budget => {
                let ms = *w.get_ref();
                let reason = format!(
                    "restart.watchdog_ms = {ms} is less than {WATCHDOG_BUDGETS} × resources.call_budget_ms = {budget}: a module busy within its call budget would be killed"
                );
                let fix = format!(
                    "raise restart.watchdog_ms to at least {}, lower resources.call_budget_ms to at most {}, or set watchdog_ms = 0 (no watchdog)",
                    WATCHDOG_BUDGETS * budget,
                    ms / WATCHDOG_BUDGETS
                );
                self.error(&w, "restart.watchdog_ms", reason, &fix);
                default_watchdog
            }
            Some(w) => w.into_inner(),
        };
        Restart {
            policy: raw.policy.unwrap_or_default(),
            backoff_min_ms,
            backoff_max_ms,
            intensity_max,
            intensity_window_s,
            spare: raw.spare.unwrap_or(false),
            watchdog_ms,
        }
    }
}

/// `park` or `spin:<µs>` with 1..=10000 µs.
/// What identifies a connector's configuration, as a module's wasm hash
/// does: a change makes a reload restart it.
fn connector_sha256(c: &ConnectorPolicy) -> String {
    let mut hash = Sha256::new();
    for part in [c.kind, &c.config_toml, &c.connect.join("\n")] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(hash.finalize())
}

/// Collects the string values of keys ending in `_file`, at any depth,
/// made absolute against `base` (the policy's directory) in the table too:
/// the connector reads them as given, whatever its working directory.
fn named_files(table: &mut toml::Table, base: &Path, out: &mut Vec<String>) {
    fn walk(key: &str, value: &mut toml::Value, base: &Path, out: &mut Vec<String>) {
        match value {
            toml::Value::String(path) if key.ends_with("_file") => {
                let absolute = base.join(&*path).to_string_lossy().into_owned();
                *path = absolute.clone();
                out.push(absolute);
            }
            toml::Value::Table(t) => t.iter_mut().for_each(|(k, v)| walk(k, v, base, out)),
            toml::Value::Array(items) => items.iter_mut().for_each(|v| walk(key, v, base, out)),
            _ => {}
        }
    }
    table.iter_mut().for_each(|(k, v)| walk(k, v, base, out));
}

fn parse_wait(text: &str) -> Option<WaitMode> {
    if text == "park" {
        return Some(WaitMode::Park);
    }
    let micros: u32 = text.strip_prefix("spin:")?.parse().ok()?;
    (1..=10_000)
        .contains(&micros)
        .then_some(WaitMode::Spin { micros })
}

/// Module and channel names: `[a-z0-9][a-z0-9_-]{0,62}`.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && name.len() <= 63
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
}

/// Turns a TOML or schema error into a located, actionable error.
fn from_toml_error(file: &Path, text: &str, e: &toml::de::Error) -> PolicyError {
    let at = e.span().map_or(0, |s| s.start);
    let message = e.message();
    let section = section_at(text, at);
    let place = if section.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in [{section}]")
    };
    let quoted = backticked(message);
    let dotted = |k: &str| {
        if section.is_empty() {
            k.to_string()
        } else {
            format!("{section}.{k}")
        }
    };
    if message.starts_with("unknown field") {
        let field = quoted.first().copied().unwrap_or("?");
        let expected = &quoted[1.min(quoted.len())..];
        let fix = match did_you_mean(field, expected) {
            Some(s) => format!("did you mean \"{s}\"?"),
            None if expected.is_empty() => "remove it (see docs/policy.md)".to_string(),
            None => format!("remove it; known keys here: {}", expected.join(", ")),
        };
        return PolicyError::at(
            file,
            text,
            at,
            dotted(field),
            format!("unknown key \"{field}\" {place}"),
            fix,
        );
    }
    if message.starts_with("missing field") {
        let field = quoted.first().copied().unwrap_or("?");
        let fix = if field == "module" {
            "add a [module] table with wasm = \"path/to/module.wasm\"".to_string()
        } else {
            format!("add {field} = ... {place} (see docs/policy.md)")
        };
        return PolicyError::at(
            file,
            text,
            at,
            dotted(field),
            format!("missing key \"{field}\" {place}"),
            fix,
        );
    }
    let key = key_at(text, at);
    if message.starts_with("unknown variant") {
        let value = quoted.first().copied().unwrap_or("?");
        let expected = &quoted[1.min(quoted.len())..];
        let fix = match did_you_mean(value, expected) {
            Some(s) => format!("did you mean \"{s}\"?"),
            None => format!("use one of: {}", expected.join(", ")),
        };
        return PolicyError::at(
            file,
            text,
            at,
            dotted(&key),
            format!("\"{value}\" is not a valid value for {}", dotted(&key)),
            fix,
        );
    }
    if message.starts_with("invalid type")
        || message.starts_with("invalid value")
        || message.starts_with("invalid length")
    {
        return PolicyError::at(
            file,
            text,
            at,
            dotted(&key),
            format!("wrong type for {}: {message}", dotted(&key)),
            "see docs/policy.md for the key's type and an example",
        );
    }
    PolicyError::at(
        file,
        text,
        at,
        "",
        format!("not valid TOML: {}", message.trim()),
        "fix the syntax at this position",
    )
}

/// The words between backticks in a serde message, in order.
fn backticked(message: &str) -> Vec<&str> {
    message.split('`').skip(1).step_by(2).collect()
}

/// Name of the `[table]` (or `[[array]]`) whose body, or header, contains
/// byte offset `at` (a missing key is reported at its table's header).
fn section_at(text: &str, at: usize) -> String {
    let at = text.floor_char_boundary(at.min(text.len()));
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let before = &text[..line_end];
    before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .unwrap_or_default()
}

/// The key on the line containing byte offset `at` (`key = value`).
fn key_at(text: &str, at: usize) -> String {
    let at = text.floor_char_boundary(at.min(text.len()));
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    line.split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"')
        .to_string()
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
