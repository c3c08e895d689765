//! `apt-ostree compose tree`: build a deployable Debian base image from a treefile.
//!
//! 1. Root file system: mmdebstrap (suite, mirror or sources, variant,
//!    packages), or a copy of an existing tree (`rootfs`).
//! 2. Files from the treefile, then the postprocess script, run in the same
//!    bubblewrap sandbox as maintainer scripts (no network).
//! 3. Conversion into a deployable tree ([`crate::tree::make_deployable`]).
//! 4. Commit with metadata (version, every package, the input hash), move the
//!    ref, update the summary, optionally write a static delta from the previous
//!    commit, so any static HTTP server can serve the repository to a fleet.
//!
//! An unchanged input (same treefile, files and script) makes no new commit.
//! Any failure leaves the ref where it was.

pub mod command;
mod disk;
pub mod export;
pub(crate) mod grub;
pub mod image;
pub mod treefile;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ostree::{gio, glib};

use crate::dpkg;
use crate::progress::Sink;
use crate::sandbox::Sandbox;
use crate::sysroot::{commit_directory, keys, CommitInfo, NewCommit};
pub use command::main;
pub use treefile::{Source, Treefile};

/// Metadata key holding the hash of everything the image was built from.
pub const INPUT_HASH: &str = "apt-ostree.input-hash";

#[derive(Debug, Clone, Default)]
pub struct ComposeOptions {
    pub repo: PathBuf,
    /// Also write a static delta from the previous commit of the ref.
    pub static_delta: bool,
    /// Where to build (default: a directory next to the repository).
    pub workdir: Option<PathBuf>,
    /// Sign the commit with this GPG key (and keyring directory).
    pub gpg_sign: Option<String>,
    pub gpg_homedir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Composed {
    pub reference: String,
    pub commit: String,
    pub version: String,
    /// False when the input was unchanged and no commit was made.
    pub changed: bool,
    pub packages: usize,
    pub rootfs_time: Duration,
    pub convert_time: Duration,
    pub commit_time: Duration,
}

/// The hash of everything that goes into the image: treefile, files,
/// script, local packages, apt sources, and the signing key (a commit made
/// unsigned is not the one asked for with a key).
fn input_hash(text: &str, t: &Treefile, signing_key: Option<&str>) -> Result<String> {
    let mut data = text.as_bytes().to_vec();
    if let Some(key) = signing_key {
        data.extend(b"\0gpg-sign\0");
        data.extend(key.as_bytes());
    }
    for (dest, src) in &t.files {
        data.extend(dest.as_bytes());
        data.extend(
            std::fs::read(src).with_context(|| format!("files: reading {}", src.display()))?,
        );
    }
    if let Some(p) = &t.postprocess {
        data.extend(
            std::fs::read(p).with_context(|| format!("postprocess: reading {}", p.display()))?,
        );
    }
    for deb in local_debs(&t.local_packages)? {
        data.extend(
            std::fs::read(&deb)
                .with_context(|| format!("local-packages: reading {}", deb.display()))?,
        );
    }
    if let Ok(Source::Mmdebstrap { mirrors, .. }) = t.source() {
        for m in mirrors {
            data.extend(std::fs::read(&m).unwrap_or_else(|_| m.into_bytes()));
        }
    }
    data.extend(env!("CARGO_PKG_VERSION").as_bytes());
    Ok(
        glib::compute_checksum_for_data(glib::ChecksumType::Sha256, &data)
            .context("Hashing the inputs")?
            .to_string(),
    )
}

fn open_repo(path: &Path) -> Result<ostree::Repo> {
    let repo = ostree::Repo::new(&gio::File::for_path(path));
    if path.join("config").exists() {
        repo.open(gio::Cancellable::NONE)
            .with_context(|| format!("Opening repository {}", path.display()))?;
    } else {
        std::fs::create_dir_all(path)?;
        repo.create(ostree::RepoMode::Archive, gio::Cancellable::NONE)
            .with_context(|| format!("Creating repository {}", path.display()))?;
    }
    Ok(repo)
}

/// `YYYYMMDD.N`, N counting up from the previous commit's version of the same day.
fn next_version(previous: Option<&str>) -> String {
    let today = chrono::Utc::now().format("%Y%m%d").to_string();
    let n = previous
        .and_then(|v| v.strip_prefix(&format!("{today}.")))
        .and_then(|n| n.parse::<u32>().ok())
        .map_or(0, |n| n + 1);
    format!("{today}.{n}")
}

/// The `.deb` files `local-packages` names: files, the `.deb`s of
/// directories, and patterns such as `debs/apt-ostree_*.deb` (`*` or `?` in
/// the file name) for one package out of a build directory that holds more.
fn local_debs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut debs = Vec::new();
    for path in paths {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(pattern) = name.filter(|n| n.contains(['*', '?'])) {
            let dir = path.parent().unwrap_or(Path::new("."));
            let found = debs_in(dir, |file| crate::fsutil::glob_matches(&pattern, file))?;
            if found.is_empty() {
                bail!("local-packages: no file matches {}", path.display());
            }
            debs.extend(found);
        } else if path.is_dir() {
            let found = debs_in(path, |_| true)?;
            if found.is_empty() {
                bail!("local-packages: {} holds no .deb file", path.display());
            }
            debs.extend(found);
        } else if path.extension().is_some_and(|e| e == "deb") && path.is_file() {
            debs.push(path.clone());
        } else {
            bail!(
                "local-packages: {} is neither a .deb file nor a directory",
                path.display()
            );
        }
    }
    Ok(debs)
}

/// The `.deb` files of `dir` whose names `wanted` accepts, sorted.
fn debs_in(dir: &Path, wanted: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("local-packages: reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .filter(|p| p.file_name().is_some_and(|n| wanted(&n.to_string_lossy())))
        .collect();
    found.sort();
    Ok(found)
}

fn build_rootfs(t: &Treefile, dest: &Path, scratch: &Path, sink: &Sink) -> Result<()> {
    match t.source()? {
        Source::Rootfs(src) => {
            if !src.is_dir() {
                bail!("rootfs {} is not a directory", src.display());
            }
            crate::process::run(
                Command::new("cp")
                    .args(["-a", "--reflink=auto"])
                    .arg(format!("{}/.", src.display()))
                    .arg(dest),
            )
            .context("Copying the rootfs")?;
        }
        Source::Mmdebstrap { suite, mirrors } => {
            let mut cmd = Command::new("mmdebstrap");
            cmd.arg(format!("--variant={}", t.variant))
                .arg("--mode=root")
                .arg("--format=directory")
                .arg("--skip=cleanup/reproducible")
                // Unwanted in an image: docs and translations, as minimal images do.
                .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
                .arg("--dpkgopt=path-include=/usr/share/doc/*/copyright")
                .arg("--dpkgopt=path-exclude=/usr/share/man/*")
                .arg("--dpkgopt=path-exclude=/usr/share/locale/*");
            if !t.packages.is_empty() {
                cmd.arg(format!("--include={}", t.packages.join(",")));
            }
            let debs = local_debs(&t.local_packages)?;
            if !debs.is_empty() {
                // mmdebstrap's root mode cannot install a host path given to
                // --include (dpkg runs chrooted); copy the packages in and let
                // apt in the chroot install them with their dependencies.
                let staged = scratch.join("local-packages");
                std::fs::create_dir_all(&staged)?;
                for deb in &debs {
                    let name = deb.file_name().expect("a file").to_string_lossy();
                    std::fs::copy(deb, staged.join(&*name))
                        .with_context(|| format!("local-packages: copying {}", deb.display()))?;
                }
                let staged = staged.display().to_string();
                if staged.chars().any(char::is_whitespace) {
                    bail!("local-packages: the work directory {staged:?} must not contain spaces");
                }
                // apt in the chroot resolves names through the chroot's
                // /etc/resolv.conf, which systemd-resolved (if the image
                // has it) made a link to a stub that nothing serves there:
                // the host's stands in while apt runs.
                cmd.arg(format!("--customize-hook=copy-in {staged} /tmp"))
                    .arg(
                        "--customize-hook=mv \"$1/etc/resolv.conf\" \"$1/etc/.resolv.conf.image\" \
                         2>/dev/null; cp -L /etc/resolv.conf \"$1/etc/resolv.conf\"",
                    )
                    .arg(
                        "--customize-hook=chroot \"$1\" env DEBIAN_FRONTEND=noninteractive sh -c \
                         'apt-get install --yes --no-install-recommends /tmp/local-packages/*.deb'",
                    )
                    .arg(
                        "--customize-hook=rm -f \"$1/etc/resolv.conf\"; \
                         mv \"$1/etc/.resolv.conf.image\" \"$1/etc/resolv.conf\" 2>/dev/null; \
                         rm -rf \"$1\"/tmp/local-packages",
                    );
            }
            cmd.arg(&suite).arg(dest).args(&mirrors);
            let output =
                crate::process::run_logged(&mut cmd, sink).context("Running mmdebstrap")?;
            if !output.status.success() {
                let tail: Vec<&str> = output.text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "mmdebstrap failed ({}):\n{}",
                    output.status,
                    tail.join("\n")
                );
            }
        }
    }
    Ok(())
}

/// Copy the treefile's files in and run its postprocess script.
fn customize(t: &Treefile, root: &Path, scratch: &Path, sink: &Sink) -> Result<()> {
    for (dest, src) in &t.files {
        let inside = dest.trim_start_matches('/');
        let inside = match inside.strip_prefix("etc/") {
            Some(rest) => format!("usr/etc/{rest}"),
            None => inside.to_string(),
        };
        // The tree is packages' content: its links are resolved inside it.
        let tree = crate::fsutil::Beneath::open(root)?;
        if let Some((parent, _)) = inside.rsplit_once('/') {
            tree.create_dir_all(parent)?;
        }
        let copied = std::fs::File::open(src).and_then(|f| Ok((f.metadata()?, f)));
        let (meta, mut file) =
            copied.with_context(|| format!("files: {} -> {dest}", src.display()))?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
        tree.write_from(
            &inside,
            &mut file,
            &crate::fsutil::Meta {
                kind: crate::fsutil::Kind::File,
                mode,
                uid: 0,
                gid: 0,
            },
        )
        .with_context(|| format!("files: {} -> {dest}", src.display()))?;
    }
    if let Some(script) = &t.postprocess {
        let var = scratch.join("postprocess-var");
        std::fs::create_dir_all(&var)?;
        let sandbox = Sandbox {
            root: root.to_path_buf(),
            var,
            ro_binds: vec![(script.clone(), "/run/apt-ostree-postprocess".into())],
        };
        sink.task_begin("Running the postprocess script");
        let ran = sandbox.run(&["/bin/sh", "-e", "/run/apt-ostree-postprocess"], sink)?;
        if !ran.status.success() {
            bail!(
                "postprocess script {} failed ({}):\n{}",
                script.display(),
                ran.status,
                ran.text
            );
        }
        sink.task_end("Running the postprocess script");
    }
    Ok(())
}

/// The input hash recorded in `commit`, if any.
fn input_hash_of(repo: &ostree::Repo, commit: &str) -> Result<Option<String>> {
    let (commit, _) = repo.load_commit(commit)?;
    let md = glib::VariantDict::new(Some(&commit.child_value(0)));
    Ok(md.lookup::<String>(INPUT_HASH).ok().flatten())
}

/// Commit `root`, sign it and write the static delta from its parent as
/// `opts` ask, then move `reference` to it and update the summary.
fn commit_and_publish(
    repo: &ostree::Repo,
    root: &Path,
    opts: &ComposeOptions,
    signing_key: Option<&str>,
    sink: &Sink,
    new: NewCommit,
    reference: &str,
) -> Result<String> {
    let previous = new.parent.map(str::to_string);
    let commit = sink.task("Committing", || commit_directory(repo, root, None, new))?;
    if let Some(key) = signing_key {
        let homedir = opts.gpg_homedir.as_ref().map(|p| p.display().to_string());
        sink.task("Signing", || {
            repo.sign_commit(&commit, key, homedir.as_deref(), gio::Cancellable::NONE)
                .with_context(|| format!("Signing {commit} with key {key}"))
        })?;
    }
    if let (true, Some(prev)) = (opts.static_delta, &previous) {
        sink.task("Writing a static delta", || -> Result<()> {
            // libostree wants its parameters as a dictionary, empty or not.
            let params = glib::VariantDict::new(None).end();
            repo.static_delta_generate(
                ostree::StaticDeltaGenerateOpt::Major,
                Some(prev),
                &commit,
                None,
                Some(&params),
                gio::Cancellable::NONE,
            )
            .with_context(|| format!("Writing the static delta {prev} -> {commit}"))
        })?;
    }
    repo.set_ref_immediate(None, reference, Some(&commit), gio::Cancellable::NONE)
        .with_context(|| format!("Moving {reference} to {commit}"))?;
    repo.regenerate_summary(None, gio::Cancellable::NONE)
        .context("Updating the summary")?;
    Ok(commit)
}

/// Where installed systems find the key their updates are signed with:
/// libostree trusts every keyring in /usr/share/ostree/trusted.gpg.d, so
/// a machine verifies with the key of the image it runs, rebased or not.
pub const TRUSTED_KEYRINGS: &str = "usr/share/ostree/trusted.gpg.d";

/// Put the public part of `key` into the tree, for machines to verify with.
fn install_public_key(
    root: &Path,
    key: &str,
    homedir: Option<&Path>,
    reference: &str,
) -> Result<()> {
    // gpg writes outside the tree; the tree gets a copy, beneath its root.
    let scratch = tempfile::tempdir().context("Creating a directory for the key")?;
    let file = scratch.path().join("key.gpg");
    let mut gpg = std::process::Command::new("gpg");
    if let Some(h) = homedir {
        gpg.arg("--homedir").arg(h);
    }
    gpg.args(["--batch", "--yes", "--output"])
        .arg(&file)
        .args(["--export", key]);
    crate::process::run(&mut gpg).context("Exporting the signing key's public part")?;
    let exported = std::fs::read(&file).unwrap_or_default();
    if exported.is_empty() {
        bail!("gpg-key: no public key {key} in the GnuPG home directory");
    }
    let tree = crate::fsutil::Beneath::open(root)?;
    tree.create_dir_all(TRUSTED_KEYRINGS)?;
    let name = format!("apt-ostree-{}.gpg", reference.replace('/', "-"));
    tree.write(&format!("{TRUSTED_KEYRINGS}/{name}"), &exported, 0o644)
}

/// Compose the image described by the treefile at `path`.
/// What a composed commit records: its version, packages, input hash,
/// kernel arguments, collection binding and remote.
fn commit_metadata(
    t: &Treefile,
    version: &str,
    packages: &[(String, String, String)],
    hash: &str,
) -> glib::VariantDict {
    let metadata = glib::VariantDict::new(None);
    metadata.insert(keys::VERSION, version);
    metadata.insert(keys::PACKAGES, packages.to_vec());
    metadata.insert(INPUT_HASH, hash);
    if !t.kargs.is_empty() {
        metadata.insert(keys::KARGS, t.kargs.clone());
    }
    if let Some(id) = &t.collection_id {
        // libostree's own keys: a pull checks them against the remote's
        // collection-id and the ref asked for.
        metadata.insert("ostree.collection-binding", id);
        metadata.insert("ostree.ref-binding", vec![t.reference.clone()]);
    }
    if let Some(remote) = &t.remote {
        metadata.insert(keys::REMOTE_NAME, &remote.name);
        metadata.insert(keys::REMOTE_URL, &remote.url);
        metadata.insert(keys::REMOTE_GPG_VERIFY, remote.gpg_verify);
    }
    metadata
}

pub fn compose_tree(path: &Path, opts: &ComposeOptions, sink: &Sink) -> Result<Composed> {
    if !nix::unistd::geteuid().is_root() {
        bail!("compose tree needs root (mmdebstrap, file ownership, bubblewrap)");
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("Reading {}", path.display()))?;
    let t = Treefile::load(path)?;
    let signing_key = opts.gpg_sign.clone().or_else(|| t.gpg_key.clone());
    let hash = input_hash(&text, &t, signing_key.as_deref())?;
    let repo = open_repo(&opts.repo)?;
    let previous = repo
        .resolve_rev(&t.reference, true)
        .context("Reading the ref")?
        .map(|c| c.to_string());
    let previous_info = previous
        .as_deref()
        .map(|c| CommitInfo::load(&repo, c))
        .transpose()?;
    if let Some(prev) = &previous {
        if input_hash_of(&repo, prev)?.as_deref() == Some(hash.as_str()) {
            return Ok(Composed {
                reference: t.reference.clone(),
                commit: prev.clone(),
                version: previous_info.and_then(|i| i.version).unwrap_or_default(),
                changed: false,
                packages: 0,
                rootfs_time: Duration::ZERO,
                convert_time: Duration::ZERO,
                commit_time: Duration::ZERO,
            });
        }
    }

    let work = match &opts.workdir {
        Some(w) => w.clone(),
        None => opts.repo.join("tmp"),
    };
    std::fs::create_dir_all(&work)?;
    let scratch = tempfile::Builder::new()
        .prefix("apt-ostree-compose-")
        .tempdir_in(&work)
        .context("Creating the work directory")?;
    let root = scratch.path().join("rootfs");
    std::fs::create_dir_all(&root)?;

    let started = Instant::now();
    sink.task("Building the root file system", || {
        build_rootfs(&t, &root, scratch.path(), sink)
    })?;
    let rootfs_time = started.elapsed();

    let started = Instant::now();
    let conversion = sink.task("Converting to a deployable tree", || {
        crate::tree::make_deployable(&root, t.placeholder_kernel)
    })?;
    customize(&t, &root, scratch.path(), sink)?;
    if let Some(key) = &signing_key {
        install_public_key(&root, key, opts.gpg_homedir.as_deref(), &t.reference)?;
    }
    let convert_time = started.elapsed();
    sink.log(format!(
        "Kernel {}, {} special files removed, {} tmpfiles.d lines",
        conversion.kernels.join(", "),
        conversion.special_files_removed,
        conversion.tmpfiles_lines
    ));

    let started = Instant::now();
    let packages = dpkg::packages_of_tree(&crate::fsutil::Beneath::open(&root)?)?;
    let version = t
        .version
        .clone()
        .unwrap_or_else(|| next_version(previous_info.as_ref().and_then(|i| i.version.as_deref())));
    let metadata = commit_metadata(&t, &version, &packages, &hash);
    let commit = commit_and_publish(
        &repo,
        &root,
        opts,
        signing_key.as_deref(),
        sink,
        NewCommit {
            parent: previous.as_deref(),
            subject: &format!("{} {version}", t.reference),
            metadata,
            refs: Vec::new(),
            // The ref moves last, once the commit is signed and its
            // delta written: a failure before leaves it where it was.
            set_ref: None,
            timestamp: None,
            bootable: true,
        },
        &t.reference,
    )?;
    let commit_time = started.elapsed();
    Ok(Composed {
        reference: t.reference.clone(),
        commit,
        version,
        changed: true,
        packages: packages.len(),
        rootfs_time,
        convert_time,
        commit_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_pick_one_package_out_of_a_build_directory() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "apt-ostree_1_amd64.deb",
            "cockpit-apt-ostree_1_all.deb",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let picked = local_debs(&[dir.path().join("apt-ostree_*.deb")]).unwrap();
        assert_eq!(picked, vec![dir.path().join("apt-ostree_1_amd64.deb")]);
        assert_eq!(local_debs(&[dir.path().to_path_buf()]).unwrap().len(), 2);
        let none = local_debs(&[dir.path().join("grub_*.deb")]).unwrap_err();
        assert!(none.to_string().contains("no file matches"), "{none}");
    }
}
