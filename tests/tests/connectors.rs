//! Connectors end to end (`docs/connectors.md`): the real `edgeward run`
//! with wasm modules and `edgeward-connector` workers, against real peers
//! on loopback: Debian's mosquitto, a pymodbus Modbus TCP server and an
//! asyncua OPC UA server (`tests/src/peers/`).

use std::collections::BTreeSet;
use std::time::Duration;

use edgeward_tests::peers::modbus::ModbusServer;
use edgeward_tests::peers::mosquitto::{self, Mosquitto, Subscriber};
use edgeward_tests::peers::opcua::OpcuaServer;
use edgeward_tests::{module, policy, GatewayDir};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(30);

/// The counters `status` shows for connector `name`.
fn counters(status: &Value, name: &str) -> Value {
    module(status, name)["connector"]["counters"].clone()
}

fn number(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

/// The reading number `n` of a sensor reading `(n u64, celsius f64, start u64)`.
fn reading_number(payload: &[u8]) -> u64 {
    u64::from_le_bytes(payload[..8].try_into().expect("a reading is 24 bytes"))
}

/// An MQTT connector for `broker` with `extra` keys and mappings.
fn mqtt_policy(broker: &Mosquitto, extra: &str, channels: &str) -> String {
    format!(
        "[connector]\nkind = \"mqtt\"\nbroker = \"localhost:{port}\"\nsite = \"plant1\"\ngateway = \"gw1\"\n\
         reconnect_min_ms = 50\nreconnect_max_ms = 500\n{extra}\n\
         [network]\nconnect = [\"localhost:{port}\"]\n[channels]\n{channels}\n",
        port = broker.port()
    )
}

#[test]
fn alarms_reach_an_mqtt_subscriber_and_a_published_command_reaches_a_module() {
    let broker = Mosquitto::start(mosquitto::Options::default());
    let subscriber = Subscriber::start(&broker, "alarms-watcher", "plant1/gw1/#");
    let gw = GatewayDir::new();
    gw.add_policy(
        "sensor",
        &policy(
            "sensor",
            "[channels]\npublish = [\"readings\"]\n[schedule]\ntick_us = 20000",
        ),
    )
    .add_policy(
        "filter",
        &policy(
            "filter",
            "[wasi]\nargs = [\"--threshold\", \"85.0\"]\n[channels]\nsubscribe = [\"readings\"]\npublish = [\"alarms\"]",
        ),
    )
    .add_policy(
        "operator",
        &policy("echo_log", "[channels]\nsubscribe = [\"commands\"]"),
    )
    .add_policy(
        "north",
        &mqtt_policy(
            &broker,
            "[[connector.publish]]\nchannel = \"alarms\"\nqos = 1\nformat = \"json\"\n\
             [[connector.subscribe]]\nchannel = \"commands\"\nqos = 1",
            "subscribe = [\"alarms\"]\npublish = [\"commands\"]",
        ),
    );
    let gateway = gw.start();
    let status = gateway.wait_running(&["sensor", "filter", "operator", "north"], PATIENCE);
    assert_eq!(module(&status, "north")["kind"], "connector");
    assert_eq!(module(&status, "north")["language"], "mqtt");
    let alarms = subscriber.wait_until(PATIENCE, |m| {
        m.iter().filter(|r| r.topic == "plant1/gw1/alarms").count() >= 5
    });
    let first = alarms
        .iter()
        .find(|r| r.topic == "plant1/gw1/alarms")
        .expect("an alarm on plant1/gw1/alarms");
    let json: Value = serde_json::from_slice(&first.payload).expect("the json format");
    assert_eq!(json["module"], "filter", "{json}");
    assert_eq!(json["channel"], "alarms", "{json}");
    assert!(json["seq"].is_u64() && json["time_us"].is_u64(), "{json}");

    mosquitto::publish(&broker, "plant1/gw1/commands", b"open valve 7", 1);
    // "open valve 7" in hex, as the echo-log guest prints it.
    gateway.wait_log("hex=6f70656e2076616c76652037", PATIENCE);
    let status = gateway.wait_for(PATIENCE, "north's counters", |s| {
        let c = counters(s, "north");
        c["connected"] == true && number(&c["delivered"]) >= 5 && number(&c["received"]) >= 1
    });
    let network = &module(&status, "north")["connector"]["network"];
    assert!(number(&network["granted"]) >= 1, "{network}");
    assert_eq!(number(&network["denied"]), 0, "{network}");

    // A connector is not a wasm: an upgrade is refused, a restart works
    // and its totals survive it (its snapshot carries them).
    let counter = edgeward_tests::guest("counter");
    let (code, out, err) = gateway.cli(&["upgrade", "north", counter.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        (out.clone() + &err).contains("is a connector"),
        "{out}{err}"
    );
    let pid = module(&status, "north")["pid"].as_i64();
    let delivered = number(&counters(&status, "north")["delivered"]);
    let (code, out, err) = gateway.cli(&["snapshot", "north"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = gateway.cli(&["restart", "north"]);
    assert_eq!(code, 0, "{out}{err}");
    gateway.wait_for(PATIENCE, "north restarted with its totals", |s| {
        let m = module(s, "north");
        m["state"] == "running"
            && m["pid"].as_i64() != pid
            && number(&m["connector"]["counters"]["delivered"]) >= delivered
            && m["connector"]["counters"]["connected"] == true
    });
}

#[test]
fn a_broker_outage_and_a_killed_connector_lose_no_qos1_message_and_keep_the_order() {
    const COUNT: u64 = 400;
    let mut broker = Mosquitto::start(mosquitto::Options::default());
    let subscriber = Subscriber::start(&broker, "historian", "plant1/gw1/readings");
    let gw = GatewayDir::new();
    gw.add_policy(
        "sensor",
        &policy(
            "sensor",
            &format!(
                "[wasi]\nargs = [\"--count\", \"{COUNT}\", \"--burst\", \"4\"]\n\
                 [channels]\npublish = [\"readings\"]\n[schedule]\ntick_us = 20000"
            ),
        ),
    )
    .add_policy(
        "north",
        &mqtt_policy(
            &broker,
            "[[connector.publish]]\nchannel = \"readings\"\nqos = 1",
            "subscribe = [\"readings\"]",
        ),
    );
    let gateway = gw.start();
    gateway.wait_running(&["sensor", "north"], PATIENCE);
    subscriber.wait_for(20, PATIENCE);
    broker.stop();
    // The readings go on; the connector queues them.
    let status = gateway.wait_for(PATIENCE, "readings queued during the outage", |s| {
        let c = counters(s, "north");
        c["connected"] == false && number(&c["queued"]) >= 40
    });
    let pid = module(&status, "north")["pid"]
        .as_i64()
        .expect("north's pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the connector");
    gateway.wait_for(PATIENCE, "north restarted", |s| {
        let m = module(s, "north");
        m["state"] == "running" && m["pid"].as_i64() != Some(pid)
    });
    broker.restart();
    let received = subscriber.wait_until(Duration::from_secs(60), |m| {
        m.iter()
            .map(|r| reading_number(&r.payload))
            .collect::<BTreeSet<_>>()
            .len() as u64
            >= COUNT
    });
    let numbers: Vec<u64> = received
        .iter()
        .map(|r| reading_number(&r.payload))
        .collect();
    let distinct: BTreeSet<u64> = numbers.iter().copied().collect();
    assert_eq!(
        distinct,
        (0..COUNT).collect::<BTreeSet<_>>(),
        "every reading arrives; log:\n{}",
        gateway.log()
    );
    // In order once the redeliveries QoS 1 allows (the same reading again,
    // right where it was in flight) are set aside.
    let mut deduplicated: Vec<u64> = Vec::new();
    for n in numbers {
        if !deduplicated.contains(&n) {
            deduplicated.push(n);
        }
    }
    let sorted: Vec<u64> = (0..COUNT).collect();
    assert_eq!(deduplicated, sorted, "readings out of order");
    let status = gateway.wait_for(PATIENCE, "the queue drained", |s| {
        number(&counters(s, "north")["queued"]) == 0
    });
    assert_eq!(number(&counters(&status, "north")["queue_dropped"]), 0);
}

#[test]
fn a_full_queue_drops_the_oldest_and_counts_it() {
    let mut broker = Mosquitto::start(mosquitto::Options::default());
    let subscriber = Subscriber::start(&broker, "late-reader", "plant1/gw1/readings");
    broker.stop();
    let gw = GatewayDir::new();
    gw.add_policy(
        "sensor",
        &policy(
            "sensor",
            "[wasi]\nargs = [\"--count\", \"200\", \"--burst\", \"10\"]\n\
             [channels]\npublish = [\"readings\"]\n[schedule]\ntick_us = 10000",
        ),
    )
    .add_policy(
        "north",
        &mqtt_policy(
            &broker,
            "[connector.queue]\nmax_messages = 50\nwhen_full = \"drop-oldest\"\n\
             [[connector.publish]]\nchannel = \"readings\"\nqos = 1",
            "subscribe = [\"readings\"]",
        ),
    );
    let gateway = gw.start();
    let status = gateway.wait_for(PATIENCE, "150 readings dropped, 50 queued", |s| {
        let c = counters(s, "north");
        number(&c["queue_dropped"]) >= 150 && number(&c["queued"]) == 50
    });
    assert_eq!(number(&counters(&status, "north")["queue_dropped"]), 150);
    broker.restart();
    let received = subscriber.wait_until(PATIENCE, |m| m.len() >= 50);
    let numbers: BTreeSet<u64> = received
        .iter()
        .map(|r| reading_number(&r.payload))
        .collect();
    assert_eq!(
        numbers,
        (150..200).collect::<BTreeSet<_>>(),
        "the newest 50 survive"
    );
}

#[test]
fn modbus_polls_arrive_decoded_and_writes_land_only_where_allowed() {
    let broker = Mosquitto::start(mosquitto::Options::default());
    let mut plc = ModbusServer::start();
    let gw = GatewayDir::new();
    gw.add_policy(
        "plc-reader",
        &policy("echo_log", "[channels]\nsubscribe = [\"plc-temperature\"]"),
    )
    .add_policy(
        "north",
        &mqtt_policy(
            &broker,
            "[[connector.subscribe]]\nchannel = \"plc-writes\"\nqos = 1",
            "publish = [\"plc-writes\"]",
        ),
    )
    .add_policy(
        "south",
        &format!(
            "[connector]\nkind = \"modbus\"\n\
             [[connector.device]]\nname = \"plc1\"\naddress = \"{addr}\"\ntimeout_ms = 300\n\
             reconnect_min_ms = 50\nreconnect_max_ms = 500\n\
             [[connector.device.poll]]\nchannel = \"plc-temperature\"\nevery_ms = 100\n\
             table = \"holding\"\naddress = 22\ntype = \"f32\"\nword_order = \"little\"\nscale = 2.0\n\
             [[connector.device.write]]\nchannel = \"plc-writes\"\n\
             allow = [{{ table = \"holding\", address = 30, type = \"u16\" }}]\n\
             [network]\nconnect = [\"{addr}\"]\n\
             [channels]\npublish = [\"plc-temperature\"]\nsubscribe = [\"plc-writes\"]\n",
            addr = plc.address()
        ),
    );
    let gateway = gw.start();
    gateway.wait_running(&["plc-reader", "north", "south"], PATIENCE);
    // 123.456 as f32 in CDAB order, scaled by 2.
    gateway.wait_log("f64=246.91", PATIENCE);

    let write = |address: u16, value: f64| {
        let mut payload = address.to_le_bytes().to_vec();
        payload.extend_from_slice(&value.to_le_bytes());
        mosquitto::publish(&broker, "plant1/gw1/plc-writes", &payload, 1);
    };
    write(31, 999.0);
    write(30, 4242.0);
    gateway.wait_for(PATIENCE, "the allowed write delivered", |s| {
        number(&counters(s, "south")["delivered"]) >= 1
    });
    assert_eq!(plc.holding(30), 4242);
    let status = gateway.wait_for(PATIENCE, "the other write refused", |s| {
        number(&counters(s, "south")["refused"]) >= 1
    });
    assert_eq!(number(&counters(&status, "south")["refused"]), 1);
    assert_eq!(
        plc.holding(31),
        0,
        "a refused write never reaches the device"
    );

    plc.stall();
    let errors_before = number(&counters(&status, "south")["errors"]);
    gateway.wait_for(PATIENCE, "the stall noticed", |s| {
        let c = counters(s, "south");
        c["connected"] == false && number(&c["errors"]) > errors_before
    });
    plc.resume();
    gateway.wait_for(PATIENCE, "reconnected", |s| {
        let c = counters(s, "south");
        c["connected"] == true && number(&c["reconnects"]) >= 1
    });
}

#[test]
fn opcua_value_changes_arrive_in_order_writes_land_and_a_restarted_server_is_resubscribed() {
    let broker = Mosquitto::start(mosquitto::Options::default());
    let mut server = OpcuaServer::start().expect("asyncua server");
    let gw = GatewayDir::new();
    gw.add_policy(
        "counter-reader",
        &policy("echo_log", "[channels]\nsubscribe = [\"opc-counter\"]"),
    )
    .add_policy(
        "north",
        &mqtt_policy(
            &broker,
            "[[connector.subscribe]]\nchannel = \"setpoint\"\nqos = 1",
            "publish = [\"setpoint\"]",
        ),
    )
    .add_policy(
        "plant-opc",
        &format!(
            "[connector]\nkind = \"opcua\"\nurl = \"{url}\"\ntrust_any_server = true\n\
             reconnect_min_ms = 100\nreconnect_max_ms = 1000\n\
             [[connector.subscribe]]\nnode = \"ns=2;s=counter\"\nchannel = \"opc-counter\"\nsampling_ms = 100\n\
             [[connector.write]]\nnode = \"ns=2;s=setpoint\"\nchannel = \"setpoint\"\ntype = \"double\"\n\
             [network]\nconnect = [\"{endpoint}\"]\n\
             [channels]\npublish = [\"opc-counter\"]\nsubscribe = [\"setpoint\"]\n",
            url = server.url(),
            endpoint = server.endpoint()
        ),
    );
    let gateway = gw.start();
    gateway.wait_running(&["counter-reader", "north", "plant-opc"], PATIENCE);
    let values = |log: &str| -> Vec<(i64, f64)> {
        log.lines()
            .filter_map(|l| {
                let ts = l
                    .split("ts_us=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                let v = l
                    .split("f64=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some((ts, v))
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    while values(&gateway.log()).len() < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "no value changes:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = values(&gateway.log());
    for pair in seen.windows(2) {
        assert!(pair[1].1 > pair[0].1, "values in order: {seen:?}");
        assert!(
            pair[1].0 >= pair[0].0,
            "source timestamps in order: {seen:?}"
        );
    }

    mosquitto::publish(&broker, "plant1/gw1/setpoint", &72.5f64.to_le_bytes(), 1);
    server
        .wait_for_write(PATIENCE, |w| {
            w.node.contains("setpoint") && w.value.starts_with("72.5")
        })
        .expect("the setpoint write landed");

    server.kill();
    let before = values(&gateway.log()).len();
    gateway.wait_for(PATIENCE, "the lost server noticed", |s| {
        counters(s, "plant-opc")["connected"] == false
    });
    server.restart().expect("asyncua server again");
    gateway.wait_for(PATIENCE, "reconnected", |s| {
        let c = counters(s, "plant-opc");
        c["connected"] == true && number(&c["reconnects"]) >= 1
    });
    let deadline = std::time::Instant::now() + PATIENCE;
    while values(&gateway.log()).len() < before + 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "no value changes after the restart:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_connection_outside_the_grants_is_denied_by_the_sandbox_and_counted() {
    let granted = std::net::TcpListener::bind("127.0.0.1:0").expect("a granted peer");
    let other = std::net::TcpListener::bind("127.0.0.1:0").expect("an ungranted peer");
    let (granted_port, other_port) = (
        granted.local_addr().unwrap().port(),
        other.local_addr().unwrap().port(),
    );
    let gw = GatewayDir::new();
    gw.add_policy(
        "rogue",
        &format!(
            "[connector]\nkind = \"mqtt\"\nbroker = \"127.0.0.1:{granted_port}\"\n\
             try = [\"127.0.0.1:{granted_port}\", \"127.0.0.1:{other_port}\", \"127.0.0.2:{granted_port}\"]\n\
             [network]\nconnect = [\"127.0.0.1:{granted_port}\"]\n"
        ),
    );
    let rogue = edgeward_tests::bin("rogue-connector");
    let gateway = gw.start_with(&[("EDGEWARD_CONNECTOR", rogue.to_str().unwrap())]);
    gateway.wait_log(&format!("connect 127.0.0.2:{granted_port}:"), PATIENCE);
    let log = gateway.log();
    assert!(
        log.contains(&format!(
            "rogue-connector: connect 127.0.0.1:{granted_port}: ok"
        )),
        "the granted endpoint is reachable from the empty netns:\n{log}"
    );
    for denied in [
        format!("127.0.0.1:{other_port}"),
        format!("127.0.0.2:{granted_port}"),
    ] {
        assert!(
            log.contains(&format!("rogue-connector: connect {denied}: error"))
                && log.contains("(errno 13)"),
            "{denied} refused with EACCES:\n{log}"
        );
    }
    // One line a second at most (the second denial comes right after the
    // first: it is counted, and named in the next line).
    assert!(
        log.contains(&format!(
            "module rogue: denied a connection to 127.0.0.1:{other_port}: not in [network] connect"
        )),
        "the supervisor logs the denial:\n{log}"
    );
    let status = gateway.wait_for(PATIENCE, "two denials counted", |s| {
        number(&module(s, "rogue")["connector"]["network"]["denied"]) == 2
    });
    assert_eq!(
        number(&module(&status, "rogue")["connector"]["network"]["granted"]),
        1
    );
    // The granted peer really saw the connector.
    granted.set_nonblocking(true).unwrap();
    assert!(granted.accept().is_ok(), "the granted peer was reached");
    other.set_nonblocking(true).unwrap();
    assert!(
        other.accept().is_err(),
        "the ungranted peer was never reached"
    );
}

#[test]
fn the_demos_plc_policies_feed_a_modbus_temperature_into_the_line() {
    let mut plc = ModbusServer::start();
    plc.set(edgeward_tests::peers::modbus::Table::Holding, 28, &[915]);
    let connectors = edgeward_tests::repo_root().join("policies/connectors");
    let read = |name: &str| std::fs::read_to_string(connectors.join(name)).expect("policy");
    let gw = GatewayDir::new();
    gw.add_policy(
        "modbus-south",
        &read("modbus-south.toml").replace("127.0.0.1:5020", &plc.address()),
    )
    .add_policy(
        "plc-temperature",
        &read("plc-temperature.toml").replace(
            "../../guests/out/gw_manual_entry.wasm",
            edgeward_tests::guest("gw_manual_entry").to_str().unwrap(),
        ),
    )
    .add_policy(
        "line",
        &policy("echo_log", "[channels]\nsubscribe = [\"temp-filtered\"]"),
    );
    let gateway = gw.start();
    gateway.wait_running(&["modbus-south", "plc-temperature", "line"], PATIENCE);
    // Register 28 holds tenths of a degree: 915 is 91.5 C.
    gateway.wait_log("[plc-temperature] info: first PLC reading 91.5 C", PATIENCE);
    // The reading the line gets: (n u64, celsius f64, t_ns): 91.5 is
    // 0x4056e00000000000, little-endian after the 8 bytes of n.
    gateway.wait_log("len=24 hex=", PATIENCE);
    let log = gateway.log();
    assert!(
        log.lines()
            .any(|l| l.contains("len=24 hex=") && l.contains("000000000000e05640")),
        "a 91.5 C reading on temp-filtered:\n{log}"
    );
}
