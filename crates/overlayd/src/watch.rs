//! Feeds the [`EndpointCache`] from etcd: a consistent listing of every endpoint record, then a
//! watch from the revision right after it. When the watch is lost (stream error or end, etcd
//! restarted, compacted past our revision, no answer to a liveness probe) it lists again and
//! starts over, so nothing that happened in between is missed.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use model::records::{self, Endpoint};
use store::client::prefix_end;
use store::etcd_client::{EventType, GetOptions, KeyValue, WatchOptions, WatchResponse};
use store::Store;
use tokio::time::{sleep_until, timeout, Instant};

use crate::endpoints::{EndpointCache, Endpoints};
use crate::error::Error;
use crate::retry::Retry;

/// A watch that has been quiet this long is asked for a progress report...
const PROBE_AFTER: Duration = Duration::from_secs(10);
/// ...and given up if that report does not come within this long. A partitioned etcd (no RST,
/// just silence) would otherwise leave us watching a dead stream forever.
const PROBE_ANSWER: Duration = Duration::from_secs(5);

/// Listing page size, so that a large cluster does not make one huge response.
const PAGE: i64 = 2000;

/// Runs until aborted; etcd being unreachable is retried, never fatal.
pub async fn run(mut store: Store, cache: EndpointCache) -> Result<(), Error> {
    let prefix = store.keys().all_endpoints();
    let mut retry = Retry::new("endpoint watch");
    loop {
        let revision = match list(&mut store, &prefix).await {
            Ok((revision, endpoints)) => {
                log::debug!(
                    "listed {} endpoint records at revision {revision}",
                    endpoints.len()
                );
                cache.reset(endpoints);
                revision
            }
            Err(e) => {
                store.reset();
                retry.failed(format!("listing endpoint records: {e}")).await;
                continue;
            }
        };
        let lost = follow(&mut store, &prefix, revision + 1, &cache, &mut retry).await;
        store.reset();
        retry.failed(format!("stream lost: {lost}")).await;
    }
}

/// Every endpoint record under `prefix` and the revision of that snapshot. Pages are read at the
/// revision of the first, so the listing is one consistent state to watch on from.
async fn list(store: &mut Store, prefix: &str) -> Result<(i64, Endpoints), Error> {
    let end = prefix_end(prefix.as_bytes());
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = 0;
    let mut endpoints = BTreeMap::new();
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let mut resp = store.get(from.clone(), Some(options)).await?;
        if revision == 0 {
            revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        }
        let more = resp.more();
        let kvs = resp.take_kvs();
        if let Some(last) = kvs.last() {
            from = last.key().to_vec();
            from.push(0);
        }
        for kv in &kvs {
            if let Some(endpoint) = decode(kv) {
                endpoints.insert(key_of(kv), endpoint);
            }
        }
        if !more || kvs.is_empty() {
            return Ok((revision, endpoints));
        }
    }
}

/// Watches from `start` and feeds the cache until the watch is lost; returns why.
async fn follow(
    store: &mut Store,
    prefix: &str,
    start: i64,
    cache: &EndpointCache,
    retry: &mut Retry,
) -> Error {
    let mut client = match store.client().await {
        Ok(client) => client,
        Err(e) => return e.into(),
    };
    let options = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_start_revision(start);
    let stream = match timeout(
        store.config().timeout(),
        client.watch(prefix.to_string(), Some(options)),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return e.into(),
        Err(_) => return Error::Stream("no answer to the watch request".into()),
    };
    let (mut requests, mut responses) = stream.split();
    let mut quiet_since = Instant::now();
    let mut probing = false;
    loop {
        let deadline = quiet_since + if probing { PROBE_ANSWER } else { PROBE_AFTER };
        tokio::select! {
            message = responses.next() => {
                let resp = match message {
                    Some(Ok(resp)) => resp,
                    Some(Err(e)) => return e.into(),
                    None => return Error::Stream("the watch stream ended".into()),
                };
                quiet_since = Instant::now();
                probing = false;
                if let Some(lost) = lost_reason(&resp) {
                    return Error::Stream(lost);
                }
                if resp.created() {
                    log::debug!("watching {prefix} from revision {start}");
                    retry.succeeded();
                }
                apply(cache, &resp);
            }
            _ = sleep_until(deadline) => {
                if probing {
                    return Error::Stream(format!(
                        "no answer to a progress request within {} s",
                        PROBE_ANSWER.as_secs()
                    ));
                }
                if let Err(e) = requests.request_progress().await {
                    return e.into();
                }
                probing = true;
                quiet_since = Instant::now();
            }
        }
    }
}

/// Why a response ends the watch, if it does: etcd cancels a watch whose start revision was
/// compacted away (or for other reasons it names), and sends nothing more on it.
fn lost_reason(resp: &WatchResponse) -> Option<String> {
    if resp.compact_revision() > 0 {
        return Some(format!(
            "revisions before {} were compacted",
            resp.compact_revision()
        ));
    }
    if resp.canceled() {
        return Some(format!("etcd canceled the watch: {}", resp.cancel_reason()));
    }
    None
}

fn apply(cache: &EndpointCache, resp: &WatchResponse) {
    for event in resp.events() {
        let Some(kv) = event.kv() else {
            continue;
        };
        let previous = event.prev_kv().and_then(decode);
        match event.event_type() {
            EventType::Put => match decode(kv) {
                Some(endpoint) => cache.put(key_of(kv), endpoint, previous),
                // Unreadable now: whatever it used to describe is no longer to be trusted.
                None => cache.delete(key_of(kv), previous),
            },
            EventType::Delete => cache.delete(key_of(kv), previous),
        }
    }
}

fn key_of(kv: &KeyValue) -> String {
    String::from_utf8_lossy(kv.key()).into_owned()
}

/// A record, or None (logged) when it is not a readable endpoint.
fn decode(kv: &KeyValue) -> Option<Endpoint> {
    match records::decode::<Endpoint>(kv.key(), kv.value()) {
        Ok(endpoint) => Some(endpoint),
        Err(e) => {
            log::warn!("ignoring {e}");
            None
        }
    }
}
