//! Test support shared by the integration tests: a real etcd (Debian's etcd-server) on a free
//! loopback port with a temporary data directory, and running a plugin binary with environment
//! and stdin exactly as a runtime does. Nothing here is skipped when missing: a test that needs
//! etcd fails if there is none.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod lab;

/// The etcd binary: $ETCD_BIN or Debian's.
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// The arguments of a single-member etcd: one place for both the loopback etcd and the lab's.
pub fn etcd_args(name: &str, data_dir: &Path, client_url: &str, peer_url: &str) -> Vec<String> {
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
        ("--initial-cluster", &format!("{name}={peer_url}")),
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
    data_dir: PathBuf,
    child: Option<Child>,
}

impl Etcd {
    pub fn start() -> Etcd {
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
        let data_dir = base.join(format!(
            "cni-overlay-test-etcd-{}-{}",
            std::process::id(),
            free_port()
        ));
        let mut etcd = Etcd {
            client_port: free_port(),
            peer_port: free_port(),
            data_dir,
            child: None,
        };
        etcd.spawn();
        etcd
    }

    fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(etcd_binary())
            .args(etcd_args("test", &self.data_dir, &client, &peer))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("etcd exited during start-up: {status}");
            }
            if health(self.client_port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "etcd did not become healthy on port {} within 20 s",
            self.client_port
        );
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
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
            let mut store =
                store::Store::new(store::EtcdConfig::new(vec![self.endpoint()])).unwrap();
            let kvs = store.get_prefix(prefix).await.expect("read etcd");
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
        let _ = std::fs::remove_dir_all(&self.data_dir);
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
