//! End to end: the status page at `/` of `--metrics`, in Debian's headless
//! Chromium, driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: NUL-terminated JSON on fds 3 and 4, no
//! WebSocket library needed). The page shows the modules of a running
//! gateway and updates itself, without a reload, after one restarts.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edgeward_tests::{policy, GatewayDir};
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(30);

/// A headless Chromium and one page in it.
struct Browser {
    child: Child,
    commands: std::fs::File,
    replies: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(url: &str) -> Browser {
        let (to_chromium_read, to_chromium_write) = pipe();
        let (from_chromium_read, from_chromium_write) = pipe();
        let profile = tempfile::tempdir().unwrap();
        let chromium = ["chromium", "/usr/bin/chromium"]
            .iter()
            .map(std::path::Path::new)
            .find(|p| p.is_absolute() && p.exists())
            .expect("Debian's chromium (scripts/setup installs it)");
        let child = edgeward_tests::command_with_fds(
            chromium,
            &[
                to_chromium_read.as_raw_fd(),
                from_chromium_write.as_raw_fd(),
            ],
        )
        .args([
            "--headless=new",
            // Root in a VM: Chromium's own sandbox needs a user namespace
            // per renderer; the page is ours and local.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
        drop(to_chromium_read);
        drop(from_chromium_write);
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(std::fs::File::from(from_chromium_read));
            loop {
                let mut message = Vec::new();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        message.pop();
                        if let Ok(value) = serde_json::from_slice::<Value>(&message) {
                            if tx.send(value).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        let mut browser = Browser {
            child,
            commands: std::fs::File::from(to_chromium_write),
            replies,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({ "url": url }));
        let target_id = target["targetId"].as_str().expect("a target").to_string();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session")
            .to_string();
        browser
    }

    /// Sends one command (to the page once attached) and waits for its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self
                .replies
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it equals `expected`.
    fn wait_for(&mut self, expression: &str, expected: Value) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.eval(expression);
            if value == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{expression} stayed {value}, not {expected}; the page:\n{}",
                self.eval("document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe")
}

fn cell(module: &str, class: &str) -> String {
    format!(
        "document.querySelector('tr[data-module=\"{module}\"] td.{class}')?.textContent ?? null"
    )
}

#[test]
fn the_page_shows_the_running_modules_and_updates_after_a_restart() {
    let g = GatewayDir::new();
    g.add_policy("ticker", &policy("counter", "[schedule]\ntick_us = 10000"));
    g.add_policy(
        "sensor",
        &policy(
            "sensor",
            "[channels]\npublish = [\"readings\"]\n[schedule]\ntick_us = 50000",
        ),
    );
    g.add_policy(
        "sink",
        &policy("echo_log", "[channels]\nsubscribe = [\"readings\"]"),
    );
    let gateway = g.start_with(&[("EDGEWARD_METRICS", "127.0.0.1:0")]);
    gateway.wait_running(&["ticker", "sensor", "sink"], PATIENCE);
    let addr = gateway.metrics_addr(PATIENCE);
    let mut browser = Browser::open(&format!("http://{addr}/"));
    browser.wait_for(
        "document.querySelectorAll('#modules tbody tr').length",
        json!(3),
    );
    browser.wait_for(&cell("ticker", "state"), json!("running"));
    browser.wait_for(&cell("ticker", "restarts"), json!("0"));
    browser.wait_for(&cell("ticker", "language"), json!("rust"));
    // The ring and a message rate show up once two refreshes are in.
    browser.wait_for(
        "document.querySelector('#rings tbody td')?.textContent ?? null",
        json!("readings"),
    );
    let rate = browser.eval(&cell("sink", "rate"));
    let refreshes_before = browser.eval("Number(document.body.dataset.refreshes)");
    let (code, _, err) = gateway.cli(&["restart", "ticker"]);
    assert_eq!(code, 0, "{err}");
    // No reload: the page's own refresh shows the restart.
    browser.wait_for(&cell("ticker", "restarts"), json!("1"));
    browser.wait_for(&cell("ticker", "state"), json!("running"));
    let refreshes_after = browser.eval("Number(document.body.dataset.refreshes)");
    assert!(
        refreshes_after.as_u64() > refreshes_before.as_u64(),
        "{refreshes_before} → {refreshes_after}"
    );
    assert_eq!(
        browser.eval("performance.getEntriesByType('navigation').length"),
        json!(1),
        "the page was not reloaded"
    );
    println!("sink msgs/s on the page before the restart: {rate}");
}
