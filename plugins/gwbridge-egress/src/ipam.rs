//! Delegation to the IPAM plugin, with the attachment variables set to *our* interface.
//!
//! `cni::invoke` hands the delegate the process environment unchanged; here CNI_IFNAME must be our
//! `ifname`, not the chain's (the allocation belongs to our interface, and must never share a key
//! with the main plugin's), GC needs other containers' ids, and the runtime's CNI_ARGS (requested
//! addresses, the container's name) are meant for the main network. So the environment of each
//! call is set explicitly instead of changing the process's.

use std::path::PathBuf;

use cni::{codes, CniError, CniResult, Command};

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
    /// ADD; when it fails, DEL is run before the error is returned (the spec's delegation rule),
    /// except for configuration errors, which allocated nothing.
    pub fn add(&self, who: Who) -> Result<CniResult, CniError> {
        let output = match self.exec(Command::Add, Some(who)) {
            Ok(out) => out,
            Err(e) => {
                if e.code != codes::INVALID_CONFIG && e.code != codes::INVALID_ENVIRONMENT {
                    if let Err(del) = self.del(who) {
                        log::warn!("DEL after failed ADD of {}: {del}", self.plugin_type);
                    }
                }
                return Err(e);
            }
        };
        let value: serde_json::Value = serde_json::from_slice(&output).map_err(|e| {
            CniError::decode(format!(
                "{} printed an unreadable result: {e}",
                self.plugin_type
            ))
        })?;
        CniResult::from_json(&value)
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
        let path = std::env::join_paths(self.path)
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mut overrides = vec![("CNI_ARGS", Some("")), ("CNI_PATH", Some(path.as_str()))];
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
        cni::invoke::exec_with(self.plugin_type, command, self.path, self.stdin, &overrides)
    }
}
