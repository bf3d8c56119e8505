//! The load of scripts/faults.sh: plugin calls as a runtime makes them, many at once, over several
//! hosts, optionally SIGKILLed at a random moment; and pings from many containers at once.
//!
//! ```text
//! fault-driver calls --command ADD|DEL --plugin PATH --cni-path P --plan FILE [--parallel N]
//!                    [--kill-after MIN-MAX] [--seed S]
//!     plan: one call a line, tab-separated: container id, host namespace path, container
//!     namespace path, configuration file. CNI_IFNAME is eth0, CNI_ARGS names the container after
//!     its id (K8S_POD_NAME). With --kill-after, each call is SIGKILLed MIN..=MAX ms after it
//!     started (if still running), as a runtime's timeout does (its own process only: a delegated
//!     IPAM plugin lives on; the driver waits until the call's process group is empty).
//!     Prints one JSON line per call: {"id", "code", "ms", "killed", "msg"}, "cpu_ms" (the
//!     call's CPU time, its children's included; not for calls that may be killed), and on
//!     success "ips" (the result's addresses) and "mac" (the endpoint's); code 0 is success,
//!     the CNI error code otherwise, null when killed or when the plugin printed no error.
//! fault-driver ping --plan FILE [--parallel N] [--tries T]
//!     plan: one container a line, tab-separated: namespace path, its IPv4 address, targets as
//!     IP=NAMESPACE-PATH comma-separated. Each container pings each target (ICMP echo from a raw
//!     socket in its namespace) up to T times (default 3), 1 s apart, then deletes the neighbour
//!     entries made on both sides (the machine's ARP table is shared and bounded). Prints one
//!     JSON line per container: {"ns", "targets", "lost": [..]}.
//! fault-driver churn --plugin PATH --cni-path P --hosts FILE --live FILE --pool FILE
//!                    --live-out FILE [--rate R] [--seconds S] [--parallel N] [--id-prefix P]
//!     scripts/bench.sh fleet's churn: R ADDs and R DELs a second (default 50) for S seconds
//!     (default 60), on schedule. hosts: one a line, namespace path and configuration file;
//!     ADD k goes to host k mod the count, into a namespace taken from pool (one path a line;
//!     a DEL gives its namespace back); each DEL removes the oldest attachment of live (id, host
//!     index from 0, namespace, addresses comma-separated, MAC; tab-separated). Prints one JSON
//!     line per call as `calls` does, with "op", "host", "mac", "ips" and "start", "end" (seconds
//!     since the epoch), "late_ms" (start behind schedule); writes what is attached at the end
//!     to live-out, in live's format.
//! fault-driver watch --hosts FILE --vni N
//!     One JSON line per FDB or neighbour entry added or deleted on ovx<N> of each host, with
//!     the moment its notification arrived: {"host", "t", "fdb", "added", "mac", "ip"}; first
//!     {"host", "ready": true} per host. Runs until killed.
//! ```
//! Every output line is written whole and flushed at once (the scripts read them while running).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        usage("no command");
    }
    match args.remove(0).as_str() {
        "calls" => calls(Flags::parse(args)),
        "ping" => ping(Flags::parse(args)),
        "churn" => churn(Flags::parse(args)),
        "watch" => watch(Flags::parse(args)),
        other => usage(&format!("unknown command {other}")),
    }
}

#[derive(Default)]
struct Flags {
    command: String,
    plugin: String,
    cni_path: String,
    plan: String,
    parallel: usize,
    kill_after: Option<(u64, u64)>,
    seed: u64,
    tries: usize,
    hosts: String,
    live: String,
    live_out: String,
    pool: String,
    rate: u64,
    seconds: u64,
    id_prefix: String,
    vni: u32,
}

impl Flags {
    fn parse(args: Vec<String>) -> Flags {
        let mut f = Flags {
            parallel: 1,
            seed: 1,
            tries: 3,
            rate: 50,
            seconds: 60,
            id_prefix: "churn".into(),
            ..Flags::default()
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
            match flag.as_str() {
                "--command" => f.command = value,
                "--plugin" => f.plugin = value,
                "--cni-path" => f.cni_path = value,
                "--plan" => f.plan = value,
                "--parallel" => f.parallel = number(&value) as usize,
                "--seed" => f.seed = number(&value),
                "--tries" => f.tries = number(&value) as usize,
                "--hosts" => f.hosts = value,
                "--live" => f.live = value,
                "--live-out" => f.live_out = value,
                "--pool" => f.pool = value,
                "--rate" => f.rate = number(&value),
                "--seconds" => f.seconds = number(&value),
                "--id-prefix" => f.id_prefix = value,
                "--vni" => f.vni = number(&value) as u32,
                "--kill-after" => {
                    let (a, b) = value
                        .split_once('-')
                        .unwrap_or_else(|| usage("--kill-after MIN-MAX"));
                    f.kill_after = Some((number(a), number(b)));
                }
                _ => usage(&format!("unknown flag {flag}")),
            }
        }
        f
    }
}

fn plan_lines(path: &str) -> Vec<Vec<String>> {
    let file = File::open(path).unwrap_or_else(|e| usage(&format!("{path}: {e}")));
    BufReader::new(file)
        .lines()
        .map(|l| l.unwrap_or_else(|e| usage(&format!("{path}: {e}"))))
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Runs `work` on every item with `parallel` threads, printing each result line as it comes.
fn each<T: Sync>(items: &[T], parallel: usize, work: impl Fn(usize, &T) -> String + Sync) {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { return };
                let line = work(i, item);
                let mut out = out.lock().unwrap();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            });
        }
    });
}

fn calls(f: Flags) {
    if f.plan.is_empty() {
        usage("--plan is required");
    }
    if f.plugin.is_empty() || !["ADD", "DEL"].contains(&f.command.as_str()) {
        usage("calls needs --command ADD|DEL and --plugin");
    }
    let plan = plan_lines(&f.plan);
    for line in &plan {
        if line.len() != 4 {
            usage(&format!("{}: a call is 4 tab-separated fields", f.plan));
        }
    }
    each(&plan, f.parallel, |i, line| {
        let kill_at = f.kill_after.map(|(min, max)| {
            let r = splitmix(f.seed.wrapping_add(i as u64));
            Duration::from_millis(min + r % (max.saturating_sub(min) + 1))
        });
        let plugin = Plugin::of(&f);
        call(
            &plugin, &f.command, &line[0], &line[1], &line[2], &line[3], kill_at,
        )
        .to_string()
    });
}

/// The plugin binary and its CNI_PATH.
struct Plugin {
    binary: String,
    cni_path: String,
}

impl Plugin {
    fn of(f: &Flags) -> Plugin {
        Plugin {
            binary: f.plugin.clone(),
            cni_path: f.cni_path.clone(),
        }
    }
}

/// Runs `f` on this thread in the network namespace `ns`, and moves the thread back after.
fn in_netns<T>(ns: &File, f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    let home = File::open("/proc/thread-self/ns/net")?;
    // SAFETY: setns on this thread only, with descriptors that are open.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let out = f();
    // SAFETY: as above. A thread left in another namespace would spawn the next call there.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        panic!(
            "cannot return to the thread's namespace: {}",
            std::io::Error::last_os_error()
        );
    }
    out
}

/// One plugin call in the host namespace `host_ns`, as its own process group.
fn call(
    plugin: &Plugin,
    cni_command: &str,
    id: &str,
    host_ns: &str,
    netns: &str,
    conf: &str,
    kill_at: Option<Duration>,
) -> serde_json::Value {
    let result = |code: Option<i64>, ms: f64, killed: bool, msg: &str| {
        serde_json::json!({"id": id, "code": code, "ms": (ms * 10.0).round() / 10.0,
                           "killed": killed, "msg": msg})
    };
    let stdin = match std::fs::read(conf) {
        Ok(s) => s,
        Err(e) => return result(None, 0.0, false, &format!("{conf}: {e}")),
    };
    let network = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|c| c["name"].as_str().map(str::to_string))
        .unwrap_or_default();
    let ns = match File::open(host_ns) {
        Ok(ns) => ns,
        Err(e) => return result(None, 0.0, false, &format!("{host_ns}: {e}")),
    };
    let mut command = Command::new(&plugin.binary);
    command
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", cni_command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &plugin.cni_path)
        .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAME={id}"))
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // The child starts in the host's namespace by inheriting this thread's: no pre_exec hook,
    // so std spawns with posix_spawn (vfork) instead of fork. A fork of this process of 64
    // threads cost about 2 ms of CPU a call (bench.sh fleet's churn: a tenth of the machine).
    let started = Instant::now();
    let spawned = in_netns(&ns, || command.spawn());
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return result(None, 0.0, false, &format!("spawn: {e}")),
    };
    let pid = child.id() as i32;
    // The configuration is far smaller than a pipe's buffer: written at once, it cannot block.
    if let Some(mut pipe) = child.stdin.take() {
        let _ = pipe.write_all(&stdin);
    }
    let mut stdout = child.stdout.take().unwrap();
    let mut read_all = move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    };
    let mut killed = false;
    let mut cpu_ms = None;
    let elapsed_ms = || started.elapsed().as_secs_f64() * 1000.0;
    let (status, ms, stdout) = match kill_at {
        None => {
            // Nothing to kill: read the answer (until the plugin exits), then block in wait4
            // (polling 64 calls every millisecond costs the machine a core), keeping the CPU time
            // the call used (its own and its children's that it waited for): what it costs, apart
            // from what the machine's load adds to its wall time.
            let stdout = read_all();
            let mut raw = 0;
            // SAFETY: a zeroed rusage for wait4 to fill.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4 on our own child, not waited for before (std's Child is not used for it).
            if unsafe { libc::wait4(pid, &mut raw, 0, &mut usage) } != pid {
                let e = std::io::Error::last_os_error();
                return result(None, 0.0, false, &format!("wait: {e}"));
            }
            let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            cpu_ms = Some((seconds(usage.ru_utime) + seconds(usage.ru_stime)) * 1000.0);
            (
                std::process::ExitStatus::from_raw(raw),
                elapsed_ms(),
                stdout,
            )
        }
        Some(at) => {
            // The answer is read on a thread of its own, so that the read does not hold up the kill.
            let reader = std::thread::spawn(read_all);
            let status = loop {
                if let Some(status) = child.try_wait().ok().flatten() {
                    break status;
                }
                if !killed && started.elapsed() >= at {
                    // SAFETY: kill(2) on our own child, not yet waited for.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    killed = true;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            // Timed before the read ends: a delegate the kill left running may hold stdout open.
            let ms = elapsed_ms();
            (status, ms, reader.join().unwrap_or_default())
        }
    };
    // What the killed call left running (a delegated plugin) finishes before the call counts as
    // over, so that the checks afterwards see its effect.
    let deadline = Instant::now() + Duration::from_secs(30);
    // SAFETY: signal 0 only tests whether the group still has members.
    while unsafe { libc::kill(-pid, 0) } == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let result = |code: Option<i64>, ms: f64, killed: bool, msg: &str| {
        let mut r = result(code, ms, killed, msg);
        if let Some(cpu) = cpu_ms {
            r["cpu_ms"] = serde_json::json!((cpu * 10.0).round() / 10.0);
        }
        r
    };
    if status.signal().is_some() {
        return result(None, ms, killed, &format!("{status}"));
    }
    if status.success() {
        // What the runtime was told: the addresses, for the duplicate count.
        let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
        let ips: Vec<&str> = answer["ips"]
            .as_array()
            .map(|a| a.iter().filter_map(|ip| ip["address"].as_str()).collect())
            .unwrap_or_default();
        let mut r = result(Some(0), ms, false, "");
        // The endpoint's MAC as the records carry it (model::names), for the checks on other hosts.
        let addresses: Vec<std::net::IpAddr> = ips
            .iter()
            .filter_map(|a| a.split('/').next()?.parse().ok())
            .collect();
        if let Some(mac) = model::names::endpoint_mac(&network, &addresses) {
            r["mac"] = serde_json::json!(mac.to_string());
        }
        r["ips"] = serde_json::json!(ips);
        return r;
    }
    let error: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
    let msg = error["msg"].as_str().unwrap_or(stdout.trim()).to_string();
    let details = error["details"].as_str().unwrap_or("");
    result(
        error["code"].as_i64(),
        ms,
        false,
        &format!(
            "{msg}{}{details}",
            if details.is_empty() { "" } else { ": " }
        ),
    )
}

fn ping(f: Flags) {
    if f.plan.is_empty() {
        usage("--plan is required");
    }
    let plan = plan_lines(&f.plan);
    each(&plan, f.parallel, |i, line| {
        let ns = line.first().cloned().unwrap_or_default();
        let source: Option<Ipv4Addr> = line.get(1).and_then(|a| a.parse().ok());
        let targets: Vec<(Ipv4Addr, String)> = line
            .get(2)
            .map(|t| {
                t.split(',')
                    .filter_map(|pair| {
                        let (ip, ns) = pair.split_once('=')?;
                        Some((ip.trim().parse().ok()?, ns.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let addresses: Vec<Ipv4Addr> = targets.iter().map(|(ip, _)| *ip).collect();
        let lost = match ping_from(&ns, &addresses, f.tries, (i as u16) ^ 0x5a5a) {
            Ok(lost) => lost.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            Err(e) => vec![format!("error: {e}")],
        };
        // The kernel's ARP table is one for every namespace of the machine (gc_thresh3, 1024 by
        // default, counts them all), shared with everyone's tests: the entries these pings made
        // go at once, on both sides.
        for (target, target_ns) in &targets {
            let _ = forget_neighbour(&ns, *target);
            if let Some(source) = source {
                let _ = forget_neighbour(target_ns, source);
            }
        }
        serde_json::json!({"ns": ns, "targets": targets.len(), "lost": lost}).to_string()
    });
}

/// Deletes the neighbour entry of `ip` on eth0 in namespace `ns` (this thread moves into it).
fn forget_neighbour(ns: &str, ip: Ipv4Addr) -> std::io::Result<()> {
    let file = File::open(ns)?;
    // SAFETY: setns on this thread only; the descriptor is open.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
    if index == 0 {
        return Err(std::io::Error::last_os_error());
    }
    // RTM_DELNEIGH: nlmsghdr (16 bytes), ndmsg (12), NDA_DST (4 + 4); no answer asked for.
    let mut message = Vec::with_capacity(36);
    message.extend_from_slice(&36u32.to_ne_bytes());
    message.extend_from_slice(&libc::RTM_DELNEIGH.to_ne_bytes());
    message.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    message.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
    message.extend_from_slice(&(index as i32).to_ne_bytes());
    message.extend_from_slice(&[0, 0, 0, 0]);
    message.extend_from_slice(&8u16.to_ne_bytes());
    message.extend_from_slice(&libc::NDA_DST.to_ne_bytes());
    message.extend_from_slice(&ip.octets());
    // SAFETY: a netlink socket, closed below; send of a buffer of its length.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::send(fd, message.as_ptr().cast(), message.len(), 0);
        libc::close(fd);
    }
    Ok(())
}

/// Pings `targets` from namespace `ns` (this thread moves into it); the targets that never answered.
fn ping_from(
    ns: &str,
    targets: &[Ipv4Addr],
    tries: usize,
    ident: u16,
) -> std::io::Result<BTreeSet<Ipv4Addr>> {
    let file = File::open(ns)?;
    // SAFETY: setns on this thread only; the descriptor is open.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let socket = RawIcmp::open()?;
    let mut waiting: BTreeSet<Ipv4Addr> = targets.iter().copied().collect();
    for _ in 0..tries.max(1) {
        for (seq, target) in targets.iter().enumerate() {
            if waiting.contains(target) {
                socket.send_echo(*target, ident, seq as u16)?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(from) = socket.recv_echo_reply(ident, left)? {
                waiting.remove(&from);
            }
        }
        if waiting.is_empty() {
            break;
        }
    }
    Ok(waiting)
}

struct RawIcmp(i32);

impl RawIcmp {
    fn open() -> std::io::Result<RawIcmp> {
        // SAFETY: plain socket(2); the descriptor is owned by the returned value.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(RawIcmp(fd))
    }

    fn send_echo(&self, to: Ipv4Addr, ident: u16, seq: u16) -> std::io::Result<()> {
        let mut packet = [0u8; 16];
        packet[0] = 8; // echo request
        packet[4..6].copy_from_slice(&ident.to_be_bytes());
        packet[6..8].copy_from_slice(&seq.to_be_bytes());
        packet[8..16].copy_from_slice(b"faults!!");
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
        // SAFETY: a zeroed sockaddr_in filled in below.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(to).to_be();
        // SAFETY: sendto with a valid buffer and address of the right length.
        let rc = unsafe {
            libc::sendto(
                self.0,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        // An unreachable target (no route, no neighbour) counts as lost, not as an error.
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EHOSTUNREACH)
                && e.raw_os_error() != Some(libc::ENETUNREACH)
            {
                return Err(e);
            }
        }
        Ok(())
    }

    /// The source of one echo reply with our identifier, or None when `within` passes first.
    fn recv_echo_reply(&self, ident: u16, within: Duration) -> std::io::Result<Option<Ipv4Addr>> {
        let mut poll = libc::pollfd {
            fd: self.0,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = within.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: poll on one valid pollfd.
        if unsafe { libc::poll(&mut poll, 1, ms) } <= 0 {
            return Ok(None);
        }
        let mut buf = [0u8; 1500];
        // SAFETY: recv into a buffer of the length given.
        let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let packet = &buf[..n as usize];
        let header = ((packet.first().copied().unwrap_or(0) & 0x0f) as usize) * 4;
        if packet.len() < header + 8 || packet[header] != 0 {
            return Ok(None);
        }
        if u16::from_be_bytes([packet[header + 4], packet[header + 5]]) != ident {
            return Ok(None);
        }
        let from = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
        Ok(Some(from))
    }
}

impl Drop for RawIcmp {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this value owns.
        unsafe { libc::close(self.0) };
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Seconds since the epoch (CLOCK_REALTIME): the churn's calls and the watch's events compare.
fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A container an ADD attached, until its DEL: a line of --live / --live-out.
#[derive(Clone)]
struct Attachment {
    id: String,
    host: usize,
    netns: String,
    ips: String,
    mac: String,
}

impl Attachment {
    fn parse(line: &[String]) -> Attachment {
        match line {
            [id, host, netns, ips, mac] => Attachment {
                id: id.clone(),
                host: number(host) as usize,
                netns: netns.clone(),
                ips: ips.clone(),
                mac: mac.clone(),
            },
            _ => usage("an attachment is 5 tab-separated fields"),
        }
    }

    fn line(&self) -> String {
        let Attachment {
            id,
            host,
            netns,
            ips,
            mac,
        } = self;
        format!("{id}\t{host}\t{netns}\t{ips}\t{mac}")
    }
}

#[derive(Default)]
struct Churn {
    /// Oldest first: each DEL takes the front.
    live: std::collections::VecDeque<Attachment>,
    /// Container namespaces free for an ADD (a DEL gives its namespace back).
    pool: std::collections::VecDeque<String>,
    failed_dels: Vec<Attachment>,
}

enum Job {
    Add { serial: u64, due: f64 },
    Del { due: f64 },
}

/// `rate` ADDs and `rate` DELs a second for `seconds`, as scheduled whatever the calls take (a
/// call starts late only when all `parallel` workers are busy: its "late_ms" says by how much).
fn churn(f: Flags) {
    if f.plugin.is_empty()
        || f.hosts.is_empty()
        || f.live.is_empty()
        || f.pool.is_empty()
        || f.live_out.is_empty()
        || f.rate == 0
    {
        usage("churn needs --plugin, --hosts, --live, --pool, --live-out and a --rate above 0");
    }
    let hosts = plan_lines(&f.hosts);
    if hosts.is_empty() || hosts.iter().any(|h| h.len() != 2) {
        usage("--hosts: one host a line, its namespace path and configuration file");
    }
    let state = Mutex::new(Churn {
        live: plan_lines(&f.live)
            .iter()
            .map(|l| Attachment::parse(l))
            .collect(),
        pool: plan_lines(&f.pool)
            .into_iter()
            .map(|l| l[0].clone())
            .collect(),
        failed_dels: Vec::new(),
    });
    let plugin = Plugin::of(&f);
    let (jobs, queue) = std::sync::mpsc::channel::<Job>();
    let queue = Mutex::new(queue);
    let out = Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for _ in 0..f.parallel.max(1) {
            s.spawn(|| loop {
                let job = queue.lock().unwrap().recv();
                let Ok(job) = job else { return };
                let line = match job {
                    Job::Add { serial, due } => churn_add(&f, &plugin, &hosts, &state, serial, due),
                    Job::Del { due } => churn_del(&plugin, &hosts, &state, due),
                };
                let mut out = out.lock().unwrap();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            });
        }
        let (start, wall) = (Instant::now(), now_s());
        for serial in 0..f.rate * f.seconds {
            let offset = Duration::from_secs_f64(serial as f64 / f.rate as f64);
            std::thread::sleep((start + offset).saturating_duration_since(Instant::now()));
            let due = wall + offset.as_secs_f64();
            let _ = jobs.send(Job::Add { serial, due });
            let _ = jobs.send(Job::Del { due });
        }
        drop(jobs);
    });
    // What is attached now (DELs that failed included), for whoever removes everything after.
    let state = state.into_inner().unwrap();
    let left: Vec<String> = (state.live.iter().chain(&state.failed_dels))
        .map(Attachment::line)
        .collect();
    if let Err(e) = std::fs::write(&f.live_out, left.join("\n") + "\n") {
        usage(&format!("{}: {e}", f.live_out));
    }
}

fn stamped(
    mut r: serde_json::Value,
    op: &str,
    host: usize,
    due: f64,
    start: f64,
) -> serde_json::Value {
    r["op"] = serde_json::json!(op);
    r["host"] = serde_json::json!(host);
    r["start"] = serde_json::json!(start);
    r["end"] = serde_json::json!(now_s());
    r["late_ms"] = serde_json::json!(((start - due) * 1000.0).max(0.0));
    r
}

fn churn_add(
    f: &Flags,
    plugin: &Plugin,
    hosts: &[Vec<String>],
    state: &Mutex<Churn>,
    serial: u64,
    due: f64,
) -> serde_json::Value {
    let host = serial as usize % hosts.len();
    let id = format!("{}{serial}", f.id_prefix);
    let waited = Instant::now();
    let netns = loop {
        if let Some(ns) = state.lock().unwrap().pool.pop_front() {
            break ns;
        }
        if waited.elapsed() > Duration::from_secs(30) {
            let r =
                serde_json::json!({"id": id, "code": null, "msg": "no free container namespace"});
            return stamped(r, "ADD", host, due, now_s());
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let start = now_s();
    let r = call(
        plugin,
        "ADD",
        &id,
        &hosts[host][0],
        &netns,
        &hosts[host][1],
        None,
    );
    let mut state = state.lock().unwrap();
    match (r["code"].as_i64(), r["mac"].as_str()) {
        (Some(0), Some(mac)) => state.live.push_back(Attachment {
            id: id.clone(),
            host,
            netns,
            ips: (r["ips"].as_array().into_iter().flatten())
                .filter_map(|ip| ip.as_str())
                .collect::<Vec<_>>()
                .join(","),
            mac: mac.to_string(),
        }),
        _ => state.pool.push_back(netns),
    }
    drop(state);
    stamped(r, "ADD", host, due, start)
}

fn churn_del(
    plugin: &Plugin,
    hosts: &[Vec<String>],
    state: &Mutex<Churn>,
    due: f64,
) -> serde_json::Value {
    let Some(attachment) = state.lock().unwrap().live.pop_front() else {
        let r = serde_json::json!({"id": null, "code": null, "msg": "nothing attached to delete"});
        return stamped(r, "DEL", 0, due, now_s());
    };
    let (host_ns, conf) = (&hosts[attachment.host][0], &hosts[attachment.host][1]);
    let start = now_s();
    let mut r = call(
        plugin,
        "DEL",
        &attachment.id,
        host_ns,
        &attachment.netns,
        conf,
        None,
    );
    r["ips"] = serde_json::json!(attachment.ips.split(',').collect::<Vec<_>>());
    r["mac"] = serde_json::json!(attachment.mac);
    let mut state = state.lock().unwrap();
    if r["code"].as_i64() == Some(0) {
        state.pool.push_back(attachment.netns.clone());
    } else {
        state.failed_dels.push(attachment.clone());
    }
    drop(state);
    stamped(r, "DEL", attachment.host, due, start)
}

/// Prints every FDB and neighbour entry added or deleted on each host's `ovx<vni>`, with the
/// moment the notification arrived: {"host", "t", "fdb", "added", "mac", "ip"}; first
/// {"host", "ready": true} once a host's subscription stands. Runs until killed.
fn watch(f: Flags) {
    if f.hosts.is_empty() || f.vni == 0 {
        usage("watch needs --hosts and --vni");
    }
    let hosts = plan_lines(&f.hosts);
    let out = Mutex::new(std::io::stdout());
    let print = |line: serde_json::Value| {
        let mut out = out.lock().unwrap();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    std::thread::scope(|s| {
        for (host, line) in hosts.iter().enumerate() {
            let print = &print;
            s.spawn(move || {
                if let Err(e) = watch_host(&line[0], f.vni, |event| {
                    let mut event = event;
                    event["host"] = serde_json::json!(host);
                    print(event);
                }) {
                    print(serde_json::json!({"host": host, "error": e}));
                }
            });
        }
    });
}

fn watch_host(ns: &str, vni: u32, emit: impl Fn(serde_json::Value)) -> Result<(), String> {
    let file = File::open(ns).map_err(|e| format!("{ns}: {e}"))?;
    // SAFETY: setns on this thread only; the descriptor is open.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
    }
    let vni = model::Vni::new(vni).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let netlink = netops::Netlink::current()
            .await
            .map_err(|e| e.to_string())?;
        let device = model::names::vxlan(vni);
        let index = (netlink.link(&device).await.map_err(|e| e.to_string())?)
            .ok_or(format!("no {device} in {ns}"))?
            .index;
        let mut events = netops::NeighbourEvents::current()
            .await
            .map_err(|e| e.to_string())?;
        emit(serde_json::json!({"ready": true}));
        while let Some(change) = events.next().await {
            if change.index != index {
                continue;
            }
            emit(serde_json::json!({
                "t": now_s(),
                "fdb": change.fdb,
                "added": change.added,
                "mac": change.mac.map(|m| model::Mac::new(m).to_string()),
                "ip": change.ip.map(|ip| ip.to_string()),
            }));
        }
        Ok(())
    })
}

/// A well-mixed number from a seed: the kill moments, reproducible from --seed.
fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn number(s: &str) -> u64 {
    s.parse()
        .unwrap_or_else(|_| usage(&format!("{s} is not a number")))
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "fault-driver: {problem}\n\
         usage: fault-driver calls --command ADD|DEL --plugin PATH --cni-path P --plan FILE [--parallel N] [--kill-after MIN-MAX] [--seed S]\n\
         \x20      fault-driver ping --plan FILE [--parallel N] [--tries T]\n\
         \x20      fault-driver churn --plugin PATH --cni-path P --hosts FILE --live FILE --pool FILE --live-out FILE [--rate R] [--seconds S] [--parallel N] [--id-prefix P]\n\
         \x20      fault-driver watch --hosts FILE --vni N"
    );
    std::process::exit(2)
}
