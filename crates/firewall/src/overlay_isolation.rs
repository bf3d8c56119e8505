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

use std::path::PathBuf;

use nftables::batch::Batch;
use nftables::expr::MetaKey;
use nftables::schema::{NfListObject, Rule, Table};
use nftables::stmt::{AnonymousCounter, Counter, Operator, Statement};
use nftables::types::{NfChainType, NfHook};

use crate::error::Result;
use crate::nft::{self, bridge_prefix, commented_where, ct, matches, meta, string, FILTER};

/// The table every isolation rule lives in.
pub const TABLE: &str = "cni_overlay";

const FORWARD: &str = "forward";

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
            nft: nft::find_nft(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Whether our table exists.
    pub fn exists(&self) -> Result<bool> {
        Ok(nft::read_table(&self.nft, &self.table)?.is_some())
    }

    /// Whether `bridge` has its rules, complete and in order.
    pub fn is_isolated(&self, bridge: &str) -> Result<bool> {
        let rules = nft::read_table(&self.nft, &self.table)?.unwrap_or_default();
        Ok(in_place(&rules, bridge))
    }

    /// Adds the rules of `bridge` (and the table and chain, when missing), in one transaction.
    /// Idempotent: rules in place are left alone; an incomplete or disordered set (someone deleted
    /// or added one by hand) is replaced as a whole, since the accept only works before the drop.
    pub fn add_bridge(&self, bridge: &str) -> Result<()> {
        let rules = nft::read_table(&self.nft, &self.table)?.unwrap_or_default();
        let Some(batch) = self.add_batch(&rules, bridge) else {
            return Ok(());
        };
        nft::apply(
            &self.nft,
            batch,
            &format!("add the isolation rules of {bridge}"),
        )
    }

    /// Removes the rules of `bridge`, in one transaction; the table goes with its last rule.
    /// Idempotent: returns how many rules went, 0 (and success) when there were none.
    pub fn remove_bridge(&self, bridge: &str) -> Result<usize> {
        let Some(rules) = nft::read_table(&self.nft, &self.table)? else {
            return Ok(0);
        };
        let Some((batch, count)) = self.removal(&rules, bridge) else {
            return Ok(0);
        };
        nft::apply(
            &self.nft,
            batch,
            &format!("remove the isolation rules of {bridge}"),
        )?;
        Ok(count)
    }

    /// The batch [`OverlayIsolation::add_bridge`] applies to a table holding `rules`; None when
    /// the rules of `bridge` are in place.
    fn add_batch(&self, rules: &[Rule<'static>], bridge: &str) -> Option<Batch<'static>> {
        if in_place(rules, bridge) {
            return None;
        }
        let mut batch = Batch::new();
        // `add` of an existing table or chain is a no-op for nft.
        batch.add(NfListObject::Table(self.table_object()));
        batch.add(NfListObject::Chain(nft::base_chain(
            &self.table,
            FORWARD,
            NfChainType::Filter,
            NfHook::Forward,
            FILTER,
        )));
        for stale in of_bridge(rules, bridge) {
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
        Some(batch)
    }

    /// The batch [`OverlayIsolation::remove_bridge`] applies to a table holding `rules`, and how
    /// many rules it removes; None when `bridge` has none. Nothing here exists but for a bridge,
    /// so the table goes when no other bridge has rules left (an empty table included).
    fn removal(&self, rules: &[Rule<'static>], bridge: &str) -> Option<(Batch<'static>, usize)> {
        let prefix = bridge_prefix(bridge);
        nft::deletion(&self.table, rules, |c| c.starts_with(&prefix), |_| false)
    }

    fn table_object(&self) -> Table<'static> {
        nft::table_object(&self.table)
    }

    fn rule(&self, stmts: Vec<Statement<'static>>, comment: &str) -> NfListObject<'static> {
        nft::rule(&self.table, FORWARD, stmts, comment)
    }

    fn rule_handle(&self, rule: &Rule) -> NfListObject<'static> {
        nft::rule_handle(&self.table, rule)
    }
}

/// The rules of `bridge`, in chain order (the order `nft` lists them in).
fn of_bridge<'r>(rules: &'r [Rule<'static>], bridge: &str) -> Vec<&'r Rule<'static>> {
    let prefix = bridge_prefix(bridge);
    commented_where(rules, move |c| c.starts_with(&prefix)).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::tests::{batch_json, listed_expr, listed_rules, OVERLAY_LISTING};
    use serde_json::json;

    fn isolation() -> OverlayIsolation {
        OverlayIsolation::with_table(TABLE)
    }

    /// The listed table: ovbr4000 in place, ovbr4001 with its drop before its accept.
    fn listed() -> Vec<Rule<'static>> {
        listed_rules(OVERLAY_LISTING)
    }

    fn only(bridge: &str) -> Vec<Rule<'static>> {
        let prefix = bridge_prefix(bridge);
        listed()
            .into_iter()
            .filter(|r| r.comment.as_deref().unwrap().starts_with(&prefix))
            .collect()
    }

    /// The commands of a batch as JSON values, each without its wrapping document.
    fn commands(batch: Batch<'static>) -> Vec<serde_json::Value> {
        batch_json(batch)["nftables"].as_array().unwrap().clone()
    }

    fn delete(handle: u32) -> serde_json::Value {
        json!({"delete": {"rule": {"family": "inet", "table": "cni_overlay", "chain": "forward",
            "expr": [], "handle": handle}}})
    }

    #[test]
    fn a_bridge_is_isolated_by_an_accept_then_a_drop_as_nft_lists_them() {
        let cmds = commands(isolation().add_batch(&[], "ovbr4000").unwrap());
        assert_eq!(cmds.len(), 4);
        assert_eq!(
            cmds[0],
            json!({"add": {"table": {"family": "inet", "name": "cni_overlay"}}})
        );
        assert_eq!(
            cmds[1],
            json!({"add": {"chain": {"family": "inet", "table": "cni_overlay", "name": "forward",
                "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}})
        );
        for (cmd, comment) in cmds[2..].iter().zip([
            "bridge ovbr4000 isolation dnat",
            "bridge ovbr4000 isolation drop",
        ]) {
            let rule = &cmd["add"]["rule"];
            assert_eq!(rule["comment"], comment);
            assert_eq!(rule["chain"], "forward");
            // The counter is written with zero counts, exactly as nft lists a fresh one.
            assert_eq!(
                rule["expr"],
                listed_expr(OVERLAY_LISTING, comment),
                "{comment}"
            );
        }
    }

    #[test]
    fn only_the_accept_then_the_drop_is_in_place() {
        let rules = listed();
        assert!(in_place(&rules, "ovbr4000"));
        assert!(!in_place(&rules, "ovbr4001"), "drop before accept");
        assert!(
            !in_place(&rules, "ovbr40"),
            "a prefix of a bridge's name is not the bridge"
        );
        assert!(!in_place(&[], "ovbr4000"));
        let mut half = only("ovbr4000");
        half.pop();
        assert!(!in_place(&half, "ovbr4000"));
        let mut doubled = only("ovbr4000");
        doubled.extend(only("ovbr4000"));
        assert!(!in_place(&doubled, "ovbr4000"));
        let mut elsewhere = only("ovbr4000");
        for rule in &mut elsewhere {
            rule.chain = "input".into();
        }
        assert!(!in_place(&elsewhere, "ovbr4000"), "the forward chain only");
    }

    #[test]
    fn rules_in_place_need_no_transaction() {
        assert!(isolation().add_batch(&listed(), "ovbr4000").is_none());
    }

    #[test]
    fn a_disordered_set_is_replaced_as_a_whole() {
        let cmds = commands(isolation().add_batch(&listed(), "ovbr4001").unwrap());
        assert_eq!(cmds[2..4], [delete(4), delete(5)]);
        assert_eq!(
            cmds[4]["add"]["rule"]["comment"],
            "bridge ovbr4001 isolation dnat"
        );
        assert_eq!(
            cmds[5]["add"]["rule"]["comment"],
            "bridge ovbr4001 isolation drop"
        );
        assert_eq!(cmds.len(), 6, "the other bridge's rules are left alone");
    }

    #[test]
    fn removing_one_bridge_of_two_deletes_its_rules() {
        let (batch, count) = isolation().removal(&listed(), "ovbr4000").unwrap();
        assert_eq!(count, 2);
        assert_eq!(commands(batch), [delete(2), delete(3)]);
    }

    #[test]
    fn the_table_goes_with_the_last_bridge() {
        let (batch, count) = isolation().removal(&only("ovbr4001"), "ovbr4001").unwrap();
        assert_eq!(count, 2);
        assert_eq!(
            commands(batch),
            [json!({"delete": {"table": {"family": "inet", "name": "cni_overlay"}}})]
        );
        // An empty table serves no one either.
        let (batch, count) = isolation().removal(&[], "ovbr4001").unwrap();
        assert_eq!(count, 0);
        assert_eq!(commands(batch).len(), 1);
    }

    #[test]
    fn removing_a_bridge_without_rules_changes_nothing() {
        assert!(isolation().removal(&listed(), "ovbr4002").is_none());
        assert!(isolation().removal(&listed(), "ovbr400").is_none());
    }
}
