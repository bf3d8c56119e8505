//! The isolation of vxlan-overlay networks whose bridge carries the gateway address (`hostAccess`).
//!
//! Such a bridge gives the host a route into the network, which is the point (the host reaches its
//! local containers), but with IP forwarding on, everything the host *routes* could follow that
//! route: containers of other networks, of the gateway bridge, or anything arriving on the uplink.
//! Networks are meant to be isolated from each other, so packets routed into the bridge from any
//! other interface are dropped:
//!
//! ```text
//! table inet cni_overlay {
//!   chain forward { type filter hook forward priority filter; policy accept;
//!     iifname != "ovbr4000" oifname "ovbr4000" ct status dnat accept comment "bridge ovbr4000 isolation dnat"
//!     iifname != "ovbr4000" oifname "ovbr4000" counter drop comment "bridge ovbr4000 isolation drop" }
//! }
//! ```
//!
//! What the rules leave alone: the host's own traffic to its containers goes through output, not
//! forward; frames bridged inside the network (container to container) that br_netfilter hands to
//! the IP hooks have the bridge as both input and output interface.
//!
//! The `ct status dnat` exception costs a conntrack dependency (the rule makes the kernel track
//! connections in this namespace) and is kept on purpose: hostAccess exists for Kubernetes, where
//! a NodePort or service connection arriving from elsewhere is DNATed by kube-proxy to a local pod
//! and then routed into the bridge; dropping it would break services. Such a connection was
//! addressed to the host (or a service address), not to the network: publishing is the host's
//! decision, as with Docker's published ports. Kubernetes hosts track connections anyway.
//!
//! The drop rule counts what it drops, so that `nft list table inet cni_overlay` shows whether the
//! isolation is what stopped a packet.
//!
//! A table of its own, separate from gwbridge-egress's: the two plugins come and go independently,
//! and the table is deleted with its last rule, so a host without hostAccess networks has no trace
//! of it. Rules are identified by comment (`bridge <name> isolation ...`), never by position.
//!
//! Callers serialize calls across processes (vxlan-overlay holds a per-host lock): "the last
//! bridge leaves, the table goes" is decided on a reading of the table, and nft cannot make the
//! deletion conditional on nothing having been added since.

use std::borrow::Cow;
use std::path::PathBuf;

use nftables::batch::Batch;
use nftables::expr::MetaKey;
use nftables::schema::{Chain, NfListObject, Rule, Table};
use nftables::stmt::{AnonymousCounter, Counter, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::{apply, ct, find_nft, matches, meta, read_table, string, Result, FILTER};

/// The table every isolation rule lives in.
pub const TABLE: &str = "cni_overlay";

const FORWARD: &str = "forward";

fn bridge_prefix(bridge: &str) -> String {
    format!("bridge {bridge} ")
}

fn dnat_comment(bridge: &str) -> String {
    format!("{}isolation dnat", bridge_prefix(bridge))
}

fn drop_comment(bridge: &str) -> String {
    format!("{}isolation drop", bridge_prefix(bridge))
}

/// The isolation rules of one host (the network namespace `nft` runs in: the caller's).
#[derive(Debug, Clone)]
pub struct OverlayIsolation {
    table: String,
    nft: PathBuf,
}

impl Default for OverlayIsolation {
    fn default() -> Self {
        OverlayIsolation::new()
    }
}

impl OverlayIsolation {
    pub fn new() -> OverlayIsolation {
        OverlayIsolation::with_table(TABLE)
    }

    /// Isolation in another table (tests).
    pub fn with_table(table: &str) -> OverlayIsolation {
        OverlayIsolation {
            table: table.to_string(),
            nft: find_nft(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Whether our table exists.
    pub fn exists(&self) -> Result<bool> {
        Ok(read_table(&self.nft, &self.table)?.is_some())
    }

    /// Whether `bridge` has its rules, complete and in order.
    pub fn is_isolated(&self, bridge: &str) -> Result<bool> {
        let rules = read_table(&self.nft, &self.table)?.unwrap_or_default();
        Ok(in_place(&rules, bridge))
    }

    /// Adds the rules of `bridge` (and the table and chain, when missing), in one transaction.
    /// Idempotent: rules in place are left alone; an incomplete or disordered set (someone deleted
    /// or added one by hand) is replaced as a whole, since the accept only works before the drop.
    pub fn add_bridge(&self, bridge: &str) -> Result<()> {
        let rules = read_table(&self.nft, &self.table)?.unwrap_or_default();
        if in_place(&rules, bridge) {
            return Ok(());
        }
        let mut batch = Batch::new();
        // `add` of an existing table or chain is a no-op for nft.
        batch.add(NfListObject::Table(self.table_object()));
        batch.add(NfListObject::Chain(Chain {
            family: NfFamily::INet,
            table: self.table.clone().into(),
            name: FORWARD.into(),
            _type: Some(NfChainType::Filter),
            hook: Some(NfHook::Forward),
            prio: Some(FILTER),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }));
        for stale in of_bridge(&rules, bridge) {
            batch.delete(self.rule_handle(stale));
        }
        let into_bridge = || {
            vec![
                matches(meta(MetaKey::Iifname), Operator::NEQ, string(bridge)),
                matches(meta(MetaKey::Oifname), Operator::EQ, string(bridge)),
            ]
        };
        let mut accept = into_bridge();
        // `in`, not `==`: the status is a bit mask and "dnat" one of its bits.
        accept.push(matches(ct("status"), Operator::IN, string("dnat")));
        accept.push(Statement::Accept(None));
        batch.add(self.rule(accept, &dnat_comment(bridge)));
        let mut drop = into_bridge();
        drop.push(Statement::Counter(Counter::Anonymous(Some(
            AnonymousCounter::default(),
        ))));
        drop.push(Statement::Drop(None));
        batch.add(self.rule(drop, &drop_comment(bridge)));
        apply(
            &self.nft,
            batch,
            &format!("add the isolation rules of {bridge}"),
        )
    }

    /// Removes the rules of `bridge`, in one transaction; the table goes with its last rule.
    /// Idempotent: returns how many rules went, 0 (and success) when there were none.
    pub fn remove_bridge(&self, bridge: &str) -> Result<usize> {
        let Some(rules) = read_table(&self.nft, &self.table)? else {
            return Ok(0);
        };
        let doomed = of_bridge(&rules, bridge);
        let mut batch = Batch::new();
        if doomed.len() == rules.len() {
            // Nothing of another bridge is left (an empty table included): the whole table goes.
            batch.delete(NfListObject::Table(self.table_object()));
        } else if doomed.is_empty() {
            return Ok(0);
        } else {
            for rule in &doomed {
                batch.delete(self.rule_handle(rule));
            }
        }
        apply(
            &self.nft,
            batch,
            &format!("remove the isolation rules of {bridge}"),
        )?;
        Ok(doomed.len())
    }

    fn table_object(&self) -> Table<'static> {
        crate::table_object(&self.table)
    }

    fn rule(&self, stmts: Vec<Statement<'static>>, comment: &str) -> NfListObject<'static> {
        NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: self.table.clone().into(),
            chain: FORWARD.into(),
            expr: Cow::Owned(stmts),
            handle: None,
            index: None,
            comment: Some(comment.to_string().into()),
        })
    }

    fn rule_handle(&self, rule: &Rule) -> NfListObject<'static> {
        crate::rule_handle(&self.table, rule)
    }
}

/// The rules of `bridge`, in chain order (the order `nft` lists them in).
fn of_bridge<'r>(rules: &'r [Rule<'static>], bridge: &str) -> Vec<&'r Rule<'static>> {
    let prefix = bridge_prefix(bridge);
    rules
        .iter()
        .filter(|r| r.comment.as_deref().is_some_and(|c| c.starts_with(&prefix)))
        .collect()
}

/// Exactly the accept, then the drop, in the forward chain.
fn in_place(rules: &[Rule<'static>], bridge: &str) -> bool {
    let ours = of_bridge(rules, bridge);
    let (dnat, drop) = (dnat_comment(bridge), drop_comment(bridge));
    ours.len() == 2
        && ours.iter().all(|r| r.chain == FORWARD)
        && ours[0].comment.as_deref() == Some(dnat.as_str())
        && ours[1].comment.as_deref() == Some(drop.as_str())
}
