//! Changing what is layered: install, uninstall, override remove/replace/reset.
//!
//! Each request edits the origin of the default deployment (so that changes
//! compose, as with rpm-ostree) and then builds and deploys the result on the
//! same base commit. Nothing is changed when a request is refused.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ostree::glib;

use super::{start, update::deploy_base, Outcome, Start};
use crate::apt;
use crate::dpkg;
use crate::error::Error;
use crate::layering;
use crate::origin::Origin;
use crate::progress::Sink;
use crate::sysroot::Sysroot;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageRequest {
    pub install: Vec<String>,
    pub install_local: Vec<PathBuf>,
    pub uninstall: Vec<String>,
    pub uninstall_all: bool,
    pub override_remove: Vec<String>,
    pub override_replace: Vec<String>,
    pub override_reset: Vec<String>,
    pub override_reset_all: bool,
    pub dry_run: bool,
    pub idempotent: bool,
}

/// Keep a local .deb where re-layering finds it; return (package name, sha256).
fn store_local_deb(sysroot: &Sysroot, path: &PathBuf) -> Result<(String, String)> {
    if !path.is_absolute() {
        return Err(Error::InvalidPackageFile {
            path: path.display().to_string(),
            reason: "the path must be absolute".into(),
        }
        .into());
    }
    let name = apt::verify_deb(path)?;
    let bytes = std::fs::read(path).with_context(|| format!("Reading {}", path.display()))?;
    let sha = glib::compute_checksum_for_data(glib::ChecksumType::Sha256, &bytes)
        .context("Hashing the package")?
        .to_string();
    let dest = layering::local_deb_path(sysroot, &sha);
    if !dest.exists() {
        std::fs::create_dir_all(dest.parent().expect("has parent"))?;
        // Durable before the origin names it: a crash must not leave a
        // truncated package under its final name.
        crate::fsutil::write_atomic(&dest, &bytes)?;
    }
    Ok((name, sha))
}

/// Apply `change` to the origin, validating every name first.
fn changed_origin(
    sysroot: &Sysroot,
    origin: &Origin,
    base: &str,
    change: &PackageRequest,
) -> Result<Origin> {
    for name in change
        .install
        .iter()
        .chain(&change.uninstall)
        .chain(&change.override_remove)
        .chain(&change.override_replace)
        .chain(&change.override_reset)
    {
        apt::validate_package_name(name)?;
    }
    let mut new = origin.clone();
    let mut already = Vec::new();
    for name in &change.install {
        if !new.requested_packages.insert(name.clone()) && !change.idempotent {
            already.push(name.clone());
        }
    }
    for path in &change.install_local {
        let (name, sha) = store_local_deb(sysroot, path)?;
        if new
            .requested_local_packages
            .insert(name.clone(), sha)
            .is_some()
            && !change.idempotent
        {
            already.push(name);
        }
    }
    if !already.is_empty() {
        return Err(Error::PackageAlreadyRequested { packages: already }.into());
    }
    if change.uninstall_all {
        new.requested_packages.clear();
        new.requested_local_packages.clear();
    }
    let mut not_requested = Vec::new();
    for name in &change.uninstall {
        let removed = new.requested_packages.remove(name)
            | new.requested_local_packages.remove(name).is_some();
        if !removed && !change.idempotent {
            not_requested.push(name.clone());
        }
    }
    if !not_requested.is_empty() {
        return Err(Error::PackageNotRequested {
            packages: not_requested,
        }
        .into());
    }
    if !change.override_remove.is_empty() || !change.override_replace.is_empty() {
        let in_base: std::collections::BTreeSet<String> = sysroot
            .packages(base)?
            .into_iter()
            .map(|p| p.name)
            .collect();
        let missing: Vec<String> = change
            .override_remove
            .iter()
            .chain(&change.override_replace)
            .filter(|n| !in_base.contains(*n))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(Error::PackageNotInBase { packages: missing }.into());
        }
        new.override_remove
            .extend(change.override_remove.iter().cloned());
        new.override_replace
            .extend(change.override_replace.iter().cloned());
    }
    if change.override_reset_all {
        new.override_remove.clear();
        new.override_replace.clear();
    }
    let mut not_overridden = Vec::new();
    for name in &change.override_reset {
        if !new.override_remove.remove(name) & !new.override_replace.remove(name) {
            not_overridden.push(name.clone());
        }
    }
    if !not_overridden.is_empty() {
        return Err(Error::PackageNotRequested {
            packages: not_overridden,
        }
        .into());
    }
    Ok(new)
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

/// install / uninstall / override: a new deployment with `change` applied.
/// A change whose result is what the default deployment already is
/// writes nothing (and keeps the rollback deployment where it is).
pub fn change_packages(
    sysroot: &mut Sysroot,
    sink: &Sink,
    change: &PackageRequest,
) -> Result<Outcome> {
    let Start {
        origin,
        base,
        commit,
        ..
    } = start(sysroot)?;
    let mut new = changed_origin(sysroot, &origin, &base, change)?;
    if new == origin {
        return Ok(Outcome::unchanged("No change."));
    }
    if !change.dry_run && change.override_replace.is_empty() {
        return deploy_base(sysroot, sink, &base, &new);
    }
    let plan = layering::plan(sysroot, sink, &base, &new)?;
    let base_packages = sysroot.packages(&base)?;
    // Replacing a package by the version the base already has is no
    // override at all: it is not recorded.
    let unchanged: Vec<String> = change
        .override_replace
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
    if change.dry_run {
        let current = sysroot.packages(&commit)?;
        let diff = dpkg::diff(&current, &planned_packages(&base_packages, &plan));
        return Ok(Outcome {
            changed: false,
            message: "Dry run: nothing was changed.".into(),
            diff: Some(diff),
            ..Default::default()
        });
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
