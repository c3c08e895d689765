//! Compose from an existing root file system (hermetic): conversion, commit,
//! metadata, unchanged inputs, bad treefiles, and serving the result to a
//! sysroot over HTTP. Composing from Debian's archive is in tests/slow_debian.rs.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const IMAGE_REF: &str = "debian/12/x86_64/composed";

/// A directory with a raw Debian tree (as debootstrap leaves one), a treefile
/// that composes it, a file to add and a postprocess script.
struct Inputs {
    dir: tempfile::TempDir,
}

impl Inputs {
    fn new() -> Inputs {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("python3")
            .arg(fixtures().join("host-tree.py"))
            .arg(dir.path().join("rootfs"))
            .arg("--raw"));
        fs::write(dir.path().join("motd"), "composed by a test\n").unwrap();
        fs::write(
            dir.path().join("postprocess.sh"),
            "echo \"postprocess ran on $(cat /etc/hostname)\" > /usr/share/postprocess-marker\n",
        )
        .unwrap();
        let i = Inputs { dir };
        i.treefile("");
        i
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn treefile(&self, extra: &str) -> PathBuf {
        let path = self.path().join("image.toml");
        fs::write(
            &path,
            format!(
                "ref = \"{IMAGE_REF}\"\nversion = \"1.0\"\nrootfs = \"rootfs\"\npostprocess = \"postprocess.sh\"\n{extra}\n[files]\n\"/etc/motd\" = \"motd\"\n"
            ),
        )
        .unwrap();
        path
    }

    fn repo(&self) -> PathBuf {
        self.path().join("repo")
    }

    fn compose(&self) -> (i32, String, String) {
        code(
            Command::new(cli())
                .args(["compose", "tree"])
                .arg(self.path().join("image.toml"))
                .arg("--repo")
                .arg(self.repo())
                .arg("--unchanged-exit-77"),
        )
    }

    fn rev(&self) -> Option<String> {
        let out = ostree()
            .arg(format!("--repo={}", self.repo().display()))
            .args(["rev-parse", IMAGE_REF])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn cat(&self, path: &str) -> String {
        stdout(
            ostree()
                .arg(format!("--repo={}", self.repo().display()))
                .args(["cat", IMAGE_REF, path]),
        )
    }
}

/// Pull the composed image from the sysroot's remote and deploy it, as an
/// installer would.
fn pull_and_deploy(s: &TestSysroot) {
    run(s.repo_cmd().args(["pull", REMOTE, IMAGE_REF]));
    run(ostree()
        .args(["admin", "deploy", "--os", OSNAME])
        .arg(format!("--sysroot={}", s.path.display()))
        .arg(format!("{REMOTE}:{IMAGE_REF}")));
}

/// A fresh sysroot whose remote at `url` verifies signatures with the key
/// `public` (and has the `settings` given), with the image deployed from it.
fn deployed_from_verifying_remote(url: &str, public: &Path, settings: &[&str]) -> TestSysroot {
    let s = TestSysroot::empty();
    run(s.repo_cmd().args(["remote", "delete", REMOTE]));
    run(s
        .repo_cmd()
        .args(["remote", "add", "--set=gpg-verify=true"])
        .args(settings)
        .arg(format!("--gpg-import={}", public.display()))
        .arg(REMOTE)
        .arg(url));
    pull_and_deploy(&s);
    s
}

#[test]
fn compose_converts_commits_and_recompose_of_the_same_input_is_a_no_op() {
    let i = Inputs::new();
    let (rc, out, err) = i.compose();
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains(&format!("{IMAGE_REF} => 1.0")), "{out}");
    let first = i.rev().expect("ref written");
    // The conversion: /etc in /usr/etc, dpkg's database in /usr, the kernel in
    // /usr/lib/modules, /var empty and described by tmpfiles.d.
    assert_eq!(i.cat("/usr/etc/motd"), "composed by a test\n");
    assert_eq!(
        i.cat("/usr/share/postprocess-marker"),
        "postprocess ran on apt-ostree-demo\n"
    );
    assert!(i
        .cat("/usr/share/dpkg/database/status")
        .contains("Package: dpkg\n"));
    assert!(i
        .cat("/usr/lib/tmpfiles.d/apt-ostree-compose.conf")
        .contains("L /var/lib/dpkg"));
    let listing = stdout(
        ostree()
            .arg(format!("--repo={}", i.repo().display()))
            .args(["ls", "-R", IMAGE_REF, "/var", "/boot", "/usr/lib/modules"]),
    );
    assert!(
        listing.contains("/usr/lib/modules/6.1.0-apt-ostree-demo/vmlinuz"),
        "{listing}"
    );
    assert!(!listing.contains("/var/lib"), "{listing}");
    let show = stdout(
        ostree()
            .arg(format!("--repo={}", i.repo().display()))
            .args([
                "show",
                "--print-metadata-key=apt-ostree.packages",
                IMAGE_REF,
            ]),
    );
    assert!(show.contains("'dpkg'"), "{show}");
    assert!(
        i.repo().join("summary").exists(),
        "summary for static HTTP serving"
    );

    // Same input: nothing committed, exit 77.
    let (rc, out, _) = i.compose();
    assert_eq!(rc, 77, "{out}");
    assert_eq!(i.rev().as_deref(), Some(first.as_str()));
    // A changed input: a new commit on top of the old one.
    fs::write(i.path().join("motd"), "changed\n").unwrap();
    let (rc, out, err) = i.compose();
    assert_eq!(rc, 0, "{out}{err}");
    let second = i.rev().unwrap();
    assert_ne!(second, first);
    let log = stdout(
        ostree()
            .arg(format!("--repo={}", i.repo().display()))
            .args(["log", IMAGE_REF]),
    );
    assert!(log.contains(&first), "{log}");
}

#[test]
fn bad_treefiles_name_the_cause_and_move_no_ref() {
    let i = Inputs::new();
    run(Command::new(cli())
        .args(["compose", "tree"])
        .arg(i.path().join("image.toml"))
        .arg("--repo")
        .arg(i.repo()));
    let before = i.rev();
    for (extra, needle) in [
        ("packagez = [\"x\"]", "unknown field `packagez`"),
        ("variant = \"gigantic\"", "variant"),
        ("suite = \"bookworm\"", "rootfs excludes"),
    ] {
        i.treefile(extra);
        let (rc, _, err) = i.compose();
        assert_eq!(rc, 1, "{extra}");
        assert!(err.contains(needle), "{extra}: {err}");
        assert_eq!(i.rev(), before);
    }
    i.treefile("");
    fs::write(
        i.path().join("postprocess.sh"),
        "echo 'postprocess: giving up' >&2\nexit 4\n",
    )
    .unwrap();
    let (rc, _, err) = i.compose();
    assert_eq!(rc, 1);
    assert!(
        err.contains("postprocess script") && err.contains("giving up"),
        "{err}"
    );
    assert_eq!(i.rev(), before);
    fs::remove_dir_all(i.path().join("rootfs")).unwrap();
    let (rc, _, err) = i.compose();
    assert_eq!(rc, 1);
    assert!(
        err.contains("rootfs") && err.contains("not a directory"),
        "{err}"
    );
    assert_eq!(i.rev(), before);
    // Regression: a missing [files] source did not name the path it was
    // looked for at (the treefile given relative to the working directory).
    fs::remove_file(i.path().join("motd")).unwrap();
    let (rc, _, err) = code(
        Command::new(cli())
            .args(["compose", "tree", "image.toml", "--repo"])
            .arg(i.repo())
            .current_dir(i.path()),
    );
    assert_eq!(rc, 1);
    assert!(
        err.contains(&format!("files: reading {}/motd", i.path().display())),
        "{err}"
    );
    assert_eq!(i.rev(), before);
}

#[test]
fn a_composed_repository_served_over_http_updates_a_sysroot() {
    let i = Inputs::new();
    run(Command::new(cli())
        .args(["compose", "tree"])
        .arg(i.treefile(""))
        .arg("--repo")
        .arg(i.repo()));
    let http = HttpServer::start(&i.repo(), None);
    // A fresh sysroot deploys the composed image from the HTTP remote...
    let s = TestSysroot::empty();
    s.set_remote(&http.url(), &[]);
    pull_and_deploy(&s);
    let status = s.status();
    assert_eq!(status["deployments"][0]["version"], "1.0");
    // ...and db list is exactly the image's package set.
    let listed = stdout(s.cli().args(["db", "list"]));
    let image_status = i.cat("/usr/share/dpkg/database/status");
    let image_pkgs = apt_ostree::dpkg::parse_status(&image_status);
    assert_eq!(listed.lines().count() - 1, image_pkgs.len(), "{listed}");
    let rows = db_rows(&listed);
    for p in &image_pkgs {
        assert!(
            rows.iter()
                .any(|(name, version, _)| *name == p.name && *version == p.version),
            "{} missing",
            p.name
        );
    }
    // A new compose with a static delta is what `upgrade` picks up.
    i.treefile("version = \"1.1\"");
    let tf = fs::read_to_string(i.path().join("image.toml"))
        .unwrap()
        .replacen("version = \"1.0\"\n", "", 1);
    fs::write(i.path().join("image.toml"), tf).unwrap();
    let (rc, out, err) = code(
        Command::new(cli())
            .args(["compose", "tree", "--static-delta"])
            .arg(i.path().join("image.toml"))
            .arg("--repo")
            .arg(i.repo()),
    );
    assert_eq!(rc, 0, "{out}{err}");
    let (rc, out, err) = code(s.cli().arg("upgrade"));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(s.status()["deployments"][0]["version"], "1.1");
    s.assert_fsck_clean();
}

/// A GnuPG home with one signing key; returns (home, fingerprint, public key file).
#[test]
fn signed_composes_pass_a_verifying_remote_and_unsigned_ones_do_not() {
    let i = Inputs::new();
    let (home, fpr, public) = signing_key(i.path());
    let compose = |version: &str, sign: bool| {
        let tf = fs::read_to_string(i.path().join("image.toml"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("version"))
            .collect::<Vec<_>>()
            .join("\n");
        fs::write(
            i.path().join("image.toml"),
            format!("version = \"{version}\"\n{tf}\n"),
        )
        .unwrap();
        let mut c = Command::new(cli());
        c.args(["compose", "tree"])
            .arg(i.path().join("image.toml"))
            .arg("--repo")
            .arg(i.repo());
        if sign {
            c.args(["--gpg-sign", &fpr]).arg("--gpg-homedir").arg(&home);
        }
        code(&mut c)
    };
    let (rc, out, err) = compose("1.0", true);
    assert_eq!(rc, 0, "{out}{err}");
    let http = HttpServer::start(&i.repo(), None);
    let s = deployed_from_verifying_remote(&http.url(), &public, &[]);

    // A signed update is taken...
    assert_eq!(compose("1.1", true).0, 0);
    let (rc, out, err) = code(s.cli().arg("upgrade"));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(s.status()["deployments"][0]["version"], "1.1");
    // Regression: a signing failure left the unsigned commit on the ref, and
    // the retry took the unchanged-input shortcut and never signed.
    let head = i.rev();
    let compose_with_key = |version: &str, key: &str| {
        let tf = fs::read_to_string(i.path().join("image.toml")).unwrap();
        let tf: Vec<&str> = tf.lines().filter(|l| !l.starts_with("version")).collect();
        fs::write(
            i.path().join("image.toml"),
            format!("version = \"{version}\"\n{}\n", tf.join("\n")),
        )
        .unwrap();
        code(
            Command::new(cli())
                .args(["compose", "tree"])
                .arg(i.path().join("image.toml"))
                .arg("--repo")
                .arg(i.repo())
                .args(["--gpg-sign", key])
                .arg("--gpg-homedir")
                .arg(&home),
        )
    };
    let (rc, _, err) = compose_with_key("1.2", "0000000000000000DEADBEEF");
    assert_eq!(rc, 1, "{err}");
    assert_eq!(i.rev(), head, "a failed signing moved the ref");
    let (rc, out, err) = compose_with_key("1.2", &fpr);
    assert_eq!(rc, 0, "{out}{err}");
    assert_ne!(i.rev(), head, "the retry was skipped as unchanged");
    let (rc, out, err) = code(s.cli().arg("upgrade"));
    assert_eq!(rc, 0, "the retry's commit is signed: {out}{err}");
    assert_eq!(s.status()["deployments"][0]["version"], "1.2");
    // ...an unsigned one is refused and changes nothing.
    assert_eq!(compose("1.3", false).0, 0);
    let before = s.deployments();
    let (rc, _, err) = code(s.cli().arg("upgrade"));
    assert_eq!(rc, 1);
    assert!(err.contains("signature check failed"), "{err}");
    assert_eq!(s.deployments(), before);
    stop_gpg_agent(&home);
}

/// Loop devices backed by files under `dir`, and mounts of compose image's
/// work directories, to show that a refused `compose image` leaves none
/// behind. (Other tests, and the VM suite, use loop devices and mount file
/// systems concurrently: only ours are counted.)
fn loops_and_mounts(dir: &Path) -> (usize, usize) {
    let loops = stdout(Command::new("losetup").args(["--list", "--noheadings", "-O", "BACK-FILE"]))
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .count();
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains("apt-ostree-image-"))
        .count();
    (loops, mounts)
}

#[test]
fn compose_image_refuses_bad_input_and_leaves_nothing_behind() {
    let base = base_repo();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("disk.img");
    let before = loops_and_mounts(dir.path());
    let image = |repo: &Path, reference: &str, extra: &[&str]| {
        let mut c = Command::new(cli());
        c.args(["compose", "image", "--repo"])
            .arg(repo)
            .args(["--ref", reference, "--output"])
            .arg(&output)
            .args(extra);
        c
    };

    let (rc, _, err) = code(&mut image(&base.path, "no/such/ref", &[]));
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("no/such/ref: no such ref"), "{err}");

    // The test images carry a placeholder kernel: not bootable.
    let (rc, _, err) = code(&mut image(&base.path, REF, &[]));
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("placeholder"), "{err}");

    // A commit that looks bootable (a PE kernel, GRUB, ostree-boot) but is
    // far larger than the size asked for.
    let tree = dir.path().join("tree");
    for d in [
        "usr/lib/modules/6.1",
        "usr/sbin",
        "usr/bin",
        "usr/lib/grub/x86_64-efi",
        "usr/lib/dracut/modules.d/98ostree",
        "usr/lib/ostree",
        "usr/etc",
    ] {
        fs::create_dir_all(tree.join(d)).unwrap();
    }
    let mut kernel = b"MZ".to_vec();
    kernel.resize(1 << 20, 0);
    fs::write(tree.join("usr/lib/modules/6.1/vmlinuz"), kernel).unwrap();
    fs::write(tree.join("usr/lib/modules/6.1/initramfs.img"), "initramfs").unwrap();
    for tool in ["sbin/grub-mkconfig", "bin/grub-mkimage"] {
        fs::write(tree.join("usr").join(tool), "#!/bin/sh\n").unwrap();
    }
    let repo = dir.path().join("repo");
    run(ostree()
        .arg("init")
        .arg(format!("--repo={}", repo.display()))
        .arg("--mode=archive"));
    let commit = |branch: &str| {
        run(ostree()
            .arg("commit")
            .arg(format!("--repo={}", repo.display()))
            .args([&format!("--branch={branch}"), "--tree"])
            .arg(format!("dir={}", tree.display())))
    };
    // dracut's module without ostree-prepare-root (ostree-boot) itself: its
    // initramfs could not mount the deployment.
    commit("test/no-prepare-root");
    let (rc, _, err) = code(&mut image(
        &repo,
        "test/no-prepare-root",
        &["--no-secure-boot"],
    ));
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("initramfs cannot mount a deployment"), "{err}");
    assert!(!output.exists());
    fs::write(
        tree.join("usr/lib/ostree/ostree-prepare-root"),
        "#!/bin/sh\n",
    )
    .unwrap();
    commit("test/bootable");
    // Without shim and the signed GRUB, the disk would not boot with Secure
    // Boot on: refused, naming the packages, unless asked for.
    let (rc, _, err) = code(&mut image(&repo, "test/bootable", &[]));
    assert_eq!(rc, 1, "{err}");
    assert!(
        err.contains(
            "no Secure Boot chain: add shim-signed, grub-efi-amd64-signed, \
             shim-helpers-amd64-signed to its packages"
        ),
        "{err}"
    );
    assert!(err.contains("--no-secure-boot"), "{err}");
    assert!(!output.exists());
    let image = |repo: &Path, reference: &str, extra: &[&str]| {
        let mut c = image(repo, reference, extra);
        c.arg("--no-secure-boot");
        c
    };

    let (rc, _, err) = code(&mut image(&repo, "test/bootable", &["--size", "64M"]));
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("--size 64 MiB is too small"), "{err}");

    // An existing output is kept unless --force.
    fs::write(&output, "precious").unwrap();
    let (rc, _, err) = code(&mut image(&repo, "test/bootable", &[]));
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("exists: pass --force"), "{err}");
    assert_eq!(fs::read_to_string(&output).unwrap(), "precious");

    // Only root composes: said at once, before any step starts.
    let (rc, _, err) = code(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", cli()])
            .args([
                "compose",
                "tree",
                "/nonexistent.toml",
                "--repo",
                "/tmp/never",
            ]),
    );
    assert_eq!(rc, 1, "{err}");
    assert_eq!(
        err.trim(),
        "error: compose tree needs root (mmdebstrap, file ownership, bubblewrap)"
    );

    // Only root may partition and mount.
    let (rc, _, err) = code(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", cli()])
            .args(["compose", "image", "--repo"])
            .arg(&repo)
            .args(["--ref", "test/bootable", "--output", "/tmp/never.img"]),
    );
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("needs root"), "{err}");
    assert!(!Path::new("/tmp/never.img").exists());

    // Nonsense options are refused by the parser.
    for (args, needle) in [
        (vec!["--size", "ten"], "not a size"),
        (vec!["--remote", "nourl"], "NAME=URL"),
        (vec!["--remote", "bad name=http://x"], "not a remote name"),
        (vec!["--format", "vmdk"], "vmdk"),
        (vec!["--karg", "a\nb"], "invalid kernel argument"),
    ] {
        let (rc, _, err) = code(&mut image(&repo, "test/bootable", &args));
        assert_ne!(rc, 0, "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }

    // A failure after the disk was partitioned, formatted and mounted and
    // the commit deployed: GRUB cannot run (this tree has no shell). The
    // loop device is detached and no half-written image stays.
    fs::write(tree.join("usr/etc/os-release"), "ID=test\n").unwrap();
    // Then with Debian 13's libostree in its dpkg database, /boot is a
    // directory of the root (three partitions, boot entries under /boot):
    // the same failure at the same step, after that disk was made and the
    // commit deployed.
    for libostree in [None, Some("2025.2-1")] {
        if let Some(version) = libostree {
            fs::create_dir_all(tree.join("usr/share/dpkg/database")).unwrap();
            fs::write(
                tree.join("usr/share/dpkg/database/status"),
                format!(
                    "Package: libostree-1-1\nStatus: install ok installed\n\
                     Architecture: amd64\nVersion: {version}\n"
                ),
            )
            .unwrap();
        }
        commit("test/bootable");
        let (rc, _, err) = code(&mut image(
            &repo,
            "test/bootable",
            &["--size", "2G", "--force"],
        ));
        assert_eq!(rc, 1, "{libostree:?}: {err}");
        assert!(err.contains("Installing GRUB...\nerror:"), "{err}");
        assert!(err.contains("grub-mkimage"), "{err}");
        assert_eq!(fs::read_to_string(&output).unwrap(), "precious");
    }

    assert_eq!(loops_and_mounts(dir.path()), before);
    assert_eq!(before, (0, 0));
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(left, ["disk.img", "repo", "tree"], "no half-written image");
}

/// The treefile's gpg-key signs each commit and puts its public part into
/// the image; collection-id binds each commit to the collection and ref. A
/// machine whose remote carries that collection takes the commits from the
/// network and from an export, and refuses an export bound elsewhere.
#[test]
fn treefile_key_and_collection_reach_the_image_the_network_and_an_export() {
    let i = Inputs::new();
    let (home, fpr, public) = signing_key(i.path());
    let compose = |version: &str, collection: &str| {
        let path = i.treefile(&format!(
            "collection-id = \"{collection}\"\ngpg-key = \"{fpr}\""
        ));
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("version = \"1.0\"", &format!("version = \"{version}\""));
        fs::write(&path, text).unwrap();
        let (rc, out, err) = code(
            Command::new(cli())
                .args(["compose", "tree"])
                .arg(&path)
                .arg("--repo")
                .arg(i.repo())
                .arg("--gpg-homedir")
                .arg(&home),
        );
        assert_eq!(rc, 0, "{out}{err}");
    };
    compose("1.0", "org.example.Test");
    let repo = format!("--repo={}", i.repo().display());
    let listed = stdout(ostree().args([&repo, "ls", IMAGE_REF, "/usr/share/ostree/trusted.gpg.d"]));
    assert!(
        listed.contains("apt-ostree-debian-12-x86_64-composed.gpg"),
        "{listed}"
    );
    let binding = stdout(ostree().args([
        &repo,
        "show",
        "--print-metadata-key=ostree.collection-binding",
        IMAGE_REF,
    ]));
    assert!(binding.contains("org.example.Test"), "{binding}");

    let http = HttpServer::start(&i.repo(), None);
    let s = deployed_from_verifying_remote(
        &http.url(),
        &public,
        &["--set=collection-id=org.example.Test"],
    );

    // Over the network...
    compose("1.1", "org.example.Test");
    let (rc, out, err) = code(s.cli().arg("upgrade"));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(s.status()["deployments"][0]["version"], "1.1");
    // ...and from an export, with the network gone.
    drop(http);
    compose("1.2", "org.example.Test");
    let usb = i.path().join("usb");
    fs::create_dir_all(&usb).unwrap();
    let export = |dir: &Path| {
        run(Command::new(cli())
            .args(["compose", "export", "--repo"])
            .arg(i.repo())
            .args(["--ref", IMAGE_REF])
            .arg(dir));
    };
    export(&usb);
    let (rc, out, err) = code(s.cli().args(["upgrade", "--from"]).arg(&usb));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(s.status()["deployments"][0]["version"], "1.2");
    // A commit of another collection, signed with the same key, is refused.
    compose("1.3", "org.example.Other");
    let other = i.path().join("usb-other");
    fs::create_dir_all(&other).unwrap();
    export(&other);
    let before = s.deployments();
    let (rc, _, err) = code(s.cli().args(["upgrade", "--from"]).arg(&other));
    assert_eq!(rc, 1, "{err}");
    assert!(
        err.contains("org.example.Other") || err.contains("collection"),
        "{err}"
    );
    assert_eq!(s.deployments(), before);
    s.assert_fsck_clean();
    stop_gpg_agent(&home);
}
