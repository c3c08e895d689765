//! Test fixtures: real OSTree repositories and sysroots on their own tmpfs,
//! real binaries, real socket activation. Nothing here is a mock.
#![allow(dead_code)]

pub mod cockpit;
pub mod debs;
pub mod images;
pub mod oci;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const REF: &str = "debian/12/x86_64/demo";
/// A second branch whose package set differs from REF's in known ways.
pub const NEXT_REF: &str = "debian/13/x86_64/demo";
pub const REMOTE: &str = "demo";
pub const OSNAME: &str = "debian";

pub fn cli() -> &'static str {
    env!("CARGO_BIN_EXE_apt-ostree")
}

pub fn daemon() -> &'static str {
    env!("CARGO_BIN_EXE_apt-ostreed")
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Run a command, panic with its output if it fails.
#[track_caller]
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[track_caller]
/// The `(name, version, architecture)` rows `apt-ostree db list` prints.
pub fn db_rows(listed: &str) -> Vec<(String, String, String)> {
    listed
        .lines()
        .filter(|l| !l.starts_with("ostree commit:"))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(cols.len(), 3, "{l:?}");
            (cols[0].into(), cols[1].into(), cols[2].into())
        })
        .collect()
}

/// Run `cmd` and return its exit code (-1 if killed), stdout and stderr.
pub fn code(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

pub fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("utf-8 output")
}

/// The `ostree` command, with the settings every test sysroot needs.
pub fn ostree() -> Command {
    let mut c = Command::new("ostree");
    c.env("OSTREE_SYSROOT_DEBUG", "mutable-deployments");
    c
}

/// Poll `cond` until it holds or `timeout` passes; true if it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A directory with its own tmpfs mounted on it (libostree freezes the
/// filesystem of a sysroot's /boot; a tmpfs cannot be frozen).
pub struct Tmpfs {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn new() -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("apt-ostree-test")
            .tempdir()
            .unwrap();
        let path = dir.path().join("mnt");
        fs::create_dir(&path).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=0755", "tmpfs"])
            .arg(&path));
        Tmpfs { _dir: dir, path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// An archive repository with two commits of a small Debian image on `REF`
/// (versions 12.1 and 12.2), built once per build tree from the packages
/// installed on this machine (tests/fixtures/host-tree.py).
pub struct BaseRepo {
    pub path: PathBuf,
    pub v1: String,
    /// Version 12.2: demo-base 1.0 -> 1.1 against v1.
    pub v2: String,
    /// Head of NEXT_REF (version 13.0): base-files upgraded, mawk removed,
    /// apt-ostree-demo-extra added, relative to v2.
    pub next: String,
}

/// Rewrite a dpkg status file the way an image with other packages would have it.
fn change_packages(status: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for stanza in status.split("\n\n") {
        if stanza.starts_with("Package: mawk\n") {
            continue;
        }
        if stanza.starts_with("Package: base-files\n") {
            let bumped: Vec<String> = stanza
                .lines()
                .map(|l| {
                    if l.starts_with("Version: ") {
                        "Version: 99.0".to_string()
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            out.push(bumped.join("\n"));
            continue;
        }
        out.push(stanza.trim_end().to_string());
    }
    out.push(
        "Package: apt-ostree-demo-extra\nStatus: install ok installed\nArchitecture: all\nVersion: 1.0\nDescription: a package only the next image has"
            .to_string(),
    );
    out.join("\n\n") + "\n"
}

pub fn base_repo() -> &'static BaseRepo {
    static BASE: OnceLock<BaseRepo> = OnceLock::new();
    BASE.get_or_init(|| {
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("base-image");
        fs::create_dir_all(&cache).unwrap();
        let script = fixtures().join("host-tree.py");
        // Rebuild when the image builder or this recipe changes.
        let recipe = [fs::read(&script).unwrap(), b"recipe-4".to_vec()].concat();
        let stamp = format!("{:x}", fnv(&recipe));
        let repo = cache.join(format!("repo-{stamp}"));
        // One builder at a time across test processes.
        let lock = fs::File::create(cache.join("lock")).unwrap();
        let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
        if !repo.join("done").exists() {
            let _ = fs::remove_dir_all(&repo);
            let work = cache.join("work");
            let _ = fs::remove_dir_all(&work);
            run(ostree()
                .arg(format!("--repo={}", repo.display()))
                .args(["init", "--mode=archive"]));
            run(ostree().arg(format!("--repo={}", repo.display())).args([
                "config",
                "set",
                "core.fsync",
                "false",
            ]));
            for (branch, version) in [(REF, "12.1"), (REF, "12.2"), (NEXT_REF, "13.0")] {
                let tree = work.join(version);
                run(Command::new("python3")
                    .arg(&script)
                    .arg(&tree)
                    .args(["--version", version]));
                // A package of our own in the base, for override tests; 12.2
                // carries a newer one, so that upgrades change a package.
                let demo_base = if version == "12.2" { "1.1" } else { "1.0" };
                let deb = debs::Deb::new("demo-base", demo_base)
                    .file("/usr/share/demo-base/version", &format!("{demo_base}\n"))
                    .build(&work);
                run(Command::new("dpkg")
                    .arg(format!("--root={}", tree.display()))
                    .args(["--force-script-chrootless", "--force-not-root", "--install"])
                    .arg(&deb));
                if branch == NEXT_REF {
                    let status = tree.join("usr/share/dpkg/database/status");
                    let text = fs::read_to_string(&status).unwrap();
                    fs::write(&status, change_packages(&text)).unwrap();
                }
                run(ostree()
                    .arg(format!("--repo={}", repo.display()))
                    .args([
                        "commit",
                        "--branch",
                        branch,
                        "--owner-uid=0",
                        "--owner-gid=0",
                    ])
                    .arg(format!("--tree=dir={}", tree.display()))
                    .arg(format!("--add-metadata-string=version={version}"))
                    .arg(format!("--subject=Demo image {version}")));
            }
            run(ostree()
                .arg(format!("--repo={}", repo.display()))
                .arg("summary")
                .arg("-u"));
            fs::remove_dir_all(&work).unwrap();
            fs::write(repo.join("done"), "").unwrap();
        }
        let rev = |r: &str| {
            stdout(
                ostree()
                    .arg(format!("--repo={}", repo.display()))
                    .args(["rev-parse", r]),
            )
            .trim()
            .to_string()
        };
        BaseRepo {
            v2: rev(REF),
            v1: rev(&format!("{REF}^")),
            next: rev(NEXT_REF),
            path: repo,
        }
    })
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

/// A sysroot on its own tmpfs, with the demo remote configured.
pub struct TestSysroot {
    pub tmpfs: Tmpfs,
    pub path: PathBuf,
}

impl TestSysroot {
    /// An initialized sysroot with no deployments.
    pub fn empty() -> TestSysroot {
        let base = base_repo();
        let tmpfs = Tmpfs::new();
        let path = tmpfs.path.clone();
        run(ostree().args(["admin", "init-fs", "--modern"]).arg(&path));
        run(ostree()
            .args(["admin", "os-init", OSNAME])
            .arg(format!("--sysroot={}", path.display())));
        let s = TestSysroot { tmpfs, path };
        run(s.repo_cmd().args(["config", "set", "core.fsync", "false"]));
        run(s
            .repo_cmd()
            .args(["remote", "add", "--no-gpg-verify", REMOTE])
            .arg(format!("file://{}", base.path.display())));
        s
    }

    /// A sysroot with only version 12.1 deployed (an update is available).
    pub fn at_v1() -> TestSysroot {
        let s = TestSysroot::empty();
        s.pull_and_deploy(&base_repo().v1);
        s
    }

    /// Point the demo remote somewhere else (with extra `--set` options).
    pub fn set_remote(&self, url: &str, options: &[&str]) {
        run(self.repo_cmd().args(["remote", "delete", REMOTE]));
        let mut c = self.repo_cmd();
        c.args(["remote", "add"]);
        if !options.iter().any(|o| o.starts_with("--set=gpg-verify")) {
            c.arg("--no-gpg-verify");
        }
        c.args(options).arg(REMOTE).arg(url);
        run(&mut c);
    }

    /// `ostree fsck` of the sysroot's repository succeeds.
    #[track_caller]
    pub fn assert_fsck_clean(&self) {
        run(self.repo_cmd().arg("fsck"));
    }

    /// The JSON of `apt-ostree status --json`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&stdout(self.cli().args(["status", "--json"]))).unwrap()
    }

    /// (checksum, serial) of each deployment, in order.
    pub fn deployments(&self) -> Vec<(String, i64)> {
        self.status()["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["checksum"].as_str().unwrap().to_string(),
                    d["serial"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    /// A sysroot with version 12.1 deployed, then 12.2 (the default).
    pub fn with_two_deployments() -> TestSysroot {
        let s = TestSysroot::empty();
        let base = base_repo();
        s.pull_and_deploy(&base.v1);
        s.pull_and_deploy(&base.v2);
        s
    }

    pub fn repo(&self) -> PathBuf {
        self.path.join("ostree/repo")
    }

    pub fn repo_cmd(&self) -> Command {
        let mut c = ostree();
        c.arg(format!("--repo={}", self.repo().display()));
        c
    }

    /// Pull `commit` of the demo ref and deploy it with plain ostree.
    pub fn pull_and_deploy(&self, commit: &str) {
        run(self
            .repo_cmd()
            .args(["pull", REMOTE])
            .arg(format!("{REF}@{commit}")));
        run(ostree()
            .args(["admin", "deploy", "--os", OSNAME])
            .arg(format!("--sysroot={}", self.path.display()))
            .arg(format!("{REMOTE}:{REF}")));
    }

    /// `apt-ostree --sysroot THIS ARGS...` (a private daemon over a socketpair).
    pub fn cli(&self) -> Command {
        let mut c = Command::new(cli());
        c.env("OSTREE_SYSROOT_DEBUG", "mutable-deployments")
            .env_remove("APT_OSTREE_ADDRESS")
            .arg("--sysroot")
            .arg(&self.path);
        c
    }

    /// `ostree admin status` of this sysroot.
    pub fn ostree_status(&self) -> String {
        stdout(
            ostree()
                .args(["admin", "status"])
                .arg(format!("--sysroot={}", self.path.display())),
        )
    }

    /// Deployment directory of the deployment at `index`.
    pub fn deployment_dir(&self, checksum: &str, serial: i64) -> PathBuf {
        self.path
            .join(format!("ostree/deploy/{OSNAME}/deploy/{checksum}.{serial}"))
    }
}

/// A loopback HTTP server for a directory (tests/fixtures/http-server.py),
/// optionally trickling at `rate` bytes per second.
pub struct HttpServer {
    child: Child,
    pub port: u16,
}

impl HttpServer {
    pub fn start(dir: &Path, rate: Option<u64>) -> HttpServer {
        use std::io::BufRead;
        let mut c = Command::new("python3");
        c.arg(fixtures().join("http-server.py")).arg(dir);
        if let Some(r) = rate {
            c.arg("--rate").arg(r.to_string());
        }
        let mut child = c.stdout(Stdio::piped()).spawn().expect("http server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        HttpServer {
            child,
            port: line.trim().parse().expect("port"),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// apt-ostreed started the way systemd starts it: `systemd-socket-activate`
/// listens, and execs the daemon on the first connection.
pub struct ActivatedDaemon {
    pub child: Child,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl ActivatedDaemon {
    pub fn start(sysroot: &Path, idle_timeout: u64) -> ActivatedDaemon {
        ActivatedDaemon::start_with(sysroot, idle_timeout, &[])
    }

    /// Like [`ActivatedDaemon::start`], with more environment for the daemon.
    pub fn start_with(sysroot: &Path, idle_timeout: u64, env: &[&str]) -> ActivatedDaemon {
        let dir = tempfile::Builder::new()
            .prefix("apt-ostreed")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("org.aptostree.Sysroot");
        ActivatedDaemon::listen(sysroot, idle_timeout, env, socket, dir)
    }

    /// Listening on `socket` (e.g. the system's path, for a client that
    /// knows no other), which must not exist yet; removed when dropped.
    pub fn start_at(sysroot: &Path, idle_timeout: u64, socket: &Path) -> ActivatedDaemon {
        assert!(
            !socket.exists(),
            "{} exists: another apt-ostreed listens there",
            socket.display()
        );
        fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("apt-ostreed")
            .tempdir()
            .unwrap();
        ActivatedDaemon::listen(sysroot, idle_timeout, &[], socket.to_path_buf(), dir)
    }

    fn listen(
        sysroot: &Path,
        idle_timeout: u64,
        env: &[&str],
        socket: PathBuf,
        dir: tempfile::TempDir,
    ) -> ActivatedDaemon {
        let child = Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(&socket)
            .arg("--fdname=varlink")
            // systemd-socket-activate passes only the variables it is told to.
            .arg("-E")
            .arg("OSTREE_SYSROOT_DEBUG=mutable-deployments")
            .args(env.iter().flat_map(|e| ["-E", e]))
            .arg(daemon())
            .arg("--sysroot")
            .arg(sysroot)
            .arg("--idle-timeout")
            .arg(idle_timeout.to_string())
            .env("OSTREE_SYSROOT_DEBUG", "mutable-deployments")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("systemd-socket-activate");
        // The file appears at bind(); wait for listen() too, or a connect
        // in between is refused. (Not by connecting: that would activate.)
        assert!(
            wait_until(Duration::from_secs(10), || is_listening(&socket)),
            "socket {} never listened",
            socket.display()
        );
        // As the socket unit's SocketMode=0666 would.
        fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).unwrap();
        ActivatedDaemon {
            child,
            socket,
            _dir: dir,
        }
    }

    pub fn address(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// Wait for the daemon to exit on its own; its exit status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }
}

impl Drop for ActivatedDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.socket);
    }
}

/// Whether a unix socket at `path` is listening, from /proc/net/unix
/// (flag __SO_ACCEPTCON, 0x10000), without connecting to it.
pub fn is_listening(path: &Path) -> bool {
    let wanted = path.display().to_string();
    fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 8
                && f[7] == wanted
                && u32::from_str_radix(f[3], 16).is_ok_and(|flags| flags & 0x10000 != 0)
        })
}

/// The Python reference implementation of Varlink (`pip install varlink`).
/// It exits 0 even on an error reply, which it prints to stderr: both are returned.
pub fn python_varlink(args: &[&str]) -> String {
    let out = run(Command::new("python3")
        .args(["-m", "varlink.cli"])
        .args(args));
    String::from_utf8(out.stdout).unwrap() + &String::from_utf8_lossy(&out.stderr)
}

/// Send raw bytes on a fresh connection, close our sending side, and collect
/// what comes back until the daemon closes the connection or `timeout` passes.
pub fn raw_exchange(socket: &Path, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    // The daemon may close early (e.g. on an oversized message): ignore EPIPE.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    out
}

/// A system bus and polkitd of their own (tests/fixtures/polkit-bus.sh) with
/// apt-ostree's actions and the given rules; killed when dropped.
pub struct PolkitBus {
    child: Child,
    dir: tempfile::TempDir,
}

impl PolkitBus {
    pub fn start(rules: &str) -> PolkitBus {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new().prefix("polkit").tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let (actions, rules_dir) = (dir.path().join("actions"), dir.path().join("rules"));
        fs::create_dir_all(&actions).unwrap();
        fs::create_dir_all(&rules_dir).unwrap();
        fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("polkit/org.aptostree.policy"),
            actions.join("org.aptostree.policy"),
        )
        .unwrap();
        fs::write(rules_dir.join("50-test.rules"), rules).unwrap();
        let child = Command::new(fixtures().join("polkit-bus.sh"))
            .arg(dir.path())
            .arg(&actions)
            .arg(&rules_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let bus = PolkitBus { child, dir };
        // Ready when polkitd owns its name on the bus.
        assert!(
            wait_until(Duration::from_secs(20), || {
                Command::new("dbus-send")
                    .args([
                        "--system",
                        "--print-reply",
                        "--dest=org.freedesktop.DBus",
                        "/org/freedesktop/DBus",
                        "org.freedesktop.DBus.NameHasOwner",
                        "string:org.freedesktop.PolicyKit1",
                    ])
                    .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
            }),
            "polkitd did not come up on the test bus"
        );
        bus
    }

    /// For DBUS_SYSTEM_BUS_ADDRESS.
    pub fn address(&self) -> String {
        format!("unix:path={}", self.dir.path().join("bus").display())
    }
}

impl Drop for PolkitBus {
    fn drop(&mut self) {
        // The script, dbus-daemon and polkitd share a process group.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// Hold connections to `socket` as nobody (tests/fixtures/hold-connections.py
/// with `args`) until the returned process is killed; and its report
/// ("holding N closed M").
pub fn hold_connections(socket: &Path, args: &[&str]) -> (Child, String) {
    use std::io::BufRead;
    let mut child = Command::new("prlimit")
        .arg("--nofile=8192:8192")
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg("/usr/bin/python3")
        .arg(fixtures().join("hold-connections.py"))
        .arg(socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// A GnuPG home under `dir` with one signing key: (home, fingerprint,
/// public key file, ASCII-armored).
pub fn signing_key(dir: &Path) -> (PathBuf, String, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let home = dir.join("gnupg");
    fs::create_dir_all(&home).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
    let gpg = || {
        let mut c = Command::new("gpg");
        c.arg("--homedir").arg(&home).args([
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        c
    };
    run(gpg().args([
        "--quick-gen-key",
        "apt-ostree test <test@example.invalid>",
        "ed25519",
        "sign",
        "never",
    ]));
    let listing = stdout(gpg().args(["--list-keys", "--with-colons"]));
    let fpr = listing
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .unwrap()
        .to_string();
    let public = dir.join("public.asc");
    fs::write(
        &public,
        run(gpg().args(["--armor", "--export", &fpr])).stdout,
    )
    .unwrap();
    (home, fpr, public)
}

/// Stop the gpg-agent a test's GnuPG home started.
pub fn stop_gpg_agent(home: &Path) {
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(home)
        .args(["--kill", "gpg-agent"])
        .status();
}
