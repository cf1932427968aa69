//! `/metrics`: a [`Published`] view in the Prometheus text format, through
//! `prometheus-client`'s encoder (names, escaping, `_total` suffixes,
//! histogram buckets are its job). The families and their labels are
//! listed in docs/operations.md ("Metrics reference"); a test pins that
//! table to [`FAMILIES`].

use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::counters::{DenialKind, EndCause};
use super::probe;
use super::published::Published;

/// Every family `/metrics` carries (as exposed, counters with `_total`),
/// with its type: what docs/operations.md lists.
#[cfg(test)]
pub const FAMILIES: [(&str, &str); 26] = [
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
    ("edgeward_module_log_lines_dropped_total", "counter"),
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
    ("edgeward_log_lines_dropped_total", "counter"),
    ("edgeward_metrics_view_age_seconds", "gauge"),
];

/// The states `edgeward_module_state` has one series each for.
pub const STATES: [&str; 8] = [
    "waiting",
    "starting",
    "running",
    "stopping",
    "backoff",
    "failed",
    "stopped",
    "upgrading",
];

/// The text of `/metrics` for `view`, with `now` as the time ages count to.
pub fn text(view: std::sync::Arc<Published>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(View(view)));
    let mut out = String::new();
    // Writing to a String cannot fail; a failing collector would be a bug
    // here, and an empty answer is what Prometheus then reports.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

/// The `Content-Type` of [`text`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Debug)]
struct View(std::sync::Arc<Published>);

type Result = std::result::Result<(), std::fmt::Error>;

/// One family: its descriptor, then a sample per label set.
fn gauge<'a, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, V)>,
) -> Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// As [`gauge`], for a counter (`name` without `_total`).
fn counter<'a, V: EncodeCounterValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, V)>,
) -> Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        family
            .encode_family(&labels)?
            .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

/// A histogram sample from per-bucket counts (not cumulative) and bounds.
fn histogram_buckets(bounds: &[f64], counts: &[u64]) -> Vec<(f64, u64)> {
    bounds
        .iter()
        .copied()
        .chain(std::iter::once(f64::INFINITY))
        .zip(counts.iter().copied())
        .collect()
}

impl Collector for View {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result {
        let view = &*self.0;
        let e = &mut encoder;
        let now = SystemTime::now();
        let rows = || view.status.modules.iter().zip(&view.modules);
        // Which cgroup files count each module, found once per scrape.
        let usage: Vec<probe::UsageFiles> = view
            .modules
            .iter()
            .map(|f| probe::UsageFiles::of(&f.cgroup_dirs))
            .collect();
        fn module(name: &str) -> Vec<(&str, &str)> {
            vec![("module", name)]
        }
        let protocol = edgeward_ipc::PROTOCOL_VERSION.to_string();
        gauge(
            e,
            "edgeward_build_info",
            "The running edgeward: version, control protocol and architecture (always 1).",
            [(
                vec![
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("protocol", protocol.as_str()),
                    ("arch", std::env::consts::ARCH),
                ],
                1u64,
            )],
        )?;
        gauge(
            e,
            "edgeward_module_up",
            "1 while the module's worker is running, else 0.",
            rows().map(|(m, _)| (module(&m.name), u64::from(m.state == "running"))),
        )?;
        gauge(
            e,
            "edgeward_module_state",
            "1 for the state the module is in, 0 for the others.",
            rows().flat_map(|(m, _)| {
                STATES.iter().map(move |state| {
                    (
                        vec![("module", m.name.as_str()), ("state", *state)],
                        u64::from(m.state == *state),
                    )
                })
            }),
        )?;
        counter(
            e,
            "edgeward_module_restarts",
            "Workers started again after one ended, by the cause of the end.",
            rows().flat_map(|(m, f)| {
                EndCause::ALL.iter().map(move |cause| {
                    (
                        vec![("module", m.name.as_str()), ("cause", cause.as_str())],
                        f.counters.restarts.get(cause).copied().unwrap_or(0),
                    )
                })
            }),
        )?;
        gauge(
            e,
            "edgeward_module_uptime_seconds",
            "Seconds since the current worker became ready (0 without one).",
            rows().map(|(m, _)| (module(&m.name), m.uptime_ms as f64 / 1000.0)),
        )?;
        gauge(
            e,
            "edgeward_module_memory_bytes",
            "Memory the module's cgroup charges (its worker's pages and kernel memory).",
            rows()
                .zip(&usage)
                .filter_map(|((m, _), u)| Some((module(&m.name), u.memory_bytes()?))),
        )?;
        gauge(
            e,
            "edgeward_module_private_memory_bytes",
            "Private memory (USS) of the module's worker process.",
            rows().filter_map(|(m, _)| Some((module(&m.name), probe::private_bytes(m.pid?)?))),
        )?;
        counter(
            e,
            "edgeward_module_cpu_seconds",
            "CPU time of the module's cgroup (of its current worker where it has no cgroup CPU counter).",
            rows().zip(&usage).filter_map(|((m, _), u)| {
                let seconds = u
                    .cpu_seconds()
                    .or_else(|| probe::process_cpu_seconds(m.pid?))?;
                Some((module(&m.name), seconds))
            }),
        )?;
        counter(
            e,
            "edgeward_module_messages_received",
            "Messages the module handled.",
            rows().map(|(m, _)| (module(&m.name), m.msgs_in)),
        )?;
        counter(
            e,
            "edgeward_module_messages_sent",
            "Messages the module sent (once per send, whatever the number of subscribers).",
            rows().map(|(m, _)| (module(&m.name), m.msgs_out)),
        )?;
        counter(
            e,
            "edgeward_module_messages_dropped",
            "Messages the module's sends dropped or had refused (full rings, oversized).",
            rows().map(|(m, _)| (module(&m.name), m.dropped + m.refused)),
        )?;
        counter(
            e,
            "edgeward_module_log_lines_dropped",
            "Output and log lines of the module dropped by its line rate limit.",
            rows().map(|(m, f)| (module(&m.name), f.counters.log_dropped)),
        )?;
        fn ring(r: &crate::channels::RingStatus) -> Vec<(&str, &str)> {
            vec![
                ("channel", r.channel.as_str()),
                ("from", r.from.as_str()),
                ("to", r.to.as_str()),
            ]
        }
        gauge(
            e,
            "edgeward_ring_depth",
            "Messages written to the ring and not yet handled by its subscriber.",
            view.status.rings.iter().map(|r| (ring(r), r.depth)),
        )?;
        counter(
            e,
            "edgeward_ring_corrupt",
            "Times the ring was found corrupt and reset.",
            view.status.rings.iter().map(|r| (ring(r), r.corrupt)),
        )?;
        counter(
            e,
            "edgeward_module_denials",
            "Capabilities the module asked for and was refused, by kind (each also a `denied` log event).",
            rows().flat_map(|(m, f)| {
                DenialKind::ALL.iter().map(move |kind| {
                    (
                        vec![("module", m.name.as_str()), ("kind", kind.as_str())],
                        f.counters.denials.get(kind).copied().unwrap_or(0),
                    )
                })
            }),
        )?;
        counter(
            e,
            "edgeward_module_traps",
            "Run-time failures of the guest, by kind (wasm trap, call budget, seccomp, out of memory).",
            rows().flat_map(|(m, f)| {
                EndCause::ALL
                    .iter()
                    .filter(|c| c.is_trap())
                    .map(move |kind| {
                        (
                            vec![("module", m.name.as_str()), ("kind", kind.as_str())],
                            f.counters.traps.get(kind).copied().unwrap_or(0),
                        )
                    })
            }),
        )?;
        let snapshots = || rows().filter_map(|(m, f)| Some((m, f.snapshot?)));
        gauge(
            e,
            "edgeward_snapshot_epoch",
            "Epoch of the module's newest durable snapshot.",
            snapshots().map(|(m, s)| (module(&m.name), s.epoch)),
        )?;
        gauge(
            e,
            "edgeward_snapshot_age_seconds",
            "Seconds since the module's newest snapshot became durable (made by this run of edgeward).",
            snapshots().filter_map(|(m, s)| {
                let age = now.duration_since(s.committed_at?).unwrap_or_default();
                Some((module(&m.name), age.as_secs_f64()))
            }),
        )?;
        gauge(
            e,
            "edgeward_snapshot_bytes",
            "Size of the module's newest durable snapshot, bytes.",
            snapshots().map(|(m, s)| (module(&m.name), s.bytes)),
        )?;
        counter(
            e,
            "edgeward_snapshot_flushes",
            "Device flushes (fdatasync/fsync) the snapshot store issued.",
            [(vec![], view.status.snapshot_flushes)],
        )?;
        {
            let h = &view.totals.snapshot_commit;
            let mut family = e.encode_descriptor(
                "edgeward_snapshot_commit_seconds",
                "Snapshot rounds that made something durable: from asking the modules to the flush's return.",
                None,
                MetricType::Histogram,
            )?;
            family.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                h.sum,
                h.counts.iter().sum(),
                &histogram_buckets(h.bounds, &h.counts),
                None,
            )?;
        }
        counter(
            e,
            "edgeward_reloads",
            "Reloads of the policies carried out (SIGHUP or `edgeward reload`).",
            [(vec![], view.totals.reloads)],
        )?;
        counter(
            e,
            "edgeward_upgrades",
            "Module upgrades that ended, by result.",
            ["committed", "rolled_back"].into_iter().map(|result| {
                (
                    vec![("result", result)],
                    view.totals.upgrades.get(result).copied().unwrap_or(0),
                )
            }),
        )?;
        {
            let bounds: Vec<f64> = edgeward_ipc::control::LATENESS_BUCKETS_US
                .iter()
                .map(|&us| us as f64 / 1e6)
                .collect();
            let mut family = e.encode_descriptor(
                "edgeward_tick_lateness_seconds",
                "How late the module's ticks (a connector's polls) started after their due time.",
                None,
                MetricType::Histogram,
            )?;
            for (m, f) in rows() {
                let Some(h) = &f.lateness else { continue };
                let labels = module(&m.name);
                family
                    .encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        h.sum_us as f64 / 1e6,
                        h.count(),
                        &histogram_buckets(&bounds, &h.counts),
                        None,
                    )?;
            }
        }
        counter(
            e,
            "edgeward_log_lines_dropped",
            "Lines edgeward dropped because its stdout or stderr could not keep up.",
            [(vec![], view.status.log_dropped)],
        )?;
        gauge(
            e,
            "edgeward_metrics_view_age_seconds",
            "Age of the view these figures come from (the event loop refreshes it every second).",
            [(
                vec![],
                now.duration_since(view.made_at)
                    .unwrap_or_default()
                    .as_secs_f64(),
            )],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::counters::bump;
    use crate::metrics::published::{ModuleFacts, SnapshotFacts};
    use crate::status::ModuleStatus;

    fn row(name: &str, state: &str) -> ModuleStatus {
        serde_json::from_value(serde_json::json!({
            "name": name, "state": state, "pid": null, "restarts": 2, "uptime_ms": 1500,
            "rss_kib": 0, "snapshot_epoch": 7, "msgs_in": 10, "msgs_out": 20,
            "last_error": null, "kind": "reactor", "dropped": 1, "refused": 2,
        }))
        .expect("a status row")
    }

    fn view() -> Published {
        let mut view = Published::empty();
        view.status.modules = vec![row("alpha", "running"), row("beta", "backoff")];
        view.status.rings = vec![serde_json::from_value(serde_json::json!({
            "channel": "temp", "from": "alpha", "to": "beta", "depth": 3,
            "depth_bytes": 48, "drops": 0, "corrupt": 1,
        }))
        .expect("a ring")];
        let mut alpha = ModuleFacts::default();
        bump(&mut alpha.counters.restarts, EndCause::Trap);
        bump(&mut alpha.counters.traps, EndCause::Trap);
        bump(&mut alpha.counters.denials, DenialKind::Channel);
        let mut lateness = edgeward_ipc::control::LatenessHistogram::default();
        lateness.record(30);
        lateness.record(700);
        alpha.lateness = Some(lateness);
        alpha.snapshot = Some(SnapshotFacts {
            epoch: 7,
            bytes: 12,
            committed_at: Some(SystemTime::now()),
        });
        view.modules = vec![alpha, ModuleFacts::default()];
        view.totals.snapshot_commit.observe(0.003);
        view
    }

    #[test]
    fn every_documented_family_is_exposed_with_its_type_and_no_other() {
        let text = text(std::sync::Arc::new(view()));
        let mut typed: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let (name, kind) = l.split_once(' ').expect("name and type");
                (name.to_string(), kind.to_string())
            })
            .collect();
        typed.sort();
        let mut expected: Vec<(String, String)> = FAMILIES
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        expected.sort();
        assert_eq!(typed, expected, "{text}");
    }

    #[test]
    fn samples_carry_their_labels_and_values() {
        let text = text(std::sync::Arc::new(view()));
        for sample in [
            r#"edgeward_module_up{module="alpha"} 1"#,
            r#"edgeward_module_up{module="beta"} 0"#,
            r#"edgeward_module_state{module="beta",state="backoff"} 1"#,
            r#"edgeward_module_state{module="beta",state="running"} 0"#,
            r#"edgeward_module_restarts_total{module="alpha",cause="trap"} 1"#,
            r#"edgeward_module_restarts_total{module="alpha",cause="oom"} 0"#,
            r#"edgeward_module_traps_total{module="alpha",kind="trap"} 1"#,
            r#"edgeward_module_denials_total{module="alpha",kind="channel"} 1"#,
            r#"edgeward_module_denials_total{module="beta",kind="network"} 0"#,
            r#"edgeward_module_messages_received_total{module="alpha"} 10"#,
            r#"edgeward_module_messages_dropped_total{module="alpha"} 3"#,
            r#"edgeward_module_uptime_seconds{module="alpha"} 1.5"#,
            r#"edgeward_ring_depth{channel="temp",from="alpha",to="beta"} 3"#,
            r#"edgeward_ring_corrupt_total{channel="temp",from="alpha",to="beta"} 1"#,
            r#"edgeward_snapshot_epoch{module="alpha"} 7"#,
            r#"edgeward_snapshot_bytes{module="alpha"} 12"#,
            r#"edgeward_tick_lateness_seconds_bucket{module="alpha",le="5e-05"} 1"#,
            r#"edgeward_tick_lateness_seconds_bucket{module="alpha",le="0.001"} 2"#,
            r#"edgeward_tick_lateness_seconds_count{module="alpha"} 2"#,
            r#"edgeward_snapshot_commit_seconds_bucket{le="0.005"} 1"#,
            r#"edgeward_upgrades_total{result="rolled_back"} 0"#,
        ] {
            assert!(
                text.lines().any(|l| l == sample),
                "no {sample:?} in\n{text}"
            );
        }
        // A module that never ticked has no lateness series.
        assert!(!text.contains(r#"edgeward_tick_lateness_seconds_count{module="beta"}"#));
    }
}
