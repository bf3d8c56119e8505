//! Network namespaces: opening and checking them, running code inside them, and named
//! namespaces under /run/netns the way `ip netns add/del` makes them.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::libc;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::Mode;
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};

use crate::error::Error;

/// Where named namespaces live; the same directory iproute2 uses so `ip netns exec` finds them.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// How long to wait for a concurrent creator to finish mounting a namespace file it created.
const CONCURRENT_CREATE_WAIT: Duration = Duration::from_secs(2);

/// An open handle on a network namespace. Holding the file keeps the namespace alive.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
    inode: u64,
}

impl Netns {
    /// Opens a namespace path and checks it really is a network namespace; a plain file, a
    /// directory or a missing path gives [`Error::NotANamespace`].
    pub fn open(path: impl AsRef<Path>) -> Result<Netns, Error> {
        let path = path.as_ref().to_path_buf();
        let not_a_namespace = || Error::NotANamespace { path: path.clone() };
        // O_NONBLOCK so that a FIFO handed in by mistake cannot hang the open; it has no effect
        // on an nsfs file.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)
            .map_err(|e| {
                log::debug!("open {}: {e}", path.display());
                not_a_namespace()
            })?;
        let fs = fstatfs(file.as_fd()).map_err(|_| not_a_namespace())?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(not_a_namespace());
        }
        // nsfs also holds mount, pid, user... namespaces; only a net one will do for setns.
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor.
        let nstype = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
        if nstype >= 0 && nstype != libc::CLONE_NEWNET {
            return Err(not_a_namespace());
        }
        if nstype < 0 && Errno::last() != Errno::ENOTTY {
            // ENOTTY means a kernel older than 4.11, where the nsfs check above has to do.
            return Err(not_a_namespace());
        }
        let inode = file.metadata().map_err(|_| not_a_namespace())?.ino();
        Ok(Netns { file, path, inode })
    }

    /// The network namespace of the calling thread. Its path() is /proc/thread-self/ns/net,
    /// which names the namespace of whichever thread reads it: refer to it through this handle.
    pub fn current() -> Result<Netns, Error> {
        let thread_self = Path::new("/proc/thread-self/ns/net");
        if thread_self.exists() {
            return Netns::open(thread_self);
        }
        // Kernels before 3.17 have no /proc/thread-self.
        Netns::open(format!("/proc/self/task/{}/ns/net", nix::unistd::gettid()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another handle to the same namespace (its own descriptor).
    pub fn try_clone(&self) -> Result<Netns, Error> {
        let file = self.file.try_clone().map_err(|e| {
            Error::kernel(
                "duplicate namespace handle",
                self.path.display().to_string(),
                e,
            )
        })?;
        Ok(Netns {
            file,
            path: self.path.clone(),
            inode: self.inode,
        })
    }

    /// The nsfs inode number: the same for every path that refers to this namespace.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// Runs `f` on a fresh OS thread that has entered this namespace and returns its value.
    /// The thread exits afterwards, so no thread of the caller ever changes namespace.
    /// A panic inside `f` is returned as an error.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let target = self.path.display().to_string();
        let fd = self
            .file
            .try_clone()
            .map_err(|e| Error::kernel("duplicate namespace handle", target.clone(), e))?;
        let thread_target = target.clone();
        let worker = std::thread::Builder::new()
            .name("netns".into())
            .spawn(move || -> Result<T, Error> {
                setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                    Error::kernel("enter network namespace", thread_target, e.into())
                })?;
                Ok(f())
            })
            .map_err(|e| Error::kernel("start thread for network namespace", target.clone(), e))?;
        match worker.join() {
            Ok(result) => result,
            Err(payload) => {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                Err(Error::kernel(
                    "run in network namespace",
                    target,
                    io::Error::other(format!("panicked: {what}")),
                ))
            }
        }
    }
}

/// The namespace file's descriptor, e.g. for IFLA_NET_NS_FD or setns(2).
impl AsFd for Netns {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Serializes the one-time setup of /run/netns between threads of this process, so two
/// creators cannot both stack a bind mount on it.
static RUN_DIR_SETUP: Mutex<()> = Mutex::new(());

fn check_netns_name(op: &'static str, name: &str) -> Result<PathBuf, Error> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
        || name.len() > 255
    {
        return Err(Error::invalid(op, name, "not a valid namespace name"));
    }
    Ok(named_netns_path(name))
}

/// Where the named namespace `name` is (what `ip netns` calls `name`).
pub fn named_netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Makes /run/netns exist and be a shared mount point, as iproute2 does, so that unmounting a
/// namespace file later propagates to every mount namespace and the namespace can be freed.
fn prepare_run_dir() -> Result<(), Error> {
    let _guard = RUN_DIR_SETUP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match DirBuilder::new().mode(0o755).create(NETNS_RUN_DIR) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::kernel("create directory", NETNS_RUN_DIR, e)),
    }
    let mut made_mount_point = false;
    loop {
        match mount(
            None::<&str>,
            NETNS_RUN_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            // EINVAL: not a mount point yet. Bind it onto itself once, then retry.
            Err(Errno::EINVAL) if !made_mount_point => {
                mount(
                    Some(NETNS_RUN_DIR),
                    NETNS_RUN_DIR,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| Error::kernel("bind-mount", NETNS_RUN_DIR, e.into()))?;
                made_mount_point = true;
            }
            Err(e) => return Err(Error::kernel("make shared mount", NETNS_RUN_DIR, e.into())),
        }
    }
}

/// Brings `lo` up in the calling thread's namespace. An ioctl rather than netlink because this
/// runs on a plain thread with no async runtime.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is owned and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write only the ifreq passed by pointer.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        if req.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short != 0 {
            return Ok(());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// On a fresh thread: unshare a new network namespace, bind-mount it onto `path`, bring lo up.
fn mount_new_netns(path: &Path) -> Result<(), Error> {
    let target = path.display().to_string();
    let path = path.to_path_buf();
    let thread_target = target.clone();
    let worker = std::thread::Builder::new()
        .name("netns-create".into())
        .spawn(move || -> Result<(), Error> {
            let t = thread_target;
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::kernel("unshare network namespace for", t.clone(), e.into()))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &path,
                Some("none"),
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| Error::kernel("bind-mount network namespace onto", t.clone(), e.into()))?;
            loopback_up().map_err(|e| Error::kernel("bring up lo in", t, e))
        })
        .map_err(|e| {
            Error::kernel(
                "start thread to create network namespace",
                target.clone(),
                e,
            )
        })?;
    worker.join().unwrap_or_else(|_| {
        Err(Error::kernel(
            "create network namespace",
            target,
            io::Error::other("creator thread panicked"),
        ))
    })
}

/// Creates /run/netns/`name` like `ip netns add`. Idempotent: an existing valid namespace of
/// that name is returned. `lo` is up inside it either way.
pub fn create_named_netns(name: &str) -> Result<Netns, Error> {
    let path = check_netns_name("create network namespace", name)?;
    prepare_run_dir()?;
    let flags = OFlag::O_RDONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC;
    match open(&path, flags, Mode::empty()) {
        Ok(fd) => {
            drop(fd);
            if let Err(e) = mount_new_netns(&path) {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            Netns::open(&path)
        }
        Err(Errno::EEXIST) => {
            // Either a finished namespace, one another creator is still mounting, or a file
            // left behind by a creator that died between create and mount.
            let deadline = Instant::now() + CONCURRENT_CREATE_WAIT;
            loop {
                if let Ok(ns) = Netns::open(&path) {
                    ns.run(loopback_up)?
                        .map_err(|e| Error::kernel("bring up lo in", name, e))?;
                    return Ok(ns);
                }
                if Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let meta = std::fs::symlink_metadata(&path).map_err(|e| {
                Error::kernel("create network namespace", path.display().to_string(), e)
            })?;
            if !meta.is_file() {
                return Err(Error::invalid(
                    "create network namespace",
                    path.display().to_string(),
                    "exists and is neither a namespace nor a plain file",
                ));
            }
            log::warn!(
                "{} is a stale file, mounting a new network namespace onto it",
                path.display()
            );
            mount_new_netns(&path)?;
            Netns::open(&path)
        }
        Err(e) => Err(Error::kernel(
            "create network namespace file",
            path.display().to_string(),
            e.into(),
        )),
    }
}

/// Removes /run/netns/`name` like `ip netns del`: lazy unmount, then unlink.
/// Ok(false) when there was nothing of that name.
pub fn delete_named_netns(name: &str) -> Result<bool, Error> {
    let path = check_netns_name("delete network namespace", name)?;
    let target = path.display().to_string();
    match std::fs::symlink_metadata(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::kernel("delete network namespace", target, e)),
    }
    match umount2(&path, MntFlags::MNT_DETACH) {
        // EINVAL: not mounted (a leftover file); ENOENT: removed concurrently.
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(Error::kernel("unmount network namespace", target, e.into())),
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::kernel("remove network namespace file", target, e)),
    }
}
