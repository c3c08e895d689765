//! Bringing the ESP's boot chain up to date (`apt-ostree bootloader
//! update`, and by itself once a deployment booted well), so that a power
//! cut at any moment leaves a chain that boots, and never an older one.
//!
//! FAT has no atomic replace. Each chain directory is written whole beside
//! the live one (`EFI/debian.new`), synced, then swapped with it by
//! `renameat2(RENAME_EXCHANGE)` (vfat has it since Linux 6.0), and the old
//! one, now under the new name, is removed. The ESP is mounted `sync`, so
//! vfat writes directory entries and the allocation table in the order of
//! the calls. A cut before the swap leaves the live directory as it was;
//! the swap rewrites the two directory entries one after the other, and
//! after either write `EFI/debian` names a whole chain, old or new.
//! `EFI/debian` goes first: the signed GRUB reads its grub.cfg there from
//! whichever directory shim started it.
//!
//! A cut between those two entry writes can leave both names on the same
//! clusters, and removing the leftover would then delete the live chain.
//! So a leftover is removed only once a file made in it is seen not to
//! appear in the live directory; else the update stops and asks for
//! `fsck.fat`, with the machine still booting.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{older_than, read_manifest, Chain, Versions, REMOVABLE_DIR, VENDOR_DIR};
use crate::fsutil::sync_dir;

/// What one chain directory of the ESP holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// `debian` or `BOOT`, under `EFI/`.
    pub dir: &'static str,
    pub present: bool,
    /// The package versions it came from; none for a directory apt-ostree
    /// did not write (a machine made before the signed chain).
    pub versions: Option<Versions>,
}

/// The chain directories of the ESP mounted at `esp`.
pub fn installed(esp: &Path) -> Vec<Installed> {
    [VENDOR_DIR, REMOVABLE_DIR]
        .into_iter()
        .map(|dir| {
            let path = esp.join("EFI").join(dir);
            Installed {
                dir,
                present: path.is_dir(),
                versions: read_manifest(&path),
            }
        })
        .collect()
}

/// What an update did to one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    UpToDate,
    /// Replaced (or written, where there was none); what it held before.
    Updated {
        from: Option<Versions>,
    },
}

/// Bring both chain directories of the ESP mounted at `esp` to `chain`.
/// Their grub.cfg is kept (it is the machine's: it names its /boot); where
/// there is none, `grub_cfg` is written. Refuses, changing nothing, when
/// `chain` is older than what a directory holds.
pub fn update(esp: &Path, chain: &Chain, grub_cfg: &str) -> Result<Vec<(&'static str, Change)>> {
    let efi = esp.join("EFI");
    for state in installed(esp) {
        if let Some(why) = state
            .versions
            .as_ref()
            .and_then(|v| older_than(chain.versions(), v))
        {
            bail!(
                "the ESP's EFI/{} holds a newer boot chain: {why}; it stays",
                state.dir
            );
        }
    }
    let kept_cfg = [VENDOR_DIR, REMOVABLE_DIR]
        .into_iter()
        .find_map(|dir| std::fs::read_to_string(efi.join(dir).join("grub.cfg")).ok())
        .filter(|cfg| cfg.contains("configfile"));
    let grub_cfg = kept_cfg.as_deref().unwrap_or(grub_cfg);
    std::fs::create_dir_all(&efi).with_context(|| format!("Creating {}", efi.display()))?;
    let mut changes = Vec::new();
    for dir in [VENDOR_DIR, REMOVABLE_DIR] {
        let live = efi.join(dir);
        let from = read_manifest(&live);
        if from.as_ref() == Some(chain.versions()) {
            changes.push((dir, Change::UpToDate));
            continue;
        }
        replace_dir(&efi, dir, |new| chain.write_dir(dir, new, grub_cfg))?;
        changes.push((dir, Change::Updated { from }));
    }
    Ok(changes)
}

/// Replace `efi/name` with what `write` puts into a new directory beside it.
fn replace_dir(efi: &Path, name: &str, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let live = efi.join(name);
    let new = efi.join(format!("{name}.new"));
    remove_leftover(&new, &live)?;
    write(&new)?;
    sync_dir(efi)?;
    if live.exists() {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &new,
            rustix::fs::CWD,
            &live,
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .with_context(|| format!("Swapping {} and {}", new.display(), live.display()))?;
        sync_dir(efi)?;
        // The old chain, now under the new name.
        std::fs::remove_dir_all(&new).with_context(|| format!("Removing {}", new.display()))?;
    } else {
        std::fs::rename(&new, &live)
            .with_context(|| format!("Renaming {} to {}", new.display(), live.display()))?;
    }
    sync_dir(efi)
}

/// Remove what a cut update left at `leftover`, unless it shares its
/// clusters with `live` (a cut in the middle of the swap).
fn remove_leftover(leftover: &Path, live: &Path) -> Result<()> {
    if !leftover.exists() {
        return Ok(());
    }
    if live.is_dir() {
        let probe = format!(".apt-ostree-probe-{}", std::process::id());
        std::fs::write(leftover.join(&probe), b"")
            .with_context(|| format!("Writing into {}", leftover.display()))?;
        let shared = live.join(&probe).exists();
        let _ = std::fs::remove_file(leftover.join(&probe));
        if shared {
            bail!(
                "{} and {} share their clusters (a power cut during an earlier update): \
                 run fsck.fat on the ESP, then update again; the machine boots as it is",
                leftover.display(),
                live.display()
            );
        }
    }
    std::fs::remove_dir_all(leftover)
        .with_context(|| format!("Removing {}, left by an earlier update", leftover.display()))?;
    tracing::info!(
        "Removed {}, left by an update that was cut",
        leftover.display()
    );
    Ok(())
}

/// The ESP of the disk that holds `boot` (a mounted /boot): the partition
/// of GPT type "EFI System" on the same disk.
pub fn find_esp(boot: &Path) -> Result<PathBuf> {
    let source = crate::process::run(
        std::process::Command::new("findmnt")
            // A /boot bound from a directory of the root (a converted
            // machine) shows as "/dev/vda2[/boot]" without --nofsroot.
            .args([
                "--noheadings",
                "--nofsroot",
                "--output",
                "SOURCE",
                "--target",
            ])
            .arg(boot),
    )?;
    let source = source.trim();
    let disk = crate::process::run(
        std::process::Command::new("lsblk")
            .args(["--noheadings", "--nodeps", "--output", "PKNAME", "--paths"])
            .arg(source),
    )?;
    let disk = disk.trim();
    if disk.is_empty() {
        bail!(
            "{source} (holding {}) is not a partition of a disk",
            boot.display()
        );
    }
    partitions_of_type(Path::new(disk), ESP_TYPE)?
        .into_iter()
        .next()
        .map(PathBuf::from)
        .with_context(|| format!("{disk} has no EFI System partition"))
}

/// The partitions of `disk` of GPT type `parttype`, as paths. lsblk reads
/// the types from udev's database; where there is none (a container, a
/// rescue shell), blkid reads them off the disk.
pub fn partitions_of_type(disk: &Path, parttype: &str) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Device {
        path: String,
        #[serde(rename = "type")]
        kind: String,
        parttype: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct List {
        blockdevices: Vec<Device>,
    }
    let out = crate::process::run(
        std::process::Command::new("lsblk")
            .args(["--json", "--list", "--output", "PATH,TYPE,PARTTYPE"])
            .arg(disk),
    )?;
    let list: List = serde_json::from_str(&out).context("Reading lsblk's output")?;
    Ok(list
        .blockdevices
        .into_iter()
        .filter(|d| d.kind == "part")
        .filter(|d| {
            let kind = d
                .parttype
                .clone()
                .filter(|t| !t.is_empty())
                .or_else(|| blkid(&d.path).remove("PART_ENTRY_TYPE"));
            kind.is_some_and(|k| k.eq_ignore_ascii_case(parttype))
        })
        .map(|d| d.path)
        .collect())
}

/// What `blkid --probe` reads off `device` (TYPE, UUID, PART_ENTRY_TYPE,
/// ...); empty when it reads nothing.
pub fn blkid(device: &str) -> std::collections::BTreeMap<String, String> {
    let out = std::process::Command::new("blkid")
        .args(["--probe", "--output", "export", device])
        .output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    text.unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The GPT partition type of an ESP.
pub const ESP_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// The GPT partition type of a BIOS boot partition (GRUB's core image).
pub const BIOS_BOOT_TYPE: &str = "21686148-6449-6e6f-744e-656564454649";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_swapped_whole_and_a_leftover_removed() {
        let efi = tempfile::tempdir().unwrap();
        let live = efi.path().join("debian");
        std::fs::create_dir(&live).unwrap();
        std::fs::write(live.join("shimx64.efi"), "old").unwrap();
        // What a cut update left: removed first.
        std::fs::create_dir(efi.path().join("debian.new")).unwrap();
        std::fs::write(efi.path().join("debian.new/half"), "half").unwrap();
        replace_dir(efi.path(), "debian", |new| {
            std::fs::create_dir(new)?;
            assert!(!new.join("half").exists());
            Ok(std::fs::write(new.join("shimx64.efi"), "new")?)
        })
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(live.join("shimx64.efi")).unwrap(),
            "new"
        );
        assert!(!efi.path().join("debian.new").exists());
    }

    #[test]
    fn a_failed_write_leaves_the_live_directory() {
        let efi = tempfile::tempdir().unwrap();
        let live = efi.path().join("BOOT");
        std::fs::create_dir(&live).unwrap();
        std::fs::write(live.join("BOOTX64.EFI"), "old").unwrap();
        let err = replace_dir(efi.path(), "BOOT", |_| bail!("disk full")).unwrap_err();
        assert!(err.to_string().contains("disk full"));
        assert_eq!(
            std::fs::read_to_string(live.join("BOOTX64.EFI")).unwrap(),
            "old"
        );
    }

    #[test]
    fn a_leftover_that_is_the_live_directory_is_never_removed() {
        let efi = tempfile::tempdir().unwrap();
        let live = efi.path().join("debian");
        std::fs::create_dir(&live).unwrap();
        std::fs::write(live.join("shimx64.efi"), "live").unwrap();
        // Two names on the same clusters, as a link shows it here.
        std::os::unix::fs::symlink(&live, efi.path().join("debian.new")).unwrap();
        let err = remove_leftover(&efi.path().join("debian.new"), &live).unwrap_err();
        assert!(err.to_string().contains("fsck.fat"), "{err}");
        assert!(live.join("shimx64.efi").exists());
    }
}
