//! Every (state, event) pair of [`next`], against the table in
//! `docs/architecture.md` ("Module lifecycle"), both ways: each row of the
//! table is what the code does, and each transition the code makes has a
//! row.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::*;

/// The states, by the label the docs' table uses.
fn states(now: Instant) -> Vec<(&'static str, State)> {
    let kill_at = Some(now + Duration::from_secs(1));
    vec![
        ("waiting", State::Waiting),
        ("starting", State::Starting),
        ("running", State::Running),
        (
            "stopping(restart)",
            State::Stopping {
                then: Then::Restart,
                kill_at,
            },
        ),
        (
            "stopping(remove)",
            State::Stopping {
                then: Then::Remove,
                kill_at,
            },
        ),
        (
            "stopping(shutdown)",
            State::Stopping {
                then: Then::Shutdown,
                kill_at,
            },
        ),
        ("backoff", State::Backoff { until: now }),
        ("failed", State::Failed),
        ("stopped", State::Stopped),
        ("removed", State::Removed),
    ]
}

/// The label of a state in the table's "next" column.
fn label(state: State) -> String {
    match state {
        State::Stopping { then, .. } => format!("stopping({})", then_label(then)),
        other => other.as_str().to_string(),
    }
}

fn then_label(then: Then) -> &'static str {
    match then {
        Then::Restart => "restart",
        Then::Remove => "remove",
        Then::Shutdown => "shutdown",
    }
}

fn action_label(action: Action) -> &'static str {
    match action {
        Action::Nothing => "—",
        Action::Spawn => "spawn",
        Action::SendStop => "send Stop",
        Action::Kill => "SIGKILL",
        Action::RollBack => "roll back",
        Action::Restarting => "restarting",
        Action::Down {
            gave_up_on_intensity: false,
        } => "down",
        Action::Down {
            gave_up_on_intensity: true,
        } => "down (intensity)",
        Action::Forget => "forget",
    }
}

/// An event label and how to make it; `decision` is what the restart
/// policy answers, if the transition asks it.
struct Case {
    label: &'static str,
    event: Event,
    decision: Decision,
}

fn ended(on_trial: bool, shutting_down: bool) -> Event {
    Event::Ended {
        ending: Ending::Failure,
        ran_for: Duration::from_secs(1),
        on_trial,
        shutting_down,
    }
}

fn cases(now: Instant) -> Vec<Case> {
    let kill_at = now + Duration::from_secs(2);
    let stay = Decision::Stay;
    let case = |label, event, decision| Case {
        label,
        event,
        decision,
    };
    let mut all = vec![
        case("spawned", Event::Spawned, stay),
        case("ready", Event::Ready, stay),
        case("stop timeout", Event::StopTimeout, stay),
        case("backoff over", Event::BackoffOver, stay),
        case("unstartable", Event::Unstartable, stay),
        case("shutdown", Event::Shutdown, stay),
        case("ended", ended(false, false), stay),
        case("ended while edgeward stops", ended(false, true), stay),
        case("ended on trial", ended(true, false), stay),
        case(
            "ended: policy restarts",
            ended(false, false),
            Decision::RestartAfter(Duration::from_millis(100)),
        ),
        case("ended: policy stays", ended(false, false), Decision::Stay),
        case(
            "ended: policy gives up",
            ended(false, false),
            Decision::Fail {
                intensity_exceeded: false,
            },
        ),
        case(
            "ended: intensity exceeded",
            ended(false, false),
            Decision::Fail {
                intensity_exceeded: true,
            },
        ),
    ];
    for (label, then) in [
        ("stop(restart)", Then::Restart),
        ("stop(remove)", Then::Remove),
        ("stop(shutdown)", Then::Shutdown),
    ] {
        all.push(case(label, Event::Stop { then, kill_at }, stay));
    }
    for (label, then) in [
        ("kill(restart)", Then::Restart),
        ("kill(remove)", Then::Remove),
        ("kill(shutdown)", Then::Shutdown),
    ] {
        all.push(case(label, Event::Kill { then }, stay));
    }
    all
}

/// One transition as (state, event, next state, action) labels.
type Row = (String, String, String, String);

/// Runs `next` on a case; also says whether the restart policy was asked.
fn run(state: State, case: &Case, now: Instant) -> (Option<Step>, bool) {
    let mut asked = false;
    let step = next(state, case.event, now, |_, _| {
        asked = true;
        case.decision
    });
    (step, asked)
}

/// Every transition the code makes, with the table's conventions: plain
/// "ended" where the restart policy is not asked; "ended: policy …" where
/// it is; "ended on trial" and "ended while edgeward stops" where they
/// differ from plain "ended".
fn code_rows() -> BTreeSet<Row> {
    let now = Instant::now();
    let mut rows = BTreeSet::new();
    for (state_label, state) in states(now) {
        let plain = cases(now).into_iter().find(|c| c.label == "ended").unwrap();
        let (plain_step, plain_asked) = run(state, &plain, now);
        for case in cases(now) {
            let (step, asked) = run(state, &case, now);
            let Some((next_state, action)) = step else {
                continue;
            };
            let keep = match case.label {
                "ended" => !asked,
                l if l.starts_with("ended: ") => asked,
                "ended on trial" | "ended while edgeward stops" => {
                    !asked && (plain_asked || step != plain_step)
                }
                _ => true,
            };
            if keep {
                rows.insert((
                    state_label.to_string(),
                    case.label.to_string(),
                    label(next_state),
                    action_label(action).to_string(),
                ));
            }
        }
    }
    rows
}

/// The rows of the table in docs/architecture.md; a cell may list several
/// states or events, separated by `;`.
fn doc_rows() -> BTreeSet<Row> {
    let doc = include_str!("../../../docs/architecture.md");
    let start = doc
        .find("| State | Event | Next state | Action |")
        .expect("the lifecycle table in docs/architecture.md");
    let mut rows = BTreeSet::new();
    for line in doc[start..].lines().skip(2) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 4, "{line}");
        let unquote = |s: &str| s.trim().trim_matches('`').to_string();
        for state in cells[0].split(';') {
            for event in cells[1].split(';') {
                rows.insert((
                    unquote(state),
                    unquote(event),
                    unquote(cells[2]),
                    unquote(cells[3]),
                ));
            }
        }
    }
    rows
}

#[test]
fn the_documented_table_is_exactly_what_the_transition_function_does() {
    let code = code_rows();
    let docs = doc_rows();
    let undocumented: Vec<_> = code.difference(&docs).collect();
    let wrong: Vec<_> = docs.difference(&code).collect();
    assert!(
        undocumented.is_empty() && wrong.is_empty(),
        "transitions missing from docs/architecture.md: {undocumented:#?}\n\
         rows in docs/architecture.md the code does not do: {wrong:#?}"
    );
}

#[test]
fn a_requested_stop_never_asks_the_restart_policy() {
    let now = Instant::now();
    for then in [Then::Restart, Then::Remove, Then::Shutdown] {
        let stopping = State::Stopping {
            then,
            kill_at: None,
        };
        let step = next(stopping, ended(false, false), now, |_, _| {
            panic!("a requested stop counted against the intensity")
        });
        assert!(step.is_some());
    }
}

#[test]
fn a_shutdown_is_final_and_the_earlier_kill_deadline_stands() {
    let now = Instant::now();
    let soon = now + Duration::from_millis(10);
    let later = now + Duration::from_secs(10);
    let shutting = State::Stopping {
        then: Then::Shutdown,
        kill_at: Some(soon),
    };
    let stop = Event::Stop {
        then: Then::Restart,
        kill_at: later,
    };
    assert_eq!(
        next(shutting, stop, now, |_, _| Decision::Stay),
        Some((shutting, Action::Nothing))
    );
    let restarting = State::Stopping {
        then: Then::Restart,
        kill_at: Some(later),
    };
    let shutdown = Event::Stop {
        then: Then::Shutdown,
        kill_at: soon,
    };
    assert_eq!(
        next(restarting, shutdown, now, |_, _| Decision::Stay),
        Some((
            State::Stopping {
                then: Then::Shutdown,
                kill_at: Some(soon)
            },
            Action::Nothing
        ))
    );
}

#[test]
fn backoff_ends_only_at_its_deadline_and_its_delay_comes_from_the_policy() {
    let now = Instant::now();
    let delay = Duration::from_millis(250);
    let (state, action) = next(
        State::Running,
        ended(false, false),
        now,
        |ending, ran_for| {
            assert_eq!(ending, Ending::Failure);
            assert_eq!(ran_for, Duration::from_secs(1));
            Decision::RestartAfter(delay)
        },
    )
    .unwrap();
    assert_eq!(state, State::Backoff { until: now + delay });
    assert_eq!(action, Action::Restarting);
    assert_eq!(state.deadline(), Some(now + delay));
    assert_eq!(
        next(state, Event::BackoffOver, now, |_, _| Decision::Stay),
        None,
        "not before its deadline"
    );
    assert_eq!(
        next(state, Event::BackoffOver, now + delay, |_, _| {
            Decision::Stay
        }),
        Some((State::Waiting, Action::Spawn))
    );
}

#[test]
fn a_killed_worker_has_no_deadline_left_so_the_loop_does_not_spin() {
    let now = Instant::now();
    let stopping = State::Stopping {
        then: Then::Restart,
        kill_at: Some(now),
    };
    let (killed, action) = next(stopping, Event::StopTimeout, now, |_, _| Decision::Stay).unwrap();
    assert_eq!(action, Action::Kill);
    assert_eq!(killed.deadline(), None);
    assert_eq!(
        next(killed, Event::StopTimeout, now, |_, _| Decision::Stay),
        None
    );
}

/// Prints the table for docs/architecture.md:
/// `cargo test -p edgeward --lib lifecycle::tests::print_table -- --ignored --nocapture`.
#[test]
#[ignore = "prints the docs table"]
fn print_table() {
    for (state, event, next_state, action) in code_rows() {
        println!("| {state} | {event} | {next_state} | {action} |");
    }
}
