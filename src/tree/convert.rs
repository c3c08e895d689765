//! A Debian root file system (as mmdebstrap leaves one, or an image's
//! stacked layers) made into a tree ostree can deploy, in named steps.
//!
//! The tree may come from a registry: every step goes through
//! [`Beneath`], and a place the layout needs as a directory (/etc, /var,
//! /boot, /tmp, /usr/lib/modules) is never taken through a link the
//! content planted there. Such a link is either replaced (where the
//! layout makes the place itself) or refused with a clear error.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::var::merge_tmpfiles;
use super::{opt_into_usr, var_to_tmpfiles, COMPOSED_TMPFILES};
use crate::fsutil::{join, Beneath, Kind};

/// What [`make_deployable`] found and did.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Conversion {
    /// Kernel versions moved to usr/lib/modules/KVER.
    pub kernels: Vec<String>,
    /// Device nodes, FIFOs and sockets removed.
    pub special_files_removed: usize,
    /// tmpfiles.d lines written for the former /var content.
    pub tmpfiles_lines: usize,
}

const MODULES: &str = "usr/lib/modules";
const PLACEHOLDER_KERNEL: &str = "0.0.0-placeholder";

/// Turn the root file system at `root` into a tree ostree can deploy. With
/// `placeholder_kernel`, a tree without a kernel gets a placeholder (for
/// images that are not booted on hardware).
pub fn make_deployable(root: &Path, placeholder_kernel: bool) -> Result<Conversion> {
    let root = Beneath::open(root)?;
    let mut conversion = Conversion {
        special_files_removed: remove_special_files(&root)?,
        ..Default::default()
    };
    move_etc(&root)?;
    // dpkg's database moves into the read-only /usr, with /var/lib/dpkg a link to it.
    if root.is_dir("var/lib/dpkg")? {
        root.create_dir_all("usr/share/dpkg")?;
        root.rename("var/lib/dpkg", &root, crate::dpkg::DATABASE_DIR)?;
    }
    conversion.kernels = move_kernels(&root)?;
    if conversion.kernels.is_empty() && !has_kernel(&root)? {
        if !placeholder_kernel {
            bail!("the tree has no kernel: add a linux-image package, or set placeholder-kernel = true");
        }
        let kdir = join(MODULES, PLACEHOLDER_KERNEL);
        root.create_dir_all(&kdir)?;
        root.write(
            &join(&kdir, "vmlinuz"),
            b"placeholder kernel (apt-ostree compose)\n",
            0o644,
        )?;
        root.write(
            &join(&kdir, "initramfs.img"),
            b"placeholder initramfs\n",
            0o644,
        )?;
        conversion.kernels.push(PLACEHOLDER_KERNEL.into());
    }
    real_dir(&root, "var")?;
    move_mutable_places(&root)?;
    conversion.tmpfiles_lines = var_into_tmpfiles(&root)?;
    top_level(&root)?;
    check_boot_layout(&root)?;
    Ok(conversion)
}

/// [`make_deployable`] for a tree from an image: run where it sees nothing
/// but the tree (`apt-ostreed --convert-tree`, confined by
/// [`crate::sandbox::run_confined`]). Its error, if any, is the conversion's.
pub fn make_deployable_confined(root: &Path) -> Result<Conversion> {
    let out =
        crate::sandbox::run_confined(root, &["--convert-tree", crate::sandbox::CONFINED_TREE])?;
    if !out.status.success() {
        let reason = out.stderr.trim().trim_start_matches("error: ");
        bail!(
            "{}",
            if reason.is_empty() {
                "the conversion failed"
            } else {
                reason
            }
        );
    }
    serde_json::from_str(&out.stdout).context("Reading the conversion's report")
}

/// `apt-ostreed --convert-tree DIR`: the conversion of an image's tree, as
/// [`make_deployable_confined`] runs it; the report on stdout.
pub fn convert_main(root: &Path) -> Result<()> {
    let conversion = make_deployable(root, false)?;
    println!("{}", serde_json::to_string(&conversion)?);
    Ok(())
}

/// ostree stores regular files, symlinks and directories only.
fn remove_special_files(root: &Beneath) -> Result<usize> {
    let special: Vec<String> = root
        .walk("")?
        .into_iter()
        .filter(|(_, m)| m.kind == Kind::Special)
        .map(|(rel, _)| rel)
        .collect();
    for rel in &special {
        root.remove_all(rel)?;
    }
    Ok(special.len())
}

/// /etc lives in /usr/etc; ostree refuses a tree with both, and libostree
/// reads /usr/etc when it deploys: it must be a directory of the tree.
fn move_etc(root: &Beneath) -> Result<()> {
    match root.meta("etc")?.map(|m| m.kind) {
        Some(Kind::Directory) => {
            if root.meta("usr/etc")?.is_some() {
                bail!("the tree has both /etc and /usr/etc");
            }
            root.create_dir_all("usr")?;
            root.rename("etc", root, "usr/etc")?;
        }
        None => {}
        Some(_) => bail!("the tree's /etc is not a directory (a link or a file)"),
    }
    match root.meta("usr/etc")?.map(|m| m.kind) {
        None | Some(Kind::Directory) => Ok(()),
        Some(_) => bail!("the tree's /usr/etc is not a directory (a link or a file)"),
    }
}

/// The kernels and initramfs images of /boot, where ostree looks for them;
/// /boot is emptied. Returns the kernel versions moved.
fn move_kernels(root: &Beneath) -> Result<Vec<String>> {
    let mut kernels = Vec::new();
    if root.is_dir("boot")? {
        for (name, meta) in root.entries("boot")? {
            let Some(kver) = name.strip_prefix("vmlinuz-") else {
                continue;
            };
            if meta.kind != Kind::File || kver.is_empty() || kver.starts_with('.') {
                continue;
            }
            let modules = join(MODULES, kver);
            root.create_dir_all(&modules)?;
            for (prefix, target) in [
                ("vmlinuz-", "vmlinuz"),
                ("initrd.img-", "initramfs.img"),
                ("config-", "config"),
                ("System.map-", "System.map"),
            ] {
                let from = format!("boot/{prefix}{kver}");
                if root.meta(&from)?.is_some_and(|m| m.kind == Kind::File) {
                    let to = join(&modules, target);
                    root.remove_all(&to)?;
                    root.rename(&from, root, &to)?;
                }
            }
            kernels.push(kver.to_string());
        }
    }
    root.remove_all("boot")?;
    for link in ["vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"] {
        if root.meta(link)?.is_some_and(|m| m.kind != Kind::Directory) {
            root.remove_all(link)?;
        }
    }
    Ok(kernels)
}

/// A kernel already where ostree looks for it (a tree converted before).
fn has_kernel(root: &Beneath) -> Result<bool> {
    if !root.is_dir(MODULES)? {
        return Ok(false);
    }
    for (kver, meta) in root.entries(MODULES)? {
        if meta.kind == Kind::Directory
            && root
                .meta(&format!("{MODULES}/{kver}/vmlinuz"))?
                .is_some_and(|m| m.kind == Kind::File)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `rel` as a real directory: a link or file there is replaced.
fn real_dir(root: &Beneath, rel: &str) -> Result<()> {
    match root.meta(rel)?.map(|m| m.kind) {
        Some(Kind::Directory) => return Ok(()),
        Some(_) => root.remove_all(rel)?,
        None => {}
    }
    root.create_dir_all(rel)
}

/// Mutable places move into /var, which the deployment keeps across updates.
fn move_mutable_places(root: &Beneath) -> Result<()> {
    for (top, inside, link) in [
        ("home", "var/home", "var/home"),
        ("root", "var/roothome", "var/roothome"),
        ("opt", "var/opt", "var/opt"),
        ("srv", "var/srv", "var/srv"),
        ("mnt", "var/mnt", "var/mnt"),
        ("usr/local", "var/usrlocal", "../var/usrlocal"),
    ] {
        match root.meta(top)?.map(|m| m.kind) {
            Some(Kind::Directory) => {
                // An empty place of the same name in /var gives way.
                if root.is_dir(inside)? && root.entries(inside)?.is_empty() {
                    root.remove_all(inside)?;
                }
                root.rename(top, root, inside)?;
            }
            Some(_) => root.remove_all(top)?,
            None => {}
        }
        root.symlink(Path::new(link), top)?;
        real_dir(root, inside)?;
    }
    Ok(())
}

/// What is left in /var comes back at boot through tmpfiles.d: dpkg's
/// link first, then the packages' /opt trees, kept in /usr. /var is
/// empty afterwards. Returns the number of lines.
fn var_into_tmpfiles(root: &Beneath) -> Result<usize> {
    let var = root.subtree("var")?;
    let mut lines = format!(
        "L /var/lib/dpkg - - - - ../../{}\n",
        crate::dpkg::DATABASE_DIR
    );
    lines.push_str(&opt_into_usr(&var, root)?);
    lines.push_str(&var_to_tmpfiles(&var, root)?);
    // A tree converted before (an image built FROM an encapsulated base)
    // has its /var only in this list: keep what the new /var does not redefine.
    if let Some(earlier) = root.read(COMPOSED_TMPFILES)? {
        lines = merge_tmpfiles(&lines, &String::from_utf8_lossy(&earlier));
    }
    root.create_dir_all(
        Path::new(COMPOSED_TMPFILES)
            .parent()
            .and_then(|p| p.to_str())
            .unwrap_or(""),
    )?;
    root.write(
        COMPOSED_TMPFILES,
        format!("# /var of the composed image (apt-ostree compose)\n{lines}").as_bytes(),
        0o644,
    )?;
    for (name, _) in var.entries("")? {
        var.remove_all(&name)?;
    }
    Ok(lines.lines().count())
}

/// The top level of an ostree-booted system: real directories (whatever
/// stood there is replaced), /tmp sticky, and `ostree` the link to the sysroot's.
fn top_level(root: &Beneath) -> Result<()> {
    for dir in ["sysroot", "run", "proc", "sys", "dev", "tmp", "boot"] {
        real_dir(root, dir)?;
    }
    root.set_dir_mode("tmp", 0o1777)?;
    let target = Path::new("sysroot/ostree");
    let right = root
        .meta("ostree")?
        .is_some_and(|m| m.kind == Kind::Symlink)
        && root.read_link("ostree")? == target;
    if !right {
        root.remove_all("ostree")?;
        root.symlink(target, "ostree")?;
    }
    Ok(())
}

/// libostree takes the kernel from usr/lib/modules/KVER and the name of
/// the OS from os-release when it deploys, on the host, following links:
/// none may lead out of the tree on that way.
fn check_boot_layout(root: &Beneath) -> Result<()> {
    for rel in ["usr/lib/os-release", "usr/etc/os-release"] {
        if !root.stays_inside(rel)? {
            bail!("the tree's /{rel} is a link out of the tree");
        }
    }
    for rel in ["usr", "usr/lib", MODULES] {
        if root.meta(rel)?.is_some_and(|m| m.kind != Kind::Directory) {
            bail!("the tree's /{rel} is not a directory (a link or a file)");
        }
    }
    for (kver, meta) in root.entries(MODULES)? {
        if meta.kind == Kind::Symlink {
            bail!("the tree's /{MODULES}/{kver} is a symbolic link");
        }
        for file in ["vmlinuz", "initramfs.img"] {
            let rel = format!("{MODULES}/{kver}/{file}");
            if meta.kind == Kind::Directory
                && root.meta(&rel)?.is_some_and(|m| m.kind == Kind::Symlink)
            {
                bail!("the tree's /{rel} is a symbolic link");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::COMPOSED_TMPFILES;
    use super::*;

    #[test]
    fn a_debian_root_becomes_a_deployable_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in [
            "etc/apt",
            "var/lib/dpkg/info",
            "var/lib/demo",
            "var/log",
            "boot/grub",
            "home/user",
            "root",
            "opt/x",
            "usr/bin",
            "usr/local/bin",
            "dev",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("etc/hostname"), "debian\n").unwrap();
        std::fs::write(root.join("var/lib/dpkg/status"), "Package: x\n").unwrap();
        std::fs::write(root.join("var/lib/demo/state"), "s\n").unwrap();
        std::fs::write(root.join("boot/vmlinuz-6.1.0-9-amd64"), "kernel").unwrap();
        std::fs::write(root.join("boot/initrd.img-6.1.0-9-amd64"), "initrd").unwrap();
        std::os::unix::fs::symlink("boot/vmlinuz-6.1.0-9-amd64", root.join("vmlinuz")).unwrap();
        std::fs::write(root.join("home/user/.profile"), "p").unwrap();
        nix::unistd::mkfifo(
            &root.join("dev/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();

        let c = make_deployable(root, false).unwrap();
        assert_eq!(c.kernels, ["6.1.0-9-amd64"]);
        assert_eq!(c.special_files_removed, 1);
        assert_eq!(
            std::fs::read_to_string(root.join("usr/etc/hostname")).unwrap(),
            "debian\n"
        );
        assert!(!root.join("etc").exists());
        assert!(root.join("usr/share/dpkg/database/status").is_file());
        assert_eq!(
            std::fs::read(root.join("usr/lib/modules/6.1.0-9-amd64/vmlinuz")).unwrap(),
            b"kernel"
        );
        assert_eq!(
            std::fs::read(root.join("usr/lib/modules/6.1.0-9-amd64/initramfs.img")).unwrap(),
            b"initrd"
        );
        assert!(std::fs::read_dir(root.join("boot"))
            .unwrap()
            .next()
            .is_none());
        assert!(std::fs::symlink_metadata(root.join("vmlinuz")).is_err());
        assert_eq!(
            std::fs::read_link(root.join("home")).unwrap(),
            Path::new("var/home")
        );
        assert_eq!(
            std::fs::read_link(root.join("root")).unwrap(),
            Path::new("var/roothome")
        );
        assert_eq!(
            std::fs::read_link(root.join("usr/local")).unwrap(),
            Path::new("../var/usrlocal")
        );
        assert_eq!(
            std::fs::read_link(root.join("ostree")).unwrap(),
            Path::new("sysroot/ostree")
        );
        assert!(
            std::fs::read_dir(root.join("var"))
                .unwrap()
                .next()
                .is_none(),
            "/var must be empty"
        );
        let tmpfiles = std::fs::read_to_string(root.join(COMPOSED_TMPFILES)).unwrap();
        assert!(
            tmpfiles.contains("L /var/lib/dpkg - - - - ../../usr/share/dpkg/database"),
            "{tmpfiles}"
        );
        assert!(tmpfiles.contains("C /var/lib/demo/state"), "{tmpfiles}");
        assert!(tmpfiles.contains("C /var/home/user/.profile"), "{tmpfiles}");
        assert!(!tmpfiles.contains("/var/log"), "{tmpfiles}");
        // A package's /opt tree is kept in /usr and linked from /var/opt.
        assert!(root.join("usr/lib/opt/x").is_dir());
        assert!(
            tmpfiles.contains("L /var/opt/x - - - - ../../usr/lib/opt/x"),
            "{tmpfiles}"
        );
        assert!(tmpfiles.contains("d /var/opt "), "{tmpfiles}");
    }

    #[test]
    fn an_image_built_on_a_converted_base_takes_its_new_opt_trees() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in [
            "etc",
            "var/lib/dpkg",
            "opt/x/bin",
            "opt/my app",
            "usr/lib/tmpfiles.d",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("var/lib/dpkg/status"), "Package: x\n").unwrap();
        std::fs::write(root.join("opt/x/bin/tool"), "version 2").unwrap();
        std::fs::write(
            root.join(COMPOSED_TMPFILES),
            "L /var/opt/x - - - - ../../usr/lib/opt/x\n",
        )
        .unwrap();
        make_deployable(root, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("usr/lib/opt/x/bin/tool")).unwrap(),
            "version 2"
        );
        let tmpfiles = std::fs::read_to_string(root.join(COMPOSED_TMPFILES)).unwrap();
        assert_eq!(tmpfiles.matches("L /var/opt/x ").count(), 1, "{tmpfiles}");
        assert!(
            tmpfiles.contains("L \"/var/opt/my app\" - - - - ../../usr/lib/opt/my app\n"),
            "{tmpfiles}"
        );
    }

    #[test]
    fn a_tree_without_kernel_needs_the_placeholder_to_be_allowed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let err = make_deployable(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("no kernel"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let c = make_deployable(dir.path(), true).unwrap();
        assert_eq!(c.kernels, ["0.0.0-placeholder"]);
    }

    /// Every place the conversion writes, moves or empties, as a link out
    /// of the tree (absolute and relative): the victim beside the tree is
    /// never touched, and the conversion either takes the link as content
    /// or refuses the tree.
    #[test]
    fn links_out_of_the_tree_never_reach_outside() {
        let places = [
            "boot",
            "etc",
            "tmp",
            "var",
            "home",
            "usr/etc",
            "usr/local",
            "usr/lib/modules",
            "usr/lib/modules/6.1.0-9-amd64",
            "usr/lib/tmpfiles.d",
            "usr/lib/sysusers.d",
            "usr/lib/opt",
            "var/lib/dpkg",
            "var/opt",
            "usr/share/factory",
            "usr/share/dpkg",
            "ostree",
            "sysroot",
        ];
        for place in places {
            for absolute in [true, false] {
                let dir = tempfile::tempdir().unwrap();
                let (root, victim) = (dir.path().join("root"), dir.path().join("victim"));
                for d in [
                    "etc",
                    "boot",
                    "var/lib/dpkg",
                    "var/opt/pkg",
                    "usr/lib",
                    "usr/share",
                ] {
                    std::fs::create_dir_all(root.join(d)).unwrap();
                }
                std::fs::write(root.join("var/lib/dpkg/status"), "Package: x\n").unwrap();
                std::fs::write(root.join("boot/vmlinuz-6.1.0-9-amd64"), "kernel").unwrap();
                std::fs::create_dir_all(victim.join("sub")).unwrap();
                std::fs::write(victim.join("file"), "precious").unwrap();
                let path = root.join(place);
                let _ = std::fs::remove_dir_all(&path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let target = if absolute {
                    victim.clone()
                } else {
                    Path::new(&"../".repeat(place.matches('/').count() + 1)).join("victim")
                };
                std::os::unix::fs::symlink(&target, &path).unwrap();
                let result = make_deployable(&root, false);
                let mut names: Vec<_> = std::fs::read_dir(&victim)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect();
                names.sort();
                assert_eq!(names, ["file", "sub"], "{place} ({absolute}): {result:?}");
                assert_eq!(
                    std::fs::read_to_string(victim.join("file")).unwrap(),
                    "precious"
                );
                assert_eq!(std::fs::read_dir(victim.join("sub")).unwrap().count(), 0);
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(
                    std::fs::metadata(&victim).unwrap().permissions().mode() & 0o7777,
                    0o755
                );
                // Where the layout needs a directory, a link either gave way or was refused.
                if result.is_ok() && ["boot", "tmp", "var", "sysroot"].contains(&place) {
                    assert!(
                        std::fs::symlink_metadata(&path).unwrap().is_dir(),
                        "{place}"
                    );
                }
                if [
                    "etc",
                    "usr/etc",
                    "usr/lib/modules",
                    "usr/lib/modules/6.1.0-9-amd64",
                ]
                .contains(&place)
                {
                    assert!(
                        result.is_err(),
                        "{place} ({absolute}) was taken through its link"
                    );
                }
            }
        }
    }
}
