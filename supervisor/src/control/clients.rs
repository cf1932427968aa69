//! Connected control clients, read and answered without ever blocking the
//! event loop.
//!
//! Every client socket is non-blocking and in the loop's epoll set. A
//! request (one JSON line, at most [`MAX_REQUEST`] bytes) must arrive whole
//! within [`REQUEST_TIMEOUT`] of the connection, and an answer must be
//! taken within [`ANSWER_TIMEOUT`]; a client that dawdles is dropped, one
//! byte at a time or not. At most [`MAX_CLIENTS`] are connected at once:
//! further connections are told `busy` and closed. A client whose answer
//! comes later (a snapshot, an upgrade) is kept, without a deadline, until
//! it is answered or hangs up.

use std::io::{Read as _, Write as _};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};

use super::protocol::{Request, Response};

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Time from connecting to a complete request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Time an answer may take to be read by its client.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Clients connected at once.
pub const MAX_CLIENTS: usize = 32;

/// Connections accepted per wake-up (the rest wait for the next round).
const ACCEPT_BUDGET: usize = 16;

/// A connected client: its index in the table and a serial, so an event or
/// a late answer for a client that left never reaches its successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientId {
    /// Index in the client table.
    pub index: u32,
    /// Serial of the connection.
    pub serial: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading its request line.
    Reading,
    /// Its answer comes later (`Reply::Later`).
    Waiting,
    /// Writing its answer.
    Answering,
}

struct Client {
    stream: UnixStream,
    serial: u32,
    /// Its epoll token (to re-arm for writing).
    token: u64,
    /// Whether its socket is in the epoll set: while reading its request,
    /// and while an answer waits for room. Not while its answer is being
    /// prepared: a client that half-closes after its request (`socat`
    /// does) would otherwise wake the loop for ever.
    watched: bool,
    phase: Phase,
    /// The request read so far, or the answer left to write.
    buf: Vec<u8>,
    /// Bytes of `buf` written (answering).
    written: usize,
    /// When it is dropped unless it has moved on.
    deadline: Option<Instant>,
}

impl Client {
    fn unwatch(&mut self, epoll: &Epoll) {
        if std::mem::take(&mut self.watched) {
            let _ = epoll.delete(self.stream.as_fd());
        }
    }
}

/// What reading a client produced.
#[derive(Debug)]
pub enum Read {
    /// Nothing complete yet.
    Pending,
    /// A request to handle.
    Request(Request),
    /// A request that does not parse: answer this refusal.
    Bad(String),
}

/// The connected clients.
pub struct Clients {
    table: Vec<Option<Client>>,
    next_serial: u32,
    /// Connections refused because [`MAX_CLIENTS`] were connected.
    pub refused_busy: u64,
}

impl Default for Clients {
    fn default() -> Self {
        Self::new()
    }
}

impl Clients {
    /// No clients.
    pub fn new() -> Self {
        Self {
            table: Vec::new(),
            next_serial: 0,
            refused_busy: 0,
        }
    }

    /// Accepts pending connections (at most a budget per wake-up), adds each
    /// to `epoll` with the token `token(id)`.
    pub fn accept(
        &mut self,
        listener: &UnixListener,
        epoll: &Epoll,
        token: impl Fn(ClientId) -> u64,
        now: Instant,
    ) {
        for _ in 0..ACCEPT_BUDGET {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let connected = self.table.iter().filter(|c| c.is_some()).count();
            if connected >= MAX_CLIENTS {
                self.refused_busy += 1;
                // Best effort, never blocking: the socket buffer takes it.
                let mut line = serde_json::to_string(&Response::refused(format!(
                    "edgeward is busy: {MAX_CLIENTS} control clients are connected; try again"
                )))
                .unwrap_or_default();
                line.push('\n');
                let _ = (&stream).write(line.as_bytes());
                continue;
            }
            let index = match self.table.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    self.table.push(None);
                    self.table.len() - 1
                }
            };
            self.next_serial = self.next_serial.wrapping_add(1);
            let id = ClientId {
                index: index as u32,
                serial: self.next_serial,
            };
            let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            let token = token(id);
            if epoll
                .add(stream.as_fd(), EpollEvent::new(flags, token))
                .is_err()
            {
                continue;
            }
            self.table[index] = Some(Client {
                stream,
                serial: id.serial,
                token,
                watched: true,
                phase: Phase::Reading,
                buf: Vec::new(),
                written: 0,
                deadline: Some(now + REQUEST_TIMEOUT),
            });
        }
    }

    fn get(&mut self, id: ClientId) -> Option<&mut Client> {
        self.table
            .get_mut(id.index as usize)?
            .as_mut()
            .filter(|c| c.serial == id.serial)
    }

    /// The client's socket is ready: reads its request, or writes more of
    /// its answer.
    pub fn on_event(&mut self, id: ClientId, epoll: &Epoll) -> Read {
        let Some(client) = self.get(id) else {
            return Read::Pending;
        };
        if client.phase == Phase::Answering {
            self.on_writable(id, epoll);
            return Read::Pending;
        }
        let mut chunk = [0u8; 4096];
        loop {
            match (&client.stream).read(&mut chunk) {
                Ok(0) => {
                    // Hung up: before its request was complete, or while
                    // waiting for its answer. Nobody to answer.
                    self.drop_client(id, epoll);
                    return Read::Pending;
                }
                Ok(n) if client.phase == Phase::Reading => {
                    client.buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = client.buf.iter().position(|&b| b == b'\n') {
                        let line = client.buf[..end].to_vec();
                        client.buf.clear();
                        client.phase = Phase::Waiting;
                        client.deadline = None;
                        client.unwatch(epoll);
                        return match serde_json::from_slice::<Request>(&line) {
                            Ok(request) => Read::Request(request),
                            Err(e) => Read::Bad(format!("bad request: {e}")),
                        };
                    }
                    if client.buf.len() > MAX_REQUEST {
                        client.buf.clear();
                        client.phase = Phase::Waiting;
                        client.unwatch(epoll);
                        return Read::Bad(format!("bad request: longer than {MAX_REQUEST} bytes"));
                    }
                }
                Ok(_) => return Read::Pending,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Read::Pending,
                Err(_) => {
                    self.drop_client(id, epoll);
                    return Read::Pending;
                }
            }
        }
    }

    /// Answers `id` (which read a request): writes what the socket takes
    /// now, the rest when it is writable, then closes it.
    pub fn answer(&mut self, id: ClientId, response: &Response, epoll: &Epoll, now: Instant) {
        let Some(client) = self.get(id) else {
            return;
        };
        let mut line = serde_json::to_vec(response).unwrap_or_default();
        line.push(b'\n');
        client.buf = line;
        client.written = 0;
        client.phase = Phase::Answering;
        client.deadline = Some(now + ANSWER_TIMEOUT);
        self.on_writable(id, epoll);
    }

    /// Writes more of an answer; closes the client once it is all written.
    fn on_writable(&mut self, id: ClientId, epoll: &Epoll) {
        let Some(client) = self.get(id) else {
            return;
        };
        if client.phase != Phase::Answering {
            return;
        }
        while client.written < client.buf.len() {
            match (&client.stream).write(&client.buf[client.written..]) {
                Ok(n) => client.written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Wait for room.
                    let mut event = EpollEvent::new(EpollFlags::EPOLLOUT, client.token);
                    let watched = if client.watched {
                        epoll.modify(client.stream.as_fd(), &mut event)
                    } else {
                        epoll.add(client.stream.as_fd(), event)
                    };
                    client.watched = watched.is_ok();
                    if client.watched {
                        return;
                    }
                    break;
                }
                Err(_) => break,
            }
        }
        self.drop_client(id, epoll);
    }

    /// Drops the clients whose deadline passed.
    pub fn expire(&mut self, now: Instant, epoll: &Epoll) {
        let late: Vec<ClientId> = self
            .table
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                c.deadline.is_some_and(|d| now >= d).then_some(ClientId {
                    index: i as u32,
                    serial: c.serial,
                })
            })
            .collect();
        for id in late {
            self.drop_client(id, epoll);
        }
    }

    /// The earliest client deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.table.iter().flatten().filter_map(|c| c.deadline).min()
    }

    fn drop_client(&mut self, id: ClientId, epoll: &Epoll) {
        if let Some(slot) = self.table.get_mut(id.index as usize) {
            if slot.as_ref().is_some_and(|c| c.serial == id.serial) {
                if let Some(mut client) = slot.take() {
                    client.unwatch(epoll);
                }
            }
        }
    }
}
