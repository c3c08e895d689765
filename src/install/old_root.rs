//! The old system around a conversion: its package manager held still while
//! the conversion runs, its package state and kernels put aside, the switch
//! of its boot menu, the undoing of an interrupted conversion, and the
//! removal of the old root (`cleanup --old-root`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::convert::{INCOMPLETE, MOVED_INTO_VAR, STATEROOT_VAR, VAR_LINK};

/// Where the old system's boot files and package state are put aside.
pub const OLD_BOOT: &str = "boot/old-root";
pub const OLD_STATE: &str = "var/lib/apt-ostree/old-root";

/// The old system's package state: the image brings its own (dpkg's
/// database in /usr, /var/lib/dpkg a link to it, made at boot).
const STATE: &[&str] = &[
    "var/lib/dpkg",
    "var/lib/apt",
    "var/cache/apt",
    "var/cache/debconf",
];

/// dpkg's locks, held as apt and dpkg take them (fcntl write locks): no
/// package is installed into the old system while it is converted.
pub struct DpkgLock {
    _files: Vec<std::fs::File>,
}

impl DpkgLock {
    pub fn take(root: &Path) -> Result<DpkgLock> {
        let mut files = Vec::new();
        for name in ["lock-frontend", "lock"] {
            let path = root.join("var/lib/dpkg").join(name);
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| format!("Opening {}", path.display()))?;
            if !crate::fsutil::try_write_lock(&file, false) {
                bail!(
                    "{} is held: apt or dpkg is running; try again when it is done",
                    path.display()
                );
            }
            files.push(file);
        }
        Ok(DpkgLock { _files: files })
    }
}

/// The switch: `/boot/grub/grub.cfg` becomes a link to the menu libostree
/// keeps, by one rename. The old menu stays as `grub.cfg.old-root`.
pub fn switch_menu(root: &Path) -> Result<()> {
    let grub = root.join("boot/grub");
    let cfg = grub.join("grub.cfg");
    let old = grub.join("grub.cfg.old-root");
    if std::fs::symlink_metadata(&cfg).is_ok_and(|m| m.is_file()) && !old.exists() {
        std::fs::hard_link(&cfg, &old)?;
    }
    let new = grub.join("grub.cfg.apt-ostree");
    let _ = std::fs::remove_file(&new);
    std::os::unix::fs::symlink("../loader/grub.cfg", &new)?;
    std::fs::rename(&new, &cfg).context("Switching /boot/grub/grub.cfg")?;
    crate::fsutil::sync_dir(&grub)?;
    nix::unistd::sync();
    Ok(())
}

/// Once the menu is switched, the old kernels out of /boot (into
/// [`OLD_BOOT`]), where nothing lists them. Repeating it does nothing.
pub fn kernels_aside(root: &Path) -> Result<()> {
    let boot = root.join(OLD_BOOT);
    std::fs::create_dir_all(&boot)?;
    for entry in std::fs::read_dir(root.join("boot"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let kernel_file = ["vmlinuz-", "initrd.img-", "System.map-", "config-"]
            .iter()
            .any(|p| name.starts_with(p));
        if kernel_file && entry.file_type()?.is_file() {
            std::fs::rename(entry.path(), boot.join(&name))?;
        }
    }
    crate::fsutil::sync_dir(&root.join("boot"))?;
    Ok(())
}

/// The old system's package state out of /var (into [`OLD_STATE`]): the
/// image brings its own, and /var/lib/dpkg must be free for its link. The
/// old system boots without it; [`undo`] puts it back.
pub fn state_aside(root: &Path) -> Result<()> {
    let state = root.join(OLD_STATE);
    std::fs::create_dir_all(&state)?;
    for rel in STATE {
        let path = root.join(rel);
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        let aside = state.join(rel.replace('/', "-"));
        if is_dir && !aside.exists() {
            std::fs::rename(&path, &aside)?;
        }
    }
    crate::fsutil::sync_dir(&state)?;
    Ok(())
}

/// Undo a conversion that did not reach the switch (an error, or a power
/// cut found by the next run): /home and the others back, /ostree and the
/// boot entries gone. Never on a machine that booted a deployment.
pub fn undo(root: &Path) -> Result<()> {
    if Path::new("/run/ostree-booted").exists() {
        bail!("this machine runs an OSTree deployment: nothing to undo");
    }
    let cfg = root.join("boot/grub/grub.cfg");
    if std::fs::symlink_metadata(&cfg).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!("/boot/grub/grub.cfg already boots the new system: nothing to undo");
    }
    for (from, to) in MOVED_INTO_VAR {
        let (src, dest) = (root.join(from), root.join(to));
        let linked = std::fs::symlink_metadata(&src).is_ok_and(|m| m.file_type().is_symlink());
        if linked && dest.is_dir() {
            std::fs::remove_file(&src)?;
            std::fs::rename(&dest, &src)?;
        }
    }
    for dir in [
        "boot/loader",
        "boot/loader.0",
        "boot/loader.1",
        "boot/ostree",
    ] {
        let path = root.join(dir);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(&path)?,
            Ok(_) => std::fs::remove_dir_all(&path)?,
            Err(_) => {}
        }
    }
    var_back(root)?;
    let ostree = root.join("ostree");
    if ostree.exists() {
        super::unlock_deployments(root)?;
        std::fs::remove_dir_all(&ostree).context("Removing /ostree")?;
    }
    nix::unistd::sync();
    Ok(())
}

/// The machine's /var back in its place, from any state the conversion's
/// two exchanges can leave (convert::move_var): /var a link or an empty
/// directory, the data in the stateroot's var. Then the stateroot's var is
/// empty, or the undo stops before /ostree is removed.
fn var_back(root: &Path) -> Result<()> {
    let var = root.join("var");
    let stateroot_var = root.join(STATEROOT_VAR);
    let link = root.join(VAR_LINK);
    let is_link = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    let is_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if is_link(&var) {
        // After both exchanges: an empty directory takes the link's place.
        if !is_dir(&link) {
            let _ = std::fs::remove_file(&link);
            std::fs::create_dir(&link)?;
        }
        crate::fsutil::exchange(&link, &var)?;
    }
    let var_empty = std::fs::read_dir(&var).is_ok_and(|mut d| d.next().is_none());
    if is_dir(&stateroot_var) && var_empty {
        crate::fsutil::exchange(&var, &stateroot_var)?;
    }
    match std::fs::symlink_metadata(&link) {
        Ok(m) if m.is_dir() => std::fs::remove_dir(&link)?,
        Ok(_) => std::fs::remove_file(&link)?,
        Err(_) => {}
    }
    crate::fsutil::sync_dir(root)?;
    let left = std::fs::read_dir(&stateroot_var).map_or(0, |d| d.count());
    if left > 0 {
        bail!(
            "{} is not empty and /var is not the machine's: look at both before removing /ostree",
            stateroot_var.display()
        );
    }
    Ok(())
}

/// Whether an interrupted conversion waits to be undone.
pub fn interrupted(root: &Path) -> bool {
    root.join(INCOMPLETE.trim_start_matches('/')).exists()
}

/// What a Debian root holds at its top (and links where /home and the
/// others were): what `cleanup --old-root` removes. Anything else at the
/// top of the old root is the administrator's, and stays.
const OLD_SYSTEM: &[&str] = &[
    "bin",
    "etc",
    "home",
    "lib",
    "lib32",
    "lib64",
    "libx32",
    "media",
    "mnt",
    "opt",
    "root",
    "sbin",
    "srv",
    "tmp",
    "usr",
    "initrd.img",
    "initrd.img.old",
    "vmlinuz",
    "vmlinuz.old",
];

/// The old root under `sysroot`: what `cleanup --old-root` removes, and
/// the entries at its top it leaves (not the old system's, nor OSTree's).
pub fn old_root_entries(sysroot: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let dev = std::fs::metadata(sysroot)?.dev();
    let (mut removed, mut kept) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(sysroot)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let ours = [
            "ostree",
            "boot",
            "var",
            "lost+found",
            "sysroot",
            "dev",
            "proc",
            "run",
            "sys",
        ];
        if ours.contains(&name.as_str()) {
            continue;
        }
        // A mount point (another file system) is not the old root's.
        let other_fs = std::fs::symlink_metadata(entry.path())?.dev() != dev;
        if OLD_SYSTEM.contains(&name.as_str()) && !other_fs {
            removed.push(name);
        } else {
            kept.push(name);
        }
    }
    for list in [&mut removed, &mut kept] {
        list.sort();
    }
    Ok((removed, kept))
}

/// `cleanup --old-root` runs on the converted machine, booted into its
/// deployment; anywhere else it is refused.
pub fn require_booted() -> Result<()> {
    if !Path::new("/run/ostree-booted").exists() {
        bail!("cleanup --old-root runs on the converted machine, booted into its deployment");
    }
    Ok(())
}

/// `apt-ostree cleanup --old-root`, on the converted machine: the old
/// system's files under `sysroot` removed (and what was put aside);
/// the entries left at the top, for the report.
pub fn cleanup(sysroot: &Path) -> Result<Vec<String>> {
    require_booted()?;
    if !sysroot.join("ostree/deploy").is_dir() {
        bail!("{} is not an OSTree sysroot", sysroot.display());
    }
    // A cut right after the switch can leave this undone.
    kernels_aside(sysroot)?;
    let (removed, mut kept) = old_root_entries(sysroot)?;
    // Never into a file system mounted inside (remove_dir_all would).
    let mounts = std::fs::read_to_string("/proc/self/mounts").context("Reading the mounts")?;
    let mount_points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    for name in &removed {
        let top = sysroot.join(name);
        let holds_mount = mount_points.iter().any(|m| Path::new(m).starts_with(&top));
        if holds_mount {
            kept.push(format!("{name} (a file system is mounted inside)"));
            continue;
        }
        let path = sysroot.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => Ok(()),
        }
        .with_context(|| format!("Removing {}", path.display()))?;
    }
    for rel in [OLD_BOOT, OLD_STATE, "boot/grub/grub.cfg.old-root"] {
        let path = sysroot.join(rel);
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else if path.exists() {
            std::fs::remove_file(&path)?;
        }
    }
    let _ = std::fs::remove_file(sysroot.join(INCOMPLETE.trim_start_matches('/')));
    nix::unistd::sync();
    Ok(kept)
}

#[cfg(test)]
mod tests;
