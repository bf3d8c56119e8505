//! Keeps one CNI network configuration list per network of etcd in the CNI configuration
//! directory, so that no host needs hand-written conflists: `overlayctl network create demo` on
//! one host makes `demo` usable by every runtime on every host within a second.
//!
//! Each file is `60-cni-overlay-<network>.conflist`: vxlan-overlay with etcd-ipam (the network's
//! subnets, gateways and ip-range), then gwbridge-egress unless the network is internal. Files are
//! written atomically (temporary file, then rename) and carry a marker field; overlayd only ever
//! replaces or removes files that carry it, never a file it did not write.

use std::path::{Path, PathBuf};

use model::addressing::Addressing;
use model::names::{self, CONFLIST_MARKER as MARKER};
use model::records::{self, Network};
use serde_json::{json, Value};
use store::etcd_client::{Event, EventType, KeyValue};
use store::{EtcdConfig, Follower, Store};

use crate::error::Error;
use crate::retry::Retry;

#[derive(Debug, Clone)]
pub struct Settings {
    pub dir: PathBuf,
    pub node: String,
    /// What the plugins are told to connect to: overlayd's own etcd settings.
    pub etcd: EtcdConfig,
}

/// The conflist of one network for this host.
pub fn render(network: &Network, settings: &Settings) -> Value {
    let etcd = etcd_json(&settings.etcd);
    let mut overlay = json!({
        "type": "vxlan-overlay",
        "vni": network.vni,
        "node": settings.node,
        "hostAccess": network.host_access,
        "etcd": etcd,
        "capabilities": {"aliases": true},
        "ipam": {"type": "etcd-ipam", "ranges": Addressing::of(network).range_sets()},
    });
    if let Some(mtu) = network.mtu {
        overlay["mtu"] = json!(mtu);
    }
    let mut plugins = vec![overlay];
    if !network.internal {
        plugins.push(json!({"type": "gwbridge-egress", "capabilities": {"portMappings": true}}));
    }
    json!({
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": network.name,
        MARKER: true,
        "plugins": plugins,
    })
}

/// The `etcd` object of a plugin configuration that connects as `config` does (the plugins'
/// own `timeoutMs` default applies).
pub(crate) fn etcd_json(config: &EtcdConfig) -> Value {
    let mut etcd = json!({"endpoints": config.endpoints, "prefix": config.prefix});
    if let Some(tls) = &config.tls {
        etcd["tls"] = json!({"ca": tls.ca, "cert": tls.cert, "key": tls.key});
    }
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        etcd["username"] = json!(user);
        etcd["password"] = json!(password);
    }
    etcd
}

/// Is this file one of ours? Only files with the marker are ever replaced or removed.
pub(crate) fn is_ours(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .is_some_and(|v| v.get(MARKER) == Some(&Value::Bool(true)))
}

fn write(settings: &Settings, network: &Network) {
    let path = settings.dir.join(names::conflist_file(&network.name));
    if path.exists() && !is_ours(&path) {
        log::warn!(
            "{} exists and was not written by overlayd: leaving it alone",
            path.display()
        );
        return;
    }
    let content =
        serde_json::to_vec_pretty(&render(network, settings)).expect("a conflist serializes");
    // Credentials make the file private; otherwise runtimes and users may read it.
    let mode = if settings.etcd.password.is_some() {
        0o600
    } else {
        0o644
    };
    match write_atomic(&path, &content, mode) {
        Ok(()) => log::info!("wrote {}", path.display()),
        Err(e) => log::warn!("writing {}: {e}", path.display()),
    }
}

/// Writes `content` to `path` with `mode` atomically: a dot-file beside it, written and synced,
/// then renamed over `path` (and the directory synced), so that `path` only ever holds the old
/// content or the whole new one. The temporary file is removed when a step fails; a process
/// killed in the middle leaves only the dot-file, which the next write reuses. Also used by
/// `overlayd install-cni` for the plugin binaries (CNI_PATH lookups are by exact name).
pub(crate) fn write_atomic(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().expect("conflists live in a directory");
    std::fs::create_dir_all(dir)?;
    // A dot-file: runtimes read only *.conf, *.conflist and *.json, so never a half-written file.
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().expect("a file name").to_string_lossy()
    ));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(content)?;
        file.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    // The rename itself, on disk: a crash after this returns keeps the new file.
    std::fs::File::open(dir)?.sync_all()
}

fn remove(settings: &Settings, network: &str) {
    let path = settings.dir.join(names::conflist_file(network));
    if is_ours(&path) {
        match std::fs::remove_file(&path) {
            Ok(()) => log::info!("removed {}", path.display()),
            Err(e) => log::warn!("removing {}: {e}", path.display()),
        }
    }
}

/// Makes the directory hold exactly the conflists of `networks`, among the files overlayd owns.
fn reconcile(settings: &Settings, networks: &[Network]) {
    for network in networks {
        write(settings, network);
    }
    let wanted: Vec<&str> = networks.iter().map(|n| n.name.as_str()).collect();
    let Ok(entries) = std::fs::read_dir(&settings.dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if names::network_of_conflist(&name).is_some_and(|net| !wanted.contains(&net))
            && is_ours(&entry.path())
        {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => log::info!("removed {name}: its network is gone"),
                Err(e) => log::warn!("removing {name}: {e}"),
            }
        }
    }
}

/// Lists the networks, writes their conflists, then follows changes; the store lists again
/// whenever the watch is lost. Runs until the task is dropped.
pub async fn run(mut store: Store, settings: Settings) -> Result<(), Error> {
    let prefix = store.keys().networks();
    let mut writer = Writer {
        settings,
        prefix: prefix.clone(),
        retry: Retry::new("network watch"),
    };
    loop {
        let lost = store.list_and_watch(&prefix, &mut writer).await;
        crate::metrics::get().watch_restarted("network watch");
        store.reset();
        writer.retry.failed(lost).await;
    }
}

struct Writer {
    settings: Settings,
    prefix: String,
    retry: Retry,
}

impl Follower for Writer {
    fn listed(&mut self, kvs: Vec<KeyValue>, _revision: i64) {
        let networks: Vec<Network> = kvs
            .iter()
            .filter_map(|kv| {
                records::decode(kv.key(), kv.value())
                    .inspect_err(|e| log::warn!("{e}"))
                    .ok()
            })
            .collect();
        reconcile(&self.settings, &networks);
        crate::metrics::get().set_conflists_written();
    }

    /// Writes are idempotent: a change seen again after a new listing is harmless.
    fn changed(&mut self, events: &[Event]) {
        for event in events {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => match records::decode::<Network>(kv.key(), kv.value()) {
                    Ok(network) => write(&self.settings, &network),
                    Err(e) => log::warn!("{e}"),
                },
                EventType::Delete => {
                    let key = String::from_utf8_lossy(kv.key());
                    if let Some(name) = key.strip_prefix(&self.prefix) {
                        remove(&self.settings, name);
                    }
                }
            }
        }
    }

    fn watching(&mut self) {
        self.retry.succeeded();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(internal: bool) -> Network {
        Network {
            name: "demo".into(),
            vni: model::Vni::FIRST_AUTO,
            subnets: vec![
                "10.0.0.0/24".parse().unwrap(),
                "fd00:1::/64".parse().unwrap(),
            ],
            gateways: vec!["10.0.0.1".parse().unwrap(), "fd00:1::1".parse().unwrap()],
            ip_range: Some("10.0.0.128/25".parse().unwrap()),
            mtu: None,
            internal,
            host_access: false,
            created: 0,
        }
    }

    fn settings() -> Settings {
        Settings {
            dir: PathBuf::from("/nonexistent"),
            node: "node1".into(),
            etcd: EtcdConfig::new(vec!["192.168.205.10:2379".into()]),
        }
    }

    #[test]
    fn renders_overlay_then_gwbridge_unless_internal() {
        let c = render(&network(false), &settings());
        assert_eq!(c["name"], "demo");
        assert_eq!(c["plugins"][0]["type"], "vxlan-overlay");
        assert_eq!(c["plugins"][0]["vni"], 4096);
        assert_eq!(c["plugins"][0]["node"], "node1");
        assert_eq!(
            c["plugins"][0]["ipam"]["ranges"][0][0],
            json!({"subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "rangeStart": "10.0.0.129", "rangeEnd": "10.0.0.254"})
        );
        assert_eq!(
            c["plugins"][0]["ipam"]["ranges"][1][0],
            json!({"subnet": "fd00:1::/64", "gateway": "fd00:1::1"})
        );
        assert_eq!(c["plugins"][1]["type"], "gwbridge-egress");
        assert_eq!(
            render(&network(true), &settings())["plugins"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn only_marked_files_are_ours() {
        let dir = std::env::temp_dir().join(format!("overlayd-conflists-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Settings {
            dir: dir.clone(),
            ..settings()
        };
        let foreign = dir.join(names::conflist_file("demo"));
        std::fs::write(&foreign, "{\"name\": \"demo\"}").unwrap();
        write(&s, &network(false));
        assert_eq!(
            std::fs::read_to_string(&foreign).unwrap(),
            "{\"name\": \"demo\"}",
            "a foreign file was replaced"
        );
        std::fs::remove_file(&foreign).unwrap();
        write(&s, &network(false));
        assert!(is_ours(&foreign));
        reconcile(&s, &[]);
        assert!(!foreign.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
