//! `overlayd install-cni` run as the DaemonSet's init container runs it: the real binary, its
//! settings from the environment (the ConfigMap), as root with every capability dropped; a copy
//! killed in the middle of writing a plugin, or stopped by a full disk, never leaves part of a
//! file under a plugin's name; re-running converges. Temporary directories only; needs root
//! (setpriv drops capabilities) and util-linux (setpriv).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

const PLUGINS: [&str; 3] = ["vxlan-overlay", "etcd-ipam", "gwbridge-egress"];

/// A directory of its own, removed on drop.
struct Temp(PathBuf);

impl Temp {
    fn new(tag: &str) -> Temp {
        let dir = std::env::temp_dir().join(format!("install-cni-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Temp(dir)
    }

    fn path(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An "image" directory as the Containerfile lays it out: overlayd and the plugins side by side
/// (plugins are stand-ins of `size` bytes, distinct per name).
fn image(t: &Temp, size: usize) -> PathBuf {
    let dir = t.path("image");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_overlayd"), dir.join("overlayd")).unwrap();
    for (i, name) in PLUGINS.iter().enumerate() {
        std::fs::write(dir.join(name), vec![b'a' + i as u8; size]).unwrap();
    }
    dir
}

fn pod_conflist() -> Value {
    json!({
        "cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"], "name": "pods",
        "plugins": [
            {"type": "vxlan-overlay", "vni": 4000, "hostAccess": true,
             "ipam": {"type": "etcd-ipam", "ranges": [[{"subnet": "10.244.0.0/16"}]]}},
            {"type": "gwbridge-egress", "capabilities": {"portMappings": true}}
        ]
    })
}

/// `overlayd install-cni` from `image`, with the DaemonSet's environment, as root with no
/// capability: `setpriv` empties the bounding and inheritable sets, so the exec'd overlayd has
/// none (what `capabilities: {drop: [ALL]}` gives a container).
fn install(image: &Path, bin: &Path, conf: &Path, extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--inh-caps=-all", "--bounding-set=-all", "--"])
        .arg(image.join("overlayd"))
        .args(["install-cni", "--conflist-from-env"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("OVERLAYD_CNI_BIN_DIR", bin)
        .env("OVERLAYD_CNI_CONF_DIR", conf)
        .env(
            "OVERLAYD_ETCD",
            "http://192.0.2.10:2379,http://192.0.2.11:2379",
        )
        .env("OVERLAYD_NODE", "worker-1.example")
        .env("OVERLAYD_CNI_CONFLIST", pod_conflist().to_string());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("run overlayd install-cni")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Names in `dir` starting with a dot: temporary files.
fn dot_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn installs_from_the_environment_as_root_without_capabilities_and_converges() {
    let t = Temp::new("env");
    let image = image(&t, 64 * 1024);
    let (bin, conf) = (t.path("host/opt/cni/bin"), t.path("host/etc/cni/net.d"));
    let o = output(&mut install(&image, &bin, &conf, &[]));
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for name in PLUGINS {
        let installed = bin.join(name);
        assert_eq!(
            std::fs::read(&installed).unwrap(),
            std::fs::read(image.join(name)).unwrap(),
            "{name} comes from the directory of the running overlayd"
        );
        assert_eq!(mode(&installed), 0o755);
        assert!(out.contains(&format!("installed {}", installed.display())));
    }
    let conflist = conf.join("10-cni-overlay.conflist");
    let c: Value = serde_json::from_slice(&std::fs::read(&conflist).unwrap()).unwrap();
    assert_eq!(c["cniVersion"], "1.0.0");
    assert_eq!(c["cniVersions"], json!(["1.0.0", "1.1.0"]));
    assert_eq!(c["cniOverlayManaged"], true);
    assert_eq!(c["plugins"][0]["node"], "worker-1.example");
    assert_eq!(
        c["plugins"][0]["etcd"]["endpoints"],
        json!(["http://192.0.2.10:2379", "http://192.0.2.11:2379"])
    );
    assert_eq!(c["plugins"][0]["hostAccess"], true);
    assert_eq!(mode(&conflist), 0o644, "no credentials: readable");

    // Re-running (a restarted pod) rewrites nothing.
    let before = std::fs::metadata(&conflist).unwrap().modified().unwrap();
    let o = output(&mut install(&image, &bin, &conf, &[]));
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.lines().all(|l| l.starts_with("unchanged ")), "{out}");
    assert_eq!(
        std::fs::metadata(&conflist).unwrap().modified().unwrap(),
        before
    );

    // Credentials: the conflist becomes 0600 in place.
    let o = output(&mut install(
        &image,
        &bin,
        &conf,
        &[
            ("OVERLAYD_ETCD_USER", "cni"),
            ("OVERLAYD_ETCD_PASSWORD", "secret"),
        ],
    ));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(mode(&conflist), 0o600);
    assert!(dot_files(&bin).is_empty() && dot_files(&conf).is_empty());
}

#[test]
fn a_foreign_conflist_is_left_alone_and_the_step_fails() {
    let t = Temp::new("foreign");
    let image = image(&t, 16);
    let (bin, conf) = (t.path("bin"), t.path("net.d"));
    std::fs::create_dir_all(&conf).unwrap();
    let theirs = conf.join("10-cni-overlay.conflist");
    std::fs::write(&theirs, "{\"cniVersion\": \"0.4.0\", \"name\": \"theirs\"}").unwrap();
    std::fs::write(conf.join("00-first.conflist"), "{}").unwrap();
    let o = output(&mut install(&image, &bin, &conf, &[]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(&theirs).unwrap(),
        "{\"cniVersion\": \"0.4.0\", \"name\": \"theirs\"}"
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("left alone {}", theirs.display())),
        "{out}"
    );
    assert!(dot_files(&conf).is_empty());
    assert!(!bin.exists(), "no plugin installed either");
}

/// Runs install-cni with a file size limit below the first plugin's size. `ignore` decides
/// whether SIGXFSZ kills the process (a crash in the middle of the write) or the write fails
/// with EFBIG (a full disk).
fn limited(image: &Path, bin: &Path, conf: &Path, ignore: bool) -> Output {
    let mut cmd = install(image, bin, conf, &[]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: 256 * 1024,
                rlim_max: 256 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            if ignore {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            }
            Ok(())
        });
    }
    output(&mut cmd)
}

#[test]
fn a_write_cut_short_never_shows_under_the_plugins_name() {
    let t = Temp::new("cut");
    let image = image(&t, 1024 * 1024);
    let (bin, conf) = (t.path("bin"), t.path("net.d"));
    std::fs::create_dir_all(&bin).unwrap();
    // The previous release's binary, in use by the runtime.
    std::fs::write(bin.join("vxlan-overlay"), b"previous release").unwrap();

    // Killed by SIGXFSZ in the middle of the first plugin: the old binary stays whole, the
    // partial data only in the dot-file.
    let o = limited(&image, &bin, &conf, false);
    assert_eq!(o.status.signal(), Some(libc::SIGXFSZ), "{}", text(&o));
    assert_eq!(
        std::fs::read(bin.join("vxlan-overlay")).unwrap(),
        b"previous release"
    );
    assert!(!bin.join("etcd-ipam").exists());
    assert_eq!(dot_files(&bin), [".vxlan-overlay.tmp"]);
    assert!(!conf.join("10-cni-overlay.conflist").exists());

    // The write fails instead (EFBIG, as on a full disk): an error, the dot-file removed.
    let o = limited(&image, &bin, &conf, true);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("vxlan-overlay"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(bin.join("vxlan-overlay")).unwrap(),
        b"previous release"
    );
    assert!(dot_files(&bin).is_empty(), "{:?}", dot_files(&bin));

    // Without the limit, the next run (the pod's restart) installs everything.
    let o = output(&mut install(&image, &bin, &conf, &[]));
    assert!(o.status.success(), "{}", text(&o));
    for name in PLUGINS {
        assert_eq!(
            std::fs::read(bin.join(name)).unwrap(),
            std::fs::read(image.join(name)).unwrap()
        );
    }
    assert!(dot_files(&bin).is_empty() && dot_files(&conf).is_empty());
}

#[test]
fn the_agent_keeps_its_command_line_and_names_the_subcommand() {
    let help = Command::new(env!("CARGO_BIN_EXE_overlayd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("overlayd install-cni --help"));
    let o = Command::new(env!("CARGO_BIN_EXE_overlayd"))
        .env_clear()
        .arg("--node=n1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "--etcd is still required");
    let o = Command::new(env!("CARGO_BIN_EXE_overlayd"))
        .args(["install-cni", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    for flag in [
        "--bin-dir",
        "--conf-dir",
        "--source-dir",
        "--conflist",
        "--conflist-from-env",
        "--node",
        "--etcd",
    ] {
        assert!(help.contains(flag), "{flag}:\n{help}");
    }
}
