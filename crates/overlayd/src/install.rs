//! `overlayd install-cni`: puts cni-overlay on a node, as the init container of the Kubernetes
//! DaemonSet does (deploy/kubernetes/): the three plugins into the CNI binary directory and ONE
//! conflist, the pod network, into the CNI configuration directory.
//!
//! * Binaries (vxlan-overlay, etcd-ipam, gwbridge-egress) come from `--source-dir`, by default the
//!   directory of the running overlayd (the image's `/opt/cni-overlay`). Each is written to a
//!   dot-file in the target directory, synced, made 0755 and renamed over its name, so a runtime
//!   looking a plugin up by name finds the old binary or the new one, never part of one. An
//!   identical file is left as it is (a restarted pod rewrites nothing).
//! * The conflist is a template (`--conflist FILE`, or `--conflist-from-env`: the JSON in
//!   `OVERLAYD_CNI_CONFLIST`) completed here: the marker field overlayd's conflists carry
//!   ([`model::names::CONFLIST_MARKER`]), and, where a vxlan-overlay (or an etcd-ipam section) of
//!   the template leaves them out, `node` (`--node`, the Kubernetes node name: the one overlayd
//!   registers, so plugins and agent agree on what is local) and `etcd` (overlayd's own etcd
//!   settings, `--etcd`... or `OVERLAYD_ETCD`..., so etcd is configured once). The plugins run on
//!   the host, not in the pod, so TLS files named by those settings are copied next to the
//!   conflist first (`<conf-dir>/cni-overlay-tls/`, 0600) and the conflist names the copies.
//!   Written with the conflists module's atomic writer; 0600 when it holds a password, 0644
//!   otherwise. A file of that name without the marker is not ours: it is left alone, reported,
//!   and the command fails without installing anything.
//!
//! The file is `10-cni-overlay.conflist` by default: the kubelet's runtime (containerd, CRI-O)
//! uses the first configuration of the directory in sort order, so ours sorts before the usual
//! `87-podman-bridge.conflist` and `99-loopback.conf` but after a `05-`/`00-` an operator puts
//! first on purpose. Configurations sorting before it are reported (they win).

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use model::names::CONFLIST_MARKER;
use serde_json::{json, Value};
use store::cli::{EtcdArgs, Tuning};
use store::{EtcdConfig, TlsFiles};

use crate::conflists::{etcd_json, is_ours, write_atomic};

/// The subcommand's name: `overlayd install-cni ...`.
pub const SUBCOMMAND: &str = "install-cni";
/// The plugin binaries installed, in the image beside overlayd.
pub const PLUGINS: [&str; 3] = ["vxlan-overlay", "etcd-ipam", "gwbridge-egress"];
/// The conflist's default file name (see the module's documentation for the order).
pub const CONFLIST_NAME: &str = "10-cni-overlay.conflist";
/// The environment variable `--conflist-from-env` reads.
pub const CONFLIST_ENV: &str = "OVERLAYD_CNI_CONFLIST";
/// Where, under the configuration directory, the TLS files for the plugins go by default.
pub const TLS_DIR: &str = "cni-overlay-tls";
/// The copies' names in the TLS directory: CA, client certificate, client key.
const TLS_FILES: [&str; 3] = ["etcd-ca.pem", "etcd-cert.pem", "etcd-key.pem"];

#[derive(Debug, Clone, Parser)]
#[command(
    name = "overlayd install-cni",
    bin_name = "overlayd install-cni",
    version,
    about = "Installs the cni-overlay plugins and one conflist on this node (the Kubernetes \
             DaemonSet's init step), atomically; never replaces a conflist overlayd did not write"
)]
pub struct InstallArgs {
    /// Where the runtime looks for CNI plugins (the host's, mounted at the same path).
    #[arg(long, env = "OVERLAYD_CNI_BIN_DIR", default_value = "/opt/cni/bin")]
    pub bin_dir: PathBuf,

    /// The runtime's CNI configuration directory (the host's, mounted at the same path: the
    /// conflist names files under it).
    #[arg(long, env = "OVERLAYD_CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    pub conf_dir: PathBuf,

    /// Where the plugin binaries to install are. Default: the directory of this overlayd.
    #[arg(long)]
    pub source_dir: Option<PathBuf>,

    /// The conflist template, a JSON file. Without it and --conflist-from-env, only the
    /// binaries are installed.
    #[arg(long, conflicts_with = "conflist_from_env")]
    pub conflist: Option<PathBuf>,

    /// Read the conflist template from the environment variable OVERLAYD_CNI_CONFLIST.
    #[arg(long)]
    pub conflist_from_env: bool,

    /// The conflist's file name in --conf-dir.
    #[arg(long, env = "OVERLAYD_CNI_CONFLIST_NAME", default_value = CONFLIST_NAME)]
    pub conflist_name: String,

    /// The node name written into the conflist where it has none (overlayd's --node).
    #[arg(long, env = "OVERLAYD_NODE")]
    pub node: Option<String>,

    /// Where the etcd TLS files are copied for the plugins. Default: <conf-dir>/cni-overlay-tls.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,

    #[command(flatten)]
    pub etcd: EtcdArgs,
}

/// The etcd flags as overlayd reads them (`OVERLAYD_*`), but optional: they only complete the
/// conflist.
const ETCD_FLAGS: Tuning = Tuning {
    env_prefix: "OVERLAYD",
    default_endpoint: None,
    timeout_ms: crate::cli::ETCD_TIMEOUT_MS,
    global: false,
};

impl InstallArgs {
    /// Parses the subcommand's arguments; the first item is the subcommand's name.
    pub fn try_parse_args<I, T>(args: I) -> Result<InstallArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let command = EtcdArgs::tune(InstallArgs::command(), &ETCD_FLAGS)
            .mut_arg("etcd", |a| a.required(false));
        InstallArgs::from_arg_matches(&command.try_get_matches_from(args)?)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),

    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written (new, or replaced atomically).
    Written,
    /// Already there with this content and mode.
    Unchanged,
    /// A file of that name that overlayd did not write: left alone.
    Foreign,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub path: PathBuf,
    pub mode: u32,
    pub outcome: Outcome,
}

/// Everything `install-cni` did, for the log and the exit status.
#[derive(Debug, Default)]
pub struct Report {
    pub steps: Vec<Step>,
    /// Configurations of the directory that sort before ours: the runtime uses the first.
    pub shadowed_by: Vec<String>,
}

impl Report {
    /// True when a file could not be written because it is not ours.
    pub fn blocked(&self) -> bool {
        self.steps.iter().any(|s| s.outcome == Outcome::Foreign)
    }

    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .steps
            .iter()
            .map(|s| match s.outcome {
                Outcome::Written => format!("installed {} ({:04o})", s.path.display(), s.mode),
                Outcome::Unchanged => format!("unchanged {}", s.path.display()),
                Outcome::Foreign => format!(
                    "left alone {}: it exists and was not written by overlayd (no \"{}\" field); \
                     move it away to install ours",
                    s.path.display(),
                    CONFLIST_MARKER
                ),
            })
            .collect();
        for other in &self.shadowed_by {
            lines.push(format!(
                "warning: {other} sorts before our conflist: the runtime uses the first \
                 configuration of the directory, so pods get {other}'s network"
            ));
        }
        lines
    }
}

/// `overlayd install-cni ...`: `args` start with the subcommand's name.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = match InstallArgs::try_parse_args(args) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    match run(&args) {
        Ok(report) => {
            for line in report.lines() {
                println!("{line}");
            }
            if report.blocked() {
                eprintln!("overlayd install-cni: a file in the way was left alone");
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("overlayd install-cni: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the binaries, then the conflist if a template is given.
pub fn run(args: &InstallArgs) -> Result<Report, Error> {
    check_file_name(&args.conflist_name)?;
    // Everything that can be refused is, before anything is written.
    let template = template(args)?;
    let etcd = args.etcd.config();
    let etcd = if etcd.endpoints.is_empty() {
        None
    } else {
        etcd.validate()
            .map_err(|e| Error::Config(format!("etcd settings: {e}")))?;
        Some(etcd)
    };
    if let Some(node) = &args.node {
        model::types::check_node_name(node).map_err(|e| Error::Config(format!("--node: {e}")))?;
    }
    let source = match &args.source_dir {
        Some(dir) => dir.clone(),
        None => own_dir()?,
    };
    let binaries = PLUGINS
        .iter()
        .map(|name| {
            let path = source.join(name);
            std::fs::read(&path)
                .map(|bytes| (*name, bytes))
                .map_err(io("reading the plugin", &path))
        })
        .collect::<Result<Vec<_>, Error>>()?;

    // The conflist and the TLS copies it names, all read and made before anything is written.
    let mut files = Vec::new(); // (path, content, mode), after the binaries
    if let Some(template) = template {
        let etcd = match (completes_etcd(&template), etcd) {
            (false, _) => None,
            (true, None) => {
                return Err(Error::Config(
                    "the conflist's vxlan-overlay/etcd-ipam has no \"etcd\" and no --etcd \
                     (OVERLAYD_ETCD) was given to fill it in"
                        .into(),
                ))
            }
            (true, Some(etcd)) => {
                let tls_dir = args
                    .tls_dir
                    .clone()
                    .unwrap_or_else(|| args.conf_dir.join(TLS_DIR));
                let (etcd, copies) = tls_copies(etcd, &tls_dir)?;
                files.extend(copies.into_iter().map(|(path, bytes)| (path, bytes, 0o600)));
                Some(etcd)
            }
        };
        let conflist = complete(template, args.node.as_deref(), etcd.as_ref())?;
        let mut content = serde_json::to_vec_pretty(&conflist).expect("JSON serializes");
        content.push(b'\n');
        let mode = if has_password(&conflist) {
            0o600
        } else {
            0o644
        };
        files.push((args.conf_dir.join(&args.conflist_name), content, mode));
    }

    let mut report = Report::default();
    // A conflist of that name that is not ours stops everything, the binaries included: the
    // node stays as it was until the operator moves it away.
    if let Some((conflist, _, _)) = files.last() {
        if conflist.exists() && !is_ours(conflist) {
            report.steps.push(Step {
                path: conflist.clone(),
                mode: 0,
                outcome: Outcome::Foreign,
            });
            return Ok(report);
        }
    }
    for (name, bytes) in &binaries {
        report
            .steps
            .push(install_file(&args.bin_dir.join(name), bytes, 0o755)?);
    }
    if !files.is_empty() {
        for (path, content, mode) in &files {
            report.steps.push(install_file(path, content, *mode)?);
        }
        report.shadowed_by = sorting_before(&args.conf_dir, &args.conflist_name);
    }
    Ok(report)
}

/// The directory of the running binary: where the image keeps the plugins beside overlayd.
fn own_dir() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(io("finding", Path::new("/proc/self/exe")))?;
    Ok(exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/")))
}

/// A conflist name a runtime reads, and nothing else: no directory, no dot-file.
fn check_file_name(name: &str) -> Result<(), Error> {
    if name.contains('/') || name.starts_with('.') || !name.ends_with(".conflist") {
        return Err(Error::Config(format!(
            "--conflist-name {name:?}: a file name ending in .conflist, without a leading dot"
        )));
    }
    Ok(())
}

/// The template: parsed and checked to be a conflist, or None when none is asked for.
fn template(args: &InstallArgs) -> Result<Option<Value>, Error> {
    let (text, origin) = match (&args.conflist, args.conflist_from_env) {
        (Some(path), _) => (
            std::fs::read_to_string(path).map_err(io("reading the conflist", path))?,
            path.display().to_string(),
        ),
        (None, true) => match std::env::var(CONFLIST_ENV) {
            Ok(text) if !text.trim().is_empty() => (text, CONFLIST_ENV.to_string()),
            _ => {
                return Err(Error::Config(format!(
                    "--conflist-from-env: {CONFLIST_ENV} is not set or empty"
                )))
            }
        },
        (None, false) => return Ok(None),
    };
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{origin} is not JSON: {e}")))?;
    check_conflist(&value).map_err(|e| Error::Config(format!("{origin}: {e}")))?;
    Ok(Some(value))
}

/// The shape libcni requires of a conflist.
pub fn check_conflist(v: &Value) -> Result<(), String> {
    let object = v.as_object().ok_or("not a JSON object")?;
    let non_empty = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    for key in ["cniVersion", "name"] {
        if !non_empty(object.get(key)) {
            return Err(format!("no \"{key}\" string"));
        }
    }
    let plugins = object
        .get("plugins")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .ok_or("no \"plugins\" list (a conflist, not a single .conf)")?;
    for (i, plugin) in plugins.iter().enumerate() {
        if !non_empty(plugin.get("type")) {
            return Err(format!("plugins[{i}] has no \"type\""));
        }
    }
    Ok(())
}

/// Where a plugin object of the conflist takes `node` and `etcd`: vxlan-overlay in the plugin
/// object (its IPAM plugin sees that too), another main plugin with etcd-ipam in its ipam section
/// (unless its plugin object already holds them); other plugins not at all.
fn completion_target(plugin: &Value) -> Option<&'static str> {
    let holds = |p: &Value| p.get("node").is_some() || p.get("etcd").is_some();
    if plugin["type"] == "vxlan-overlay" {
        Some("")
    } else if plugin.pointer("/ipam/type") == Some(&json!("etcd-ipam")) && !holds(plugin) {
        Some("/ipam")
    } else {
        None
    }
}

/// Whether a plugin of ours has `key` in neither place the plugins read it from.
fn lacks(plugin: &Value, key: &str) -> bool {
    plugin.get(key).is_none() && plugin.pointer(&format!("/ipam/{key}")).is_none()
}

fn plugins(conflist: &Value) -> impl Iterator<Item = &Value> {
    conflist
        .get("plugins")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Whether some plugin of the template has no `etcd` where it should get overlayd's.
fn completes_etcd(template: &Value) -> bool {
    plugins(template).any(|p| completion_target(p).is_some() && lacks(p, "etcd"))
}

/// The template with the marker, and `node` and `etcd` where a plugin of ours has none (in
/// neither of the two places the plugins read them from).
pub fn complete(
    mut template: Value,
    node: Option<&str>,
    etcd: Option<&EtcdConfig>,
) -> Result<Value, Error> {
    check_conflist(&template).map_err(Error::Config)?;
    if let Some(list) = template.get_mut("plugins").and_then(Value::as_array_mut) {
        for plugin in list {
            let Some(at) = completion_target(plugin) else {
                continue;
            };
            let mut fill = serde_json::Map::new();
            if let Some(node) = node.filter(|_| lacks(plugin, "node")) {
                fill.insert("node".into(), json!(node));
            }
            if let Some(etcd) = etcd.filter(|_| lacks(plugin, "etcd")) {
                fill.insert("etcd".into(), etcd_json(etcd));
            }
            if let Some(object) = plugin.pointer_mut(at).and_then(Value::as_object_mut) {
                object.extend(fill);
            }
        }
    }
    template[CONFLIST_MARKER] = json!(true);
    Ok(template)
}

/// Does any etcd object of the conflist carry a password? Then only root may read it.
fn has_password(conflist: &Value) -> bool {
    plugins(conflist).any(|p| {
        p.pointer("/etcd/password").is_some() || p.pointer("/ipam/etcd/password").is_some()
    })
}

/// Files to write: path and content.
type Copies = Vec<(PathBuf, Vec<u8>)>;

/// The copies of the TLS files of `etcd` to make in `dir` for the plugins, which run on the host
/// and cannot read the pod's secret volume, and the settings naming the copies.
fn tls_copies(mut etcd: EtcdConfig, dir: &Path) -> Result<(EtcdConfig, Copies), Error> {
    let Some(tls) = etcd.tls.take() else {
        return Ok((etcd, Vec::new()));
    };
    let mut copies = Vec::new();
    let mut copy = |from: Option<String>, name: &str| -> Result<Option<String>, Error> {
        let Some(from) = from else { return Ok(None) };
        let to = dir.join(name);
        if Path::new(&from) != to {
            let bytes = std::fs::read(&from).map_err(io("reading", Path::new(&from)))?;
            copies.push((to.clone(), bytes));
        }
        Ok(Some(to.display().to_string()))
    };
    etcd.tls = Some(TlsFiles {
        ca: copy(tls.ca, TLS_FILES[0])?,
        cert: copy(tls.cert, TLS_FILES[1])?,
        key: copy(tls.key, TLS_FILES[2])?,
    });
    Ok((etcd, copies))
}

/// Writes `path` atomically unless it already holds exactly `content` with `mode`.
fn install_file(path: &Path, content: &[u8], mode: u32) -> Result<Step, Error> {
    let unchanged = std::fs::metadata(path)
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o7777 == mode)
        && std::fs::read(path).is_ok_and(|old| old == content);
    if !unchanged {
        write_atomic(path, content, mode).map_err(io("writing", path))?;
    }
    Ok(Step {
        path: path.to_path_buf(),
        mode,
        outcome: if unchanged {
            Outcome::Unchanged
        } else {
            Outcome::Written
        },
    })
}

/// The configurations libcni would read before `ours` in `dir` (it sorts the names of the
/// *.conf, *.conflist and *.json files and the runtimes take the first).
fn sorting_before(dir: &Path, ours: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut before: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            [".conf", ".conflist", ".json"]
                .iter()
                .any(|ext| n.ends_with(ext))
                && n.as_str() < ours
        })
        .collect();
    before.sort();
    before
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A directory of its own under the system's temporary directory, removed on drop.
    struct Temp(PathBuf);

    impl Temp {
        fn new() -> Temp {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "overlayd-install-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Temp(dir)
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn parse(args: &[&str]) -> InstallArgs {
        InstallArgs::try_parse_args(std::iter::once(SUBCOMMAND).chain(args.iter().copied()))
            .unwrap()
    }

    fn template() -> Value {
        json!({
            "cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"], "name": "pods",
            "plugins": [
                {"type": "vxlan-overlay", "vni": 4000, "hostAccess": true,
                 "ipam": {"type": "etcd-ipam", "ranges": [[{"subnet": "10.244.0.0/16"}]]}},
                {"type": "gwbridge-egress", "capabilities": {"portMappings": true}}
            ]
        })
    }

    /// A source directory with a fake plugin of `size` bytes per name.
    fn sources(root: &Path, size: usize) -> PathBuf {
        let dir = root.join("image");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, name) in PLUGINS.iter().enumerate() {
            std::fs::write(dir.join(name), vec![b'a' + i as u8; size]).unwrap();
        }
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn flags_default_and_etcd_is_optional() {
        let a = parse(&[]);
        assert_eq!(a.bin_dir, Path::new("/opt/cni/bin"));
        assert_eq!(a.conf_dir, Path::new("/etc/cni/net.d"));
        assert_eq!(a.conflist_name, CONFLIST_NAME);
        assert!(a.etcd.config().endpoints.is_empty());
        assert!(a.conflist.is_none() && !a.conflist_from_env);
        let a = parse(&["--etcd=https://e:2379", "--etcd-ca=/ca", "--node=n1"]);
        assert_eq!(a.etcd.config().endpoints, ["https://e:2379"]);
        assert_eq!(a.node.as_deref(), Some("n1"));
        assert!(
            InstallArgs::try_parse_args([SUBCOMMAND, "--conflist=x", "--conflist-from-env"])
                .is_err()
        );
    }

    #[test]
    fn fills_node_etcd_and_the_marker_where_missing() {
        let mut etcd = EtcdConfig::new(vec!["192.0.2.1:2379".into()]);
        let c = complete(template(), Some("node-a"), Some(&etcd)).unwrap();
        assert_eq!(c[CONFLIST_MARKER], true);
        assert_eq!(c["plugins"][0]["node"], "node-a");
        assert_eq!(
            c["plugins"][0]["etcd"],
            json!({"endpoints": ["192.0.2.1:2379"], "prefix": "/cni-overlay"})
        );
        assert_eq!(c["plugins"][1], template()["plugins"][1], "not ours");
        assert!(!has_password(&c));
        etcd.username = Some("u".into());
        etcd.password = Some("p".into());
        assert!(has_password(
            &complete(template(), None, Some(&etcd)).unwrap()
        ));

        // What the template says wins, in either place.
        let mut t = template();
        t["plugins"][0]["ipam"]["node"] = json!("own");
        t["plugins"][0]["etcd"] = json!({"endpoints": ["e:1"]});
        let c = complete(t, Some("node-a"), Some(&etcd)).unwrap();
        assert_eq!(c["plugins"][0].get("node"), None);
        assert_eq!(c["plugins"][0]["ipam"]["node"], "own");
        assert_eq!(c["plugins"][0]["etcd"], json!({"endpoints": ["e:1"]}));
        assert!(!completes_etcd(&c));

        // Another main plugin with etcd-ipam: filled in its ipam section.
        let t = json!({"cniVersion": "1.0.0", "name": "b", "plugins": [
            {"type": "bridge", "ipam": {"type": "etcd-ipam", "subnet": "10.1.0.0/24"}}]});
        assert!(completes_etcd(&t));
        let c = complete(t, Some("n"), Some(&etcd)).unwrap();
        assert_eq!(c["plugins"][0]["ipam"]["node"], "n");
        assert!(has_password(&c));
    }

    #[test]
    fn refuses_what_is_not_a_conflist() {
        for bad in [
            json!([]),
            json!({"name": "x", "plugins": [{"type": "a"}]}),
            json!({"cniVersion": "1.0.0", "name": "x", "type": "vxlan-overlay"}),
            json!({"cniVersion": "1.0.0", "name": "x", "plugins": []}),
            json!({"cniVersion": "1.0.0", "name": "x", "plugins": [{"vni": 1}]}),
        ] {
            assert!(check_conflist(&bad).is_err(), "{bad}");
        }
        check_conflist(&template()).unwrap();
        for name in ["a/b.conflist", ".x.conflist", "x.conf", ""] {
            assert!(check_file_name(name).is_err(), "{name}");
        }
    }

    #[test]
    fn installs_then_changes_nothing_the_second_time() {
        let t = Temp::new();
        let src = sources(&t.0, 1000);
        let tpl = t.0.join("conflist.json");
        std::fs::write(&tpl, template().to_string()).unwrap();
        let (bin, conf) = (t.0.join("bin"), t.0.join("net.d"));
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("99-loopback.conf"), "{}").unwrap();
        let args = parse(&[
            "--bin-dir",
            bin.to_str().unwrap(),
            "--conf-dir",
            conf.to_str().unwrap(),
            "--source-dir",
            src.to_str().unwrap(),
            "--conflist",
            tpl.to_str().unwrap(),
            "--node",
            "node-a",
            "--etcd",
            "192.0.2.1:2379",
        ]);
        let first = run(&args).unwrap();
        assert_eq!(first.steps.len(), 4, "{:?}", first.steps);
        assert!(first.steps.iter().all(|s| s.outcome == Outcome::Written));
        assert!(first.shadowed_by.is_empty(), "99-loopback.conf sorts after");
        for name in PLUGINS {
            assert_eq!(
                std::fs::read(bin.join(name)).unwrap(),
                std::fs::read(src.join(name)).unwrap()
            );
            assert_eq!(mode(&bin.join(name)), 0o755);
        }
        let written = conf.join(CONFLIST_NAME);
        assert_eq!(mode(&written), 0o644);
        let c: Value = serde_json::from_slice(&std::fs::read(&written).unwrap()).unwrap();
        assert_eq!(c["plugins"][0]["node"], "node-a");
        assert!(is_ours(&written));

        let second = run(&args).unwrap();
        assert!(
            second.steps.iter().all(|s| s.outcome == Outcome::Unchanged),
            "{:?}",
            second.steps
        );
        // No temporary file stays behind.
        for dir in [&bin, &conf] {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                assert!(!e.file_name().to_string_lossy().starts_with('.'), "{e:?}");
            }
        }

        // A changed binary is replaced; a conflist sorting first is reported.
        std::fs::write(src.join("etcd-ipam"), b"new").unwrap();
        std::fs::write(conf.join("05-first.conflist"), "{}").unwrap();
        let third = run(&args).unwrap();
        let changed: Vec<&Path> = third
            .steps
            .iter()
            .filter(|s| s.outcome == Outcome::Written)
            .map(|s| s.path.as_path())
            .collect();
        assert_eq!(changed, [bin.join("etcd-ipam")]);
        assert_eq!(third.shadowed_by, ["05-first.conflist"]);
        assert!(third
            .lines()
            .iter()
            .any(|l| l.starts_with("warning: 05-first")));
    }

    #[test]
    fn a_foreign_conflist_is_left_alone_and_reported() {
        let t = Temp::new();
        let src = sources(&t.0, 10);
        let conf = t.0.join("net.d");
        std::fs::create_dir_all(&conf).unwrap();
        let foreign = conf.join(CONFLIST_NAME);
        std::fs::write(&foreign, "{\"name\": \"theirs\"}").unwrap();
        // A file, not --conflist-from-env: setting the variable here would race with the other
        // tests' threads reading the environment (tests/install_cni.rs covers the variable).
        let tpl = t.0.join("conflist.json");
        std::fs::write(&tpl, template().to_string()).unwrap();
        let report = run(&parse(&[
            "--bin-dir",
            t.0.join("bin").to_str().unwrap(),
            "--conf-dir",
            conf.to_str().unwrap(),
            "--source-dir",
            src.to_str().unwrap(),
            "--conflist",
            tpl.to_str().unwrap(),
            "--etcd",
            "e:2379",
        ]))
        .unwrap();
        assert!(report.blocked());
        assert!(!t.0.join("bin").exists(), "nothing installed");
        assert_eq!(
            std::fs::read_to_string(&foreign).unwrap(),
            "{\"name\": \"theirs\"}"
        );
        assert!(report.lines().iter().any(|l| l.starts_with("left alone")));
    }

    #[test]
    fn tls_files_are_copied_beside_the_conflist_and_credentials_make_it_private() {
        let t = Temp::new();
        let src = sources(&t.0, 10);
        let secret = t.0.join("secret");
        std::fs::create_dir_all(&secret).unwrap();
        for f in ["ca.crt", "tls.crt", "tls.key"] {
            std::fs::write(secret.join(f), f).unwrap();
        }
        let tpl = t.0.join("conflist.json");
        std::fs::write(&tpl, template().to_string()).unwrap();
        let conf = t.0.join("net.d");
        let s = |p: &Path| p.to_str().unwrap().to_string();
        let args = parse(&[
            "--bin-dir",
            &s(&t.0.join("bin")),
            "--conf-dir",
            &s(&conf),
            "--source-dir",
            &s(&src),
            "--conflist",
            &s(&tpl),
            "--etcd",
            "e:2379",
            "--etcd-ca",
            &s(&secret.join("ca.crt")),
            "--etcd-cert",
            &s(&secret.join("tls.crt")),
            "--etcd-key",
            &s(&secret.join("tls.key")),
            "--etcd-user",
            "u",
            "--etcd-password",
            "p",
        ]);
        run(&args).unwrap();
        let tls = conf.join(TLS_DIR);
        for (copy, original) in TLS_FILES.iter().zip(["ca.crt", "tls.crt", "tls.key"]) {
            assert_eq!(std::fs::read_to_string(tls.join(copy)).unwrap(), original);
            assert_eq!(mode(&tls.join(copy)), 0o600);
        }
        let written = conf.join(CONFLIST_NAME);
        assert_eq!(mode(&written), 0o600);
        let c: Value = serde_json::from_slice(&std::fs::read(&written).unwrap()).unwrap();
        assert_eq!(
            c["plugins"][0]["etcd"]["tls"]["key"],
            s(&tls.join("etcd-key.pem"))
        );
        assert_eq!(c["plugins"][0]["etcd"]["password"], "p");
    }

    #[test]
    fn refuses_before_writing_anything() {
        let t = Temp::new();
        let src = sources(&t.0, 10);
        let tpl = t.0.join("conflist.json");
        std::fs::write(&tpl, template().to_string()).unwrap();
        let (bin, conf) = (t.0.join("bin"), t.0.join("net.d"));
        let base = [
            "--bin-dir",
            bin.to_str().unwrap(),
            "--conf-dir",
            conf.to_str().unwrap(),
            "--source-dir",
            src.to_str().unwrap(),
        ];
        let with = |extra: &[&str]| run(&parse(&[&base[..], extra].concat()));
        // No etcd to fill in.
        assert!(with(&["--conflist", tpl.to_str().unwrap()]).is_err());
        // Not JSON.
        std::fs::write(&tpl, "{").unwrap();
        assert!(with(&["--conflist", tpl.to_str().unwrap(), "--etcd", "e:1"]).is_err());
        // A plugin missing from the image.
        std::fs::remove_file(src.join("gwbridge-egress")).unwrap();
        assert!(with(&[]).is_err());
        assert!(!bin.exists(), "nothing was written");
    }
}
