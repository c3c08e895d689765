//! `install-os to-existing-root`: the running Debian machine becomes an
//! OSTree sysroot in its own root file system (issue 31).
//!
//! The old system boots until one rename: everything is prepared beside it
//! (the repository and deployment under /ostree, the boot entries under
//! /boot/loader, the new menu in /boot/loader/grub.cfg), and the switch is
//! `/boot/grub/grub.cfg` replaced by a link to `../loader/grub.cfg`, which
//! the machine's GRUB (BIOS, or shim and the signed GRUB through the ESP's
//! stub) reads at the next boot. A power cut before it boots the old
//! system, which the next run cleans up after; after it, the new one.
//!
//! Nothing of the machine's data is copied: /var becomes the stateroot's by
//! rename (a link left for the old system), and /home, /root, /srv and
//! /usr/local move into /var by rename, each leaving a link where it was so
//! that the old system still finds them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ostree::gio::prelude::*;
use ostree::{gio, glib};

use super::preflight::Machine;
use super::{carry, old_root, Plan, Report};
use crate::progress::Sink;

/// The stateroot of converted machines, as compose image's.
pub const STATEROOT: &str = "debian";

/// Written when the conversion starts changing the machine, removed with
/// the switch: found by the next run, it undoes an interrupted one.
pub const INCOMPLETE: &str = "/ostree/.apt-ostree-install-os-incomplete";

/// The stateroot's /var, relative to the root; the machine's /var moves there.
pub const STATEROOT_VAR: &str = "ostree/deploy/debian/var";
/// The link that takes /var's place (made beside it first).
pub const VAR_LINK: &str = "var.apt-ostree";

/// Directories of the old root that the image keeps under /var, and where.
pub const MOVED_INTO_VAR: &[(&str, &str)] = &[
    ("home", "var/home"),
    ("root", "var/roothome"),
    ("srv", "var/srv"),
    ("usr/local", "var/usrlocal"),
];

/// The link left in the old root where a directory moved into /var.
fn link_back(from: &str, to: &str) -> PathBuf {
    let depth = from.matches('/').count();
    PathBuf::from(format!("{}{to}", "../".repeat(depth)))
}

/// Convert the running machine (the checks are done: `plan` says what).
pub fn to_existing_root(plan: &Plan, machine: &Machine, sink: &Sink) -> Result<Report> {
    let root = Path::new("/");
    let lock = old_root::DpkgLock::take(root)?;
    std::fs::create_dir_all(root.join("ostree"))?;
    std::fs::write(INCOMPLETE, b"apt-ostree install-os\n")?;
    nix::unistd::sync();
    let prepared = prepare(plan, machine, sink);
    let report = match prepared {
        Ok(report) => report,
        Err(e) => {
            sink.log(format!("Undoing the conversion: {e:#}"));
            if let Err(undo) = old_root::undo(root) {
                sink.log(format!("Undoing it failed too: {undo:#}"));
            }
            return Err(e);
        }
    };
    sink.task("Switching the boot menu to the new system", || {
        old_root::switch_menu(root)
    })?;
    std::fs::remove_file(INCOMPLETE)?;
    drop(lock);
    sink.task("Putting the old system's kernels aside", || {
        old_root::kernels_aside(root)
    })?;
    Ok(report)
}

/// Everything before the switch; on error the caller undoes it.
fn prepare(plan: &Plan, machine: &Machine, sink: &Sink) -> Result<Report> {
    let root = Path::new("/");
    let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(root)));
    sysroot.ensure_initialized(gio::Cancellable::NONE)?;
    // Before the sysroot is loaded, which reads them once (set later, they
    // were ignored on a real boot). The machine's own grub-mkconfig must
    // not run (libostree would, seeing its grub.cfg): the image's runs
    // below, in the deployment. /boot on the root file system: the boot
    // entries name /boot/ostree/..., as GRUB finds them there.
    let configured = ostree::Repo::new(&gio::File::for_path(root.join("ostree/repo")));
    configured.open(gio::Cancellable::NONE)?;
    let config = configured.copy_config();
    config.set_string("sysroot", "bootloader", "none");
    configured.write_config(&config)?;
    if machine.boot.is_none() {
        crate::sysroot::enable_boot_prefix(root)?;
    }
    sysroot.load(gio::Cancellable::NONE)?;
    let repo = sysroot.repo();
    sysroot.init_osname(STATEROOT, gio::Cancellable::NONE)?;
    sink.task("Moving /var into the stateroot", || move_var(root))?;

    let commit = plan.source.pull(&repo, sink)?;
    let origin = plan.source.origin().to_keyfile();
    let kargs = super::preflight::deployment_kargs(
        &plan.kept_kargs,
        &image_kargs(&repo, &commit)?,
        &plan.extra_kargs,
    );
    let (deployment, dir) = sink.task("Deploying", || {
        deploy_tree(&sysroot, &commit, &origin, &kargs)
    })?;
    let carried = sink.task("Carrying over the machine's own files", || {
        carry::carry(&root.join("etc"), &dir.join("etc"))
    })?;
    grub_scripts_off(&dir.join("etc"))?;
    let manual = super::manual_packages_missing(root, &dir)?;
    let moved = sink.task("Moving /home, /root, /srv and /usr/local into /var", || {
        move_into_var(root)
    })?;
    sink.task("Putting the old system's package state aside", || {
        old_root::state_aside(root)
    })?;
    sink.task("Writing the boot entries", || {
        sysroot.simple_write_deployment(
            Some(STATEROOT),
            &deployment,
            None,
            ostree::SysrootSimpleWriteDeploymentFlags::NONE,
            gio::Cancellable::NONE,
        )
    })?;
    let (dir, layered) = if plan.layer_manual {
        let (layerable, _) = super::layerable(&manual);
        match layerable.is_empty() {
            true => (dir, Vec::new()),
            false => {
                let title = format!("Layering {}", layerable.join(" "));
                let new_dir = sink.task(&title, || {
                    layer(root, &commit, plan, &layerable, &kargs, sink)
                })?;
                (new_dir, layerable)
            }
        }
    } else {
        (dir, Vec::new())
    };
    sink.task("Writing the new boot menu", || {
        crate::compose::grub::write_menu(&dir, root)
    })?;
    // From now on libostree regenerates the menu with each deployment.
    let config = repo.copy_config();
    let _ = config.remove_key("sysroot", "bootloader");
    repo.write_config(&config)?;
    let bootchain = if matches!(machine.firmware, super::preflight::Firmware::Uefi { .. }) {
        sink.task("Writing the signed boot chain to the ESP", || {
            crate::bootchain::system::update(&root.join("boot"), &dir)
        })
        .map(|changes| !changes.is_empty())?
    } else {
        false
    };
    Ok(Report {
        commit,
        kargs,
        deployment: dir,
        carried,
        manual,
        layered,
        moved,
        bootchain,
    })
}

/// Deploy `commit` into the stateroot (not yet written as a boot entry);
/// the deployment and its directory.
pub(super) fn deploy_tree(
    sysroot: &ostree::Sysroot,
    commit: &str,
    origin: &glib::KeyFile,
    kargs: &[String],
) -> Result<(ostree::Deployment, PathBuf)> {
    let argv: Vec<&str> = kargs.iter().map(String::as_str).collect();
    let deployment = sysroot.deploy_tree(
        Some(STATEROOT),
        commit,
        Some(origin),
        None,
        &argv,
        gio::Cancellable::NONE,
    )?;
    let dir = sysroot
        .deployment_directory(&deployment)
        .path()
        .context("the deployment has no local path")?;
    Ok((deployment, dir))
}

/// `--layer-manual`: `packages` layered on `base` as `apt-ostree install`
/// would (the same engine, with the carried /etc's apt sources), deployed
/// in front of the base deployment, which stays as the rollback; the new
/// deployment's directory.
fn layer(
    root: &Path,
    base: &str,
    plan: &Plan,
    packages: &[String],
    kargs: &[String],
    sink: &Sink,
) -> Result<PathBuf> {
    let mut sysroot = crate::sysroot::Sysroot::open(root)?;
    let mut origin = plan.source.origin();
    origin.requested_packages.extend(packages.iter().cloned());
    let layered = crate::layering::build(&sysroot, sink, base, &origin);
    crate::layering::finish_cleanups();
    let layered = layered.context(
        "Layering the packages installed by hand (convert without --layer-manual, \
         then `apt-ostree install` them)",
    )?;
    sysroot.deploy_commit(sink, &layered.commit, &origin, Some(kargs))?;
    let ostree = sysroot.ostree();
    let deployment = ostree
        .deployments()
        .into_iter()
        .next()
        .context("no deployment after layering")?;
    ostree
        .deployment_directory(&deployment)
        .path()
        .context("the deployment has no local path")
}

/// The machine's /var becomes the stateroot's, where the new system mounts
/// it from, and /var a link to it for the old system: two exchanges
/// (`RENAME_EXCHANGE`), so that each name always holds a directory. Between
/// them the old system sees an empty /var for a moment; [`old_root::undo`]
/// knows each of the states. libostree opens the stateroot's var without
/// following links, so it must be the directory, not /var.
pub(super) fn move_var(root: &Path) -> Result<()> {
    let var = root.join("var");
    let stateroot_var = root.join(STATEROOT_VAR);
    let link = root.join(VAR_LINK);
    if std::fs::symlink_metadata(&var).is_ok_and(|m| m.file_type().is_symlink()) {
        return Ok(());
    }
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(STATEROOT_VAR, &link)?;
    crate::fsutil::sync_dir(root)?;
    crate::fsutil::exchange(&var, &stateroot_var)?;
    crate::fsutil::exchange(&link, &var)?;
    std::fs::remove_dir(&link).with_context(|| format!("Removing {}", link.display()))?;
    crate::fsutil::sync_dir(root)?;
    crate::fsutil::sync_dir(&root.join(format!("ostree/deploy/{STATEROOT}")))?;
    Ok(())
}

/// Move [`MOVED_INTO_VAR`] into /var, each leaving a link; those that are
/// mount points, not directories, or already there stay as they are.
pub(super) fn move_into_var(root: &Path) -> Result<Vec<String>> {
    let mut moved = Vec::new();
    let root_dev = std::fs::metadata(root)?.dev();
    for (from, to) in MOVED_INTO_VAR {
        let (src, dest) = (root.join(from), root.join(to));
        let Ok(meta) = std::fs::symlink_metadata(&src) else {
            continue;
        };
        if !meta.is_dir() || meta.dev() != root_dev || dest.exists() {
            continue;
        }
        std::fs::rename(&src, &dest)
            .with_context(|| format!("Moving {} to {}", src.display(), dest.display()))?;
        std::os::unix::fs::symlink(link_back(from, to), &src)
            .with_context(|| format!("Linking {} to {}", src.display(), dest.display()))?;
        moved.push(format!("/{from} -> /{to}"));
    }
    crate::fsutil::sync_dir(&root.join("var"))?;
    crate::fsutil::sync_dir(root)?;
    Ok(moved)
}

/// GRUB's scripts that list kernels or systems found on the disk, made
/// non-executable in the new /etc (kept so by the /etc merge): on this
/// machine they would find the old system's kernels in /boot and list them
/// before the deployments. Only libostree's entries boot.
const SCRIPTS_OFF: &[&str] = &[
    "grub.d/10_linux",
    "grub.d/20_linux_xen",
    "grub.d/30_os-prober",
];

fn grub_scripts_off(new_etc: &Path) -> Result<()> {
    let etc = crate::fsutil::Beneath::open(new_etc)?;
    for rel in SCRIPTS_OFF {
        let Some(mut meta) = etc.meta(rel)? else {
            continue;
        };
        if meta.kind != crate::fsutil::Kind::File {
            continue;
        }
        let text = etc.read(rel)?.unwrap_or_default();
        meta.mode &= !0o111;
        etc.write_from(rel, &mut text.as_slice(), &meta)?;
    }
    Ok(())
}

/// The commit's own kernel arguments (`apt-ostree.kargs`).
pub fn image_kargs(repo: &ostree::Repo, commit: &str) -> Result<Vec<String>> {
    let (data, _) = repo.load_commit(commit)?;
    let metadata = glib::VariantDict::new(Some(&data.child_value(0)));
    Ok(metadata
        .lookup::<Vec<String>>(crate::sysroot::keys::KARGS)
        .ok()
        .flatten()
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_links_left_behind_point_into_var() {
        assert_eq!(link_back("home", "var/home"), Path::new("var/home"));
        assert_eq!(
            link_back("usr/local", "var/usrlocal"),
            Path::new("../var/usrlocal")
        );
    }
}
