//! Fault injection: writes 1 MiB files into its read-write dir `/data` on
//! every tick until a write fails, then logs how far it got (once) and keeps
//! ticking. With a disk quota it stops at its quota; without one it fills
//! the filesystem the dir is on.

use std::io::Write;

struct DiskFill {
    written_mib: u64,
    stopped: bool,
    block: Vec<u8>,
}

impl edgeward::Module for DiskFill {
    fn init() -> Result<Self, i32> {
        Ok(DiskFill {
            written_mib: 0,
            stopped: false,
            block: vec![0x5a; 1 << 20],
        })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        if self.stopped {
            return Ok(());
        }
        let path = format!("/data/fill-{}", self.written_mib);
        let written = std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&self.block).and_then(|()| f.sync_all()));
        match written {
            Ok(()) => self.written_mib += 1,
            Err(e) => {
                self.stopped = true;
                edgeward::warn(&format!(
                    "disk-fill: stopped after {} MiB: {e}",
                    self.written_mib
                ));
            }
        }
        Ok(())
    }
}

edgeward::module!(DiskFill);
