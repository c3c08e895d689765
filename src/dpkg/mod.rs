//! dpkg databases as they are stored inside commits.
//!
//! A Debian tree on OSTree keeps dpkg's database in the read-only `/usr`
//! (`usr/share/dpkg/database`, with `/var/lib/dpkg` a symlink to it), so every
//! commit carries the exact package set it was built from. `db list`, `db diff`
//! and `upgrade --preview` read it from there, without libapt.

mod database;
mod version;

pub use database::{diff, parse_status, Package, PackageChange, PackageDiff};
pub use version::compare_versions;

/// Where a deployable tree keeps dpkg's database (relative to its root).
pub const DATABASE_DIR: &str = "usr/share/dpkg/database";
/// Where a tree that was not converted keeps it.
pub const LEGACY_DATABASE_DIR: &str = "var/lib/dpkg";

/// The packages of a deployable tree on disk, as commits record them
/// (`apt-ostree.packages`: name, version, architecture).
pub fn packages_of_tree(
    root: &crate::fsutil::Beneath,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let status = root.read_text(&format!("{DATABASE_DIR}/status"))?;
    Ok(parse_status(&status)
        .into_iter()
        .map(|p| (p.name, p.version, p.architecture))
        .collect())
}
