//! The local Docker Engine API, through bollard: what the plugin protocol does not carry (the
//! names of networks and containers) and the networks overlayd creates and removes to mirror the
//! network records of etcd.

use std::collections::HashMap;

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptions;
use bollard::{ClientVersion, Docker};

/// Docker 20.10's API version: newer daemons answer it too, older ones do not know newer ones.
const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};
/// Seconds one API request may take.
const TIMEOUT: u64 = 10;
/// The label of the networks overlayd creates itself (copies of a network record made elsewhere):
/// such a network whose record is gone is removed, not registered again.
pub const MIRROR_LABEL: &str = "org.cni-overlay.mirror";

/// A Docker network, as the mirror and the authorization check need it.
#[derive(Debug, Clone)]
pub struct DockerNetwork {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub subnets: Vec<String>,
    pub gateways: Vec<String>,
    pub mirrored: bool,
    /// Endpoint id to container name, of the containers attached on this host.
    pub containers: HashMap<String, String>,
}

#[derive(Clone)]
pub struct Engine {
    socket: String,
    driver: String,
}

impl Engine {
    /// Connects lazily: the driver serves before dockerd is up (dockerd checks an authorization
    /// plugin at its start), so the socket may not exist yet.
    pub fn new(socket: &str, driver: &str) -> Engine {
        Engine {
            socket: socket.to_string(),
            driver: driver.to_string(),
        }
    }

    /// The driver's name, which Docker shows as the network's driver.
    pub fn driver(&self) -> &str {
        &self.driver
    }

    fn docker(&self) -> Result<Docker, String> {
        Docker::connect_with_unix(&self.socket, TIMEOUT, &API_VERSION)
            .map_err(|e| format!("Docker API at {}: {e}", self.socket))
    }

    /// One network by id or name; None when Docker does not know it.
    pub async fn network(&self, id: &str) -> Result<Option<DockerNetwork>, String> {
        match self.docker()?.inspect_network(id, None).await {
            Ok(n) => Ok(Some(DockerNetwork {
                containers: (n.containers.unwrap_or_default().into_values())
                    .filter_map(|e| Some((e.endpoint_id?, e.name?)))
                    .collect(),
                ..summary(n.id, n.name, n.driver, n.ipam, n.labels)
            })),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(format!("Docker API: inspecting network {id}: {e}")),
        }
    }

    /// The networks of our driver.
    pub async fn networks(&self) -> Result<Vec<DockerNetwork>, String> {
        let options = ListNetworksOptions {
            filters: Some(HashMap::from([(
                "driver".to_string(),
                vec![self.driver.clone()],
            )])),
        };
        let list = self
            .docker()?
            .list_networks(Some(options))
            .await
            .map_err(|e| format!("Docker API: listing networks: {e}"))?;
        Ok(list
            .into_iter()
            // The filter matches driver names by substring; ours exactly.
            .filter(|n| n.driver.as_deref() == Some(self.driver.as_str()))
            // A listing carries no containers (Docker fills them in on inspect only).
            .map(|n| summary(n.id, n.name, n.driver, n.ipam, n.labels))
            .collect())
    }

    /// Creates the Docker copy of a network record, with our driver for both network and IPAM.
    pub async fn create(
        &self,
        name: &str,
        subnets: &[String],
        gateways: &[String],
    ) -> Result<(), String> {
        let config = subnets
            .iter()
            .enumerate()
            .map(|(i, s)| IpamConfig {
                subnet: Some(s.clone()),
                gateway: gateways.get(i).cloned(),
                ..Default::default()
            })
            .collect();
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some(self.driver.clone()),
            ipam: Some(Ipam {
                driver: Some(self.driver.clone()),
                config: Some(config),
                options: None,
            }),
            enable_ipv6: Some(subnets.iter().any(|s| s.contains(':'))),
            labels: Some(HashMap::from([(
                MIRROR_LABEL.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        };
        self.docker()?
            .create_network(request)
            .await
            .map(|_| ())
            .map_err(|e| format!("Docker API: creating network {name}: {e}"))
    }

    pub async fn remove(&self, id: &str) -> Result<(), String> {
        self.docker()?
            .remove_network(id)
            .await
            .map_err(|e| format!("Docker API: removing network {id}: {e}"))
    }
}

/// A network as Docker lists or inspects it (two models with these fields in common), without
/// its containers.
fn summary(
    id: Option<String>,
    name: Option<String>,
    driver: Option<String>,
    ipam: Option<Ipam>,
    labels: Option<HashMap<String, String>>,
) -> DockerNetwork {
    DockerNetwork {
        id: id.unwrap_or_default(),
        name: name.unwrap_or_default(),
        driver: driver.unwrap_or_default(),
        subnets: configs(ipam.as_ref(), |c| c.subnet.clone()),
        gateways: configs(ipam.as_ref(), |c| c.gateway.clone()),
        mirrored: labels.unwrap_or_default().contains_key(MIRROR_LABEL),
        containers: HashMap::new(),
    }
}

fn configs(ipam: Option<&Ipam>, field: impl Fn(&IpamConfig) -> Option<String>) -> Vec<String> {
    ipam.and_then(|i| i.config.as_ref())
        .map(|c| c.iter().filter_map(&field).collect())
        .unwrap_or_default()
}
