//! The slow suite: real Debian from Debian's archive. Needs the network, so
//! every test here is ignored by default; `scripts/test-slow` runs them
//! (`cargo test -- --ignored`). Ignored tests are reported as ignored, never
//! as passed.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn treefile(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("minbase.toml");
    fs::write(
        &path,
        format!(
            "ref = \"debian/12/x86_64/minbase\"\nsuite = \"bookworm\"\nmirror = \"http://deb.debian.org/debian\"\nvariant = \"minbase\"\nplaceholder-kernel = true\n{extra}\n"
        ),
    )
    .unwrap();
    path
}

fn compose(treefile: &Path, repo: &Path) -> std::process::Output {
    Command::new(cli())
        .args(["compose", "tree"])
        .arg(treefile)
        .arg("--repo")
        .arg(repo)
        .output()
        .unwrap()
}

#[test]
#[ignore = "slow: composes from Debian's archive; run scripts/test-slow"]
fn compose_a_real_minbase_deploy_it_and_layer_hello_and_jq() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let out = compose(&treefile(dir.path(), ""), &repo);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let s = TestSysroot::empty();
    s.set_remote(&format!("file://{}", repo.display()), &[]);
    run(s
        .repo_cmd()
        .args(["pull", REMOTE, "debian/12/x86_64/minbase"]));
    run(ostree()
        .args(["admin", "deploy", "--os", OSNAME])
        .arg(format!("--sysroot={}", s.path.display()))
        .arg(format!("{REMOTE}:debian/12/x86_64/minbase")));
    // db list is the image's package set.
    let listed = stdout(s.cli().args(["db", "list"]));
    let image = stdout(ostree().arg(format!("--repo={}", repo.display())).args([
        "cat",
        "debian/12/x86_64/minbase",
        "/usr/share/dpkg/database/status",
    ]));
    let pkgs = apt_ostree::dpkg::parse_status(&image);
    assert!(pkgs.len() > 80, "a minbase has about 90 packages");
    assert_eq!(listed.lines().count() - 1, pkgs.len());
    // Layer real packages from Debian's archive and run them in the deployment.
    let out = s.cli().args(["install", "hello", "jq"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = s.deployments()[0].clone();
    let root = s.deployment_dir(&d.0, d.1);
    assert_eq!(
        stdout(Command::new("chroot").arg(&root).arg("hello")),
        "Hello, world!\n"
    );
    let jq = stdout(Command::new("chroot").arg(&root).args(["jq", "-n", "1+1"]));
    assert_eq!(jq.trim(), "2");
    s.assert_fsck_clean();
}

#[test]
#[ignore = "slow: composes from Debian's archive; run scripts/test-slow"]
fn compose_refuses_a_missing_package_and_a_missing_suite() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    // A repository that exists, so that "no ref moved" means something.
    run(Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(["init", "--mode=archive"]));
    let out = compose(
        &treefile(dir.path(), "packages = [\"no-such-package-anywhere\"]"),
        &repo,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mmdebstrap failed") && err.contains("no-such-package-anywhere"),
        "{err}"
    );
    let bad_suite = dir.path().join("bad.toml");
    fs::write(
        &bad_suite,
        "ref = \"x/y\"\nsuite = \"no-such-suite\"\nmirror = \"http://deb.debian.org/debian\"\nplaceholder-kernel = true\n",
    )
    .unwrap();
    let out = compose(&bad_suite, &repo);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mmdebstrap failed"));
    // Neither moved a ref.
    let refs = stdout(
        Command::new("ostree")
            .arg(format!("--repo={}", repo.display()))
            .arg("refs"),
    );
    assert!(refs.trim().is_empty(), "{refs}");
}
