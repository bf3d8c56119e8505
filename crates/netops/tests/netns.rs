//! Namespace handling: refusing non-namespaces, named namespaces, running code inside one,
//! and sysctls.

mod common;

use std::path::Path;

use cni::codes;
use common::{require_root, unique_name, TestNs};
use netops::{create_named_netns, delete_named_netns, get_sysctl, set_sysctl, Error, Netns};

fn assert_not_a_namespace(path: &Path) {
    match Netns::open(path) {
        Err(err @ Error::NotANamespace { .. }) => {
            let cni: cni::CniError = err.into();
            assert_eq!(cni.code, codes::INVALID_ENVIRONMENT);
            assert!(
                cni.msg.contains("CNI_NETNS"),
                "message does not name CNI_NETNS: {}",
                cni.msg
            );
            assert!(
                cni.msg.contains(&path.display().to_string()),
                "message does not name the path: {}",
                cni.msg
            );
        }
        Err(other) => panic!("{}: expected NotANamespace, got {other}", path.display()),
        Ok(_) => panic!("{}: opened as a network namespace", path.display()),
    }
}

/// A scratch directory for this test, removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn open_refuses_what_is_not_a_network_namespace() {
    require_root();
    let dir = TempDir(std::env::temp_dir().join(unique_name("open")));
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("plain-file");
    std::fs::write(&file, b"not a namespace").unwrap();

    assert_not_a_namespace(&file);
    assert_not_a_namespace(&dir.0);
    assert_not_a_namespace(&dir.0.join("missing"));
    // A namespace file, but of another type: setns(CLONE_NEWNET) would fail on it.
    assert_not_a_namespace(Path::new("/proc/self/ns/mnt"));
    assert_not_a_namespace(Path::new(""));

    let own = Netns::open("/proc/self/ns/net").expect("own namespace");
    assert_eq!(own.inode(), Netns::current().unwrap().inode());
}

#[test]
fn named_namespaces_are_created_and_deleted_idempotently() {
    require_root();
    let name = unique_name("named");
    // Guard first, so the namespace is removed even if an assertion below fails.
    struct Cleanup<'a>(&'a str);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = delete_named_netns(self.0);
        }
    }
    let _cleanup = Cleanup(&name);

    let first = create_named_netns(&name).expect("create");
    let second = create_named_netns(&name).expect("create again");
    assert_eq!(
        first.inode(),
        second.inode(),
        "the second call must return the same namespace"
    );
    assert_eq!(first.path(), Path::new("/run/netns").join(&name));
    assert_ne!(first.inode(), Netns::current().unwrap().inode());

    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&name));
    let lo = std::process::Command::new("ip")
        .args(["netns", "exec", &name, "ip", "-o", "link", "show", "lo"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&lo.stdout).contains("UP"),
        "lo is not up in a new namespace"
    );

    assert!(delete_named_netns(&name).expect("delete"));
    assert!(!delete_named_netns(&name).expect("delete again"));
    assert!(!Path::new("/run/netns").join(&name).exists());
    assert!(matches!(
        Netns::open(first.path()),
        Err(Error::NotANamespace { .. })
    ));

    assert!(create_named_netns("").is_err());
    assert!(create_named_netns("../escape").is_err());
    assert!(delete_named_netns("a/b").is_err());
}

#[test]
fn a_stale_file_under_run_netns_gets_a_namespace() {
    require_root();
    let name = unique_name("stale");
    let path = Path::new("/run/netns").join(&name);
    struct Cleanup<'a>(&'a str);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = delete_named_netns(self.0);
        }
    }
    let _cleanup = Cleanup(&name);
    std::fs::write(&path, b"").unwrap();
    let ns = create_named_netns(&name).expect("create over a stale file");
    assert!(Netns::open(&path).is_ok());
    assert_eq!(ns.inode(), Netns::open(&path).unwrap().inode());
}

#[test]
fn run_enters_the_namespace_on_another_thread() {
    let t = TestNs::new("run");
    let caller_before = Netns::current().unwrap().inode();
    let inside =
        t.ns.run(|| Netns::current().map(|n| n.inode()))
            .unwrap()
            .unwrap();
    assert_eq!(inside, t.ns.inode());
    assert_eq!(
        Netns::current().unwrap().inode(),
        caller_before,
        "the caller's thread moved"
    );

    let err = t.ns.run(|| -> u32 { panic!("boom") }).unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    let cni: cni::CniError = err.into();
    assert_eq!(cni.code, codes::KERNEL);
}

#[test]
fn sysctls_act_in_the_callers_namespace() {
    let t = TestNs::new("sysctl");
    let root_before = get_sysctl("net.ipv4.ip_forward").unwrap();
    let inside =
        t.ns.run(|| {
            set_sysctl("net.ipv4.ip_forward", "1")?;
            let a = get_sysctl("net.ipv4.ip_forward")?;
            set_sysctl("net/ipv4/conf/lo/rp_filter", "2")?;
            let b = get_sysctl("net.ipv4.conf.lo.rp_filter")?;
            Ok::<_, Error>((a, b))
        })
        .unwrap()
        .unwrap();
    assert_eq!(inside, ("1".to_string(), "2".to_string()));
    assert_eq!(
        t.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
        "1"
    );
    assert_eq!(
        get_sysctl("net.ipv4.ip_forward").unwrap(),
        root_before,
        "root namespace changed"
    );

    let missing =
        t.ns.run(|| set_sysctl("net.ipv4.no_such_key", "1"))
            .unwrap()
            .unwrap_err();
    assert_eq!(missing.errno(), Some(nix::libc::ENOENT));
    assert!(missing.to_string().contains("net.ipv4.no_such_key"));
    assert!(matches!(get_sysctl("net..x"), Err(Error::Invalid { .. })));
}
