//! Container images as the source of the OS: pull an image from any
//! transport skopeo knows (a registry, an `oci:` directory, an archive,
//! containers-storage) into the repository as a deployable commit.
//!
//! 1. [`registry`]: skopeo's image proxy gives the manifest, the config and
//!    each layer blob; the containers ecosystem's configuration and policy apply.
//! 2. [`layer`]: each layer the repository does not hold yet becomes a commit
//!    of its own (`apt-ostree/layer/sha256/HEX`), its digest checked as it is
//!    read; layers that an earlier image brought are not fetched again.
//! 3. [`assemble`]: the layers are stacked (whiteouts applied) and converted
//!    to a deployable tree by compose's own rules, then committed with the
//!    image's digest, reference, version and layer list
//!    (`apt-ostree/image/sha256/HEX` keeps it until a deployment does).
//!
//! [`prune`] drops the refs of layers and images that no deployment needs.
//! [`encapsulate`] goes the other way: a composed commit as an OCI image.

mod assemble;
mod encapsulate;
mod layer;
pub mod lint;
mod registry;
mod stack;

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use ostree::gio;
use ostree::gio::prelude::*;

use crate::error::Error;
use crate::imgref::ImageReference;
use crate::progress::Sink;
use crate::sysroot::CommitInfo;
pub use assemble::IMAGE_SYSUSERS;
pub use encapsulate::{previous_layers, EncapsulateOptions, Encapsulated};
use layer::Layer;
pub use registry::Registry;

/// The label of encapsulated images that lists their packages, one
/// "NAME VERSION ARCHITECTURE" per line.
pub const PACKAGES_LABEL: &str = "org.aptostree.packages";
/// The diff ID of the top layer of the image that [`PACKAGES_LABEL`] was
/// written for. A `FROM` build inherits both labels and adds layers on
/// top, which may install or remove packages: its list is not trusted.
pub const PACKAGES_TOP_LAYER_LABEL: &str = "org.aptostree.packages.top-layer";

fn packages_label(packages: &[crate::dpkg::Package]) -> String {
    packages
        .iter()
        .map(|p| format!("{} {} {}", p.name, p.version, p.architecture))
        .collect::<Vec<_>>()
        .join("\n")
}

fn parse_packages_label(text: &str) -> Option<Vec<crate::dpkg::Package>> {
    text.lines()
        .map(|line| {
            let mut f = line.split(' ');
            Some(crate::dpkg::Package {
                name: f.next()?.to_string(),
                version: f.next()?.to_string(),
                architecture: f.next()?.to_string(),
            })
        })
        .collect()
}

/// What a registry says an image is now, without fetching its layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteImage {
    /// The manifest digest ("sha256:...").
    pub digest: String,
    /// `org.opencontainers.image.version`, else the `version` label.
    pub version: Option<String>,
    /// The image's creation time, seconds since the epoch.
    pub created: Option<u64>,
    /// Its packages, where the image lists them ([`PACKAGES_LABEL`]).
    pub packages: Option<Vec<crate::dpkg::Package>>,
}

/// An image pulled into the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    pub image: RemoteImage,
    /// The deployable commit.
    pub commit: String,
    /// Layers fetched now (the others were in the repository already).
    pub fetched_layers: usize,
    pub fetched_bytes: u64,
}

/// The ref that keeps an image `upgrade --download-only` fetched until a
/// deployment has it or something newer ([`prune`]).
pub const DOWNLOADED_REF: &str = "apt-ostree/downloaded-image";

fn image_ref(digest: &str) -> String {
    format!("apt-ostree/image/{}", digest.replace(':', "/"))
}

/// What the image with manifest `digest` says of itself (its config), read
/// through an open `registry`.
pub(crate) fn remote_image(registry: &Registry, digest: String) -> Result<RemoteImage> {
    let config = registry.config()?;
    let labels = config
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .unwrap_or_default();
    let version = labels
        .get("org.opencontainers.image.version")
        .or_else(|| labels.get("version"))
        .cloned();
    let top_layer = config.rootfs().diff_ids().last();
    let packages = labels
        .get(PACKAGES_LABEL)
        .filter(|_| top_layer.is_some() && labels.get(PACKAGES_TOP_LAYER_LABEL) == top_layer)
        .and_then(|l| parse_packages_label(l));
    let created = config
        .created()
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .and_then(|t| u64::try_from(t.timestamp()).ok());
    Ok(RemoteImage {
        digest,
        version,
        created,
        packages,
    })
}

/// Ask where `reference` points now (manifest and config only).
pub fn inspect(reference: &ImageReference) -> Result<RemoteImage> {
    let registry = Registry::open(reference)?;
    let manifest = registry.manifest()?;
    remote_image(&registry, manifest.digest)
}

/// The deployable commit of the image with manifest `digest`, if pulled before.
fn stored_image(repo: &ostree::Repo, digest: &str) -> Result<Option<String>> {
    Ok(repo
        .resolve_rev(&image_ref(digest), true)
        .with_context(|| format!("Looking up image {digest}"))?
        .map(|c| c.to_string()))
}

/// Pull `reference` into `repo` as a deployable commit. The commit records
/// `followed`, the reference the deployment follows: the same, or the
/// registry image that `reference` (a copy on a volume) stands for.
pub fn pull(
    repo: &ostree::Repo,
    reference: &ImageReference,
    followed: &ImageReference,
    sink: &Sink,
) -> Result<PulledImage> {
    let not_deployable = |reason: String| Error::ImageNotDeployable {
        image: reference.to_string(),
        reason,
    };
    let registry = sink.task("Opening the image", || Registry::open(reference))?;
    let manifest = registry.manifest()?;
    // A pinned reference gets that image or nothing, whatever the
    // transport (the layout transports cannot say a digest to skopeo).
    if let Some(pinned) = followed.pinned_digest() {
        if manifest.digest != pinned {
            return Err(Error::RevisionNotFound {
                revision: pinned.to_string(),
                reason: format!("{} holds {}", reference.transport_ref(), manifest.digest),
            }
            .into());
        }
    }
    let image = remote_image(&registry, manifest.digest.clone())?;
    sink.log(format!(
        "{reference}: {} {}",
        image.digest,
        image.version.as_deref().unwrap_or("(no version label)")
    ));
    if let Some(commit) = stored_image(repo, &image.digest)? {
        return Ok(PulledImage {
            image,
            commit,
            fetched_layers: 0,
            fetched_bytes: 0,
        });
    }
    let descriptors = manifest.manifest.layers();
    if descriptors.is_empty() {
        return Err(not_deployable("the image has no layers".into()).into());
    }
    let tmp = repo_tmp(repo)?;
    let work = tempfile::Builder::new()
        .prefix("apt-ostree-image-")
        .tempdir_in(&tmp)
        .context("Creating the work directory")?;
    let mut fetched = Fetched::default();
    let layer_digests: Vec<String> = descriptors.iter().map(|d| d.digest().to_string()).collect();
    let reference_text = followed.to_string();
    // All new layers in one repository transaction: one sync, and a
    // failure keeps none of them.
    let made = crate::sysroot::in_transaction(repo, || {
        fetch_layers(
            repo,
            &registry,
            descriptors,
            work.path(),
            sink,
            &mut fetched,
        )
    })
    .and_then(|layers| {
        sink.check_cancelled()?;
        sink.task("Assembling the image", || {
            assemble::assemble(
                repo,
                &layers,
                work.path(),
                &assemble::ImageMetadata {
                    reference: &reference_text,
                    digest: &image.digest,
                    layer_digests: &layer_digests,
                    version: image.version.as_deref(),
                    created: image.created,
                },
            )
            .map_err(|e| match e.downcast::<assemble::NotDeployable>() {
                Ok(bad) => not_deployable(bad.0).into(),
                Err(other) => other,
            })
        })
    });
    let commit = match made {
        Ok(commit) => commit,
        Err(e) => {
            // What this pull brought is dropped again: the image is unusable.
            for r in &fetched.refs {
                let _ = repo.set_ref_immediate(None, r, None, gio::Cancellable::NONE);
            }
            return Err(e);
        }
    };
    repo.set_ref_immediate(
        None,
        &image_ref(&image.digest),
        Some(&commit),
        gio::Cancellable::NONE,
    )
    .context("Keeping the image's commit")?;
    Ok(PulledImage {
        image,
        commit,
        fetched_layers: fetched.refs.len(),
        fetched_bytes: fetched.bytes,
    })
}

/// What one pull fetched: the refs of the layers it added, and their size.
#[derive(Default)]
struct Fetched {
    refs: Vec<String>,
    bytes: u64,
}

/// Each layer of the image, from the repository where an earlier image
/// brought it, else fetched and imported. A thread fetches the next blob
/// while this one imports the last (at most two blobs on disk at once), as
/// a download and an unpack overlap in apt: the network and skopeo wait on
/// other things than the import's CPU.
fn fetch_layers(
    repo: &ostree::Repo,
    registry: &Registry,
    descriptors: &[oci_spec::image::Descriptor],
    work: &std::path::Path,
    sink: &Sink,
    fetched: &mut Fetched,
) -> Result<Vec<Layer>> {
    let mut stored = Vec::with_capacity(descriptors.len());
    for d in descriptors {
        stored.push(Layer::stored(repo, d.digest().as_ref())?);
    }
    let missing: Vec<(usize, &oci_spec::image::Descriptor)> = descriptors
        .iter()
        .enumerate()
        .filter(|(i, _)| stored[*i].is_none())
        .collect();
    std::thread::scope(|scope| {
        let (blobs, received) = std::sync::mpsc::sync_channel::<Result<std::path::PathBuf>>(0);
        scope.spawn(move || {
            for (i, d) in missing {
                let blob = work.join(format!("blob-{i}"));
                let result = registry.fetch_blob(d, &blob).map(|()| blob);
                let failed = result.is_err();
                // The importer stopped (an error, or cancelled): so do we.
                if blobs.send(result).is_err() || failed {
                    return;
                }
            }
        });
        let mut layers = Vec::with_capacity(descriptors.len());
        for (i, (d, stored)) in descriptors.iter().zip(stored).enumerate() {
            if let Some(layer) = stored {
                layers.push(layer);
                continue;
            }
            sink.check_cancelled()?;
            let digest = d.digest().to_string();
            let title = format!(
                "Fetching layer {}/{} ({}, {})",
                i + 1,
                descriptors.len(),
                short(&digest),
                human_size(d.size())
            );
            let layer = sink.task(&title, || -> Result<Layer> {
                let blob = received.recv().context("The layer fetcher stopped")??;
                let layer = import_layer(repo, registry, &blob, &digest);
                std::fs::remove_file(&blob).ok();
                layer
            })?;
            fetched.refs.push(layer::layer_ref(&digest));
            fetched.bytes += d.size();
            layers.push(layer);
        }
        Ok(layers)
    })
}

/// Import one fetched blob; content that is not a valid layer makes the
/// image undeployable.
fn import_layer(
    repo: &ostree::Repo,
    registry: &Registry,
    blob: &std::path::Path,
    digest: &str,
) -> Result<Layer> {
    layer::import(repo, blob, digest).map_err(|e| match e.downcast::<layer::BadLayer>() {
        Ok(bad) => Error::ImageNotDeployable {
            image: registry.reference().to_string(),
            reason: format!("layer {digest}: {bad}"),
        }
        .into(),
        Err(other) => other.context(format!("Importing layer {digest}")),
    })
}

fn repo_tmp(repo: &ostree::Repo) -> Result<std::path::PathBuf> {
    let path = repo
        .path()
        .path()
        .context("The repository has no local path")?
        .join("tmp");
    std::fs::create_dir_all(&path)?;
    Ok(path)
}

fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |x| x.1);
    &hex[..hex.len().min(12)]
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1 << 10 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

/// Drop the refs of layers and images that none of `kept` (the base commits
/// of the deployments) is made of; `ostree prune` then frees their objects.
/// The image [`DOWNLOADED_REF`] keeps stays with its layers, until a
/// deployment's base is that image or newer.
pub fn prune(repo: &ostree::Repo, kept: &[CommitInfo]) -> Result<()> {
    let mut kept = kept.to_vec();
    if let Some(downloaded) = repo
        .resolve_rev(DOWNLOADED_REF, true)
        .context("Looking up the downloaded image")?
    {
        let info = CommitInfo::load(repo, &downloaded)?;
        let superseded = kept
            .iter()
            .any(|k| k.checksum == info.checksum || k.timestamp >= info.timestamp);
        if superseded {
            repo.set_ref_immediate(None, DOWNLOADED_REF, None, gio::Cancellable::NONE)
                .context("Dropping the downloaded image's ref")?;
        } else {
            kept.push(info);
        }
    }
    let layers: BTreeSet<String> = kept
        .iter()
        .flat_map(|c| c.image_layers.iter().map(|d| layer::layer_ref(d)))
        .collect();
    let images: BTreeSet<String> = kept
        .iter()
        .filter_map(|c| c.image_digest.as_deref().map(image_ref))
        .collect();
    for (prefix, keep) in [("apt-ostree/layer", &layers), ("apt-ostree/image", &images)] {
        let refs = repo
            .list_refs(Some(prefix), gio::Cancellable::NONE)
            .with_context(|| format!("Listing {prefix} refs"))?;
        for (name, _) in refs {
            // libostree may or may not strip the prefix from the names.
            let tail = name.trim_start_matches(prefix).trim_start_matches('/');
            let full = format!("{prefix}/{tail}");
            if !keep.contains(&full) {
                repo.set_ref_immediate(None, &full, None, gio::Cancellable::NONE)
                    .with_context(|| format!("Removing ref {full}"))?;
            }
        }
    }
    Ok(())
}

/// Write commit `commit` of `repo` as an image to `destination`, in
/// containers' transport syntax: `oci:DIR[:TAG]` is written directly; any
/// other destination (`registry:HOST/NAME:TAG`, `docker://...`,
/// `oci-archive:...`, `containers-storage:...`) is written to a layout in
/// `repo`'s tmp/ first and copied there by `skopeo copy`.
pub fn encapsulate(
    repo: &ostree::Repo,
    commit: &str,
    destination: &str,
    opts: &EncapsulateOptions,
    sink: &Sink,
) -> Result<Encapsulated> {
    let invalid = |reason: &str| Error::InvalidImageReference {
        reference: destination.to_string(),
        reason: reason.to_string(),
    };
    if let Some(rest) = destination.strip_prefix("oci:") {
        let (dir, tag) = match rest.rsplit_once(':') {
            Some((dir, tag)) if !tag.contains('/') => (dir, tag),
            _ => (rest, "latest"),
        };
        if dir.is_empty() {
            return Err(invalid("no directory").into());
        }
        return encapsulate::encapsulate_to_oci_dir(
            repo,
            commit,
            std::path::Path::new(dir),
            tag,
            opts,
            sink,
        );
    }
    let target = match destination.strip_prefix("registry:") {
        Some(name) => format!("docker://{name}"),
        None if ["docker://", "oci-archive:", "containers-storage:", "dir:"]
            .iter()
            .any(|p| destination.starts_with(p)) =>
        {
            destination.to_string()
        }
        None => {
            return Err(invalid(
                "expected oci:DIR[:TAG], registry:NAME, docker://NAME, oci-archive:FILE or containers-storage:NAME",
            )
            .into())
        }
    };
    let layout = tempfile::Builder::new()
        .prefix("apt-ostree-encapsulate-")
        .tempdir_in(repo_tmp(repo)?)?;
    let written =
        encapsulate::encapsulate_to_oci_dir(repo, commit, layout.path(), "latest", opts, sink)?;
    sink.task(
        &format!("Copying the image to {target}"),
        || -> Result<()> {
            let logged = crate::process::run_logged(
                std::process::Command::new("skopeo")
                    .arg("copy")
                    .arg("--preserve-digests")
                    .arg(format!("oci:{}:latest", layout.path().display()))
                    .arg(&target),
                sink,
            )
            .context("Running skopeo")?;
            anyhow::ensure!(
                logged.status.success(),
                "skopeo copy to {target} failed: {}",
                logged.text
            );
            Ok(())
        },
    )?;
    Ok(written)
}
