//! File writes that a crash cannot leave half done.
//!
//! A file is written under a temporary name beside its final one, synced,
//! renamed over the final name, and the directory is synced, so that after a
//! power cut the name holds the old content or the whole new one. Renaming
//! also never writes into an existing file, which matters in hard-linked
//! checkouts, where that file may be a repository object.

mod beneath;

pub use beneath::{join, Beneath, Kind, Meta};

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};

/// Replace `path` with `contents`, atomically and durably.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".apt-ostree-")
        .tempfile_in(dir)
        .with_context(|| format!("Creating a temporary file in {}", dir.display()))?;
    tmp.write_all(contents)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("Writing {}", path.display()))?;
    // tempfile creates 0600; what we write is read by others (units, tmpfiles).
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.persist(path)
        .with_context(|| format!("Renaming into {}", path.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("Syncing {}", dir.display()))
}

/// `root/rel` as a directory, made where missing, with no symbolic link on
/// the way: a tree from elsewhere (a container image) must not make the
/// daemon write outside it through a link it planted.
pub fn dir_beneath(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut path = root.to_path_buf();
    for component in rel.components() {
        match component {
            Component::Normal(name) => path.push(name),
            Component::CurDir => continue,
            _ => anyhow::bail!("{} is not a path inside the tree", rel.display()),
        }
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                anyhow::bail!("refusing to follow the symbolic link {}", path.display())
            }
            Ok(_) => anyhow::bail!("{} is not a directory", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&path)
                .with_context(|| format!("Creating {}", path.display()))?,
            Err(e) => return Err(e).with_context(|| format!("Reading {}", path.display())),
        }
    }
    Ok(path)
}

/// Remove whatever is at `path` (a directory with its content); nothing
/// there is not an error.
pub fn remove_any(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .with_context(|| format!("Removing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn directories_beneath_a_tree_never_go_through_its_links() {
        let tree = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tree.path().join("usr/share")).unwrap();
        std::os::unix::fs::symlink(outside.path(), tree.path().join("usr/share/factory")).unwrap();
        let err = dir_beneath(tree.path(), Path::new("usr/share/factory/var/lib")).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(dir_beneath(tree.path(), Path::new("../x")).is_err());
        let made = dir_beneath(tree.path(), Path::new("usr/lib/opt")).unwrap();
        assert!(made.is_dir() && made.starts_with(tree.path()));
    }

    #[test]
    fn replaces_the_name_and_never_writes_into_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conf");
        std::fs::write(&path, "old").unwrap();
        // A second name for the old inode, as a hard-linked checkout has.
        let other = dir.path().join("object");
        std::fs::hard_link(&path, &other).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(&other).unwrap(), "old");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 2, "a temporary file was left behind");
    }
}
