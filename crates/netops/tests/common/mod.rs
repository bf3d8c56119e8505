//! Shared by the integration tests: root check, uniquely named throwaway namespaces that are
//! removed on drop (also when the test fails), and running commands inside them.
//! Without root or a needed tool the tests fail; none passes without its prerequisites.

#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use netops::{create_named_netns, delete_named_netns, Netns};

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the netops tests create network namespaces and must run as root"
    );
}

static SEQUENCE: AtomicUsize = AtomicUsize::new(0);

/// "nt-<pid>-<tag><n>": unique across parallel test threads and concurrent test processes.
pub fn unique_name(tag: &str) -> String {
    format!(
        "nt-{}-{}{}",
        std::process::id(),
        tag,
        SEQUENCE.fetch_add(1, Ordering::SeqCst)
    )
}

/// A named network namespace for one test, deleted (by its exact name) on drop.
pub struct TestNs {
    pub name: String,
    pub ns: Netns,
}

impl TestNs {
    pub fn new(tag: &str) -> TestNs {
        require_root();
        let name = unique_name(tag);
        let ns =
            create_named_netns(&name).unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        TestNs { name, ns }
    }

    /// Runs a command inside the namespace with `ip netns exec` and returns its stdout;
    /// panics (fails the test) when it cannot run or exits non-zero.
    pub fn exec(&self, args: &[&str]) -> String {
        let out = self.exec_status(args);
        assert!(
            out.0,
            "`ip netns exec {} {}` failed: {}",
            self.name,
            args.join(" "),
            out.1
        );
        out.1
    }

    /// Like exec, but returns (success, stdout+stderr) instead of failing.
    pub fn exec_status(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run ip netns exec {} {}: {e}", self.name, args.join(" ")));
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// A veth pair `name`/`name`p with an address on `name`, both up: stands in for a host's
    /// underlay NIC. (A veth rather than a dummy: this kernel has no dummy driver.)
    pub fn add_underlay(&self, name: &str, cidr: &str) {
        let peer = format!("{name}p");
        self.exec(&[
            "ip", "link", "add", name, "type", "veth", "peer", "name", &peer,
        ]);
        self.exec(&["ip", "addr", "add", cidr, "dev", name]);
        self.exec(&["ip", "link", "set", name, "up"]);
        self.exec(&["ip", "link", "set", &peer, "up"]);
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if let Err(e) = delete_named_netns(&self.name) {
            eprintln!("cleanup: delete namespace {}: {e}", self.name);
        }
    }
}

/// A MAC as `ip` and `bridge` print it.
pub fn mac_text(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
