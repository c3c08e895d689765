//! apply-live and usroverlay: changes to the running system itself.
//!
//! The running /usr is brought to the pending deployment's (or back to the
//! booted commit's) through ostree's transient overlay; the decisions are
//! here, the mechanics in [`crate::live`]. See docs/layering.md, "Live
//! changes", for what is and is not applied.

use std::path::Path;

use anyhow::{Context, Result};
use ostree::gio;

use super::Outcome;
use crate::error::Error;
use crate::live::{self, LiveState};
use crate::progress::Sink;
use crate::sysroot::Sysroot;

/// How to apply live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveOptions {
    /// Bring /usr back to the booted commit.
    pub reset: bool,
    /// Allow upgrading, replacing or removing packages the running system has.
    pub allow_replacement: bool,
}

fn refused(reason: impl Into<String>) -> anyhow::Error {
    Error::LiveChangeRefused {
        reason: reason.into(),
        packages: Vec::new(),
    }
    .into()
}

/// The booted deployment of the running system, or why there is none.
fn running(sysroot: &Sysroot, what: &str) -> Result<ostree::Deployment> {
    if sysroot.path() != Path::new("/") {
        return Err(refused(format!(
            "{what} changes the running system; {} is not it",
            sysroot.path().display()
        )));
    }
    sysroot
        .ostree()
        .booted_deployment()
        .ok_or_else(|| refused(format!("{what} needs a system booted from a deployment")))
}

/// Refuse a change that would replace or remove packages, unless allowed.
pub fn check_replacement(replaced: Vec<String>, options: LiveOptions) -> Result<()> {
    if replaced.is_empty() || options.allow_replacement || options.reset {
        return Ok(());
    }
    Err(Error::LiveChangeRefused {
        reason: "applying this live would upgrade, replace or remove packages the running \
                 system has (pass --allow-replacement, or reboot into the new deployment)"
            .into(),
        packages: replaced,
    }
    .into())
}

/// The booted deployment, if live changes can go on top of it now.
fn live_ready(sysroot: &Sysroot) -> Result<ostree::Deployment> {
    let booted = running(sysroot, "apply-live")?;
    match booted.unlocked() {
        ostree::DeploymentUnlockedState::None | ostree::DeploymentUnlockedState::Transient => {
            Ok(booted)
        }
        other => Err(refused(format!(
            "/usr is already unlocked ({}, apt-ostree usroverlay): live changes \
             cannot go on top of it; reboot first",
            ostree::Deployment::unlocked_state_to_string(other)
        ))),
    }
}

/// Refuse when the default deployment is on another base than the booted
/// one: applying it live would replace the whole OS.
fn check_same_base(
    sysroot: &mut Sysroot,
    booted: &ostree::Deployment,
) -> Result<ostree::Deployment> {
    let default = sysroot.default_deployment()?;
    let (new_base, booted_base) = (
        sysroot.commit_info(&default.csum())?.base().to_string(),
        sysroot.commit_info(&booted.csum())?.base().to_string(),
    );
    if new_base != booted_base {
        return Err(refused(format!(
            "the pending deployment is on another base ({new_base}): applying it live \
             would replace the whole OS; reboot into it instead"
        )));
    }
    Ok(default)
}

/// Before a package change that is to be applied live: refuse now what
/// apply-live would refuse afterwards, so that nothing is written.
pub fn check_live_possible(sysroot: &mut Sysroot) -> Result<()> {
    let booted = live_ready(sysroot)?;
    check_same_base(sysroot, &booted).map(|_| ())
}

/// Refuse, before anything is written, a package change whose new
/// deployment (`planned` packages) would replace packages the running
/// system shows.
pub fn check_planned(
    sysroot: &mut Sysroot,
    planned: &[crate::dpkg::Package],
    options: LiveOptions,
) -> Result<()> {
    let booted = live_ready(sysroot)?;
    let shown = live::read_state(&crate::sysroot::deployment_name(&booted))
        .map_or_else(|| booted.csum().to_string(), |s| s.commit);
    let (_, replaced) = live::changed_packages(&sysroot.packages(&shown)?, planned);
    check_replacement(replaced, options)
}

/// `apply-live`: the pending deployment (or, with reset, the booted commit)
/// applied to the running /usr.
pub fn apply_live(sysroot: &mut Sysroot, sink: &Sink, options: LiveOptions) -> Result<Outcome> {
    let booted = live_ready(sysroot)?;
    let state = live::read_state(&crate::sysroot::deployment_name(&booted));
    let shown = state
        .as_ref()
        .map_or_else(|| booted.csum().to_string(), |s| s.commit.clone());
    // A write that did not finish: /usr may show either commit, or a mix.
    let unfinished = state.as_ref().and_then(|s| s.previous.clone());
    let target = if options.reset {
        crate::sysroot::same(&booted)
    } else {
        let default = check_same_base(sysroot, &booted)?;
        if default.equal(&booted) && unfinished.is_none() {
            return Ok(Outcome::unchanged(
                "No pending deployment to apply; apt-ostree install --apply-live PKG makes one.",
            ));
        }
        default
    };
    let commit = target.csum().to_string();
    if commit == shown && unfinished.is_none() {
        return Ok(Outcome::unchanged(if options.reset {
            "The running /usr already shows the booted commit."
        } else {
            "The running system already has the pending deployment's packages."
        }));
    }
    let (added, replaced) =
        live::changed_packages(&sysroot.packages(&shown)?, &sysroot.packages(&commit)?);
    check_replacement(replaced.clone(), options)?;

    let plan = sink.task("Comparing the running /usr with the new deployment", || {
        let source = sysroot
            .path()
            .join(sysroot.ostree().deployment_dirpath(&target));
        let mut plan = live::FilePlan {
            source: source.clone(),
            ..Default::default()
        };
        // From what /usr shows, and from what it showed before an
        // unfinished write: the union brings either (or a mix) to the target.
        for from in std::iter::once(&shown).chain(unfinished.as_ref()) {
            let (changed, removed) = live::diff_commits(&sysroot.repo(), from, &commit)?;
            let old_etc = |rel: &str| {
                sysroot
                    .try_read_commit_file(from, &format!("usr/etc/{rel}"))
                    .ok()
                    .flatten()
            };
            plan.merge(live::plan_files(
                &changed,
                &removed,
                &source,
                Path::new("/etc"),
                old_etc,
            ));
        }
        anyhow::Ok(plan)
    })?;
    sink.check_cancelled()?;
    if booted.unlocked() == ostree::DeploymentUnlockedState::None {
        sink.task("Preparing a transient overlay on /usr", || {
            // ostree takes the sysroot lock itself.
            sysroot.without_lock(|| {
                live::run_on_host(&["ostree", "admin", "unlock", "--transient"], &[], sink)
            })
        })?;
    }
    // Recorded as unfinished first: if the write stops half-way, the next
    // apply-live (or --reset) knows /usr may show either commit.
    let packages = live_packages(sysroot, &booted, &commit)?;
    record(
        sysroot,
        Some(&LiveState {
            deployment: crate::sysroot::deployment_name(&booted),
            commit: commit.clone(),
            packages: packages.clone(),
            previous: Some(unfinished.unwrap_or(shown)),
        }),
    )?;
    sink.task("Writing the changes into the running system", || {
        write_plan_live(&plan, sink)
    })?;
    let done = (!options.reset).then(|| LiveState {
        deployment: crate::sysroot::deployment_name(&booted),
        commit: commit.clone(),
        packages,
        previous: None,
    });
    record(sysroot, done.as_ref())?;
    let message = if options.reset {
        "The running /usr is back to the booted commit.".to_string()
    } else {
        let mut parts = Vec::new();
        if !added.is_empty() {
            parts.push(format!("added {}", added.join(", ")));
        }
        if !replaced.is_empty() {
            parts.push(format!("replaced or removed {}", replaced.join(", ")));
        }
        if parts.is_empty() {
            parts.push(format!("{} files", plan.copy.len() + plan.remove.len()));
        }
        format!(
            "Applied live: {}. The pending deployment keeps it across the reboot.",
            parts.join("; ")
        )
    };
    Ok(Outcome {
        changed: true,
        message,
        ..Default::default()
    })
}

/// Hand the plan to the helper, which runs as a transient unit in its own
/// mount namespace (where the overlay may be made writable).
fn write_plan_live(plan: &live::FilePlan, sink: &Sink) -> Result<()> {
    std::fs::create_dir_all(live::RUN_DIR)?;
    let file = Path::new(live::RUN_DIR).join("live-plan.json");
    crate::fsutil::write_atomic(&file, &serde_json::to_vec(plan)?)?;
    let helper = std::env::current_exe().context("Finding apt-ostreed")?;
    let helper = helper.to_string_lossy();
    let file_arg = file.to_string_lossy();
    let result = live::run_on_host(
        &[&helper, "--apply-live-plan", &file_arg],
        &["--property=PrivateMounts=yes"],
        sink,
    );
    let _ = std::fs::remove_file(&file);
    result
}

/// Packages of `commit` that differ from the booted commit's.
fn live_packages(
    sysroot: &Sysroot,
    booted: &ostree::Deployment,
    commit: &str,
) -> Result<Vec<String>> {
    let (mut packages, replaced) = live::changed_packages(
        &sysroot.packages(&booted.csum())?,
        &sysroot.packages(commit)?,
    );
    packages.extend(replaced);
    packages.sort();
    Ok(packages)
}

/// Remember what /usr shows (None: the booted commit), and keep the commits
/// named there in the repository while they are.
fn record(sysroot: &Sysroot, state: Option<&LiveState>) -> Result<()> {
    let repo = sysroot.repo();
    let refs = [
        (live::LIVE_REF, state.map(|s| s.commit.as_str())),
        (
            live::LIVE_PREVIOUS_REF,
            state.and_then(|s| s.previous.as_deref()),
        ),
    ];
    for (name, commit) in refs {
        repo.set_ref_immediate(None, name, commit, gio::Cancellable::NONE)
            .with_context(|| format!("Setting the ref {name}"))?;
    }
    live::write_state(state)
}

/// `usroverlay`: a writable overlay on /usr, until the next boot or (hotfix)
/// kept across reboots.
pub fn usroverlay(sysroot: &mut Sysroot, sink: &Sink, hotfix: bool) -> Result<Outcome> {
    let booted = running(sysroot, "usroverlay")?;
    let unlocked = booted.unlocked();
    if unlocked != ostree::DeploymentUnlockedState::None {
        let why = if unlocked == ostree::DeploymentUnlockedState::Transient {
            "/usr has live changes (apply-live); a writable overlay cannot go on top of them; \
             reboot first"
                .to_string()
        } else {
            format!(
                "/usr is already unlocked ({})",
                ostree::Deployment::unlocked_state_to_string(unlocked)
            )
        };
        return Err(refused(why));
    }
    let mut argv = vec!["ostree", "admin", "unlock"];
    if hotfix {
        argv.push("--hotfix");
    }
    sink.task("Mounting a writable overlay on /usr", || {
        sysroot.without_lock(|| live::run_on_host(&argv, &[], sink))
    })?;
    sysroot.reload(true)?;
    Ok(Outcome {
        changed: true,
        message: if hotfix {
            "/usr is writable, and what is written there is kept across reboots (hotfix); \
             the rollback deployment is a clean copy."
                .into()
        } else {
            "/usr is writable until the next boot; everything written there then goes away.".into()
        },
        ..Default::default()
    })
}
