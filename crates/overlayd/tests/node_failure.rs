//! When a host dies (issue #13), on a lab of three hosts with one etcd: containers are added on h2
//! with the real plugins, as containerd's CRI names them (`<pod>.<namespace>`), then h2's
//! overlayd is SIGKILLed (its lease expires; its plugins are not called again until the end).
//!
//! * `overlayctl node rm h2` is refused while the lease lives and releases everything after; the
//!   name and the address are taken by a new container on h1 at once; a second run releases
//!   nothing. h2 brought back (its overlayd restarted) takes its stale containers off the overlay
//!   (no ping to or from them; the new owner unaffected, also from h2 itself); CHECK of them fails
//!   with 107; the runtime's DEL of them succeeds and leaves the new owner's keys as they were.
//! * Automatic reclaim with a short `--reclaim-after`: nothing changes within the grace period
//!   (the name answers in DNS, the container answers pings), then everything is released with no
//!   command, and the name and address are free for h1.
//! * A reclaimer killed in the middle of a long release (thousands of allocations, one per
//!   transaction) is replaced by another overlayd, which finishes the work.
//! * Names Kubernetes accepts but DNS cannot carry get addresses and are reserved, not served.
//!
//! The figures (lease expiry to reclaim, kill to takeover) are printed: `--nocapture` shows them.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{args, eventually, wait_registered, Daemon, EtcdIn, Tables, PREFIX};
use model::names;
use model::records::{self, AllocatedIp, Allocation, Holder, Reclaimer};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use store::etcd_client::{GetOptions, Txn, TxnOp};
use testutils::lab::{bin_dir, cni_path, in_ns, try_in_ns, Lab, OverlayNet, INTERNET_ADDR};
use testutils::{Invocation, Output};

const NET: &str = "podnet";
const VNI: u32 = 4313;
const SUBNET: &str = "10.43.0.0/24";

/// A container added through the plugins.
struct Container {
    id: String,
    ns: String,
    path: String,
    host: usize,
    result: Value,
}

impl Container {
    fn addr(&self) -> String {
        let a = self.result["ips"][0]["address"].as_str().unwrap();
        a.split('/').next().unwrap().to_string()
    }

    fn mac(&self) -> String {
        self.result["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["sandbox"].is_string())
            .unwrap()["mac"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn host_veth(&self) -> String {
        names::host_veth(&self.id, "eth0")
    }
}

struct World {
    // Dropped in this order: overlayds, then the etcd client, then the lab.
    daemons: Vec<Option<Daemon>>,
    etcd: EtcdIn,
    lab: Lab,
    net: OverlayNet,
}

impl World {
    fn new() -> World {
        bin_dir();
        let lab = Lab::new(3);
        let etcd = EtcdIn::new(&lab.host(0).ns, &lab.etcd_endpoint);
        World {
            daemons: (0..3).map(|_| None).collect(),
            etcd,
            net: OverlayNet::new(NET, VNI, SUBNET),
            lab,
        }
    }

    fn node(&self, h: usize) -> String {
        self.lab.host(h).name.clone()
    }

    fn start_overlayd(&mut self, h: usize, extra: &[&str]) {
        let host = self.lab.host(h).clone();
        let mut all = vec!["--dns-upstream", INTERNET_ADDR];
        all.extend_from_slice(extra);
        let mut daemon = Daemon::start(
            &host.name,
            &host.ns,
            &host.dir,
            &args(&self.lab.etcd_endpoint, &host.name, &all),
        );
        wait_registered(&self.etcd, &mut daemon, &host.name, Duration::from_secs(10));
        self.daemons[h] = Some(daemon);
    }

    fn kill_overlayd(&mut self, h: usize) -> Instant {
        let mut daemon = self.daemons[h].take().expect("overlayd running");
        daemon.signal(Signal::SIGKILL);
        let killed = Instant::now();
        daemon.wait(Duration::from_secs(5)).expect("overlayd dies");
        // Its log stays readable in the lab's directory.
        killed
    }

    fn log(&self, h: usize) -> String {
        let path = self.lab.host(h).dir.join(format!("{}.log", self.node(h)));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn invocation(&self, command: &str, id: &str, path: &str, cni_args: &str) -> Invocation {
        Invocation::new(bin_dir().join("vxlan-overlay"), command)
            .attachment(id, path, "eth0")
            .env("CNI_PATH", &cni_path())
            .env("CNI_ARGS", &format!("IgnoreUnknown=1;{cni_args}"))
    }

    /// ADD of a new container on `host`: `pod` in Kubernetes namespace `namespace` (none:
    /// podman's form), with `ip` requested.
    fn try_add(
        &mut self,
        host: usize,
        id: &str,
        pod: &str,
        namespace: Option<&str>,
        ip: Option<&str>,
    ) -> (Output, Container) {
        let (ns, path) = self.lab.container(id);
        let mut cni_args = format!("K8S_POD_NAME={pod}");
        if let Some(namespace) = namespace {
            cni_args += &format!(";K8S_POD_NAMESPACE={namespace}");
        }
        if let Some(ip) = ip {
            cni_args += &format!(";IP={ip}");
        }
        let conf = self.net.config(&self.lab, host);
        let out = self.lab.run_on(
            host,
            &self.invocation("ADD", id, &path, &cni_args).stdin(&conf),
        );
        let result = if out.code == 0 {
            out.json()
        } else {
            Value::Null
        };
        let c = Container {
            id: id.into(),
            ns,
            path,
            host,
            result,
        };
        (out, c)
    }

    fn add(&mut self, host: usize, id: &str, pod: &str, namespace: Option<&str>) -> Container {
        let (out, c) = self.try_add(host, id, pod, namespace, None);
        out.ok();
        c
    }

    fn check(&self, c: &Container) -> Output {
        let mut conf = self.net.config(&self.lab, c.host);
        conf["prevResult"] = c.result.clone();
        let inv = self.invocation("CHECK", &c.id, &c.path, "").stdin(&conf);
        self.lab.run_on(c.host, &inv)
    }

    fn del(&self, c: &Container) -> Output {
        let conf = self.net.config(&self.lab, c.host);
        let inv = self.invocation("DEL", &c.id, &c.path, "").stdin(&conf);
        self.lab.run_on(c.host, &inv)
    }

    /// overlayctl on host 1: (exit status, stdout, stderr).
    fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let ctl = bin_dir().join("overlayctl");
        assert!(
            ctl.exists(),
            "overlayctl is not built in {} (cargo test --workspace builds it)",
            bin_dir().display()
        );
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.lab.host(0).ns))
            .arg("--")
            .arg(ctl)
            .args(["--etcd", &self.lab.etcd_endpoint])
            .args(args)
            .output()
            .expect("run overlayctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn node_ls(&self) -> Value {
        let (code, out, err) = self.ctl(&["node", "ls", "-o", "json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    }

    fn node_row(&self, node: &str) -> Option<Value> {
        self.node_ls()
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node)
            .cloned()
    }

    /// Keys under `prefix` with their values and mod revisions.
    fn dump(&self, prefix: &str) -> BTreeMap<String, (Vec<u8>, i64)> {
        let prefix = prefix.to_string();
        self.etcd.run(move |rt, store| {
            let (kvs, _) = rt.block_on(store.get_prefix(&prefix)).expect("etcd");
            kvs.iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        (kv.value().to_vec(), kv.mod_revision()),
                    )
                })
                .collect()
        })
    }

    fn count(&self, prefix: &str) -> i64 {
        let prefix = prefix.to_string();
        self.etcd.run(move |rt, store| {
            let end = store::client::prefix_end(prefix.as_bytes());
            let options = GetOptions::new().with_range(end).with_count_only();
            rt.block_on(store.get(prefix.clone(), Some(options)))
                .expect("etcd")
                .count()
        })
    }

    /// The node holding the reclaimer's seat.
    fn reclaimer(&self) -> Option<String> {
        let key = format!("{PREFIX}/reclaimer");
        let (value, _) = self.etcd.get(&key)?;
        Some(
            records::decode::<Reclaimer>(key.as_bytes(), &value)
                .unwrap()
                .node,
        )
    }

    /// Every key of an attachment: owner, addresses, name, endpoint record.
    fn keys_of(&self, c: &Container, name: &str) -> BTreeMap<String, (Vec<u8>, i64)> {
        let k = store::Keys::new(PREFIX);
        let all = self.dump(&format!("{PREFIX}/"));
        let wanted = [
            k.owner(NET, &c.id, "eth0"),
            k.ip(NET, c.addr().parse().unwrap()),
            k.name(NET, name),
            k.endpoint(NET, &c.id, "eth0"),
        ];
        all.into_iter()
            .filter(|(key, _)| wanted.contains(key))
            .collect()
    }
}

/// One ping: for "no reply" (a reply would come within its second).
fn ping(from: &Container, to: &str) -> bool {
    try_in_ns(&from.ns, &["ping", "-c", "1", "-W", "1", to])
}

/// Pings until a reply, for up to 5 s: for "replies" (the peers' entries follow the etcd watch,
/// a few milliseconds after the record).
fn reaches(from: &Container, to: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if ping(from, to) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
    }
}

/// `dig` until it answers `want`, for up to 5 s (a DNS server starts with its network's first
/// container on the host); the last answer.
fn dig_until(c: &Container, name: &str, want: &str) -> Option<String> {
    let mut last = None;
    eventually(Duration::from_secs(5), || {
        last = dig(c, name);
        last.as_deref() == Some(want)
    });
    last
}

/// The link's administrative state in host `ns`: its flags include UP.
fn is_up(ns: &str, link: &str) -> bool {
    let line = in_ns(ns, &["ip", "-o", "link", "show", "dev", link]);
    let flags = line
        .split('<')
        .nth(1)
        .and_then(|s| s.split('>').next())
        .unwrap_or("");
    flags.split(',').any(|f| f == "UP")
}

/// The first A record of `name` as the network's DNS on the container's host answers it.
fn dig(c: &Container, name: &str) -> Option<String> {
    let gateway = c.result["dns"]["nameservers"][0]
        .as_str()
        .unwrap()
        .to_string();
    let out = Command::new("ip")
        .args([
            "netns", "exec", &c.ns, "dig", "+short", "+time=1", "+tries=1",
        ])
        .arg(format!("@{gateway}"))
        .arg(name)
        .output()
        .expect("run dig (bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_string)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
}

#[test]
fn node_rm_frees_a_dead_hosts_share_and_its_return_serves_nothing_twice() {
    let mut w = World::new();
    let (h2, h3) = (w.node(1), w.node(2));
    w.start_overlayd(0, &["--reclaim-after", "0"]);
    w.start_overlayd(1, &["--reclaim-after", "0", "--lease-ttl", "2"]);
    w.start_overlayd(2, &["--reclaim-after", "0"]);
    let b0 = w.add(1, "stale-b0", "b-0", Some("prod"));
    let web = w.add(1, "stale-web", "web", None);
    let c3 = w.add(2, "c3", "c3", None);
    assert!(reaches(&c3, &b0.addr()), "b-0 reachable before h2 dies");

    w.kill_overlayd(1);
    // The lease lives a moment longer: refused, nothing written.
    let before = w.dump(&format!("{PREFIX}/"));
    let (code, _, err) = w.ctl(&["node", "rm", &h2]);
    assert_eq!(code, 1, "node rm of a node with a live lease: {err}");
    assert!(err.contains(&format!("node {h2} is alive")), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(w.dump(&format!("{PREFIX}/")), before);
    // The name is held: a StatefulSet's pod moved to h1 cannot start (yet).
    let (refused, _) = w.try_add(0, "new-b0-early", "b-0", Some("prod"), None);
    let e = refused.err(100);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("b-0.prod already exists in network podnet"),
        "{e}"
    );

    eventually(Duration::from_secs(6), || w.etcd.node(&h2).is_none()).expect("h2's lease expires");
    let row = w.node_row(&h2).expect("h2 is listed");
    assert_eq!(row["alive"], false, "{row}");
    // No reclaimer runs here, so nobody marked it: since when is unknown.
    assert_eq!(row["deadSince"], Value::Null, "{row}");
    assert_eq!(
        (&row["allocations"], &row["names"], &row["endpoints"]),
        (&json!(2), &json!(2), &json!(2)),
        "{row}"
    );
    let (_, table, _) = w.ctl(&["node", "ls"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&h2) && l.contains(" no ") && l.contains("unknown")),
        "{table}"
    );

    let (code, out, err) = w.ctl(&["node", "rm", &h2]);
    assert_eq!(code, 0, "node rm after the lease expired: {err}");
    assert!(
        out.contains(&format!(
            "released from node {h2}: 2 allocations (2 names), 2 endpoint records"
        )),
        "{out}"
    );
    assert!(
        out.contains("b-0.prod") && out.contains(&b0.addr()),
        "{out}"
    );
    // At once: the name and the address are the new pod's.
    let (out_new, new_b0) = w.try_add(0, "new-b0", "b-0", Some("prod"), Some(&b0.addr()));
    out_new.ok();
    assert_eq!(new_b0.addr(), b0.addr());
    let (code, out, _) = w.ctl(&["node", "rm", &h2]);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            format!("node {h2} holds nothing: nothing released\n").as_str()
        )
    );
    assert!(
        w.node_row(&h2).is_none(),
        "h2 holds nothing and has no lease: gone from the list"
    );
    assert!(reaches(&c3, &new_b0.addr()), "the new owner answers on h3");
    // The address keeps its MAC (derived from it): caches that knew b-0 are right for the new pod.
    assert_eq!(new_b0.mac(), b0.mac());
    let (h1_vtep, h2_vtep) = (w.lab.host(0).addr.clone(), w.lab.host(1).addr.clone());
    let tables = Tables::new(&w.lab.host(2).ns);
    let entries = tables.of(&common::vx(VNI));
    assert!(
        entries.has_neigh(&new_b0.addr(), &new_b0.mac())
            && entries.has_fdb(&new_b0.mac(), &h1_vtep),
        "{entries:?}"
    );
    // Nothing points at h2 any more.
    assert!(
        !entries
            .fdb
            .iter()
            .any(|(_, dst)| dst.to_string() == h2_vtep)
            && !entries.has_ip(&web.addr()),
        "{entries:?}"
    );
    let new_keys = w.keys_of(&new_b0, "b-0.prod");
    assert_eq!(new_keys.len(), 4, "{:?}", new_keys.keys());

    // h2 comes back: its stale containers come off the overlay, and are logged.
    w.start_overlayd(1, &["--reclaim-after", "0", "--lease-ttl", "2"]);
    let h2_ns = w.lab.host(1).ns.clone();
    eventually(Duration::from_secs(5), || {
        !is_up(&h2_ns, &b0.host_veth()) && !is_up(&h2_ns, &web.host_veth())
    })
    .unwrap_or_else(|| panic!("stale veths still up:\n{}", w.log(1)));
    let log = w.log(1);
    for c in [&b0, &web] {
        assert!(
            log.contains(&format!("took {} (attachment {}/eth0", c.host_veth(), c.id)),
            "{log}"
        );
    }
    assert!(!ping(&b0, &c3.addr()), "a stale container reaches nobody");
    assert!(!ping(&c3, &web.addr()), "nobody reaches a stale container");
    assert!(reaches(&c3, &new_b0.addr()), "the new owner is unaffected");
    // Nobody's tables point at the stale ones.
    for h in [0, 2] {
        let entries = Tables::new(&w.lab.host(h).ns).of(&common::vx(VNI));
        assert!(
            !entries
                .fdb
                .iter()
                .any(|(_, dst)| dst.to_string() == h2_vtep)
                && !entries.has_ip(&web.addr()),
            "{entries:?}"
        );
    }
    // On h2 itself, the address is the new owner's (on h1), not the stale local container's.
    let late = w.add(1, "late", "late", None);
    assert!(reaches(&late, &new_b0.addr()));
    let entries = Tables::new(&h2_ns).of(&common::vx(VNI));
    assert!(entries.has_fdb(&new_b0.mac(), &h1_vtep), "{entries:?}");

    // CHECK fails; the runtime's DEL succeeds and frees nothing of the new owner's.
    for c in [&b0, &web] {
        let e = w.check(c).err(107);
        assert!(
            e["msg"].as_str().unwrap().contains("no endpoint record"),
            "{e}"
        );
    }
    for c in [&b0, &web] {
        w.del(c).ok();
    }
    assert_eq!(w.keys_of(&new_b0, "b-0.prod"), new_keys);
    assert!(reaches(&c3, &new_b0.addr()));
    assert!(w.etcd.node(&h3).is_some());
    w.del(&late).ok();
    w.del(&new_b0).ok();
    w.del(&c3).ok();
}

#[test]
fn automatic_reclaim_after_the_grace_period() {
    let mut w = World::new();
    let (h1, h2) = (w.node(0), w.node(1));
    let grace = Duration::from_secs(4);
    // h1 first, so that it is the reclaimer.
    w.start_overlayd(0, &["--reclaim-after", "4s"]);
    eventually(Duration::from_secs(5), || {
        w.reclaimer().as_deref() == Some(h1.as_str())
    })
    .expect("h1 is elected");
    w.start_overlayd(1, &["--reclaim-after", "4s", "--lease-ttl", "2"]);
    w.start_overlayd(2, &["--reclaim-after", "4s"]);
    let b0 = w.add(1, "b0", "b-0", Some("prod"));
    let other = w.add(1, "other", "other", None);
    let c3 = w.add(2, "c3", "c3", None);
    assert_eq!(
        dig_until(&c3, "b-0.prod.podnet.overlay", &b0.addr()),
        Some(b0.addr())
    );

    let killed = w.kill_overlayd(1);
    let expired = eventually(Duration::from_secs(6), || w.etcd.node(&h2).is_none())
        .expect("h2's lease expires");
    // Within the grace period nothing changes: the name answers, the container is reachable.
    assert_eq!(
        dig_until(&c3, "b-0.prod.podnet.overlay", &b0.addr()),
        Some(b0.addr())
    );
    assert!(reaches(&c3, &b0.addr()));
    assert!(reaches(&c3, &other.addr()));
    let row = eventually(Duration::from_secs(2), || {
        w.node_row(&h2).is_some_and(|r| r["deadSince"].is_u64())
    })
    .map(|_| w.node_row(&h2).unwrap())
    .expect("the reclaimer marks h2");
    assert_eq!(
        (&row["alive"], &row["allocations"]),
        (&json!(false), &json!(2)),
        "{row}"
    );
    let (_, table, _) = w.ctl(&["node", "ls"]);
    assert!(table.contains(" ago)"), "{table}");

    let owners = format!("{PREFIX}/ipam/{NET}/owners/");
    let reclaimed = eventually(grace + Duration::from_secs(5), || {
        w.count(&owners) == 1 // c3's alone
    })
    .unwrap_or_else(|| panic!("not reclaimed:\n{}", w.log(0)));
    let after_expiry = reclaimed - expired;
    eprintln!(
        "figures: kill -> lease gone {:.2} s (TTL 2 s); lease gone -> reclaimed {:.2} s \
         (--reclaim-after 4s)",
        (expired - killed).as_secs_f64(),
        after_expiry.as_secs_f64()
    );
    assert!(
        after_expiry >= grace - Duration::from_millis(1500),
        "reclaimed within the grace period: {after_expiry:?}"
    );
    assert!(w.count(&format!("{PREFIX}/endpoints/{NET}/")) == 1);
    assert!(
        w.etcd.get(&format!("{PREFIX}/gone/{h2}")).is_none(),
        "the mark goes with it"
    );
    let log = w.log(0);
    assert!(log.contains(&format!("reclaimed from node {h2}: allocation and endpoint record of network {NET} (b0/eth0, name b-0.prod")), "{log}");
    assert!(
        log.contains(&format!(
            "node {h2} reclaimed: released 2 allocations (2 names), 2 endpoint records"
        )),
        "{log}"
    );
    // Counted: 2 allocations of 3 keys each (owner, address, name), 2 endpoint records.
    let (_, metrics) = common::http_get(&w.lab.host(0).ns, "/metrics");
    assert_eq!(
        common::sample(&metrics, "overlayd_reclaims_total{outcome=\"done\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        common::sample(&metrics, "overlayd_reclaimed_keys_total"),
        Some(8.0),
        "{metrics}"
    );
    // The pod moved to h1 starts, with the same address if it asks for it.
    let (out, new_b0) = w.try_add(0, "new-b0", "b-0", Some("prod"), Some(&b0.addr()));
    out.ok();
    assert_eq!(new_b0.addr(), b0.addr());
    assert_eq!(
        dig_until(&c3, "b-0.prod.podnet.overlay", &new_b0.addr()),
        Some(new_b0.addr())
    );
    assert!(w.node_row(&h2).is_none());
    w.del(&new_b0).ok();
    w.del(&c3).ok();
}

/// `count` allocations of `node` in network `net` (10.64.0.0/16), laid out as etcd-ipam writes
/// them: owner and address key in one transaction, so that they share a create revision.
fn fill(w: &World, net: &'static str, node: &str, count: u32) {
    let node = node.to_string();
    w.etcd.run(move |rt, store| {
        let keys = store.keys().clone();
        let base = u32::from(std::net::Ipv4Addr::new(10, 64, 0, 1));
        for chunk in (0..count).collect::<Vec<_>>().chunks(40) {
            let mut ops = Vec::new();
            for &i in chunk {
                let ip = std::net::Ipv4Addr::from(base + i);
                let cid = format!("fill-{i}");
                let holder = Holder {
                    container_id: cid.clone(),
                    ifname: "eth0".into(),
                    node: node.clone(),
                };
                let allocation = Allocation {
                    container_id: cid.clone(),
                    ifname: "eth0".into(),
                    node: node.clone(),
                    name: Some(cid.clone()),
                    ips: vec![AllocatedIp {
                        address: ipnetwork::IpNetwork::new(ip.into(), 16).unwrap(),
                        gateway: None,
                    }],
                };
                ops.push(TxnOp::put(
                    keys.ip(net, ip.into()),
                    records::encode(&holder),
                    None,
                ));
                ops.push(TxnOp::put(
                    keys.name(net, &cid),
                    records::encode(&holder),
                    None,
                ));
                ops.push(TxnOp::put(
                    keys.owner(net, &cid, "eth0"),
                    records::encode(&allocation),
                    None,
                ));
            }
            rt.block_on(store.txn(Txn::new().and_then(ops)))
                .expect("fill");
        }
    });
}

#[test]
fn a_reclaimer_killed_midway_is_replaced_and_the_work_completes() {
    const N: u32 = 2000;
    let mut w = World::new();
    let (h1, h2, h3) = (w.node(0), w.node(1), w.node(2));
    // h2's share: thousands of allocations, and no lease (its overlayd died before any
    // reclaimer ran: the one elected marks it).
    fill(&w, "fill", &h2, N);
    let owners = format!("{PREFIX}/ipam/fill/owners/");
    assert_eq!(w.count(&owners), i64::from(N));
    // One attachment per transaction, so that the release takes long enough to kill it.
    let flags = ["--reclaim-after", "2s", "--reclaim-batch", "1"];
    w.start_overlayd(0, &flags);
    eventually(Duration::from_secs(5), || {
        w.reclaimer().as_deref() == Some(h1.as_str())
    })
    .expect("h1 is elected");
    w.start_overlayd(2, &flags);
    assert_eq!(
        w.reclaimer().as_deref(),
        Some(h1.as_str()),
        "the seat stays taken"
    );

    // The first keys go: kill the reclaimer in the middle.
    eventually(Duration::from_secs(10), || w.count(&owners) < i64::from(N))
        .unwrap_or_else(|| panic!("the release did not start:\n{}", w.log(0)));
    let killed = w.kill_overlayd(0);
    let left_at_kill = w.count(&owners);
    assert!(
        left_at_kill > i64::from(N) / 4,
        "killed too late to be in the middle: {left_at_kill} left"
    );
    let taken = eventually(Duration::from_secs(10), || {
        w.reclaimer().as_deref() == Some(h3.as_str())
    })
    .unwrap_or_else(|| panic!("nobody took over:\n{}", w.log(2)));
    let done = eventually(Duration::from_secs(120), || w.count(&owners) == 0)
        .unwrap_or_else(|| panic!("{} left:\n{}", w.count(&owners), w.log(2)));
    eprintln!(
        "figures: kill -> takeover {:.2} s (seat TTL 3 s); {left_at_kill} of {N} left at the \
         kill, released by the new reclaimer in {:.2} s",
        (taken - killed).as_secs_f64(),
        (done - taken).as_secs_f64()
    );
    assert!(taken - killed <= Duration::from_secs(5));
    assert_eq!(w.count(&format!("{PREFIX}/ipam/fill/ips/")), 0);
    assert_eq!(w.count(&format!("{PREFIX}/ipam/fill/names/")), 0);
    eventually(Duration::from_secs(5), || {
        w.etcd.get(&format!("{PREFIX}/gone/{h2}")).is_none()
    })
    .expect("the mark goes when the release is complete");
    let log = w.log(2);
    assert!(log.contains("elected reclaimer"), "{log}");
    assert!(
        log.contains(&format!(
            "reclaimed from node {h2}: allocation of network fill"
        )),
        "{log}"
    );
}

#[test]
fn names_the_runtime_accepts_get_addresses_and_dns_serves_only_what_it_can_carry() {
    let mut w = World::new();
    w.start_overlayd(0, &["--reclaim-after", "0"]);
    // `network inspect` shows networks made with overlayctl.
    let (code, _, err) = w.ctl(&[
        "network",
        "create",
        NET,
        "--subnet",
        SUBNET,
        "--vni",
        &VNI.to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    let long = "y".repeat(250);
    let hundred = "x".repeat(100);
    let a = w.add(0, "long250", &long, Some("prod"));
    let b = w.add(0, "long100", &hundred, None);
    let short = w.add(0, "short", "short", Some("prod"));
    assert_ne!(a.addr(), b.addr());
    // Reserved all the same: the same names are refused to others.
    let (again, _) = w.try_add(0, "long100-again", &hundred, None, None);
    again.err(100);
    let (again, _) = w.try_add(0, "long250-again", &long, Some("prod"), None);
    again.err(100);
    // Reachable by address; DNS serves the names it can carry, and only those.
    assert!(reaches(&short, &a.addr()) && reaches(&short, &b.addr()));
    assert_eq!(
        dig_until(&short, "short.prod", &short.addr()),
        Some(short.addr())
    );
    assert_eq!(
        dig_until(&b, "short.prod.podnet.overlay", &short.addr()),
        Some(short.addr())
    );
    // `network inspect` shows every name, saying which are not in DNS.
    let (_, inspect, _) = w.ctl(&["network", "inspect", NET, "-o", "json"]);
    let inspect: Value = serde_json::from_str(&inspect).unwrap();
    let by_name = |n: &str| {
        inspect["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} not in {inspect}"))
    };
    assert_eq!(by_name(&format!("{long}.prod"))["inDns"], false);
    assert_eq!(by_name(&hundred)["inDns"], false);
    assert_eq!(by_name("short.prod")["inDns"], true);
    // Nothing about them is logged as a problem.
    let log = w.log(0);
    assert!(
        !log.lines()
            .any(|l| l.contains("WARN") && (l.contains(&hundred) || l.contains(&long))),
        "{log}"
    );
    for c in [&a, &b, &short] {
        w.del(c).ok();
    }
}

/// A record of a live node deleted behind its back (what `node rm --force` does) takes that
/// attachment off the overlay at once, not at the next periodic check; its neighbour on the same
/// host stays on. overlayd looks only at the attachment of the deleted record (looking at every
/// attachment of the host read two keys each from etcd on every DEL: scripts/bench.sh fleet).
#[test]
fn a_deleted_record_of_a_live_node_takes_only_its_attachment_off_at_once() {
    let mut w = World::new();
    w.start_overlayd(1, &[]);
    let gone = w.add(1, "forced-a", "forced-a", None);
    let kept = w.add(1, "forced-b", "forced-b", None);
    let h2_ns = w.lab.host(1).ns.clone();
    assert!(is_up(&h2_ns, &gone.host_veth()) && is_up(&h2_ns, &kept.host_veth()));
    w.etcd.delete(&common::endpoint_key(NET, &gone.id));
    eventually(Duration::from_secs(10), || {
        !is_up(&h2_ns, &gone.host_veth())
    })
    .unwrap_or_else(|| {
        panic!(
            "the attachment of the deleted record is still up:\n{}",
            w.log(1)
        )
    });
    assert!(
        is_up(&h2_ns, &kept.host_veth()),
        "the other attachment went down too"
    );
    // The runtime's DEL of both still succeeds.
    w.del(&gone).ok();
    w.del(&kept).ok();
}
