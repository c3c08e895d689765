//! Commit metadata apt-ostree reads and writes.

use anyhow::{Context, Result};
use ostree::glib;

/// Metadata keys of commits apt-ostree writes (layered or composed).
pub mod keys {
    /// The commit's version string (ostree convention).
    pub const VERSION: &str = "version";
    /// Checksum of the base image a layered commit was built on.
    pub const BASE_COMMIT: &str = "apt-ostree.base-commit";
    /// Commit time of that base image, so status shows the base's age.
    pub const BASE_TIMESTAMP: &str = "apt-ostree.base-timestamp";
    /// Names of the packages on top of the base (dependencies included).
    pub const LAYERED_PACKAGES: &str = "apt-ostree.layered-packages";
    /// Package names the administrator asked for.
    pub const REQUESTED_PACKAGES: &str = "apt-ostree.requested-packages";
    /// Every package of the tree as (name, version, architecture).
    pub const PACKAGES: &str = "apt-ostree.packages";
    /// Kernel arguments for systems installed from the image (treefile `kargs`).
    pub const KARGS: &str = "apt-ostree.kargs";
    /// The remote installed systems upgrade from (treefile `[remote]`):
    /// name, URL, and whether it verifies signatures.
    pub const REMOTE_NAME: &str = "apt-ostree.remote-name";
    pub const REMOTE_URL: &str = "apt-ostree.remote-url";
    pub const REMOTE_GPG_VERIFY: &str = "apt-ostree.remote-gpg-verify";
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitInfo {
    pub checksum: String,
    pub parent: Option<String>,
    pub version: Option<String>,
    /// Commit time, seconds since the epoch (the base's, for layered commits).
    pub timestamp: u64,
    pub base_checksum: Option<String>,
    pub layered_packages: Vec<String>,
}

impl CommitInfo {
    pub fn load(repo: &ostree::Repo, checksum: &str) -> Result<CommitInfo> {
        let (commit, _state) = repo
            .load_commit(checksum)
            .with_context(|| format!("Loading commit {checksum}"))?;
        let metadata = glib::VariantDict::new(Some(&commit.child_value(0)));
        let string = |key: &str| metadata.lookup::<String>(key).ok().flatten();
        let own_timestamp = ostree::commit_get_timestamp(&commit);
        Ok(CommitInfo {
            checksum: checksum.to_string(),
            parent: ostree::commit_get_parent(&commit).map(|p| p.to_string()),
            version: string(keys::VERSION),
            timestamp: metadata
                .lookup::<u64>(keys::BASE_TIMESTAMP)
                .ok()
                .flatten()
                .unwrap_or(own_timestamp),
            base_checksum: string(keys::BASE_COMMIT),
            layered_packages: metadata
                .lookup::<Vec<String>>(keys::LAYERED_PACKAGES)
                .ok()
                .flatten()
                .unwrap_or_default(),
        })
    }
}

/// A commit to write.
pub struct NewCommit<'a> {
    pub parent: Option<&'a str>,
    pub subject: &'a str,
    pub metadata: glib::VariantDict,
    /// Refs to point at the new commit, and extra (ref, checksum) pairs.
    pub refs: Vec<(String, String)>,
    pub set_ref: Option<&'a str>,
}

/// Write `root` as a commit, with `ostree.bootable`/`ostree.linux` metadata
/// derived from its kernel, in one repository transaction.
pub fn commit_directory(
    repo: &ostree::Repo,
    root: &std::path::Path,
    c: NewCommit,
) -> Result<String> {
    use std::os::fd::AsRawFd;
    commit(repo, c, || {
        let mtree = ostree::MutableTree::new();
        let dir =
            std::fs::File::open(root).with_context(|| format!("Opening {}", root.display()))?;
        repo.write_dfd_to_mtree(
            dir.as_raw_fd(),
            ".",
            &mtree,
            None,
            ostree::gio::Cancellable::NONE,
        )
        .with_context(|| format!("Reading {}", root.display()))?;
        Ok(mtree)
    })
}

/// Write the tree of commit `base`, changed by `change`, as a commit (as
/// [`commit_directory`] does): what `change` leaves alone is never read
/// again, so the cost follows the size of the change, not of the tree.
pub fn commit_changes(
    repo: &ostree::Repo,
    base: &str,
    change: impl FnOnce(&ostree::MutableTree) -> Result<()>,
    c: NewCommit,
) -> Result<String> {
    commit(repo, c, || {
        let mtree = ostree::MutableTree::from_commit(repo, base)
            .with_context(|| format!("Loading the tree of {base}"))?;
        change(&mtree)?;
        Ok(mtree)
    })
}

/// Commit the tree `fill` writes (its content objects inside the same
/// repository transaction), with `ostree.bootable`/`ostree.linux` metadata.
fn commit(
    repo: &ostree::Repo,
    c: NewCommit,
    fill: impl FnOnce() -> Result<ostree::MutableTree>,
) -> Result<String> {
    use ostree::gio;
    use ostree::gio::prelude::*;
    // One syncfs at the end instead of an fsync per object: as durable, much faster.
    repo.set_disable_fsync(true);
    repo.prepare_transaction(gio::Cancellable::NONE)?;
    let result = (|| -> Result<String> {
        let mtree = fill()?;
        let tree = repo.write_mtree(&mtree, gio::Cancellable::NONE)?;
        ostree::commit_metadata_for_bootable(&tree, &c.metadata, gio::Cancellable::NONE)
            .context("Finding the tree's kernel")?;
        let tree = tree
            .downcast::<ostree::RepoFile>()
            .map_err(|_| anyhow::anyhow!("write_mtree did not return a RepoFile"))?;
        let checksum = repo
            .write_commit(
                c.parent,
                Some(c.subject),
                None,
                Some(&c.metadata.end()),
                &tree,
                gio::Cancellable::NONE,
            )?
            .to_string();
        if let Some(r) = c.set_ref {
            repo.transaction_set_ref(None, r, Some(&checksum));
        }
        for (r, target) in &c.refs {
            repo.transaction_set_ref(None, r, Some(target));
        }
        Ok(checksum)
    })();
    match result {
        Ok(checksum) => {
            repo.commit_transaction(gio::Cancellable::NONE)?;
            let dir = std::fs::File::open(repo.path().path().unwrap_or_default())
                .context("Opening the repository to sync it")?;
            nix::unistd::syncfs(&dir).context("Syncing the repository")?;
            Ok(checksum)
        }
        Err(e) => {
            let _ = repo.abort_transaction(gio::Cancellable::NONE);
            Err(e)
        }
    }
}
