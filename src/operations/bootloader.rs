//! `apt-ostree bootloader status` and `bootloader update`: the boot chain
//! on the ESP next to the one the booted deployment carries
//! ([`crate::bootchain`]). The same update also runs by itself once a
//! deployment booted well ([`crate::boot::assess`]).

use std::path::{Path, PathBuf};

use anyhow::Result;
use ostree::prelude::FileExt;

use super::Outcome;
use crate::bootchain::esp::Change;
use crate::bootchain::system::{self, Report};
use crate::error::Error;
use crate::progress::Sink;
use crate::sysroot::Sysroot;

/// The booted deployment's directory, or why there is none to read a
/// boot chain from.
fn booted_tree(sysroot: &Sysroot, what: &str) -> Result<PathBuf> {
    let not_supported = |reason: String| Error::NotSupported { reason };
    if sysroot.path() != Path::new("/") {
        return Err(not_supported(format!(
            "{what} works on the running system's ESP; {} is not the running system",
            sysroot.path().display()
        ))
        .into());
    }
    let booted = sysroot
        .ostree()
        .booted_deployment()
        .ok_or_else(|| not_supported(format!("{what} needs a system booted from a deployment")))?;
    let dir = sysroot.ostree().deployment_directory(&booted);
    Ok(dir.path().expect("a local deployment"))
}

/// What the ESP holds and what the booted deployment carries.
pub fn bootloader_status(sysroot: &Sysroot) -> Result<Report> {
    let tree = booted_tree(sysroot, "bootloader status")?;
    system::report(&sysroot.path().join("boot"), &tree).map_err(|e| {
        Error::NotSupported {
            reason: format!("{e:#}"),
        }
        .into()
    })
}

/// Bring the ESP's chain up to the booted deployment's.
pub fn update_bootloader(sysroot: &mut Sysroot, sink: &Sink) -> Result<Outcome> {
    let tree = booted_tree(sysroot, "bootloader update")?;
    let boot = sysroot.path().join("boot");
    let changes = sink.task("Updating the boot chain on the ESP", || {
        system::update(&boot, &tree)
    })?;
    let updated: Vec<String> = changes
        .iter()
        .filter(|(_, c)| matches!(c, Change::Updated { .. }))
        .map(|(dir, _)| format!("EFI/{dir}"))
        .collect();
    if updated.is_empty() {
        return Ok(Outcome::unchanged(
            "The ESP's boot chain is the booted deployment's already",
        ));
    }
    Ok(Outcome {
        changed: true,
        message: format!(
            "Updated {} to the booted deployment's boot chain",
            updated.join(" and ")
        ),
        ..Default::default()
    })
}
