//! Package layering: a new commit that is the base image plus .deb packages.
//!
//! The pipeline (see docs/layering.md for why it is safe):
//! 1. resolve with libapt against the base commit's dpkg database and the
//!    deployment's apt sources; fetch the .debs into apt-ostree's cache;
//! 2. check the base out by hard links and mount overlayfs over it, so that
//!    nothing can write through a hard link into the repository: the kernel
//!    copies a file up before changing it; afterwards the changes are moved
//!    onto the checkout by rename and unlink only;
//! 3. run real dpkg and the maintainer scripts in a bubblewrap sandbox (no
//!    network, /etc = usr/etc, scratch /var);
//! 4. turn /var content into tmpfiles.d entries and new users into
//!    sysusers.d entries, drop dpkg's scratch files;
//! 5. commit the tree (unchanged files are recognised by device and inode, so
//!    only what dpkg wrote is read) with metadata naming the base and packages.

mod overlay;
mod scripts;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ostree::{gio, glib};

use crate::apt::{self, AptRoot, Plan};
use crate::dpkg;
use crate::origin::Origin;
use crate::progress::Sink;
use crate::sandbox::Sandbox;
use crate::sysroot::{keys, Sysroot};
use crate::tree;

/// What a layering run produced.
pub struct Layered {
    pub commit: String,
    pub plan: Plan,
}

/// Prefix of work directories under the repository's tmp/ (cleaned on start).
const WORKDIR_PREFIX: &str = "apt-ostree-layer-";

/// Remove work directories a killed daemon left behind.
pub fn clean_stale_workdirs(sysroot: &Sysroot) {
    let tmp = sysroot.path().join("ostree/repo/tmp");
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(WORKDIR_PREFIX)
        {
            let mnt = entry.path().join("mnt");
            let _ = nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH);
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!("Removing stale {}: {e}", entry.path().display());
            }
        }
    }
}

/// Removals of finished work directories still under way.
static CLEANUPS: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Wait for work directories being removed in the background (before exiting).
pub fn finish_cleanups() {
    let handles: Vec<_> = std::mem::take(&mut *CLEANUPS.lock().expect("cleanup list"));
    for h in handles {
        let _ = h.join();
    }
}

/// A work directory, removed when dropped.
struct Workdir {
    path: PathBuf,
}

impl Workdir {
    fn new(sysroot: &Sysroot, id: &str) -> Result<Workdir> {
        let path = sysroot
            .path()
            .join("ostree/repo/tmp")
            .join(format!("{WORKDIR_PREFIX}{id}"));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("Creating {}", path.display()))?;
        Ok(Workdir { path })
    }
    fn root(&self) -> PathBuf {
        self.path.join("root")
    }
    fn mnt(&self) -> PathBuf {
        self.path.join("mnt")
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        // The overlay (if any) was unmounted first: it is dropped before us.
        // Removing a whole checkout takes a while: move it aside (keeping the
        // prefix, so a crash leaves it to clean_stale_workdirs) and remove it
        // off the transaction's critical path.
        let trash = self.path.with_file_name(format!(
            "{WORKDIR_PREFIX}trash-{}",
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        ));
        match std::fs::rename(&self.path, &trash) {
            Ok(()) => {
                let handle = std::thread::spawn(move || {
                    let _ = std::fs::remove_dir_all(trash);
                });
                CLEANUPS.lock().expect("cleanup list").push(handle);
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }
}

/// Inputs for resolving packages against `base` for `origin`.
fn apt_root(sysroot: &Sysroot, base: &str) -> Result<AptRoot> {
    let merge = sysroot.merge_deployment()?;
    let deployment = sysroot
        .path()
        .join(sysroot.ostree().deployment_dirpath(&merge));
    // One file per base commit, written once: apt checks its binary cache
    // against the status file's size and mtime, so an unchanged base keeps it.
    let dir = sysroot.state_dir().join("base-status");
    let status = dir.join(base);
    if !status.exists() {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).context("Removing old base status files")?;
        }
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!("{base}.tmp"));
        std::fs::write(
            &tmp,
            sysroot.read_commit_file(base, &format!("{}/status", dpkg::DATABASE_DIR))?,
        )
        .context("Writing the base's dpkg status")?;
        std::fs::rename(&tmp, &status)?;
    }
    Ok(AptRoot {
        etc_apt: deployment.join("etc/apt"),
        status,
        state: sysroot.state_dir(),
    })
}

/// Refresh the package lists of the default deployment's sources (refresh-md):
/// when they are stale, or always with `force`.
pub fn refresh_lists(sysroot: &Sysroot, sink: &Sink, base: &str, force: bool) -> Result<()> {
    apt_root(sysroot, base)?.refresh(sink, force)
}

/// Where a requested local .deb is kept (so upgrades can re-apply it).
pub fn local_deb_path(sysroot: &Sysroot, sha256: &str) -> PathBuf {
    sysroot
        .state_dir()
        .join("local")
        .join(format!("{sha256}.deb"))
}

fn request_for(sysroot: &Sysroot, origin: &Origin) -> apt::Request {
    apt::Request {
        install: origin.requested_packages.iter().cloned().collect(),
        local: origin
            .requested_local_packages
            .values()
            .map(|sha| local_deb_path(sysroot, sha))
            .collect(),
        remove: origin.override_remove.iter().cloned().collect(),
        replace: origin.override_replace.iter().cloned().collect(),
    }
}

/// Resolve what `origin` asks for on `base`, without changing anything.
pub fn plan(sysroot: &Sysroot, sink: &Sink, base: &str, origin: &Origin) -> Result<Plan> {
    let apt = apt_root(sysroot, base)?;
    apt.refresh(sink, false)?;
    sink.task("Resolving dependencies", || {
        apt.plan(&request_for(sysroot, origin))
    })
}

/// Check `commit` out at `dest` by hard links (never copies), recording
/// every file's device and inode in `cache` for the commit.
fn checkout(
    repo: &ostree::Repo,
    commit: &str,
    dest: &Path,
    cache: &ostree::RepoDevInoCache,
) -> Result<()> {
    let opts = ostree::RepoCheckoutAtOptions {
        mode: ostree::RepoCheckoutMode::None,
        overwrite_mode: ostree::RepoCheckoutOverwriteMode::None,
        no_copy_fallback: true,
        devino_to_csum_cache: Some(cache.clone()),
        ..Default::default()
    };
    repo.checkout_at(
        Some(&opts),
        libc::AT_FDCWD,
        dest,
        commit,
        gio::Cancellable::NONE,
    )
    .with_context(|| format!("Checking out {commit} to {}", dest.display()))
}

/// Build the layered commit for `origin` on `base`.
pub fn build(sysroot: &Sysroot, sink: &Sink, base: &str, origin: &Origin) -> Result<Layered> {
    let repo = sysroot.repo();
    let workdir = Workdir::new(sysroot, sink.id())?;
    let apt = apt_root(sysroot, base)?;
    apt.refresh(sink, false)?;
    let request = request_for(sysroot, origin);
    // Repository .debs are checked against the index's hashes as they are
    // fetched; local ones were checked whole when they were requested.
    let (plan, debs) = apt.plan_and_fetch(&request, sink)?;
    sink.check_cancelled()?;

    sink.task_begin("Checking out the base");
    let devino = ostree::RepoDevInoCache::new();
    let root = workdir.root();
    checkout(&repo, base, &root, &devino)?;
    sink.task_end("Checking out the base");

    // overlayfs: every write lands in `upper`; the hard-linked checkout is
    // never written to (see overlay.rs).
    let upper = workdir.path.join("upper");
    let mut overlay = overlay::Overlay::mount(
        &root,
        &upper,
        &workdir.path.join("overlay-work"),
        &workdir.mnt(),
    )?;
    let mnt = overlay.merged.clone();

    let var = workdir.path.join("var");
    for d in ["lib", "cache/debconf", "log", "tmp", "spool", "backups"] {
        std::fs::create_dir_all(var.join(d))?;
    }
    std::os::unix::fs::symlink("../../usr/share/dpkg/database", var.join("lib/dpkg"))?;
    let debdir = workdir.path.join("debs");
    std::fs::create_dir_all(&debdir)?;
    let mut inside = Vec::new();
    for (i, deb) in debs.iter().enumerate() {
        let name = format!(
            "{i:03}-{}",
            deb.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        );
        if std::fs::hard_link(deb, debdir.join(&name)).is_err() {
            std::fs::copy(deb, debdir.join(&name))
                .with_context(|| format!("Copying {}", deb.display()))?;
        }
        inside.push(format!("/run/apt-ostree-debs/{name}"));
    }
    let sandbox = Sandbox {
        root: mnt.clone(),
        var: var.clone(),
        ro_binds: vec![(debdir.clone(), "/run/apt-ostree-debs".into())],
    };
    // Services are not started while building a tree.
    let policy = mnt.join("usr/sbin/policy-rc.d");
    std::fs::write(&policy, "#!/bin/sh\nexit 101\n").context("Writing policy-rc.d")?;
    std::fs::set_permissions(&policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let passwd_before = std::fs::read_to_string(root.join("usr/etc/passwd")).unwrap_or_default();
    let group_before = std::fs::read_to_string(root.join("usr/etc/group")).unwrap_or_default();

    if !plan.remove.is_empty() {
        sink.task_begin("Removing base packages");
        let mut argv = vec![
            "dpkg",
            "--purge",
            "--force-depends",
            "--force-remove-essential",
        ];
        argv.extend(plan.remove.iter().map(String::as_str));
        let ran = sandbox.run(&argv, sink)?;
        scripts::check(&ran, &plan)?;
        sink.task_end("Removing base packages");
    }
    if !inside.is_empty() {
        sink.check_cancelled()?;
        sink.task_begin("Installing packages");
        let mut argv = vec![
            "dpkg",
            "--install",
            "--force-confdef",
            "--force-confold",
            "--force-unsafe-io",
        ];
        argv.extend(inside.iter().map(String::as_str));
        let ran = sandbox.run(&argv, sink)?;
        scripts::check(&ran, &plan)?;
        scripts::check_installed(&mnt.join(dpkg::DATABASE_DIR).join("status"), &plan)?;
        sink.task_end("Installing packages");
    }

    if let Some(args) = &origin.initramfs_args {
        regenerate_initramfs(&sandbox, &mnt, args, sink)?;
    }

    sink.task_begin("Finishing the tree");
    std::fs::remove_file(&policy).ok();
    let database = mnt.join(dpkg::DATABASE_DIR);
    for scratch in [
        "lock",
        "lock-frontend",
        "triggers/Lock",
        "status-old",
        "available-old",
        "diversions-old",
        "statoverride-old",
    ] {
        let _ = std::fs::remove_file(database.join(scratch));
    }
    let tmpfiles = tree::var_to_tmpfiles(&var, &mnt)?;
    if !tmpfiles.is_empty() {
        let path = mnt.join(tree::LAYERED_TMPFILES);
        std::fs::create_dir_all(path.parent().expect("has parent"))?;
        std::fs::write(
            &path,
            format!("# /var content of layered packages (apt-ostree)\n{tmpfiles}"),
        )?;
    }
    let sysusers = tree::new_sysusers(
        &passwd_before,
        &std::fs::read_to_string(mnt.join("usr/etc/passwd")).unwrap_or_default(),
        &group_before,
        &std::fs::read_to_string(mnt.join("usr/etc/group")).unwrap_or_default(),
    );
    if !sysusers.is_empty() {
        let path = mnt.join(tree::LAYERED_SYSUSERS);
        std::fs::create_dir_all(path.parent().expect("has parent"))?;
        std::fs::write(
            &path,
            format!("# Users and groups created by layered packages (apt-ostree)\n{sysusers}"),
        )?;
    }
    overlay.unmount()?;
    overlay::apply(&upper, &root).context("Applying the changes to the checkout")?;
    sink.task_end("Finishing the tree");
    sink.check_cancelled()?;

    let commit = sink.task("Committing", || {
        commit_tree(sysroot, base, origin, &plan, &root, &devino)
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

/// Run update-initramfs in the sandbox for every kernel of the tree and put
/// the result where ostree takes the initramfs from.
fn regenerate_initramfs(
    sandbox: &Sandbox,
    root: &Path,
    args: &[String],
    sink: &Sink,
) -> Result<()> {
    if !root.join("usr/sbin/update-initramfs").exists() {
        return Err(crate::error::Error::NotSupported(
            "regenerating the initramfs needs initramfs-tools in the image (apt-ostree install initramfs-tools)".into(),
        )
        .into());
    }
    sink.task_begin("Regenerating the initramfs");
    let modules = root.join("usr/lib/modules");
    let mut kernels: Vec<String> = std::fs::read_dir(&modules)
        .with_context(|| format!("Reading {}", modules.display()))?
        .flatten()
        .filter(|e| e.path().join("vmlinuz").exists())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    kernels.sort();
    for kver in kernels {
        let mut argv = vec!["update-initramfs", "-c", "-k", kver.as_str()];
        argv.extend(args.iter().map(String::as_str));
        let ran = sandbox.run(&argv, sink)?;
        if !ran.status.success() {
            return Err(crate::error::Error::ScriptFailed {
                package: "initramfs-tools".into(),
                script: "update-initramfs".into(),
                exit_status: ran.status.code().unwrap_or(1),
                output: ran.text,
            }
            .into());
        }
        let built = root.join(format!("boot/initrd.img-{kver}"));
        std::fs::rename(&built, modules.join(&kver).join("initramfs.img"))
            .with_context(|| format!("Moving {} into place", built.display()))?;
    }
    sink.task_end("Regenerating the initramfs");
    Ok(())
}

fn commit_tree(
    sysroot: &Sysroot,
    base: &str,
    origin: &Origin,
    plan: &Plan,
    root: &Path,
    devino: &ostree::RepoDevInoCache,
) -> Result<String> {
    let repo = sysroot.repo();
    let base_info = crate::sysroot::CommitInfo::load(&repo, base)?;
    let status = std::fs::read_to_string(root.join(dpkg::DATABASE_DIR).join("status"))?;
    let packages: Vec<(String, String, String)> = dpkg::parse_status(&status)
        .into_iter()
        .map(|p| (p.name, p.version, p.architecture))
        .collect();
    let metadata = glib::VariantDict::new(None);
    if let Some(v) = &base_info.version {
        metadata.insert(keys::VERSION, v);
    }
    metadata.insert(keys::BASE_COMMIT, base);
    metadata.insert(keys::BASE_TIMESTAMP, base_info.timestamp);
    let mut layered: Vec<String> = plan
        .install
        .iter()
        .filter(|p| p.new)
        .map(|p| p.name.clone())
        .collect();
    layered.sort();
    metadata.insert(keys::LAYERED_PACKAGES, layered);
    metadata.insert(
        keys::REQUESTED_PACKAGES,
        origin
            .requested_packages
            .iter()
            .cloned()
            .collect::<Vec<_>>(),
    );
    metadata.insert(keys::PACKAGES, packages);
    crate::sysroot::commit_directory(
        &repo,
        root,
        crate::sysroot::NewCommit {
            parent: Some(base),
            subject: "apt-ostree layered packages",
            metadata,
            devino: Some(devino),
            // Keep the base (and, through the deployment, this commit) alive across prunes.
            refs: vec![(base_ref(base), base.to_string())],
            set_ref: None,
        },
    )
}

/// The ref that keeps a layered deployment's base commit from being pruned.
pub fn base_ref(base: &str) -> String {
    format!("apt-ostree/base/{base}")
}

/// Drop the refs that keep base commits of layered deployments alive when
/// no deployment is built on that base any more.
pub fn prune_base_refs(sysroot: &mut Sysroot) -> Result<()> {
    let repo = sysroot.repo();
    let mut used = std::collections::BTreeSet::new();
    for d in sysroot.ostree().deployments() {
        if let Some(base) = sysroot.commit_info(&d.csum())?.base_checksum {
            used.insert(base_ref(&base));
        }
    }
    let refs = repo
        .list_refs(Some("apt-ostree/base"), gio::Cancellable::NONE)
        .context("Listing base refs")?;
    for (name, _) in refs {
        // libostree may or may not strip the prefix from the names.
        let tail = name
            .trim_start_matches("apt-ostree/base")
            .trim_start_matches('/');
        let name = base_ref(tail);
        if !used.contains(&name) {
            repo.set_ref_immediate(None, &name, None, gio::Cancellable::NONE)
                .with_context(|| format!("Removing ref {name}"))?;
        }
    }
    Ok(())
}
