//! What overlayd tells its supervisor and its monitoring: liveness, readiness and counters, in
//! the Prometheus text format (the Prometheus project's `prometheus-client` crate). Served by
//! [`crate::http`] at `/healthz`, `/readyz` and `/metrics`.
//!
//! One set per process, as a Prometheus client's default registry is: every part of the daemon
//! counts into it without the counters being threaded through each call, and a process runs one
//! daemon.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A kernel table entry overlayd programs on a VXLAN device.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Table {
    Fdb,
    Neighbour,
}

/// What overlayd's DNS answered.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DnsAnswer {
    /// Records of a container name or address.
    Records,
    /// The name exists, not with that type.
    NoData,
    NxDomain,
    /// Forwarded, and the upstream's answer passed on.
    Forwarded,
    /// Forwarded, and no upstream answered (SERVFAIL to the client).
    ForwardFailed,
    /// A client outside the network's subnets.
    Refused,
    /// Not a standard query with one question, or the answer could not be sent.
    Error,
}

impl DnsAnswer {
    fn label(self) -> &'static str {
        match self {
            DnsAnswer::Records => "records",
            DnsAnswer::NoData => "nodata",
            DnsAnswer::NxDomain => "nxdomain",
            DnsAnswer::Forwarded => "forwarded",
            DnsAnswer::ForwardFailed => "servfail",
            DnsAnswer::Refused => "refused",
            DnsAnswer::Error => "error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableOp {
    table: &'static str,
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Activity {
    activity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answer {
    answer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    endpoints: Gauge,
    networks: Gauge,
    kernel_updates: Family<TableOp, Counter>,
    resyncs: Family<Reason, Counter>,
    resync_seconds: Histogram,
    watch_restarts: Family<Activity, Counter>,
    etcd_errors: Family<Activity, Counter>,
    dns_queries: Family<Answer, Counter>,
    reclaims: Family<Outcome, Counter>,
    released_keys: Counter,
    registered: AtomicBool,
    listed: AtomicBool,
    conflists_written: AtomicBool,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("overlayd"),
            endpoints: Gauge::default(),
            networks: Gauge::default(),
            kernel_updates: Family::default(),
            resyncs: Family::default(),
            // 1 ms .. ~16 s.
            resync_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            watch_restarts: Family::default(),
            etcd_errors: Family::default(),
            dns_queries: Family::default(),
            reclaims: Family::default(),
            released_keys: Counter::default(),
            registered: AtomicBool::new(false),
            listed: AtomicBool::new(false),
            conflists_written: AtomicBool::new(false),
        };
        let r = &mut m.registry;
        r.register(
            "endpoints",
            "Endpoint records known from etcd: those of the networks present on this host",
            m.endpoints.clone(),
        );
        r.register(
            "networks_followed",
            "Networks present on this host (a bridge here), whose endpoint records are followed",
            m.networks.clone(),
        );
        r.register(
            "kernel_entry_updates",
            "FDB and neighbour entries added or removed on the VXLAN devices",
            m.kernel_updates.clone(),
        );
        r.register(
            "resyncs",
            "Full reconciliations of the VXLAN devices' entries, by reason",
            m.resyncs.clone(),
        );
        r.register(
            "resync_duration_seconds",
            "How long a full reconciliation took",
            m.resync_seconds.clone(),
        );
        r.register(
            "watch_restarts",
            "etcd watches lost and listed again (a compaction, a partition, a restarted member)",
            m.watch_restarts.clone(),
        );
        r.register(
            "etcd_errors",
            "Failed attempts against etcd, by activity (each is retried)",
            m.etcd_errors.clone(),
        );
        r.register(
            "dns_queries",
            "DNS queries answered, by kind of answer",
            m.dns_queries.clone(),
        );
        r.register(
            "reclaims",
            "Dead nodes' shares released by the reclaimer, by outcome",
            m.reclaims.clone(),
        );
        r.register(
            "reclaimed_keys",
            "Allocations, names and endpoint records released from dead nodes",
            m.released_keys.clone(),
        );
        m
    }

    pub fn set_endpoints(&self, n: usize) {
        self.endpoints.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_networks(&self, n: usize) {
        self.networks.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn kernel_update(&self, table: Table, added: bool) {
        let table = match table {
            Table::Fdb => "fdb",
            Table::Neighbour => "neighbour",
        };
        let op = if added { "add" } else { "del" };
        self.kernel_updates
            .get_or_create(&TableOp { table, op })
            .inc();
    }

    pub fn resynced(&self, reason: &str, took: Duration) {
        self.resyncs
            .get_or_create(&Reason {
                reason: reason.to_string(),
            })
            .inc();
        self.resync_seconds.observe(took.as_secs_f64());
    }

    pub fn watch_restarted(&self, activity: &'static str) {
        self.watch_restarts
            .get_or_create(&Activity { activity })
            .inc();
    }

    pub fn etcd_error(&self, activity: &'static str) {
        self.etcd_errors.get_or_create(&Activity { activity }).inc();
    }

    pub fn dns_answered(&self, answer: DnsAnswer) {
        self.dns_queries
            .get_or_create(&Answer {
                answer: answer.label(),
            })
            .inc();
    }

    /// A reclaim of a dead node: done (with how many keys it released) or failed.
    pub fn reclaimed(&self, released: Option<u64>) {
        let outcome = if released.is_some() { "done" } else { "failed" };
        self.reclaims.get_or_create(&Outcome { outcome }).inc();
        self.released_keys.inc_by(released.unwrap_or(0));
    }

    pub fn set_registered(&self, registered: bool) {
        self.registered.store(registered, Ordering::Relaxed);
    }

    pub fn set_listed(&self) {
        self.listed.store(true, Ordering::Relaxed);
    }

    pub fn set_conflists_written(&self) {
        self.conflists_written.store(true, Ordering::Relaxed);
    }

    /// Ready: the node is registered under a live lease, the endpoint records have been listed
    /// once (the peers and DNS know the cluster), and the conflists are written. The first
    /// listing and the conflists stay done; registration comes and goes with the lease.
    pub fn not_ready(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.registered.load(Ordering::Relaxed) {
            missing.push("not registered");
        }
        if !self.listed.load(Ordering::Relaxed) {
            missing.push("endpoint records not listed yet");
        }
        if !self.conflists_written.load(Ordering::Relaxed) {
            missing.push("conflists not written yet");
        }
        missing
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_appear_in_the_text_format_with_their_labels() {
        let m = Metrics::new();
        m.kernel_update(Table::Fdb, true);
        m.kernel_update(Table::Fdb, true);
        m.kernel_update(Table::Neighbour, false);
        m.dns_answered(DnsAnswer::NxDomain);
        m.resynced("periodic", Duration::from_millis(3));
        m.reclaimed(Some(4));
        m.set_endpoints(7);
        let text = m.encode();
        for line in [
            "overlayd_kernel_entry_updates_total{table=\"fdb\",op=\"add\"} 2",
            "overlayd_kernel_entry_updates_total{table=\"neighbour\",op=\"del\"} 1",
            "overlayd_dns_queries_total{answer=\"nxdomain\"} 1",
            "overlayd_resyncs_total{reason=\"periodic\"} 1",
            "overlayd_resync_duration_seconds_count 1",
            "overlayd_reclaims_total{outcome=\"done\"} 1",
            "overlayd_reclaimed_keys_total 4",
            "overlayd_endpoints 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn ready_only_when_registered_listed_and_written() {
        let m = Metrics::new();
        assert_eq!(m.not_ready().len(), 3);
        m.set_registered(true);
        m.set_listed();
        assert_eq!(m.not_ready(), ["conflists not written yet"]);
        m.set_conflists_written();
        assert!(m.not_ready().is_empty());
        m.set_registered(false);
        assert_eq!(m.not_ready(), ["not registered"]);
    }
}
