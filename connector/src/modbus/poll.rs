//! Poll groups and their fixed-rate schedule.
//!
//! Polls of one device with the same table and interval whose addresses
//! touch or overlap are merged into one read (one request instead of
//! several; up to the Modbus limits of 125 registers or 2000 bits). A gap
//! ends a group: reading it could hit an address the device rejects.
//!
//! Each group keeps its own schedule: due times advance by the interval
//! from an anchor (the connect time), not from when a read finished. A
//! read that starts late records its lateness; slots that passed entirely
//! while an earlier read ran are skipped (never read in a burst) and each
//! is recorded as late too.

use std::time::{Duration, Instant};

use super::config::PollPlan;
use super::decode::{decode_bit, decode_registers, Format, Table, Value};

/// Most registers one read may ask for (Modbus: 125).
pub const MAX_REGISTERS: u16 = 125;
/// Most bits one read may ask for (Modbus: 2000).
pub const MAX_BITS: u16 = 2000;

/// One poll inside a group.
#[derive(Debug, Clone)]
pub struct Member {
    /// The channel it publishes on.
    pub channel: String,
    /// Its first address minus the group's first address.
    pub offset: u16,
    /// Its layout.
    pub format: Format,
}

/// What one device exception or outcome did to a group, for logging once
/// per change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not read yet on this connection.
    Unknown,
    /// The last read answered.
    Ok,
    /// The last read got this exception code.
    Exception(u8),
}

/// One read request on a schedule.
#[derive(Debug, Clone)]
pub struct Group {
    /// Table read.
    pub table: Table,
    /// First address.
    pub address: u16,
    /// Registers or bits read.
    pub count: u16,
    /// Interval.
    pub every: Duration,
    /// The polls it serves, each published from its part of the read.
    pub members: Vec<Member>,
    /// When the next read is due.
    pub due: Instant,
    /// The last outcome (see [`Health`]).
    pub health: Health,
}

/// Registers or bits a poll reads.
fn width(poll: &PollPlan) -> u16 {
    if poll.table.is_bits() {
        1
    } else {
        poll.format.ty.registers()
    }
}

/// Groups `polls` (see the module docs), all first due at `now`.
pub fn groups(polls: &[PollPlan], now: Instant) -> Vec<Group> {
    let mut sorted: Vec<&PollPlan> = polls.iter().collect();
    sorted.sort_by_key(|p| (p.table.name(), p.every, p.address));
    let mut out: Vec<Group> = Vec::new();
    for poll in sorted {
        let end = u32::from(poll.address) + u32::from(width(poll));
        let limit = u32::from(if poll.table.is_bits() {
            MAX_BITS
        } else {
            MAX_REGISTERS
        });
        if let Some(group) = out.last_mut().filter(|g| {
            let group_start = u32::from(g.address);
            let group_end = group_start + u32::from(g.count);
            g.table == poll.table
                && g.every == poll.every
                && u32::from(poll.address) <= group_end
                && end.max(group_end) - group_start <= limit
        }) {
            let group_start = u32::from(group.address);
            let group_end = group_start + u32::from(group.count);
            // The span is at most `limit` (≤ 2000), so it fits a u16.
            group.count = (end.max(group_end) - group_start) as u16;
            group.members.push(Member {
                channel: poll.channel.clone(),
                offset: poll.address - group.address,
                format: poll.format,
            });
            continue;
        }
        out.push(Group {
            table: poll.table,
            address: poll.address,
            count: width(poll),
            every: poll.every,
            members: vec![Member {
                channel: poll.channel.clone(),
                offset: 0,
                format: poll.format,
            }],
            due: now,
            health: Health::Unknown,
        });
    }
    out
}

/// What a read returned.
#[derive(Debug)]
pub enum Data {
    /// Registers, first address first.
    Registers(Vec<u16>),
    /// Bits, first address first.
    Bits(Vec<bool>),
}

impl Group {
    /// Each member's value from the group's read, in member order; `None`
    /// for a member the answer did not cover (a short answer).
    pub fn decode(&self, data: &Data) -> Vec<(&str, Option<Value>)> {
        self.members
            .iter()
            .map(|m| {
                let start = usize::from(m.offset);
                let value = match data {
                    Data::Bits(bits) => bits.get(start).map(|&b| decode_bit(b)),
                    Data::Registers(regs) => regs
                        .get(start..start + usize::from(m.format.ty.registers()))
                        .and_then(|r| decode_registers(&m.format, r)),
                };
                (m.channel.as_str(), value)
            })
            .collect()
    }

    /// Starts this slot's read at `now`: returns its lateness.
    pub fn start(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.due)
    }

    /// After a read finished at `now`: moves `due` to the next slot still
    /// ahead; returns how late each skipped slot is at `now` (the slots
    /// that passed while the read ran), oldest first.
    pub fn advance(&mut self, now: Instant) -> Vec<Duration> {
        let mut skipped = Vec::new();
        self.due += self.every;
        while self.due < now {
            skipped.push(now - self.due);
            self.due += self.every;
        }
        skipped
    }
}

/// The group due first.
pub fn next_due(groups: &[Group]) -> Option<usize> {
    (0..groups.len()).min_by_key(|&i| groups[i].due)
}
