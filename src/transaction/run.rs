//! Carrying out a job on the transaction's own thread.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use ostree::glib;

use super::{Job, Request};
use crate::error::Error;
use crate::outcome::Outcome;
use crate::progress::Sink;
use crate::sysroot::{Sysroot, UpgradeOptions};

/// What the automatic update timer does (`AutomaticUpdatePolicy=` in apt-ostreed.conf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutomaticUpdatePolicy {
    #[default]
    None,
    /// Look for an update and remember it (shown by `status`).
    Check,
    /// Download and stage the update; it takes effect on the next reboot.
    Stage,
}

impl AutomaticUpdatePolicy {
    pub fn parse(s: &str) -> Option<AutomaticUpdatePolicy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "off" => Some(AutomaticUpdatePolicy::None),
            "check" => Some(AutomaticUpdatePolicy::Check),
            "stage" | "ex-stage" => Some(AutomaticUpdatePolicy::Stage),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            AutomaticUpdatePolicy::None => "none",
            AutomaticUpdatePolicy::Check => "check",
            AutomaticUpdatePolicy::Stage => "stage",
        }
    }
}

/// Take ostree's sysroot lock, waiting (cancellably) if another program holds it.
fn lock(sysroot: &Sysroot, sink: &Sink) -> Result<()> {
    let mut announced = false;
    loop {
        if sysroot.ostree().try_lock().context("Locking the sysroot")? {
            return Ok(());
        }
        if !announced {
            sink.log("Waiting for another program to release the sysroot lock");
            announced = true;
        }
        sink.check_cancelled()?;
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn dispatch(sysroot: &mut Sysroot, job: &Job, sink: &Sink) -> Result<Outcome> {
    match &job.request {
        Request::Upgrade(opts) => sysroot.upgrade(sink, opts),
        Request::AutomaticUpdate(policy) => match policy {
            AutomaticUpdatePolicy::None => Ok(Outcome::unchanged(
                "Automatic updates are off (AutomaticUpdatePolicy=none)",
            )),
            AutomaticUpdatePolicy::Check => sysroot.upgrade(
                sink,
                &UpgradeOptions {
                    check: true,
                    ..Default::default()
                },
            ),
            AutomaticUpdatePolicy::Stage => sysroot.upgrade(sink, &UpgradeOptions::default()),
        },
        Request::Rebase { refspec, revision } => sysroot.rebase(sink, refspec, revision.as_deref()),
        Request::Deploy {
            revision,
            allow_downgrade,
        } => sysroot.deploy_revision(sink, revision, *allow_downgrade),
        Request::Rollback => sysroot.rollback(sink),
        Request::Cleanup(opts) => sysroot.cleanup(sink, opts),
        Request::KernelArguments(change) => sysroot.change_kernel_arguments(sink, change),
        Request::RefreshMetadata { force } => sysroot.refresh_metadata(sink, *force),
        Request::Packages(change) => sysroot.change_packages(sink, change),
        Request::Initramfs { enable, arguments } => sysroot.set_initramfs(sink, *enable, arguments),
    }
}

fn reboot(sysroot: &Sysroot, sink: &Sink) -> Result<()> {
    if sysroot.path() != Path::new("/") || !sysroot.is_booted() {
        sink.log("Not rebooting: this sysroot is not the running system");
        return Ok(());
    }
    sink.log("Rebooting");
    let status = std::process::Command::new("systemctl")
        .arg("reboot")
        .status()
        .context("Running systemctl reboot")?;
    if !status.success() {
        return Err(Error::NotSupported(format!("systemctl reboot failed ({status})")).into());
    }
    Ok(())
}

/// Run `job` against the sysroot at `path`. The libostree handle is opened
/// here and dropped (unlocking the sysroot) before this returns.
pub(super) fn execute(job: &Job, path: &Path, sink: &Sink) -> Result<Outcome, Error> {
    // libostree runs pulls on the thread-default main context: give this
    // thread its own, so progress callbacks arrive here.
    let context = glib::MainContext::new();
    let result = context
        .with_thread_default(|| -> Result<Outcome> {
            let mut sysroot = Sysroot::open(path)?;
            lock(&sysroot, sink)?;
            // Whatever a killed predecessor left half-built goes first.
            crate::layering::clean_stale_workdirs(&sysroot);
            sink.check_cancelled()?;
            let outcome = dispatch(&mut sysroot, job, sink)?;
            if job.reboot && outcome.changed && outcome.reboot_required {
                reboot(&sysroot, sink)?;
            }
            Ok(outcome)
        })
        .map_err(|e| Error::Other(anyhow::anyhow!("Entering the main context: {e}")))?;
    result.map_err(Error::classify)
}
