//! One etcd connection at a time, with failover.
//!
//! etcd-client balances requests over all endpoints and, with one member dead, fails about half
//! of them (etcd-client#39). So the store talks to one endpoint, and on a transport failure moves
//! to the next, until the operation's time budget (`timeoutMs`) is spent.
//!
//! TLS (rustls, through tonic) and etcd's user/password authentication are per connection, so
//! a failover connects and authenticates afresh. A certificate refused on either side is that
//! endpoint's failure (the next one is tried); refused by every endpoint, it is reported at once,
//! since waiting does not change a certificate. Refused credentials are final.

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, KeyValue, TlsOptions, Txn, TxnOp,
    TxnOpResponse,
};
use tokio::time::{timeout, Instant};

use crate::config::{EtcdConfig, SettingNames, TlsFiles};
use crate::error::StoreError;
use crate::keys::Keys;

/// Cheap to clone: a clone of a connected store shares its connection (etcd multiplexes
/// requests and watches over one), and reconnects on its own when that fails.
#[derive(Clone)]
pub struct Store {
    config: EtcdConfig,
    urls: Vec<String>,
    keys: Keys,
    /// The connected client and the endpoint index it talks to.
    connected: Option<(Client, usize)>,
    /// Where the next connection attempt starts: the last endpoint that answered.
    preferred: usize,
}

impl Store {
    /// Validates the configuration; connects lazily on the first request.
    pub fn new(config: EtcdConfig) -> Result<Self, StoreError> {
        config.validate()?;
        if let Some(files) = &config.tls {
            // Unreadable or wrong files are the configuration's fault: say so before connecting.
            tls_options(files, &config.names)?;
        }
        let urls = config.urls();
        let keys = Keys::new(&config.prefix);
        Ok(Store {
            config,
            urls,
            keys,
            connected: None,
            preferred: 0,
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// A client of endpoint `index`. Errors are final (configuration, credentials) or the
    /// endpoint's (a failure another endpoint or a later attempt may not have).
    async fn connect(&self, index: usize, budget: Duration) -> Result<Client, Failure> {
        let url = &self.urls[index];
        let options = |with_user: bool| -> Result<ConnectOptions, Failure> {
            let mut options = ConnectOptions::new()
                .with_connect_timeout(budget)
                .with_timeout(budget);
            if let (true, Some(user), Some(password)) =
                (with_user, &self.config.username, &self.config.password)
            {
                // A token can expire (etcd's simple tokens after 5 idle minutes, JWTs after their
                // TTL) and dies with the member that issued it: authenticate again, once.
                options = options
                    .with_user(user.clone(), password.clone())
                    .with_auto_token_refresh(true);
            }
            if let Some(files) = &self.config.tls {
                let tls = tls_options(files, &self.config.names).map_err(Failure::Final)?;
                options = options.with_tls(tls);
            }
            Ok(options)
        };
        let connected = match Client::connect([url.as_str()], Some(options(true)?)).await {
            // Like etcd's own clientv3: credentials for an etcd without authentication are not an
            // error (they may be set before an operator turns authentication on).
            Err(e) if self.config.username.is_some() && is_auth_not_enabled(&e) => {
                log::debug!("{url}: authentication is not enabled; connecting without it");
                Client::connect([url.as_str()], Some(options(false)?)).await
            }
            other => other,
        };
        connected.map_err(|e| match e {
            // Before any I/O: only building the TLS configuration fails this way (tonic tells no
            // more than "transport error").
            etcd_client::Error::TransportError(_) => Failure::Final(self.unusable_tls_files()),
            e => self.classify(index, &e),
        })
    }

    fn unusable_tls_files(&self) -> StoreError {
        let files = self.config.tls.as_ref();
        let name = |f: Option<&String>| f.map_or("-", |s| s.as_str()).to_string();
        let names = &self.config.names;
        StoreError::Config(match files.and_then(|f| f.cert.as_ref()) {
            Some(cert) => format!(
                "{}: the TLS library refused certificate {cert} with key {} (is the key the \
                 certificate's, and the certificate an X.509 one?)",
                names.tls_cert,
                name(files.and_then(|f| f.key.as_ref()))
            ),
            None => format!(
                "{}: the TLS library refused CA {}",
                names.tls_ca,
                name(files.and_then(|f| f.ca.as_ref()))
            ),
        })
    }

    /// Sorts an error of endpoint `index` into final or the endpoint's.
    fn classify(&self, index: usize, e: &etcd_client::Error) -> Failure {
        let url = &self.urls[index];
        if let Some(problem) = auth_problem(url, e, &self.config) {
            return Failure::Final(StoreError::Auth(problem));
        }
        if !is_transient(e) {
            return Failure::Final(StoreError::Refused(e.to_string()));
        }
        let has_cert = self.config.tls.as_ref().is_some_and(|t| t.cert.is_some());
        let (reason, tls) = describe(url, e, has_cert, &self.config.names);
        Failure::Endpoint { reason, tls }
    }

    /// Runs `op` against a live endpoint, failing over on transport errors, within the time budget.
    /// Errors that a retry cannot fix (credentials, permission, invalid request) are returned at
    /// once, and so is a certificate refused by every endpoint.
    pub async fn call<T, F, Fut>(&mut self, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let budget = self.config.timeout();
        let deadline = Instant::now() + budget;
        let n = self.urls.len();
        // Each endpoint's last failure, and whether it was a TLS handshake refused.
        let mut failures: Vec<Option<(String, bool)>> = vec![None; n];
        let mut attempt = 0usize;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            // Give each endpoint a fair share, so that one black-holed member cannot eat the budget.
            let share = (remaining / (n.saturating_sub(attempt % n)).max(1) as u32)
                .max(Duration::from_millis(200))
                .min(remaining);
            let index = match &self.connected {
                Some((_, i)) => *i,
                None => (self.preferred + attempt) % n,
            };
            let failure = match &self.connected {
                Some((c, _)) => Ok(c.clone()),
                None => match timeout(share, self.connect(index, share)).await {
                    Ok(Ok(c)) => {
                        self.connected = Some((c.clone(), index));
                        Ok(c)
                    }
                    Ok(Err(failure)) => Err(failure),
                    Err(_) => Err(Failure::Endpoint {
                        reason: "connect timed out".into(),
                        tls: false,
                    }),
                },
            };
            let failure = match failure {
                Ok(client) => match timeout(share, op(client)).await {
                    Ok(Ok(value)) => {
                        self.preferred = index;
                        return Ok(value);
                    }
                    Ok(Err(e)) => self.classify(index, &e),
                    Err(_) => Failure::Endpoint {
                        reason: format!("no answer within {} ms", share.as_millis()),
                        tls: false,
                    },
                },
                Err(failure) => failure,
            };
            let (reason, tls) = match failure {
                Failure::Final(e) => return Err(e),
                Failure::Endpoint { reason, tls } => (reason, tls),
            };
            log::debug!(
                "etcd attempt {attempt} failed: {}: {reason}",
                self.urls[index]
            );
            failures[index] = Some((reason, tls));
            self.connected = None;
            attempt += 1;
            if failures.iter().all(|f| matches!(f, Some((_, true)))) {
                return Err(StoreError::Handshake(self.reasons(&failures)));
            }
            self.pause_after_full_round(attempt, n, deadline).await;
        }
        Err(StoreError::Unavailable {
            endpoints: self.urls.join(","),
            timeout_ms: self.config.timeout_ms,
            reasons: if failures.iter().all(Option::is_none) {
                "no attempt made".into()
            } else {
                self.reasons(&failures)
            },
        })
    }

    /// `url: reason; url: reason` of the endpoints that failed.
    fn reasons(&self, failures: &[Option<(String, bool)>]) -> String {
        self.urls
            .iter()
            .zip(failures)
            .filter_map(|(url, f)| f.as_ref().map(|(reason, _)| format!("{url}: {reason}")))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// After every endpoint failed once, waits a little before the next round instead of spinning.
    async fn pause_after_full_round(&self, attempt: usize, n: usize, deadline: Instant) {
        if attempt.is_multiple_of(n) {
            let pause =
                Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
    }

    /// A transaction, with failover.
    pub async fn txn(
        &mut self,
        txn: etcd_client::Txn,
    ) -> Result<etcd_client::TxnResponse, StoreError> {
        self.call(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    /// A range read, with failover.
    pub async fn get(
        &mut self,
        key: impl Into<Vec<u8>>,
        options: Option<etcd_client::GetOptions>,
    ) -> Result<etcd_client::GetResponse, StoreError> {
        let key = key.into();
        self.call(|mut c| {
            let (key, options) = (key.clone(), options.clone());
            async move { c.get(key, options).await }
        })
        .await
    }

    /// All key-values under `prefix` and the revision they were read at, read in pages so that a
    /// large prefix does not make one huge response. Every page is read at the revision of the
    /// first, so the listing is one consistent snapshot: a watch from `revision + 1` misses nothing.
    pub async fn get_prefix(
        &mut self,
        prefix: &str,
    ) -> Result<(Vec<etcd_client::KeyValue>, i64), StoreError> {
        let mut out = Vec::new();
        let revision = self.get_prefix_pages(prefix, |kvs| out.extend(kvs)).await?;
        Ok((out, revision))
    }

    /// As [`Store::get_prefix`], handing over one page at a time, so that a reader that keeps
    /// little of each (the reclaimer's census of a large cluster) never holds the whole prefix.
    /// Returns the revision of the snapshot. A failure part way leaves `each` with what it got.
    pub async fn get_prefix_pages(
        &mut self,
        prefix: &str,
        mut each: impl FnMut(Vec<etcd_client::KeyValue>),
    ) -> Result<i64, StoreError> {
        const PAGE: i64 = 2000;
        let end = prefix_end(prefix.as_bytes());
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = 0;
        loop {
            let mut options = etcd_client::GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut resp = self.get(from.clone(), Some(options)).await?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            if let Some(last) = kvs.last() {
                from = last.key().to_vec();
                from.push(0);
            }
            let empty = kvs.is_empty();
            each(kvs);
            if !more || empty {
                return Ok(revision);
            }
        }
    }

    /// The record of a network made with overlayctl, if there is one.
    pub async fn network(
        &mut self,
        name: &str,
    ) -> Result<Option<model::records::Network>, StoreError> {
        let key = self.keys.network(name);
        let resp = self.get(key, None).await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| model::records::decode(kv.key(), kv.value()))
            .transpose()?)
    }

    /// Counts the keys of each `(start, end)` key range, with count-only reads batched into
    /// transactions: one round trip per hundred ranges, and no value is transferred.
    pub async fn count_ranges(
        &mut self,
        ranges: &[(String, Vec<u8>)],
    ) -> Result<Vec<u64>, StoreError> {
        let mut counts = Vec::with_capacity(ranges.len());
        for chunk in ranges.chunks(crate::nodes::MAX_OPS) {
            let reads: Vec<TxnOp> = chunk
                .iter()
                .map(|(start, end)| {
                    TxnOp::get(
                        start.clone(),
                        Some(GetOptions::new().with_range(end.clone()).with_count_only()),
                    )
                })
                .collect();
            let resp = self.txn(Txn::new().and_then(reads)).await?;
            counts.extend(resp.op_responses().into_iter().map(|r| match r {
                TxnOpResponse::Get(g) => g.count().max(0) as u64,
                _ => 0,
            }));
        }
        Ok(counts)
    }

    /// The client of the live endpoint, for streams (watch, lease keep-alive) that outlive one call.
    pub async fn client(&mut self) -> Result<Client, StoreError> {
        self.call(|c| async move { Ok(c) }).await
    }

    /// Forgets the current connection, so the next call connects afresh (after a stream broke).
    pub fn reset(&mut self) {
        if let Some((_, i)) = self.connected.take() {
            self.preferred = (i + 1) % self.urls.len();
        }
    }
}

/// The key just after every key that starts with `prefix`: etcd's range end for a prefix.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// How one attempt failed.
enum Failure {
    /// Retrying cannot help: returned as it is.
    Final(StoreError),
    /// This endpoint's trouble: try the next. `tls`: a certificate was refused, by us or by etcd.
    Endpoint { reason: String, tls: bool },
}

/// The TLS options, from PEM files read now (so that certificates renewed on disk are used by
/// the next connection). Files that hold no PEM block of the right kind are refused here, with
/// their name: the TLS library would only say "transport error" later.
fn tls_options(files: &TlsFiles, names: &SettingNames) -> Result<TlsOptions, StoreError> {
    let read = |setting: &str, path: &String, kinds: &[&str]| {
        let pem = std::fs::read(path).map_err(|source| StoreError::Tls {
            path: path.clone(),
            source,
        })?;
        let text = String::from_utf8_lossy(&pem);
        if !kinds
            .iter()
            .any(|kind| text.contains(&format!("-----BEGIN {kind}-----")))
        {
            return Err(StoreError::Config(format!(
                "{setting} {path} holds no PEM {}",
                kinds.join(" or ")
            )));
        }
        Ok(pem)
    };
    const CERT: &[&str] = &["CERTIFICATE"];
    const KEY: &[&str] = &["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"];
    let mut tls = TlsOptions::new();
    if let Some(ca) = &files.ca {
        tls = tls.ca_certificate(Certificate::from_pem(read(names.tls_ca, ca, CERT)?));
    }
    if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
        tls = tls.identity(Identity::from_pem(
            read(names.tls_cert, cert, CERT)?,
            read(names.tls_key, key, KEY)?,
        ));
    }
    Ok(tls)
}

/// etcd's answer to a token for an etcd without authentication.
fn is_auth_not_enabled(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == tonic_code::FailedPrecondition
            && s.message().contains("authentication is not enabled"))
}

/// What an operator must fix when etcd refused who we are or what we asked, if that is it.
fn auth_problem(url: &str, e: &etcd_client::Error, config: &EtcdConfig) -> Option<String> {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return None;
    };
    let message = status.message();
    let (user, password) = (config.names.username, config.names.password);
    let who = match &config.username {
        Some(user) => format!("user {user}"),
        None => "the user of the client certificate (its CN)".into(),
    };
    if message.contains("authentication failed") {
        Some(format!(
            "etcd at {url} refused {who}: {message} (check {user} and {password})"
        ))
    } else if message.contains("user name is empty") || message.contains("user name not found") {
        Some(format!(
            "etcd at {url} requires authentication: {message} (set {user} and {password}, or \
             use a client certificate whose CN is an etcd user)"
        ))
    } else if status.code() == tonic_code::PermissionDenied {
        Some(format!(
            "etcd at {url} denied {who}: {message} (its role needs readwrite on the prefix {})",
            config.prefix
        ))
    } else if status.code() == tonic_code::Unauthenticated {
        Some(format!(
            "etcd at {url} refused the token of {who}: {message}"
        ))
    } else {
        None
    }
}

/// One line on a transport failure, naming its root cause (tonic's own message is often just
/// "transport error"), with a hint for certificate trouble; and whether it is that.
fn describe(
    url: &str,
    e: &etcd_client::Error,
    has_cert: bool,
    names: &SettingNames,
) -> (String, bool) {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(status) => {
            parts.push(status.message().to_string());
            std::error::Error::source(status)
        }
        e => {
            parts.push(e.to_string());
            std::error::Error::source(e)
        }
    };
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    let mut reason = String::new();
    for part in parts {
        if part.is_empty() || part == "transport error" || reason.contains(&part) {
            continue;
        }
        if !reason.is_empty() {
            reason.push_str(": ");
        }
        reason.push_str(&part);
    }
    if reason.is_empty() {
        reason = e.to_string();
    }
    if reason.contains("invalid peer certificate") {
        let hint = if reason.contains("not valid for name") {
            "the subjectAltName of etcd's certificate must hold the host of the endpoint URL".into()
        } else if reason.contains("UnknownIssuer") || reason.contains("BadSignature") {
            format!(
                "{} must be the CA that signed etcd's certificate",
                names.tls_ca
            )
        } else {
            "etcd's certificate is not acceptable".into()
        };
        return (
            format!("etcd's certificate refused: {reason} ({hint})"),
            true,
        );
    }
    if let Some(alert) = reason.split("received fatal alert: ").nth(1) {
        let alert = alert.split([':', ' ', ')']).next().unwrap_or(alert);
        let about_certificate =
            alert.contains("Certificate") || alert == "UnknownCA" || alert == "AccessDenied";
        let line = match (about_certificate, has_cert) {
            (true, true) => format!(
                "etcd refused our client certificate (alert {alert}): {} must be signed by \
                 etcd's --trusted-ca-file",
                names.tls_cert
            ),
            (true, false) => format!(
                "etcd requires a client certificate (alert {alert}): set {} and {} to one \
                 signed by etcd's --trusted-ca-file",
                names.tls_cert, names.tls_key
            ),
            (false, _) => format!("etcd refused the TLS handshake (alert {alert})"),
        };
        return (line, true);
    }
    if url.starts_with("http://") && (reason.contains("broken pipe") || reason.contains("reset")) {
        reason.push_str(&format!(
            " (does etcd expect TLS? then https:// and {})",
            names.tls
        ));
    }
    (reason, false)
}

/// Failures another endpoint or a later attempt may not have.
fn is_transient(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) | E::EndpointError(_) => true,
        E::GRpcStatus(status) => matches!(
            status.code(),
            tonic_code::Unavailable
                | tonic_code::DeadlineExceeded
                | tonic_code::Unknown
                | tonic_code::Aborted
                | tonic_code::Cancelled
                | tonic_code::Internal
        ),
        _ => false,
    }
}

use tonic::Code as tonic_code;

/// The key range of every key that starts with `prefix`, as [`Store::count_ranges`] takes it.
pub fn prefix_range(prefix: &str) -> (String, Vec<u8>) {
    (prefix.to_string(), prefix_end(prefix.as_bytes()))
}

/// Decodes records, leaving out (with a warning) those that do not parse: one bad record must
/// not hide all the others from the operator who is trying to find out what is wrong.
pub fn decode_all<T: for<'de> serde::Deserialize<'de>>(kvs: &[KeyValue]) -> Vec<T> {
    kvs.iter()
        .filter_map(
            |kv| match model::records::decode::<T>(kv.key(), kv.value()) {
                Ok(record) => Some(record),
                Err(e) => {
                    log::warn!("{e}; left out");
                    None
                }
            },
        )
        .collect()
}
