//! The UEFI boot chain that boots with Secure Boot on, as Debian ships it:
//! shim (signed with Microsoft's UEFI CA, package shim-signed), Debian's
//! signed GRUB (grub-efi-amd64-signed) and shim's MOK manager and fallback
//! (shim-helpers-amd64-signed). A deployment's tree carries them; this
//! module knows where, and how they lie on the ESP:
//!
//! - `EFI/debian`: where the signed GRUB looks for `grub.cfg` (its prefix
//!   `/EFI/debian` is built in and signed), and what a firmware boot entry
//!   names (`BOOTX64.CSV` for shim's fallback);
//! - `EFI/BOOT`: the removable-media path, which firmware boots with no
//!   boot entry at all (a new disk, a cloud image, a cleared NVRAM).
//!
//! Each directory holds a whole chain and a manifest of the package
//! versions it came from, so that [`esp`] can replace one directory at a
//! time and tell which chain is newer. Nothing here knows a sysroot.

pub mod esp;
pub mod system;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::fsutil::Beneath;

/// The packages of the chain, in the order a treefile lists them.
pub const PACKAGES: [&str; 3] = [
    "shim-signed",
    "grub-efi-amd64-signed",
    "shim-helpers-amd64-signed",
];

/// A signed binary: where its package puts it in the tree, its names on the ESP.
struct Binary {
    tree_path: &'static str,
    package: &'static str,
    /// Its name in `EFI/debian`, and in `EFI/BOOT` (none: not there).
    in_vendor_dir: &'static str,
    in_removable_dir: Option<&'static str>,
}

const BINARIES: [Binary; 4] = [
    Binary {
        tree_path: "usr/lib/shim/shimx64.efi.signed",
        package: "shim-signed",
        in_vendor_dir: "shimx64.efi",
        in_removable_dir: Some("BOOTX64.EFI"),
    },
    Binary {
        tree_path: "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
        package: "grub-efi-amd64-signed",
        in_vendor_dir: "grubx64.efi",
        in_removable_dir: Some("grubx64.efi"),
    },
    Binary {
        tree_path: "usr/lib/shim/mmx64.efi.signed",
        package: "shim-helpers-amd64-signed",
        in_vendor_dir: "mmx64.efi",
        in_removable_dir: Some("mmx64.efi"),
    },
    // Not on the removable path: shim started as BOOTX64.EFI runs a
    // fallback beside it, which writes a boot entry and resets the machine.
    Binary {
        tree_path: "usr/lib/shim/fbx64.efi.signed",
        package: "shim-helpers-amd64-signed",
        in_vendor_dir: "fbx64.efi",
        in_removable_dir: None,
    },
];

/// The directory under `EFI/` where the signed GRUB finds its configuration.
pub const VENDOR_DIR: &str = "debian";
/// The removable-media path's directory under `EFI/`.
pub const REMOVABLE_DIR: &str = "BOOT";
/// The manifest in each directory: the versions of the packages it came from.
pub const MANIFEST: &str = "apt-ostree-bootchain.json";

/// Package name to version.
pub type Versions = BTreeMap<String, String>;

/// The packages of the chain whose files `has` (a tree's path test) lacks.
pub fn missing_packages(has: impl Fn(&str) -> bool) -> Vec<&'static str> {
    let mut missing: Vec<&'static str> = BINARIES
        .iter()
        .filter(|b| !has(b.tree_path))
        .map(|b| b.package)
        .collect();
    missing.dedup();
    missing
}

/// The chain a deployment's tree carries.
pub struct Chain {
    tree: Beneath,
    versions: Versions,
}

impl Chain {
    /// The chain in the tree at `root`: none when the tree has none of its
    /// files (an image made without Secure Boot), an error naming the
    /// missing packages when it has only part of them.
    pub fn in_tree(root: &Path) -> Result<Option<Chain>> {
        let tree = Beneath::open(root)?;
        let has = |p: &str| {
            tree.meta(p)
                .ok()
                .flatten()
                .is_some_and(|m| m.kind == crate::fsutil::Kind::File)
        };
        let missing = missing_packages(has);
        if missing.len() == PACKAGES.len() {
            return Ok(None);
        }
        if !missing.is_empty() {
            bail!(
                "{}: the Secure Boot chain is incomplete: {} missing",
                root.display(),
                missing.join(", ")
            );
        }
        let versions = crate::dpkg::packages_of_tree(&tree)
            .with_context(|| format!("Reading the packages of {}", root.display()))?
            .into_iter()
            .filter(|(name, _, _)| PACKAGES.contains(&name.as_str()))
            .map(|(name, version, _)| (name, version))
            .collect();
        Ok(Some(Chain { tree, versions }))
    }

    pub fn versions(&self) -> &Versions {
        &self.versions
    }

    /// Write the chain's directory `which` ([`VENDOR_DIR`] or
    /// [`REMOVABLE_DIR`]) as the plain directory `dir`, with `grub_cfg` as
    /// the configuration the signed GRUB reads first. Every file is synced
    /// before this returns, the directory too.
    pub fn write_dir(&self, which: &str, dir: &Path, grub_cfg: &str) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("Creating {}", dir.display()))?;
        for binary in &BINARIES {
            let name = if which == REMOVABLE_DIR {
                match binary.in_removable_dir {
                    Some(name) => name,
                    None => continue,
                }
            } else {
                binary.in_vendor_dir
            };
            let bytes = self
                .tree
                .read(binary.tree_path)?
                .with_context(|| format!("{} is gone from the tree", binary.tree_path))?;
            write_synced(&dir.join(name), &bytes)?;
        }
        write_synced(&dir.join("grub.cfg"), grub_cfg.as_bytes())?;
        if which == VENDOR_DIR {
            write_synced(&dir.join("BOOTX64.CSV"), &boot_csv())?;
        }
        let manifest = serde_json::to_vec_pretty(&self.versions)?;
        write_synced(&dir.join(MANIFEST), &manifest)?;
        crate::fsutil::sync_dir(dir)
    }
}

/// What the signed GRUB reads from the ESP: find the boot file system by
/// UUID and read the menu libostree keeps there. `grub_dir` is GRUB's
/// directory on that file system (`/grub` when /boot is a partition).
pub fn grub_cfg_stub(boot_uuid: &str, grub_dir: &str) -> String {
    format!(
        "# Written by apt-ostree: the menu is on the boot file system.\n\
         search --no-floppy --fs-uuid --set=root {boot_uuid}\n\
         set prefix=($root){grub_dir}\n\
         configfile $prefix/grub.cfg\n"
    )
}

/// shim's fallback reads it to write a firmware boot entry (UTF-16LE).
fn boot_csv() -> Vec<u8> {
    let line = "shimx64.efi,debian,,This is the boot entry for debian\n";
    let mut bytes = vec![0xff, 0xfe];
    for unit in line.encode_utf16() {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    bytes
}

/// The versions a chain directory's manifest names; none when it has none
/// (a directory apt-ostree did not write, or a machine made before).
pub fn read_manifest(dir: &Path) -> Option<Versions> {
    let text = std::fs::read(dir.join(MANIFEST)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Whether the chain `new` is older than `installed` in any package: an
/// update never goes back (an older shim or GRUB may be revoked by SBAT).
pub fn older_than(new: &Versions, installed: &Versions) -> Option<String> {
    installed.iter().find_map(|(package, old)| {
        let version = new.get(package)?;
        (crate::dpkg::compare_versions(version, old) == std::cmp::Ordering::Less)
            .then(|| format!("{package} {version} is older than the installed {old}"))
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("Creating {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .with_context(|| format!("Writing {}", path.display()))
}

#[cfg(test)]
mod tests;
