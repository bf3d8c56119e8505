//! A CRI v1 client that drives a container runtime the way the kubelet does, for the CRI
//! conformance suite (`tests/cri.rs`): pods as the kubelet describes them
//! ([`Pod::sandbox_config`]), the kubelet's call sequence (RunPodSandbox, PodSandboxStatus,
//! CreateContainer, StartContainer, ExecSync, StopContainer, StopPodSandbox, RemoveContainer,
//! RemovePodSandbox), and [`libcni`]: STATUS through a conflist as libcni ≥ 1.2 calls it for
//! containerd ≥ 2.1 (containerd 1.6 never calls it).
//!
//! The protocol is a subset of `runtime.v1` (proto/api.proto), client code only, over the
//! runtime's unix socket. Calls block (a runtime of its own) and give up after [`CALL_TIMEOUT`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// The generated messages and client of `runtime.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

use v1::runtime_service_client::RuntimeServiceClient;

pub mod libcni;

/// The longest any CRI call may take (the kubelet's default `--runtime-request-timeout` is 2 min).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A failed call: which RPC, and the runtime's gRPC status.
#[derive(Debug, Clone)]
pub struct CallError {
    pub rpc: &'static str,
    pub code: tonic::Code,
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {:?}: {}", self.rpc, self.code, self.message)
    }
}

impl std::error::Error for CallError {}

pub type Result<T> = std::result::Result<T, CallError>;

/// A pod as the kubelet hands it to the runtime.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    /// The pod's `dnsConfig` (with `dnsPolicy: None`): what the runtime writes into resolv.conf.
    pub dns: Option<v1::DnsConfig>,
    /// `hostPort`s of the pod's containers.
    pub ports: Vec<v1::PortMapping>,
}

impl Pod {
    pub fn new(name: &str, namespace: &str) -> Pod {
        Pod {
            name: name.into(),
            namespace: namespace.into(),
            uid: uid(&format!("{namespace}/{name}")),
            attempt: 0,
            dns: None,
            ports: Vec::new(),
        }
    }

    /// `nameservers` and `searches` of a pod's `dnsConfig`.
    pub fn dns(mut self, servers: &[&str], searches: &[&str]) -> Pod {
        self.dns = Some(v1::DnsConfig {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            searches: searches.iter().map(|s| s.to_string()).collect(),
            options: vec!["ndots:1".into()],
        });
        self
    }

    /// A container port published on the host (`hostPort`), TCP.
    pub fn host_port(mut self, host_port: u16, container_port: u16) -> Pod {
        self.ports.push(v1::PortMapping {
            protocol: v1::Protocol::Tcp as i32,
            container_port: container_port.into(),
            host_port: host_port.into(),
            host_ip: String::new(),
        });
        self
    }

    /// The labels the kubelet puts on a sandbox.
    fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            ("io.kubernetes.pod.name".into(), self.name.clone()),
            ("io.kubernetes.pod.namespace".into(), self.namespace.clone()),
            ("io.kubernetes.pod.uid".into(), self.uid.clone()),
        ])
    }

    /// The PodSandboxConfig the kubelet sends (pkg/kubelet/kuberuntime's
    /// generatePodSandboxConfig): metadata, the pod's name as hostname, its DNS configuration
    /// and port mappings, the kubelet's labels; a network namespace of the pod's own.
    pub fn sandbox_config(&self) -> v1::PodSandboxConfig {
        v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: self.attempt,
            }),
            hostname: self.name.clone(),
            log_directory: String::new(),
            dns_config: self.dns.clone(),
            port_mappings: self.ports.clone(),
            labels: self.labels(),
            annotations: HashMap::new(),
            linux: Some(v1::LinuxPodSandboxConfig {
                cgroup_parent: String::new(),
                security_context: Some(v1::LinuxSandboxSecurityContext {
                    namespace_options: Some(v1::NamespaceOption {
                        network: v1::NamespaceMode::Pod as i32,
                        pid: v1::NamespaceMode::Container as i32,
                        ipc: v1::NamespaceMode::Pod as i32,
                    }),
                }),
            }),
        }
    }
}

/// A UID of the kubelet's form (8-4-4-4-12 hex digits), derived from `seed` and the time.
pub fn uid(seed: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    std::process::id().hash(&mut h);
    let a = h.finish();
    a.hash(&mut h);
    let b = h.finish();
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// What ExecSync returned.
#[derive(Debug, Clone)]
pub struct Exec {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

impl Exec {
    pub fn ok(&self) -> bool {
        self.exit_code == 0
    }
}

/// A container of a pod, as the kubelet creates it.
#[derive(Debug, Clone)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    /// Linux capabilities added to the runtime's default set (`NET_RAW` to ping).
    pub add_capabilities: Vec<String>,
}

impl Container {
    pub fn new(name: &str, image: &str, command: &[&str]) -> Container {
        Container {
            name: name.into(),
            image: image.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            add_capabilities: Vec::new(),
        }
    }

    pub fn capability(mut self, cap: &str) -> Container {
        self.add_capabilities.push(cap.into());
        self
    }

    fn config(&self, pod: &Pod) -> v1::ContainerConfig {
        let mut labels = pod.labels();
        labels.insert("io.kubernetes.container.name".into(), self.name.clone());
        v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata {
                name: self.name.clone(),
                attempt: 0,
            }),
            image: Some(v1::ImageSpec {
                image: self.image.clone(),
                annotations: HashMap::new(),
            }),
            command: self.command.clone(),
            args: Vec::new(),
            working_dir: String::new(),
            labels,
            annotations: HashMap::new(),
            log_path: String::new(),
            linux: Some(v1::LinuxContainerConfig {
                security_context: Some(v1::LinuxContainerSecurityContext {
                    capabilities: Some(v1::Capability {
                        add_capabilities: self.add_capabilities.clone(),
                        drop_capabilities: Vec::new(),
                    }),
                    privileged: false,
                }),
            }),
        }
    }
}

/// A connection to a runtime's CRI socket.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    pub socket: PathBuf,
}

macro_rules! call {
    ($self:ident, $rpc:ident, $req:expr) => {{
        let mut client = $self.client.clone();
        let req = $req;
        $self
            .rt
            .block_on(async move {
                match tokio::time::timeout(CALL_TIMEOUT, client.$rpc(req)).await {
                    Ok(result) => result,
                    Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                        "no answer within {CALL_TIMEOUT:?}"
                    ))),
                }
            })
            .map(tonic::Response::into_inner)
            .map_err(|s| CallError {
                rpc: stringify!($rpc),
                code: s.code(),
                message: s.message().to_string(),
            })
    }};
}

impl Cri {
    /// Connects to the runtime at unix socket `socket`.
    pub fn connect(socket: &Path) -> std::result::Result<Cri, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let path = socket.to_path_buf();
        let channel = rt
            .block_on(async move {
                // The URI is not used: every connection goes to the socket.
                Endpoint::try_from("http://[::]:50051")?
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await
            })
            .map_err(|e| format!("connect to {}: {e}", socket.display()))?;
        Ok(Cri {
            rt,
            client: RuntimeServiceClient::new(channel),
            socket: socket.to_path_buf(),
        })
    }

    pub fn version(&self) -> Result<v1::VersionResponse> {
        call!(
            self,
            version,
            v1::VersionRequest {
                version: "v1".into()
            }
        )
    }

    /// The runtime's conditions by type (`RuntimeReady`, `NetworkReady`): (status, message).
    pub fn conditions(&self) -> Result<HashMap<String, (bool, String)>> {
        let resp = call!(self, status, v1::StatusRequest { verbose: false })?;
        Ok(resp
            .status
            .unwrap_or_default()
            .conditions
            .into_iter()
            .map(|c| (c.r#type, (c.status, c.message)))
            .collect())
    }

    /// RunPodSandbox: the sandbox's id (also CNI_CONTAINERID).
    pub fn run_pod_sandbox(&self, pod: &Pod) -> Result<String> {
        call!(
            self,
            run_pod_sandbox,
            v1::RunPodSandboxRequest {
                config: Some(pod.sandbox_config()),
                runtime_handler: String::new(),
            }
        )
        .map(|r| r.pod_sandbox_id)
    }

    pub fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<v1::PodSandboxStatusResponse> {
        call!(
            self,
            pod_sandbox_status,
            v1::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose,
            }
        )
    }

    /// The pod's IP as the kubelet reads it (PodSandboxStatus's network.ip) and its state.
    pub fn pod_ip(&self, id: &str) -> Result<(String, v1::PodSandboxState)> {
        let status = self
            .pod_sandbox_status(id, false)?
            .status
            .unwrap_or_default();
        let state = status.state();
        Ok((status.network.unwrap_or_default().ip, state))
    }

    /// The path of the sandbox's network namespace, from the verbose status (containerd's
    /// `info`: the sandbox's OCI spec).
    pub fn netns_path(&self, id: &str) -> Option<String> {
        let resp = self.pod_sandbox_status(id, true).ok()?;
        let info: serde_json::Value = serde_json::from_str(resp.info.get("info")?).ok()?;
        info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()?
            .iter()
            .find(|n| n["type"] == "network")?["path"]
            .as_str()
            .map(str::to_string)
    }

    pub fn list_pod_sandboxes(&self) -> Result<Vec<v1::PodSandbox>> {
        call!(
            self,
            list_pod_sandbox,
            v1::ListPodSandboxRequest { filter: None }
        )
        .map(|r| r.items)
    }

    /// CreateContainer then StartContainer, as the kubelet starts a pod's container.
    pub fn start_container(
        &self,
        sandbox: &str,
        pod: &Pod,
        container: &Container,
    ) -> Result<String> {
        let id = call!(
            self,
            create_container,
            v1::CreateContainerRequest {
                pod_sandbox_id: sandbox.into(),
                config: Some(container.config(pod)),
                sandbox_config: Some(pod.sandbox_config()),
            }
        )?
        .container_id;
        call!(
            self,
            start_container,
            v1::StartContainerRequest {
                container_id: id.clone()
            }
        )?;
        Ok(id)
    }

    pub fn exec_sync(&self, container: &str, cmd: &[&str], timeout_s: i64) -> Result<Exec> {
        let resp = call!(
            self,
            exec_sync,
            v1::ExecSyncRequest {
                container_id: container.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: timeout_s,
            }
        )?;
        Ok(Exec {
            stdout: String::from_utf8_lossy(&resp.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&resp.stderr).into_owned(),
            exit_code: resp.exit_code,
        })
    }

    pub fn stop_container(&self, id: &str, timeout_s: i64) -> Result<()> {
        call!(
            self,
            stop_container,
            v1::StopContainerRequest {
                container_id: id.into(),
                timeout: timeout_s,
            }
        )
        .map(drop)
    }

    pub fn remove_container(&self, id: &str) -> Result<()> {
        call!(
            self,
            remove_container,
            v1::RemoveContainerRequest {
                container_id: id.into()
            }
        )
        .map(drop)
    }

    pub fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        call!(
            self,
            stop_pod_sandbox,
            v1::StopPodSandboxRequest {
                pod_sandbox_id: id.into()
            }
        )
        .map(drop)
    }

    pub fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        call!(
            self,
            remove_pod_sandbox,
            v1::RemovePodSandboxRequest {
                pod_sandbox_id: id.into()
            }
        )
        .map(drop)
    }

    /// The kubelet's teardown of a pod: StopContainer of each container, StopPodSandbox,
    /// RemoveContainer of each, RemovePodSandbox.
    pub fn remove_pod(&self, sandbox: &str, containers: &[String]) -> Result<()> {
        for c in containers {
            self.stop_container(c, 0)?;
        }
        self.stop_pod_sandbox(sandbox)?;
        for c in containers {
            self.remove_container(c)?;
        }
        self.remove_pod_sandbox(sandbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_config_is_the_kubelets() {
        let pod = Pod::new("web-0", "prod")
            .dns(&["10.0.0.1"], &["pods.overlay"])
            .host_port(8080, 80);
        let c = pod.sandbox_config();
        let m = c.metadata.as_ref().unwrap();
        assert_eq!((m.name.as_str(), m.namespace.as_str()), ("web-0", "prod"));
        assert_eq!(m.uid.len(), 36);
        assert_eq!(c.hostname, "web-0");
        assert_eq!(c.labels["io.kubernetes.pod.namespace"], "prod");
        assert_eq!(c.port_mappings[0].host_port, 8080);
        assert_eq!(c.port_mappings[0].protocol(), v1::Protocol::Tcp);
        assert_eq!(c.dns_config.as_ref().unwrap().servers, ["10.0.0.1"]);
        let ns = c
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network(), v1::NamespaceMode::Pod);
    }

    #[test]
    fn uids_differ() {
        assert_ne!(uid("a"), uid("a"));
    }
}
