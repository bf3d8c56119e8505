//! The lab of simulated hosts (testutils::lab, the Rust tests' own) for scripts: the demo, the
//! benchmarks and the conformance suite. `up` builds it and leaves it running, described in
//! `<dir>/lab.json`; the other commands read that; `down` removes everything it made.
//!
//! ```text
//! lab [--dir D] up --hosts N [--prefix P] [--node-prefix S] [--etcd-members 1,2 | --no-etcd]
//!                     [--sandbox-vnis FIRST-LAST]
//! lab [--dir D] down
//! lab [--dir D] etcd-endpoints          the members' client URLs, comma-separated
//! lab [--dir D] ns TARGET | addr TARGET the namespace / underlay address of a target
//! lab [--dir D] container NAME...       container namespaces; prints their paths
//! lab [--dir D] etcd-member kill|term|start HOST
//!                                       SIGKILL / SIGTERM a host's etcd member, or start it again
//!                                       on its data (fault injection: scripts/faults.sh)
//! lab [--dir D] run TARGET -- CMD...    runs CMD in TARGET's network namespace
//! lab [--dir D] bg TARGET --log FILE [--tag T] -- CMD...
//!                                       a service in TARGET, stopped by `down`; prints its PID
//! lab name KIND [--vni N] [--node X] [--network N] [--container-id C --ifname I]
//!                                       a name the plugins give (model::names): bridge, vxlan,
//!                                       gateway-veth, sandbox, host-veth, dns-domain, conflist
//! lab sandboxes NODE...                 the gateway sandboxes of those nodes that exist now
//! ```
//! D defaults to $LAB_DIR. TARGET: a host (its number from 1 or its node name), `internet`,
//! `switch`, or a container made with `lab container`. Node names default to node1, node2, ...;
//! etcd runs on host 1 unless told otherwise. Commands run through `nsenter --net`, in the
//! machine's mount namespace (not `ip netns exec`, whose private one would hide mounts).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use testutils::lab::{Lab, LabConfig, INTERNET_ADDR, STATE_FILE};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // Names need no lab: scripts ask the model instead of writing the rules again.
    match args.first().map(String::as_str) {
        Some("name") => return name(args.split_off(1)),
        Some("sandboxes") => return sandboxes(&args[1..]),
        _ => {}
    }
    let mut dir = std::env::var_os("LAB_DIR").map(PathBuf::from);
    if args.first().map(String::as_str) == Some("--dir") {
        args.remove(0);
        dir = Some(PathBuf::from(take(&mut args, "--dir")));
    }
    let dir = dir.unwrap_or_else(|| usage("no lab directory: --dir D or LAB_DIR"));
    let command = if args.is_empty() {
        usage("no command")
    } else {
        args.remove(0)
    };
    match command.as_str() {
        "up" => up(dir, args),
        "down" => {
            let _lock = std::fs::metadata(&dir).is_ok().then(|| Lab::lock(&dir));
            if let Some(lab) = Lab::load(&dir) {
                lab.down();
            }
        }
        "etcd-endpoints" => {
            let lab = load(&dir);
            let urls: Vec<String> = lab
                .etcd_endpoints
                .iter()
                .map(|e| format!("http://{e}"))
                .collect();
            println!("{}", urls.join(","));
        }
        "ns" => println!("{}", namespace(&load(&dir), &one(args, "ns TARGET"))),
        "addr" => {
            let (lab, target) = (load(&dir), one(args, "addr TARGET"));
            let addr = match lab.namespace_of(&target) {
                Some(ns) if ns == lab.internet => INTERNET_ADDR.to_string(),
                Some(ns) => match lab.hosts.iter().find(|h| h.ns == ns) {
                    Some(h) => h.addr.clone(),
                    None => fail(&format!("{target} is not a host")),
                },
                None => fail(&format!("no {target} in the lab")),
            };
            println!("{addr}");
        }
        "container" => {
            if args.is_empty() {
                usage("container NAME...");
            }
            // Many at once in one load and save: a storm's thousand containers.
            let _lock = Lab::lock(&dir);
            let mut lab = load(&dir);
            for name in args {
                let (_, path) = lab.container(&name);
                println!("{path}");
            }
            lab.save();
        }
        "etcd-member" => {
            let (action, host) = match <[String; 2]>::try_from(args) {
                Ok([action, host]) => (action, host),
                Err(_) => usage("etcd-member kill|term|start HOST"),
            };
            let _lock = Lab::lock(&dir);
            let mut lab = load(&dir);
            let i = host_index(&lab, &host);
            if !lab.etcd_members().contains(&i) {
                fail(&format!("host {host} runs no etcd member"));
            }
            match action.as_str() {
                "kill" | "term" => {
                    let signal = if action == "kill" {
                        libc::SIGKILL
                    } else {
                        libc::SIGTERM
                    };
                    if !lab.signal_etcd_member(i, signal) {
                        fail(&format!("host {host}'s etcd member is not running"));
                    }
                }
                "start" => println!("{}", lab.start_etcd_member(i)),
                other => usage(&format!("etcd-member: unknown action {other}")),
            }
            lab.save();
        }
        "run" => {
            let target = take(&mut args, "run TARGET -- CMD...");
            let ns = namespace(&load(&dir), &target);
            let err = nsenter(&ns, command_after_dashes(args)).exec();
            fail(&format!("nsenter: {err}"));
        }
        "bg" => {
            let target = take(&mut args, "bg TARGET --log FILE -- CMD...");
            let (mut log, mut tag) = (None, None);
            while args.first().is_some_and(|a| a != "--") {
                match args.remove(0).as_str() {
                    "--log" => log = Some(PathBuf::from(take(&mut args, "--log FILE"))),
                    "--tag" => tag = Some(take(&mut args, "--tag T")),
                    other => usage(&format!("bg: unknown option {other}")),
                }
            }
            let log = log.unwrap_or_else(|| usage("bg needs --log FILE"));
            let command = command_after_dashes(args);
            let _lock = Lab::lock(&dir);
            let mut lab = load(&dir);
            let ns = namespace(&lab, &target);
            let tag = tag.unwrap_or_else(|| command[0].clone());
            let rest: Vec<&str> = command[1..].iter().map(String::as_str).collect();
            let pid = lab.spawn_logged(&tag, &ns, &command[0], &rest, &log);
            lab.save();
            println!("{pid}");
        }
        other => usage(&format!("unknown command {other}")),
    }
}

fn up(dir: PathBuf, mut args: Vec<String>) {
    let mut config = LabConfig::new(0);
    config.node_prefix = Some("node".into());
    config.dir = Some(dir);
    let mut hosts = None;
    while !args.is_empty() {
        let flag = args.remove(0);
        match flag.as_str() {
            "--hosts" => hosts = Some(number(&take(&mut args, "--hosts N"))),
            "--prefix" => config.prefix = Some(take(&mut args, "--prefix P")),
            "--node-prefix" => config.node_prefix = Some(take(&mut args, "--node-prefix S")),
            "--etcd-members" => {
                config.etcd_members = take(&mut args, "--etcd-members 1,2")
                    .split(',')
                    .map(|h| {
                        number(h)
                            .checked_sub(1)
                            .unwrap_or_else(|| usage("hosts count from 1"))
                    })
                    .collect()
            }
            "--no-etcd" => config.etcd_members.clear(),
            "--sandbox-vnis" => {
                let range = take(&mut args, "--sandbox-vnis FIRST-LAST");
                let (first, last) = range
                    .split_once('-')
                    .unwrap_or_else(|| usage("--sandbox-vnis FIRST-LAST"));
                config.sandbox_vnis = Some((number(first) as u32, number(last) as u32));
            }
            other => usage(&format!("up: unknown option {other}")),
        }
    }
    config.hosts = hosts.unwrap_or_else(|| usage("up needs --hosts N"));
    if let Some(&h) = config.etcd_members.iter().find(|&&h| h >= config.hosts) {
        usage(&format!("--etcd-members: there is no host {}", h + 1));
    }
    let mut lab = Lab::with(config);
    lab.keep();
    print!(
        "{}",
        std::fs::read_to_string(lab.dir().join(STATE_FILE)).unwrap()
    );
}

/// `lab name KIND ...`: one name of model::names, printed.
fn name(mut args: Vec<String>) {
    use model::names;
    let kind = if args.is_empty() {
        usage("name KIND")
    } else {
        args.remove(0)
    };
    let (mut vni, mut node, mut network, mut container_id, mut ifname) =
        (None, None, None, None, None);
    while !args.is_empty() {
        let flag = args.remove(0);
        let value = take(&mut args, &flag);
        match flag.as_str() {
            "--vni" => {
                let n = number(&value) as u32;
                vni = Some(model::types::Vni::new(n).unwrap_or_else(|e| usage(&e.to_string())))
            }
            "--node" => node = Some(value),
            "--network" => network = Some(value),
            "--container-id" => container_id = Some(value),
            "--ifname" => ifname = Some(value),
            other => usage(&format!("name: unknown option {other}")),
        }
    }
    let need =
        |v: Option<String>, flag: &str| v.unwrap_or_else(|| usage(&format!("{kind} needs {flag}")));
    let vni = || vni.unwrap_or_else(|| usage(&format!("{kind} needs --vni N")));
    let printed = match kind.as_str() {
        "bridge" => names::bridge(vni()),
        "vxlan" => names::vxlan(vni()),
        "gateway-veth" => names::gateway_veth(vni()),
        "sandbox" => names::sandbox(vni(), &need(node, "--node X")),
        "host-veth" => names::host_veth(
            &need(container_id, "--container-id C"),
            &need(ifname, "--ifname I"),
        ),
        "dns-domain" => names::dns_domain(&need(network, "--network N")),
        "conflist" => names::conflist_file(&need(network, "--network N")),
        other => usage(&format!("name: unknown kind {other}")),
    };
    println!("{printed}");
}

/// `lab sandboxes NODE...`: the gateway sandboxes of those nodes present in /run/netns.
fn sandboxes(nodes: &[String]) {
    for ns in Lab::namespaces_starting_with(model::names::SANDBOX_PREFIX) {
        if nodes
            .iter()
            .any(|node| model::names::vni_of_sandbox(&ns, node).is_some())
        {
            println!("{ns}");
        }
    }
}

/// A host's index (0-based) from its number or node name.
fn host_index(lab: &Lab, target: &str) -> usize {
    let ns = namespace(lab, target);
    lab.hosts
        .iter()
        .position(|h| h.ns == ns)
        .unwrap_or_else(|| fail(&format!("{target} is not a host")))
}

fn load(dir: &std::path::Path) -> Lab {
    Lab::load(dir).unwrap_or_else(|| fail(&format!("no lab in {} (lab up)", dir.display())))
}

fn namespace(lab: &Lab, target: &str) -> String {
    lab.namespace_of(target)
        .unwrap_or_else(|| fail(&format!("no {target} in the lab")))
}

fn nsenter(ns: &str, command: Vec<String>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .args(command);
    c
}

fn command_after_dashes(mut args: Vec<String>) -> Vec<String> {
    if args.first().map(String::as_str) == Some("--") {
        args.remove(0);
    }
    if args.is_empty() {
        usage("no command to run (-- CMD...)");
    }
    args
}

fn take(args: &mut Vec<String>, what: &str) -> String {
    if args.is_empty() {
        usage(&format!("{what}: missing value"));
    }
    args.remove(0)
}

fn one(args: Vec<String>, what: &str) -> String {
    match <[String; 1]>::try_from(args) {
        Ok([value]) => value,
        Err(_) => usage(what),
    }
}

fn number(s: &str) -> usize {
    s.parse()
        .unwrap_or_else(|_| usage(&format!("{s} is not a number")))
}

fn usage(msg: &str) -> ! {
    eprintln!("lab: {msg}");
    eprintln!(
        "usage: lab [--dir D] up --hosts N [--prefix P] [--node-prefix S] [--etcd-members 1,2 | --no-etcd] [--sandbox-vnis A-B]\n\
         \x20      lab [--dir D] down | etcd-endpoints | ns TARGET | addr TARGET | container NAME...\n\
         \x20      lab [--dir D] etcd-member kill|term|start HOST\n\
         \x20      lab [--dir D] run TARGET -- CMD... | bg TARGET --log FILE [--tag T] -- CMD...\n\
         \x20      lab name KIND [--vni N] [--node X] [--network N] [--container-id C --ifname I]\n\
         \x20      lab sandboxes NODE...\n\
         (D: $LAB_DIR; TARGET: host number or node name, internet, switch, a container)"
    );
    std::process::exit(2);
}

fn fail(msg: &str) -> ! {
    eprintln!("lab: {msg}");
    std::process::exit(1);
}
