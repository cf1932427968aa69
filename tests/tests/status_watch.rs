//! End to end: `edgeward status --watch` redraws a live table (language,
//! messages a second, memory) and ends when the supervisor does.

use std::process::{Command, Stdio};
use std::time::Duration;

use edgeward_tests::{bin, policy, GatewayDir};

#[test]
fn the_watch_shows_languages_and_live_message_rates_and_ends_with_the_supervisor() {
    let g = GatewayDir::new();
    g.add_policy(
        "sensor",
        &policy(
            "sensor",
            "[channels]\npublish = [\"readings\"]\n[schedule]\ntick_us = 10000",
        ),
    );
    g.add_policy(
        "c-alert",
        &policy("c_alert", "[channels]\nsubscribe = [\"readings\"]"),
    );
    let gateway = g.start();
    gateway.wait_running(&["sensor", "c-alert"], Duration::from_secs(20));
    let watch = Command::new(bin("edgeward"))
        .args(["status", "--watch", "--interval-ms", "200", "--control"])
        .arg(g.control())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start status --watch");
    std::thread::sleep(Duration::from_millis(1500));
    let (code, out, err) = gateway.cli(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    let done = watch.wait_with_output().expect("watch output");
    let text = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{:?}: {text}{}",
        done.status,
        String::from_utf8_lossy(&done.stderr)
    );
    // Not a terminal: frames one after another, no escape codes.
    assert!(!text.contains('\x1b'), "{text}");
    let frames: Vec<&str> = text.split("edgeward: 2 module(s)").skip(1).collect();
    assert!(frames.len() >= 4, "{} frames:\n{text}", frames.len());
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap_or("")
            .starts_with("edgeward stopped"),
        "{text}"
    );
    // 10 readings a second from the sensor, each handled by c-alert.
    let rate = |frame: &str, module: &str| -> Option<f64> {
        let row = frame
            .lines()
            .find(|l| l.starts_with(&format!("{module} ")))?;
        row.split_whitespace().nth(3)?.parse().ok()
    };
    let live = frames
        .iter()
        .filter(|f| f.contains(" running, "))
        .filter_map(|f| Some((rate(f, "sensor")?, rate(f, "c-alert")?)))
        .collect::<Vec<_>>();
    assert!(
        live.iter()
            .any(|&(s, a)| (50.0..=200.0).contains(&s) && (50.0..=200.0).contains(&a)),
        "no frame shows about 100 msgs/s for both: {live:?}\n{text}"
    );
    let first = frames[0];
    let lang = |module: &str| {
        first
            .lines()
            .find(|l| l.starts_with(&format!("{module} ")))
            .and_then(|row| row.split_whitespace().nth(1))
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(lang("sensor"), "rust", "{first}");
    assert_eq!(lang("c-alert"), "c", "{first}");
}
