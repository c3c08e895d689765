//! `build`: the layering pipeline as its named steps: resolve and fetch,
//! check out, run dpkg, regenerate the initramfs, finish the tree,
//! commit. Each step is one function below, in that order.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{apt_root, checkout, commit_tree, overlay, request_for, scripts, Layered, Workdir};
use crate::apt::Plan;
use crate::dpkg;
use crate::error::Error;
use crate::fsutil::{Beneath, Kind};
use crate::origin::Origin;
use crate::progress::Sink;
use crate::sandbox::Sandbox;
use crate::sysroot::Sysroot;
use crate::tree;

/// Build the layered commit for `origin` on `base`.
pub fn build(sysroot: &Sysroot, sink: &Sink, base: &str, origin: &Origin) -> Result<Layered> {
    let workdir = Workdir::new(sysroot, sink.id())?;
    let (plan, debs) = resolve_and_fetch_while(sysroot, sink, base, origin, || {
        checkout(&sysroot.repo(), base, &workdir.root())
    })?;
    sink.check_cancelled()?;

    let mut tree = Staging::mount(&workdir, &debs)?;
    tree.run_dpkg(&plan, sink)?;
    if let Some(args) = &origin.initramfs_args {
        sink.task("Regenerating the initramfs", || {
            regenerate_initramfs(&tree, args, sink)
        })?;
    }
    let status = sink.task("Finishing the tree", || tree.finish())?;
    sink.check_cancelled()?;

    let commit = sink.task("Committing", || {
        commit_tree(sysroot, base, origin, &plan, &status, &tree.upper)
    })?;
    tracing::info!(
        MESSAGE_ID = crate::logging::message_id::PACKAGES_LAYERED,
        APT_OSTREE_TRANSACTION = sink.id(),
        "Layered {} on {base}: {commit}",
        plan.install
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(Layered { commit, plan })
}

/// Resolve `origin`'s request against `base` on a thread of its own while
/// `checkout` runs here (they are independent, and libapt's dependency
/// cache over a whole archive costs about as much as checking out the
/// base), then fetch what the plan needs once the checkout is done (see
/// [`crate::apt::AptRoot::plan_and_fetch`] for why not sooner). Repository
/// .debs are checked against the index's hashes as they are fetched; local
/// ones were checked whole when they were requested.
fn resolve_and_fetch_while(
    sysroot: &Sysroot,
    sink: &Sink,
    base: &str,
    origin: &Origin,
    checkout: impl FnOnce() -> Result<()>,
) -> Result<(Plan, Vec<PathBuf>)> {
    let apt = apt_root(sysroot, base)?;
    // Updating stale lists fetches too: before the checkout starts.
    apt.refresh(sink, false)?;
    let request = request_for(sysroot, origin);
    let (checkout_done, may_fetch) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let resolving = scope.spawn(move || {
            apt.plan_and_fetch(&request, sink, || {
                // Returns once `checkout_done` is dropped, checkout over.
                let _ = may_fetch.recv();
            })
        });
        let result = checkout();
        drop(checkout_done);
        let resolved = resolving
            .join()
            .map_err(|_| anyhow::anyhow!("Resolving packages panicked"))?;
        // A resolution error says more than a checkout error caused by it.
        let resolved = resolved?;
        result?;
        Ok(resolved)
    })
}

/// The tree being built: the hard-linked checkout under an overlayfs, so
/// every write lands in `upper` and none goes through a hard link into the
/// repository (see overlay.rs); dpkg's /var is a scratch directory beside it.
/// The commit is the base's tree with `upper` written over it.
struct Staging {
    overlay: overlay::Overlay,
    upper: PathBuf,
    /// The scratch /var, as the daemon may touch it (and the merged tree,
    /// see `tree`): packages put what they like there (fsutil::Beneath).
    var: Beneath,
    sandbox: Sandbox,
    /// The .debs as the sandbox sees them, in installation order.
    debs: Vec<String>,
    passwd_before: String,
    group_before: String,
}

/// dpkg's scratch files, which no commit should carry.
const DPKG_SCRATCH: [&str; 7] = [
    "lock",
    "lock-frontend",
    "triggers/Lock",
    "status-old",
    "available-old",
    "diversions-old",
    "statoverride-old",
];

/// dpkg's status fd, under the scratch /var.
const DPKG_STATUS: &str = "lib/apt-ostree-dpkg-status";

/// Keeps maintainer scripts from starting services while a tree is built.
const POLICY_RC_D: &str = "usr/sbin/policy-rc.d";

/// Where kernels live in a deployable tree.
const MODULES: &str = "usr/lib/modules";

/// Where the .debs appear inside the sandbox.
const DEBS_INSIDE: &str = "/run/apt-ostree-debs";

impl Staging {
    fn mount(workdir: &Workdir, debs: &[PathBuf]) -> Result<Staging> {
        let root = workdir.root();
        let upper = workdir.path.join("upper");
        let overlay = overlay::Overlay::mount(
            &root,
            &upper,
            &workdir.path.join("overlay-work"),
            &workdir.mnt(),
        )?;
        let mnt = overlay.merged.clone();
        let var = workdir.path.join("var");
        // /opt is /var/opt in a deployment: packages installing there write here.
        for d in [
            "lib",
            "cache/debconf",
            "log",
            "tmp",
            "spool",
            "backups",
            "opt",
        ] {
            std::fs::create_dir_all(var.join(d))?;
        }
        std::os::unix::fs::symlink("../../usr/share/dpkg/database", var.join("lib/dpkg"))?;
        let (base, scratch_var, tree) = (
            Beneath::open(&root)?,
            Beneath::open(&var)?,
            // Not kept open: the overlay is unmounted at the end.
            Beneath::open(&mnt)?,
        );
        tree::link_base_opt(&base, &scratch_var)?;
        let debdir = workdir.path.join("debs");
        let inside = link_debs(debs, &debdir)?;
        // Services are not started while building a tree.
        tree.write(POLICY_RC_D, b"#!/bin/sh\nexit 101\n", 0o755)
            .context("Writing policy-rc.d")?;
        Ok(Staging {
            passwd_before: base.read_text("usr/etc/passwd")?,
            group_before: base.read_text("usr/etc/group")?,
            sandbox: Sandbox {
                root: mnt,
                var,
                ro_binds: vec![(debdir, DEBS_INSIDE.into())],
            },
            overlay,
            upper,
            var: scratch_var,
            debs: inside,
        })
    }

    /// The merged tree, as the daemon may touch it.
    fn tree(&self) -> Result<Beneath> {
        Beneath::open(&self.sandbox.root)
    }

    /// Purge what the plan removes, then install the .debs, with real dpkg
    /// in the sandbox; a failing maintainer script is `ScriptFailed`.
    fn run_dpkg(&self, plan: &Plan, sink: &Sink) -> Result<()> {
        if !plan.remove.is_empty() {
            sink.task("Removing base packages", || {
                let mut args = vec!["--purge", "--force-depends", "--force-remove-essential"];
                args.extend(plan.remove.iter().map(String::as_str));
                self.dpkg(&args, plan, sink)
            })?;
        }
        if !self.debs.is_empty() {
            sink.check_cancelled()?;
            sink.task("Installing packages", || {
                let mut args = vec![
                    "--install",
                    "--force-confdef",
                    "--force-confold",
                    "--force-unsafe-io",
                ];
                args.extend(self.debs.iter().map(String::as_str));
                self.dpkg(&args, plan, sink)?;
                scripts::check_installed(&self.tree()?.read_text(&dpkg_status())?, plan)
            })?;
        }
        Ok(())
    }

    /// Run dpkg with `args`, its machine-readable status going to a file of
    /// the scratch /var (removed before /var is turned into tmpfiles.d).
    fn dpkg(&self, args: &[&str], plan: &Plan, sink: &Sink) -> Result<()> {
        let script = format!("exec dpkg --status-fd 3 \"$@\" 3>/var/{DPKG_STATUS}");
        let mut argv = vec!["sh", "-c", &script, "dpkg"];
        argv.extend(args);
        let ran = self.sandbox.run(&argv, sink)?;
        let status = self.var.read_text(DPKG_STATUS)?;
        self.var.remove_all(DPKG_STATUS)?;
        scripts::check(&ran, &status, plan)
    }

    /// Tidy the tree (policy-rc.d, dpkg's scratch files), turn /var content
    /// into tmpfiles.d and new users into sysusers.d, and unmount, leaving
    /// every change in `upper`. Returns the tree's dpkg status file.
    fn finish(&mut self) -> Result<String> {
        let tree = self.tree()?;
        tree.remove_all(POLICY_RC_D)?;
        for scratch in DPKG_SCRATCH {
            tree.remove_all(&format!("{}/{scratch}", dpkg::DATABASE_DIR))?;
        }
        let mut tmpfiles = tree::opt_into_usr(&self.var, &tree)?;
        // Empty now; the base's own tmpfiles.d already makes /var/opt.
        self.var.remove_all("opt")?;
        tmpfiles.push_str(&tree::var_to_tmpfiles(&self.var, &tree)?);
        if !tmpfiles.is_empty() {
            write_new(
                &tree,
                tree::LAYERED_TMPFILES,
                &format!("# /var content of layered packages (apt-ostree)\n{tmpfiles}"),
            )?;
        }
        let sysusers = tree::new_sysusers(
            &self.passwd_before,
            &tree.read_text("usr/etc/passwd")?,
            &self.group_before,
            &tree.read_text("usr/etc/group")?,
        );
        if !sysusers.is_empty() {
            write_new(
                &tree,
                tree::LAYERED_SYSUSERS,
                &format!("# Users and groups created by layered packages (apt-ostree)\n{sysusers}"),
            )?;
        }
        let status = tree
            .read_text(&dpkg_status())
            .context("Reading the tree's dpkg status")?;
        drop(tree);
        self.overlay.unmount()?;
        Ok(status)
    }
}

/// The tree's dpkg status file.
fn dpkg_status() -> String {
    format!("{}/status", dpkg::DATABASE_DIR)
}

/// Link (or, across filesystems, copy) the .debs into `dir`, numbered in
/// installation order; return their paths inside the sandbox.
fn link_debs(debs: &[PathBuf], dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut inside = Vec::new();
    for (i, deb) in debs.iter().enumerate() {
        let name = format!(
            "{i:03}-{}",
            deb.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        );
        if std::fs::hard_link(deb, dir.join(&name)).is_err() {
            std::fs::copy(deb, dir.join(&name))
                .with_context(|| format!("Copying {}", deb.display()))?;
        }
        inside.push(format!("{DEBS_INSIDE}/{name}"));
    }
    Ok(inside)
}

/// Write `rel` of `tree` anew, its directory made where missing.
fn write_new(tree: &Beneath, rel: &str, text: &str) -> Result<()> {
    if let Some((dir, _)) = rel.rsplit_once('/') {
        tree.create_dir_all(dir)?;
    }
    tree.write(rel, text.as_bytes(), 0o644)
}

/// Run update-initramfs in the sandbox for every kernel of the tree and put
/// the result where ostree takes the initramfs from.
fn regenerate_initramfs(staging: &Staging, args: &[String], sink: &Sink) -> Result<()> {
    let tree = &staging.tree()?;
    if tree.meta("usr/sbin/update-initramfs")?.is_none() {
        return Err(Error::NotSupported {
            reason: "regenerating the initramfs needs initramfs-tools in the image \
                     (apt-ostree install initramfs-tools)"
                .into(),
        }
        .into());
    }
    let mut kernels = Vec::new();
    for (kver, meta) in tree.entries(MODULES)? {
        let kernel = tree.meta(&format!("{MODULES}/{kver}/vmlinuz"))?;
        if meta.kind == Kind::Directory && kernel.is_some_and(|m| m.kind == Kind::File) {
            kernels.push(kver);
        }
    }
    for kver in kernels {
        let mut argv = vec!["update-initramfs", "-c", "-k", kver.as_str()];
        argv.extend(args.iter().map(String::as_str));
        let ran = staging.sandbox.run(&argv, sink)?;
        if !ran.status.success() {
            return Err(Error::ScriptFailed {
                package: "initramfs-tools".into(),
                script: "update-initramfs".into(),
                exit_status: ran.status.code().unwrap_or(1),
                output: ran.text,
            }
            .into());
        }
        let built = format!("boot/initrd.img-{kver}");
        let target = format!("{MODULES}/{kver}/initramfs.img");
        tree.remove_all(&target)?;
        tree.rename(&built, tree, &target)?;
    }
    Ok(())
}
