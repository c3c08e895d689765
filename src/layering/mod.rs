//! Package layering: a new commit that is the base image plus .deb packages.
//!
//! The pipeline, `build` (see docs/layering.md for why it is safe), one
//! function per step in build.rs:
//! 1. resolve with libapt against the base commit's dpkg database and the
//!    deployment's apt sources; fetch the .debs into apt-ostree's cache;
//! 2. check the base out by hard links and mount overlayfs over it, so that
//!    nothing can write through a hard link into the repository: the kernel
//!    copies a file up before changing it;
//! 3. run real dpkg and the maintainer scripts in a bubblewrap sandbox (no
//!    network, /etc = usr/etc, scratch /var);
//! 4. finish: turn /var content into tmpfiles.d entries and new users into
//!    sysusers.d entries, drop dpkg's scratch files, unmount;
//! 5. commit the base commit's tree with the overlay's upper layer written
//!    over it (only what dpkg changed is read), with metadata naming the base
//!    and packages.

mod build;
pub use build::build;
mod overlay;
mod scripts;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ostree::{gio, glib};

use crate::apt::{self, AptRoot, Plan};
use crate::dpkg;
use crate::origin::Origin;
use crate::progress::Sink;
use crate::sysroot::{keys, Sysroot};

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
pub(crate) fn apt_root(sysroot: &Sysroot, base: &str) -> Result<AptRoot> {
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
        crate::fsutil::write_atomic(
            &status,
            &sysroot.read_commit_file(base, &format!("{}/status", dpkg::DATABASE_DIR))?,
        )
        .context("Writing the base's dpkg status")?;
    }
    check_apt_config(&deployment)?;
    Ok(AptRoot {
        etc_apt: deployment.join("etc/apt"),
        status,
        state: sysroot.state_dir(),
    })
}

/// apt reads the deployment's /etc/apt by path, on the host: no link there
/// may lead out of the deployment (its content came from an image).
fn check_apt_config(deployment: &std::path::Path) -> Result<()> {
    let tree = crate::fsutil::Beneath::open(deployment)?;
    let mut links = vec![String::from("etc/apt")];
    if tree.is_dir("etc/apt")? {
        links.extend(
            tree.walk("etc/apt")?
                .into_iter()
                .filter(|(_, m)| m.kind == crate::fsutil::Kind::Symlink)
                .map(|(rel, _)| format!("etc/apt/{rel}")),
        );
    }
    for rel in links {
        if !tree.stays_inside(&rel)? {
            anyhow::bail!("the deployment's /{rel} is a link out of the deployment, which apt would follow on the host");
        }
    }
    Ok(())
}

/// Refresh the package lists of the default deployment's sources (refresh-md):
/// when they are stale, or always with `force`.
pub fn refresh_lists(sysroot: &Sysroot, sink: &Sink, base: &str, force: bool) -> Result<()> {
    apt_root(sysroot, base)?.refresh(sink, force)
}

/// Where a requested local .deb is kept (so upgrades can re-apply it).
pub fn local_deb_path(sysroot: &Sysroot, sha256: &str) -> PathBuf {
    local_deb_dir(sysroot).join(format!("{sha256}.deb"))
}

/// Where the daemon keeps its copies of local .deb files.
pub fn local_deb_dir(sysroot: &Sysroot) -> PathBuf {
    sysroot.state_dir().join("local")
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

/// Check `commit` out at `dest` by hard links (never copies): the overlay's
/// read-only lower layer.
fn checkout(repo: &ostree::Repo, commit: &str, dest: &Path) -> Result<()> {
    let opts = ostree::RepoCheckoutAtOptions {
        mode: ostree::RepoCheckoutMode::None,
        overwrite_mode: ostree::RepoCheckoutOverwriteMode::None,
        no_copy_fallback: true,
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

/// Commit `base` with the changes in `upper` (see overlay.rs), with metadata
/// naming the base and the packages of the tree's dpkg `status`.
fn commit_tree(
    sysroot: &Sysroot,
    base: &str,
    origin: &Origin,
    plan: &Plan,
    status: &str,
    upper: &Path,
) -> Result<String> {
    let repo = sysroot.repo();
    let base_info = crate::sysroot::CommitInfo::load(&repo, base)?;
    let packages: Vec<(String, String, String)> = dpkg::parse_status(status)
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
    crate::sysroot::commit_changes(
        &repo,
        base,
        |tree| overlay::write_changes(&repo, upper, tree),
        crate::sysroot::NewCommit {
            parent: Some(base),
            subject: "apt-ostree layered packages",
            metadata,
            // Keep the base (and, through the deployment, this commit) alive across prunes.
            refs: vec![(base_ref(base), base.to_string())],
            set_ref: None,
            timestamp: None,
            bootable: true,
        },
    )
}

/// The ref that keeps a layered deployment's base commit from being pruned.
pub fn base_ref(base: &str) -> String {
    format!("apt-ostree/base/{base}")
}

/// Drop the refs that keep base commits of layered deployments alive when
/// no deployment is built on that base any more.
/// Remove the copies of local .deb files that no deployment's origin names
/// any more, and copies a crash left unfinished. Returns how many went.
pub fn prune_local_debs(sysroot: &Sysroot) -> Result<usize> {
    let mut used = std::collections::BTreeSet::new();
    for d in sysroot.ostree().deployments() {
        let origin = Sysroot::origin_of(&d)?;
        used.extend(
            origin
                .requested_local_packages
                .values()
                .map(|sha| format!("{sha}.deb")),
        );
    }
    let dir = local_deb_dir(sysroot);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("Listing {}", dir.display())),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !used.contains(&name) {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("Removing {}", entry.path().display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

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
