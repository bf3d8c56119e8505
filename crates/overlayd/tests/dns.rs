//! Per-network DNS on a lab of two hosts, containers added with the real plugins
//! (vxlan-overlay + etcd-ipam) and an overlayd on each host: containers resolve and ping each
//! other by name across hosts right after ADD; another network's containers see none of it; a
//! deleted container stops resolving within milliseconds; AAAA, PTR, aliases; other names go to
//! the upstream resolver (dnsmasq in the lab's internet), past one that refuses; a restarted
//! overlayd answers again; no query is lost while records change; hostAccess networks are served
//! on the bridge; a sandbox made anew under a running server is followed.
//!
//! Each container gets the resolv.conf its CNI result describes, in /etc/netns/<its namespace>/
//! (bind-mounted by `ip netns exec`), removed afterwards. Without root, etcd,
//! dig or dnsmasq the tests fail.

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{args, wait_registered, Daemon, EtcdIn};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use netops::Netns;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use testutils::lab::{bin_dir, cni_path, Lab, OverlayNet, INTERNET_ADDR};
use testutils::{Invocation, Output};

/// Where the tests wait for something that should take milliseconds.
const SOON: Duration = Duration::from_secs(2);

/// A container added through the plugin; its resolv.conf is removed on drop.
struct Container {
    name: String,
    ns: String,
    result: Value,
    etc: PathBuf,
}

impl Container {
    /// Its first address of a family, without prefix length.
    fn addr(&self, v6: bool) -> String {
        self.result["ips"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|ip| ip["address"].as_str())
            .map(|a| a.split('/').next().unwrap().to_string())
            .find(|a| a.contains(':') == v6)
            .unwrap_or_else(|| panic!("{} has no address v6={v6}: {}", self.name, self.result))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

struct World {
    // Dropped in this order: overlayds, then the etcd client, then the lab.
    daemons: Vec<Option<Daemon>>,
    etcd: EtcdIn,
    lab: Lab,
    upstreams: String,
}

impl World {
    /// A lab whose overlayds forward to the lab's internet address (nobody answers there unless
    /// a test starts a resolver).
    fn new(hosts: usize) -> World {
        World::with_upstreams(hosts, INTERNET_ADDR)
    }

    fn with_upstreams(hosts: usize, upstreams: &str) -> World {
        bin_dir();
        let lab = Lab::new(hosts);
        let etcd = EtcdIn::new(&lab.host(0).ns, &lab.etcd_endpoint);
        let mut w = World {
            daemons: (0..hosts).map(|_| None).collect(),
            etcd,
            lab,
            upstreams: upstreams.to_string(),
        };
        for h in 0..hosts {
            w.start_overlayd(h);
        }
        w
    }

    fn start_overlayd(&mut self, h: usize) {
        let host = self.lab.host(h);
        let mut daemon = Daemon::start(
            &host.name,
            &host.ns,
            &host.dir,
            &args(
                &self.lab.etcd_endpoint,
                &host.name,
                &["--dns-upstream", &self.upstreams],
            ),
        );
        wait_registered(&self.etcd, &mut daemon, &host.name, Duration::from_secs(10));
        self.daemons[h] = Some(daemon);
    }

    fn kill_overlayd(&mut self, h: usize) {
        let mut daemon = self.daemons[h].take().unwrap();
        daemon.signal(Signal::SIGKILL);
        daemon.wait(Duration::from_secs(5)).expect("overlayd dies");
    }

    fn log(&self, h: usize) -> String {
        self.daemons[h]
            .as_ref()
            .map(|d| d.log())
            .unwrap_or_default()
    }

    fn call(&self, host: usize, command: &str, name: &str, netns: &str, conf: &Value) -> Output {
        let inv = Invocation::new(bin_dir().join("vxlan-overlay"), command)
            .attachment(name, netns, "eth0")
            .env("CNI_PATH", &cni_path())
            .env("CNI_ARGS", &format!("IgnoreUnknown=1;K8S_POD_NAME={name}"))
            .stdin(conf);
        self.lab.run_on(host, &inv)
    }

    /// ADD of a new container `name` on `host`, with extra top-level config (runtimeConfig).
    fn add_with(&mut self, host: usize, net: &OverlayNet, name: &str, extra: Value) -> Container {
        let (ns, path) = self.lab.container(name);
        let mut conf = net.config(&self.lab, host);
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let result = self.call(host, "ADD", name, &path, &conf).ok();
        // The container's resolv.conf, as a runtime writes it from the result.
        let dns = &result["dns"];
        let mut text = String::new();
        for ns in dns["nameservers"]
            .as_array()
            .expect("the result names nameservers")
        {
            text += &format!("nameserver {}\n", ns.as_str().unwrap());
        }
        let search: Vec<&str> = dns["search"]
            .as_array()
            .map(|s| s.iter().filter_map(|d| d.as_str()).collect())
            .unwrap_or_default();
        if !search.is_empty() {
            text += &format!("search {}\n", search.join(" "));
        }
        let etc = PathBuf::from(format!("/etc/netns/{ns}"));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("resolv.conf"), text).unwrap();
        Container {
            name: name.into(),
            ns,
            result,
            etc,
        }
    }

    fn add(&mut self, host: usize, net: &OverlayNet, name: &str) -> Container {
        self.add_with(host, net, name, json!({}))
    }

    /// ADD or DEL of container `c` on one more network, as its interface `ifname` (eth1 for a
    /// second network, as runtimes name it): same container id, name and namespace.
    fn connect(
        &self,
        host: usize,
        net: &OverlayNet,
        c: &Container,
        command: &str,
        ifname: &str,
    ) -> Value {
        let conf = net.config(&self.lab, host);
        let netns = if command == "ADD" {
            format!("/run/netns/{}", c.ns)
        } else {
            String::new()
        };
        let inv = Invocation::new(bin_dir().join("vxlan-overlay"), command)
            .attachment(&c.name, &netns, ifname)
            .env("CNI_PATH", &cni_path())
            .env(
                "CNI_ARGS",
                &format!("IgnoreUnknown=1;K8S_POD_NAME={}", c.name),
            )
            .stdin(&conf);
        self.lab.run_on(host, &inv).ok()
    }

    fn del(&self, host: usize, net: &OverlayNet, name: &str) {
        let conf = net.config(&self.lab, host);
        self.call(host, "DEL", name, "", &conf).ok();
    }
}

/// `dig` inside a container: (status, answer lines' data). One try of one second.
fn dig(c: &Container, query: &[&str]) -> (String, Vec<String>) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.ns,
            "dig",
            // Generous: a loaded machine must not turn a slow answer into a failed test (a test
            // that needs another timeout passes its own +time, which dig takes over this one).
            "+time=5",
            "+tries=1",
            "+nocmd",
            "+noquestion",
        ])
        .args(["+nostats", "+noauthority", "+noadditional"])
        .args(query)
        .output()
        .expect("run dig (bind9-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("NO ANSWER")
        .to_string();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .collect();
    (status, answers)
}

/// `dig +short`: the answers alone.
fn short(c: &Container, query: &[&str]) -> Vec<String> {
    dig(c, query).1
}

/// Polls `dig` until `cond` holds on (status, answers); the time it took, or None after `within`.
fn until(
    c: &Container,
    query: &[&str],
    within: Duration,
    cond: impl Fn(&str, &[String]) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        let (status, answers) = dig(c, query);
        if cond(&status, &answers) {
            return Some(start.elapsed());
        }
        if start.elapsed() > within {
            return None;
        }
    }
}

/// A UDP socket made inside a container's namespace, for questions at a millisecond's pace
/// (a `dig` process costs tens of milliseconds, too coarse to measure propagation with).
struct Probe {
    socket: UdpSocket,
}

impl Probe {
    fn new(c: &Container, server: &str) -> Probe {
        let ns = Netns::open(format!("/run/netns/{}", c.ns)).unwrap();
        let server = SocketAddr::new(server.parse::<IpAddr>().unwrap(), 53);
        let socket = ns
            .run(move || {
                let local = if server.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let socket = UdpSocket::bind(local)?;
                socket.connect(server)?;
                Ok::<_, std::io::Error>(socket)
            })
            .unwrap()
            .expect("probe socket in the container");
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Probe { socket }
    }

    /// One question; None when no answer came within 500 ms.
    fn ask(&self, name: &str, rtype: RecordType) -> Option<(ResponseCode, Vec<String>)> {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        self.socket.send(&m.to_vec().unwrap()).ok()?;
        let mut buf = [0u8; 4096];
        loop {
            let n = self.socket.recv(&mut buf).ok()?;
            let Ok(r) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if r.metadata.id == m.metadata.id {
                let answers = r.answers.iter().map(|a| a.data.to_string()).collect();
                return Some((r.metadata.response_code, answers));
            }
        }
    }

    /// In a thread: asks every millisecond until `cond` holds; the instant it did.
    fn wait_in_background(
        self,
        name: &str,
        rtype: RecordType,
        within: Duration,
        cond: impl Fn(ResponseCode, &[String]) -> bool + Send + 'static,
    ) -> JoinHandle<Option<Instant>> {
        let name = name.to_string();
        std::thread::spawn(move || {
            let deadline = Instant::now() + within;
            while Instant::now() < deadline {
                if let Some((code, answers)) = self.ask(&name, rtype) {
                    if cond(code, &answers) {
                        return Some(Instant::now());
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            None
        })
    }
}

/// "12.3 ms after" or "4.5 ms before" (an answer can come before the plugin returned).
fn relative(at: Instant, reference: Instant) -> String {
    match at.checked_duration_since(reference) {
        Some(d) => format!("{:.1} ms after", d.as_secs_f64() * 1e3),
        None => format!("{:.1} ms before", (reference - at).as_secs_f64() * 1e3),
    }
}

/// glibc's resolver, through the resolv.conf of the container: ping by name.
fn ping(c: &Container, name: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &c.ns, "ping", "-c1", "-W1", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn getent(c: &Container, name: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &c.ns, "getent", "ahosts", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn test1_and_test2_on_two_hosts_resolve_and_ping_each_other_by_name() {
    let mut w = World::new(2);
    let net = OverlayNet::new("Demo", 4242, "10.0.0.0/24");
    let t1 = w.add(0, &net, "test1");
    // From test1 on node1, ask for test2 every millisecond while node2 adds it.
    let seen = Probe::new(&t1, "10.0.0.1").wait_in_background(
        "test2.demo.overlay.",
        RecordType::A,
        SOON * 5,
        |code, answers| code == ResponseCode::NoError && !answers.is_empty(),
    );
    let started = Instant::now();
    let t2 = w.add(1, &net, "test2");
    let added = Instant::now();
    let seen = seen
        .join()
        .unwrap()
        .unwrap_or_else(|| panic!("test2 never resolved on node1:\n{}", w.log(0)));
    println!(
        "test2 resolved on node1 {} its ADD on node2 returned ({} it started)",
        relative(seen, added),
        relative(seen, started)
    );
    assert!(seen.saturating_duration_since(added) < SOON);
    let (a1, a2) = (t1.addr(false), t2.addr(false));
    assert_eq!(t2.result["dns"]["nameservers"], json!(["10.0.0.1"]));
    assert_eq!(t2.result["dns"]["search"], json!(["demo.overlay"]));

    // The very first question after ADD returned, on the other host.
    let (status, answers) = dig(&t1, &["test2"]);
    println!(
        "first query {:?} after ADD: {status} {answers:?}",
        added.elapsed()
    );
    assert!(
        status == "NOERROR" && answers == [a2.as_str()],
        "{status} {answers:?}:\n{}",
        w.log(0)
    );
    assert_eq!(short(&t2, &["test1"]), [a1.as_str()]);
    // Qualified, any case; the search list makes `ping test2` try test2.demo.overlay first.
    assert_eq!(short(&t1, &["test2.demo.overlay"]), [a2.as_str()]);
    assert_eq!(short(&t1, &["TeSt2.DEMO.overlay"]), [a2.as_str()]);
    assert_eq!(
        short(&t1, &["+tcp", "test2.demo.overlay"]),
        [a2.as_str()],
        "over TCP"
    );
    assert!(
        ping(&t1, "test2"),
        "test1 cannot ping test2 by name:\n{}",
        w.log(0)
    );
    assert!(
        ping(&t2, "test1"),
        "test2 cannot ping test1 by name:\n{}",
        w.log(1)
    );
    assert!(ping(&t1, "test2.demo.overlay"));
    assert!(getent(&t1, "test2").contains(&a2));

    // Unknown names under the network's domain: NXDOMAIN, answered here (not upstream).
    assert_eq!(dig(&t1, &["nosuch.demo.overlay"]).0, "NXDOMAIN");
    // A name with only IPv4: AAAA is NOERROR without records, not NXDOMAIN (glibc's parallel
    // A+AAAA lookup would fail the whole name otherwise).
    assert_eq!(
        dig(&t1, &["AAAA", "test2"]),
        ("NOERROR".to_string(), vec![])
    );

    // Aliases from runtimeConfig, bare and qualified, from the other host.
    let web = w.add_with(
        1,
        &net,
        "test3",
        json!({"runtimeConfig": {"aliases": {"Demo": ["web", "api.v1"]}}}),
    );
    let a3 = web.addr(false);
    let took = until(&t1, &["web"], SOON, |s, a| {
        s == "NOERROR" && *a == [a3.as_str()]
    })
    .unwrap_or_else(|| panic!("alias web never resolved:\n{}", w.log(0)));
    println!("alias resolved {took:?} after its ADD returned");
    assert_eq!(short(&t1, &["web.demo.overlay"]), [a3.as_str()]);
    assert_eq!(short(&t1, &["api.v1.demo.overlay"]), [a3.as_str()]);
    assert_eq!(short(&t1, &["test3"]), [a3.as_str()]);
    assert!(ping(&t1, "web"));
}

#[test]
fn another_network_does_not_see_the_names() {
    let mut w = World::new(2);
    let demo = OverlayNet::new("demo", 4242, "10.0.0.0/24");
    let other = OverlayNet::new("other", 4343, "10.0.1.0/24");
    let _t1 = w.add(0, &demo, "test1");
    let t2 = w.add(1, &demo, "test2");
    let o1 = w.add(0, &other, "o1");
    let o2 = w.add(1, &other, "o2");
    let a2 = t2.addr(false);
    assert_eq!(short(&o1, &["o2"]), [o2.addr(false)], "{}", w.log(0));
    // Under its own domain, and under the other network's: NXDOMAIN.
    assert_eq!(dig(&o1, &["test2.other.overlay"]).0, "NXDOMAIN");
    assert_eq!(dig(&o1, &["test2.demo.overlay"]).0, "NXDOMAIN");
    // The bare name is not a container of this network: it goes upstream (nobody there in this
    // test), and certainly does not come back with test2's address.
    let (status, answers) = dig(&o1, &["test2"]);
    assert_ne!(status, "NOERROR", "{answers:?}");
    assert!(!answers.contains(&a2));
    assert!(!ping(&o1, "test2"));
    assert!(!getent(&o1, "test2").contains(&a2));
    // Nor the reverse name.
    let (_, ptr) = dig(&o1, &["-x", &a2]);
    assert!(ptr.is_empty(), "{ptr:?}");

    // Each kind of answer is counted in host 0's /metrics.
    let (_, metrics) = common::http_get(&w.lab.host(0).ns, "/metrics");
    for (answer, at_least) in [("records", 1.0), ("nxdomain", 2.0), ("servfail", 1.0)] {
        let series = format!("overlayd_dns_queries_total{{answer=\"{answer}\"}}");
        let n = common::sample(&metrics, &series).unwrap_or(0.0);
        assert!(
            n >= at_least,
            "{series} = {n}, not >= {at_least}:\n{metrics}"
        );
    }
}

#[test]
fn a_deleted_container_stops_resolving_at_once_and_the_last_local_one_closes_the_sockets() {
    let mut w = World::new(2);
    let net = OverlayNet::new("gone", 4500, "10.45.0.0/24");
    let t1 = w.add(0, &net, "test1");
    let t2 = w.add(1, &net, "test2");
    let a2 = t2.addr(false);
    assert!(until(&t1, &["test2"], SOON, |_, a| *a == [a2.as_str()]).is_some());

    let gone = Probe::new(&t1, "10.45.0.1").wait_in_background(
        "test2.gone.overlay.",
        RecordType::A,
        SOON * 5,
        |code, _| code == ResponseCode::NXDomain,
    );
    let started = Instant::now();
    w.del(1, &net, "test2");
    let returned = Instant::now();
    let gone = gone
        .join()
        .unwrap()
        .unwrap_or_else(|| panic!("test2 still resolves after its DEL:\n{}", w.log(0)));
    println!(
        "test2 stopped resolving on node1 {} its DEL on node2 returned ({} it started)",
        relative(gone, returned),
        relative(gone, started)
    );
    assert!(gone.saturating_duration_since(returned) < SOON);
    assert_eq!(dig(&t1, &["test2.gone.overlay"]).0, "NXDOMAIN");
    // The bare name now goes upstream; test2's address is not given out.
    assert!(!short(&t1, &["test2"]).contains(&a2));

    // test1 was node1's last container: its DNS sockets close with it.
    w.del(0, &net, "test1");
    let closed = common::eventually(SOON, || {
        w.log(0).contains("no local container left, sockets closed")
    });
    assert!(closed.is_some(), "{}", w.log(0));
}

#[test]
fn dual_stack_answers_aaaa_and_ptr_over_both_families() {
    let mut w = World::new(2);
    let mut net = OverlayNet::new("ds", 4600, "");
    net.ipam = json!({"type": "etcd-ipam",
                      "ranges": [[{"subnet": "10.46.0.0/24"}], [{"subnet": "fd46::/64"}]]});
    let t1 = w.add(0, &net, "test1");
    let t2 = w.add(1, &net, "test2");
    let (v4, v6) = (t2.addr(false), t2.addr(true));
    assert_eq!(
        t1.result["dns"]["nameservers"],
        json!(["10.46.0.1", "fd46::1"]),
        "{}",
        t1.result
    );
    assert_eq!(short(&t1, &["A", "test2"]), [v4.as_str()], "{}", w.log(0));
    assert_eq!(short(&t1, &["AAAA", "test2"]), [v6.as_str()]);
    assert_eq!(short(&t1, &["AAAA", "test2.ds.overlay"]), [v6.as_str()]);
    // Over IPv6 to the IPv6 gateway address, UDP and TCP.
    assert_eq!(short(&t1, &["@fd46::1", "AAAA", "test2"]), [v6.as_str()]);
    assert_eq!(short(&t1, &["@fd46::1", "+tcp", "test2"]), [v4.as_str()]);
    // Reverse lookups of both addresses give the qualified name.
    assert_eq!(short(&t1, &["-x", &v4]), ["test2.ds.overlay."]);
    assert_eq!(short(&t1, &["-x", &v6]), ["test2.ds.overlay."]);
    assert_eq!(short(&t2, &["-x", &t1.addr(false)]), ["test1.ds.overlay."]);
    assert!(getent(&t1, "test2").contains(&v6));
    let ping6 = Command::new("ip")
        .args(["netns", "exec", &t1.ns, "ping", "-6", "-c1", "-W1", "test2"])
        .status()
        .unwrap();
    assert!(ping6.success(), "ping -6 test2 failed");
    // Where the network has IPv6 the interface keeps its link-local address (on IPv4-only
    // networks it makes none).
    let link_local = Command::new("ip")
        .args([
            "netns", "exec", &t1.ns, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope",
            "link",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&link_local.stdout).contains("fe80::"));
}

/// The resolv.conf a runtime writes for a container on several networks: the results' `dns`
/// merged in order (podman does so).
fn write_resolv_conf(c: &Container, results: &[&Value]) {
    let (mut servers, mut search) = (Vec::new(), Vec::new());
    for r in results {
        for s in r["dns"]["nameservers"].as_array().unwrap() {
            servers.push(format!("nameserver {}\n", s.as_str().unwrap()));
        }
        for d in r["dns"]["search"].as_array().unwrap() {
            search.push(d.as_str().unwrap().to_string());
        }
    }
    let text = format!("{}search {}\n", servers.concat(), search.join(" "));
    std::fs::write(c.etc.join("resolv.conf"), text).unwrap();
}

/// web on front (node1) and back (node1, eth1); api on front only and db on back only (node2);
/// secret on a third network (node1). web resolves api and db, bare and qualified, by PTR, and
/// pings them across hosts; it sees nothing of the third network; api does not see back's names,
/// db not front's. Once web leaves back (DEL of eth1), it no longer sees db.
#[test]
fn a_container_on_two_networks_resolves_the_names_of_both_and_no_other() {
    let mut w = World::new(2);
    let front = OverlayNet::new("front", 4701, "10.71.0.0/24");
    let back = OverlayNet::new("back", 4702, "10.72.0.0/24");
    let other = OverlayNet::new("other", 4703, "10.73.0.0/24");
    let web = w.add(0, &front, "web");
    let web_back = w.connect(0, &back, &web, "ADD", "eth1");
    write_resolv_conf(&web, &[&web.result, &web_back]);
    let api = w.add(1, &front, "api");
    let db = w.add(1, &back, "db");
    let secret = w.add(0, &other, "secret");
    let (a_api, a_db) = (api.addr(false), db.addr(false));
    let web_on_back = web_back["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();

    // web, asking front's gateway (its first nameserver) from its front address; named explicitly,
    // since dig (like glibc) would try back's gateway after a forwarded name timed out.
    assert!(
        until(&web, &["@10.71.0.1", "db"], SOON, |s, a| s == "NOERROR"
            && *a == [a_db.as_str()])
        .is_some(),
        "web does not resolve db of back:\n{}",
        w.log(0)
    );
    assert_eq!(short(&web, &["@10.71.0.1", "api"]), [a_api.as_str()]);
    assert_eq!(
        short(&web, &["@10.71.0.1", "db.back.overlay"]),
        [a_db.as_str()]
    );
    assert_eq!(
        short(&web, &["@10.71.0.1", "api.front.overlay"]),
        [a_api.as_str()]
    );
    assert_eq!(
        short(&web, &["@10.71.0.1", "+tcp", "DB.Back.overlay"]),
        [a_db.as_str()]
    );
    assert_eq!(
        short(&web, &["@10.71.0.1", "-x", &a_db]),
        ["db.back.overlay."]
    );
    assert_eq!(
        short(&web, &["@10.71.0.1", "-x", &a_api]),
        ["api.front.overlay."]
    );
    // The same from back's gateway, asked from web's back address.
    assert_eq!(short(&web, &["@10.72.0.1", "api"]), [a_api.as_str()]);
    assert_eq!(short(&web, &["@10.72.0.1", "db"]), [a_db.as_str()]);
    // Bare names: the network asked first (web's own name on each network).
    assert_eq!(short(&web, &["@10.72.0.1", "web"]), [web_on_back.as_str()]);
    assert_eq!(short(&web, &["web"]), [web.addr(false).as_str()]);
    assert!(
        ping(&web, "db"),
        "web cannot ping db by name:\n{}",
        w.log(0)
    );
    assert!(ping(&web, "api"), "web cannot ping api by name");
    assert!(ping(&web, "db.back.overlay"));

    // Nothing of a network web is not on.
    assert_eq!(dig(&web, &["secret.other.overlay"]).0, "NXDOMAIN");
    assert!(!short(&web, &["secret"]).contains(&secret.addr(false)));
    assert!(short(&web, &["-x", &secret.addr(false)]).is_empty());
    // A container on one network sees that one only.
    assert_eq!(dig(&api, &["db.back.overlay"]).0, "NXDOMAIN");
    assert!(!short(&api, &["db"]).contains(&a_db));
    assert_eq!(short(&api, &["web"]), [web.addr(false).as_str()]);
    assert_eq!(dig(&db, &["api.front.overlay"]).0, "NXDOMAIN");
    assert_eq!(short(&db, &["web"]), [web_on_back.as_str()]);
    assert_eq!(dig(&secret, &["web.front.overlay"]).0, "NXDOMAIN");

    // web leaves back: its names go from web's view at once.
    w.connect(0, &back, &web, "DEL", "eth1");
    write_resolv_conf(&web, &[&web.result]);
    assert!(
        until(&web, &["@10.71.0.1", "db.back.overlay"], SOON, |s, _| s
            == "NXDOMAIN")
        .is_some(),
        "web still sees back after leaving it:\n{}",
        w.log(0)
    );
    assert!(!short(&web, &["@10.71.0.1", "db"]).contains(&a_db));
    assert_eq!(short(&web, &["@10.71.0.1", "api"]), [a_api.as_str()]);
}

/// Starts dnsmasq (tag `tag`) on the lab's internet address, port `port`, answering from `answers`
/// (`--address=...`) only: with no upstream of its own, it refuses every other name (REFUSED).
/// Waits until it answers.
fn dnsmasq(w: &mut World, tag: &str, port: u16, answers: &[&str]) {
    let internet = w.lab.internet.clone();
    let port = port.to_string();
    let listen = format!("--listen-address={INTERNET_ADDR}");
    let mut args = vec![
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--pid-file=",
        "--user=root",
        "--no-resolv",
        "--no-hosts",
        &listen,
        "--bind-interfaces",
        "--port",
        &port,
    ];
    args.extend_from_slice(answers);
    w.lab.spawn(tag, &internet, "dnsmasq", &args, &[]);
    let host = w.lab.host(0).ns.clone();
    let ready = common::eventually(Duration::from_secs(5), || {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &host, "dig", "+time=1", "+tries=1", "-p", &port,
            ])
            .args([&format!("@{INTERNET_ADDR}"), "dnsmasq.ready.test"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("status: ")
    });
    assert!(
        ready.is_some(),
        "{tag} (dnsmasq) did not start in the lab's internet"
    );
}

/// Makes `addr` (in the internet's 203.0.113.0/24, local there) a resolver that never answers:
/// its DNS queries are counted and dropped by an nft rule in the internet's namespace.
fn silent_resolver(w: &World, addr: &str) {
    let nft = |args: &[&str]| testutils::lab::in_ns(&w.lab.internet, &[&["nft"], args].concat());
    nft(&["add", "table", "inet", "silent"]);
    nft(&[
        "add",
        "chain",
        "inet",
        "silent",
        "input",
        "{ type filter hook input priority 0 ; }",
    ]);
    nft(&[
        "add", "rule", "inet", "silent", "input", "ip", "daddr", addr, "udp", "dport", "53",
        "counter", "drop",
    ]);
}

/// How many queries the silent resolver was sent.
fn silent_queries(w: &World) -> u64 {
    let listing = testutils::lab::in_ns(
        &w.lab.internet,
        &["nft", "-j", "list", "table", "inet", "silent"],
    );
    let listing: Value = serde_json::from_str(&listing).expect("nft -j output");
    listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["rule"]["expr"].as_array())
        .flatten()
        .filter_map(|expr| expr["counter"]["packets"].as_u64())
        .sum()
}

#[test]
fn other_names_are_forwarded_to_the_upstream_resolver() {
    // The first upstream is silent (its queries dropped): asked once, it costs one timeout, then
    // it is tried last, so the next query goes to the other upstream only.
    let silent = "203.0.113.250";
    let mut w = World::with_upstreams(2, &format!("{silent},{INTERNET_ADDR}"));
    silent_resolver(&w, silent);
    dnsmasq(
        &mut w,
        "dnsmasq",
        53,
        &[
            "--address=/example.test/203.0.113.7",
            "--address=/upstreamhost/203.0.113.8",
        ],
    );

    let net = OverlayNet::new("fwd", 4700, "10.47.0.0/24");
    let t1 = w.add(0, &net, "test1");
    let _t2 = w.add(1, &net, "test2");
    // The network's server binds once overlayd has seen the record, milliseconds after ADD: a
    // question sent before that is refused at once, which is not what this test is about.
    assert!(
        until(&t1, &["test2"], SOON, |s, a| s == "NOERROR"
            && !a.is_empty())
        .is_some(),
        "{}",
        w.log(0)
    );
    let first = dig(&t1, &["+time=6", "www.example.test"]);
    assert_eq!(
        first,
        ("NOERROR".to_string(), vec!["203.0.113.7".to_string()]),
        "{}",
        w.log(0)
    );
    let asked = silent_queries(&w);
    assert!(asked >= 1, "the silent upstream is asked first");
    assert_eq!(short(&t1, &["www.example.test"]), ["203.0.113.7"]);
    assert_eq!(
        silent_queries(&w),
        asked,
        "after its timeout the silent upstream is tried last"
    );

    // A bare name that is no container goes upstream too, as with Docker.
    assert_eq!(short(&t1, &["upstreamhost"]), ["203.0.113.8"]);
    assert!(
        ping(&t1, "test2"),
        "names of the network still answered locally"
    );
    // Over TCP from the container; overlayd asks upstream over UDP.
    assert_eq!(short(&t1, &["+tcp", "example.test"]), ["203.0.113.7"]);
    // glibc through the search list: example.test has a dot, so it is tried as is first.
    assert!(getent(&t1, "example.test").contains("203.0.113.7"));

    // No upstream left: SERVFAIL once both were tried (the other's port unreachable at once, the
    // silent one's timeout), within dig's one try.
    w.lab.kill("dnsmasq");
    let before = silent_queries(&w);
    let (status, _) = dig(&t1, &["+time=6", "www.example.test"]);
    assert_eq!(status, "SERVFAIL");
    assert!(
        silent_queries(&w) > before,
        "the silent upstream was tried before giving up"
    );
}

#[test]
fn an_upstream_that_refuses_is_passed_over() {
    // The first upstream answers at once, but REFUSED (a resolver that does not serve overlayd's
    // host, or one with no upstream of its own left, as SERVFAIL would be): the next one is asked,
    // every time, as glibc does. Only when all refuse or fail does the client get that answer.
    let upstreams = format!("{INTERNET_ADDR}:5300,{INTERNET_ADDR}");
    let mut w = World::with_upstreams(1, &upstreams);
    dnsmasq(
        &mut w,
        "refusing",
        5300,
        &["--address=/other.test/203.0.113.9"],
    );
    dnsmasq(
        &mut w,
        "dnsmasq",
        53,
        &["--address=/example.test/203.0.113.7"],
    );
    let net = OverlayNet::new("refused", 4750, "10.47.50.0/24");
    let t1 = w.add(0, &net, "test1");
    for i in 0..10 {
        let name = format!("h{i}.example.test");
        assert_eq!(
            dig(&t1, &[&name]),
            ("NOERROR".to_string(), vec!["203.0.113.7".to_string()]),
            "question {i}\n{}",
            w.log(0)
        );
    }
    // The first one answers what it knows.
    assert_eq!(short(&t1, &["www.other.test"]), ["203.0.113.9"]);
    // A name both refuse: the client is told so.
    let (status, _) = dig(&t1, &["www.nowhere.test"]);
    assert_eq!(status, "REFUSED");
}

#[test]
fn a_restarted_overlayd_answers_again() {
    let mut w = World::new(2);
    let net = OverlayNet::new("again", 4800, "10.48.0.0/24");
    let t1 = w.add(0, &net, "test1");
    let t2 = w.add(1, &net, "test2");
    let a2 = t2.addr(false);
    assert_eq!(short(&t1, &["test2"]), [a2.as_str()], "{}", w.log(0));

    w.kill_overlayd(0);
    // Meanwhile a container appears on the other host.
    let t3 = w.add(1, &net, "test3");
    let restarted = Instant::now();
    w.start_overlayd(0);
    let took = until(&t1, &["test3"], SOON, |_, a| *a == [t3.addr(false)])
        .unwrap_or_else(|| panic!("no answer after restart:\n{}", w.log(0)));
    println!(
        "answering {took:?} after overlayd registered again ({:?} after it was started)",
        restarted.elapsed()
    );
    assert_eq!(short(&t1, &["test2"]), [a2]);
    assert!(ping(&t1, "test3"));
}

#[test]
fn host_access_networks_serve_on_the_bridge() {
    let mut w = World::new(2);
    let mut net = OverlayNet::new("open", 4900, "10.49.0.0/24");
    net.extra = json!({"hostAccess": true});
    let t1 = w.add(0, &net, "test1");
    let t2 = w.add(1, &net, "test2");
    assert_eq!(short(&t1, &["test2"]), [t2.addr(false)], "{}", w.log(0));
    assert_eq!(
        short(&t2, &["test1.open.overlay"]),
        [t1.addr(false)],
        "{}",
        w.log(1)
    );
    assert!(w.log(0).contains("on its bridge"), "{}", w.log(0));
    assert!(ping(&t1, "test2"));
}

/// Queries in flight while records come and go are all answered: updates swap the zone, the
/// sockets stay (one bind per network, whatever the churn).
#[test]
fn no_query_is_dropped_while_records_change() {
    let mut w = World::new(2);
    let net = OverlayNet::new("churn", 5000, "10.50.0.0/22");
    let t1 = w.add(0, &net, "test1");
    let t2 = w.add(1, &net, "test2");
    let a2 = t2.addr(false);
    let probe = Probe::new(&t1, "10.50.0.1");
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let asker = std::thread::spawn(move || {
        let (mut total, mut failed, mut latencies) = (0u32, Vec::new(), Vec::new());
        while stop_rx.try_recv().is_err() {
            for name in ["test2.", "test2.churn.overlay."] {
                let t = Instant::now();
                let answer = probe.ask(name, RecordType::A);
                latencies.push(t.elapsed());
                total += 1;
                if answer != Some((ResponseCode::NoError, vec![a2.clone()])) {
                    failed.push(format!("{name}: {answer:?}"));
                }
            }
        }
        (total, failed, latencies)
    });
    // Containers added and deleted on both hosts meanwhile: every change rebuilds the zone.
    let mut churn = Vec::new();
    for i in 0..6 {
        let name = format!("churn{i}");
        churn.push((i % 2, w.add(i % 2, &net, &name)));
    }
    for (host, c) in &churn {
        w.del(*host, &net, &c.name);
    }
    stop_tx.send(()).unwrap();
    let (total, failed, mut latencies) = asker.join().unwrap();
    latencies.sort();
    println!(
        "{total} queries during 12 record changes: {} unanswered or wrong, p50 {:?}, p99 {:?}, max {:?}",
        failed.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        latencies[latencies.len() - 1]
    );
    assert!(total > 100, "too few queries to mean anything: {total}");
    assert!(failed.is_empty(), "{failed:?}\n{}", w.log(0));
    // One bind on node1 for the whole run.
    let binds = w.log(0).matches("DNS of network churn (").count();
    assert_eq!(binds, 1, "{}", w.log(0));
}

fn sandbox_inode(node: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/run/netns/ovl-5100-{node}"))
        .expect("the sandbox exists")
        .ino()
}

/// The sandbox can be made anew while overlayd still counts a local endpoint (the last
/// container's DEL and the next ADD racing, their records arriving in the other order): the
/// next local ADD moves the server into the new sandbox at once.
#[test]
fn a_sandbox_made_anew_under_a_running_server_is_followed() {
    let mut w = World::new(1);
    let net = OverlayNet::new("anew", 5100, "10.51.0.0/24");
    // A record of this node with no container behind it keeps the count above zero.
    let node = w.lab.host(0).name.clone();
    let ghost = common::endpoint(
        "anew",
        5100,
        "ghost",
        &node,
        &w.lab.host(0).addr,
        "02:00:00:00:51:01",
        &["10.51.0.200/24"],
    );
    w.etcd
        .put_endpoint(&common::endpoint_key("anew", "ghost"), &ghost);
    let t1 = w.add(0, &net, "test1");
    assert_eq!(short(&t1, &["ghost"]), ["10.51.0.200"], "{}", w.log(0));
    let before = sandbox_inode(&node);
    // The last container goes: vxlan-overlay removes the sandbox; the ghost keeps DNS up.
    w.del(0, &net, "test1");
    let t2 = w.add(0, &net, "test2");
    let after = sandbox_inode(&node);
    assert_ne!(before, after, "the sandbox should be a new one");
    let took = until(&t2, &["ghost"], SOON, |s, a| {
        s == "NOERROR" && *a == ["10.51.0.200"]
    })
    .unwrap_or_else(|| panic!("no DNS in the new sandbox:\n{}", w.log(0)));
    println!("answering in the new sandbox {took:?} after the ADD returned");
    // The local ADD's record moves the server (the periodic check, every 2 s, is the backstop).
    assert!(
        took < Duration::from_millis(1500),
        "only the periodic check noticed the new sandbox:\n{}",
        w.log(0)
    );
    w.etcd.delete(&common::endpoint_key("anew", "ghost"));
}
