//! Carrying out a job on the transaction's own thread.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use ostree::glib;

use super::{Job, Request};
use crate::config::AutomaticUpdatePolicy;
use crate::error::Error;
use crate::operations::{self, Outcome, UpgradeOptions};
use crate::progress::Sink;
use crate::sysroot::Sysroot;

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
        Request::Upgrade(opts) => operations::upgrade(sysroot, sink, opts),
        Request::AutomaticUpdate(policy) => match policy {
            AutomaticUpdatePolicy::None => Ok(Outcome::unchanged(
                "Automatic updates are off (AutomaticUpdatePolicy=none)",
            )),
            AutomaticUpdatePolicy::Check => operations::upgrade(
                sysroot,
                sink,
                &UpgradeOptions {
                    check: true,
                    ..Default::default()
                },
            ),
            // An update that failed to boot is not staged again by itself.
            AutomaticUpdatePolicy::Stage => {
                match operations::upgrade(sysroot, sink, &UpgradeOptions::default()) {
                    Err(e) => match e.downcast_ref::<Error>() {
                        Some(failed @ Error::UpdateFailedToBoot { .. }) => {
                            tracing::warn!("Not staging: {failed}");
                            Ok(Outcome::unchanged(format!("Not staging: {failed}")))
                        }
                        _ => Err(e),
                    },
                    ok => ok,
                }
            }
        },
        Request::Rebase {
            refspec,
            revision,
            from,
        } => operations::rebase(sysroot, sink, refspec, revision.as_deref(), from.as_deref()),
        Request::Deploy {
            revision,
            allow_downgrade,
            from,
        } => {
            operations::deploy_revision(sysroot, sink, revision, *allow_downgrade, from.as_deref())
        }
        Request::Rollback => operations::rollback(sysroot, sink),
        Request::Pin { id, pinned } => operations::set_pinned(sysroot, sink, id, *pinned),
        Request::Cleanup(opts) => operations::cleanup(sysroot, sink, opts),
        Request::KernelArguments(change) => {
            operations::change_kernel_arguments(sysroot, sink, change)
        }
        Request::RefreshMetadata { force } => operations::refresh_metadata(sysroot, sink, *force),
        Request::Packages(change) => operations::change_packages(sysroot, sink, change),
        Request::Reset(options) => operations::reset(sysroot, sink, *options),
        Request::Initramfs { enable, arguments } => {
            operations::set_initramfs(sysroot, sink, *enable, arguments)
        }
        Request::ApplyLive(options) => operations::apply_live(sysroot, sink, *options),
        Request::UsrOverlay { hotfix } => operations::usroverlay(sysroot, sink, *hotfix),
        Request::UpdateBootloader => operations::update_bootloader(sysroot, sink),
    }
}

fn reboot(sysroot: &Sysroot, sink: &Sink) -> Result<()> {
    if sysroot.path() != Path::new("/") || !sysroot.is_booted() {
        sink.log("Not rebooting: this sysroot is not the running system");
        return Ok(());
    }
    sink.log("Rebooting");
    let out = crate::process::capture(std::process::Command::new("systemctl").arg("reboot"))?;
    if !out.status.success() {
        anyhow::bail!(
            "the new deployment is in place, but `systemctl reboot` failed ({}): {}; reboot to use it",
            out.status,
            out.stderr.trim()
        );
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
