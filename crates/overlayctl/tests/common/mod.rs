//! Running the built overlayctl against a test etcd, and writing the records the plugins and
//! overlayd would have written.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use model::records::{self, Endpoint, Holder, Node};
use model::Vni;
use serde_json::Value;
use store::{EtcdConfig, Keys, Store};
use testutils::Etcd;

pub const PREFIX: &str = "/cni-overlay";

/// What one run printed and returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Asserts success with nothing on stderr; returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "expected success, got exit {}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        assert_eq!(self.stderr, "", "unexpected stderr");
        &self.stdout
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    /// Asserts exit 1 with exactly one `overlayctl: ...` line on stderr and nothing on stdout;
    /// returns that line.
    pub fn fails(&self) -> &str {
        assert_eq!(
            self.code, 1,
            "expected exit 1, got {}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        assert_eq!(self.stdout, "", "stdout of a failure");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {:?}", self.stderr);
        assert!(lines[0].starts_with("overlayctl: "), "{:?}", lines[0]);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        lines[0]
    }
}

fn command(endpoint: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_overlayctl"));
    // Only what the test says: nothing from the environment of whoever runs the tests.
    command
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .arg("--etcd")
        .arg(endpoint)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn finish(child: Child, started: Instant) -> Run {
    let out = child.wait_with_output().expect("wait for overlayctl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// Runs `overlayctl --etcd <endpoint> args...`.
pub fn run_at(endpoint: &str, args: &[&str]) -> Run {
    let started = Instant::now();
    finish(
        command(endpoint, args).spawn().expect("start overlayctl"),
        started,
    )
}

pub fn ctl(etcd: &Etcd, args: &[&str]) -> Run {
    run_at(&etcd.endpoint(), args)
}

/// Starts every run at once and waits for all: concurrent operators.
pub fn ctl_parallel(etcd: &Etcd, runs: &[Vec<String>]) -> Vec<Run> {
    let started = Instant::now();
    let children: Vec<Child> = runs
        .iter()
        .map(|args| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            command(&etcd.endpoint(), &args)
                .spawn()
                .expect("start overlayctl")
        })
        .collect();
    children.into_iter().map(|c| finish(c, started)).collect()
}

pub fn keys() -> Keys {
    Keys::new(PREFIX)
}

/// Writes key-values straight into etcd, as the plugins and overlayd do.
pub fn put(etcd: &Etcd, kvs: Vec<(String, Vec<u8>)>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut store = Store::new(EtcdConfig::new(vec![etcd.endpoint()])).unwrap();
        for (key, value) in kvs {
            store
                .call(|mut c| {
                    let (key, value) = (key.clone(), value.clone());
                    async move { c.put(key, value, None).await }
                })
                .await
                .expect("put into etcd");
        }
    });
}

/// Deletes every key under `prefix`, as the plugins' DEL does for its records.
pub fn delete_prefix(etcd: &Etcd, prefix: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut store = Store::new(EtcdConfig::new(vec![etcd.endpoint()])).unwrap();
        store
            .call(|mut c| async move {
                c.delete(
                    prefix,
                    Some(store::etcd_client::DeleteOptions::new().with_prefix()),
                )
                .await
            })
            .await
            .expect("delete from etcd");
    });
}

pub fn endpoint(
    net: &str,
    container_id: &str,
    name: Option<&str>,
    node: &str,
    ip: &str,
) -> Endpoint {
    Endpoint {
        network: net.into(),
        container_id: container_id.into(),
        ifname: "eth0".into(),
        name: name.map(str::to_string),
        aliases: vec![],
        ips: vec![format!("{ip}/24").parse().unwrap()],
        mac: format!(
            "02:42:0a:00:00:{:02x}",
            ip.rsplit('.').next().unwrap().parse::<u8>().unwrap()
        )
        .parse()
        .unwrap(),
        node: node.into(),
        vtep: format!("192.168.205.{}", 10 + node.len()).parse().unwrap(),
        vni: Vni::FIRST_AUTO,
    }
}

pub fn put_endpoints(etcd: &Etcd, endpoints: &[Endpoint]) {
    let k = keys();
    put(
        etcd,
        endpoints
            .iter()
            .map(|e| {
                (
                    k.endpoint(&e.network, &e.container_id, &e.ifname),
                    records::encode(e),
                )
            })
            .collect(),
    );
}

pub fn put_node(etcd: &Etcd, name: &str, vtep: &str) {
    let node = Node {
        name: name.into(),
        vtep: vtep.parse().unwrap(),
        since: 1_700_000_000,
    };
    put(etcd, vec![(keys().node(name), records::encode(&node))]);
}

/// Marks addresses used, as etcd-ipam's claim transaction does.
pub fn put_addresses(etcd: &Etcd, net: &str, ips: &[&str]) {
    let k = keys();
    put(
        etcd,
        ips.iter()
            .enumerate()
            .map(|(i, ip)| {
                let holder = Holder {
                    container_id: format!("c{i}"),
                    ifname: "eth0".into(),
                    node: "node1".into(),
                };
                (k.ip(net, ip.parse().unwrap()), records::encode(&holder))
            })
            .collect(),
    );
}

/// A container id as runtimes make them: 64 hex digits.
pub fn container_id(seed: u8) -> String {
    format!("{seed:02x}").repeat(32)
}

/// The cells of a table's data rows (header left out).
pub fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// A VNI of a test.
pub fn vni(n: u32) -> Vni {
    Vni::new(n).unwrap()
}
