//! The CNI_* environment variables, required and validated per verb as the spec and libcni do.

use std::path::PathBuf;

use crate::args::CniArgs;
use crate::error::{codes, CniError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            "" => return Err(CniError::invalid_env("CNI_COMMAND", "missing")),
            other => {
                return Err(CniError::invalid_env(
                    "CNI_COMMAND",
                    format!("unknown command {other:?}"),
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }

    /// Verbs that act on one attachment and therefore need the container variables.
    fn needs_container(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }

    fn needs_netns(self) -> bool {
        matches!(self, Command::Add | Command::Check)
    }
}

/// The invocation's parameters. For GC, STATUS and VERSION the container fields are empty.
#[derive(Debug, Clone)]
pub struct Environment {
    pub command: Command,
    pub container_id: String,
    /// Empty when the runtime gave none (allowed for DEL).
    pub netns: String,
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
}

impl Environment {
    /// Reads the process environment.
    pub fn from_process() -> Result<Self, CniError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads through `lookup`, so that tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let get = |k: &str| lookup(k).unwrap_or_default();
        let command = Command::parse(&get("CNI_COMMAND"))?;
        let path = get("CNI_PATH")
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        if !command.needs_container() {
            // VERSION, GC and STATUS ignore the container variables (libcni sends dummies for VERSION).
            return Ok(Environment {
                command,
                container_id: String::new(),
                netns: String::new(),
                ifname: String::new(),
                args: CniArgs::default(),
                path,
            });
        }

        let (container_id, netns, ifname) =
            (get("CNI_CONTAINERID"), get("CNI_NETNS"), get("CNI_IFNAME"));
        let mut missing = Vec::new();
        if container_id.is_empty() {
            missing.push("CNI_CONTAINERID");
        }
        if command.needs_netns() && netns.is_empty() {
            missing.push("CNI_NETNS");
        }
        if ifname.is_empty() {
            missing.push("CNI_IFNAME");
        }
        if !missing.is_empty() {
            return Err(CniError::new(
                codes::INVALID_ENVIRONMENT,
                format!(
                    "required environment variables missing: {}",
                    missing.join(", ")
                ),
            ));
        }
        validate_container_id(&container_id)?;
        validate_ifname(&ifname)?;
        if !netns.is_empty() && !netns.starts_with('/') {
            return Err(CniError::invalid_env(
                "CNI_NETNS",
                format!("{netns:?} is not an absolute path"),
            ));
        }
        let args = CniArgs::parse(&get("CNI_ARGS"))?;
        Ok(Environment {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }
}

/// libcni's `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, used for container ids and network names.
pub fn is_valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if is_valid_identifier(id) {
        Ok(())
    } else {
        Err(
            CniError::invalid_env("CNI_CONTAINERID", "invalid characters in container id")
                .with_details(id),
        )
    }
}

/// The longest interface name Linux takes (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// As libcni's `ValidateInterfaceName`: at most 15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let problem = if name.is_empty() {
        "interface name is empty"
    } else if name.len() > MAX_IFNAME_LEN {
        "interface name is longer than 15 characters"
    } else if name == "." || name == ".." {
        "interface name is . or .."
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        "interface name contains / or : or whitespace"
    } else {
        return Ok(());
    };
    Err(CniError::invalid_env("CNI_IFNAME", problem).with_details(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Environment, CniError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Environment::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn add_needs_all_container_variables_and_names_them() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(
            e.msg.contains("CNI_CONTAINERID") && e.msg.contains("CNI_NETNS"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn del_needs_no_netns() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(e.netns, "");
    }

    #[test]
    fn gc_status_version_need_no_container_variables() {
        for cmd in ["GC", "STATUS", "VERSION"] {
            let e = env(&[
                ("CNI_COMMAND", cmd),
                ("CNI_IFNAME", "has space"),
                ("CNI_CONTAINERID", "/bad"),
            ])
            .unwrap();
            assert_eq!(e.container_id, "");
        }
    }

    #[test]
    fn bad_command_names_cni_command() {
        for cmd in ["", "add", "REMOVE"] {
            let e = env(&[("CNI_COMMAND", cmd)]).unwrap_err();
            assert_eq!(e.code, 4);
            assert!(e.msg.contains("CNI_COMMAND"));
        }
    }

    #[test]
    fn container_id_rules_follow_libcni() {
        assert!(is_valid_identifier("a"));
        assert!(is_valid_identifier("default-3f2a_b.c"));
        for bad in ["", "-a", ".a", "a/b", "a b", "a:b", "ä"] {
            assert!(!is_valid_identifier(bad), "{bad:?}");
        }
    }

    #[test]
    fn ifname_rules_follow_libcni() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("123456789012345").is_ok());
        for bad in [
            "",
            "1234567890123456",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
        ] {
            let e = validate_ifname(bad).unwrap_err();
            assert_eq!(e.code, 4);
            assert!(e.msg.contains("CNI_IFNAME"));
        }
    }

    #[test]
    fn relative_netns_is_refused() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "netns/x"),
        ])
        .unwrap_err();
        assert!(e.msg.contains("CNI_NETNS"));
    }

    #[test]
    fn cni_path_is_split() {
        let e = env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/a:/b::/c")]).unwrap();
        assert_eq!(e.path.len(), 3);
    }
}
