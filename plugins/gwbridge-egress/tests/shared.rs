//! One gateway interface per container, shared by its networks: a container on `front`
//! (CNI_IFNAME eth0) and `back` (eth1), both chaining gwbridge-egress, has one `gwb0`, one
//! allocation, one default route and an attachment record per network; each network's published
//! ports reach it; DEL of either network first leaves the interface to the other, the last DEL
//! removes it; concurrent ADDs of the two networks make one interface; GC of one network keeps
//! what the other still uses. On simulated hosts (`Lab`), as root; never skipped.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::{json, Value};
use testutils::lab::{in_ns, try_in_ns, Lab, INTERNET_ADDR, UNDERLAY};
use testutils::{Invocation, Output, TempDir};

const OURS: &str = "gwb0";
const GATEWAY: &str = "172.18.0.1";

/// `front` (main network 0) and `back` (main network 1) on host 0, each chaining gwbridge-egress
/// with its defaults (one bridge, one host-local pool).
fn chains(lab: &Lab, main: &MainPlugin) -> (Chain, Chain) {
    let chain = |name: &str, net: usize| {
        Chain::new(
            name,
            vec![(main.config)(lab, 0, net), gwbridge(lab, 0, json!({}))],
        )
    };
    (chain("front", 0), chain("back", 1))
}

fn added(chain: &Chain, lab: &Lab, att: &Attachment) -> Value {
    chain
        .add(lab, 0, att)
        .unwrap_or_else(|(i, out)| panic!("ADD of {} plugin {i}: {out:?}", chain.name))
}

/// The container's interfaces, sorted.
fn container_links(ns: &str) -> Vec<String> {
    let mut links: Vec<String> = in_ns(ns, &["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap().to_string())
        .collect();
    links.sort();
    links
}

/// The container's default routes, one line each: `default via GW dev IF`.
fn default_routes(ns: &str, family: &str) -> Vec<String> {
    in_ns(ns, &["ip", family, "route", "show", "default"])
        .lines()
        .map(|l| l.split_whitespace().take(5).collect::<Vec<_>>().join(" "))
        .collect()
}

/// The host's gwbridge-egress veths (`gw` + hash).
fn host_veths(lab: &Lab) -> Vec<String> {
    host_state(lab, 0)
        .links
        .into_iter()
        .filter(|l| l.starts_with("gw"))
        .collect()
}

/// host-local's allocations in the gateway bridge's pool.
fn gateway_allocations(lab: &Lab) -> Vec<String> {
    allocations(lab, 0)
        .into_iter()
        .filter(|a| a.starts_with("cni_gwbridge/"))
        .collect()
}

/// The attachment records of `container_id` on our interface, by network.
fn attachments(lab: &Lab, container_id: &str) -> Vec<String> {
    let listing = in_ns(
        &lab.host(0).ns,
        &[
            "sh",
            "-c",
            "nft list chain inet cni_gwbridge attachments 2>/dev/null || true",
        ],
    );
    let mut tags: Vec<String> = listing
        .lines()
        .filter_map(|l| l.split("comment \"").nth(1))
        .map(|c| c.trim_end_matches('"').to_string())
        .filter(|t| t.ends_with(&format!(":{container_id}/{OURS}")))
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

/// The MAC of our interface in a result.
fn our_mac(result: &Value, sandbox: &str) -> String {
    result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == OURS && i["sandbox"] == sandbox)
        .unwrap_or_else(|| panic!("no {OURS} in {result}"))["mac"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Nothing of gwbridge-egress is left on host 0.
fn assert_nothing_left(lab: &Lab) {
    assert!(host_veths(lab).is_empty(), "{:?}", host_veths(lab));
    let state = host_state(lab, 0);
    assert!(!state.links.contains("cni_gwbridge"), "{:?}", state.links);
    assert!(!state.ruleset.contains("cni_gwbridge"), "{}", state.ruleset);
    assert!(
        gateway_allocations(lab).is_empty(),
        "{:?}",
        gateway_allocations(lab)
    );
    assert!(!state.lock_file, "the lock file is left");
}

/// front then back for one container; its ports on both (9090 on both, as podman hands every
/// network of a container all its mappings); DEL in the given order.
fn scenario_two_networks(main: &MainPlugin, front_first: bool) {
    let mut lab = Lab::new(2);
    let _locks = LockFiles::of(&lab);
    let (front, back) = chains(&lab, main);
    let on_front = Attachment::new("two-c1", lab.container("c1"))
        .publish(8080, 80, "tcp")
        .publish(9090, 90, "tcp");
    let on_back = on_front
        .another_network("eth1")
        .publish(8081, 81, "tcp")
        .publish(9090, 90, "tcp");
    let ns = on_front.ns.clone();
    let rf = added(&front, &lab, &on_front);
    let rb = added(&back, &lab, &on_back);

    // One interface, one address, one allocation, one default route; a record per network.
    assert_eq!(container_links(&ns), ["eth0", "eth1", OURS, "lo"]);
    let addr = address_on(&rf, OURS, &on_front.netns_path);
    assert_eq!(address_on(&rb, OURS, &on_back.netns_path), addr, "{rb}");
    assert_eq!(
        our_mac(&rf, &on_front.netns_path),
        our_mac(&rb, &on_back.netns_path)
    );
    assert_eq!(gateway_allocations(&lab).len(), 1);
    assert_eq!(host_veths(&lab).len(), 1);
    assert_eq!(
        default_routes(&ns, "-4"),
        [format!("default via {GATEWAY} dev {OURS}")]
    );
    let routes = in_ns(&ns, &["ip", "-4", "route"]);
    assert!(
        routes.contains("10.77.0.0/24 dev eth0") && routes.contains("10.78.0.0/24 dev eth1"),
        "each network's subnet on its own interface:\n{routes}"
    );
    assert_eq!(
        attachments(&lab, "two-c1"),
        ["back:two-c1/gwb0", "front:two-c1/gwb0"]
    );
    // back's result lists the way out, as the container has it.
    assert_eq!(
        rb["routes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["dst"] == "0.0.0.0/0")
            .collect::<Vec<_>>(),
        [&json!({"dst": "0.0.0.0/0", "gw": GATEWAY})],
        "{rb}"
    );

    // Each network's ports, egress, and CHECK of both.
    let host = lab.host(0).addr.clone();
    let internet_side = format!("{UNDERLAY}.1");
    let _s80 = TcpServer::start(&ns, "0.0.0.0:80", "front-port");
    let _s81 = TcpServer::start(&ns, "0.0.0.0:81", "back-port");
    let _s90 = TcpServer::start(&ns, "0.0.0.0:90", "both-port");
    let ask = |port: u16| {
        eventually(&format!("{host}:{port} from the internet"), || {
            tcp_ask(&lab.internet, &format!("{host}:{port}"))
        })
    };
    assert_eq!(ask(8080), format!("front-port {internet_side}"));
    assert_eq!(ask(8081), format!("back-port {internet_side}"));
    assert_eq!(ask(9090), format!("both-port {internet_side}"));
    assert!(lab.ping_within(&ns, INTERNET_ADDR, std::time::Duration::from_secs(5)));
    let gw = front.position("gwbridge-egress");
    front.check(&lab, 0, &on_front, gw, &rf).ok();
    back.check(&lab, 0, &on_back, gw, &rb).ok();

    // DEL of one network: its rules go, the interface stays for the other.
    let (first, first_att, first_result, first_port) = if front_first {
        (&front, &on_front, &rf, 8080)
    } else {
        (&back, &on_back, &rb, 8081)
    };
    let (second, second_att, second_result, second_port, second_server) = if front_first {
        (&back, &on_back, &rb, 8081, "back-port")
    } else {
        (&front, &on_front, &rf, 8080, "front-port")
    };
    assert_all_ok(&first.del(&lab, 0, first_att, Some(first_result)));
    assert!(container_links(&ns).contains(&OURS.to_string()));
    assert_eq!(
        attachments(&lab, "two-c1"),
        [format!("{}:two-c1/gwb0", second.name)]
    );
    assert_eq!(gateway_allocations(&lab).len(), 1);
    assert_eq!(host_veths(&lab).len(), 1);
    assert_eq!(
        default_routes(&ns, "-4"),
        [format!("default via {GATEWAY} dev {OURS}")]
    );
    let table = nft_table(&lab, 0);
    assert!(
        !table.contains(&format!("dport {first_port} ")),
        "{first_port} outlived its network's DEL:\n{table}"
    );
    assert_eq!(ask(second_port), format!("{second_server} {internet_side}"));
    second.check(&lab, 0, second_att, gw, second_result).ok();
    // A repeated DEL of the first network changes nothing.
    assert_all_ok(&first.del(&lab, 0, first_att, Some(first_result)));
    assert!(container_links(&ns).contains(&OURS.to_string()));

    // The last DEL removes it.
    assert_all_ok(&second.del(&lab, 0, second_att, Some(second_result)));
    assert!(!try_in_ns(&ns, &["ip", "link", "show", OURS]));
    assert!(default_routes(&ns, "-4").is_empty());
    assert_nothing_left(&lab);
}

#[test]
fn two_networks_share_one_gateway_interface_front_deleted_first() {
    scenario_two_networks(&reference_bridge(), true);
}

#[test]
fn two_networks_share_one_gateway_interface_back_deleted_first() {
    scenario_two_networks(&reference_bridge(), false);
}

#[test]
fn overlay_two_networks_share_one_gateway_interface() {
    scenario_two_networks(&vxlan_overlay(), false);
}

/// ADDs of front and back for one container at the same moment, several containers in turn:
/// each ends with one interface, one allocation, two records; then concurrent DELs leave nothing.
#[test]
fn concurrent_adds_of_two_networks_make_one_interface() {
    let mut lab = Lab::new(2);
    let _locks = LockFiles::of(&lab);
    let (front, back) = chains(&lab, &reference_bridge());
    let containers: Vec<(Attachment, Attachment)> = (0..4)
        .map(|i| {
            let f = Attachment::new(&format!("race-c{i}"), lab.container(&format!("r{i}")));
            let b = f.another_network("eth1");
            (f, b)
        })
        .collect();
    let mut results = Vec::new();
    for (i, (f, b)) in containers.iter().enumerate() {
        let (rf, rb) = std::thread::scope(|s| {
            let one = s.spawn(|| added(&front, &lab, f));
            let two = s.spawn(|| added(&back, &lab, b));
            (one.join().unwrap(), two.join().unwrap())
        });
        assert_eq!(container_links(&f.ns), ["eth0", "eth1", OURS, "lo"]);
        assert_eq!(
            address_on(&rf, OURS, &f.netns_path),
            address_on(&rb, OURS, &b.netns_path)
        );
        assert_eq!(default_routes(&f.ns, "-4").len(), 1);
        assert_eq!(attachments(&lab, &f.container_id).len(), 2);
        assert_eq!(gateway_allocations(&lab).len(), i + 1);
        assert_eq!(host_veths(&lab).len(), i + 1);
        results.push((rf, rb));
    }
    for ((f, b), (rf, rb)) in containers.iter().zip(&results) {
        let (one, two) = std::thread::scope(|s| {
            let one = s.spawn(|| front.del(&lab, 0, f, Some(rf)));
            let two = s.spawn(|| back.del(&lab, 0, b, Some(rb)));
            (one.join().unwrap(), two.join().unwrap())
        });
        assert_all_ok(&one);
        assert_all_ok(&two);
        assert!(!try_in_ns(&f.ns, &["ip", "link", "show", OURS]));
    }
    assert_nothing_left(&lab);
}

/// GC of front (the container not valid there) removes front's record only: back still uses the
/// interface and its allocation. GC of back then removes them. The IPAM is the test double that
/// logs its calls: one ADD for the two networks, one DEL after the last.
#[test]
fn gc_of_one_network_keeps_the_interface_another_uses() {
    let mut lab = Lab::new(2);
    let _locks = LockFiles::of(&lab);
    let ipam_dir = TempDir::new("gw-shared-ipam");
    let script = ipam_dir.path().join("fake-ipam");
    std::fs::write(&script, FAKE_IPAM).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", ipam_dir.path().display(), cni_path());
    let dir = ipam_dir.path().display().to_string();
    let on_front = Attachment::new("gc-c1", lab.container("c1")).publish(8080, 80, "tcp");
    let on_back = on_front.another_network("eth1").publish(8081, 81, "tcp");
    let run = |command: &str, network: &str, att: &Attachment, extra: Value| -> Output {
        let mut conf = json!({"cniVersion": "1.1.0", "name": network, "type": "gwbridge-egress",
            "ipam": {"type": "fake-ipam"}, "prevResult": {"cniVersion": "1.1.0"},
            "runtimeConfig": {"portMappings": att.port_mappings}});
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                conf[k] = v;
            }
        }
        let inv = Invocation::new(our_binary(), command)
            .attachment(&att.container_id, &att.netns_path, &att.ifname)
            .env("CNI_PATH", &path)
            .env("FAKE_IPAM_DIR", &dir)
            .stdin(&conf);
        lab.run_on(0, &inv)
    };
    let gc = |network: &str, valid: Value| {
        let inv = Invocation::new(our_binary(), "GC")
            .env("CNI_PATH", &path)
            .env("FAKE_IPAM_DIR", &dir)
            .stdin(
                &json!({"cniVersion": "1.1.0", "name": network, "type": "gwbridge-egress",
                    "ipam": {"type": "fake-ipam"}, "cni.dev/valid-attachments": valid}),
            );
        lab.run_on(0, &inv).ok();
    };
    let log = || std::fs::read_to_string(ipam_dir.path().join("log")).unwrap_or_default();
    let rf = run("ADD", "front", &on_front, json!({})).ok();
    let rb = run("ADD", "back", &on_back, json!({})).ok();
    assert_eq!(
        log().lines().filter(|l| l.starts_with("ADD")).count(),
        1,
        "{}",
        log()
    );
    assert_eq!(rf["ips"], rb["ips"]);
    let veth = rf["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert_eq!(rb["interfaces"][0]["name"], veth.as_str());

    // front's GC: c1 is not valid on front; back's record, the veth and the allocation stay.
    gc("front", json!([{"containerID": "other", "ifname": "eth0"}]));
    assert_eq!(attachments(&lab, "gc-c1"), ["back:gc-c1/gwb0"]);
    assert!(try_in_ns(&lab.host(0).ns, &["ip", "link", "show", &veth]));
    assert!(try_in_ns(&on_front.ns, &["ip", "link", "show", OURS]));
    assert!(!log().lines().any(|l| l.starts_with("DEL")), "{}", log());
    let table = nft_table(&lab, 0);
    assert!(
        !table.contains("dport 8080 ") && table.contains("dport 8081 "),
        "{table}"
    );
    run(
        "CHECK",
        "back",
        &on_back,
        json!({"prevResult": check_prev_result(&on_back)}),
    )
    .ok();
    // back's GC with c1 valid there: nothing changes.
    gc("back", json!([{"containerID": "gc-c1", "ifname": "eth1"}]));
    assert_eq!(attachments(&lab, "gc-c1"), ["back:gc-c1/gwb0"]);
    assert!(try_in_ns(&on_front.ns, &["ip", "link", "show", OURS]));

    // back's GC without it: the last record goes, and with it veth and allocation.
    gc("back", json!([]));
    assert!(attachments(&lab, "gc-c1").is_empty());
    assert!(!try_in_ns(&lab.host(0).ns, &["ip", "link", "show", &veth]));
    assert!(!try_in_ns(&on_front.ns, &["ip", "link", "show", OURS]));
    assert_eq!(
        log()
            .lines()
            .filter(|l| l.starts_with("DEL"))
            .collect::<Vec<_>>(),
        ["DEL gc-c1 gwb0"]
    );
    assert!(!nft_table(&lab, 0).contains("cni_gwbridge"));
}

/// A configured `ifname` that a runtime would hand out still works (with a warning in the log).
#[test]
fn a_runtime_like_ifname_is_accepted_with_a_warning() {
    let mut lab = Lab::new(1);
    let _locks = LockFiles::of(&lab);
    let chain = Chain::new(
        "front",
        vec![
            (reference_bridge().config)(&lab, 0, 0),
            gwbridge(&lab, 0, json!({"ifname": "eth5"})),
        ],
    );
    let c = Attachment::new("eth5-c1", lab.container("c1"));
    let gw = chain.position("gwbridge-egress");
    let mut prev = None;
    for i in 0..chain.plugins.len() {
        let mut inv = chain.invocation("ADD", i, &c, prev.as_ref());
        if i == gw {
            inv = inv.env("RUST_LOG", "warn");
        }
        let out = lab.run_on(0, &inv);
        if i == gw {
            assert!(
                out.stderr.contains("eth5") && out.stderr.contains("gwb0"),
                "no warning: {}",
                out.stderr
            );
        }
        prev = Some(out.json());
    }
    assert!(try_in_ns(&c.ns, &["ip", "link", "show", "eth5"]));
    assert_all_ok(&chain.del(&lab, 0, &c, prev.as_ref()));
    assert_nothing_left(&lab);
}
