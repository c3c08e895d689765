//! Package layering with real .debs (built here with dpkg-deb), a real apt
//! repository over loopback HTTP, real dpkg in bubblewrap, real commits.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::debs::{apt_repository, Deb};
use common::*;
use serde_json::Value;

/// The test packages: each exercises one thing Debian packages really do.
fn packages() -> Vec<Deb> {
    vec![
        Deb::new("demo-lib", "1.0").file("/usr/share/demo-lib/data.txt", "library data\n"),
        Deb {
            depends: "demo-lib (>= 1.0)",
            conffiles: vec!["/etc/demo-app.conf"],
            ..Deb::new("demo-app", "1.0")
        }
        .file("/usr/bin/demo-app", "#!/bin/sh\necho \"demo-app works: $(cat /usr/share/demo-lib/data.txt)\"\n")
        .file("/etc/demo-app.conf", "setting=default\n")
        .file("/var/lib/demo-app/state.txt", "initial state\n")
        .file("/var/cache/demo-app/.keep", "")
        .control_file(
            "templates",
            "Template: demo-app/greeting\nType: string\nDefault: hello-from-debconf\nDescription: Greeting?\n",
        )
        .script("config", ". /usr/share/debconf/confmodule\ndb_input medium demo-app/greeting || true\ndb_go || true")
        .script(
            "postinst",
            "if [ \"$1\" = configure ]; then\n\
             . /usr/share/debconf/confmodule\n\
             db_get demo-app/greeting\n\
             echo \"$RET\" > /etc/demo-app.greeting\n\
             getent passwd demo-svc >/dev/null || useradd --system --home-dir /var/lib/demo-app --shell /usr/sbin/nologin --comment 'Demo service' demo-svc\n\
             echo configured > /usr/share/demo-app-postinst-ran\n\
             echo 'demo-app: postinst done'\n\
             fi",
        ),
        // Activates libc-bin's ldconfig trigger, as every library package does.
        Deb::new("demo-ldconfig", "1.0")
            .file("/usr/share/demo-ldconfig/readme", "x\n")
            .control_file("triggers", "activate-noawait ldconfig\n"),
        // Activates a file trigger of a base package (debianutils watches shells.d).
        Deb::new("demo-shell", "1.0").file("/usr/share/debianutils/shells.d/demo-shell", "/usr/bin/demo-shell\n"),
        Deb::new("demo-fail", "1.0").script(
            "postinst",
            // The first line poses as dpkg: the report must still name demo-fail.
            "echo 'dpkg: error processing package demo-lib (--install):' >&2\necho 'demo-fail: refusing on purpose' >&2\nexit 3",
        ),
        Deb::new("demo-inplace-etc", "1.0")
            .script("postinst", "echo 'appended by demo-inplace-etc' >> /etc/apt-ostree-image-version"),
        Deb::new("demo-inplace-usr", "1.0")
            .script("postinst", "echo 'appended by demo-inplace-usr' >> /usr/share/base-passwd/passwd.master"),
        Deb {
            conflicts: "demo-app",
            ..Deb::new("demo-conflict", "1.0")
        },
        Deb {
            depends: "does-not-exist (>= 2)",
            ..Deb::new("demo-broken", "1.0")
        },
        Deb::new("demo-base", "2.0").file("/usr/share/demo-base/version", "2.0\n"),
        // Virtual packages: one with two providers, one with a single one.
        Deb {
            provides: "demo-mail-transport",
            ..Deb::new("demo-mta-a", "1.0")
        },
        Deb {
            provides: "demo-mail-transport",
            ..Deb::new("demo-mta-b", "1.0")
        },
        Deb {
            depends: "demo-mail-transport",
            ..Deb::new("demo-mail-client", "1.0")
        },
        Deb {
            provides: "demo-only-virtual",
            ..Deb::new("demo-only-provider", "1.0")
        },
        // Stands in for initramfs-tools: writes what it was asked to build.
        Deb::new("initramfs-tools", "99.0").file(
            "/usr/sbin/update-initramfs",
            "#!/bin/sh\n[ \"$1\" = -c ] && [ \"$2\" = -k ] || exit 2\nkver=$3; shift 3\necho \"initramfs for $kver, options: $*\" > /boot/initrd.img-$kver\n",
        ),
    ]
}

struct Env {
    s: TestSysroot,
    _http: HttpServer,
    repo: tempfile::TempDir,
}

/// A sysroot at 12.1 (remote over HTTP) whose /etc/apt points at the test repository.
fn layering_env() -> Env {
    let s = TestSysroot::at_v1();
    let repo = tempfile::tempdir().unwrap();
    apt_repository(repo.path(), &packages());
    let http = HttpServer::start(repo.path(), None);
    let d = s.deployments()[0].clone();
    let sources = s
        .deployment_dir(&d.0, d.1)
        .join("etc/apt/sources.list.d/test.list");
    fs::write(&sources, format!("deb [trusted=yes] {}/ ./\n", http.url())).unwrap();
    Env {
        s,
        _http: http,
        repo,
    }
}

fn deployment_root(s: &TestSysroot, index: usize) -> PathBuf {
    let d = s.deployments()[index].clone();
    s.deployment_dir(&d.0, d.1)
}

fn installed_in(root: &Path) -> Vec<String> {
    let status = fs::read_to_string(root.join("usr/share/dpkg/database/status")).unwrap();
    apt_ostree::dpkg::parse_status(&status)
        .into_iter()
        .map(|p| p.name)
        .collect()
}

#[test]
fn install_layers_a_package_with_its_dependencies_and_scripts_then_uninstall() {
    let env = layering_env();
    let s = &env.s;
    let base = base_repo();
    let (rc, out, err) = code(s.cli().args(["install", "demo-app"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(
        err.contains("demo-app: postinst done"),
        "maintainer output is streamed: {err}"
    );
    assert!(
        out.contains("Added:") && out.contains("demo-lib 1.0"),
        "{out}"
    );

    let status = s.status();
    let d = &status["deployments"];
    assert_eq!(d[0]["requestedPackages"], serde_json::json!(["demo-app"]));
    let layered: Vec<&str> = d[0]["layeredPackages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(layered, ["demo-app", "demo-lib"]);
    assert_eq!(d[0]["baseChecksum"], base.v1.as_str());
    assert_ne!(d[0]["checksum"], base.v1.as_str());
    // The base deployment is untouched and kept.
    assert_eq!(d[1]["checksum"], base.v1.as_str());
    assert!(stdout(s.cli().arg("status")).contains("LayeredPackages: demo-app"));

    let root = deployment_root(s, 0);
    let pkgs = installed_in(&root);
    assert!(pkgs.contains(&"demo-app".into()) && pkgs.contains(&"demo-lib".into()));
    assert_eq!(
        fs::read_to_string(root.join("usr/share/demo-app-postinst-ran")).unwrap(),
        "configured\n"
    );
    // The conffile is in /etc of the new deployment; debconf gave the default.
    assert_eq!(
        fs::read_to_string(root.join("etc/demo-app.conf")).unwrap(),
        "setting=default\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/demo-app.greeting")).unwrap(),
        "hello-from-debconf\n"
    );
    // The system user exists, and is also a sysusers.d entry for boots with a local /etc/passwd.
    assert!(fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .contains("demo-svc:"));
    let sysusers =
        fs::read_to_string(root.join("usr/lib/sysusers.d/apt-ostree-layered.conf")).unwrap();
    assert!(sysusers.contains("u demo-svc "), "{sysusers}");
    // /var content comes back at boot through tmpfiles.d.
    let tmpfiles =
        fs::read_to_string(root.join("usr/lib/tmpfiles.d/apt-ostree-layered.conf")).unwrap();
    assert!(
        tmpfiles.contains("C /var/lib/demo-app/state.txt"),
        "{tmpfiles}"
    );
    assert!(tmpfiles.contains("d /var/cache/demo-app"), "{tmpfiles}");
    assert_eq!(
        fs::read_to_string(root.join("usr/share/factory/var/lib/demo-app/state.txt")).unwrap(),
        "initial state\n"
    );
    // What a boot does with it: systemd-tmpfiles on an empty /var, with
    // the deployment's factory copies where it looks for them.
    let boot = tempfile::tempdir().unwrap();
    fs::create_dir_all(boot.path().join("usr/share")).unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg(root.join("usr/share/factory"))
        .arg(boot.path().join("usr/share/factory")));
    run(Command::new("systemd-tmpfiles")
        .arg("--create")
        .arg(format!("--root={}", boot.path().display()))
        .arg(root.join("usr/lib/tmpfiles.d/apt-ostree-layered.conf")));
    assert_eq!(
        fs::read_to_string(boot.path().join("var/lib/demo-app/state.txt")).unwrap(),
        "initial state\n",
        "systemd-tmpfiles did not recreate the package's /var content"
    );
    assert!(boot.path().join("var/cache/demo-app").is_dir());
    // The program runs inside the deployment.
    let out = stdout(Command::new("chroot").arg(&root).arg("/usr/bin/demo-app"));
    assert_eq!(out, "demo-app works: library data\n");
    // No scratch state leaked into the commit.
    assert!(!root.join("usr/sbin/policy-rc.d").exists());
    assert!(!root.join("usr/share/dpkg/database/lock").exists());
    s.assert_fsck_clean();

    // Uninstall: back to the plain base commit.
    let (rc, out, err) = code(s.cli().args(["uninstall", "demo-app"]));
    assert_eq!(rc, 0, "{out}{err}");
    let status = s.status();
    assert_eq!(status["deployments"][0]["checksum"], base.v1.as_str());
    assert_eq!(
        status["deployments"][0]["requestedPackages"],
        serde_json::json!([])
    );
    assert!(!deployment_root(s, 0).join("usr/bin/demo-app").exists());
    s.assert_fsck_clean();
}

/// Virtual packages as apt-get treats them: several providers are listed
/// for the user to choose from, a single one is taken, and a dependency on
/// a virtual package is satisfied by a provider.
#[test]
fn virtual_packages_are_resolved_as_apt_does() {
    let env = layering_env();
    let s = &env.s;
    let before = s.deployments();
    let (rc, out, err) = code(s.cli().args(["install", "demo-mail-transport"]));
    assert_eq!(rc, 1, "{out}{err}");
    assert!(
        err.contains("virtual package provided by demo-mta-a, demo-mta-b"),
        "{err}"
    );
    let (rc, out, err) = code(s.cli().args(["install", "--dry-run", "demo-only-virtual"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("demo-only-provider 1.0"), "{out}");
    let (rc, out, err) = code(s.cli().args(["install", "--dry-run", "demo-mail-client"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(
        out.contains("demo-mail-client 1.0") && out.contains("demo-mta-"),
        "{out}"
    );
    assert_eq!(s.deployments(), before);
}

#[test]
fn triggers_run_and_dry_run_changes_nothing() {
    let env = layering_env();
    let s = &env.s;
    let before = s.deployments();
    let (rc, out, err) = code(s.cli().args(["install", "--dry-run", "demo-app"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(
        out.contains("demo-app 1.0") && out.contains("demo-lib 1.0"),
        "{out}"
    );
    assert_eq!(s.deployments(), before);

    let (rc, out, err) = code(s.cli().args(["install", "demo-ldconfig", "demo-shell"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(err.contains("Processing triggers for libc-bin"), "{err}");
    assert!(err.contains("Processing triggers for debianutils"), "{err}");
    // debianutils' trigger registered the new shell in /etc/shells.
    let shells = fs::read_to_string(deployment_root(s, 0).join("etc/shells")).unwrap();
    assert!(shells.contains("/usr/bin/demo-shell"), "{shells}");
}

#[test]
fn a_system_user_survives_a_locally_edited_passwd_through_sysusers() {
    let env = layering_env();
    let s = &env.s;
    let etc = deployment_root(s, 0).join("etc");
    let mut passwd = fs::read_to_string(etc.join("passwd")).unwrap();
    passwd.push_str("localuser:x:1500:1500::/home/localuser:/bin/sh\n");
    fs::write(etc.join("passwd"), passwd).unwrap();
    run(s.cli().args(["install", "demo-app"]));
    let root = deployment_root(s, 0);
    let merged = fs::read_to_string(root.join("etc/passwd")).unwrap();
    // The /etc merge keeps the administrator's file as it is...
    assert!(merged.contains("localuser:"), "{merged}");
    // ...and at boot systemd-sysusers adds what layered packages need.
    run(Command::new("systemd-sysusers").arg(format!("--root={}", root.display())));
    let booted = fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        booted.contains("localuser:") && booted.contains("demo-svc:"),
        "{booted}"
    );
}

#[test]
fn layers_follow_upgrades_keep_conffile_edits_and_reuse_downloads() {
    let env = layering_env();
    let s = &env.s;
    let base = base_repo();
    let http = HttpServer::start(&base.path, None);
    s.set_remote(&http.url(), &[]);
    let (rc, _, first) = code(s.cli().args(["install", "demo-app"]));
    assert_eq!(rc, 0, "{first}");
    let fetched = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.starts_with("Get:") && l.contains(" demo-"))
            .map(str::to_string)
            .collect()
    };
    assert!(
        !fetched(&first).is_empty(),
        "the first install downloads: {first}"
    );
    let etc = deployment_root(s, 0).join("etc");
    fs::write(etc.join("demo-app.conf"), "setting=mine\n").unwrap();

    // Regression: the preview listed the layered packages as removed.
    let (rc, out, err) = code(s.cli().args(["upgrade", "--preview"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("Upgraded:\n  demo-base 1.0 -> 1.1"), "{out}");
    assert!(!out.contains("Removed:"), "{out}");
    assert!(out.contains("Layered packages kept: demo-app"), "{out}");

    let (rc, out, err) = code(s.cli().arg("upgrade"));
    assert_eq!(rc, 0, "{out}{err}");
    let again = fetched(&err);
    assert!(again.is_empty(), "re-layering downloaded again: {again:?}");
    let status = s.status();
    let d = &status["deployments"][0];
    assert_eq!(d["baseChecksum"], base.v2.as_str());
    assert_eq!(d["version"], "12.2");
    assert_eq!(d["requestedPackages"], serde_json::json!(["demo-app"]));
    let root = deployment_root(s, 0);
    assert!(root.join("usr/bin/demo-app").exists());
    assert_eq!(
        fs::read_to_string(root.join("etc/demo-app.conf")).unwrap(),
        "setting=mine\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/apt-ostree-image-version")).unwrap(),
        "12.2\n"
    );
    s.assert_fsck_clean();
}

#[test]
fn in_place_writes_never_reach_the_repository() {
    let env = layering_env();
    let s = &env.s;
    let base_file =
        |root: &Path| fs::read_to_string(root.join("usr/etc/apt-ostree-image-version")).unwrap();
    // A script that appends to a base /etc file: it gets its own copy.
    let (rc, out, err) = code(s.cli().args(["install", "demo-inplace-etc"]));
    assert_eq!(rc, 0, "{out}{err}");
    let new = deployment_root(s, 0);
    assert!(base_file(&new).ends_with("appended by demo-inplace-etc\n"));
    assert_eq!(
        base_file(&deployment_root(s, 1)),
        "12.1\n",
        "the base's file changed"
    );
    s.assert_fsck_clean();
    // A script that appends to a base file in /usr: it works on a copy the
    // kernel makes (overlayfs); the repository's object stays as it was.
    let (rc, out, err) = code(s.cli().args(["install", "demo-inplace-usr"]));
    assert_eq!(rc, 0, "{out}{err}");
    let master = "usr/share/base-passwd/passwd.master";
    let new = fs::read_to_string(deployment_root(s, 0).join(master)).unwrap();
    let base = fs::read_to_string(deployment_root(s, 1).join(master)).unwrap();
    assert!(new.ends_with("appended by demo-inplace-usr\n"), "{new}");
    assert!(!base.contains("appended"), "the base image's file changed");
    s.assert_fsck_clean();
    // overlayfs's bookkeeping (opaque markers on new directories, origins of
    // copied-up files) is scratch state, never part of a layered commit.
    let commit = &s.deployments()[0].0;
    let listing = stdout(s.repo_cmd().args(["ls", "-R", "-X", commit, "/"]));
    assert!(listing.contains("/usr/share/base-passwd/passwd.master"));
    let leaked: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains("trusted.overlay"))
        .collect();
    assert!(leaked.is_empty(), "{leaked:#?}");
}

#[test]
fn bad_requests_get_typed_errors_and_change_nothing() {
    let env = layering_env();
    let s = &env.s;
    let before = s.deployments();
    let dir = tempfile::tempdir().unwrap();
    let good = Deb::new("demo-local", "1.0")
        .file("/usr/share/demo-local/x", "x\n")
        .build(dir.path());
    let truncated = dir.path().join("truncated_1.0_all.deb");
    let bytes = fs::read(&good).unwrap();
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.path().join("garbage.deb");
    fs::write(&garbage, "not a package").unwrap();
    for (args, expect) in [
        (
            vec!["install", "no-such-package"],
            "packages not found: no-such-package",
        ),
        (vec!["install", "Bad_Name"], "invalid package name"),
        (vec!["install", "demo-app;rm"], "invalid package name"),
        (vec!["install", "dpkg"], "already in the base image: dpkg"),
        (vec!["install", "demo-broken"], "does-not-exist"),
        (
            vec!["install", "demo-app", "demo-conflict"],
            "cannot satisfy dependencies",
        ),
        (vec!["install", "demo-fail"], "refusing on purpose"),
        (
            vec!["install", truncated.to_str().unwrap()],
            "invalid package file",
        ),
        (
            vec!["install", garbage.to_str().unwrap()],
            "invalid package file",
        ),
        (vec!["uninstall", "demo-app"], "not requested: demo-app"),
        (
            vec!["override", "remove", "no-such-base-package"],
            "not in the base image: no-such-base-package",
        ),
    ] {
        let (rc, out, err) = code(s.cli().args(&args));
        assert_eq!(rc, 1, "{args:?}: {out}{err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(s.deployments(), before, "{args:?} changed the deployments");
    }
    let (_, _, err) = code(s.cli().args(["install", "demo-fail"]));
    assert!(
        err.contains("postinst of demo-fail failed (exit status 3)"),
        "{err}"
    );
    s.assert_fsck_clean();

    // Already requested: an error, or nothing to do with --idempotent.
    run(s.cli().args(["install", "demo-lib"]));
    let (rc, _, err) = code(s.cli().args(["install", "demo-lib"]));
    assert_eq!(rc, 1);
    assert!(err.contains("already requested: demo-lib"), "{err}");
    let (rc, out, _) =
        code(
            s.cli()
                .args(["install", "--idempotent", "--unchanged-exit-77", "demo-lib"]),
        );
    assert_eq!(rc, 77, "{out}");

    // Descriptors that name nothing, or no regular file, are refused
    // before anything is read: through a client we did not write, and by
    // sending /dev/null the way the CLI sends a package.
    let before = s.deployments();
    let d = ActivatedDaemon::start(&s.path, 60);
    let reply = python_varlink(&[
        "call",
        &format!("{}/org.aptostree.Sysroot.Install", d.address()),
        r#"{"packages": [], "localPackageFileDescriptors": [0]}"#,
    ]);
    assert!(
        reply.contains("InvalidParameter") && reply.contains("localPackageFileDescriptors"),
        "{reply}"
    );
    let reply = call_with_descriptor(
        &d.socket,
        r#"{"method": "org.aptostree.Sysroot.Install", "parameters": {"packages": [], "localPackageFileDescriptors": [0]}}"#,
        &fs::File::open("/dev/null").unwrap(),
    );
    assert!(
        reply.contains("InvalidPackageFile") && reply.contains("not a regular file"),
        "{reply}"
    );
    let write_only = fs::OpenOptions::new().write(true).open(&good).unwrap();
    let reply = call_with_descriptor(
        &d.socket,
        r#"{"method": "org.aptostree.Sysroot.Install", "parameters": {"packages": [], "localPackageFileDescriptors": [0]}}"#,
        &write_only,
    );
    assert!(reply.contains("not open for reading"), "{reply}");
    drop(d);
    let (rc, _, err) = code(s.cli().args(["install", "/no/such/file.deb"]));
    assert_eq!(rc, 1);
    assert!(
        err.contains("invalid package file /no/such/file.deb: no such file"),
        "{err}"
    );
    assert_eq!(s.deployments(), before);

    let copies = || {
        fs::read_dir(s.path.join("ostree/repo/extensions/apt-ostree/local"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // A dry run resolves the local file, and keeps nothing of it.
    let (rc, out, err) = code(
        s.cli()
            .args(["install", "--dry-run", good.to_str().unwrap()]),
    );
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("demo-local"), "{out}");
    assert_eq!(copies(), 0, "a dry run kept a copy");

    // A local .deb works, named relative to the current directory; the
    // daemon keeps its own copy, so the file may go away afterwards.
    let (rc, out, err) = code(s.cli().current_dir(dir.path()).args([
        "install",
        &format!("./{}", good.file_name().unwrap().to_str().unwrap()),
    ]));
    assert_eq!(rc, 0, "{out}{err}");
    fs::remove_file(&good).unwrap();
    assert_eq!(
        s.status()["deployments"][0]["requestedLocalPackages"],
        serde_json::json!(["demo-local"])
    );
    assert!(deployment_root(s, 0)
        .join("usr/share/demo-local/x")
        .exists());

    // The daemon's copy is kept while a deployment needs it, then pruned.
    assert_eq!(copies(), 1);
    run(s.cli().args(["uninstall", "demo-local"]));
    run(s.cli().args(["cleanup", "--base"]));
    assert_eq!(copies(), 1, "the rollback deployment still needs it");
    run(s.cli().args(["cleanup", "--rollback", "--base"]));
    assert_eq!(copies(), 0);
}

#[test]
fn override_remove_replace_and_reset_base_packages() {
    let env = layering_env();
    let s = &env.s;
    let version = |root: &Path| fs::read_to_string(root.join("usr/share/demo-base/version")).ok();
    assert_eq!(version(&deployment_root(s, 0)).as_deref(), Some("1.0\n"));

    let (rc, out, err) = code(s.cli().args(["override", "replace", "demo-base"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(version(&deployment_root(s, 0)).as_deref(), Some("2.0\n"));
    assert_eq!(
        s.status()["deployments"][0]["replacedBasePackages"],
        serde_json::json!(["demo-base"])
    );

    run(s.cli().args(["override", "reset", "--all"]));
    run(s.cli().args(["override", "remove", "demo-base"]));
    let root = deployment_root(s, 0);
    assert_eq!(version(&root), None);
    assert!(!installed_in(&root).contains(&"demo-base".into()));
    assert_eq!(
        s.status()["deployments"][0]["removedBasePackages"],
        serde_json::json!(["demo-base"])
    );

    run(s.cli().args(["override", "reset", "demo-base"]));
    assert_eq!(version(&deployment_root(s, 0)).as_deref(), Some("1.0\n"));

    // Regressions: a dry run showed no removals; a replacement by the
    // version the base already has wrote a deployment of the same content
    // (pushing out the rollback); a name not in the base was "not requested".
    let before = s.deployments();
    let (rc, out, err) = code(
        s.cli()
            .args(["override", "remove", "--dry-run", "demo-base"]),
    );
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("Removed:\n  demo-base 1.0"), "{out}");
    let (rc, out, err) = code(
        s.cli()
            .args(["override", "replace", "dpkg", "--unchanged-exit-77"]),
    );
    assert_eq!(rc, 77, "{out}{err}");
    assert!(out.contains("No change"), "{out}");
    let (rc, _, err) = code(s.cli().args(["override", "remove", "demo-app"]));
    assert_eq!(rc, 1);
    assert!(err.contains("not in the base image: demo-app"), "{err}");
    assert_eq!(s.deployments(), before);
    s.assert_fsck_clean();
}

#[test]
fn progress_over_varlink_carries_maintainer_script_output() {
    let env = layering_env();
    let s = &env.s;
    let d = ActivatedDaemon::start(&s.path, 60);
    let out = python_varlink(&[
        "call",
        "--more",
        &format!("{}/org.aptostree.Sysroot.Install", d.address()),
        r#"{"packages": ["demo-app"]}"#,
    ]);
    let mut log_lines = Vec::new();
    let mut result = None;
    let mut depth = 0;
    let mut current = String::new();
    // The Python client prints one JSON object per reply.
    for ch in out.chars() {
        current.push(ch);
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    let v: Value = serde_json::from_str(current.trim()).unwrap();
                    if let Some(m) = v["progress"]["message"].as_str() {
                        log_lines.push(m.to_string());
                    }
                    if !v["result"].is_null() {
                        result = Some(v["result"].clone());
                    }
                    current.clear();
                }
            }
            _ => {}
        }
    }
    assert!(
        log_lines.iter().any(|l| l == "demo-app: postinst done"),
        "{log_lines:?}"
    );
    let result = result.expect("a final result");
    assert_eq!(result["changed"], true);
    assert_eq!(
        result["deployment"]["requestedPackages"],
        serde_json::json!(["demo-app"])
    );
}

#[test]
fn initramfs_regeneration_needs_initramfs_tools_and_can_be_undone() {
    let env = layering_env();
    let s = &env.s;
    let before = s.deployments();
    let (rc, _, err) = code(s.cli().args(["initramfs", "--enable"]));
    assert_eq!(rc, 1);
    assert!(err.contains("needs initramfs-tools"), "{err}");
    assert_eq!(s.deployments(), before);
    // Nonsense for update-initramfs is its own typed error, and changes nothing.
    let (rc, _, err) = code(s.cli().args(["initramfs", "--enable", "--arg=-v;reboot"]));
    assert_eq!(rc, 1);
    assert!(
        err.contains("invalid update-initramfs argument \"-v;reboot\""),
        "{err}"
    );
    assert_eq!(s.deployments(), before);

    run(s.cli().args(["install", "initramfs-tools"]));
    let (rc, out, err) = code(s.cli().args(["initramfs", "--enable", "--arg=-v"]));
    assert_eq!(rc, 0, "{out}{err}");
    let initramfs = "usr/lib/modules/6.1.0-apt-ostree-demo/initramfs.img";
    let root = deployment_root(s, 0);
    assert_eq!(
        fs::read_to_string(root.join(initramfs)).unwrap(),
        "initramfs for 6.1.0-apt-ostree-demo, options: -v\n"
    );
    assert!(fs::read_dir(root.join("boot"))
        .map(|mut d| d.next().is_none())
        .unwrap_or(true));
    // Upgrades and other changes keep regenerating it; --disable goes back.
    let (rc, out, _) =
        code(
            s.cli()
                .args(["initramfs", "--enable", "--arg=-v", "--unchanged-exit-77"]),
        );
    assert_eq!(rc, 77, "{out}");
    run(s.cli().args(["initramfs", "--disable"]));
    assert_eq!(
        fs::read_to_string(deployment_root(s, 0).join(initramfs)).unwrap(),
        "apt-ostree demo initramfs placeholder\n"
    );
    s.assert_fsck_clean();
}

#[test]
fn package_lists_are_reused_until_refresh_md_force() {
    let env = layering_env();
    let s = &env.s;
    run(s.cli().args(["install", "demo-lib"]));
    // The repository publishes a package after the lists were fetched.
    let mut published = packages();
    published.push(Deb::new("demo-late", "1.0").file("/usr/share/demo-late/x", "x\n"));
    apt_repository(env.repo.path(), &published);
    // Fresh lists are reused: the new package is not known yet...
    let (rc, _, err) = code(s.cli().args(["install", "demo-late"]));
    assert_eq!(rc, 1);
    assert!(err.contains("packages not found: demo-late"), "{err}");
    // ...nor after a refresh-md that finds the lists fresh...
    run(s.cli().arg("refresh-md"));
    assert_eq!(code(s.cli().args(["install", "demo-late"])).0, 1);
    // ...but after refresh-md --force it is.
    run(s.cli().args(["refresh-md", "--force"]));
    let (rc, out, err) = code(s.cli().args(["install", "demo-late"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(deployment_root(s, 0).join("usr/share/demo-late/x").exists());
}

#[test]
fn a_relative_sysroot_path_works_like_an_absolute_one() {
    let env = layering_env();
    let s = &env.s;
    let (parent, name) = (s.path.parent().unwrap(), s.path.file_name().unwrap());
    let (rc, out, err) = code(
        Command::new(cli())
            .current_dir(parent)
            .env("OSTREE_SYSROOT_DEBUG", "mutable-deployments")
            .env_remove("APT_OSTREE_ADDRESS")
            .arg("--sysroot")
            .arg(name)
            .args(["install", "demo-lib"]),
    );
    assert_eq!(rc, 0, "{out}{err}");
    assert!(deployment_root(s, 0)
        .join("usr/share/demo-lib/data.txt")
        .exists());
}

/// apt's own names for files: a `file:` source in a directory with a space
/// (percent-encoded in sources.list, as apt wants it, and reported by apt
/// decoded), and a download whose version has an epoch (apt stores it as
/// NAME_1%3a2.0_all.deb).
#[test]
fn quoted_file_sources_and_epoch_versions_install() {
    let s = TestSysroot::at_v1();
    let dir = tempfile::tempdir().unwrap();
    let spaced = dir.path().join("my repo");
    apt_repository(
        &spaced,
        &[Deb::new("spaced-tool", "1.0").file("/usr/bin/spaced-tool", "#!/bin/sh\necho spaced\n")],
    );
    let web = dir.path().join("web");
    apt_repository(
        &web,
        &[Deb::new("epoch-tool", "1:2.0").file("/usr/bin/epoch-tool", "#!/bin/sh\necho epoch\n")],
    );
    let http = HttpServer::start(&web, None);
    fs::write(
        deployment_root(&s, 0).join("etc/apt/sources.list.d/test.list"),
        format!(
            "deb [trusted=yes] file:{}/my%20repo ./\ndeb [trusted=yes] {}/ ./\n",
            dir.path().display(),
            http.url()
        ),
    )
    .unwrap();
    let (rc, out, err) = code(s.cli().args(["install", "spaced-tool", "epoch-tool"]));
    assert_eq!(rc, 0, "{out}{err}");
    let root = deployment_root(&s, 0);
    for tool in ["spaced-tool", "epoch-tool"] {
        assert!(
            root.join("usr/bin").join(tool).exists(),
            "{tool} was not layered"
        );
    }
}

/// `reset`: back to the base image as it is, in steps (--overlays keeps the
/// overrides) or at once; kernel arguments stay; nothing to reset writes
/// nothing; nonsense over Varlink is refused and changes nothing.
#[test]
fn reset_drops_local_changes_and_keeps_kernel_arguments() {
    let env = layering_env();
    let s = &env.s;
    let base = base_repo();
    run(s.cli().args(["install", "demo-app"]));
    run(s.cli().args(["override", "remove", "demo-base"]));
    run(s.cli().args(["kargs", "--append=reset.marker=1"]));
    let d = &s.status()["deployments"][0];
    assert_eq!(d["requestedPackages"], serde_json::json!(["demo-app"]));
    assert_eq!(d["removedBasePackages"], serde_json::json!(["demo-base"]));

    let (rc, out, err) = code(s.cli().args(["reset", "--overlays"]));
    assert_eq!(rc, 0, "{out}{err}");
    let d = &s.status()["deployments"][0];
    assert_eq!(d["requestedPackages"], serde_json::json!([]));
    assert_eq!(d["removedBasePackages"], serde_json::json!(["demo-base"]));
    let root = deployment_root(s, 0);
    assert!(!root.join("usr/bin/demo-app").exists());
    assert!(!installed_in(&root).contains(&"demo-base".into()));

    let (rc, out, err) = code(s.cli().arg("reset"));
    assert_eq!(rc, 0, "{out}{err}");
    let d = &s.status()["deployments"][0];
    assert_eq!(d["removedBasePackages"], serde_json::json!([]));
    assert_eq!(d["checksum"], base.v1.as_str(), "the base image as it is");
    let kargs = stdout(s.cli().arg("kargs"));
    assert!(kargs.contains("reset.marker=1"), "{kargs}");

    let before = s.deployments();
    let (rc, out, err) = code(s.cli().args(["reset", "--unchanged-exit-77"]));
    assert_eq!(rc, 77, "{out}{err}");
    assert!(out.contains("Nothing to reset"), "{out}");
    let d = ActivatedDaemon::start(&s.path, 60);
    let reply = python_varlink(&[
        "call",
        &format!("{}/org.aptostree.Sysroot.Reset", d.address()),
        r#"{"overlays": "yes"}"#,
    ]);
    assert!(
        reply.contains("org.varlink.service.InvalidParameter"),
        "{reply}"
    );
    assert_eq!(s.deployments(), before);
    s.assert_fsck_clean();
}

/// Send one Varlink call with `file` attached (SCM_RIGHTS) and return the
/// first reply.
fn call_with_descriptor(socket: &Path, message: &str, file: &fs::File) -> String {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    use std::io::{BufRead, IoSlice};
    use std::os::fd::AsRawFd;
    let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let mut bytes = message.as_bytes().to_vec();
    bytes.push(0);
    let fds = [file.as_raw_fd()];
    sendmsg::<UnixAddr>(
        stream.as_raw_fd(),
        &[IoSlice::new(&bytes)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    let mut reply = Vec::new();
    std::io::BufReader::new(&stream)
        .read_until(0, &mut reply)
        .unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn maintainer_scripts_may_print_anything() {
    let env = layering_env();
    let s = &env.s;
    let dir = tempfile::tempdir().unwrap();
    // Latin-1, then 300 kB of lines, then one line of 100 kB.
    let noisy = "printf 'caf\\351 cr\\350me\\n'; yes 'noisy output' | head -c 300000; \
                 head -c 100000 /dev/zero | tr '\\0' x; echo; ";
    let ok = Deb::new("demo-noisy", "1.0")
        .script(
            "postinst",
            &format!("{noisy}echo noisy-done; echo ran > /usr/share/demo-noisy-ran"),
        )
        .build(dir.path());
    let failing = Deb::new("demo-noisy-fail", "1.0")
        .script(
            "postinst",
            &format!("{noisy}echo the-last-words >&2; exit 4"),
        )
        .build(dir.path());

    let before = s.deployments();
    let (rc, out, err) = code(s.cli().args(["install", failing.to_str().unwrap()]));
    assert_eq!(rc, 1, "{out}");
    assert!(
        err.contains("postinst of demo-noisy-fail failed (exit status 4)"),
        "{}",
        &err[..err.len().min(2000)]
    );
    // The progress stream showed the output as it came; the report is a tail.
    let report = &err[err.find("error: postinst of").unwrap()..];
    assert!(report.contains("the-last-words"), "the tail is reported");
    assert!(
        report.contains("earlier lines not shown"),
        "the report says it is a tail"
    );
    assert!(report.len() < 20 * 1024, "report of {} bytes", report.len());
    assert_eq!(s.deployments(), before);

    let (rc, _, err) = code(s.cli().args(["install", ok.to_str().unwrap()]));
    assert_eq!(rc, 0, "{}", &err[err.len().saturating_sub(2000)..]);
    // Invalid bytes are replaced, never fatal.
    assert!(err.contains("caf\u{fffd} cr\u{fffd}me"), "{}", &err[..200]);
    assert!(
        deployment_root(s, 0)
            .join("usr/share/demo-noisy-ran")
            .exists(),
        "the script ran to its end"
    );
}

#[test]
fn live_changes_are_refused_where_they_cannot_work() {
    let env = layering_env();
    let s = &env.s;
    let before = s.deployments();
    for (args, expect) in [
        (vec!["apply-live"], "apply-live changes the running system"),
        (
            vec!["install", "--apply-live", "demo-lib"],
            "apply-live changes the running system",
        ),
        (
            vec!["uninstall", "--apply-live", "demo-lib"],
            "pass --allow-replacement",
        ),
        (vec!["usroverlay"], "usroverlay changes the running system"),
        (
            vec!["usroverlay", "--hotfix"],
            "usroverlay changes the running system",
        ),
    ] {
        let (rc, out, err) = code(s.cli().args(&args));
        assert_eq!(rc, 1, "{args:?}: {out}{err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(s.deployments(), before, "{args:?} changed the deployments");
    }
    // --allow-replacement means nothing without --apply-live.
    let (rc, _, err) = code(s.cli().args(["install", "--allow-replacement", "demo-lib"]));
    assert_eq!(rc, 2, "{err}");
    let d = ActivatedDaemon::start(&s.path, 60);
    for (method, params) in [
        ("ApplyLive", r#"{"reset": "yes"}"#),
        ("UsrOverlay", r#"{"hotfix": 1}"#),
    ] {
        let reply = python_varlink(&[
            "call",
            &format!("{}/org.aptostree.Sysroot.{method}", d.address()),
            params,
        ]);
        assert!(reply.contains("InvalidParameter"), "{method}: {reply}");
    }
    let reply = python_varlink(&[
        "call",
        &format!("{}/org.aptostree.Sysroot.ApplyLive", d.address()),
        "{}",
    ]);
    assert!(reply.contains("LiveChangeRefused"), "{reply}");
    assert_eq!(s.deployments(), before);
    s.assert_fsck_clean();
}

/// Vendor packages install under /opt (browsers, editors, chat clients):
/// their files and what their scripts write there are kept in /usr/lib/opt
/// (read-only, rebuilt with every deployment) and linked from /var/opt at
/// boot; they follow an upgrade and leave with the package.
#[test]
fn packages_under_opt_live_in_usr_and_follow_upgrades() {
    let s = TestSysroot::at_v1();
    let repo = tempfile::tempdir().unwrap();
    apt_repository(
        repo.path(),
        &[Deb::new("vendor-app", "1.0")
            .file(
                "/opt/vendor-app/bin/vendor-app",
                "#!/bin/sh\necho \"vendor-app $(cat /opt/vendor-app/generated.conf)\"\n",
            )
            .script(
                "postinst",
                "[ \"$1\" = configure ] && echo made-by-postinst > /opt/vendor-app/generated.conf",
            )],
    );
    let apt = HttpServer::start(repo.path(), None);
    fs::write(
        deployment_root(&s, 0).join("etc/apt/sources.list.d/test.list"),
        format!("deb [trusted=yes] {}/ ./\n", apt.url()),
    )
    .unwrap();
    let (rc, out, err) = code(s.cli().args(["install", "vendor-app"]));
    assert_eq!(rc, 0, "{out}{err}");
    let root = deployment_root(&s, 0);
    let kept = root.join("usr/lib/opt/vendor-app");
    assert!(kept.join("bin/vendor-app").is_file(), "the package's file");
    assert_eq!(
        fs::read_to_string(kept.join("generated.conf")).unwrap(),
        "made-by-postinst\n",
        "what its postinst wrote under /opt"
    );
    let tmpfiles =
        fs::read_to_string(root.join("usr/lib/tmpfiles.d/apt-ostree-layered.conf")).unwrap();
    assert!(
        tmpfiles.contains("L /var/opt/vendor-app - - - - ../../usr/lib/opt/vendor-app"),
        "{tmpfiles}"
    );
    assert!(
        !root.join("usr/share/factory/var/opt").exists(),
        "no copy into /var"
    );
    // What a boot does: tmpfiles.d links /var/opt/vendor-app; the program runs.
    run(Command::new("systemd-tmpfiles")
        .arg("--create")
        .arg(format!("--root={}", root.display()))
        .arg(root.join("usr/lib/tmpfiles.d/apt-ostree-layered.conf")));
    let out = stdout(
        Command::new("chroot")
            .arg(&root)
            .arg("/opt/vendor-app/bin/vendor-app"),
    );
    assert_eq!(out, "vendor-app made-by-postinst\n");
    s.assert_fsck_clean();

    // A new base: the package and its /opt tree are built on it again.
    let http = HttpServer::start(&base_repo().path, None);
    s.set_remote(&http.url(), &[]);
    let (rc, out, err) = code(s.cli().arg("upgrade"));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(s.status()["deployments"][0]["version"], "12.2");
    let root = deployment_root(&s, 0);
    assert!(root.join("usr/lib/opt/vendor-app/bin/vendor-app").is_file());
    assert!(root.join("usr/lib/opt/vendor-app/generated.conf").is_file());

    let (rc, out, err) = code(s.cli().args(["uninstall", "vendor-app"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(!deployment_root(&s, 0)
        .join("usr/lib/opt/vendor-app")
        .exists());
}

#[test]
fn search_finds_packages_by_name_and_description_once_the_lists_are_fetched() {
    let env = layering_env();
    let s = &env.s;
    // Before any refresh: a typed error that says what to do.
    let (rc, _, err) = code(s.cli().args(["search", "demo"]));
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("refresh-md"), "{err}");
    // Nonsense words are refused before anything is read.
    for bad in ["", "a\tb"] {
        let (rc, _, err) = code(s.cli().args(["search", bad]));
        assert_ne!(rc, 0, "{bad:?}: {err}");
        assert!(err.contains("words"), "{bad:?}: {err}");
    }
    run(s.cli().arg("refresh-md"));
    let found = |words: &[&str]| -> Vec<(String, bool)> {
        let mut c = s.cli();
        c.arg("search").args(words).arg("--json");
        let list: serde_json::Value = serde_json::from_str(&stdout(&mut c)).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["installed"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    // By name; by description, every word, any case; names first.
    assert_eq!(found(&["demo-lib"]), [("demo-lib".to_string(), false)]);
    let by_description = found(&["TEST", "package", "app"]);
    assert_eq!(by_description[0], ("demo-app".to_string(), false));
    assert!(by_description.iter().all(|(n, _)| n.starts_with("demo-")));
    assert!(found(&["no-such-thing-anywhere"]).is_empty());
    // Once layered, it shows as installed.
    run(s.cli().args(["install", "demo-app"]));
    assert!(found(&["demo-app"]).contains(&("demo-app".to_string(), true)));
    // The text output, as `apt search` prints it.
    let text = stdout(s.cli().args(["search", "demo-lib"]));
    assert!(
        text.starts_with("demo-lib/1.0 all [installed]\n  test package demo-lib"),
        "{text}"
    );
}
