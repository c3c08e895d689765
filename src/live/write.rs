//! Writing a plan into the running system: the helper that runs as a
//! transient unit with its own mount namespace (`apt-ostreed
//! --apply-live-plan FILE`), where /usr's overlay is made writable.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::FilePlan;
use crate::fsutil::Beneath;

/// The tree a path of a plan lies in (the running /usr or /etc, each on
/// its own: a link in /usr is resolved inside /usr), and the path in it.
fn target<'a>(usr: &'a Beneath, etc: &'a Beneath, rel: &'a str) -> Result<(&'a Beneath, &'a str)> {
    match rel.split_once('/') {
        Some(("usr", rest)) => Ok((usr, rest)),
        Some(("etc", rest)) => Ok((etc, rest)),
        _ => anyhow::bail!("{rel} is neither in /usr nor in /etc"),
    }
}

/// Carry out `plan` on the system at `root`: removals first (deepest
/// first), then copies (parents first). Every path is resolved inside the
/// new deployment's checkout and inside the running /usr or /etc, never
/// through a link out of them; files are put in place by rename, so a
/// program never sees half a file.
pub fn apply_plan(plan: &FilePlan, root: &Path) -> Result<()> {
    let source = Beneath::open(&plan.source)?;
    let (usr, etc) = (
        Beneath::open(&root.join("usr"))?,
        Beneath::open(&root.join("etc"))?,
    );
    let mut removals = plan.remove.clone();
    removals.sort();
    for rel in removals.iter().rev() {
        let (tree, path) = target(&usr, &etc, rel)?;
        tree.remove_all(path)?;
    }
    let mut copies = plan.copy.clone();
    copies.sort_by(|a, b| a.1.cmp(&b.1));
    for (from, to) in &copies {
        let (tree, path) = target(&usr, &etc, to)?;
        if let Some((parent, _)) = path.rsplit_once('/') {
            tree.create_dir_all(parent)?;
        }
        source.copy_to(from, tree, path)?;
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
    use std::io;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

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
        fs::create_dir_all(r.join("etc")).unwrap();
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

    /// The running /usr may hold links the base image planted: a plan's
    /// paths stay inside /usr (or /etc), and so do the new files' links.
    #[test]
    fn a_plan_never_writes_through_a_link_out_of_usr() {
        let (src, root, victim) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let (s, r, v) = (src.path(), root.path(), victim.path());
        fs::create_dir_all(s.join("usr/share/x")).unwrap();
        fs::write(s.join("usr/share/x/pwned"), "new").unwrap();
        fs::write(s.join("usr/share/conf"), "conf").unwrap();
        fs::create_dir_all(r.join("usr/share")).unwrap();
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::write(v.join("precious"), "precious").unwrap();
        std::os::unix::fs::symlink(v, r.join("usr/share/x")).unwrap();
        std::os::unix::fs::symlink(v.join("precious"), r.join("etc/conf")).unwrap();
        std::os::unix::fs::symlink(v, r.join("usr/share/gone")).unwrap();
        let plan = FilePlan {
            source: s.to_path_buf(),
            copy: vec![
                ("usr/share/x/pwned".into(), "usr/share/x/pwned".into()),
                ("usr/share/conf".into(), "etc/conf".into()),
            ],
            remove: vec!["usr/share/gone/precious".into()],
        };
        // x leads nowhere inside /usr: refused, not followed.
        assert!(apply_plan(&plan, r).is_err());
        let plan = FilePlan {
            copy: vec![plan.copy[1].clone()],
            ..plan
        };
        apply_plan(&plan, r).unwrap();
        // The link in /etc was replaced by the file, not written through.
        assert_eq!(fs::read_to_string(r.join("etc/conf")).unwrap(), "conf");
        assert!(!fs::symlink_metadata(r.join("etc/conf"))
            .unwrap()
            .is_symlink());
        let names: Vec<_> = fs::read_dir(v)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["precious"]);
        assert_eq!(fs::read_to_string(v.join("precious")).unwrap(), "precious");
    }
}
