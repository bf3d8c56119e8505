//! The elected reclaimer's work: the countdown of each gone node, then its release.
//!
//! It follows `nodes/` (the live nodes, under their leases) and keeps the marks `gone/<node>`:
//! one is written when a node's lease key goes, and, at election and every [`CENSUS_EVERY`],
//! for every node that holds something without a lease (an overlayd dead before any reclaimer
//! saw it, or a host whose plugins run without one). A mark is never written while the node's
//! key exists, and the node deletes its own mark when it registers again. Once a mark is
//! `--reclaim-after` old (by its `since`, so that a new reclaimer continues the countdown rather
//! than restarting it), the node's holdings are released as `overlayctl node rm` does, each
//! transaction guarded by the seat and the mark, and every attachment released is logged.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use model::records::Gone;
use store::etcd_client::{Compare, CompareOp, Event, EventType, KeyValue};
use store::nodes::{self, Outcome, ReleaseOptions, Stopped};
use store::{EtcdConfig, Follower, Keys, Store};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::{sleep_until, Instant};

use super::{format_after, now_secs, Seat, Settings};
use crate::retry::Retry;

/// How often the reclaimer looks for nodes that hold something without a lease and a mark.
pub const CENSUS_EVERY: Duration = Duration::from_secs(300);

/// What the watch of `nodes/` tells the countdown.
#[derive(Debug)]
enum NodeEvent {
    /// The live nodes, after a fresh listing.
    Listed(BTreeSet<String>),
    /// A node's key went: its lease expired or was revoked.
    Gone(String),
    /// A node registered.
    Back(String),
}

/// Reclaims until the seat is lost; why it was.
pub async fn work(config: EtcdConfig, settings: Settings, seat: Seat) -> String {
    let (mut store, watch_store) = match (Store::new(config.clone()), Store::new(config)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return e.to_string(),
    };
    let (tx, rx) = unbounded_channel();
    let mut countdown = Countdown {
        guard: seat.guard(&store),
        fence: seat.fence,
        settings,
        live: None,
        marks: BTreeMap::new(),
        next_census: Instant::now(),
        retry: Retry::new("reclaim"),
    };
    tokio::select! {
        () = follow_nodes(watch_store, tx) => "the node watch ended".to_string(),
        why = countdown.run(&mut store, rx) => why,
    }
}

/// Lists and watches `nodes/` forever, telling `tx`.
async fn follow_nodes(mut store: Store, tx: UnboundedSender<NodeEvent>) {
    let prefix = store.keys().nodes();
    let mut follower = NodeFollower {
        tx,
        retry: Retry::new("reclaimer's node watch"),
    };
    loop {
        let lost = store.list_and_watch(&prefix, &mut follower).await;
        store.reset();
        follower.retry.failed(lost).await;
    }
}

struct NodeFollower {
    tx: UnboundedSender<NodeEvent>,
    retry: Retry,
}

fn node_of(kv: &KeyValue) -> String {
    Keys::last_segment(&String::from_utf8_lossy(kv.key())).to_string()
}

impl Follower for NodeFollower {
    fn listed(&mut self, kvs: Vec<KeyValue>, _revision: i64) {
        let _ = self
            .tx
            .send(NodeEvent::Listed(kvs.iter().map(node_of).collect()));
    }

    fn changed(&mut self, events: &[Event]) {
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let _ = self.tx.send(match event.event_type() {
                EventType::Put => NodeEvent::Back(node_of(kv)),
                EventType::Delete => NodeEvent::Gone(node_of(kv)),
            });
        }
    }

    fn watching(&mut self) {
        self.retry.succeeded();
    }
}

struct Countdown {
    /// Holds while we hold the seat.
    guard: Compare,
    fence: i64,
    settings: Settings,
    /// The live nodes; None until the first listing (until then every node may be alive).
    live: Option<BTreeSet<String>>,
    /// The marks as last read or written, with their mod revisions.
    marks: BTreeMap<String, (Gone, i64)>,
    next_census: Instant,
    retry: Retry,
}

/// Why the countdown must stop: the seat is someone else's, or etcd failed (retried).
enum Trouble {
    SeatLost,
    Etcd(store::StoreError),
}

impl From<store::StoreError> for Trouble {
    fn from(e: store::StoreError) -> Self {
        Trouble::Etcd(e)
    }
}

impl Countdown {
    async fn run(&mut self, store: &mut Store, mut events: UnboundedReceiver<NodeEvent>) -> String {
        loop {
            let (due_node, due_at) = match self.next_due() {
                Some((node, at)) => (node, at),
                None => (String::new(), Instant::now()),
            };
            let outcome = tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.on_event(store, event).await,
                    None => return "the node watch ended".into(),
                },
                () = sleep_until(due_at), if !due_node.is_empty() => {
                    self.reclaim(store, &due_node).await
                }
                () = sleep_until(self.next_census), if self.live.is_some() => {
                    self.census(store).await
                }
            };
            match outcome {
                Ok(()) => self.retry.succeeded(),
                Err(Trouble::SeatLost) => return "another overlayd holds the seat".into(),
                Err(Trouble::Etcd(e)) => {
                    store.reset();
                    self.retry.failed(e).await;
                    // Whatever was half done is read afresh.
                    if let Err(Trouble::SeatLost) = self.reload_marks(store).await {
                        return "another overlayd holds the seat".into();
                    }
                }
            }
        }
    }

    /// The node whose mark comes of age first, and when (none before the first listing).
    fn next_due(&self) -> Option<(String, Instant)> {
        let live = self.live.as_ref()?;
        let now_ms = unix_ms();
        let after_ms = self.settings.after.as_millis() as u64;
        self.marks
            .iter()
            .filter(|(node, _)| !live.contains(*node))
            .map(|(node, (gone, _))| {
                let due_ms = gone.since.saturating_mul(1000).saturating_add(after_ms);
                let wait = Duration::from_millis(due_ms.saturating_sub(now_ms));
                (node.clone(), Instant::now() + wait)
            })
            .min_by_key(|(_, at)| *at)
    }

    async fn on_event(&mut self, store: &mut Store, event: NodeEvent) -> Result<(), Trouble> {
        match event {
            NodeEvent::Listed(live) => {
                log::debug!("reclaimer: {} live nodes", live.len());
                self.live = Some(live);
                // At election (and after a lost watch): every holder without a lease is marked.
                self.census(store).await
            }
            NodeEvent::Gone(node) => {
                if let Some(live) = self.live.as_mut() {
                    live.remove(&node);
                }
                if !self.marks.contains_key(&node) {
                    self.mark(store, &node).await?;
                }
                Ok(())
            }
            NodeEvent::Back(node) => {
                if let Some(live) = self.live.as_mut() {
                    live.insert(node.clone());
                }
                // It deletes its own mark when it registers.
                if self.marks.remove(&node).is_some() {
                    log::info!("node {node} is back: not reclaimed");
                }
                Ok(())
            }
        }
    }

    /// Marks `node` gone now (unless it is live or marked already; then the mark found counts).
    async fn mark(&mut self, store: &mut Store, node: &str) -> Result<(), Trouble> {
        let now = now_secs();
        let guards = std::slice::from_ref(&self.guard);
        match nodes::mark_gone(store, node, now, guards).await? {
            Some((gone, revision)) => {
                if gone.since == now {
                    log::warn!(
                        "node {node} has no lease: what it holds is released in {} unless it \
                         comes back",
                        format_after(self.settings.after)
                    );
                } else {
                    log::info!(
                        "node {node} has had no lease since {} s ago (marked before)",
                        now.saturating_sub(gone.since)
                    );
                }
                self.marks.insert(node.to_string(), (gone, revision));
                Ok(())
            }
            None => self.check_seat(store).await,
        }
    }

    /// Marks every node that holds something without a lease; removes marks of live nodes.
    async fn census(&mut self, store: &mut Store) -> Result<(), Trouble> {
        self.next_census = Instant::now() + CENSUS_EVERY;
        // Only who holds something, page by page: at 100,000 endpoint records the census must
        // not hold them all at once (this overlayd also serves its own host).
        let holders = nodes::holders(store).await?;
        let alive = nodes::live(store).await?;
        let marks = nodes::marks(store).await?;
        self.marks = marks.clone();
        let live = self.live.clone().unwrap_or_default();
        for node in &holders {
            if live.contains(node) || alive.contains_key(node) || self.marks.contains_key(node) {
                continue;
            }
            self.mark(store, node).await?;
        }
        // A mark of a node that is alive is a leftover (written by a reclaimer of an older
        // release, say): it must not count down.
        for (node, (_, revision)) in marks.iter() {
            if alive.contains_key(node) {
                let guards = [self.guard.clone()];
                if nodes::unmark(store, node, Some(*revision), &guards).await? {
                    log::info!("node {node} is alive: its mark removed");
                }
                self.marks.remove(node);
            }
        }
        Ok(())
    }

    async fn reload_marks(&mut self, store: &mut Store) -> Result<(), Trouble> {
        self.marks = nodes::marks(store).await?;
        self.check_seat(store).await
    }

    /// Ok while the seat is still ours.
    async fn check_seat(&self, store: &mut Store) -> Result<(), Trouble> {
        let key = store.keys().reclaimer();
        let resp = store.get(key, None).await?;
        match resp.kvs().first() {
            Some(kv) if kv.create_revision() == self.fence => Ok(()),
            _ => Err(Trouble::SeatLost),
        }
    }

    /// Releases what `node` holds: its mark has come of age.
    async fn reclaim(&mut self, store: &mut Store, node: &str) -> Result<(), Trouble> {
        let Some((gone, revision)) = self.marks.get(node).cloned() else {
            return Ok(());
        };
        let holdings = nodes::holdings(store, node).await?;
        log::warn!(
            "node {node} has had no lease for {} s (--reclaim-after {}): releasing its {} \
             allocations and {} endpoint records",
            now_secs().saturating_sub(gone.since),
            format_after(self.settings.after),
            holdings.allocations(),
            holdings.endpoints()
        );
        let options = ReleaseOptions {
            batch: self.settings.batch,
            force: false,
            guards: vec![
                self.guard.clone(),
                Compare::mod_revision(store.keys().gone(node), CompareOp::Equal, revision),
            ],
        };
        let released = match nodes::release_node(store, node, &holdings, &options, |batch| {
            for a in batch {
                if a.released_any() {
                    log::info!("reclaimed from node {node}: {}", a.describe());
                }
                if a.allocation == Outcome::Changed || a.endpoint == Outcome::Changed {
                    log::info!(
                        "left to its new owner (changed since read): {}",
                        a.describe()
                    );
                }
            }
        })
        .await
        {
            Ok(released) => released,
            Err(e) => {
                crate::metrics::get().reclaimed(None);
                return Err(e.into());
            }
        };
        match released.stopped {
            None => {
                crate::metrics::get().reclaimed(Some(released_keys(&released)));
                let guards = [self.guard.clone()];
                nodes::unmark(store, node, Some(revision), &guards).await?;
                self.marks.remove(node);
                log::warn!("node {node} reclaimed: released {}", released.summary());
                Ok(())
            }
            Some(Stopped::NodeAlive) => {
                self.marks.remove(node);
                if let Some(live) = self.live.as_mut() {
                    live.insert(node.to_string());
                }
                log::warn!(
                    "node {node} came back during its release: stopped after releasing {}",
                    released.summary()
                );
                Ok(())
            }
            Some(Stopped::GuardFailed) => {
                log::info!(
                    "release of node {node} interrupted (its mark or the seat changed) after \
                     releasing {}",
                    released.summary()
                );
                self.reload_marks(store).await
            }
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The keys a release deleted: per allocation its owner record, addresses and name; per
/// endpoint record, the record.
fn released_keys(released: &nodes::Released) -> u64 {
    let keys: usize = (released.released())
        .map(|a| {
            let allocation = match a.allocation {
                Outcome::Released => 1 + a.addresses.len() + usize::from(a.name.is_some()),
                _ => 0,
            };
            allocation + usize::from(a.endpoint == Outcome::Released)
        })
        .sum();
    keys as u64
}
