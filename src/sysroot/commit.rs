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
