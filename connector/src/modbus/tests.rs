//! Tests of the modbus driver: the pure parts (decode/encode, config,
//! grouping, schedule) directly, the driver against the real pymodbus
//! server of `tests/peers/modbus_server.py` (register map at its top).
//! `cargo test --release -p edgeward-connector modbus`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeward_tests::peers::modbus::{ModbusServer, Table as PeerTable};
use tokio::sync::{mpsc, oneshot, watch};

use super::config::{plan, PollPlan};
use super::decode::{
    decode_registers, encode, parse_write, EncodeError, Encoded, Format, Order, Table, Value,
    ValueType,
};
use super::poll::{groups, Data};
use super::write::{prepare, Refusal};
use crate::driver::{
    ChannelIo, Context, Counters, Inbound, InboundBatch, PublishRings, Publisher, SendError,
};

// ---------------------------------------------------------------- decode

fn format(ty: ValueType, byte_order: Order, word_order: Order) -> Format {
    Format {
        byte_order,
        word_order,
        ..Format::plain(ty)
    }
}

/// The registers of big-endian `bytes` laid out in the given orders (an
/// independent model of the layouts: reorder the 2-byte words, then the
/// bytes in each).
fn layout(bytes: &[u8], byte_order: Order, word_order: Order) -> Vec<u16> {
    let mut words: Vec<[u8; 2]> = bytes.chunks(2).map(|c| [c[0], c[1]]).collect();
    if word_order == Order::Little {
        words.reverse();
    }
    words
        .into_iter()
        .map(|[a, b]| match byte_order {
            Order::Big => u16::from_be_bytes([a, b]),
            Order::Little => u16::from_be_bytes([b, a]),
        })
        .collect()
}

const ORDERS: [(Order, Order); 4] = [
    (Order::Big, Order::Big),
    (Order::Big, Order::Little),
    (Order::Little, Order::Big),
    (Order::Little, Order::Little),
];

#[test]
fn decodes_every_type_in_every_order() {
    for (byte_order, word_order) in ORDERS {
        let cases: [(ValueType, Vec<u8>, f64); 5] = [
            (ValueType::U16, 0xBEEFu16.to_be_bytes().to_vec(), 48879.0),
            (ValueType::I16, (-2i16).to_be_bytes().to_vec(), -2.0),
            (
                ValueType::U32,
                0xDEAD_BEEFu32.to_be_bytes().to_vec(),
                3_735_928_559.0,
            ),
            (
                ValueType::I32,
                (-123_456i32).to_be_bytes().to_vec(),
                -123_456.0,
            ),
            (
                ValueType::F32,
                123.456f32.to_be_bytes().to_vec(),
                f64::from(123.456f32),
            ),
        ];
        for (ty, bytes, expected) in cases {
            let word_order = if ty.registers() == 2 {
                word_order
            } else {
                Order::Big
            };
            let f = format(ty, byte_order, word_order);
            let regs = layout(&bytes, byte_order, word_order);
            assert_eq!(
                decode_registers(&f, &regs),
                Some(Value::Number(expected)),
                "{ty:?} {byte_order:?}/{word_order:?} from {regs:04x?}"
            );
            // Encoding the value gives the same registers back.
            assert_eq!(
                encode(&f, Table::Holding, expected),
                Ok(Encoded::Registers(regs.clone())),
                "{ty:?} {byte_order:?}/{word_order:?}"
            );
        }
    }
}

#[test]
fn scale_and_offset_apply_on_decode_and_invert_on_encode() {
    let f = Format {
        scale: 0.1,
        offset: -40.0,
        ..Format::plain(ValueType::I16)
    };
    // raw 625 → 62.5 - 40 = 22.5 (floating error tolerated on decode).
    let Some(Value::Number(v)) = decode_registers(&f, &[625]) else {
        panic!("a number")
    };
    assert!((v - 22.5).abs() < 1e-9, "{v}");
    // 22.5 → (22.5 + 40) / 0.1 = 624.999… → rounds to 625.
    assert_eq!(
        encode(&f, Table::Holding, 22.5),
        Ok(Encoded::Registers(vec![625]))
    );
    // -40 - 3276.9 → raw -32769 does not fit i16.
    assert!(matches!(
        encode(&f, Table::Holding, -3316.9),
        Err(EncodeError::OutOfRange { ty: "i16", .. })
    ));
}

#[test]
fn bits_decode_and_encode() {
    let bit3 = Format {
        bit: Some(3),
        ..Format::plain(ValueType::Bool)
    };
    assert_eq!(decode_registers(&bit3, &[0b1000]), Some(Value::Bool(true)));
    assert_eq!(decode_registers(&bit3, &[0b0111]), Some(Value::Bool(false)));
    let swapped = Format {
        byte_order: Order::Little,
        ..bit3
    };
    assert_eq!(
        decode_registers(&swapped, &[0x0800]),
        Some(Value::Bool(true))
    );
    let coil = Format::plain(ValueType::Bool);
    assert_eq!(encode(&coil, Table::Coil, 1.0), Ok(Encoded::Coil(true)));
    assert_eq!(encode(&coil, Table::Coil, 0.0), Ok(Encoded::Coil(false)));
    assert_eq!(
        encode(&coil, Table::Coil, 0.5),
        Err(EncodeError::NotBool(0.5))
    );
    assert_eq!(
        encode(&coil, Table::Coil, 2.0),
        Err(EncodeError::NotBool(2.0))
    );
    assert_eq!(
        encode(&bit3, Table::Holding, 1.0),
        Err(EncodeError::RegisterBit)
    );
    assert_eq!(Value::Bool(true).to_message(), vec![1]);
    assert_eq!(
        Value::Number(1.5).to_message(),
        1.5f64.to_le_bytes().to_vec()
    );
}

#[test]
fn encode_refuses_what_does_not_fit() {
    let cases = [
        (ValueType::U16, -1.0),
        (ValueType::U16, 65_536.0),
        (ValueType::I16, 32_768.0),
        (ValueType::I16, -32_769.0),
        (ValueType::U32, -1.0),
        (ValueType::U32, 4_294_967_296.0),
        (ValueType::I32, 2_147_483_648.0),
        (ValueType::I32, -2_147_483_649.0),
        (ValueType::F32, 1e39),
    ];
    for (ty, value) in cases {
        assert!(
            matches!(
                encode(&Format::plain(ty), Table::Holding, value),
                Err(EncodeError::OutOfRange { .. })
            ),
            "{ty:?} {value}"
        );
    }
    for ty in [ValueType::U16, ValueType::F32] {
        for value in [f64::NAN, f64::INFINITY] {
            assert!(
                matches!(
                    encode(&Format::plain(ty), Table::Holding, value),
                    Err(EncodeError::NotFinite(_))
                ),
                "{ty:?} {value}"
            );
        }
    }
    // The edges fit.
    assert_eq!(
        encode(&Format::plain(ValueType::U16), Table::Holding, 65_535.0),
        Ok(Encoded::Registers(vec![0xFFFF]))
    );
    assert_eq!(
        encode(
            &Format::plain(ValueType::I32),
            Table::Holding,
            -2_147_483_648.0
        ),
        Ok(Encoded::Registers(vec![0x8000, 0x0000]))
    );
}

fn write_message(address: u16, value: f64) -> Vec<u8> {
    let mut m = address.to_le_bytes().to_vec();
    m.extend_from_slice(&value.to_le_bytes());
    m
}

#[test]
fn write_messages_parse_and_are_checked_against_allow() {
    assert_eq!(parse_write(&write_message(513, -2.5)), Some((513, -2.5)));
    assert_eq!(parse_write(&[0; 9]), None);
    assert_eq!(parse_write(&[0; 11]), None);
    let allow = vec![super::config::AllowPlan {
        table: Table::Holding,
        address: 12,
        format: format(ValueType::F32, Order::Big, Order::Little),
    }];
    let bits = 21.5f32.to_bits();
    assert_eq!(
        prepare(&allow, &write_message(12, 21.5)),
        Ok((
            Table::Holding,
            12,
            Encoded::Registers(vec![bits as u16, (bits >> 16) as u16])
        ))
    );
    assert_eq!(
        prepare(&allow, &write_message(13, 1.0)),
        Err(Refusal::NotAllowed(13))
    );
    assert_eq!(prepare(&allow, &[1, 2, 3]), Err(Refusal::Malformed(3)));
    assert!(matches!(
        prepare(&allow, &write_message(12, f64::NAN)),
        Err(Refusal::Value { address: 12, .. })
    ));
}

// ---------------------------------------------------------------- config

fn table(text: &str) -> toml::Table {
    text.parse().expect("test TOML parses")
}

const GOOD: &str = r#"
[[device]]
name = "plc1"
address = "127.0.0.1:5020"
[[device.poll]]
channel = "t"
address = 20
type = "f32"
every_ms = 100
[[device.poll]]
channel = "coil"
table = "coil"
address = 3
[[device.poll]]
channel = "flag"
address = 0
type = "bool"
bit = 2
[[device.write]]
channel = "sp"
allow = [
  { table = "holding", address = 10, type = "u16" },
  { address = 12, type = "f32", word_order = "little", scale = 0.1 },
  { table = "coil", address = 3 },
]
"#;

fn endpoints() -> Vec<String> {
    vec!["127.0.0.1:5020".to_string()]
}

/// The errors of `text` as "key: message" lines.
fn errors(text: &str) -> Vec<String> {
    match super::check(&table(text), &endpoints()) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| format!("{}: {}", e.key, e.message))
            .collect(),
    }
}

fn assert_error(text: &str, key: &str, fragment: &str) {
    let errors = errors(text);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{key}: ")) && e.contains(fragment)),
        "expected {key}: …{fragment}… in {errors:#?}"
    );
}

#[test]
fn a_good_config_passes_with_defaults_resolved() {
    assert_eq!(errors(GOOD), Vec::<String>::new());
    let plan = plan(&table(GOOD), &endpoints()).expect("valid");
    let device = &plan.devices[0];
    assert_eq!(device.unit, 1);
    assert_eq!(device.timeout, Duration::from_millis(1000));
    assert_eq!(device.reconnect_min, Duration::from_millis(100));
    assert_eq!(device.reconnect_max, Duration::from_millis(10_000));
    assert_eq!(device.polls[0].table, Table::Holding);
    assert_eq!(device.polls[1].format.ty, ValueType::Bool);
    assert_eq!(device.polls[2].every, Duration::from_millis(1000));
    assert_eq!(device.writes[0].allow[1].table, Table::Holding);
    assert_eq!(device.writes[0].allow[1].format.scale, 0.1);
}

#[test]
fn check_names_the_key_and_the_fix() {
    let with = |from: &str, to: &str| {
        assert!(GOOD.contains(from), "{from}");
        GOOD.replacen(from, to, 1)
    };
    assert_error(
        &with("type = \"f32\"", "type = \"f16\""),
        "device[0].poll[0].type",
        "unknown type \"f16\": use u16, i16, u32, i32, f32 or bool",
    );
    assert_error(
        &with("every_ms = 100", "every_ms = 100\nspeed = 3"),
        "device[0].poll[0].speed",
        "unknown key: use channel, every_ms",
    );
    assert_error(
        &with("every_ms = 100", "every_ms = 0"),
        "device[0].poll[0].every_ms",
        "0 is out of range: use 1 to",
    );
    assert_error(
        &with("every_ms = 100", "every_ms = \"fast\""),
        "device[0].poll[0].every_ms",
        "expected an integer",
    );
    assert_error(
        &with("address = 20", "address = 70000"),
        "device[0].poll[0].address",
        "70000 is out of range: use 0 to 65535",
    );
    assert_error(
        &with("address = 20\n", ""),
        "device[0].poll[0].address",
        "missing: add address = <0 to 65535>",
    );
    assert_error(
        &with("name = \"plc1\"", "name = \"plc1\"\nunit = 300"),
        "device[0].unit",
        "out of range: use 0 to 255",
    );
    assert_error(
        &with("table = \"coil\"", "table = \"coils\""),
        "device[0].poll[1].table",
        "unknown table \"coils\": use holding, input, coil or discrete",
    );
    assert_error(
        &with("table = \"coil\"", "table = \"coil\"\ntype = \"u16\""),
        "device[0].poll[1].type",
        "coil holds bits: use type = \"bool\"",
    );
    assert_error(
        &with("bit = 2\n", ""),
        "device[0].poll[2].bit",
        "add bit = 0..15",
    );
    assert_error(
        &with("type = \"f32\"", "type = \"u16\"\nword_order = \"little\""),
        "device[0].poll[0].word_order",
        "only for 32-bit types",
    );
    assert_error(
        &with("type = \"f32\"", "type = \"f32\"\nscale = 0"),
        "device[0].poll[0].scale",
        "non-zero",
    );
    assert_error(
        &with("channel = \"coil\"", "channel = \"t\""),
        "device[0].poll[1].channel",
        "already used by device[0].poll[0]",
    );
    assert_error(
        &with(
            "name = \"plc1\"",
            "name = \"plc1\"\nreconnect_min_ms = 20000",
        ),
        "device[0].reconnect_min_ms",
        "above reconnect_max_ms",
    );
    assert_error(
        &with(
            "{ table = \"coil\", address = 3 }",
            "{ table = \"input\", address = 3 }",
        ),
        "device[0].write[0].allow[2].table",
        "read-only",
    );
}

#[test]
fn check_rejects_ambiguous_or_overlapping_write_addresses() {
    let two_tables = GOOD.replacen(
        "{ table = \"coil\", address = 3 }",
        "{ table = \"coil\", address = 10 }",
        1,
    );
    assert_error(
        &two_tables,
        "device[0].write[0].allow[2].address",
        "10 is also allowed in holding",
    );
    let overlap = GOOD.replacen("{ table = \"coil\", address = 3 }", "{ address = 13 }", 1);
    assert_error(
        &overlap,
        "device[0].write[0].allow[2].address",
        "overlaps allow[1] (addresses 12..=13)",
    );
}

#[test]
fn check_rejects_an_address_not_in_network_connect() {
    let other = GOOD.replacen("127.0.0.1:5020", "10.0.0.9:502", 1);
    assert_error(
        &other,
        "device[0].address",
        "\"10.0.0.9:502\" is not in [network] connect: add it there",
    );
    let no_port = GOOD.replacen("127.0.0.1:5020", "plc.local", 1);
    assert_error(&no_port, "device[0].address", "has no port");
    assert_error("", "device", "missing: add a [[connector.device]] table");
    assert_error(
        "[[device]]\nname = \"a\"\naddress = \"127.0.0.1:5020\"\n[[device.write]]\nchannel = \"w\"\n",
        "device[0].write[0].allow",
        "missing: add a [[connector.device.write.allow]] table",
    );
    assert_error(
        "[[device]]\nname = \"a\"\naddress = \"127.0.0.1:5020\"\n",
        "device[0]",
        "nothing to do",
    );
}

// ---------------------------------------------------------------- grouping and schedule

fn poll(channel: &str, table: Table, address: u16, ty: ValueType, every_ms: u64) -> PollPlan {
    PollPlan {
        channel: channel.into(),
        every: Duration::from_millis(every_ms),
        table,
        address,
        format: Format::plain(ty),
    }
}

#[test]
fn adjacent_polls_share_one_read_and_gaps_split() {
    let polls = [
        poll("b", Table::Holding, 2, ValueType::F32, 100),
        poll("a", Table::Holding, 0, ValueType::U32, 100),
        poll("c", Table::Holding, 5, ValueType::U16, 100), // gap at 4
        poll("d", Table::Holding, 6, ValueType::U16, 200), // other interval
        poll("e", Table::Coil, 0, ValueType::Bool, 100),
        poll("f", Table::Coil, 1, ValueType::Bool, 100),
    ];
    let now = Instant::now();
    let g = groups(&polls, now);
    let reads: Vec<(Table, u16, u16, usize)> = g
        .iter()
        .map(|g| (g.table, g.address, g.count, g.members.len()))
        .collect();
    assert_eq!(
        reads,
        vec![
            (Table::Coil, 0, 2, 2),
            (Table::Holding, 0, 4, 2),
            (Table::Holding, 5, 1, 1),
            (Table::Holding, 6, 1, 1),
        ]
    );
    let words = [0x0001, 0x0002, 0x42F6, 0xE979];
    let decoded = g[1].decode(&Data::Registers(words.to_vec()));
    assert_eq!(decoded[0], ("a", Some(Value::Number(65538.0))));
    assert_eq!(
        decoded[1],
        ("b", Some(Value::Number(f64::from(123.456f32))))
    );
    // A short answer decodes to nothing, not a panic.
    assert_eq!(g[1].decode(&Data::Registers(vec![1]))[1], ("b", None));
    assert_eq!(
        g[0].decode(&Data::Bits(vec![false, true])),
        vec![
            ("e", Some(Value::Bool(false))),
            ("f", Some(Value::Bool(true)))
        ]
    );
}

#[test]
fn the_schedule_is_fixed_rate_and_skips_missed_slots() {
    let start = Instant::now();
    let mut g = groups(&[poll("a", Table::Holding, 0, ValueType::U16, 10)], start).remove(0);
    // On time: the next slot is one interval after the previous due time,
    // whenever the read finished.
    assert!(g.advance(start + Duration::from_millis(3)).is_empty());
    assert_eq!(g.due, start + Duration::from_millis(10));
    assert_eq!(
        g.start(start + Duration::from_millis(12)),
        Duration::from_millis(2)
    );
    // A read that ran from 12 to 35 ms: slots 20 and 30 passed, skipped and
    // reported late (15 and 5 ms at 35), next due at 40.
    let skipped = g.advance(start + Duration::from_millis(35));
    assert_eq!(
        skipped,
        vec![Duration::from_millis(15), Duration::from_millis(5)]
    );
    assert_eq!(g.due, start + Duration::from_millis(40));
}

// ---------------------------------------------------------------- against pymodbus

/// Records what the driver publishes.
#[derive(Default)]
struct Rings {
    sent: Mutex<Vec<(String, Vec<u8>)>>,
}

impl PublishRings for Rings {
    fn send(&self, channel: &str, payload: &[u8]) -> Result<(), SendError> {
        self.sent
            .lock()
            .expect("lock")
            .push((channel.to_string(), payload.to_vec()));
        Ok(())
    }
}

impl Rings {
    fn on(&self, channel: &str) -> Vec<Vec<u8>> {
        self.sent
            .lock()
            .expect("lock")
            .iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, p)| p.clone())
            .collect()
    }

    fn last_number(&self, channel: &str) -> Option<f64> {
        let payload = self.on(channel).pop()?;
        Some(f64::from_le_bytes(payload.try_into().expect("8 bytes")))
    }
}

/// The driver running in this test's runtime.
struct Driver {
    rings: Arc<Rings>,
    counters: Arc<Counters>,
    inbound: mpsc::Sender<InboundBatch>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    seq: u64,
}

impl Driver {
    fn start(config: &str, address: &str) -> Self {
        let config = table(config);
        let endpoints = vec![address.to_string()];
        super::check(&config, &endpoints).expect("the test config is valid");
        let rings = Arc::new(Rings::default());
        let counters = Arc::new(Counters::default());
        let (inbound, inbound_rx) = mpsc::channel(16);
        let (stop, stop_rx) = watch::channel(false);
        let ctx = Context {
            name: "modbus-test".into(),
            config,
            endpoints,
            state_dir: std::env::temp_dir(),
            channels: ChannelIo {
                inbound: inbound_rx,
                outbound: Publisher::new(rings.clone()),
            },
            counters: counters.clone(),
            stop: stop_rx,
        };
        let task = tokio::spawn(super::run(ctx));
        Self {
            rings,
            counters,
            inbound,
            stop,
            task,
            seq: 0,
        }
    }

    fn count(&self, counter: impl Fn(&Counters) -> u64) -> u64 {
        counter(&self.counters)
    }

    fn connected(&self) -> bool {
        self.counters.connected.load(Ordering::Relaxed)
    }

    /// Sends `messages` on `channel` as one batch; resolves when the driver
    /// accepts it.
    async fn send(&mut self, channel: &str, messages: Vec<Vec<u8>>) {
        let (accepted, on_accept) = oneshot::channel();
        let messages = messages
            .into_iter()
            .map(|payload| {
                self.seq += 1;
                Inbound {
                    channel: channel.into(),
                    from: "test-module".into(),
                    seq: self.seq,
                    received_us: 0,
                    payload,
                }
            })
            .collect();
        self.inbound
            .send(InboundBatch::new(messages, accepted))
            .await
            .expect("the driver takes batches");
        tokio::time::timeout(Duration::from_secs(30), on_accept)
            .await
            .expect("the batch is accepted within 30 s")
            .expect("accepted, not dropped");
    }

    /// Stops the driver; it must return Ok promptly.
    async fn stop(self) {
        self.stop.send_replace(true);
        let result = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("run returns within 5 s of stop")
            .expect("run does not panic");
        result.expect("run returns Ok on stop");
    }
}

/// Waits (up to 30 s, only so a broken driver cannot hang the test) until
/// `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn device(address: &str, extra: &str) -> String {
    format!("[[device]]\nname = \"plc1\"\naddress = \"{address}\"\n{extra}\n")
}

fn poll_entry(channel: &str, every_ms: u64, rest: &str) -> String {
    format!("[[device.poll]]\nchannel = \"{channel}\"\nevery_ms = {every_ms}\n{rest}\n")
}

#[tokio::test]
async fn polls_decode_every_type_and_order_from_the_server() {
    let server = ModbusServer::start();
    let address = server.address();
    // (channel, table, address, type, byte order, word order, expected)
    let f32v = f64::from(123.456f32);
    let mut cases: Vec<(String, &str, u16, &str, &str, &str, f64)> = vec![
        ("u16-b".into(), "holding", 0, "u16", "big", "", 4660.0),
        ("u16-l".into(), "holding", 1, "u16", "little", "", 4660.0),
        ("i16-b".into(), "holding", 2, "i16", "big", "", -12345.0),
        ("i16-l".into(), "holding", 3, "i16", "little", "", -12345.0),
        ("in-i16".into(), "input", 1, "i16", "big", "", -12345.0),
        ("in-f32".into(), "input", 2, "f32", "big", "big", f32v),
    ];
    let orders = [
        ("big", "big"),
        ("big", "little"),
        ("little", "big"),
        ("little", "little"),
    ];
    for (t, (ty, expected)) in [("u32", 3_735_928_559.0), ("i32", -123_456.0), ("f32", f32v)]
        .into_iter()
        .enumerate()
    {
        for (o, (byte, word)) in orders.iter().enumerate() {
            let at = 4 + 8 * t as u16 + 2 * o as u16;
            cases.push((
                format!("{ty}-{byte}-{word}"),
                "holding",
                at,
                ty,
                byte,
                word,
                expected,
            ));
        }
    }
    let mut config = device(&address, "");
    for (channel, table, at, ty, byte, word, _) in &cases {
        let word = if word.is_empty() {
            String::new()
        } else {
            format!("word_order = \"{word}\"")
        };
        config += &poll_entry(
            channel,
            200,
            &format!("table = \"{table}\"\naddress = {at}\ntype = \"{ty}\"\nbyte_order = \"{byte}\"\n{word}"),
        );
    }
    // Scaling, bits of a register, coils and discrete inputs.
    config += &poll_entry("scaled", 200, "address = 0\nscale = 0.1\noffset = -400.0");
    config += &poll_entry("bit2", 200, "address = 0\ntype = \"bool\"\nbit = 2");
    config += &poll_entry("bit0", 200, "address = 0\ntype = \"bool\"\nbit = 0");
    config += &poll_entry("coil0", 200, "table = \"coil\"\naddress = 0");
    config += &poll_entry("coil1", 200, "table = \"coil\"\naddress = 1");
    config += &poll_entry("di1", 200, "table = \"discrete\"\naddress = 1");
    let driver = Driver::start(&config, &address);
    let all: Vec<String> = cases
        .iter()
        .map(|c| c.0.clone())
        .chain(["scaled", "bit2", "bit0", "coil0", "coil1", "di1"].map(String::from))
        .collect();
    until("every channel has a value", || {
        all.iter().all(|c| !driver.rings.on(c).is_empty())
    })
    .await;
    for (channel, _, _, _, _, _, expected) in &cases {
        assert_eq!(
            driver.rings.last_number(channel),
            Some(*expected),
            "{channel}"
        );
    }
    let scaled = driver.rings.last_number("scaled").expect("a value");
    assert!(
        (scaled - 66.0).abs() < 1e-9,
        "4660 * 0.1 - 400 = 66, got {scaled}"
    );
    for (channel, expected) in [
        ("bit2", 1),
        ("bit0", 0),
        ("coil0", 1),
        ("coil1", 0),
        ("di1", 1),
    ] {
        assert_eq!(
            driver.rings.on(channel).pop(),
            Some(vec![expected]),
            "{channel}"
        );
    }
    assert!(driver.connected());
    assert_eq!(driver.count(|c| c.errors.load(Ordering::Relaxed)), 0);
    driver.stop().await;
}

#[tokio::test]
async fn polls_repeat_on_their_interval_with_changing_values() {
    let server = ModbusServer::start();
    let address = server.address();
    let config = device(&address, "") + &poll_entry("reads", 50, "table = \"input\"\naddress = 0");
    let driver = Driver::start(&config, &address);
    until("the first value", || !driver.rings.on("reads").is_empty()).await;
    let first = driver.rings.on("reads").len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let values: Vec<f64> = driver
        .rings
        .on("reads")
        .iter()
        .map(|p| f64::from_le_bytes(p.clone().try_into().expect("8 bytes")))
        .collect();
    let in_two_seconds = values.len() - first;
    // 40 slots in 2 s; loose bounds: it repeats, and it never bursts.
    assert!(
        (10..=60).contains(&in_two_seconds),
        "{in_two_seconds} polls in 2 s at every_ms = 50"
    );
    // The server counts reads of input register 0: every poll saw a new one.
    assert!(values.windows(2).all(|w| w[1] > w[0]), "{values:?}");
    assert_eq!(
        driver.count(|c| c.received.load(Ordering::Relaxed)),
        values.len() as u64
    );
    assert!(!driver
        .counters
        .poll_lateness_us
        .lock()
        .expect("lock")
        .is_empty());
    driver.stop().await;
}

const WRITES: &str = r#"
[[device.write]]
channel = "sp"
allow = [
  { table = "holding", address = 30, type = "u16" },
  { table = "holding", address = 32, type = "f32", word_order = "little" },
  { table = "holding", address = 34, type = "i16", scale = 0.1, offset = -40.0 },
  { table = "holding", address = 36, type = "u32", byte_order = "little" },
  { table = "coil", address = 3 },
]
"#;

#[tokio::test]
async fn allowed_writes_land_on_the_device() {
    let mut server = ModbusServer::start();
    let address = server.address();
    let driver_config = device(&address, "") + WRITES;
    let mut driver = Driver::start(&driver_config, &address);
    until("connected", || driver.connected()).await;
    driver
        .send(
            "sp",
            vec![
                write_message(30, 4242.0),
                write_message(32, -21.75),
                write_message(34, 22.5),
                write_message(36, 305_419_896.0), // 0x12345678
                write_message(3, 1.0),
            ],
        )
        .await;
    assert_eq!(driver.count(|c| c.delivered.load(Ordering::Relaxed)), 5);
    assert_eq!(driver.count(|c| c.refused.load(Ordering::Relaxed)), 0);
    assert_eq!(server.holding(30), 4242);
    let bits = (-21.75f32).to_bits();
    assert_eq!(
        server.get(PeerTable::Holding, 32, 2),
        vec![bits as u16, (bits >> 16) as u16],
        "f32 with the low word first"
    );
    assert_eq!(server.holding(34), 625, "(22.5 + 40) / 0.1");
    assert_eq!(server.get(PeerTable::Holding, 36, 2), vec![0x3412, 0x7856]);
    assert!(server.coil(3));
    driver.stop().await;
}

#[tokio::test]
async fn refused_writes_never_reach_the_device() {
    let mut server = ModbusServer::start();
    let address = server.address();
    let config = device(&address, "") + WRITES;
    let mut driver = Driver::start(&config, &address);
    until("connected", || driver.connected()).await;
    let before = server.get(PeerTable::Holding, 28, 12);
    driver
        .send(
            "sp",
            vec![
                write_message(31, 7.0),               // not allowed
                write_message(29, 7.0),               // not allowed
                write_message(30, 70_000.0),          // out of u16 range
                write_message(30, -1.0),              // out of u16 range
                write_message(34, 10_000.0),          // (10000 + 40) / 0.1 > i16
                write_message(32, f64::NAN),          // not a number
                write_message(3, 0.5),                // not a bool
                write_message(30, 1.0)[..9].to_vec(), // malformed
            ],
        )
        .await;
    // And a channel no write entry uses.
    driver.send("other", vec![write_message(30, 1.0)]).await;
    assert_eq!(driver.count(|c| c.refused.load(Ordering::Relaxed)), 9);
    assert_eq!(driver.count(|c| c.delivered.load(Ordering::Relaxed)), 0);
    assert_eq!(server.get(PeerTable::Holding, 28, 12), before);
    assert!(!server.coil(3));
    assert!(
        !server.log_text().contains("write fc="),
        "the server saw a write: {}",
        server.log_text()
    );
    driver.stop().await;
}

#[tokio::test]
async fn a_stalled_device_is_reported_and_reconnected_when_it_answers() {
    let mut server = ModbusServer::start();
    let address = server.address();
    let config = device(
        &address,
        "timeout_ms = 200\nreconnect_min_ms = 50\nreconnect_max_ms = 400",
    ) + &poll_entry("reads", 50, "table = \"input\"\naddress = 0");
    let driver = Driver::start(&config, &address);
    until("connected", || driver.connected()).await;
    server.stall();
    until("errors counted and connected false", || {
        !driver.connected() && driver.count(|c| c.errors.load(Ordering::Relaxed)) >= 2
    })
    .await;
    let received = driver.rings.on("reads").len();
    server.resume();
    until("connected again", || driver.connected()).await;
    until("values flow again", || {
        driver.rings.on("reads").len() > received + 3
    })
    .await;
    assert!(driver.count(|c| c.reconnects.load(Ordering::Relaxed)) >= 1);
    driver.stop().await;
}

#[tokio::test]
async fn a_killed_device_is_reconnected_after_restart() {
    let mut server = ModbusServer::start();
    let address = server.address();
    let config = device(
        &address,
        "timeout_ms = 300\nreconnect_min_ms = 50\nreconnect_max_ms = 200",
    ) + &poll_entry("u16", 50, "address = 0")
        + WRITES;
    let mut driver = Driver::start(&config, &address);
    until("connected", || driver.connected()).await;
    server.kill();
    until("disconnect noticed", || !driver.connected()).await;
    let errors = driver.count(|c| c.errors.load(Ordering::Relaxed));
    // A write while the device is down: an error, not delivered, and the
    // batch is still accepted (not retried forever).
    driver.send("sp", vec![write_message(30, 9.0)]).await;
    assert_eq!(driver.count(|c| c.delivered.load(Ordering::Relaxed)), 0);
    until("failed reconnects counted", || {
        driver.count(|c| c.errors.load(Ordering::Relaxed)) > errors + 1
    })
    .await;
    let received = driver.rings.on("u16").len();
    server.restart();
    until("connected again", || driver.connected()).await;
    until("values flow again", || {
        driver.rings.on("u16").len() > received + 3
    })
    .await;
    assert!(driver.count(|c| c.reconnects.load(Ordering::Relaxed)) >= 1);
    driver.send("sp", vec![write_message(30, 11.0)]).await;
    assert_eq!(server.holding(30), 11);
    assert_eq!(driver.count(|c| c.delivered.load(Ordering::Relaxed)), 1);
    driver.stop().await;
}

#[tokio::test]
async fn an_exception_is_counted_and_the_device_stays_up() {
    let server = ModbusServer::start();
    let address = server.address();
    let config = device(&address, "")
        + &poll_entry("missing", 50, "address = 100")
        + &poll_entry("fine", 50, "address = 0");
    let driver = Driver::start(&config, &address);
    until("exceptions counted while the other poll flows", || {
        driver.count(|c| c.errors.load(Ordering::Relaxed)) >= 3
            && driver.rings.on("fine").len() >= 3
    })
    .await;
    assert!(driver.rings.on("missing").is_empty());
    assert!(
        driver.connected(),
        "an exception is an answer: the device is up"
    );
    assert_eq!(driver.count(|c| c.reconnects.load(Ordering::Relaxed)), 0);
    driver.stop().await;
}

/// Not a test: measures poll lateness at every_ms = 10 for 10 s.
/// `cargo test --release -p edgeward-connector modbus::tests::measure -- --ignored --nocapture`
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn measure_poll_lateness() {
    let server = ModbusServer::start();
    let address = server.address();
    let config = device(&address, "") + &poll_entry("reads", 10, "table = \"input\"\naddress = 0");
    let driver = Driver::start(&config, &address);
    until("connected", || driver.connected()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    driver
        .counters
        .poll_lateness_us
        .lock()
        .expect("lock")
        .clear();
    let mut samples: Vec<u32> = Vec::new();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut drained =
            std::mem::take(&mut *driver.counters.poll_lateness_us.lock().expect("lock"));
        samples.append(&mut drained);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    let received = driver.rings.on("reads").len();
    let over_1ms = samples.iter().filter(|&&s| s > 1000).count();
    println!(
        "poll lateness at every_ms=10 over 10 s: n={} (reads published since start: {received}) \
         p50={}us p90={}us p99={}us max={}us; {over_1ms} over 1 ms; errors={}",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        samples.last().copied().unwrap_or(0),
        driver.count(|c| c.errors.load(Ordering::Relaxed))
    );
    driver.stop().await;
}
