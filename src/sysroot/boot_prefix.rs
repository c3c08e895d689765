//! /boot as a directory of the root file system. GRUB then searches the
//! root file system, so the boot entries must name `/boot/ostree/...`, not
//! `/ostree/...` as they do for a /boot partition: libostree writes them so
//! when its repository says `sysroot.bootprefix=true`, from 2023.2 on.

use std::path::Path;

use anyhow::{Context, Result};
use ostree::gio;

use crate::dpkg::{self, Package};

/// The first libostree that honours `sysroot.bootprefix` (Debian 13 has
/// 2025.2, Debian 12 2022.7).
const BOOT_PREFIX_SINCE: &str = "2023.2";

/// The keys of a boot entry that name files on /boot.
const PATH_KEYS: [&str; 3] = ["linux", "initrd", "devicetree"];

/// Whether the libostree among `packages` keeps the boot entries right for
/// a /boot on the root file system: it writes every later deployment of
/// the system they make.
pub fn has_boot_prefix(packages: &[Package]) -> bool {
    packages.iter().any(|p| {
        p.name == "libostree-1-1"
            && dpkg::compare_versions(&p.version, BOOT_PREFIX_SINCE) != std::cmp::Ordering::Less
    })
}

/// Ask every libostree that writes the sysroot at `root` for boot entries
/// under `/boot`. Before the sysroot is loaded: libostree reads the option
/// once, when it loads.
pub fn enable_boot_prefix(root: &Path) -> Result<()> {
    let repo = ostree::Repo::new(&gio::File::for_path(root.join("ostree/repo")));
    repo.open(gio::Cancellable::NONE)
        .with_context(|| format!("Opening the repository of {}", root.display()))?;
    let config = repo.copy_config();
    config.set_boolean("sysroot", "bootprefix", true);
    repo.write_config(&config)
        .context("Writing sysroot.bootprefix into the repository's configuration")
}

/// Put `/boot` in front of the paths of the boot entries of the sysroot at
/// `root` that lack it: what a libostree older than 2023.2 wrote, which
/// ignores `sysroot.bootprefix` (compose image on a Debian 12 host). The
/// image's own libostree rewrites them all with its next deployment. The
/// number of entries changed.
pub fn prefix_boot_entries(root: &Path) -> Result<usize> {
    let dir = root.join("boot/loader/entries");
    let mut changed = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("Reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "conf") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("Reading {}", path.display()))?;
        let prefixed = prefixed_entry(&text);
        if prefixed != text {
            let staged = path.with_extension("conf.tmp");
            std::fs::write(&staged, &prefixed)
                .with_context(|| format!("Writing {}", staged.display()))?;
            std::fs::rename(&staged, &path)
                .with_context(|| format!("Replacing {}", path.display()))?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// A boot entry's text with `/boot` in front of each file it names that
/// does not start with it.
fn prefixed_entry(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    for line in text.split_inclusive('\n') {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        if PATH_KEYS.contains(&key) && value.starts_with('/') && !value.starts_with("/boot/") {
            out.push_str(key);
            out.push_str(" /boot");
            out.push_str(value);
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libostree(version: &str) -> Vec<Package> {
        vec![Package {
            name: "libostree-1-1".into(),
            version: version.into(),
            architecture: "amd64".into(),
        }]
    }

    #[test]
    fn the_boot_prefix_comes_with_libostree_2023_2() {
        assert!(has_boot_prefix(&libostree("2025.2-1")), "Debian 13's");
        assert!(has_boot_prefix(&libostree("2023.2-1~bpo12+1")));
        assert!(
            !has_boot_prefix(&libostree("2022.7-2+deb12u1")),
            "Debian 12's"
        );
        assert!(!has_boot_prefix(&libostree("2023.1-1")));
        // No dpkg database, or no libostree in it: nothing says it has one.
        assert!(!has_boot_prefix(&[]));
        let mut other = libostree("2025.2-1");
        other[0].name = "ostree".into();
        assert!(!has_boot_prefix(&other));
    }

    const ENTRY: &str = "title Debian GNU/Linux 13 (trixie) (ostree:debian:0)\n\
                         version 1\n\
                         options root=UUID=0f1e ostree=/ostree/boot.1/debian/ab12/0\n\
                         linux /ostree/debian-ab12/vmlinuz-6.12.48+deb13-amd64\n\
                         initrd /ostree/debian-ab12/initramfs-6.12.48+deb13-amd64.img\n";

    #[test]
    fn entries_without_the_prefix_get_it_and_nothing_else_changes() {
        let prefixed = prefixed_entry(ENTRY);
        assert!(prefixed.contains("\nlinux /boot/ostree/debian-ab12/vmlinuz-6.12.48+deb13-amd64\n"));
        assert!(prefixed
            .contains("\ninitrd /boot/ostree/debian-ab12/initramfs-6.12.48+deb13-amd64.img\n"));
        // The deployment's path on the command line is not a file of /boot.
        assert!(prefixed.contains(" ostree=/ostree/boot.1/debian/ab12/0\n"));
        assert_eq!(prefixed.lines().count(), ENTRY.lines().count());
        // What a libostree with the prefix wrote stays as it is.
        assert_eq!(prefixed_entry(&prefixed), prefixed);
    }

    #[test]
    fn the_entries_of_a_sysroot_are_rewritten_in_place() {
        let root = tempfile::tempdir().unwrap();
        let entries = root.path().join("boot/loader.0/entries");
        std::fs::create_dir_all(&entries).unwrap();
        std::os::unix::fs::symlink("loader.0", root.path().join("boot/loader")).unwrap();
        std::fs::write(entries.join("ostree-1.conf"), ENTRY).unwrap();
        std::fs::write(entries.join("ostree-2.conf"), prefixed_entry(ENTRY)).unwrap();
        std::fs::write(entries.join("notes.txt"), "linux /x\n").unwrap();
        assert_eq!(prefix_boot_entries(root.path()).unwrap(), 1);
        for name in ["ostree-1.conf", "ostree-2.conf"] {
            let text = std::fs::read_to_string(entries.join(name)).unwrap();
            assert!(text.contains("\nlinux /boot/ostree/"), "{name}: {text}");
        }
        assert_eq!(
            std::fs::read_to_string(entries.join("notes.txt")).unwrap(),
            "linux /x\n",
            "only boot entries"
        );
        assert_eq!(
            std::fs::read_dir(&entries).unwrap().count(),
            3,
            "no leftovers"
        );
        assert_eq!(
            prefix_boot_entries(root.path()).unwrap(),
            0,
            "a second run does nothing"
        );
        // No entries at all: an error, not a disk that cannot boot.
        assert!(prefix_boot_entries(tempfile::tempdir().unwrap().path()).is_err());
    }
}
