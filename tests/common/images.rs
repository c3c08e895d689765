//! Container image fixtures: Debian's docker-registry on loopback, buildah
//! with a storage of its own, plain Debian roots to build images from.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use super::*;

/// skopeo reads registry settings only from the system's files: plain
/// HTTP is allowed for loopback registries, which only tests run.
pub fn allow_loopback_registries() {
    let dir = Path::new("/etc/containers/registries.conf.d");
    fs::create_dir_all(dir).unwrap();
    let conf = dir.join("50-apt-ostree-tests-loopback.conf");
    if !conf.exists() {
        fs::write(
            conf,
            "# apt-ostree's tests: registries on loopback speak plain HTTP\n[[registry]]\nlocation = \"127.0.0.1\"\ninsecure = true\n",
        )
        .unwrap();
    }
}

/// docker-registry on 127.0.0.1 with a free port and its access log kept.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Registry {
    pub fn start() -> Registry {
        allow_loopback_registries();
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (Debian's package) runs");
        assert!(
            wait_until(Duration::from_secs(20), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "the registry did not start"
        );
        Registry { child, dir, port }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The layer and config blobs fetched so far, from the registry's access log.
    pub fn blob_gets(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("log"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .map(|l| {
                l.split("/blobs/")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    /// (digest, bytes sent) of each blob GET so far, from the access log.
    pub fn blob_transfers(&self) -> Vec<(String, u64)> {
        fs::read_to_string(self.dir.path().join("log"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .map(|l| {
                let digest = l
                    .split("/blobs/")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap();
                // ... HTTP/1.1" 200 BYTES "referer" "agent"
                let after = l.split("HTTP/1.1\" ").nth(1).unwrap_or("");
                let bytes = after
                    .split(' ')
                    .nth(1)
                    .and_then(|b| b.parse().ok())
                    .unwrap_or(0);
                (digest.to_string(), bytes)
            })
            .collect()
    }

    /// The file holding a blob in the registry's storage.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// buildah with a storage of its own.
pub struct Buildah {
    storage: tempfile::TempDir,
}

impl Buildah {
    pub fn new() -> Buildah {
        Buildah {
            storage: tempfile::tempdir().unwrap(),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(self.storage.path().join("root"))
            .arg("--runroot")
            .arg(self.storage.path().join("run"))
            .args(["--storage-driver", "vfs"]);
        c
    }

    /// Build `containerfile` in `context` as `tag` and push it; the manifest digest.
    pub fn build_and_push(&self, context: &Path, containerfile: &str, tag: &str) -> String {
        fs::write(context.join("Containerfile"), containerfile).unwrap();
        run(self
            .cmd()
            .args([
                "bud",
                "--isolation",
                "chroot",
                "--tls-verify=false",
                "-t",
                tag,
            ])
            .arg(context));
        let digestfile = context.join("digest");
        run(self
            .cmd()
            .args(["push", "--tls-verify=false", "--digestfile"])
            .arg(&digestfile)
            .arg(tag)
            .arg(format!("docker://{tag}")));
        fs::read_to_string(digestfile).unwrap().trim().to_string()
    }
}

/// A plain Debian root (as debootstrap leaves one) as a tar, for `ADD`.
pub fn base_context(dir: &Path, version: &str, with_kernel: bool) {
    let tree = dir.join("tree");
    run(Command::new("python3")
        .arg(fixtures().join("host-tree.py"))
        .arg(&tree)
        .args(["--raw", "--version", version]));
    if !with_kernel {
        fs::remove_dir_all(tree.join("boot")).unwrap();
        fs::create_dir(tree.join("boot")).unwrap();
    }
    run(Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .arg("-cf")
        .arg(dir.join("rootfs.tar"))
        .arg("."));
    fs::remove_dir_all(&tree).unwrap();
}

/// The layer digests of the image at `name` (HOST/NAME:TAG or @DIGEST), bottom first.
pub fn manifest_layers(name: &str) -> Vec<String> {
    manifest_layers_in(&format!("docker://{name}"))
}

pub fn manifest_layers_of_digest(host: &str, digest: &str) -> Vec<String> {
    manifest_layers(&format!("{host}/debian/os@{digest}"))
}

pub fn manifest_layers_in(transport_ref: &str) -> Vec<String> {
    let manifest: serde_json::Value = serde_json::from_str(&stdout(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(transport_ref),
    ))
    .unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// `container lint` on a root as a Containerfile leaves it: exit 0 with
/// warnings only, 1 with an error, and every finding named.
#[test]
fn container_lint_names_what_will_not_work_once_deployed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    run(Command::new("python3")
        .arg(fixtures().join("host-tree.py"))
        .arg(&root)
        .args(["--raw", "--version", "1"]));
    let lint = || {
        code(
            Command::new(cli())
                .args(["container", "lint", "--rootfs"])
                .arg(&root),
        )
    };
    let (rc, out, err) = lint();
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("ready to deploy (0 warnings)"), "{out}");

    fs::create_dir_all(root.join("var/lib/myapp")).unwrap();
    fs::write(root.join("var/lib/myapp/seed"), "x").unwrap();
    let (rc, out, _) = lint();
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains("warning: 1 files under /var") && out.contains("/var/lib/myapp/seed"),
        "{out}"
    );

    for kernel in fs::read_dir(root.join("boot")).unwrap() {
        fs::remove_file(kernel.unwrap().path()).unwrap();
    }
    fs::create_dir_all(root.join("usr/etc")).unwrap();
    let (rc, out, _) = lint();
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("error: no kernel"), "{out}");
    assert!(out.contains("error: /usr/etc exists"), "{out}");
    assert!(out.contains("2 errors"), "{out}");
}

/// `apt-ostree compose container-encapsulate --repo REPO REV DEST`; the digest it reports.
pub fn encapsulate(repo: &Path, rev: &str, dest: &str) -> String {
    let (rc, out, err) = code(
        Command::new(cli())
            .args(["compose", "container-encapsulate", "--repo"])
            .arg(repo)
            .args([rev, dest]),
    );
    assert_eq!(rc, 0, "{out}{err}");
    out.lines()
        .find_map(|l| l.trim().strip_prefix("digest: "))
        .expect("a digest line")
        .to_string()
}
