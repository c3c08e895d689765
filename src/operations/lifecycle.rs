//! Changing the set of deployments without fetching: rollback, pin, cleanup, kargs.

use anyhow::{Context, Result};
use ostree::gio;

use super::{start, steps::clear_cached_update, Outcome};
use crate::error::Error;
use crate::kargs::{self, KargsChange};
use crate::progress::Sink;
use crate::sysroot::{same, Sysroot};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupOptions {
    pub pending: bool,
    pub rollback: bool,
    pub base: bool,
    pub metadata: bool,
    pub boot_failures: bool,
}

/// `rollback`: make the rollback deployment the default. A staged
/// deployment, if any, is dropped: rolling back means not taking it.
pub fn rollback(sysroot: &mut Sysroot, sink: &Sink) -> Result<Outcome> {
    let target = sysroot
        .rollback_index()
        .ok_or_else(|| Error::NoDeployment {
            reason: "there is no rollback deployment".into(),
        })?;
    let deployments = sysroot.ostree().deployments();
    let chosen = same(&deployments[target]);
    sink.check_cancelled()?;
    sink.task_begin("Rolling back");
    let mut order = vec![same(&chosen)];
    order.extend(
        deployments
            .iter()
            .enumerate()
            .filter(|(i, d)| *i != target && !d.is_staged())
            .map(|(_, d)| same(d)),
    );
    sysroot.write_deployments(&order)?;
    sink.task_end("Rolling back");
    let status = sysroot.status()?;
    let default = status.deployments.into_iter().next();
    tracing::info!(
        MESSAGE_ID = crate::logging::message_id::ROLLBACK,
        APT_OSTREE_TRANSACTION = sink.id(),
        "Rolled back to {}",
        chosen.csum()
    );
    Ok(Outcome {
        changed: true,
        message: format!(
            "Moving '{}.{}' to be first deployment",
            chosen.csum(),
            chosen.deployserial()
        ),
        // Only a running system reboots into the change.
        reboot_required: sysroot.is_booted() && !default.as_ref().is_some_and(|d| d.booted),
        deployment: default,
        ..Default::default()
    })
}

/// `pin [--unpin]`: keep a deployment through updates and cleanups
/// (libostree's pin, in its origin file), or no longer. `id` is its
/// identifier in status, which unlike an index names the same deployment
/// however the list changed since it was read.
pub fn set_pinned(sysroot: &mut Sysroot, sink: &Sink, id: &str, pinned: bool) -> Result<Outcome> {
    let deployments = sysroot.ostree().deployments();
    let deployment = deployments
        .iter()
        .find(|d| crate::sysroot::deployment_id(d) == id)
        .ok_or_else(|| Error::NoDeployment {
            reason: format!("there is no deployment {id:?} (status lists their identifiers)"),
        })?;
    if deployment.is_pinned() == pinned {
        let state = if pinned { "pinned" } else { "not pinned" };
        return Ok(Outcome::unchanged(format!(
            "Deployment {id} is already {state}."
        )));
    }
    if deployment.is_staged() {
        return Err(Error::NotSupported {
            reason: format!(
                "deployment {id} is staged: it is written at shutdown and can be pinned once booted"
            ),
        }
        .into());
    }
    sink.check_cancelled()?;
    let verb = if pinned { "Pinning" } else { "Unpinning" };
    sink.task_begin(verb);
    sysroot
        .ostree()
        .deployment_set_pinned(deployment, pinned)
        .with_context(|| format!("{verb} deployment {id}"))?;
    sysroot.reload(true)?;
    sink.task_end(verb);
    tracing::info!(APT_OSTREE_TRANSACTION = sink.id(), "{verb} deployment {id}");
    let state = if pinned { "pinned" } else { "unpinned" };
    Ok(Outcome {
        changed: true,
        message: format!("Deployment {id} is now {state}."),
        ..Default::default()
    })
}

/// `cleanup`: drop pending and/or rollback deployments, prune, drop caches.
pub fn cleanup(sysroot: &mut Sysroot, sink: &Sink, opts: &CleanupOptions) -> Result<Outcome> {
    let deployments = sysroot.ostree().deployments();
    let booted = sysroot
        .ostree()
        .booted_deployment()
        .and_then(|b| deployments.iter().position(|d| d.equal(&b)));
    let mut removed = Vec::new();
    let keep: Vec<ostree::Deployment> = deployments
        .iter()
        .enumerate()
        .filter(|(i, d)| {
            let pending = match booted {
                Some(b) => *i < b,
                None => d.is_staged(),
            };
            let rollback = match booted {
                Some(b) => *i > b,
                None => *i > 0,
            };
            let drop = (!d.is_pinned() || d.is_staged())
                && ((opts.pending && pending) || (opts.rollback && rollback));
            if drop {
                removed.push(crate::sysroot::deployment_name(d));
            }
            !drop
        })
        .map(|(_, d)| same(d))
        .collect();
    sink.check_cancelled()?;
    if !removed.is_empty() {
        sink.task_begin("Removing deployments");
        sysroot.write_deployments(&keep)?;
        sink.task_end("Removing deployments");
    }
    let mut done = removed
        .iter()
        .map(|r| format!("removed {r}"))
        .collect::<Vec<_>>();
    super::prune_refs(sysroot)?;
    if opts.base {
        sink.task_begin("Pruning unreferenced objects");
        sysroot
            .ostree()
            .cleanup(gio::Cancellable::NONE)
            .context("Cleaning up the sysroot")?;
        crate::layering::prune_local_debs(sysroot)?;
        sink.task_end("Pruning unreferenced objects");
        done.push("pruned the repository".into());
    }
    if opts.boot_failures {
        let n = crate::boot::forget_failures(sysroot, |_| true)?;
        if n > 0 {
            done.push(format!("forgot {n} deployment(s) that failed to boot"));
        }
    }
    if opts.metadata {
        for dir in ["cache", "lists"] {
            let path = sysroot.state_dir().join(dir);
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("Removing {}", path.display())),
            }
        }
        clear_cached_update(sysroot);
        done.push("removed cached metadata".into());
    }
    Ok(Outcome {
        changed: !done.is_empty(),
        message: if done.is_empty() {
            "Nothing to clean up.".into()
        } else {
            format!("Cleanup: {}", done.join(", "))
        },
        ..Default::default()
    })
}

/// `kargs --append/--delete/--replace`: a new deployment of the same
/// commit with the edited kernel command line.
pub fn change_kernel_arguments(
    sysroot: &mut Sysroot,
    sink: &Sink,
    change: &KargsChange,
) -> Result<Outcome> {
    let start = start(sysroot)?;
    let current = sysroot.kernel_arguments_of(&start.deployment);
    let new = kargs::edit(&current, change)?;
    if new == current {
        return Ok(Outcome::unchanged("Kernel arguments are unchanged."));
    }
    let deployment = sysroot.deploy_commit(sink, &start.commit, &start.origin, Some(&new))?;
    Ok(Outcome {
        changed: true,
        message: format!("Kernel arguments updated: {}", new.join(" ")),
        reboot_required: sysroot.is_booted(),
        deployment: Some(deployment),
        ..Default::default()
    })
}
