//! The plugin skeleton: reads the environment and stdin, checks the version against the verb, calls
//! the plugin, and prints exactly one JSON document (result or error) on stdout.

use std::io::{Read, Write};
use std::panic::{self, AssertUnwindSafe};

use serde_json::json;

use crate::config::{NetConf, MAX_CONFIG_BYTES};
use crate::env::{Command, Environment};
use crate::error::{codes, CniError};
use crate::result::CniResult;
use crate::version::{Version, SUPPORTED};

/// One invocation: its environment and its parsed configuration.
#[derive(Debug, Clone)]
pub struct Request {
    pub env: Environment,
    pub conf: NetConf,
}

/// A CNI plugin. GC and STATUS default to success for plugins that hold no state of their own.
pub trait Plugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError>;
    fn del(&self, req: &Request) -> Result<(), CniError>;
    fn check(&self, req: &Request) -> Result<(), CniError>;
    fn gc(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
    fn status(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
}

/// Runs a plugin's async work on a one-shot, single-threaded runtime: a plugin process lives for
/// one request, so a multi-threaded runtime would only cost start-up time. Every plugin of the
/// suite goes through here, once per request (feature `runtime`).
#[cfg(feature = "runtime")]
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, CniError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CniError::new(
                codes::IO_FAILURE,
                format!("starting the async runtime: {e}"),
            )
        })?;
    Ok(runtime.block_on(future))
}

/// What the process prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub exit_code: i32,
}

impl Outcome {
    fn error(err: &CniError, version: &str) -> Self {
        log::error!("{err}");
        Outcome {
            stdout: err.to_json(version).to_string(),
            exit_code: 1,
        }
    }
}

/// Runs one invocation without touching the process: environment through `lookup`, stdin as bytes.
pub fn handle<P: Plugin>(
    plugin: &P,
    lookup: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Outcome {
    // Errors are printed in the request's version when it can be read, else the newest.
    let reply_version = request_version(stdin);
    let env = match Environment::from_lookup(lookup) {
        Ok(env) => env,
        Err(e) => return Outcome::error(&e, &reply_version),
    };
    if env.command == Command::Version {
        return Outcome {
            stdout: json!({"cniVersion": reply_version, "supportedVersions": SUPPORTED})
                .to_string(),
            exit_code: 0,
        };
    }
    let conf = match NetConf::parse(stdin) {
        Ok(conf) => conf,
        Err(e) => return Outcome::error(&e, &reply_version),
    };
    let version = conf.version;
    let verb_allowed = match env.command {
        Command::Check => version.has_check(),
        Command::Gc | Command::Status => version.has_gc_and_status(),
        _ => true,
    };
    if !verb_allowed {
        let e = CniError::new(
            codes::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {version} does not allow {}",
                env.command.as_str()
            ),
        );
        return Outcome::error(&e, version.as_str());
    }
    log::debug!(
        "{} {} container={} ifname={}",
        env.command.as_str(),
        conf.name,
        env.container_id,
        env.ifname
    );
    let req = Request { env, conf };
    let outcome = match req.env.command {
        Command::Add => plugin.add(&req).map(|r| r.to_json(version).to_string()),
        Command::Del => plugin.del(&req).map(|_| String::new()),
        Command::Check => plugin.check(&req).map(|_| String::new()),
        Command::Gc => plugin.gc(&req).map(|_| String::new()),
        Command::Status => plugin.status(&req).map(|_| String::new()),
        Command::Version => unreachable!("answered above"),
    };
    match outcome {
        Ok(stdout) => Outcome {
            stdout,
            exit_code: 0,
        },
        Err(e) => Outcome::error(&e, version.as_str()),
    }
}

/// The request's cniVersion if it is one we speak, else the newest.
fn request_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
        .filter(|v| Version::parse(v).is_ok())
        .unwrap_or_else(|| Version::LATEST.to_string())
}

/// Sets up logging to stderr, or to the file named by `CNI_OVERLAY_LOG_FILE`; the level comes from
/// `RUST_LOG` (default `warn`). stdout is reserved for the result.
pub fn init_logging() {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"));
    if let Some(path) = std::env::var_os("CNI_OVERLAY_LOG_FILE") {
        if let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            builder.target(env_logger::Target::Pipe(Box::new(file)));
        }
    } else {
        builder.target(env_logger::Target::Stderr);
    }
    let _ = builder.try_init();
}

/// The entry point of a plugin binary: never returns.
pub fn run<P: Plugin>(plugin: P) -> ! {
    init_logging();
    // A panic message goes to stderr through the hook; stdout still gets a CNI error below.
    let mut stdin = Vec::new();
    let read = std::io::stdin()
        .lock()
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut stdin);
    let outcome = match read {
        Err(e) => Outcome::error(
            &CniError::new(codes::IO_FAILURE, format!("reading stdin: {e}")),
            Version::LATEST.as_str(),
        ),
        Ok(_) => panic::catch_unwind(AssertUnwindSafe(|| {
            handle(&plugin, |k| std::env::var(k).ok(), &stdin)
        }))
        .unwrap_or_else(|_| {
            let e = CniError::new(
                codes::INTERNAL,
                "internal error: the plugin panicked (see stderr)",
            );
            Outcome::error(&e, &request_version(&stdin))
        }),
    };
    let mut out = std::io::stdout().lock();
    if !outcome.stdout.is_empty() {
        let _ = writeln!(out, "{}", outcome.stdout);
    }
    let _ = out.flush();
    std::process::exit(outcome.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Interface, IpConfig};
    use std::collections::HashMap;

    struct Fake;
    impl Plugin for Fake {
        fn add(&self, req: &Request) -> Result<CniResult, CniError> {
            if req.conf.name == "fails" {
                return Err(CniError::new(codes::NAME_IN_USE, "nope"));
            }
            Ok(CniResult {
                interfaces: vec![Interface {
                    name: req.env.ifname.clone(),
                    sandbox: req.env.netns.clone(),
                    ..Default::default()
                }],
                ips: vec![IpConfig {
                    address: "10.0.0.2/24".parse().unwrap(),
                    gateway: None,
                    interface: Some(0),
                }],
                ..Default::default()
            })
        }
        fn del(&self, _: &Request) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _: &Request) -> Result<(), CniError> {
            Ok(())
        }
    }

    fn call(env: &[(&str, &str)], stdin: &str) -> (serde_json::Value, i32) {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let out = handle(&Fake, |k| map.get(k).cloned(), stdin.as_bytes());
        let v = if out.stdout.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&out.stdout).unwrap()
        };
        (v, out.exit_code)
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/c1"),
        ("CNI_IFNAME", "eth0"),
    ];

    #[test]
    fn version_ignores_libcni_dummies_and_echoes_the_version() {
        let (v, code) = call(
            &[
                ("CNI_COMMAND", "VERSION"),
                ("CNI_NETNS", "dummy"),
                ("CNI_IFNAME", "dummy"),
                ("CNI_PATH", "dummy"),
            ],
            r#"{"cniVersion":"1.1.0"}"#,
        );
        assert_eq!(code, 0);
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(
            v["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        let (v, _) = call(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(v["cniVersion"], "0.4.0");
        let (v, _) = call(&[("CNI_COMMAND", "VERSION")], "");
        assert_eq!(v["cniVersion"], "1.1.0");
    }

    #[test]
    fn result_version_equals_request_version() {
        for ver in SUPPORTED {
            let (v, code) = call(
                ADD,
                &format!(r#"{{"cniVersion":"{ver}","name":"n","type":"t"}}"#),
            );
            assert_eq!(code, 0);
            assert_eq!(v["cniVersion"], *ver);
            assert_eq!(v["ips"][0].get("version").is_some(), ver.starts_with('0'));
        }
    }

    #[test]
    fn errors_carry_all_fields_and_the_request_version() {
        let (v, code) = call(ADD, r#"{"cniVersion":"0.4.0","name":"fails","type":"t"}"#);
        assert_eq!(code, 1);
        assert_eq!(
            v,
            json!({"cniVersion": "0.4.0", "code": 100, "msg": "nope", "details": ""})
        );
    }

    #[test]
    fn check_before_0_4_0_and_gc_before_1_1_0_are_code_1() {
        let check: Vec<_> = ADD
            .iter()
            .map(|&(k, v)| {
                if k == "CNI_COMMAND" {
                    (k, "CHECK")
                } else {
                    (k, v)
                }
            })
            .collect();
        let (v, _) = call(&check, r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!(v["code"], 1);
        let (v, _) = call(
            &[("CNI_COMMAND", "GC")],
            r#"{"cniVersion":"1.0.0","name":"n"}"#,
        );
        assert_eq!(v["code"], 1);
        let (_, code) = call(
            &[("CNI_COMMAND", "STATUS")],
            r#"{"cniVersion":"1.1.0","name":"n"}"#,
        );
        assert_eq!(code, 0);
    }

    #[test]
    fn del_without_netns_succeeds_with_empty_stdout() {
        let (v, code) = call(
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0"),
            ],
            r#"{"cniVersion":"1.0.0","name":"n"}"#,
        );
        assert_eq!((v, code), (serde_json::Value::Null, 0));
    }

    #[test]
    fn environment_errors_come_before_config_errors() {
        let (v, _) = call(&[("CNI_COMMAND", "ADD")], "not json");
        assert_eq!(v["code"], 4);
        assert_eq!(v["cniVersion"], "1.1.0");
    }
}
