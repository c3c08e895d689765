//! Changing what is layered: install, uninstall, override remove/replace/reset.
//!
//! Each request edits the origin of the default deployment (so that changes
//! compose, as with rpm-ostree) and then builds and deploys the result on the
//! same base commit. Nothing is changed when a request is refused.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

use anyhow::{Context, Result};
use sha2::{Digest as _, Sha256};

use super::{start, steps::deploy_base, Outcome, Start};
use crate::apt;
use crate::dpkg;
use crate::error::Error;
use crate::layering;
use crate::origin::Origin;
use crate::progress::Sink;
use crate::sysroot::Sysroot;

/// What a package request changes: one variant per IDL method, so that the
/// method, its polkit action and its effect on the origin follow from the
/// type instead of from which lists happen to be non-empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageChange {
    /// `Install`: packages from the apt sources and local .deb files.
    Install {
        packages: Vec<String>,
        local: Vec<LocalPackage>,
    },
    /// `Uninstall`: requested packages, or every one of them (`all`).
    Uninstall { packages: Vec<String>, all: bool },
    /// `OverrideRemove`: hide base packages.
    OverrideRemove { packages: Vec<String> },
    /// `OverrideReplace`: base packages at the version the apt sources offer.
    OverrideReplace { packages: Vec<String> },
    /// `OverrideReset`: undo overrides, or all of them (`all`).
    OverrideReset { packages: Vec<String>, all: bool },
}

impl PackageChange {
    /// The IDL method that asks for this change.
    pub fn method(&self) -> &'static str {
        match self {
            PackageChange::Install { .. } => "Install",
            PackageChange::Uninstall { .. } => "Uninstall",
            PackageChange::OverrideRemove { .. } => "OverrideRemove",
            PackageChange::OverrideReplace { .. } => "OverrideReplace",
            PackageChange::OverrideReset { .. } => "OverrideReset",
        }
    }

    /// Whether this changes the base's packages (polkit's override action)
    /// rather than what is layered on it.
    pub fn is_override(&self) -> bool {
        matches!(
            self,
            PackageChange::OverrideRemove { .. }
                | PackageChange::OverrideReplace { .. }
                | PackageChange::OverrideReset { .. }
        )
    }

    /// The package names the request names (local files excluded).
    fn names(&self) -> &[String] {
        match self {
            PackageChange::Install { packages, .. }
            | PackageChange::Uninstall { packages, .. }
            | PackageChange::OverrideRemove { packages }
            | PackageChange::OverrideReplace { packages }
            | PackageChange::OverrideReset { packages, .. } => packages,
        }
    }

    /// The command line that asks for this, for status and logs.
    pub fn title(&self) -> String {
        let (verb, all) = match self {
            PackageChange::Install { .. } => ("install", false),
            PackageChange::Uninstall { all, .. } => ("uninstall", *all),
            PackageChange::OverrideRemove { .. } => ("override remove", false),
            PackageChange::OverrideReplace { .. } => ("override replace", false),
            PackageChange::OverrideReset { all, .. } => ("override reset", *all),
        };
        let mut words = vec![verb.to_string()];
        words.extend(self.names().iter().cloned());
        if let PackageChange::Install { local, .. } = self {
            words.extend(local.iter().map(|p| p.label.clone()));
        }
        if all {
            words.push("--all".into());
        }
        words.join(" ")
    }
}

/// A package change and how to carry it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRequest {
    pub change: PackageChange,
    /// Resolve and report the result; change nothing.
    pub dry_run: bool,
    /// Install: a package already requested is no error; Uninstall: one
    /// that is not requested is none either.
    pub idempotent: bool,
    /// Also apply the new deployment to the running system.
    pub live: Option<super::LiveOptions>,
}

/// A local .deb the caller handed over as an open file: never a path, so
/// that the daemon reads exactly what the caller could read, once.
#[derive(Debug, Clone)]
pub struct LocalPackage {
    file: Arc<File>,
    /// How the caller named it, for titles and errors.
    pub label: String,
    /// Device, inode, size and modification time: the same file, unchanged,
    /// is the same request (a second identical call attaches).
    identity: (u64, u64, u64, i64, i64),
}

impl LocalPackage {
    /// Accept `fd` if it is open on a regular file.
    pub fn new(fd: OwnedFd, label: String) -> Result<LocalPackage, Error> {
        let file = File::from(fd);
        let refuse = |reason: String| Error::InvalidPackageFile {
            path: label.clone(),
            reason,
        };
        let meta = file.metadata().map_err(|e| refuse(e.to_string()))?;
        if !meta.file_type().is_file() {
            return Err(refuse("not a regular file".into()));
        }
        // Readable: not an O_PATH or write-only descriptor.
        let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)
            .map(nix::fcntl::OFlag::from_bits_truncate)
            .map_err(|e| refuse(e.to_string()))?;
        if flags.contains(nix::fcntl::OFlag::O_PATH)
            || flags & nix::fcntl::OFlag::O_ACCMODE == nix::fcntl::OFlag::O_WRONLY
        {
            return Err(refuse("not open for reading".into()));
        }
        Ok(LocalPackage {
            identity: (
                meta.dev(),
                meta.ino(),
                meta.size(),
                meta.mtime(),
                meta.mtime_nsec(),
            ),
            file: Arc::new(file),
            label,
        })
    }
}

impl PartialEq for LocalPackage {
    fn eq(&self, other: &Self) -> bool {
        self.identity == other.identity
    }
}

impl Eq for LocalPackage {}

/// Copy a local .deb once into the daemon's storage, where re-layering finds
/// it, and check that copy; return (package name, sha256 of the copy). Only
/// the copy is ever used: the caller's file may change after this.
fn store_local_deb(sysroot: &Sysroot, package: &LocalPackage) -> Result<(String, String)> {
    let dir = layering::local_deb_dir(sysroot);
    std::fs::create_dir_all(&dir).with_context(|| format!("Creating {}", dir.display()))?;
    let mut copy = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempfile_in(&dir)
        .with_context(|| format!("Creating a temporary file in {}", dir.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    // Positioned reads: the caller shares the file offset and may move it.
    loop {
        let n = package
            .file
            .read_at(&mut buf, offset)
            .with_context(|| format!("Reading {}", package.label))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        copy.write_all(&buf[..n])
            .context("Copying the local package")?;
        offset += n as u64;
    }
    copy.as_file()
        .sync_all()
        .context("Copying the local package")?;
    let name = apt::verify_deb(copy.path()).map_err(|e| match e.downcast::<Error>() {
        Ok(Error::InvalidPackageFile { reason, .. }) => Error::InvalidPackageFile {
            path: package.label.clone(),
            reason,
        }
        .into(),
        Ok(other) => other.into(),
        Err(e) => e,
    })?;
    let sha = hex::encode(hasher.finalize());
    let dest = layering::local_deb_path(sysroot, &sha);
    if !dest.exists() {
        // Durable before the origin names it: a crash must not leave a
        // truncated package under its final name.
        std::fs::set_permissions(
            copy.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )?;
        copy.persist(&dest)
            .with_context(|| format!("Renaming into {}", dest.display()))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("Syncing {}", dir.display()))?;
    }
    Ok((name, sha))
}

/// Apply `request` to the origin, validating every name first.
fn changed_origin(
    sysroot: &Sysroot,
    origin: &Origin,
    base: &str,
    request: &PackageRequest,
) -> Result<Origin> {
    for name in request.change.names() {
        apt::validate_package_name(name)?;
    }
    let mut new = origin.clone();
    let idempotent = request.idempotent;
    match &request.change {
        PackageChange::Install { packages, local } => {
            request_packages(sysroot, &mut new, packages, local, idempotent)?
        }
        PackageChange::Uninstall { packages, all } => {
            if *all {
                new.requested_packages.clear();
                new.requested_local_packages.clear();
            }
            let mut not_requested = Vec::new();
            for name in packages {
                let removed = new.requested_packages.remove(name)
                    | new.requested_local_packages.remove(name).is_some();
                if !removed && !idempotent {
                    not_requested.push(name.clone());
                }
            }
            if !not_requested.is_empty() {
                return Err(Error::PackageNotRequested {
                    packages: not_requested,
                }
                .into());
            }
        }
        PackageChange::OverrideRemove { packages } => {
            check_in_base(sysroot, base, packages)?;
            new.override_remove.extend(packages.iter().cloned());
        }
        PackageChange::OverrideReplace { packages } => {
            check_in_base(sysroot, base, packages)?;
            new.override_replace.extend(packages.iter().cloned());
        }
        PackageChange::OverrideReset { packages, all } => {
            if *all {
                new.override_remove.clear();
                new.override_replace.clear();
            }
            let mut not_overridden = Vec::new();
            for name in packages {
                // `|`, not `||`: a name in both sets leaves both.
                if !(new.override_remove.remove(name) | new.override_replace.remove(name)) {
                    not_overridden.push(name.clone());
                }
            }
            if !not_overridden.is_empty() {
                return Err(Error::PackageNotRequested {
                    packages: not_overridden,
                }
                .into());
            }
        }
    }
    Ok(new)
}

/// Add `packages` and the local files `local` to the origin's requests.
fn request_packages(
    sysroot: &Sysroot,
    origin: &mut Origin,
    packages: &[String],
    local: &[LocalPackage],
    idempotent: bool,
) -> Result<()> {
    let mut already = Vec::new();
    for name in packages {
        if !origin.requested_packages.insert(name.clone()) && !idempotent {
            already.push(name.clone());
        }
    }
    for package in local {
        let (name, sha) = store_local_deb(sysroot, package)?;
        let replaced = origin
            .requested_local_packages
            .insert(name.clone(), sha)
            .is_some();
        if replaced && !idempotent {
            already.push(name);
        }
    }
    if !already.is_empty() {
        return Err(Error::PackageAlreadyRequested { packages: already }.into());
    }
    Ok(())
}

/// Overrides name packages of the base: refuse any other name.
fn check_in_base(sysroot: &Sysroot, base: &str, packages: &[String]) -> Result<()> {
    let in_base: std::collections::BTreeSet<String> = sysroot
        .packages(base)?
        .into_iter()
        .map(|p| p.name)
        .collect();
    let missing: Vec<String> = packages
        .iter()
        .filter(|n| !in_base.contains(*n))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(Error::PackageNotInBase { packages: missing }.into());
    }
    Ok(())
}

/// `initramfs --enable/--disable`: regenerate the initramfs in every
/// build from now on (with `arguments` for update-initramfs), or not.
pub fn set_initramfs(
    sysroot: &mut Sysroot,
    sink: &Sink,
    enable: bool,
    arguments: &[String],
) -> Result<Outcome> {
    for a in arguments {
        let reason = if a.is_empty() {
            "empty"
        } else if a.chars().any(|c| c.is_control() || c == ';') {
            "it contains a control character or ';'"
        } else {
            continue;
        };
        return Err(Error::InvalidInitramfsArgument {
            argument: a.clone(),
            reason: reason.into(),
        }
        .into());
    }
    let Start { origin, base, .. } = start(sysroot)?;
    let mut new = origin.clone();
    new.initramfs_args = enable.then(|| arguments.to_vec());
    if new == origin {
        return Ok(Outcome::unchanged(if enable {
            "The initramfs is already regenerated locally."
        } else {
            "The image's initramfs is already in use."
        }));
    }
    deploy_base(sysroot, sink, &base, &new)
}

/// What `reset` drops; none set means all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResetOptions {
    pub overlays: bool,
    pub overrides: bool,
    pub initramfs: bool,
}

impl ResetOptions {
    /// The options as given, or all of them when none is.
    pub fn or_all(self) -> ResetOptions {
        if self == ResetOptions::default() {
            ResetOptions {
                overlays: true,
                overrides: true,
                initramfs: true,
            }
        } else {
            self
        }
    }
}

/// `reset`: a new deployment of the base image without the local changes
/// `options` name; kernel arguments and /etc stay.
pub fn reset(sysroot: &mut Sysroot, sink: &Sink, options: ResetOptions) -> Result<Outcome> {
    let options = options.or_all();
    let Start { origin, base, .. } = start(sysroot)?;
    let mut new = origin.clone();
    if options.overlays {
        new.requested_packages.clear();
        new.requested_local_packages.clear();
    }
    if options.overrides {
        new.override_remove.clear();
        new.override_replace.clear();
    }
    if options.initramfs {
        new.initramfs_args = None;
    }
    if new == origin {
        return Ok(Outcome::unchanged("Nothing to reset."));
    }
    deploy_base(sysroot, sink, &base, &new)
}

/// install / uninstall / override: a new deployment with `request` applied.
/// A change whose result is what the default deployment already is
/// writes nothing (and keeps the rollback deployment where it is).
pub fn change_packages(
    sysroot: &mut Sysroot,
    sink: &Sink,
    request: &PackageRequest,
) -> Result<Outcome> {
    let Some(live) = request.live.filter(|_| !request.dry_run) else {
        return change_origin_packages(sysroot, sink, request);
    };
    if let PackageChange::Uninstall { packages, all } = &request.change {
        // Removing is never a pure addition: refused before anything is written.
        let mut names = packages.clone();
        if *all {
            names.push("every layered package".into());
        }
        super::live::check_replacement(names, live)?;
    }
    super::live::check_live_possible(sysroot)?;
    let deployed = change_origin_packages(sysroot, sink, request)?;
    let applied = super::live::apply_live(sysroot, sink, live)?;
    Ok(Outcome {
        changed: deployed.changed || applied.changed,
        message: format!("{}\n{}", deployed.message, applied.message),
        reboot_required: false,
        ..deployed
    })
}

/// The change to the origin, deployed (or only resolved, for a dry run).
/// Copies of local packages that a refused request or a dry run made are
/// removed again: such a request writes nothing that stays.
fn change_origin_packages(
    sysroot: &mut Sysroot,
    sink: &Sink,
    request: &PackageRequest,
) -> Result<Outcome> {
    let result = change_and_deploy(sysroot, sink, request);
    let has_local =
        matches!(&request.change, PackageChange::Install { local, .. } if !local.is_empty());
    if has_local && (request.dry_run || result.is_err()) {
        if let Err(e) = layering::prune_local_debs(sysroot) {
            tracing::warn!("Removing unused copies of local packages: {e:#}");
        }
    }
    result
}

fn change_and_deploy(
    sysroot: &mut Sysroot,
    sink: &Sink,
    request: &PackageRequest,
) -> Result<Outcome> {
    let Start {
        origin,
        base,
        commit,
        ..
    } = start(sysroot)?;
    let mut new = changed_origin(sysroot, &origin, &base, request)?;
    if new == origin {
        return Ok(Outcome::unchanged("No change."));
    }
    let replace: &[String] = match &request.change {
        PackageChange::OverrideReplace { packages } => packages,
        _ => &[],
    };
    // Applied live without --allow-replacement: what the new deployment
    // would have is checked against the running system before it is written.
    let live_check = request
        .live
        .filter(|l| !l.allow_replacement && !request.dry_run);
    if !request.dry_run && replace.is_empty() && live_check.is_none() {
        return deploy_base(sysroot, sink, &base, &new);
    }
    let plan = layering::plan(sysroot, sink, &base, &new)?;
    let base_packages = sysroot.packages(&base)?;
    // Replacing a package by the version the base already has is no
    // override at all: it is not recorded.
    let unchanged: Vec<String> = replace
        .iter()
        .filter(|name| {
            let planned = plan.install.iter().find(|p| &p.name == *name);
            let in_base = base_packages.iter().find(|p| &p.name == *name);
            match (planned, in_base) {
                (None, _) => true,
                (Some(p), Some(b)) => p.version == b.version,
                (Some(_), None) => false,
            }
        })
        .cloned()
        .collect();
    for name in &unchanged {
        if !origin.override_replace.contains(name) {
            new.override_replace.remove(name);
        }
    }
    if new == origin {
        return Ok(Outcome::unchanged(format!(
            "No change: the apt sources offer no other version of {}.",
            unchanged.join(", ")
        )));
    }
    if request.dry_run {
        let current = sysroot.packages(&commit)?;
        let diff = dpkg::diff(&current, &planned_packages(&base_packages, &plan));
        return Ok(Outcome {
            changed: false,
            message: "Dry run: nothing was changed.".into(),
            diff: Some(diff),
            ..Default::default()
        });
    }
    if let Some(live) = live_check {
        super::live::check_planned(sysroot, &planned_packages(&base_packages, &plan), live)?;
    }
    deploy_base(sysroot, sink, &base, &new)
}

/// The packages a build of `plan` on a base with `base` would have.
fn planned_packages(base: &[dpkg::Package], plan: &crate::apt::Plan) -> Vec<dpkg::Package> {
    let mut packages: Vec<dpkg::Package> = base
        .iter()
        .filter(|p| !plan.remove.contains(&p.name))
        .filter(|p| !plan.install.iter().any(|i| i.name == p.name))
        .cloned()
        .collect();
    packages.extend(plan.install.iter().map(|p| dpkg::Package {
        name: p.name.clone(),
        version: p.version.clone(),
        architecture: p.architecture.clone(),
    }));
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    packages
}
