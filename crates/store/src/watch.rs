//! One list-then-watch for everyone who follows a key prefix (overlayd's endpoint records,
//! network records, nodes).
//!
//! A session lists the prefix in one consistent snapshot, hands it over whole, then watches from
//! the revision right after it and hands over every change in order. It ends, saying why, when the
//! watch is lost: the stream fails or ends, etcd cancels it or compacted past its start (the
//! changes in between are gone), or a quiet watch does not answer a progress request in time (a
//! partitioned etcd sends no RST, only silence). The caller then starts a new session, whose fresh
//! listing covers whatever happened meanwhile: nothing is ever missed, only seen again.

use std::time::Duration;

use etcd_client::{Event, KeyValue, WatchOptions, WatchResponse};
use futures::StreamExt;
use tokio::time::{sleep_until, timeout, Instant};

use crate::client::Store;
use crate::error::StoreError;

/// A watch that has been quiet this long is asked for a progress report...
pub const PROBE_AFTER: Duration = Duration::from_secs(10);
/// ...and given up if the report does not come within this long.
pub const PROBE_ANSWER: Duration = Duration::from_secs(5);

/// Whoever follows a prefix. Called in order: `listed` once per session, then `changed` for every
/// batch of events after it.
pub trait Follower {
    /// The whole prefix, as of `revision`: replace everything known with it.
    fn listed(&mut self, kvs: Vec<KeyValue>, revision: i64);
    /// Changes after the listing (puts and deletes, with the previous value when etcd has it).
    fn changed(&mut self, events: &[Event]);
    /// The watch is in place: the session is up (for the caller's retry bookkeeping).
    fn watching(&mut self) {}
}

impl Store {
    /// Lists `prefix` and follows it until the watch is lost; returns why. Never returns otherwise.
    pub async fn list_and_watch(
        &mut self,
        prefix: &str,
        follower: &mut impl Follower,
    ) -> StoreError {
        let (kvs, revision) = match self.get_prefix(prefix).await {
            Ok(listed) => listed,
            Err(e) => return e,
        };
        log::debug!(
            "listed {} keys under {prefix} at revision {revision}",
            kvs.len()
        );
        follower.listed(kvs, revision);
        self.watch_from(prefix, revision + 1, follower).await
    }

    async fn watch_from(
        &mut self,
        prefix: &str,
        start: i64,
        follower: &mut impl Follower,
    ) -> StoreError {
        let mut client = match self.client().await {
            Ok(client) => client,
            Err(e) => return e,
        };
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(start);
        let stream = match timeout(
            self.config().timeout(),
            client.watch(prefix.to_string(), Some(options)),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return lost(prefix, e.to_string()),
            Err(_) => return lost(prefix, "no answer to the watch request".into()),
        };
        // The request half must live as long as we read: dropping it ends the watch.
        let (mut requests, mut responses) = stream.split();
        let mut quiet_since = Instant::now();
        let mut probing = false;
        loop {
            let deadline = quiet_since + if probing { PROBE_ANSWER } else { PROBE_AFTER };
            tokio::select! {
                message = responses.next() => {
                    let resp = match message {
                        Some(Ok(resp)) => resp,
                        Some(Err(e)) => return lost(prefix, e.to_string()),
                        None => return lost(prefix, "the stream ended".into()),
                    };
                    quiet_since = Instant::now();
                    probing = false;
                    if let Some(reason) = end_of(&resp) {
                        return lost(prefix, reason);
                    }
                    if resp.created() {
                        log::debug!("watching {prefix} from revision {start}");
                        follower.watching();
                    }
                    if !resp.events().is_empty() {
                        follower.changed(resp.events());
                    }
                }
                _ = sleep_until(deadline) => {
                    if probing {
                        return lost(prefix, format!(
                            "no answer to a progress request within {} s",
                            PROBE_ANSWER.as_secs()
                        ));
                    }
                    if let Err(e) = requests.request_progress().await {
                        return lost(prefix, e.to_string());
                    }
                    probing = true;
                    quiet_since = Instant::now();
                }
            }
        }
    }
}

fn lost(prefix: &str, reason: String) -> StoreError {
    StoreError::WatchLost {
        prefix: prefix.to_string(),
        reason,
    }
}

/// Why a response ends the watch, if it does: etcd cancels a watch whose start revision was
/// compacted away (or for another reason it names), and sends nothing more on it.
fn end_of(resp: &WatchResponse) -> Option<String> {
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
