//! Wires the parts together and runs them until SIGTERM or SIGINT.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use model::records::Node;
use netops::Netlink;
use store::Store;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use crate::cli::Args;
use crate::endpoints::EndpointCache;
use crate::error::Error;
use crate::{conflists, dns, http, metrics, peers, reclaim, registration, stale};

pub async fn run(args: Args) -> Result<(), Error> {
    // Handlers first: a SIGTERM during start-up must still mean a clean exit, not the default
    // action (death without revoking the lease).
    let mut term = install(SignalKind::terminate(), "SIGTERM")?;
    let mut int = install(SignalKind::interrupt(), "SIGINT")?;

    args.validate_node()?;
    let config = args.etcd_config()?;
    let vtep = match args.vtep {
        Some(vtep) => vtep,
        None => default_vtep().await?,
    };
    log::info!(
        "overlayd {} starting: node {}, vtep {vtep}, etcd {} (prefix {})",
        env!("CARGO_PKG_VERSION"),
        args.node,
        config.endpoints.join(","),
        config.prefix
    );
    let node = Node {
        name: args.node.clone(),
        vtep,
        since: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };

    // Bound before anything else starts: a taken port is a configuration error.
    let mut http = match args.metrics_addr.0 {
        Some(address) => {
            let listener = http::bind(address).await?;
            log::info!("health and metrics on http://{address}");
            tokio::spawn(http::serve(listener))
        }
        None => tokio::spawn(futures::future::pending()),
    };

    let cache = EndpointCache::new();
    // Subscribed before the feeder starts, so the first listing reaches it like any other.
    let changes = cache.subscribe();
    let mut peers = tokio::spawn(peers::run(args.node.clone(), changes));
    // Without DNS, a task that never ends stands in, so the select below stays one shape.
    let mut dns = if args.dns_enabled() {
        tokio::spawn(dns::run(
            args.node.clone(),
            args.dns_upstream.clone(),
            cache.subscribe(),
        ))
    } else {
        tokio::spawn(futures::future::pending())
    };
    // Conflists follow the network records, not the endpoints: a task of their own.
    let mut conflists = if args.no_conflists {
        metrics::get().set_conflists_written();
        tokio::spawn(futures::future::pending())
    } else {
        let settings = conflists::Settings {
            dir: args.cni_conf_dir.clone(),
            node: args.node.clone(),
            etcd: config.clone(),
        };
        tokio::spawn(conflists::run(Store::new(config.clone())?, settings))
    };
    // Attachments of this host released while it was gone come off the overlay.
    let mut stale = tokio::spawn(stale::run(
        Store::new(config.clone())?,
        args.node.clone(),
        cache.subscribe(),
    ));
    // Campaigns for the reclaimer's seat (unless --reclaim-after 0) and reclaims while it holds it.
    let mut reclaim = tokio::spawn(reclaim::run(config.clone(), args.reclaim()));
    // The Docker driver (--docker-plugin), else a task that never ends.
    let mut docker = match &args.docker_plugin {
        Some(name) => tokio::spawn(crate::docker::run(crate::docker::Settings {
            name: name.clone(),
            plugin_dir: args.docker_plugin_dir.clone(),
            docker_socket: args.docker_host.clone(),
            driver: crate::docker::driver::Settings {
                node: args.node.clone(),
                vtep,
                etcd: config.clone(),
                // In /run: a hint that may go with a reboot, and per simulated host in the lab
                // (each has its own /run), never a file left on the machine by a test.
                data_dir: crate::docker::driver::DATA_DIR.into(),
            },
        })),
        None => tokio::spawn(futures::future::pending()),
    };
    let mut feeder = tokio::spawn(crate::watch::run(Store::new(config.clone())?, cache));
    let (stop, stopped) = watch::channel(false);
    let mut registration = tokio::spawn(registration::run(
        Store::new(config)?,
        node,
        args.lease_ttl(),
        stopped,
    ));

    // The parts run until shutdown; one ending early is a bug, and a supervisor restarting the
    // whole process is better than running on without it.
    let outcome = tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        _ = int.recv() => Ok("SIGINT"),
        r = &mut peers => Err(ended("peer sync", r)),
        r = &mut dns => Err(ended("dns", r)),
        r = &mut conflists => Err(ended("conflists", r)),
        r = &mut feeder => Err(ended("endpoint watch", r)),
        r = &mut stale => Err(ended("stale attachments", r)),
        r = &mut reclaim => Err(ended("reclaim", r)),
        r = &mut registration => Err(ended("registration", r)),
        r = &mut http => Err(ended("metrics endpoint", r)),
        r = &mut docker => Err(ended("docker plugin", r)),
    };
    docker.abort();
    peers.abort();
    dns.abort();
    conflists.abort();
    feeder.abort();
    stale.abort();
    // The seat's lease expires within its TTL; another overlayd takes over then.
    reclaim.abort();
    http.abort();
    let signal = outcome?;
    log::info!("{signal} received, shutting down");
    let _ = stop.send(true);
    match registration.await {
        Ok(Ok(())) => Ok(()),
        r => Err(ended("registration", r)),
    }
}

fn install(kind: SignalKind, name: &'static str) -> Result<Signal, Error> {
    signal(kind).map_err(|source| Error::Signal {
        signal: name,
        source,
    })
}

fn ended(task: &'static str, result: Result<Result<(), Error>, tokio::task::JoinError>) -> Error {
    let reason = match result {
        Ok(Ok(())) => "returned".to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    Error::Task { task, reason }
}

/// The address of the interface carrying the default route: the one VXLAN packets leave by.
async fn default_vtep() -> Result<IpAddr, Error> {
    let nl = Netlink::current().await?;
    for v6 in [false, true] {
        if let Some((link, addr)) = nl.default_route_interface(v6).await? {
            log::debug!(
                "vtep {addr} taken from {}, which has the default route",
                link.name
            );
            return Ok(addr);
        }
    }
    Err(Error::Config(
        "no --vtep given and no default route to take it from".into(),
    ))
}
