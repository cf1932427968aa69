//! The numbers the docs promise, pinned to the constants that make them
//! true: a change to either side fails here until the other follows.

use crate::control::clients::{ANSWER_TIMEOUT, MAX_CLIENTS, MAX_REQUEST, REQUEST_TIMEOUT};
use crate::event_loop::{FALSE_REPORTS_MAX, FRAMES_PER_SECOND, FRAMES_PER_WAKE, RING_ACTION_EVERY};

const OPERATIONS: &str = include_str!("../../docs/operations.md");
const POLICY: &str = include_str!("../../docs/policy.md");
const ARCHITECTURE: &str = include_str!("../../docs/architecture.md");

/// `doc` (after joining its lines) contains `phrase`.
fn says(doc: &str, phrase: &str) -> bool {
    let flat: String = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.contains(phrase)
}

#[test]
fn control_socket_limits_are_documented() {
    for phrase in [
        format!("within {} s of connecting", REQUEST_TIMEOUT.as_secs()),
        format!("(at most {} KiB)", MAX_REQUEST >> 10),
        format!("taken within {} s", ANSWER_TIMEOUT.as_secs()),
        format!("At most {MAX_CLIENTS} clients are connected at once"),
        format!("{MAX_CLIENTS} control clients are connected"),
    ] {
        assert!(says(OPERATIONS, &phrase), "operations.md lacks {phrase:?}");
    }
}

#[test]
fn output_and_message_limits_are_documented() {
    let queue_mib = crate::log_sink::MAX_QUEUED_BYTES >> 20;
    let line = crate::worker_text::MAX_LINE;
    let lines = 2.0 * edgeward_ipc::rate::LINES_PER_SECOND;
    let burst = 2.0 * edgeward_ipc::rate::BURST;
    for phrase in [
        format!("a queue of at most {queue_mib} MiB"),
        format!("longer than {line} bytes is printed in pieces"),
        format!("({lines} lines a second, burst {burst})"),
    ] {
        assert!(says(OPERATIONS, &phrase), "operations.md lacks {phrase:?}");
    }
    for phrase in [
        format!(
            "at most {} KiB read per pipe per wake-up",
            crate::output::READ_BUDGET >> 10
        ),
        format!("at most {FRAMES_PER_WAKE} per worker per wake-up"),
        format!(
            "A `Log` message longer than {} bytes is a protocol violation",
            edgeward_ipc::control::MAX_LOG_TEXT_BYTES
        ),
        format!("more than {FRAMES_PER_SECOND} a second on average"),
        format!("({lines}/s, burst {burst})"),
    ] {
        assert!(
            says(ARCHITECTURE, &phrase),
            "architecture.md lacks {phrase:?}"
        );
    }
}

#[test]
fn ring_report_rules_are_documented() {
    for phrase in [
        format!("at most once every {} s", RING_ACTION_EVERY.as_secs()),
        format!("More than {FALSE_REPORTS_MAX} such reports within a minute"),
    ] {
        assert!(says(OPERATIONS, &phrase), "operations.md lacks {phrase:?}");
    }
}

#[test]
fn quota_defaults_are_documented() {
    let default = crate::policy::DEFAULT_QUOTA_MIB;
    let max = crate::policy::MAX_QUOTA_MIB;
    for phrase in [
        format!("(rw only, 0..={max}, default `{default}`)"),
        format!("**Quota** (`quota_mib`, default {default})"),
    ] {
        assert!(says(POLICY, &phrase), "policy.md lacks {phrase:?}");
    }
    assert!(says(OPERATIONS, &format!("(default {default} MiB;")));
}

#[test]
fn exec_exit_codes_and_uids_are_documented() {
    use crate::cli::exec::{EXIT_CANNOT_RUN, EXIT_TRAPPED};
    use crate::sandbox_plan::{EXEC_UID_OFFSET, UIDS_PER_GATEWAY};
    assert_eq!(EXEC_UID_OFFSET, UIDS_PER_GATEWAY * 65536);
    for phrase in [
        format!("| | {EXIT_TRAPPED} | the module trapped"),
        format!("| | {EXIT_CANNOT_RUN} | edgeward could not run it"),
        format!("`uid_base + {UIDS_PER_GATEWAY} × 65536 + PID`"),
    ] {
        assert!(says(OPERATIONS, &phrase), "operations.md lacks {phrase:?}");
    }
}

#[test]
fn the_metrics_reference_lists_every_family_with_its_type() {
    // The table's rows: | `name` | type | labels | what |
    let mut documented: Vec<(String, String)> = OPERATIONS
        .lines()
        .filter_map(|l| l.strip_prefix("| `edgeward_"))
        .filter_map(|rest| {
            let (name, rest) = rest.split_once("` | ")?;
            let kind = rest.split(" | ").next()?;
            Some((format!("edgeward_{name}"), kind.to_string()))
        })
        .collect();
    documented.sort();
    let mut exposed: Vec<(String, String)> = crate::metrics::encode::FAMILIES
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    exposed.sort();
    assert_eq!(documented, exposed);
}

#[test]
fn metrics_labels_and_listener_limits_are_documented() {
    use crate::metrics::counters::{DenialKind, EndCause};
    for cause in EndCause::ALL {
        let phrase = format!("`{}`", cause.as_str());
        assert!(
            says(OPERATIONS, &phrase),
            "operations.md lacks cause {phrase}"
        );
    }
    for kind in DenialKind::ALL {
        let row = format!("| `{}` |", kind.as_str());
        assert!(
            says(OPERATIONS, &row),
            "operations.md lacks denial kind {row}"
        );
    }
    for phrase in [
        format!(
            "It keeps at most {} connections open",
            crate::metrics::http_limits::MAX_CONNECTIONS
        ),
        format!(
            "A request head may be at most {} KiB",
            crate::metrics::http_limits::MAX_REQUEST_BYTES >> 10
        ),
        format!(
            "each connection has {} s to send its request",
            crate::metrics::http_limits::CONNECTION_DEADLINE.as_secs()
        ),
        "Lines are limited to one a second per module and kind".to_string(),
    ] {
        assert!(says(OPERATIONS, &phrase), "operations.md lacks {phrase:?}");
    }
    assert_eq!(crate::audit::AUDIT_LOG_EVERY.as_secs(), 1);
}
