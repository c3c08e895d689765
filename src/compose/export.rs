//! `compose export`: an update a machine takes with no network at all, from
//! a directory or a mounted USB stick (`apt-ostree upgrade --from DIR`).
//!
//! The layout is `ostree create-usb`'s: an archive repository in
//! `DIR/.ostree/repo` holding the ref, its commit with every object, the
//! commit's signatures (detached metadata) and a summary. The collection ID
//! the commit is bound to becomes the repository's, so that its summary names
//! it. The machine pulls from it as from its remote, with the remote's
//! signature checks; nothing here is trusted.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use ostree::gio::prelude::*;
use ostree::{gio, glib};

use crate::imgref::{ImageReference, Transport};

/// Where an export keeps its repository, under the directory given.
pub const EXPORT_REPO: &str = ".ostree/repo";

#[derive(Debug)]
pub struct Exported {
    pub commit: String,
    pub version: Option<String>,
    pub signed: bool,
    pub repo: PathBuf,
}

/// Write `reference` of the repository at `repo` into `dir`.
pub fn export(repo: &Path, reference: &str, dir: &Path) -> Result<Exported> {
    let source = ostree::Repo::new_for_path(repo);
    source
        .open(gio::Cancellable::NONE)
        .with_context(|| format!("Opening the repository {}", repo.display()))?;
    let commit = source
        .resolve_rev(reference, true)
        .with_context(|| format!("Resolving {reference}"))?
        .ok_or_else(|| anyhow!("{reference}: no such ref in {}", repo.display()))?
        .to_string();
    let (variant, _) = source.load_commit(&commit)?;
    let metadata = glib::VariantDict::new(Some(&variant.child_value(0)));
    let version = metadata.lookup::<String>("version").ok().flatten();
    let collection = metadata
        .lookup::<String>("ostree.collection-binding")
        .ok()
        .flatten();
    let signed = crate::sysroot::is_signed(&source, &commit)?;

    if !dir.is_dir() {
        anyhow::bail!("{}: not a directory (mount the stick first)", dir.display());
    }
    let path = dir.join(EXPORT_REPO);
    std::fs::create_dir_all(&path).with_context(|| format!("Creating {}", path.display()))?;
    let dest = ostree::Repo::new_for_path(&path);
    if path.join("config").exists() {
        dest.open(gio::Cancellable::NONE)
            .with_context(|| format!("Opening {}", path.display()))?;
        // The summary names the collection of what the export holds now.
        if dest.collection_id().map(|c| c.to_string()) != collection {
            let config = dest.copy_config();
            match &collection {
                Some(id) => config.set_string("core", "collection-id", id),
                None => {
                    let _ = config.remove_key("core", "collection-id");
                }
            }
            dest.write_config(&config)?;
            dest.reload_config(gio::Cancellable::NONE)?;
        }
    } else {
        if let Some(id) = &collection {
            dest.set_collection_id(Some(id))?;
        }
        dest.create(ostree::RepoMode::Archive, gio::Cancellable::NONE)
            .with_context(|| format!("Creating a repository in {}", path.display()))?;
    }
    let options = glib::VariantDict::new(None);
    options.insert("refs", vec![commit.clone()]);
    let source_url = gio::File::for_path(std::fs::canonicalize(repo)?).uri();
    dest.pull_with_options(
        source_url.as_str(),
        &options.end(),
        None,
        gio::Cancellable::NONE,
    )
    .context("Copying the commit")?;
    // The pull copies the commit's signatures (detached metadata) with it.
    dest.set_ref_immediate(None, reference, Some(&commit), gio::Cancellable::NONE)?;
    dest.regenerate_summary(None, gio::Cancellable::NONE)
        .context("Writing the summary")?;
    // The stick may be pulled out the moment this returns.
    nix::unistd::sync();
    Ok(Exported {
        commit,
        version,
        signed,
        repo: path,
    })
}

/// The repository of an export at `dir` (or `dir` itself when it is one),
/// as a URL libostree pulls from; why not, otherwise.
pub fn source_url(dir: &Path) -> std::result::Result<String, String> {
    check_volume(dir)?;
    let repo = [dir.join(EXPORT_REPO), dir.to_path_buf()]
        .into_iter()
        .find(|r| r.join("config").is_file() && r.join("objects").is_dir())
        .ok_or("no export there (no .ostree/repo): write one with `apt-ostree compose export`")?;
    Ok(gio::File::for_path(repo).uri().to_string())
}

/// A directory the daemon can read an update from: absolute, there, and not
/// hidden from it.
fn check_volume(dir: &Path) -> std::result::Result<(), String> {
    if !dir.is_absolute() {
        return Err("not an absolute path".into());
    }
    let meta = std::fs::metadata(dir).map_err(|e| {
        // apt-ostreed.service hides these from the daemon.
        let hidden = ["/home", "/root", "/tmp", "/var/tmp", "/run/user"]
            .iter()
            .any(|h| dir.starts_with(h));
        if hidden {
            format!("{e}; the daemon cannot see {} (its unit hides /home, /root and /tmp): mount the stick under /media or /mnt", dir.display())
        } else {
            e.to_string()
        }
    })?;
    if !meta.is_dir() {
        return Err("not a directory".into());
    }
    Ok(())
}

/// Where a volume carries a container image for `--from DIR`: an OCI layout,
/// as `skopeo copy docker://REGISTRY/NAME:TAG oci:DIR/oci:TAG` writes it.
pub const EXPORT_OCI: &str = "oci";

/// The image on the volume at `dir` that stands for `image` (a deployment's
/// reference): in the OCI layout `DIR/oci` (or `DIR` itself), the one tagged
/// with `image`'s tag, or the one with its digest when it is pinned.
pub fn image_source(
    dir: &Path,
    image: &ImageReference,
) -> std::result::Result<ImageReference, String> {
    check_volume(dir)?;
    let layout = [dir.join(EXPORT_OCI), dir.to_path_buf()]
        .into_iter()
        .find(|d| d.join("oci-layout").is_file() && d.join("index.json").is_file())
        .ok_or_else(|| {
            format!("no OCI layout there (no {EXPORT_OCI}/index.json): copy the image there with `skopeo copy docker://REGISTRY/NAME:TAG oci:DIR/{EXPORT_OCI}:TAG`")
        })?;
    // containers-image reads "oci:PATH:TAG": a ':' in PATH would be misread.
    if layout.to_string_lossy().contains(':') {
        return Err("the path contains ':', which an oci: reference cannot carry".into());
    }
    let index = layout.join("index.json");
    let text = std::fs::read(&index).map_err(|e| format!("{}: {e}", index.display()))?;
    let images = layout_images(&text).map_err(|e| format!("{}: {e}", index.display()))?;
    // A pinned image is looked up by its digest, under whatever tag it has.
    let tag = match image.pinned_digest() {
        Some(digest) => images
            .iter()
            .find(|(d, _)| d == digest)
            .map(|(_, tag)| tag.clone())
            .ok_or_else(|| {
                format!(
                    "the OCI layout {} has no tagged image {digest}",
                    layout.display()
                )
            })?,
        None => {
            let tag = image
                .tag()
                .ok_or_else(|| format!("{image} names no tag to look up on the volume"))?;
            if !images.iter().any(|(_, t)| t == tag) {
                let tags: Vec<&str> = images.iter().map(|(_, t)| t.as_str()).collect();
                return Err(format!(
                    "the OCI layout {} has no image tagged {tag} (it has: {})",
                    layout.display(),
                    if tags.is_empty() {
                        "none".to_string()
                    } else {
                        tags.join(", ")
                    }
                ));
            }
            tag.to_string()
        }
    };
    Ok(ImageReference {
        verification: image.verification,
        transport: Transport::Oci,
        name: format!("{}:{tag}", layout.display()),
    })
}

/// The tagged images an OCI layout's index.json names: (digest, tag).
fn layout_images(index: &[u8]) -> std::result::Result<Vec<(String, String)>, String> {
    let index: serde_json::Value = serde_json::from_slice(index).map_err(|e| e.to_string())?;
    Ok(index["manifests"]
        .as_array()
        .ok_or("no manifests")?
        .iter()
        .filter_map(|m| {
            let tag = m["annotations"]["org.opencontainers.image.ref.name"].as_str()?;
            Some((m["digest"].as_str()?.to_string(), tag.to_string()))
        })
        .collect())
}
