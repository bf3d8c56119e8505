//! The conformance suite's cases where the plugins are run directly, as a runtime runs them, on
//! labs of simulated hosts (conformance/run.sh drives them through runtimes): VERSION; GC and
//! STATUS at 1.1.0, which libcni 1.1.2 lacks; and bad input, each case checked for a non-zero
//! exit, exactly one JSON error object on stdout with cniVersion, code, msg and details, the
//! expected CNI code, the request's cniVersion in the error (when the request has a valid one), no
//! panic, and the host (links, addresses, routes, nftables, namespaces) and etcd exactly as before.
//!
//! Its own harness (Cargo.toml: `harness = false`): one check per line in cargo's format, counted
//! like any test; `cargo test ... -- FILTER` runs the groups whose name contains FILTER (`--list`
//! lists them). With CONFORMANCE_SUMMARY=FILE it writes the README table's rows of runtimes
//! `plugin` and `bad-input` (runtime, cniVersion, verb, case, result), for conformance/table.sh.
//! Needs root, etcd and the workspace's binaries (cargo build --workspace --bins).

use std::time::Duration;

use serde_json::{json, Value};
use testutils::checks::{Checks, Row};
use testutils::lab::{bin_dir, cni_path, in_ns, try_in_ns, Lab, LabConfig, Snapshot};
use testutils::{Invocation, Output};

type Group = (&'static str, fn(&Suite));

const GROUPS: &[Group] = &[
    ("version", version),
    ("gc-status", gc_status),
    ("status-etcd-stopped", status_etcd_stopped),
    ("bad-input-vxlan-overlay", bad_vxlan_overlay),
    ("bad-input-etcd-ipam", bad_etcd_ipam),
    ("bad-input-gwbridge-egress", bad_gwbridge_egress),
];

const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn main() {
    let (mut filters, mut skips, mut exact, mut list) = (Vec::new(), Vec::new(), false, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => list = true,
            "--exact" => exact = true,
            "--skip" => skips.extend(args.next()),
            // libtest's options that take a value, and its flags: nothing to do here.
            "--test-threads" | "--color" | "--format" | "--logfile" | "-Z" => {
                args.next();
            }
            a if a.starts_with('-') => {}
            a => filters.push(a.to_string()),
        }
    }
    let matches = |name: &str, pattern: &String| {
        if exact {
            name == pattern
        } else {
            name.contains(pattern.as_str())
        }
    };
    let chosen: Vec<&Group> = GROUPS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| matches(name, f)))
        .filter(|(name, _)| !skips.iter().any(|s| matches(name, s)))
        .collect();
    if list {
        for (name, _) in &chosen {
            println!("{name}: test");
        }
        return;
    }
    println!("\nrunning {} groups of checks", chosen.len());
    let suite = Suite::default();
    // Each group has labs of its own: they run side by side (most of their time is waiting).
    std::thread::scope(|scope| {
        for (name, group) in &chosen {
            let suite = &suite;
            scope.spawn(move || {
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| group(suite)));
                if let Err(panic) = outcome {
                    suite.checks.record_panic(name, panic);
                }
            });
        }
    });
    suite.checks.finish(GROUPS.len() - chosen.len());
}

#[derive(Default)]
struct Suite {
    checks: Checks,
}

impl Suite {
    fn record(&self, row: Row) {
        self.checks.record(row);
    }

    /// A check of runtime `plugin` (run directly): passes when nothing is wrong.
    fn plugin(&self, version: &str, verb: &str, case: &str, why: Why) {
        self.record(Row::new("plugin", version, verb, case, verdict(why.0)));
    }
}

fn verdict(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// What is wrong, as one check finds it: nothing when it passes.
#[derive(Default)]
struct Why(Vec<String>);

impl Why {
    /// `because` is wrong unless `holds`.
    fn unless(&mut self, holds: bool, because: impl Into<String>) -> &mut Why {
        if !holds {
            self.0.push(because.into());
        }
        self
    }

    /// `out` (of `what`) must be a success, with nothing on stdout when `quiet` (GC, STATUS).
    fn success(&mut self, what: &str, out: &Output, quiet: bool) -> &mut Why {
        let ok = out.code == 0 && (!quiet || out.stdout.trim().is_empty());
        let (stdout, stderr) = (out.stdout.trim(), out.stderr.trim());
        self.unless(ok, format!("{what}exit {}: {stdout} {stderr}", out.code))
    }

    fn all(&mut self, problems: Vec<String>) -> &mut Why {
        self.0.extend(problems);
        self
    }

    fn take(&mut self) -> Why {
        std::mem::take(self)
    }
}

/// Runs `plugin` on host `host` as a runtime does: nothing in its environment but PATH,
/// CNI_PATH, CNI_COMMAND (none when `command` is None) and `env`.
fn run(
    lab: &Lab,
    host: usize,
    plugin: &str,
    command: Option<&str>,
    stdin: &[u8],
    env: &[(&str, &str)],
) -> Output {
    let mut inv = Invocation::new(bin_dir().join(plugin), command.unwrap_or(""))
        .env("CNI_PATH", &cni_path())
        .raw_stdin(stdin.to_vec());
    if command.is_none() {
        inv = inv.without("CNI_COMMAND");
    }
    for (k, v) in env {
        inv = inv.env(k, v);
    }
    lab.run_on(host, &inv)
}

/// What is wrong with `out` as the CNI error `code` answering a request of version `request`
/// (None: no valid version in it).
fn error_problems(out: &Output, code: u64, request: Option<&str>) -> Vec<String> {
    let mut why = Why::default();
    why.unless(out.code != 0, "exit 0");
    let docs: Vec<Value> = serde_json::Deserializer::from_str(&out.stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    match docs.as_slice() {
        [err] if err.is_object() => {
            let complete = err["cniVersion"].is_string()
                && err["code"].is_u64()
                && err["msg"].is_string()
                && err.get("details").is_some();
            why.unless(
                complete,
                format!("error lacks cniVersion/code/msg/details: {err}"),
            );
            let (got, msg) = (&err["code"], &err["msg"]);
            why.unless(*got == code, format!("code {got}, expected {code} ({msg})"));
            if let Some(v) = request {
                let got = &err["cniVersion"];
                why.unless(*got == v, format!("error cniVersion {got}, request's {v}"));
            }
        }
        _ => {
            why.unless(
                false,
                format!("stdout is not one JSON object: {:.200}", out.stdout),
            );
        }
    }
    let panic = out
        .stderr
        .lines()
        .find(|l| l.to_lowercase().contains("panicked"));
    why.unless(
        panic.is_none(),
        format!("stderr: {}", panic.unwrap_or_default()),
    );
    why.0
}

fn bytes(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// Keys of network `net` left in etcd: endpoint records (`overlay`) and allocations (`ipam`).
fn left_in_etcd(lab: &Lab, net: &str, ipam: bool, overlay: bool) -> Vec<String> {
    let mut prefixes = Vec::new();
    if overlay {
        prefixes.push(format!("/cni-overlay/endpoints/{net}/"));
    }
    if ipam {
        prefixes
            .extend(["owners", "names", "ips"].map(|p| format!("/cni-overlay/ipam/{net}/{p}/")));
    }
    let left: Vec<String> = prefixes.iter().flat_map(|p| lab.etcd_keys(p)).collect();
    if left.is_empty() {
        vec![]
    } else {
        vec![format!("etcd keys left: {}", left.join(" "))]
    }
}

fn has_keys(lab: &Lab, prefix: &str) -> bool {
    !lab.etcd_keys(&format!("/cni-overlay/{prefix}")).is_empty()
}

fn link_exists(lab: &Lab, host: usize, name: &str) -> bool {
    !name.is_empty() && try_in_ns(&lab.host(host).ns, &["ip", "link", "show", name])
}

/// What changed between two snapshots other than lines mentioning one of `expected`.
fn changes(before: &Snapshot, after: &Snapshot, expected: &[&str]) -> Vec<String> {
    before
        .diff(after, usize::MAX)
        .into_iter()
        .filter(|l| !expected.iter().any(|e| !e.is_empty() && l.contains(e)))
        .take(6)
        .map(|l| format!("changed: {l}"))
        .collect()
}

/// CNI_CONTAINERID, CNI_IFNAME eth0 and, unless empty, CNI_NETNS.
fn attach<'a>(id: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![("CNI_CONTAINERID", id), ("CNI_IFNAME", "eth0")];
    if !netns.is_empty() {
        env.push(("CNI_NETNS", netns));
    }
    env
}

// ---------------------------------------------------------------------------------------------
// VERSION

fn version(s: &Suite) {
    let lab = Lab::with(LabConfig {
        etcd_members: vec![],
        ..LabConfig::new(1)
    });
    for plugin in ["vxlan-overlay", "etcd-ipam", "gwbridge-egress"] {
        let out = run(
            &lab,
            0,
            plugin,
            Some("VERSION"),
            br#"{"cniVersion":"1.0.0"}"#,
            &[],
        );
        let mut why = Why::default();
        if why.success("", &out, false).0.is_empty() {
            let listed = out.json()["supportedVersions"].clone();
            let all = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]
                .iter()
                .all(|v| listed.as_array().is_some_and(|a| a.contains(&json!(v))));
            why.unless(
                all,
                format!("supportedVersions lacks one of 0.3.1 0.4.0 1.0.0 1.1.0: {listed}"),
            );
        }
        let case = format!("{plugin} lists 0.3.1 0.4.0 1.0.0 1.1.0");
        s.plugin("1.0.0", "VERSION", &case, why);
    }
}

// ---------------------------------------------------------------------------------------------
// GC and STATUS (1.1.0)

/// A vxlan-overlay network with etcd-ipam at 1.1.0 on host `h` of the lab.
fn overlay_110(lab: &Lab, h: usize, name: &str, vni: u32, subnet: &str) -> Value {
    json!({"cniVersion": "1.1.0", "name": name, "type": "vxlan-overlay", "vni": vni,
           "node": lab.host(h).name, "etcd": {"endpoints": [lab.etcd_endpoint], "timeoutMs": 3000},
           "ipam": {"type": "etcd-ipam", "subnet": subnet, "dataDir": lab.host(h).dir.join("ipam")}})
}

fn with(base: &Value, key: &str, value: Value) -> Value {
    let mut v = base.clone();
    v[key] = value;
    v
}

fn gc_status(s: &Suite) {
    let mut lab = Lab::new(2);
    let node2 = lab.host(1).name.clone();
    let gc1 = overlay_110(&lab, 0, "cf-gc", 141, "10.41.0.0/24");
    let gc2 = overlay_110(&lab, 1, "cf-gc", 141, "10.41.0.0/24");
    let full = overlay_110(&lab, 0, "cf-full", 142, "10.42.0.0/30");
    let netns: Vec<(String, String)> = ["gcv", "gcs", "gco", "full", "wvalid", "wstale"]
        .map(|c| lab.container(c))
        .to_vec();
    let path = |c: usize| netns[c].1.as_str();
    let call = |h: usize, plugin: &str, verb: &str, conf: &Value, env: &[(&str, &str)]| {
        run(&lab, h, plugin, Some(verb), &bytes(conf), env)
    };
    let mut why = Why::default();

    // Two attachments on node1 (one to stay valid, one stale), one on node2.
    let valid = call(
        0,
        "vxlan-overlay",
        "ADD",
        &gc1,
        &attach("gc-valid", path(0)),
    );
    why.success("valid: ", &valid, false);
    let version = valid.json()["cniVersion"].clone();
    why.unless(
        valid.code != 0 || version == "1.1.0",
        format!("result cniVersion {version}"),
    );
    let out = call(
        0,
        "vxlan-overlay",
        "ADD",
        &gc1,
        &attach("gc-stale", path(1)),
    );
    why.success("stale: ", &out, false);
    let out = call(
        1,
        "vxlan-overlay",
        "ADD",
        &gc2,
        &attach("gc-other", path(2)),
    );
    why.success("other node: ", &out, false);
    let case = "vxlan-overlay+etcd-ipam: three attachments for GC (two on node1, one on node2)";
    s.plugin("1.1.0", "ADD", case, why.take());
    // The stale attachment's host veth, by its alias <container id>/<ifname>.
    let stale_veth = in_ns(&lab.host(0).ns, &["ip", "-d", "-o", "link", "show"])
        .lines()
        .find(|l| l.contains("alias gc-stale/eth0"))
        .and_then(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .unwrap_or_default();

    let before = lab.settled_snapshot(0, None);
    let keep = json!([{"containerID": "gc-valid", "ifname": "eth0"}]);
    let out = call(
        0,
        "vxlan-overlay",
        "GC",
        &with(&gc1, "cni.dev/valid-attachments", keep),
        &[],
    );
    why.success("", &out, true);
    s.plugin(
        "1.1.0",
        "GC",
        "vxlan-overlay+etcd-ipam: exit 0, empty stdout",
        why.take(),
    );
    why.unless(
        !has_keys(&lab, "ipam/cf-gc/owners/gc-stale/"),
        "stale owner kept",
    )
    .unless(
        !has_keys(&lab, "endpoints/cf-gc/gc-stale/"),
        "stale endpoint record kept",
    )
    .unless(
        !stale_veth.is_empty(),
        "could not identify the stale host veth by its alias",
    )
    .unless(
        !link_exists(&lab, 0, &stale_veth),
        format!("stale host veth {stale_veth} kept"),
    );
    let case = "removes the stale attachment (owner, endpoint record, host veth)";
    s.plugin("1.1.0", "GC", case, why.take());
    let address = in_ns(&netns[0].0, &["ip", "-o", "addr", "show", "dev", "eth0"]);
    why.unless(
        has_keys(&lab, "ipam/cf-gc/owners/gc-valid/eth0"),
        "valid owner removed",
    )
    .unless(
        has_keys(&lab, "endpoints/cf-gc/gc-valid/eth0"),
        "valid endpoint record removed",
    )
    .unless(
        address.contains("inet 10.41.0."),
        "valid container lost its address",
    );
    s.plugin("1.1.0", "GC", "keeps the valid attachment", why.take());
    why.unless(
        has_keys(&lab, "ipam/cf-gc/owners/gc-other/eth0"),
        format!("{node2}'s owner removed"),
    )
    .unless(
        has_keys(&lab, "endpoints/cf-gc/gc-other/eth0"),
        format!("{node2}'s record removed"),
    );
    s.plugin(
        "1.1.0",
        "GC",
        "never touches another node's attachments",
        why.take(),
    );
    why.all(changes(
        &before,
        &lab.snapshot(0, None),
        &["gc-stale", &stale_veth],
    ));
    let case = "vxlan-overlay+etcd-ipam: nothing but the stale attachment changed (host, etcd)";
    s.plugin("1.1.0", "GC", case, why.take());

    // etcd-ipam's own GC on node2 with an empty valid list: releases gc-other's allocation only.
    let out = call(
        1,
        "etcd-ipam",
        "GC",
        &with(&gc2, "cni.dev/valid-attachments", json!([])),
        &[],
    );
    why.success("", &out, false)
        .unless(
            !has_keys(&lab, "ipam/cf-gc/owners/gc-other/"),
            format!("{node2}'s stale owner kept"),
        )
        .unless(
            has_keys(&lab, "ipam/cf-gc/owners/gc-valid/eth0"),
            "node1's owner removed by node2's GC",
        );
    let case = "etcd-ipam: releases this node's allocations not in cni.dev/valid-attachments";
    s.plugin("1.1.0", "GC", case, why.take());

    let out = call(
        0,
        "vxlan-overlay",
        "DEL",
        &gc1,
        &attach("gc-valid", path(0)),
    );
    why.success("gc-valid: ", &out, false);
    let out = call(0, "vxlan-overlay", "DEL", &gc1, &attach("gc-stale", ""));
    why.success("gc-stale: ", &out, false);
    let out = call(1, "vxlan-overlay", "DEL", &gc2, &attach("gc-other", ""));
    why.success("gc-other: ", &out, false)
        .all(left_in_etcd(&lab, "cf-gc", true, true));
    let case =
        "after GC: DEL of every attachment (also GC'd ones, without CNI_NETNS) leaves nothing";
    s.plugin("1.1.0", "DEL", case, why.take());

    // STATUS: etcd up; an exhausted pool. Neither changes anything.
    for plugin in ["vxlan-overlay", "etcd-ipam"] {
        let before = lab.settled_snapshot(0, None);
        let out = call(0, plugin, "STATUS", &gc1, &[]);
        why.success("", &out, true)
            .all(changes(&before, &lab.snapshot(0, None), &[]));
        s.plugin(
            "1.1.0",
            "STATUS",
            &format!("{plugin}: 0 with etcd up"),
            why.take(),
        );
    }
    let added = call(0, "vxlan-overlay", "ADD", &full, &attach("full-1", path(3)));
    why.success("ADD of the only address: ", &added, false);
    let before = lab.settled_snapshot(0, None);
    let out = call(0, "etcd-ipam", "STATUS", &full, &[]);
    why.all(error_problems(&out, 50, Some("1.1.0")))
        .all(changes(&before, &lab.snapshot(0, None), &[]));
    s.plugin(
        "1.1.0",
        "STATUS",
        "etcd-ipam: 50 when the pool (/30) is exhausted",
        why.take(),
    );
    call(0, "vxlan-overlay", "DEL", &full, &attach("full-1", path(3)));

    // gwbridge-egress chained by hand after vxlan-overlay, its IPAM etcd-ipam (Debian's host-local
    // 1.1.1 does not speak 1.1.0).
    let wov = overlay_110(&lab, 0, "cf-gwgc", 145, "10.45.0.0/24");
    let wgw = json!({"cniVersion": "1.1.0", "name": "cf-gwgc", "type": "gwbridge-egress",
        "bridge": "cfgwgc", "ifname": "gwb0",
        "ipam": {"type": "etcd-ipam", "subnet": "172.28.0.0/24", "node": lab.host(0).name,
                 "etcd": {"endpoints": [lab.etcd_endpoint]}, "dataDir": lab.host(0).dir.join("ipam")}});
    let nft = || in_ns(&lab.host(0).ns, &["nft", "-s", "list", "ruleset"]);
    let nft_before = nft();
    let mut chained = Vec::new();
    let mut veths = Vec::new();
    for (id, c) in [("w-valid", 4), ("w-stale", 5)] {
        let out = call(0, "vxlan-overlay", "ADD", &wov, &attach(id, path(c)));
        why.success(&format!("vxlan-overlay ADD {id}: "), &out, false);
        let conf = with(&wgw, "prevResult", out.json());
        let out = call(0, "gwbridge-egress", "ADD", &conf, &attach(id, path(c)));
        why.success(&format!("gwbridge-egress ADD {id}: "), &out, false);
        // The host end of its veth on the gateway bridge: the result's `gw...` interface.
        let result = if out.code == 0 {
            out.json()
        } else {
            Value::Null
        };
        let veth = result["interfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i.get("sandbox").is_none_or(|s| s == ""))
            .filter_map(|i| i["name"].as_str())
            .find(|n| n.starts_with("gw") && *n != "cfgwgc");
        veths.push(veth.unwrap_or_default().to_string());
        chained.push((id, c, conf));
    }
    let case = "gwbridge-egress after vxlan-overlay: two attachments for GC";
    s.plugin("1.1.0", "ADD", case, why.take());
    let keep = json!([{"containerID": "w-valid", "ifname": "eth0"}]);
    let out = call(
        0,
        "gwbridge-egress",
        "GC",
        &with(&wgw, "cni.dev/valid-attachments", keep),
        &[],
    );
    why.success("", &out, true);
    s.plugin(
        "1.1.0",
        "GC",
        "gwbridge-egress: exit 0, empty stdout",
        why.take(),
    );
    let (valid, stale) = (&veths[0], &veths[1]);
    why.unless(!stale.is_empty(), "no host veth in the stale ADD's result")
        .unless(
            !link_exists(&lab, 0, stale),
            format!("stale host veth {stale} kept"),
        )
        .unless(
            !has_keys(&lab, "ipam/cfgwgc/owners/w-stale/"),
            "stale allocation kept",
        )
        .unless(!nft().contains("w-stale"), "stale nft rules kept");
    let case = "gwbridge-egress: removes the stale attachment (veth, rules, allocation)";
    s.plugin("1.1.0", "GC", case, why.take());
    why.unless(
        link_exists(&lab, 0, valid),
        format!("valid host veth {valid:?} removed"),
    )
    .unless(
        has_keys(&lab, "ipam/cfgwgc/owners/w-valid/"),
        "valid allocation removed",
    )
    .unless(nft().contains("w-valid"), "valid nft rules removed");
    s.plugin(
        "1.1.0",
        "GC",
        "gwbridge-egress: keeps the valid attachment",
        why.take(),
    );
    let before = lab.settled_snapshot(0, None);
    let out = call(0, "gwbridge-egress", "STATUS", &wgw, &[]);
    why.success("", &out, true)
        .all(changes(&before, &lab.snapshot(0, None), &[]));
    s.plugin(
        "1.1.0",
        "STATUS",
        "gwbridge-egress: 0 with its IPAM available",
        why.take(),
    );
    for (id, c, conf) in &chained {
        let out = call(0, "gwbridge-egress", "DEL", conf, &attach(id, path(*c)));
        why.success(&format!("gwbridge-egress DEL {id}: "), &out, false);
        let out = call(0, "vxlan-overlay", "DEL", &wov, &attach(id, path(*c)));
        why.success(&format!("vxlan-overlay DEL {id}: "), &out, false);
    }
    why.all(left_in_etcd(&lab, "cf-gwgc", true, true))
        .all(left_in_etcd(&lab, "cfgwgc", true, false))
        .unless(!link_exists(&lab, 0, "cfgwgc"), "bridge cfgwgc left")
        .unless(nft() == nft_before, "nft ruleset changed");
    let case = "gwbridge-egress + vxlan-overlay after GC: nothing left (etcd, bridge, nft)";
    s.plugin("1.1.0", "DEL", case, why.take());
}

/// STATUS against an etcd of its own: 0 while it runs, and still 0 (within the timeout) once it
/// is stopped: an etcd outage is cluster-wide, and a failing STATUS would make every node NotReady
/// under containerd ≥ 2.1 (store::plugin::ready_through_outage; README, Conformance).
fn status_etcd_stopped(s: &Suite) {
    let mut lab = Lab::new(1);
    let conf = with(
        &overlay_110(&lab, 0, "cf-st", 143, "10.43.0.0/24"),
        "etcd",
        json!({"endpoints": [lab.etcd_endpoint], "timeoutMs": 1000}),
    );
    let mut why = Why::default();
    for plugin in ["vxlan-overlay", "etcd-ipam"] {
        let before = lab.settled_snapshot(0, None);
        let out = run(&lab, 0, plugin, Some("STATUS"), &bytes(&conf), &[]);
        why.success("", &out, true)
            .all(changes(&before, &lab.snapshot(0, None), &[]));
        s.plugin(
            "1.1.0",
            "STATUS",
            &format!("{plugin}: 0 with its etcd up"),
            why.take(),
        );
    }
    lab.kill("etcd");
    for plugin in ["vxlan-overlay", "etcd-ipam"] {
        // etcd is stopped: the host alone can be compared.
        let before = lab.settled_host_snapshot(0, None);
        let out = run(&lab, 0, plugin, Some("STATUS"), &bytes(&conf), &[]);
        let took = out.elapsed;
        why.success("", &out, true)
            .unless(
                took < Duration::from_secs(5),
                format!("took {took:?} (timeoutMs 1000)"),
            )
            .all(changes(&before, &lab.host_snapshot(0, None), &[]));
        s.plugin(
            "1.1.0",
            "STATUS",
            &format!("{plugin}: 0 with etcd stopped (an outage is no reason for NotReady)"),
            why.take(),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input

/// One bad-input case: the verb (`none`: no CNI_COMMAND), the expected CNI code, its name, the
/// request, and edits of the standard environment (CNI_CONTAINERID=bad-1, CNI_NETNS=the lab's
/// container, CNI_IFNAME=eth0): `VAR=value` sets, `-VAR` removes.
struct Case<'a> {
    verb: &'a str,
    code: u64,
    name: &'a str,
    stdin: Vec<u8>,
    env: &'a [&'a str],
    /// The longest it may take (the unreachable-etcd cases).
    limit: Option<Duration>,
}

fn case<'a>(verb: &'a str, code: u64, name: &'a str, stdin: &[u8], env: &'a [&'a str]) -> Case<'a> {
    Case {
        verb,
        code,
        name,
        stdin: stdin.to_vec(),
        env,
        limit: None,
    }
}

impl Case<'_> {
    fn within(mut self, seconds: u64) -> Self {
        self.limit = Some(Duration::from_secs(seconds));
        self
    }
}

/// No attachment at all (GC, STATUS).
const NO_ATTACHMENT: &[&str] = &["-CNI_CONTAINERID", "-CNI_NETNS", "-CNI_IFNAME"];

/// `base` with the JSON merge patch `patch` (RFC 7386: objects merge, null removes).
fn patched(base: &Value, patch: Value) -> Vec<u8> {
    fn merge(target: &mut Value, patch: Value) {
        match patch {
            Value::Object(fields) => {
                if !target.is_object() {
                    *target = json!({});
                }
                let object = target.as_object_mut().unwrap();
                for (k, v) in fields {
                    if v.is_null() {
                        object.remove(&k);
                    } else {
                        merge(object.entry(k).or_insert(Value::Null), v);
                    }
                }
            }
            other => *target = other,
        }
    }
    let mut v = base.clone();
    merge(&mut v, patch);
    bytes(&v)
}

const MALFORMED: &[u8] = br#"{"cniVersion":"1.0.0","name":"#;

/// 17 MiB of JSON: over the plugins' 16 MiB limit.
fn huge() -> Vec<u8> {
    let mut v = br#"{"cniVersion":"1.0.0","name":"cf-bad","type":"vxlan-overlay","pad":""#.to_vec();
    v.extend(std::iter::repeat_n(b'x', 17 << 20));
    v.extend_from_slice(br#""}"#);
    v
}

/// Bad input sent to the one host of a lab of its own, a container namespace at hand.
struct Bad<'a> {
    suite: &'a Suite,
    lab: Lab,
    container_ns: String,
    /// The container's path: CNI_NETNS of the standard environment.
    netns: String,
}

impl<'a> Bad<'a> {
    fn new(suite: &'a Suite) -> Bad<'a> {
        let mut lab = Lab::new(1);
        let (container_ns, netns) = lab.container("bad");
        Bad {
            suite,
            lab,
            container_ns,
            netns,
        }
    }

    fn data_dir(&self) -> String {
        self.lab.host(0).dir.join("data").display().to_string()
    }

    /// Sends the case to `plugin` and checks the answer and that nothing changed. The table's verb
    /// is the command's (ADD for a missing or unknown one); its version the request's cniVersion,
    /// "invalid" when it has no valid one.
    fn check(&self, plugin: &str, case: &Case) {
        let known = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"].contains(&case.verb);
        let (command, label) = match case.verb {
            "none" => (None, "ADD"),
            v if known => (Some(v), v),
            v => (Some(v), "ADD"),
        };
        let mut env = vec![
            ("CNI_CONTAINERID", "bad-1"),
            ("CNI_NETNS", self.netns.as_str()),
            ("CNI_IFNAME", "eth0"),
        ];
        for edit in case.env {
            let (var, value) = edit.split_once('=').unwrap_or((edit, ""));
            env.retain(|(k, _)| *k != var.trim_start_matches('-'));
            if !edit.starts_with('-') {
                env.push((var, value));
            }
        }
        let request = serde_json::from_slice::<Value>(&case.stdin)
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
            .filter(|v| VERSIONS.contains(&v.as_str()));
        let before = self.lab.settled_snapshot(0, Some(&self.container_ns));
        let out = run(&self.lab, 0, plugin, command, &case.stdin, &env);
        let after = self.lab.snapshot(0, Some(&self.container_ns));
        // An oversized request is refused before it is read: its version is unknown.
        let oversized = case.stdin.len() > 16 << 20;
        let expected_version = request.as_deref().filter(|_| !oversized);
        let mut why = error_problems(&out, case.code, expected_version);
        why.extend(changes(&before, &after, &[]));
        if let Some(limit) = case.limit.filter(|l| out.elapsed > *l) {
            why.push(format!("took {:?} (limit {limit:?})", out.elapsed));
        }
        self.suite.record(Row::new(
            "bad-input",
            request.as_deref().unwrap_or("invalid"),
            label,
            &format!("{plugin}: {} (code {})", case.name, case.code),
            verdict(why),
        ));
    }

    /// A set-up step: `plugin` run with `env` alone; whether it succeeded. A failed ADD is a
    /// failed check (`what` could not be set up).
    fn set_up(
        &self,
        plugin: &str,
        verb: &str,
        stdin: &[u8],
        env: &[(&str, &str)],
        what: &str,
    ) -> bool {
        let out = run(&self.lab, 0, plugin, Some(verb), stdin, env);
        if out.code != 0 && verb == "ADD" {
            self.suite.record(Row::new(
                "bad-input",
                "1.0.0",
                "ADD",
                &format!("{plugin}: set-up of {what}"),
                Err(format!("exit {}: {}", out.code, out.stdout.trim())),
            ));
        }
        out.code == 0
    }
}

fn bad_vxlan_overlay(s: &Suite) {
    let mut b = Bad::new(s);
    let (_, occupant) = b.lab.container("occ");
    let p = "vxlan-overlay";
    let ov = json!({"cniVersion": "1.0.0", "name": "cf-bad", "type": "vxlan-overlay", "vni": 180,
        "node": b.lab.host(0).name, "etcd": {"endpoints": [b.lab.etcd_endpoint]},
        "ipam": {"type": "etcd-ipam", "subnet": "10.73.0.0/24", "dataDir": b.data_dir()}});
    let o = bytes(&ov);
    let with = |patch: Value| patched(&ov, patch);
    let unreachable =
        with(json!({"etcd": {"endpoints": ["192.168.205.250:2379"], "timeoutMs": 500}}));
    let sctp = json!({"runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "sctp"}]}});
    #[rustfmt::skip]
    let cases = [
        case("none", 4, "CNI_COMMAND missing", &o, &[]),
        case("FOO", 4, "CNI_COMMAND unknown (FOO)", &o, &[]),
        case("ADD", 4, "CNI_CONTAINERID missing", &o, &["-CNI_CONTAINERID"]),
        case("ADD", 4, "CNI_CONTAINERID invalid (a/b)", &o, &["CNI_CONTAINERID=a/b"]),
        case("ADD", 4, "CNI_IFNAME missing", &o, &["-CNI_IFNAME"]),
        case("ADD", 4, "CNI_IFNAME too long (16 bytes)", &o, &["CNI_IFNAME=eth0123456789012"]),
        case("ADD", 4, "CNI_IFNAME with /", &o, &["CNI_IFNAME=eth/0"]),
        case("ADD", 4, "CNI_NETNS missing", &o, &["-CNI_NETNS"]),
        case("ADD", 4, "CNI_NETNS relative", &o, &["CNI_NETNS=run/netns/x"]),
        case("ADD", 4, "CNI_NETNS not a namespace (/etc/hostname)", &o, &["CNI_NETNS=/etc/hostname"]),
        case("ADD", 4, "CNI_NETNS does not exist", &o, &["CNI_NETNS=/run/netns/cf-does-not-exist"]),
        case("ADD", 4, "CNI_ARGS malformed", &o, &["CNI_ARGS=garbage"]),
        case("ADD", 6, "malformed JSON", MALFORMED, &[]),
        case("ADD", 6, "empty stdin", b"", &[]),
        case("ADD", 6, "JSON array instead of an object", b"[]\n", &[]),
        case("ADD", 6, "huge JSON (17 MiB)", &huge(), &[]),
        case("ADD", 1, "cniVersion missing", &with(json!({"cniVersion": null})), &[]),
        case("ADD", 1, "cniVersion unknown (9.9.9)", &with(json!({"cniVersion": "9.9.9"})), &[]),
        case("ADD", 6, "cniVersion a number", &with(json!({"cniVersion": 1})), &[]),
        case("ADD", 7, "network name invalid (bad name)", &with(json!({"name": "bad name"})), &[]),
        case("ADD", 7, "network name missing", &with(json!({"name": null})), &[]),
        case("ADD", 7, "vni 0", &with(json!({"vni": 0})), &[]),
        case("ADD", 6, "vni a string", &with(json!({"vni": "x"})), &[]),
        case("ADD", 7, "vni 16777216", &with(json!({"vni": 16_777_216})), &[]),
        case("ADD", 7, "mtu 100", &with(json!({"mtu": 100})), &[]),
        case("ADD", 7, "IPAM type with a path (../x)", &with(json!({"ipam": {"type": "../x"}})), &[]),
        case("ADD", 7, "ipam section missing", &with(json!({"ipam": null})), &[]),
        case("ADD", 6, "ipam a string", &with(json!({"ipam": "etcd-ipam"})), &[]),
        case("ADD", 7, "IPAM plugin not in CNI_PATH", &with(json!({"ipam": {"type": "no-such-ipam"}})), &[]),
        case("ADD", 7, "etcd endpoints empty", &with(json!({"etcd": {"endpoints": []}})), &[]),
        case("ADD", 7, "vtep address on no interface", &with(json!({"vtep": {"address": "192.0.2.77"}})), &[]),
        case("ADD", 11, "unreachable etcd (timeoutMs 500)", &unreachable, &[]).within(6),
        case("DEL", 11, "unreachable etcd (timeoutMs 500)", &unreachable, &["-CNI_NETNS"]).within(6),
        case("ADD", 102, "requested IP outside every range (CNI_ARGS IP=)", &o, &["CNI_ARGS=IgnoreUnknown=1;IP=10.99.0.5"]),
        case("ADD", 103, "interface already exists (CNI_IFNAME=lo)", &o, &["CNI_IFNAME=lo"]),
        case("ADD", 2, "sctp port mapping", &with(sctp), &[]),
        case("CHECK", 1, "CHECK at cniVersion 0.3.1", &with(json!({"cniVersion": "0.3.1"})), &[]),
        case("CHECK", 6, "broken prevResult", &with(json!({"prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "x"}]}})), &[]),
        case("CHECK", 7, "CHECK without prevResult", &o, &[]),
        case("GC", 1, "GC at cniVersion 1.0.0", &o, NO_ATTACHMENT),
        case("STATUS", 1, "STATUS at cniVersion 1.0.0", &o, NO_ATTACHMENT),
    ];
    for c in &cases {
        b.check(p, c);
    }
    // Cases that need something in place first: an exhausted /30 and a VNI held by another network.
    let small = with(json!({"name": "cf-small", "vni": 181, "ipam": {"subnet": "10.76.0.0/30"}}));
    let taken = with(json!({"name": "cf-other", "vni": 181, "ipam": {"subnet": "10.77.0.0/24"}}));
    let occupant = [
        ("CNI_CONTAINERID", "occupant"),
        ("CNI_NETNS", &occupant),
        ("CNI_IFNAME", "eth0"),
    ];
    if b.set_up(p, "ADD", &small, &occupant, "the exhausted-pool cases") {
        let exhausted = "exhausted pool (/30, its one address taken)";
        b.check(p, &case("ADD", 101, exhausted, &small, &[]));
        b.check("etcd-ipam", &case("ADD", 101, exhausted, &small, &[]));
        b.check(
            p,
            &case(
                "ADD",
                7,
                "VNI used by another network on this host",
                &taken,
                &[],
            ),
        );
    }
    b.set_up(p, "DEL", &small, &occupant, "");
}

fn bad_etcd_ipam(s: &Suite) {
    let b = Bad::new(s);
    let p = "etcd-ipam";
    let ip = json!({"cniVersion": "1.0.0", "name": "cf-badipam", "type": "vxlan-overlay",
        "ipam": {"type": "etcd-ipam", "subnet": "10.75.0.0/24", "node": b.lab.host(0).name,
                 "etcd": {"endpoints": [b.lab.etcd_endpoint]}, "dataDir": b.data_dir()}});
    let i = bytes(&ip);
    let with = |patch: Value| patched(&ip, patch);
    let unreachable =
        with(json!({"ipam": {"etcd": {"endpoints": ["192.168.205.250:2379"], "timeoutMs": 500}}}));
    #[rustfmt::skip]
    let cases = [
        case("ADD", 6, "malformed JSON", MALFORMED, &[]),
        case("ADD", 6, "huge JSON (17 MiB)", &huge(), &[]),
        case("ADD", 1, "cniVersion unsupported (0.2.0)", &with(json!({"cniVersion": "0.2.0"})), &[]),
        case("ADD", 7, "network name invalid (bad/name)", &with(json!({"name": "bad/name"})), &[]),
        case("ADD", 7, "invalid CIDR (/33)", &with(json!({"ipam": {"subnet": "10.75.0.0/33"}})), &[]),
        case("ADD", 7, "subnet with host bits set", &with(json!({"ipam": {"subnet": "10.75.0.5/24"}})), &[]),
        case("ADD", 7, "rangeStart after rangeEnd", &with(json!({"ipam": {"rangeStart": "10.75.0.50", "rangeEnd": "10.75.0.10"}})), &[]),
        case("ADD", 7, "rangeEnd outside the subnet", &with(json!({"ipam": {"rangeEnd": "10.76.0.10"}})), &[]),
        case("ADD", 7, "gateway outside the subnet", &with(json!({"ipam": {"gateway": "10.99.0.1"}})), &[]),
        case("ADD", 6, "subnet a number", &with(json!({"ipam": {"subnet": 10}})), &[]),
        case("ADD", 6, "ranges a string", &with(json!({"ipam": {"subnet": null, "ranges": "10.75.0.0/24"}})), &[]),
        case("ADD", 108, "no subnet, no ranges and no network record", &with(json!({"ipam": {"subnet": null}})), &[]),
        case("ADD", 7, "node name invalid", &with(json!({"ipam": {"node": "bad node"}})), &[]),
        case("ADD", 11, "unreachable etcd (timeoutMs 500)", &unreachable, &[]).within(4),
        case("DEL", 11, "unreachable etcd (timeoutMs 500)", &unreachable, &["-CNI_NETNS"]).within(4),
        case("ADD", 102, "requested address is the gateway (args.cni.ips)", &with(json!({"args": {"cni": {"ips": ["10.75.0.1"]}}})), &[]),
        case("ADD", 4, "K8S_POD_NAME with a slash (no runtime sends one; it would split the name key)", &i, &["CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=web/0"]),
        case("ADD", 4, "CNI_IFNAME too long", &i, &["CNI_IFNAME=eth0123456789012"]),
        case("CHECK", 107, "CHECK of an attachment that has no allocation", &i, &[]),
    ];
    for c in &cases {
        b.check(p, c);
    }
    let holder = [
        ("CNI_CONTAINERID", "holder"),
        ("CNI_NETNS", b.netns.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=held"),
    ];
    if b.set_up(p, "ADD", &i, &holder, "the name-held case") {
        let env = &["CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=HELD"];
        let name = "name held by another container (case-insensitive: HELD)";
        b.check(p, &case("ADD", 100, name, &i, env));
    }
    b.set_up(
        p,
        "DEL",
        &i,
        &[("CNI_CONTAINERID", "holder"), ("CNI_IFNAME", "eth0")],
        "",
    );
}

fn bad_gwbridge_egress(s: &Suite) {
    let b = Bad::new(s);
    let p = "gwbridge-egress";
    let gw = json!({"cniVersion": "1.0.0", "name": "cf-bad", "type": "gwbridge-egress",
        "bridge": "cfgwbad", "ifname": "gwb0",
        "ipam": {"type": "host-local", "subnet": "172.29.0.0/24", "dataDir": b.data_dir()},
        "prevResult": {"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": b.netns, "mac": "02:00:00:00:00:01"}],
            "ips": [{"address": "10.73.0.5/24", "gateway": "10.73.0.1", "interface": 0}]}});
    let g = bytes(&gw);
    let with = |patch: Value| patched(&gw, patch);
    let sctp = json!({"runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "sctp"}]}});
    let broken = json!({"prevResult": {"interfaces": null, "ips": [{"address": "10.0.0.300/24"}]}});
    #[rustfmt::skip]
    let cases = [
        case("ADD", 7, "no prevResult", &with(json!({"prevResult": null})), &[]),
        case("ADD", 2, "sctp port mapping", &with(sctp), &[]),
        case("ADD", 6, "malformed JSON", MALFORMED, &[]),
        case("ADD", 6, "huge JSON (17 MiB)", &huge(), &[]),
        case("ADD", 1, "cniVersion unknown (2.0.0)", &with(json!({"cniVersion": "2.0.0"})), &[]),
        case("ADD", 7, "network name invalid (-bad)", &with(json!({"name": "-bad"})), &[]),
        case("ADD", 7, "ifname equal to CNI_IFNAME", &with(json!({"ifname": "eth0"})), &[]),
        case("ADD", 7, "bridge name too long", &with(json!({"bridge": "a-bridge-name-too-long"})), &[]),
        case("ADD", 6, "icc a string", &with(json!({"icc": "yes"})), &[]),
        case("ADD", 7, "mtu 20", &with(json!({"mtu": 20})), &[]),
        case("ADD", 7, "IPAM type with a path (../x)", &with(json!({"ipam": {"type": "../x"}})), &[]),
        case("ADD", 6, "broken prevResult", &with(broken), &[]),
        case("ADD", 4, "CNI_IFNAME with /", &g, &["CNI_IFNAME=a/b"]),
        case("ADD", 4, "CNI_NETNS not a namespace (/etc/hostname)", &g, &["CNI_NETNS=/etc/hostname"]),
    ];
    for c in &cases {
        b.check(p, c);
    }
}
