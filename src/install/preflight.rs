//! What `install-os to-existing-root` checks before it changes anything:
//! the facts of the running machine, and every reason to refuse it. This is
//! all `--dry-run` does, and the first thing a real run does (issue 31).
//!
//! The facts are read by [`Machine::read`]; [`refusals`] is a pure function
//! of them, so that each refusal has a test without a machine to convert.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::Deserialize;

/// A mounted file system, as findmnt shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Mount {
    pub target: String,
    pub source: String,
    pub fstype: String,
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub options: String,
}

/// How the machine's firmware booted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// With the ESP found on the disk (none: it has none).
    Uefi {
        esp: Option<PathBuf>,
    },
    Bios,
}

/// What install-os needs to know of the running machine.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `ID` and `VERSION_ID` of /etc/os-release.
    pub os_id: String,
    pub os_version: String,
    pub root: Mount,
    /// /boot when it is a file system of its own.
    pub boot: Option<Mount>,
    /// The device types under the root file system, from it to the disk
    /// (`part`, `crypt`, `lvm`, `raid1`, `disk`), as lsblk names them.
    pub root_stack: Vec<String>,
    pub firmware: Firmware,
    /// Bytes free on the root file system.
    pub free: u64,
    /// The root already holds an OSTree sysroot (`/ostree`).
    pub has_ostree: bool,
    /// A real directory `/boot/loader` (libostree needs to make it a link).
    pub boot_loader_dir: bool,
}

/// Why a machine cannot be converted in place; each says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotDebian { id: String, version: String },
    AlreadyOstree,
    RootFilesystem { fstype: String },
    Btrfs { options: String },
    StackedRoot { stack: Vec<String> },
    BootFilesystem { fstype: String },
    BootOnRootNeedsTrixie,
    BootLoaderDirectory,
    NoEsp,
    NotEnoughSpace { free: u64, needed: u64 },
    SourceUnreachable { source: String, error: String },
    // Of `to-filesystem`'s target:
    NotMountPoint { dir: String },
    NotEmpty { dir: String, entries: Vec<String> },
    TargetFilesystem { fstype: String },
    StackedRootNeedsBoot { stack: Vec<String> },
    NoBootTarget { disks: Vec<String> },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotDebian { id, version } => write!(
                f,
                "this is {id} {version}: install-os converts Debian 13 or 12"
            ),
            Refusal::AlreadyOstree => write!(
                f,
                "/ostree exists: the machine is (or was half made) an OSTree system; \
                 use `apt-ostree rebase` on a booted one"
            ),
            Refusal::RootFilesystem { fstype } => write!(
                f,
                "the root file system is {fstype}: to-existing-root handles ext4 and xfs"
            ),
            Refusal::Btrfs { options } => write!(
                f,
                "the root file system is btrfs ({options}): in place, ext4 and xfs are \
                 handled; use `install-os to-filesystem` on a prepared root"
            ),
            Refusal::StackedRoot { stack } => write!(
                f,
                "the root file system is on {}: in place, only a plain partition is \
                 handled; use `install-os to-filesystem` (LVM, LUKS, RAID)",
                stack.join(" on ")
            ),
            Refusal::BootFilesystem { fstype } => write!(
                f,
                "/boot is {fstype}: it must hold symbolic links (ext4, ext2, xfs)"
            ),
            Refusal::BootOnRootNeedsTrixie => write!(
                f,
                "/boot is a directory of the root file system, which needs libostree's \
                 boot prefix (2023.2 or later): Debian 13 has it, Debian 12 does not; \
                 give Debian 12 a /boot partition of its own"
            ),
            Refusal::BootLoaderDirectory => write!(
                f,
                "/boot/loader is a directory: libostree keeps a link there; move it away"
            ),
            Refusal::NoEsp => write!(
                f,
                "the machine booted through UEFI, but its disk has no EFI System partition"
            ),
            Refusal::NotEnoughSpace { free, needed } => write!(
                f,
                "{} MiB free on the root file system, {} MiB needed",
                free >> 20,
                needed >> 20
            ),
            Refusal::SourceUnreachable { source, error } => {
                write!(f, "{source} cannot be read: {error}")
            }
            Refusal::NotMountPoint { dir } => write!(
                f,
                "{dir} is not a mount point: mount the new root file system there \
                 (with /boot and the ESP beneath it where they are separate)"
            ),
            Refusal::NotEmpty { dir, entries } => write!(
                f,
                "{dir} is not empty ({}): to-filesystem installs onto a new file system",
                entries.join(", ")
            ),
            Refusal::TargetFilesystem { fstype } => write!(
                f,
                "the root file system is {fstype}: to-filesystem handles ext4, xfs and btrfs"
            ),
            Refusal::StackedRootNeedsBoot { stack } => write!(
                f,
                "the root file system is on {}, which GRUB cannot open: mount a /boot \
                 partition of its own (ext4) beneath it",
                stack.join(" on ")
            ),
            Refusal::NoBootTarget { disks } if disks.is_empty() => {
                write!(f, "/boot is on no partitioned disk: GRUB has nowhere to go")
            }
            Refusal::NoBootTarget { disks } => write!(
                f,
                "{} has neither an EFI System partition nor a BIOS boot partition: \
                 GRUB has nowhere to go",
                disks.join(" and ")
            ),
        }
    }
}

/// Every reason to refuse converting `machine` in place, needing `needed`
/// bytes for the new OS; none: it can be converted.
pub fn refusals(machine: &Machine, needed: u64) -> Vec<Refusal> {
    let mut found = Vec::new();
    let debian = machine.os_id == "debian";
    if !debian || !matches!(machine.os_version.as_str(), "12" | "13") {
        found.push(Refusal::NotDebian {
            id: machine.os_id.clone(),
            version: machine.os_version.clone(),
        });
    }
    if machine.has_ostree {
        found.push(Refusal::AlreadyOstree);
    }
    match machine.root.fstype.as_str() {
        "ext4" | "xfs" => {}
        "btrfs" => found.push(Refusal::Btrfs {
            options: machine.root.options.clone(),
        }),
        other => found.push(Refusal::RootFilesystem {
            fstype: other.to_string(),
        }),
    }
    if !super::layout::plain(&machine.root_stack) {
        found.push(Refusal::StackedRoot {
            stack: machine.root_stack.clone(),
        });
    }
    match &machine.boot {
        Some(boot) if !boot_filesystem_ok(&boot.fstype) => {
            found.push(Refusal::BootFilesystem {
                fstype: boot.fstype.clone(),
            });
        }
        Some(_) => {}
        None if machine.os_version == "12" => found.push(Refusal::BootOnRootNeedsTrixie),
        None => {}
    }
    if machine.boot_loader_dir {
        found.push(Refusal::BootLoaderDirectory);
    }
    if machine.firmware == (Firmware::Uefi { esp: None }) {
        found.push(Refusal::NoEsp);
    }
    if machine.free < needed {
        found.push(Refusal::NotEnoughSpace {
            free: machine.free,
            needed,
        });
    }
    found
}

/// A /boot that GRUB reads and that holds libostree's symbolic links.
pub(super) fn boot_filesystem_ok(fstype: &str) -> bool {
    matches!(fstype, "ext4" | "ext2" | "ext3" | "xfs")
}

/// The kernel arguments the new deployment keeps from the running kernel's
/// command line: how to find and mount the root (`root=`, `rootflags=`,
/// `rootfstype=`, `rd.*`) and where the console is. Dropped: what GRUB or
/// the old initramfs added (`BOOT_IMAGE=`, `initrd=`, `ro`) and the rest,
/// which the image chooses.
pub fn kargs_to_keep(cmdline: &str) -> Vec<String> {
    cmdline
        .split_whitespace()
        .filter(|arg| {
            ["root=", "rootflags=", "rootfstype=", "rd.", "console="]
                .iter()
                .any(|p| arg.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}

/// The deployment's kernel arguments: how to find the root, the image's own
/// (`apt-ostree.kargs`), the machine's consoles where the image names none,
/// `rw`, then those given with `--karg`; each once.
pub fn deployment_kargs(kept: &[String], image: &[String], extra: &[String]) -> Vec<String> {
    let image_console = image.iter().any(|a| a.starts_with("console="));
    let mut all: Vec<String> = Vec::new();
    let roots = kept.iter().filter(|a| !a.starts_with("console="));
    let consoles = kept
        .iter()
        .filter(|a| a.starts_with("console=") && !image_console);
    for arg in roots
        .chain(image)
        .chain(consoles)
        .chain(std::iter::once(&"rw".to_string()))
        .chain(extra)
    {
        if !all.contains(arg) {
            all.push(arg.clone());
        }
    }
    all
}

/// `KEY=value` of an os-release file (quotes removed).
pub fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix('=')?;
        Some(
            value
                .trim()
                .trim_matches('"')
                .trim_matches('\'')
                .to_string(),
        )
    })
}

/// The file system mounted at `target`, if one is.
pub(super) fn findmnt(target: &Path) -> Result<Option<Mount>> {
    #[derive(Deserialize)]
    struct Mounts {
        filesystems: Vec<Mount>,
    }
    let out = crate::process::capture(
        Command::new("findmnt")
            .args(["--json", "--nofsroot", "--mountpoint"])
            .arg(target)
            .args(["--output", "TARGET,SOURCE,FSTYPE,UUID,OPTIONS"]),
    )?;
    if !out.status.success() {
        return Ok(None);
    }
    let mounts: Mounts = serde_json::from_str(&out.stdout).context("Reading findmnt's output")?;
    Ok(mounts.filesystems.into_iter().next())
}

impl Machine {
    /// The running machine's facts (`root` is `/`, or a bind of it).
    pub fn read(root: &Path) -> Result<Machine> {
        let os_release = std::fs::read_to_string(root.join("etc/os-release"))
            .or_else(|_| std::fs::read_to_string(root.join("usr/lib/os-release")))
            .context("Reading os-release")?;
        let root_mount =
            findmnt(root)?.with_context(|| format!("{} is not a mount point", root.display()))?;
        let boot = findmnt(&root.join("boot"))?;
        let root_stack = super::layout::Layout::of_device(&root_mount.source)?.stack;
        let firmware = if Path::new("/sys/firmware/efi").is_dir() {
            let boot_dir = root.join("boot");
            Firmware::Uefi {
                esp: crate::bootchain::esp::find_esp(&boot_dir).ok(),
            }
        } else {
            Firmware::Bios
        };
        let stat = nix::sys::statvfs::statvfs(root).context("Reading the free space")?;
        Ok(Machine {
            os_id: os_release_field(&os_release, "ID").unwrap_or_default(),
            os_version: os_release_field(&os_release, "VERSION_ID").unwrap_or_default(),
            root: root_mount,
            boot,
            root_stack,
            firmware,
            free: stat.blocks_available() as u64 * stat.fragment_size() as u64,
            has_ostree: root.join("ostree").exists(),
            boot_loader_dir: std::fs::symlink_metadata(root.join("boot/loader"))
                .is_ok_and(|m| m.is_dir()),
        })
    }
}

#[cfg(test)]
mod tests;
