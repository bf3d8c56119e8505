//! The nftables rules of gwbridge-egress: masquerade for a gateway bridge's subnet, icc=false
//! filtering on it, and its containers' published ports (DNAT) and records. (The isolation of
//! vxlan-overlay's hostAccess bridges is a separate module, [`overlay_isolation`], with a table of
//! its own.)
//!
//! Everything lives in one table of our own, `table inet cni_gwbridge`, so that nothing of the
//! host's own firewall (or of another tool's) is touched, and so that removing the table when the
//! last user leaves puts the host back exactly as it was:
//!
//! ```text
//! table inet cni_gwbridge {
//!   chain prerouting  { type nat hook prerouting priority dstnat; policy accept;
//!     fib daddr type local jump published comment "gwbridge-egress base" }
//!   chain output      { type nat hook output priority dstnat; policy accept;
//!     ip daddr 127.0.0.0/8 return comment "gwbridge-egress base"
//!     ip6 daddr ::1 return comment "gwbridge-egress base"
//!     fib daddr type local jump published comment "gwbridge-egress base" }
//!   chain published {
//!     meta nfproto ipv4 tcp dport 8080 dnat ip to 172.18.0.2:80 comment "demo:<container id>/eth1"
//!     ip daddr 192.168.205.10 udp dport 5353 dnat ip to 172.18.0.2:53 comment "demo:<container id>/eth1" }
//!   chain attachments {
//!     ip saddr 172.18.0.2 return comment "demo:<container id>/eth1" }
//!   chain forward     { type filter hook forward priority filter; policy accept;
//!     iifname "cni_gwbridge" oifname "cni_gwbridge" ct status dnat accept comment "bridge cni_gwbridge icc-published"
//!     iifname "cni_gwbridge" oifname "cni_gwbridge" drop comment "bridge cni_gwbridge icc-drop" }
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr 172.18.0.0/16 oifname != "cni_gwbridge" masquerade comment "bridge cni_gwbridge masquerade 172.18.0.0/16"
//!     ip saddr 172.18.0.0/16 oifname "cni_gwbridge" ct status dnat masquerade comment "bridge cni_gwbridge hairpin 172.18.0.0/16"
//!     oifname "cni_gwbridge" ct status dnat fib saddr type local masquerade comment "bridge cni_gwbridge local" }
//! }
//! ```
//!
//! Rules are identified by their comment, never by their position: a container's rules carry its
//! tag ([`tag()`]: network, container id, interface), a bridge's rules `bridge <name> <what>`, the
//! fixed rules `gwbridge-egress base`. `attachments` is never jumped to: its rules cost nothing and
//! record every attachment on the host, published ports or not, so that GC finds the attachments of
//! containers that died without a DEL.
//!
//! Rules are written through the `nftables` crate: typed JSON handed to `nft -j -f -`, so that one
//! call is one kernel transaction (all of a container's mappings appear, or none), container ids
//! need no quoting, and the table is read back as typed data rather than by parsing `nft list`
//! text. (The crate drives the `nft` binary; netlink batches by hand would be far more code for the
//! same transaction.)
//!
//! The forward rules exist only for bridges without inter-container communication (icc=false):
//! container to container over the bridge is dropped, except connections to published ports
//! (hairpin). They see bridged frames when br_netfilter hands them to the IP hooks
//! (bridge-nf-call-iptables=1), and routed ones always; the caller adds port isolation when
//! br_netfilter does not (isolated ports would also drop the bridged hairpin DNAT).
//!
//! Callers serialize check-and-add across processes (gwbridge-egress holds a per-host lock): the
//! port conflict check in [`Firewall::add_container`] and the addition are atomic only under it.
//!
//! The crate by job: [`Firewall`] and its table (`gwbridge`), [`OverlayIsolation`] and its table
//! ([`overlay_isolation`]), the nftables vocabulary both tables are written in (`nft`: expression
//! builders, rules by comment and handle, reading a table, applying a batch), published ports and
//! their conflicts ([`Mapping`], `ports`), tags ([`tag()`]), and the one error type ([`Error`]).

mod error;
mod gwbridge;
mod nft;
pub mod overlay_isolation;
mod ports;
mod tag;

pub use error::{Error, Result};
pub use gwbridge::{BridgeRules, ContainerRules, Firewall, TABLE};
pub use overlay_isolation::OverlayIsolation;
pub use ports::{Mapping, Protocol, Published};
pub use tag::{is_tag_of, parse_tag, tag};
