//! Running dpkg and maintainer scripts in a bubblewrap sandbox.
//!
//! The tree being built is `/`; its `usr/etc` is `/etc` (a deployable tree
//! keeps /etc there); `/var` is a scratch directory, because /var is state
//! and never part of a commit. No network, fresh /tmp, /run, /proc and /dev,
//! private PID and IPC namespaces; the sandbox dies with us.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::process::Logged;
use crate::progress::Sink;

pub struct Sandbox {
    /// The root of the tree being changed.
    pub root: PathBuf,
    /// Mounted at /var.
    pub var: PathBuf,
    /// Extra read-only binds: (host path, path inside).
    pub ro_binds: Vec<(PathBuf, String)>,
}

impl Sandbox {
    fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("bwrap");
        c.arg("--bind")
            .arg(&self.root)
            .arg("/")
            .arg("--bind")
            .arg(self.root.join("usr/etc"))
            .arg("/etc")
            .arg("--bind")
            .arg(&self.var)
            .arg("/var")
            .args([
                "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/run",
            ]);
        for (host, inside) in &self.ro_binds {
            c.arg("--ro-bind").arg(host).arg(inside);
        }
        c.args([
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
        ])
        // No --hostname: under systemd's ProtectHostname= (as apt-ostreed
        // runs) sethostname() is refused even in a new UTS namespace.
        .args(["--die-with-parent", "--chdir", "/"])
        .arg("--")
        .args(argv)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LC_ALL", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("DEBCONF_NONINTERACTIVE_SEEN", "true")
        .env("HOME", "/root")
        .env("TMPDIR", "/tmp");
        c
    }

    /// Run `argv` inside the sandbox, streaming each output line to `sink`
    /// as it appears, and return the status with the whole output.
    pub fn run(&self, argv: &[&str], sink: &Sink) -> Result<Logged> {
        // bubblewrap follows links in the paths it binds: a usr/etc that the
        // tree made a link would bring a host directory in as /etc.
        if !crate::fsutil::Beneath::open(&self.root)?.is_dir("usr/etc")? {
            anyhow::bail!("the tree's /usr/etc is not a directory (a link or a file)");
        }
        // A deployable tree has no top-level /etc; bubblewrap creates one as
        // the mount point for usr/etc. It must not end up in a commit.
        let etc = self.root.join("etc");
        let etc_existed = std::fs::symlink_metadata(&etc).is_ok();
        let logged = crate::process::run_logged(&mut self.command(argv), sink)
            .context("Starting bubblewrap (is the bubblewrap package installed?)");
        if !etc_existed {
            // Only the empty mount point: remove_dir refuses anything else.
            let _ = std::fs::remove_dir(&etc);
        }
        logged
    }
}

/// Run this very program (`apt-ostreed`) with `args` where it sees nothing
/// but `tree` (as `/tree`, the only place it may write) and the host's
/// `/usr` read-only (its own libraries): no other file system, no network,
/// no other process. For the daemon's own work on a tree it did not write
/// (an image's conversion): were a case missed by [`crate::fsutil::Beneath`],
/// there is still no host file to reach. Root keeps its capabilities (no
/// user namespace), so owners and modes are kept.
pub fn run_confined(tree: &std::path::Path, args: &[&str]) -> Result<crate::process::Captured> {
    let mut exe = std::env::current_exe().context("Finding the daemon's own program")?;
    if exe.file_name().is_some_and(|n| n != "apt-ostreed") {
        // Another of the package's programs (or a test): the daemon beside it.
        exe.set_file_name("apt-ostreed");
    }
    // A path through /proc/self (libostree hands those out) means nothing
    // to bubblewrap, which is another process.
    let tree =
        std::fs::canonicalize(tree).with_context(|| format!("Resolving {}", tree.display()))?;
    let mut c = Command::new("bwrap");
    c.args(["--ro-bind", "/usr", "/usr"]);
    for (host, inside) in [
        ("/lib", "/lib"),
        ("/lib64", "/lib64"),
        ("/etc/ld.so.cache", "/etc/ld.so.cache"),
    ] {
        c.args(["--ro-bind-try", host, inside]);
    }
    c.arg("--ro-bind")
        .arg(&exe)
        .arg(CONFINED_HELPER)
        .arg("--bind")
        .arg(&tree)
        .arg(CONFINED_TREE)
        .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
        .args([
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
            "--chdir",
            "/",
            "--",
            CONFINED_HELPER,
        ])
        .args(args)
        .env_clear()
        .env("LC_ALL", "C.UTF-8");
    crate::process::capture(&mut c)
        .context("Starting bubblewrap (is the bubblewrap package installed?)")
}

/// Where [`run_confined`] shows the program, and the tree.
const CONFINED_HELPER: &str = "/run/apt-ostree-helper";
pub const CONFINED_TREE: &str = "/tree";
