//! One lock per host network namespace, held by ADD, DEL and GC for their whole run: the port
//! conflict check and the rule addition, and "last container leaves: remove the bridge" against a
//! concurrent ADD, each happen as one step.
//!
//! The file is /run/cni-overlay/gwbridge-egress-<netns inode>.lock: the inode names the host's
//! network namespace, so that simulated hosts (namespaces) on one machine do not share a lock,
//! while every path to the same namespace does. The last user removes the file while holding it;
//! a waiter that then gets the lock on the removed file notices (the path no longer leads to its
//! file) and starts over.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cni::{codes, CniError};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

pub const LOCK_DIR: &str = "/run/cni-overlay";

/// How long to wait for another invocation before giving up with "try again later".
const WAIT: Duration = Duration::from_secs(60);

pub struct HostLock {
    _file: Flock<File>,
    path: PathBuf,
}

impl HostLock {
    /// Blocks (polling) until this host's lock is ours.
    pub fn acquire() -> Result<HostLock, CniError> {
        let inode = netops::Netns::current()?.inode();
        let path = PathBuf::from(LOCK_DIR).join(format!("gwbridge-egress-{inode}.lock"));
        let io_err = |what: &str, e: io::Error| {
            CniError::new(codes::IO_FAILURE, format!("{what} {}: {e}", path.display()))
        };
        match DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(LOCK_DIR)
        {
            Ok(()) => {}
            Err(e) => return Err(io_err("creating the directory of", e)),
        }
        let deadline = Instant::now() + WAIT;
        let mut pause = Duration::from_millis(2);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|e| io_err("opening", e))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => {
                    let ours = locked.metadata().map_err(|e| io_err("reading", e))?.ino();
                    match std::fs::metadata(&path) {
                        Ok(m) if m.ino() == ours => {
                            return Ok(HostLock {
                                _file: locked,
                                path,
                            })
                        }
                        // Removed (or replaced) by the previous holder: lock the current file.
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io_err("reading", e)),
                    }
                }
                Err((_, Errno::EWOULDBLOCK)) => {}
                Err((_, e)) => return Err(io_err("locking", e.into())),
            }
            if Instant::now() >= deadline {
                return Err(CniError::try_again(format!(
                    "another gwbridge-egress invocation has held {} for {} s",
                    path.display(),
                    WAIT.as_secs()
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Releases the lock and removes its file: for when nothing of ours is left on the host.
    pub fn release_and_remove(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::debug!("removing {}: {e}", self.path.display());
        }
    }
}
