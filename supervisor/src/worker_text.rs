//! Text a worker supplies (guest output, log lines, fault reports, ring
//! reports), made safe to print and to show.
//!
//! A worker is untrusted: its text could carry newlines that start what
//! looks like a supervisor line (`edgeward: module x: failed: …`), carriage
//! returns and terminal escape codes that overwrite or hide what came
//! before, or megabytes in one string. Everything a worker says passes
//! through here before it reaches the log or `status`: control characters
//! are escaped, invalid UTF-8 is replaced, and length is bounded.

use std::fmt::Write;

/// Longest piece of worker text printed as one line (bytes, before
/// escaping); longer lines are printed in pieces.
pub const MAX_LINE: usize = 4096;

/// Longest worker-supplied text kept as a `last_error` or in a message.
pub const MAX_MESSAGE: usize = 1024;

/// Most lines of one worker-supplied message printed (a fault's backtrace).
pub const MAX_MESSAGE_LINES: usize = 64;

/// `bytes` as one printable line: control characters other than tab
/// (C0, DEL, C1) become `\n`, `\r`, `\t`-style or `\x1b`-style escapes,
/// invalid UTF-8 becomes U+FFFD, and the result stops after `max` input
/// bytes with `…`.
pub fn one_line(bytes: &[u8], max: usize) -> String {
    let (cut, more) = if bytes.len() > max {
        (&bytes[..max], true)
    } else {
        (bytes, false)
    };
    let mut out = String::with_capacity(cut.len() + 8);
    for chunk in cut.utf8_chunks() {
        for c in chunk.valid().chars() {
            escape_char(c, &mut out);
        }
        if !chunk.invalid().is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
    if more {
        out.push('…');
    }
    out
}

fn escape_char(c: char, out: &mut String) {
    match c {
        '\t' => out.push('\t'),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        c if c.is_control() => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        // Bidirectional overrides can make a line read as another.
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

/// A worker's message (a fault report, a log entry) as printable lines:
/// split at newlines, each escaped and bounded; at most `max_lines` lines,
/// the rest summarised.
pub fn lines(text: &str, max_lines: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut all = text.split('\n');
    for line in all.by_ref().take(max_lines) {
        out.push(one_line(line.as_bytes(), MAX_LINE));
    }
    let rest = all.count();
    if rest > 0 {
        out.push(format!("… {rest} more line(s)"));
    }
    out
}

/// A worker's message as one bounded line, for `last_error` and for a
/// supervisor log line that quotes it.
pub fn message(text: &str) -> String {
    one_line(text.trim_end().as_bytes(), MAX_MESSAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_lines_escape_codes_and_carriage_returns_stay_on_one_line() {
        let hostile = "ok\nedgeward: module counter: failed: forged\r\x1b[2J\x1b[31mred\u{202e}";
        let line = message(hostile);
        assert!(!line.contains('\n') && !line.contains('\r') && !line.contains('\x1b'));
        assert_eq!(
            line,
            "ok\\nedgeward: module counter: failed: forged\\r\\x1b[2J\\x1b[31mred\\u{202e}"
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_and_length_is_bounded() {
        assert_eq!(one_line(b"a\xffb", 100), "a\u{fffd}b");
        let long = "y".repeat(5000);
        let line = one_line(long.as_bytes(), MAX_LINE);
        assert_eq!(line.chars().count(), MAX_LINE + 1);
        assert!(line.ends_with('…'));
        // A cut inside a multi-byte character does not panic.
        let cut = one_line("ééé".as_bytes(), 3);
        assert_eq!(cut, "é\u{fffd}…");
    }

    #[test]
    fn a_long_message_keeps_its_first_lines() {
        let text: String = (0..100).map(|i| format!("frame {i}\n")).collect();
        let printed = lines(&text, MAX_MESSAGE_LINES);
        assert_eq!(printed.len(), MAX_MESSAGE_LINES + 1);
        assert_eq!(printed[0], "frame 0");
        assert_eq!(printed[MAX_MESSAGE_LINES], "… 37 more line(s)");
    }
}
