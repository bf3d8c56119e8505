//! The one list-then-watch against a real etcd: a consistent listing, then every change in order,
//! and the end of a session when etcd goes away (the follower lists again in the next one).

use std::time::Duration;

use store::etcd_client::{Event, EventType, KeyValue};
use store::{EtcdConfig, Follower, Store, StoreError};
use testutils::Etcd;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

#[derive(Debug, PartialEq)]
enum Seen {
    Listed(Vec<String>),
    Put(String, String, Option<String>),
    Deleted(String, Option<String>),
    Watching,
}

struct Recorder(UnboundedSender<Seen>);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Follower for Recorder {
    fn listed(&mut self, kvs: Vec<KeyValue>, revision: i64) {
        assert!(revision > 0);
        let _ = self.0.send(Seen::Listed(
            kvs.iter()
                .map(|kv| format!("{}={}", text(kv.key()), text(kv.value())))
                .collect(),
        ));
    }

    fn changed(&mut self, events: &[Event]) {
        for e in events {
            let kv = e.kv().unwrap();
            let prev = e.prev_kv().map(|p| text(p.value()));
            let _ = self.0.send(match e.event_type() {
                EventType::Put => Seen::Put(text(kv.key()), text(kv.value()), prev),
                EventType::Delete => Seen::Deleted(text(kv.key()), prev),
            });
        }
    }

    fn watching(&mut self) {
        let _ = self.0.send(Seen::Watching);
    }
}

async fn next(rx: &mut UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no event within 5 s")
        .expect("the session ended")
}

async fn put(store: &mut Store, key: &str, value: &str) {
    let (key, value) = (key.to_string(), value.to_string());
    store
        .call(|mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(key, value, None).await }
        })
        .await
        .unwrap();
}

#[test]
fn lists_then_follows_every_change_and_ends_when_etcd_goes() {
    let mut etcd = Etcd::start();
    let config = EtcdConfig::new(vec![etcd.endpoint()]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut writer = Store::new(config.clone()).unwrap();
        put(&mut writer, "/w/a", "1").await;
        put(&mut writer, "/w/b", "2").await;
        put(&mut writer, "/other", "x").await;

        let (tx, mut rx) = unbounded_channel();
        let mut watcher = Store::new(config.clone()).unwrap();
        let session = tokio::spawn(async move {
            let mut recorder = Recorder(tx);
            watcher.list_and_watch("/w/", &mut recorder).await
        });
        assert_eq!(
            next(&mut rx).await,
            Seen::Listed(vec!["/w/a=1".into(), "/w/b=2".into()])
        );
        assert_eq!(next(&mut rx).await, Seen::Watching);
        put(&mut writer, "/w/a", "3").await;
        put(&mut writer, "/other", "y").await;
        writer
            .call(|mut c| async move { c.delete("/w/b", None).await })
            .await
            .unwrap();
        assert_eq!(
            next(&mut rx).await,
            Seen::Put("/w/a".into(), "3".into(), Some("1".into()))
        );
        assert_eq!(
            next(&mut rx).await,
            Seen::Deleted("/w/b".into(), Some("2".into()))
        );

        etcd.stop();
        let lost = tokio::time::timeout(Duration::from_secs(20), session)
            .await
            .expect("the session outlived etcd")
            .unwrap();
        assert!(
            matches!(
                lost,
                StoreError::WatchLost { .. } | StoreError::Unavailable { .. }
            ),
            "{lost}"
        );
    });
}
