//! The node record: `nodes/<node>` under an etcd lease that this process keeps alive, so that
//! the record disappears on its own when the host (or overlayd) dies, and at once when overlayd
//! stops cleanly (the lease is revoked). Registering also removes the node's mark `gone/<node>`
//! (the reclaimer's countdown, see [`crate::reclaim`]): a node that is back is not reclaimed.

use std::time::Duration;

use futures::StreamExt;
use model::records::{self, Gone, Node};
use store::etcd_client::{
    DeleteOptions, Error as EtcdError, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use store::Store;
use tokio::sync::watch;
use tokio::time::{interval_at, timeout, Instant, MissedTickBehavior};

use crate::error::Error;
use crate::retry::Retry;

/// How long a clean shutdown waits for etcd to confirm the revocation.
const REVOKE_WITHIN: Duration = Duration::from_secs(1);

/// How a keep-alive session ended.
pub(crate) enum SessionEnd {
    /// etcd no longer knows the lease (it expired while we could not reach etcd): the record
    /// went with it, so register again.
    Expired,
    /// The connection broke; the lease may well still be alive.
    Broken(Error),
}

/// Registers and keeps the registration until `stop` turns true; then revokes the lease.
/// etcd being unreachable is retried, never fatal.
pub async fn run(
    mut store: Store,
    node: Node,
    ttl: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let key = store.keys().node(&node.name);
    let ttl_secs = ttl.as_secs().max(1) as i64;
    let mut retry = Retry::new("registration");
    let mut lease: Option<i64> = None;
    // When etcd last confirmed the lease: once a TTL has passed without a confirmation, etcd
    // has let it expire (or will have by the time we hear from it), and the node record is gone
    // with it; /readyz must not go on saying "registered" through a partition.
    let mut confirmed = Instant::now();
    loop {
        let id = match lease {
            Some(id) => id,
            None => {
                let registered = tokio::select! {
                    r = register(&mut store, &key, &node, ttl_secs) => r,
                    _ = stopped(&mut stop) => return Ok(()),
                };
                match registered {
                    Ok(id) => {
                        retry.succeeded();
                        confirmed = Instant::now();
                        crate::metrics::get().set_registered(true);
                        log::info!(
                            "registered node {} (vtep {}) with lease {id:x}, TTL {ttl_secs} s",
                            node.name,
                            node.vtep
                        );
                        id
                    }
                    Err(e) => {
                        store.reset();
                        let pause = retry.failed(format!("registering node {}: {e}", node.name));
                        tokio::select! {
                            _ = pause => continue,
                            _ = stopped(&mut stop) => return Ok(()),
                        }
                    }
                }
            }
        };
        lease = Some(id);
        let mut answered = || {
            confirmed = Instant::now();
            crate::metrics::get().set_registered(true);
        };
        let end = tokio::select! {
            end = keep_alive(&mut store, id, ttl, &mut retry, &mut answered) => end,
            _ = stopped(&mut stop) => {
                revoke(&mut store, id, ttl_secs).await;
                return Ok(());
            }
        };
        match end {
            SessionEnd::Expired => {
                log::warn!("lease {id:x} expired (etcd out of reach for longer than its TTL?)");
                crate::metrics::get().set_registered(false);
                lease = None;
            }
            SessionEnd::Broken(e) => {
                if confirmed.elapsed() >= ttl {
                    crate::metrics::get().set_registered(false);
                }
                store.reset();
                let pause = retry.failed(format!("keeping lease {id:x} alive: {e}"));
                tokio::select! {
                    _ = pause => {}
                    _ = stopped(&mut stop) => {
                        revoke(&mut store, id, ttl_secs).await;
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// A new lease, and the node record under it.
async fn register(store: &mut Store, key: &str, node: &Node, ttl: i64) -> Result<i64, Error> {
    let grant = store
        .call(|mut c| async move { c.lease_grant(ttl, None).await })
        .await?;
    let id = grant.id();
    let value = records::encode(node);
    let mark = store.keys().gone(&node.name);
    // The record and the end of the node's mark, together: no reclaimer counts down a node
    // that is registered.
    let txn = Txn::new().and_then(vec![
        TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(id).with_prev_key()),
        ),
        TxnOp::delete(mark, Some(DeleteOptions::new().with_prev_key())),
    ]);
    let resp = store.txn(txn).await?;
    for op in resp.op_responses() {
        match op {
            TxnOpResponse::Put(put) => {
                let Some(prev) = put.prev_key() else { continue };
                // Our own record from before a restart is expected; another host's is a
                // misconfiguration.
                match records::decode::<Node>(prev.key(), prev.value()) {
                    Ok(old) if old.vtep != node.vtep => log::warn!(
                        "node {} was registered with vtep {}: two hosts with one --node name?",
                        node.name,
                        old.vtep
                    ),
                    _ => {}
                }
            }
            TxnOpResponse::Delete(deleted) => {
                for prev in deleted.prev_kvs() {
                    if let Ok(gone) = records::decode::<Gone>(prev.key(), prev.value()) {
                        log::warn!(
                            "node {} was marked gone {} s ago; back before being reclaimed",
                            node.name,
                            crate::reclaim::now_secs().saturating_sub(gone.since)
                        );
                    }
                }
            }
            _ => {}
        }
    }
    Ok(id)
}

/// Keeps lease `id` alive on the current connection, with a keep-alive every TTL/3, until the
/// lease is gone or the connection breaks.
/// Keeps lease `id` alive until it expires or the session breaks; `answered` runs on every
/// confirmation from etcd that the lease lives.
pub(crate) async fn keep_alive(
    store: &mut Store,
    id: i64,
    ttl: Duration,
    retry: &mut Retry,
    answered: &mut (dyn FnMut() + Send),
) -> SessionEnd {
    let mut client = match store.client().await {
        Ok(c) => c,
        Err(e) => return SessionEnd::Broken(e.into()),
    };
    // Opening the stream sends the first keep-alive and waits for its answer.
    let (mut keeper, mut answers) =
        match timeout(store.config().timeout(), client.lease_keep_alive(id)).await {
            Ok(Ok(stream)) => stream,
            // etcd-client's word for a keep-alive answered with TTL 0: the lease is unknown.
            Ok(Err(EtcdError::LeaseKeepAliveError(_))) => return SessionEnd::Expired,
            Ok(Err(e)) => return SessionEnd::Broken(e.into()),
            Err(_) => {
                return SessionEnd::Broken(Error::Stream(
                    "no answer to the first keep-alive".into(),
                ))
            }
        };
    retry.succeeded();
    let period = (ttl / 3).max(Duration::from_millis(500));
    let mut tick = interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut awaiting = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if awaiting {
                    return SessionEnd::Broken(Error::Stream(format!(
                        "no keep-alive answer within {} ms",
                        period.as_millis()
                    )));
                }
                if let Err(e) = keeper.keep_alive().await {
                    return SessionEnd::Broken(e.into());
                }
                awaiting = true;
            }
            answer = answers.next() => match answer {
                Some(Ok(a)) if a.ttl() <= 0 => return SessionEnd::Expired,
                Some(Ok(a)) => {
                    log::trace!("lease {id:x} kept alive, TTL {} s", a.ttl());
                    awaiting = false;
                    answered();
                }
                Some(Err(e)) => return SessionEnd::Broken(e.into()),
                None => {
                    let ended = Error::Stream("the keep-alive stream ended".into());
                    return SessionEnd::Broken(ended);
                }
            }
        }
    }
}

/// Revokes the lease, which deletes the node record with it, if etcd answers quickly; shutdown
/// must not hang on an unreachable etcd, and the lease expires by itself anyway.
async fn revoke(store: &mut Store, id: i64, ttl: i64) {
    // Shutting down: no longer a node to send containers to.
    crate::metrics::get().set_registered(false);
    let revoked = timeout(
        REVOKE_WITHIN,
        store.call(|mut c| async move { c.lease_revoke(id).await }),
    )
    .await;
    match revoked {
        Ok(Ok(_)) => log::info!("lease {id:x} revoked; node record removed"),
        Ok(Err(e)) => {
            log::warn!("revoking lease {id:x}: {e}; the node record expires within {ttl} s")
        }
        Err(_) => log::warn!(
            "etcd did not confirm revoking lease {id:x} within {} ms; \
             the node record expires within {ttl} s",
            REVOKE_WITHIN.as_millis()
        ),
    }
}

/// Resolves once shutdown is asked for (or whoever could ask is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard wait_for returns must not live across an await: it is not Send.
    let _ = stop.wait_for(|s| *s).await;
}
