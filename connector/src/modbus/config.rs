//! The modbus `[connector]` table: its keys, defaults and checks, and the
//! plan `run` follows.
//!
//! Checking happens in three passes so every error names its dotted key:
//! a walk over the raw TOML against [`ROOT`] (unknown keys, missing keys,
//! wrong types, numeric ranges, fixed choices), then serde into the typed
//! [`Config`] (`deny_unknown_fields`; cannot fail after the walk, kept as
//! the source of truth for the types), then the checks that span keys
//! (type vs table, overlaps, endpoints) while resolving defaults into a
//! [`Plan`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use super::decode::{Format, Order, Table, ValueType};
use crate::driver::ConfigError;

/// Default Modbus unit (slave) id.
pub const DEFAULT_UNIT: u8 = 1;
/// Default per-request timeout, ms.
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
/// Default first reconnect delay, ms (doubles per failure).
pub const DEFAULT_RECONNECT_MIN_MS: u64 = 100;
/// Default longest reconnect delay, ms.
pub const DEFAULT_RECONNECT_MAX_MS: u64 = 10_000;
/// Default poll interval, ms.
pub const DEFAULT_EVERY_MS: u64 = 1000;

/// The `[connector]` table (without `kind`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[[connector.device]]`.
    pub device: Vec<DeviceConfig>,
}

/// One `[[connector.device]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Name for logs.
    pub name: String,
    /// `host:port`, as in `[network] connect`.
    pub address: String,
    /// Unit (slave) id.
    pub unit: Option<u8>,
    /// Per-request timeout, ms.
    pub timeout_ms: Option<u64>,
    /// First reconnect delay, ms.
    pub reconnect_min_ms: Option<u64>,
    /// Longest reconnect delay, ms.
    pub reconnect_max_ms: Option<u64>,
    /// `[[connector.device.poll]]`.
    #[serde(default)]
    pub poll: Vec<PollConfig>,
    /// `[[connector.device.write]]`.
    #[serde(default)]
    pub write: Vec<WriteConfig>,
}

/// The value keys shared by polls and write allowances.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// Channel the value is published on.
    pub channel: String,
    /// Interval, ms.
    pub every_ms: Option<u64>,
    /// Table.
    pub table: Option<Table>,
    /// First address.
    pub address: u16,
    /// Type on the device.
    #[serde(rename = "type")]
    pub ty: Option<ValueType>,
    /// Byte order in a register.
    pub byte_order: Option<Order>,
    /// Word order of 32-bit types.
    pub word_order: Option<Order>,
    /// Scale.
    pub scale: Option<f64>,
    /// Offset.
    pub offset: Option<f64>,
    /// Bit of a register (bool only).
    pub bit: Option<u8>,
}

/// One `[[connector.device.write]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteConfig {
    /// Channel modules send writes on.
    pub channel: String,
    /// The writable addresses.
    pub allow: Vec<AllowConfig>,
}

/// One entry of `allow`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowConfig {
    /// Table (holding or coil).
    pub table: Option<Table>,
    /// First address.
    pub address: u16,
    /// Type on the device.
    #[serde(rename = "type")]
    pub ty: Option<ValueType>,
    /// Byte order in a register.
    pub byte_order: Option<Order>,
    /// Word order of 32-bit types.
    pub word_order: Option<Order>,
    /// Scale (the write applies the inverse).
    pub scale: Option<f64>,
    /// Offset (the write applies the inverse).
    pub offset: Option<f64>,
}

/// What `run` does, defaults resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The devices, in policy order.
    pub devices: Vec<DevicePlan>,
}

/// One device.
#[derive(Debug, Clone)]
pub struct DevicePlan {
    /// Name for logs.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// Unit id.
    pub unit: u8,
    /// Per-request (and connect) timeout.
    pub timeout: Duration,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Polls.
    pub polls: Vec<PollPlan>,
    /// Write channels.
    pub writes: Vec<WritePlan>,
}

/// One poll.
#[derive(Debug, Clone)]
pub struct PollPlan {
    /// Channel.
    pub channel: String,
    /// Interval.
    pub every: Duration,
    /// Table.
    pub table: Table,
    /// First address.
    pub address: u16,
    /// Layout and scaling.
    pub format: Format,
}

/// One write channel.
#[derive(Debug, Clone)]
pub struct WritePlan {
    /// Channel.
    pub channel: String,
    /// Allowed targets.
    pub allow: Vec<AllowPlan>,
}

/// One writable value.
#[derive(Debug, Clone)]
pub struct AllowPlan {
    /// Table.
    pub table: Table,
    /// First address.
    pub address: u16,
    /// Layout and scaling.
    pub format: Format,
}

/// What a key must hold.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    /// An integer in `min..=max`.
    Int(i64, i64),
    /// A float or an integer.
    Number,
    /// One of these strings; the `&str` names the thing ("type").
    Choice(&'static str, &'static [&'static str]),
    /// An array of tables with these keys.
    Tables(&'static [Field]),
}

struct Field {
    key: &'static str,
    kind: Kind,
    required: bool,
}

const fn req(key: &'static str, kind: Kind) -> Field {
    Field {
        key,
        kind,
        required: true,
    }
}

const fn opt(key: &'static str, kind: Kind) -> Field {
    Field {
        key,
        kind,
        required: false,
    }
}

const TABLES: Kind = Kind::Choice("table", &["holding", "input", "coil", "discrete"]);
const TYPES: Kind = Kind::Choice("type", &["u16", "i16", "u32", "i32", "f32", "bool"]);
const ORDERS: Kind = Kind::Choice("order", &["big", "little"]);
const MS: Kind = Kind::Int(1, 3_600_000);

const ALLOW: &[Field] = &[
    opt("table", TABLES),
    req("address", Kind::Int(0, 65535)),
    opt("type", TYPES),
    opt("byte_order", ORDERS),
    opt("word_order", ORDERS),
    opt("scale", Kind::Number),
    opt("offset", Kind::Number),
];

const WRITE: &[Field] = &[req("channel", Kind::Str), req("allow", Kind::Tables(ALLOW))];

const POLL: &[Field] = &[
    req("channel", Kind::Str),
    opt("every_ms", Kind::Int(1, 86_400_000)),
    opt("table", TABLES),
    req("address", Kind::Int(0, 65535)),
    opt("type", TYPES),
    opt("byte_order", ORDERS),
    opt("word_order", ORDERS),
    opt("scale", Kind::Number),
    opt("offset", Kind::Number),
    opt("bit", Kind::Int(0, 15)),
];

const DEVICE: &[Field] = &[
    req("name", Kind::Str),
    req("address", Kind::Str),
    opt("unit", Kind::Int(0, 255)),
    opt("timeout_ms", MS),
    opt("reconnect_min_ms", MS),
    opt("reconnect_max_ms", MS),
    opt("poll", Kind::Tables(POLL)),
    opt("write", Kind::Tables(WRITE)),
];

/// The `[connector]` table's keys.
const ROOT: &[Field] = &[req("device", Kind::Tables(DEVICE))];

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn type_name(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

fn list(choices: &[&str]) -> String {
    match choices {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Checks `table` against `fields`, reporting under `prefix`.
fn walk(table: &toml::Table, prefix: &str, fields: &[Field], errors: &mut Vec<ConfigError>) {
    for (key, value) in table {
        let path = join(prefix, key);
        let Some(field) = fields.iter().find(|f| f.key == key) else {
            let keys: Vec<&str> = fields.iter().map(|f| f.key).collect();
            errors.push(ConfigError::new(
                path,
                format!("unknown key: use {}", list(&keys)),
            ));
            continue;
        };
        check_value(value, &path, field.kind, errors);
    }
    for field in fields.iter().filter(|f| f.required) {
        if !table.contains_key(field.key) {
            let path = join(prefix, field.key);
            let fix = match field.kind {
                Kind::Str => format!("add {} = \"...\"", field.key),
                Kind::Int(min, max) => format!("add {} = <{min} to {max}>", field.key),
                Kind::Number => format!("add {} = <number>", field.key),
                Kind::Choice(_, choices) => format!("add {} = \"{}\"", field.key, choices[0]),
                Kind::Tables(_) => format!("add a [[connector.{}]] table", unindexed(&path)),
            };
            errors.push(ConfigError::new(path, format!("missing: {fix}")));
        }
    }
}

/// `device[0].poll` → `device.poll` (the TOML table header's name).
fn unindexed(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            c if !in_index => out.push(c),
            _ => {}
        }
    }
    out
}

fn check_value(value: &toml::Value, path: &str, kind: Kind, errors: &mut Vec<ConfigError>) {
    let wrong = |expected: &str| {
        ConfigError::new(
            path,
            format!("expected {expected}, found {}", type_name(value)),
        )
    };
    match (kind, value) {
        (Kind::Str, toml::Value::String(_)) => {}
        (Kind::Str, _) => errors.push(wrong("a string")),
        (Kind::Int(min, max), toml::Value::Integer(n)) => {
            if *n < min || *n > max {
                errors.push(ConfigError::new(
                    path,
                    format!("{n} is out of range: use {min} to {max}"),
                ));
            }
        }
        (Kind::Int(min, max), _) => {
            errors.push(wrong(&format!("an integer from {min} to {max}")));
        }
        (Kind::Number, toml::Value::Float(f)) => {
            if !f.is_finite() {
                errors.push(ConfigError::new(
                    path,
                    format!("{f} is not a finite number"),
                ));
            }
        }
        (Kind::Number, toml::Value::Integer(_)) => {}
        (Kind::Number, _) => errors.push(wrong("a number")),
        (Kind::Choice(what, choices), toml::Value::String(s)) => {
            if !choices.contains(&s.as_str()) {
                errors.push(ConfigError::new(
                    path,
                    format!("unknown {what} {s:?}: use {}", list(choices)),
                ));
            }
        }
        (Kind::Choice(_, choices), _) => {
            errors.push(wrong(&format!("one of {}", list(choices))));
        }
        (Kind::Tables(fields), toml::Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                match item {
                    toml::Value::Table(t) => walk(t, &item_path, fields, errors),
                    other => errors.push(ConfigError::new(
                        item_path,
                        format!("expected a table, found {}", type_name(other)),
                    )),
                }
            }
        }
        (Kind::Tables(_), _) => errors.push(wrong("an array of tables")),
    }
}

/// Checks `config` and resolves it into a [`Plan`]; `endpoints` is the
/// policy's `[network] connect`.
///
/// # Errors
/// Every problem found, each naming its key and the fix.
pub fn plan(config: &toml::Table, endpoints: &[String]) -> Result<Plan, Vec<ConfigError>> {
    let mut errors = Vec::new();
    walk(config, "", ROOT, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let parsed: Config = toml::Value::Table(config.clone())
        .try_into()
        .map_err(|e| vec![ConfigError::new("device", e.to_string())])?;
    let plan = resolve(&parsed, endpoints, &mut errors);
    if errors.is_empty() {
        Ok(plan)
    } else {
        Err(errors)
    }
}

fn resolve(config: &Config, endpoints: &[String], errors: &mut Vec<ConfigError>) -> Plan {
    if config.device.is_empty() {
        errors.push(ConfigError::new(
            "device",
            "no devices: add a [[connector.device]] with name and address",
        ));
    }
    let mut names = HashSet::new();
    let mut poll_channels: HashMap<&str, String> = HashMap::new();
    let mut write_channels: HashMap<&str, String> = HashMap::new();
    let mut devices = Vec::new();
    for (d, device) in config.device.iter().enumerate() {
        let key = format!("device[{d}]");
        if device.name.trim().is_empty() {
            errors.push(ConfigError::new(
                format!("{key}.name"),
                "empty: name the device (used in logs)",
            ));
        } else if !names.insert(device.name.as_str()) {
            errors.push(ConfigError::new(
                format!("{key}.name"),
                format!(
                    "{:?} names two devices: give each its own name",
                    device.name
                ),
            ));
        }
        check_address(
            &device.address,
            endpoints,
            &format!("{key}.address"),
            errors,
        );
        let reconnect_min = device.reconnect_min_ms.unwrap_or(DEFAULT_RECONNECT_MIN_MS);
        let reconnect_max = device.reconnect_max_ms.unwrap_or(DEFAULT_RECONNECT_MAX_MS);
        if reconnect_min > reconnect_max {
            errors.push(ConfigError::new(
                format!("{key}.reconnect_min_ms"),
                format!(
                    "{reconnect_min} is above reconnect_max_ms ({reconnect_max}): make it at most that"
                ),
            ));
        }
        if device.poll.is_empty() && device.write.is_empty() {
            errors.push(ConfigError::new(
                key.clone(),
                "nothing to do: add a [[connector.device.poll]] or a [[connector.device.write]]",
            ));
        }
        let mut polls = Vec::new();
        for (p, poll) in device.poll.iter().enumerate() {
            let pkey = format!("{key}.poll[{p}]");
            check_channel(
                &poll.channel,
                &format!("{pkey}.channel"),
                &mut poll_channels,
                errors,
            );
            let table = poll.table.unwrap_or(Table::Holding);
            let values = ValueKeys {
                table,
                address: poll.address,
                ty: poll.ty,
                byte_order: poll.byte_order,
                word_order: poll.word_order,
                scale: poll.scale,
                offset: poll.offset,
                bit: poll.bit,
            };
            let format = values.format(&pkey, false, errors);
            polls.push(PollPlan {
                channel: poll.channel.clone(),
                every: Duration::from_millis(poll.every_ms.unwrap_or(DEFAULT_EVERY_MS)),
                table,
                address: poll.address,
                format,
            });
        }
        let mut writes = Vec::new();
        for (w, write) in device.write.iter().enumerate() {
            let wkey = format!("{key}.write[{w}]");
            check_channel(
                &write.channel,
                &format!("{wkey}.channel"),
                &mut write_channels,
                errors,
            );
            if write.allow.is_empty() {
                errors.push(ConfigError::new(
                    format!("{wkey}.allow"),
                    "empty: list the writable addresses, e.g. allow = [{ table = \"holding\", address = 10, type = \"u16\" }]",
                ));
            }
            let mut allow: Vec<AllowPlan> = Vec::new();
            for (a, entry) in write.allow.iter().enumerate() {
                let akey = format!("{wkey}.allow[{a}]");
                let table = entry.table.unwrap_or(Table::Holding);
                if matches!(table, Table::Input | Table::Discrete) {
                    errors.push(ConfigError::new(
                        format!("{akey}.table"),
                        format!(
                            "{} is read-only in Modbus: use holding or coil",
                            table.name()
                        ),
                    ));
                }
                let values = ValueKeys {
                    table,
                    address: entry.address,
                    ty: entry.ty,
                    byte_order: entry.byte_order,
                    word_order: entry.word_order,
                    scale: entry.scale,
                    offset: entry.offset,
                    bit: None,
                };
                let format = values.format(&akey, true, errors);
                let span = span(entry.address, format.ty);
                for (b, other) in allow.iter().enumerate() {
                    let other_span = span_of(other);
                    if other.table != table && other.address == entry.address {
                        errors.push(ConfigError::new(
                            format!("{akey}.address"),
                            format!(
                                "{} is also allowed in {} (allow[{b}]): a write message names only the address, so allow each address in one table",
                                entry.address,
                                other.table.name()
                            ),
                        ));
                    } else if other.table == table
                        && span.0 <= other_span.1
                        && other_span.0 <= span.1
                    {
                        errors.push(ConfigError::new(
                            format!("{akey}.address"),
                            format!(
                                "{} overlaps allow[{b}] (addresses {}..={}): allow each register once",
                                entry.address, other_span.0, other_span.1
                            ),
                        ));
                    }
                }
                allow.push(AllowPlan {
                    table,
                    address: entry.address,
                    format,
                });
            }
            writes.push(WritePlan {
                channel: write.channel.clone(),
                allow,
            });
        }
        devices.push(DevicePlan {
            name: device.name.clone(),
            address: device.address.clone(),
            unit: device.unit.unwrap_or(DEFAULT_UNIT),
            timeout: Duration::from_millis(device.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)),
            reconnect_min: Duration::from_millis(reconnect_min),
            reconnect_max: Duration::from_millis(reconnect_max),
            polls,
            writes,
        });
    }
    Plan { devices }
}

/// First and last address a value of `ty` at `address` covers.
fn span(address: u16, ty: ValueType) -> (u32, u32) {
    let first = u32::from(address);
    (first, first + u32::from(ty.registers()) - 1)
}

fn span_of(allow: &AllowPlan) -> (u32, u32) {
    span(allow.address, allow.format.ty)
}

fn check_address(address: &str, endpoints: &[String], key: &str, errors: &mut Vec<ConfigError>) {
    let Some((host, port)) = address.rsplit_once(':') else {
        errors.push(ConfigError::new(
            key,
            format!("{address:?} has no port: write host:port (Modbus TCP's standard port is 502)"),
        ));
        return;
    };
    if host.is_empty() || !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
        errors.push(ConfigError::new(
            key,
            format!("{address:?} is not host:port: write it as e.g. \"10.0.0.5:502\""),
        ));
        return;
    }
    if !endpoints.iter().any(|e| e == address) {
        errors.push(ConfigError::new(
            key,
            format!("{address:?} is not in [network] connect: add it there (the sandbox refuses every other connection)"),
        ));
    }
}

fn check_channel<'a>(
    channel: &'a str,
    key: &str,
    seen: &mut HashMap<&'a str, String>,
    errors: &mut Vec<ConfigError>,
) {
    if channel.trim().is_empty() {
        errors.push(ConfigError::new(key, "empty: name a channel"));
    } else if let Some(first) = seen.get(channel) {
        errors.push(ConfigError::new(
            key,
            format!("channel {channel:?} is already used by {first}: give each its own channel"),
        ));
    } else {
        seen.insert(channel, key.trim_end_matches(".channel").to_string());
    }
}

/// The value keys of a poll or an allow entry, for the checks they share.
struct ValueKeys {
    table: Table,
    address: u16,
    ty: Option<ValueType>,
    byte_order: Option<Order>,
    word_order: Option<Order>,
    scale: Option<f64>,
    offset: Option<f64>,
    bit: Option<u8>,
}

impl ValueKeys {
    /// The resolved format; problems go to `errors` under `key`.
    fn format(&self, key: &str, write: bool, errors: &mut Vec<ConfigError>) -> Format {
        let bits = self.table.is_bits();
        let ty = self.ty.unwrap_or(if bits {
            ValueType::Bool
        } else {
            ValueType::U16
        });
        let mut err = |sub: &str, message: String| {
            errors.push(ConfigError::new(format!("{key}.{sub}"), message));
        };
        if bits && ty != ValueType::Bool {
            err(
                "type",
                format!(
                    "{} holds bits: use type = \"bool\" (or leave type out)",
                    self.table.name()
                ),
            );
        }
        if !bits && ty == ValueType::Bool {
            if write {
                err(
                    "type",
                    "writing one bit of a register is not supported: allow the register as u16, or use a coil".into(),
                );
            } else if self.bit.is_none() {
                err(
                    "bit",
                    "missing: a bool in a register table reads one bit: add bit = 0..15 (0 = least significant)".into(),
                );
            }
        }
        if self.bit.is_some() && (bits || ty != ValueType::Bool) {
            err(
                "bit",
                "only for type = \"bool\" in holding or input registers: remove it".into(),
            );
        }
        if bits && self.byte_order.is_some() {
            err(
                "byte_order",
                format!("{} holds bits, not registers: remove it", self.table.name()),
            );
        }
        if self.word_order.is_some() && ty.registers() != 2 {
            err(
                "word_order",
                format!(
                    "only for 32-bit types (u32, i32, f32), not {}: remove it",
                    ty.name()
                ),
            );
        }
        if ty == ValueType::Bool && (self.scale.is_some() || self.offset.is_some()) {
            let sub = if self.scale.is_some() {
                "scale"
            } else {
                "offset"
            };
            err(sub, "a bool is not scaled: remove it".into());
        }
        if self.scale == Some(0.0) {
            err(
                "scale",
                "0 would publish a constant (and make writes impossible): use a non-zero factor"
                    .into(),
            );
        }
        if u32::from(self.address) + u32::from(ty.registers()) - 1 > 65535 {
            err(
                "address",
                format!(
                    "{} at {} runs past address 65535: use a lower address",
                    ty.name(),
                    self.address
                ),
            );
        }
        Format {
            ty,
            byte_order: self.byte_order.unwrap_or_default(),
            word_order: self.word_order.unwrap_or_default(),
            scale: self.scale.unwrap_or(1.0),
            offset: self.offset.unwrap_or(0.0),
            bit: self.bit,
        }
    }
}
