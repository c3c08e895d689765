//! The libostree adapter: everything that reads or writes a sysroot through
//! libostree (load, status, pull, deploy, commit, lock), and nothing that
//! decides what to deploy: that is [`crate::operations`], one layer up.
//!
//! libostree objects are neither `Send` nor `Sync`: a [`Sysroot`] lives and dies
//! on the thread that opened it. The daemon keeps one on its query thread (for
//! status and db, reloaded only when the sysroot changed on disk) and opens a
//! fresh one on each transaction's worker thread.

mod boot_prefix;
mod commit;
mod deploy;
mod pull;
mod status;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ostree::gio;
use ostree::gio::prelude::*;

pub use boot_prefix::{enable_boot_prefix, has_boot_prefix, prefix_boot_entries};
pub use commit::{
    commit_changes, commit_directory, commit_tree, in_transaction, keys, tree_entry, write_commit,
    CommitInfo, NewCommit, TreeEntry,
};
pub use pull::{pull, pull_subdir, PullRequest};
pub use status::{DeploymentStatus, SysrootStatus};

use crate::dpkg::{self, Package};
use crate::error::Error;

/// An open sysroot, with a cache of the (immutable) commit metadata it has read.
pub struct Sysroot {
    path: PathBuf,
    inner: ostree::Sysroot,
    commits: HashMap<String, CommitInfo>,
}

impl Sysroot {
    /// Open and load the sysroot at `path` ("/" for the running system).
    pub fn open(path: &Path) -> Result<Sysroot> {
        let not_a_sysroot = |reason: String| Error::NotASysroot {
            path: path.to_path_buf(),
            reason,
        };
        // Only "there is no sysroot here" is NotASysroot: a sysroot that
        // cannot be read (permissions, a broken origin file) says why.
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(not_a_sysroot("it does not exist".into()).into())
            }
            Err(e) => return Err(e).with_context(|| format!("Reading {}", path.display())),
        };
        if !meta.is_dir() {
            return Err(not_a_sysroot("not a directory".into()).into());
        }
        let repo_config = path.join("ostree/repo/config");
        match std::fs::metadata(&repo_config) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(not_a_sysroot("it has no ostree/repo".into()).into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(not_a_sysroot("it has no ostree/repo".into()).into())
            }
            Err(e) => return Err(e).with_context(|| format!("Reading {}", repo_config.display())),
        }
        let inner = ostree::Sysroot::new(Some(&gio::File::for_path(path)));
        inner
            .load(gio::Cancellable::NONE)
            .with_context(|| format!("Loading the sysroot at {}", path.display()))?;
        Ok(Sysroot {
            path: path.to_path_buf(),
            inner,
            commits: HashMap::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The libostree handle, for the engines that write deployments.
    pub fn ostree(&self) -> &ostree::Sysroot {
        &self.inner
    }

    /// apt-ostree's private state for this sysroot (ostree reserves
    /// `repo/extensions/` for tools built on it).
    /// Run `f` with ostree's sysroot lock released, for an ostree command
    /// that takes the lock itself; taken again (waiting) afterwards.
    pub fn without_lock<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.inner.unlock();
        let result = f();
        self.inner.lock().context("Taking the sysroot lock again")?;
        result
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path.join("ostree/repo/extensions/apt-ostree")
    }

    pub fn repo(&self) -> ostree::Repo {
        self.inner.repo()
    }

    /// Re-read the sysroot if it changed on disk (or always, with `force`).
    pub fn reload(&mut self, force: bool) -> Result<()> {
        if force {
            self.inner.unload();
            self.inner
                .load(gio::Cancellable::NONE)
                .with_context(|| format!("Reloading sysroot {}", self.path.display()))?;
        } else {
            self.inner
                .load_if_changed(gio::Cancellable::NONE)
                .with_context(|| format!("Reloading sysroot {}", self.path.display()))?;
        }
        Ok(())
    }

    /// Metadata of a commit, cached by checksum (commits never change).
    pub fn commit_info(&mut self, checksum: &str) -> Result<CommitInfo> {
        if let Some(info) = self.commits.get(checksum) {
            return Ok(info.clone());
        }
        let info = CommitInfo::load(&self.repo(), checksum)?;
        self.commits.insert(checksum.to_string(), info.clone());
        Ok(info)
    }

    /// Resolve what a user typed to a commit checksum: a deployment index
    /// ("0", "1"), a ref, a full checksum or a unique prefix of one.
    pub fn resolve_revision(&self, revision: &str) -> Result<String> {
        let not_found = |reason: &str| Error::RevisionNotFound {
            revision: revision.to_string(),
            reason: reason.to_string(),
        };
        if revision.is_empty() || revision.chars().any(|c| c.is_control()) {
            return Err(not_found("not a revision").into());
        }
        if let Ok(index) = revision.parse::<usize>() {
            if revision.len() < 4 {
                let deployments = self.inner.deployments();
                return deployments
                    .get(index)
                    .map(|d| d.csum().to_string())
                    .ok_or_else(|| not_found("no deployment with that index").into());
            }
        }
        let looks_like_checksum =
            revision.len() <= 64 && revision.bytes().all(|b| b.is_ascii_hexdigit());
        if !looks_like_checksum && ostree::validate_rev(revision).is_err() {
            return Err(Error::InvalidRefspec {
                refspec: revision.to_string(),
                reason: "not a ref name, a checksum or a deployment index".into(),
            }
            .into());
        }
        match self.repo().resolve_rev(revision, true) {
            Ok(Some(checksum)) => Ok(checksum.to_string()),
            Ok(None) => Err(not_found("no such ref or commit").into()),
            Err(e) if e.matches(gio::IOErrorEnum::NotFound) => Err(not_found(e.message()).into()),
            // An ambiguous prefix, or a repository that cannot be read: the cause.
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("Resolving revision {revision:?}")))
            }
        }
    }

    /// The default revision for `db list`: the booted deployment, else the default one.
    pub fn default_revision(&self) -> Result<String> {
        self.inner
            .booted_deployment()
            .or_else(|| self.inner.deployments().into_iter().next())
            .map(|d| d.csum().to_string())
            .ok_or_else(|| {
                Error::NoDeployment {
                    reason: "the sysroot has no deployments".into(),
                }
                .into()
            })
    }

    /// The contents of a file in a commit, or None if it has no such file.
    pub fn try_read_commit_file(&self, checksum: &str, path: &str) -> Result<Option<Vec<u8>>> {
        try_read_commit_file(&self.repo(), checksum, path)
    }

    /// The contents of a file in a commit.
    pub fn read_commit_file(&self, checksum: &str, path: &str) -> Result<Vec<u8>> {
        self.try_read_commit_file(checksum, path)?
            .with_context(|| format!("{checksum} has no {path}"))
    }

    /// The Debian packages recorded in a commit's dpkg database.
    pub fn packages(&self, checksum: &str) -> Result<Vec<Package>> {
        commit_packages(&self.repo(), checksum)
    }
}

/// The contents of a file in a commit of `repo`, or None if it has no such file.
pub fn try_read_commit_file(
    repo: &ostree::Repo,
    checksum: &str,
    path: &str,
) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let (root, _) = repo
        .read_commit(checksum, gio::Cancellable::NONE)
        .with_context(|| format!("Reading commit {checksum}"))?;
    // Through the repository: a repository file is not a plain GFile
    // (no GFileInputStream), so read the content object by checksum.
    let file = match root
        .resolve_relative_path(path)
        .downcast::<ostree::RepoFile>()
        .map_err(|_| anyhow::anyhow!("{path} is not a repository file"))?
    {
        f if f.ensure_resolved().is_ok() => f,
        _ => return Ok(None),
    };
    let (stream, _, _) = match repo.load_file(&file.checksum(), gio::Cancellable::NONE) {
        Ok(loaded) => loaded,
        Err(e) if e.matches(gio::IOErrorEnum::NotFound) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("Reading {path} of {checksum}")),
    };
    let Some(stream) = stream else {
        return Ok(None); // a symlink or directory: no content
    };
    let mut bytes = Vec::new();
    stream
        .into_read()
        .read_to_end(&mut bytes)
        .with_context(|| format!("Reading {path} of {checksum}"))?;
    Ok(Some(bytes))
}

/// The Debian packages recorded in the dpkg database of a commit of `repo`.
pub fn commit_packages(repo: &ostree::Repo, checksum: &str) -> Result<Vec<Package>> {
    for dir in [dpkg::DATABASE_DIR, dpkg::LEGACY_DATABASE_DIR] {
        if let Some(bytes) = try_read_commit_file(repo, checksum, &format!("{dir}/status"))? {
            return Ok(dpkg::parse_status(&String::from_utf8_lossy(&bytes)));
        }
    }
    Ok(Vec::new())
}

/// Whether `commit` carries GPG signatures (detached metadata).
pub fn is_signed(repo: &ostree::Repo, commit: &str) -> Result<bool> {
    Ok(repo
        .read_commit_detached_metadata(commit, gio::Cancellable::NONE)?
        .is_some_and(|m| ostree::glib::VariantDict::new(Some(&m)).contains("ostree.gpgsigs")))
}

/// The booted deployment's directory name (`CHECKSUM.SERIAL`), found as
/// libostree finds it, without loading the sysroot: the deployment
/// directory under `root`'s `/sysroot` with the device and inode of `root`.
/// None when `root` is not a deployment.
pub fn booted_name(root: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let booted = std::fs::metadata(root).ok()?;
    let stateroots = std::fs::read_dir(root.join("sysroot/ostree/deploy")).ok()?;
    for stateroot in stateroots.flatten() {
        let Ok(deployments) = std::fs::read_dir(stateroot.path().join("deploy")) else {
            continue;
        };
        for deployment in deployments.flatten() {
            // A link is never a deployment (and could point anywhere).
            let Ok(meta) = std::fs::symlink_metadata(deployment.path()) else {
                continue;
            };
            if meta.is_dir() && meta.dev() == booted.dev() && meta.ino() == booted.ino() {
                return Some(deployment.file_name().to_string_lossy().into_owned());
            }
        }
    }
    None
}

/// A deployment's directory name, `CHECKSUM.SERIAL`: how GRUB's counter, live
/// changes and messages name it.
pub fn deployment_name(d: &ostree::Deployment) -> String {
    format!("{}.{}", d.csum(), d.deployserial())
}

/// The deployment's identifier in status: "OSNAME-CHECKSUM.SERIAL".
pub fn deployment_id(d: &ostree::Deployment) -> String {
    format!("{}-{}", d.osname(), deployment_name(d))
}

/// Another reference to the same deployment object. libostree tells the booted
/// deployment apart by pointer, and `ostree::Deployment::clone` (an inherent
/// method, which wins over `Clone::clone`) makes a new object: never use it
/// for lists handed back to libostree.
pub(crate) fn same(d: &ostree::Deployment) -> ostree::Deployment {
    Clone::clone(d)
}

#[cfg(test)]
mod tests {
    use super::booted_name;

    #[test]
    fn the_booted_deployment_is_the_one_that_is_root() {
        let top = tempfile::tempdir().unwrap();
        let deploy = top.path().join("ostree/deploy/debian/deploy");
        for name in ["aaaa.0", "bbbb.1"] {
            std::fs::create_dir_all(deploy.join(name)).unwrap();
        }
        std::fs::write(deploy.join("aaaa.0.origin"), "").unwrap();
        // As ostree-prepare-root leaves it: the physical root at /sysroot.
        let booted = deploy.join("bbbb.1");
        std::os::unix::fs::symlink(top.path(), booted.join("sysroot")).unwrap();
        assert_eq!(booted_name(&booted).as_deref(), Some("bbbb.1"));
        // A link in the deployments' directory is not a deployment, even
        // one to the root.
        let elsewhere = top.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(top.path(), elsewhere.join("sysroot")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, deploy.join("cccc.2")).unwrap();
        assert_eq!(booted_name(&elsewhere), None);
        // Not booted from a deployment: no /sysroot, or none is root.
        assert_eq!(booted_name(top.path()), None);
        assert_eq!(booted_name(&deploy.join("aaaa.0")), None);
    }
}
