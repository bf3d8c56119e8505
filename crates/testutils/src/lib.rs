//! Test support shared by the integration tests: a real etcd (Debian's etcd-server) on a free
//! loopback port with a temporary data directory (plain, or TLS-only with client certificates
//! from a throwaway CA, and with etcd's user/password authentication turned on with etcdctl as
//! an operator does), and running a plugin binary with environment and stdin exactly as a
//! runtime does. Nothing here is skipped when missing: a test that needs etcd (or etcdctl, or
//! openssl) fails if there is none.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod checks;
pub mod containerd;
pub mod lab;

/// The etcd binary: $ETCD_BIN or Debian's.
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// The arguments of a single-member etcd: [`etcd_member_args`] of a cluster of one.
pub fn etcd_args(name: &str, data_dir: &Path, client_url: &str, peer_url: &str) -> Vec<String> {
    etcd_member_args(
        name,
        data_dir,
        client_url,
        peer_url,
        &format!("{name}={peer_url}"),
    )
}

/// The arguments of one member of a new etcd cluster, `cluster` being every member's
/// `name=peer_url`, comma-separated: the one way etcd is started, for the loopback etcd of the
/// tests and for the lab's members (the demo's, the benchmarks', the conformance suite's).
pub fn etcd_member_args(
    name: &str,
    data_dir: &Path,
    client_url: &str,
    peer_url: &str,
    cluster: &str,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--name".into(),
        name.into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ];
    for (flag, value) in [
        ("--listen-client-urls", client_url),
        ("--advertise-client-urls", client_url),
        ("--listen-peer-urls", peer_url),
        ("--initial-advertise-peer-urls", peer_url),
        ("--initial-cluster", cluster),
        ("--log-level", "error"),
        ("--logger", "zap"),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
    args
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .unwrap()
        .port()
}

/// A single-member etcd on loopback, killed and its data removed on drop.
pub struct Etcd {
    pub client_port: u16,
    peer_port: u16,
    /// Plain-HTTP port of /health (and /metrics) when the client port speaks TLS only.
    metrics_port: Option<u16>,
    /// Holds the data directory and, with TLS, the PEM files; removed on drop.
    dir: PathBuf,
    data_dir: PathBuf,
    pki: Option<Pki>,
    auth: Option<Auth>,
    extra_args: Vec<String>,
    child: Option<Child>,
}

/// The PEM files of an etcd started with [`Etcd::start_tls`], all in the etcd's temporary
/// directory: a throwaway CA, the server's certificate (SAN IP:127.0.0.1) and a client
/// certificate it signed, and a second CA with a client certificate of its own (for tests of the
/// wrong CA and of a client certificate the server does not trust). EC P-256 keys; the client key
/// is in SEC1 form (`EC PRIVATE KEY`, as cfssl and `openssl ecparam` write it), the others PKCS#8.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

/// The common name of the client certificates, and the etcd user [`Etcd::enable_auth`] makes: with
/// `--client-cert-auth` and auth enabled, etcd takes a request without a token to be this user's.
pub const ETCD_USER: &str = "cni-overlay";
/// The role [`Etcd::enable_auth`] gives [`ETCD_USER`]: readwrite on the key prefix `/cni-overlay`.
pub const ETCD_ROLE: &str = "cni-overlay-rw";

/// etcd's user/password authentication, as [`Etcd::enable_auth`] turned it on.
#[derive(Debug, Clone)]
pub struct Auth {
    /// [`ETCD_USER`], allowed readwrite on `/cni-overlay` only.
    pub user: String,
    pub password: String,
    pub root_password: String,
}

/// The etcdctl binary: $ETCDCTL_BIN or Debian's.
pub fn etcdctl_binary() -> PathBuf {
    std::env::var_os("ETCDCTL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcdctl"))
}

/// Something different on every call (serials, passwords); not for cryptography.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    nanos ^ (u64::from(std::process::id()) << 40) ^ COUNT.fetch_add(1, Ordering::SeqCst)
}

impl Etcd {
    /// A plain-HTTP etcd without authentication.
    pub fn start() -> Etcd {
        Etcd::start_with(false, &[])
    }

    /// An etcd that speaks TLS only (`https://127.0.0.1:<port>`) and requires a client certificate
    /// signed by its CA (`--client-cert-auth`); see [`Pki`] for the files.
    pub fn start_tls() -> Etcd {
        Etcd::start_with(true, &[])
    }

    /// [`Etcd::start`] or [`Etcd::start_tls`], with more of etcd's flags (kept for restarts).
    pub fn start_with(tls: bool, extra_args: &[&str]) -> Etcd {
        // The ports are free when chosen, but they come from the ephemeral range, where any
        // outgoing connection of the tests running alongside may take one before etcd binds it:
        // a first start that fails is tried again on other ports.
        let mut attempt = 1;
        loop {
            let mut etcd = Etcd::new(tls);
            if tls {
                etcd.pki = Some(make_pki(&etcd.dir.join("pki")));
            }
            etcd.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
            match etcd.try_spawn() {
                Ok(()) => return etcd,
                Err(why) if attempt < 3 => {
                    eprintln!("etcd did not start ({why}); again on other ports");
                    attempt += 1;
                }
                Err(why) => panic!("{why}"),
            }
        }
    }

    fn new(tls: bool) -> Etcd {
        let binary = etcd_binary();
        assert!(
            binary.exists(),
            "etcd is required for this test: {} not found (install etcd-server)",
            binary.display()
        );
        // tmpfs: etcd fsyncs every commit, and the tests measure behaviour, not the disk.
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "cni-overlay-test-etcd-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("create the etcd's temporary directory");
        Etcd {
            client_port: free_port(),
            peer_port: free_port(),
            metrics_port: tls.then(free_port),
            data_dir: dir.join("data"),
            dir,
            pki: None,
            auth: None,
            extra_args: Vec::new(),
            child: None,
        }
    }

    fn spawn(&mut self) {
        if let Err(why) = self.try_spawn() {
            panic!("{why}");
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut args = etcd_args("test", &self.data_dir, &self.url(), &peer);
        if let Some(pki) = &self.pki {
            for (flag, path) in [
                ("--cert-file", &pki.server_cert),
                ("--key-file", &pki.server_key),
                ("--trusted-ca-file", &pki.ca),
            ] {
                args.push(flag.into());
                args.push(path.display().to_string());
            }
            args.push("--client-cert-auth".into());
        }
        if let Some(port) = self.metrics_port {
            args.push("--listen-metrics-urls".into());
            args.push(format!("http://127.0.0.1:{port}"));
        }
        args.extend(self.extra_args.iter().cloned());
        let log = std::fs::File::create(self.log_path()).expect("create the etcd log");
        let child = Command::new(etcd_binary())
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        self.wait_healthy()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = self.metrics_port.unwrap_or(self.client_port);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                return Err(format!(
                    "etcd exited during start-up: {status}: {}",
                    tail.join(" | ")
                ));
            }
            if health(port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "etcd did not become healthy on port {} within 20 s",
            self.client_port
        ))
    }

    /// `127.0.0.1:<port>`, without a scheme (the plugins' `etcd.endpoints` add `https://` when
    /// `tls` is set).
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The client URL with its scheme: `https://` for [`Etcd::start_tls`], `http://` otherwise.
    pub fn url(&self) -> String {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The PEM files, for an etcd started with [`Etcd::start_tls`].
    pub fn pki(&self) -> Option<&Pki> {
        self.pki.as_ref()
    }

    /// The credentials, once [`Etcd::enable_auth`] ran.
    pub fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }

    /// `etcd.tls` of a plugin configuration: this etcd's CA and client certificate.
    pub fn tls_files(&self) -> Option<store::TlsFiles> {
        self.pki.as_ref().map(|pki| store::TlsFiles {
            ca: Some(pki.ca.display().to_string()),
            cert: Some(pki.client_cert.display().to_string()),
            key: Some(pki.client_key.display().to_string()),
        })
    }

    /// What the test itself connects with ([`Etcd::snapshot`], [`Etcd::keys`]): the client
    /// certificate with TLS, root's credentials with auth.
    pub fn client_config(&self) -> store::EtcdConfig {
        let mut config = store::EtcdConfig::new(vec![self.url()]);
        config.tls = self.tls_files();
        if let Some(auth) = &self.auth {
            config.username = Some("root".into());
            config.password = Some(auth.root_password.clone());
        }
        config
    }

    /// Turns etcd's authentication on, as an operator does with etcdctl: user `root`, a role
    /// [`ETCD_ROLE`] with readwrite on the prefix `/cni-overlay`, the user [`ETCD_USER`] with that
    /// role, then `auth enable`. Returns the credentials (also in [`Etcd::auth`]).
    pub fn enable_auth(&mut self) -> Auth {
        assert!(self.auth.is_none(), "auth is enabled already");
        let auth = Auth {
            user: ETCD_USER.into(),
            password: format!("pw-{:x}", unique()),
            root_password: format!("root-{:x}", unique()),
        };
        self.etcdctl(&["user", "add", &format!("root:{}", auth.root_password)]);
        self.etcdctl(&["role", "add", ETCD_ROLE]);
        self.etcdctl(&[
            "role",
            "grant-permission",
            ETCD_ROLE,
            "--prefix=true",
            "readwrite",
            store::config::DEFAULT_PREFIX,
        ]);
        self.etcdctl(&["user", "add", &format!("{}:{}", auth.user, auth.password)]);
        self.etcdctl(&["user", "grant-role", &auth.user, ETCD_ROLE]);
        self.etcdctl(&["auth", "enable"]);
        self.auth = Some(auth.clone());
        auth
    }

    /// Runs etcdctl against this etcd with the client certificate (and root's credentials once
    /// auth is on); panics with its output on failure. Returns stdout.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let binary = etcdctl_binary();
        assert!(
            binary.exists(),
            "etcdctl is required for this test: {} not found (install etcd-client)",
            binary.display()
        );
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url()))
            .arg("--command-timeout=10s");
        if let Some(pki) = &self.pki {
            command
                .arg(format!("--cacert={}", pki.ca.display()))
                .arg(format!("--cert={}", pki.client_cert.display()))
                .arg(format!("--key={}", pki.client_key.display()));
        }
        if let Some(auth) = &self.auth {
            command.arg(format!("--user=root:{}", auth.root_password));
        }
        let out = command.args(args).output().expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops the process, keeping the data, so that a test can see etcd unreachable.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Every key under `prefix` with its value and mod revision: what "etcd exactly as it was" compares.
    pub fn snapshot(&self, prefix: &str) -> BTreeMap<String, (String, i64)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut store = store::Store::new(self.client_config()).unwrap();
            let (kvs, _) = store.get_prefix(prefix).await.expect("read etcd");
            kvs.into_iter()
                .map(|kv| {
                    (
                        kv.key_str().unwrap().to_string(),
                        (kv.value_str().unwrap_or("").to_string(), kv.mod_revision()),
                    )
                })
                .collect()
        })
    }

    /// Keys only, ignoring revisions (for "nothing left behind").
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.snapshot(prefix).into_keys().collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs openssl; panics with its output on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl is required for this test (install openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The extensions of the certificates: rustls (webpki) refuses a CA certificate as a server's,
/// and a server certificate without a subjectAltName matching the host of the URL.
const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// A P-256 key `key` in `dir`: PKCS#8, or SEC1 (`EC PRIVATE KEY`) when `sec1`.
fn make_key(dir: &Path, key: &str, sec1: bool) {
    if sec1 {
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                key,
            ],
        );
    } else {
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                key,
            ],
        );
    }
}

/// A CA (`<name>.pem`, `<name>-key.pem`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    let key = format!("{name}-key.pem");
    make_key(dir, &key, false);
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-config",
            "openssl.cnf",
            "-extensions",
            "ca",
            "-key",
            &key,
            "-subj",
            &format!("/CN=cni-overlay test {name}"),
            "-days",
            "2",
            "-sha256",
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// A certificate `<name>.pem` with key `<name>-key.pem`, signed by CA `ca`, with the extensions
/// of section `section` of the config.
fn make_leaf(dir: &Path, ca: &str, name: &str, cn: &str, section: &str, sec1_key: bool) {
    let key = format!("{name}-key.pem");
    make_key(dir, &key, sec1_key);
    let csr = format!("{name}.csr");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-config",
            "openssl.cnf",
            "-key",
            &key,
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}-key.pem"),
            "-set_serial",
            &format!("0x{:x}", unique() >> 1),
            "-days",
            "2",
            "-sha256",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            section,
            "-out",
            &format!("{name}.pem"),
        ],
    );
    let _ = std::fs::remove_file(dir.join(csr));
}

fn make_pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).expect("create the PKI directory");
    std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).unwrap();
    make_ca(dir, "ca");
    make_leaf(dir, "ca", "server", "etcd", "server", false);
    make_leaf(dir, "ca", "client", ETCD_USER, "client", true);
    make_ca(dir, "other-ca");
    make_leaf(dir, "other-ca", "other-client", ETCD_USER, "client", true);
    Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
        other_ca: dir.join("other-ca.pem"),
        other_client_cert: dir.join("other-client.pem"),
        other_client_key: dir.join("other-client-key.pem"),
    }
}

fn health(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// What a plugin invocation printed and returned.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    /// stdout as JSON; stdout must hold exactly one JSON document (or nothing).
    pub fn json(&self) -> Value {
        if self.stdout.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}): {:?}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    pub fn ok(&self) -> Value {
        assert_eq!(
            self.code, 0,
            "expected success, got exit {}: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self.json()
    }

    /// Asserts a CNI error with `code` and returns it.
    pub fn err(&self, code: u64) -> Value {
        assert_ne!(
            self.code, 0,
            "expected CNI error {code}, got success: {}",
            self.stdout
        );
        let v = self.json();
        assert_eq!(
            v["code"], code,
            "wrong error code: {v}\nstderr: {}",
            self.stderr
        );
        for field in ["cniVersion", "msg", "details"] {
            assert!(v.get(field).is_some(), "error lacks {field}: {v}");
        }
        assert!(
            !self.stderr.contains("panicked"),
            "the plugin panicked: {}",
            self.stderr
        );
        v
    }
}

/// One plugin invocation, built like a runtime builds it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub binary: PathBuf,
    pub env: BTreeMap<String, String>,
    pub stdin: Vec<u8>,
}

impl Invocation {
    pub fn new(binary: impl Into<PathBuf>, command: &str) -> Self {
        let mut env = BTreeMap::new();
        env.insert("CNI_COMMAND".into(), command.into());
        Invocation {
            binary: binary.into(),
            env,
            stdin: Vec::new(),
        }
    }

    /// The six variables libcni always sets.
    pub fn attachment(mut self, container_id: &str, netns: &str, ifname: &str) -> Self {
        self.env
            .insert("CNI_CONTAINERID".into(), container_id.into());
        self.env.insert("CNI_NETNS".into(), netns.into());
        self.env.insert("CNI_IFNAME".into(), ifname.into());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    pub fn without(mut self, key: &str) -> Self {
        self.env.remove(key);
        self
    }

    pub fn stdin(mut self, config: &Value) -> Self {
        self.stdin = config.to_string().into_bytes();
        self
    }

    pub fn raw_stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = bytes.into();
        self
    }

    pub fn run(&self) -> Output {
        self.spawn_with(Command::new(&self.binary))
    }

    /// Runs inside network namespace `ns`, as a runtime on that host would. `nsenter --net`, not
    /// `ip netns exec`: the latter gives the process a private mount namespace, so a namespace the
    /// plugin bind-mounts under /run/netns would vanish when it exits. Runtimes run plugins in the
    /// host's mount namespace.
    pub fn run_in_netns(&self, ns: &str) -> Output {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{ns}"))
            .arg("--")
            .arg(&self.binary);
        self.spawn_with(command)
    }

    /// Runs with `command` as the program (a wrapper such as `nsenter ... --` followed by
    /// [`Invocation::binary`]), the environment and stdin as [`Invocation::run`] sets them.
    pub fn run_with(&self, command: Command) -> Output {
        self.spawn_with(command)
    }

    fn spawn_with(&self, mut command: Command) -> Output {
        let started = Instant::now();
        let mut child = command
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(&self.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.binary.display()));
        let stdin = self.stdin.clone();
        let mut pipe = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(&stdin);
        });
        let out = child.wait_with_output().expect("wait for plugin");
        let _ = writer.join();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }
}

/// A unique temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "cni-overlay-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
