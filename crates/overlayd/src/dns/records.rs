//! The names of one network as an immutable table, and the answer it gives to one question; the
//! zones of every network served here as one immutable [`View`], with which networks each local
//! container is on, and the answer a container on several networks is given.
//!
//! A [`Zone`] is built from the endpoint records of a network (of every host) and never changed
//! afterwards: an update builds a new one and a new [`View`] around it (the other zones shared,
//! not copied), swapped in whole ([`ViewCell`]), so a query being answered keeps the tables it
//! started with and nobody waits for anybody.
//!
//! A container on several networks (`front` and `back`) asks the gateway of one of them; the
//! question's source address is its address on that network, and the local endpoint records
//! tell which container that is and which other networks it is on. It is answered from the zones
//! of all of them ([`lookup_in`]): bare names from the network asked first, then the others;
//! `<name>.<network>.overlay` and PTR only for its own networks. An address that is no local
//! container's (the host, with hostAccess) sees only the network asked.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};

use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use model::names::{dns_domain, DNS_TLD as TLD};
use model::records::Endpoint;

/// Containers come and go within seconds; a longer TTL would have clients keep dead addresses.
pub const TTL: u32 = 5;

/// The addresses one name resolves to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Addresses {
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
}

impl Addresses {
    fn add(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) if !self.v4.contains(&v4) => self.v4.push(v4),
            IpAddr::V6(v6) if !self.v6.contains(&v6) => self.v6.push(v6),
            _ => {}
        }
    }
}

/// What the zone says about one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name is ours: these records (owner names are the question's, case kept).
    Records(Vec<Record>),
    /// The name is ours but has no record of that type (NOERROR, empty answer).
    NoData,
    /// Under the network's domain (or another network's) but no such name.
    NxDomain,
    /// Not ours: ask the upstream resolvers.
    Forward,
}

/// The names and addresses of one network.
#[derive(Debug, Clone)]
pub struct Zone {
    /// `<network>.overlay.`, lower-cased.
    domain: LowerName,
    tld: LowerName,
    /// Both forms of every name and alias, lower-cased: `test2.` and `test2.<net>.overlay.`.
    names: HashMap<LowerName, Addresses>,
    /// Names that exist only because a longer one does (`v1.<net>.overlay.` of an alias `web.v1`):
    /// they answer NODATA, not NXDOMAIN (RFC 8020: NXDOMAIN means nothing exists below either).
    parents: HashSet<LowerName>,
    /// Address -> `name.<net>.overlay.` of the endpoints holding it.
    reverse: HashMap<IpAddr, Vec<Name>>,
}

impl Zone {
    /// An empty zone for a network.
    pub fn empty(network: &str) -> Zone {
        let domain = Name::from_ascii(format!("{}.", dns_domain(network)))
            .unwrap_or_else(|_| Name::from_ascii(format!("invalid.{TLD}.")).expect("static name"));
        Zone {
            domain: LowerName::new(&domain),
            tld: LowerName::new(&Name::from_ascii(format!("{TLD}.")).expect("static name")),
            names: HashMap::new(),
            parents: HashSet::new(),
            reverse: HashMap::new(),
        }
    }

    /// The zone of `network` from its endpoint records. Names that are not valid DNS names are
    /// left out (and reported), the rest of the record still counts.
    pub fn build<'a>(network: &str, endpoints: impl IntoIterator<Item = &'a Endpoint>) -> Zone {
        let mut zone = Zone::empty(network);
        let domain = Name::from(zone.domain.clone());
        for e in endpoints {
            let ips: Vec<IpAddr> = e.ips.iter().map(|cidr| cidr.ip()).collect();
            let labels = e.name.iter().chain(e.aliases.iter());
            let mut first = true;
            for label in labels {
                let Some(bare) = parse_name(label) else {
                    log::warn!(
                        "endpoint {}/{} of {network}: {label:?} is not a DNS name, not served",
                        e.container_id,
                        e.ifname
                    );
                    continue;
                };
                let Ok(qualified) = bare.clone().append_domain(&domain) else {
                    log::warn!("{label:?} is too long to serve under {domain}");
                    continue;
                };
                for name in [&bare, &qualified] {
                    let entry = zone.names.entry(LowerName::new(name)).or_default();
                    for ip in &ips {
                        entry.add(*ip);
                    }
                }
                zone.add_parents(&qualified);
                // PTR answers the container's own name (or its first alias when it has none).
                if first {
                    first = false;
                    let ptr = qualified.to_lowercase();
                    for ip in &ips {
                        let names = zone.reverse.entry(*ip).or_default();
                        if !names.contains(&ptr) {
                            names.push(ptr.clone());
                        }
                    }
                }
            }
        }
        zone
    }

    fn add_parents(&mut self, qualified: &Name) {
        let below = self.domain.num_labels();
        let mut name = qualified.base_name();
        while name.num_labels() > below {
            self.parents.insert(LowerName::new(&name));
            name = name.base_name();
        }
    }

    /// The number of distinct names (bare and qualified counted once).
    pub fn len(&self) -> usize {
        self.names.keys().filter(|n| self.domain.zone_of(n)).count()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The answer to one question; `original` is the name as asked (for the owner names).
    pub fn lookup(&self, original: &Name, qtype: RecordType, qclass: DNSClass) -> Answer {
        if qclass != DNSClass::IN && qclass != DNSClass::ANY {
            return Answer::Forward;
        }
        let name = LowerName::new(original);
        if let Some(addresses) = self.names.get(&name) {
            return records(original, addresses, qtype);
        }
        if self.domain.zone_of(&name) {
            return if name == self.domain || self.parents.contains(&name) {
                Answer::NoData
            } else {
                Answer::NxDomain
            };
        }
        if self.tld.zone_of(&name) {
            // Another network's domain (or a network not on this host): not visible from here,
            // and not the upstream resolvers' business either.
            return Answer::NxDomain;
        }
        if let Some(ip) = arpa_address(original) {
            if let Some(names) = self.reverse.get(&ip) {
                return match qtype {
                    RecordType::PTR | RecordType::ANY => Answer::Records(
                        names
                            .iter()
                            .map(|n| {
                                Record::from_rdata(
                                    original.clone(),
                                    TTL,
                                    RData::PTR(PTR(n.clone())),
                                )
                            })
                            .collect(),
                    ),
                    _ => Answer::NoData,
                };
            }
        }
        Answer::Forward
    }
}

/// A record's name or alias as the absolute name its bare form is asked as (`test2.`), or None
/// when it cannot be a DNS name (a wildcard or a blank would match what it should not).
fn parse_name(label: &str) -> Option<Name> {
    let label = label.trim_end_matches('.');
    if label.is_empty() || label.starts_with('.') || label.contains(['*', ' ', '\t', '\\']) {
        return None;
    }
    let mut name = Name::from_ascii(label).ok()?;
    name.set_fqdn(true);
    Some(name)
}

fn records(owner: &Name, addresses: &Addresses, qtype: RecordType) -> Answer {
    let v4 = || {
        addresses
            .v4
            .iter()
            .map(|ip| Record::from_rdata(owner.clone(), TTL, RData::A(A(*ip))))
    };
    let v6 = || {
        addresses
            .v6
            .iter()
            .map(|ip| Record::from_rdata(owner.clone(), TTL, RData::AAAA(AAAA(*ip))))
    };
    let found: Vec<Record> = match qtype {
        RecordType::A => v4().collect(),
        RecordType::AAAA => v6().collect(),
        RecordType::ANY => v4().chain(v6()).collect(),
        _ => Vec::new(),
    };
    if found.is_empty() {
        Answer::NoData
    } else {
        Answer::Records(found)
    }
}

/// The address a full-length in-addr.arpa / ip6.arpa name stands for.
fn arpa_address(name: &Name) -> Option<IpAddr> {
    let net = name.parse_arpa_name().ok()?;
    let full = if net.addr().is_ipv4() { 32 } else { 128 };
    (net.prefix_len() == full).then(|| net.addr())
}

/// The answer for a container on the networks of `zones`, the one the question arrived on first:
///
/// - a name under one of its networks' domains (`test2.back.overlay.`): that network's answer;
/// - under another network's domain, or `.overlay` itself: NXDOMAIN (not visible, and not the
///   upstream resolvers' business);
/// - a bare name or an address (PTR): the first of its networks that has it, in order;
/// - everything else is forwarded.
pub fn lookup_in(zones: &[&Zone], original: &Name, qtype: RecordType, qclass: DNSClass) -> Answer {
    let Some(first) = zones.first() else {
        return Answer::Forward;
    };
    if qclass != DNSClass::IN && qclass != DNSClass::ANY {
        return Answer::Forward;
    }
    let name = LowerName::new(original);
    if let Some(zone) = zones.iter().find(|z| z.domain.zone_of(&name)) {
        return zone.lookup(original, qtype, qclass);
    }
    if first.tld.zone_of(&name) {
        return Answer::NxDomain;
    }
    for zone in zones {
        match zone.lookup(original, qtype, qclass) {
            Answer::Forward => continue,
            answer => return answer,
        }
    }
    Answer::Forward
}

/// The zones of the networks served on this host, and the networks of each local container.
#[derive(Debug, Default)]
pub struct View {
    zones: HashMap<String, Arc<Zone>>,
    /// Per network: the addresses on it of local containers that are on other networks too,
    /// and those other networks (sorted).
    others: HashMap<String, HashMap<IpAddr, Vec<String>>>,
}

impl View {
    /// `zones` by network name; `local` the endpoint records of this host's containers (of every
    /// network), which tell which networks each container is on: a container is its container
    /// id on this node (the records' key is network, container id and ifname).
    pub fn build<'a>(
        zones: HashMap<String, Arc<Zone>>,
        local: impl IntoIterator<Item = &'a Endpoint>,
    ) -> View {
        let local: Vec<&Endpoint> = local.into_iter().collect();
        let mut networks: HashMap<&str, BTreeSet<&str>> = HashMap::new();
        for e in &local {
            networks
                .entry(e.container_id.as_str())
                .or_default()
                .insert(e.network.as_str());
        }
        let mut others: HashMap<String, HashMap<IpAddr, Vec<String>>> = HashMap::new();
        for e in &local {
            let all = &networks[e.container_id.as_str()];
            if all.len() < 2 {
                continue;
            }
            let rest: Vec<String> = all
                .iter()
                .filter(|n| **n != e.network)
                .map(|n| n.to_string())
                .collect();
            let by_addr = others.entry(e.network.clone()).or_default();
            for ip in &e.ips {
                by_addr.insert(ip.ip(), rest.clone());
            }
        }
        View { zones, others }
    }

    /// The networks whose names `client`, asking on `network`, is answered from: `network`
    /// first, then the other networks of its container, by name.
    pub fn networks_of<'a>(&'a self, network: &'a str, client: IpAddr) -> Vec<&'a str> {
        let mut out = vec![network];
        if let Some(rest) = self.others.get(network).and_then(|m| m.get(&client)) {
            out.extend(rest.iter().map(String::as_str));
        }
        out
    }

    /// The answer to `client`'s question on `network`'s server.
    pub fn lookup(
        &self,
        network: &str,
        client: IpAddr,
        original: &Name,
        qtype: RecordType,
        qclass: DNSClass,
    ) -> Answer {
        let Some(own) = self.zones.get(network) else {
            // Between a network's first record and its zone (never once served): its domain
            // is still its own.
            return Zone::empty(network).lookup(original, qtype, qclass);
        };
        match self.others.get(network).and_then(|m| m.get(&client)) {
            None => own.lookup(original, qtype, qclass),
            Some(rest) => {
                let zones: Vec<&Zone> = std::iter::once(own.as_ref())
                    .chain(
                        rest.iter()
                            .filter_map(|n| self.zones.get(n).map(|z| z.as_ref())),
                    )
                    .collect();
                lookup_in(&zones, original, qtype, qclass)
            }
        }
    }

    /// The zone of a network, if it is in the view.
    pub fn zone(&self, network: &str) -> Option<&Arc<Zone>> {
        self.zones.get(network)
    }
}

/// The records of `node`'s containers among the records of `networks`, for [`View::build`].
pub fn local_records<'a>(
    networks: impl IntoIterator<Item = &'a BTreeMap<String, Arc<Endpoint>>>,
    node: &'a str,
) -> impl Iterator<Item = &'a Endpoint> {
    networks
        .into_iter()
        .flat_map(|records| records.values())
        .filter(move |e| e.node == node)
        .map(|e| e.as_ref())
}

/// The current view, shared by the task that updates it and the queries that read it. The lock
/// is only ever held to clone or replace an Arc (no await, no allocation inside), so a reader
/// never waits for a rebuild: the rebuild happens before the lock is taken.
#[derive(Debug)]
pub struct ViewCell(RwLock<Arc<View>>);

impl Default for ViewCell {
    fn default() -> Self {
        ViewCell::new(View::default())
    }
}

impl ViewCell {
    pub fn new(view: View) -> ViewCell {
        ViewCell(RwLock::new(Arc::new(view)))
    }

    pub fn load(&self) -> Arc<View> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn store(&self, view: View) {
        let view = Arc::new(view);
        let old = std::mem::replace(
            &mut *self.0.write().unwrap_or_else(|p| p.into_inner()),
            view,
        );
        // The old tables are freed here, outside the lock, unless a query still holds it.
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(
        net: &str,
        cid: &str,
        name: Option<&str>,
        aliases: &[&str],
        ips: &[&str],
    ) -> Endpoint {
        Endpoint {
            network: net.into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
            name: name.map(str::to_string),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
            node: "n1".into(),
            vtep: "192.0.2.1".parse().unwrap(),
            vni: model::Vni::new(1).unwrap(),
        }
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn a(zone: &Zone, q: &str, t: RecordType) -> Answer {
        zone.lookup(&name(q), t, DNSClass::IN)
    }

    fn rdata(answer: &Answer) -> Vec<String> {
        match answer {
            Answer::Records(r) => r.iter().map(|r| r.data.to_string()).collect(),
            other => panic!("expected records, got {other:?}"),
        }
    }

    fn demo() -> Zone {
        let eps = [
            endpoint(
                "Demo",
                "c1",
                Some("test1"),
                &[],
                &["10.0.0.2/24", "fd00::2/64"],
            ),
            endpoint(
                "Demo",
                "c2",
                Some("Test2"),
                &["web", "api.v1"],
                &["10.0.0.3/24"],
            ),
            endpoint("Demo", "c3", None, &["anon"], &["10.0.0.4/24"]),
            endpoint("Demo", "c4", Some("bad name"), &["ok4"], &["10.0.0.5/24"]),
            endpoint("Demo", "c5", Some("web"), &[], &["10.0.0.6/24"]),
        ];
        Zone::build("Demo", eps.iter())
    }

    #[test]
    fn the_zone_is_the_lower_cased_network_domain() {
        assert_eq!(Zone::empty("Demo").domain.to_string(), "demo.overlay.");
    }

    #[test]
    fn bare_and_qualified_names_case_insensitive() {
        let z = demo();
        for q in [
            "test2.",
            "TEST2.",
            "test2.demo.overlay.",
            "Test2.Demo.Overlay.",
        ] {
            assert_eq!(rdata(&a(&z, q, RecordType::A)), ["10.0.0.3"], "{q}");
        }
        // The owner name is the question's, case included (0x20 randomisation).
        match a(&z, "TeSt2.demo.overlay.", RecordType::A) {
            Answer::Records(r) => assert_eq!(r[0].name.to_string(), "TeSt2.demo.overlay."),
            other => panic!("{other:?}"),
        }
        assert_eq!(rdata(&a(&z, "test1.", RecordType::AAAA)), ["fd00::2"]);
        assert_eq!(
            rdata(&a(&z, "test1.", RecordType::ANY)),
            ["10.0.0.2", "fd00::2"]
        );
        match &a(&z, "test1.", RecordType::A) {
            Answer::Records(r) => assert_eq!(r[0].ttl, TTL),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn aliases_and_shared_names() {
        let z = demo();
        let mut web = rdata(&a(&z, "web.demo.overlay.", RecordType::A));
        web.sort();
        assert_eq!(web, ["10.0.0.3", "10.0.0.6"]);
        assert_eq!(rdata(&a(&z, "api.v1.", RecordType::A)), ["10.0.0.3"]);
        assert_eq!(rdata(&a(&z, "anon.", RecordType::A)), ["10.0.0.4"]);
        // The invalid name is skipped, the alias of the same record still works.
        assert_eq!(rdata(&a(&z, "ok4.", RecordType::A)), ["10.0.0.5"]);
    }

    #[test]
    fn nodata_nxdomain_and_forward() {
        let z = demo();
        assert_eq!(a(&z, "test2.", RecordType::AAAA), Answer::NoData);
        assert_eq!(a(&z, "test2.demo.overlay.", RecordType::MX), Answer::NoData);
        assert_eq!(a(&z, "demo.overlay.", RecordType::SOA), Answer::NoData);
        assert_eq!(a(&z, "v1.demo.overlay.", RecordType::A), Answer::NoData);
        assert_eq!(a(&z, "nope.demo.overlay.", RecordType::A), Answer::NxDomain);
        assert_eq!(
            a(&z, "x.test2.demo.overlay.", RecordType::A),
            Answer::NxDomain
        );
        // Another network's names are not visible, and .overlay is not sent upstream.
        assert_eq!(
            a(&z, "test2.other.overlay.", RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(a(&z, "overlay.", RecordType::A), Answer::NxDomain);
        // Unknown bare names and everything else go upstream.
        assert_eq!(a(&z, "nope.", RecordType::A), Answer::Forward);
        assert_eq!(a(&z, "example.com.", RecordType::A), Answer::Forward);
        assert_eq!(
            z.lookup(&name("test2."), RecordType::A, DNSClass::CH),
            Answer::Forward
        );
    }

    #[test]
    fn reverse_lookups() {
        let z = demo();
        assert_eq!(
            rdata(&a(&z, "3.0.0.10.in-addr.arpa.", RecordType::PTR)),
            ["test2.demo.overlay."]
        );
        assert_eq!(
            rdata(&a(&z, "4.0.0.10.in-addr.arpa.", RecordType::PTR)),
            ["anon.demo.overlay."]
        );
        let v6 = Name::from(IpAddr::from("fd00::2".parse::<Ipv6Addr>().unwrap()));
        assert_eq!(
            rdata(&z.lookup(&v6, RecordType::PTR, DNSClass::IN)),
            ["test1.demo.overlay."]
        );
        assert_eq!(
            a(&z, "3.0.0.10.in-addr.arpa.", RecordType::A),
            Answer::NoData
        );
        assert_eq!(
            a(&z, "9.0.0.10.in-addr.arpa.", RecordType::PTR),
            Answer::Forward
        );
        assert_eq!(
            a(&z, "0.10.in-addr.arpa.", RecordType::PTR),
            Answer::Forward
        );
    }

    #[test]
    fn cell_swaps_without_disturbing_readers() {
        let cell = ViewCell::default();
        let before = cell.load();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        cell.store(View::build(
            HashMap::from([("Demo".to_string(), Arc::new(demo()))]),
            [],
        ));
        assert!(
            before.zone("Demo").is_none(),
            "a reader keeps the view it loaded"
        );
        let q = |view: &View| view.lookup("Demo", ip, &name("test1."), RecordType::A, DNSClass::IN);
        assert_eq!(q(&before), Answer::Forward);
        assert_eq!(rdata(&q(&cell.load())), ["10.0.0.2"]);
        assert_eq!(cell.load().zone("Demo").unwrap().len(), 6);
    }

    /// front: web (c1, also on back), api (c2); back: web (c1), db (c3), and `shared`, a name on
    /// both networks with different addresses; other: secret (c4). All local except db.
    fn three_networks() -> View {
        let on = |net: &str, cid: &str, n: &str, ip: &str| {
            let mut e = endpoint(net, cid, Some(n), &[], &[ip]);
            e.ifname = if net == "back" { "eth1" } else { "eth0" }.into();
            e
        };
        let mut db = on("back", "c3", "db", "10.2.0.3/24");
        db.node = "n2".into();
        let records = [
            on("front", "c1", "web", "10.1.0.2/24"),
            on("front", "c2", "api", "10.1.0.3/24"),
            on("front", "c5", "shared", "10.1.0.5/24"),
            on("back", "c1", "web", "10.2.0.2/24"),
            db,
            on("back", "c6", "shared", "10.2.0.6/24"),
            on("other", "c4", "secret", "10.3.0.2/24"),
        ];
        let zone = |net: &str| {
            Arc::new(Zone::build(
                net,
                records.iter().filter(|e| e.network == net),
            ))
        };
        let zones = HashMap::from([
            ("front".to_string(), zone("front")),
            ("back".to_string(), zone("back")),
            ("other".to_string(), zone("other")),
        ]);
        View::build(zones, records.iter().filter(|e| e.node == "n1"))
    }

    fn ask(view: &View, net: &str, client: &str, q: &str, t: RecordType) -> Answer {
        view.lookup(net, client.parse().unwrap(), &name(q), t, DNSClass::IN)
    }

    #[test]
    fn a_container_on_two_networks_sees_the_names_of_both() {
        let v = three_networks();
        // web asks on front (from its front address) and on back (from its back address).
        for (net, web) in [("front", "10.1.0.2"), ("back", "10.2.0.2")] {
            assert_eq!(v.networks_of(net, web.parse().unwrap()).len(), 2);
            assert_eq!(
                rdata(&ask(&v, net, web, "api.", RecordType::A)),
                ["10.1.0.3"]
            );
            assert_eq!(
                rdata(&ask(&v, net, web, "db.", RecordType::A)),
                ["10.2.0.3"]
            );
            assert_eq!(
                rdata(&ask(&v, net, web, "db.back.overlay.", RecordType::A)),
                ["10.2.0.3"]
            );
            assert_eq!(
                rdata(&ask(&v, net, web, "API.Front.overlay.", RecordType::A)),
                ["10.1.0.3"]
            );
            // Under a network of its own: that network's answer, even for a name of the other.
            assert_eq!(
                ask(&v, net, web, "db.front.overlay.", RecordType::A),
                Answer::NxDomain
            );
            assert_eq!(
                ask(&v, net, web, "db.back.overlay.", RecordType::AAAA),
                Answer::NoData
            );
            // Not its network: nothing, bare or qualified.
            assert_eq!(ask(&v, net, web, "secret.", RecordType::A), Answer::Forward);
            assert_eq!(
                ask(&v, net, web, "secret.other.overlay.", RecordType::A),
                Answer::NxDomain
            );
            // PTR of both networks' addresses, not of another's.
            assert_eq!(
                rdata(&ask(
                    &v,
                    net,
                    web,
                    "3.0.2.10.in-addr.arpa.",
                    RecordType::PTR
                )),
                ["db.back.overlay."]
            );
            assert_eq!(
                rdata(&ask(
                    &v,
                    net,
                    web,
                    "3.0.1.10.in-addr.arpa.",
                    RecordType::PTR
                )),
                ["api.front.overlay."]
            );
            assert_eq!(
                ask(&v, net, web, "2.0.3.10.in-addr.arpa.", RecordType::PTR),
                Answer::Forward
            );
        }
        // A bare name on both networks: the network asked answers first.
        assert_eq!(
            rdata(&ask(&v, "front", "10.1.0.2", "shared.", RecordType::A)),
            ["10.1.0.5"]
        );
        assert_eq!(
            rdata(&ask(&v, "back", "10.2.0.2", "shared.", RecordType::A)),
            ["10.2.0.6"]
        );
        // Its own name on both: each network's address, the one asked first.
        assert_eq!(
            rdata(&ask(&v, "back", "10.2.0.2", "web.", RecordType::A)),
            ["10.2.0.2"]
        );
    }

    #[test]
    fn a_container_on_one_network_sees_only_that_one() {
        let v = three_networks();
        // api is on front alone; the host (an address of no container) asks on back.
        for (net, client, hidden, qualified) in [
            ("front", "10.1.0.3", "db.", "db.back.overlay."),
            ("back", "10.2.0.1", "api.", "api.front.overlay."),
            // Not the address web has on back: web's front address asking on back is a stranger.
            ("back", "10.1.0.2", "api.", "api.front.overlay."),
        ] {
            assert_eq!(v.networks_of(net, client.parse().unwrap()), [net]);
            assert_eq!(ask(&v, net, client, hidden, RecordType::A), Answer::Forward);
            assert_eq!(
                ask(&v, net, client, qualified, RecordType::A),
                Answer::NxDomain
            );
        }
        assert_eq!(
            rdata(&ask(&v, "front", "10.1.0.3", "web.", RecordType::A)),
            ["10.1.0.2"]
        );
        assert_eq!(
            ask(
                &v,
                "front",
                "10.1.0.3",
                "3.0.2.10.in-addr.arpa.",
                RecordType::PTR
            ),
            Answer::Forward
        );
        // A network without a zone yet keeps its domain.
        assert_eq!(
            ask(&v, "new", "10.9.0.2", "x.new.overlay.", RecordType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn lookup_in_follows_the_order_and_the_class() {
        let v = three_networks();
        let (front, back) = (v.zone("front").unwrap(), v.zone("back").unwrap());
        let q = |zones: &[&Zone], n: &str| lookup_in(zones, &name(n), RecordType::A, DNSClass::IN);
        assert_eq!(rdata(&q(&[front, back], "shared.")), ["10.1.0.5"]);
        assert_eq!(rdata(&q(&[back, front], "shared.")), ["10.2.0.6"]);
        assert_eq!(q(&[], "shared."), Answer::Forward);
        assert_eq!(q(&[front, back], "overlay."), Answer::NxDomain);
        assert_eq!(q(&[front, back], "example.com."), Answer::Forward);
        assert_eq!(
            lookup_in(&[front, back], &name("db."), RecordType::A, DNSClass::CH),
            Answer::Forward
        );
    }
}
