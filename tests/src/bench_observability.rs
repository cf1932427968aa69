//! `scripts/bench observability` (issue 17): what the `--metrics`
//! listener and a log flood cost the other modules. A module ticking every
//! 1 ms runs alone (the baseline), then beside 100 idle connections to the
//! listener, then scraped every 100 ms, then beside a module flooding its
//! output; each time the p99 of its last 1024 ticks' lateness is read
//! after 2 s. Scenarios are interleaved, [`ROUNDS`] rounds, medians with
//! their range.

use std::time::{Duration, Instant};

use edgeward_tests::{module, policy, GatewayDir};

use super::{figure, median, Figure};

const ROUNDS: usize = 5;
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    Alone,
    IdleConnections,
    Scraped,
    LogFlood,
}

/// The ticker's tick lateness p99 (µs) under `scenario`.
fn tick_p99(scenario: Scenario) -> f64 {
    let g = GatewayDir::new();
    g.add_policy("ticker", &policy("counter", "[schedule]\ntick_us = 1000"));
    if scenario == Scenario::LogFlood {
        g.add_policy(
            "log-flood",
            &policy("log_flood", "[schedule]\ntick_us = 10000"),
        );
    }
    let gateway = g.start_with(&[("EDGEWARD_METRICS", "127.0.0.1:0")]);
    gateway.wait_running(&["ticker"], PATIENCE);
    let addr = gateway.metrics_addr(PATIENCE);
    std::thread::sleep(Duration::from_millis(500));
    let _idle: Vec<std::net::TcpStream> = if scenario == Scenario::IdleConnections {
        (0..100)
            .filter_map(|_| std::net::TcpStream::connect(addr).ok())
            .collect()
    } else {
        Vec::new()
    };
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if scenario == Scenario::Scraped {
            let _ = edgeward_tests::http_get(addr, "/metrics");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = gateway.try_status().expect("status");
    module(&status, "ticker")["tick_lateness_p99_us"]
        .as_f64()
        .unwrap_or(f64::NAN)
}

fn with_range(mut f: Figure, values: &[f64], note: &str) -> Figure {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    f.range = Some([super::round(lo), super::round(hi)]);
    f.note = Some(note.to_string());
    f
}

/// The suite's figures.
pub fn suite(json: bool) -> Vec<Figure> {
    super::progress(
        json,
        "observability: tick lateness beside the listener and a log flood",
    );
    let scenarios = [
        Scenario::Alone,
        Scenario::IdleConnections,
        Scenario::Scraped,
        Scenario::LogFlood,
    ];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    for _ in 0..ROUNDS {
        for (i, s) in scenarios.iter().enumerate() {
            p99[i].push(tick_p99(*s));
        }
    }
    let alone = median(p99[0].clone());
    let mut figures = vec![with_range(
        figure("tick_p99_alone_us", alone, "us", None),
        &p99[0],
        "1 ms ticker, --metrics on, nobody connected",
    )];
    for (i, (name, note)) in [
        (
            "tick_p99_idle_connections_us",
            "100 idle connections held to the listener",
        ),
        ("tick_p99_scraped_10hz_us", "GET /metrics every 100 ms"),
        (
            "tick_p99_log_flood_us",
            "beside a module flooding its output (lines dropped and counted)",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let values = &p99[i + 1];
        let mut f = figure(name, median(values.clone()), "us", Some(("alone", alone)));
        f.target = Some("ratio <= 1.1".into());
        f.met = f.ratio.map(|r| r <= 1.1);
        figures.push(with_range(f, values, note));
    }
    figures
}
