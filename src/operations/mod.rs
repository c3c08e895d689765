//! What a user asks for: upgrade, rebase, deploy, rollback, cleanup, package
//! changes, kernel arguments, initramfs, refresh-md.
//!
//! Each operation decides what the next deployment is and hands the work to
//! the engines below it: [`crate::layering`] builds layered commits and
//! [`crate::sysroot`] (libostree) fetches and writes deployments. Every
//! operation that makes a new deployment starts from the same place, chosen
//! by [`start`]: one rule, so that no operation can pick another.

mod bootloader;
mod image;
mod lifecycle;
mod live;
mod offline;
mod outcome;
mod packages;
mod search;
mod steps;
mod update;

use anyhow::Result;

pub use crate::kargs::KargsChange;
pub use bootloader::{bootloader_status, update_bootloader};
pub use lifecycle::{change_kernel_arguments, cleanup, rollback, set_pinned, CleanupOptions};
pub use live::{apply_live, usroverlay, LiveOptions};
pub use outcome::{Outcome, UpdateInfo};
pub use packages::{
    change_packages, reset, set_initramfs, LocalPackage, PackageChange, PackageRequest,
    ResetOptions,
};
pub use search::{search_scope, SearchMatch, SearchScope};
pub use steps::{cached_update, UpgradeOptions};
pub use update::{deploy_revision, rebase, refresh_metadata, upgrade, versions, ImageVersion};

use crate::origin::Origin;
use crate::sysroot::Sysroot;

/// Where a change starts from.
///
/// The origin (refspec, packages, overrides, pins) and the base image come
/// from the default deployment, which is the pending one when a change is
/// already staged, so that changes made before a reboot compose
/// (rpm-ostree's rule). The new deployment's /etc comes from the booted one:
/// [`Sysroot::deploy_commit`] merges it from [`Sysroot::merge_deployment`].
pub struct Start {
    pub deployment: ostree::Deployment,
    /// The default deployment's commit (layered or not).
    pub commit: String,
    /// The base image under it: the commit itself when nothing is layered.
    pub base: String,
    pub origin: Origin,
}

/// The one rule that chooses where a change starts from; see [`Start`].
pub fn start(sysroot: &mut Sysroot) -> Result<Start> {
    let deployment = sysroot.default_deployment()?;
    let origin = Sysroot::origin_of(&deployment)?;
    let commit = deployment.csum().to_string();
    let base = sysroot.commit_info(&commit)?.base().to_string();
    Ok(Start {
        deployment,
        commit,
        base,
        origin,
    })
}

/// Drop the refs that keep base commits, image layers and images alive
/// once no deployment is built on them (`ostree prune` frees the objects).
fn prune_refs(sysroot: &mut Sysroot) -> Result<()> {
    crate::layering::prune_base_refs(sysroot)?;
    let live_now = sysroot
        .ostree()
        .booted_deployment()
        .and_then(|b| crate::live::read_state(&crate::sysroot::deployment_name(&b)));
    if live_now.is_none() {
        // Live changes end with the boot; so do the commits they showed.
        for name in [crate::live::LIVE_REF, crate::live::LIVE_PREVIOUS_REF] {
            let _ =
                sysroot
                    .repo()
                    .set_ref_immediate(None, name, None, ostree::gio::Cancellable::NONE);
        }
    }
    let mut kept = Vec::new();
    for d in sysroot.ostree().deployments() {
        let info = sysroot.commit_info(&d.csum())?;
        kept.push(sysroot.commit_info(info.base())?);
    }
    crate::container::prune(&sysroot.repo(), &kept)
}
