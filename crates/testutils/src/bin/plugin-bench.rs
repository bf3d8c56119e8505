//! Times plugin invocations the way a runtime makes them: one process per ADD, no shell in between.
//!
//! plugin-bench --plugin PATH --config FILE --count N [--parallel P] [--id-prefix S] [--env K=V]...
//! Prints one JSON line: {"count", "parallel", "seconds", "mean_ms", "p50_ms", "p99_ms", "failures"}.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut plugin, mut config, mut count, mut parallel, mut prefix) = (
        String::new(),
        String::new(),
        200usize,
        1usize,
        String::from("bench"),
    );
    let mut extra_env: Vec<(String, String)> = Vec::new();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--plugin" => plugin = value(),
            "--config" => config = value(),
            "--count" => {
                count = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--count is a number"))
            }
            "--parallel" => {
                parallel = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--parallel is a number"))
            }
            "--id-prefix" => prefix = value(),
            "--env" => {
                let kv = value();
                let (k, v) = kv
                    .split_once('=')
                    .unwrap_or_else(|| usage("--env takes K=V"));
                extra_env.push((k.into(), v.into()));
            }
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    if plugin.is_empty() || config.is_empty() {
        usage("--plugin and --config are required");
    }
    let stdin = std::fs::read(&config).unwrap_or_else(|e| usage(&format!("{config}: {e}")));
    let next = AtomicUsize::new(0);
    let failures = AtomicUsize::new(0);
    let latencies = Mutex::new(Vec::with_capacity(count));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let t = Instant::now();
                let ok = run_one(&plugin, &stdin, &format!("{prefix}-{i}"), &extra_env);
                latencies.lock().unwrap().push(t.elapsed());
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut lat = latencies.into_inner().unwrap();
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |p: f64| {
        lat.get(
            ((lat.len() as f64 * p).ceil() as usize)
                .saturating_sub(1)
                .min(lat.len().saturating_sub(1)),
        )
        .map(|d| ms(*d))
        .unwrap_or(0.0)
    };
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().map(|d| ms(*d)).sum::<f64>() / lat.len() as f64
    };
    println!(
        "{{\"count\": {count}, \"parallel\": {parallel}, \"seconds\": {seconds:.4}, \"mean_ms\": {mean:.3}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"failures\": {}}}",
        pct(0.5),
        pct(0.99),
        failures.load(Ordering::Relaxed)
    );
}

fn run_one(plugin: &str, stdin: &[u8], container_id: &str, extra_env: &[(String, String)]) -> bool {
    let child = Command::new(plugin)
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", format!("/run/netns/{container_id}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAME={container_id}"),
        )
        .envs(extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return false };
    if let Some(mut pipe) = child.stdin.take() {
        let _ = pipe.write_all(stdin);
    }
    child
        .wait_with_output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn usage(problem: &str) -> ! {
    eprintln!("plugin-bench: {problem}\nusage: plugin-bench --plugin PATH --config FILE --count N [--parallel P] [--id-prefix S] [--env K=V]");
    std::process::exit(2)
}
