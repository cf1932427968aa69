//! `edgeward-connector`: a native edgeward worker that bridges channels to
//! the plant and the cloud (MQTT, Modbus TCP, OPC UA), sandboxed like a
//! module and granted exactly the endpoints its policy lists
//! (`docs/connectors.md`).
//!
//! ```text
//! edgeward-connector serve                  one connector on fd 3 (started by `edgeward run`)
//! edgeward-connector check KIND [HOST:PORT...]
//!                                           validate a [connector] table (TOML on stdin, without
//!                                           `kind`) against the granted endpoints; one JSON
//!                                           array of {key, message} on stdout, exit 1 if not empty
//! edgeward-connector seccomp-table          the connector's seccomp allowlist with reasons (Markdown)
//! ```

mod channels;
mod driver;
mod exit_code;
mod files;
mod modbus;
mod mqtt;
mod opcua;
mod pacing;
mod serve;

use std::io::Read;

use driver::{ConfigError, Context};

/// The connector kinds, as written in `[connector] kind`.
pub const KINDS: [&str; 3] = ["mqtt", "modbus", "opcua"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("serve") if args.len() == 1 => serve::run(),
        Some("check") if args.len() >= 2 => check_command(&args[1], &args[2..]),
        Some("seccomp-table") => {
            print!(
                "{}",
                edgeward_sandbox::seccomp_table(edgeward_sandbox::Allowlist::Connector)
            );
            exit_code::OK
        }
        _ => {
            eprintln!(
                "usage: edgeward-connector serve | check KIND [HOST:PORT...] | seccomp-table \
                 (started by `edgeward run`; see docs/connectors.md)"
            );
            exit_code::USAGE
        }
    };
    std::process::exit(code);
}

/// `check KIND [ENDPOINT...]`: the `[connector]` table on stdin.
fn check_command(kind: &str, endpoints: &[String]) -> i32 {
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("edgeward-connector check: cannot read stdin: {e}");
        return exit_code::USAGE;
    }
    let errors = match text.parse::<toml::Table>() {
        Ok(table) => check(kind, &table, endpoints).err().unwrap_or_default(),
        Err(e) => vec![ConfigError::new("", format!("not a TOML table: {e}"))],
    };
    println!(
        "{}",
        serde_json::to_string(&errors).unwrap_or_else(|_| "[]".into())
    );
    if errors.is_empty() {
        exit_code::OK
    } else {
        exit_code::LOAD_FAILED
    }
}

/// Checks a `[connector]` table (without `kind`) of connector `kind`.
///
/// # Errors
/// Every problem found, each naming its key and the fix.
pub fn check(
    kind: &str,
    config: &toml::Table,
    endpoints: &[String],
) -> Result<(), Vec<ConfigError>> {
    match kind {
        "mqtt" => mqtt::check(config, endpoints),
        "modbus" => modbus::check(config, endpoints),
        "opcua" => opcua::check(config, endpoints),
        other => Err(vec![ConfigError::new(
            "kind",
            format!(
                "unknown connector kind {other:?}: use one of {}",
                KINDS.join(", ")
            ),
        )]),
    }
}

/// Runs the driver of `kind` (already checked).
async fn run(kind: &str, ctx: Context) -> anyhow::Result<()> {
    match kind {
        "mqtt" => mqtt::run(ctx).await,
        "modbus" => modbus::run(ctx).await,
        "opcua" => opcua::run(ctx).await,
        other => anyhow::bail!("unknown connector kind {other:?}"),
    }
}
