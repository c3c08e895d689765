//! Hostile images: OCI layouts made by hand with what a registry may send
//! and no honest builder writes (links out of the image where the daemon
//! converts, names that leave the tree, hard links to host files, odd
//! whiteouts, broken and oversized layers), rebased onto with the real
//! daemon on a sysroot on tmpfs. For each: a victim directory beside the
//! sysroot, on the same file system, is byte for byte as it was; the pull
//! deploys the content as content or fails with a clear error; a failure
//! changes no deployment; the repository passes `ostree fsck`, keeps no
//! ref of a failed pull, and no temporary directory is left.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::oci::*;
use common::*;

/// What a directory holds, recursively: mode, and content or link target.
fn snapshot(dir: &Path) -> BTreeMap<String, (u32, String)> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let meta = fs::symlink_metadata(&d).unwrap();
        out.insert(d.display().to_string(), (meta.mode(), String::new()));
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                pending.push(p);
            } else if m.is_symlink() {
                let t = fs::read_link(&p).unwrap().display().to_string();
                out.insert(p.display().to_string(), (m.mode(), t));
            } else {
                let c = String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned();
                out.insert(p.display().to_string(), (m.mode(), c));
            }
        }
    }
    out
}

struct Target {
    s: TestSysroot,
    victim: PathBuf,
    images: tempfile::TempDir,
}

/// How a case must end.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    Deploys,
    Fails,
    /// Either, as long as nothing outside the image changed.
    Either,
}

impl Target {
    fn new() -> Target {
        let s = TestSysroot::at_v1();
        // As a machine has it (the fixtures turn fsync off for speed): a
        // failed transaction's objects then stay in its staging directory.
        run(s.repo_cmd().args(["config", "set", "core.fsync", "true"]));
        let victim = s.path.join("victim");
        fs::create_dir_all(victim.join("sub/deeper")).unwrap();
        fs::write(victim.join("precious"), "precious\n").unwrap();
        fs::write(victim.join("sub/deeper/file"), "deep\n").unwrap();
        fs::write(victim.join("secret"), "secret\n").unwrap();
        fs::set_permissions(victim.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        Target {
            s,
            victim,
            images: tempfile::tempdir().unwrap(),
        }
    }

    /// The victim as an absolute link target, and as a relative one that
    /// climbs out of wherever it stands.
    fn targets(&self) -> [String; 2] {
        let abs = self.victim.display().to_string();
        let rel = format!("{}{}", "../".repeat(12), abs.trim_start_matches('/'));
        [abs, rel]
    }

    /// Rebase to an image of `layers`; checks everything a case must
    /// keep, and returns the CLI's output.
    #[track_caller]
    fn case(&self, name: &str, layers: &[Layer], expect: Expect) -> String {
        let dir = self.images.path().join(name);
        write_layout(&dir, "1", layers, Options::default());
        self.rebase(name, &dir, expect)
    }

    #[track_caller]
    fn rebase(&self, name: &str, dir: &Path, expect: Expect) -> String {
        let victim = snapshot(&self.victim);
        let deployments = self.s.deployments();
        let refs = stdout(self.s.repo_cmd().arg("refs"));
        let (rc, out, err) = code(self.s.cli().args([
            "rebase",
            &format!("ostree-unverified-image:oci:{}:1", dir.display()),
        ]));
        assert_eq!(
            snapshot(&self.victim),
            victim,
            "{name}: the victim changed: {out}{err}"
        );
        match expect {
            Expect::Deploys => assert_eq!(rc, 0, "{name}: {out}{err}"),
            Expect::Fails => assert_eq!(rc, 1, "{name} deployed: {out}{err}"),
            Expect::Either => assert!(rc == 0 || rc == 1, "{name}: {rc} {out}{err}"),
        }
        if rc == 0 {
            assert_ne!(self.s.deployments(), deployments, "{name}");
        } else {
            assert!(
                err.lines().any(|l| l.starts_with("error: ")),
                "{name}: {err}"
            );
            assert_eq!(self.s.deployments(), deployments, "{name}: {err}");
            assert_eq!(
                stdout(self.s.repo_cmd().arg("refs")),
                refs,
                "{name}: refs left"
            );
        }
        self.assert_clean(name);
        format!("{out}{err}")
    }

    /// No work directory left, and only sound objects in the repository.
    #[track_caller]
    fn assert_clean(&self, name: &str) {
        let left: Vec<String> = fs::read_dir(self.s.repo().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "cache")
            .collect();
        assert!(
            left.is_empty(),
            "{name}: left in the repository's tmp: {left:?}"
        );
        self.s.assert_fsck_clean();
    }

    /// The default deployment's directory.
    fn deployed(&self) -> PathBuf {
        let (checksum, serial) = self.s.deployments()[0].clone();
        self.s.deployment_dir(&checksum, serial)
    }
}

use std::os::unix::fs::PermissionsExt;

/// The base with whatever stood at `place` (and under it) replaced by a
/// link to `target`, plus content for every step of the conversion to
/// work on (a user, /opt, /var).
fn base_with_link(place: &str, target: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = base("linked")
        .into_iter()
        .filter(|e| {
            let n = match e {
                Entry::Dir(n) | Entry::File(n, _) | Entry::Zeros(n, _) => n,
                Entry::Link(n, _) | Entry::HardLink(n, _) => n,
            };
            let n = n.trim_end_matches('/');
            n != place && !n.starts_with(&format!("{place}/")) && n != "etc/passwd"
        })
        .collect();
    if place != "etc" {
        entries.push(file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nsvc:x:900:900::/var/lib/svc:/bin/false\n",
        ));
    }
    entries.push(file("opt/vendor/tool", "tool\n"));
    entries.push(file("var/lib/app/state", "state\n"));
    // Parents first, as a tar has them.
    let mut parents = String::new();
    for part in place.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
        parents = format!("{parents}{part}/");
        entries.push(dir(&parents));
    }
    entries.push(link(place, target));
    entries
}

/// Links out of the image at every place the conversion reads, writes,
/// moves or empties.
#[test]
fn links_out_of_the_image_never_reach_outside_it() {
    let t = Target::new();
    for place in [
        "boot",
        "etc",
        "tmp",
        "var",
        "home",
        "root",
        "usr/etc",
        "usr/local",
        "usr/lib/tmpfiles.d",
        "usr/lib/sysusers.d",
        "usr/lib/opt",
        "usr/lib/modules",
        "usr/share/factory",
        "usr/share/dpkg",
        "var/lib/dpkg",
        "var/lib/app",
        "usr/lib/os-release",
    ] {
        for (i, target) in t.targets().iter().enumerate() {
            let name = format!("{}-{i}", place.replace('/', "-"));
            let must_fail =
                ["etc", "usr/etc", "usr/lib/modules", "usr/lib/os-release"].contains(&place);
            let expect = if must_fail {
                Expect::Fails
            } else {
                Expect::Either
            };
            let out = t.case(&name, &[layer(&base_with_link(place, target))], expect);
            if must_fail {
                assert!(out.contains("cannot be deployed"), "{name}: {out}");
            }
        }
    }
    // Where the layout needs a directory, the link gave way to one.
    let target = &t.targets()[0];
    t.case(
        "tmp-kept",
        &[layer(&base_with_link("tmp", target))],
        Expect::Deploys,
    );
    let tmp = fs::symlink_metadata(t.deployed().join("tmp")).unwrap();
    assert!(tmp.is_dir() && tmp.mode() & 0o7777 == 0o1777);
}

/// Layer stacking: a later layer's entry under a directory that a lower
/// layer made a link out of the image.
#[test]
fn later_layers_never_write_through_lower_links() {
    let t = Target::new();
    for (i, target) in t.targets().iter().enumerate() {
        let lower = || {
            let mut l = base("stacked");
            l.push(link("usr/share/x", target));
            l.push(link("lnk", target));
            layer(&l)
        };
        // The directory the tar does not name: resolved inside the image.
        t.case(
            &format!("under-link-{i}"),
            &[lower(), layer(&[file("usr/share/x/pwned", "pwned\n")])],
            Expect::Deploys,
        );
        let inside = t
            .deployed()
            .join(t.victim.strip_prefix("/").unwrap())
            .join("pwned");
        assert_eq!(fs::read_to_string(&inside).unwrap(), "pwned\n");
        assert!(fs::symlink_metadata(t.deployed().join("usr/share/x"))
            .unwrap()
            .is_symlink());
        // A directory the tar names replaces the link.
        t.case(
            &format!("link-to-dir-{i}"),
            &[
                lower(),
                layer(&[dir("usr/share/x/"), file("usr/share/x/pwned", "pwned\n")]),
            ],
            Expect::Deploys,
        );
        let replaced = t.deployed().join("usr/share/x");
        assert!(fs::symlink_metadata(&replaced).unwrap().is_dir());
        assert_eq!(
            fs::read_to_string(replaced.join("pwned")).unwrap(),
            "pwned\n"
        );
        // A whiteout through a link deletes inside the image only.
        t.case(
            &format!("whiteout-via-link-{i}"),
            &[
                lower(),
                layer(&[file("lnk/.wh.precious", ""), file("lnk/.wh.sub", "")]),
            ],
            Expect::Deploys,
        );
    }
    // An opaque whiteout at the root hides every layer below.
    let mut only_lower = base("lower");
    only_lower.push(file("usr/share/only-lower", "x"));
    let mut upper = base("upper");
    upper.insert(0, file(".wh..wh..opq", ""));
    t.case(
        "opaque-root",
        &[layer(&only_lower), layer(&upper)],
        Expect::Deploys,
    );
    let deployed = t.deployed();
    assert_eq!(
        fs::read_to_string(deployed.join("usr/share/marker")).unwrap(),
        "upper"
    );
    assert!(!deployed.join("usr/share/only-lower").exists());
}

/// Names that leave the tree, hard links to host files, whiteouts of no
/// name, broken layers: refused, with the reason.
#[test]
fn layers_that_name_the_outside_or_lie_are_refused() {
    let t = Target::new();
    let refused = |name: &str, extra: Vec<Entry>, why: &str| {
        let mut l = base(name);
        l.extend(extra);
        let out = t.case(name, &[layer(&l)], Expect::Fails);
        assert!(
            out.contains("cannot be deployed") && out.contains(why),
            "{name}: {out}"
        );
    };
    refused("dotdot", vec![file("../escaped", "x")], "leaves the root");
    refused(
        "deep-dotdot",
        vec![file("usr/../../escaped", "x")],
        "leaves the root",
    );
    refused("absolute", vec![file("/escaped", "x")], "absolute name");
    let victim_file = t.victim.join("precious").display().to_string();
    refused(
        "hardlink-abs",
        vec![hard_link("h", &victim_file)],
        "absolute name",
    );
    refused(
        "hardlink-rel",
        vec![hard_link("h", "../../../../etc/passwd")],
        "leaves the root",
    );
    refused(
        "hardlink-missing",
        vec![hard_link("h", "etc/shadow")],
        "does not have",
    );
    refused(
        "whiteout-dotdot",
        vec![file("usr/.wh..", "")],
        "whiteout of no name",
    );
    refused(
        "whiteout-dot",
        vec![file(".wh..", "")],
        "whiteout of no name",
    );

    // A layer cut short, whose digest matches what is there.
    let mut cut = gzip_layer(&base("cut"));
    cut.bytes.truncate(cut.bytes.len() / 2);
    let out = t.case("truncated", &[cut], Expect::Fails);
    assert!(
        out.contains("cannot be deployed") || out.contains("fetching"),
        "{out}"
    );
    // Content that does not match its digest.
    let dir = t.images.path().join("corrupt");
    write_layout(
        &dir,
        "1",
        &[gzip_layer(&base("corrupt"))],
        Options {
            corrupt: true,
            ..Default::default()
        },
    );
    let out = t.rebase("corrupt", &dir, Expect::Fails);
    assert!(
        out.contains("digest") || out.contains("corrupted blob"),
        "{out}"
    );
    // After all of it, an honest image still deploys.
    t.case("honest", &[gzip_layer(&base("honest"))], Expect::Deploys);
    assert_eq!(
        fs::read_to_string(t.deployed().join("usr/share/marker")).unwrap(),
        "honest"
    );
}

/// A layer that decompresses to far more than the file system holds fails
/// cleanly: the space comes back, nothing is left, the next pull works.
#[test]
fn a_layer_larger_than_the_free_space_fails_cleanly() {
    let t = Target::new();
    let avail = || {
        nix::sys::statvfs::statvfs(&t.s.path)
            .unwrap()
            .blocks_available()
    };
    // Leave the sysroot's file system 64 MiB of room.
    let used = {
        let v = nix::sys::statvfs::statvfs(&t.s.path).unwrap();
        (v.blocks() - v.blocks_free()) * v.fragment_size()
    };
    run(std::process::Command::new("mount")
        .args(["-o", &format!("remount,size={}", used + (64 << 20))])
        .arg(&t.s.tmpfs.path));
    let before = avail();
    let mut big = base("big");
    big.push(Entry::Zeros("usr/share/big".into(), 512 << 20));
    let out = t.case("bomb", &[gzip_layer(&big)], Expect::Fails);
    assert!(
        out.contains("space") || out.contains("min-free-space"),
        "{out}"
    );
    assert_eq!(avail(), before, "space was not given back");
    t.case("after-bomb", &[gzip_layer(&base("after"))], Expect::Deploys);
}

/// A link in the image's /etc/apt is content (the image deploys), but apt,
/// which reads /etc/apt by path on the host, is never pointed through it.
#[test]
fn apt_never_reads_through_an_images_links() {
    let t = Target::new();
    let mut entries = base("apt");
    entries.push(dir("etc/apt/"));
    entries.push(dir("etc/apt/sources.list.d/"));
    entries.push(link("etc/apt/sources.list.d/host.list", "/etc/shadow"));
    t.case("apt-link", &[layer(&entries)], Expect::Deploys);
    let before = t.s.deployments();
    let (rc, out, err) = code(t.s.cli().args(["install", "hello"]));
    assert_eq!(rc, 1, "{out}{err}");
    assert!(err.contains("link out of the deployment"), "{err}");
    assert_eq!(t.s.deployments(), before);
}
