//! The OPC UA connector's policy (`[connector]` with `kind = "opcua"`):
//! parsed with serde, then checked value by value so every error names its
//! key and the fix. [`Config::parse`] is what both `check` and `run` use.

use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::Duration;

use opcua_crypto::SecurityPolicy;
use opcua_types::{MessageSecurityMode, NodeId};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::driver::ConfigError;

/// Default publishing interval of the subscription, ms.
pub const DEFAULT_PUBLISHING_INTERVAL_MS: u64 = 100;
/// Default sampling interval of a monitored item, ms.
pub const DEFAULT_SAMPLING_MS: u64 = 100;
/// Default server-side queue of a monitored item (values kept between two
/// publishes; the oldest is discarded when full).
pub const DEFAULT_QUEUE_SIZE: u32 = 10;
/// Default first reconnect delay, ms (doubles per failed attempt).
pub const DEFAULT_RECONNECT_MIN_MS: u64 = 100;
/// Default longest reconnect delay, ms.
pub const DEFAULT_RECONNECT_MAX_MS: u64 = 10_000;
/// Default timeout of a connection attempt and of each request, ms.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// The OPC UA port when the URL names none.
pub const DEFAULT_PORT: u16 = 4840;

/// The policy as written (serde's view; checked by [`Config::parse`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    url: String,
    #[serde(default)]
    security_policy: Option<String>,
    #[serde(default)]
    security_mode: Option<String>,
    #[serde(default)]
    certificate_file: Option<PathBuf>,
    #[serde(default)]
    private_key_file: Option<PathBuf>,
    #[serde(default)]
    application_uri: Option<String>,
    #[serde(default)]
    server_certificate_file: Option<PathBuf>,
    #[serde(default)]
    trust_any_server: bool,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    publishing_interval_ms: Option<u64>,
    #[serde(default)]
    reconnect_min_ms: Option<u64>,
    #[serde(default)]
    reconnect_max_ms: Option<u64>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    // Entries are parsed one by one, so an error names its index.
    #[serde(default)]
    subscribe: Vec<toml::Table>,
    #[serde(default)]
    write: Vec<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubscribe {
    node: String,
    channel: String,
    #[serde(default)]
    sampling_ms: Option<u64>,
    #[serde(default)]
    queue_size: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWrite {
    node: String,
    channel: String,
    #[serde(rename = "type")]
    value_type: String,
}

/// A checked OPC UA connector policy.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server's endpoint URL, as written (`opc.tcp://host:port/path`).
    pub url: String,
    /// Message security policy.
    pub policy: SecurityPolicy,
    /// Message security mode.
    pub mode: MessageSecurityMode,
    /// The client's own certificate and key, if configured (else a
    /// generated pair in the state dir is used when security needs one).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The application URI the client announces; `None`: derived from the
    /// connector's name.
    pub application_uri: Option<String>,
    /// Trust exactly this server certificate.
    pub server_certificate: Option<PathBuf>,
    /// Trust whatever certificate the server presents.
    pub trust_any_server: bool,
    /// User name and the file holding its password; anonymous if `None`.
    pub user: Option<(String, PathBuf)>,
    /// The subscription's publishing interval.
    pub publishing_interval: Duration,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Timeout of a connection attempt and of each request.
    pub timeout: Duration,
    /// Nodes to monitor, in policy order.
    pub subscribe: Vec<Subscribe>,
    /// Nodes that may be written, in policy order.
    pub write: Vec<Write>,
}

/// One `[[connector.subscribe]]` entry.
#[derive(Debug, Clone)]
pub struct Subscribe {
    /// The node whose value changes are published.
    pub node: NodeId,
    /// The channel they are published on.
    pub channel: String,
    /// Requested sampling interval, ms (0: the server's fastest).
    pub sampling_ms: u64,
    /// Requested server-side queue size.
    pub queue_size: u32,
}

/// One `[[connector.write]]` entry.
#[derive(Debug, Clone)]
pub struct Write {
    /// The node written.
    pub node: NodeId,
    /// The channel whose messages are written to it.
    pub channel: String,
    /// The OPC UA type the `f64` is converted to.
    pub value_type: ValueType,
}

/// The types a write can produce from the channel's `f64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// Double.
    Double,
    /// Float.
    Float,
    /// Int16.
    Int16,
    /// UInt16.
    UInt16,
    /// Int32.
    Int32,
    /// UInt32.
    UInt32,
    /// Int64.
    Int64,
    /// Boolean.
    Boolean,
}

impl ValueType {
    const NAMES: &'static str = "double, float, int16, uint16, int32, uint32, int64 or boolean";

    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "double" => Self::Double,
            "float" => Self::Float,
            "int16" => Self::Int16,
            "uint16" => Self::UInt16,
            "int32" => Self::Int32,
            "uint32" => Self::UInt32,
            "int64" => Self::Int64,
            "boolean" => Self::Boolean,
            _ => return None,
        })
    }

    /// Its policy name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Double => "double",
            Self::Float => "float",
            Self::Int16 => "int16",
            Self::UInt16 => "uint16",
            Self::Int32 => "int32",
            Self::UInt32 => "uint32",
            Self::Int64 => "int64",
            Self::Boolean => "boolean",
        }
    }
}

/// The policy names accepted for `security_policy`.
const POLICIES: &str = "None, Basic256Sha256, Aes128Sha256RsaOaep or Aes256Sha256RsaPss";

fn parse_policy(name: &str) -> Option<SecurityPolicy> {
    Some(match name {
        "None" => SecurityPolicy::None,
        "Basic256Sha256" => SecurityPolicy::Basic256Sha256,
        "Aes128Sha256RsaOaep" => SecurityPolicy::Aes128Sha256RsaOaep,
        "Aes256Sha256RsaPss" => SecurityPolicy::Aes256Sha256RsaPss,
        _ => return None,
    })
}

impl Config {
    /// Parses and checks the `[connector]` table (without `kind`) against
    /// the policy's `[network] connect` endpoints.
    ///
    /// # Errors
    /// Every problem found, each naming its key and the fix.
    pub fn parse(table: &toml::Table, endpoints: &[String]) -> Result<Self, Vec<ConfigError>> {
        let raw: RawConfig = deserialize(table.clone(), "").map_err(|e| vec![e])?;
        let mut errors = Vec::new();

        match parse_url(&raw.url) {
            Ok((host, port)) => {
                let endpoint = format_endpoint(&host, port);
                if !endpoints.iter().any(|e| same_endpoint(e, &host, port)) {
                    errors.push(ConfigError::new(
                        "url",
                        format!(
                            "the server {endpoint} is not granted: add \"{endpoint}\" to [network] connect"
                        ),
                    ));
                }
            }
            Err(message) => errors.push(ConfigError::new("url", message)),
        }

        let policy = match raw.security_policy.as_deref() {
            None => SecurityPolicy::None,
            Some(name) => parse_policy(name).unwrap_or_else(|| {
                let hint = if matches!(name, "Basic128Rsa15" | "Basic256") {
                    " (deprecated by OPC UA: insecure, not offered)"
                } else {
                    ""
                };
                errors.push(ConfigError::new(
                    "security_policy",
                    format!("unknown policy {name:?}{hint}: use {POLICIES}"),
                ));
                SecurityPolicy::Unknown
            }),
        };
        let secure = !matches!(policy, SecurityPolicy::None);
        let mode = match raw.security_mode.as_deref() {
            None if secure => MessageSecurityMode::SignAndEncrypt,
            None => MessageSecurityMode::None,
            Some("None") => MessageSecurityMode::None,
            Some("Sign") => MessageSecurityMode::Sign,
            Some("SignAndEncrypt") => MessageSecurityMode::SignAndEncrypt,
            Some(other) => {
                errors.push(ConfigError::new(
                    "security_mode",
                    format!("unknown mode {other:?}: use None, Sign or SignAndEncrypt"),
                ));
                MessageSecurityMode::Invalid
            }
        };
        match (policy, mode) {
            (SecurityPolicy::Unknown, _) | (_, MessageSecurityMode::Invalid) => {}
            (SecurityPolicy::None, MessageSecurityMode::None) => {}
            (SecurityPolicy::None, _) => errors.push(ConfigError::new(
                "security_mode",
                "Sign and SignAndEncrypt need a security policy: set security_policy = \"Basic256Sha256\" or security_mode = \"None\"",
            )),
            (_, MessageSecurityMode::None) => errors.push(ConfigError::new(
                "security_mode",
                "\"None\" goes only with security_policy = \"None\": use \"SignAndEncrypt\" (or \"Sign\")",
            )),
            _ => {}
        }

        let client_cert = match (raw.certificate_file, raw.private_key_file) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                errors.push(ConfigError::new(
                    "private_key_file",
                    "missing: certificate_file needs its private key (PEM or DER)",
                ));
                None
            }
            (None, Some(_)) => {
                errors.push(ConfigError::new(
                    "certificate_file",
                    "missing: private_key_file needs its certificate (PEM or DER)",
                ));
                None
            }
        };
        if let Some(uri) = &raw.application_uri {
            if uri.trim().is_empty() {
                errors.push(ConfigError::new(
                    "application_uri",
                    "empty: use the URI in your certificate's subjectAltName (e.g. \"urn:example:gateway\") or remove the key",
                ));
            }
        }

        if secure && raw.server_certificate_file.is_none() && !raw.trust_any_server {
            errors.push(ConfigError::new(
                "server_certificate_file",
                "missing: with a security policy the server's certificate must be trusted: set server_certificate_file to it (or trust_any_server = true, which accepts any server)",
            ));
        }
        if raw.server_certificate_file.is_some() && raw.trust_any_server {
            errors.push(ConfigError::new(
                "trust_any_server",
                "conflicts with server_certificate_file: remove one (the pinned certificate is the safe choice)",
            ));
        }

        let user = match (raw.username, raw.password_file) {
            (Some(name), Some(file)) if !name.is_empty() => Some((name, file)),
            (Some(_), Some(_)) => {
                errors.push(ConfigError::new(
                    "username",
                    "empty: set the user name, or remove username and password_file for anonymous access",
                ));
                None
            }
            (None, None) => None,
            (Some(_), None) => {
                errors.push(ConfigError::new(
                    "password_file",
                    "missing: username needs password_file (a file holding the password)",
                ));
                None
            }
            (None, Some(_)) => {
                errors.push(ConfigError::new(
                    "username",
                    "missing: password_file needs username",
                ));
                None
            }
        };

        let publishing_interval_ms = raw
            .publishing_interval_ms
            .unwrap_or(DEFAULT_PUBLISHING_INTERVAL_MS);
        if !(1..=3_600_000).contains(&publishing_interval_ms) {
            errors.push(ConfigError::new(
                "publishing_interval_ms",
                format!("{publishing_interval_ms} is out of range: use 1 to 3600000 (default {DEFAULT_PUBLISHING_INTERVAL_MS})"),
            ));
        }
        let reconnect_min_ms = raw.reconnect_min_ms.unwrap_or(DEFAULT_RECONNECT_MIN_MS);
        let reconnect_max_ms = raw.reconnect_max_ms.unwrap_or(DEFAULT_RECONNECT_MAX_MS);
        if !(1..=3_600_000).contains(&reconnect_min_ms) {
            errors.push(ConfigError::new(
                "reconnect_min_ms",
                format!("{reconnect_min_ms} is out of range: use 1 to 3600000 (default {DEFAULT_RECONNECT_MIN_MS})"),
            ));
        }
        if reconnect_max_ms < reconnect_min_ms || reconnect_max_ms > 3_600_000 {
            errors.push(ConfigError::new(
                "reconnect_max_ms",
                format!("{reconnect_max_ms} is out of range: use reconnect_min_ms ({reconnect_min_ms}) to 3600000 (default {DEFAULT_RECONNECT_MAX_MS})"),
            ));
        }
        let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(100..=600_000).contains(&timeout_ms) {
            errors.push(ConfigError::new(
                "timeout_ms",
                format!("{timeout_ms} is out of range: use 100 to 600000 (default {DEFAULT_TIMEOUT_MS})"),
            ));
        }

        let mut subscribe = Vec::new();
        for (i, table) in raw.subscribe.into_iter().enumerate() {
            let key = format!("subscribe[{i}]");
            let entry: RawSubscribe = match deserialize(table, &key) {
                Ok(entry) => entry,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let node = parse_node(&entry.node, &key, &mut errors);
            check_channel(&entry.channel, &key, &mut errors);
            if let Some(j) = subscribe
                .iter()
                .position(|s: &Subscribe| s.channel == entry.channel)
            {
                errors.push(ConfigError::new(
                    format!("{key}.channel"),
                    format!(
                        "{:?} already carries subscribe[{j}]'s node: give each node its own channel",
                        entry.channel
                    ),
                ));
            }
            let sampling_ms = entry.sampling_ms.unwrap_or(DEFAULT_SAMPLING_MS);
            if sampling_ms > 3_600_000 {
                errors.push(ConfigError::new(
                    format!("{key}.sampling_ms"),
                    format!("{sampling_ms} is out of range: use 0 (the server's fastest) to 3600000 (default {DEFAULT_SAMPLING_MS})"),
                ));
            }
            let queue_size = entry.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE);
            if !(1..=10_000).contains(&queue_size) {
                errors.push(ConfigError::new(
                    format!("{key}.queue_size"),
                    format!("{queue_size} is out of range: use 1 (latest value only) to 10000 (default {DEFAULT_QUEUE_SIZE})"),
                ));
            }
            if let Some(node) = node {
                subscribe.push(Subscribe {
                    node,
                    channel: entry.channel,
                    sampling_ms,
                    queue_size,
                });
            }
        }

        let mut write = Vec::new();
        for (i, table) in raw.write.into_iter().enumerate() {
            let key = format!("write[{i}]");
            let entry: RawWrite = match deserialize(table, &key) {
                Ok(entry) => entry,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let node = parse_node(&entry.node, &key, &mut errors);
            check_channel(&entry.channel, &key, &mut errors);
            if let Some(j) = write
                .iter()
                .position(|w: &Write| w.channel == entry.channel)
            {
                errors.push(ConfigError::new(
                    format!("{key}.channel"),
                    format!(
                        "{:?} is already written to write[{j}]'s node: a channel writes exactly one node, use another channel",
                        entry.channel
                    ),
                ));
            }
            let value_type = ValueType::parse(&entry.value_type);
            if value_type.is_none() {
                errors.push(ConfigError::new(
                    format!("{key}.type"),
                    format!(
                        "unknown type {:?}: use {}",
                        entry.value_type,
                        ValueType::NAMES
                    ),
                ));
            }
            if let (Some(node), Some(value_type)) = (node, value_type) {
                write.push(Write {
                    node,
                    channel: entry.channel,
                    value_type,
                });
            }
        }
        if subscribe.is_empty() && write.is_empty() && errors.is_empty() {
            errors.push(ConfigError::new(
                "subscribe",
                "nothing to do: add [[connector.subscribe]] (node, channel) or [[connector.write]] (node, channel, type) entries",
            ));
        }

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            url: raw.url,
            policy,
            mode,
            client_cert,
            application_uri: raw.application_uri,
            server_certificate: raw.server_certificate_file,
            trust_any_server: raw.trust_any_server,
            user,
            publishing_interval: Duration::from_millis(publishing_interval_ms),
            reconnect_min: Duration::from_millis(reconnect_min_ms),
            reconnect_max: Duration::from_millis(reconnect_max_ms),
            timeout: Duration::from_millis(timeout_ms),
            subscribe,
            write,
        })
    }
}

fn parse_node(text: &str, key: &str, errors: &mut Vec<ConfigError>) -> Option<NodeId> {
    match NodeId::from_str(text) {
        Ok(node) => Some(node),
        Err(_) => {
            errors.push(ConfigError::new(
                format!("{key}.node"),
                format!(
                    "{text:?} is not a node id: use the OPC UA text form, e.g. \"ns=2;s=counter\", \"ns=3;i=1001\" or \"i=2258\""
                ),
            ));
            None
        }
    }
}

fn check_channel(channel: &str, key: &str, errors: &mut Vec<ConfigError>) {
    if channel.is_empty() {
        errors.push(ConfigError::new(
            format!("{key}.channel"),
            "empty: name the channel (as in [channels])",
        ));
    }
}

/// Host and port of an `opc.tcp://host[:port][/path]` URL.
fn parse_url(url: &str) -> Result<(String, u16), String> {
    let fix = "use opc.tcp://HOST:PORT/ (e.g. \"opc.tcp://plc.local:4840/\")";
    let Some(rest) = url.strip_prefix("opc.tcp://") else {
        return Err(format!("{url:?} is not an OPC UA binary URL: {fix}"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!(
            "{url:?} has user info: put the user in username/password_file and {fix}"
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?} has an unclosed [IPv6 address]: {fix}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("{url:?} has junk after the IPv6 address: {fix}")),
        };
        (host.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} names no host: {fix}"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(format!("{url:?} has a bad port {p:?}: {fix}")),
        },
    };
    Ok((host, port))
}

fn format_endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Whether the grant `endpoint` (`host:port`, `[v6]:port`) is `host`:`port`.
fn same_endpoint(endpoint: &str, host: &str, port: u16) -> bool {
    let Some((h, p)) = endpoint.trim().rsplit_once(':') else {
        return false;
    };
    let h = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    p.parse::<u16>() == Ok(port) && h.eq_ignore_ascii_case(host)
}

/// Deserializes `table` into `T`, turning serde's message into a
/// [`ConfigError`] at the dotted key (under `prefix`).
fn deserialize<T: DeserializeOwned>(table: toml::Table, prefix: &str) -> Result<T, ConfigError> {
    toml::Value::Table(table)
        .try_into::<T>()
        .map_err(|e| serde_error(prefix, &e.to_string()))
}

/// toml 0.9 reports `MESSAGE\nin `a.b`\n`; unknown and missing fields name
/// the field in backquotes.
fn serde_error(prefix: &str, text: &str) -> ConfigError {
    let mut message = text.lines().next().unwrap_or_default().trim().to_string();
    let mut path: Vec<String> = Vec::new();
    if !prefix.is_empty() {
        path.push(prefix.to_string());
    }
    if let Some(inner) = text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("in `")
            .and_then(|l| l.strip_suffix('`'))
    }) {
        path.push(inner.to_string());
    }
    let quoted = |s: &str| s.split('`').nth(1).map(str::to_string);
    if let Some(rest) = message.strip_prefix("unknown field ") {
        if let Some(field) = quoted(rest) {
            let known = rest
                .split_once(", expected ")
                .map(|(_, k)| k.trim_start_matches("one of ").replace('`', ""))
                .unwrap_or_default();
            path.push(field);
            message = format!("unknown key: remove it or use one of {known}");
        }
    } else if let Some(rest) = message.strip_prefix("missing field ") {
        if let Some(field) = quoted(rest) {
            path.push(field);
            message = "missing: this key is required".to_string();
        }
    } else {
        // Serde names Rust types; say what to write in TOML instead.
        for (rust, toml) in [
            ("expected u64", "expected a whole number (0 or more)"),
            ("expected u32", "expected a whole number (0 or more)"),
            ("expected a map", "expected a table"),
            ("expected a sequence", "expected an array of tables"),
        ] {
            message = message.replace(rust, toml);
        }
        message = format!(
            "{message}: fix the value (see the OPC UA connector's keys in docs/connectors.md)"
        );
    }
    ConfigError::new(path.join("."), message)
}
