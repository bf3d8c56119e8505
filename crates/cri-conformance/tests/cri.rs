//! The CRI conformance suite: this crate's CRI client acts as the kubelet against containerd 1.6
//! (its CRI plugin) on two simulated hosts of a lab, each with overlayd, and the plugins as
//! Kubernetes gets them: the conflist below (vxlan-overlay with `hostAccess`, etcd-ipam taking
//! the ranges from the network's record made with `overlayctl network create`, gwbridge-egress
//! with `portMappings`; cniVersion 1.0.0 with `cniVersions` up to 1.1.0).
//!
//! Steps, one check each (a failed step does not stop the ones after it):
//! pod lifecycle RunPodSandbox .. RemovePodSandbox; pod IP = overlay address = etcd's allocation;
//! two pods of one name in two namespaces; ping and DNS (by ExecSync with NET_RAW) across hosts;
//! hostAccess (the kubelet's probes); hostPort from the other host, the simulated internet and a
//! pod; StopPodSandbox with the netns unmounted (empty CNI_NETNS); etcd paused during
//! StopPodSandbox, then retried; nothing left in etcd, on the hosts or in libcni's cache; and
//! STATUS through the conflist as libcni ≥ 1.2 calls it for containerd ≥ 2.1: 0 with etcd up and
//! with etcd paused (an etcd outage must not make every node NotReady: see README, Conformance).
//!
//! Its own harness (Cargo.toml: `harness = false`): one line per check in cargo's format, counted
//! like any test. With CONFORMANCE_SUMMARY=FILE it writes the README table's rows (runtime,
//! cniVersion, verb, case, result) for conformance/table.sh. Needs root, etcd, containerd, runc
//! and the workspace's binaries (cargo build --workspace --bins); a missing one fails the suite.

use std::process::Command;
use std::time::{Duration, Instant};

use cri_conformance::{libcni, Container, Cri, Pod};
use serde_json::{json, Value};
use testutils::checks::{Checks, Row};
use testutils::containerd::{containerd_version, CriHost, IMAGE};
use testutils::lab::{bin_dir, Lab, LabConfig};
use testutils::Invocation;

const NET: &str = "pods";
const SUBNET: &str = "10.88.0.0/24";
const GATEWAY: &str = "10.88.0.1";
/// The plugins' etcd budget in the conflist: how long a call waits for a paused etcd.
const ETCD_TIMEOUT_MS: u64 = 3000;
const PREFIX: &str = "/cni-overlay";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("cri: test");
        return;
    }
    // cargo test's filters: run when none is given or one matches this suite's name.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| "cri".contains(f.as_str())) {
        println!("\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out; finished in 0.00s\n");
        return;
    }
    println!("\nrunning the CRI conformance suite");
    let mut suite = Suite::default();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut suite)));
    if let Err(panic) = outcome {
        suite.checks.record_panic("the suite ran to its end", panic);
    }
    suite.checks.finish(0);
}

#[derive(Default)]
struct Suite {
    checks: Checks,
}

impl Suite {
    fn record(
        &mut self,
        runtime: &str,
        version: &str,
        verb: &str,
        case: &str,
        result: Result<(), String>,
    ) {
        self.checks
            .record(Row::new(runtime, version, verb, case, result));
    }
}

/// What is wrong, as one check finds it: nothing when it passes.
#[derive(Default)]
struct Why(Vec<String>);

impl Why {
    fn unless(&mut self, holds: bool, because: impl Into<String>) -> &mut Why {
        if !holds {
            self.0.push(because.into());
        }
        self
    }

    fn call<T>(&mut self, what: &str, result: cri_conformance::Result<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(format!("{what}: {e}"));
                None
            }
        }
    }

    fn take(&mut self) -> Result<(), String> {
        let problems = std::mem::take(&mut self.0);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// The lab, its two containerd hosts and a CRI connection to each. Fields drop in order: the
/// connections, then the hosts (containerd, overlayd), then the lab.
struct World {
    cri: Vec<Cri>,
    hosts: Vec<CriHost>,
    lab: Lab,
}

/// The conflist the Kubernetes deployment ships, for one node: vxlan-overlay (VNI, MTU from the
/// network's record; `hostAccess` so that the kubelet's probes reach pods) with etcd-ipam (the
/// ranges from the record), then gwbridge-egress (egress, `hostPort`). 1.0.0 for containerd 1.6
/// (libcni 1.1 refuses a 1.1.0 list); libcni ≥ 1.2 takes 1.1.0 from `cniVersions`.
fn conflist(node: &str, etcd: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": NET,
        "plugins": [
            {"type": "vxlan-overlay", "node": node, "hostAccess": true,
             "etcd": {"endpoints": [etcd], "timeoutMs": ETCD_TIMEOUT_MS},
             "ipam": {"type": "etcd-ipam"}},
            {"type": "gwbridge-egress", "capabilities": {"portMappings": true}}
        ]
    })
}

/// `(success, stdout + stderr)` of a command in a lab namespace. (Debian's busybox 1.35 wget
/// crashes with `-T`: the suite bounds it with `timeout` instead.)
fn in_ns(ns: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The names of a namespace's links (`ip -o link`), sorted.
fn links(ns: &str) -> Vec<String> {
    let (_, out) = in_ns(ns, &["ip", "-o", "link", "show"]);
    let mut names: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn nft(ns: &str) -> String {
    in_ns(ns, &["nft", "-s", "list", "ruleset"]).1
}

/// A value in etcd, as JSON (Null when absent).
fn etcd_json(lab: &Lab, key: &str) -> Value {
    let text = lab.etcdctl(&["get", key, "--print-value-only"]);
    serde_json::from_str(text.trim()).unwrap_or(Value::Null)
}

/// The keys of the pods in etcd: allocations (addresses, names, owners) and endpoint records;
/// the allocation cursor (a hint) left out.
fn pod_keys(lab: &Lab) -> Vec<String> {
    let mut keys = lab.etcd_keys(&format!("{PREFIX}/ipam/{NET}/"));
    keys.retain(|k| !k.contains("/cursor/"));
    keys.extend(lab.etcd_keys(&format!("{PREFIX}/endpoints/{NET}/")));
    keys
}

/// Keys in etcd that name a sandbox id.
fn keys_of(lab: &Lab, id: &str) -> Vec<String> {
    pod_keys(lab)
        .into_iter()
        .filter(|k| k.contains(id))
        .collect()
}

/// The allocation etcd-ipam holds for a sandbox: (name, first address without prefix).
fn allocation(lab: &Lab, id: &str) -> Option<(String, String)> {
    let owner = etcd_json(lab, &format!("{PREFIX}/ipam/{NET}/owners/{id}/eth0"));
    let name = owner["name"].as_str()?.to_string();
    let address = owner["ips"][0]["address"].as_str()?;
    Some((name, address.split('/').next()?.to_string()))
}

fn in_subnet(ip: &str) -> bool {
    ip.starts_with("10.88.0.") && ip != GATEWAY
}

/// Retries `f` until it holds or `within` passed.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// SIGSTOP of the lab's etcd (exact PIDs), SIGCONT when dropped.
struct Paused(Vec<u32>);

impl Paused {
    fn etcd(lab: &mut Lab) -> Paused {
        let pids = lab.pids("etcd");
        assert!(!pids.is_empty(), "the lab's etcd is not running");
        for &pid in &pids {
            // SAFETY: kill(2) on the PID of the etcd the lab started.
            unsafe {
                libc::kill(pid as i32, libc::SIGSTOP);
            }
        }
        Paused(pids)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: as in Paused::etcd.
            unsafe {
                libc::kill(pid as i32, libc::SIGCONT);
            }
        }
    }
}

/// A pod the suite started: where, its sandbox and containers.
struct Running {
    host: usize,
    pod: Pod,
    sandbox: String,
    containers: Vec<String>,
    ip: String,
}

/// The app container of every pod: NET_RAW (to ping) and a web server on port 80 saying who it is.
fn app(pod: &Pod) -> Container {
    let page = format!("hello from {}.{}", pod.name, pod.namespace);
    Container::new(
        "app",
        IMAGE,
        &[
            "sh",
            "-c",
            &format!("echo '{page}' > /var/www/index.html && exec httpd -f -p 80 -h /var/www"),
        ],
    )
    .capability("NET_RAW")
}

fn setup() -> World {
    let lab = Lab::with(LabConfig::new(2));
    let hosts: Vec<CriHost> = (0..2).map(|i| CriHost::start(&lab, i)).collect();
    let etcd_url = format!("http://{}", lab.etcd_endpoint);
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.host(0).ns))
        .arg("--")
        .arg(bin_dir().join("overlayctl"))
        .args([
            "--etcd", &etcd_url, "network", "create", NET, "--subnet", SUBNET,
        ])
        .output()
        .expect("run overlayctl");
    assert!(
        out.status.success(),
        "overlayctl network create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut world = World {
        cri: Vec::new(),
        hosts,
        lab,
    };
    for h in &mut world.hosts {
        h.write_conflist(&conflist(&h.node, &world.lab.etcd_endpoint));
        h.start_overlayd(&etcd_url);
    }
    for h in &world.hosts {
        let cri = Cri::connect(&h.socket()).unwrap_or_else(|e| panic!("{e}"));
        // CRI watches its conf_dir: the network is ready once it loaded the conflist.
        let ready = eventually(Duration::from_secs(20), || {
            cri.conditions()
                .is_ok_and(|c| c.get("NetworkReady").is_some_and(|(ok, _)| *ok))
        });
        assert!(
            ready,
            "containerd on {} never reported NetworkReady: {:?}",
            h.node,
            cri.conditions()
        );
        world.cri.push(cri);
    }
    world
}

fn run(s: &mut Suite) {
    let version = containerd_version();
    let rt = format!("CRI (containerd-{version})");
    let rt = rt.as_str();
    let status_rt = "CRI STATUS (libcni 1.2, containerd 2.1)";
    let mut w = setup();
    let mut why = Why::default();
    let node = |w: &World, i: usize| w.hosts[i].node.clone();
    let host_ns: Vec<String> = w.hosts.iter().map(|h| h.ns.clone()).collect();
    let before_links: Vec<Vec<String>> = host_ns.iter().map(|ns| links(ns)).collect();
    let before_nft: Vec<String> = host_ns.iter().map(|ns| nft(ns)).collect();

    // The runtime is what the kubelet expects.
    if let Some(v) = why.call("Version", w.cri[0].version()) {
        why.unless(
            v.runtime_name == "containerd",
            format!("runtime {}", v.runtime_name),
        )
        .unless(
            v.runtime_api_version == "v1",
            format!("CRI API {}", v.runtime_api_version),
        );
    }
    s.record(
        rt,
        "1.0.0",
        "ADD",
        "CRI v1 Version: containerd, API v1; NetworkReady with the conflist loaded",
        why.take(),
    );

    // ---- web-0 in prod on host 1, web-0 in dev on host 2 -------------------------------------
    let mut pods: Vec<Running> = Vec::new();
    for (host, namespace, port) in [(0, "prod", Some(8080)), (1, "dev", None)] {
        let mut pod = Pod::new("web-0", namespace).dns(&[GATEWAY], &[&format!("{NET}.overlay")]);
        if let Some(p) = port {
            pod = pod.host_port(p, 80);
        }
        let cri = &w.cri[host];
        let Some(sandbox) = why.call("RunPodSandbox", cri.run_pod_sandbox(&pod)) else {
            continue;
        };
        let (ip, state) = why
            .call("PodSandboxStatus", cri.pod_ip(&sandbox))
            .unwrap_or_default();
        let container = why.call(
            "CreateContainer/StartContainer",
            cri.start_container(&sandbox, &pod, &app(&pod)),
        );
        let qualified = format!("web-0.{namespace}");
        let alloc = allocation(&w.lab, &sandbox);
        why.unless(
            state == cri_conformance::v1::PodSandboxState::SandboxReady,
            format!("sandbox state {state:?}"),
        )
        .unless(in_subnet(&ip), format!("pod IP {ip:?} not in {SUBNET}"))
        .unless(
            alloc.as_ref().is_some_and(|(_, a)| *a == ip),
            format!("etcd's allocation for {sandbox}: {alloc:?}, pod IP {ip}"),
        )
        .unless(
            alloc.as_ref().is_some_and(|(n, _)| *n == qualified),
            format!(
                "reserved name {alloc:?}, expected {qualified} (K8S_POD_NAME.K8S_POD_NAMESPACE)"
            ),
        );
        let endpoint = etcd_json(&w.lab, &format!("{PREFIX}/endpoints/{NET}/{sandbox}/eth0"));
        why.unless(
            endpoint["node"] == node(&w, host),
            format!("endpoint record {endpoint}"),
        );
        let case = format!("RunPodSandbox web-0 in {namespace} on host {}: ready, pod IP in the overlay subnet = etcd's allocation, name {qualified}", host + 1);
        s.record(rt, "1.0.0", "ADD", &case, why.take());
        pods.push(Running {
            host,
            pod,
            sandbox,
            containers: container.into_iter().collect(),
            ip,
        });
    }
    assert_eq!(pods.len(), 2, "the two web-0 pods did not start");

    let names: Vec<String> = w.lab.etcd_keys(&format!("{PREFIX}/ipam/{NET}/names/"));
    for n in ["web-0.prod", "web-0.dev"] {
        why.unless(
            names.iter().any(|k| k.ends_with(&format!("/names/{n}"))),
            format!("{n} not reserved: {names:?}"),
        );
    }
    why.unless(pods[0].ip != pods[1].ip, "both pods got one address");
    s.record(
        rt,
        "1.0.0",
        "ADD",
        "two pods named web-0 in namespaces prod and dev: both names reserved, two addresses",
        why.take(),
    );

    for p in &pods {
        let cached = w.hosts[p.host].cached_results();
        let file = format!("{NET}-{}-eth0", p.sandbox);
        why.unless(
            cached.contains(&file),
            format!("host {}: {file} not in {cached:?}", p.host + 1),
        );
    }
    s.record(
        rt,
        "1.0.0",
        "ADD",
        "libcni caches each ADD result in /var/lib/cni/results/<net>-<sandbox id>-eth0",
        why.take(),
    );

    // ---- across hosts ---------------------------------------------------------------------
    let exec = |w: &World, p: &Running, cmd: &[&str]| -> Result<cri_conformance::Exec, String> {
        let c = p.containers.first().ok_or("no container")?;
        w.cri[p.host]
            .exec_sync(c, cmd, 10)
            .map_err(|e| e.to_string())
    };
    for (from, to) in [(0, 1), (1, 0)] {
        let target = pods[to].ip.clone();
        let mut last = String::new();
        let ok = eventually(Duration::from_secs(10), || {
            match exec(&w, &pods[from], &["ping", "-c", "1", "-W", "1", &target]) {
                Ok(e) => {
                    last = e.stdout + &e.stderr;
                    e.exit_code == 0
                }
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        why.unless(ok, format!("ping {target} from host {}: {last}", from + 1));
    }
    s.record(
        rt,
        "1.0.0",
        "ADD",
        "ExecSync ping (NET_RAW) between the pods, both ways across hosts",
        why.take(),
    );

    let resolv = exec(&w, &pods[1], &["cat", "/etc/resolv.conf"])
        .map(|e| e.stdout)
        .unwrap_or_default();
    why.unless(
        resolv.contains(&format!("nameserver {GATEWAY}"))
            && resolv.contains(&format!("{NET}.overlay")),
        format!("resolv.conf from dnsConfig: {resolv:?}"),
    );
    for (from, name, ip) in [
        (1, "web-0.prod", pods[0].ip.clone()),
        (0, "web-0.dev", pods[1].ip.clone()),
    ] {
        let mut last = String::new();
        let ok = eventually(Duration::from_secs(10), || {
            let e = exec(&w, &pods[from], &["nslookup", name]);
            last = e.map(|e| e.stdout + &e.stderr).unwrap_or_else(|e| e);
            last.contains(&format!("Address: {ip}")) || last.contains(&format!("Address 1: {ip}"))
        });
        why.unless(ok, format!("nslookup {name} on host {}: {last}", from + 1));
        let e = exec(&w, &pods[from], &["ping", "-c", "1", "-W", "2", name]);
        why.unless(
            e.as_ref().is_ok_and(|e| e.ok() && e.stdout.contains(&ip)),
            format!("ping {name}: {e:?}"),
        );
    }
    s.record(rt, "1.0.0", "ADD", "DNS at the gateway (the pod's dnsConfig): nslookup and ping web-0.prod / web-0.dev across hosts", why.take());

    // hostAccess: the node reaches its pods, as the kubelet's probes do.
    // (The web servers may take a moment to start: each check retries for 10 s.)
    let fetch = |ns: &str, url: &str, want: &str| -> Result<(), String> {
        let mut last = String::new();
        let ok = eventually(Duration::from_secs(10), || {
            let (ok, out) = in_ns(
                ns,
                &["timeout", "5", "busybox", "wget", "-q", "-O", "-", url],
            );
            last = out;
            ok && last.contains(want)
        });
        if ok {
            Ok(())
        } else {
            Err(format!("{url}: {last}"))
        }
    };
    for p in &pods {
        let want = format!("hello from web-0.{}", p.pod.namespace);
        if let Err(e) = fetch(&host_ns[p.host], &format!("http://{}/", p.ip), &want) {
            why.unless(false, format!("from host {}: {e}", p.host + 1));
        }
    }
    s.record(
        rt,
        "1.0.0",
        "ADD",
        "hostAccess: each host reaches its pod's port 80 (kubelet probes)",
        why.take(),
    );

    // hostPort 8080 -> 80 of web-0.prod on host 1.
    let url = format!("http://{}:8080/", w.hosts[0].addr);
    let want = "hello from web-0.prod";
    let internet = w.lab.namespace_of("internet").unwrap();
    for (what, ns) in [
        ("host 2", host_ns[1].clone()),
        ("the simulated internet", internet),
    ] {
        if let Err(e) = fetch(&ns, &url, want) {
            why.unless(false, format!("from {what}: {e}"));
        }
    }
    let mut last = None;
    let ok = eventually(Duration::from_secs(10), || {
        let e = exec(
            &w,
            &pods[1],
            &["timeout", "5", "wget", "-q", "-O", "-", &url],
        );
        let ok = e.as_ref().is_ok_and(|e| e.ok() && e.stdout.contains(want));
        last = Some(e);
        ok
    });
    why.unless(ok, format!("{url} from web-0.dev: {last:?}"));
    s.record(rt, "1.0.0", "ADD", "hostPort 8080 (runtimeConfig.portMappings): reachable from the other host, the internet and a pod on the other host", why.take());

    // ---- StopPodSandbox with the netns unmounted --------------------------------------------
    let links_before = links(&host_ns[1]);
    let pod = Pod::new("db-0", "prod");
    if let Some(sandbox) = why.call("RunPodSandbox", w.cri[1].run_pod_sandbox(&pod)) {
        let held = keys_of(&w.lab, &sandbox);
        let path = w.cri[1].netns_path(&sandbox).unwrap_or_default();
        let out = w.hosts[1].run_inside(&["umount", &path]);
        why.unless(!held.is_empty(), "nothing allocated")
            .unless(out.code == 0, format!("umount {path:?}: {}", out.stderr));
        why.call("StopPodSandbox", w.cri[1].stop_pod_sandbox(&sandbox));
        let left = keys_of(&w.lab, &sandbox);
        let cached = w.hosts[1].cached_results();
        why.unless(left.is_empty(), format!("left in etcd: {left:?}"))
            .unless(
                links(&host_ns[1]) == links_before,
                format!(
                    "links: {:?} before, {:?} after",
                    links_before,
                    links(&host_ns[1])
                ),
            )
            .unless(
                !cached.iter().any(|c| c.contains(&sandbox)),
                format!("cached: {cached:?}"),
            );
        why.call("RemovePodSandbox", w.cri[1].remove_pod_sandbox(&sandbox));
    }
    s.record(rt, "1.0.0", "DEL", "StopPodSandbox after the netns is unmounted (empty CNI_NETNS): allocation, record, veths and cache entry released", why.take());

    // ---- etcd paused during StopPodSandbox, then the kubelet's retry ------------------------
    let links_before = links(&host_ns[0]);
    let pod = Pod::new("cache-0", "prod");
    let mut retried = Err("the pod did not start".to_string());
    if let Some(sandbox) = why.call("RunPodSandbox", w.cri[0].run_pod_sandbox(&pod)) {
        let held = keys_of(&w.lab, &sandbox);
        let started = Instant::now();
        let stopped = {
            let _paused = Paused::etcd(&mut w.lab);
            w.cri[0].stop_pod_sandbox(&sandbox)
        };
        let took = started.elapsed();
        let kept = keys_of(&w.lab, &sandbox);
        let cached = w.hosts[0].cached_results();
        why.unless(
            stopped.is_err(),
            "StopPodSandbox succeeded with etcd paused",
        )
        .unless(
            stopped
                .as_ref()
                .err()
                .is_some_and(|e| e.message.contains("destroy network")),
            format!("error: {stopped:?}"),
        )
        .unless(
            !held.is_empty() && kept.iter().any(|k| k.contains("/owners/")),
            format!("allocation not kept: {kept:?}"),
        )
        .unless(
            cached.iter().any(|c| c.contains(&sandbox)),
            "cache entry dropped with the DEL failed",
        )
        .unless(took < Duration::from_secs(30), format!("took {took:?}"));
        s.record(rt, "1.0.0", "DEL", "etcd paused (SIGSTOP) during StopPodSandbox: Stop fails (code 11), the allocation and cache entry stay", why.take());
        // The kubelet retries StopPodSandbox until it succeeds.
        let mut last = None;
        let ok = eventually(Duration::from_secs(30), || {
            last = w.cri[0].stop_pod_sandbox(&sandbox).err();
            last.is_none()
        });
        why.unless(ok, format!("StopPodSandbox retried: {last:?}"));
        let left = keys_of(&w.lab, &sandbox);
        why.unless(left.is_empty(), format!("left in etcd: {left:?}"))
            .unless(
                links(&host_ns[0]) == links_before,
                format!(
                    "links: {:?} before, {:?} after",
                    links_before,
                    links(&host_ns[0])
                ),
            )
            .unless(
                !w.hosts[0]
                    .cached_results()
                    .iter()
                    .any(|c| c.contains(&sandbox)),
                "cache entry left",
            );
        why.call("RemovePodSandbox", w.cri[0].remove_pod_sandbox(&sandbox));
        retried = why.take();
    }
    s.record(
        rt,
        "1.0.0",
        "DEL",
        "after SIGCONT, StopPodSandbox retried succeeds and releases everything",
        retried,
    );

    // ---- the kubelet removes the pods ------------------------------------------------------
    for p in &pods {
        why.call(
            "StopContainer..RemovePodSandbox",
            w.cri[p.host].remove_pod(&p.sandbox, &p.containers),
        );
    }
    let left = pod_keys(&w.lab);
    why.unless(left.is_empty(), format!("left in etcd: {left:?}"));
    for (i, h) in w.hosts.iter().enumerate() {
        let n = i + 1;
        let sandboxes = w.cri[i]
            .list_pod_sandboxes()
            .map(|l| l.len())
            .unwrap_or(usize::MAX);
        let after = links(&h.ns);
        why.unless(
            sandboxes == 0,
            format!("host {n}: {sandboxes} sandboxes listed"),
        )
        .unless(
            after == before_links[i],
            format!(
                "host {n} links: {:?} before, {after:?} after",
                before_links[i]
            ),
        )
        .unless(
            nft(&h.ns) == before_nft[i],
            format!("host {n}: nftables ruleset changed"),
        )
        .unless(
            h.cached_results().is_empty(),
            format!("host {n} cache: {:?}", h.cached_results()),
        )
        .unless(
            h.named_netns().is_empty(),
            format!("host {n} /run/netns: {:?}", h.named_netns()),
        );
        let locks = h.run_inside(&["ls", "-A", "/run/cni-overlay/locks"]).stdout;
        why.unless(
            locks.trim().is_empty(),
            format!("host {n} lock files: {locks}"),
        );
        // gwbridge-egress allocates the gateway bridge's addresses itself, from its attachment
        // records (the ruleset above): no host-local pool appears.
        let pool = h.run_inside(&["ls", "-A", "/var/lib/cni/networks/cni_gwbridge"]);
        why.unless(
            pool.code != 0,
            format!(
                "host {n}: a host-local pool for cni_gwbridge exists: {}",
                pool.stdout.trim()
            ),
        );
    }
    s.record(rt, "1.0.0", "DEL", "after RemovePodSandbox of every pod: nothing in etcd, no veths, bridges, rules, cache entries, sandboxes or netns", why.take());

    // ---- STATUS as containerd >= 2.1 calls it ----------------------------------------------
    status(s, &mut w, status_rt);

    for (i, h) in w.hosts.iter_mut().enumerate() {
        if !h.overlayd_running() {
            s.record(
                "setup",
                "-",
                "-",
                &format!("overlayd on host {} ran throughout", i + 1),
                Err(h.logs(20)),
            );
        }
    }
}

/// Runs each plugin of `list` with STATUS as libcni ≥ 1.2 does, on host `h`: the first failure.
fn libcni_status(w: &World, h: usize, list: &Value) -> Result<(), String> {
    let host = &w.hosts[h];
    let calls = libcni::status_calls(list)?;
    if calls.is_empty() {
        return Err("libcni would not call STATUS for this list".into());
    }
    for call in calls {
        let mut inv =
            Invocation::new(host.cni_bin().join(&call.plugin_type), "STATUS").stdin(&call.stdin);
        for (k, v) in libcni::status_env(host.cni_bin().to_str().unwrap()) {
            inv = inv.env(k, &v);
        }
        let out = host.run_plugin(&inv);
        if out.code != 0 {
            return Err(format!(
                "{} exit {}: {}{}",
                call.plugin_type,
                out.code,
                out.stdout,
                out.stderr.trim()
            ));
        }
        if !out.stdout.trim().is_empty() {
            return Err(format!(
                "{} printed {:?} on success",
                call.plugin_type, out.stdout
            ));
        }
    }
    Ok(())
}

fn status(s: &mut Suite, w: &mut World, rt: &str) {
    let mut why = Why::default();
    // Debian's host-local 1.1.1 (gwbridge-egress's default IPAM) predates CNI 1.1.0: at the version
    // libcni ≥ 1.2 takes from cniVersions it refuses STATUS and ADD alike. A node of containerd ≥
    // 2.1 needs an IPAM that speaks 1.1.0 behind gwbridge-egress (host-local ≥ 1.5, or etcd-ipam):
    // here etcd-ipam, the only one on this machine.
    let list = |h: &CriHost, etcd: &str| {
        let mut l = conflist(&h.node, etcd);
        l["plugins"][1]["ipam"] = json!({"type": "etcd-ipam", "subnet": "172.18.0.0/16", "node": h.node,
                                          "etcd": {"endpoints": [etcd], "timeoutMs": ETCD_TIMEOUT_MS}});
        l
    };
    let etcd = w.lab.etcd_endpoint.clone();
    let lists: Vec<Value> = w.hosts.iter().map(|h| list(h, &etcd)).collect();
    let version = libcni::effective_version(&lists[0]).unwrap_or_default();
    why.unless(
        version == "1.1.0",
        format!("libcni ≥ 1.2 would use {version}"),
    );
    for (h, l) in lists.iter().enumerate() {
        if let Err(e) = libcni_status(w, h, l) {
            why.unless(false, format!("host {}: {e}", h + 1));
        }
    }
    s.record(
        rt,
        "1.1.0",
        "STATUS",
        "each plugin of the conflist (cniVersions: 1.1.0 chosen): 0 with etcd up",
        why.take(),
    );

    let mut missing = lists[0].clone();
    missing["name"] = json!("no-such-network");
    let out = libcni_status(w, 0, &missing);
    why.unless(
        out.as_ref().is_err_and(|e| e.contains("108")),
        format!("a network without a record: {out:?}"),
    );
    s.record(
        rt,
        "1.1.0",
        "STATUS",
        "fails for what must be fixed: a network without a record (code 108)",
        why.take(),
    );

    let started = Instant::now();
    let results: Vec<Result<(), String>> = {
        let _paused = Paused::etcd(&mut w.lab);
        (0..w.hosts.len())
            .map(|h| libcni_status(w, h, &lists[h]))
            .collect()
    };
    let took = started.elapsed();
    for (h, r) in results.iter().enumerate() {
        if let Err(e) = r {
            why.unless(false, format!("host {}: {e}", h + 1));
        }
    }
    // Each host: vxlan-overlay waits for the record, gwbridge-egress's etcd-ipam for its counts.
    let bound = Duration::from_millis(2 * (2 * ETCD_TIMEOUT_MS + 3000));
    why.unless(
        took < bound,
        format!("took {took:?} for both hosts (bound {bound:?})"),
    );
    s.record(rt, "1.1.0", "STATUS", "0 with etcd paused (an etcd outage must not make every node NotReady), within the plugins' timeoutMs", why.take());
}
