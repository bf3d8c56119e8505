//! gwbridge-egress's table, `inet cni_gwbridge`, laid out in the crate documentation: its base
//! (table, chains, fixed rules), the rules of a bridge, and the rules of a container (attachment
//! records and DNAT rules, all carrying its tag).
//!
//! Every operation reads the table, decides on the one batch that brings it where it should be,
//! and hands that to `nft`; the deciding is kept apart from the reading and writing, as pure
//! functions of what was read. A firewall made with [`Firewall::under_lock`] reads the table once
//! and keeps what it read (with its own deletions applied) until it adds something: each `nft`
//! run is a process and a netlink dump, and a plugin call makes several operations in a row.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use nftables::batch::Batch;
use nftables::expr::{Expression, FibFlag, MetaKey, NamedExpression, Payload};
use nftables::schema::{Chain, NfListObject, Rule, Table};
use nftables::stmt::{JumpTarget, Match, NATFamily, Operator, Statement, NAT};
use nftables::types::{NfChainType, NfHook};

use crate::error::Result;
use crate::nft::{
    self, bridge_prefix, commented_where, ct, fib_type, matches, meta, payload, prefix, string,
    DSTNAT, FILTER, SRCNAT,
};
use crate::ports::{check_conflicts, Mapping, Protocol, Published};
use crate::tag::{is_tag, is_tag_of};

/// The table every gwbridge-egress rule lives in.
pub const TABLE: &str = "cni_gwbridge";

const PREROUTING: &str = "prerouting";
const OUTPUT: &str = "output";
const POSTROUTING: &str = "postrouting";
const FORWARD: &str = "forward";
/// The regular chain holding the DNAT rules, jumped to from prerouting and output for packets to
/// one of the host's own addresses.
const PUBLISHED: &str = "published";
/// The regular chain that records attachments; nothing jumps to it.
const ATTACHMENTS: &str = "attachments";
/// Every chain of the table.
const CHAINS: [&str; 6] = [
    PREROUTING,
    OUTPUT,
    POSTROUTING,
    FORWARD,
    PUBLISHED,
    ATTACHMENTS,
];

/// The comment of the fixed rules created with the table.
const BASE_COMMENT: &str = "gwbridge-egress base";

/// The bridge-wide rules wanted for one subnet of a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeRules {
    /// Masquerade traffic from the subnet that leaves through another interface (ipMasq).
    pub masquerade: bool,
    /// Drop container-to-container traffic over the bridge, published ports excepted (icc=false).
    pub isolate: bool,
}

/// What the table holds for one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerRules {
    /// The addresses recorded with the attachment.
    pub addresses: Vec<IpAddr>,
    pub mappings: Vec<Mapping>,
}

fn masquerade_comment(bridge: &str, subnet: IpNetwork) -> String {
    format!("{}masquerade {}", bridge_prefix(bridge), network_of(subnet))
}

fn hairpin_comment(bridge: &str, subnet: IpNetwork) -> String {
    format!("{}hairpin {}", bridge_prefix(bridge), network_of(subnet))
}

fn local_comment(bridge: &str) -> String {
    format!("{}local", bridge_prefix(bridge))
}

fn icc_published_comment(bridge: &str) -> String {
    format!("{}icc-published", bridge_prefix(bridge))
}

fn icc_drop_comment(bridge: &str) -> String {
    format!("{}icc-drop", bridge_prefix(bridge))
}

/// The subnet without host bits (172.18.0.1/16 is 172.18.0.0/16): comments must not depend on
/// which address of the subnet the caller had at hand.
fn network_of(net: IpNetwork) -> IpNetwork {
    IpNetwork::new(net.network(), net.prefix()).unwrap_or(net)
}

/// The nftables operations of one host (the network namespace `nft` runs in: the caller's).
#[derive(Debug, Clone)]
pub struct Firewall {
    table: String,
    nft: PathBuf,
    /// With [`Firewall::under_lock`]: the table as last read or as our own deletions left it;
    /// None inside when not known (not read yet, or after an addition, whose rule handles only
    /// a new reading tells).
    kept: Option<RefCell<Option<Snapshot>>>,
}

impl Default for Firewall {
    fn default() -> Self {
        Firewall::new()
    }
}

/// What the table holds now. `rules` and `chains` are empty when the table does not exist.
#[derive(Debug, Clone)]
struct Snapshot {
    exists: bool,
    rules: Vec<Rule<'static>>,
    chains: BTreeSet<String>,
}

impl Snapshot {
    fn has_comment(&self, comment: &str) -> bool {
        commented_where(&self.rules, |c| c == comment)
            .next()
            .is_some()
    }

    fn base_complete(&self) -> bool {
        let count = |chain: &str| {
            self.rules
                .iter()
                .filter(|r| r.chain == chain && r.comment.as_deref() == Some(BASE_COMMENT))
                .count()
        };
        count(PREROUTING) == 1 && count(OUTPUT) == 3
    }

    fn absent() -> Snapshot {
        Snapshot {
            exists: false,
            rules: Vec::new(),
            chains: BTreeSet::new(),
        }
    }

    /// Whether the table has every chain of ours.
    fn has_chains(&self) -> bool {
        CHAINS.iter().all(|c| self.chains.contains(*c))
    }

    /// The table once the batch of [`nft::deletion`] for `doomed` was applied: the same rules
    /// without the doomed ones, or no table when nothing but the fixed rules was left.
    fn after_removal(&self, doomed: impl Fn(&str) -> bool) -> Snapshot {
        let rest_is_spare = self.rules.iter().all(|r| {
            r.comment
                .as_deref()
                .is_some_and(|c| c == BASE_COMMENT || doomed(c))
        });
        if rest_is_spare {
            return Snapshot::absent();
        }
        Snapshot {
            exists: true,
            rules: self
                .rules
                .iter()
                .filter(|r| !r.comment.as_deref().is_some_and(&doomed))
                .cloned()
                .collect(),
            chains: self.chains.clone(),
        }
    }

    /// True when nothing but the fixed rules is left: the table can go.
    fn only_base(&self) -> bool {
        self.rules
            .iter()
            .all(|r| r.comment.as_deref() == Some(BASE_COMMENT))
    }
}

impl Firewall {
    pub fn new() -> Firewall {
        Firewall::with_table(TABLE)
    }

    /// A firewall on another table name (tests).
    pub fn with_table(table: &str) -> Firewall {
        Firewall {
            table: table.to_string(),
            nft: nft::find_nft(),
            kept: None,
        }
    }

    /// A firewall for a caller that holds gwbridge-egress's host lock for as long as the
    /// firewall lives (one plugin call): nobody else of ours changes the table meanwhile, so it
    /// is read once and what was read is kept, updated with this firewall's own deletions,
    /// until it adds something. (Changes by others, such as a firewall reload, are then seen by
    /// the next call, as they would be had they come a moment later.)
    pub fn under_lock() -> Firewall {
        Firewall {
            kept: Some(RefCell::new(None)),
            ..Firewall::new()
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Whether our table exists.
    pub fn exists(&self) -> Result<bool> {
        Ok(self.snapshot()?.exists)
    }

    /// The bridge-wide rules of `subnet` behind `bridge`: masquerade of traffic from the subnet
    /// leaving through any other interface (when `rules.masquerade`); always, masquerade of
    /// connections to published ports that come back into the bridge from the subnet (hairpin:
    /// without it the reply would go straight from container to container, which isolation drops
    /// and the client would not expect) or from the host itself; and, when `rules.isolate`, the
    /// icc=false forward rules. Idempotent; each rule is added in the forward chain or
    /// postrouting in one transaction.
    pub fn ensure_bridge_rules(
        &self,
        bridge: &str,
        subnet: IpNetwork,
        rules: BridgeRules,
    ) -> Result<()> {
        let snap = self.snapshot()?;
        match self.bridge_batch(&snap, bridge, subnet, rules) {
            Some(batch) => self.apply(batch, &format!("add the rules of {subnet} on {bridge}")),
            None => Ok(()),
        }
    }

    /// The comments of the bridge rules [`Firewall::ensure_bridge_rules`] would add that are
    /// missing (empty when everything is in place), for CHECK.
    pub fn missing_bridge_rules(
        &self,
        bridge: &str,
        subnet: IpNetwork,
        rules: BridgeRules,
    ) -> Result<Vec<String>> {
        Ok(self.missing_in(&self.snapshot()?, bridge, subnet, rules))
    }

    /// Removes every rule of `bridge` (all its subnets), and the table when nothing else is left.
    /// Returns how many rules went.
    pub fn remove_bridge_rules(&self, bridge: &str) -> Result<usize> {
        let prefix = bridge_prefix(bridge);
        self.remove_where(&format!("remove the rules of {bridge}"), |c| {
            c.starts_with(&prefix)
        })
    }

    /// Records the container tagged `tag` (with its bridge addresses) and publishes `mappings` for
    /// it, all in one transaction. Refused with [`Error::PortInUse`](crate::Error::PortInUse) (and
    /// nothing changed) when a host port and protocol is already published on this host on an
    /// overlapping host address ([`Mapping::overlaps`]), by anyone, or twice in `mappings` for
    /// different targets.
    pub fn add_container(
        &self,
        tag: &str,
        addresses: &[IpAddr],
        mappings: &[Mapping],
    ) -> Result<()> {
        let snap = self.snapshot()?;
        let batch = self.container_batch(&snap, tag, addresses, mappings)?;
        let list: Vec<String> = mappings.iter().map(|m| m.to_string()).collect();
        let action = if list.is_empty() {
            format!("record {tag}")
        } else {
            format!("publish {} for {tag}", list.join(", "))
        };
        self.apply(batch, &action)
    }

    /// Who publishes `port`/`protocol` on `host_ip` (None: any address) on this host, if anyone:
    /// lets a caller refuse a taken port before it changes anything else.
    pub fn holder_of(
        &self,
        protocol: Protocol,
        host_ip: Option<IpAddr>,
        port: u16,
    ) -> Result<Option<String>> {
        Ok(self
            .list_port_mappings()?
            .into_iter()
            .find(|p| p.mapping.overlaps(protocol, host_ip, port))
            .map(|p| p.tag))
    }

    /// The recorded addresses and published ports of the container tagged `tag`; None when the
    /// table has no rule of it.
    pub fn container(&self, tag: &str) -> Result<Option<ContainerRules>> {
        Ok(container_in(&self.snapshot()?, tag))
    }

    /// Every published port on this host.
    pub fn list_port_mappings(&self) -> Result<Vec<Published>> {
        Ok(published_in(&self.snapshot()?))
    }

    /// Every address an attachment record holds on this host, whichever container and network:
    /// the addresses gwbridge-egress's own allocation must not hand out.
    pub fn attached_addresses(&self) -> Result<BTreeSet<IpAddr>> {
        Ok(attached_in(&self.snapshot()?))
    }

    /// The tags of every container that has rules here.
    pub fn tags(&self) -> Result<BTreeSet<String>> {
        Ok(tags_in(&self.snapshot()?))
    }

    /// The tags of the attachments of (`container_id`, `ifname`) on this host, one per network
    /// whose chain put that interface in the container: who shares it.
    pub fn attachments_of(&self, container_id: &str, ifname: &str) -> Result<BTreeSet<String>> {
        Ok(tags_in(&self.snapshot()?)
            .into_iter()
            .filter(|t| is_tag_of(t, container_id, ifname))
            .collect())
    }

    /// Removes every rule tagged `tag`, and the table when nothing else is left. Returns how many
    /// rules went; 0 (and success) when there were none.
    pub fn remove_tagged(&self, tag: &str) -> Result<usize> {
        self.remove_where(&format!("remove rules of {tag}"), |c| c == tag)
    }

    /// Deletes the table if it holds nothing but the fixed rules. Returns whether it went.
    pub fn remove_table_if_unused(&self) -> Result<bool> {
        let snap = self.snapshot()?;
        if !snap.exists || !snap.only_base() {
            return Ok(false);
        }
        let mut batch = Batch::new();
        batch.delete(NfListObject::Table(self.table_object()));
        self.apply(batch, &format!("delete table inet {}", self.table))?;
        self.keep(Snapshot::absent());
        Ok(true)
    }

    fn remove_where(&self, action: &str, doomed: impl Fn(&str) -> bool) -> Result<usize> {
        let snap = self.snapshot()?;
        let Some((batch, count)) = self.removal(&snap, &doomed) else {
            return Ok(0);
        };
        self.apply(batch, action)?;
        self.keep(snap.after_removal(&doomed));
        Ok(count)
    }

    /// The batch [`Firewall::ensure_bridge_rules`] needs, None when everything is in place.
    fn bridge_batch(
        &self,
        snap: &Snapshot,
        bridge: &str,
        subnet: IpNetwork,
        rules: BridgeRules,
    ) -> Option<Batch<'static>> {
        let mut batch = Batch::new();
        self.add_base(snap, &mut batch);
        let wanted = self.bridge_rules(bridge, subnet, rules);
        // The forward rules only work in their order (accept before drop): if one is missing,
        // both are written anew.
        let forward_broken = wanted
            .iter()
            .any(|(chain, comment, _)| *chain == FORWARD && !snap.has_comment(comment));
        // Rules of this bridge and subnet that the options no longer want (icc or ipMasq changed
        // in the network's configuration since the bridge was made) go in the same transaction:
        // the bridge follows the configuration of its latest ADD.
        let every = self.bridge_rules(
            bridge,
            subnet,
            BridgeRules {
                masquerade: true,
                isolate: true,
            },
        );
        let mut changed = 0;
        for (_, comment, _) in every {
            if snap.has_comment(&comment) && !wanted.iter().any(|(_, c, _)| *c == comment) {
                self.delete_commented(snap, &comment, &mut batch);
                changed += 1;
            }
        }
        for (chain, comment, stmts) in wanted {
            if chain == FORWARD && forward_broken {
                self.delete_commented(snap, &comment, &mut batch);
            } else if snap.has_comment(&comment) {
                continue;
            }
            batch.add(self.rule(chain, stmts, &comment));
            changed += 1;
        }
        if changed == 0 && snap.exists && snap.base_complete() {
            return None;
        }
        Some(batch)
    }

    /// What [`Firewall::missing_bridge_rules`] reports for `snap`.
    fn missing_in(
        &self,
        snap: &Snapshot,
        bridge: &str,
        subnet: IpNetwork,
        rules: BridgeRules,
    ) -> Vec<String> {
        let mut missing: Vec<String> = self
            .bridge_rules(bridge, subnet, rules)
            .into_iter()
            .map(|(_, comment, _)| comment)
            .filter(|c| !snap.has_comment(c))
            .collect();
        if !snap.base_complete() {
            missing.push(BASE_COMMENT.to_string());
        }
        missing
    }

    /// The batch [`Firewall::add_container`] applies, or its refusal.
    fn container_batch(
        &self,
        snap: &Snapshot,
        tag: &str,
        addresses: &[IpAddr],
        mappings: &[Mapping],
    ) -> Result<Batch<'static>> {
        check_conflicts(&published_in(snap), tag, mappings)?;
        let mut batch = Batch::new();
        self.add_base(snap, &mut batch);
        for addr in addresses {
            batch.add(self.rule(ATTACHMENTS, attachment_statements(*addr), tag));
        }
        for m in mappings {
            batch.add(self.rule(PUBLISHED, dnat_statements(m), tag));
        }
        Ok(batch)
    }

    /// The batch deleting the rules whose comment is `doomed` (the table when nothing but the
    /// fixed rules would be left), and how many rules that is; None when there is nothing to do.
    fn removal(
        &self,
        snap: &Snapshot,
        doomed: impl Fn(&str) -> bool,
    ) -> Option<(Batch<'static>, usize)> {
        if !snap.exists {
            return None;
        }
        nft::deletion(&self.table, &snap.rules, doomed, |c| c == BASE_COMMENT)
    }

    /// Adds the deletion of every rule commented `comment` to `batch`.
    fn delete_commented(&self, snap: &Snapshot, comment: &str, batch: &mut Batch<'static>) {
        for rule in commented_where(&snap.rules, |c| c == comment) {
            batch.delete(self.rule_handle(rule));
        }
    }

    fn rule_handle(&self, rule: &Rule) -> NfListObject<'static> {
        nft::rule_handle(&self.table, rule)
    }

    fn table_object(&self) -> Table<'static> {
        nft::table_object(&self.table)
    }

    fn rule(
        &self,
        chain: &str,
        stmts: Vec<Statement<'static>>,
        comment: &str,
    ) -> NfListObject<'static> {
        nft::rule(&self.table, chain, stmts, comment)
    }

    /// Adds table, chains and fixed rules to `batch` where the snapshot lacks them. `add` of an
    /// existing table or chain is a no-op for nft, but not a free one: nft loads and compares
    /// them (a batch of one rule runs in about a quarter of the time), so they are added only
    /// when one is missing.
    fn add_base(&self, snap: &Snapshot, batch: &mut Batch<'static>) {
        if snap.exists && snap.has_chains() && snap.base_complete() {
            return;
        }
        batch.add(NfListObject::Table(self.table_object()));
        let base_chain = |name: &str, hook: NfHook, prio: i32| {
            nft::base_chain(&self.table, name, NfChainType::NAT, hook, prio)
        };
        batch.add(NfListObject::Chain(base_chain(
            PREROUTING,
            NfHook::Prerouting,
            DSTNAT,
        )));
        batch.add(NfListObject::Chain(base_chain(
            OUTPUT,
            NfHook::Output,
            DSTNAT,
        )));
        batch.add(NfListObject::Chain(base_chain(
            POSTROUTING,
            NfHook::Postrouting,
            SRCNAT,
        )));
        batch.add(NfListObject::Chain(Chain {
            _type: Some(NfChainType::Filter),
            ..base_chain(FORWARD, NfHook::Forward, FILTER)
        }));
        for regular in [PUBLISHED, ATTACHMENTS] {
            batch.add(NfListObject::Chain(nft::regular_chain(
                &self.table,
                regular,
            )));
        }
        if snap.base_complete() {
            return;
        }
        // A partial base (someone deleted a rule by hand) is replaced as a whole.
        self.delete_commented(snap, BASE_COMMENT, batch);
        let jump = || {
            vec![
                matches(fib_type(FibFlag::Daddr), Operator::EQ, string("local")),
                Statement::Jump(JumpTarget {
                    target: PUBLISHED.into(),
                }),
            ]
        };
        batch.add(self.rule(PREROUTING, jump(), BASE_COMMENT));
        // Connections to loopback stay local: DNAT of 127.0.0.1 to a bridge would need
        // route_localnet on the host, which we do not touch.
        let loopback = |family: &'static str, net: &str| {
            vec![
                matches(
                    payload(family, "daddr"),
                    Operator::EQ,
                    prefix(net.parse().expect("constant network")),
                ),
                Statement::Return(None),
            ]
        };
        batch.add(self.rule(OUTPUT, loopback("ip", "127.0.0.0/8"), BASE_COMMENT));
        batch.add(self.rule(OUTPUT, loopback("ip6", "::1/128"), BASE_COMMENT));
        batch.add(self.rule(OUTPUT, jump(), BASE_COMMENT));
    }

    /// The rules of `subnet` behind `bridge` that `rules` asks for, as (chain, comment,
    /// statements), in the order they must appear.
    fn bridge_rules(
        &self,
        bridge: &str,
        subnet: IpNetwork,
        rules: BridgeRules,
    ) -> Vec<(&'static str, String, Vec<Statement<'static>>)> {
        let subnet = network_of(subnet);
        let family = if subnet.is_ipv4() { "ip" } else { "ip6" };
        let from_subnet = || matches(payload(family, "saddr"), Operator::EQ, prefix(subnet));
        let iifname = || matches(meta(MetaKey::Iifname), Operator::EQ, string(bridge));
        let oifname = |op| matches(meta(MetaKey::Oifname), op, string(bridge));
        // `in`, not `==`: the status is a bit mask and "dnat" one of its bits.
        let dnatted = || matches(ct("status"), Operator::IN, string("dnat"));
        let mut out = Vec::new();
        if rules.masquerade {
            out.push((
                POSTROUTING,
                masquerade_comment(bridge, subnet),
                vec![
                    from_subnet(),
                    oifname(Operator::NEQ),
                    Statement::Masquerade(None),
                ],
            ));
        }
        out.push((
            POSTROUTING,
            hairpin_comment(bridge, subnet),
            vec![
                from_subnet(),
                oifname(Operator::EQ),
                dnatted(),
                Statement::Masquerade(None),
            ],
        ));
        // From the host itself to a published port: the container answers the bridge's address,
        // whatever its default route is.
        out.push((
            POSTROUTING,
            local_comment(bridge),
            vec![
                oifname(Operator::EQ),
                dnatted(),
                matches(fib_type(FibFlag::Saddr), Operator::EQ, string("local")),
                Statement::Masquerade(None),
            ],
        ));
        if rules.isolate {
            out.push((
                FORWARD,
                icc_published_comment(bridge),
                vec![
                    iifname(),
                    oifname(Operator::EQ),
                    dnatted(),
                    Statement::Accept(None),
                ],
            ));
            out.push((
                FORWARD,
                icc_drop_comment(bridge),
                vec![iifname(), oifname(Operator::EQ), Statement::Drop(None)],
            ));
        }
        out
    }

    /// Reads the table, or takes what this firewall kept of it.
    fn snapshot(&self) -> Result<Snapshot> {
        if let Some(snap) = self.kept.as_ref().and_then(|k| k.borrow().clone()) {
            return Ok(snap);
        }
        let snap = match nft::read_table_and_chains(&self.nft, &self.table)? {
            Some((rules, chains)) => Snapshot {
                exists: true,
                rules,
                chains,
            },
            None => Snapshot::absent(),
        };
        self.keep(snap.clone());
        Ok(snap)
    }

    /// Remembers `snap` as the table's state, when this firewall keeps one.
    fn keep(&self, snap: Snapshot) {
        if let Some(kept) = &self.kept {
            *kept.borrow_mut() = Some(snap);
        }
    }

    /// Applies `batch`; what was kept is forgotten (the caller keeps the state a deletion
    /// leaves, which it knows).
    fn apply(&self, batch: Batch<'static>, action: &str) -> Result<()> {
        if let Some(kept) = &self.kept {
            *kept.borrow_mut() = None;
        }
        nft::apply(&self.nft, batch, action)
    }
}

fn published_in(snap: &Snapshot) -> Vec<Published> {
    snap.rules
        .iter()
        .filter(|r| r.chain == PUBLISHED)
        .filter_map(|r| {
            let tag = r.comment.as_deref().filter(|c| is_tag(c))?;
            match parse_mapping(&r.expr) {
                Some(mapping) => Some(Published {
                    tag: tag.to_string(),
                    mapping,
                }),
                None => {
                    log::warn!("rule {:?} of {tag} is not a port mapping", r.handle);
                    None
                }
            }
        })
        .collect()
}

/// What [`Firewall::container`] reports for `snap`.
fn container_in(snap: &Snapshot, tag: &str) -> Option<ContainerRules> {
    let mut found = false;
    let mut rules = ContainerRules::default();
    for rule in commented_where(&snap.rules, |c| c == tag) {
        found = true;
        if rule.chain == ATTACHMENTS {
            rules.addresses.extend(parse_attachment(&rule.expr));
        } else if rule.chain == PUBLISHED {
            rules.mappings.extend(parse_mapping(&rule.expr));
        }
    }
    found.then_some(rules)
}

/// What [`Firewall::attached_addresses`] reports for `snap`.
fn attached_in(snap: &Snapshot) -> BTreeSet<IpAddr> {
    snap.rules
        .iter()
        .filter(|r| r.chain == ATTACHMENTS && r.comment.as_deref().is_some_and(is_tag))
        .filter_map(|r| parse_attachment(&r.expr))
        .collect()
}

/// What [`Firewall::tags`] reports for `snap`.
fn tags_in(snap: &Snapshot) -> BTreeSet<String> {
    snap.rules
        .iter()
        .filter_map(|r| r.comment.as_deref())
        .filter(|c| is_tag(c))
        .map(str::to_string)
        .collect()
}

fn attachment_statements(addr: IpAddr) -> Vec<Statement<'static>> {
    let family = if addr.is_ipv4() { "ip" } else { "ip6" };
    vec![
        matches(
            payload(family, "saddr"),
            Operator::EQ,
            string(addr.to_string()),
        ),
        Statement::Return(None),
    ]
}

fn parse_attachment(stmts: &[Statement]) -> Option<IpAddr> {
    stmts.iter().find_map(|s| match s {
        Statement::Match(Match {
            left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(field))),
            right: Expression::String(addr),
            ..
        }) if field.field == "saddr" => addr.parse().ok(),
        _ => None,
    })
}

fn dnat_statements(m: &Mapping) -> Vec<Statement<'static>> {
    let (family, nfproto, nat_family) = if m.container_addr.is_ipv4() {
        ("ip", "ipv4", NATFamily::IP)
    } else {
        ("ip6", "ipv6", NATFamily::IP6)
    };
    let mut stmts = Vec::new();
    match m.host_ip {
        Some(ip) => stmts.push(matches(
            payload(family, "daddr"),
            Operator::EQ,
            string(ip.to_string()),
        )),
        // The family has to be explicit: `dnat ip to` must never see an IPv6 packet.
        None => stmts.push(matches(
            meta(MetaKey::Nfproto),
            Operator::EQ,
            string(nfproto),
        )),
    }
    stmts.push(matches(
        payload(m.protocol.as_str(), "dport"),
        Operator::EQ,
        Expression::Number(u32::from(m.host_port)),
    ));
    stmts.push(Statement::DNAT(Some(NAT {
        addr: Some(string(m.container_addr.to_string())),
        family: Some(nat_family),
        port: Some(Expression::Number(u32::from(m.container_port))),
        flags: None,
    })));
    stmts
}

/// Reads a DNAT rule back (as `nft -j` lists it) into the mapping it implements.
fn parse_mapping(stmts: &[Statement]) -> Option<Mapping> {
    let mut protocol = None;
    let mut host_port = None;
    let mut host_ip = None;
    let mut target = None;
    for stmt in stmts {
        match stmt {
            Statement::Match(Match {
                left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(field))),
                right,
                op: Operator::EQ,
            }) => match (field.protocol.as_ref(), field.field.as_ref(), right) {
                (p, "dport", Expression::Number(n)) => {
                    protocol = Protocol::parse(p);
                    host_port = u16::try_from(*n).ok();
                }
                ("ip" | "ip6", "daddr", Expression::String(s)) => host_ip = s.parse().ok(),
                _ => {}
            },
            Statement::DNAT(Some(NAT {
                addr: Some(Expression::String(addr)),
                port: Some(Expression::Number(port)),
                ..
            })) => target = Some((addr.parse().ok()?, u16::try_from(*port).ok()?)),
            _ => {}
        }
    }
    let (container_addr, container_port) = target?;
    Some(Mapping {
        protocol: protocol?,
        host_ip,
        host_port: host_port?,
        container_addr,
        container_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::tests::{batch_json, listed_expr, listed_rules, GWBRIDGE_LISTING};
    use crate::Error;
    use serde_json::{json, Value};
    use std::borrow::Cow;

    const TAG: &str = "demo:abc123/eth1";

    fn fw() -> Firewall {
        Firewall::with_table(TABLE)
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The table of the listing: base, one bridge (masquerade and isolation) and one container.
    fn listed() -> Snapshot {
        Snapshot {
            exists: true,
            rules: listed_rules(GWBRIDGE_LISTING),
            chains: super::CHAINS.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// The listed table without the rules whose comment satisfies `drop`.
    fn listed_without(drop: impl Fn(&str) -> bool) -> Snapshot {
        let mut snap = listed();
        snap.rules.retain(|r| !drop(r.comment.as_deref().unwrap()));
        snap
    }

    fn absent() -> Snapshot {
        Snapshot::absent()
    }

    const BOTH: BridgeRules = BridgeRules {
        masquerade: true,
        isolate: true,
    };
    const NEITHER: BridgeRules = BridgeRules {
        masquerade: false,
        isolate: false,
    };

    fn mapping(host_ip: Option<&str>, host_port: u16, addr: &str, port: u16) -> Mapping {
        Mapping {
            protocol: Protocol::Tcp,
            host_ip: host_ip.map(ip),
            host_port,
            container_addr: ip(addr),
            container_port: port,
        }
    }

    /// The commands of a batch, each as (verb, object kind, chain or name, comment or handle).
    fn commands(batch: Batch<'static>) -> Vec<String> {
        let doc = batch_json(batch);
        doc["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|cmd| {
                let (verb, object) = cmd.as_object().unwrap().iter().next().unwrap();
                let (kind, body) = object.as_object().unwrap().iter().next().unwrap();
                let place = body
                    .get("chain")
                    .or(body.get("name"))
                    .and_then(Value::as_str)
                    .unwrap();
                let what = match (body.get("comment"), body.get("handle")) {
                    (Some(c), _) => format!(" {}", c.as_str().unwrap()),
                    (None, Some(h)) => format!(" #{h}"),
                    (None, None) => String::new(),
                };
                format!("{verb} {kind} {place}{what}")
            })
            .collect()
    }

    /// The statements of the rule commented `comment` among `rules`, as JSON.
    fn wanted_expr(
        rules: &[(&'static str, String, Vec<Statement<'static>>)],
        comment: &str,
    ) -> Value {
        let (_, _, stmts) = rules
            .iter()
            .find(|(_, c, _)| c == comment)
            .unwrap_or_else(|| panic!("no rule {comment:?}"));
        serde_json::to_value(stmts).unwrap()
    }

    const BASE_OBJECTS: [&str; 7] = [
        "add table cni_gwbridge",
        "add chain prerouting",
        "add chain output",
        "add chain postrouting",
        "add chain forward",
        "add chain published",
        "add chain attachments",
    ];

    #[test]
    fn the_base_is_written_whole_into_a_new_table() {
        let mut batch = Batch::new();
        fw().add_base(&absent(), &mut batch);
        let mut expected: Vec<String> = BASE_OBJECTS.iter().map(|s| s.to_string()).collect();
        expected.extend(
            [
                "add rule prerouting gwbridge-egress base",
                "add rule output gwbridge-egress base",
                "add rule output gwbridge-egress base",
                "add rule output gwbridge-egress base",
            ]
            .map(String::from),
        );
        assert_eq!(commands(batch), expected);
    }

    #[test]
    fn base_chains_hook_where_nat_and_filter_rules_usually_run() {
        let mut batch = Batch::new();
        fw().add_base(&absent(), &mut batch);
        let doc = batch_json(batch);
        let chain = |name: &str| {
            doc["nftables"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|c| c["add"]["chain"].as_object().filter(|c| c["name"] == name))
                .cloned()
                .map(Value::Object)
                .unwrap()
        };
        let hooked = |kind: &str, hook: &str, prio: i32| {
            json!({"family": "inet", "table": "cni_gwbridge", "name": hook,
                "type": kind, "hook": hook, "prio": prio, "policy": "accept"})
        };
        assert_eq!(chain("prerouting"), hooked("nat", "prerouting", -100));
        assert_eq!(chain("output"), hooked("nat", "output", -100));
        assert_eq!(chain("postrouting"), hooked("nat", "postrouting", 100));
        assert_eq!(chain("forward"), hooked("filter", "forward", 0));
        assert_eq!(
            chain("published"),
            json!({"family": "inet", "table": "cni_gwbridge", "name": "published"})
        );
    }

    #[test]
    fn base_rules_are_what_nft_lists_back() {
        let mut batch = Batch::new();
        fw().add_base(&absent(), &mut batch);
        let doc = batch_json(batch);
        let base: Vec<&Value> = doc["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"].get("rule"))
            .map(|r| &r["expr"])
            .collect();
        let listed: Vec<Value> = listed_rules(GWBRIDGE_LISTING)
            .iter()
            .filter(|r| r.comment.as_deref() == Some(BASE_COMMENT))
            .map(|r| serde_json::to_value(&r.expr).unwrap())
            .collect();
        assert_eq!(base.len(), 4);
        assert_eq!(*base[0], listed[0], "prerouting jump");
        assert_eq!(*base[1], listed[1], "loopback return");
        assert_eq!(*base[3], listed[3], "output jump");
        // nft lists a /128 prefix as the bare address.
        assert_eq!(
            base[2][0]["match"]["right"],
            json!({"prefix": {"addr": "::1", "len": 128}})
        );
        assert_eq!(listed[2][0]["match"]["right"], json!("::1"));
    }

    #[test]
    fn a_complete_base_adds_nothing() {
        let snap = listed();
        assert!(snap.base_complete());
        let mut batch = Batch::new();
        fw().add_base(&snap, &mut batch);
        assert!(
            commands(batch).is_empty(),
            "nft need not load table and chains"
        );
    }

    #[test]
    fn a_missing_chain_adds_table_and_chains_again() {
        // Someone deleted the (empty) attachments chain by hand: its rules would have nowhere to go.
        let mut snap = listed_without(|c| !c.starts_with("bridge ") && c != BASE_COMMENT);
        snap.chains.remove(ATTACHMENTS);
        let mut batch = Batch::new();
        fw().add_base(&snap, &mut batch);
        assert_eq!(commands(batch), BASE_OBJECTS);
    }

    #[test]
    fn a_partial_base_is_replaced_as_a_whole() {
        // Someone deleted the ip6 loopback return (handle 9) by hand.
        let mut snap = listed();
        snap.rules.retain(|r| r.handle != Some(9));
        assert!(!snap.base_complete());
        let mut batch = Batch::new();
        fw().add_base(&snap, &mut batch);
        let cmds = commands(batch);
        assert_eq!(cmds[..7], BASE_OBJECTS);
        assert_eq!(
            cmds[7..],
            [
                "delete rule prerouting #7",
                "delete rule output #8",
                "delete rule output #10",
                "add rule prerouting gwbridge-egress base",
                "add rule output gwbridge-egress base",
                "add rule output gwbridge-egress base",
                "add rule output gwbridge-egress base",
            ]
        );
    }

    #[test]
    fn a_duplicated_base_rule_is_not_complete() {
        let mut snap = listed();
        let extra = snap.rules[0].clone();
        snap.rules.push(extra);
        assert!(!snap.base_complete());
    }

    #[test]
    fn a_bridge_with_every_option_has_five_rules_in_order() {
        let rules = fw().bridge_rules("cni_gwbridge", net("172.18.0.1/16"), BOTH);
        let summary: Vec<(&str, &str)> = rules.iter().map(|(ch, c, _)| (*ch, c.as_str())).collect();
        assert_eq!(
            summary,
            [
                (
                    "postrouting",
                    "bridge cni_gwbridge masquerade 172.18.0.0/16"
                ),
                ("postrouting", "bridge cni_gwbridge hairpin 172.18.0.0/16"),
                ("postrouting", "bridge cni_gwbridge local"),
                ("forward", "bridge cni_gwbridge icc-published"),
                ("forward", "bridge cni_gwbridge icc-drop"),
            ],
            "the subnet's host bits never reach a comment"
        );
    }

    #[test]
    fn bridge_rules_are_what_nft_lists_back() {
        let rules = fw().bridge_rules("cni_gwbridge", net("172.18.0.0/16"), BOTH);
        for (_, comment, _) in &rules {
            assert_eq!(
                wanted_expr(&rules, comment),
                listed_expr(GWBRIDGE_LISTING, comment),
                "{comment}"
            );
        }
    }

    #[test]
    fn an_ipv6_subnet_matches_ip6_sources() {
        let rules = fw().bridge_rules("br6", net("fd00:1::1/64"), BOTH);
        let comment = "bridge br6 masquerade fd00:1::/64";
        assert_eq!(
            wanted_expr(&rules, comment),
            json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}},
                    "right": {"prefix": {"addr": "fd00:1::", "len": 64}}}},
                {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "br6"}},
                {"masquerade": null}
            ])
        );
        assert!(rules
            .iter()
            .any(|(_, c, _)| c == "bridge br6 hairpin fd00:1::/64"));
    }

    #[test]
    fn without_options_a_bridge_keeps_hairpin_and_local_only() {
        let rules = fw().bridge_rules("br0", net("10.9.0.0/24"), NEITHER);
        let comments: Vec<&str> = rules.iter().map(|(_, c, _)| c.as_str()).collect();
        assert_eq!(
            comments,
            ["bridge br0 hairpin 10.9.0.0/24", "bridge br0 local"]
        );
        let isolated_only = fw().bridge_rules(
            "br0",
            net("10.9.0.0/24"),
            BridgeRules {
                masquerade: false,
                isolate: true,
            },
        );
        assert_eq!(isolated_only.len(), 4);
        assert!(isolated_only
            .iter()
            .all(|(_, c, _)| !c.contains("masquerade")));
    }

    #[test]
    fn bridge_rules_in_place_need_no_transaction() {
        let snap = listed();
        let fw = fw();
        assert!(fw
            .bridge_batch(&snap, "cni_gwbridge", net("172.18.0.0/16"), BOTH)
            .is_none());
        assert!(fw
            .missing_in(&snap, "cni_gwbridge", net("172.18.0.9/16"), BOTH)
            .is_empty());
    }

    #[test]
    fn a_new_table_gets_base_and_bridge_rules_in_one_transaction() {
        let batch = fw()
            .bridge_batch(&absent(), "cni_gwbridge", net("172.18.0.0/16"), BOTH)
            .unwrap();
        let cmds = commands(batch);
        assert_eq!(cmds.len(), 7 + 4 + 5);
        assert_eq!(
            cmds[11..],
            [
                "add rule postrouting bridge cni_gwbridge masquerade 172.18.0.0/16",
                "add rule postrouting bridge cni_gwbridge hairpin 172.18.0.0/16",
                "add rule postrouting bridge cni_gwbridge local",
                "add rule forward bridge cni_gwbridge icc-published",
                "add rule forward bridge cni_gwbridge icc-drop",
            ]
        );
    }

    #[test]
    fn a_table_without_its_base_is_given_it_again() {
        // The bridge's rules are in place but the base was deleted by hand: the base is written
        // again, though no bridge rule changes.
        let mut snap = listed_without(|c| c == BASE_COMMENT);
        snap.rules
            .retain(|r| r.comment.as_deref().unwrap().starts_with("bridge "));
        let cmds = commands(
            fw().bridge_batch(&snap, "cni_gwbridge", net("172.18.0.0/16"), BOTH)
                .unwrap(),
        );
        assert_eq!(cmds.len(), 7 + 4, "{cmds:#?}");
        assert_eq!(
            fw().missing_in(&snap, "cni_gwbridge", net("172.18.0.0/16"), BOTH),
            [BASE_COMMENT]
        );
    }

    #[test]
    fn dropped_options_remove_their_rules_in_the_same_transaction() {
        // icc and ipMasq both turned on again since the bridge was made: masquerade and the two
        // forward rules go, hairpin and local stay.
        let batch = fw()
            .bridge_batch(&listed(), "cni_gwbridge", net("172.18.0.0/16"), NEITHER)
            .unwrap();
        assert_eq!(
            commands(batch),
            [
                "delete rule postrouting #18",
                "delete rule forward #16",
                "delete rule forward #17",
            ]
        );
    }

    #[test]
    fn a_missing_forward_rule_rewrites_both_in_order() {
        // Only the drop is left: re-adding the accept after it would never match, so both go
        // and come back accept first.
        let snap = listed_without(|c| c == "bridge cni_gwbridge icc-published");
        let fw = fw();
        assert_eq!(
            fw.missing_in(&snap, "cni_gwbridge", net("172.18.0.0/16"), BOTH),
            ["bridge cni_gwbridge icc-published"]
        );
        let batch = fw
            .bridge_batch(&snap, "cni_gwbridge", net("172.18.0.0/16"), BOTH)
            .unwrap();
        assert_eq!(
            commands(batch),
            [
                "add rule forward bridge cni_gwbridge icc-published",
                "delete rule forward #17",
                "add rule forward bridge cni_gwbridge icc-drop",
            ]
        );
    }

    #[test]
    fn a_missing_postrouting_rule_is_added_alone() {
        let snap = listed_without(|c| c == "bridge cni_gwbridge local");
        let batch = fw()
            .bridge_batch(&snap, "cni_gwbridge", net("172.18.0.0/16"), BOTH)
            .unwrap();
        assert_eq!(
            commands(batch),
            ["add rule postrouting bridge cni_gwbridge local"]
        );
    }

    #[test]
    fn a_second_subnet_of_a_bridge_adds_its_own_rules_only() {
        // local and the forward rules are per bridge, masquerade and hairpin per subnet.
        let batch = fw()
            .bridge_batch(&listed(), "cni_gwbridge", net("fd00:1::/64"), BOTH)
            .unwrap();
        assert_eq!(
            commands(batch),
            [
                "add rule postrouting bridge cni_gwbridge masquerade fd00:1::/64",
                "add rule postrouting bridge cni_gwbridge hairpin fd00:1::/64",
            ]
        );
    }

    #[test]
    fn published_ports_are_read_back_with_their_tags() {
        let published = published_in(&listed());
        let expected = [
            mapping(None, 8080, "172.18.0.2", 80),
            Mapping {
                protocol: Protocol::Udp,
                ..mapping(Some("192.168.205.10"), 5353, "172.18.0.2", 53)
            },
            mapping(None, 8080, "fd00::2", 80),
        ];
        assert_eq!(
            published,
            expected
                .iter()
                .map(|m| Published {
                    tag: TAG.to_string(),
                    mapping: m.clone(),
                })
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_container_is_read_back_from_its_tag() {
        let rules = container_in(&listed(), TAG).unwrap();
        assert_eq!(rules.addresses, [ip("172.18.0.2"), ip("fd00::2")]);
        assert_eq!(rules.mappings.len(), 3);
        assert_eq!(rules.mappings[0], mapping(None, 8080, "172.18.0.2", 80));
        assert_eq!(container_in(&listed(), "demo:other/eth1"), None);
        assert_eq!(container_in(&listed(), "demo:abc123/eth2"), None);
    }

    #[test]
    fn attached_addresses_are_those_of_the_attachment_records_only() {
        // The DNAT rules name 172.18.0.2 too; only the records count, and an empty table has none.
        assert_eq!(
            attached_in(&listed()),
            BTreeSet::from([ip("172.18.0.2"), ip("fd00::2")])
        );
        assert!(attached_in(&absent()).is_empty());
    }

    #[test]
    fn a_recorded_container_without_ports_is_found() {
        let mut snap = listed();
        snap.rules.retain(|r| r.chain != PUBLISHED);
        let rules = container_in(&snap, TAG).unwrap();
        assert_eq!(rules.addresses.len(), 2);
        assert!(rules.mappings.is_empty());
    }

    #[test]
    fn tags_are_the_containers_never_bridges_or_base() {
        let tags = tags_in(&listed());
        assert_eq!(tags.into_iter().collect::<Vec<_>>(), [TAG]);
        // A v6 bridge comment holds ':' and '/' like a tag does.
        let mut snap = listed();
        let mut v6 = snap.rules[11].clone();
        v6.comment = Some("bridge cni_gwbridge masquerade fd00:1::/64".into());
        snap.rules.push(v6);
        assert_eq!(tags_in(&snap).len(), 1);
    }

    #[test]
    fn a_dnat_rule_that_is_not_a_mapping_is_skipped() {
        let mut snap = listed();
        let mut odd = snap.rules[4].clone();
        odd.comment = Some("demo:odd/eth1".into());
        odd.expr = Cow::Owned(vec![Statement::Accept(None)]);
        snap.rules.push(odd);
        let published = published_in(&snap);
        assert_eq!(published.len(), 3);
        assert!(published.iter().all(|p| p.tag == TAG));
        // A comment that is not a tag is no container's port, whatever the rule.
        let mut foreign = snap.rules[4].clone();
        foreign.comment = Some("added by hand".into());
        snap.rules.push(foreign);
        assert_eq!(published_in(&snap).len(), 3);
    }

    #[test]
    fn dnat_rules_are_what_nft_lists_back() {
        let rules = listed_rules(GWBRIDGE_LISTING);
        let listed_mappings: Vec<&Rule> = rules.iter().filter(|r| r.chain == PUBLISHED).collect();
        for rule in listed_mappings {
            let m = parse_mapping(&rule.expr).unwrap();
            assert_eq!(
                serde_json::to_value(dnat_statements(&m)).unwrap(),
                serde_json::to_value(&rule.expr).unwrap(),
                "{m}"
            );
        }
    }

    #[test]
    fn every_kind_of_mapping_survives_writing_and_reading_back() {
        let cases = [
            mapping(None, 8080, "172.18.0.2", 80),
            mapping(Some("192.168.205.10"), 8080, "172.18.0.2", 80),
            mapping(None, 443, "fd00::2", 8443),
            mapping(Some("fd00::10"), 1, "fd00::2", 65535),
            Mapping {
                protocol: Protocol::Udp,
                ..mapping(None, 65535, "10.0.0.2", 1)
            },
        ];
        for m in cases {
            assert_eq!(parse_mapping(&dnat_statements(&m)), Some(m.clone()), "{m}");
        }
    }

    #[test]
    fn a_mapping_on_every_address_names_its_family() {
        // Without the nfproto match, `dnat ip to` would meet IPv6 packets in an inet table.
        let v4 =
            serde_json::to_value(dnat_statements(&mapping(None, 80, "172.18.0.2", 80))).unwrap();
        assert_eq!(
            v4[0],
            json!({"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}})
        );
        assert_eq!(v4[2]["dnat"]["family"], "ip");
        let v6 = serde_json::to_value(dnat_statements(&mapping(
            Some("fd00::10"),
            80,
            "fd00::2",
            80,
        )))
        .unwrap();
        assert_eq!(
            v6[0],
            json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": "fd00::10"}})
        );
        assert_eq!(
            v6[2]["dnat"],
            json!({"addr": "fd00::2", "family": "ip6", "port": 80})
        );
    }

    #[test]
    fn rules_that_are_not_whole_mappings_are_not_read_as_one() {
        let dport = |protocol: &str, port: u32| {
            matches(
                payload(protocol, "dport"),
                Operator::EQ,
                Expression::Number(port),
            )
        };
        let dnat = |addr: &str, port: u32| {
            Statement::DNAT(Some(NAT {
                addr: Some(string(addr)),
                family: Some(NATFamily::IP),
                port: Some(Expression::Number(port)),
                flags: None,
            }))
        };
        assert_eq!(parse_mapping(&[dport("tcp", 80)]), None, "no target");
        assert_eq!(parse_mapping(&[dnat("172.18.0.2", 80)]), None, "no port");
        assert_eq!(
            parse_mapping(&[dport("sctp", 80), dnat("172.18.0.2", 80)]),
            None,
            "not tcp or udp"
        );
        assert_eq!(
            parse_mapping(&[dport("tcp", 70000), dnat("172.18.0.2", 80)]),
            None,
            "not a port"
        );
        assert_eq!(
            parse_mapping(&[dport("tcp", 80), dnat("not-an-address", 80)]),
            None
        );
        assert_eq!(
            parse_mapping(&attachment_statements(ip("172.18.0.2"))),
            None
        );
        // `!=` is not a mapping's match: the port stays unknown.
        let not_port = matches(
            payload("tcp", "dport"),
            Operator::NEQ,
            Expression::Number(80),
        );
        assert_eq!(parse_mapping(&[not_port, dnat("172.18.0.2", 80)]), None);
    }

    #[test]
    fn attachments_record_the_source_address_and_read_back() {
        for addr in [ip("172.18.0.2"), ip("fd00::2")] {
            assert_eq!(parse_attachment(&attachment_statements(addr)), Some(addr));
        }
        let rules = listed_rules(GWBRIDGE_LISTING);
        let listed_v6 = rules.iter().find(|r| r.handle == Some(15)).unwrap();
        assert_eq!(parse_attachment(&listed_v6.expr), Some(ip("fd00::2")));
        assert_eq!(
            serde_json::to_value(attachment_statements(ip("fd00::2"))).unwrap(),
            serde_json::to_value(&listed_v6.expr).unwrap()
        );
        let dnat = dnat_statements(&mapping(Some("192.168.205.10"), 80, "172.18.0.2", 80));
        assert_eq!(parse_attachment(&dnat), None, "a daddr is no attachment");
    }

    #[test]
    fn a_container_is_recorded_and_published_in_one_batch() {
        let m = mapping(None, 9090, "172.18.0.3", 90);
        let batch = fw()
            .container_batch(&listed(), "demo:new/eth1", &[ip("172.18.0.3")], &[m])
            .unwrap();
        assert_eq!(
            commands(batch),
            [
                "add rule attachments demo:new/eth1",
                "add rule published demo:new/eth1",
            ]
        );
        let batch = fw()
            .container_batch(&absent(), "demo:new/eth1", &[ip("172.18.0.3")], &[])
            .unwrap();
        assert_eq!(commands(batch).len(), 7 + 4 + 1, "base, then the record");
    }

    #[test]
    fn a_taken_port_refuses_the_whole_container() {
        let taken = mapping(Some("192.168.205.10"), 8080, "172.18.0.3", 80);
        match fw().container_batch(&listed(), "demo:new/eth1", &[ip("172.18.0.3")], &[taken]) {
            Err(Error::PortInUse { holder, port, .. }) => {
                assert_eq!((holder.as_str(), port), (TAG, 8080));
            }
            other => panic!("expected PortInUse, got {other:?}"),
        }
        // The same port on udp, or tcp 5353 (udp there), is free.
        let free = [
            Mapping {
                protocol: Protocol::Udp,
                ..mapping(None, 8080, "172.18.0.3", 80)
            },
            mapping(None, 5353, "172.18.0.3", 53),
        ];
        assert!(fw()
            .container_batch(&listed(), "demo:new/eth1", &[], &free)
            .is_ok());
    }

    #[test]
    fn removing_a_container_leaves_the_table_to_the_bridge() {
        let (batch, count) = fw().removal(&listed(), |c| c == TAG).unwrap();
        assert_eq!(count, 5);
        assert_eq!(
            commands(batch),
            [
                "delete rule published #11",
                "delete rule published #12",
                "delete rule published #13",
                "delete rule attachments #14",
                "delete rule attachments #15",
            ]
        );
    }

    #[test]
    fn the_last_user_takes_the_table_with_it() {
        let snap = listed_without(|c| c.starts_with("bridge "));
        let (batch, count) = fw().removal(&snap, |c| c == TAG).unwrap();
        assert_eq!(count, 5);
        assert_eq!(commands(batch), ["delete table cni_gwbridge"]);
        let prefix = bridge_prefix("cni_gwbridge");
        let snap = listed_without(|c| c == TAG);
        let (batch, count) = fw().removal(&snap, |c| c.starts_with(&prefix)).unwrap();
        assert_eq!(count, 5);
        assert_eq!(commands(batch), ["delete table cni_gwbridge"]);
    }

    #[test]
    fn what_a_removal_leaves_is_kept_without_reading_again() {
        // The kept state is what nft would list after the removal's batch: the table without
        // the doomed rules, or no table when the batch deletes it.
        let after = listed().after_removal(|c| c == TAG);
        assert!(after.exists);
        assert_eq!(after.rules.len(), listed().rules.len() - 5);
        assert!(container_in(&after, TAG).is_none());
        assert_eq!(
            after.rules.iter().map(|r| r.handle).collect::<Vec<_>>(),
            listed_without(|c| c == TAG)
                .rules
                .iter()
                .map(|r| r.handle)
                .collect::<Vec<_>>()
        );
        let last = listed_without(|c| c.starts_with("bridge ")).after_removal(|c| c == TAG);
        assert!(!last.exists && last.rules.is_empty());
    }

    #[test]
    fn removing_what_is_not_there_changes_nothing() {
        assert!(fw().removal(&listed(), |c| c == "demo:gone/eth1").is_none());
        assert!(fw().removal(&absent(), |_| true).is_none());
        let other_bridge = bridge_prefix("cni_gwbridge2");
        assert!(fw()
            .removal(&listed(), |c| c.starts_with(&other_bridge))
            .is_none());
    }

    #[test]
    fn only_the_base_left_is_an_unused_table() {
        assert!(!listed().only_base());
        let snap = listed_without(|c| c != BASE_COMMENT);
        assert!(snap.only_base());
        assert!(absent().only_base());
        // Removing anything from such a table removes the table.
        let (batch, count) = fw().removal(&snap, |c| c == TAG).unwrap();
        assert_eq!(
            (commands(batch), count),
            (vec!["delete table cni_gwbridge".to_string()], 0)
        );
    }
}
