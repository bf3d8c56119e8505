//! etcd down: every command gives up within its time budget, with one clear line.

mod common;

use std::time::Duration;

use common::*;
use testutils::{free_port, Etcd};

const BUDGET_MS: u64 = 1000;

fn assert_unreachable(run: &Run, endpoint: &str) {
    let line = run.fails();
    assert!(
        line.starts_with(&format!(
            "overlayctl: etcd unreachable at http://{endpoint}"
        )),
        "{line:?}"
    );
    assert!(
        run.elapsed < Duration::from_millis(BUDGET_MS + 1000),
        "took {:?} with a {BUDGET_MS} ms budget",
        run.elapsed
    );
}

#[test]
fn a_stopped_etcd_fails_every_command_within_the_budget() {
    let mut etcd = Etcd::start();
    ctl(
        &etcd,
        &["network", "create", "demo", "--subnet", "10.0.0.0/24"],
    )
    .ok();
    etcd.stop();
    let budget = BUDGET_MS.to_string();
    for args in [
        &["network", "ls"][..],
        &["network", "inspect", "demo"],
        &["network", "create", "x", "--subnet", "10.1.0.0/24"],
        &["network", "rm", "demo"],
        &["node", "ls"],
        &["ipam", "usage"],
    ] {
        let mut full = vec!["--timeout-ms", budget.as_str()];
        full.extend_from_slice(args);
        assert_unreachable(&ctl(&etcd, &full), &etcd.endpoint());
    }
    // Back up, everything is as it was.
    etcd.restart();
    let listed = ctl(&etcd, &["network", "ls", "-o", "json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[test]
fn no_etcd_at_all_fails_the_same_way() {
    let endpoint = format!("127.0.0.1:{}", free_port());
    let run = run_at(
        &endpoint,
        &["--timeout-ms", &BUDGET_MS.to_string(), "node", "ls"],
    );
    assert_unreachable(&run, &endpoint);
}

#[test]
fn a_bad_etcd_option_is_refused_before_connecting() {
    let run = run_at("nohost", &["network", "ls"]);
    assert!(
        run.fails().contains("invalid etcd configuration"),
        "{}",
        run.stderr
    );
}
