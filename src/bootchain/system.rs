//! The machine's ESP, found from its /boot and mounted for the time of a
//! read or an update, and the two things done with it: say what chain it
//! holds next to the booted deployment's, and bring it up to date.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::esp::{self, Change, Installed};
use super::{older_than, Chain, Versions};
use crate::fsutil::Mounted;
use crate::process::run;

/// Where the ESP is mounted when nothing else has it mounted: a directory
/// of its own for each mount, so that a status read during an update
/// never unmounts the update's.
const MOUNT_DIR: &str = "/run/apt-ostree";

/// The ESP, mounted (by us, or already by the system) at `path`.
pub struct Esp {
    pub device: PathBuf,
    pub path: PathBuf,
    mount: Option<Mounted>,
}

impl Drop for Esp {
    fn drop(&mut self) {
        if let Some(mount) = self.mount.take() {
            drop(mount);
            // rmdir, never a recursive removal: if the unmount failed, the
            // ESP's files are still under it.
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

impl Esp {
    /// The ESP of the disk holding `boot`, mounted: where the system has it
    /// mounted already, there; else by us, read-only unless `write`, and
    /// then `sync`, so that vfat writes in the order of the calls (esp.rs).
    pub fn mount(boot: &Path, write: bool) -> Result<Esp> {
        let device = esp::find_esp(boot)?;
        let mounted = run(Command::new("findmnt")
            .args([
                "--noheadings",
                "--first-only",
                "--output",
                "TARGET",
                "--source",
            ])
            .arg(&device))
        .unwrap_or_default();
        if let Some(target) = mounted.lines().next().filter(|t| !t.is_empty()) {
            return Ok(Esp {
                device,
                path: PathBuf::from(target),
                mount: None,
            });
        }
        let options = if write { "sync" } else { "ro" };
        std::fs::create_dir_all(MOUNT_DIR)?;
        let dir = tempfile::Builder::new()
            .prefix("esp.")
            .tempdir_in(MOUNT_DIR)
            .with_context(|| format!("Creating a mount point in {MOUNT_DIR}"))?
            .keep();
        let mount = match Mounted::new(&device, &dir, "vfat", options) {
            Ok(mount) => mount,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(e.context(format!("Mounting the ESP {}", device.display())));
            }
        };
        Ok(Esp {
            device,
            path: dir,
            mount: Some(mount),
        })
    }
}

/// What `apt-ostree bootloader status` shows.
#[derive(Debug, Clone)]
pub struct Report {
    pub esp: PathBuf,
    pub installed: Vec<Installed>,
    /// The chain the deployment carries (none: composed without it).
    pub deployment: Option<Versions>,
    /// The deployment's chain is newer than, or missing from, the ESP.
    pub update_available: bool,
}

/// The ESP of the machine whose /boot is `boot`, next to the chain of the
/// deployment checked out at `deployment`.
pub fn report(boot: &Path, deployment: &Path) -> Result<Report> {
    let chain = Chain::in_tree(deployment)?;
    let esp = Esp::mount(boot, false)?;
    let installed = esp::installed(&esp.path);
    let deployment = chain.map(|c| c.versions().clone());
    let update_available = deployment
        .as_ref()
        .is_some_and(|new| installed.iter().any(|dir| needs(new, dir)));
    Ok(Report {
        esp: esp.device.clone(),
        installed,
        deployment,
        update_available,
    })
}

/// Whether `dir` should get the chain `new`: it lacks it, or holds an older one.
fn needs(new: &Versions, dir: &Installed) -> bool {
    match &dir.versions {
        None => true,
        Some(old) => older_than(old, new).is_some(),
    }
}

/// Bring the ESP of the machine whose /boot is `boot` to the chain of the
/// deployment at `deployment`. An error when it has none.
pub fn update(boot: &Path, deployment: &Path) -> Result<Vec<(&'static str, Change)>> {
    let chain = Chain::in_tree(deployment)?.with_context(|| {
        format!(
            "{} has no Secure Boot chain (packages {})",
            deployment.display(),
            super::PACKAGES.join(", ")
        )
    })?;
    let stub = grub_cfg_for(boot)?;
    let esp = Esp::mount(boot, true)?;
    esp::update(&esp.path, &chain, &stub)
}

/// The signed GRUB's first configuration for this machine: its /boot file
/// system by UUID, and GRUB's directory there.
fn grub_cfg_for(boot: &Path) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Mount {
        target: PathBuf,
        fsroot: PathBuf,
        uuid: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Mounts {
        filesystems: Vec<Mount>,
    }
    let out = run(Command::new("findmnt")
        .args(["--json", "--output", "TARGET,FSROOT,UUID", "--target"])
        .arg(boot))?;
    let mount = serde_json::from_str::<Mounts>(&out)
        .ok()
        .and_then(|m| m.filesystems.into_iter().next())
        .with_context(|| format!("findmnt said nothing of {}", boot.display()))?;
    let uuid = mount
        .uuid
        .with_context(|| format!("{}: its file system has no UUID", boot.display()))?;
    let dir = grub_dir(boot, &mount.target, &mount.fsroot);
    Ok(super::grub_cfg_stub(&uuid, &dir))
}

/// GRUB's directory as GRUB names it on the file system holding `boot`,
/// mounted at `target` from its directory `fsroot`: `/grub` on a /boot
/// partition, `/boot/grub` where /boot is a directory of the root (bound
/// there from /sysroot/boot on a deployment, by ostree-prepare-root).
fn grub_dir(boot: &Path, target: &Path, fsroot: &Path) -> String {
    let below = boot.strip_prefix(target).unwrap_or(Path::new(""));
    let dir = Path::new("/").join(fsroot).join(below).join("grub");
    dir.display().to_string()
}

/// Whether the firmware booted with Secure Boot on; none when the machine
/// did not boot through UEFI.
pub fn secure_boot() -> Option<bool> {
    let efi = Path::new("/sys/firmware/efi");
    if !efi.is_dir() {
        return None;
    }
    let var = efi.join("efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c");
    // Four bytes of attributes, then the value.
    Some(std::fs::read(var).is_ok_and(|bytes| bytes.get(4) == Some(&1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_finds_its_directory_on_the_file_system_holding_boot() {
        let dir = |boot: &str, target: &str, fsroot: &str| {
            grub_dir(Path::new(boot), Path::new(target), Path::new(fsroot))
        };
        assert_eq!(dir("/boot", "/boot", "/"), "/grub", "a /boot partition");
        assert_eq!(
            dir("/boot", "/boot", "/boot"),
            "/boot/grub",
            "a deployment's /boot, bound from the root's"
        );
        assert_eq!(dir("/boot", "/", "/"), "/boot/grub", "a plain Debian's");
        assert_eq!(
            dir("/mnt/target/boot", "/mnt/target", "/@"),
            "/@/boot/grub",
            "install-os onto a btrfs subvolume"
        );
    }

    fn versions(grub: &str) -> Versions {
        [("shim-signed", "1.51"), ("grub-efi-amd64-signed", grub)]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_directory_needs_the_chain_when_it_lacks_it_or_holds_an_older_one() {
        let dir = |v: Option<Versions>| Installed {
            dir: "debian",
            present: true,
            versions: v,
        };
        let new = versions("2.12+u5");
        // A machine made before the signed chain: no manifest.
        assert!(needs(&new, &dir(None)));
        assert!(needs(&new, &dir(Some(versions("2.12+u4")))));
        assert!(!needs(&new, &dir(Some(new.clone()))));
        // Never downward.
        assert!(!needs(&new, &dir(Some(versions("2.12+u6")))));
    }
}
