//! etcd-ipam, the built binary driven as a runtime drives it, against an etcd that speaks TLS
//! only and requires client certificates (`--client-cert-auth`), and against one with etcd's
//! user/password authentication turned on, as operators coming from flannel and Calico run it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use testutils::{free_port, Etcd, Invocation, Output, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_etcd-ipam");
const PREFIX: &str = "/cni-overlay";
const TIMEOUT_MS: u64 = 2000;

/// A network whose ipam section carries `etcd` as given.
struct Net {
    etcd: Value,
    data: TempDir,
}

impl Net {
    fn new(etcd: Value) -> Net {
        Net {
            etcd,
            data: TempDir::new("ipam-tls"),
        }
    }

    /// An `etcd` object with TLS: `endpoints`, the CA `ca`, a client certificate and key if given.
    fn tls(
        endpoints: Value,
        ca: &std::path::Path,
        cert_key: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Value {
        let mut tls = json!({"ca": ca});
        if let Some((cert, key)) = cert_key {
            tls["cert"] = json!(cert);
            tls["key"] = json!(key);
        }
        json!({"endpoints": endpoints, "tls": tls, "timeoutMs": TIMEOUT_MS})
    }

    fn config(&self, version: &str) -> Value {
        json!({
            "cniVersion": version, "name": "secure", "type": "vxlan-overlay",
            "ipam": {
                "type": "etcd-ipam", "subnet": "10.9.0.0/24", "node": "node1",
                "dataDir": self.data.path(), "etcd": self.etcd,
            }
        })
    }

    fn invocation(&self, command: &str, container: &str) -> Invocation {
        Invocation::new(BIN, command)
            .attachment(container, &format!("/run/netns/{container}"), "eth0")
            .env(
                "CNI_ARGS",
                &format!("IgnoreUnknown=1;K8S_POD_NAME={container}"),
            )
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(&self.config("1.0.0"))
    }

    fn add(&self, container: &str) -> Output {
        self.invocation("ADD", container).run()
    }

    fn del(&self, container: &str) -> Output {
        self.invocation("DEL", container).without("CNI_NETNS").run()
    }

    fn check(&self, container: &str, prev: &Value) -> Output {
        let mut config = self.config("1.0.0");
        config["prevResult"] = prev.clone();
        self.invocation("CHECK", container).stdin(&config).run()
    }

    fn status(&self) -> Output {
        Invocation::new(BIN, "STATUS")
            .stdin(&self.config("1.1.0"))
            .run()
    }
}

fn pki(etcd: &Etcd) -> &testutils::Pki {
    etcd.pki().expect("a TLS etcd")
}

/// The TLS configuration an operator writes: CA, client certificate and key.
fn good_tls(etcd: &Etcd, endpoints: Value) -> Value {
    let pki = pki(etcd);
    Net::tls(
        endpoints,
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
    )
}

fn held_keys(etcd: &Etcd) -> BTreeMap<String, (String, i64)> {
    etcd.snapshot(&format!("{PREFIX}/ipam/secure/"))
}

/// A refused invocation: the code, the message (checked for `expected`), JSON on stdout, no
/// panic, within the time budget plus a second.
fn refused(out: &Output, code: u64, expected: &str) -> String {
    let e = out.err(code);
    let msg = e["msg"].as_str().unwrap().to_string();
    assert!(msg.contains(expected), "expected {expected:?} in {msg:?}");
    assert!(
        out.elapsed < Duration::from_millis(TIMEOUT_MS + 1000),
        "took {:?} with timeoutMs {TIMEOUT_MS}",
        out.elapsed
    );
    msg
}

#[test]
fn add_check_status_del_over_tls_with_a_client_certificate() {
    let etcd = Etcd::start_tls();
    // Without a scheme the endpoint is https:// because `tls` is set.
    let net = Net::new(good_tls(&etcd, json!([etcd.endpoint()])));
    let result = net.add("c1").ok();
    assert_eq!(result["ips"][0]["address"], "10.9.0.2/24");
    let keys: Vec<String> = held_keys(&etcd).into_keys().collect();
    assert_eq!(
        keys,
        vec![
            format!("{PREFIX}/ipam/secure/cursor/0"),
            format!("{PREFIX}/ipam/secure/ips/4/0a090002"),
            format!("{PREFIX}/ipam/secure/names/c1"),
            format!("{PREFIX}/ipam/secure/owners/c1/eth0"),
        ]
    );
    net.check("c1", &result).ok();
    net.status().ok();
    // The explicit https:// form, and a second container.
    let explicit = Net::new(good_tls(&etcd, json!([etcd.url()])));
    let second = explicit.add("c2").ok();
    assert_eq!(second["ips"][0]["address"], "10.9.0.3/24");
    net.del("c1").ok();
    explicit.del("c2").ok();
    let left: Vec<String> = held_keys(&etcd).into_keys().collect();
    assert_eq!(left, vec![format!("{PREFIX}/ipam/secure/cursor/0")]);
    net.check("c1", &result).err(107);
}

#[test]
fn a_dead_and_an_untrusted_endpoint_are_passed_over() {
    let etcd = Etcd::start_tls();
    // Another etcd with a CA of its own: it answers, but our CA does not trust it.
    let stranger = Etcd::start_tls();
    let dead = format!("127.0.0.1:{}", free_port());
    let net = Net::new(good_tls(
        &etcd,
        json!([dead, stranger.endpoint(), etcd.endpoint()]),
    ));
    for i in 0..3 {
        net.add(&format!("c{i}")).ok();
    }
    assert_eq!(etcd.keys(&format!("{PREFIX}/ipam/secure/owners/")).len(), 3);
    assert!(stranger.keys("/").is_empty());
}

#[test]
fn refused_certificates_give_11_saying_which_and_write_nothing() {
    let etcd = Etcd::start_tls();
    let good = Net::new(good_tls(&etcd, json!([etcd.endpoint()])));
    good.add("held").ok();
    let before = held_keys(&etcd);
    let pki = pki(&etcd);
    let endpoints = json!([etcd.endpoint()]);
    let cases = [
        (
            "no client certificate",
            Net::tls(endpoints.clone(), &pki.ca, None),
            "etcd requires a client certificate",
        ),
        (
            "a client certificate of another CA",
            Net::tls(
                endpoints.clone(),
                &pki.ca,
                Some((&pki.other_client_cert, &pki.other_client_key)),
            ),
            "etcd refused our client certificate",
        ),
        (
            "the wrong CA",
            Net::tls(
                endpoints.clone(),
                &pki.other_ca,
                Some((&pki.client_cert, &pki.client_key)),
            ),
            "etcd's certificate refused: invalid peer certificate: UnknownIssuer",
        ),
        (
            "a host the server certificate is not for",
            good_tls(&etcd, json!([format!("localhost:{}", etcd.client_port)])),
            "the subjectAltName of etcd's certificate must hold the host of the endpoint URL",
        ),
    ];
    for (case, config, expected) in cases {
        let net = Net::new(config);
        let msg = refused(&net.add("c1"), 11, expected);
        assert!(
            msg.starts_with("etcd TLS handshake failed: "),
            "{case}: {msg}"
        );
        // The allocation stays: DEL must not report success while it cannot release it.
        refused(&net.del("held"), 11, expected);
        let status = net.status();
        status.err(50);
        assert_eq!(held_keys(&etcd), before, "{case}: etcd changed");
    }

    // A down etcd reads differently: "unreachable", the connection refused.
    let down = Net::new(good_tls(
        &etcd,
        json!([format!("127.0.0.1:{}", free_port())]),
    ));
    let msg = refused(&down.add("c1"), 11, "Connection refused");
    assert!(msg.starts_with("etcd unreachable at https://"), "{msg}");
    good.del("held").ok();
}

#[test]
fn unusable_tls_files_give_7_at_once() {
    let etcd = Etcd::start_tls();
    let pki = pki(&etcd);
    let endpoints = json!([etcd.endpoint()]);
    let missing = pki.ca.with_file_name("missing.pem");
    for (config, expected) in [
        (
            Net::tls(
                endpoints.clone(),
                &missing,
                Some((&pki.client_cert, &pki.client_key)),
            ),
            "missing.pem",
        ),
        (
            Net::tls(
                endpoints.clone(),
                &pki.ca,
                Some((&pki.client_cert, &pki.ca)),
            ),
            "holds no PEM PRIVATE KEY",
        ),
        (
            Net::tls(
                endpoints.clone(),
                &pki.ca,
                Some((&pki.client_cert, &pki.other_client_key)),
            ),
            "is the key the certificate's",
        ),
    ] {
        let out = Net::new(config).add("c1");
        refused(&out, 7, expected);
        assert!(
            out.elapsed < Duration::from_millis(TIMEOUT_MS / 2),
            "{:?}",
            out.elapsed
        );
    }
    assert!(etcd.keys("/").is_empty());
}

#[test]
fn user_and_password() {
    let mut etcd = Etcd::start();
    let auth = etcd.enable_auth();
    let etcd_config = |password: &str| {
        json!({"endpoints": [etcd.endpoint()], "username": auth.user, "password": password,
               "timeoutMs": TIMEOUT_MS})
    };
    let net = Net::new(etcd_config(&auth.password));
    let result = net.add("c1").ok();
    assert_eq!(result["ips"][0]["address"], "10.9.0.2/24");
    let before = held_keys(&etcd);
    assert_eq!(before.len(), 4);

    let wrong = Net::new(etcd_config("wrong"));
    let expected = format!(
        "etcd at {} refused user cni-overlay: etcdserver: authentication failed, invalid user ID \
         or password (check etcd.username and etcd.password)",
        etcd.url()
    );
    let msg = refused(&wrong.add("c2"), 7, &expected);
    assert_eq!(msg, expected);
    refused(&wrong.del("c1"), 7, &expected);
    let anonymous = Net::new(json!({"endpoints": [etcd.endpoint()], "timeoutMs": TIMEOUT_MS}));
    refused(&anonymous.add("c2"), 7, "requires authentication");
    assert_eq!(
        held_keys(&etcd),
        before,
        "a refused ADD or DEL changed etcd"
    );

    net.check("c1", &result).ok();
    net.del("c1").ok();
    assert_eq!(held_keys(&etcd).len(), 1, "only the cursor is left");
}

#[test]
fn tls_and_user_and_password_together() {
    let mut etcd = Etcd::start_tls();
    let auth = etcd.enable_auth();
    let mut config = good_tls(&etcd, json!([etcd.url()]));
    config["username"] = json!(auth.user);
    config["password"] = json!(auth.password);
    let net = Net::new(config.clone());
    net.add("c1").ok();
    config["password"] = json!("wrong");
    refused(&Net::new(config).add("c2"), 7, "authentication failed");
    net.del("c1").ok();
    assert_eq!(held_keys(&etcd).len(), 1, "only the cursor is left");
}
