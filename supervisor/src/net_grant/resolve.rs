//! From the `host:port` endpoints a policy grants to the exact socket
//! addresses the connect guard lets through, and the hosts file that makes
//! the granted names resolvable inside a connector's empty network namespace.
//!
//! Names are resolved here, by the supervisor (with the host's resolver,
//! `getaddrinfo` through std's `ToSocketAddrs`), never by the connector: the
//! connector has no network to ask a DNS server on, and what it may reach is
//! decided by what the supervisor resolved. `getaddrinfo` blocks, so
//! [`resolve`] runs on a job thread, never on the event loop.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// The forms an endpoint may take, for error messages.
const EXPECTED: &str = "expected host:port, IPv4:port or [IPv6]:port \
     (e.g. broker.local:1883, 10.0.0.5:502, [fd00::5]:4840)";

/// The longest DNS name (RFC 1035, without the trailing dot).
const MAX_NAME: usize = 253;

/// One granted endpoint as the policy wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The text as written, for messages.
    pub written: String,
    /// The host: a name, an IPv4 literal, or an IPv6 literal without its brackets.
    pub host: String,
    /// The TCP port, never 0.
    pub port: u16,
}

impl Endpoint {
    /// The host as an IP address when it is a literal, `None` for a name.
    fn literal(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// Parses one endpoint: `host:port`, `1.2.3.4:502` or `[::1]:502`.
///
/// A name may hold ASCII letters, digits, `-`, `_` and `.` (it goes into a
/// hosts file, where blanks or `#` would change the meaning of the line).
///
/// # Errors
/// What is wrong in words, then the forms expected (the caller names the
/// entry): no port, port not a number or 0, an IPv6 address without
/// brackets, a malformed name or address.
pub fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let bad = |why: &str| format!("{why}; {EXPECTED}");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("an opening [ without its closing ]"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| bad("no :port after the ]"))?;
        inside
            .parse::<Ipv6Addr>()
            .map_err(|_| bad(&format!("{inside:?} in brackets is not an IPv6 address")))?;
        (inside, port)
    } else {
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no :port"))?;
        if host.contains(':') {
            return Err(bad("an IPv6 address needs brackets around it"));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(bad("no host before the :port"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| bad(&format!("port {port:?} is not a number from 1 to 65535")))?;
    if port == 0 {
        return Err(bad("port 0 cannot be connected to"));
    }
    if !s.starts_with('[') {
        check_name_or_ipv4(host).map_err(|why| bad(&why))?;
    }
    Ok(Endpoint {
        written: s.to_string(),
        host: host.to_string(),
        port,
    })
}

/// Accepts an IPv4 literal or a host name that can go into a hosts file.
fn check_name_or_ipv4(host: &str) -> Result<(), String> {
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    // All digits and dots but not an address ("10.0.0.256", "10.1"): a
    // typo of an address, which the resolver might read in old inet_aton
    // forms; refuse it rather than guess.
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("{host:?} is not an IPv4 address"));
    }
    if host.len() > MAX_NAME {
        return Err(format!("host name longer than {MAX_NAME} characters"));
    }
    if let Some(c) = host
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{c:?} in host name {host:?} (letters, digits, '-', '_' and '.' only)"
        ));
    }
    if host.starts_with(['-', '.']) || host.ends_with('.') || host.contains("..") {
        return Err(format!("{host:?} is not a host name"));
    }
    Ok(())
}

/// One endpoint and the addresses it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    endpoint: Endpoint,
    /// In the resolver's order, without repeats.
    addrs: Vec<IpAddr>,
}

/// The granted endpoints with their addresses: what the connect guard
/// allows, and what the connector's hosts file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedGrants {
    grants: Vec<Resolved>,
    /// Every `(address, port)` let through, addresses in canonical form
    /// (an IPv4-mapped IPv6 address as its IPv4 address).
    allowed: BTreeSet<(IpAddr, u16)>,
}

/// Resolves every endpoint's host: an IP literal stands for itself, a name
/// (`localhost` included) for all the addresses `getaddrinfo` returns for
/// it now, in its order. The connector's clients take the first address
/// first: a `localhost` that meant `::1` where the host's own file says
/// `127.0.0.1` would send them to a port nobody listens on.
///
/// Blocks on the resolver: call it on a job thread.
///
/// # Errors
/// A name that does not resolve (or resolves to no address), naming it and
/// the grant it came from.
pub fn resolve(endpoints: &[Endpoint]) -> Result<ResolvedGrants, String> {
    let mut grants = ResolvedGrants::default();
    for endpoint in endpoints {
        let addrs = if let Some(ip) = endpoint.literal() {
            vec![ip]
        } else {
            lookup(endpoint)?
        };
        for ip in &addrs {
            grants.allowed.insert((ip.to_canonical(), endpoint.port));
        }
        grants.grants.push(Resolved {
            endpoint: endpoint.clone(),
            addrs,
        });
    }
    Ok(grants)
}

/// All the addresses of `endpoint`'s name, in the resolver's order.
fn lookup(endpoint: &Endpoint) -> Result<Vec<IpAddr>, String> {
    let failed = |why: String| {
        format!(
            "cannot resolve {:?} (of {:?}): {why} \
             (check the name and the host's resolver, or grant an IP address)",
            endpoint.host, endpoint.written
        )
    };
    let found = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .map_err(|e| failed(e.to_string()))?;
    let mut addrs: Vec<IpAddr> = Vec::new();
    for addr in found {
        if !addrs.contains(&addr.ip()) {
            addrs.push(addr.ip());
        }
    }
    if addrs.is_empty() {
        return Err(failed("no address".to_string()));
    }
    Ok(addrs)
}

impl ResolvedGrants {
    /// Whether a connect to `addr` is granted: its exact IP address and
    /// port are in a grant. An IPv4-mapped IPv6 address counts as the IPv4
    /// address it reaches; the IPv6 flow label and scope id play no part.
    pub fn allows(&self, addr: &SocketAddr) -> bool {
        self.allowed
            .contains(&(addr.ip().to_canonical(), addr.port()))
    }

    /// An `/etc/hosts` text for the connector: one `address name` line for
    /// every address of every granted name (IP literals need none), so the
    /// connector's own resolver finds exactly the granted addresses and the
    /// library keeps the name for TLS. `localhost` appears only when granted.
    pub fn hosts_file(&self) -> String {
        let mut text = String::from("# Written by edgeward: the names this connector may reach.\n");
        let mut seen = BTreeSet::new();
        for grant in self
            .grants
            .iter()
            .filter(|g| g.endpoint.literal().is_none())
        {
            for ip in &grant.addrs {
                // A name granted on two ports has its addresses twice: one line is enough.
                if seen.insert((*ip, grant.endpoint.host.to_ascii_lowercase())) {
                    let _ = writeln!(text, "{ip} {}", grant.endpoint.host);
                }
            }
        }
        text
    }

    /// Every granted port, sorted, each once (for a port-only second wall).
    pub fn ports(&self) -> Vec<u16> {
        let ports: BTreeSet<u16> = self.allowed.iter().map(|&(_, port)| port).collect();
        ports.into_iter().collect()
    }
}
