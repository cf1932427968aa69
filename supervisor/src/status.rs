//! `status`: the stable JSON interface and the table for people.
//!
//! JSON: `{"modules":[{"name","state","pid","restarts","uptime_ms","rss_kib",
//! "snapshot_epoch","msgs_in","msgs_out","last_error", ...}]}`. Fields may be
//! added, never renamed or retyped.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// The whole report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusReport {
    /// One entry per policy file, sorted by name.
    pub modules: Vec<ModuleStatus>,
    /// Host-wide sandbox layers that are missing, in words.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// One entry per ring (publisher → subscriber on a channel).
    #[serde(default)]
    pub rings: Vec<crate::channels::RingStatus>,
    /// Device flushes (`fdatasync`/`fsync`) the snapshot store issued.
    #[serde(default)]
    pub snapshot_flushes: u64,
    /// Why snapshots are not becoming durable right now (`null` when they
    /// are): the store's last error, in words, while it keeps retrying.
    #[serde(default)]
    pub snapshot_error: Option<String>,
    /// Median time of the recent snapshot rounds, from asking the modules
    /// to durable, µs (`null` before the first).
    #[serde(default)]
    pub snapshot_commit_p50_us: Option<u64>,
    /// 99th percentile of the same, µs.
    #[serde(default)]
    pub snapshot_commit_p99_us: Option<u64>,
    /// Log and output lines the supervisor dropped because its stdout or
    /// stderr could not take them (a stuck or slow reader).
    #[serde(default)]
    pub log_dropped: u64,
    /// Control connections refused because too many were open.
    #[serde(default)]
    pub control_refused: u64,
}

/// One module's row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleStatus {
    /// Module name (policy file stem).
    pub name: String,
    /// `starting`, `running`, `backoff`, `failed`, `stopped` or `upgrading`.
    pub state: String,
    /// Worker pid while one exists.
    pub pid: Option<u32>,
    /// sha256 of the wasm it runs (its policy's, or an upgrade's).
    #[serde(default)]
    pub wasm_sha256: Option<String>,
    /// The language its policy's wasm was written in (`rust`, `go`, `c`,
    /// `c++`), `null` when the toolchain did not record it.
    #[serde(default)]
    pub language: Option<String>,
    /// Pid of the spare worker waiting to take over (`[restart] spare`),
    /// once it is ready to.
    #[serde(default)]
    pub spare_pid: Option<u32>,
    /// Times the worker was restarted.
    pub restarts: u32,
    /// Milliseconds since the current worker became ready (0 if not running).
    pub uptime_ms: u64,
    /// Resident memory of the worker, KiB (0 if none).
    pub rss_kib: u64,
    /// Newest acknowledged (durable) snapshot epoch; `null` if none.
    pub snapshot_epoch: Option<u64>,
    /// Messages handled.
    pub msgs_in: u64,
    /// Messages sent.
    pub msgs_out: u64,
    /// Why it last failed, in words (cleared only by a later failure).
    pub last_error: Option<String>,
    /// `reactor` or `command` once known.
    pub kind: Option<String>,
    /// Ticks delivered to the current worker (from its heartbeats).
    #[serde(default)]
    pub ticks: u64,
    /// Sandbox layers this module runs without, in words (empty: all enforced).
    #[serde(default)]
    pub degraded: Vec<String>,
    /// `channel()`/`send()` calls on channels the policy does not grant.
    #[serde(default)]
    pub denials: u64,
    /// Messages dropped for full subscriber rings (`on_full = "drop"`).
    #[serde(default)]
    pub dropped: u64,
    /// Sends refused (full ring with `error` or after `block` timed out,
    /// or a message over `max_message_kib`).
    #[serde(default)]
    pub refused: u64,
    /// Wake-ups this module wrote to subscribers' eventfds.
    #[serde(default)]
    pub wakes: u64,
    /// Median lateness of the current worker's recent ticks (its last
    /// 1024), from each tick's due time to the start of its `ew_on_tick`
    /// call, µs; `null` for a module that does not tick.
    #[serde(default)]
    pub tick_lateness_p50_us: Option<u64>,
    /// 99th percentile of the same, µs.
    #[serde(default)]
    pub tick_lateness_p99_us: Option<u64>,
    /// Largest of the same, µs.
    #[serde(default)]
    pub tick_lateness_max_us: Option<u64>,
    /// A connector's own counters and its network; `null` for a wasm
    /// module (`docs/connectors.md`).
    #[serde(default)]
    pub connector: Option<ConnectorStatus>,
}

/// What `status` shows of a connector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectorStatus {
    /// Its counters as of its last report (totals over its workers, kept
    /// in its snapshots), `connected` and `queued` live.
    pub counters: edgeward_ipc::control::ConnectorCounters,
    /// Connections its sandbox granted and denied.
    pub network: crate::slot::NetworkCounts,
}

/// Renders the report as an aligned table.
pub fn table(report: &StatusReport) -> String {
    let mut rows = vec![[
        "MODULE".to_string(),
        "STATE".into(),
        "PID".into(),
        "RESTARTS".into(),
        "UPTIME".into(),
        "RSS".into(),
        "LAST ERROR".into(),
    ]];
    for m in &report.modules {
        rows.push([
            m.name.clone(),
            m.state.clone(),
            m.pid.map_or("-".into(), |p| p.to_string()),
            m.restarts.to_string(),
            if m.uptime_ms > 0 {
                human_duration(m.uptime_ms)
            } else {
                "-".into()
            },
            if m.rss_kib > 0 {
                format!("{:.1}M", m.rss_kib as f64 / 1024.0)
            } else {
                "-".into()
            },
            m.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut out = String::new();
    for warning in &report.warnings {
        let _ = writeln!(out, "WARNING: {warning}");
    }
    if let Some(error) = &report.snapshot_error {
        let _ = writeln!(out, "WARNING: {error}");
    }
    if report.log_dropped > 0 {
        let _ = writeln!(
            out,
            "WARNING: {} log lines dropped: edgeward's stdout/stderr could not keep up",
            report.log_dropped
        );
    }
    out.push_str(&aligned(&rows));
    out
}

/// Messages a second (handled + sent) per module between two reports
/// `elapsed` apart. A module whose counters went back (a new worker) or
/// that is new counts from zero.
pub fn message_rates(
    before: &StatusReport,
    after: &StatusReport,
    elapsed: std::time::Duration,
) -> std::collections::BTreeMap<String, f64> {
    let seconds = elapsed.as_secs_f64().max(1e-3);
    after
        .modules
        .iter()
        .map(|m| {
            let total = m.msgs_in + m.msgs_out;
            let earlier = before
                .modules
                .iter()
                .find(|b| b.name == m.name)
                .map_or(0, |b| b.msgs_in + b.msgs_out);
            (
                m.name.clone(),
                total.saturating_sub(earlier) as f64 / seconds,
            )
        })
        .collect()
}

/// The `status --watch` table: language, state, messages a second (`-`
/// before the second report), memory, restarts, last error; a summary line
/// first.
pub fn watch_table(
    report: &StatusReport,
    rates: Option<&std::collections::BTreeMap<String, f64>>,
) -> String {
    let running = report
        .modules
        .iter()
        .filter(|m| m.state == "running")
        .count();
    let total: f64 = rates.map_or(0.0, |r| r.values().sum());
    let mut out = format!(
        "edgeward: {} module(s), {running} running, {} msgs/s\n",
        report.modules.len(),
        if rates.is_some() {
            format!("{total:.0}")
        } else {
            "-".into()
        }
    );
    let mut rows = vec![[
        "MODULE".to_string(),
        "LANG".into(),
        "STATE".into(),
        "MSGS/S".into(),
        "RSS".into(),
        "RESTARTS".into(),
        "LAST ERROR".into(),
    ]];
    for m in &report.modules {
        rows.push([
            m.name.clone(),
            m.language.clone().unwrap_or_else(|| "-".into()),
            m.state.clone(),
            rates
                .and_then(|r| r.get(&m.name))
                .map_or_else(|| "-".into(), |rate| format!("{rate:.0}")),
            if m.rss_kib > 0 {
                format!("{:.1}M", m.rss_kib as f64 / 1024.0)
            } else {
                "-".into()
            },
            m.restarts.to_string(),
            m.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    out.push_str(&aligned(&rows));
    out
}

/// Rows as left-aligned columns, the last one unpadded.
fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn human_duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h{}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(msgs_in: u64, msgs_out: u64) -> StatusReport {
        StatusReport {
            modules: vec![ModuleStatus {
                wasm_sha256: None,
                language: Some("c".into()),
                name: "counter".into(),
                state: "running".into(),
                pid: Some(12),
                spare_pid: None,
                restarts: 1,
                uptime_ms: 1500,
                rss_kib: 2048,
                snapshot_epoch: None,
                msgs_in,
                msgs_out,
                last_error: Some("killed by SIGKILL".into()),
                kind: Some("reactor".into()),
                ticks: 0,
                degraded: vec![],
                denials: 0,
                dropped: 0,
                refused: 0,
                wakes: 0,
                tick_lateness_p50_us: Some(40),
                tick_lateness_p99_us: Some(180),
                tick_lateness_max_us: Some(900),
                connector: None,
            }],
            warnings: vec![],
            rings: vec![],
            snapshot_flushes: 0,
            snapshot_error: None,
            snapshot_commit_p50_us: None,
            snapshot_commit_p99_us: None,
            log_dropped: 0,
            control_refused: 0,
        }
    }

    #[test]
    fn the_watch_table_shows_language_and_message_rates() {
        let before = report(100, 50);
        let after = report(300, 150);
        let rates = message_rates(&before, &after, std::time::Duration::from_secs(2));
        assert_eq!(rates["counter"], 150.0);
        let t = watch_table(&after, Some(&rates));
        assert!(
            t.starts_with("edgeward: 1 module(s), 1 running, 150 msgs/s\n"),
            "{t}"
        );
        assert!(t.contains("MODULE   LANG  STATE    MSGS/S  RSS"), "{t}");
        assert!(t.contains("counter  c     running  150     2.0M  1"), "{t}");
        // The first frame has no rate yet; a new worker's counters restart.
        assert!(watch_table(&after, None).contains("running  -"));
        let restarted = message_rates(&after, &report(3, 0), std::time::Duration::from_secs(1));
        assert_eq!(restarted["counter"], 0.0);
    }

    #[test]
    fn json_has_the_stable_fields() {
        let report = report(0, 0);
        let v: serde_json::Value = serde_json::to_value(&report).unwrap();
        let m = &v["modules"][0];
        for key in [
            "name",
            "state",
            "pid",
            "restarts",
            "uptime_ms",
            "rss_kib",
            "snapshot_epoch",
            "msgs_in",
            "msgs_out",
            "last_error",
            "language",
            "tick_lateness_p50_us",
            "tick_lateness_p99_us",
            "tick_lateness_max_us",
        ] {
            assert!(m.get(key).is_some(), "missing {key}");
        }
        let t = table(&report);
        assert!(t.starts_with("MODULE"));
        assert!(t.contains("counter  running  12"));
        assert!(t.contains("1.5s"));
    }
}
