//! What a channel message becomes as an MQTT payload (`format` of a
//! `[[connector.publish]]` entry).

use serde::Serialize;

use crate::driver::Inbound;

/// A publish entry's payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// The message's bytes as they are.
    Raw,
    /// A JSON object with where the message came from:
    /// `{"module":..,"channel":..,"seq":..,"time_us":..,"text":..}`, with
    /// `"hex"` (lower-case) instead of `"text"` when the bytes are not UTF-8.
    Json,
}

#[derive(Serialize)]
struct Json<'a> {
    module: &'a str,
    channel: &'a str,
    seq: u64,
    time_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hex: Option<String>,
}

/// The MQTT payload for `message` in `format`.
pub(crate) fn encode(format: Format, message: &Inbound) -> Vec<u8> {
    match format {
        Format::Raw => message.payload.clone(),
        Format::Json => {
            let text = std::str::from_utf8(&message.payload).ok();
            let json = Json {
                module: &message.from,
                channel: &message.channel,
                seq: message.seq,
                time_us: message.received_us,
                text,
                hex: text.is_none().then(|| hex(&message.payload)),
            };
            // Serializing strings and integers cannot fail.
            serde_json::to_vec(&json).unwrap_or_default()
        }
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{encode, Format};
    use crate::driver::Inbound;

    fn inbound(payload: &[u8]) -> Inbound {
        Inbound {
            channel: "alarm-events".into(),
            from: "sensor".into(),
            seq: 7,
            received_us: 1_700_000_000_000_001,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn json_carries_the_origin_and_text_or_hex() {
        let v: serde_json::Value =
            serde_json::from_slice(&encode(Format::Json, &inbound(b"hot \"1\""))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"module": "sensor", "channel": "alarm-events", "seq": 7,
                "time_us": 1_700_000_000_000_001u64, "text": "hot \"1\""})
        );
        let v: serde_json::Value =
            serde_json::from_slice(&encode(Format::Json, &inbound(&[0xff, 0x00, 0x1a]))).unwrap();
        assert_eq!(v["hex"], "ff001a");
        assert!(v.get("text").is_none());
        assert_eq!(encode(Format::Raw, &inbound(&[0xff, 1])), vec![0xff, 1]);
    }
}
