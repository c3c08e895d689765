//! Writing a new default deployment: the one step every change ends with.
//!
//! On a booted system the deployment is staged: libostree writes it now and
//! `ostree-finalize-staged.service` finishes it at shutdown, so /etc edits
//! made until then are merged too. Elsewhere (an image being prepared, a test
//! sysroot) it is written directly. Either way the swap of the boot
//! configuration is atomic: a crash leaves the old set or the complete new one.

use anyhow::{Context, Result};
use ostree::gio;

use super::{DeploymentStatus, Sysroot};
use crate::error::Error;
use crate::origin::Origin;
use crate::progress::Sink;

impl Sysroot {
    /// The deployment whose /etc and origin a new deployment starts from:
    /// the booted one, else the default one.
    pub fn merge_deployment(&self) -> Result<ostree::Deployment> {
        self.inner
            .booted_deployment()
            .or_else(|| {
                self.inner
                    .deployments()
                    .into_iter()
                    .find(|d| !d.is_staged())
            })
            .or_else(|| self.inner.deployments().into_iter().next())
            .ok_or_else(|| {
                Error::NoDeployment {
                    reason: "the sysroot has no deployments".into(),
                }
                .into()
            })
    }

    /// The default deployment (what boots next): changes start from it so
    /// that they compose.
    pub fn default_deployment(&self) -> Result<ostree::Deployment> {
        self.inner.deployments().into_iter().next().ok_or_else(|| {
            Error::NoDeployment {
                reason: "the sysroot has no deployments".into(),
            }
            .into()
        })
    }

    /// The origin file of `deployment`.
    pub fn origin_of(deployment: &ostree::Deployment) -> Result<Origin> {
        let origin = deployment.origin().ok_or_else(|| Error::NoDeployment {
            reason: "the deployment has no origin file".into(),
        })?;
        Origin::from_keyfile(&origin)
    }

    /// True when changes are staged rather than written (a booted system).
    pub fn is_booted(&self) -> bool {
        self.inner.booted_deployment().is_some()
    }

    /// Deploy `commit` with `origin` as the new default and return its status.
    /// `kargs` replaces the kernel arguments; `None` keeps the default
    /// deployment's, the one the next boot would have started.
    pub fn deploy_commit(
        &mut self,
        sink: &Sink,
        commit: &str,
        origin: &Origin,
        kargs: Option<&[String]>,
    ) -> Result<DeploymentStatus> {
        let merge = self.merge_deployment()?;
        let osname = merge.osname().to_string();
        // Last point at which a cancel leaves everything as it was.
        sink.check_cancelled()?;
        let title = if self.is_booted() {
            "Staging deployment"
        } else {
            "Writing deployment"
        };
        sink.task_begin(title);
        let keyfile = origin.to_keyfile();
        // libostree would take the merge deployment's arguments, which is
        // the booted one: a change staged on top of `kargs` would drop
        // the arguments that `kargs` had staged.
        let pending = match kargs {
            Some(_) => Vec::new(),
            None => self.kernel_arguments_of(&self.default_deployment()?),
        };
        let kargs = kargs.or((!pending.is_empty()).then_some(pending.as_slice()));
        let argv: Option<Vec<&str>> = kargs.map(|k| k.iter().map(String::as_str).collect());
        let opts = ostree::SysrootDeployTreeOpts {
            override_kernel_argv: argv.as_deref(),
            ..Default::default()
        };
        let os = &self.inner;
        if self.is_booted() {
            os.stage_tree_with_options(
                Some(&osname),
                commit,
                Some(&keyfile),
                Some(&merge),
                &opts,
                gio::Cancellable::NONE,
            )
            .with_context(|| format!("Staging {commit}"))?;
        } else {
            let new = os
                .deploy_tree_with_options(
                    Some(&osname),
                    commit,
                    Some(&keyfile),
                    Some(&merge),
                    Some(&opts),
                    gio::Cancellable::NONE,
                )
                .with_context(|| format!("Deploying {commit}"))?;
            os.simple_write_deployment(
                Some(&osname),
                &new,
                Some(&merge),
                ostree::SysrootSimpleWriteDeploymentFlags::NONE,
                gio::Cancellable::NONE,
            )
            .with_context(|| format!("Writing the deployment of {commit}"))?;
            self.follow_default_in_grub_config();
        }
        reap_exited_children();
        sink.task_end(title);
        self.reload(true)?;
        let status = self.status()?;
        let written = status
            .deployments
            .into_iter()
            .next()
            .context("No deployment after writing one")?;
        tracing::info!(
            MESSAGE_ID = crate::logging::message_id::DEPLOYMENT_WRITTEN,
            APT_OSTREE_TRANSACTION = sink.id(),
            "Deployment {} written{}",
            written.id,
            if written.staged { " (staged)" } else { "" }
        );
        Ok(written)
    }

    /// Replace the list of deployments (rollback, cleanup).
    pub fn write_deployments(&mut self, deployments: &[ostree::Deployment]) -> Result<()> {
        self.inner
            .write_deployments(deployments, gio::Cancellable::NONE)
            .context("Writing the deployment list")?;
        reap_exited_children();
        self.follow_default_in_grub_config();
        self.reload(true)
    }

    /// After a write: GRUB's boot counting must follow the new default
    /// ([`crate::bootcount::grub::refresh_grub_config`]). The deployments are written
    /// by then, so a failure here is a warning.
    fn follow_default_in_grub_config(&self) {
        if let Err(e) = crate::bootcount::grub::refresh_grub_config(&self.path) {
            tracing::warn!("Boot counting may follow the previous default: {e:#}");
        }
    }
}

/// libostree's freeze watchdog (forked around every deployment write)
/// daemonizes by forking again; the intermediate child exits at once and is
/// ours to reap, or it stays a zombie for as long as the daemon runs. Called
/// right after libostree returns, on the transaction's thread: no other
/// thread waits for a child then (one transaction at a time).
fn reap_exited_children() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}
