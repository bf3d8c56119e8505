//! The names of one network as an immutable table, and the answer it gives to one question.
//!
//! A [`Zone`] is built from the endpoint records of a network (of every host) and never changed
//! afterwards: an update builds a new one and swaps it in ([`ZoneCell`]), so a query being
//! answered keeps the table it started with and nobody waits for anybody.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};

use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use model::names::{dns_domain, dns_unservable, DNS_TLD as TLD};
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

    /// The zone of `network` from its endpoint records. Names DNS cannot carry
    /// ([`dns_unservable`]) are left out, the rest of the record still counts.
    pub fn build<'a>(network: &str, endpoints: impl IntoIterator<Item = &'a Endpoint>) -> Zone {
        let mut zone = Zone::empty(network);
        let domain = Name::from(zone.domain.clone());
        for e in endpoints {
            let ips: Vec<IpAddr> = e.ips.iter().map(|cidr| cidr.ip()).collect();
            let labels = e.name.iter().chain(e.aliases.iter());
            let mut first = true;
            for label in labels {
                // Names DNS cannot carry are reserved all the same, only not served: the
                // model's one rule. Not a problem to warn about: the runtime accepted them.
                let servable = match dns_unservable(label, network) {
                    None => parse_name(label)
                        .and_then(|bare| Some((bare.clone(), bare.append_domain(&domain).ok()?))),
                    Some(_) => None,
                };
                let Some((bare, qualified)) = servable else {
                    log::debug!(
                        "endpoint {}/{} of {network}: {label:?} is not served by DNS ({})",
                        e.container_id,
                        e.ifname,
                        dns_unservable(label, network).unwrap_or_else(|| "not a DNS name".into())
                    );
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

/// The current zone of a network, shared by the task that updates it and the queries that read
/// it. The lock is only ever held to clone or replace an Arc (no await, no allocation inside),
/// so a reader never waits for a rebuild: the rebuild happens before the lock is taken.
#[derive(Debug)]
pub struct ZoneCell(RwLock<Arc<Zone>>);

impl ZoneCell {
    pub fn new(zone: Zone) -> ZoneCell {
        ZoneCell(RwLock::new(Arc::new(zone)))
    }

    pub fn load(&self) -> Arc<Zone> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn store(&self, zone: Zone) {
        let zone = Arc::new(zone);
        let old = std::mem::replace(
            &mut *self.0.write().unwrap_or_else(|p| p.into_inner()),
            zone,
        );
        // The old table is freed here, outside the lock, unless a query still holds it.
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
    fn names_dns_cannot_carry_are_left_out() {
        let long = format!("{}.prod", "y".repeat(250));
        let eps = [
            endpoint("Demo", "c1", Some(&long), &[], &["10.0.0.2/24"]),
            endpoint(
                "Demo",
                "c2",
                Some(&"x".repeat(100)),
                &["web"],
                &["10.0.0.3/24"],
            ),
            endpoint("Demo", "c3", Some("a..b"), &[], &["10.0.0.4/24"]),
            endpoint("Demo", "c4", Some("short"), &[], &["10.0.0.5/24"]),
        ];
        let z = Zone::build("Demo", eps.iter());
        assert_eq!(z.len(), 2, "short and web");
        assert_eq!(rdata(&a(&z, "web.", RecordType::A)), ["10.0.0.3"]);
        // Their addresses answer PTR with what is served (the alias), or not at all.
        assert_eq!(
            rdata(&a(&z, "3.0.0.10.in-addr.arpa.", RecordType::PTR)),
            ["web.demo.overlay."]
        );
        assert_eq!(
            a(&z, "2.0.0.10.in-addr.arpa.", RecordType::PTR),
            Answer::Forward
        );
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
        let cell = ZoneCell::new(Zone::empty("demo"));
        let before = cell.load();
        cell.store(demo());
        assert!(before.is_empty(), "a reader keeps the table it loaded");
        assert_eq!(
            rdata(&a(&cell.load(), "test1.", RecordType::A)),
            ["10.0.0.2"]
        );
        assert_eq!(cell.load().len(), 6);
    }
}
