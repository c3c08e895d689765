//! Protecting the hard-linked checkout with overlayfs.
//!
//! dpkg and the maintainer scripts see `merged`: the checkout (`lower`,
//! hard links to repository objects) under an empty `upper`. Every write the
//! kernel sees lands in `upper`: a file changed in place is copied up first,
//! a deleted one becomes a whiteout. Nothing can write through to `lower`.
//! Afterwards [`write_changes`] writes what `upper` records over the base
//! commit's tree: the new commit costs what dpkg changed, and the checkout is
//! never modified at all.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::sysroot::{tree_entry, TreeEntry as InBase};

pub struct Overlay {
    pub merged: PathBuf,
    mounted: bool,
}

impl Overlay {
    /// Mount `upper` over `lower` at `merged` (`work` is overlayfs's scratch).
    pub fn mount(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> Result<Overlay> {
        for d in [upper, work, merged] {
            std::fs::create_dir_all(d)?;
        }
        // No redirects, metadata-only copies or inode index: what lands in
        // upper is plain files, directories and whiteouts that write_changes() knows.
        let options = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off",
            lower.display(),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .with_context(|| format!("Mounting overlayfs on {}", merged.display()))?;
        Ok(Overlay {
            merged: merged.to_path_buf(),
            mounted: true,
        })
    }

    pub fn unmount(&mut self) -> Result<()> {
        if self.mounted {
            nix::mount::umount(&self.merged)
                .with_context(|| format!("Unmounting {}", self.merged.display()))?;
            self.mounted = false;
        }
        Ok(())
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Overlayfs's own bookkeeping on what it copied up or created.
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";

fn is_opaque(dir: &Path) -> bool {
    let mut value = [0u8; 4];
    matches!(rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut value), Ok(n) if n > 0)
        && value[0] == b'y'
}

fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Remove overlayfs's xattrs from `path`, so that none reaches a commit:
/// they describe the scratch filesystem, not the image.
fn strip_overlay_xattrs(path: &Path) -> Result<()> {
    // The kernel's limit for a list of xattr names (XATTR_LIST_MAX).
    let mut names = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(path, &mut names) {
        Ok(n) => n,
        // A filesystem without xattrs holds none of overlayfs's.
        Err(rustix::io::Errno::OPNOTSUPP) => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("Listing xattrs of {}", path.display())),
    };
    for name in names[..n].split(|b| *b == 0) {
        if name.starts_with(OVERLAY_XATTR_PREFIX.as_bytes()) {
            rustix::fs::lremovexattr(path, name)
                .with_context(|| format!("Removing an xattr of {}", path.display()))?;
        }
    }
    Ok(())
}

fn in_base(base: Option<&ostree::MutableTree>, name: &str) -> Result<InBase> {
    match base {
        None => Ok(InBase::Nothing),
        Some(tree) => tree_entry(tree, name).with_context(|| format!("In the base tree: {name}")),
    }
}

/// Prepare `upper` to be written over `base` (the base tree's directory at
/// the same place, if it has one): what a whiteout hides, an opaque
/// directory replaces, or a new entry of another type displaces is removed
/// from `base`; whiteouts leave `upper`; overlayfs's xattrs are dropped.
fn remove_hidden(upper: &Path, base: Option<&ostree::MutableTree>) -> Result<()> {
    strip_overlay_xattrs(upper)?;
    for entry in std::fs::read_dir(upper).with_context(|| format!("Reading {}", upper.display()))? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name
            .to_str()
            .with_context(|| format!("{} is not UTF-8", path.display()))?;
        let meta = std::fs::symlink_metadata(&path)?;
        let found = in_base(base, name)?;
        let remove_from_base = || -> Result<()> {
            match (base, &found) {
                (Some(tree), InBase::NotADirectory | InBase::Directory(_)) => tree
                    .remove(name, false)
                    .with_context(|| format!("Removing {name} from the base tree")),
                _ => Ok(()),
            }
        };
        if is_whiteout(&meta) {
            remove_from_base()?;
            std::fs::remove_file(&path)?;
        } else if meta.is_dir() {
            match &found {
                InBase::Directory(subdir) if !is_opaque(&path) => {
                    remove_hidden(&path, Some(subdir))?
                }
                // New, or replacing the base's entry wholesale.
                _ => {
                    remove_from_base()?;
                    remove_hidden(&path, None)?;
                }
            }
        } else {
            if let InBase::Directory(_) = found {
                remove_from_base()?;
            }
            strip_overlay_xattrs(&path)?;
        }
    }
    Ok(())
}

/// Write the changes `upper` records (overlay unmounted) over `base`, the
/// tree of the commit that was the overlay's lower layer. Whiteouts and
/// opaque directories remove what they hide; everything else in `upper`,
/// directories' metadata included, is written over the base's entries by
/// libostree. The root directory keeps the base's metadata (`upper` itself
/// is a directory we created, not a copy of the tree's root).
pub fn write_changes(repo: &ostree::Repo, upper: &Path, base: &ostree::MutableTree) -> Result<()> {
    use std::os::fd::AsRawFd;
    let root_metadata = base.metadata_checksum();
    remove_hidden(upper, Some(base))?;
    let dir = std::fs::File::open(upper).with_context(|| format!("Opening {}", upper.display()))?;
    repo.write_dfd_to_mtree(
        dir.as_raw_fd(),
        ".",
        base,
        None,
        ostree::gio::Cancellable::NONE,
    )
    .with_context(|| format!("Writing the changes in {}", upper.display()))?;
    base.set_metadata_checksum(&root_metadata);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysroot::{commit_changes, commit_directory, NewCommit};
    use ostree::{gio, glib};
    use std::os::unix::fs::PermissionsExt;

    fn new_commit() -> NewCommit<'static> {
        NewCommit {
            parent: None,
            subject: "test",
            metadata: glib::VariantDict::new(None),
            refs: Vec::new(),
            set_ref: None,
            timestamp: None,
            bootable: true,
        }
    }

    /// Every overlayfs xattr under `root`, `root` included; a listing that
    /// fails fails the test (only "no xattrs here" counts as none).
    fn overlay_xattrs(root: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut paths = vec![root.to_path_buf()];
        while let Some(path) = paths.pop() {
            let mut names = vec![0u8; 65536];
            let n = match rustix::fs::llistxattr(&path, &mut names) {
                Ok(n) => n,
                Err(rustix::io::Errno::OPNOTSUPP) => 0,
                Err(e) => panic!("listing xattrs of {}: {e}", path.display()),
            };
            for name in names[..n].split(|b| *b == 0) {
                if name.starts_with(OVERLAY_XATTR_PREFIX.as_bytes()) {
                    found.push(format!(
                        "{} {}",
                        path.display(),
                        String::from_utf8_lossy(name)
                    ));
                }
            }
            if path.symlink_metadata().unwrap().is_dir() {
                for entry in std::fs::read_dir(&path).unwrap() {
                    paths.push(entry.unwrap().path());
                }
            }
        }
        found
    }

    #[test]
    fn changes_are_written_over_the_base_tree_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = |p: &str| dir.path().join(p);
        let repo = ostree::Repo::new_for_path(d("repo"));
        repo.create(ostree::RepoMode::Bare, gio::Cancellable::NONE)
            .unwrap();
        let tree = d("tree");
        for sub in ["etc/old", "keep", "usr/lib/modules/6.1.0", "dir-to-link"] {
            std::fs::create_dir_all(tree.join(sub)).unwrap();
        }
        for (file, text) in [
            ("etc/conf", "base\n"),
            ("etc/gone", "x"),
            ("etc/old/f", "old"),
            ("keep/same", "same"),
            ("file-to-dir", "f"),
            ("usr/lib/modules/6.1.0/vmlinuz", "kernel"),
        ] {
            std::fs::write(tree.join(file), text).unwrap();
        }
        let base = commit_directory(&repo, &tree, None, new_commit()).unwrap();

        // The lower layer is a hard-link checkout, as layering makes it.
        let lower = d("lower");
        let opts = ostree::RepoCheckoutAtOptions {
            no_copy_fallback: true,
            ..Default::default()
        };
        repo.checkout_at(
            Some(&opts),
            libc::AT_FDCWD,
            &lower,
            &base,
            gio::Cancellable::NONE,
        )
        .unwrap();
        let conf_ino = std::fs::metadata(lower.join("etc/conf")).unwrap().ino();
        let (upper, merged) = (d("upper"), d("merged"));
        let mut ov = Overlay::mount(&lower, &upper, &d("work"), &merged).unwrap();
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(merged.join("etc/conf"))
                .unwrap();
            f.write_all(b"appended\n").unwrap();
        }
        std::fs::remove_file(merged.join("etc/gone")).unwrap();
        std::fs::remove_dir_all(merged.join("etc/old")).unwrap();
        std::fs::create_dir(merged.join("etc/old")).unwrap();
        std::fs::write(merged.join("etc/old/new"), "new").unwrap();
        std::fs::create_dir_all(merged.join("usr/bin")).unwrap();
        std::fs::write(merged.join("usr/bin/tool"), "tool").unwrap();
        std::fs::remove_file(merged.join("file-to-dir")).unwrap();
        std::fs::create_dir(merged.join("file-to-dir")).unwrap();
        std::fs::remove_dir(merged.join("dir-to-link")).unwrap();
        std::os::unix::fs::symlink("keep", merged.join("dir-to-link")).unwrap();
        std::fs::set_permissions(merged.join("keep"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        // The scratch upper directory's own mode is not the tree root's.
        std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o711)).unwrap();
        ov.unmount().unwrap();

        let changed = commit_changes(
            &repo,
            &base,
            |tree| write_changes(&repo, &upper, tree),
            new_commit(),
        )
        .unwrap();
        let out = d("out");
        repo.checkout_at(
            Some(&opts),
            libc::AT_FDCWD,
            &out,
            &changed,
            gio::Cancellable::NONE,
        )
        .unwrap();
        let read = |p: &str| std::fs::read_to_string(out.join(p)).unwrap();
        assert_eq!(read("etc/conf"), "base\nappended\n");
        assert_eq!(
            std::fs::read_to_string(lower.join("etc/conf")).unwrap(),
            "base\n",
            "wrote through a hard link into the repository"
        );
        assert_eq!(
            std::fs::metadata(lower.join("etc/conf")).unwrap().ino(),
            conf_ino
        );
        assert!(!out.join("etc/gone").exists(), "a whiteout removes");
        assert!(
            !out.join("etc/old/f").exists(),
            "an opaque directory replaces the old one"
        );
        assert_eq!(read("etc/old/new"), "new");
        assert_eq!(read("usr/bin/tool"), "tool");
        assert!(out.join("file-to-dir").is_dir());
        assert_eq!(
            std::fs::read_link(out.join("dir-to-link")).unwrap(),
            Path::new("keep")
        );
        assert_eq!(
            std::fs::metadata(out.join("keep")).unwrap().mode() & 0o7777,
            0o700,
            "a directory's changed mode is kept"
        );
        assert_eq!(
            std::fs::metadata(&out).unwrap().mode() & 0o7777,
            std::fs::metadata(&tree).unwrap().mode() & 0o7777,
            "the root keeps the base's metadata"
        );
        assert_eq!(
            std::fs::metadata(out.join("keep/same")).unwrap().ino(),
            std::fs::metadata(lower.join("keep/same")).unwrap().ino(),
            "an untouched file is the base's object"
        );
        assert_eq!(overlay_xattrs(&out), Vec::<String>::new());
    }
}
