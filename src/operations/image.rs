//! Upgrade and rebase for deployments that follow a container image.
//!
//! The image is pulled into the repository as a deployable commit
//! ([`crate::container`]); from there on it is a base like any other:
//! layered packages are built on it again, /etc is merged, and the previous
//! deployment stays for rollback.

use std::path::Path;

use anyhow::{Context, Result};

use super::steps::{
    check_downgrade, clear_cached_update, deploy_base, now, refuse_failed_update,
    store_cached_update,
};
use super::{start, Outcome, Start, UpdateInfo, UpgradeOptions};
use crate::container;
use crate::dpkg;
use crate::error::Error;
use crate::imgref::{is_digest, ImageReference, Verification};
use crate::origin::Base;
use crate::progress::Sink;
use crate::sysroot::Sysroot;

fn update_info(image: &ImageReference, remote: &container::RemoteImage) -> UpdateInfo {
    UpdateInfo {
        refspec: image.to_string(),
        checksum: remote.digest.clone(),
        version: remote.version.clone(),
        timestamp: remote.created.unwrap_or(0),
        checked_at: now(),
        diff: None,
    }
}

fn fetched(pulled: &container::PulledImage) -> String {
    match pulled.fetched_layers {
        0 => "no layer fetched".to_string(),
        n => format!("{n} layers fetched ({} bytes)", pulled.fetched_bytes),
    }
}

/// `upgrade` of an image deployment: ask the registry where the reference
/// points now; pull and deploy it if that is another image.
pub fn upgrade(
    sysroot: &mut Sysroot,
    sink: &Sink,
    opts: &UpgradeOptions,
    start: Start,
    image: &ImageReference,
) -> Result<Outcome> {
    let current = sysroot.commit_info(&start.base)?;
    if let Some(digest) = image.pinned_digest() {
        return Ok(Outcome::unchanged(format!(
            "No upgrade available: the deployment is pinned to {digest}"
        )));
    }
    let source = source_of(image, opts.from.as_deref())?;
    let check_only = opts.check && !opts.preview && !opts.download_only;
    if opts.preview && !opts.download_only {
        // An image that lists its packages is previewed without a layer.
        let remote = container::inspect(&source)?;
        if let Some(packages) = &remote.packages {
            if current.image_digest.as_deref() == Some(remote.digest.as_str()) {
                clear_cached_update(sysroot);
                return Ok(Outcome::unchanged("No upgrade available."));
            }
            let mut update = update_info(image, &remote);
            update.diff = Some(dpkg::diff(&sysroot.packages(&start.base)?, packages));
            store_cached_update(sysroot, &update)?;
            return Ok(Outcome {
                changed: true,
                diff: update.diff.clone(),
                update: Some(update),
                ..Default::default()
            });
        }
    }
    let remote = if check_only {
        container::inspect(&source)?
    } else {
        // Pulling an image the repository has costs one manifest request.
        let pulled = container::pull(&sysroot.repo(), &source, image, sink)?;
        if current.image_digest.as_deref() != Some(pulled.image.digest.as_str()) {
            sink.log(fetched(&pulled));
            check_downgrade(sysroot, &start.base, &pulled.commit, opts.allow_downgrade)?;
            let mut update = update_info(image, &pulled.image);
            if opts.preview || opts.download_only {
                if opts.preview {
                    let base = start.base.clone();
                    update.diff = Some(dpkg::diff(
                        &sysroot.packages(&base)?,
                        &sysroot.packages(&pulled.commit)?,
                    ));
                }
                store_cached_update(sysroot, &update)?;
                if opts.download_only {
                    // Kept through cleanups until deployed or superseded.
                    sysroot
                        .repo()
                        .set_ref_immediate(
                            None,
                            container::DOWNLOADED_REF,
                            Some(&pulled.commit),
                            ostree::gio::Cancellable::NONE,
                        )
                        .context("Keeping the downloaded image")?;
                }
                return Ok(Outcome {
                    changed: true,
                    message: if opts.download_only {
                        format!(
                            "Image {} downloaded; `apt-ostree upgrade` deploys it",
                            pulled.image.digest
                        )
                    } else {
                        String::new()
                    },
                    diff: update.diff.clone(),
                    update: Some(update),
                    ..Default::default()
                });
            }
            refuse_failed_update(sysroot, &pulled.commit, &start.origin, opts.retry_failed)?;
            let mut outcome = deploy_base(sysroot, sink, &pulled.commit, &start.origin)?;
            clear_cached_update(sysroot);
            outcome.message = format!("{} ({})", outcome.message, fetched(&pulled));
            return Ok(outcome);
        }
        pulled.image
    };
    if current.image_digest.as_deref() == Some(remote.digest.as_str()) {
        clear_cached_update(sysroot);
        return Ok(Outcome::unchanged("No upgrade available."));
    }
    let update = update_info(image, &remote);
    store_cached_update(sysroot, &update)?;
    Ok(Outcome {
        changed: true,
        update: Some(update),
        ..Default::default()
    })
}

/// Where `image` is pulled from: itself, or with `--from DIR` its copy on a
/// volume (an OCI layout, see [`super::offline::image_source`]). The
/// deployment keeps following `image`, so the next network update continues
/// from there.
fn source_of(image: &ImageReference, from: Option<&Path>) -> Result<ImageReference> {
    let Some(dir) = from else {
        return Ok(image.clone());
    };
    if image.verification == Verification::Signed {
        return Err(Error::NotSupported {
            reason: format!(
                "--from {} for {image}: its signatures are checked with the policy for its \
                 registry, which does not carry over to a directory",
                dir.display()
            ),
        }
        .into());
    }
    super::offline::image_source(dir, image).map_err(|reason| {
        Error::InvalidUpdateDirectory {
            path: dir.display().to_string(),
            reason,
        }
        .into()
    })
}

/// `rebase` to a container image (a digest as the revision pins it), from
/// its registry or from a copy on a volume (`from`).
pub fn rebase(
    sysroot: &mut Sysroot,
    sink: &Sink,
    image: ImageReference,
    revision: Option<&str>,
    from: Option<&Path>,
) -> Result<Outcome> {
    let image = match revision {
        None => image,
        Some(digest) if image.pinned_digest().is_none() => pinned(&image, digest)?,
        Some(other) => {
            return Err(revision_error(
                other,
                "the reference names a digest already; give one or the other",
            ))
        }
    };
    let origin = start(sysroot)?.origin;
    let pulled = pull(sysroot, sink, &image, from)?;
    let mut outcome = deploy_image(sysroot, sink, &pulled, origin, &image)?;
    outcome.message = format!("Rebased to {image}: {}", outcome.message);
    Ok(outcome)
}

/// `deploy sha256:D` on a deployment that follows `image`: pins it to that
/// digest. An image older than the one deployed needs `allow_downgrade`,
/// as an older commit does.
pub fn deploy(
    sysroot: &mut Sysroot,
    sink: &Sink,
    image: &ImageReference,
    revision: &str,
    allow_downgrade: bool,
    from: Option<&Path>,
) -> Result<Outcome> {
    let image = pinned(image, revision)?;
    let Start { origin, base, .. } = start(sysroot)?;
    if sysroot.commit_info(&base)?.image_digest.as_deref() == Some(revision) {
        return Ok(Outcome::unchanged(format!(
            "{revision} is already deployed"
        )));
    }
    let pulled = pull(sysroot, sink, &image, from)?;
    check_downgrade(sysroot, &base, &pulled.commit, allow_downgrade)?;
    deploy_image(sysroot, sink, &pulled, origin, &image)
}

/// `image` pinned to `revision`, which must be a digest.
fn pinned(image: &ImageReference, revision: &str) -> Result<ImageReference> {
    if !is_digest(revision) {
        return Err(revision_error(
            revision,
            "the revision of an image is its digest (sha256:HEX)",
        ));
    }
    Ok(image.with_digest(revision))
}

fn revision_error(revision: &str, reason: &str) -> anyhow::Error {
    Error::RevisionNotFound {
        revision: revision.to_string(),
        reason: reason.into(),
    }
    .into()
}

/// Pull `image` (from its copy in `from`, if given); a pinned image must
/// come with the digest it names (checked by the pull).
fn pull(
    sysroot: &mut Sysroot,
    sink: &Sink,
    image: &ImageReference,
    from: Option<&Path>,
) -> Result<container::PulledImage> {
    let source = source_of(image, from)?;
    let pulled = container::pull(&sysroot.repo(), &source, image, sink)?;
    sink.log(fetched(&pulled));
    Ok(pulled)
}

/// Deploy the pulled image with `origin` now following `image`.
fn deploy_image(
    sysroot: &mut Sysroot,
    sink: &Sink,
    pulled: &container::PulledImage,
    mut origin: crate::origin::Origin,
    image: &ImageReference,
) -> Result<Outcome> {
    origin.base = Base::Image(image.clone());
    origin.override_commit = None;
    refuse_failed_update(sysroot, &pulled.commit, &origin, false)?;
    deploy_base(sysroot, sink, &pulled.commit, &origin)
}
