//! Boot assessment: a new default deployment that does not boot well is
//! rolled back with nobody at the machine (docs/updates.md).
//!
//! - GRUB counts. `/etc/grub.d/14_apt-ostree` runs `apt-ostreed --boot
//!   grub-config` whenever libostree regenerates grub.cfg, which embeds the
//!   new default deployment's id in that grub.cfg. The counter is therefore
//!   armed by the same rename of the `loader` link that makes the deployment
//!   the default: a power cut before it leaves the old grub.cfg, which counts
//!   nothing. GRUB keeps the count in its environment block, with a lookup
//!   table instead of arithmetic (Debian's GRUB has none); with no try left
//!   it boots menu entry 1, the previous deployment, and leaves its id in
//!   `aot_failed`.
//! - Early in boot, [`check`] finds `aot_failed`, makes the booted
//!   deployment the default again and records the failure (status shows it;
//!   automatic updates skip that update; `upgrade` needs `--retry-failed`).
//! - After `boot-complete.target`, [`assess`] marks a good boot (GRUB stops
//!   counting) or, when a health check failed, reboots a deployment on trial
//!   after a delay. [`deadline`] reboots one whose boot never completes.
//! - First of all, [`triage`] reads GRUB's block and grub.cfg and says
//!   which of the check and the assessment this boot needs (files their
//!   units' conditions test): on most boots neither, and under emulation
//!   each process a boot starts costs a third of a second (issue 33).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::bootcount::grub::{
    grub_config, grub_config_is_stale, grub_fallback_entry, refresh_grub_config,
};
use crate::bootcount::grubenv::Env;
use crate::bootcount::{
    self, failures, update_key, BootFailure, Counter, FailureKind, CHAIN, COUNTED, FAILED, GOOD,
    GRUBENV, LEFT, REFUSED,
};
use crate::config::Config;
use crate::logging::message_id;
use crate::origin::Origin;
use crate::sysroot::{deployment_name, same, Sysroot};

fn store_failures(sysroot: &Sysroot, failures: &[BootFailure]) -> Result<()> {
    bootcount::write_failures(&sysroot.state_dir(), failures)
}

/// The recorded failure of the update `base` with `origin`, if it failed before.
pub fn failed_before(sysroot: &Sysroot, base: &str, origin: &Origin) -> Option<BootFailure> {
    let key = update_key(base, origin);
    failures(&sysroot.state_dir())
        .into_iter()
        .find(|f| f.update.as_deref() == Some(key.as_str()))
}

/// Forget the failures `forget` picks; returns how many.
pub fn forget_failures(sysroot: &Sysroot, forget: impl Fn(&BootFailure) -> bool) -> Result<usize> {
    let all = failures(&sysroot.state_dir());
    let kept: Vec<BootFailure> = all.iter().filter(|f| !forget(f)).cloned().collect();
    if kept.len() != all.len() {
        store_failures(sysroot, &kept)?;
    }
    Ok(all.len() - kept.len())
}

/// Early in boot: when GRUB fell back from a default that used up its
/// tries, make the booted deployment the default again, record the
/// failure and log it. Also creates the environment block where it is
/// missing, so that GRUB can count on machines made without one. Most
/// boots fell back from nothing: GRUB's block says so, and only a fallback
/// opens the sysroot (libostree reads every deployment: time at every boot).
pub fn check(root: &Path) -> Result<()> {
    let path = root.join(GRUBENV);
    if !path.parent().is_some_and(Path::exists) {
        tracing::info!(
            "No {}: not booted by GRUB, no boot counting",
            path.display()
        );
        return Ok(());
    }
    refresh_grub_config(root)?;
    let existed = path.exists();
    let mut env = Env::read(&path)?;
    let Some(failed) = env.get(FAILED).map(str::to_string) else {
        if !existed {
            env.write(&path)?;
            tracing::info!("Created {}, where GRUB counts boot tries", path.display());
        }
        return Ok(());
    };
    let mut sysroot = Sysroot::open(root)?;
    sysroot.ostree().lock().context("Locking the sysroot")?;
    let result = roll_back_from(&mut sysroot, &mut env, failed);
    sysroot.ostree().unlock();
    result
}

/// GRUB fell back from `failed`: the booted deployment becomes the default
/// again and GRUB's block (`env`) is cleared.
fn roll_back_from(sysroot: &mut Sysroot, env: &mut Env, failed: String) -> Result<()> {
    let path = sysroot.path().join(GRUBENV);
    let booted = sysroot
        .ostree()
        .booted_deployment()
        .context("GRUB fell back, but no deployment is booted")?;
    let booted_id = deployment_name(&booted);
    let why = if env.get(REFUSED) == Some(failed.as_str()) {
        FailureKind::KernelNotStarted
    } else {
        FailureKind::UsedUpTries
    };
    if failed != booted_id {
        let deployments = sysroot.ostree().deployments();
        let failed_deployment = deployments.iter().find(|d| deployment_name(d) == failed);
        let (update, version) = match failed_deployment {
            Some(d) => {
                let info = sysroot.commit_info(d.csum().as_str())?;
                let origin = Sysroot::origin_of(d)?;
                (Some(update_key(info.base(), &origin)), info.version.clone())
            }
            None => (None, None),
        };
        let mut records = failures(&sysroot.state_dir());
        records.retain(|f| f.deployment != failed);
        records.push(BootFailure {
            deployment: failed.clone(),
            update,
            version: version.clone(),
            at: crate::error::now(),
            why,
        });
        store_failures(sysroot, &records)?;
        if deployments
            .first()
            .is_some_and(|d| deployment_name(d) == failed)
        {
            let mut order = vec![same(&booted)];
            order.extend(deployments.iter().filter(|d| !d.equal(&booted)).map(same));
            sysroot.write_deployments(&order)?;
        }
        tracing::error!(
            MESSAGE_ID = message_id::BOOT_ROLLED_BACK,
            "Deployment {failed}{} {}; {booted_id} is the default again",
            version.map(|v| format!(" ({v})")).unwrap_or_default(),
            why.describe()
        );
    }
    env.unset(FAILED);
    env.unset(REFUSED);
    env.unset(COUNTED);
    env.unset(LEFT);
    // What GRUB fell back to is the last resort: never on trial, so that a
    // machine whose previous deployment fails its checks too cannot loop.
    env.set(GOOD, &booted_id);
    env.write(&path)?;
    // The reorder rewrote the menu, unless libostree found the boot entries
    // equal and only swapped its links.
    refresh_grub_config(sysroot.path())?;
    Ok(())
}

/// After boot-complete.target: `good` when it was reached.
pub fn assess(sysroot: &Sysroot, config: &Config, good: bool) -> Result<()> {
    let path = sysroot.path().join(GRUBENV);
    let booted = sysroot
        .ostree()
        .booted_deployment()
        .context("no deployment is booted")?;
    let id = deployment_name(&booted);
    let mut env = Env::read(&path)?;
    let counter = Counter::from_env(&env);
    if good {
        // First, so that a failed write below cannot leave it to reboot a
        // good boot. It only waits on a deployment on trial.
        if counter.on_trial(&id) {
            stop_deadline();
        }
        if path.exists() && counter.good.as_deref() != Some(id.as_str()) {
            env.set(GOOD, &id);
            if counter.counted.as_deref() == Some(id.as_str()) {
                env.unset(COUNTED);
                env.unset(LEFT);
            }
            env.write(&path)?;
            tracing::info!(
                MESSAGE_ID = message_id::BOOT_GOOD,
                "Boot of {id} is good: boot-complete.target was reached"
            );
        }
        // Once per deployment (mounting the ESP costs every boot): again
        // on the next good boot when it failed or a power cut stopped it.
        if env.get(CHAIN) != Some(id.as_str())
            && update_boot_chain(sysroot, &booted)
            && path.exists()
        {
            env.set(CHAIN, &id);
            env.write(&path)?;
        }
        return Ok(());
    }
    if counter.on_trial(&id) && sysroot.rollback_index().is_some() {
        let delay = config.boot_failure_reboot_delay;
        tracing::error!(
            MESSAGE_ID = message_id::BOOT_CHECK_FAILED,
            "A health check failed on {id}, which is on trial ({} more boots): rebooting in {delay} s",
            counter.left.unwrap_or(0)
        );
        std::thread::sleep(Duration::from_secs(delay));
        crate::process::run(Command::new("systemctl").arg("reboot"))?;
        return Ok(());
    }
    bail!(
        "boot-complete.target was not reached (a health check failed); {id} is not on trial, so it stays booted"
    )
}

/// After a good boot, the booted deployment's Secure Boot chain onto the
/// ESP where it is newer (or where the ESP has none of ours: machines made
/// before): only a deployment that booted well may change what every
/// deployment boots through (bootupd's rule). A failure is logged and
/// changes nothing: the machine keeps booting through the chain it has.
/// Returns whether the ESP holds the deployment's chain now (or the
/// deployment has none).
fn update_boot_chain(sysroot: &Sysroot, booted: &ostree::Deployment) -> bool {
    let tree = sysroot.ostree().deployment_directory(booted);
    let Some(tree) = ostree::gio::prelude::FileExt::path(&tree) else {
        return false;
    };
    let boot = sysroot.path().join("boot");
    let result = crate::bootchain::system::report(&boot, &tree).and_then(|report| {
        if report.update_available {
            crate::bootchain::system::update(&boot, &tree).map(Some)
        } else {
            Ok(None)
        }
    });
    match result {
        Ok(Some(changes)) => tracing::info!(
            MESSAGE_ID = message_id::BOOT_CHAIN_UPDATED,
            "Updated the boot chain on the ESP to the booted deployment's: {changes:?}"
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!("The boot chain on the ESP stays as it is: {e:#}");
            return false;
        }
    }
    true
}

/// The deadline has nothing left to watch once the boot is assessed.
fn stop_deadline() {
    let _ = crate::process::run(Command::new("systemctl").args([
        "stop",
        "--no-block",
        "apt-ostree-boot-deadline.service",
    ]));
}

fn boot_complete() -> bool {
    Command::new("systemctl")
        .args(["is-active", "--quiet", "boot-complete.target"])
        .status()
        .is_ok_and(|s| s.success())
}

/// From early boot: reboot a deployment on trial whose boot does not reach
/// boot-complete.target in time (a hang, an emergency shell).
pub fn deadline(sysroot: &Sysroot, config: &Config) -> Result<()> {
    let booted = sysroot
        .ostree()
        .booted_deployment()
        .context("no deployment is booted")?;
    let id = deployment_name(&booted);
    let seconds = config.boot_deadline;
    // With nothing to fall back to, a reboot would only repeat the hang.
    let on_trial = Counter::read(sysroot.path()).on_trial(&id);
    if seconds == 0 || !on_trial || sysroot.rollback_index().is_none() {
        return Ok(());
    }
    tracing::info!("{id} is on trial: rebooting unless its boot completes within {seconds} s");
    std::thread::sleep(Duration::from_secs(seconds));
    if Counter::read(sysroot.path()).on_trial(&id) && !boot_complete() {
        tracing::error!(
            MESSAGE_ID = message_id::BOOT_CHECK_FAILED,
            "{id} did not reach boot-complete.target within {seconds} s: rebooting"
        );
        crate::process::run(Command::new("systemctl").args(["reboot", "--force"]))?;
    }
    Ok(())
}

/// Where [`triage`] leaves its verdicts, relative to the root: one file per
/// boot unit that must run (`check`, `assess`), tested by the units'
/// `ConditionPathExists=`. /run is empty at every boot.
pub const TRIAGE_DIR: &str = "run/apt-ostree-boot";

/// What this boot needs beyond the deadline's own look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Triage {
    /// GRUB fell back, its block is missing, or grub.cfg counts another
    /// deployment than the default: [`check`] has something to do.
    pub check: bool,
    /// The booted deployment was never assessed good with its chain on
    /// the ESP: [`assess`] has something to do.
    pub assess: bool,
}

/// Early in every boot, from files alone (no sysroot, no process): which
/// boot units have work. In doubt (a file that cannot be read), both run,
/// as they did at every boot before.
pub fn triage(root: &Path) -> Triage {
    let path = root.join(GRUBENV);
    // No GRUB directory: not booted by GRUB, nothing to check. No block
    // in it: the check creates one.
    let check = path.parent().is_some_and(Path::exists)
        && (!path.exists()
            || Env::read(&path).map_or(true, |env| {
                env.get(FAILED).is_some() || grub_config_is_stale(root).unwrap_or(true)
            }));
    Triage {
        check,
        assess: !assessed_before(root),
    }
}

/// Leave the verdicts where the units' conditions look.
fn record_triage(root: &Path, triage: Triage) -> Result<()> {
    let dir = root.join(TRIAGE_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("Creating {}", dir.display()))?;
    for (name, needed) in [("check", triage.check), ("assess", triage.assess)] {
        let flag = dir.join(name);
        if needed {
            std::fs::write(&flag, b"").with_context(|| format!("Writing {}", flag.display()))?;
        } else if flag.exists() {
            std::fs::remove_file(&flag).with_context(|| format!("Removing {}", flag.display()))?;
        }
    }
    Ok(())
}

/// Whether an earlier boot of the booted deployment was good and brought
/// its chain onto the ESP: every boot after a deployment's first then has
/// nothing to assess, which GRUB's block says without opening the sysroot.
fn assessed_before(root: &Path) -> bool {
    let Some(id) = crate::sysroot::booted_name(root) else {
        return false;
    };
    let Ok(env) = Env::read(&root.join(GRUBENV)) else {
        return false;
    };
    env.get(GOOD) == Some(id.as_str()) && env.get(CHAIN) == Some(id.as_str())
}

/// `apt-ostreed --boot STEP`: the boot units' entry point.
pub fn helper_main(step: &str, config_path: &Path) -> Result<()> {
    let root = Path::new("/");
    if step == "grub-config" || step == "grub-fallback" {
        // grub-mkconfig must not fail over a typo: the defaults then.
        let config = Config::load(config_path).unwrap_or_else(|e| {
            tracing::warn!("{e:#}; counting boot tries with the defaults");
            Config::default()
        });
        let script = if step == "grub-config" {
            grub_config(root, config.boot_tries)
        } else {
            grub_fallback_entry(root, config.boot_tries)
        };
        print!("{script}");
        return Ok(());
    }
    if step == "finalized" {
        // ostree-finalize-staged.service, after it wrote the staged
        // deployment: where libostree kept grub.cfg (the same boot
        // entries), GRUB must count the new default from its first boot.
        refresh_grub_config(root)?;
        return Ok(());
    }
    if step == "deadline" {
        // The triage comes first and cannot be stopped by a bad setting:
        // the check and the assessment wait for it (Type=notify).
        let verdict = triage(root);
        tracing::debug!("boot triage: {verdict:?}");
        let recorded = record_triage(root, verdict);
        let _ = libsystemd::daemon::notify(false, &[libsystemd::daemon::NotifyState::Ready]);
        recorded?;
    }
    let config = Config::load(config_path)?;
    match step {
        "check" => check(root),
        "assess" => {
            let good = boot_complete();
            if good && assessed_before(root) {
                return Ok(());
            }
            assess(&Sysroot::open(root)?, &config, good)
        }
        // On most boots nothing is on trial, which GRUB's block says
        // without opening the sysroot.
        "deadline" if config.boot_deadline == 0 || Counter::read(root).counted.is_none() => Ok(()),
        "deadline" => deadline(&Sysroot::open(root)?, &config),
        other => {
            bail!(
                "unknown boot step {other:?}: grub-config, grub-fallback, finalized, check, \
                 assess or deadline"
            )
        }
    }
}

#[cfg(test)]
mod tests;
