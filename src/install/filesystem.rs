//! `install-os to-filesystem DIR SOURCE`: the OS from SOURCE onto a root
//! file system the administrator prepared and mounted at DIR, with /boot
//! and the ESP beneath it where they are separate: the layouts `compose
//! image` does not make (LVM, LUKS, RAID, btrfs).
//!
//! The kernel arguments that open and mount the root are read from the
//! devices under DIR ([`super::layout`]); GRUB goes where the disks have a
//! place for it (the signed chain onto an ESP, the core image into a BIOS
//! boot partition), and reads the menu libostree keeps, as on a disk that
//! `compose image` wrote. DIR must be empty: a failure removes what was
//! written, so that DIR is empty again.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ostree::gio;
use ostree::gio::prelude::*;

use super::layout::{root_kargs, Layout};
use super::preflight::{boot_filesystem_ok, deployment_kargs, findmnt, Mount, Refusal};
use super::source::{Probe, Source};
use super::Refused;
use crate::bootchain::esp::{partitions_of_type, BIOS_BOOT_TYPE, ESP_TYPE};
use crate::progress::Sink;
// The stateroot, as on every machine apt-ostree installs.
use super::convert::STATEROOT;

/// What may be in DIR (and its /boot) before the installation.
const ALLOWED: &[&str] = &["lost+found"];

/// The prepared root file system.
#[derive(Debug, Clone)]
pub struct Target {
    pub dir: PathBuf,
    pub root: Mount,
    /// DIR/boot when it is a file system of its own.
    pub boot: Option<Mount>,
    pub layout: Layout,
    /// The ESP on the disks under /boot.
    pub esp: Option<String>,
    /// Those disks with a BIOS boot partition.
    pub bios_disks: Vec<String>,
    /// The disks under /boot (where GRUB must go).
    pub boot_disks: Vec<String>,
    pub free: u64,
    /// What DIR already holds.
    pub entries: Vec<String>,
}

/// What an installation will do.
#[derive(Debug)]
pub struct Plan {
    pub target: Target,
    pub source: Source,
    pub probe: Probe,
    /// Those that open and mount the root.
    pub root_kargs: Vec<String>,
    pub extra_kargs: Vec<String>,
    /// Root's `~/.ssh/authorized_keys` on the new system.
    pub authorized_keys: Option<String>,
}

/// What it did.
#[derive(Debug)]
pub struct Report {
    pub commit: String,
    pub kargs: Vec<String>,
    pub deployment: PathBuf,
    pub esp: Option<String>,
    pub bios_disks: Vec<String>,
}

impl Target {
    /// The facts of the file system mounted at `dir`; a refusal when none is.
    pub fn read(dir: &Path) -> Result<Target> {
        let dir = std::fs::canonicalize(dir).with_context(|| format!("{}", dir.display()))?;
        let Some(root) = findmnt(&dir)? else {
            return Err(Refused(
                headline(&dir),
                vec![Refusal::NotMountPoint {
                    dir: dir.display().to_string(),
                }],
            )
            .into());
        };
        let boot = findmnt(&dir.join("boot"))?;
        let layout = Layout::of_device(&root.source)?;
        let boot_disks = match &boot {
            Some(b) => Layout::of_device(&b.source)?.disks,
            None => layout.disks.clone(),
        };
        let mut esp = None;
        let mut bios_disks = Vec::new();
        for disk in &boot_disks {
            if esp.is_none() {
                esp = partitions_of_type(Path::new(disk), ESP_TYPE)?
                    .into_iter()
                    .next();
            }
            if !partitions_of_type(Path::new(disk), BIOS_BOOT_TYPE)?.is_empty() {
                bios_disks.push(disk.clone());
            }
        }
        let stat = nix::sys::statvfs::statvfs(&dir).context("Reading the free space")?;
        let mut entries = foreign_entries(&dir)?;
        entries.extend(
            foreign_entries(&dir.join("boot"))?
                .into_iter()
                .map(|e| format!("boot/{e}")),
        );
        Ok(Target {
            free: stat.blocks_available() as u64 * stat.fragment_size() as u64,
            dir,
            root,
            boot,
            layout,
            esp,
            bios_disks,
            boot_disks,
            entries,
        })
    }
}

/// The entries of `dir` that are neither [`ALLOWED`] nor mount points
/// (DIR/boot, the ESP); none when `dir` does not exist.
fn foreign_entries(dir: &Path) -> Result<Vec<String>> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let dev = std::fs::metadata(dir)?.dev();
    let mut found = Vec::new();
    for entry in read {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(entry.path())?;
        let mount_point = meta.is_dir() && meta.dev() != dev;
        // An empty directory where /boot or the ESP will be is fine.
        let empty_dir = meta.is_dir()
            && matches!(name.as_str(), "boot" | "efi")
            && std::fs::read_dir(entry.path())?.next().is_none();
        if !ALLOWED.contains(&name.as_str()) && !mount_point && !empty_dir && name != "boot" {
            found.push(name);
        }
    }
    found.sort();
    Ok(found)
}

fn headline(dir: &Path) -> String {
    format!("cannot install onto {}", dir.display())
}

/// Every reason to refuse installing onto `target` an OS of `needed` bytes.
pub fn refusals(target: &Target, needed: u64) -> Vec<Refusal> {
    let mut found = Vec::new();
    if !target.entries.is_empty() {
        found.push(Refusal::NotEmpty {
            dir: target.dir.display().to_string(),
            entries: target.entries.clone(),
        });
    }
    if !matches!(target.root.fstype.as_str(), "ext4" | "xfs" | "btrfs") {
        found.push(Refusal::TargetFilesystem {
            fstype: target.root.fstype.clone(),
        });
    }
    match &target.boot {
        Some(boot) if !boot_filesystem_ok(&boot.fstype) => found.push(Refusal::BootFilesystem {
            fstype: boot.fstype.clone(),
        }),
        Some(_) => {}
        None if !super::layout::plain(&target.layout.stack) => {
            found.push(Refusal::StackedRootNeedsBoot {
                stack: target.layout.stack.clone(),
            })
        }
        None => {}
    }
    if target.esp.is_none() && target.bios_disks.is_empty() {
        found.push(Refusal::NoBootTarget {
            disks: target.boot_disks.clone(),
        });
    }
    if target.free < needed {
        found.push(Refusal::NotEnoughSpace {
            free: target.free,
            needed,
        });
    }
    found
}

/// The btrfs subvolume mounted as the root (`subvol=` of its options).
fn btrfs_subvol(root: &Mount) -> Option<&str> {
    (root.fstype == "btrfs")
        .then(|| {
            root.options
                .split(',')
                .find_map(|o| o.strip_prefix("subvol="))
        })
        .flatten()
}

/// Check the target and the source; the plan, or every refusal.
pub fn plan(
    dir: &Path,
    source: Source,
    extra_kargs: Vec<String>,
    authorized_keys: Option<String>,
    sink: &Sink,
) -> Result<Plan> {
    for arg in &extra_kargs {
        crate::kargs::validate(arg)?;
    }
    let target = sink.task(&format!("Looking at {}", dir.display()), || {
        Target::read(dir)
    })?;
    let probe = super::probe_source(&source, sink)?;
    let refusals = refusals(&target, probe.as_ref().map_or(0, |p| p.needed));
    let probe = super::refuse_or(probe, refusals, &headline(&target.dir))?;
    let uuid = target
        .root
        .uuid
        .clone()
        .with_context(|| format!("{}: its file system has no UUID", target.root.source))?;
    Ok(Plan {
        root_kargs: root_kargs(&target.layout, &uuid, btrfs_subvol(&target.root))?,
        target,
        source,
        probe,
        extra_kargs,
        authorized_keys,
    })
}

/// Install; on error, DIR is emptied again.
pub fn install(plan: &Plan, sink: &Sink) -> Result<Report> {
    let result = deploy(plan, sink);
    if let Err(e) = &result {
        sink.log(format!(
            "Removing what was written into {}: {e:#}",
            plan.target.dir.display()
        ));
        if let Err(clear) = clear(&plan.target.dir) {
            sink.log(format!("Removing it failed too: {clear:#}"));
        }
    }
    nix::unistd::sync();
    result
}

fn deploy(plan: &Plan, sink: &Sink) -> Result<Report> {
    let dir = &plan.target.dir;
    let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(dir)));
    sysroot.ensure_initialized(gio::Cancellable::NONE)?;
    if plan.target.boot.is_none() {
        // Read once, when the sysroot loads: the boot entries name
        // /boot/ostree/..., as GRUB finds them on the root.
        crate::sysroot::enable_boot_prefix(dir)?;
    }
    sysroot.load(gio::Cancellable::NONE)?;
    sysroot.init_osname(STATEROOT, gio::Cancellable::NONE)?;
    let repo = sysroot.repo();
    let commit = plan.source.pull(&repo, sink)?;
    let bios = bootable_here(&repo, &commit, &plan.target)?;

    let kargs = deployment_kargs(
        &plan.root_kargs,
        &super::convert::image_kargs(&repo, &commit)?,
        &plan.extra_kargs,
    );
    let origin = plan.source.origin().to_keyfile();
    let deployment_dir = sink.task("Deploying", || {
        let (deployment, dir) = super::convert::deploy_tree(&sysroot, &commit, &origin, &kargs)?;
        sysroot.simple_write_deployment(
            Some(STATEROOT),
            &deployment,
            None,
            ostree::SysrootSimpleWriteDeploymentFlags::NONE,
            gio::Cancellable::NONE,
        )?;
        Ok::<_, anyhow::Error>(dir)
    })?;
    write_fstab(&deployment_dir, plan.target.boot.as_ref())?;
    if let Some(keys) = &plan.authorized_keys {
        write_authorized_keys(dir, keys)?;
    }
    let bios_disks = if bios {
        plan.target.bios_disks.clone()
    } else {
        Vec::new()
    };
    for disk in &bios_disks {
        sink.task(&format!("Installing GRUB for BIOS on {disk}"), || {
            crate::compose::grub::install_bios(&deployment_dir, dir, Path::new(disk))
        })?;
    }
    if plan.target.esp.is_some() {
        sink.task("Writing the signed boot chain to the ESP", || {
            crate::bootchain::system::update(&dir.join("boot"), &deployment_dir)
        })?;
    }
    sink.task("Writing the boot menu", || {
        crate::compose::grub::write_menu(&deployment_dir, dir)?;
        crate::compose::grub::link_menu(dir)
    })?;
    Ok(Report {
        commit,
        kargs,
        deployment: deployment_dir,
        esp: plan.target.esp.clone(),
        bios_disks,
    })
}

/// Whether the commit brings what the target's disks boot with: the
/// signed chain for an ESP, GRUB for BIOS where there is no ESP. Whether
/// GRUB for BIOS is installed too.
fn bootable_here(repo: &ostree::Repo, commit: &str, target: &Target) -> Result<bool> {
    let (root, _) = repo.read_commit(commit, gio::Cancellable::NONE)?;
    let has = |p: &str| {
        root.resolve_relative_path(p)
            .query_exists(gio::Cancellable::NONE)
    };
    let bios = has("usr/lib/grub/i386-pc") && !target.bios_disks.is_empty();
    if target.esp.is_some() {
        let missing = crate::bootchain::missing_packages(has);
        if !missing.is_empty() {
            bail!(
                "the image has no Secure Boot chain for the ESP (packages {})",
                missing.join(", ")
            );
        }
    } else if !bios {
        bail!("the disks boot through BIOS only, and the image has no GRUB for BIOS (grub-pc-bin)");
    }
    Ok(bios)
}

/// A separate /boot is mounted by the new system (the root needs nothing:
/// the initramfs mounted it).
fn write_fstab(deployment: &Path, boot: Option<&Mount>) -> Result<()> {
    let mut fstab = String::from("# Written by apt-ostree install-os to-filesystem.\n");
    if let Some(boot) = boot {
        let uuid = boot
            .uuid
            .as_deref()
            .with_context(|| format!("{}: its file system has no UUID", boot.source))?;
        fstab.push_str(&format!("UUID={uuid} /boot {} defaults 1 2\n", boot.fstype));
    }
    crate::fsutil::write_atomic(&deployment.join("etc/fstab"), fstab.as_bytes())
}

/// Root's authorized keys, in the stateroot's /var where the new system's
/// /root is (var/roothome).
fn write_authorized_keys(dir: &Path, keys: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let ssh = dir.join(format!("ostree/deploy/{STATEROOT}/var/roothome/.ssh"));
    std::fs::create_dir_all(&ssh)?;
    std::fs::set_permissions(
        ssh.parent().unwrap(),
        std::fs::Permissions::from_mode(0o700),
    )?;
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700))?;
    crate::fsutil::write_atomic(&ssh.join("authorized_keys"), keys.as_bytes())?;
    std::fs::set_permissions(
        ssh.join("authorized_keys"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    Ok(())
}

/// Empty DIR again (and its /boot), never entering a mount point: what an
/// installation that failed wrote.
pub fn clear(dir: &Path) -> Result<()> {
    super::unlock_deployments(dir)?;
    for rel in [Path::new("boot"), Path::new("")] {
        let parent = dir.join(rel);
        for name in foreign_entries(&parent)? {
            let path = parent.join(&name);
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            }
            .with_context(|| format!("Removing {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
