//! The store against a real etcd with TLS and client-certificate authentication, and with
//! etcd's user/password authentication: what connects, what fails over, and how each refusal is
//! told apart from a dead etcd.

use std::future::Future;
use std::time::{Duration, Instant};

use cni::CniError;
use store::{EtcdConfig, Store, StoreError, TlsFiles};
use testutils::{free_port, Etcd};

const PREFIX: &str = "/cni-overlay";

fn run<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn path(p: &std::path::Path) -> Option<String> {
    Some(p.display().to_string())
}

/// The configuration of a plugin for `etcd`: its CA and client certificate with TLS.
fn config(etcd: &Etcd) -> EtcdConfig {
    let mut config = EtcdConfig::new(vec![etcd.endpoint()]);
    config.tls = etcd.tls_files();
    config
}

async fn put(store: &mut Store, key: &str, value: &str) -> Result<(), StoreError> {
    store
        .call(|mut c| {
            let (key, value) = (key.to_string(), value.to_string());
            async move { c.put(key, value, None).await }
        })
        .await
        .map(|_| ())
}

async fn get(store: &mut Store, key: &str) -> Result<Option<String>, StoreError> {
    let resp = store.get(key, None).await?;
    Ok(resp
        .kvs()
        .first()
        .map(|kv| kv.value_str().unwrap().to_string()))
}

/// One write with `config`, and how long it took.
fn try_put(config: EtcdConfig) -> (Result<(), StoreError>, Duration) {
    let started = Instant::now();
    let result = run(async {
        let mut store = Store::new(config)?;
        put(&mut store, &format!("{PREFIX}/probe"), "x").await
    });
    (result, started.elapsed())
}

fn cni_error(e: StoreError) -> (u64, String) {
    let e = CniError::from(e);
    (e.code as u64, e.msg.clone())
}

#[test]
fn tls_with_a_client_certificate_reads_writes_and_fails_over() {
    let etcd = Etcd::start_tls();
    // Another etcd with a CA of its own: our CA does not trust it, so it is passed over like a
    // dead member.
    let stranger = Etcd::start_tls();
    let dead = format!("127.0.0.1:{}", free_port());
    let mut config = config(&etcd);
    config.endpoints = vec![dead, stranger.endpoint(), etcd.url()];
    config.timeout_ms = 3000;
    run(async {
        let mut store = Store::new(config).unwrap();
        for i in 0..5 {
            put(&mut store, &format!("{PREFIX}/k{i}"), "v")
                .await
                .unwrap();
        }
        assert_eq!(
            get(&mut store, &format!("{PREFIX}/k0")).await.unwrap(),
            Some("v".into())
        );
    });
    assert_eq!(etcd.keys(PREFIX).len(), 5);
    assert!(stranger.keys("/").is_empty());

    // The client key is SEC1 (`EC PRIVATE KEY`); a PKCS#8 one does as well: the server's own
    // certificate is good for client authentication too.
    let pki = etcd.pki().unwrap();
    let sec1 = std::fs::read_to_string(&pki.client_key).unwrap();
    assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"), "{sec1}");
    let pkcs8 = std::fs::read_to_string(&pki.server_key).unwrap();
    assert!(pkcs8.starts_with("-----BEGIN PRIVATE KEY-----"), "{pkcs8}");
    let mut config = self::config(&etcd);
    config.tls = Some(TlsFiles {
        ca: path(&pki.ca),
        cert: path(&pki.server_cert),
        key: path(&pki.server_key),
    });
    try_put(config).0.expect("a PKCS#8 key");
    assert_eq!(etcd.keys(PREFIX).len(), 6);
}

#[test]
fn refused_certificates_fail_at_once_with_11_and_say_which() {
    let etcd = Etcd::start_tls();
    let pki = etcd.pki().unwrap();
    let good = config(&etcd);
    let with = |tls: TlsFiles| EtcdConfig {
        tls: Some(tls),
        ..good.clone()
    };
    let mut localhost = good.clone();
    localhost.endpoints = vec![format!("localhost:{}", etcd.client_port)];
    let cases = [
        (
            "no client certificate",
            with(TlsFiles {
                ca: path(&pki.ca),
                cert: None,
                key: None,
            }),
            "etcd requires a client certificate",
        ),
        (
            "a client certificate of another CA",
            with(TlsFiles {
                ca: path(&pki.ca),
                cert: path(&pki.other_client_cert),
                key: path(&pki.other_client_key),
            }),
            "etcd refused our client certificate",
        ),
        (
            "the wrong CA",
            with(TlsFiles {
                ca: path(&pki.other_ca),
                cert: path(&pki.client_cert),
                key: path(&pki.client_key),
            }),
            "UnknownIssuer (etcd.tls.ca must be the CA that signed etcd's certificate)",
        ),
        (
            "a host the certificate is not for",
            localhost,
            "(the subjectAltName of etcd's certificate must hold the host of the endpoint URL)",
        ),
    ];
    for (case, config, expected) in cases {
        let (result, elapsed) = try_put(config);
        let (code, msg) = cni_error(result.expect_err(case));
        assert_eq!(code, 11, "{case}: {msg}");
        assert!(
            msg.starts_with("etcd TLS handshake failed: https://"),
            "{case}: {msg}"
        );
        assert!(msg.contains(expected), "{case}: {msg}");
        // Every endpoint answered: no need to spend the 5 s budget to know.
        assert!(elapsed < Duration::from_secs(1), "{case}: took {elapsed:?}");
    }
    assert!(etcd.keys("/").is_empty(), "a refused client wrote");

    // A dead etcd reads differently.
    let mut dead = good.clone();
    dead.endpoints = vec![format!("127.0.0.1:{}", free_port())];
    dead.timeout_ms = 500;
    let (result, _) = try_put(dead);
    let (code, msg) = cni_error(result.unwrap_err());
    assert_eq!(code, 11);
    assert!(msg.starts_with("etcd unreachable at https://"), "{msg}");
    assert!(msg.contains("Connection refused"), "{msg}");

    // Plain HTTP to a TLS-only etcd: unreachable, with a hint.
    let mut plain = EtcdConfig::new(vec![etcd.endpoint()]);
    plain.timeout_ms = 500;
    let (result, _) = try_put(plain);
    let (code, msg) = cni_error(result.unwrap_err());
    assert_eq!(code, 11);
    assert!(msg.contains("does etcd expect TLS?"), "{msg}");
}

#[test]
fn unusable_tls_files_are_a_configuration_error_before_any_connection() {
    let etcd = Etcd::start_tls();
    let pki = etcd.pki().unwrap();
    let good = config(&etcd);
    let with = |ca: &std::path::Path, cert: &std::path::Path, key: &std::path::Path| EtcdConfig {
        tls: Some(TlsFiles {
            ca: path(ca),
            cert: path(cert),
            key: path(key),
        }),
        ..good.clone()
    };
    let missing = pki.ca.with_file_name("missing.pem");
    let cases = [
        (
            "a missing CA",
            with(&missing, &pki.client_cert, &pki.client_key),
            "missing.pem",
        ),
        (
            "a key for a certificate",
            with(&pki.ca, &pki.client_cert, &pki.ca),
            "holds no PEM PRIVATE KEY",
        ),
        (
            "a key for a CA",
            with(&pki.client_key, &pki.client_cert, &pki.client_key),
            "etcd.tls.ca",
        ),
        (
            "a key that is not the certificate's",
            with(&pki.ca, &pki.client_cert, &pki.other_client_key),
            "is the key the certificate's",
        ),
        (
            "http:// with TLS",
            EtcdConfig {
                endpoints: vec![etcd.url().replace("https", "http")],
                ..good.clone()
            },
            "use https://",
        ),
        (
            "https:// without TLS",
            EtcdConfig {
                tls: None,
                endpoints: vec![etcd.url()],
                ..good.clone()
            },
            "is https:// but TLS is not configured: etcd.tls.ca must name the CA",
        ),
        (
            "TLS without a CA",
            EtcdConfig {
                tls: Some(TlsFiles {
                    ca: None,
                    cert: path(&pki.client_cert),
                    key: path(&pki.client_key),
                }),
                ..good.clone()
            },
            "etcd.tls.ca is required",
        ),
    ];
    for (case, config, expected) in cases {
        let (result, elapsed) = try_put(config);
        let (code, msg) = cni_error(result.expect_err(case));
        assert_eq!(code, 7, "{case}: {msg}");
        assert!(msg.contains(expected), "{case}: {msg}");
        assert!(elapsed < Duration::from_secs(1), "{case}: {elapsed:?}");
    }
    assert!(etcd.keys("/").is_empty());
}

#[test]
fn user_and_password() {
    let mut etcd = Etcd::start();
    let auth = etcd.enable_auth();
    let mut config = config(&etcd);
    config.username = Some(auth.user.clone());
    config.password = Some(auth.password.clone());
    let (result, _) = try_put(config.clone());
    result.expect("the user writes under its prefix");
    let before = etcd.snapshot("/");
    assert_eq!(before.len(), 1);

    let wrong = EtcdConfig {
        password: Some("wrong".into()),
        ..config.clone()
    };
    let (code, msg) = cni_error(try_put(wrong).0.unwrap_err());
    assert_eq!(code, 7, "{msg}");
    assert_eq!(
        msg,
        format!(
            "etcd at {} refused user cni-overlay: etcdserver: authentication failed, invalid user \
             ID or password (check etcd.username and etcd.password)",
            etcd.url()
        )
    );

    let anonymous = EtcdConfig::new(vec![etcd.endpoint()]);
    let (code, msg) = cni_error(try_put(anonymous).0.unwrap_err());
    assert_eq!(code, 7, "{msg}");
    assert!(msg.contains("requires authentication"), "{msg}");

    // The role grants /cni-overlay only.
    let elsewhere = EtcdConfig {
        prefix: "/other".into(),
        ..config.clone()
    };
    let result = run(async {
        let mut store = Store::new(elsewhere)?;
        put(&mut store, "/other/k", "v").await
    });
    let (code, msg) = cni_error(result.unwrap_err());
    assert_eq!(code, 7, "{msg}");
    assert!(
        msg.contains("permission denied (its role needs readwrite on the prefix /other)"),
        "{msg}"
    );
    assert_eq!(etcd.snapshot("/"), before, "a refused client wrote");
}

#[test]
fn credentials_for_an_etcd_without_authentication_are_not_an_error() {
    // As etcd's own client does: credentials may be configured before auth is turned on.
    let etcd = Etcd::start();
    let mut config = config(&etcd);
    config.username = Some("cni-overlay".into());
    config.password = Some("not checked".into());
    try_put(config).0.unwrap();
    assert_eq!(etcd.keys(PREFIX).len(), 1);
}

#[test]
fn tls_and_auth_together_and_the_certificate_as_the_user() {
    let mut etcd = Etcd::start_tls();
    let auth = etcd.enable_auth();
    let mut config = config(&etcd);
    // With --client-cert-auth, a request without a token is the certificate's CN's.
    try_put(config.clone())
        .0
        .expect("the certificate's CN is the user");
    config.username = Some(auth.user.clone());
    config.password = Some(auth.password.clone());
    try_put(config.clone()).0.expect("user and password");
    config.password = Some("wrong".into());
    let (code, msg) = cni_error(try_put(config).0.unwrap_err());
    assert_eq!(code, 7, "{msg}");
    assert!(msg.contains("authentication failed"), "{msg}");
    assert_eq!(etcd.keys(PREFIX).len(), 1);
}

#[test]
fn a_long_lived_store_outlives_its_token() {
    // Simple tokens expire after --auth-token-ttl idle seconds (300 by default) and die with a
    // restart of the member that issued them; overlayd holds its store for days.
    let mut etcd = Etcd::start_with(true, &["--auth-token-ttl", "1"]);
    let auth = etcd.enable_auth();
    let mut config = config(&etcd);
    config.username = Some(auth.user.clone());
    config.password = Some(auth.password.clone());
    run(async {
        let mut store = Store::new(config).unwrap();
        put(&mut store, &format!("{PREFIX}/a"), "1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        put(&mut store, &format!("{PREFIX}/b"), "2")
            .await
            .expect("after the token expired");
        etcd.restart();
        put(&mut store, &format!("{PREFIX}/c"), "3")
            .await
            .expect("after etcd restarted");
    });
    assert_eq!(etcd.keys(PREFIX).len(), 3);
}
