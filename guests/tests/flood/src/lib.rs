//! Backpressure test guest: on its first tick sends `--burst` messages of
//! `--size` bytes on `flood` in one call, then one of `--oversize` bytes,
//! and logs what `send` returned: `flood: ok=A full=B other=C oversize=CODE`.
//! Also asks for a channel its policy does not grant (`--deny NAME`).

struct Flood {
    done: bool,
}

impl edgeward::Module for Flood {
    fn init() -> Result<Self, i32> {
        Ok(Flood { done: false })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let flood = edgeward::channel("flood")?;
        let burst: usize = edgeward::arg("--burst").unwrap_or(200);
        let size: usize = edgeward::arg("--size").unwrap_or(64);
        let (mut ok, mut full, mut other) = (0, 0, 0);
        for i in 0..burst {
            match flood.send(&vec![i as u8; size]) {
                Ok(()) => ok += 1,
                Err(edgeward::error::FULL) => full += 1,
                Err(_) => other += 1,
            }
        }
        let oversize: usize = edgeward::arg("--oversize").unwrap_or(1 << 20);
        let code = match flood.send(&vec![0u8; oversize]) {
            Ok(()) => 0,
            Err(code) => code,
        };
        let denied = match edgeward::arg::<String>("--deny") {
            Some(name) => edgeward::channel(&name).err().unwrap_or(0),
            None => 0,
        };
        edgeward::info(&format!(
            "flood: ok={ok} full={full} other={other} oversize={code} denied={denied}"
        ));
        Ok(())
    }
}

edgeward::module!(Flood);
