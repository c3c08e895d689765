//! The steps every update shares, whatever its source (a remote's ref, a
//! container image, a volume): the checks before a new base is deployed (an
//! older one, one that failed to boot), deploying it with the layered
//! packages re-applied, and the record of the last update a check found.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{start, Outcome, UpdateInfo};
use crate::dpkg;
use crate::error::Error;
use crate::origin::{Base, Origin};
use crate::progress::Sink;
use crate::sysroot::Sysroot;

pub(super) use crate::error::now;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpgradeOptions {
    pub check: bool,
    pub preview: bool,
    pub download_only: bool,
    pub allow_downgrade: bool,
    /// Deploy an update that failed to boot before.
    pub retry_failed: bool,
    /// Fetch from the export in this directory (`compose export`), not the network.
    pub from: Option<PathBuf>,
}

fn cached_update_path(sysroot: &Sysroot) -> PathBuf {
    sysroot.state_dir().join("cached-update.json")
}

/// The update last found by a check, if it is still newer than the default deployment.
pub fn cached_update(sysroot: &mut Sysroot) -> Option<UpdateInfo> {
    let text = std::fs::read_to_string(cached_update_path(sysroot)).ok()?;
    let update: UpdateInfo = serde_json::from_str(&text).ok()?;
    let start = start(sysroot).ok()?;
    let info = sysroot.commit_info(&start.commit).ok()?;
    // An image's update is named by its digest, an OSTree one by its commit.
    let current = match &start.origin.base {
        Base::Image(_) => sysroot.commit_info(&start.base).ok()?.image_digest?,
        Base::Refspec(_) => start.base.clone(),
    };
    (current != update.checksum && update.timestamp >= info.timestamp).then_some(update)
}

pub(super) fn store_cached_update(sysroot: &Sysroot, update: &UpdateInfo) -> Result<()> {
    let dir = sysroot.state_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("Creating {}", dir.display()))?;
    crate::fsutil::write_atomic(&cached_update_path(sysroot), &serde_json::to_vec(update)?)
        .context("Storing the cached update")
}

pub(super) fn clear_cached_update(sysroot: &Sysroot) {
    let _ = std::fs::remove_file(cached_update_path(sysroot));
}

/// Refuse to go back in time unless asked to.
pub(super) fn check_downgrade(
    sysroot: &mut Sysroot,
    current: &str,
    target: &str,
    allow: bool,
) -> Result<()> {
    if allow {
        return Ok(());
    }
    let (cur, tgt) = (sysroot.commit_info(current)?, sysroot.commit_info(target)?);
    if tgt.timestamp < cur.timestamp {
        return Err(Error::DowngradeRefused {
            current: cur.version.unwrap_or(cur.checksum),
            target: tgt.version.unwrap_or(tgt.checksum),
        }
        .into());
    }
    Ok(())
}

/// An update (base commit and requests) that used up its boot tries before
/// is deployed again only when asked; asking forgets that failure.
pub(super) fn refuse_failed_update(
    sysroot: &Sysroot,
    base: &str,
    origin: &Origin,
    retry: bool,
) -> Result<()> {
    let Some(failure) = crate::boot::failed_before(sysroot, base, origin) else {
        return Ok(());
    };
    if retry {
        crate::boot::forget_failures(sysroot, |f| f.update == failure.update)?;
        return Ok(());
    }
    Err(Error::UpdateFailedToBoot {
        update: failure.version.unwrap_or_else(|| base.to_string()),
        failed_at: failure.at as i64,
    }
    .into())
}

/// Deploy base commit `base` with `origin`, re-applying layered packages.
pub(super) fn deploy_base(
    sysroot: &mut Sysroot,
    sink: &Sink,
    base: &str,
    origin: &Origin,
) -> Result<Outcome> {
    let before = sysroot
        .ostree()
        .deployments()
        .into_iter()
        .next()
        .map(|d| d.csum().to_string());
    let commit = if origin.is_layered() {
        crate::layering::build(sysroot, sink, base, origin)?.commit
    } else {
        base.to_string()
    };
    let deployment = sysroot.deploy_commit(sink, &commit, origin, None)?;
    super::prune_refs(sysroot)?;
    let diff = match before {
        Some(b) => Some(dpkg::diff(
            &sysroot.packages(&b)?,
            &sysroot.packages(&deployment.checksum)?,
        )),
        None => None,
    };
    let staged = deployment.staged;
    Ok(Outcome {
        changed: true,
        message: format!(
            "{} {} ({})",
            if staged { "Staged" } else { "Deployed" },
            deployment.version.as_deref().unwrap_or("commit"),
            deployment.checksum
        ),
        // Only a running system reboots into the change.
        reboot_required: sysroot.is_booted(),
        deployment: Some(deployment),
        diff,
        update: None,
    })
}
