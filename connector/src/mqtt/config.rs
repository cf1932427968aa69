//! The `[connector]` table of an MQTT connector: parsed with serde, then
//! every value checked, each problem reported with its dotted key and the
//! fix. Defaults are the `DEFAULT_*` constants (documented in
//! docs/connectors.md).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::payload::Format;
use super::queue::{Limits, WhenFull};
use crate::driver::ConfigError;

/// `keep_alive_s`: a silently dead broker connection is noticed within
/// about twice this (an unanswered PINGREQ at the next ping).
pub(crate) const DEFAULT_KEEP_ALIVE_S: i64 = 30;
/// `reconnect_min_ms`: first retry delay after a failure.
pub(crate) const DEFAULT_RECONNECT_MIN_MS: i64 = 100;
/// `reconnect_max_ms`: the retry delay doubles up to this.
pub(crate) const DEFAULT_RECONNECT_MAX_MS: i64 = 10_000;
/// `inflight`: QoS 1 publishes awaiting their PUBACK at once.
pub(crate) const DEFAULT_INFLIGHT: i64 = 100;
/// `max_packet_kib`: largest MQTT packet sent or received.
pub(crate) const DEFAULT_MAX_PACKET_KIB: i64 = 1024;
/// `queue.max_messages`.
pub(crate) const DEFAULT_QUEUE_MESSAGES: i64 = 10_000;
/// `queue.max_bytes`: 16 MiB.
pub(crate) const DEFAULT_QUEUE_BYTES: i64 = 16 * 1024 * 1024;
/// `queue.max_age_s`: one day.
pub(crate) const DEFAULT_QUEUE_AGE_S: i64 = 86_400;

/// The checked configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// `broker` as written (`host:port`).
    pub broker: String,
    /// Its host (brackets kept for an IPv6 literal) and port.
    pub host: String,
    pub port: u16,
    /// `client_id`, if set (the default needs the connector's name).
    pub client_id: Option<String>,
    pub site: Option<String>,
    pub gateway: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub keep_alive: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub inflight: u16,
    /// Largest MQTT packet, bytes.
    pub max_packet: usize,
    /// By channel name.
    pub publish: BTreeMap<String, PublishRule>,
    pub subscribe: Vec<SubscribeRule>,
    pub queue: Limits,
}

/// `[[connector.publish]]`: a channel's messages go to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublishRule {
    pub topic: String,
    pub qos: u8,
    pub format: Format,
    pub retain: bool,
}

/// `[[connector.subscribe]]`: a topic filter's messages go to a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubscribeRule {
    pub topic: String,
    pub channel: String,
    pub qos: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    broker: String,
    client_id: Option<String>,
    site: Option<String>,
    gateway: Option<String>,
    username: Option<String>,
    password_file: Option<String>,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    keep_alive_s: Option<i64>,
    reconnect_min_ms: Option<i64>,
    reconnect_max_ms: Option<i64>,
    inflight: Option<i64>,
    max_packet_kib: Option<i64>,
    #[serde(default)]
    publish: Vec<toml::Value>,
    #[serde(default)]
    subscribe: Vec<toml::Value>,
    queue: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    channel: String,
    topic: Option<String>,
    qos: Option<i64>,
    format: Option<String>,
    retain: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubscribe {
    topic: Option<String>,
    channel: String,
    qos: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    max_messages: Option<i64>,
    max_bytes: Option<i64>,
    max_age_s: Option<i64>,
    when_full: Option<String>,
}

/// Turns a serde error at `prefix` into a [`ConfigError`] naming the exact
/// key. toml 0.9 reports the path inside the value as a last line
/// "in `a.b`"; the message itself says what was expected.
fn serde_error(prefix: &str, e: &toml::de::Error) -> ConfigError {
    let shown = e.to_string();
    let inner = shown
        .lines()
        .find_map(|l| l.strip_prefix("in `").and_then(|r| r.strip_suffix('`')));
    let join = |a: &str, b: &str| match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}.{b}"),
    };
    let at = join(prefix, inner.unwrap_or(""));
    let message = e.message().trim();
    let name = |rest: &str| rest.split('`').next().unwrap_or("").to_owned();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let expected = rest.split_once(", ").map_or("", |(_, e)| e);
        return ConfigError::new(
            join(&at, &name(rest)),
            format!("unknown key: remove it or fix its spelling ({expected})"),
        );
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        return ConfigError::new(
            join(&at, &name(rest)),
            "missing: this key is required".to_owned(),
        );
    }
    let message = message
        .replace("expected i64", "expected an integer")
        .replace(
            "expected a sequence",
            "expected an array of tables ([[...]])",
        );
    ConfigError::new(
        if at.is_empty() {
            "connector".into()
        } else {
            at
        },
        format!("wrong type: {message}"),
    )
}

fn de<T: for<'de> Deserialize<'de>>(value: toml::Value, prefix: &str) -> Result<T, ConfigError> {
    value.try_into::<T>().map_err(|e| serde_error(prefix, &e))
}

/// Collects errors while checking values.
struct Errors(Vec<ConfigError>);

impl Errors {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(key, message));
    }

    /// `value` (default `default`) if within `range`, else an error saying so.
    fn int(
        &mut self,
        key: &str,
        value: Option<i64>,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
        unit: &str,
    ) -> i64 {
        let v = value.unwrap_or(default);
        if range.contains(&v) {
            v
        } else {
            self.add(
                key,
                format!(
                    "{v} is out of range: use {} to {} {unit} (default {default})",
                    range.start(),
                    range.end()
                ),
            );
            default
        }
    }

    fn qos(&mut self, key: &str, value: Option<i64>) -> u8 {
        match value.unwrap_or(1) {
            0 => 0,
            1 => 1,
            2 => {
                self.add(
                    key,
                    "QoS 2 is not supported: use 1 (at least once, through the durable queue; \
                     de-duplicate by the JSON format's seq) or 0 (at most once)",
                );
                1
            }
            v => {
                self.add(key, format!("{v} is not a QoS: use 0 or 1 (default 1)"));
                1
            }
        }
    }

    /// A string that must be one topic level (no `/`, `+`, `#`).
    fn level(&mut self, key: &str, value: Option<&String>) {
        if let Some(v) = value {
            if v.is_empty() || v.contains(['/', '+', '#', '\0']) {
                self.add(
                    key,
                    format!("{v:?} is not a single topic level: use a non-empty name without '/', '+', '#'"),
                );
            }
        }
    }

    fn path(&mut self, key: &str, value: Option<String>) -> Option<PathBuf> {
        match value {
            Some(v) if v.is_empty() || !v.starts_with('/') => {
                self.add(
                    key,
                    format!("{v:?} is not an absolute path: give the file's full path"),
                );
                None
            }
            v => v.map(PathBuf::from),
        }
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6 literals).
fn split_broker(broker: &str) -> Result<(String, u16), String> {
    let fix = "write it as host:port, e.g. \"broker.example.com:8883\"";
    let Some((host, port)) = broker.rsplit_once(':') else {
        return Err(format!("{broker:?} has no port: {fix}"));
    };
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if host.is_empty() || (bare.is_none() && host.contains(':')) || host.contains(['/', ' ']) {
        return Err(format!("{broker:?} is not host:port: {fix}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_owned(), p)),
        _ => Err(format!(
            "{broker:?} has an invalid port {port:?}: use 1 to 65535; {fix}"
        )),
    }
}

/// A valid publish topic (no wildcards).
fn topic_problem(topic: &str) -> Option<&'static str> {
    if topic.is_empty() {
        Some("is empty")
    } else if topic.len() > 65_535 {
        Some("is longer than 65535 bytes")
    } else if topic.contains('\0') {
        Some("contains a NUL character")
    } else if topic.contains(['+', '#']) {
        Some("contains a wildcard ('+' or '#'): a publish needs a concrete topic")
    } else {
        None
    }
}

/// Whether [`Config::parse`] reads the files the configuration names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Files {
    /// `check`: a missing or unusable file is a configuration error,
    /// better reported before the connector starts.
    Read,
    /// `run`: the files were checked; one that became unreadable since is
    /// a connect failure, logged and retried with backoff (not a crash
    /// loop).
    Skip,
}

impl Config {
    /// Parses and checks `table`; `endpoints` is `[network] connect`.
    ///
    /// # Errors
    /// Every problem found (deserialization stops at the first wrong key
    /// of a table; value checks report all).
    pub(crate) fn parse(
        table: &toml::Table,
        endpoints: &[String],
        files: Files,
    ) -> Result<Self, Vec<ConfigError>> {
        let raw: RawConfig = de(toml::Value::Table(table.clone()), "").map_err(|e| vec![e])?;
        let mut errs = Errors(Vec::new());

        let (host, port) = match split_broker(&raw.broker) {
            Ok(hp) => hp,
            Err(m) => {
                errs.add("broker", m);
                (String::new(), 0)
            }
        };
        if port != 0
            && !endpoints
                .iter()
                .any(|e| e.eq_ignore_ascii_case(&raw.broker))
        {
            errs.add(
                "broker",
                format!(
                    "{:?} is not in [network] connect: add it there (the sandbox refuses every \
                     other connection); granted: {}",
                    raw.broker,
                    if endpoints.is_empty() {
                        "none".to_owned()
                    } else {
                        endpoints.join(", ")
                    }
                ),
            );
        }
        if let Some(id) = &raw.client_id {
            if id.is_empty() || id.len() > 65_535 || id.contains('\0') {
                errs.add(
                    "client_id",
                    "must be 1 to 65535 bytes without NUL: fix it or remove it for the default",
                );
            }
        }
        errs.level("site", raw.site.as_ref());
        errs.level("gateway", raw.gateway.as_ref());
        if raw.username.as_ref().is_some_and(String::is_empty) {
            errs.add(
                "username",
                "is empty: set the broker user name or remove the key",
            );
        }
        let password_file = errs.path("password_file", raw.password_file);
        if password_file.is_some() && raw.username.is_none() {
            errs.add("password_file", "needs username too (MQTT 3.1.1 sends a password only with a user name): set username");
        }
        let ca_file = errs.path("ca_file", raw.ca_file);
        let cert_file = errs.path("cert_file", raw.cert_file);
        let key_file = errs.path("key_file", raw.key_file);
        match (&cert_file, &key_file) {
            (Some(_), None) => errs.add(
                "key_file",
                "missing: cert_file needs its private key: set key_file",
            ),
            (None, Some(_)) => errs.add(
                "cert_file",
                "missing: key_file needs its certificate: set cert_file",
            ),
            _ => {}
        }
        if cert_file.is_some() && ca_file.is_none() {
            errs.add("ca_file", "missing: a client certificate needs TLS: set ca_file to the CA that signed the broker's certificate");
        }

        let keep_alive = errs.int(
            "keep_alive_s",
            raw.keep_alive_s,
            DEFAULT_KEEP_ALIVE_S,
            0..=65_535,
            "seconds (0 turns keep-alive off)",
        );
        let reconnect_min = errs.int(
            "reconnect_min_ms",
            raw.reconnect_min_ms,
            DEFAULT_RECONNECT_MIN_MS,
            1..=3_600_000,
            "milliseconds",
        );
        let reconnect_max = errs.int(
            "reconnect_max_ms",
            raw.reconnect_max_ms,
            DEFAULT_RECONNECT_MAX_MS,
            1..=3_600_000,
            "milliseconds",
        );
        if reconnect_max < reconnect_min {
            errs.add(
                "reconnect_max_ms",
                format!("{reconnect_max} is below reconnect_min_ms ({reconnect_min}): raise it or lower reconnect_min_ms"),
            );
        }
        let inflight = errs.int(
            "inflight",
            raw.inflight,
            DEFAULT_INFLIGHT,
            1..=65_535,
            "publishes",
        );
        let max_packet_kib = errs.int(
            "max_packet_kib",
            raw.max_packet_kib,
            DEFAULT_MAX_PACKET_KIB,
            1..=262_144,
            "KiB",
        );

        let any_rules = !raw.publish.is_empty() || !raw.subscribe.is_empty();
        let mut publish = BTreeMap::new();
        let mut first_of = BTreeMap::new();
        let mut needs_scheme = None;
        for (i, value) in raw.publish.into_iter().enumerate() {
            let key = format!("publish[{i}]");
            let p: RawPublish = match de(value, &key) {
                Ok(p) => p,
                Err(e) => {
                    errs.0.push(e);
                    continue;
                }
            };
            if p.channel.is_empty() {
                errs.add(
                    format!("{key}.channel"),
                    "is empty: name the channel whose messages to publish",
                );
            }
            if let Some(prev) = first_of.insert(p.channel.clone(), i) {
                errs.add(
                    format!("{key}.channel"),
                    format!(
                        "{:?} is already published by publish[{prev}]: one entry per channel",
                        p.channel
                    ),
                );
            }
            let topic = match p.topic {
                Some(t) => {
                    if let Some(why) = topic_problem(&t) {
                        errs.add(format!("{key}.topic"), format!("{t:?} {why}"));
                    }
                    t
                }
                None => {
                    needs_scheme.get_or_insert(format!("{key}.topic"));
                    scheme(raw.site.as_deref(), raw.gateway.as_deref(), &p.channel)
                }
            };
            let qos = errs.qos(&format!("{key}.qos"), p.qos);
            let format = match p.format.as_deref() {
                None | Some("raw") => Format::Raw,
                Some("json") => Format::Json,
                Some(other) => {
                    errs.add(
                        format!("{key}.format"),
                        format!("unknown format {other:?}: use \"raw\" (the payload as is) or \"json\" (with module, channel, seq, time_us)"),
                    );
                    Format::Raw
                }
            };
            publish.insert(
                p.channel,
                PublishRule {
                    topic,
                    qos,
                    format,
                    retain: p.retain.unwrap_or(false),
                },
            );
        }

        let mut subscribe = Vec::new();
        for (i, value) in raw.subscribe.into_iter().enumerate() {
            let key = format!("subscribe[{i}]");
            let s: RawSubscribe = match de(value, &key) {
                Ok(s) => s,
                Err(e) => {
                    errs.0.push(e);
                    continue;
                }
            };
            if s.channel.is_empty() {
                errs.add(
                    format!("{key}.channel"),
                    "is empty: name the channel to send the messages on",
                );
            }
            let topic = match s.topic {
                Some(t) => {
                    if t.is_empty()
                        || t.len() > 65_535
                        || t.contains('\0')
                        || !rumqttc::valid_filter(&t)
                    {
                        errs.add(
                            format!("{key}.topic"),
                            format!("{t:?} is not a valid topic filter: '+' and '#' must fill a whole level and '#' must be last, e.g. \"plant1/+/commands\""),
                        );
                    }
                    t
                }
                None => {
                    needs_scheme.get_or_insert(format!("{key}.topic"));
                    scheme(raw.site.as_deref(), raw.gateway.as_deref(), &s.channel)
                }
            };
            if subscribe.iter().any(|r: &SubscribeRule| r.topic == topic) {
                errs.add(
                    format!("{key}.topic"),
                    format!("{topic:?} is subscribed twice: one entry per topic filter"),
                );
            }
            let qos = errs.qos(&format!("{key}.qos"), s.qos);
            subscribe.push(SubscribeRule {
                topic,
                channel: s.channel,
                qos,
            });
        }
        for (i, rule) in subscribe.iter().enumerate() {
            if let Some((channel, p)) = publish.iter().find(|(_, p)| {
                rumqttc::valid_filter(&rule.topic) && topic_matches(&p.topic, &rule.topic)
            }) {
                errs.add(
                    format!("subscribe[{i}].topic"),
                    format!(
                        "{:?} matches {:?}, where channel {channel:?} is published: the connector \
                         would receive its own messages back; use topics that do not overlap",
                        rule.topic, p.topic
                    ),
                );
            }
        }
        if !any_rules {
            errs.add("publish", "nothing to do: add [[connector.publish]] (channel to topic) or [[connector.subscribe]] (topic to channel) entries");
        }
        if raw.client_id.is_none() {
            needs_scheme.get_or_insert_with(|| "client_id".to_owned());
        }
        if let Some(user) = needs_scheme {
            for (key, value) in [("site", &raw.site), ("gateway", &raw.gateway)] {
                if value.is_none() {
                    errs.add(
                        key,
                        format!(
                            "missing: {user} is not set, and its default (topics \
                             <site>/<gateway>/<channel>, client id edgeward-<site>-<gateway>-<name>) \
                             needs it: set {key} = \"...\" (e.g. site = \"plant1\", gateway = \"gw1\")"
                        ),
                    );
                }
            }
        }

        let queue = match raw.queue {
            None => RawQueue {
                max_messages: None,
                max_bytes: None,
                max_age_s: None,
                when_full: None,
            },
            Some(value) => match de::<RawQueue>(value, "queue") {
                Ok(q) => q,
                Err(e) => {
                    errs.0.push(e);
                    RawQueue {
                        max_messages: None,
                        max_bytes: None,
                        max_age_s: None,
                        when_full: None,
                    }
                }
            },
        };
        let max_messages = errs.int(
            "queue.max_messages",
            queue.max_messages,
            DEFAULT_QUEUE_MESSAGES,
            1..=1_000_000,
            "messages",
        );
        let max_bytes = errs.int(
            "queue.max_bytes",
            queue.max_bytes,
            DEFAULT_QUEUE_BYTES,
            4096..=(1 << 40),
            "bytes",
        );
        let max_age_s = errs.int(
            "queue.max_age_s",
            queue.max_age_s,
            DEFAULT_QUEUE_AGE_S,
            1..=(10 * 365 * 86_400),
            "seconds",
        );
        let when_full = match queue.when_full.as_deref() {
            None | Some("drop-oldest") => WhenFull::DropOldest,
            Some("drop-newest") => WhenFull::DropNewest,
            Some(other) => {
                errs.add("queue.when_full", format!("unknown policy {other:?}: use \"drop-oldest\" (default) or \"drop-newest\""));
                WhenFull::DropOldest
            }
        };

        if let (Files::Read, Some(path)) = (files, &password_file) {
            if let Err(e) = std::fs::read(path) {
                errs.add(
                    "password_file",
                    format!(
                        "cannot read {}: {e}: fix the path or the file's permissions",
                        path.display()
                    ),
                );
            }
        }
        if let (Files::Read, Some(ca)) = (files, &ca_file) {
            if let Err(e) =
                super::tls::client_config(ca, cert_file.as_deref().zip(key_file.as_deref()))
            {
                errs.add(e.key(), e.to_string());
            }
        }

        if !errs.0.is_empty() {
            return Err(errs.0);
        }
        Ok(Self {
            broker: raw.broker,
            host,
            port,
            client_id: raw.client_id,
            site: raw.site,
            gateway: raw.gateway,
            username: raw.username,
            password_file,
            ca_file,
            cert_file,
            key_file,
            keep_alive: Duration::from_secs(keep_alive as u64),
            reconnect_min: Duration::from_millis(reconnect_min as u64),
            reconnect_max: Duration::from_millis(reconnect_max as u64),
            inflight: inflight as u16,
            max_packet: max_packet_kib as usize * 1024,
            publish,
            subscribe,
            queue: Limits {
                max_messages: max_messages as u64,
                max_bytes: max_bytes as u64,
                max_age_us: max_age_s as u64 * 1_000_000,
                when_full,
            },
        })
    }

    /// The MQTT client id: `client_id`, else
    /// `edgeward-<site>-<gateway>-<connector name>`.
    pub(crate) fn client_id(&self, name: &str) -> String {
        self.client_id.clone().unwrap_or_else(|| {
            format!(
                "edgeward-{}-{}-{name}",
                self.site.as_deref().unwrap_or("site"),
                self.gateway.as_deref().unwrap_or("gateway")
            )
        })
    }
}

/// The fleet topic of a channel: `<site>/<gateway>/<channel>`.
fn scheme(site: Option<&str>, gateway: Option<&str>, channel: &str) -> String {
    format!(
        "{}/{}/{channel}",
        site.unwrap_or("site"),
        gateway.unwrap_or("gateway")
    )
}

/// Whether `topic` matches the subscription `filter` (MQTT 3.1.1 section
/// 4.7: `+` one level, `#` the rest including the parent; a topic starting
/// with `$` is not matched by a filter starting with a wildcard).
pub(crate) fn topic_matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match levels.next() {
            Some(level) if f == "+" || f == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}
