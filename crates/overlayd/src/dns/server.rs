//! One network's DNS server on this host: UDP and TCP port 53 on each gateway address, created
//! where the gateway lives (the sandbox namespace, or this namespace's bridge with hostAccess),
//! answering from the [`ViewCell`] (the network's names, and those of the asking container's
//! other networks) and forwarding the rest.
//!
//! The sockets are made once, when the network gets its first local container, and live until
//! its last one goes (or the sandbox is replaced under them). Record changes only swap the zone:
//! rebuilding sockets on every change drops the queries in flight (aardvark-dns#389).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use ipnetwork::IpNetwork;
use model::names::{self, SANDBOX_IFNAME};
use model::Vni;
use netops::{Netlink, Netns};
use tokio::task::JoinHandle;

use super::forward::{Forwarder, EDNS_PAYLOAD};
use super::records::{Answer, ViewCell};
use crate::error::Error;
use crate::metrics::{self, DnsAnswer};

pub const PORT: u16 = 53;
/// A TCP client that sends nothing for this long is dropped (hickory's guard against idle
/// connections piling up).
const TCP_IDLE: Duration = Duration::from_secs(5);
/// Responses queued per TCP connection.
const TCP_BUFFER: usize = 32;

/// vxlan-overlay's sandbox namespace of a network on a node.
pub fn sandbox_path(vni: Vni, node: &str) -> PathBuf {
    netops::named_netns_path(&names::sandbox(vni, node))
}

/// Where a network's gateway addresses are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// On `gw` in the sandbox namespace with this nsfs inode. A sandbox removed and made anew
    /// (its last container deleted while the next one was added) has another inode.
    Sandbox { inode: u64 },
    /// On the bridge in overlayd's own namespace. Sockets are bound to addresses, not to the
    /// device: a bridge made anew with the same addresses needs no new sockets.
    Bridge,
}

/// The gateway of a network on this host: where it is and its addresses (link-local ones left
/// out: nobody is told to use them).
pub struct Gateway {
    pub place: Place,
    pub addrs: Vec<IpNetwork>,
    ns: Option<Netns>,
}

impl Gateway {
    /// Looks for the sandbox of `vni`, then for its bridge in `host`. Err when neither exists
    /// or there is no address to serve on (yet): the caller tries again later.
    pub async fn find(host: &Netlink, vni: Vni, node: &str) -> Result<Gateway, Error> {
        let path = sandbox_path(vni, node);
        if path.exists() {
            let ns = Netns::open(&path)?;
            let nl = Netlink::in_netns(&ns).await?;
            let link = nl.link(SANDBOX_IFNAME).await?.ok_or_else(|| {
                Error::Dns(format!(
                    "{} has no {SANDBOX_IFNAME} interface",
                    path.display()
                ))
            })?;
            let addrs = usable(nl.addresses(link.index).await?);
            if addrs.is_empty() {
                return Err(Error::Dns(format!(
                    "{SANDBOX_IFNAME} in {} has no address",
                    path.display()
                )));
            }
            return Ok(Gateway {
                place: Place::Sandbox { inode: ns.inode() },
                addrs,
                ns: Some(ns),
            });
        }
        // With hostAccess, the gateway addresses are on vxlan-overlay's bridge.
        let bridge = names::bridge(vni);
        let link = host
            .link(&bridge)
            .await?
            .ok_or_else(|| Error::Dns(format!("neither {} nor {bridge} exists", path.display())))?;
        let addrs = usable(host.addresses(link.index).await?);
        if addrs.is_empty() {
            return Err(Error::Dns(format!(
                "{} does not exist and {bridge} has no address (hostAccess without a gateway?)",
                path.display()
            )));
        }
        Ok(Gateway {
            place: Place::Bridge,
            addrs,
            ns: None,
        })
    }

    pub fn describe(&self) -> String {
        let addrs: Vec<String> = self.addrs.iter().map(|a| a.ip().to_string()).collect();
        match self.place {
            Place::Sandbox { .. } => format!("{} in its sandbox", addrs.join(", ")),
            Place::Bridge => format!("{} on its bridge", addrs.join(", ")),
        }
    }
}

fn usable(addrs: Vec<IpNetwork>) -> Vec<IpNetwork> {
    let mut addrs: Vec<IpNetwork> = addrs
        .into_iter()
        .filter(|a| match a.ip() {
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            IpAddr::V4(_) => true,
        })
        .collect();
    addrs.sort();
    addrs
}

/// UDP and TCP sockets on port 53 of every gateway address, made in the calling thread's
/// namespace.
type Sockets = Vec<(SocketAddr, std::net::UdpSocket, std::net::TcpListener)>;

fn open_sockets(addrs: &[IpAddr]) -> Result<Sockets, Error> {
    let mut sockets = Vec::new();
    for ip in addrs {
        let address = SocketAddr::new(*ip, PORT);
        let failed = |source: io::Error| Error::DnsSocket { address, source };
        let udp = std::net::UdpSocket::bind(address).map_err(failed)?;
        udp.set_nonblocking(true).map_err(failed)?;
        // std sets SO_REUSEADDR on listeners: a restarted overlayd binds despite TIME_WAITs.
        let tcp = std::net::TcpListener::bind(address).map_err(failed)?;
        tcp.set_nonblocking(true).map_err(failed)?;
        sockets.push((address, udp, tcp));
    }
    Ok(sockets)
}

/// A running server; dropping it (or [`Serving::stop`]) closes its sockets.
pub struct Serving {
    pub gateway_place: Place,
    pub addrs: Vec<IpNetwork>,
    task: JoinHandle<()>,
}

impl Serving {
    /// Binds on the gateway's addresses and starts answering from `view`.
    pub fn start(
        network: &str,
        gateway: Gateway,
        view: Arc<ViewCell>,
        forwarder: Arc<Forwarder>,
    ) -> Result<Serving, Error> {
        let ips: Vec<IpAddr> = gateway.addrs.iter().map(|a| a.ip()).collect();
        let sockets = match &gateway.ns {
            // A fresh thread enters the sandbox just to create the sockets (a socket stays in
            // the namespace it was created in); no thread of ours ever changes namespace. It
            // blocks this task for well under a millisecond, once per network.
            Some(ns) => {
                let ips = ips.clone();
                ns.run(move || open_sockets(&ips))??
            }
            None => open_sockets(&ips)?,
        };
        let handler = Handler {
            network: network.to_string(),
            view,
            forwarder,
            clients: gateway.addrs.clone(),
            own: ips,
        };
        let mut server = hickory_server::Server::new(handler);
        for (address, udp, tcp) in sockets {
            let failed = |source: io::Error| Error::DnsSocket { address, source };
            server.register_socket(tokio::net::UdpSocket::from_std(udp).map_err(failed)?);
            let tcp = tokio::net::TcpListener::from_std(tcp).map_err(failed)?;
            server.register_listener(tcp, TCP_IDLE, TCP_BUFFER);
        }
        let name = network.to_string();
        // The server's own tasks end only with an unusable socket; then this task ends too and
        // the owner notices (is_finished) and binds anew.
        let task = tokio::spawn(async move {
            if let Err(e) = server.block_until_done().await {
                log::warn!("DNS server of network {name} stopped: {e}");
            }
        });
        Ok(Serving {
            gateway_place: gateway.place,
            addrs: gateway.addrs,
            task,
        })
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Dropping closes the sockets: aborting the task drops the server, and with it every socket task.
impl Drop for Serving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers one network's questions.
struct Handler {
    network: String,
    view: Arc<ViewCell>,
    forwarder: Arc<Forwarder>,
    /// The gateway subnets: only the network's own containers are answered. With hostAccess the
    /// server listens in the host namespace, and must not become an open resolver there.
    clients: Vec<IpNetwork>,
    own: Vec<IpAddr>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        match self.respond(request, &mut response).await {
            Ok(info) => info,
            Err(e) => {
                log::debug!("DNS of {}: answering {}: {e}", self.network, request.src());
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

impl Handler {
    fn allowed(&self, ip: IpAddr) -> bool {
        self.clients.iter().any(|net| net.contains(ip))
    }

    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        response: &mut R,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        let edns = request.edns.as_ref().map(|_| {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            edns
        });
        let builder = || {
            let mut b = MessageResponseBuilder::from_message_request(request);
            if let Some(edns) = &edns {
                b.edns(edns);
            }
            b
        };
        let error = |code: ResponseCode| builder().error_msg(&request.metadata, code);
        let counted = |answer: DnsAnswer| metrics::get().dns_answered(answer);

        if request.metadata.message_type != MessageType::Query {
            counted(DnsAnswer::Error);
            return response.send_response(error(ResponseCode::FormErr)).await;
        }
        if request.metadata.op_code != OpCode::Query {
            counted(DnsAnswer::Error);
            return response.send_response(error(ResponseCode::NotImp)).await;
        }
        if !self.allowed(request.src().ip()) {
            counted(DnsAnswer::Refused);
            return response.send_response(error(ResponseCode::Refused)).await;
        }
        let Ok(info) = request.request_info() else {
            // Not exactly one question.
            counted(DnsAnswer::Error);
            return response.send_response(error(ResponseCode::FormErr)).await;
        };
        let query = info.query;
        let view = self.view.load();
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let none = std::iter::empty::<&Record>;
        // The asking address tells which container asks, and so which networks' names it sees.
        match view.lookup(
            &self.network,
            request.src().ip(),
            query.original().name(),
            query.query_type(),
            query.query_class(),
        ) {
            Answer::Records(records) => {
                counted(DnsAnswer::Records);
                metadata.authoritative = true;
                let message = builder().build(metadata, records.iter(), none(), none(), none());
                response.send_response(message).await
            }
            // No SOA in the authority section: a negative answer without one is not cached
            // (RFC 2308 5), so a container created a moment later resolves at once.
            Answer::NoData => {
                counted(DnsAnswer::NoData);
                metadata.authoritative = true;
                response
                    .send_response(builder().build_no_records(metadata))
                    .await
            }
            Answer::NxDomain => {
                counted(DnsAnswer::NxDomain);
                metadata.authoritative = true;
                metadata.response_code = ResponseCode::NXDomain;
                response
                    .send_response(builder().build_no_records(metadata))
                    .await
            }
            Answer::Forward => {
                let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
                let upstream = self
                    .forwarder
                    .forward(
                        query.original(),
                        request.metadata.recursion_desired,
                        request.metadata.checking_disabled,
                        dnssec_ok,
                        &self.own,
                    )
                    .await;
                let Some(upstream) = upstream else {
                    counted(DnsAnswer::ForwardFailed);
                    return response.send_response(error(ResponseCode::ServFail)).await;
                };
                counted(DnsAnswer::Forwarded);
                let mut m = upstream.metadata;
                m.id = request.metadata.id;
                m.message_type = MessageType::Response;
                m.op_code = request.metadata.op_code;
                m.recursion_desired = request.metadata.recursion_desired;
                m.recursion_available = true;
                // Re-set by the encoder if the client's buffer is too small for the answer.
                m.truncation = false;
                let message = builder().build(
                    m,
                    upstream.answers.iter(),
                    upstream.authorities.iter(),
                    none(),
                    upstream.additionals.iter(),
                );
                response.send_response(message).await
            }
        }
    }
}
