//! overlayctl against an etcd that speaks TLS only, requires client certificates and has
//! user/password authentication on, with the `--etcd-ca/--etcd-cert/--etcd-key/--etcd-user/
//! --etcd-password` flags.

mod common;

use std::time::Duration;

use common::*;
use model::records::{self, Node};
use serde_json::json;
use testutils::{Auth, Etcd};

const BUDGET_MS: u64 = 1500;

/// `--etcd-*` flags for `etcd`: its CA, its client certificate if `cert`, `password` for its user.
fn flags(etcd: &Etcd, auth: &Auth, password: &str, cert: bool) -> Vec<String> {
    let pki = etcd.pki().unwrap();
    let mut flags = vec![
        "--timeout-ms".to_string(),
        BUDGET_MS.to_string(),
        "--etcd-user".into(),
        auth.user.clone(),
        "--etcd-password".into(),
        password.into(),
        "--etcd-ca".into(),
        pki.ca.display().to_string(),
    ];
    for (flag, path) in [
        ("--etcd-cert", &pki.client_cert),
        ("--etcd-key", &pki.client_key),
    ]
    .into_iter()
    .filter(|_| cert)
    {
        flags.push(flag.into());
        flags.push(path.display().to_string());
    }
    flags
}

fn secured(etcd: &Etcd, flags: &[String], args: &[&str]) -> Run {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(flags.iter().map(String::as_str));
    run_at(&etcd.url(), &all)
}

/// A node record, written the way overlayd writes it (as the user, over TLS).
fn put_node_as(etcd: &Etcd, auth: &Auth, name: &str, vtep: &str) {
    let mut config = etcd.client_config();
    config.username = Some(auth.user.clone());
    config.password = Some(auth.password.clone());
    let node = Node {
        name: name.into(),
        vtep: vtep.parse().unwrap(),
        since: 1_700_000_000,
    };
    let key = keys().node(name);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut store = store::Store::new(config).unwrap();
            store
                .call(|mut c| {
                    let (key, value) = (key.clone(), records::encode(&node));
                    async move { c.put(key, value, None).await }
                })
                .await
                .expect("put the node record");
        });
}

#[test]
fn networks_and_nodes_over_tls_with_a_user() {
    let mut etcd = Etcd::start_tls();
    let auth = etcd.enable_auth();
    let good = flags(&etcd, &auth, &auth.password, true);
    secured(
        &etcd,
        &good,
        &["network", "create", "demo", "--subnet", "10.0.0.0/24"],
    )
    .ok();
    assert_eq!(
        etcd.keys(&format!("{PREFIX}/networks/")),
        vec![format!("{PREFIX}/networks/demo")]
    );
    let listed = secured(&etcd, &good, &["network", "ls", "-o", "json"]).json();
    assert_eq!(listed[0]["name"], "demo", "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    put_node_as(&etcd, &auth, "node1", "192.0.2.10");
    let nodes = secured(&etcd, &good, &["node", "ls", "-o", "json"]).json();
    assert_eq!(
        nodes,
        json!([{"name": "node1", "vtep": "192.0.2.10", "alive": true, "since": 1_700_000_000,
                "deadSince": null, "deadFor": null, "allocations": 0, "names": 0, "endpoints": 0}])
    );
    secured(&etcd, &good, &["ipam", "usage"]).ok();
    secured(&etcd, &good, &["network", "rm", "demo"]).ok();
    assert!(etcd.keys(&format!("{PREFIX}/networks/")).is_empty());
}

#[test]
fn a_wrong_password_or_certificate_is_one_clear_line_and_writes_nothing() {
    let mut etcd = Etcd::start_tls();
    let auth = etcd.enable_auth();
    let before = etcd.snapshot("/");
    let create = ["network", "create", "demo", "--subnet", "10.0.0.0/24"];

    let wrong_password = flags(&etcd, &auth, "wrong", true);
    let run = secured(&etcd, &wrong_password, &create);
    let line = run.fails();
    assert!(
        line.contains("refused user cni-overlay: etcdserver: authentication failed"),
        "{line}"
    );
    // In the words of the command line, not of a plugin's configuration.
    assert!(
        line.ends_with("(check --etcd-user and --etcd-password)"),
        "{line}"
    );

    // The CA only: etcd wants a client certificate.
    let no_cert = flags(&etcd, &auth, &auth.password, false);
    let run = secured(&etcd, &no_cert, &create);
    let line = run.fails();
    assert!(
        line.starts_with("overlayctl: etcd TLS handshake failed: https://127.0.0.1:"),
        "{line}"
    );
    assert!(
        line.contains("etcd requires a client certificate"),
        "{line}"
    );
    assert!(
        line.contains("set --etcd-cert and --etcd-key to one"),
        "{line}"
    );
    assert!(run.elapsed < Duration::from_millis(BUDGET_MS + 1000));

    let run = run_at(&etcd.endpoint(), &["--timeout-ms", "500", "network", "ls"]);
    let line = run.fails();
    assert!(
        line.contains("does etcd expect TLS? then https:// and --etcd-ca"),
        "{line}"
    );

    assert_eq!(etcd.snapshot("/"), before, "a refused command wrote");
}
