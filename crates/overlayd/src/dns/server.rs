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

use hickory_proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecoder, BinEncoder};
use hickory_proto::ProtoError;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use ipnetwork::IpNetwork;
use model::names::{self, SANDBOX_IFNAME};
use model::Vni;
use netops::{Netlink, Netns};
use tokio::task::JoinHandle;

use super::forward::{Forwarder, EDNS_PAYLOAD};
use super::records::{Answer, View, ViewCell};
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
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
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
    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        response: &mut R,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        let edns = response_edns(request);
        let view = self.view.load();
        let local = match decide(&self.network, &self.clients, &view, request) {
            Reply::Local(local) => local,
            Reply::Forward(query) => {
                return self.forward(request, &query, response, edns.as_ref()).await
            }
        };
        metrics::get().dns_answered(local.answer);
        let no_question = no_question();
        response
            .send_response(local_response(request, &local, edns.as_ref(), &no_question))
            .await
    }

    async fn forward<R: ResponseHandler>(
        &self,
        request: &Request,
        query: &Query,
        response: &mut R,
        edns: Option<&Edns>,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = edns {
            builder.edns(edns);
        }
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let upstream = self
            .forwarder
            .forward(
                query,
                request.metadata.recursion_desired,
                request.metadata.checking_disabled,
                dnssec_ok,
                &self.own,
            )
            .await;
        let Some(upstream) = upstream else {
            metrics::get().dns_answered(DnsAnswer::ForwardFailed);
            return response
                .send_response(builder.error_msg(&request.metadata, ResponseCode::ServFail))
                .await;
        };
        metrics::get().dns_answered(DnsAnswer::Forwarded);
        let mut m = upstream.metadata;
        m.id = request.metadata.id;
        m.message_type = MessageType::Response;
        m.op_code = request.metadata.op_code;
        m.recursion_desired = request.metadata.recursion_desired;
        m.recursion_available = true;
        // Re-set by the encoder if the client's buffer is too small for the answer.
        m.truncation = false;
        let message = builder.build(
            m,
            upstream.answers.iter(),
            upstream.authorities.iter(),
            std::iter::empty(),
            upstream.additionals.iter(),
        );
        response.send_response(message).await
    }
}

/// What a network's server does with one query, decided from the query, the asking address
/// and the view alone (no I/O): [`Handler`] acts on it, [`answer_query`] encodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Local(LocalReply),
    /// Not ours: the question goes to the upstream resolvers.
    Forward(Query),
}

/// A response made here: its header and answer records, and what the metrics count it as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub metadata: Metadata,
    pub records: Vec<Record>,
    pub answer: DnsAnswer,
}

/// The one rule of what `network`'s server (gateway subnets `clients`) answers `request` with.
pub fn decide(network: &str, clients: &[IpNetwork], view: &View, request: &Request) -> Reply {
    let error = |code: ResponseCode, answer: DnsAnswer| {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = code;
        Reply::Local(LocalReply {
            metadata,
            records: Vec::new(),
            answer,
        })
    };
    // Outsiders first: whatever they send, they learn nothing but REFUSED.
    let client = request.src().ip();
    if !clients.iter().any(|net| net.contains(client)) {
        return error(ResponseCode::Refused, DnsAnswer::Refused);
    }
    if request.metadata.message_type != MessageType::Query {
        return error(ResponseCode::FormErr, DnsAnswer::Error);
    }
    if request.metadata.op_code != OpCode::Query {
        return error(ResponseCode::NotImp, DnsAnswer::Error);
    }
    let Ok(info) = request.request_info() else {
        // Not exactly one question.
        return error(ResponseCode::FormErr, DnsAnswer::Error);
    };
    let query = info.query;
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.recursion_available = true;
    metadata.authoritative = true;
    // The asking address tells which container asks, and so which networks' names it sees.
    let (records, answer) = match view.lookup(
        network,
        client,
        query.original().name(),
        query.query_type(),
        query.query_class(),
    ) {
        Answer::Records(records) => (records, DnsAnswer::Records),
        // No SOA in the authority section: a negative answer without one is not cached
        // (RFC 2308 5), so a container created a moment later resolves at once.
        Answer::NoData => (Vec::new(), DnsAnswer::NoData),
        Answer::NxDomain => {
            metadata.response_code = ResponseCode::NXDomain;
            (Vec::new(), DnsAnswer::NxDomain)
        }
        Answer::Forward => return Reply::Forward(query.original().clone()),
    };
    Reply::Local(LocalReply {
        metadata,
        records,
        answer,
    })
}

/// EDNS in the response when the query had it, with our payload size.
fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|_| {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        edns
    })
}

/// An empty question section (hickory makes one only by reading it; zero questions from
/// nothing cannot fail).
fn no_question() -> Queries {
    Queries::read(&mut BinDecoder::new(&[]), 0).expect("zero questions read from nothing")
}

/// The response to send. It carries the question only when the query had exactly one: echoing
/// the many questions of a malformed query (the FORMERR or REFUSED it gets) overflows 512 bytes
/// and ends as SERVFAIL (found by fuzzing, fuzz target `dns`). `no_question`: an empty section.
fn local_response<'q, 'a>(
    request: &'q Request,
    local: &'a LocalReply,
    edns: Option<&'q Edns>,
    no_question: &'q Queries,
) -> MessageResponse<
    'q,
    'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
> {
    let queries = match request.queries.len() {
        1 => &request.queries,
        _ => no_question,
    };
    let builder = MessageResponseBuilder::new(queries, edns);
    let none = std::iter::empty::<&Record>;
    builder.build(local.metadata, local.records.iter(), none(), none(), none())
}

/// What the server does with the UDP datagram `query` from `src`, without sockets: the response
/// datagram, or None when the query is forwarded upstream or is no DNS message hickory hands to
/// the handler (hickory itself drops or FORMERRs those). Encoded as hickory encodes for UDP: at
/// most 512 bytes, or our EDNS payload size when the query has EDNS, truncated beyond. Parsing is
/// hickory's (the same `Request::from_bytes`).
pub fn answer_query(
    network: &str,
    clients: &[IpNetwork],
    view: &View,
    src: SocketAddr,
    query: &[u8],
) -> Result<Option<Vec<u8>>, ProtoError> {
    let Ok(request) = Request::from_bytes(query.to_vec(), src, Protocol::Udp) else {
        return Ok(None);
    };
    let Reply::Local(local) = decide(network, clients, view, &request) else {
        return Ok(None);
    };
    let edns = response_edns(&request);
    let no_question = no_question();
    let message = local_response(&request, &local, edns.as_ref(), &no_question);
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(edns.as_ref().map_or(512, Edns::max_payload));
    message.destructive_emit(&mut encoder)?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use model::records::Endpoint;

    use super::*;
    use crate::dns::records::Zone;

    fn view() -> View {
        let web = Endpoint {
            network: "demo".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            name: Some("web".into()),
            aliases: vec![],
            ips: vec!["10.0.0.2/24".parse().unwrap()],
            mac: "02:00:00:00:00:01".parse().unwrap(),
            node: "n1".into(),
            vtep: "192.0.2.1".parse().unwrap(),
            vni: Vni::new(1).unwrap(),
        };
        let zones = HashMap::from([("demo".to_string(), Arc::new(Zone::build("demo", [&web])))]);
        View::build(zones, [&web])
    }

    fn ask(client: &str, name: &str) -> Option<Message> {
        let mut query = Message::query();
        query.metadata.id = 4242;
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let clients = ["10.0.0.1/24".parse().unwrap()];
        let src = SocketAddr::new(client.parse().unwrap(), 5353);
        let bytes = answer_query("demo", &clients, &view(), src, &query.to_vec().unwrap()).unwrap();
        bytes.map(|b| Message::from_vec(&b).unwrap())
    }

    #[test]
    fn answers_from_the_records_refuses_outsiders_and_forwards_the_rest() {
        let answer = ask("10.0.0.2", "WEB.demo.overlay.").expect("answered here");
        assert_eq!(answer.metadata.id, 4242);
        assert!(answer.metadata.authoritative && answer.metadata.recursion_available);
        let data: Vec<String> = answer.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(data, ["10.0.0.2"]);
        assert_eq!(answer.answers[0].name.to_ascii(), "WEB.demo.overlay.");

        let nx = ask("10.0.0.2", "nope.demo.overlay.").expect("answered here");
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);

        let refused = ask("192.0.2.9", "web.").expect("answered here");
        assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
        assert!(refused.answers.is_empty());

        assert!(ask("10.0.0.2", "example.com.").is_none(), "forwarded");
        assert!(answer_query(
            "demo",
            &[],
            &view(),
            "10.0.0.2:53".parse().unwrap(),
            b"short"
        )
        .unwrap()
        .is_none());
    }

    /// Found by fuzzing (fuzz target `dns`): a client outside the network that sent a message
    /// of type response, or another opcode than QUERY, got FORMERR or NOTIMP, not REFUSED.
    #[test]
    fn outsiders_get_refused_whatever_they_send() {
        let clients = ["10.0.0.1/24".parse().unwrap()];
        let src: SocketAddr = "10.1.0.4:40000".parse().unwrap();
        let response_typed: &[u8] = &[
            100, 184, 231, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 251, 0, 98, 0,
        ];
        let iquery: &[u8] = &[
            4, 0, 13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 98, 69, 43,
        ];
        for query in [response_typed, iquery] {
            let bytes = answer_query("demo", &clients, &view(), src, query)
                .unwrap()
                .expect("answered here");
            let answer = Message::from_vec(&bytes).unwrap();
            assert_eq!(
                answer.metadata.response_code,
                ResponseCode::Refused,
                "{query:?}"
            );
            assert_eq!(&bytes[..2], &query[..2]);
        }
    }

    /// Found by fuzzing (fuzz target `dns`): a query with many questions got a FORMERR that
    /// echoed them all, over 512 bytes, which hickory turns into SERVFAIL.
    #[test]
    fn a_query_with_many_questions_gets_formerr_within_512_bytes() {
        let mut query = Message::query();
        query.metadata.id = 7;
        for i in 0..20 {
            let name = format!("{}.{}.demo.overlay.", "x".repeat(40), i);
            query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        }
        let query = query.to_vec().unwrap();
        assert!(query.len() > 512);
        let clients = ["10.0.0.1/24".parse().unwrap()];
        for client in ["10.0.0.2:5353", "192.0.2.9:5353"] {
            let bytes = answer_query("demo", &clients, &view(), client.parse().unwrap(), &query)
                .expect("encodes within 512 bytes")
                .expect("answered here");
            assert!(bytes.len() <= 512);
            let answer = Message::from_vec(&bytes).unwrap();
            assert!(answer.queries.is_empty());
            assert_ne!(answer.metadata.response_code, ResponseCode::ServFail);
        }
    }
}
