//! Writing a plan into the running system: the helper that runs as a
//! transient unit with its own mount namespace (`apt-ostreed
//! --apply-live-plan FILE`), where /usr's overlay is made writable.

use std::fs;
use std::io;
use std::os::unix::fs::{chown, lchown, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::FilePlan;
use crate::fsutil::remove_any;

fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(src, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = std::ffi::OsStr::new(std::str::from_utf8(name).unwrap_or_default());
        let mut value = vec![0u8; 64 * 1024];
        let len = rustix::fs::lgetxattr(src, name, &mut value[..])?;
        rustix::fs::lsetxattr(dst, name, &value[..len], rustix::fs::XattrFlags::empty())?;
    }
    Ok(())
}

/// Copy `src` (file, symlink or whole directory) to `dst` with its owner,
/// mode and extended attributes. Files and symlinks are put in place by
/// rename, so a program never sees half a file.
fn copy_entry(src: &Path, dst: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(src).with_context(|| format!("Reading {}", src.display()))?;
    if meta.is_dir() {
        match fs::symlink_metadata(dst) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                remove_any(dst)?;
                fs::create_dir(dst)?;
            }
            Err(_) => fs::create_dir(dst).with_context(|| format!("Creating {}", dst.display()))?,
        }
        chown(dst, Some(meta.uid()), Some(meta.gid()))?;
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        for entry in fs::read_dir(src)? {
            let name = entry?.file_name();
            copy_entry(&src.join(&name), &dst.join(&name))?;
        }
        return Ok(());
    }
    let name = dst.file_name().context("a path with no name")?;
    let tmp = dst.with_file_name(format!(".{}.apt-ostree-live", name.to_string_lossy()));
    remove_any(&tmp)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, &tmp)?;
        lchown(&tmp, Some(meta.uid()), Some(meta.gid()))?;
    } else {
        fs::copy(src, &tmp).with_context(|| format!("Copying {}", src.display()))?;
        chown(&tmp, Some(meta.uid()), Some(meta.gid()))?;
        // After chown, which clears set-id bits.
        fs::set_permissions(&tmp, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        copy_xattrs(src, &tmp)?;
        fs::File::open(&tmp)?.sync_all()?;
    }
    if fs::symlink_metadata(dst).is_ok_and(|m| m.is_dir()) {
        fs::remove_dir_all(dst)?;
    }
    fs::rename(&tmp, dst).with_context(|| format!("Renaming into {}", dst.display()))?;
    Ok(())
}

/// Carry out `plan` on the tree at `root`: removals first (deepest first),
/// then copies (parents first).
pub fn apply_plan(plan: &FilePlan, root: &Path) -> Result<()> {
    let mut removals = plan.remove.clone();
    removals.sort();
    for rel in removals.iter().rev() {
        remove_any(&root.join(rel))?;
    }
    let mut copies = plan.copy.clone();
    copies.sort_by(|a, b| a.1.cmp(&b.1));
    for (from, to) in &copies {
        let dst = root.join(to);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent)?;
        }
        copy_entry(&plan.source.join(from), &dst)?;
    }
    Ok(())
}

/// overlayfs's magic number (statfs f_type).
const OVERLAYFS_MAGIC: i64 = 0x794c_7630;

/// The helper's work: in its own mount namespace (the unit's
/// `PrivateMounts=yes`), make the transient overlay on /usr writable, write
/// the plan, then let the system catch up with what changed: the linker
/// cache, system users, tmpfiles and the service manager's unit files.
pub fn helper_main(plan_file: &Path) -> Result<()> {
    let plan: FilePlan = serde_json::from_slice(
        &fs::read(plan_file).with_context(|| format!("Reading {}", plan_file.display()))?,
    )?;
    let usr = nix::sys::statfs::statfs("/usr").context("statfs /usr")?;
    if usr.filesystem_type().0 as i64 != OVERLAYFS_MAGIC {
        // Never write into the deployment itself: it is hard-linked into
        // the repository.
        anyhow::bail!("/usr is not the transient overlay; refusing to write to it");
    }
    // Writable in this namespace only: the system's mount of the same
    // overlay keeps its read-only flag. No options: overlayfs refuses to be
    // told its layers again.
    nix::mount::mount(
        None::<&str>,
        "/usr",
        None::<&str>,
        nix::mount::MsFlags::MS_REMOUNT,
        None::<&str>,
    )
    .context("Making the /usr overlay writable in the helper's namespace")?;
    apply_plan(&plan, Path::new("/"))?;
    for argv in [
        &["ldconfig"][..],
        &["systemd-sysusers"],
        &["systemd-tmpfiles", "--create"],
        &["systemctl", "daemon-reload"],
    ] {
        // A step that fails is reported, not fatal: the files are in place
        // and the next boot runs all of these anyway.
        if let Err(e) = run(Command::new(argv[0]).args(&argv[1..])) {
            eprintln!("warning: {e:#}");
        }
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    crate::process::run(cmd).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_replaces_files_adds_trees_and_removes() {
        let src = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let (s, r) = (src.path(), root.path());
        fs::create_dir_all(s.join("usr/bin")).unwrap();
        fs::create_dir_all(s.join("usr/share/new/deep")).unwrap();
        fs::write(s.join("usr/bin/tool"), "new tool").unwrap();
        fs::set_permissions(s.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(s.join("usr/share/new/deep/file"), "deep").unwrap();
        std::os::unix::fs::symlink("tool", s.join("usr/bin/alias")).unwrap();
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        fs::create_dir_all(r.join("usr/lib/old")).unwrap();
        fs::write(r.join("usr/lib/old/x.so"), "old").unwrap();
        fs::write(r.join("usr/bin/tool"), "old tool").unwrap();
        // A reader holding the old file keeps the old content: replaced, not rewritten.
        let held = fs::File::open(r.join("usr/bin/tool")).unwrap();
        let plan = FilePlan {
            source: s.to_path_buf(),
            copy: vec![
                ("usr/share/new".into(), "usr/share/new".into()),
                ("usr/bin/tool".into(), "usr/bin/tool".into()),
                ("usr/bin/alias".into(), "usr/bin/alias".into()),
            ],
            remove: vec!["usr/lib/old".into(), "usr/lib/never-there".into()],
        };
        apply_plan(&plan, r).unwrap();
        assert_eq!(
            fs::read_to_string(r.join("usr/bin/tool")).unwrap(),
            "new tool"
        );
        assert_eq!(
            fs::metadata(r.join("usr/bin/tool")).unwrap().mode() & 0o777,
            0o755
        );
        assert_eq!(
            fs::read_link(r.join("usr/bin/alias")).unwrap(),
            Path::new("tool")
        );
        assert_eq!(
            fs::read_to_string(r.join("usr/share/new/deep/file")).unwrap(),
            "deep"
        );
        assert!(!r.join("usr/lib/old").exists());
        let mut old = String::new();
        io::Read::read_to_string(&mut &held, &mut old).unwrap();
        assert_eq!(old, "old tool");
        let leftovers: Vec<_> = fs::read_dir(r.join("usr/bin"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains("apt-ostree-live"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
