//! A reactor with a large state: a tick count followed by `--kib N` KiB
//! (default 200) of bytes derived from it, so that a snapshot spans many
//! control messages and comes back in a memfd. The restore checks every
//! byte and says so.

use edgeward::Message;

struct BigState {
    ticks: u64,
    kib: usize,
}

fn pattern(ticks: u64, i: usize) -> u8 {
    (ticks as usize)
        .wrapping_mul(7)
        .wrapping_add(i.wrapping_mul(31)) as u8
}

impl edgeward::Module for BigState {
    fn init() -> Result<Self, i32> {
        Ok(BigState {
            ticks: 0,
            kib: edgeward::arg("--kib").unwrap_or(200),
        })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        self.ticks += 1;
        Ok(())
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        let mut state = self.ticks.to_bytes();
        state.extend((0..self.kib * 1024).map(|i| pattern(self.ticks, i)));
        Some(state)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), i32> {
        let ticks = u64::decode(&state[..8.min(state.len())]).ok_or(-1)?;
        let padding = &state[8..];
        if let Some(bad) = (0..padding.len()).find(|&i| padding[i] != pattern(ticks, i)) {
            edgeward::error(&format!(
                "big-state: byte {bad} of the restored state is wrong"
            ));
            return Err(-1);
        }
        self.ticks = ticks;
        edgeward::info(&format!(
            "big-state: restored ticks={ticks}, {} bytes verified",
            state.len()
        ));
        Ok(())
    }
}

edgeward::module!(BigState);
