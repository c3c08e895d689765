//! Protecting the hard-linked checkout with overlayfs.
//!
//! dpkg and the maintainer scripts see `merged`: the checkout (`lower`,
//! hard links to repository objects) under an empty `upper`. Every write the
//! kernel sees lands in `upper`: a file changed in place is copied up first,
//! a deleted one becomes a whiteout. Nothing can write through to `lower`.
//! Afterwards [`apply`] moves the changes onto `lower` by rename and unlink
//! only (never writing into a file), so the checkout becomes the new tree and
//! the commit still recognises every untouched file by device and inode.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

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
        // upper is plain files, directories and whiteouts that apply() knows.
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

fn is_opaque(dir: &Path) -> bool {
    let mut value = [0u8; 4];
    matches!(rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut value), Ok(n) if n > 0)
        && value[0] == b'y'
}

fn remove_any(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .with_context(|| format!("Removing {}", path.display()))
}

/// Move the changes recorded in `upper` onto `lower`.
pub fn apply(upper: &Path, lower: &Path) -> Result<()> {
    for entry in std::fs::read_dir(upper).with_context(|| format!("Reading {}", upper.display()))? {
        let entry = entry?;
        let (from, to) = (entry.path(), lower.join(entry.file_name()));
        let meta = std::fs::symlink_metadata(&from)?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            // A whiteout: deleted in the merged view.
            remove_any(&to)?;
        } else if ft.is_dir() {
            let lower_is_dir = std::fs::symlink_metadata(&to).is_ok_and(|m| m.is_dir());
            if is_opaque(&from) || !lower_is_dir {
                // Replaced wholesale (or new): take upper's directory as it is.
                remove_any(&to)?;
                std::fs::rename(&from, &to).with_context(|| format!("Moving {}", to.display()))?;
            } else {
                // Directories are not repository objects: their metadata may change in place.
                std::fs::set_permissions(
                    &to,
                    std::fs::Permissions::from_mode(meta.mode() & 0o7777),
                )?;
                nix::unistd::chown(&to, Some(meta.uid().into()), Some(meta.gid().into()))?;
                apply(&from, &to)?;
            }
        } else {
            // A new or replaced file or symlink: rename over the old name;
            // the object the old name linked to is untouched.
            if std::fs::symlink_metadata(&to).is_ok_and(|m| m.is_dir()) {
                remove_any(&to)?;
            }
            std::fs::rename(&from, &to).with_context(|| format!("Moving {}", to.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_land_on_lower_without_writing_into_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper, work, merged) = (
            dir.path().join("lower"),
            dir.path().join("upper"),
            dir.path().join("work"),
            dir.path().join("merged"),
        );
        std::fs::create_dir_all(lower.join("etc/old")).unwrap();
        std::fs::create_dir_all(lower.join("keep")).unwrap();
        std::fs::write(lower.join("etc/conf"), "base\n").unwrap();
        std::fs::write(lower.join("etc/gone"), "x").unwrap();
        std::fs::write(lower.join("etc/old/f"), "old").unwrap();
        std::fs::write(lower.join("keep/same"), "same").unwrap();
        // A second name for etc/conf, as a repository object would have.
        let object = dir.path().join("object");
        std::fs::hard_link(lower.join("etc/conf"), &object).unwrap();
        let same_ino = std::fs::metadata(lower.join("keep/same")).unwrap().ino();

        let mut ov = Overlay::mount(&lower, &upper, &work, &merged).unwrap();
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
        ov.unmount().unwrap();

        assert_eq!(
            std::fs::read_to_string(&object).unwrap(),
            "base\n",
            "wrote through a hard link"
        );
        apply(&upper, &lower).unwrap();
        assert_eq!(
            std::fs::read_to_string(lower.join("etc/conf")).unwrap(),
            "base\nappended\n"
        );
        assert_eq!(std::fs::read_to_string(&object).unwrap(), "base\n");
        assert!(!lower.join("etc/gone").exists());
        assert!(
            !lower.join("etc/old/f").exists(),
            "an opaque directory replaces the old one"
        );
        assert_eq!(
            std::fs::read_to_string(lower.join("etc/old/new")).unwrap(),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(lower.join("usr/bin/tool")).unwrap(),
            "tool"
        );
        assert_eq!(
            std::fs::metadata(lower.join("keep/same")).unwrap().ino(),
            same_ino
        );
    }
}
