//! Transactions on real sysroots: upgrade over HTTP, rebase, deploy, rollback,
//! cleanup, kargs, db, concurrency, cancel, watch, signatures and crashes.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A sysroot at 12.1 whose remote is served over HTTP.
fn served_v1() -> (TestSysroot, HttpServer) {
    served_v1_at(None)
}

/// Like [`served_v1`], the server trickling at `rate` bytes per second.
fn served_v1_at(rate: Option<u64>) -> (TestSysroot, HttpServer) {
    let s = TestSysroot::at_v1();
    let http = HttpServer::start(&base_repo().path, rate);
    s.set_remote(&http.url(), &[]);
    (s, http)
}

#[test]
fn upgrade_deploys_the_new_commit_and_keeps_the_old_one_for_rollback() {
    let (s, _http) = served_v1();
    let base = base_repo();
    let (rc, out, err) = code(s.cli().arg("upgrade"));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(
        err.contains("Pulling demo:"),
        "progress lines expected: {err}"
    );
    assert!(
        out.contains("Upgraded:\n  demo-base 1.0 -> 1.1"),
        "the package diff: {out}"
    );
    assert_eq!(
        s.deployments()
            .iter()
            .map(|d| d.0.clone())
            .collect::<Vec<_>>(),
        [base.v2.clone(), base.v1.clone()]
    );
    let status = s.status();
    assert_eq!(status["deployments"][0]["version"], "12.2");
    assert_eq!(status["deployments"][1]["rollback"], true);
    s.assert_fsck_clean();

    // Nothing new: exit 0, or 77 when asked; --check says 77 too.
    let (rc, out, _) = code(s.cli().arg("upgrade"));
    assert_eq!(rc, 0);
    assert!(out.contains("No upgrade available"), "{out}");
    assert_eq!(code(s.cli().args(["upgrade", "--unchanged-exit-77"])).0, 77);
    assert_eq!(code(s.cli().args(["upgrade", "--check"])).0, 77);
}

#[test]
fn upgrade_keeps_local_etc_edits_and_takes_new_defaults() {
    let (s, _http) = served_v1();
    let base = base_repo();
    let serial = s.deployments()[0].1;
    let etc = s.deployment_dir(&base.v1, serial).join("etc");
    fs::write(etc.join("hostname"), "edited-locally\n").unwrap();
    assert_eq!(
        fs::read_to_string(etc.join("apt-ostree-image-version")).unwrap(),
        "12.1\n"
    );
    run(s.cli().arg("upgrade"));
    let new = s.deployments()[0].clone();
    let new_etc = s.deployment_dir(&new.0, new.1).join("etc");
    assert_eq!(
        fs::read_to_string(new_etc.join("hostname")).unwrap(),
        "edited-locally\n"
    );
    assert_eq!(
        fs::read_to_string(new_etc.join("apt-ostree-image-version")).unwrap(),
        "12.2\n",
        "a default the administrator did not touch follows the image"
    );
}

#[test]
fn check_preview_and_download_only() {
    let (s, http) = served_v1();
    let base = base_repo();
    let before = s.deployments();
    let (rc, out, err) = code(s.cli().args(["upgrade", "--check"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains(&base.v2), "{out}");
    let status = s.status();
    assert_eq!(status["cachedUpdate"]["checksum"], base.v2.as_str());
    assert_eq!(status["cachedUpdate"]["version"], "12.2");
    assert!(stdout(s.cli().arg("status")).contains("AvailableUpdate: 12.2"));
    assert_eq!(s.deployments(), before, "--check changed the deployments");

    let (rc, out, _) = code(s.cli().args(["upgrade", "--preview"]));
    assert_eq!(rc, 0);
    assert!(out.contains("AvailableUpdate"), "{out}");
    assert!(out.contains("Upgraded:\n  demo-base 1.0 -> 1.1"), "{out}");
    assert_eq!(s.deployments(), before);

    // --download-only, then deploy with the remote gone.
    let (rc, out, err) = code(s.cli().args(["upgrade", "--download-only"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(s.deployments(), before);
    drop(http);
    s.set_remote("http://127.0.0.1:9/", &[]);
    // The commit is local now: a rebase to the local copy needs no network.
    let (rc, out, err) = code(s.cli().args(["deploy", &base.v2]));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(s.deployments()[0].0, base.v2);
}

#[test]
fn rollback_makes_the_previous_deployment_the_default() {
    let s = TestSysroot::with_two_deployments();
    let base = base_repo();
    let (rc, out, err) = code(s.cli().arg("rollback"));
    assert_eq!(rc, 0, "{out}{err}");
    let d = s.deployments();
    assert_eq!(
        (d[0].0.as_str(), d[1].0.as_str()),
        (base.v1.as_str(), base.v2.as_str())
    );
    let text = stdout(s.cli().arg("status"));
    assert!(
        text.find("Version: 12.1") < text.find("Version: 12.2"),
        "{text}"
    );
    // Back again.
    run(s.cli().arg("rollback"));
    assert_eq!(s.deployments()[0].0, base.v2);
    // With one deployment there is nothing to roll back to.
    let one = TestSysroot::at_v1();
    let (rc, _, err) = code(one.cli().arg("rollback"));
    assert_eq!(rc, 1);
    assert!(err.contains("no rollback deployment"), "{err}");
}

#[test]
fn kernel_arguments_round_trip_and_bad_ones_change_nothing() {
    let s = TestSysroot::with_two_deployments();
    assert_eq!(stdout(s.cli().arg("kargs")).trim(), "");
    run(s
        .cli()
        .args(["kargs", "--append", "quiet", "--append", "console=ttyS0"]));
    assert_eq!(stdout(s.cli().arg("kargs")).trim(), "quiet console=ttyS0");
    let status = s.status();
    assert_eq!(
        status["deployments"][0]["kernelArguments"],
        serde_json::json!(["quiet", "console=ttyS0"])
    );
    // A kargs change is a new deployment; the previous one stays for rollback.
    assert_eq!(
        status["deployments"][1]["kernelArguments"],
        serde_json::json!([])
    );
    run(s.cli().args([
        "kargs",
        "--replace",
        "console=ttyS0=tty1",
        "--delete",
        "quiet",
    ]));
    assert_eq!(stdout(s.cli().arg("kargs")).trim(), "console=tty1");

    let before = s.deployments();
    for bad in [
        vec!["--append", "a\nb"],
        vec!["--append", ""],
        vec!["--delete", "absent"],
        vec!["--replace", "absent=1"],
        vec!["--append", "ostree=/x"],
    ] {
        let (rc, _, err) = code(s.cli().arg("kargs").args(&bad));
        assert_eq!(rc, 1, "{bad:?}");
        assert!(err.contains("invalid kernel argument"), "{bad:?}: {err}");
    }
    assert_eq!(s.deployments(), before);
    // NUL cannot pass a command line; send it over the wire instead.
    let d = ActivatedDaemon::start(&s.path, 30);
    let out = python_varlink(&[
        "call",
        &format!(
            "{}/org.aptostree.Sysroot.ChangeKernelArguments",
            d.address()
        ),
        r#"{"append": ["a\u0000b"]}"#,
    ]);
    assert!(out.contains("InvalidKernelArgument"), "{out}");
    drop(d);
    assert_eq!(s.deployments(), before);
}

/// Regressions: --append duplicated an argument already there, and a quoted
/// value was read back split on its space.
#[test]
fn kargs_quote_dedupe_if_variants_and_the_editor() {
    let s = TestSysroot::with_two_deployments();
    run(s
        .cli()
        .args(["kargs", "--append", "quiet", "--append", r#"foo="a b""#]));
    assert_eq!(
        s.status()["deployments"][0]["kernelArguments"],
        serde_json::json!(["quiet", r#"foo="a b""#])
    );
    let before = s.deployments();
    let (rc, out, err) = code(
        s.cli()
            .args(["kargs", "--append", "quiet", "--unchanged-exit-77"]),
    );
    assert_eq!(rc, 77, "{out}{err}");
    let (rc, out, err) = code(s.cli().args([
        "kargs",
        "--append-if-missing",
        "foo=other",
        "--delete-if-present",
        "absent",
        "--unchanged-exit-77",
    ]));
    assert_eq!(rc, 77, "{out}{err}");
    assert_eq!(s.deployments(), before, "no-op changes wrote nothing");
    run(s.cli().args([
        "kargs",
        "--append-if-missing",
        "console=ttyS0",
        "--delete-if-present",
        "quiet",
    ]));
    assert_eq!(
        stdout(s.cli().arg("kargs")).trim(),
        r#"foo="a b" console=ttyS0"#
    );
    // --editor: whatever the editor saves is one change set.
    let (rc, out, err) = code(s.cli().args(["kargs", "--editor"]).env(
        "VISUAL",
        "sed -i -e s/console=ttyS0/console=tty1/ -e '$s/$/ splash/'",
    ));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(
        stdout(s.cli().arg("kargs")).trim(),
        r#"foo="a b" console=tty1 splash"#
    );
    let before = s.deployments();
    let (rc, out, _) = code(
        s.cli()
            .args(["kargs", "--editor", "--unchanged-exit-77"])
            .env("VISUAL", "true"),
    );
    assert_eq!(rc, 77, "{out}");
    let (rc, _, err) = code(s.cli().args(["kargs", "--editor"]).env("VISUAL", "false"));
    assert_eq!(rc, 1);
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(s.deployments(), before);
}

#[test]
fn deploy_finds_versions_and_refuses_downgrades_unless_allowed() {
    let s = TestSysroot::at_v1();
    let http = HttpServer::start(&base_repo().path, None);
    s.set_remote(&http.url(), &[]);
    let base = base_repo();
    run(s.cli().arg("upgrade"));
    assert_eq!(s.deployments()[0].0, base.v2);
    let before = s.deployments();
    let (rc, _, err) = code(s.cli().args(["deploy", "12.1"]));
    assert_eq!(rc, 1);
    assert!(err.contains("--allow-downgrade"), "{err}");
    assert_eq!(s.deployments(), before);
    let (rc, _, err) = code(s.cli().args(["deploy", "9.9"]));
    assert_eq!(rc, 1);
    assert!(err.contains("not found"), "{err}");
    // rpm-ostree's grammar: a checksum prefix is a version (one such as
    // 202401 must not be taken for a commit), revision= takes a whole one.
    let (rc, _, err) = code(s.cli().args(["deploy", &base.v1[..8], "--allow-downgrade"]));
    assert_eq!(rc, 1);
    assert!(err.contains("no commit with that version"), "{err}");
    let (rc, _, err) = code(s.cli().args(["deploy", "revision=12.1"]));
    assert_eq!(rc, 1);
    assert!(err.contains("full commit checksum"), "{err}");
    let (rc, _, err) = code(s.cli().args(["deploy", &"0".repeat(64)]));
    assert_eq!(rc, 1, "{err}");
    assert!(
        err.contains("not found"),
        "the remote has no such commit: {err}"
    );
    assert_eq!(s.deployments(), before);

    let (rc, out, err) = code(
        s.cli()
            .args(["deploy", "version=12.1", "--allow-downgrade"]),
    );
    assert_eq!(rc, 0, "{out}{err}");
    let status = s.status();
    assert_eq!(status["deployments"][0]["checksum"], base.v1.as_str());
    assert_eq!(status["deployments"][0]["pinnedRevision"], base.v1.as_str());
    let revision = format!("revision={}", base.v2);
    let (rc, out, err) = code(s.cli().args(["deploy", &revision]));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(s.status()["deployments"][0]["checksum"], base.v2.as_str());
    run(s.cli().args(["deploy", "12.1", "--allow-downgrade"]));
    // upgrade unpins and moves to the newest again.
    run(s.cli().arg("upgrade"));
    let status = s.status();
    assert_eq!(status["deployments"][0]["checksum"], base.v2.as_str());
    assert!(status["deployments"][0]["pinnedRevision"].is_null());

    // A remote that does not answer is not a missing revision.
    drop(http);
    let (rc, _, err) = code(s.cli().args(["deploy", &"1".repeat(64)]));
    assert_eq!(rc, 1, "{err}");
    assert!(
        err.contains("fetching from") && !err.contains("not found"),
        "{err}"
    );
}

#[test]
fn rebase_switches_branch_and_db_diff_shows_the_package_changes() {
    let (s, _http) = served_v1();
    let base = base_repo();
    let before = s.deployments();
    for (bad, what) in [
        ("nope:x", "no remote"),
        ("demo:does/not/exist", "fetching"),
        ("demo:bad ref", "invalid refspec"),
    ] {
        let (rc, _, err) = code(s.cli().args(["rebase", bad]));
        assert_eq!(rc, 1, "{bad}");
        assert!(err.to_lowercase().contains(what), "{bad}: {err}");
    }
    assert_eq!(s.deployments(), before);

    run(s.cli().args(["rebase", &format!("{REMOTE}:{NEXT_REF}")]));
    let status = s.status();
    assert_eq!(status["deployments"][0]["checksum"], base.next.as_str());
    assert_eq!(
        status["deployments"][0]["refspec"],
        format!("{REMOTE}:{NEXT_REF}")
    );

    let diff = stdout(s.cli().args(["db", "diff", "1", "0"]));
    assert!(diff.contains("Upgraded:\n  base-files"), "{diff}");
    assert!(diff.contains("-> 99.0"), "{diff}");
    assert!(diff.contains("Removed:\n  mawk"), "{diff}");
    assert!(
        diff.contains("Added:\n  apt-ostree-demo-extra 1.0"),
        "{diff}"
    );
    // Over the wire, typed.
    let d = ActivatedDaemon::start(&s.path, 30);
    let reply: Value = serde_json::from_str(&python_varlink(&[
        "call",
        &format!("{}/org.aptostree.Sysroot.DiffPackages", d.address()),
        &format!(r#"{{"from": "{}", "to": "{}"}}"#, base.v1, base.next),
    ]))
    .unwrap();
    let added: Vec<&str> = reply["diff"]["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["apt-ostree-demo-extra"]);
    assert_eq!(reply["diff"]["removed"][0]["name"], "mawk");
    assert_eq!(reply["diff"]["upgraded"][0]["toVersion"], "99.0");
    let list = stdout(s.cli().args(["db", "list", &base.next]));
    let rows = db_rows(&list);
    assert!(
        rows.contains(&("apt-ostree-demo-extra".into(), "1.0".into(), "all".into())),
        "{list}"
    );
    assert!(!rows.iter().any(|r| r.0 == "mawk"), "{list}");
    // Columns line up: every version starts in the same column.
    let starts: std::collections::BTreeSet<usize> = list
        .lines()
        .skip(1)
        .map(|l| {
            l.find(&format!(" {} ", l.split_whitespace().nth(1).unwrap()))
                .unwrap()
        })
        .collect();
    assert_eq!(starts.len(), 1, "{list}");
    // Package names filter (prefixes or globs), and revisions and names mix.
    let filtered = stdout(
        s.cli()
            .args(["db", "list", "apt-ostree-demo", &base.next, "base-fi*"]),
    );
    let names: Vec<String> = db_rows(&filtered).into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["apt-ostree-demo-extra", "base-files"], "{filtered}");
    // db version: the commit, its version and its dpkg database.
    let version = stdout(s.cli().args(["db", "version", &base.next]));
    assert!(
        version.starts_with(&format!("ostree commit: {} (13.0)\n", base.next)),
        "{version}"
    );
    assert!(version.contains("  dpkg database: "), "{version}");
    let (rc, _, err) = code(s.cli().args(["db", "version", "no-such-rev"]));
    assert_eq!(rc, 1);
    assert!(err.contains("no-such-rev"), "{err}");
}

#[test]
fn cleanup_removes_the_rollback_deployment() {
    let s = TestSysroot::with_two_deployments();
    let base = base_repo();
    let (rc, out, err) = code(s.cli().args(["cleanup", "-r"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(
        s.deployments()
            .iter()
            .map(|d| d.0.clone())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&base.v2)
    );
    let (rc, out, _) = code(s.cli().args(["cleanup", "-b", "-m"]));
    assert_eq!(rc, 0, "{out}");
    s.assert_fsck_clean();
    let (rc, out, err) = code(s.cli().args(["cleanup", "-p"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("Nothing to clean up"), "{out}");
}

/// A pinned deployment survives what would remove it (a cleanup, a new
/// deployment); nonsense names change nothing, through the CLI and through a
/// client we did not write.
#[test]
fn pin_keeps_a_deployment_through_cleanup_and_new_deployments() {
    let s = TestSysroot::with_two_deployments();
    let base = base_repo();
    let (rc, out, err) = code(s.cli().args(["pin", "1"]));
    assert_eq!(rc, 0, "{out}{err}");
    let status = s.status();
    let d = &status["deployments"];
    assert_eq!(
        (d[0]["pinned"].clone(), d[1]["pinned"].clone()),
        (false.into(), true.into())
    );
    assert!(stdout(s.cli().arg("status")).contains("pinned"));
    let (rc, out, _) = code(s.cli().args(["pin", "1"]));
    assert_eq!(rc, 0);
    assert!(out.contains("already pinned"), "{out}");
    // Neither a cleanup nor a new deployment removes it.
    run(s.cli().args(["cleanup", "-r"]));
    run(s.cli().args(["kargs", "--append=pin.test=1"]));
    let after = s.deployments();
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(after[2].0, base.v1);
    // Unpinned by id, it goes with the next cleanup.
    let id = s.status()["deployments"][2]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (rc, out, err) = code(s.cli().args(["pin", "--unpin", &id]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("unpinned"), "{out}");
    run(s.cli().args(["cleanup", "-r"]));
    assert!(s.deployments().iter().all(|d| d.0 != base.v1));
    // Nonsense: an index past the end, an id of nothing, a missing argument.
    let before = s.status();
    let (rc, _, err) = code(s.cli().args(["pin", "7"]));
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("no deployment 7"), "{err}");
    let (rc, _, err) = code(s.cli().args(["pin", "debian-0000.0"]));
    assert_eq!(rc, 1, "{err}");
    assert!(
        err.contains("NoDeployment") || err.contains("no deployment"),
        "{err}"
    );
    let (rc, _, _) = code(s.cli().arg("pin"));
    assert_eq!(rc, 2);
    let d = ActivatedDaemon::start(&s.path, 60);
    let address = format!("{}/org.aptostree.Sysroot.PinDeployment", d.address());
    for params in [r#"{"id": ""}"#, r#"{"id": "x\u0001/../y"}"#] {
        let reply = python_varlink(&["call", &address, params]);
        assert!(reply.contains("NoDeployment"), "{params}: {reply}");
    }
    let reply = python_varlink(&["call", &address, r#"{"id": 3}"#]);
    assert!(reply.contains("InvalidParameter"), "{reply}");
    assert_eq!(s.status(), before);
    s.assert_fsck_clean();
}

#[test]
fn unsigned_commits_are_refused_on_a_verifying_remote() {
    let s = TestSysroot::at_v1();
    let http = HttpServer::start(&base_repo().path, None);
    s.set_remote(&http.url(), &["--set=gpg-verify=true"]);
    let before = s.deployments();
    let (rc, _, err) = code(s.cli().arg("upgrade"));
    assert_eq!(rc, 1);
    assert!(err.contains("signature check failed"), "{err}");
    assert_eq!(s.deployments(), before);
}

#[test]
fn a_remote_that_is_down_fails_quickly_and_changes_nothing() {
    let s = TestSysroot::at_v1();
    s.set_remote("http://127.0.0.1:9/repo", &[]);
    let before = s.deployments();
    let t = Instant::now();
    let (rc, _, err) = code(s.cli().arg("upgrade"));
    assert_eq!(rc, 1);
    assert!(err.contains("fetching from demo failed"), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(s.deployments(), before);
    s.assert_fsck_clean();
}

/// Start `apt-ostree upgrade` against a daemon and return once its progress
/// says the pull is under way.
fn start_slow_upgrade(addr: &str) -> (std::process::Child, BufReader<std::process::ChildStderr>) {
    let (child, err, _) =
        start_upgrade_until_pulling(Command::new(cli()).args(["--address", addr]));
    (child, err)
}

/// Start `CMD upgrade` and return once its progress says the pull is under
/// way, with what it printed so far.
#[allow(clippy::zombie_processes)] // the caller waits for the child it gets back
fn start_upgrade_until_pulling(
    cmd: &mut Command,
) -> (
    std::process::Child,
    BufReader<std::process::ChildStderr>,
    String,
) {
    let mut child = cmd
        .arg("upgrade")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 {
            let status = child.wait().unwrap();
            panic!("upgrade ended early: {status}: {seen}");
        }
        seen.push_str(&line);
        if line.starts_with("Pulling") {
            return (child, err, seen);
        }
    }
}

#[test]
fn one_transaction_at_a_time_status_stays_fast_and_cancel_stops_it() {
    // Trickle: the pull takes minutes unless cancelled.
    let (s, http) = served_v1_at(Some(2000));
    let before = s.ostree_status();
    let d = ActivatedDaemon::start(&s.path, 60);
    let addr = d.address();
    let (mut upgrade, mut upgrade_err) = start_slow_upgrade(&addr);

    // A second, different mutating call gets the typed error naming the first.
    let (rc, _, err) = code(Command::new(cli()).args(["--address", &addr, "rollback"]));
    assert_eq!(rc, 1);
    assert!(
        err.contains("is already running") && err.contains("upgrade"),
        "{err}"
    );

    // Status keeps answering, quickly, and shows the transaction.
    let t = Instant::now();
    let status: Value = serde_json::from_str(&stdout(Command::new(cli()).args([
        "--address",
        &addr,
        "status",
        "--json",
    ])))
    .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "status took {:?}",
        t.elapsed()
    );
    assert_eq!(status["transaction"]["method"], "Upgrade");

    // Watch from a third client sees the same transaction's events (the log
    // is replayed from the start), and then its end.
    let mut watch = Command::new("python3")
        .args(["-u", "-m", "varlink.cli", "call", "--more"])
        .arg(format!("{addr}/org.aptostree.Sysroot.Watch"))
        .arg("{}")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let watched = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let collector = {
        let watched = watched.clone();
        let mut out = watch.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
                if n == 0 {
                    break;
                }
                watched
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), || watched
            .lock()
            .unwrap()
            .contains("Pulling demo:")),
        "the watcher saw no progress: {}",
        watched.lock().unwrap()
    );

    // Cancel: the upgrade ends with "cancelled" and nothing changed.
    let (rc, _, err) = code(Command::new(cli()).args(["--address", &addr, "cancel"]));
    assert_eq!(rc, 0, "{err}");
    let status = upgrade.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut upgrade_err, &mut rest).unwrap();
    assert_eq!(status.code(), Some(1), "{rest}");
    assert!(rest.contains("cancelled"), "{rest}");
    let watch_out = watch.wait_with_output().unwrap();
    collector.join().unwrap();
    let watched = watched.lock().unwrap().clone() + &String::from_utf8_lossy(&watch_out.stderr);
    assert!(watched.contains("taskBegin"), "{watched}");
    assert!(watched.contains("Cancelled"), "{watched}");

    assert_eq!(s.ostree_status(), before);
    s.assert_fsck_clean();
    // The next transaction runs normally.
    drop(http);
    let fast = HttpServer::start(&base_repo().path, None);
    s.set_remote(&fast.url(), &[]);
    let (rc, out, err) = code(Command::new(cli()).args(["--address", &addr, "upgrade"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(s.deployments()[0].0, base_repo().v2);
}

#[test]
fn identical_calls_attach_and_a_disconnected_client_leaves_the_work_done() {
    let (s, _http) = served_v1_at(Some(200_000));
    let d = ActivatedDaemon::start(&s.path, 60);
    let addr = d.address();
    let (mut first, _err) = start_slow_upgrade(&addr);
    // The same request attaches to the running transaction instead of failing.
    let second = Command::new(cli())
        .args(["--address", &addr, "upgrade"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first client goes away mid-stream.
    first.kill().unwrap();
    first.wait().unwrap();
    let out = second.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    // It followed the first transaction's pull to its end: a call that came
    // too late would start its own and find nothing to do.
    assert!(
        stderr.contains("Pulling") && !stdout.contains("No upgrade available"),
        "the second call did not attach: {stdout}{stderr}"
    );
    assert!(stdout.contains("Deployed 12.2"), "{stdout}{stderr}");
    assert_eq!(s.deployments()[0].0, base_repo().v2);
    s.assert_fsck_clean();
}

#[test]
fn sigkill_at_any_point_leaves_old_or_complete_new_deployments() {
    let base = base_repo();
    // Kill points: task titles seen in the progress stream, and delays after them.
    for (marker, delay_ms) in [
        ("Pulling", 0),
        ("Pulling", 30),
        ("Writing deployment", 0),
        ("Writing deployment", 5),
        ("Writing deployment", 20),
        ("Writing deployment", 60),
    ] {
        let (s, _http) = served_v1();
        let old = s.deployments();
        let mut d = ActivatedDaemon::start(&s.path, 60);
        let mut child = Command::new(cli())
            .args(["--address", &d.address(), "upgrade"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while err.read_line(&mut line).unwrap() > 0 && !line.starts_with(marker) {
            line.clear();
        }
        assert!(
            line.starts_with(marker),
            "the upgrade ended before {marker:?}: the kill point was never reached"
        );
        std::thread::sleep(Duration::from_millis(delay_ms));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(d.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        d.wait_exit(Duration::from_secs(5));
        let _ = child.wait();
        let now = s.deployments();
        let complete_new = now.len() == 2 && now[0].0 == base.v2 && now[1] == old[0];
        assert!(
            now == old || complete_new,
            "{marker}+{delay_ms}ms: {now:?} (was {old:?})"
        );
        s.assert_fsck_clean();
        // The next transaction succeeds and cleans up whatever was left.
        let (rc, out, e) = code(s.cli().arg("upgrade"));
        assert_eq!(rc, 0, "{marker}+{delay_ms}ms: {out}{e}");
        assert_eq!(s.deployments()[0].0, base.v2);
        s.assert_fsck_clean();
    }
}

#[test]
fn automatic_update_policy_check_then_stage() {
    let (s, _http) = served_v1();
    let base = base_repo();
    let conf = tempfile::NamedTempFile::new().unwrap();
    let start = |policy: &str| {
        fs::write(
            conf.path(),
            format!("[Daemon]\nAutomaticUpdatePolicy={policy}\n"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sock");
        let child = Command::new(daemon())
            .arg("--address")
            .arg(format!("unix:{}", sock.display()))
            .arg("--sysroot")
            .arg(&s.path)
            .arg("--config")
            .arg(conf.path())
            .env("OSTREE_SYSROOT_DEBUG", "mutable-deployments")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(wait_until(Duration::from_secs(10), || is_listening(&sock)));
        (child, dir, format!("unix:{}", sock.display()))
    };
    let trigger = |addr: &str| {
        code(Command::new(cli()).args([
            "--address",
            addr,
            "upgrade",
            "--trigger-automatic-update-policy",
        ]))
    };

    let (mut daemon, _dir, addr) = start("none");
    let (rc, out, _) = trigger(&addr);
    assert_eq!(rc, 0);
    assert!(out.contains("Automatic updates are off"), "{out}");
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    let (mut daemon, _dir, addr) = start("check");
    assert_eq!(trigger(&addr).0, 0);
    let status: Value = serde_json::from_str(&stdout(Command::new(cli()).args([
        "--address",
        &addr,
        "status",
        "--json",
    ])))
    .unwrap();
    assert_eq!(status["cachedUpdate"]["checksum"], base.v2.as_str());
    assert_eq!(s.deployments().len(), 1, "check must not deploy");
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    let (mut daemon, _dir, addr) = start("stage");
    assert_eq!(trigger(&addr).0, 0);
    assert_eq!(s.deployments()[0].0, base.v2);
    let status: Value = serde_json::from_str(&stdout(Command::new(cli()).args([
        "--address",
        &addr,
        "status",
        "--json",
    ])))
    .unwrap();
    assert!(
        status.get("cachedUpdate").is_none() || status["cachedUpdate"].is_null(),
        "{status}"
    );
    daemon.kill().unwrap();
    daemon.wait().unwrap();
}

#[test]
fn on_a_booted_system_upgrade_stages_and_finalize_keeps_later_etc_edits() {
    let (s, _http) = served_v1();
    let base = base_repo();
    let (v1, serial) = s.deployments()[0].clone();
    let bindir = std::path::Path::new(cli()).parent().unwrap().to_path_buf();
    let enter = |deployment: &std::path::Path, script: &str| {
        let mut c = Command::new(fixtures().join("enter-deployment.sh"));
        c.arg(&s.path)
            .arg(deployment)
            .arg(&bindir)
            .args(["/bin/sh", "-ec", script])
            .env("OSTREE_SYSROOT_DEBUG", "mutable-deployments");
        c
    };
    // Boot 12.1, upgrade: the new deployment is staged, not written.
    let out = stdout(&mut enter(
        &s.deployment_dir(&v1, serial),
        "/run/bin/apt-ostree --sysroot / upgrade >&2
         /run/bin/apt-ostree --sysroot / status --json
         echo 'edited after the upgrade' > /etc/motd.local
         ostree admin finalize-staged >&2",
    ));
    let staged: Value = serde_json::from_str(&out).unwrap();
    let d = &staged["deployments"];
    assert_eq!(d[0]["staged"], true, "{staged}");
    assert_eq!(d[0]["checksum"], base.v2.as_str());
    assert_eq!(d[1]["booted"], true);
    // "Reboot" into the new default: it is booted, and the late /etc edit survived.
    let after = s.deployments();
    assert_eq!(after[0].0, base.v2);
    let out = stdout(&mut enter(
        &s.deployment_dir(&after[0].0, after[0].1),
        "cat /etc/motd.local >&2; /run/bin/apt-ostree --sysroot / status --json",
    ));
    let booted: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(booted["deployments"][0]["booted"], true);
    assert_eq!(booted["deployments"][0]["staged"], false);
    let motd = fs::read_to_string(
        s.deployment_dir(&after[0].0, after[0].1)
            .join("etc/motd.local"),
    )
    .unwrap();
    assert_eq!(motd, "edited after the upgrade\n");
    // Roll back while booted in the new one: the old one becomes the default.
    let out = stdout(&mut enter(
        &s.deployment_dir(&after[0].0, after[0].1),
        "/run/bin/apt-ostree --sysroot / rollback >&2; /run/bin/apt-ostree --sysroot / status --json",
    ));
    let rolled: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rolled["deployments"][0]["checksum"], base.v1.as_str());
    assert_eq!(rolled["deployments"][1]["booted"], true);
}

/// Run `commands` (apt-ostree's arguments, one string each) in `s`'s
/// first deployment as if it were booted, then return `status --json`.
fn status_after_booted_commands(s: &TestSysroot, commands: &[&str]) -> Value {
    let (booted, serial) = s.deployments()[0].clone();
    let bindir = std::path::Path::new(cli()).parent().unwrap().to_path_buf();
    let mut script: String = commands
        .iter()
        .map(|c| format!("/run/bin/apt-ostree --sysroot / {c} >&2\n"))
        .collect();
    script.push_str("/run/bin/apt-ostree --sysroot / status --json");
    let out = stdout(
        Command::new(fixtures().join("enter-deployment.sh"))
            .arg(&s.path)
            .arg(s.deployment_dir(&booted, serial))
            .arg(&bindir)
            .args(["/bin/sh", "-ec", &script])
            .env("OSTREE_SYSROOT_DEBUG", "mutable-deployments"),
    );
    serde_json::from_str(&out).unwrap()
}

/// Regression (seen on a real boot): a deployment staged without a change of
/// kernel arguments records none, and `kargs --append` on top of it wrote
/// only the new argument, dropping root= and console= from the next boot.
#[test]
fn on_a_booted_system_kargs_on_top_of_a_staged_change_keep_the_booted_arguments() {
    let (s, _http) = served_v1();
    run(s.cli().args(["kargs", "--append", "console=ttyS0"]));
    let status = status_after_booted_commands(&s, &["upgrade", "kargs --append quiet"]);
    let pending = &status["deployments"][0];
    assert_eq!(pending["staged"], true, "{status}");
    assert_eq!(
        pending["kernelArguments"],
        serde_json::json!(["console=ttyS0", "quiet"]),
        "{status}"
    );
    assert_eq!(pending["checksum"], base_repo().v2.as_str());
}

/// Regression (seen on a real boot): a change staged on top of `kargs`
/// took the booted deployment's arguments, dropping the ones just staged.
#[test]
fn on_a_booted_system_a_change_after_kargs_keeps_the_staged_arguments() {
    let (s, _http) = served_v1();
    let status = status_after_booted_commands(&s, &["kargs --append quiet", "upgrade"]);
    let pending = &status["deployments"][0];
    assert_eq!(pending["staged"], true, "{status}");
    assert_eq!(pending["checksum"], base_repo().v2.as_str());
    assert!(
        pending["kernelArguments"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("quiet")),
        "{status}"
    );
}

/// Interrupt a running `apt-ostree upgrade` with SIGINT, as Ctrl-C does.
fn interrupt_upgrade(cmd: &mut Command) -> (Option<i32>, String) {
    let (mut child, mut err, seen) = start_upgrade_until_pulling(cmd);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let status = child.wait().unwrap();
    (status.code(), seen + &rest)
}

#[test]
fn ctrl_c_in_the_cli_cancels_the_transaction() {
    let (s, _http) = served_v1_at(Some(2000));
    let before = s.deployments();
    // Against the system daemon: the CLI cancels over a second connection.
    let d = ActivatedDaemon::start(&s.path, 60);
    let (code, err) = interrupt_upgrade(Command::new(cli()).args(["--address", &d.address()]));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("Cancelling") && err.contains("cancelled"),
        "{err}"
    );
    assert_eq!(s.deployments(), before);
    drop(d);
    // With a private daemon (--sysroot): it is told to stop, and stops cleanly.
    let (code, err) = interrupt_upgrade(&mut s.cli());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cancelled"), "{err}");
    assert_eq!(s.deployments(), before);
    s.assert_fsck_clean();
}

#[test]
fn the_sysupdate_style_interface_lists_checks_updates_and_vacuums() {
    let (s, _http) = served_v1();
    let base = base_repo();
    let d = ActivatedDaemon::start(&s.path, 60);
    let call = |method: &str, params: &str| -> String {
        python_varlink(&[
            "call",
            &format!("{}/org.aptostree.Update.{method}", d.address()),
            params,
        ])
    };
    let versions = || -> Vec<(String, bool, bool, bool)> {
        let v: Value = serde_json::from_str(&call("ListVersions", "{}")).unwrap();
        v["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["version"].as_str().unwrap().to_string(),
                    v["current"].as_bool().unwrap(),
                    v["installed"].as_bool().unwrap(),
                    v["newer"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(versions(), [("12.1".to_string(), true, true, false)]);

    let newer: Value = serde_json::from_str(&call("CheckNew", "{}")).unwrap();
    assert_eq!(newer["newer"]["version"], "12.2");
    assert_eq!(newer["newer"]["checksum"], base.v2.as_str());
    assert_eq!(
        versions(),
        [
            ("12.2".to_string(), false, false, true),
            ("12.1".to_string(), true, true, false)
        ]
    );

    let updated: Value = serde_json::from_str(&call("Update", "{}")).unwrap();
    assert_eq!(updated["version"], "12.2");
    assert_eq!(updated["rebootRequired"], false, "not the running system");
    assert_eq!(
        versions(),
        [
            ("12.2".to_string(), true, true, false),
            ("12.1".to_string(), false, true, false)
        ]
    );
    // Naming an older version is the explicit request to go back.
    let back: Value = serde_json::from_str(&call("Update", r#"{"version": "12.1"}"#)).unwrap();
    assert_eq!(back["version"], "12.1");
    assert_eq!(s.deployments()[0].0, base.v1);

    // Bad input: typed errors, nothing changes.
    let before = s.deployments();
    assert!(
        call("Update", r#"{"version": "9.9"}"#).contains("org.aptostree.Sysroot.RevisionNotFound")
    );
    assert!(call("Update", r#"{"version": 5}"#).contains("org.varlink.service.InvalidParameter"));
    assert_eq!(s.deployments(), before);

    let vacuumed: Value = serde_json::from_str(&call("Vacuum", "{}")).unwrap();
    assert!(
        vacuumed["message"].as_str().unwrap().contains("removed"),
        "{vacuumed}"
    );
    assert_eq!(s.deployments().len(), 1);
    assert!(
        versions().iter().all(|v| v.0 != "12.2" || !v.2),
        "12.2 is no longer installed"
    );
    s.assert_fsck_clean();
}

/// A sysroot booted into its previous deployment, as GRUB left it after a
/// fallback: `vars` in GRUB's block (`{new}` stands for the default's id).
/// Returns it, the default's and the previous deployment's checksums, and
/// GRUB's block.
fn booted_after_fallback(vars: &[&str]) -> (TestSysroot, String, String, std::path::PathBuf) {
    let s = TestSysroot::with_two_deployments();
    let (new, new_serial) = s.deployments()[0].clone();
    let old = s.deployments()[1].0.clone();
    let grubenv = s.path.join("boot/grub/grubenv");
    fs::create_dir_all(grubenv.parent().unwrap()).unwrap();
    let vars: Vec<String> = vars
        .iter()
        .map(|v| v.replace("{new}", &format!("{new}.{new_serial}")))
        .collect();
    run(Command::new("grub-editenv").arg(&grubenv).arg("create"));
    run(Command::new("grub-editenv")
        .arg(&grubenv)
        .arg("set")
        .args(&vars));
    (s, new, old, grubenv)
}

/// `apt-ostreed --boot check`, as apt-ostree-boot-check.service runs it,
/// with the deployment `booted` booted.
fn boot_check(s: &TestSysroot, booted: &str) {
    let (old, old_serial) = s
        .deployments()
        .into_iter()
        .find(|d| d.0 == booted)
        .expect("the booted deployment");
    let bindir = std::path::Path::new(cli()).parent().unwrap().to_path_buf();
    run(Command::new(fixtures().join("enter-deployment.sh"))
        .arg(&s.path)
        .arg(s.deployment_dir(&old, old_serial))
        .arg(&bindir)
        .args(["/run/bin/apt-ostreed", "--boot", "check"])
        .env("OSTREE_SYSROOT_DEBUG", "mutable-deployments"));
}

/// Early in a boot that GRUB fell back to: the booted (previous) deployment
/// is the default again, the failure is recorded, GRUB's block is cleared;
/// a second run, or a failed id that names no deployment, changes no order.
#[test]
fn the_boot_check_after_a_fallback_makes_the_booted_deployment_the_default() {
    let (s, new, old, grubenv) =
        booted_after_fallback(&["aot_failed={new}", "aot_id={new}", "aot_left=0"]);
    let editenv = |args: &[&str]| stdout(Command::new("grub-editenv").arg(&grubenv).args(args));
    let check = || boot_check(&s, &old);
    check();
    let order: Vec<String> = s.deployments().into_iter().map(|d| d.0).collect();
    assert_eq!(
        order,
        [old.clone(), new.clone()],
        "the booted deployment is not the default"
    );
    let status = s.status();
    let failed_one = &status["deployments"][1];
    assert_eq!(failed_one["bootAssessment"], "failed", "{status}");
    assert!(failed_one["bootFailedAt"].as_i64().unwrap() > 0, "{status}");
    let env = editenv(&["list"]);
    assert!(
        !env.contains("aot_failed") && !env.contains("aot_id"),
        "{env}"
    );
    // Once is enough: nothing left to act on.
    check();
    assert_eq!(
        s.deployments().into_iter().map(|d| d.0).collect::<Vec<_>>(),
        order
    );
    // A fallback from a deployment that is gone: recorded, order kept.
    editenv(&["set", "aot_failed=ffff.0"]);
    check();
    assert_eq!(
        s.deployments().into_iter().map(|d| d.0).collect::<Vec<_>>(),
        order
    );
    assert!(!editenv(&["list"]).contains("aot_failed"));
}

/// GRUB's fallback entry ran: the default's kernel did not start (Secure
/// Boot refused it). The check rolls back as for used-up tries and records
/// why, and status says it.
#[test]
fn a_default_whose_kernel_did_not_start_is_failed_for_that_reason() {
    let (s, new, old, grubenv) = booted_after_fallback(&[
        "aot_failed={new}",
        "aot_refused={new}",
        "aot_id={new}",
        "aot_left=1",
    ]);
    boot_check(&s, &old);
    let order: Vec<String> = s.deployments().into_iter().map(|d| d.0).collect();
    assert_eq!(order, [old, new]);
    let status = s.status();
    assert_eq!(
        status["deployments"][1]["bootFailure"], "kernel-not-started",
        "{status}"
    );
    let (rc, out, err) = code(s.cli().arg("status"));
    assert_eq!(rc, 0, "{err}");
    assert!(
        out.contains("Boot: failed: its kernel did not start (refused by Secure Boot"),
        "{out}"
    );
    let env = stdout(Command::new("grub-editenv").arg(&grubenv).arg("list"));
    assert!(!env.contains("aot_refused"), "{env}");
}

/// `bootloader status` and `bootloader update` work on the running system's
/// ESP only: on another sysroot both say so (NotSupported) and nothing
/// changes. (The VM suite runs them on a booted machine.)
#[test]
fn the_bootloader_commands_refuse_a_sysroot_that_is_not_running() {
    let s = TestSysroot::with_two_deployments();
    let before = s.deployments();
    for args in [&["bootloader", "status"][..], &["bootloader", "update"]] {
        let (rc, out, err) = code(s.cli().args(args));
        assert_eq!(rc, 1, "{args:?}: {out}{err}");
        assert!(err.contains("is not the running system"), "{args:?}: {err}");
        assert!(
            err.contains("NotSupported") || err.contains("not supported"),
            "{args:?}: {err}"
        );
    }
    let (rc, _, err) = code(s.cli().args(["bootloader", "status", "--bogus"]));
    assert_eq!(rc, 2, "{err}");
    // The same through a client we did not write: typed errors.
    let d = ActivatedDaemon::start(&s.path, 60);
    let call = |method: &str, params: &str| {
        python_varlink(&[
            "call",
            &format!("{}/org.aptostree.Sysroot.{method}", d.address()),
            params,
        ])
    };
    let reply = call("GetBootloaderStatus", "{}");
    assert!(reply.contains("NotSupported"), "{reply}");
    let reply = call(
        "UpdateBootloader",
        r#"{"allowInteractiveAuthentication": "yes"}"#,
    );
    assert!(reply.contains("InvalidParameter"), "{reply}");
    let reply = call("UpdateBootloader", "{}");
    assert!(reply.contains("NotSupported"), "{reply}");
    assert_eq!(s.deployments(), before);
    s.assert_fsck_clean();
}

/// Boot assessment's part that needs no boot (the VM suite does the rest):
/// the GRUB script finds the new default among libostree's real boot
/// entries, and an update recorded as failed to boot is refused until
/// asked for, then forgotten.
#[test]
fn an_update_that_failed_to_boot_is_refused_until_retried() {
    let s = TestSysroot::with_two_deployments();
    let (csum, serial) = s.deployments()[0].clone();
    let script = apt_ostree::bootcount::grub::grub_config(&s.path, 2);
    assert!(
        script.contains(&format!("set aot_default=\"{csum}.{serial}\"")),
        "{script}"
    );
    assert!(script.contains("set aot_left=2\n"), "{script}");
    // GRUB falls back to the entry after libostree's two when the default's
    // kernel does not start; that entry names the default.
    assert!(script.contains("set fallback=2\n"), "{script}");
    let entry = apt_ostree::bootcount::grub::grub_fallback_entry(&s.path, 2);
    assert!(
        entry.contains(&format!("set aot_refused=\"{csum}.{serial}\"")),
        "{entry}"
    );
    assert_eq!(
        apt_ostree::bootcount::grub::grub_fallback_entry(&s.path, 0),
        "",
        "no counting, no fallback entry"
    );
    // Where libostree kept grub.cfg (equal boot entries), the counter and
    // the fallback entry are pointed at the new default.
    let loader = fs::canonicalize(s.path.join("boot/loader")).unwrap();
    fs::write(
        loader.join("grub.cfg"),
        "menuentry x {\n}\nset aot_default=\"0000.0\"\nmenuentry y {\n  set aot_failed=\"0000.0\"\n}\n",
    )
    .unwrap();
    // What the boot's triage reads to start the check, before and after.
    assert!(apt_ostree::bootcount::grub::grub_config_is_stale(&s.path).unwrap());
    assert!(apt_ostree::bootcount::grub::refresh_grub_config(&s.path).unwrap());
    assert!(!apt_ostree::bootcount::grub::grub_config_is_stale(&s.path).unwrap());
    let cfg = fs::read_to_string(loader.join("grub.cfg")).unwrap();
    assert!(
        cfg.contains(&format!("set aot_default=\"{csum}.{serial}\"")),
        "{cfg}"
    );
    assert!(cfg.starts_with("menuentry x {"), "{cfg}");
    assert!(!cfg.contains("0000.0"), "{cfg}");
    assert!(
        !apt_ostree::bootcount::grub::refresh_grub_config(&s.path).unwrap(),
        "once is enough"
    );

    // 12.2 failed to boot: record it as `apt-ostreed --boot check` does,
    // then go back to 12.1 as the rollback would have.
    let origin_file = s.path.join(format!(
        "ostree/deploy/{OSNAME}/deploy/{csum}.{serial}.origin"
    ));
    let origin =
        apt_ostree::origin::Origin::parse(&fs::read_to_string(origin_file).unwrap()).unwrap();
    let record = serde_json::json!([{
        "deployment": format!("{csum}.{serial}"),
        "update": apt_ostree::bootcount::update_key(&csum, &origin),
        "version": "12.2",
        "at": 1_700_000_000,
    }]);
    let state = s.repo().join("extensions/apt-ostree");
    fs::create_dir_all(&state).unwrap();
    fs::write(state.join("boot-failures.json"), record.to_string()).unwrap();
    let (rc, out, err) = code(s.cli().arg("status"));
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("Boot: failed: used up its tries"), "{out}");
    assert_eq!(s.status()["deployments"][0]["bootAssessment"], "failed");
    assert_eq!(code(s.cli().args(["cleanup", "-p"])).0, 0);
    let (rc, out, err) = code(s.cli().args(["rollback"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(s.deployments()[0].0, base_repo().v1);
    let http = HttpServer::start(&base_repo().path, None);
    s.set_remote(&http.url(), &[]);

    let before = s.deployments();
    let (rc, _, err) = code(s.cli().arg("upgrade"));
    assert_eq!(rc, 1, "{err}");
    assert!(
        err.contains("12.2 failed to boot on 2023-11-14T22:13:20Z"),
        "{err}"
    );
    assert!(err.contains("--retry-failed"), "{err}");
    assert_eq!(s.deployments(), before, "the refusal changed nothing");

    let (rc, out, err) = code(s.cli().args(["upgrade", "--retry-failed"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(s.deployments()[0].0, base_repo().v2);
    assert!(
        !state.join("boot-failures.json").exists(),
        "retrying forgets the failure"
    );

    // cleanup --boot-failures forgets them all; with none, nothing to do.
    fs::write(state.join("boot-failures.json"), record.to_string()).unwrap();
    let (rc, out, err) = code(s.cli().args(["cleanup", "--boot-failures"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(
        out.contains("forgot 1 deployment(s) that failed to boot"),
        "{out}"
    );
    let (rc, out, _) = code(s.cli().args(["cleanup", "--boot-failures"]));
    assert_eq!(rc, 0);
    assert!(out.contains("Nothing to clean up"), "{out}");
}

/// A copy of the base repository whose ref points at `commit`, signed by `key`.
fn signed_copy(dir: &std::path::Path, commit: &str, home: &std::path::Path, key: &str) {
    let repo = |c: &mut Command| {
        c.arg(format!("--repo={}", dir.display()));
    };
    let mut init = ostree();
    repo(&mut init);
    run(init.args(["init", "--mode=archive"]));
    let mut pull = ostree();
    repo(&mut pull);
    run(pull.arg("pull-local").arg(&base_repo().path).arg(commit));
    let mut refs = ostree();
    repo(&mut refs);
    run(refs.args(["refs", "--create", REF, commit]));
    let mut sign = ostree();
    repo(&mut sign);
    run(sign
        .arg("gpg-sign")
        .arg(format!("--gpg-homedir={}", home.display()))
        .args([commit, key]));
}

/// Updates with no network: `compose export` writes the ref into a
/// directory, `upgrade --from` takes it with the remote's signature checks,
/// and an unsigned, wrongly signed, partial or older export, or a directory
/// with no export, is refused and changes nothing.
#[test]
fn offline_updates_from_an_export_are_checked_with_the_remotes_keys() {
    let work = Tmpfs::new();
    let w = |name: &str| work.path.join(name);
    let base = base_repo();
    let (good_home, good, good_public) = signing_key(&w("good-key"));
    let (bad_home, bad, _) = signing_key(&w("bad-key"));
    signed_copy(&w("good"), &base.v2, &good_home, &good);
    signed_copy(&w("bad"), &base.v2, &bad_home, &bad);
    signed_copy(&w("older"), &base.v1, &good_home, &good);

    // The machine verifies with the good key; the network is gone (nothing
    // listens on port 9).
    let s = TestSysroot::at_v1();
    s.set_remote("http://127.0.0.1:9/repo", &["--set=gpg-verify=true"]);
    run(s
        .repo_cmd()
        .args(["remote", "gpg-import", REMOTE, "-k"])
        .arg(&good_public));

    let export = |repo: &str, dir: &str| {
        fs::create_dir_all(w(dir)).unwrap();
        let (rc, out, err) = code(
            Command::new(cli())
                .args(["compose", "export", "--repo"])
                .arg(w(repo))
                .args(["--ref", REF])
                .arg(w(dir)),
        );
        assert_eq!(rc, 0, "{out}{err}");
        out
    };
    let out = export("good", "usb stick");
    assert!(
        out.contains(&format!("Exported {REF} 12.2 ({})", base.v2)),
        "{out}"
    );
    assert!(!out.contains("not signed"), "{out}");
    export("bad", "usb-bad");
    export("older", "usb-older");
    // The base repository's commits are not signed.
    fs::create_dir_all(w("usb-unsigned")).unwrap();
    let out = stdout(
        Command::new(cli())
            .args(["compose", "export", "--repo"])
            .arg(&base.path)
            .args(["--ref", REF])
            .arg(w("usb-unsigned")),
    );
    assert!(out.contains("not signed"), "{out}");
    // A stick pulled out half-way: the files' contents never reached it.
    run(Command::new("cp")
        .arg("-a")
        .arg(w("usb stick"))
        .arg(w("usb-partial")));
    run(Command::new("find")
        .arg(w("usb-partial").join(".ostree/repo/objects"))
        .args(["-name", "*.filez", "-delete"]));
    // A stick whose content was changed: one object's bytes, same name.
    run(Command::new("cp")
        .arg("-a")
        .arg(w("usb stick"))
        .arg(w("usb-corrupt")));
    // One the machine does not have yet (it would never read the others),
    // and large enough that a byte at three quarters is in the compressed
    // data (the header's size field and padding are not what the checksum
    // covers: a flip there changes nothing that is stored).
    let object = stdout(
        Command::new("find")
            .arg(w("usb-corrupt").join(".ostree/repo/objects"))
            .args(["-name", "*.filez", "-size", "+1k"]),
    )
    .lines()
    .find(|path| {
        let p = std::path::Path::new(path);
        let dir = p.parent().unwrap().file_name().unwrap();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned() + ".file";
        !s.repo().join("objects").join(dir).join(name).exists()
    })
    .expect("an object only the update has")
    .to_string();
    let mut bytes = fs::read(&object).unwrap();
    let at = bytes.len() * 3 / 4;
    bytes[at] ^= 0xff;
    fs::write(&object, bytes).unwrap();
    fs::create_dir_all(w("empty")).unwrap();
    fs::write(w("a-file"), "not a directory").unwrap();

    let before = s.deployments();
    for (dir, expected) in [
        (w("usb-unsigned"), "signature"),
        (w("usb-bad"), "signature"),
        (w("usb-partial"), "fetching from demo failed"),
        (w("usb-corrupt"), "fetching from demo failed"),
        (w("empty"), "no export there"),
        (w("a-file"), "not a directory"),
        (w("missing"), "No such file"),
    ] {
        let (rc, out, err) = code(s.cli().args(["upgrade", "--from"]).arg(&dir));
        assert_eq!(rc, 1, "{}: {out}{err}", dir.display());
        assert!(err.contains(expected), "{}: {err}", dir.display());
        assert_eq!(s.deployments(), before, "{} changed nothing", dir.display());
    }

    // Through a client we did not write: a relative path is refused as such.
    let d = ActivatedDaemon::start(&s.path, 60);
    let reply = python_varlink(&[
        "call",
        &format!("{}/org.aptostree.Sysroot.Upgrade", d.address()),
        r#"{"fromDirectory": "usb stick"}"#,
    ]);
    assert!(
        reply.contains("InvalidUpdateDirectory") && reply.contains("not an absolute path"),
        "{reply}"
    );
    drop(d);
    assert_eq!(s.deployments(), before);

    // The good export, with no network at all.
    let (rc, out, err) = code(s.cli().args(["upgrade", "--from"]).arg(w("usb stick")));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(s.deployments()[0].0, base.v2);
    s.assert_fsck_clean();
    // An older export is a downgrade.
    let (rc, _, err) = code(s.cli().args(["upgrade", "--from"]).arg(w("usb-older")));
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("refusing to go back"), "{err}");
    assert_eq!(s.deployments()[0].0, base.v2);
    stop_gpg_agent(&good_home);
    stop_gpg_agent(&bad_home);
}
