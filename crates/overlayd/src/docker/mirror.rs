//! Keeps the host's Docker networks of our driver and the network records of etcd in step:
//! a network created in Docker on any host gets its record (`store::networks`, as overlayctl's,
//! so the VNI is taken the same way), and every record gets its Docker network on every host running the plugin.
//! A record removed (`docker network rm` on another host, `overlayctl network rm`) takes the
//! Docker network with it.
//!
//! It polls both sides every [`PERIOD`]: a quarter of a second keeps "appears on the other host
//! within a second" with two polls in the path, at the cost of one etcd range read and one Docker
//! list per period.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use model::network::NetworkRequest;
use model::records::{self, Network};
use store::Store;

use super::driver::Driver;
use super::engine::DockerNetwork;

const PERIOD: Duration = Duration::from_millis(250);

pub async fn run(driver: Arc<Driver>) -> Result<(), crate::Error> {
    let mut store = Store::new(driver.etcd().clone())?;
    // Names seen with a record: such a Docker network whose record goes was removed elsewhere.
    let mut registered: HashSet<String> = HashSet::new();
    // Failures already logged, so that a lasting conflict is said once, not four times a second.
    let mut said: HashSet<String> = HashSet::new();
    loop {
        if let Err(e) = pass(&driver, &mut store, &mut registered, &mut said).await {
            if said.insert(e.clone()) {
                log::warn!("docker mirror: {e}");
            }
        }
        tokio::time::sleep(PERIOD).await;
    }
}

async fn pass(
    driver: &Driver,
    store: &mut Store,
    registered: &mut HashSet<String>,
    said: &mut HashSet<String>,
) -> Result<(), String> {
    let engine = driver.engine();
    let docker: Vec<DockerNetwork> = engine.networks().await?;
    for n in &docker {
        driver.remember_network(&n.id, &n.name);
    }
    let prefix = store.keys().networks();
    let (kvs, _) = store.get_prefix(&prefix).await.map_err(|e| e.to_string())?;
    let records: HashMap<String, Network> = kvs
        .iter()
        .filter_map(|kv| records::decode::<Network>(kv.key(), kv.value()).ok())
        .map(|n| (n.name.clone(), n))
        .collect();

    for n in &docker {
        if let Some(record) = records.get(&n.name) {
            registered.insert(n.name.clone());
            let subnets: Vec<String> = record.subnets.iter().map(|s| s.to_string()).collect();
            if !n.subnets.iter().all(|s| subnets.contains(s)) {
                let msg = format!(
                    "Docker network {} has subnets {:?}, its record in etcd {:?}: remove one of them",
                    n.name, n.subnets, subnets
                );
                if said.insert(msg.clone()) {
                    log::error!("docker mirror: {msg}");
                }
            }
            continue;
        }
        if n.mirrored || registered.contains(&n.name) {
            // Its record went: removed on another host or with overlayctl.
            match engine.remove(&n.id).await {
                Ok(()) => {
                    log::info!(
                        "docker mirror: network {} removed (its record is gone)",
                        n.name
                    );
                    registered.remove(&n.name);
                }
                Err(e) => {
                    if said.insert(e.clone()) {
                        log::warn!("docker mirror: {e}");
                    }
                }
            }
            continue;
        }
        // Created in Docker on this host: give it its record.
        let request = NetworkRequest {
            name: n.name.clone(),
            subnets: n.subnets.clone(),
            gateways: n.gateways.clone(),
            ..NetworkRequest::default()
        };
        match store::networks::create(store, &request).await {
            Ok(_) => {
                log::info!("docker mirror: network {} registered in etcd", n.name);
                registered.insert(n.name.clone());
            }
            Err(e) => {
                let msg = format!("registering Docker network {}: {e}", n.name);
                if said.insert(msg.clone()) {
                    log::error!("docker mirror: {msg}");
                }
            }
        }
    }

    let present: HashSet<&str> = docker.iter().map(|n| n.name.as_str()).collect();
    for (name, record) in &records {
        if present.contains(name.as_str()) {
            continue;
        }
        let subnets: Vec<String> = record.subnets.iter().map(|s| s.to_string()).collect();
        let gateways: Vec<String> = record.gateways.iter().map(|g| g.to_string()).collect();
        match engine.create(name, &subnets, &gateways).await {
            Ok(()) => {
                log::info!(
                    "docker mirror: network {name} created in Docker (its record is in etcd)"
                );
                registered.insert(name.clone());
            }
            Err(e) => {
                if said.insert(e.clone()) {
                    log::warn!("docker mirror: {e}");
                }
            }
        }
    }
    Ok(())
}
