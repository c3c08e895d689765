//! `apt-ostree install-os`: putting apt-ostree on a machine that already
//! exists (issue 31). `to-existing-root` converts the running Debian
//! machine in place, `to-filesystem` installs onto a mounted root; see docs/install.md for what is carried over and how
//! a power cut at any point leaves a machine that boots.
//!
//! - [`preflight`]: the machine's facts and every reason to refuse, before
//!   anything changes (all `--dry-run` does, with the source's probe);
//! - [`source`]: the image or remote the OS comes from;
//! - [`carry`]: the machine's own files into the new /etc;
//! - [`convert`]: the conversion's steps, up to the switch of the menu;
//! - [`old_root`]: the old system around it (locks, switch, undo, cleanup);
//! - [`filesystem`]: `to-filesystem`, onto a root the administrator prepared;
//! - [`layout`]: the devices under a root and the kernel arguments they need.

pub mod accounts;
pub mod carry;
pub mod command;
pub mod convert;
pub mod filesystem;
pub mod layout;
pub mod old_root;
pub mod preflight;
pub mod source;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::progress::Sink;
use preflight::{Machine, Refusal};
use source::{Probe, Source};

/// What a conversion will do, checked before anything changes.
#[derive(Debug)]
pub struct Plan {
    pub source: Source,
    pub probe: Probe,
    /// From the running kernel's command line (root=, rd.*, console=).
    pub kept_kargs: Vec<String>,
    /// Given with `--karg`.
    pub extra_kargs: Vec<String>,
    /// An interrupted conversion is undone first.
    pub undo_first: bool,
    /// Layer the packages installed by hand that the image lacks.
    pub layer_manual: bool,
}

/// What a conversion did.
#[derive(Debug)]
pub struct Report {
    pub commit: String,
    pub kargs: Vec<String>,
    pub deployment: PathBuf,
    pub carried: carry::Carried,
    /// Packages the administrator installed that the image lacks.
    pub manual: Vec<String>,
    /// Those of them layered (`--layer-manual`).
    pub layered: Vec<String>,
    pub moved: Vec<String>,
    /// The ESP got the image's signed boot chain.
    pub bootchain: bool,
}

/// The machine cannot be converted, or the target installed onto: what
/// (`this machine cannot be converted`), and every reason, before anything
/// changed.
#[derive(Debug, thiserror::Error)]
#[error("{}:\n{}", .0, .1.iter().map(|r| format!("  - {r}")).collect::<Vec<_>>().join("\n"))]
pub struct Refused(pub String, pub Vec<Refusal>);

/// Check the running machine and the source; the plan, or every refusal.
pub fn plan(
    source: Source,
    extra_kargs: Vec<String>,
    layer_manual: bool,
    sink: &Sink,
) -> Result<(Plan, Machine)> {
    let root = Path::new("/");
    for arg in &extra_kargs {
        crate::kargs::validate(arg)?;
    }
    let machine = sink.task("Looking at this machine", || Machine::read(root))?;
    let undo_first = old_root::interrupted(root) && !Path::new("/run/ostree-booted").exists();
    let probe = probe_source(&source, sink)?;
    let mut refusals = preflight::refusals(&machine, probe.as_ref().map_or(0, |p| p.needed));
    if undo_first {
        refusals.retain(|r| *r != Refusal::AlreadyOstree);
    }
    let probe = refuse_or(probe, refusals, "this machine cannot be converted")?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").context("Reading /proc/cmdline")?;
    Ok((
        Plan {
            source,
            probe,
            kept_kargs: preflight::kargs_to_keep(&cmdline),
            extra_kargs,
            undo_first,
            layer_manual,
        },
        machine,
    ))
}

/// What the source holds, or why it cannot be read (a refusal among the others).
pub(crate) fn probe_source(source: &Source, sink: &Sink) -> Result<Result<Probe, Refusal>> {
    let scratch = tempfile::Builder::new()
        .prefix("apt-ostree-install-os-")
        .tempdir_in("/run")
        .context("Creating a scratch directory in /run")?;
    let probe = sink.task(&format!("Asking {source} what it holds"), || {
        source.probe(scratch.path(), sink)
    });
    Ok(probe.map_err(|e| Refusal::SourceUnreachable {
        source: source.to_string(),
        error: format!("{e:#}"),
    }))
}

/// The probe when nothing refuses; else every refusal, the source's last.
pub(crate) fn refuse_or(
    probe: Result<Probe, Refusal>,
    mut refusals: Vec<Refusal>,
    headline: &str,
) -> Result<Probe> {
    match probe {
        Ok(p) if refusals.is_empty() => Ok(p),
        Ok(_) => Err(Refused(headline.to_string(), refusals).into()),
        Err(unreachable) => {
            refusals.push(unreachable);
            Err(Refused(headline.to_string(), refusals).into())
        }
    }
}

/// Take off the immutable attribute libostree puts on each deployment's
/// root (`ostree/deploy/OS/deploy/CHECKSUM.N`) under `sysroot`, so that a
/// half-made installation can be removed (remove_dir_all fails with EPERM
/// on them otherwise).
pub(crate) fn unlock_deployments(sysroot: &Path) -> Result<()> {
    use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags};
    let Ok(stateroots) = std::fs::read_dir(sysroot.join("ostree/deploy")) else {
        return Ok(());
    };
    for stateroot in stateroots.flatten() {
        let Ok(deployments) = std::fs::read_dir(stateroot.path().join("deploy")) else {
            continue;
        };
        for deployment in deployments.flatten() {
            let path = deployment.path();
            if !deployment.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let dir = std::fs::File::open(&path)
                .with_context(|| format!("Opening {}", path.display()))?;
            let flags = ioctl_getflags(&dir).map_err(std::io::Error::from)?;
            if flags.contains(IFlags::IMMUTABLE) {
                ioctl_setflags(&dir, flags - IFlags::IMMUTABLE)
                    .map_err(std::io::Error::from)
                    .with_context(|| format!("Making {} mutable", path.display()))?;
            }
        }
    }
    Ok(())
}

/// The old system's boot machinery: the image brings its own (kernel,
/// initramfs generator, GRUB, shim, OSTree), so `--layer-manual` leaves
/// these out, whatever the machine had marked.
const BOOT_MACHINERY: &[&str] = &[
    "linux-image-",
    "linux-headers-",
    "initramfs-tools",
    "dracut",
    "grub-",
    "grub2",
    "shim-",
    "systemd-boot",
    "ostree",
    "apt-ostree",
    "libostree",
];

/// The packages of `manual` that `--layer-manual` layers, and those it
/// leaves out as boot machinery.
pub fn layerable(manual: &[String]) -> (Vec<String>, Vec<String>) {
    manual
        .iter()
        .cloned()
        .partition(|name| !BOOT_MACHINERY.iter().any(|p| name.starts_with(p)))
}

/// Packages marked manually installed on this machine (`apt-mark
/// showmanual`) that the deployment at `deployment` does not have.
pub fn manual_packages_missing(root: &Path, deployment: &Path) -> Result<Vec<String>> {
    let out = crate::process::run(
        std::process::Command::new("apt-mark")
            .arg("showmanual")
            .current_dir(root),
    )?;
    let status = std::fs::read_to_string(deployment.join(crate::dpkg::DATABASE_DIR).join("status"))
        .context("Reading the image's dpkg database")?;
    let image: std::collections::BTreeSet<String> = crate::dpkg::parse_status(&status)
        .into_iter()
        .map(|p| p.name)
        .collect();
    Ok(out
        .lines()
        .map(|n| n.trim().split(':').next().unwrap_or_default())
        .filter(|n| !n.is_empty() && !image.contains(*n))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_manual_leaves_the_old_boot_machinery_out() {
        let manual: Vec<String> = [
            "sudo",
            "linux-image-amd64",
            "initramfs-tools",
            "grub-efi-amd64",
            "shim-signed",
            "htop",
            "ostree-boot",
        ]
        .map(String::from)
        .to_vec();
        let (layered, left) = layerable(&manual);
        assert_eq!(layered, ["sudo", "htop"]);
        assert_eq!(
            left,
            [
                "linux-image-amd64",
                "initramfs-tools",
                "grub-efi-amd64",
                "shim-signed",
                "ostree-boot"
            ]
        );
    }
}
