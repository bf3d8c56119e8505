//! Automatic reclaim: when a host dies, its addresses, names and endpoint records come free.
//!
//! The overlayds elect one reclaimer through etcd: the key `reclaimer`, created only if absent
//! (`create_revision == 0`) and bound to a lease of [`ELECTION_TTL`] that its holder keeps
//! alive. The others watch the key and campaign as soon as it goes, so a reclaimer that dies is
//! replaced within the TTL. The key's create revision is the leader's *fence*: every write of the
//! reclaimer (a mark, a release) is a transaction that requires the key to still have it, so a
//! reclaimer that lost its lease without noticing yet (paused, partitioned) can change nothing.
//! It also stops at once when its keep-alive fails ([`leader`]).
//!
//! etcd's own election service (v3election) would do the same; a plain key is used because the
//! fence is then just a compare in our own transactions, and waiting is our own watch instead of
//! a campaign call that blocks for as long as another leads (it does not fit the store's bounded,
//! failing-over calls).
//!
//! The reclaimer marks each node whose lease is gone (`gone/<node>`, [`model::records::Gone`]),
//! and releases what it holds ([`store::nodes::release_node`], as `overlayctl node rm`) once the
//! mark is `--reclaim-after` old. Until then nothing changes: a partition shorter than the grace
//! period is invisible.

pub mod leader;

use std::future::pending;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use model::records::{self, Reclaimer};
use store::etcd_client::{Compare, CompareOp, Event, EventType, KeyValue, PutOptions, Txn, TxnOp};
use store::{EtcdConfig, Follower, Store};
use tokio::sync::watch;
use tokio::time::timeout;

use crate::error::Error;
use crate::registration::{keep_alive, SessionEnd};
use crate::retry::Retry;

/// The TTL of the reclaimer's lease: how long a dead reclaimer keeps the seat.
pub const ELECTION_TTL: Duration = Duration::from_secs(3);
/// The default grace period.
pub const DEFAULT_AFTER: &str = "10m";

#[derive(Debug, Clone)]
pub struct Settings {
    /// This overlayd's node.
    pub node: String,
    /// The grace period; zero: automatic reclaim is off (this overlayd never campaigns).
    pub after: Duration,
    /// Attachments per transaction of a release.
    pub batch: usize,
}

/// A duration as `--reclaim-after` takes it: a number and a unit (`s`, `m`, `h`, `d`), several
/// such (`1h30m`), or `0` (off).
pub fn parse_after(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("{text:?} is not a duration such as 90s, 10m, 1h30m, or 0 (off)");
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() || text.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// A duration as [`parse_after`] reads it, for logs: `10m`, `1h30m`, `90s` stays `1m30s`.
pub fn format_after(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out += &format!("{}{unit}", secs / size);
            secs %= size;
        }
    }
    out
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The seat, once won.
#[derive(Debug, Clone, Copy)]
pub struct Seat {
    pub lease: i64,
    /// The create revision of the `reclaimer` key: every write of this reclaimer requires it.
    pub fence: i64,
}

impl Seat {
    /// The compare that holds only while this reclaimer still holds the seat.
    pub fn guard(&self, store: &Store) -> Compare {
        Compare::create_revision(store.keys().reclaimer(), CompareOp::Equal, self.fence)
    }
}

/// Campaigns for the seat whenever it is free and reclaims while holding it. Never returns,
/// unless automatic reclaim is off, when it waits forever.
pub async fn run(config: EtcdConfig, settings: Settings) -> Result<(), Error> {
    if settings.after.is_zero() {
        log::info!("automatic reclaim is off (--reclaim-after 0)");
        return pending().await;
    }
    let mut store = Store::new(config.clone())?;
    let mut retry = Retry::new("reclaimer election");
    loop {
        if let Err(e) = vacancy(&mut store).await {
            store.reset();
            retry.failed(e).await;
            continue;
        }
        match campaign(&mut store, &settings.node).await {
            Ok(Some(seat)) => {
                retry.succeeded();
                log::info!(
                    "elected reclaimer (lease {:x}, TTL {} s): nodes without a lease for {} are \
                     released",
                    seat.lease,
                    ELECTION_TTL.as_secs(),
                    format_after(settings.after)
                );
                let why = lead(&config, &mut store, &settings, seat, &mut retry).await;
                log::warn!("no longer the reclaimer: {why}");
            }
            // Another overlayd was quicker.
            Ok(None) => {}
            Err(e) => {
                store.reset();
                retry.failed(e).await;
            }
        }
    }
}

/// Returns once the seat is free (the `reclaimer` key does not exist).
async fn vacancy(store: &mut Store) -> Result<(), Error> {
    let key = store.keys().reclaimer();
    let (tx, mut rx) = watch::channel(false);
    let mut seat = Vacancy {
        key: key.clone(),
        vacant: tx,
    };
    tokio::select! {
        lost = store.list_and_watch(&key, &mut seat) => Err(lost.into()),
        () = until_vacant(&mut rx) => Ok(()),
    }
}

async fn until_vacant(rx: &mut watch::Receiver<bool>) {
    // The guard wait_for returns must not live across an await: it is not Send.
    let _ = rx.wait_for(|v| *v).await;
}

/// Follows the `reclaimer` key (and, harmlessly, any other key it is a prefix of).
struct Vacancy {
    key: String,
    vacant: watch::Sender<bool>,
}

impl Follower for Vacancy {
    fn listed(&mut self, kvs: Vec<KeyValue>, _revision: i64) {
        let held = kvs.iter().any(|kv| kv.key() == self.key.as_bytes());
        if held {
            if let Some(holder) = kvs
                .iter()
                .find(|kv| kv.key() == self.key.as_bytes())
                .and_then(|kv| records::decode::<Reclaimer>(kv.key(), kv.value()).ok())
            {
                log::debug!("the reclaimer is {} (since {})", holder.node, holder.since);
            }
        }
        self.vacant.send_replace(!held);
    }

    fn changed(&mut self, events: &[Event]) {
        for event in events {
            if event.kv().is_some_and(|kv| kv.key() == self.key.as_bytes()) {
                self.vacant
                    .send_replace(event.event_type() == EventType::Delete);
            }
        }
    }
}

/// One try for the seat: a lease, and the key under it if nobody holds it.
async fn campaign(store: &mut Store, node: &str) -> Result<Option<Seat>, Error> {
    let ttl = ELECTION_TTL.as_secs() as i64;
    let grant = store
        .call(|mut c| async move { c.lease_grant(ttl, None).await })
        .await?;
    let lease = grant.id();
    let key = store.keys().reclaimer();
    let value = records::encode(&Reclaimer {
        node: node.to_string(),
        since: now_secs(),
    });
    let txn = Txn::new()
        .when(vec![Compare::create_revision(
            key.clone(),
            CompareOp::Equal,
            0,
        )])
        .and_then(vec![TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(lease)),
        )]);
    match store.txn(txn).await {
        Ok(resp) if resp.succeeded() => Ok(Some(Seat {
            lease,
            fence: resp.header().map_or(0, |h| h.revision()),
        })),
        other => {
            revoke(store, lease).await;
            other.map(|_| None).map_err(Error::from)
        }
    }
}

/// Holds the seat: keeps the lease alive and reclaims, until either stops. Gives the seat up
/// (revokes the lease) so that another overlayd takes over at once. Why it ended.
async fn lead(
    config: &EtcdConfig,
    store: &mut Store,
    settings: &Settings,
    seat: Seat,
    retry: &mut Retry,
) -> String {
    let mut answered = || {};
    let end = tokio::select! {
        end = keep_alive(store, seat.lease, ELECTION_TTL, retry, &mut answered) => match end {
            SessionEnd::Expired => "its lease expired".to_string(),
            SessionEnd::Broken(e) => format!("keeping its lease alive failed: {e}"),
        },
        why = leader::work(config.clone(), settings.clone(), seat) => why,
    };
    store.reset();
    revoke(store, seat.lease).await;
    end
}

/// Revokes a lease if etcd answers within a second; otherwise it expires by itself.
async fn revoke(store: &mut Store, lease: i64) {
    let revoked = timeout(
        Duration::from_secs(1),
        store.call(|mut c| async move { c.lease_revoke(lease).await }),
    )
    .await;
    if !matches!(revoked, Ok(Ok(_))) {
        log::debug!("lease {lease:x} not revoked; it expires within its TTL");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_of_the_grace_period() {
        let secs = |t: &str| parse_after(t).map(|d| d.as_secs());
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("10m"), Ok(600));
        assert_eq!(secs("1h"), Ok(3600));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs("2d"), Ok(172_800));
        assert_eq!(secs(" 3s "), Ok(3));
        assert_eq!(secs("0"), Ok(0), "off");
        assert_eq!(secs("0s"), Ok(0));
        for bad in [
            "",
            "90",
            "10 m",
            "m",
            "1.5m",
            "-1s",
            "10x",
            "s10",
            "99999999999999999999d",
        ] {
            let e = parse_after(bad).unwrap_err();
            assert!(
                e.contains("is not a duration such as 90s, 10m"),
                "{bad}: {e}"
            );
        }
        for (d, text) in [
            (600, "10m"),
            (90, "1m30s"),
            (5400, "1h30m"),
            (0, "0"),
            (3, "3s"),
        ] {
            assert_eq!(format_after(Duration::from_secs(d)), text);
            assert_eq!(parse_after(text).unwrap().as_secs(), d);
        }
        assert_eq!(parse_after(DEFAULT_AFTER).unwrap().as_secs(), 600);
    }
}
