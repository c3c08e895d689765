//! An image's layers made into one deployable commit.
//!
//! The layers are stacked inside the repository ([`super::stack`]: whiteouts
//! applied, links resolved only within the stacked tree), and the stacked
//! tree is checked out, by hard links, into a new directory on the
//! repository's file system. That checkout is a plain Debian root file
//! system, which becomes deployable by exactly the conversion `compose
//! tree` applies ([`crate::tree::make_deployable`]): /etc to /usr/etc,
//! dpkg's database into /usr, /var to tmpfiles.d, the kernel from /boot or
//! /usr/lib/modules. Users and groups the image defines also become
//! sysusers.d entries, so that a machine whose /etc/passwd was edited
//! locally (the /etc merge keeps it) still gets the users a new image adds.
//!
//! The conversion goes through [`crate::fsutil::Beneath`] (no link of the
//! image is followed out of it) and only renames, unlinks and creates
//! files, never writes into one, so the hard links cannot write through to
//! repository objects; the commit reads back only what the conversion made
//! (the checkout's device/inode cache knows the rest).

use std::path::Path;

use anyhow::{Context, Result};
use ostree::{gio, glib};

use super::layer::Layer;
use crate::fsutil::Beneath;
use crate::sysroot::{commit_directory, commit_tree, keys, NewCommit};

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

/// Stack `layers` (bottom first), check the result out in `work`, convert
/// it, and commit.
pub fn assemble(
    repo: &ostree::Repo,
    layers: &[Layer],
    work: &Path,
    image: &ImageMetadata,
) -> Result<String> {
    let stacked = commit_tree(
        repo,
        NewCommit {
            parent: None,
            subject: &format!("stacked layers of {}", image.digest),
            metadata: glib::VariantDict::new(None),
            refs: Vec::new(),
            set_ref: None,
            timestamp: Some(0),
            bootable: false,
        },
        || {
            let dirmeta = super::layer::default_dirmeta(repo)?;
            super::stack::stack(repo, layers, &dirmeta)
                .map_err(|e| NotDeployable(format!("{e:#}")).into())
        },
    )?;
    let root = work.join("rootfs");
    let devino = ostree::RepoDevInoCache::new();
    let opts = ostree::RepoCheckoutAtOptions {
        mode: ostree::RepoCheckoutMode::None,
        no_copy_fallback: true,
        devino_to_csum_cache: Some(devino.clone()),
        ..Default::default()
    };
    repo.checkout_at(
        Some(&opts),
        libc::AT_FDCWD,
        &root,
        &stacked,
        gio::Cancellable::NONE,
    )
    .with_context(|| format!("Checking out the stacked layers ({stacked})"))?;
    let conversion = crate::tree::make_deployable_confined(&root)
        .map_err(|e| NotDeployable(format!("{e:#}")))?;
    let tree = Beneath::open(&root)?;
    write_sysusers(&tree)?;
    let packages = crate::dpkg::packages_of_tree(&tree)?;
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
fn write_sysusers(tree: &Beneath) -> Result<()> {
    let lines = crate::tree::new_sysusers(
        "",
        &tree.read_text("usr/etc/passwd")?,
        "",
        &tree.read_text("usr/etc/group")?,
    );
    // root exists everywhere; systemd-sysusers refuses to redefine it anyway.
    let lines: String = lines
        .lines()
        .filter(|l| !l.starts_with("u root ") && !l.starts_with("g root "))
        .map(|l| format!("{l}\n"))
        .collect();
    if lines.is_empty() {
        return Ok(());
    }
    tree.create_dir_all(
        Path::new(IMAGE_SYSUSERS)
            .parent()
            .and_then(Path::to_str)
            .unwrap_or(""),
    )?;
    tree.write(
        IMAGE_SYSUSERS,
        format!("# Users and groups of the container image (apt-ostree)\n{lines}").as_bytes(),
        0o644,
    )
}
