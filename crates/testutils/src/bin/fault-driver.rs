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
//!     Prints one JSON line per call: {"id", "code", "ms", "killed", "msg"} (and "ips", the
//!     result's addresses, on success); code 0 is success,
//!     the CNI error code otherwise, null when killed or when the plugin printed no error.
//! fault-driver ping --plan FILE [--parallel N] [--tries T]
//!     plan: one container a line, tab-separated: namespace path, its IPv4 address, targets as
//!     IP=NAMESPACE-PATH comma-separated. Each container pings each target (ICMP echo from a raw
//!     socket in its namespace) up to T times (default 3), 1 s apart, then deletes the neighbour
//!     entries made on both sides (the machine's ARP table is shared and bounded). Prints one
//!     JSON line per container: {"ns", "targets", "lost": [..]}.
//! ```

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
}

impl Flags {
    fn parse(args: Vec<String>) -> Flags {
        let mut f = Flags {
            parallel: 1,
            seed: 1,
            tries: 3,
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
                "--kill-after" => {
                    let (a, b) = value
                        .split_once('-')
                        .unwrap_or_else(|| usage("--kill-after MIN-MAX"));
                    f.kill_after = Some((number(a), number(b)));
                }
                _ => usage(&format!("unknown flag {flag}")),
            }
        }
        if f.plan.is_empty() {
            usage("--plan is required");
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
        call(&f, &line[0], &line[1], &line[2], &line[3], kill_at).to_string()
    });
}

/// One plugin call in the host namespace `host_ns`, as its own process group.
fn call(
    f: &Flags,
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
    let ns = match File::open(host_ns) {
        Ok(ns) => ns,
        Err(e) => return result(None, 0.0, false, &format!("{host_ns}: {e}")),
    };
    let ns_fd = ns.as_raw_fd();
    let mut command = Command::new(&f.plugin);
    command
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", &f.command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &f.cni_path)
        .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAME={id}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 || libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => return result(None, 0.0, false, &format!("spawn: {e}")),
    };
    let pid = child.id() as i32;
    let stdin_pipe = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(mut pipe) = stdin_pipe {
            let _ = pipe.write_all(&stdin);
        }
    });
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            break status;
        }
        if let Some(at) = kill_at {
            if !killed && started.elapsed() >= at {
                // SAFETY: kill(2) on our own child, not yet waited for.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed = true;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let _ = writer.join();
    let stdout = reader.join().unwrap_or_default();
    // What the killed call left running (a delegated plugin) finishes before the call counts as
    // over, so that the checks afterwards see its effect.
    let deadline = Instant::now() + Duration::from_secs(30);
    // SAFETY: signal 0 only tests whether the group still has members.
    while unsafe { libc::kill(-pid, 0) } == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
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
         \x20      fault-driver ping --plan FILE [--parallel N] [--tries T]"
    );
    std::process::exit(2)
}
