//! The service: socket activation, the IDL-generated CLI, third-party clients,
//! status against ostree's own view, idle exit, and bad input.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn status_json(cmd: &mut Command) -> Value {
    serde_json::from_str(&stdout(cmd.args(["status", "--json"]))).expect("status --json is JSON")
}

/// (osname, checksum, serial) of each deployment line of `ostree admin status`.
fn ostree_deployments(text: &str) -> Vec<(String, String, i64)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start_matches(['*', ' ']);
            let mut f = l.split_whitespace();
            let (os, id) = (f.next()?, f.next()?);
            let (csum, serial) = id.split_once('.')?;
            let serial = serial.parse().ok()?;
            (csum.len() == 64).then(|| (os.to_string(), csum.to_string(), serial))
        })
        .collect()
}

fn deployments_of(status: &Value) -> Vec<(String, String, i64)> {
    status["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["osname"].as_str().unwrap().to_string(),
                d["checksum"].as_str().unwrap().to_string(),
                d["serial"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn status_matches_ostree_admin_status() {
    let s = TestSysroot::with_two_deployments();
    let base = base_repo();
    let status = status_json(&mut s.cli());
    let ours = deployments_of(&status);
    assert_eq!(ours, ostree_deployments(&s.ostree_status()));
    assert_eq!(ours.len(), 2);
    assert_eq!(ours[0].1, base.v2);
    assert_eq!(ours[1].1, base.v1);
    let d = &status["deployments"];
    assert_eq!(d[0]["version"], "12.2");
    assert_eq!(d[1]["version"], "12.1");
    assert_eq!(d[0]["refspec"], format!("{REMOTE}:{REF}"));
    for field in [
        "osname",
        "checksum",
        "version",
        "timestamp",
        "refspec",
        "booted",
        "requestedPackages",
        "layeredPackages",
    ] {
        assert!(d[0].get(field).is_some(), "status lacks {field}");
    }
    // Nothing is booted in a sysroot that is not the running system.
    assert_eq!(d[0]["booted"], false);
    assert_eq!(d[1]["booted"], false);
    assert_eq!(
        (d[0]["default"].as_bool(), d[1]["default"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(
        (d[0]["rollback"].as_bool(), d[1]["rollback"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(status["sysroot"], s.path.display().to_string());
    assert!(status.get("transaction").is_none() || status["transaction"].is_null());
}

#[test]
fn human_status_shows_versions_commits_and_marks() {
    let s = TestSysroot::with_two_deployments();
    let base = base_repo();
    let text = stdout(s.cli().arg("status"));
    assert!(text.starts_with("State: idle\nDeployments:\n"), "{text}");
    assert!(
        text.contains(&format!("{REMOTE}:{REF} (default)")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{REMOTE}:{REF} (rollback)")),
        "{text}"
    );
    assert!(text.contains("Version: 12.2 ("), "{text}");
    assert!(text.contains(&format!("Commit: {}", base.v1)), "{text}");
    assert!(!text.contains('●'), "nothing is booted: {text}");
    let verbose = stdout(s.cli().args(["status", "-v"]));
    assert!(
        verbose.contains(&format!("Deployment: {OSNAME}-{}.0", base.v2)),
        "{verbose}"
    );
    // --booted on a sysroot that is not booted lists nothing.
    let booted: Value =
        serde_json::from_str(&stdout(s.cli().args(["status", "--booted", "--json"]))).unwrap();
    assert_eq!(booted["deployments"].as_array().unwrap().len(), 0);
}

#[test]
fn booted_deployment_is_the_one_entered() {
    let s = TestSysroot::with_two_deployments();
    let base = base_repo();
    // "Boot" the older deployment (index 1), as after a rollback.
    let before = status_json(&mut s.cli());
    let serial = before["deployments"][1]["serial"].as_i64().unwrap();
    let deploy = s.deployment_dir(&base.v1, serial);
    let bindir = std::path::Path::new(cli()).parent().unwrap();
    let enter = |args: &[&str]| {
        let mut c = Command::new(fixtures().join("enter-deployment.sh"));
        c.arg(&s.path).arg(&deploy).arg(bindir).args(args);
        c.env("OSTREE_SYSROOT_DEBUG", "mutable-deployments");
        c
    };
    let ostree_view = stdout(&mut enter(&["ostree", "admin", "status"]));
    assert!(
        ostree_view.contains(&format!("* {OSNAME} {}.{serial}", base.v1)),
        "{ostree_view}"
    );
    let status: Value = serde_json::from_str(&stdout(&mut enter(&[
        "/run/bin/apt-ostree",
        "--sysroot",
        "/",
        "status",
        "--json",
    ])))
    .unwrap();
    let booted: Vec<bool> = status["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["booted"].as_bool().unwrap())
        .collect();
    assert_eq!(booted, [false, true]);
    // Booted into the rollback deployment: rollback would make it the default again.
    assert_eq!(status["deployments"][1]["rollback"], true);
    let text = stdout(&mut enter(&[
        "/run/bin/apt-ostree",
        "--sysroot",
        "/",
        "status",
    ]));
    assert!(text.contains(&format!("● {REMOTE}:{REF}")), "{text}");
    let only_booted = stdout(&mut enter(&[
        "/run/bin/apt-ostree",
        "--sysroot",
        "/",
        "status",
        "--booted",
        "--json",
    ]));
    let only_booted: Value = serde_json::from_str(&only_booted).unwrap();
    assert_eq!(only_booted["deployments"].as_array().unwrap().len(), 1);
    assert_eq!(only_booted["deployments"][0]["checksum"], base.v1.as_str());
}

#[test]
fn socket_activation_serves_the_python_reference_client() {
    let s = TestSysroot::with_two_deployments();
    let d = ActivatedDaemon::start(&s.path, 30);
    let addr = d.address();

    let info = python_varlink(&["info", &addr]);
    for iface in [
        "org.varlink.service",
        "io.systemd.service",
        "org.aptostree.Sysroot",
    ] {
        assert!(info.contains(iface), "GetInfo lacks {iface}: {info}");
    }

    let described = python_varlink(&[
        "call",
        &format!("{addr}/org.varlink.service.GetInterfaceDescription"),
        r#"{"interface": "org.aptostree.Sysroot"}"#,
    ]);
    let described: Value = serde_json::from_str(&described).unwrap();
    let idl = fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("interfaces/org.aptostree.Sysroot.varlink"),
    )
    .unwrap();
    assert_eq!(described["description"].as_str().unwrap(), idl);

    let via_python: Value = serde_json::from_str(&python_varlink(&[
        "call",
        &format!("{addr}/org.aptostree.Sysroot.GetStatus"),
        "{}",
    ]))
    .unwrap();
    let via_cli = status_json(Command::new(cli()).arg("--address").arg(&addr));
    assert_eq!(deployments_of(&via_python), deployments_of(&via_cli));
    assert_eq!(
        deployments_of(&via_python),
        ostree_deployments(&s.ostree_status())
    );

    // An empty reply prints nothing; an error would be printed.
    let ping = python_varlink(&["call", &format!("{addr}/io.systemd.service.Ping"), "{}"]);
    assert_eq!(ping.trim(), "", "{ping}");
}

#[test]
fn generated_client_reads_status_over_the_activated_socket() {
    use apt_ostree::protocol::sysroot::{VarlinkClient, VarlinkClientInterface};
    let s = TestSysroot::with_two_deployments();
    let d = ActivatedDaemon::start(&s.path, 30);
    let conn = varlink::Connection::with_address(&d.address()).unwrap();
    let mut client = VarlinkClient::new(conn);
    let reply = client.get_status().call().unwrap();
    assert_eq!(reply.deployments.len(), 2);
    assert_eq!(reply.deployments[0].checksum, base_repo().v2);
    let packages = client.list_packages(None).call().unwrap();
    assert!(packages.packages.iter().any(|p| p.name == "dpkg"));
    let kargs = client.get_kernel_arguments().call().unwrap();
    assert!(kargs.arguments.iter().all(|a| !a.starts_with("ostree=")));
}

#[test]
fn idle_daemon_exits_and_never_while_connected() {
    let s = TestSysroot::with_two_deployments();
    let mut d = ActivatedDaemon::start(&s.path, 1);
    // Hold a connection open past the idle timeout: the daemon must stay.
    let held = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    assert!(
        d.wait_exit(Duration::from_millis(2500)).is_none(),
        "exited with a client connected"
    );
    drop(held);
    let status = d
        .wait_exit(Duration::from_secs(10))
        .expect("daemon did not exit when idle");
    assert!(status.success(), "{status}");
}

#[test]
fn connected_socket_as_accept_yes_passes_it() {
    // systemd-socket-activate --accept hands each connection over already
    // connected, as Accept=yes and `varlinkctl exec:` do.
    let s = TestSysroot::with_two_deployments();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .args([
            "--accept",
            "--fdname=varlink",
            "-E",
            "OSTREE_SYSROOT_DEBUG=mutable-deployments",
        ])
        .args([daemon(), "--sysroot"])
        .arg(&s.path)
        .env("OSTREE_SYSROOT_DEBUG", "mutable-deployments")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || is_listening(
        &socket
    )));
    let addr = format!("unix:{}", socket.display());
    for _ in 0..2 {
        let status = status_json(Command::new(cli()).arg("--address").arg(&addr));
        assert_eq!(status["deployments"].as_array().unwrap().len(), 2);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn bad_input_gets_errors_and_the_daemon_survives() {
    let s = TestSysroot::with_two_deployments();
    let d = ActivatedDaemon::start(&s.path, 30);
    let t = Duration::from_secs(5);
    let reply = |bytes: &[u8]| -> Value {
        let out = raw_exchange(&d.socket, bytes, t);
        let first = out.split(|b| *b == 0).next().unwrap();
        serde_json::from_slice(first).unwrap_or(Value::Null)
    };
    let error_of = |v: &Value| v["error"].as_str().unwrap_or("").to_string();

    // Malformed JSON, a non-object, a message without a method: connection closed, nothing sent.
    assert!(raw_exchange(&d.socket, b"{not json\0", t).is_empty());
    assert!(raw_exchange(&d.socket, b"[1,2]\0", t).is_empty());
    assert!(raw_exchange(&d.socket, b"{\"parameters\":{}}\0", t).is_empty());
    // A message without its terminating NUL, then close.
    assert!(raw_exchange(
        &d.socket,
        br#"{"method":"org.aptostree.Sysroot.GetStatus""#,
        t
    )
    .is_empty());
    // 10 MB without a NUL: refused, connection closed.
    let huge = vec![b'a'; 10 * 1024 * 1024];
    assert!(raw_exchange(&d.socket, &huge, t).is_empty());

    let unknown = reply(b"{\"method\":\"org.aptostree.Sysroot.Frobnicate\",\"parameters\":{}}\0");
    assert_eq!(error_of(&unknown), "org.varlink.service.MethodNotFound");
    let iface = reply(b"{\"method\":\"com.example.Nope.Get\",\"parameters\":{}}\0");
    assert_eq!(error_of(&iface), "org.varlink.service.InterfaceNotFound");
    let wrong_type = reply(
        b"{\"method\":\"org.aptostree.Sysroot.ListPackages\",\"parameters\":{\"revision\":42}}\0",
    );
    assert_eq!(
        error_of(&wrong_type),
        "org.varlink.service.InvalidParameter"
    );
    assert_eq!(wrong_type["parameters"]["parameter"], "revision");
    let unknown_field = reply(
        b"{\"method\":\"org.aptostree.Sysroot.GetStatus\",\"parameters\":{\"verbose\":true}}\0",
    );
    assert_eq!(
        error_of(&unknown_field),
        "org.varlink.service.InvalidParameter"
    );
    assert_eq!(unknown_field["parameters"]["parameter"], "verbose");
    let missing = reply(b"{\"method\":\"org.aptostree.Sysroot.Deploy\",\"parameters\":{}}\0");
    assert_eq!(error_of(&missing), "org.varlink.service.InvalidParameter");
    assert_eq!(missing["parameters"]["parameter"], "revision");
    // `more` on a method that does not stream: one final reply, as sd-varlink does.
    let more = reply(b"{\"method\":\"org.aptostree.Sysroot.GetStatus\",\"more\":true}\0");
    assert!(more["parameters"]["deployments"].is_array(), "{more}");
    assert!(more.get("continues").is_none() || more["continues"] == false);
    // oneway: no reply at all, and the connection stays usable.
    let out = raw_exchange(
        &d.socket,
        b"{\"method\":\"org.aptostree.Sysroot.GetStatus\",\"oneway\":true}\0{\"method\":\"io.systemd.service.Ping\"}\0",
        Duration::from_millis(500),
    );
    let replies: Vec<&[u8]> = out.split(|b| *b == 0).filter(|m| !m.is_empty()).collect();
    assert_eq!(replies.len(), 1, "{}", String::from_utf8_lossy(&out));
    assert!(!String::from_utf8_lossy(replies[0]).contains("deployments"));

    // Arbitrary bytes (a fixed-seed generator: the same streams every run),
    // with and without NULs, some shaped like calls.
    let mut x: u64 = 0x2545f4914f6cdd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..60 {
        let len = (next() % 2048) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 3 == 0 {
            let mut call = br#"{"method":"org.aptostree.Sysroot.GetStatus","parameters":"#.to_vec();
            call.extend_from_slice(&bytes[..len.min(40)]);
            bytes = call;
        }
        if i % 2 == 0 {
            bytes.push(0);
        }
        raw_exchange(&d.socket, &bytes, Duration::from_secs(2));
    }

    // And after all that it still answers.
    let status = status_json(Command::new(cli()).arg("--address").arg(d.address()));
    assert_eq!(status["deployments"].as_array().unwrap().len(), 2);
}

/// Copy the CLI where an unprivileged user can run it.
fn cli_for_nobody() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("apt-ostree");
    fs::copy(cli(), &bin).unwrap();
    (dir, bin)
}

fn as_nobody(program: &std::path::Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(program);
    c
}

#[test]
fn unprivileged_callers_may_read_but_not_change() {
    let s = TestSysroot::with_two_deployments();
    let d = ActivatedDaemon::start(&s.path, 30);
    let (_dir, bin) = cli_for_nobody();
    let status = status_json(as_nobody(&bin).arg("--address").arg(d.address()));
    assert_eq!(
        deployments_of(&status),
        ostree_deployments(&s.ostree_status())
    );

    let before = s.ostree_status();
    // Every mutating method, through the CLI.
    for args in [
        vec!["upgrade"],
        vec!["upgrade", "--trigger-automatic-update-policy"],
        vec!["rebase", "demo:other"],
        vec!["deploy", "12.1"],
        vec!["rollback"],
        vec!["pin", "1"],
        vec!["pin", "--unpin", "0"],
        vec!["cleanup", "-r"],
        vec!["install", "htop"],
        vec!["uninstall", "htop"],
        vec!["override", "remove", "dpkg"],
        vec!["override", "replace", "dpkg"],
        vec!["override", "reset", "--all"],
        vec!["kargs", "--append", "quiet"],
        vec!["initramfs", "--enable"],
        vec!["refresh-md"],
        vec!["cancel"],
        vec!["reload"],
    ] {
        let out = as_nobody(&bin)
            .arg("--address")
            .arg(d.address())
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("permission denied"), "{args:?}: {err}");
    }
    assert_eq!(
        before,
        s.ostree_status(),
        "a denied call changed the sysroot"
    );

    // io.systemd.service: Ping for all; log level and environment for root only.
    let raw = |method: &str, params: &str| {
        let msg = format!("{{\"method\":\"{method}\",\"parameters\":{params}}}\0");
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c"])
            .arg(format!(
                "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect({:?}); s.sendall({:?}.encode()); print(s.recv(65536).decode().rstrip('\\0'))",
                d.socket.display().to_string(),
                msg
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let ping: Value = serde_json::from_str(raw("io.systemd.service.Ping", "{}").trim()).unwrap();
    assert!(ping.is_object() && ping.get("error").is_none(), "{ping}");
    assert!(raw("io.systemd.service.SetLogLevel", "{\"level\":7}").contains("PermissionDenied"));
    assert!(raw("io.systemd.service.GetEnvironment", "{}").contains("PermissionDenied"));
    // Regression: Reload (of either interface) succeeded for anyone.
    for method in ["io.systemd.service.Reload", "org.aptostree.Sysroot.Reload"] {
        let reply = raw(method, "{}");
        assert!(reply.contains("PermissionDenied"), "{method}: {reply}");
    }
    // The sysupdate-style interface: listing is open, the rest needs root.
    assert!(raw("org.aptostree.Update.ListVersions", "{}").contains("\"versions\""));
    for method in ["CheckNew", "Update", "Vacuum"] {
        let reply = raw(&format!("org.aptostree.Update.{method}"), "{}");
        assert!(reply.contains("PermissionDenied"), "{method}: {reply}");
    }
    let env = python_varlink(&[
        "call",
        &format!("{}/io.systemd.service.GetEnvironment", d.address()),
        "{}",
    ]);
    assert!(
        env.contains("OSTREE_SYSROOT_DEBUG=mutable-deployments"),
        "{env}"
    );
    let set = python_varlink(&[
        "call",
        &format!("{}/io.systemd.service.SetLogLevel", d.address()),
        "{\"level\":7}",
    ]);
    assert!(!set.contains("error"), "{set}");
}

/// A real polkitd (on a bus of its own) decides for callers other than root:
/// a rule grants one user the kernel arguments; nothing else is granted.
#[test]
fn polkit_decides_for_callers_other_than_root() {
    let s = TestSysroot::with_two_deployments();
    let bus = PolkitBus::start(
        r#"polkit.addRule(function(action, subject) {
            if (action.id == "org.aptostree.bootconfig" && subject.user == "nobody") {
                return polkit.Result.YES;
            }
        });"#,
    );
    let env = format!("DBUS_SYSTEM_BUS_ADDRESS={}", bus.address());
    let d = ActivatedDaemon::start_with(&s.path, 30, &[&env]);
    let (_dir, bin) = cli_for_nobody();
    let as_user = |uid: u32| {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .arg(&bin)
            .arg("--address")
            .arg(d.address());
        c
    };
    let (rc, out, err) = code(as_user(65534).args(["kargs", "--append", "quiet"]));
    assert_eq!(rc, 0, "granted by the rule: {out}{err}");
    assert_eq!(
        s.status()["deployments"][0]["kernelArguments"],
        serde_json::json!(["quiet"])
    );
    let before = s.deployments();
    let (rc, _, err) = code(as_user(65534).arg("upgrade"));
    assert_eq!(rc, 1);
    assert!(
        err.contains(
            "permission denied: org.aptostree.upgrade needs root, or authorization by polkit"
        ),
        "{err}"
    );
    // Another user, the same request: no rule, no administrator's password.
    let (rc, _, err) = code(as_user(1).args(["kargs", "--append", "splash"]));
    assert_eq!(rc, 1);
    assert!(err.contains("org.aptostree.bootconfig"), "{err}");
    let (rc, _, err) = code(as_user(65534).arg("reload"));
    assert_eq!(rc, 1);
    assert!(err.contains("org.aptostree.reload"), "{err}");
    assert_eq!(s.deployments(), before);
}

/// CPU seconds (user + system) `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

/// Regression: ~510 idle connections of one user filled the daemon's open
/// files; root's status failed and the accept loop spun, logging each try.
#[test]
fn one_user_holding_thousands_of_connections_cannot_lock_out_root() {
    let s = TestSysroot::with_two_deployments();
    let mut d = ActivatedDaemon::start_with(&s.path, 120, &["APT_OSTREE_LOG=info"]);
    // The unit's open-files limit; the daemon starts with it on activation.
    run(Command::new("prlimit")
        .arg(format!("--pid={}", d.child.id()))
        .arg("--nofile=1024:1024"));
    let pid = d.child.id();
    let status = || {
        let t = Instant::now();
        status_json(Command::new(cli()).args(["--address", &d.address()]));
        t.elapsed()
    };
    status();
    let cpu_before = cpu_seconds(pid);
    let (mut hog, report) = hold_connections(&d.socket, &["3000"]);
    let held: usize = report.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        (32..=64).contains(&held),
        "one user keeps at most 64: {report}"
    );
    let started = Instant::now();
    for _ in 0..20 {
        assert!(status() < Duration::from_secs(1), "root waited");
    }
    std::thread::sleep(Duration::from_secs(2));
    let cpu = (cpu_seconds(pid) - cpu_before) / started.elapsed().as_secs_f64();
    assert!(cpu < 0.3, "the daemon used {:.0}% of a core", cpu * 100.0);
    let _ = hog.kill();
    let _ = hog.wait();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let mut log = String::new();
    std::io::Read::read_to_string(d.child.stderr.as_mut().unwrap(), &mut log).unwrap();
    let refusals = log.matches("Refusing connections").count();
    assert!(
        (1..=2).contains(&refusals),
        "{refusals} refusal lines:\n{log}"
    );
}

/// Regression: 1,000 connections trickling never-ending 1 MB messages took
/// the daemon to 1.23 GB, and a half-sent message held its thread forever.
#[test]
fn unfinished_messages_are_bounded_in_memory_and_in_time() {
    let s = TestSysroot::with_two_deployments();
    let d = ActivatedDaemon::start(&s.path, 120);
    status_json(Command::new(cli()).args(["--address", &d.address()]));
    let pid = d.child.id();
    let (mut hog, report) = hold_connections(&d.socket, &["1000", "--trickle", "1048000"]);
    let rss = rss_kib(pid);
    assert!(
        rss < 300 * 1024,
        "daemon RSS {rss} KiB under trickling: {report}"
    );
    let closed: usize = report.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(closed > 0, "the shared budget closed none: {report}");
    let _ = hog.kill();
    let _ = hog.wait();
    // A message begun and never finished is closed after the deadline.
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import socket,time; s=socket.socket(socket.AF_UNIX); s.connect({:?}); \
             s.sendall(b'{{\"method\":'); t=time.time(); \
             print('eof' if s.recv(1)==b'' else 'data', round(time.time()-t))",
            d.socket.display().to_string()
        ))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let secs: u64 = out
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    assert!(out.starts_with("eof") && (9..=15).contains(&secs), "{out}");
}

/// Regression: absent values were sometimes left out (transaction) and
/// sometimes null (baseChecksum). One rule now: left out, on the wire and
/// in `status --json`.
#[test]
fn absent_values_are_left_out_everywhere() {
    let s = TestSysroot::with_two_deployments();
    let d = ActivatedDaemon::start(&s.path, 30);
    let json = stdout(Command::new(cli()).args(["--address", &d.address(), "status", "--json"]));
    assert!(!json.contains("null"), "{json}");
    let status: Value = serde_json::from_str(&json).unwrap();
    let first = status["deployments"][0].as_object().unwrap();
    assert!(!first.contains_key("baseChecksum"), "{json}");
    assert!(status.get("transaction").is_none(), "{json}");
    let wire = python_varlink(&[
        "call",
        &format!("{}/org.aptostree.Sysroot.GetStatus", d.address()),
        "{}",
    ]);
    assert!(wire.contains("\"deployments\""), "{wire}");
    assert!(!wire.contains("null"), "{wire}");
}

/// Regression: both used to print only "IO error".
#[test]
fn connection_errors_say_why_and_what_to_do() {
    let (rc, _, err) = code(Command::new(cli()).args([
        "--address",
        "unix:/run/apt-ostree-test-nothing-here/socket",
        "status",
    ]));
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(
        err.contains("systemctl enable --now apt-ostreed.socket") && err.contains("--sysroot"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_bindir, bin) = cli_for_nobody();
    let out = as_nobody(&bin)
        .arg("--address")
        .arg(format!("unix:{}", socket.display()))
        .arg("status")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(err.contains("SocketMode=0666"), "{err}");
}

/// Regression: the daemon's log carried colour codes into files.
#[test]
fn the_daemon_log_has_no_colour_codes_when_not_a_terminal() {
    let s = TestSysroot::with_two_deployments();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(daemon())
        .arg("--address")
        .arg(format!("unix:{}", dir.path().join("socket").display()))
        .arg("--sysroot")
        .arg(&s.path)
        .args(["--idle-timeout", "1"])
        .env("APT_OSTREE_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ready"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

/// As rpm-ostree: cancelling when nothing runs is a note, not an error.
#[test]
fn cancel_with_nothing_running_succeeds_with_a_note() {
    let s = TestSysroot::with_two_deployments();
    let d = ActivatedDaemon::start(&s.path, 30);
    let out = Command::new(cli())
        .args(["--address", &d.address(), "cancel"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "No transaction is running."
    );
}

#[test]
fn a_path_that_is_not_a_sysroot_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = ActivatedDaemon::start(dir.path(), 30);
    let out = python_varlink(&[
        "call",
        &format!("{}/org.aptostree.Sysroot.GetStatus", d.address()),
        "{}",
    ]);
    assert!(out.contains("org.aptostree.Sysroot.NotASysroot"), "{out}");
    let cli_out = Command::new(cli())
        .arg("--sysroot")
        .arg(dir.path())
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(cli_out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&cli_out.stderr);
    assert!(err.contains("is not an OSTree sysroot"), "{err}");

    // A sysroot that cannot be loaded says why, and is not called "no sysroot".
    let s = TestSysroot::at_v1();
    let deploy_dir = s.path.join("ostree/deploy").join(OSNAME).join("deploy");
    let origin = fs::read_dir(&deploy_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "origin"))
        .expect("a deployment's origin file");
    fs::write(&origin, "this is not a key file\n").unwrap();
    let (rc, _, err) = code(s.cli().arg("status"));
    assert_eq!(rc, 1);
    assert!(
        !err.contains("is not an OSTree sysroot") && err.contains("Loading the sysroot"),
        "{err}"
    );
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    // verify needs the units' executables and systemd's own units under one root.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for dir in [
        "usr/libexec",
        "usr/bin",
        "etc/systemd/system",
        "usr/lib/systemd",
    ] {
        fs::create_dir_all(r.join(dir)).unwrap();
    }
    fs::copy(daemon(), r.join("usr/libexec/apt-ostreed")).unwrap();
    fs::copy(cli(), r.join("usr/bin/apt-ostree")).unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/systemd/system")
        .arg(r.join("usr/lib/systemd/")));
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let mut names = Vec::new();
    for entry in fs::read_dir(&units).unwrap() {
        let entry = entry.unwrap();
        fs::copy(
            entry.path(),
            r.join("etc/systemd/system").join(entry.file_name()),
        )
        .unwrap();
        names.push(format!(
            "/etc/systemd/system/{}",
            entry.file_name().to_string_lossy()
        ));
    }
    assert!(names.iter().any(|n| n.ends_with("apt-ostreed.socket")));
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", r.display()))
        .args(&names)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
    let socket = fs::read_to_string(units.join("apt-ostreed.socket")).unwrap();
    assert!(socket.contains("ListenStream=/run/apt-ostree/org.aptostree.Sysroot"));
    assert!(socket.contains("FileDescriptorName=varlink"));
    assert!(socket.contains("SocketMode=0666"));
}

#[test]
fn the_journal_gets_structured_fields_and_message_ids() {
    let s = TestSysroot::with_two_deployments();
    let out = tempfile::NamedTempFile::new().unwrap();
    // journald's socket, in a private mount namespace: a stand-in that records
    // what the daemon sends (the journal's native protocol).
    let script = format!(
        "mount -t tmpfs tmpfs /run/systemd && exec python3 {} {} {} --sysroot {} kargs --append quiet",
        fixtures().join("journal-catcher.py").display(),
        out.path().display(),
        cli(),
        s.path.display()
    );
    run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec", &script])
        .env("APT_OSTREE_LOG", "info")
        .env("OSTREE_SYSROOT_DEBUG", "mutable-deployments"));
    let records: Vec<Value> =
        serde_json::from_str(&fs::read_to_string(out.path()).unwrap()).unwrap();
    let written = records
        .iter()
        .find(|r| r["MESSAGE_ID"] == "9ef3cb3dc47c40c0ba406a417c2789fb")
        .unwrap_or_else(|| panic!("no deployment-written record in {records:?}"));
    assert!(
        written["MESSAGE"]
            .as_str()
            .unwrap()
            .starts_with("Deployment debian-"),
        "{written}"
    );
    assert_eq!(written["SYSLOG_IDENTIFIER"], "apt-ostreed");
    let tx = written["APT_OSTREE_TRANSACTION"].as_str().unwrap();
    assert_eq!(tx.len(), 32, "{written}");
    // Every line of that transaction carries its id.
    assert!(records
        .iter()
        .any(|r| r["APT_OSTREE_TRANSACTION"] == tx && r["MESSAGE"] == "Writing deployment"));
}
