//! A node's holdings and their release against a real etcd: grouped by attachment across
//! networks, released in guarded batches, never a new owner's key, refused while the node has a
//! lease, idempotent; the per-attachment release of DEL; the marks of gone nodes.

use std::collections::BTreeMap;
use std::future::Future;

use ipnetwork::IpNetwork;
use model::records::{self, AllocatedIp, Allocation, Endpoint, Holder};
use store::etcd_client::{Compare, CompareOp, Txn, TxnOp};
use store::nodes::{self, Outcome, ReleaseOptions, Stopped};
use store::release;
use store::{EtcdConfig, Store};
use testutils::Etcd;

const PREFIX: &str = "/cni-overlay";

fn run<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn store(etcd: &Etcd) -> Store {
    Store::new(EtcdConfig::new(vec![etcd.endpoint()])).unwrap()
}

/// An allocation written as etcd-ipam writes it: owner, address and name keys in one transaction.
async fn allocate(
    store: &mut Store,
    net: &str,
    node: &str,
    cid: &str,
    name: Option<&str>,
    ips: &[&str],
) -> bool {
    let keys = store.keys().clone();
    let holder = records::encode(&Holder {
        container_id: cid.into(),
        ifname: "eth0".into(),
        node: node.into(),
    });
    let allocation = Allocation {
        container_id: cid.into(),
        ifname: "eth0".into(),
        node: node.into(),
        name: name.map(str::to_string),
        ips: ips
            .iter()
            .map(|ip| AllocatedIp {
                address: ip.parse::<IpNetwork>().unwrap(),
                gateway: None,
            })
            .collect(),
    };
    let owner = keys.owner(net, cid, "eth0");
    let mut when = vec![Compare::create_revision(owner.clone(), CompareOp::Equal, 0)];
    let mut then = vec![TxnOp::put(owner, records::encode(&allocation), None)];
    let mut held: Vec<String> = allocation
        .ips
        .iter()
        .map(|ip| keys.ip(net, ip.address.ip()))
        .collect();
    held.extend(name.map(|n| keys.name(net, n)));
    for key in held {
        when.push(Compare::create_revision(key.clone(), CompareOp::Equal, 0));
        then.push(TxnOp::put(key, holder.clone(), None));
    }
    store
        .txn(Txn::new().when(when).and_then(then))
        .await
        .unwrap()
        .succeeded()
}

fn endpoint(net: &str, node: &str, cid: &str, ips: &[&str]) -> Endpoint {
    Endpoint {
        network: net.into(),
        container_id: cid.into(),
        ifname: "eth0".into(),
        name: Some(cid.into()),
        aliases: Vec::new(),
        ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        mac: "02:00:00:00:00:01".parse().unwrap(),
        node: node.into(),
        vtep: "192.0.2.1".parse().unwrap(),
        vni: model::Vni::new(1).unwrap(),
    }
}

async fn put(store: &mut Store, key: String, value: Vec<u8>) {
    store
        .call(|mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(key, value, None).await }
        })
        .await
        .unwrap();
}

async fn publish(store: &mut Store, e: &Endpoint) {
    let key = store
        .keys()
        .endpoint(&e.network, &e.container_id, &e.ifname);
    put(store, key, records::encode(e)).await;
}

/// Everything under the prefix: key -> (value, mod revision).
async fn dump(s: &mut Store) -> BTreeMap<String, (String, i64)> {
    let (kvs, _) = s.get_prefix(PREFIX).await.unwrap();
    kvs.into_iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                (kv.value_str().unwrap_or("").to_string(), kv.mod_revision()),
            )
        })
        .collect()
}

/// n1 and n2 with allocations and endpoint records in three networks whose names sort around
/// the separator (`a-x` before `a`'s keys), and a network with only a cursor.
async fn populate(s: &mut Store) {
    assert!(
        allocate(
            s,
            "a",
            "n2",
            "c1",
            Some("web-0.prod"),
            &["10.0.0.2/24", "fd00::2/64"]
        )
        .await
    );
    assert!(allocate(s, "a", "n2", "c2", None, &["10.0.0.3/24"]).await);
    assert!(allocate(s, "a", "n1", "c3", Some("db"), &["10.0.0.4/24"]).await);
    assert!(allocate(s, "a-x", "n2", "c4", Some("x"), &["10.9.0.2/24"]).await);
    assert!(allocate(s, "b", "n1", "c5", None, &["10.1.0.2/24"]).await);
    publish(
        s,
        &endpoint("a", "n2", "c1", &["10.0.0.2/24", "fd00::2/64"]),
    )
    .await;
    publish(s, &endpoint("a", "n1", "c3", &["10.0.0.4/24"])).await;
    // host-local as IPAM: an endpoint record without an allocation.
    publish(s, &endpoint("hl", "n2", "c6", &["10.7.0.2/24"])).await;
    let cursor = s.keys().cursor("empty", 0);
    put(s, cursor, b"10.5.0.9".to_vec()).await;
}

#[test]
fn holdings_are_grouped_by_attachment_across_networks() {
    let etcd = Etcd::start();
    let mut s = store(&etcd);
    run(async {
        populate(&mut s).await;
        // In key order: `ipam/a-x/` sorts before `ipam/a/` ('-' before '/').
        assert_eq!(
            nodes::ipam_networks(&mut s).await.unwrap(),
            ["a-x", "a", "b", "empty"]
        );
        let n2 = nodes::holdings(&mut s, "n2").await.unwrap();
        let ids: Vec<(String, String, bool, bool)> = n2
            .attachments
            .iter()
            .map(|h| {
                (
                    h.network.clone(),
                    h.container_id.clone(),
                    h.allocation.is_some(),
                    h.endpoint.is_some(),
                )
            })
            .collect();
        assert_eq!(
            ids,
            [
                ("a".into(), "c1".into(), true, true),
                ("a".into(), "c2".into(), true, false),
                ("a-x".into(), "c4".into(), true, false),
                ("hl".into(), "c6".into(), false, true),
            ]
        );
        assert_eq!((n2.allocations(), n2.names(), n2.endpoints()), (3, 2, 2));
        assert_eq!(n2.attachments[0].name(), Some("web-0.prod"));
        assert_eq!(n2.attachments[3].addresses()[0].to_string(), "10.7.0.2/24");
        let census = nodes::census(&mut s).await.unwrap();
        assert_eq!(census.nodes(), ["n1", "n2"]);
        assert_eq!(census.holdings["n1"].allocations(), 2);
        assert!(census.live.is_empty() && census.marks.is_empty());
    });
}

#[test]
fn a_node_is_released_whole_once_and_nobody_else_is_touched() {
    let etcd = Etcd::start();
    let mut s = store(&etcd);
    run(async {
        populate(&mut s).await;
        let before = dump(&mut s).await;
        let holdings = nodes::holdings(&mut s, "n2").await.unwrap();
        let mut heard = 0;
        let options = ReleaseOptions {
            batch: 1,
            ..ReleaseOptions::default()
        };
        let released = nodes::release_node(&mut s, "n2", &holdings, &options, |b| heard += b.len())
            .await
            .unwrap();
        assert_eq!(heard, 4, "one transaction per attachment, each reported");
        assert_eq!(released.stopped, None);
        assert_eq!(released.released().count(), 4);
        assert_eq!(released.changed().count(), 0);
        assert_eq!(
            released.summary(),
            "3 allocations (2 names), 2 endpoint records"
        );
        assert_eq!(
            released.attachments[0].addresses,
            ["10.0.0.2/24", "fd00::2/64"]
        );
        assert_eq!(released.attachments[3].allocation, Outcome::None);

        let after = dump(&mut s).await;
        let gone: Vec<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
        let k = s.keys().clone();
        let mut expected = vec![
            k.owner("a", "c1", "eth0"),
            k.ip("a", "10.0.0.2".parse().unwrap()),
            k.ip("a", "fd00::2".parse().unwrap()),
            k.name("a", "web-0.prod"),
            k.endpoint("a", "c1", "eth0"),
            k.owner("a", "c2", "eth0"),
            k.ip("a", "10.0.0.3".parse().unwrap()),
            k.owner("a-x", "c4", "eth0"),
            k.ip("a-x", "10.9.0.2".parse().unwrap()),
            k.name("a-x", "x"),
            k.endpoint("hl", "c6", "eth0"),
        ];
        expected.sort();
        let mut gone: Vec<String> = gone.into_iter().cloned().collect();
        gone.sort();
        assert_eq!(gone, expected);
        for (key, value) in &after {
            assert_eq!(before.get(key), Some(value), "{key} changed");
        }
        // Idempotent: nothing is left, and a second run says so.
        let left = nodes::holdings(&mut s, "n2").await.unwrap();
        assert!(left.is_empty());
        let again = nodes::release_node(&mut s, "n2", &left, &options, |_| {})
            .await
            .unwrap();
        assert!(again.attachments.is_empty() && again.stopped.is_none());
        assert_eq!(dump(&mut s).await, after);
    });
}

#[test]
fn a_key_taken_by_a_new_owner_since_the_reading_is_left_to_it() {
    let etcd = Etcd::start();
    let mut s = store(&etcd);
    run(async {
        populate(&mut s).await;
        let holdings = nodes::holdings(&mut s, "n2").await.unwrap();
        // Between the reading and the release: c1 is released (its DEL after all) and a new
        // container on n1 takes its address and its name; c6's record is rewritten.
        let freed = release::release_allocation(&mut s, "a", "c1", "eth0", Some("n2"))
            .await
            .unwrap();
        assert_eq!(freed.unwrap().name.as_deref(), Some("web-0.prod"));
        assert!(
            allocate(
                &mut s,
                "a",
                "n1",
                "new",
                Some("web-0.prod"),
                &["10.0.0.2/24"]
            )
            .await
        );
        publish(&mut s, &endpoint("hl", "n2", "c6", &["10.7.0.3/24"])).await;
        let new_owner: BTreeMap<String, (String, i64)> = dump(&mut s)
            .await
            .into_iter()
            .filter(|(k, _)| {
                k.contains("/new/") || k.ends_with("0a000002") || k.ends_with("/web-0.prod")
            })
            .collect();
        assert_eq!(new_owner.len(), 3, "{new_owner:?}");

        let released =
            nodes::release_node(&mut s, "n2", &holdings, &ReleaseOptions::default(), |_| {})
                .await
                .unwrap();
        let outcomes: Vec<(String, Outcome, Outcome)> = released
            .attachments
            .iter()
            .map(|a| (a.container_id.clone(), a.allocation, a.endpoint))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("c1".into(), Outcome::Changed, Outcome::Released),
                ("c2".into(), Outcome::Released, Outcome::None),
                ("c4".into(), Outcome::Released, Outcome::None),
                ("c6".into(), Outcome::None, Outcome::Changed),
            ]
        );
        let after = dump(&mut s).await;
        for (key, value) in &new_owner {
            assert_eq!(after.get(key), Some(value), "the new owner's {key}");
        }
        // The rewritten record is released by the next pass.
        let left = nodes::holdings(&mut s, "n2").await.unwrap();
        assert_eq!(left.attachments.len(), 1);
        let again = nodes::release_node(&mut s, "n2", &left, &ReleaseOptions::default(), |_| {})
            .await
            .unwrap();
        assert_eq!(again.released().count(), 1);
    });
}

#[test]
fn a_node_with_a_lease_is_released_only_when_forced() {
    let etcd = Etcd::start();
    let mut s = store(&etcd);
    run(async {
        populate(&mut s).await;
        let node = s.keys().node("n2");
        put(
            &mut s,
            node,
            br#"{"name":"n2","vtep":"192.0.2.1","since":1}"#.to_vec(),
        )
        .await;
        let before = dump(&mut s).await;
        let holdings = nodes::holdings(&mut s, "n2").await.unwrap();
        let refused =
            nodes::release_node(&mut s, "n2", &holdings, &ReleaseOptions::default(), |_| {})
                .await
                .unwrap();
        assert_eq!(refused.stopped, Some(Stopped::NodeAlive));
        assert!(refused.attachments.is_empty());
        assert_eq!(dump(&mut s).await, before);

        // A caller's guard that fails stops it just the same, telling which.
        let mut guarded = ReleaseOptions {
            force: true,
            ..ReleaseOptions::default()
        };
        guarded.guards.push(Compare::version(
            format!("{PREFIX}/reclaimer"),
            CompareOp::Greater,
            0,
        ));
        let stopped = nodes::release_node(&mut s, "n2", &holdings, &guarded, |_| {})
            .await
            .unwrap();
        assert_eq!(stopped.stopped, Some(Stopped::GuardFailed));
        assert_eq!(dump(&mut s).await, before);

        let forced = ReleaseOptions {
            force: true,
            ..ReleaseOptions::default()
        };
        let released = nodes::release_node(&mut s, "n2", &holdings, &forced, |_| {})
            .await
            .unwrap();
        assert_eq!((released.stopped, released.released().count()), (None, 4));
    });
}

#[test]
fn big_holdings_go_in_batches_under_etcds_operation_limit() {
    let etcd = Etcd::start();
    let mut s = store(&etcd);
    run(async {
        for i in 0..240u32 {
            let cid = format!("c{i}");
            let v4 = format!("10.{}.{}.{}/8", i / 65_536, (i / 256) % 256, i % 256 + 1);
            let v6 = format!("fd00::{:x}/64", i + 1);
            assert!(allocate(&mut s, "big", "n2", &cid, Some(&cid), &[&v4, &v6]).await);
            publish(&mut s, &endpoint("big", "n2", &cid, &[&v4])).await;
        }
        let holdings = nodes::holdings(&mut s, "n2").await.unwrap();
        assert_eq!(holdings.attachments.len(), 240);
        let mut batches = Vec::new();
        let options = ReleaseOptions {
            batch: 50,
            ..ReleaseOptions::default()
        };
        let released =
            nodes::release_node(&mut s, "n2", &holdings, &options, |b| batches.push(b.len()))
                .await
                .unwrap();
        assert_eq!(released.released().count(), 240);
        assert_eq!(
            batches, [48; 5],
            "2 top-level operations each, and the deepest nested one"
        );
        let left = dump(&mut s).await;
        assert!(
            left.is_empty(),
            "{:?}",
            left.keys().take(5).collect::<Vec<_>>()
        );
    });
}

#[test]
fn del_releases_only_its_own_nodes_allocation_and_record() {
    let etcd = Etcd::start();
    let mut s = store(&etcd);
    run(async {
        populate(&mut s).await;
        let before = dump(&mut s).await;
        // The same container id on another node: left alone.
        assert_eq!(
            release::release_allocation(&mut s, "a", "c1", "eth0", Some("n1"))
                .await
                .unwrap(),
            None
        );
        assert!(!release::release_endpoint(&mut s, "a", "c1", "eth0", "n1")
            .await
            .unwrap());
        assert_eq!(dump(&mut s).await, before);
        assert!(release::release_endpoint(&mut s, "a", "c1", "eth0", "n2")
            .await
            .unwrap());
        assert!(release::release_allocation(&mut s, "a", "c1", "eth0", None)
            .await
            .unwrap()
            .is_some());
        // Nothing held: nothing to do, no error.
        assert!(
            release::release_allocation(&mut s, "a", "c1", "eth0", Some("n2"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(!release::release_endpoint(&mut s, "a", "c1", "eth0", "n2")
            .await
            .unwrap());
    });
}

/// The store's current revision.
async fn revision(s: &mut Store) -> i64 {
    let (_, revision) = s.get_prefix(PREFIX).await.unwrap();
    revision
}

#[test]
fn an_attachment_is_released_whole_in_one_revision_and_only_its_nodes() {
    let etcd = Etcd::start();
    let mut s = store(&etcd);
    run(async {
        populate(&mut s).await;
        let before = dump(&mut s).await;
        let released = release::release_attachment(&mut s, "a", "a", "c1", "eth0", "n1")
            .await
            .unwrap();
        assert_eq!(released, release::Released::default(), "c1 is n2's");
        assert_eq!(dump(&mut s).await, before);

        let r0 = revision(&mut s).await;
        let released = release::release_attachment(&mut s, "a", "a", "c1", "eth0", "n2")
            .await
            .unwrap();
        assert!(released.endpoint);
        let allocation = released.allocation.expect("the allocation");
        assert_eq!(allocation.name.as_deref(), Some("web-0.prod"));
        assert_eq!(revision(&mut s).await, r0 + 1, "one write for both");
        let after = dump(&mut s).await;
        let gone: Vec<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
        assert_eq!(
            gone.len(),
            5,
            "the record, the owner, 2 addresses and the name: {gone:?}"
        );
        assert!(after.iter().all(|(k, v)| before.get(k) == Some(v)));

        // Again: nothing held, nothing written.
        let released = release::release_attachment(&mut s, "a", "a", "c1", "eth0", "n2")
            .await
            .unwrap();
        assert_eq!(released, release::Released::default());
        assert_eq!(revision(&mut s).await, r0 + 1);

        // An allocation without a record (a DEL cut short before), and a record without one
        // (another IPAM): each goes alone.
        let released = release::release_attachment(&mut s, "a", "a", "c2", "eth0", "n2")
            .await
            .unwrap();
        assert!(!released.endpoint && released.allocation.is_some());
        let released = release::release_attachment(&mut s, "hl", "hl", "c6", "eth0", "n2")
            .await
            .unwrap();
        assert!(released.endpoint && released.allocation.is_none());
        // An unreadable record is nobody's: removed by this node's DEL.
        let key = s.keys().endpoint("a", "c9", "eth0");
        put(&mut s, key.clone(), b"not json".to_vec()).await;
        let released = release::release_attachment(&mut s, "a", "a", "c9", "eth0", "n2")
            .await
            .unwrap();
        assert!(released.endpoint);
        assert!(!dump(&mut s).await.contains_key(&key));
    });
}

#[test]
fn marks_are_written_once_never_for_a_live_node_and_removed_by_revision() {
    let etcd = Etcd::start();
    let mut s = store(&etcd);
    run(async {
        let (mark, revision) = nodes::mark_gone(&mut s, "n2", 100, &[])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(mark.since, 100);
        // A second mark keeps the first one's time: the countdown continues.
        let (again, same) = nodes::mark_gone(&mut s, "n2", 200, &[])
            .await
            .unwrap()
            .unwrap();
        assert_eq!((again.since, same), (100, revision));
        assert_eq!(nodes::marks(&mut s).await.unwrap()["n2"], (mark, revision));

        let node = s.keys().node("n3");
        put(
            &mut s,
            node,
            br#"{"name":"n3","vtep":"192.0.2.1","since":1}"#.to_vec(),
        )
        .await;
        assert_eq!(
            nodes::mark_gone(&mut s, "n3", 100, &[]).await.unwrap(),
            None
        );
        let failing = Compare::version(format!("{PREFIX}/reclaimer"), CompareOp::Greater, 0);
        assert_eq!(
            nodes::mark_gone(&mut s, "n4", 100, std::slice::from_ref(&failing))
                .await
                .unwrap(),
            None
        );
        let marked: Vec<String> = dump(&mut s)
            .await
            .into_keys()
            .filter(|k| k.contains("/gone/"))
            .collect();
        assert_eq!(marked, [format!("{PREFIX}/gone/n2")]);

        assert!(!nodes::unmark(&mut s, "n2", Some(revision + 1), &[])
            .await
            .unwrap());
        assert!(!nodes::unmark(&mut s, "n2", Some(revision), &[failing])
            .await
            .unwrap());
        assert!(nodes::unmark(&mut s, "n2", Some(revision), &[])
            .await
            .unwrap());
        assert!(!nodes::unmark(&mut s, "n2", None, &[]).await.unwrap());
        assert!(nodes::marks(&mut s).await.unwrap().is_empty());
    });
}
