//! Locks between plugin invocations on one host: a file per host network namespace and purpose,
//! `/run/cni-overlay/locks/<netns inode>-<name>.lock`, locked with flock. The inode names the
//! host's network namespace, so that simulated hosts (namespaces) on one machine do not share a
//! lock while every path to the same namespace does.
//!
//! The last user of what a lock guards removes the file while still holding it (otherwise one file
//! per network ever used would pile up). A waiter that then gets the lock on the removed file
//! notices, because the path no longer leads to the file it holds, and starts over on a new one.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::{Error, Netns};

const LOCK_DIR: &str = "/run/cni-overlay/locks";

/// How long to wait for another invocation before giving up with "try again later".
const WAIT: Duration = Duration::from_secs(60);

/// A held lock; released when dropped.
pub struct HostLock {
    _file: Flock<File>,
    path: PathBuf,
}

impl HostLock {
    /// Waits (polling, at most a minute) until the lock `name` of the current network namespace's
    /// host is ours.
    pub fn acquire(name: &str) -> Result<HostLock, Error> {
        let inode = Netns::current()?.inode();
        HostLock::acquire_at(Path::new(LOCK_DIR), &format!("{inode}-{name}"), WAIT)
    }

    /// Removes the lock's file while the lock is still held: for when what it guards is gone from
    /// this host. The lock itself is released on drop.
    pub fn remove_file(&self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::debug!("removing {}: {e}", self.path.display());
        }
    }

    fn acquire_at(dir: &Path, stem: &str, wait: Duration) -> Result<HostLock, Error> {
        let path = dir.join(format!("{stem}.lock"));
        let fail = |op: &'static str, e: io::Error| Error::Io {
            op,
            path: path.display().to_string(),
            source: e,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| fail("create the directory of", e))?;
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(1);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|e| fail("open", e))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => {
                    let held = locked.metadata().map_err(|e| fail("read", e))?;
                    match std::fs::metadata(&path) {
                        Ok(now) if (now.dev(), now.ino()) == (held.dev(), held.ino()) => {
                            return Ok(HostLock {
                                _file: locked,
                                path,
                            });
                        }
                        // Removed (or replaced) by the previous holder: lock the current file.
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(fail("read", e)),
                    }
                }
                Err((_, Errno::EWOULDBLOCK)) => {}
                Err((_, e)) => return Err(fail("lock", e.into())),
            }
            if Instant::now() >= deadline {
                return Err(Error::Busy {
                    what: path.display().to_string(),
                    waited: wait,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("netops-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_lock_file_removed_under_a_waiter_is_not_a_lock_any_more() {
        let dir = temp_dir().join("removed");
        let wait = Duration::from_secs(10);
        let first = HostLock::acquire_at(&dir, "vni7", wait).unwrap();
        let (locked, wait_locked) = mpsc::channel();
        let (release, wait_release) = mpsc::channel::<()>();
        let waiter = {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let lock = HostLock::acquire_at(&dir, "vni7", wait).unwrap();
                locked.send(()).unwrap();
                wait_release.recv().unwrap();
                drop(lock);
            })
        };
        // The waiter waits on the first holder's file; the holder removes it, then lets go.
        std::thread::sleep(Duration::from_millis(100));
        first.remove_file();
        drop(first);
        wait_locked.recv().unwrap();
        // What the waiter holds must exclude whoever comes next and opens the path.
        let next = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("vni7.lock"))
            .unwrap();
        match Flock::lock(next, FlockArg::LockExclusiveNonblock) {
            Err((_, errno)) => assert_eq!(errno, Errno::EWOULDBLOCK),
            Ok(_) => panic!("a second holder got the lock while the waiter held it"),
        }
        release.send(()).unwrap();
        waiter.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_lock_held_too_long_is_busy_not_a_hang() {
        let dir = temp_dir().join("busy");
        let _held = HostLock::acquire_at(&dir, "x", Duration::from_secs(1)).unwrap();
        let err = match HostLock::acquire_at(&dir, "x", Duration::from_millis(50)) {
            Err(e) => e,
            Ok(_) => panic!("the same lock was taken twice"),
        };
        assert!(matches!(err, Error::Busy { .. }), "{err}");
        let cni: cni::CniError = err.into();
        assert_eq!(cni.code, cni::codes::TRY_AGAIN_LATER);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
