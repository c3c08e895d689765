//! Changing what is layered: install, uninstall, override remove/replace/reset.
//!
//! Each request edits the origin of the default deployment (so that changes
//! compose, as with rpm-ostree) and then builds and deploys the result on the
//! same base commit. Nothing is changed when a request is refused.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ostree::glib;

use super::Sysroot;
use crate::apt;
use crate::dpkg;
use crate::error::Error;
use crate::layering;
use crate::origin::Origin;
use crate::outcome::Outcome;
use crate::progress::Sink;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageChange {
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

impl Sysroot {
    /// The default deployment's origin and the base commit under it.
    fn default_origin_and_base(&mut self) -> Result<(Origin, String)> {
        let default = self.default_deployment()?;
        let origin = Sysroot::origin_of(&default)?;
        let info = self.commit_info(&default.csum())?;
        let base = info.base_checksum.unwrap_or(info.checksum);
        Ok((origin, base))
    }

    /// Keep a local .deb where re-layering finds it; return (package name, sha256).
    fn store_local_deb(&self, path: &PathBuf) -> Result<(String, String)> {
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
        let dest = layering::local_deb_path(self, &sha);
        if !dest.exists() {
            std::fs::create_dir_all(dest.parent().expect("has parent"))?;
            let tmp = dest.with_extension("tmp");
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, &dest)?;
        }
        Ok((name, sha))
    }

    /// Apply `change` to the origin, validating every name first.
    fn changed_origin(
        &self,
        origin: &Origin,
        base: &str,
        change: &PackageChange,
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
            let (name, sha) = self.store_local_deb(path)?;
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
            return Err(Error::PackageAlreadyRequested(already).into());
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
            return Err(Error::PackageNotRequested(not_requested).into());
        }
        if !change.override_remove.is_empty() || !change.override_replace.is_empty() {
            let in_base: std::collections::BTreeSet<String> =
                self.packages(base)?.into_iter().map(|p| p.name).collect();
            let missing: Vec<String> = change
                .override_remove
                .iter()
                .chain(&change.override_replace)
                .filter(|n| !in_base.contains(*n))
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(Error::PackageNotInBase(missing).into());
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
            return Err(Error::PackageNotRequested(not_overridden).into());
        }
        Ok(new)
    }

    /// `initramfs --enable/--disable`: regenerate the initramfs in every
    /// build from now on (with `arguments` for update-initramfs), or not.
    pub fn set_initramfs(
        &mut self,
        sink: &Sink,
        enable: bool,
        arguments: &[String],
    ) -> Result<Outcome> {
        for a in arguments {
            if a.is_empty() || a.chars().any(|c| c.is_control() || c == ';') {
                return Err(Error::NotSupported(format!(
                    "invalid update-initramfs argument {a:?}"
                ))
                .into());
            }
        }
        let (origin, base) = self.default_origin_and_base()?;
        let mut new = origin.clone();
        new.initramfs_args = enable.then(|| arguments.to_vec());
        if new == origin {
            return Ok(Outcome::unchanged(if enable {
                "The initramfs is already regenerated locally."
            } else {
                "The image's initramfs is already in use."
            }));
        }
        self.deploy_base(sink, &base, &new)
    }

    /// install / uninstall / override: a new deployment with `change` applied.
    /// A change whose result is what the default deployment already is
    /// writes nothing (and keeps the rollback deployment where it is).
    pub fn change_packages(&mut self, sink: &Sink, change: &PackageChange) -> Result<Outcome> {
        let (origin, base) = self.default_origin_and_base()?;
        let mut new = self.changed_origin(&origin, &base, change)?;
        if new == origin {
            return Ok(Outcome::unchanged("No change."));
        }
        if !change.dry_run && change.override_replace.is_empty() {
            return self.deploy_base(sink, &base, &new);
        }
        let plan = layering::plan(self, sink, &base, &new)?;
        let base_packages = self.packages(&base)?;
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
            let default = self.default_deployment()?;
            let current = self.packages(&default.csum())?;
            let diff = dpkg::diff(&current, &planned_packages(&base_packages, &plan));
            return Ok(Outcome {
                changed: false,
                message: "Dry run: nothing was changed.".into(),
                diff: Some(diff),
                ..Default::default()
            });
        }
        self.deploy_base(sink, &base, &new)
    }
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
