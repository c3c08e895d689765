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
    /// Container images: the manifest digest, the reference the image was
    /// pulled as, and its layers' digests (bottom first), which cleanup keeps.
    pub const IMAGE_DIGEST: &str = "apt-ostree.image.digest";
    pub const IMAGE_REFERENCE: &str = "apt-ostree.image.reference";
    pub const IMAGE_LAYERS: &str = "apt-ostree.image.layers";
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
    /// The manifest digest of the container image this commit was made from.
    pub image_digest: Option<String>,
    /// The digests of that image's layers.
    pub image_layers: Vec<String>,
}

impl CommitInfo {
    /// The base image under this commit: itself when nothing is layered.
    pub fn base(&self) -> &str {
        self.base_checksum.as_deref().unwrap_or(&self.checksum)
    }

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
            image_digest: string(keys::IMAGE_DIGEST),
            image_layers: metadata
                .lookup::<Vec<String>>(keys::IMAGE_LAYERS)
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
    /// The commit time, seconds since the epoch (default: now).
    pub timestamp: Option<u64>,
    /// Record the tree's kernel (`ostree.bootable`, `ostree.linux`); a tree
    /// that is only part of an OS (an image layer) has none.
    pub bootable: bool,
}

/// Write `root` as a commit, with `ostree.bootable`/`ostree.linux` metadata
/// derived from its kernel, in one repository transaction. With `devino`, the
/// cache filled when `root` was checked out by hard links, files that were
/// not replaced since are not read again.
pub fn commit_directory(
    repo: &ostree::Repo,
    root: &std::path::Path,
    devino: Option<&ostree::RepoDevInoCache>,
    c: NewCommit,
) -> Result<String> {
    use std::os::fd::AsRawFd;
    commit_tree(repo, c, || {
        let mtree = ostree::MutableTree::new();
        let dir =
            std::fs::File::open(root).with_context(|| format!("Opening {}", root.display()))?;
        let modifier = devino.map(|cache| {
            let m = ostree::RepoCommitModifier::new(ostree::RepoCommitModifierFlags::NONE, None);
            m.set_devino_cache(cache);
            m
        });
        repo.write_dfd_to_mtree(
            dir.as_raw_fd(),
            ".",
            &mtree,
            modifier.as_ref(),
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
    commit_tree(repo, c, || {
        let mtree = ostree::MutableTree::from_commit(repo, base)
            .with_context(|| format!("Loading the tree of {base}"))?;
        change(&mtree)?;
        Ok(mtree)
    })
}

/// Commit the tree `fill` writes (its content objects inside the same
/// repository transaction), with `ostree.bootable`/`ostree.linux` metadata
/// when `c.bootable`. Nothing `fill` wrote is kept if it fails.
pub fn commit_tree(
    repo: &ostree::Repo,
    c: NewCommit,
    fill: impl FnOnce() -> Result<ostree::MutableTree>,
) -> Result<String> {
    in_transaction(repo, || write_commit(repo, c, fill))
}

/// Run `work` in one repository transaction: its refs move when it
/// succeeds; it is aborted when it fails, and leaves nothing behind.
///
/// fsync stays as the repository has it (on, unless `core.fsync=false`):
/// libostree then writes every object into a staging directory, syncs the
/// file system once, moves the objects into place, and only then writes
/// the refs, so a power cut never leaves a ref naming an object that is
/// not on disk; and an aborted transaction's objects never reach objects/.
pub fn in_transaction<T>(repo: &ostree::Repo, work: impl FnOnce() -> Result<T>) -> Result<T> {
    use ostree::gio;
    repo.prepare_transaction(gio::Cancellable::NONE)?;
    match work() {
        Ok(value) => {
            repo.commit_transaction(gio::Cancellable::NONE)?;
            Ok(value)
        }
        Err(e) => {
            let _ = repo.abort_transaction(gio::Cancellable::NONE);
            if let Err(cleanup) = remove_idle_staging(repo) {
                tracing::warn!("Cleaning up after a failed repository transaction: {cleanup:#}");
            }
            Err(e)
        }
    }
}

/// Remove the staging directories an aborted transaction leaves in the
/// repository's tmp/ (libostree keeps them so that a pull can resume; an
/// image import or a commit has nothing to resume, and an image that
/// failed must leave nothing behind). Only those whose lock can be taken,
/// the way libostree takes it (an OFD lock on `NAME-lock`): a directory
/// another process uses now stays.
fn remove_idle_staging(repo: &ostree::Repo) -> Result<()> {
    use ostree::gio::prelude::*;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = repo
        .path()
        .path()
        .context("The repository has no local path")?
        .join("tmp");
    for entry in std::fs::read_dir(&tmp).with_context(|| format!("Reading {}", tmp.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("staging-") || name.ends_with("-lock") || !entry.file_type()?.is_dir()
        {
            continue;
        }
        let lock_path = tmp.join(format!("{name}-lock"));
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)?;
        if !crate::fsutil::try_write_lock(&lock, true) {
            continue;
        }
        std::fs::remove_dir_all(entry.path())
            .with_context(|| format!("Removing {}", entry.path().display()))?;
        std::fs::remove_file(&lock_path)?;
    }
    Ok(())
}

/// Write the tree `fill` makes as a commit and move `c`'s refs to it,
/// inside a transaction the caller holds ([`in_transaction`]).
pub fn write_commit(
    repo: &ostree::Repo,
    c: NewCommit,
    fill: impl FnOnce() -> Result<ostree::MutableTree>,
) -> Result<String> {
    use ostree::gio;
    use ostree::gio::prelude::*;
    let mtree = fill()?;
    let tree = repo.write_mtree(&mtree, gio::Cancellable::NONE)?;
    if c.bootable {
        ostree::commit_metadata_for_bootable(&tree, &c.metadata, gio::Cancellable::NONE)
            .context("Finding the tree's kernel")?;
    }
    let tree = tree
        .downcast::<ostree::RepoFile>()
        .map_err(|_| anyhow::anyhow!("write_mtree did not return a RepoFile"))?;
    let metadata = c.metadata.end();
    let checksum = match c.timestamp {
        Some(time) => repo.write_commit_with_time(
            c.parent,
            Some(c.subject),
            None,
            Some(&metadata),
            &tree,
            time,
            gio::Cancellable::NONE,
        )?,
        None => repo.write_commit(
            c.parent,
            Some(c.subject),
            None,
            Some(&metadata),
            &tree,
            gio::Cancellable::NONE,
        )?,
    }
    .to_string();
    if let Some(r) = c.set_ref {
        repo.transaction_set_ref(None, r, Some(&checksum));
    }
    for (r, target) in &c.refs {
        repo.transaction_set_ref(None, r, Some(target));
    }
    Ok(checksum)
}

/// What a MutableTree holds under a name: one lookup, one answer.
pub enum TreeEntry {
    Nothing,
    /// A file or a symlink.
    NotADirectory,
    Directory(ostree::MutableTree),
}

/// Look `name` up in `tree` (libostree reports a missing name as an error).
pub fn tree_entry(tree: &ostree::MutableTree, name: &str) -> Result<TreeEntry> {
    match tree.lookup(name) {
        Ok((_, Some(subdir))) => Ok(TreeEntry::Directory(subdir)),
        Ok((_, None)) => Ok(TreeEntry::NotADirectory),
        Err(e) if e.matches(ostree::gio::IOErrorEnum::NotFound) => Ok(TreeEntry::Nothing),
        Err(e) => Err(e).with_context(|| format!("Looking up {name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed transaction leaves no object in the repository and no
    /// staging directory; a successful one leaves its objects in place.
    #[test]
    fn a_failed_transaction_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let repo = ostree::Repo::new_for_path(dir.path().join("repo"));
        repo.create(ostree::RepoMode::Bare, ostree::gio::Cancellable::NONE)
            .unwrap();
        let objects = || {
            walkdir(&dir.path().join("repo/objects"))
                .into_iter()
                .filter(|p| p.is_file())
                .count()
        };
        let write = || {
            repo.write_regfile_inline(
                None,
                0,
                0,
                libc::S_IFREG | 0o644,
                None,
                b"content",
                ostree::gio::Cancellable::NONE,
            )
            .map(|_| ())
            .map_err(anyhow::Error::from)
        };
        let failed: Result<()> = in_transaction(&repo, || {
            write()?;
            anyhow::bail!("work failed")
        });
        assert!(failed.is_err());
        assert_eq!(
            objects(),
            0,
            "an aborted transaction's object reached objects/"
        );
        let tmp: Vec<_> = std::fs::read_dir(dir.path().join("repo/tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "cache")
            .collect();
        assert!(tmp.is_empty(), "left in tmp/: {tmp:?}");
        in_transaction(&repo, write).unwrap();
        assert_eq!(objects(), 1);
    }

    fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walkdir(&p));
            }
            out.push(p);
        }
        out
    }
}
