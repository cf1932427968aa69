//! The `--metrics` listener: one thread, one epoll set, non-blocking
//! sockets, a bounded number of connections, a bounded request head and a
//! deadline per connection. It reads only the latest [`Published`] view
//! (a mutex held for a pointer copy), so nothing a client does, sends or
//! fails to send reaches the event loop.
//!
//! Hand-written on `httparse` (the request head parser hyper uses) rather
//! than an HTTP framework: the supervisor has no async runtime, the
//! server answers three GETs with `Connection: close`, and the bounds
//! above are the whole point (docs/architecture.md, "The metrics
//! listener").

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::published::Published;

/// Connections open at once; the oldest is closed to make room for a new
/// one, so idle connections cannot lock a scraper out.
pub const MAX_CONNECTIONS: usize = 32;

/// Largest request head read; a longer one is answered 431.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Time a connection has to send its request and take the answer.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);

/// The status page (no external assets).
const PAGE: &str = include_str!("page.html");

const LISTENER: u64 = u64::MAX;

struct Connection {
    stream: TcpStream,
    opened: Instant,
    request: Vec<u8>,
    /// The answer, once the request is complete, and how much was written.
    answer: Option<(Vec<u8>, usize)>,
}

/// Serves `listener` forever from the calling thread.
pub fn serve(listener: TcpListener, latest: Arc<Mutex<Arc<Published>>>) {
    let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
        Ok(epoll) => epoll,
        Err(e) => {
            crate::log_sink::say!("metrics: epoll_create failed ({e}); /metrics is not served");
            return;
        }
    };
    if listener.set_nonblocking(true).is_err()
        || epoll
            .add(
                listener.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, LISTENER),
            )
            .is_err()
    {
        crate::log_sink::say!("metrics: cannot watch the listener; /metrics is not served");
        return;
    }
    let mut connections: HashMap<u64, Connection> = HashMap::new();
    let mut next_id = 0u64;
    let mut events = [EpollEvent::empty(); 64];
    loop {
        let n = epoll
            .wait(&mut events, EpollTimeout::from(250u16))
            .unwrap_or(0);
        for event in &events[..n] {
            let id = event.data();
            if id == LISTENER {
                accept_all(&listener, &epoll, &mut connections, &mut next_id);
                continue;
            }
            let done = match connections.get_mut(&id) {
                Some(c) => progress(c, &latest, &epoll, id),
                None => false,
            };
            if done {
                close(&epoll, &mut connections, id);
            }
        }
        let now = Instant::now();
        let expired: Vec<u64> = connections
            .iter()
            .filter(|(_, c)| now.duration_since(c.opened) >= CONNECTION_DEADLINE)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            close(&epoll, &mut connections, id);
        }
    }
}

fn accept_all(
    listener: &TcpListener,
    epoll: &Epoll,
    connections: &mut HashMap<u64, Connection>,
    next_id: &mut u64,
) {
    while let Ok((stream, _)) = listener.accept() {
        if connections.len() >= MAX_CONNECTIONS {
            let oldest = connections
                .iter()
                .min_by_key(|(_, c)| c.opened)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                close(epoll, connections, oldest);
            }
        }
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let _ = stream.set_nodelay(true);
        *next_id += 1;
        let id = *next_id;
        if epoll
            .add(stream.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, id))
            .is_err()
        {
            continue;
        }
        connections.insert(
            id,
            Connection {
                stream,
                opened: Instant::now(),
                request: Vec::with_capacity(512),
                answer: None,
            },
        );
    }
}

fn close(epoll: &Epoll, connections: &mut HashMap<u64, Connection>, id: u64) {
    if let Some(c) = connections.remove(&id) {
        let _ = epoll.delete(c.stream.as_fd());
    }
}

/// Reads, answers and writes what the socket allows now. Returns whether
/// the connection is finished (answered, or broken).
fn progress(c: &mut Connection, latest: &Mutex<Arc<Published>>, epoll: &Epoll, id: u64) -> bool {
    if c.answer.is_none() {
        let mut buf = [0u8; 2048];
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => {
                    c.request.extend_from_slice(&buf[..n]);
                    if c.request.len() > MAX_REQUEST_BYTES {
                        c.answer = Some((response(431, "text/plain", b"request too large\n"), 0));
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
        if c.answer.is_none() {
            match answer(&c.request, latest) {
                Some(bytes) => c.answer = Some((bytes, 0)),
                None => return false,
            }
        }
        let _ = epoll.modify(
            c.stream.as_fd(),
            &mut EpollEvent::new(EpollFlags::EPOLLOUT, id),
        );
    }
    let Some((bytes, written)) = &mut c.answer else {
        return false;
    };
    while *written < bytes.len() {
        match c.stream.write(&bytes[*written..]) {
            Ok(0) => return true,
            Ok(n) => *written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
    true
}

/// The answer to a complete request head, `None` while it is incomplete.
fn answer(request: &[u8], latest: &Mutex<Arc<Published>>) -> Option<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    let path = match parsed.parse(request) {
        Ok(httparse::Status::Partial) => return None,
        Err(httparse::Error::TooManyHeaders) => {
            return Some(response(431, "text/plain", b"too many headers\n"));
        }
        Err(_) => return Some(response(400, "text/plain", b"bad request\n")),
        Ok(httparse::Status::Complete(_)) => parsed.path.unwrap_or("/"),
    };
    if parsed.method != Some("GET") && parsed.method != Some("HEAD") {
        return Some(response(405, "text/plain", b"only GET\n"));
    }
    let view = Arc::clone(&latest.lock().unwrap_or_else(|e| e.into_inner()));
    let (content_type, body) = match path.split('?').next().unwrap_or("/") {
        "/metrics" => (
            super::encode::CONTENT_TYPE,
            super::encode::text(view).into_bytes(),
        ),
        "/status.json" => (
            "application/json",
            serde_json::to_vec(&view.status).unwrap_or_default(),
        ),
        "/" => ("text/html; charset=utf-8", PAGE.as_bytes().to_vec()),
        _ => {
            return Some(response(
                404,
                "text/plain",
                b"not found: try /metrics or /\n",
            ))
        }
    };
    let mut answer = response(200, content_type, &body);
    if parsed.method == Some("HEAD") {
        answer.truncate(answer.len() - body.len());
    }
    Some(answer)
}

fn response(code: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latest() -> Mutex<Arc<Published>> {
        Mutex::new(Arc::new(Published::empty()))
    }

    #[test]
    fn requests_are_answered_once_their_head_is_complete() {
        let latest = latest();
        assert!(answer(b"GET /metrics HTTP/1.1\r\nHost: x\r\n", &latest).is_none());
        let ok = answer(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &latest).unwrap();
        let text = String::from_utf8(ok).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("edgeward_build_info{"), "{text}");
        let page = answer(b"GET / HTTP/1.0\r\n\r\n", &latest).unwrap();
        assert!(String::from_utf8_lossy(&page).contains("<html"));
        let missing = answer(b"GET /nope HTTP/1.1\r\n\r\n", &latest).unwrap();
        assert!(missing.starts_with(b"HTTP/1.1 404"));
        let post = answer(b"POST /metrics HTTP/1.1\r\n\r\n", &latest).unwrap();
        assert!(post.starts_with(b"HTTP/1.1 405"));
        let bad = answer(b"\x01\x02 nonsense\r\n\r\n", &latest).unwrap();
        assert!(bad.starts_with(b"HTTP/1.1 400"));
    }
}
