//! Delegation to another plugin (IPAM) found in CNI_PATH: same environment with CNI_COMMAND replaced,
//! the whole configuration on stdin, its stderr passed through.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::env::Command;
use crate::error::{codes, CniError};
use crate::result::CniResult;

/// Finds `plugin_type` in the CNI_PATH directories. A type with a path separator is refused:
/// delegation must not run arbitrary binaries named by a configuration.
pub fn find_plugin(plugin_type: &str, cni_path: &[PathBuf]) -> Result<PathBuf, CniError> {
    if plugin_type.is_empty()
        || plugin_type.contains(['/', '\\'])
        || plugin_type == "."
        || plugin_type == ".."
    {
        return Err(CniError::invalid_config(format!(
            "plugin type {plugin_type:?} is not a plain name: it must not contain a path separator"
        )));
    }
    if cni_path.is_empty() {
        return Err(CniError::invalid_env(
            "CNI_PATH",
            format!("empty, so plugin {plugin_type:?} cannot be found"),
        ));
    }
    cni_path
        .iter()
        .map(|dir| dir.join(plugin_type))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            CniError::invalid_config(format!("plugin {plugin_type:?} not found in CNI_PATH"))
                .with_details(
                    cni_path
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":"),
                )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs the delegate and returns its stdout on success; its CNI error, code and message intact, on failure.
pub fn exec(
    plugin_type: &str,
    command: Command,
    cni_path: &[PathBuf],
    stdin: &[u8],
) -> Result<Vec<u8>, CniError> {
    exec_with(plugin_type, command, cni_path, stdin, &[])
}

/// [`exec`] with some variables of the delegate's environment replaced (`Some`) or removed
/// (`None`): for a chained plugin whose IPAM allocation belongs to an interface other than
/// CNI_IFNAME.
pub fn exec_with(
    plugin_type: &str,
    command: Command,
    cni_path: &[PathBuf],
    stdin: &[u8],
    overrides: &[(&str, Option<&str>)],
) -> Result<Vec<u8>, CniError> {
    exec_within(plugin_type, command, cni_path, stdin, overrides, None)
}

/// How long the DEL after a failed ADD may run before it is stopped. A delegate that failed
/// because its store was out of reach (etcd down: code 11, after its whole `timeoutMs`) would
/// spend a second `timeoutMs` on a DEL that cannot succeed either, and the ADD would fail after
/// twice its budget. Reachable, a DEL takes milliseconds; stopped, it is safe (DEL is
/// idempotent) and what it did not release, the runtime's own DEL after the failed ADD does.
pub const DEL_AFTER_FAILED_ADD_WITHIN: Duration = Duration::from_millis(500);

/// [`exec_with`], the delegate stopped (SIGKILL) when it runs longer than `limit`.
fn exec_within(
    plugin_type: &str,
    command: Command,
    cni_path: &[PathBuf],
    stdin: &[u8],
    overrides: &[(&str, Option<&str>)],
    limit: Option<Duration>,
) -> Result<Vec<u8>, CniError> {
    let binary = find_plugin(plugin_type, cni_path)?;
    log::debug!("delegating {} to {}", command.as_str(), binary.display());
    let mut process = Process::new(&binary);
    process.env("CNI_COMMAND", command.as_str());
    for (key, value) in overrides {
        match value {
            Some(v) => process.env(key, v),
            None => process.env_remove(key),
        };
    }
    let mut child = process
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            CniError::new(
                codes::IO_FAILURE,
                format!("starting {}: {e}", binary.display()),
            )
        })?;
    // Write stdin from a thread: a delegate that prints before reading everything must not deadlock us.
    let input = stdin.to_vec();
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let mut pipe = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        out
    });
    let waited = |e: std::io::Error| {
        CniError::new(codes::IO_FAILURE, format!("waiting for {plugin_type}: {e}"))
    };
    let status = match limit {
        None => child.wait().map_err(waited)?,
        Some(limit) => match wait_within(&mut child, limit).map_err(waited)? {
            Some(status) => status,
            None => {
                // Its output is not waited for: whatever it started may hold the pipe.
                let _ = child.kill();
                let _ = child.wait();
                return Err(CniError::new(
                    codes::DELEGATE_FAILED,
                    format!(
                        "{plugin_type} {} stopped after {} ms",
                        command.as_str(),
                        limit.as_millis()
                    ),
                ));
            }
        },
    };
    let _ = writer.join();
    let output = Output {
        status,
        stdout: reader.join().unwrap_or_default(),
    };
    if output.status.success() {
        return Ok(output.stdout);
    }
    let parsed = serde_json::from_slice::<serde_json::Value>(&output.stdout)
        .ok()
        .and_then(|v| CniError::from_json(&v));
    Err(match parsed {
        Some(err) => {
            let details = if err.details.is_empty() {
                format!("from {plugin_type}")
            } else {
                format!("{} (from {plugin_type})", err.details)
            };
            err.with_details(details)
        }
        None => CniError::new(
            codes::DELEGATE_FAILED,
            format!(
                "{plugin_type} {} failed ({})",
                command.as_str(),
                output.status
            ),
        )
        .with_details(
            String::from_utf8_lossy(&output.stdout)
                .chars()
                .take(512)
                .collect::<String>(),
        ),
    })
}

struct Output {
    status: ExitStatus,
    stdout: Vec<u8>,
}

/// The child's exit status, or None when it still runs after `limit`.
fn wait_within(child: &mut Child, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// ADD through the delegate. If it fails, DEL is run on it before the error is returned, as the
/// spec's delegation procedure asks, so a half-done allocation is not left behind; that DEL gets
/// [`DEL_AFTER_FAILED_ADD_WITHIN`], so that a failed ADD fails within about its own budget.
pub fn add(plugin_type: &str, cni_path: &[PathBuf], stdin: &[u8]) -> Result<CniResult, CniError> {
    add_with(plugin_type, cni_path, stdin, &[])
}

/// [`add`] with some variables of the delegate's environment replaced or removed, as for
/// [`exec_with`]; the DEL after a failed ADD sees the same environment.
pub fn add_with(
    plugin_type: &str,
    cni_path: &[PathBuf],
    stdin: &[u8],
    overrides: &[(&str, Option<&str>)],
) -> Result<CniResult, CniError> {
    let output = match exec_with(plugin_type, Command::Add, cni_path, stdin, overrides) {
        Ok(output) => output,
        Err(e) => {
            // A configuration or environment refused allocated nothing.
            if e.code != codes::INVALID_CONFIG && e.code != codes::INVALID_ENVIRONMENT {
                let del = exec_within(
                    plugin_type,
                    Command::Del,
                    cni_path,
                    stdin,
                    overrides,
                    Some(DEL_AFTER_FAILED_ADD_WITHIN),
                );
                if let Err(del) = del {
                    log::warn!("DEL after failed ADD of {plugin_type}: {del}");
                }
            }
            return Err(e);
        }
    };
    let value: serde_json::Value = serde_json::from_slice(&output).map_err(|e| {
        CniError::decode(format!("{plugin_type} printed an unreadable result: {e}"))
    })?;
    CniResult::from_json(&value)
}

/// DEL, CHECK, GC or STATUS through the delegate.
pub fn run(
    plugin_type: &str,
    command: Command,
    cni_path: &[PathBuf],
    stdin: &[u8],
) -> Result<(), CniError> {
    exec(plugin_type, command, cni_path, stdin).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cni-invoke-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn refuses_types_with_path_separators() {
        for t in ["../bin/sh", "/bin/sh", "a\\b", "", ".."] {
            assert_eq!(
                find_plugin(t, &[PathBuf::from("/usr/bin")])
                    .unwrap_err()
                    .code,
                7,
                "{t}"
            );
        }
    }

    #[test]
    fn missing_plugin_and_missing_path() {
        assert_eq!(
            find_plugin("no-such-plugin", &[PathBuf::from("/nonexistent")])
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(find_plugin("x", &[]).unwrap_err().code, 4);
    }

    #[test]
    fn passes_stdin_and_command_and_reads_the_result() {
        let dir = tmpdir("ok");
        script(
            &dir,
            "ipam",
            r#"read -r line; [ "$CNI_COMMAND" = ADD ] && [ "$line" = '{"x":1}' ] && echo '{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}'"#,
        );
        let r = add("ipam", std::slice::from_ref(&dir), b"{\"x\":1}\n").unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.0.0.2/24");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn keeps_the_delegate_error_and_runs_del_after_a_failed_add() {
        let dir = tmpdir("err");
        let marker = dir.join("deleted");
        script(
            &dir,
            "ipam",
            &format!(
                r#"if [ "$CNI_COMMAND" = DEL ]; then touch {}; exit 0; fi
echo '{{"cniVersion":"1.0.0","code":100,"msg":"endpoint with name a already exists in network n","details":""}}'; exit 1"#,
                marker.display()
            ),
        );
        let e = add("ipam", std::slice::from_ref(&dir), b"{}").unwrap_err();
        assert_eq!(e.code, 100);
        assert_eq!(e.msg, "endpoint with name a already exists in network n");
        assert!(marker.exists(), "DEL was not run after the failed ADD");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A delegate whose store is out of reach fails its ADD after its whole budget; the DEL
    /// after it must not take a second one (faults.sh: etcd down, ADD within timeoutMs + 1 s).
    #[test]
    fn a_del_after_a_failed_add_that_hangs_is_stopped() {
        let dir = tmpdir("hang");
        let pid_file = dir.join("del.pid");
        script(
            &dir,
            "ipam",
            &format!(
                r#"if [ "$CNI_COMMAND" = DEL ]; then echo $$ > {}; exec sleep 1000; fi
echo '{{"cniVersion":"1.0.0","code":11,"msg":"etcd unreachable","details":""}}'; exit 1"#,
                pid_file.display()
            ),
        );
        let e = add("ipam", std::slice::from_ref(&dir), b"{}").unwrap_err();
        assert_eq!(e.code, 11, "the ADD's own error is reported: {e:?}");
        let pid = std::fs::read_to_string(&pid_file).expect("the DEL ran");
        assert!(
            !Path::new(&format!("/proc/{}", pid.trim())).exists(),
            "the hanging DEL (pid {}) was stopped and reaped",
            pid.trim()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unreadable_failure_is_delegate_failed() {
        let dir = tmpdir("garbage");
        script(&dir, "ipam", "echo garbage; exit 3");
        let e = run("ipam", Command::Check, std::slice::from_ref(&dir), b"{}").unwrap_err();
        assert_eq!(e.code, codes::DELEGATE_FAILED);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
