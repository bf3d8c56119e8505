//! Reading and writing sysctls under /proc/sys.
//!
//! /proc/sys/net/* resolves to the network namespace of the thread that opens the file, so
//! these act on the caller's current namespace; use [`crate::Netns::run`] to act on another.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use crate::error::Error;

/// "net.ipv4.ip_forward" -> /proc/sys/net/ipv4/ip_forward. A key that already uses '/' as
/// separator is taken as is, which is how a device name containing a dot (eth0.100) is reached.
fn sysctl_path(op: &'static str, key: &str) -> Result<PathBuf, Error> {
    let relative = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    let parts: Vec<&str> = relative.split('/').collect();
    let bad = parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
        || key.contains('\0');
    if key.is_empty() || bad {
        return Err(Error::invalid(op, key, "not a valid sysctl key"));
    }
    Ok(PathBuf::from("/proc/sys").join(relative))
}

/// Writes a sysctl (e.g. "net.ipv4.ip_forward") in the calling thread's network namespace.
pub fn set_sysctl(key: &str, value: &str) -> Result<(), Error> {
    let path = sysctl_path("set sysctl", key)?;
    let target = format!("{key}={value}");
    // No O_CREAT and no truncation: procfs entries exist already and take the whole value in
    // one write.
    let mut file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| Error::kernel("set sysctl", target.clone(), e))?;
    file.write_all(value.as_bytes())
        .map_err(|e| Error::kernel("set sysctl", target, e))
}

/// Reads a sysctl in the calling thread's network namespace, without the trailing newline.
pub fn get_sysctl(key: &str) -> Result<String, Error> {
    let path = sysctl_path("read sysctl", key)?;
    let value = std::fs::read_to_string(&path).map_err(|e| Error::kernel("read sysctl", key, e))?;
    Ok(value.trim_end_matches('\n').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_proc_paths() {
        assert_eq!(
            sysctl_path("t", "net.ipv4.ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path("t", "net/ipv4/conf/eth0.100/forwarding").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
        for bad in [
            "",
            ".",
            "net..ipv4",
            "net/../../etc",
            "/net/ipv4",
            "net.ipv4.",
            "a\0b",
        ] {
            assert!(sysctl_path("t", bad).is_err(), "{bad:?}");
        }
    }
}
