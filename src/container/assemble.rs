//! Stacking an image's layers into one deployable commit.
//!
//! The layers are checked out in order, by hard links, into one directory
//! on the repository's file system; before each layer its whiteouts remove
//! what it deletes from the layers below (OCI's rule). The result is a
//! plain Debian root file system, which becomes deployable by exactly the
//! conversion `compose tree` applies ([`crate::tree::make_deployable`]): /etc
//! to /usr/etc, dpkg's database into /usr, /var to tmpfiles.d, the kernel
//! from /boot or /usr/lib/modules. Users and groups the image defines also
//! become sysusers.d entries, so that a machine whose /etc/passwd was edited
//! locally (the /etc merge keeps it) still gets the users a new image adds.
//!
//! The conversion only renames, unlinks and creates files, never writes into
//! one, so the hard links cannot write through to repository objects; and
//! the commit reads back only what the conversion made (the checkout's
//! device/inode cache knows the rest).

use std::path::{Component, Path, PathBuf};

use anyhow::Result;
use ostree::{gio, glib};

use super::layer::Layer;
use crate::sysroot::{commit_directory, keys, NewCommit};

pub const IMAGE_SYSUSERS: &str = "usr/lib/sysusers.d/apt-ostree-image.conf";

/// What the commit records of the image.
pub struct ImageMetadata<'a> {
    pub reference: &'a str,
    pub digest: &'a str,
    pub layer_digests: &'a [String],
    pub version: Option<&'a str>,
    pub created: Option<u64>,
}

/// Why the stacked tree cannot be deployed (no kernel, a conflict).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotDeployable(pub String);

/// `root/rel`, if every directory on the way is a real directory under
/// `root` (never a symlink, which could lead anywhere on the host).
fn inside(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut path = root.to_path_buf();
    let parts: Vec<Component> = Path::new(rel).components().collect();
    for (i, c) in parts.iter().enumerate() {
        let Component::Normal(name) = c else {
            return None;
        };
        path.push(name);
        let last = i + 1 == parts.len();
        if !last && !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            return None;
        }
    }
    Some(path)
}

/// Apply a layer's whiteouts to what the layers below left in `root`.
fn apply_whiteouts(root: &Path, layer: &Layer) -> Result<()> {
    for dir in &layer.opaque_dirs {
        let Some(path) = inside(root, dir).or_else(|| dir.is_empty().then(|| root.to_path_buf()))
        else {
            continue;
        };
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            for entry in std::fs::read_dir(&path)? {
                crate::fsutil::remove_any(&entry?.path())?;
            }
        }
    }
    for hidden in &layer.whiteouts {
        if let Some(path) = inside(root, hidden) {
            crate::fsutil::remove_any(&path)?;
        }
    }
    Ok(())
}

/// Stack `layers` (bottom first) in `work`, convert, and commit.
pub fn assemble(
    repo: &ostree::Repo,
    layers: &[Layer],
    work: &Path,
    image: &ImageMetadata,
) -> Result<String> {
    let root = work.join("rootfs");
    std::fs::create_dir_all(&root)?;
    let devino = ostree::RepoDevInoCache::new();
    for layer in layers {
        apply_whiteouts(&root, layer)?;
        let opts = ostree::RepoCheckoutAtOptions {
            mode: ostree::RepoCheckoutMode::None,
            overwrite_mode: ostree::RepoCheckoutOverwriteMode::UnionFiles,
            no_copy_fallback: true,
            devino_to_csum_cache: Some(devino.clone()),
            ..Default::default()
        };
        repo.checkout_at(
            Some(&opts),
            libc::AT_FDCWD,
            &root,
            &layer.commit,
            gio::Cancellable::NONE,
        )
        .map_err(|e| NotDeployable(format!("stacking layer {}: {e}", layer.commit)))?;
    }
    let conversion =
        crate::tree::make_deployable(&root, false).map_err(|e| NotDeployable(format!("{e:#}")))?;
    write_sysusers(&root)?;
    let packages = crate::dpkg::packages_of_tree(&root);
    let metadata = glib::VariantDict::new(None);
    if let Some(v) = image.version {
        metadata.insert(keys::VERSION, v);
    }
    metadata.insert(keys::PACKAGES, packages);
    metadata.insert(keys::IMAGE_DIGEST, image.digest);
    metadata.insert(keys::IMAGE_REFERENCE, image.reference);
    metadata.insert(keys::IMAGE_LAYERS, image.layer_digests.to_vec());
    tracing::debug!("Image kernels: {:?}", conversion.kernels);
    commit_directory(
        repo,
        &root,
        Some(&devino),
        NewCommit {
            parent: None,
            subject: &format!("{} ({})", image.reference, image.digest),
            metadata,
            refs: Vec::new(),
            set_ref: None,
            timestamp: image.created,
            bootable: true,
        },
    )
}

/// Every user and group of the image's /usr/etc as sysusers.d lines.
fn write_sysusers(root: &Path) -> Result<()> {
    let read =
        |name: &str| std::fs::read_to_string(root.join("usr/etc").join(name)).unwrap_or_default();
    let lines = crate::tree::new_sysusers("", &read("passwd"), "", &read("group"));
    // root exists everywhere; systemd-sysusers refuses to redefine it anyway.
    let lines: String = lines
        .lines()
        .filter(|l| !l.starts_with("u root ") && !l.starts_with("g root "))
        .map(|l| format!("{l}\n"))
        .collect();
    if lines.is_empty() {
        return Ok(());
    }
    let path = root.join(IMAGE_SYSUSERS);
    std::fs::create_dir_all(path.parent().expect("has a parent"))?;
    crate::fsutil::write_atomic(
        &path,
        format!("# Users and groups of the container image (apt-ostree)\n{lines}").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteouts_never_follow_symlinks_out_of_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("etc/sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("precious"), "x").unwrap();
        std::fs::write(root.join("etc/sub/a"), "a").unwrap();
        std::fs::write(root.join("etc/b"), "b").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let layer = Layer {
            commit: String::new(),
            whiteouts: vec![
                "link/precious".into(),
                "etc/b".into(),
                "../outside/precious".into(),
            ],
            opaque_dirs: vec!["etc/sub".into(), "link".into()],
        };
        apply_whiteouts(&root, &layer).unwrap();
        assert!(
            outside.join("precious").exists(),
            "a whiteout followed a symlink"
        );
        assert!(!root.join("etc/b").exists());
        assert!(root.join("etc/sub").is_dir());
        assert!(
            !root.join("etc/sub/a").exists(),
            "opaque directory kept lower content"
        );
        assert!(std::fs::symlink_metadata(root.join("link")).is_ok());
    }
}
