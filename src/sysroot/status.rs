//! What `status` reports: the deployments of a sysroot and what each one is.

use std::path::PathBuf;

use anyhow::Result;

use super::Sysroot;
use crate::origin::{Base, Origin};

/// The kernel arguments a deployment records (a quoted value keeps its spaces). `ostree=` is ostree's own,
/// rewritten on every deploy: not the administrator's to change, so not
/// shown. None when the deployment records none.
fn recorded_kernel_arguments(d: &ostree::Deployment) -> Option<Vec<String>> {
    let options = d.bootconfig()?.get("options")?;
    Some(
        crate::kargs::split_command_line(&options)
            .into_iter()
            .filter(|a| !a.starts_with("ostree="))
            .collect(),
    )
}

impl Sysroot {
    /// The kernel arguments `d` boots with. A deployment staged without a
    /// change of arguments records none: libostree gives it the booted
    /// deployment's when it finalizes it, and so does this.
    pub fn kernel_arguments_of(&self, d: &ostree::Deployment) -> Vec<String> {
        recorded_kernel_arguments(d)
            .or_else(|| {
                d.is_staged()
                    .then(|| self.inner.booted_deployment())
                    .flatten()
                    .and_then(|b| recorded_kernel_arguments(&b))
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentStatus {
    pub id: String,
    pub osname: String,
    pub checksum: String,
    pub base_checksum: Option<String>,
    pub serial: i32,
    pub index: usize,
    pub version: Option<String>,
    pub timestamp: u64,
    pub refspec: Option<String>,
    pub container_image_reference: Option<String>,
    pub image_digest: Option<String>,
    pub pinned_revision: Option<String>,
    pub booted: bool,
    pub staged: bool,
    pub pinned: bool,
    pub is_default: bool,
    pub rollback: bool,
    pub unlocked: String,
    /// Live changes of the booted deployment (apply-live), if any.
    pub live: Option<crate::live::LiveState>,
    /// Its boot assessment (docs/updates.md), when there is one to show.
    pub boot: Option<crate::bootcount::BootState>,
    pub requested_packages: Vec<String>,
    pub requested_local_packages: Vec<String>,
    pub layered_packages: Vec<String>,
    pub removed_base_packages: Vec<String>,
    pub replaced_base_packages: Vec<String>,
    pub kernel_arguments: Vec<String>,
    pub regenerate_initramfs: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysrootStatus {
    pub path: PathBuf,
    pub deployments: Vec<DeploymentStatus>,
}

impl SysrootStatus {
    /// The default deployment (the next boot's); NoDeployment when there is none.
    pub fn into_default(self) -> Result<DeploymentStatus> {
        self.deployments.into_iter().next().ok_or_else(|| {
            crate::error::Error::NoDeployment {
                reason: "the sysroot has no deployments".into(),
            }
            .into()
        })
    }
}

impl Sysroot {
    /// Index of the deployment `rollback` would make the default, if any.
    ///
    /// Booted in the default deployment: the next one of the same OS.
    /// Booted in another one (an update is pending): the booted one.
    /// Not booted (an image being prepared): the second one.
    pub fn rollback_index(&self) -> Option<usize> {
        let deployments = self.inner.deployments();
        let first = deployments.first()?;
        let booted = self.inner.booted_deployment();
        match booted.and_then(|b| deployments.iter().position(|d| d.equal(&b))) {
            Some(0) | None => deployments
                .iter()
                .enumerate()
                .skip(1)
                .find(|(_, d)| d.osname() == first.osname() && !d.is_staged())
                .map(|(i, _)| i),
            Some(i) => Some(i),
        }
    }

    pub fn status(&mut self) -> Result<SysrootStatus> {
        self.reload(false)?;
        let booted = self.inner.booted_deployment();
        let rollback = self.rollback_index();
        let counter = crate::bootcount::Counter::read(&self.path);
        let boot_failures = crate::bootcount::failures(&self.state_dir());
        let mut deployments = Vec::new();
        for (index, d) in self.inner.deployments().into_iter().enumerate() {
            let checksum = d.csum().to_string();
            let info = self.commit_info(&checksum)?;
            let origin = d.origin().map(|kf| Origin::from_keyfile(&kf)).transpose();
            // A deployment with an unreadable origin is still shown; its refspec is unknown.
            let origin = origin.unwrap_or_else(|e| {
                tracing::warn!("Origin of deployment {checksum}: {e:#}");
                None
            });
            let kernel_arguments = self.kernel_arguments_of(&d);
            let origin = origin.unwrap_or_default();
            let (refspec, container_image_reference) = match &origin.base {
                Base::Refspec(r) if r.is_empty() => (None, None),
                Base::Refspec(r) => (Some(r.clone()), None),
                Base::Image(i) => (None, Some(i.to_string())),
            };
            // An image's digest is recorded on its commit, the base of a layered one.
            let image_digest = match &info.base_checksum {
                Some(base) => self.commit_info(base).ok().and_then(|b| b.image_digest),
                None => info.image_digest.clone(),
            };
            let booted_here = booted.as_ref().is_some_and(|b| b.equal(&d));
            let live = (booted_here && self.path == std::path::Path::new("/"))
                .then(|| crate::live::read_state(&super::deployment_name(&d)))
                .flatten();
            deployments.push(DeploymentStatus {
                id: super::deployment_id(&d),
                osname: d.osname().to_string(),
                base_checksum: info.base_checksum.clone(),
                serial: d.deployserial(),
                index,
                version: info.version.clone(),
                timestamp: info.timestamp,
                refspec,
                container_image_reference,
                image_digest,
                pinned_revision: origin.override_commit.clone(),
                booted: booted_here,
                staged: d.is_staged(),
                pinned: d.is_pinned(),
                is_default: index == 0,
                rollback: rollback == Some(index),
                unlocked: ostree::Deployment::unlocked_state_to_string(d.unlocked()).to_string(),
                live,
                boot: crate::bootcount::state_of(
                    &counter,
                    &boot_failures,
                    &super::deployment_name(&d),
                ),
                requested_packages: origin.requested_packages.iter().cloned().collect(),
                requested_local_packages: origin.requested_local_packages.keys().cloned().collect(),
                layered_packages: info.layered_packages.clone(),
                removed_base_packages: origin.override_remove.iter().cloned().collect(),
                replaced_base_packages: origin.override_replace.iter().cloned().collect(),
                kernel_arguments,
                regenerate_initramfs: origin.initramfs_args.is_some(),
                checksum,
            });
        }
        Ok(SysrootStatus {
            path: self.path.clone(),
            deployments,
        })
    }
}

impl Sysroot {
    /// The default pair for `db diff`: from the booted deployment (else the
    /// rollback one, else the default) to the default deployment.
    pub fn default_diff_pair(&self) -> Result<(String, String)> {
        let deployments = self.inner.deployments();
        let default = deployments
            .first()
            .ok_or_else(|| crate::error::Error::NoDeployment {
                reason: "the sysroot has no deployments".into(),
            })?;
        let from = self
            .inner
            .booted_deployment()
            .or_else(|| self.rollback_index().map(|i| super::same(&deployments[i])))
            .unwrap_or_else(|| super::same(default));
        Ok((from.csum().to_string(), default.csum().to_string()))
    }
}
