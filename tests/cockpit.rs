//! The Cockpit page (cockpit/) in a real browser: Debian's cockpit-ws on
//! 127.0.0.1, local test accounts, headless Chromium driven by Selenium
//! (tests/cockpit/browser.py), and apt-ostreed socket-activated on a test
//! sysroot at the system's socket path, which the page knows. Each click's
//! effect is checked in the sysroot. Screenshots go to
//! target/cockpit-screenshots.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use common::cockpit::{browse, browse_with, shutdown_stand_in, Account, CockpitWs, SOCKET};
use common::{run, ActivatedDaemon, TestSysroot};

/// The methods and parameter names of interfaces/org.aptostree.Sysroot.varlink.
fn idl_methods() -> BTreeMap<String, Vec<String>> {
    let idl = std::fs::read_to_string("interfaces/org.aptostree.Sysroot.varlink").unwrap();
    let mut methods = BTreeMap::new();
    let mut rest = idl.as_str();
    while let Some(at) = rest.find("\nmethod ") {
        rest = &rest[at + "\nmethod ".len()..];
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
        let open = rest.find('(').unwrap();
        // Up to the closing parenthesis, comments (which have their own) aside.
        let mut params = Vec::new();
        for line in rest[open + 1..].lines().map(str::trim) {
            if line.starts_with('#') {
                continue;
            }
            let (fields, closed) = match line.find(')') {
                Some(at) => (&line[..at], true),
                None => (line, false),
            };
            params.extend(
                fields
                    .split(',')
                    .filter_map(|p| p.split_once(':').map(|(n, _)| n.trim().to_string())),
            );
            if closed {
                break;
            }
        }
        methods.insert(name, params);
    }
    methods
}

/// The METHODS table of cockpit/varlink.js: what the page calls, with what.
fn page_methods() -> BTreeMap<String, Vec<String>> {
    let js = std::fs::read_to_string("cockpit/varlink.js").unwrap();
    let table = js.split("const METHODS = {").nth(1).unwrap();
    let table = &table[..table.find("};").unwrap()];
    table
        .lines()
        .filter_map(|l| l.trim().split_once(": ["))
        .map(|(name, params)| {
            let params = params.trim_end_matches("],").trim_end_matches(']');
            (
                name.to_string(),
                params
                    .split(',')
                    .map(|p| p.trim().trim_matches('"').to_string())
                    .filter(|p| !p.is_empty())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn the_page_calls_only_methods_and_parameters_the_interface_has() {
    let idl = idl_methods();
    let page = page_methods();
    assert!(page.len() >= 8, "the table was not read: {page:?}");
    assert!(idl.contains_key("GetStatus") && idl["Upgrade"].contains(&"preview".into()));
    for (method, params) in &page {
        let known = idl
            .get(method)
            .unwrap_or_else(|| panic!("the page calls {method}, which the interface lacks"));
        for p in params {
            assert!(
                known.contains(p),
                "{method} has no parameter {p}: {known:?}"
            );
        }
    }
}

fn checksums(shown: &serde_json::Value) -> Vec<String> {
    shown
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["checksum"].as_str().unwrap().to_string())
        .collect()
}

fn sysroot_order(s: &TestSysroot) -> Vec<String> {
    s.deployments().into_iter().map(|(c, _)| c).collect()
}

#[test]
fn in_a_browser_the_page_shows_the_deployments_and_changes_only_what_the_user_may() {
    let ws = CockpitWs::start();
    let admin = Account::new("aotest-admin", true);
    let user = Account::new("aotest-user", false);
    permissions_and_rollback(&ws, &admin, &user);
    updates_rebase_and_cleanup(&ws, &admin);
    packages_searched_installed_and_uninstalled(&ws, &admin);
    a_running_transaction_is_attached_and_cancelled(&ws, &admin);
}

fn permissions_and_rollback(ws: &CockpitWs, admin: &Account, user: &Account) {
    let sysroot = TestSysroot::with_two_deployments();
    let _daemon = ActivatedDaemon::start_at(&sysroot.path, 120, Path::new(SOCKET));
    let order = sysroot_order(&sysroot);
    assert_eq!(order.len(), 2);

    // Without administrative access: the deployments, read-only; a change
    // reads as "not allowed", and nothing changes.
    let shown = browse(ws, user, "user-rollback");
    assert_eq!(checksums(&shown["before"]), order, "{shown}");
    let error = shown["error"]["text"].as_str().unwrap();
    assert!(error.starts_with("Not allowed"), "{shown}");
    assert_eq!(
        shown["error"]["name"], "org.varlink.service.PermissionDenied",
        "{shown}"
    );
    assert_eq!(sysroot_order(&sysroot), order);

    // With it: rollback swaps the two, in the sysroot and on the page.
    let shown = browse(ws, admin, "admin-rollback");
    assert_eq!(checksums(&shown["before"]), order, "{shown}");
    assert_eq!(shown["before"][1]["badges"][0], "rollback", "{shown}");
    let swapped: Vec<String> = order.iter().rev().cloned().collect();
    assert_eq!(sysroot_order(&sysroot), swapped);
    assert_eq!(checksums(&shown["after"]), swapped, "{shown}");
    assert_eq!(shown["error"]["shown"], false, "{shown}");
    // Pin the second, pin and unpin the first: badges on the page, the
    // pins in the sysroot.
    let pinned_badges = |list: &serde_json::Value| -> Vec<bool> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|d| d["badges"].to_string().contains("pinned"))
            .collect()
    };
    let steps: Vec<Vec<bool>> = shown["pinned"]
        .as_array()
        .unwrap()
        .iter()
        .map(pinned_badges)
        .collect();
    assert_eq!(
        steps,
        [vec![false, true], vec![true, true], vec![false, true]],
        "{shown}"
    );
    let status = sysroot.status();
    assert_eq!(status["deployments"][0]["pinned"], false);
    assert_eq!(status["deployments"][1]["pinned"], true);
    eprintln!(
        "deployments shown {} ms after the page started",
        shown["page_ms"]
    );

    // An unreachable remote: the check fails with the interface's error name.
    sysroot.set_remote("http://127.0.0.1:9/repo", &[]);
    let shown = browse(ws, admin, "admin-check");
    assert_eq!(shown["error"]["shown"], true, "{shown}");
    let name = shown["error"]["name"].as_str().unwrap();
    assert!(name.starts_with("org.aptostree.Sysroot."), "{shown}");
    assert_eq!(sysroot_order(&sysroot), swapped);
}

/// Check (with the update's package diff), update, rebase, clean up.
fn updates_rebase_and_cleanup(ws: &CockpitWs, admin: &Account) {
    let base = common::base_repo();
    let sysroot = TestSysroot::at_v1();
    let _daemon = ActivatedDaemon::start_at(&sysroot.path, 120, Path::new(SOCKET));
    let rebase_to = format!("{}:{}", common::REMOTE, common::NEXT_REF);
    let shown = browse_with(ws, admin, "admin-changes", &rebase_to);
    assert_eq!(shown["error"]["shown"], false, "{shown}");
    assert_eq!(shown["update"]["shown"], true, "{shown}");
    assert!(
        shown["update"]["summary"]
            .as_str()
            .unwrap()
            .contains("Version 12.2"),
        "{shown}"
    );
    let changes = shown["update"]["changes"].to_string();
    assert!(changes.contains("demo-base 1.0 → 1.1"), "{shown}");
    // Download fetches the update and deploys nothing.
    assert_eq!(
        checksums(&shown["after_download"]),
        std::slice::from_ref(&base.v1),
        "{shown}"
    );
    assert!(
        !shown["download_notice"].as_str().unwrap().is_empty(),
        "{shown}"
    );
    assert_eq!(checksums(&shown["after_update"])[0], base.v2, "{shown}");
    // "Update and reboot": Cockpit's restart dialog ran `shutdown` as root
    // with the delay and message chosen.
    assert_eq!(shown["restart"]["error"], "", "{shown}");
    let args = std::fs::read_to_string(shutdown_stand_in(&admin.name).join("shutdown.args"))
        .unwrap_or_else(|e| panic!("shutdown did not run ({e}): {shown}"));
    assert_eq!(args, "0\n--reboot\n+5\napt-ostree update\n", "{shown}");
    assert!(
        shown["update_notice"]
            .as_str()
            .unwrap()
            .contains("No upgrade available"),
        "{shown}"
    );
    let after_rebase = checksums(&shown["after_rebase"]);
    assert_eq!(after_rebase[0], base.next, "{shown}");
    assert!(shown["after_rebase"][0]["text"]
        .as_str()
        .unwrap()
        .contains(common::NEXT_REF));
    assert_eq!(sysroot_order(&sysroot)[0], base.next);
    assert!(
        !shown["cleanup_notice"].as_str().unwrap().is_empty(),
        "{shown}"
    );
}

/// A transaction the CLI started (a pull from a slow server) shows on
/// opening the page, with its progress; Cancel stops it, and nothing changed.
fn a_running_transaction_is_attached_and_cancelled(ws: &CockpitWs, admin: &Account) {
    let sysroot = TestSysroot::at_v1();
    // Trickled: the pull takes minutes unless cancelled.
    let server = common::HttpServer::start(&common::base_repo().path, Some(2000));
    sysroot.set_remote(&server.url(), &[]);
    let _daemon = ActivatedDaemon::start_at(&sysroot.path, 120, Path::new(SOCKET));
    let before = sysroot_order(&sysroot);
    let mut cli = Command::new(common::cli())
        .args(["upgrade"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Open the page once the pull runs.
    use std::io::BufRead;
    let mut progress = std::io::BufReader::new(cli.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("Pulling") {
        line.clear();
        assert!(
            progress.read_line(&mut line).unwrap() > 0,
            "the upgrade ended"
        );
    }
    let shown = browse(ws, admin, "admin-attach");
    let status = cli.wait().unwrap();
    assert!(
        shown["attached_title"]
            .as_str()
            .unwrap()
            .contains("started elsewhere"),
        "{shown}"
    );
    assert!(!status.success(), "the CLI's upgrade was not cancelled");
    assert_eq!(sysroot_order(&sysroot), before);
}

/// Search the test apt repository, install the first result, uninstall it.
fn packages_searched_installed_and_uninstalled(ws: &CockpitWs, admin: &Account) {
    let sysroot = TestSysroot::at_v1();
    let repo = tempfile::tempdir().unwrap();
    common::debs::apt_repository(
        repo.path(),
        &[
            common::debs::Deb::new("demo-tool", "1.0").file("/usr/bin/demo-tool", "#!/bin/sh\n"),
            common::debs::Deb::new("other-thing", "2.0"),
        ],
    );
    let http = common::HttpServer::start(repo.path(), None);
    let (checksum, serial) = sysroot.deployments()[0].clone();
    std::fs::write(
        sysroot
            .deployment_dir(&checksum, serial)
            .join("etc/apt/sources.list.d/test.list"),
        format!("deb [trusted=yes] {}/ ./\n", http.url()),
    )
    .unwrap();
    let _daemon = ActivatedDaemon::start_at(&sysroot.path, 120, Path::new(SOCKET));
    run(Command::new(common::cli()).arg("refresh-md"));
    let shown = browse_with(ws, admin, "admin-packages", "demo tool");
    assert_eq!(shown["error"]["shown"], false, "{shown}");
    assert_eq!(shown["found"], serde_json::json!(["demo-tool"]), "{shown}");
    let layered = sysroot.status()["deployments"][0]["requestedPackages"].clone();
    assert_eq!(layered, serde_json::json!([]), "uninstalled again");
    assert!(
        shown["after_install"][0]["text"]
            .as_str()
            .unwrap()
            .contains("demo-tool"),
        "{shown}"
    );
    assert!(
        !shown["after_uninstall"][0]["text"]
            .as_str()
            .unwrap()
            .contains("demo-tool"),
        "{shown}"
    );
}
