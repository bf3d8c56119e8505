//! One etcd connection at a time, with failover.
//!
//! etcd-client balances requests over all endpoints and, with one member dead, fails about half
//! of them (etcd-client#39). So the store talks to one endpoint, and on a transport failure moves
//! to the next, until the operation's time budget (`timeoutMs`) is spent.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use tokio::time::{timeout, Instant};

use crate::config::EtcdConfig;
use crate::error::StoreError;
use crate::keys::Keys;

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

    async fn connect(&self, index: usize, budget: Duration) -> Result<Client, etcd_client::Error> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(budget)
            .with_timeout(budget);
        if let (Some(user), Some(password)) = (&self.config.username, &self.config.password) {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(files) = &self.config.tls {
            options = options.with_tls(
                tls_options(files).map_err(|e| etcd_client::Error::InvalidArgs(e.to_string()))?,
            );
        }
        Client::connect([self.urls[index].as_str()], Some(options)).await
    }

    /// Runs `op` against a live endpoint, failing over on transport errors, within the time budget.
    /// Errors that a retry cannot fix (permission, invalid request) are returned at once.
    pub async fn call<T, F, Fut>(&mut self, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let budget = self.config.timeout();
        let deadline = Instant::now() + budget;
        let n = self.urls.len();
        let mut last = String::from("no attempt made");
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
            let client = match &self.connected {
                Some((c, _)) => c.clone(),
                None => match timeout(share, self.connect(index, share)).await {
                    Ok(Ok(c)) => {
                        self.connected = Some((c.clone(), index));
                        c
                    }
                    Ok(Err(e)) if !is_transient(&e) => {
                        return Err(StoreError::Refused(e.to_string()))
                    }
                    Ok(Err(e)) => {
                        last = format!("{}: {e}", self.urls[index]);
                        attempt += 1;
                        self.pause_after_full_round(attempt, n, deadline).await;
                        continue;
                    }
                    Err(_) => {
                        last = format!("{}: connect timed out", self.urls[index]);
                        attempt += 1;
                        continue;
                    }
                },
            };
            match timeout(share, op(client)).await {
                Ok(Ok(value)) => {
                    self.preferred = index;
                    return Ok(value);
                }
                Ok(Err(e)) if !is_transient(&e) => return Err(StoreError::Refused(e.to_string())),
                Ok(Err(e)) => last = format!("{}: {e}", self.urls[index]),
                Err(_) => {
                    last = format!(
                        "{}: no answer within {} ms",
                        self.urls[index],
                        share.as_millis()
                    )
                }
            }
            log::debug!("etcd attempt {attempt} failed: {last}");
            self.connected = None;
            attempt += 1;
            self.pause_after_full_round(attempt, n, deadline).await;
        }
        Err(StoreError::Unavailable {
            endpoints: self.urls.join(","),
            timeout_ms: self.config.timeout_ms,
            last,
        })
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

    /// All key-values under `prefix`, read in pages so that a large prefix does not make one huge response.
    pub async fn get_prefix(
        &mut self,
        prefix: &str,
    ) -> Result<Vec<etcd_client::KeyValue>, StoreError> {
        const PAGE: i64 = 2000;
        let end = prefix_end(prefix.as_bytes());
        let mut from = prefix.as_bytes().to_vec();
        let mut out = Vec::new();
        let mut revision = 0;
        loop {
            let mut options = etcd_client::GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE);
            if revision > 0 {
                // Every page at the revision of the first, so the listing is one consistent snapshot.
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
            out.extend(kvs);
            if !more {
                return Ok(out);
            }
        }
    }

    /// The record of a network made with overlayctl, if there is one.
    pub async fn network(
        &mut self,
        name: &str,
    ) -> Result<Option<crate::records::Network>, StoreError> {
        let key = self.keys.network(name);
        let resp = self.get(key, None).await?;
        resp.kvs()
            .first()
            .map(|kv| crate::records::decode(kv.key(), kv.value()))
            .transpose()
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

fn tls_options(files: &crate::config::TlsFiles) -> Result<TlsOptions, StoreError> {
    let read = |path: &String| {
        std::fs::read(path).map_err(|source| StoreError::Tls {
            path: path.clone(),
            source,
        })
    };
    let mut tls = TlsOptions::new();
    if let Some(ca) = &files.ca {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
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
