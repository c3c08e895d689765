//! The disk of `compose image`: where it goes (a file written under a
//! temporary name, or a block device), its GPT layout, loop devices,
//! partitions, file systems and mounts, each undone when dropped.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::grub::BootFs;
use crate::process::run;

pub(super) const MIB: u64 = 1024 * 1024;
/// Partition sizes: GRUB's BIOS core image, the ESP (GRUB for UEFI is a few
/// MB), and /boot (each deployment with its own kernel or initramfs adds
/// one pair; libostree keeps up to three), which the root holds when /boot
/// is one of its directories.
const BIOS_BOOT_MIB: u64 = 1;
const ESP_MIB: u64 = 127;
const BOOT_MIB: u64 = 768;

/// The smallest disk that holds the commit (with room for the first upgrade
/// to share most objects), and the default size.
pub(super) fn sizes(content: u64) -> (u64, u64) {
    let fixed = (1 + BIOS_BOOT_MIB + ESP_MIB + BOOT_MIB + 1) * MIB;
    let minimum = fixed + content + content / 5 + 256 * MIB;
    (minimum, (2 * minimum).max(4 << 30))
}

/// Where the disk goes.
pub(super) enum Target {
    /// A file: built under a temporary name, renamed into place at the end.
    File(tempfile::NamedTempFile),
    Device(PathBuf),
}

impl Target {
    pub(super) fn path(&self) -> &Path {
        match self {
            Target::File(f) => f.path(),
            Target::Device(p) => p,
        }
    }
}

/// Where a disk is written: a block device (only with `wipe`), or a new
/// file of `size` bytes beside `out` that replaces it at the end (an
/// existing file only with `force`).
pub(super) fn open_target(
    out: &Path,
    wipe: bool,
    force: bool,
    size: Option<u64>,
) -> Result<Target> {
    match std::fs::metadata(out) {
        Ok(m) if m.file_type().is_block_device() => {
            if !wipe {
                bail!(
                    "{} is a block device: pass --wipe to erase everything on it",
                    out.display()
                );
            }
            return Ok(Target::Device(out.to_path_buf()));
        }
        Ok(m) if m.is_dir() => bail!("{} is a directory", out.display()),
        Ok(_) if !force => bail!("{} exists: pass --force to overwrite it", out.display()),
        _ => {}
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = out
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", out.display()))?;
    let file = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .tempfile_in(dir)
        .with_context(|| format!("Creating a file in {}", dir.display()))?;
    file.as_file()
        .set_len(size.unwrap_or(0))
        .with_context(|| format!("Sizing {}", file.path().display()))?;
    Ok(Target::File(file))
}

/// A loop device, detached when dropped.
pub(super) struct Loop(pub(super) PathBuf);

impl Loop {
    pub(super) fn attach(file: &Path) -> Result<Loop> {
        let dev = run(Command::new("losetup")
            .args(["--find", "--show", "--partscan"])
            .arg(file))?;
        Ok(Loop(PathBuf::from(dev)))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup")
            .arg("--detach")
            .arg(&self.0)
            .status();
    }
}

/// The device node of partition `n` of `disk`, waiting for the kernel to make
/// it (and asking it to, where partition scanning is not automatic).
fn partition_node(disk: &Path, n: u32) -> Result<PathBuf> {
    let name = disk.display().to_string();
    let sep = if name.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    let node = PathBuf::from(format!("{name}{sep}{n}"));
    let started = Instant::now();
    let mut asked = false;
    while !node.exists() {
        if !asked {
            // Kernels without GPT partition scanning still take BLKPG.
            let _ = Command::new("partx")
                .args(["--add", "--nr", &n.to_string()])
                .arg(disk)
                .output();
            asked = true;
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("{} did not appear", node.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(node)
}

/// Write the GPT: BIOS boot, ESP, /boot when it is a partition of its own
/// (`boot_partition`), root (the rest of the disk).
pub(super) fn partition(target: &Target, boot_partition: bool) -> Result<()> {
    if let Target::Device(dev) = target {
        run(Command::new("wipefs").arg("--all").arg(dev))?;
    }
    let boot = if boot_partition {
        format!("size={BOOT_MIB}MiB, type=BC13C2FF-59E6-4262-A352-B275FD29D172, name=\"boot\"\n")
    } else {
        String::new()
    };
    let layout = format!(
        "label: gpt\n\
         size={BIOS_BOOT_MIB}MiB, type=21686148-6449-6E6F-744E-656564454649, name=\"BIOS boot\"\n\
         size={ESP_MIB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI System\"\n\
         {boot}\
         type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=\"root\"\n"
    );
    crate::process::run_with_input(
        Command::new("sfdisk")
            .args(["--quiet", "--wipe", "always"])
            .arg(target.path()),
        layout.as_bytes(),
    )
    .context("Partitioning (sfdisk, package fdisk)")?;
    Ok(())
}

/// The partitions [`partition`] wrote, with their file systems made.
pub(super) struct Partitions {
    pub esp: PathBuf,
    /// /boot's partition and its file system's UUID, when it has one.
    pub boot: Option<(PathBuf, String)>,
    pub root: PathBuf,
    pub root_uuid: String,
}

impl Partitions {
    /// Find the partitions of `disk` and make their file systems: FAT for
    /// the ESP, ext4 with new UUIDs for the root and /boot's partition.
    pub(super) fn format(disk: &Path, boot_partition: bool) -> Result<Partitions> {
        let uuid = || ostree::glib::uuid_string_random().to_string();
        let parts = Partitions {
            esp: partition_node(disk, 2)?,
            boot: match boot_partition {
                true => Some((partition_node(disk, 3)?, uuid())),
                false => None,
            },
            root: partition_node(disk, if boot_partition { 4 } else { 3 })?,
            root_uuid: uuid(),
        };
        run(Command::new("mkfs.vfat")
            .args(["-F", "32", "-n", "EFI-SYSTEM"])
            .arg(&parts.esp))?;
        if let Some((boot, boot_uuid)) = &parts.boot {
            run(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-L", "boot", "-U", boot_uuid])
                .arg(boot))?;
        }
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "root", "-U", &parts.root_uuid])
            .arg(&parts.root))?;
        Ok(parts)
    }

    /// The file system holding /boot, and GRUB's directory on it, as GRUB
    /// names them.
    pub(super) fn grub_home(&self) -> BootFs<'_> {
        match &self.boot {
            Some((_, uuid)) => BootFs {
                uuid,
                grub_dir: "/grub",
            },
            None => BootFs {
                uuid: &self.root_uuid,
                grub_dir: "/boot/grub",
            },
        }
    }
}
