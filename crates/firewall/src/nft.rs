//! The nftables vocabulary both tables share: expression and statement builders, the objects of an
//! `inet` table of ours (table, chains, commented rules, rules by handle), and `nft` itself
//! (reading a table back, applying a batch as one transaction).
//!
//! Everything is written as the `nftables` crate's typed JSON schema. The builders produce exactly
//! what `nft -j` lists back for the same rule (see the tests), which is what lets a table be read
//! back as typed data.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use nftables::batch::Batch;
use nftables::expr::{
    Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField,
    Prefix, CT,
};
use nftables::helper;
use nftables::schema::{Chain, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::error::{Error, Result};

/// The nat priorities of iptables (`dstnat`, `srcnat`), so our rules run where NAT rules usually do.
pub(crate) const DSTNAT: i32 = -100;
pub(crate) const SRCNAT: i32 = 100;
/// The `filter` priority.
pub(crate) const FILTER: i32 = 0;

/// `<left> <op> <right>`.
pub(crate) fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

/// A string operand: addresses, interface names, symbolic values (`local`, `dnat`, `ipv4`).
pub(crate) fn string(s: impl Into<String>) -> Expression<'static> {
    Expression::String(s.into().into())
}

/// A header field, as `ip saddr` or `tcp dport`.
pub(crate) fn payload(protocol: &str, field: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.to_string().into(),
            field: field.to_string().into(),
        },
    )))
}

/// Packet metadata, as `meta oifname`.
pub(crate) fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

/// Conntrack state, as `ct status`.
pub(crate) fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: key.into(),
        family: None,
        dir: None,
    }))
}

/// The address type of the packet's source or destination, as `fib daddr type`.
pub(crate) fn fib_type(flag: FibFlag) -> Expression<'static> {
    Expression::Named(NamedExpression::Fib(Fib {
        result: FibResult::Type,
        flags: [flag].into_iter().collect(),
    }))
}

/// A network, as `172.18.0.0/16`.
pub(crate) fn prefix(net: IpNetwork) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(net.network().to_string().into())),
        len: u32::from(net.prefix()),
    }))
}

/// One of our `inet` tables, by name.
pub(crate) fn table_object(table: &str) -> Table<'static> {
    Table {
        family: NfFamily::INet,
        name: table.to_string().into(),
        handle: None,
    }
}

/// A base chain of `table` with policy accept: packets our rules do not decide on go on through
/// the host's own firewall untouched.
pub(crate) fn base_chain(
    table: &str,
    name: &str,
    kind: NfChainType,
    hook: NfHook,
    prio: i32,
) -> Chain<'static> {
    Chain {
        family: NfFamily::INet,
        table: table.to_string().into(),
        name: name.to_string().into(),
        _type: Some(kind),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }
}

/// A regular chain of `table`: reached only by a jump, if at all.
pub(crate) fn regular_chain(table: &str, name: &str) -> Chain<'static> {
    Chain {
        family: NfFamily::INet,
        table: table.to_string().into(),
        name: name.to_string().into(),
        ..Chain::default()
    }
}

/// A rule of `table`, appended to `chain`, carrying `comment` (what identifies it later).
pub(crate) fn rule(
    table: &str,
    chain: &str,
    stmts: Vec<Statement<'static>>,
    comment: &str,
) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: table.to_string().into(),
        chain: chain.to_string().into(),
        expr: Cow::Owned(stmts),
        handle: None,
        index: None,
        comment: Some(comment.to_string().into()),
    })
}

/// A rule of `table` by its handle alone: what deleting it needs.
pub(crate) fn rule_handle(table: &str, rule: &Rule) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: table.to_string().into(),
        chain: rule.chain.clone().into_owned().into(),
        expr: Cow::Owned(Vec::new()),
        handle: rule.handle,
        index: None,
        comment: None,
    })
}

/// `bridge <name> `: how the comments of a bridge's rules begin, in both tables. The trailing
/// space keeps `br1` from claiming the rules of `br10`.
pub(crate) fn bridge_prefix(bridge: &str) -> String {
    format!("bridge {bridge} ")
}

/// The rules whose comment satisfies `wanted`, in chain order; rules without a comment (added by
/// hand) are never ours.
pub(crate) fn commented_where<'r>(
    rules: &'r [Rule<'static>],
    wanted: impl Fn(&str) -> bool + 'r,
) -> impl Iterator<Item = &'r Rule<'static>> + 'r {
    rules
        .iter()
        .filter(move |r| r.comment.as_deref().is_some_and(&wanted))
}

/// The batch that deletes the rules of `table` whose comment is `doomed`: the whole table, in the
/// same transaction, when every rule left would be `spare` (the rules that exist only to serve the
/// others); else each doomed rule by its handle. None when there is nothing to delete. The count
/// is of the doomed rules.
pub(crate) fn deletion(
    table: &str,
    rules: &[Rule<'static>],
    doomed: impl Fn(&str) -> bool,
    spare: impl Fn(&str) -> bool,
) -> Option<(Batch<'static>, usize)> {
    let gone: Vec<&Rule> = commented_where(rules, &doomed).collect();
    let rest_is_spare = rules
        .iter()
        .all(|r| r.comment.as_deref().is_some_and(|c| spare(c) || doomed(c)));
    let mut batch = Batch::new();
    if rest_is_spare {
        batch.delete(NfListObject::Table(table_object(table)));
    } else if gone.is_empty() {
        return None;
    } else {
        for rule in &gone {
            batch.delete(rule_handle(table, rule));
        }
    }
    Some((batch, gone.len()))
}

/// The rules of `table inet <table>`, in chain order; None when the table does not exist. One
/// `nft` run: the `inet` family's ruleset (ours and whatever other inet tables the host has),
/// so that a missing table is told apart from a failing `nft` without reading its error text
/// and without a second run (`list tables`, then `list table`). Every run of `nft` costs a
/// process and a netlink dump; a plugin call counts them.
pub(crate) fn read_table(nft: &Path, table: &str) -> Result<Option<Vec<Rule<'static>>>> {
    Ok(read_table_and_chains(nft, table)?.map(|(rules, _)| rules))
}

/// [`read_table`], with the names of the table's chains.
pub(crate) fn read_table_and_chains(
    nft: &Path,
    table: &str,
) -> Result<Option<(Vec<Rule<'static>>, BTreeSet<String>)>> {
    let listing = helper::get_current_ruleset_with_args(Some(nft), &["list", "ruleset", "inet"])
        .map_err(|e| Error::nft("list ruleset inet", e))?;
    Ok(table_in(listing, table))
}

/// The rules and chain names of `table inet <table>` in a listing of the inet family; None when
/// it has no such table.
fn table_in(
    listing: Nftables<'static>,
    table: &str,
) -> Option<(Vec<Rule<'static>>, BTreeSet<String>)> {
    if !has_table(&listing, table) {
        return None;
    }
    let chains = listing
        .objects
        .iter()
        .filter_map(|o| match o {
            NfObject::ListObject(NfListObject::Chain(c))
                if c.family == NfFamily::INet && c.table == table =>
            {
                Some(c.name.to_string())
            }
            _ => None,
        })
        .collect();
    let mut rules = rules_of(listing);
    rules.retain(|r| r.family == NfFamily::INet && r.table == table);
    Some((rules, chains))
}

/// Whether a listing holds `table inet <table>` (a table of another family does not count).
fn has_table(listing: &Nftables, table: &str) -> bool {
    listing.objects.iter().any(|o| {
        matches!(o, NfObject::ListObject(NfListObject::Table(t))
            if t.family == NfFamily::INet && t.name == table)
    })
}

/// Hands `batch` to `nft` as one transaction.
pub(crate) fn apply(nft: &Path, batch: Batch<'static>, action: &str) -> Result<()> {
    let doc: Nftables = batch.to_nftables();
    log::debug!(
        "nft {action}: {}",
        serde_json::to_string(&doc).unwrap_or_default()
    );
    helper::apply_ruleset_with_args(&doc, Some(nft), helper::DEFAULT_ARGS)
        .map_err(|e| Error::nft(action, e))
}

/// The rules of a listing, in its order; tables, chains and the metainfo are left out.
pub(crate) fn rules_of(listing: Nftables<'static>) -> Vec<Rule<'static>> {
    listing
        .objects
        .into_owned()
        .into_iter()
        .filter_map(|o| match o {
            NfObject::ListObject(NfListObject::Rule(r)) => Some(r),
            _ => None,
        })
        .collect()
}

/// `nft` from PATH, else its usual places: runtimes do not always pass a PATH to plugins.
pub(crate) fn find_nft() -> PathBuf {
    let from_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nft"))
            .find(|p| p.is_file())
    });
    from_path
        .or_else(|| {
            ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
                .iter()
                .map(Path::new)
                .find(|p| p.is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| PathBuf::from("nft"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// `nft -j list table inet cni_gwbridge` (nft 1.0.6) of the table the crate documentation
    /// shows, with one container of two addresses and three mappings.
    pub(crate) const GWBRIDGE_LISTING: &str = include_str!("../testdata/cni_gwbridge.json");
    /// `nft -j list table inet cni_overlay` (nft 1.0.6): bridge ovbr4000 isolated, ovbr4001 with
    /// its two rules swapped.
    pub(crate) const OVERLAY_LISTING: &str = include_str!("../testdata/cni_overlay.json");

    pub(crate) fn listing(text: &'static str) -> Nftables<'static> {
        serde_json::from_str(text).expect("a listing nft wrote")
    }

    /// The rules of a listing, as `read_table` returns them.
    pub(crate) fn listed_rules(text: &'static str) -> Vec<Rule<'static>> {
        rules_of(listing(text))
    }

    /// The expression of the listed rule commented `comment`, as JSON.
    pub(crate) fn listed_expr(text: &'static str, comment: &str) -> Value {
        let rules = listed_rules(text);
        let rule = rules
            .iter()
            .find(|r| r.comment.as_deref() == Some(comment))
            .unwrap_or_else(|| panic!("no rule {comment:?} in the listing"));
        serde_json::to_value(&rule.expr).unwrap()
    }

    /// A batch as the JSON document handed to nft.
    pub(crate) fn batch_json(batch: Batch<'static>) -> Value {
        serde_json::to_value(batch.to_nftables()).unwrap()
    }

    fn to_json<T: serde::Serialize>(value: &T) -> Value {
        serde_json::to_value(value).unwrap()
    }

    fn commented(chain: &str, comment: Option<&str>, handle: u32) -> Rule<'static> {
        Rule {
            family: NfFamily::INet,
            table: "t".into(),
            chain: chain.to_string().into(),
            expr: Cow::Owned(vec![Statement::Accept(None)]),
            handle: Some(handle),
            index: None,
            comment: comment.map(|c| c.to_string().into()),
        }
    }

    #[test]
    fn match_statements_are_nfts_json() {
        let net: IpNetwork = "172.18.0.5/16".parse().unwrap();
        assert_eq!(
            to_json(&matches(payload("ip", "saddr"), Operator::EQ, prefix(net))),
            json!({"match": {"op": "==",
                "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                "right": {"prefix": {"addr": "172.18.0.0", "len": 16}}}}),
            "a prefix never carries host bits"
        );
        assert_eq!(
            to_json(&matches(
                meta(MetaKey::Oifname),
                Operator::NEQ,
                string("br0")
            )),
            json!({"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "br0"}})
        );
        assert_eq!(
            to_json(&matches(ct("status"), Operator::IN, string("dnat"))),
            json!({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}})
        );
        assert_eq!(
            to_json(&matches(
                fib_type(FibFlag::Saddr),
                Operator::EQ,
                string("local")
            )),
            json!({"match": {"op": "==",
                "left": {"fib": {"result": "type", "flags": ["saddr"]}}, "right": "local"}})
        );
        let v6: IpNetwork = "fd00:1::7/64".parse().unwrap();
        assert_eq!(
            to_json(&prefix(v6)),
            json!({"prefix": {"addr": "fd00:1::", "len": 64}})
        );
    }

    #[test]
    fn a_rule_to_add_carries_its_comment_and_no_position() {
        let rule = rule(
            "t",
            "forward",
            vec![Statement::Drop(None)],
            "bridge br0 icc-drop",
        );
        assert_eq!(
            to_json(&rule),
            json!({"rule": {"family": "inet", "table": "t", "chain": "forward",
                "expr": [{"drop": null}], "comment": "bridge br0 icc-drop"}})
        );
    }

    #[test]
    fn a_rule_to_delete_is_its_chain_and_handle_only() {
        let listed = commented("published", Some("n:c/eth1"), 42);
        assert_eq!(
            to_json(&rule_handle("t", &listed)),
            json!({"rule": {"family": "inet", "table": "t", "chain": "published",
                "expr": [], "handle": 42}})
        );
    }

    #[test]
    fn tables_and_chains_are_what_nft_lists_back() {
        let listed: Value = serde_json::from_str(GWBRIDGE_LISTING).unwrap();
        let objects = listed["nftables"].as_array().unwrap();
        let without_handle = |mut v: Value| {
            let inner = v.as_object_mut().unwrap().values_mut().next().unwrap();
            inner.as_object_mut().unwrap().remove("handle");
            v
        };
        let table = to_json(&NfListObject::Table(table_object("cni_gwbridge")));
        assert_eq!(table, without_handle(objects[1].clone()));
        let prerouting = base_chain(
            "cni_gwbridge",
            "prerouting",
            NfChainType::NAT,
            NfHook::Prerouting,
            DSTNAT,
        );
        assert_eq!(
            to_json(&NfListObject::Chain(prerouting)),
            without_handle(objects[2].clone())
        );
        let published = regular_chain("cni_gwbridge", "published");
        assert_eq!(
            to_json(&NfListObject::Chain(published)),
            without_handle(objects[4].clone())
        );
        let forward = base_chain(
            "cni_gwbridge",
            "forward",
            NfChainType::Filter,
            NfHook::Forward,
            FILTER,
        );
        assert_eq!(
            to_json(&NfListObject::Chain(forward)),
            without_handle(objects[6].clone())
        );
    }

    #[test]
    fn a_listing_yields_its_rules_in_order_with_comments_and_handles() {
        let rules = listed_rules(GWBRIDGE_LISTING);
        assert_eq!(rules.len(), 14, "metainfo, table and chains are not rules");
        let summary: Vec<(&str, u32, &str)> = rules
            .iter()
            .map(|r| {
                (
                    r.chain.as_ref(),
                    r.handle.unwrap(),
                    r.comment.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(summary[0], ("prerouting", 7, "gwbridge-egress base"));
        assert_eq!(summary[4], ("published", 11, "demo:abc123/eth1"));
        assert_eq!(summary[7], ("attachments", 14, "demo:abc123/eth1"));
        assert_eq!(
            summary[13],
            ("postrouting", 20, "bridge cni_gwbridge local")
        );
        assert!(rules.iter().all(|r| r.table == "cni_gwbridge"));
    }

    #[test]
    fn only_an_inet_table_of_the_name_counts_as_ours() {
        let tables = |family: &str, name: &str| -> Nftables<'static> {
            serde_json::from_value(json!({"nftables": [
                {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
                {"table": {"family": "ip", "name": "filter", "handle": 1}},
                {"table": {"family": family, "name": name, "handle": 2}}
            ]}))
            .unwrap()
        };
        assert!(has_table(&tables("inet", "cni_gwbridge"), "cni_gwbridge"));
        assert!(!has_table(&tables("ip", "cni_gwbridge"), "cni_gwbridge"));
        assert!(!has_table(&tables("inet", "cni_gwbridge2"), "cni_gwbridge"));
        assert!(!has_table(&tables("inet", "cni_overlay"), "cni_gwbridge"));
    }

    #[test]
    fn a_ruleset_listing_yields_only_our_tables_rules() {
        let mut objects: Vec<Value> = serde_json::from_str::<Value>(GWBRIDGE_LISTING).unwrap()
            ["nftables"]
            .as_array()
            .unwrap()
            .clone();
        // Another inet table of the host, listed after ours.
        objects.push(json!({"table": {"family": "inet", "name": "firewalld", "handle": 9}}));
        objects.push(
            json!({"rule": {"family": "inet", "table": "firewalld", "chain": "c",
            "handle": 3, "expr": [{"accept": null}], "comment": "demo:abc123/eth1"}}),
        );
        let listing: Nftables<'static> =
            serde_json::from_value(json!({"nftables": objects})).unwrap();
        let (rules, chains) = table_in(listing.clone(), "cni_gwbridge").unwrap();
        assert_eq!(rules.len(), 14);
        assert!(rules.iter().all(|r| r.table == "cni_gwbridge"));
        assert_eq!(
            chains.iter().map(String::as_str).collect::<Vec<_>>(),
            [
                "attachments",
                "forward",
                "output",
                "postrouting",
                "prerouting",
                "published"
            ]
        );
        assert!(table_in(listing, "cni_overlay").is_none());
    }

    #[test]
    fn the_bridge_prefix_does_not_claim_a_longer_bridge_name() {
        let rules = vec![
            commented("forward", Some("bridge br1 icc-drop"), 1),
            commented("forward", Some("bridge br10 icc-drop"), 2),
            commented("forward", None, 3),
        ];
        let prefix = bridge_prefix("br1");
        let handles: Vec<_> = commented_where(&rules, |c| c.starts_with(&prefix))
            .map(|r| r.handle)
            .collect();
        assert_eq!(handles, [Some(1)]);
        // A rule without a comment was not written by us and matches nothing.
        assert_eq!(commented_where(&rules, |_| true).count(), 2);
    }

    #[test]
    fn deleting_some_rules_deletes_them_by_handle() {
        let rules = vec![
            commented("c", Some("keep"), 1),
            commented("c", Some("gone"), 2),
            commented("d", Some("gone"), 3),
        ];
        let (batch, count) = deletion("t", &rules, |c| c == "gone", |_| false).unwrap();
        assert_eq!(count, 2);
        assert_eq!(
            batch_json(batch),
            json!({"nftables": [
                {"delete": {"rule": {"family": "inet", "table": "t", "chain": "c", "expr": [], "handle": 2}}},
                {"delete": {"rule": {"family": "inet", "table": "t", "chain": "d", "expr": [], "handle": 3}}}
            ]})
        );
    }

    #[test]
    fn deleting_all_but_spare_rules_deletes_the_table() {
        let rules = vec![
            commented("c", Some("spare"), 1),
            commented("c", Some("gone"), 2),
        ];
        let (batch, count) = deletion("t", &rules, |c| c == "gone", |c| c == "spare").unwrap();
        assert_eq!(count, 1);
        assert_eq!(
            batch_json(batch),
            json!({"nftables": [{"delete": {"table": {"family": "inet", "name": "t"}}}]})
        );
        // With nothing doomed, a table of spare rules only (or none at all) still goes: it
        // serves no one.
        let (batch, count) = deletion("t", &rules[..1], |c| c == "gone", |c| c == "spare").unwrap();
        assert_eq!(count, 0);
        assert_eq!(
            batch_json(batch),
            json!({"nftables": [{"delete": {"table": {"family": "inet", "name": "t"}}}]})
        );
        assert!(deletion("t", &[], |_| false, |_| false).is_some());
    }

    #[test]
    fn nothing_doomed_among_others_is_nothing_to_do() {
        let rules = vec![commented("c", Some("other"), 1)];
        assert!(deletion("t", &rules, |c| c == "gone", |_| false).is_none());
    }

    #[test]
    fn a_rule_added_by_hand_keeps_the_table() {
        // Not ours, so never deleted, and the table stays around it.
        let rules = vec![commented("c", Some("gone"), 1), commented("c", None, 2)];
        let (batch, count) = deletion("t", &rules, |c| c == "gone", |_| true).unwrap();
        assert_eq!(count, 1);
        assert_eq!(
            batch_json(batch),
            json!({"nftables": [
                {"delete": {"rule": {"family": "inet", "table": "t", "chain": "c", "expr": [], "handle": 1}}}
            ]})
        );
    }
}
