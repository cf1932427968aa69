//! The data-plane wiring: one shared-memory ring per (publisher, subscriber,
//! channel), made from the policies' `[channels]` grants.
//!
//! The supervisor creates every ring (a sealed memfd) and its wake-up eventfd
//! at start, and keeps both as long as the policies call for that ring (a
//! reload keeps an unchanged ring with its contents): a ring outlives the
//! workers at its ends, so a restarted subscriber finds every message it had
//! not handled, and a restarted publisher continues its sequence numbers. The
//! fds go to a worker with its `Init` (SCM_RIGHTS). The supervisor never reads
//! or writes frames; it maps each ring only to show its counters in `status`
//! and to reset it after a corruption report.
//!
//! Sizes: a ring holds `capacity_kib` of its *subscriber* (it is that module's
//! inbox), but at least four times the *publisher's* `max_message_kib`, so any
//! message the publisher may send fits; the publisher's `max_message_kib` is
//! the ring's largest message.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use edgeward_ipc::control::{ChannelGrant, RingGrant, RingRole};
use edgeward_ipc::ring::{self, Observer, RingStats};
use nix::sys::eventfd::{EfdFlags, EventFd};
use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// Most ring ends one module may have: each costs two fds in `Init`, which
/// carries at most [`edgeward_ipc::MAX_FDS_PER_FRAME`].
pub const MAX_RINGS_PER_MODULE: usize = 120;

/// One ring and what the supervisor knows about it.
pub struct Ring {
    /// Its id, sent to both ends.
    pub id: u32,
    /// The channel it carries.
    pub channel: String,
    /// Slot index of the writer.
    pub publisher: usize,
    /// Slot index of the reader.
    pub subscriber: usize,
    memfd: OwnedFd,
    eventfd: EventFd,
    observer: Observer,
    /// Corruption reports for this ring so far (the supervisor's own count).
    pub corrupt: u64,
    /// Set while a reset waits for the death of the end that did not report
    /// the corruption: the slot index of the end that did.
    pub reset_pending_for: Option<usize>,
    /// When a confirmed corruption report last restarted its producer.
    pub acted_at: Option<std::time::Instant>,
    /// What it was made for.
    key: RingKey,
}

impl Ring {
    /// The end other than `slot`.
    pub fn peer_of(&self, slot: usize) -> usize {
        if slot == self.publisher {
            self.subscriber
        } else {
            self.publisher
        }
    }

    /// The supervisor's own check of the frames waiting in the ring (see
    /// `edgeward_ipc::ring::verify`): the number intact.
    ///
    /// # Errors
    /// What is wrong with the ring.
    pub fn verify(&self) -> Result<u64, edgeward_ipc::ring::RingError> {
        edgeward_ipc::ring::verify(&self.memfd)
    }

    /// Makes the ring empty and valid again (see [`Observer::reset`]).
    pub fn reset(&mut self) {
        self.observer.reset();
        self.reset_pending_for = None;
    }
}

/// A ring's row in `status --json` (`rings`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RingStatus {
    /// The channel.
    pub channel: String,
    /// Publishing module.
    pub from: String,
    /// Subscribing module.
    pub to: String,
    /// Messages written and not yet handled.
    pub depth: u64,
    /// Bytes those occupy.
    pub depth_bytes: u64,
    /// Messages the publisher dropped on this full ring (`on_full = "drop"`).
    pub drops: u64,
    /// Times this ring was found corrupt and reset.
    pub corrupt: u64,
}

/// All rings of the gateway.
#[derive(Default)]
pub struct Wiring {
    /// The rings (ids are not indices: rings come and go with reloads).
    pub rings: Vec<Ring>,
    /// The id the next new ring gets.
    next_id: u32,
}

/// Why a module's channels could not be wired (the module is marked failed).
#[derive(Debug)]
pub struct WiringError {
    /// Slot index.
    pub slot: usize,
    /// In words.
    pub reason: String,
}

/// What identifies a ring: a ring is kept across a reload only if all of
/// this is unchanged (a ring's size is fixed when its memfd is made).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RingKey {
    /// The channel.
    pub channel: String,
    /// Slot index of the writer.
    pub publisher: usize,
    /// Slot index of the reader.
    pub subscriber: usize,
    /// Ring capacity, bytes.
    pub capacity: u32,
    /// Largest message, bytes.
    pub max_message: u32,
}

/// The rings the policies call for (`policies[slot]`, `None` for a slot
/// without a valid policy), and the modules that would have too many ring
/// ends (their rings are left out).
pub fn plan(policies: &[Option<&Policy>]) -> (Vec<RingKey>, Vec<WiringError>) {
    let mut errors = Vec::new();
    let mut ends = vec![0usize; policies.len()];
    let mut keys = Vec::new();
    for (publisher, p) in policies.iter().enumerate() {
        let Some(p) = p else { continue };
        for channel in &p.channels.publish {
            for (subscriber, s) in policies.iter().enumerate() {
                let Some(s) = s else { continue };
                if subscriber != publisher && s.channels.subscribe.contains(channel) {
                    let max_message = p.channels.max_message_kib << 10;
                    let capacity = (s.channels.capacity_kib << 10)
                        .max(4 * max_message)
                        .next_power_of_two()
                        .min(ring::MAX_CAPACITY);
                    keys.push(RingKey {
                        channel: channel.clone(),
                        publisher,
                        subscriber,
                        capacity,
                        max_message,
                    });
                    ends[publisher] += 1;
                    ends[subscriber] += 1;
                }
            }
        }
    }
    for (slot, &count) in ends.iter().enumerate() {
        if count > MAX_RINGS_PER_MODULE {
            errors.push(WiringError {
                slot,
                reason: format!(
                    "channels: {count} rings (one per publisher or subscriber per channel); at most {MAX_RINGS_PER_MODULE} per module"
                ),
            });
        }
    }
    keys.retain(|k| {
        !errors
            .iter()
            .any(|e| e.slot == k.publisher || e.slot == k.subscriber)
    });
    (keys, errors)
}

impl Wiring {
    /// Creates the rings between the modules with a valid policy
    /// (`policies[slot]`, `None` for an invalid one).
    ///
    /// Returns the wiring and the modules it could not wire (too many ring
    /// ends, or memfds the system refused); their rings are not made.
    pub fn build(policies: &[Option<&Policy>]) -> (Self, Vec<WiringError>) {
        let mut wiring = Wiring::default();
        let errors = wiring.rewire(policies);
        (wiring, errors)
    }

    /// Brings the rings in line with `policies`: rings the policies still
    /// call for, unchanged, are kept with their contents; the others are
    /// dropped (a worker still mapping one keeps it until it exits); the
    /// missing ones are made. Returns the modules that could not be wired
    /// (their rings are not made); [`Wiring::touched_by`] tells beforehand
    /// which modules gain or lose a ring.
    pub fn rewire(&mut self, policies: &[Option<&Policy>]) -> Vec<WiringError> {
        let (keys, mut errors) = plan(policies);
        self.rings.retain(|r| keys.contains(&r.key));
        for key in keys {
            if self.rings.iter().any(|r| r.key == key) {
                continue;
            }
            let (Some(p), Some(s)) = (policies[key.publisher], policies[key.subscriber]) else {
                continue;
            };
            match make_ring(
                &key.channel,
                &p.name,
                &s.name,
                key.capacity,
                key.max_message,
            ) {
                Ok((memfd, eventfd, observer)) => {
                    self.rings.push(Ring {
                        id: self.next_id,
                        channel: key.channel.clone(),
                        publisher: key.publisher,
                        subscriber: key.subscriber,
                        key,
                        memfd,
                        eventfd,
                        observer,
                        acted_at: None,
                        corrupt: 0,
                        reset_pending_for: None,
                    });
                    self.next_id += 1;
                }
                Err(reason) => {
                    let reason = format!(
                        "channel {}: cannot create the ring {} → {}: {reason}",
                        key.channel, p.name, s.name
                    );
                    errors.push(WiringError {
                        slot: key.publisher,
                        reason: reason.clone(),
                    });
                    errors.push(WiringError {
                        slot: key.subscriber,
                        reason,
                    });
                }
            }
        }
        errors
    }

    /// The slots that [`Wiring::rewire`] to rings `keys` would touch.
    pub fn touched_by(&self, keys: &[RingKey]) -> std::collections::BTreeSet<usize> {
        let dropped = self
            .rings
            .iter()
            .map(|r| &r.key)
            .filter(|k| !keys.contains(k));
        let made = keys
            .iter()
            .filter(|k| !self.rings.iter().any(|r| r.key == **k));
        dropped
            .chain(made)
            .flat_map(|k| [k.publisher, k.subscriber])
            .collect()
    }

    /// The ring with `id`.
    pub fn ring_mut(&mut self, id: u32) -> Option<&mut Ring> {
        self.rings.iter_mut().find(|r| r.id == id)
    }

    /// The channel grants of the module in `slot` and the fds to send with
    /// them (memfd and eventfd of each ring end, in the order the grants'
    /// indices name).
    pub fn grants_for<'a>(
        &'a self,
        slot: usize,
        policy: &Policy,
        name_of: impl Fn(usize) -> String,
    ) -> (Vec<ChannelGrant>, Vec<BorrowedFd<'a>>) {
        let mut names: Vec<&String> = policy
            .channels
            .publish
            .iter()
            .chain(&policy.channels.subscribe)
            .collect();
        names.sort();
        names.dedup();
        let mut fds = Vec::new();
        let grants = names
            .into_iter()
            .map(|name| {
                let rings = self
                    .rings
                    .iter()
                    .filter(|r| r.channel == *name && (r.publisher == slot || r.subscriber == slot))
                    .map(|r| {
                        let (role, peer) = if r.publisher == slot {
                            (RingRole::Producer, r.subscriber)
                        } else {
                            (RingRole::Consumer, r.publisher)
                        };
                        fds.push(r.memfd.as_fd());
                        fds.push(r.eventfd.as_fd());
                        RingGrant {
                            ring: r.id,
                            peer: name_of(peer),
                            role,
                            memfd: fds.len() - 2,
                            eventfd: fds.len() - 1,
                        }
                    })
                    .collect();
                ChannelGrant {
                    name: name.clone(),
                    publish: policy.channels.publish.contains(name),
                    subscribe: policy.channels.subscribe.contains(name),
                    rings,
                }
            })
            .collect();
        (grants, fds)
    }

    /// The `status` rows of every ring.
    pub fn status(&self, name_of: impl Fn(usize) -> String) -> Vec<RingStatus> {
        self.rings
            .iter()
            .map(|r| {
                let RingStats {
                    depth_bytes,
                    depth_msgs,
                    drops,
                    ..
                } = r.observer.stats();
                RingStatus {
                    channel: r.channel.clone(),
                    from: name_of(r.publisher),
                    to: name_of(r.subscriber),
                    depth: depth_msgs,
                    depth_bytes,
                    drops,
                    corrupt: r.corrupt,
                }
            })
            .collect()
    }
}

fn make_ring(
    channel: &str,
    from: &str,
    to: &str,
    capacity: u32,
    max_message: u32,
) -> Result<(OwnedFd, EventFd, Observer), String> {
    let name = format!("edgeward:{channel}:{from}>{to}");
    let memfd = ring::create(&name, capacity, max_message).map_err(|e| e.to_string())?;
    let observer = Observer::attach(&memfd, capacity, max_message).map_err(|e| e.to_string())?;
    let eventfd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| format!("eventfd: {e}"))?;
    Ok((memfd, eventfd, observer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, publish: &[&str], subscribe: &[&str], dir: &std::path::Path) -> Policy {
        let wasm = dir.join("m.wasm");
        std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
        let text = format!(
            "[module]\nwasm = \"{}\"\n[channels]\npublish = {:?}\nsubscribe = {:?}\n",
            wasm.display(),
            publish,
            subscribe
        );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        crate::policy::load_file(&path).result.unwrap()
    }

    #[test]
    fn one_ring_per_publisher_subscriber_and_channel() {
        let dir = tempdir();
        let a = policy("a", &["x", "y"], &[], &dir);
        let b = policy("b", &["x"], &["x", "y"], &dir);
        let c = policy("c", &[], &["x"], &dir);
        let (wiring, errors) = Wiring::build(&[Some(&a), Some(&b), Some(&c), None]);
        assert!(errors.is_empty(), "{errors:?}");
        let mut rings: Vec<(String, usize, usize)> = wiring
            .rings
            .iter()
            .map(|r| (r.channel.clone(), r.publisher, r.subscriber))
            .collect();
        rings.sort();
        // a→b x, a→c x, a→b y, b→c x; never b→b.
        assert_eq!(
            rings,
            vec![
                ("x".into(), 0, 1),
                ("x".into(), 0, 2),
                ("x".into(), 1, 2),
                ("y".into(), 0, 1)
            ]
        );
        let names = |i: usize| ["a", "b", "c"][i].to_string();
        let (grants, fds) = wiring.grants_for(1, &b, names);
        assert_eq!(
            grants.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
            ["x", "y"]
        );
        assert!(grants[0].publish && grants[0].subscribe && !grants[1].publish);
        // b: consumer of a→b x, producer of b→c x, consumer of a→b y.
        assert_eq!(fds.len(), 6);
        assert_eq!(grants[0].rings.len(), 2);
        assert_eq!(grants[1].rings[0].role, RingRole::Consumer);
        assert_eq!(grants[1].rings[0].peer, "a");
    }

    #[test]
    fn a_large_max_message_enlarges_the_subscribers_ring() {
        let dir = tempdir();
        let mut a = policy("a", &["x"], &[], &dir);
        a.channels.max_message_kib = 64;
        let b = policy("b", &[], &["x"], &dir);
        let (wiring, errors) = Wiring::build(&[Some(&a), Some(&b)]);
        assert!(errors.is_empty());
        let mut producer = ring::Producer::attach(&wiring.rings[0].memfd).unwrap();
        assert_eq!(producer.max_message(), 64 << 10);
        producer.try_send(&vec![7u8; 64 << 10]).unwrap();
    }

    #[test]
    fn a_rewire_keeps_unchanged_rings_with_their_messages_and_touches_only_changed_ends() {
        let dir = tempdir();
        let a = policy("a", &["x"], &[], &dir);
        let b = policy("b", &[], &["x"], &dir);
        let c = policy("c", &["y"], &[], &dir);
        let d = policy("d", &[], &["y"], &dir);
        let (mut wiring, errors) = Wiring::build(&[Some(&a), Some(&b), Some(&c), Some(&d)]);
        assert!(errors.is_empty());
        let kept_id = wiring.rings.iter().find(|r| r.channel == "x").unwrap().id;
        let mut producer =
            ring::Producer::attach(&wiring.ring_mut(kept_id).unwrap().memfd).unwrap();
        producer.try_send(b"still here").unwrap();

        // e joins as a second subscriber of y; a and b are left alone.
        let e = policy("e", &[], &["y"], &dir);
        let next = [Some(&a), Some(&b), Some(&c), Some(&d), Some(&e)];
        let (keys, errors) = plan(&next);
        assert!(errors.is_empty());
        assert_eq!(
            wiring.touched_by(&keys).into_iter().collect::<Vec<_>>(),
            [2, 4]
        );
        assert!(wiring.rewire(&next).is_empty());
        assert_eq!(wiring.rings.len(), 3);
        let kept = wiring.ring_mut(kept_id).expect("ring x kept");
        assert_eq!(kept.observer.stats().depth_msgs, 1);

        // d leaves: its ring goes, the ids of the others stay.
        let next = [Some(&a), Some(&b), Some(&c), None, Some(&e)];
        let (keys, _) = plan(&next);
        assert_eq!(
            wiring.touched_by(&keys).into_iter().collect::<Vec<_>>(),
            [2, 3]
        );
        wiring.rewire(&next);
        assert_eq!(wiring.rings.len(), 2);
        assert!(wiring.ring_mut(kept_id).is_some());

        // A bigger inbox for b is a new ring: both of its ends are touched.
        let mut bigger = b.clone();
        bigger.channels.capacity_kib *= 4;
        let next = [Some(&a), Some(&bigger), Some(&c), None, Some(&e)];
        let (keys, _) = plan(&next);
        assert_eq!(
            wiring.touched_by(&keys).into_iter().collect::<Vec<_>>(),
            [0, 1]
        );
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "edgeward-wiring-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
