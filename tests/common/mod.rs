//! Test fixtures: real OSTree repositories and sysroots on their own tmpfs,
//! real binaries, real socket activation. Nothing here is a mock.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const REF: &str = "debian/12/x86_64/demo";
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
    pub v2: String,
}

pub fn base_repo() -> &'static BaseRepo {
    static BASE: OnceLock<BaseRepo> = OnceLock::new();
    BASE.get_or_init(|| {
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("base-image");
        fs::create_dir_all(&cache).unwrap();
        let script = fixtures().join("host-tree.py");
        let stamp = format!("{:x}", fnv(&fs::read(&script).unwrap()));
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
            for version in ["12.1", "12.2"] {
                let tree = work.join(version);
                run(Command::new("python3")
                    .arg(&script)
                    .arg(&tree)
                    .args(["--version", version]));
                run(ostree()
                    .arg(format!("--repo={}", repo.display()))
                    .args(["commit", "--branch", REF, "--owner-uid=0", "--owner-gid=0"])
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

/// apt-ostreed started the way systemd starts it: `systemd-socket-activate`
/// listens, and execs the daemon on the first connection.
pub struct ActivatedDaemon {
    pub child: Child,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl ActivatedDaemon {
    pub fn start(sysroot: &Path, idle_timeout: u64) -> ActivatedDaemon {
        let dir = tempfile::Builder::new()
            .prefix("apt-ostreed")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("org.aptostree.Sysroot");
        let child = Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(&socket)
            .arg("--fdname=varlink")
            // systemd-socket-activate passes only the variables it is told to.
            .arg("-E")
            .arg("OSTREE_SYSROOT_DEBUG=mutable-deployments")
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
        assert!(
            wait_until(Duration::from_secs(10), || socket.exists()),
            "socket {} never appeared",
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
    }
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
