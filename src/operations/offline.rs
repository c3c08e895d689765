//! The offline sources of `upgrade/rebase/deploy --from DIR`: an OSTree
//! export (`compose export`, `ostree create-usb`'s layout) or an OCI layout
//! with the image a deployment follows, on a mounted volume. What is there
//! is checked as the network would be (signatures, digests); a volume the
//! daemon cannot see, or one without an update, is a clear error.

use std::path::Path;

use ostree::gio;
use ostree::gio::prelude::*;

use crate::compose::export::EXPORT_REPO;
use crate::imgref::{ImageReference, Transport};

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
