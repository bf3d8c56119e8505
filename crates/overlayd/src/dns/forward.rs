//! Questions that are not about the network's containers go to the upstream resolvers: those of
//! `--dns-upstream`, else the `nameserver`s of overlayd's own /etc/resolv.conf (re-read when it
//! changes, as DHCP or systemd-resolved rewrite it).
//!
//! Each question is sent afresh (new socket, random ID: nothing to spoof or mix up between
//! clients) over UDP, and again over TCP when the answer was truncated. Upstreams are tried in
//! order, each for [`PER_UPSTREAM`]; SERVFAIL or REFUSED also moves on to the next. One that did
//! not answer at all goes to the back of the line for [`PENALTY`], so a dead first resolver does
//! not cost every question its timeout. The sockets live in overlayd's own namespace, where the
//! host's resolvers are reachable (a sandbox has no route out), including one on its loopback.
//! Answers are not cached: each question goes upstream (container names never do, they are
//! answered from the zone first).
//!
//! # Why not hickory-resolver
//!
//! hickory-resolver 0.26.3 was tried in place of this module and measured in the lab: a
//! `Resolver` for plain questions and its `NameServerPool` for those with RD off, CD or DO,
//! 2 s timeout, one upstream at a time, /etc/hosts off, rebuilt when resolv.conf changes
//! (hickory-server's forwarding store wraps the same `Resolver`). It is not used, because:
//!
//! * An upstream that answers REFUSED or SERVFAIL ends the question. `NameServerPool` returns
//!   that answer at once instead of asking the next upstream (hickory-dns#613 made SERVFAIL move
//!   on in 2018; in 0.26 only timeouts, I/O and connection errors and busy servers do), its
//!   retries follow the same ranking, and such answers leave the ranking (a smoothed round-trip
//!   time per upstream) as it was. With a refusing first upstream and a working second one, 100
//!   of 100 forwarded questions got REFUSED through hickory, 100 of 100 the answer here, as from
//!   glibc (`an_upstream_that_refuses_is_passed_over` in tests/dns.rs).
//! * Upstreams are ranked by round-trip time instead of tried in the configured order, and one
//!   never asked ranks first (it starts at 1-32 µs). resolv.conf's order (an internal resolver
//!   before a public one) is not kept, and the question that meets a silent upstream first is any
//!   question: `other_names_are_forwarded_to_the_upstream_resolver` failed in 2 of 4 runs, its
//!   second question meeting the silent upstream (never asked until then) after the first had
//!   been answered by the other.
//! * Forwarding was slower (`scripts/bench.sh dns`, four pairs of alternating runs on an
//!   otherwise quiet machine, names that dnsmasq answers with TTL 0 so that no cache helps):
//!   20.6-22.0k questions/s at 64 in flight against 26.4-29.9k here, p99 4.6-5.1 ms against
//!   3.7-4.3 ms; at 5,000/s, p99 3.5-5.6 ms against 0.4-2.0 ms.
//! * `Resolver::lookup` asks with its own flags (RD on, no CD, no DO): a client's bits need the
//!   pool directly, a second path. Negative answers come back as errors that keep only the rcode
//!   and the authority section. Its UDP sockets are not connected, so an upstream whose port is
//!   closed costs its timeout instead of failing at once on the ICMP port unreachable.
//!
//! What it would have brought: a cache honouring upstream TTLs (names answered with TTL 300:
//! 74-83k/s against 24-30k/s here), one upstream exchange for identical questions in flight, and
//! retransmission within the timeout. Its `system_conf` reads /etc/resolv.conf once, and fails on
//! a file without nameservers where glibc uses 127.0.0.1.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

/// How long one upstream gets before the next is tried (glibc's default is 5 s, but a client
/// usually gives up on us after 5 s too: two tries must fit).
pub const PER_UPSTREAM: Duration = Duration::from_secs(2);
/// The EDNS payload size we offer upstream and to clients (the DNS flag day 2020 value: no IP
/// fragmentation on any usual path).
pub const EDNS_PAYLOAD: u16 = 1232;
/// How long an upstream that did not answer is tried only after the others.
pub const PENALTY: Duration = Duration::from_secs(30);
/// How often /etc/resolv.conf is looked at (stat) for changes, at most.
const RECHECK: Duration = Duration::from_secs(2);
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Parses one `--dns-upstream` value: `IP` or `IP:PORT` (`[IPv6]:PORT` with a port).
pub fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s:?} is not IP or IP:PORT"))
}

/// The nameservers of a resolv.conf text, in order, as glibc reads them.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut servers = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(value) = words.next() else { continue };
        match value.parse::<IpAddr>() {
            Ok(ip) => servers.push(SocketAddr::new(ip, 53)),
            // A link-local IPv6 server with a %scope would need the interface of overlayd's
            // namespace; rare enough on servers to leave out.
            Err(_) => log::warn!("{RESOLV_CONF}: ignoring nameserver {value:?}"),
        }
    }
    if servers.is_empty() {
        // glibc's default when no nameserver is listed.
        servers.push(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 53));
    }
    servers
}

#[derive(Debug)]
enum Source {
    Fixed(Vec<SocketAddr>),
    ResolvConf(Mutex<ResolvConf>),
}

#[derive(Debug)]
struct ResolvConf {
    path: PathBuf,
    checked: Option<Instant>,
    /// inode, mtime (ns), length of the file last read: a rewrite changes one of them.
    stamp: Option<(u64, i64, u64)>,
    servers: Vec<SocketAddr>,
}

impl ResolvConf {
    fn servers(&mut self) -> Vec<SocketAddr> {
        let now = Instant::now();
        if self
            .checked
            .is_some_and(|t| now.duration_since(t) < RECHECK)
        {
            return self.servers.clone();
        }
        self.checked = Some(now);
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec(), m.len()));
        if stamp != self.stamp || self.servers.is_empty() {
            self.stamp = stamp;
            let text = std::fs::read_to_string(&self.path).unwrap_or_else(|e| {
                log::warn!("reading {}: {e}", self.path.display());
                String::new()
            });
            let servers = parse_resolv_conf(&text);
            if servers != self.servers {
                log::info!(
                    "DNS upstreams from {}: {}",
                    self.path.display(),
                    list(&servers)
                );
            }
            self.servers = servers;
        }
        self.servers.clone()
    }
}

fn list(servers: &[SocketAddr]) -> String {
    servers
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The upstream resolvers and the way to ask them. Shared by every network's server.
#[derive(Debug)]
pub struct Forwarder {
    source: Source,
    per_upstream: Duration,
    /// Upstreams that last failed to answer, and when.
    failed: Mutex<HashMap<SocketAddr, Instant>>,
}

impl Forwarder {
    /// `upstreams` from --dns-upstream; empty means /etc/resolv.conf.
    pub fn new(upstreams: Vec<SocketAddr>) -> Forwarder {
        let source = if upstreams.is_empty() {
            Source::ResolvConf(Mutex::new(ResolvConf {
                path: PathBuf::from(RESOLV_CONF),
                checked: None,
                stamp: None,
                servers: Vec::new(),
            }))
        } else {
            log::info!("DNS upstreams: {}", list(&upstreams));
            Source::Fixed(upstreams)
        };
        Forwarder {
            source,
            per_upstream: PER_UPSTREAM,
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// The upstreams in the order to try them now: those that failed within [`PENALTY`] last,
    /// each group in configured order.
    fn ordered(&self) -> Vec<SocketAddr> {
        let servers = self.upstreams();
        let now = Instant::now();
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let recent = |s: &SocketAddr| {
            failed
                .get(s)
                .is_some_and(|t| now.duration_since(*t) < PENALTY)
        };
        let (bad, mut good): (Vec<_>, Vec<_>) = servers.into_iter().partition(recent);
        good.extend(bad);
        good
    }

    fn answered(&self, upstream: SocketAddr, answered: bool) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if answered {
            failed.remove(&upstream);
        } else {
            failed.insert(upstream, Instant::now());
        }
    }

    pub fn upstreams(&self) -> Vec<SocketAddr> {
        match &self.source {
            Source::Fixed(servers) => servers.clone(),
            Source::ResolvConf(conf) => conf.lock().unwrap_or_else(|p| p.into_inner()).servers(),
        }
    }

    /// Asks the upstreams `query`; the first useful answer, else the last SERVFAIL/REFUSED one,
    /// else None (all silent or unreachable). `own` are the addresses this network's server
    /// listens on: an upstream among them (port 53) would be a loop.
    pub async fn forward(
        &self,
        query: &Query,
        recursion_desired: bool,
        checking_disabled: bool,
        dnssec_ok: bool,
        own: &[IpAddr],
    ) -> Option<Message> {
        let mut fallback = None;
        for upstream in self.ordered() {
            if upstream.port() == 53 && own.contains(&upstream.ip()) {
                continue;
            }
            let mut request = Message::query();
            request.metadata.recursion_desired = recursion_desired;
            request.metadata.checking_disabled = checking_disabled;
            request.add_query(query.clone());
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            edns.set_dnssec_ok(dnssec_ok);
            request.set_edns(edns);
            let outcome = timeout(self.per_upstream, exchange(&request, upstream)).await;
            self.answered(upstream, matches!(outcome, Ok(Ok(_))));
            match outcome {
                Ok(Ok(response)) => match response.metadata.response_code {
                    ResponseCode::ServFail | ResponseCode::Refused => {
                        log::debug!(
                            "{upstream} answered {} for {}",
                            response.metadata.response_code,
                            query.name()
                        );
                        fallback = Some(response);
                    }
                    _ => return Some(response),
                },
                Ok(Err(e)) => log::debug!("asking {upstream} for {}: {e}", query.name()),
                Err(_) => log::debug!(
                    "{upstream} did not answer {} within {:?}",
                    query.name(),
                    self.per_upstream
                ),
            }
        }
        fallback
    }
}

fn proto(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Is `response` the answer to `request` (not a stray or spoofed datagram)?
fn answers(request: &Message, response: &Message) -> bool {
    response.metadata.id == request.metadata.id
        && response.metadata.message_type == MessageType::Response
        && response.queries == request.queries
}

/// One question to one upstream: UDP, then TCP if the answer was truncated.
async fn exchange(request: &Message, upstream: SocketAddr) -> io::Result<Message> {
    let bytes = request.to_vec().map_err(proto)?;
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: datagrams from anyone else are dropped by the kernel, and an ICMP "port
    // unreachable" ends the wait at once (ECONNREFUSED) instead of after the timeout.
    socket.connect(upstream).await?;
    socket.send(&bytes).await?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = socket.recv(&mut buf).await?;
        let Ok(response) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if !answers(request, &response) {
            continue;
        }
        if response.metadata.truncation {
            return exchange_tcp(&bytes, request, upstream).await;
        }
        return Ok(response);
    }
}

async fn exchange_tcp(
    bytes: &[u8],
    request: &Message,
    upstream: SocketAddr,
) -> io::Result<Message> {
    let mut stream = TcpStream::connect(upstream).await?;
    // DNS over TCP: every message is preceded by its length (RFC 1035 4.2.2).
    let len = u16::try_from(bytes.len()).map_err(proto)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    loop {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).await?;
        let response = Message::from_vec(&buf).map_err(proto)?;
        if answers(request, &response) {
            return Ok(response);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_values() {
        assert_eq!(
            parse_upstream("203.0.113.1").unwrap(),
            "203.0.113.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("10.0.0.1:5353").unwrap(),
            "10.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("fd00::1").unwrap(),
            "[fd00::1]:53".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("[fd00::1]:54").unwrap(),
            "[fd00::1]:54".parse().unwrap()
        );
        assert!(parse_upstream("resolver.example").is_err());
        assert!(parse_upstream("10.0.0.1:99999").is_err());
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch example.com\nnameserver 192.0.2.53\n  nameserver   2001:db8::53 \n\
                    nameserver fe80::1%eth0\noptions ndots:2\nnameserver\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
        assert_eq!(
            parse_resolv_conf("search x\n"),
            vec!["127.0.0.1:53".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn resolv_conf_is_reread_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("overlayd-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.1\n").unwrap();
        let mut conf = ResolvConf {
            path: path.clone(),
            checked: None,
            stamp: None,
            servers: Vec::new(),
        };
        assert_eq!(conf.servers(), vec!["192.0.2.1:53".parse().unwrap()]);
        std::fs::write(&path, "nameserver 192.0.2.2\nnameserver 192.0.2.3\n").unwrap();
        conf.checked = None; // as if RECHECK had passed
        assert_eq!(conf.servers().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A silent upstream goes to the back of the line for a while, and comes back when it
    /// answers. (Actual exchanges are exercised in tests/dns.rs, inside the lab's namespaces.)
    #[test]
    fn upstreams_that_fail_are_tried_last() {
        let (a, b, c): (SocketAddr, SocketAddr, SocketAddr) = (
            "192.0.2.1:53".parse().unwrap(),
            "192.0.2.2:53".parse().unwrap(),
            "192.0.2.3:53".parse().unwrap(),
        );
        let fw = Forwarder::new(vec![a, b, c]);
        assert_eq!(fw.ordered(), [a, b, c]);
        fw.answered(a, false);
        assert_eq!(fw.ordered(), [b, c, a]);
        fw.answered(c, false);
        assert_eq!(fw.ordered(), [b, a, c]);
        fw.answered(a, true);
        assert_eq!(fw.ordered(), [a, b, c]);
        // The penalty wears off.
        fw.failed
            .lock()
            .unwrap()
            .insert(b, Instant::now() - PENALTY - Duration::from_secs(1));
        assert_eq!(fw.ordered(), [a, b, c]);
    }
}
