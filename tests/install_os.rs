//! `apt-ostree install-os` and `cleanup --old-root` from the command line,
//! on this (not converted, not OSTree-booted) build machine: nonsense and a
//! machine they do not apply to are refused, and nothing changes. The
//! conversion itself is proven on a real boot (VM suite, phases 30-32);
//! `to-filesystem` here onto a real disk (a loop device with an ESP and an
//! ext4 root) up to the point where the test image cannot boot, and in the
//! VM suite (`--all`) onto LVM on LUKS.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{base_repo, run, stdout, REF};

fn apt_ostree(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_apt-ostree"))
        .args(args)
        .output()
        .expect("running apt-ostree");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_source_that_is_neither_an_image_nor_a_url_is_refused_before_anything_is_read() {
    assert!(
        !Path::new("/ostree").exists(),
        "this test needs a machine that is not a sysroot"
    );
    for (args, says) in [
        (
            &["install-os", "to-existing-root", "/srv/repo"][..],
            "neither an image reference",
        ),
        (
            &["install-os", "to-existing-root", "http://127.0.0.1:9/repo"][..],
            "needs --ref",
        ),
        (
            &[
                "install-os",
                "to-existing-root",
                "--ref",
                "../x",
                "http://127.0.0.1:9/repo",
            ][..],
            "invalid ref name",
        ),
        (
            &[
                "install-os",
                "to-existing-root",
                "--ref",
                "debian/13",
                "ostree-unverified-registry:127.0.0.1:9/os:1",
            ][..],
            "--ref is for an OSTree remote",
        ),
        (
            &[
                "install-os",
                "to-existing-root",
                "--karg",
                "bad\nkarg",
                "--ref",
                "debian/13",
                "http://127.0.0.1:9/repo",
            ][..],
            "invalid kernel argument",
        ),
    ] {
        let (code, text) = apt_ostree(args);
        assert_eq!(code, 1, "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
        assert!(!Path::new("/ostree").exists(), "{args:?} made /ostree");
    }
}

#[test]
fn cleanup_old_root_is_refused_on_a_machine_that_was_not_converted() {
    let (code, text) = apt_ostree(&["cleanup", "--old-root"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("runs on the converted machine"), "{text}");
    assert!(Path::new("/usr/bin").is_dir() && Path::new("/etc/os-release").exists());
    // It is a command of its own: no mixing with the daemon's cleanups.
    let (code, text) = apt_ostree(&["cleanup", "--old-root", "--pending"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("cannot be used with"), "{text}");
}

/// A GPT disk in a file, on a loop device: an ESP (vfat) and an ext4 root
/// mounted at `dir`. Detached and unmounted when dropped.
struct LoopDisk {
    _work: tempfile::TempDir,
    device: String,
    dir: PathBuf,
}

impl LoopDisk {
    fn new() -> LoopDisk {
        let work = tempfile::tempdir().unwrap();
        let file = work.path().join("disk.img");
        std::fs::File::create(&file)
            .unwrap()
            .set_len(4 << 30)
            .unwrap();
        let mut sfdisk = Command::new("sfdisk")
            .args(["--quiet", "--label", "gpt"])
            .arg(&file)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        sfdisk
            .stdin
            .take()
            .unwrap()
            .write_all(b"size=32MiB, type=U\ntype=L\n")
            .unwrap();
        assert!(sfdisk.wait().unwrap().success());
        let device = stdout(
            Command::new("losetup")
                .args(["--find", "--show", "--partscan"])
                .arg(&file),
        )
        .trim()
        .to_string();
        // As compose image does: the partition scan may not have happened
        // (no udev on a build machine); devtmpfs makes the nodes.
        let p2 = PathBuf::from(format!("{device}p2"));
        if !p2.exists() {
            run(Command::new("partx").args(["--add", &device]));
        }
        assert!(common::wait_until(
            std::time::Duration::from_secs(10),
            || p2.exists()
        ));
        run(Command::new("mkfs.vfat").arg(format!("{device}p1")));
        run(Command::new("mkfs.ext4")
            .arg("-q")
            .arg(format!("{device}p2")));
        let dir = work.path().join("root");
        std::fs::create_dir(&dir).unwrap();
        run(Command::new("mount").arg(format!("{device}p2")).arg(&dir));
        LoopDisk {
            _work: work,
            device,
            dir,
        }
    }

    /// What the root holds besides lost+found.
    fn contents(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lost+found")
            .collect();
        names.sort();
        names
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = Command::new("losetup")
            .args(["--detach", &self.device])
            .status();
    }
}

#[test]
fn to_filesystem_refuses_what_it_cannot_install_onto_and_leaves_the_target_empty() {
    let repo = base_repo();
    let url = format!("file://{}", repo.path.display());
    let disk = LoopDisk::new();
    let dir = disk.dir.to_str().unwrap();
    let install = |extra: &[&str]| {
        let mut args = vec!["install-os", "to-filesystem", "--no-gpg-verify"];
        args.extend_from_slice(extra);
        apt_ostree(&args)
    };

    // Not a mount point: nothing else is looked at.
    let plain = tempfile::tempdir().unwrap();
    let (code, text) = install(&[plain.path().to_str().unwrap(), &url, "--ref", REF]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("is not a mount point"), "{text}");

    // Not empty, and a source that cannot be read: both said at once.
    std::fs::write(disk.dir.join("stray"), "").unwrap();
    let (code, text) = install(&[dir, "file:///nonexistent/repo", "--ref", REF]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("is not empty (stray)"), "{text}");
    assert!(text.contains("cannot be read"), "{text}");
    assert_eq!(disk.contents(), ["stray"]);
    std::fs::remove_file(disk.dir.join("stray")).unwrap();

    // The plan: the root by its UUID, GRUB onto the disk's ESP.
    let uuid = stdout(
        Command::new("blkid")
            .args(["--match-tag", "UUID", "--output", "value"])
            .arg(format!("{}p2", disk.device)),
    );
    let (code, text) = install(&["--dry-run", dir, &url, "--ref", REF]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("Kernel arguments: root=UUID={}", uuid.trim())),
        "{text}"
    );
    assert!(
        text.contains(&format!("the signed chain onto {}p1", disk.device)),
        "{text}"
    );
    assert!(text.contains("Dry run: nothing was changed."), "{text}");
    assert!(disk.contents().is_empty(), "{:?}", disk.contents());

    // The test image has no kernel nor boot chain: found once it is pulled,
    // and what was written is removed again.
    let (code, text) = install(&[dir, &url, "--ref", REF]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("the image has no Secure Boot chain"),
        "{text}"
    );
    assert!(disk.contents().is_empty(), "{:?}", disk.contents());
}
