//! STATUS through a conflist as libcni ≥ 1.2 calls it: containerd ≥ 2.1 (go-cni's `Status`)
//! runs `GetStatusNetworkList` on the loaded network every time the kubelet asks for the
//! runtime's status (every 5 s), and reports the node's network not ready when it fails.
//! containerd 1.6 (libcni 1.1) never calls STATUS.
//!
//! What libcni does (libcni/conf.go `ConfListFromBytes`, libcni/api.go `GetStatusNetworkList`):
//! the list's version is the highest of `cniVersion` and the `cniVersions` entries that libcni
//! implements (≤ 1.1.0); below 1.1.0 STATUS is not called at all. Each plugin object of the list,
//! in order, gets `name` and `cniVersion` injected (nothing else: no runtimeConfig, no
//! prevResult) and is executed with `CNI_COMMAND=STATUS`, the other five variables set and
//! empty but CNI_PATH; the first failure is the verdict.

use serde_json::Value;

/// The newest spec version libcni 1.2 and 1.3 implement (`version.Current()`).
pub const CURRENT: &str = "1.1.0";

fn parse(v: &str) -> Result<(u32, u32, u32), String> {
    let parts: Vec<&str> = v.split('.').collect();
    let num = |i: usize| -> Result<u32, String> {
        parts
            .get(i)
            .ok_or_else(|| format!("invalid version {v:?}"))?
            .parse()
            .map_err(|_| format!("invalid version {v:?}"))
    };
    if parts.len() != 3 {
        return Err(format!("invalid version {v:?}"));
    }
    Ok((num(0)?, num(1)?, num(2)?))
}

/// The version libcni ≥ 1.2 gives a conflist: its `cniVersion` and each `cniVersions` entry
/// that is not newer than [`CURRENT`], the highest of them.
pub fn effective_version(conflist: &Value) -> Result<String, String> {
    let current = parse(CURRENT)?;
    let mut candidates: Vec<String> = Vec::new();
    let declared = conflist["cniVersion"].as_str().unwrap_or("");
    if let Some(versions) = conflist.get("cniVersions") {
        let versions = versions
            .as_array()
            .ok_or("error parsing configuration list: invalid type for cniVersions")?;
        for v in versions {
            let v = v.as_str().ok_or("invalid type in cniVersions")?;
            if parse(v)? <= current {
                candidates.push(v.to_string());
            }
        }
        if !declared.is_empty() && parse(declared)? <= current {
            candidates.push(declared.to_string());
        }
    } else {
        return Ok(declared.to_string());
    }
    candidates.sort_by_key(|v| parse(v).unwrap());
    Ok(candidates.pop().unwrap_or_else(|| declared.to_string()))
}

/// One plugin's STATUS call: the executable's name (`type`) and its stdin.
#[derive(Debug, Clone)]
pub struct StatusCall {
    pub plugin_type: String,
    pub stdin: Value,
}

/// The STATUS calls libcni makes for `conflist`, in order; none below version 1.1.0.
pub fn status_calls(conflist: &Value) -> Result<Vec<StatusCall>, String> {
    let version = effective_version(conflist)?;
    if parse(&version)? < (1, 1, 0) {
        return Ok(Vec::new());
    }
    let plugins = conflist["plugins"]
        .as_array()
        .ok_or("the conflist has no plugins")?;
    plugins
        .iter()
        .map(|p| {
            let mut stdin = p.clone();
            let object = stdin.as_object_mut().ok_or("a plugin is not an object")?;
            object.insert("name".into(), conflist["name"].clone());
            object.insert("cniVersion".into(), Value::String(version.clone()));
            Ok(StatusCall {
                plugin_type: p["type"]
                    .as_str()
                    .ok_or("a plugin has no type")?
                    .to_string(),
                stdin,
            })
        })
        .collect()
}

/// The environment libcni sets for STATUS (its `args("STATUS", &RuntimeConf{})`).
pub fn status_env(cni_path: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", "STATUS".into()),
        ("CNI_CONTAINERID", String::new()),
        ("CNI_NETNS", String::new()),
        ("CNI_ARGS", String::new()),
        ("CNI_IFNAME", String::new()),
        ("CNI_PATH", cni_path.into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cni_versions_raise_the_version_up_to_what_libcni_implements() {
        let list = |v: &str, vs: Value| json!({"cniVersion": v, "cniVersions": vs, "name": "n", "plugins": [{"type": "a"}]});
        assert_eq!(
            effective_version(&list("1.0.0", json!(["1.0.0", "1.1.0"]))).unwrap(),
            "1.1.0"
        );
        assert_eq!(
            effective_version(&list("1.0.0", json!(["1.0.0", "1.1.0", "2.0.0"]))).unwrap(),
            "1.1.0"
        );
        assert_eq!(
            effective_version(&list("0.4.0", json!(["0.3.1"]))).unwrap(),
            "0.4.0"
        );
        assert_eq!(
            effective_version(&json!({"cniVersion": "1.0.0"})).unwrap(),
            "1.0.0"
        );
        assert!(effective_version(&list("1.0.0", json!("1.1.0"))).is_err());
    }

    #[test]
    fn status_injects_name_and_version_into_each_plugin() {
        let conf = json!({"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"], "name": "pods",
                          "plugins": [{"type": "vxlan-overlay", "ipam": {"type": "etcd-ipam"}},
                                      {"type": "gwbridge-egress", "capabilities": {"portMappings": true}}]});
        let calls = status_calls(&conf).unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].plugin_type, "vxlan-overlay");
        assert_eq!(calls[0].stdin["cniVersion"], "1.1.0");
        assert_eq!(calls[1].stdin["name"], "pods");
        assert_eq!(calls[1].stdin["capabilities"]["portMappings"], true);
        assert!(calls[1].stdin.get("runtimeConfig").is_none());
        let old = json!({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "a"}]});
        assert!(status_calls(&old).unwrap().is_empty());
    }
}
