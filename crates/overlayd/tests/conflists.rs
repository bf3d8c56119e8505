//! overlayd keeps a conflist per network of etcd in --cni-conf-dir: created within a second of
//! `overlayctl network create` on any host, removed after `network rm`, converged after a restart,
//! and never touching a file it did not write. Driven with the real overlayctl and overlayd.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use testutils::lab::Lab;

fn bin(name: &str) -> PathBuf {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built (cargo test --workspace builds it)",
        path.display()
    );
    path
}

fn conf_dir(lab: &Lab, host: usize) -> PathBuf {
    lab.host(host).dir.join("net.d")
}

fn start(lab: &mut Lab, host: usize) {
    let (ns, node) = (lab.host(host).ns.clone(), lab.host(host).name.clone());
    let (ep, dir) = (lab.etcd_endpoint.clone(), conf_dir(lab, host));
    let overlayd = PathBuf::from(env!("CARGO_BIN_EXE_overlayd"));
    lab.spawn(
        &format!("overlayd-{host}"),
        &ns,
        overlayd.to_str().unwrap(),
        &[
            "--etcd",
            &ep,
            "--node",
            &node,
            "--cni-conf-dir",
            dir.to_str().unwrap(),
            "--no-dns",
        ],
        &[("RUST_LOG", "warn")],
    );
}

/// overlayctl, which must succeed.
fn overlayctl_ok(lab: &Lab, host: usize, args: &[&str]) {
    let out = overlayctl(lab, host, args);
    assert!(
        out.status.success(),
        "overlayctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn overlayctl(lab: &Lab, host: usize, args: &[&str]) -> std::process::Output {
    std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.host(host).ns))
        .arg("--")
        .arg(bin("overlayctl"))
        .args(["--etcd", &lab.etcd_endpoint])
        .args(args)
        .output()
        .unwrap()
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

fn conflist(dir: &Path, net: &str) -> PathBuf {
    dir.join(model::names::conflist_file(net))
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn networks_made_on_one_host_get_conflists_on_every_host() {
    let mut lab = Lab::new(2);
    start(&mut lab, 0);
    start(&mut lab, 1);
    let out = overlayctl(
        &lab,
        0,
        &["network", "create", "demo", "--subnet", "10.0.0.0/24"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for host in 0..2 {
        let path = conflist(&conf_dir(&lab, host), "demo");
        let took = wait_for("the conflist", Duration::from_secs(1), || path.exists());
        eprintln!("host {host}: conflist after {took:?}");
        let c = read(&path);
        assert_eq!(c["name"], "demo");
        assert_eq!(c["plugins"][0]["type"], "vxlan-overlay");
        assert_eq!(c["plugins"][0]["node"], lab.host(host).name.as_str());
        assert_eq!(
            c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.0.0.0/24"
        );
        assert_eq!(c["plugins"][1]["type"], "gwbridge-egress");
    }
    // No half-written file is ever visible: only the final name is there.
    let names: Vec<String> = std::fs::read_dir(conf_dir(&lab, 0))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["60-cni-overlay-demo.conflist".to_string()]);

    let out = overlayctl(
        &lab,
        1,
        &[
            "network",
            "create",
            "private",
            "--subnet",
            "10.1.0.0/24",
            "--internal",
        ],
    );
    assert!(out.status.success());
    let path = conflist(&conf_dir(&lab, 0), "private");
    wait_for(
        "the internal network's conflist",
        Duration::from_secs(1),
        || path.exists(),
    );
    assert_eq!(
        read(&path)["plugins"].as_array().unwrap().len(),
        1,
        "an internal network has no gwbridge-egress"
    );

    let out = overlayctl(&lab, 0, &["network", "rm", "demo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for host in 0..2 {
        let path = conflist(&conf_dir(&lab, host), "demo");
        wait_for("the conflist's removal", Duration::from_secs(1), || {
            !path.exists()
        });
    }
}

#[test]
fn files_it_did_not_write_are_left_alone() {
    let mut lab = Lab::new(1);
    let dir = conf_dir(&lab, 0);
    std::fs::create_dir_all(&dir).unwrap();
    let mine = conflist(&dir, "taken");
    std::fs::write(&mine, "{\"name\": \"taken\", \"plugins\": []}").unwrap();
    let other = dir.join("10-other.conflist");
    std::fs::write(&other, "{}").unwrap();
    start(&mut lab, 0);
    overlayctl_ok(
        &lab,
        0,
        &["network", "create", "taken", "--subnet", "10.2.0.0/24"],
    );
    overlayctl_ok(
        &lab,
        0,
        &["network", "create", "free", "--subnet", "10.3.0.0/24"],
    );
    wait_for("the other conflist", Duration::from_secs(1), || {
        conflist(&dir, "free").exists()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::read_to_string(&mine).unwrap(),
        "{\"name\": \"taken\", \"plugins\": []}"
    );
    overlayctl_ok(&lab, 0, &["network", "rm", "taken"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(mine.exists(), "a file overlayd did not write was removed");
    assert!(other.exists());
}

#[test]
fn changes_made_while_overlayd_was_down_converge_after_a_restart() {
    let mut lab = Lab::new(2);
    start(&mut lab, 0);
    start(&mut lab, 1);
    overlayctl_ok(
        &lab,
        0,
        &["network", "create", "old", "--subnet", "10.4.0.0/24"],
    );
    let old = conflist(&conf_dir(&lab, 1), "old");
    wait_for("the conflist", Duration::from_secs(1), || old.exists());
    lab.kill("overlayd-1");
    overlayctl_ok(&lab, 0, &["network", "rm", "old"]);
    overlayctl_ok(
        &lab,
        0,
        &["network", "create", "new", "--subnet", "10.5.0.0/24"],
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(old.exists(), "nothing should change while overlayd is down");
    start(&mut lab, 1);
    wait_for(
        "the new network's conflist after restart",
        Duration::from_secs(3),
        || conflist(&conf_dir(&lab, 1), "new").exists(),
    );
    wait_for(
        "the removed network's conflist to go",
        Duration::from_secs(3),
        || !old.exists(),
    );
}
