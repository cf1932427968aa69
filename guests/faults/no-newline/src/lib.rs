//! Fault injection: a legal module that writes 64 KiB to stdout on every
//! tick and never a newline. The supervisor reads and prints module output
//! line by line; this must cost it the same per byte as short lines do.

use std::io::Write;

struct NoNewline {
    chunk: Vec<u8>,
}

impl edgeward::Module for NoNewline {
    fn init() -> Result<Self, i32> {
        Ok(NoNewline {
            chunk: vec![b'x'; 64 * 1024],
        })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        let mut out = std::io::stdout();
        // A full pipe is the supervisor's business; keep ticking.
        let _ = out.write_all(&self.chunk).and_then(|()| out.flush());
        Ok(())
    }
}

edgeward::module!(NoNewline);
