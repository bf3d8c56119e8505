//! Delegation to the IPAM plugin, with the attachment variables set to *our* interface.
//!
//! `cni::invoke` hands the delegate the process environment unchanged; here CNI_IFNAME must be our
//! `ifname`, not the chain's (the allocation belongs to our interface, and must never share a key
//! with the main plugin's), GC needs other containers' ids, and the runtime's CNI_ARGS (requested
//! addresses, the container's name) are meant for the main network. So the environment of each
//! call is set explicitly instead of changing the process's.

use std::path::PathBuf;

use cni::{CniError, CniResult, Command};

pub struct Ipam<'a> {
    pub plugin_type: &'a str,
    pub stdin: &'a [u8],
    pub path: &'a [PathBuf],
}

/// Whose allocation: container id, our interface name, and the namespace path (may be empty).
#[derive(Clone, Copy)]
pub struct Who<'a> {
    pub container_id: &'a str,
    pub ifname: &'a str,
    pub netns: &'a str,
}

impl Ipam<'_> {
    /// ADD; when it fails, DEL is run before the error is returned (the spec's delegation rule).
    pub fn add(&self, who: Who) -> Result<CniResult, CniError> {
        let path = self.cni_path();
        cni::invoke::add_with(
            self.plugin_type,
            self.path,
            self.stdin,
            &overrides(&path, Some(who)),
        )
    }

    pub fn del(&self, who: Who) -> Result<(), CniError> {
        self.exec(Command::Del, Some(who)).map(|_| ())
    }

    pub fn check(&self, who: Who) -> Result<(), CniError> {
        self.exec(Command::Check, Some(who)).map(|_| ())
    }

    pub fn status(&self) -> Result<(), CniError> {
        self.exec(Command::Status, None).map(|_| ())
    }

    fn exec(&self, command: Command, who: Option<Who>) -> Result<Vec<u8>, CniError> {
        let path = self.cni_path();
        cni::invoke::exec_with(
            self.plugin_type,
            command,
            self.path,
            self.stdin,
            &overrides(&path, who),
        )
    }

    fn cni_path(&self) -> String {
        std::env::join_paths(self.path)
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }
}

/// The delegate's environment: our interface's attachment (or none, for STATUS), the CNI_PATH we
/// were given, and no CNI_ARGS (they are meant for the main network).
fn overrides<'a>(path: &'a str, who: Option<Who<'a>>) -> Vec<(&'static str, Option<&'a str>)> {
    let mut overrides = vec![("CNI_ARGS", Some("")), ("CNI_PATH", Some(path))];
    match who {
        Some(who) => overrides.extend([
            ("CNI_CONTAINERID", Some(who.container_id)),
            ("CNI_IFNAME", Some(who.ifname)),
            ("CNI_NETNS", Some(who.netns)),
        ]),
        None => overrides.extend([
            ("CNI_CONTAINERID", None),
            ("CNI_IFNAME", None),
            ("CNI_NETNS", None),
        ]),
    }
    overrides
}
