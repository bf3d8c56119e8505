//! Docker sets the host's iptables FORWARD policy to DROP, and with br_netfilter the frames our
//! bridge (`ovbr<vni>`) switches between containers and the VXLAN device pass that chain too:
//! without a rule of ours they are dropped (Docker's own overlay keeps its bridge in a namespace
//! of its own; ours is in the host's, see the README). One ACCEPT for traffic that stays on the
//! bridge, as Docker's `-i docker0 -o docker0 -j ACCEPT` for its own bridge; added with the
//! network's devices, removed with them. Docker drives iptables through the `iptables` command,
//! and so does this, so both land in the same tables whichever backend Debian's alternative picks.
//!
//! `iptables -w` waits for the xtables lock, which dockerd takes for every rule it writes while it
//! starts a container; the commands run on tokio's blocking pool, so that the wait never holds up
//! overlayd's one runtime thread (and with it the etcd lease's keep-alives, DNS, the peers).

use std::collections::HashSet;
use std::process::Command;
use std::sync::Mutex;

/// The bridges whose ACCEPT this overlayd has put in or found. A join checks again only on
/// devices it made: `iptables -C` is a process and a wait for the xtables lock, which dockerd
/// holds while it starts the very container joining (2-3 ms of every `docker run`).
#[derive(Default)]
pub struct Forward {
    allowed: Mutex<HashSet<String>>,
}

impl Forward {
    /// Ensures the ACCEPT for `bridge`; `fresh`: the bridge was just made.
    pub async fn allow(&self, bridge: &str, fresh: bool) -> Result<(), String> {
        let known = (self.allowed.lock()).is_ok_and(|set| set.contains(bridge));
        if known && !fresh {
            return Ok(());
        }
        allow(bridge).await?;
        if let Ok(mut set) = self.allowed.lock() {
            set.insert(bridge.to_string());
        }
        Ok(())
    }

    /// Removes it, with the bridge.
    pub async fn revoke(&self, bridge: &str) {
        if let Ok(mut set) = self.allowed.lock() {
            set.remove(bridge);
        }
        revoke(bridge).await;
    }
}

fn rule(bridge: &str) -> [&str; 8] {
    ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT", "-w"]
}

fn iptables(action: &str, bridge: &str) -> Result<bool, String> {
    let out = Command::new("iptables")
        .arg(action)
        .args(rule(bridge))
        .output()
        .map_err(|e| format!("running iptables: {e}"))?;
    Ok(out.status.success())
}

/// Ensures the ACCEPT for `bridge` is in FORWARD (inserted first, before Docker's chains).
async fn allow(bridge: &str) -> Result<(), String> {
    let bridge = bridge.to_string();
    tokio::task::spawn_blocking(move || allow_now(&bridge))
        .await
        .map_err(|e| format!("iptables: {e}"))?
}

/// Removes it (all copies); nothing to remove is no error.
async fn revoke(bridge: &str) {
    let bridge = bridge.to_string();
    if let Err(e) = tokio::task::spawn_blocking(move || revoke_now(&bridge)).await {
        log::warn!("iptables -D FORWARD: {e}");
    }
}

fn allow_now(bridge: &str) -> Result<(), String> {
    if iptables("-C", bridge)? {
        return Ok(());
    }
    let out = Command::new("iptables")
        .arg("-I")
        .args(rule(bridge))
        .output()
        .map_err(|e| format!("running iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables -I FORWARD for {bridge}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn revoke_now(bridge: &str) {
    while matches!(iptables("-C", bridge), Ok(true)) {
        if !matches!(iptables("-D", bridge), Ok(true)) {
            log::warn!("iptables -D FORWARD for {bridge} failed");
            return;
        }
    }
}
