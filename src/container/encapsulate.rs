//! `compose container-encapsulate`: a composed commit as an OCI image that
//! container tools can build on.
//!
//! The image is a plain Debian root file system, the reverse of the
//! deployable layout: /etc in place (from /usr/etc), dpkg's database in
//! /var/lib/dpkg, real directories for /root, /home, /opt, /srv, /mnt and
//! /usr/local, and the scratch /var that apt and dpkg need during a build.
//! Deploying the image converts it back ([`super::assemble`]).
//!
//! Files are split into layers by Debian package, from dpkg's `*.list`
//! files: the largest packages get a layer each, the rest share one, files
//! no package owns form the first layer, the initramfs and generated files
//! (tmpfiles.d, sysusers.d, ld.so.cache) one each, and dpkg's database the last. An update that changes one package changes its
//! layer and the database's. The tar and gzip streams are written
//! deterministically (sorted, mtime 0, numeric owners, no gzip time or
//! name), so the same commit always gives the same image digest.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ostree::gio;
use ostree::gio::prelude::*;
use sha2::{Digest as _, Sha256};

use crate::progress::Sink;
use crate::sysroot::CommitInfo;

/// Labels every encapsulated base carries (bootc's and ostree's conventions).
const BOOTABLE_LABELS: &[(&str, &str)] = &[("containers.bootc", "1"), ("ostree.bootable", "1")];
/// Which layer a blob is, in its annotations.
const CONTENT_ANNOTATION: &str = "org.aptostree.layer.content";
const DEFAULT_MAX_LAYERS: usize = 48;

#[derive(Debug, Clone)]
pub struct EncapsulateOptions {
    /// At most this many layers (at least 6: files no package owns, one
    /// package, the other packages, the initramfs, generated files, dpkg's database).
    pub max_layers: usize,
    /// The packages that had layers of their own in the previous build
    /// ([`previous_layers`]): they keep them while they exist and fit, so
    /// that a package whose size shifted does not move every layer.
    pub previous_layers: Vec<String>,
}

impl Default for EncapsulateOptions {
    fn default() -> Self {
        EncapsulateOptions {
            max_layers: DEFAULT_MAX_LAYERS,
            previous_layers: Vec::new(),
        }
    }
}

/// What each layer of a previous build held, from its OCI image manifest
/// (`skopeo inspect --raw`, or the manifest blob of an `oci:` directory), as
/// rpm-ostree's `--previous-build-manifest` takes it.
pub fn previous_layers(manifest: &[u8]) -> Result<Vec<String>> {
    let manifest: serde_json::Value =
        serde_json::from_slice(manifest).context("not a JSON image manifest")?;
    let layers = manifest["layers"]
        .as_array()
        .context("not an image manifest: no \"layers\" list")?;
    let names: Vec<String> = layers
        .iter()
        .filter_map(|l| l["annotations"][CONTENT_ANNOTATION].as_str())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        bail!("the manifest's layers name no content ({CONTENT_ANNOTATION}): not written by container-encapsulate");
    }
    Ok(names)
}

/// The image written.
#[derive(Debug, Clone)]
pub struct Encapsulated {
    /// The manifest's digest.
    pub digest: String,
    /// What each layer holds ("rootfs", a package name, "other packages", "dpkg database").
    pub layers: Vec<String>,
}

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File { checksum: String, size: u64 },
    Symlink(String),
}

#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    uid: u32,
    gid: u32,
    mode: u32,
}

/// Where a file of the deployable tree lives in the plain root file system.
fn image_path(tree_path: &str) -> String {
    let moved = [
        ("usr/etc", "etc"),
        (crate::dpkg::DATABASE_DIR, "var/lib/dpkg"),
        // Packages' /opt trees: where dpkg put them, so that a build FROM
        // the image upgrades them in place (deploying moves them back).
        (crate::tree::OPT_IN_USR, "opt"),
    ];
    for (from, to) in moved {
        if tree_path == from {
            return to.to_string();
        }
        if let Some(rest) = tree_path
            .strip_prefix(from)
            .and_then(|r| r.strip_prefix('/'))
        {
            return format!("{to}/{rest}");
        }
    }
    tree_path.to_string()
}

/// Places that the deployable tree links into /var, which are directories again in the image.
const LINKED_INTO_VAR: &[(&str, u32)] = &[
    ("home", 0o755),
    ("root", 0o700),
    ("opt", 0o755),
    ("srv", 0o755),
    ("mnt", 0o755),
    ("usr/local", 0o755),
];

/// What apt and dpkg need under /var during a container build.
const BUILD_SCRATCH: &[(&str, u32)] = &[
    ("var/cache/apt/archives/partial", 0o755),
    ("var/lib/apt/lists/partial", 0o755),
    ("var/cache/debconf", 0o755),
    ("var/log", 0o755),
    ("var/tmp", 0o1777),
];

/// Every entry of `commit`, by image path.
fn read_tree(repo: &ostree::Repo, commit: &str) -> Result<BTreeMap<String, Entry>> {
    let (root, _) = repo
        .read_commit(commit, gio::Cancellable::NONE)
        .with_context(|| format!("Reading commit {commit}"))?;
    let mut entries = BTreeMap::new();
    let mut stack = vec![(root, String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let children = dir.enumerate_children(
            "standard::name,standard::type,standard::size,standard::symlink-target,unix::uid,unix::gid,unix::mode",
            gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
            gio::Cancellable::NONE,
        )?;
        for info in children {
            let info = info?;
            let name = info.name().to_string_lossy().to_string();
            let tree_path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let child = dir.child(&name);
            let (uid, gid, mode) = (
                info.attribute_uint32("unix::uid"),
                info.attribute_uint32("unix::gid"),
                info.attribute_uint32("unix::mode") & 0o7777,
            );
            let kind = match info.file_type() {
                gio::FileType::Directory => {
                    stack.push((child.clone(), tree_path.clone()));
                    Kind::Dir
                }
                gio::FileType::SymbolicLink => Kind::Symlink(
                    info.symlink_target()
                        .map(|t| t.to_string_lossy().to_string())
                        .unwrap_or_default(),
                ),
                _ => {
                    let file = child
                        .downcast::<ostree::RepoFile>()
                        .map_err(|_| anyhow::anyhow!("{tree_path} is not a repository file"))?;
                    file.ensure_resolved()?;
                    Kind::File {
                        checksum: file.checksum().to_string(),
                        size: info.size() as u64,
                    }
                }
            };
            entries.insert(
                image_path(&tree_path),
                Entry {
                    kind,
                    uid,
                    gid,
                    mode,
                },
            );
        }
    }
    for (path, mode) in LINKED_INTO_VAR.iter().chain(BUILD_SCRATCH) {
        let dir = Entry {
            kind: Kind::Dir,
            uid: 0,
            gid: 0,
            mode: *mode,
        };
        let is_link = matches!(
            entries.get(*path),
            Some(Entry {
                kind: Kind::Symlink(_),
                ..
            })
        );
        if is_link || !entries.contains_key(*path) {
            entries.insert(path.to_string(), dir);
        }
    }
    // Parents of the scratch directories.
    for path in [
        "var/cache/apt",
        "var/cache/apt/archives",
        "var/lib/apt",
        "var/lib/apt/lists",
        "var/cache",
        "var/lib",
    ] {
        entries.entry(path.to_string()).or_insert(Entry {
            kind: Kind::Dir,
            uid: 0,
            gid: 0,
            mode: 0o755,
        });
    }
    Ok(entries)
}

/// Which package owns each file, from dpkg's `info/*.list` in the commit.
fn owners(
    repo: &ostree::Repo,
    entries: &BTreeMap<String, Entry>,
) -> Result<HashMap<String, String>> {
    let mut owner = HashMap::new();
    for (path, entry) in entries.range("var/lib/dpkg/info/".to_string()..) {
        let Some(name) = path.strip_prefix("var/lib/dpkg/info/") else {
            break;
        };
        let (Some(package), Kind::File { checksum, .. }) =
            (name.strip_suffix(".list"), &entry.kind)
        else {
            continue;
        };
        let package = package.split(':').next().unwrap_or(package);
        let mut text = String::new();
        content(repo, checksum)?.read_to_string(&mut text)?;
        for line in text.lines() {
            let p = line.trim_start_matches('/');
            if !p.is_empty() {
                owner
                    .entry(p.to_string())
                    .or_insert_with(|| package.to_string());
            }
        }
    }
    Ok(owner)
}

fn content(repo: &ostree::Repo, checksum: &str) -> Result<Box<dyn Read>> {
    let (stream, _, _) = repo
        .load_file(checksum, gio::Cancellable::NONE)
        .with_context(|| format!("Loading object {checksum}"))?;
    let stream = stream.context("a regular file without content")?;
    Ok(Box::new(stream.into_read()))
}

/// Files that tools generate from the packages' content rather than ship.
fn is_generated(path: &str) -> bool {
    [
        "usr/lib/tmpfiles.d/",
        "usr/lib/sysusers.d/",
        "usr/share/factory/",
        "etc/ld.so.cache",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

/// The layers: name and the paths each holds (their parent directories are implied).
fn plan_layers(
    entries: &BTreeMap<String, Entry>,
    owner: &HashMap<String, String>,
    max_layers: usize,
    previous: &[String],
) -> Vec<(String, Vec<String>)> {
    let mut rootfs = Vec::new();
    // Files no package owns that change with almost any package change
    // (tmpfiles.d and sysusers.d lists, ld.so.cache, factory copies of
    // /var), and the generated initramfs: layers of their own, so that an
    // update of one package does not change the large first layer.
    let mut generated = Vec::new();
    let mut boot = Vec::new();
    let mut database = Vec::new();
    let mut by_package: BTreeMap<&str, (u64, Vec<String>)> = BTreeMap::new();
    for (path, entry) in entries {
        if path.starts_with("var/lib/dpkg/") {
            database.push(path.clone());
            continue;
        }
        // A directory is in the layer of the package that lists it, else in
        // the first layer, so that empty ones exist (/root, apt's lists) and
        // a package that adds one changes only its own layer; every layer
        // also repeats the parents of what it holds.
        if matches!(entry.kind, Kind::Dir) {
            match owner.get(path) {
                Some(package) => by_package.entry(package).or_default().1.push(path.clone()),
                None => rootfs.push(path.clone()),
            }
            continue;
        }
        match owner.get(path) {
            Some(package) => {
                let slot = by_package.entry(package).or_default();
                slot.0 += match entry.kind {
                    Kind::File { size, .. } => size,
                    _ => 0,
                };
                slot.1.push(path.clone());
            }
            None if is_generated(path) => generated.push(path.clone()),
            None if path.starts_with("usr/lib/modules/") => boot.push(path.clone()),
            None => rootfs.push(path.clone()),
        }
    }
    // The packages that had layers of their own in the previous build keep
    // them; the largest others fill what is left. The order is by name.
    let own = max_layers.saturating_sub(5).max(1);
    let mut sizes: Vec<(&str, u64)> = by_package.iter().map(|(p, (s, _))| (*p, *s)).collect();
    sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let kept = previous
        .iter()
        .map(String::as_str)
        .filter(|p| by_package.contains_key(p));
    let mut big = std::collections::BTreeSet::new();
    for package in kept.chain(sizes.iter().map(|(p, _)| *p)) {
        if big.len() == own {
            break;
        }
        big.insert(package);
    }
    let mut layers = vec![("rootfs".to_string(), rootfs)];
    let mut others = Vec::new();
    for (package, (_, files)) in by_package {
        if big.contains(package) {
            layers.push((package.to_string(), files));
        } else {
            others.extend(files);
        }
    }
    if !others.is_empty() {
        layers.push(("other packages".to_string(), others));
    }
    if !boot.is_empty() {
        layers.push(("initramfs".to_string(), boot));
    }
    if !generated.is_empty() {
        layers.push(("generated files".to_string(), generated));
    }
    layers.push(("dpkg database".to_string(), database));
    layers
}

/// Writes what passes through it to `inner`, counting and hashing it.
struct Digesting<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W> Digesting<W> {
    fn new(inner: W) -> Self {
        Digesting {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }
    fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }
}

/// Hands the compressor the same chunks for the same stream, however the
/// bytes arrived (a bare repository and an archive one read files in
/// different pieces): deflate's output may depend on the chunking.
struct FixedChunks<W: Write> {
    inner: W,
    buffer: Vec<u8>,
}

const CHUNK: usize = 1 << 16;

impl<W: Write> Write for FixedChunks<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        let whole = self.buffer.len() / CHUNK * CHUNK;
        for chunk in self.buffer[..whole].chunks(CHUNK) {
            self.inner.write_all(chunk)?;
        }
        self.buffer.drain(..whole);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        // Only the end of the stream passes a short chunk: see finish().
        Ok(())
    }
}

impl<W: Write> FixedChunks<W> {
    fn finish(mut self) -> std::io::Result<W> {
        self.inner.write_all(&self.buffer)?;
        Ok(self.inner)
    }
}

/// A blob written into `blobs/sha256/`: its digest and size.
struct Blob {
    digest: String,
    size: u64,
}

fn write_blob(dir: &Path, bytes: &[u8]) -> Result<Blob> {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    let path = blob_path(dir, &digest);
    crate::fsutil::write_atomic(&path, bytes)?;
    Ok(Blob {
        digest,
        size: bytes.len() as u64,
    })
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn header(entry: &Entry, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_uid(entry.uid.into());
    h.set_gid(entry.gid.into());
    h.set_mode(entry.mode);
    h.set_mtime(0);
    h.set_size(size);
    h
}

/// One layer: its files and every directory above them, sorted. Returns
/// (compressed blob, diff_id).
fn write_layer(
    repo: &ostree::Repo,
    dir: &Path,
    entries: &BTreeMap<String, Entry>,
    files: &[String],
) -> Result<(Blob, String)> {
    let mut paths: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for f in files {
        paths.insert(f);
        let mut p = f.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            paths.insert(parent);
            p = parent;
        }
    }
    let tmp = tempfile::NamedTempFile::new_in(dir.join("blobs"))?;
    let compressed = Digesting::new(std::io::BufWriter::new(tmp.reopen()?));
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(compressed, flate2::Compression::default());
    let chunked = FixedChunks {
        inner: gz,
        buffer: Vec::with_capacity(2 * CHUNK),
    };
    let mut tar = tar::Builder::new(Digesting::new(chunked));
    for path in paths {
        let entry = &entries[path];
        match &entry.kind {
            Kind::Dir => {
                let mut h = header(entry, tar::EntryType::Directory, 0);
                tar.append_data(&mut h, format!("{path}/"), std::io::empty())?;
            }
            Kind::Symlink(target) => {
                let mut h = header(entry, tar::EntryType::Symlink, 0);
                tar.append_link(&mut h, path, target)?;
            }
            Kind::File { checksum, size } => {
                let (stream, _, xattrs) = repo.load_file(checksum, gio::Cancellable::NONE)?;
                let pax = xattr_records(&xattrs);
                if !pax.is_empty() {
                    tar.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
                }
                let mut h = header(entry, tar::EntryType::Regular, *size);
                let reader = stream
                    .context("a regular file without content")?
                    .into_read();
                tar.append_data(&mut h, path, reader)?;
            }
        }
    }
    let uncompressed = tar.into_inner()?;
    let diff_id = uncompressed.digest();
    let mut compressed = uncompressed.inner.finish()?.finish()?;
    compressed.flush()?;
    let blob = Blob {
        digest: compressed.digest(),
        size: compressed.size,
    };
    drop(compressed);
    // As write_blob's: readable by the container tools of other users.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    let final_path = blob_path(dir, &blob.digest);
    tmp.persist(&final_path)
        .with_context(|| format!("Writing {}", final_path.display()))?;
    Ok((blob, diff_id))
}

/// `SCHILY.xattr.NAME` records for a file's extended attributes.
fn xattr_records(xattrs: &ostree::glib::Variant) -> Vec<(String, Vec<u8>)> {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = xattrs.get().unwrap_or_default();
    pairs
        .into_iter()
        .map(|(name, value)| {
            let name =
                String::from_utf8_lossy(name.strip_suffix(b"\0").unwrap_or(&name)).to_string();
            (format!("SCHILY.xattr.{name}"), value)
        })
        .collect()
}

/// Debian's architecture name as OCI (Go) spells it.
fn oci_architecture(debian: &str) -> &str {
    match debian {
        "i386" => "386",
        "armhf" | "armel" => "arm",
        "ppc64el" => "ppc64le",
        other => other,
    }
}

/// Write `commit` as an image into the OCI layout directory `dir`, tagged `tag`.
pub fn encapsulate_to_oci_dir(
    repo: &ostree::Repo,
    commit: &str,
    dir: &Path,
    tag: &str,
    opts: &EncapsulateOptions,
    sink: &Sink,
) -> Result<Encapsulated> {
    if opts.max_layers < 6 {
        bail!("--max-layers must be at least 6 (files no package owns, a package, the other packages, the initramfs, generated files, dpkg's database)");
    }
    let info = CommitInfo::load(repo, commit)?;
    let entries = sink.task("Reading the commit", || read_tree(repo, commit))?;
    let owner = owners(repo, &entries)?;
    let layers = plan_layers(&entries, &owner, opts.max_layers, &opts.previous_layers);
    std::fs::create_dir_all(dir.join("blobs/sha256"))?;
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, (name, files)) in layers.iter().enumerate() {
        let (blob, diff_id) = sink.task(
            &format!("Writing layer {}/{} ({name})", i + 1, layers.len()),
            || write_layer(repo, dir, &entries, files),
        )?;
        descriptors.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": blob.digest,
            "size": blob.size,
            "annotations": { CONTENT_ANNOTATION: name },
        }));
        diff_ids.push(diff_id);
    }
    let created = chrono::DateTime::from_timestamp(info.timestamp as i64, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut status = Vec::new();
    if let Some(Entry {
        kind: Kind::File { checksum, .. },
        ..
    }) = entries.get("var/lib/dpkg/status")
    {
        content(repo, checksum)?.read_to_end(&mut status)?;
    }
    let packages = crate::dpkg::parse_status(&String::from_utf8_lossy(&status));
    let architecture = packages
        .iter()
        .find(|p| p.name == "dpkg")
        .map(|p| oci_architecture(&p.architecture).to_string())
        .unwrap_or_else(|| "amd64".into());
    let mut labels: BTreeMap<String, String> = BOOTABLE_LABELS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(v) = &info.version {
        labels.insert("org.opencontainers.image.version".into(), v.clone());
        labels.insert("version".into(), v.clone());
    }
    labels.insert("ostree.commit".into(), commit.to_string());
    // The package list, so that `upgrade --preview` needs no layer.
    labels.insert(
        super::PACKAGES_LABEL.into(),
        super::packages_label(&packages),
    );
    // Derived images inherit the labels: the list holds only while the
    // image ends with the layers it was written for.
    if let Some(top) = diff_ids.last() {
        labels.insert(super::PACKAGES_TOP_LAYER_LABEL.into(), top.clone());
    }
    let config = serde_json::json!({
        "created": created,
        "architecture": architecture,
        "os": "linux",
        "config": { "Labels": labels, "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": layers.iter().map(|(name, _)| serde_json::json!({
            "created": created,
            "created_by": format!("apt-ostree compose container-encapsulate: {name}"),
        })).collect::<Vec<_>>(),
    });
    let config = write_blob(dir, &serde_json::to_vec(&config)?)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.digest,
            "size": config.size,
        },
        "layers": descriptors,
    });
    let manifest = write_blob(dir, &serde_json::to_vec(&manifest)?)?;
    write_index(dir, tag, &manifest)?;
    crate::fsutil::write_atomic(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(Encapsulated {
        digest: manifest.digest,
        layers: layers.into_iter().map(|(name, _)| name).collect(),
    })
}

/// Point `tag` of the layout's index at `manifest`, keeping its other tags.
fn write_index(dir: &Path, tag: &str, manifest: &Blob) -> Result<()> {
    const REF_NAME: &str = "org.opencontainers.image.ref.name";
    let path = dir.join("index.json");
    let mut manifests: Vec<serde_json::Value> = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .with_context(|| format!("Reading {}", path.display()))?["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("Reading {}", path.display())),
    };
    manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag));
    manifests.push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest.digest,
        "size": manifest.size,
        "annotations": { REF_NAME: tag },
    }));
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": manifests });
    crate::fsutil::write_atomic(&path, &serde_json::to_vec(&index)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployable_layout_maps_back_to_a_plain_root() {
        assert_eq!(image_path("usr/etc"), "etc");
        assert_eq!(image_path("usr/etc/passwd"), "etc/passwd");
        assert_eq!(
            image_path("usr/share/dpkg/database/status"),
            "var/lib/dpkg/status"
        );
        assert_eq!(image_path("usr/etcetera"), "usr/etcetera");
        assert_eq!(image_path("usr/bin/sh"), "usr/bin/sh");
        assert_eq!(image_path("usr/lib/opt/vendor/bin/x"), "opt/vendor/bin/x");
    }

    #[test]
    fn the_largest_packages_get_layers_and_the_database_comes_last() {
        let file = |size| Entry {
            kind: Kind::File {
                checksum: String::new(),
                size,
            },
            uid: 0,
            gid: 0,
            mode: 0o644,
        };
        let mut entries = BTreeMap::new();
        for (path, size) in [
            ("usr/bin/big", 900),
            ("usr/bin/mid", 500),
            ("usr/bin/small", 1),
            ("etc/unowned", 5),
            ("var/lib/dpkg/status", 10),
        ] {
            entries.insert(path.to_string(), file(size));
        }
        entries.insert(
            "usr".into(),
            Entry {
                kind: Kind::Dir,
                uid: 0,
                gid: 0,
                mode: 0o755,
            },
        );
        let owner: HashMap<String, String> = [
            ("usr/bin/big", "big"),
            ("usr/bin/mid", "mid"),
            ("usr/bin/small", "small"),
        ]
        .into_iter()
        .map(|(p, o)| (p.to_string(), o.to_string()))
        .collect();
        let names = |layers: Vec<(String, Vec<String>)>| {
            layers.into_iter().map(|l| l.0).collect::<Vec<_>>()
        };
        entries.insert("usr/lib/tmpfiles.d/x.conf".into(), file(3));
        assert_eq!(
            names(plan_layers(&entries, &owner, 6, &[])),
            [
                "rootfs",
                "big",
                "other packages",
                "generated files",
                "dpkg database"
            ]
        );
        assert_eq!(
            names(plan_layers(&entries, &owner, 48, &[])),
            [
                "rootfs",
                "big",
                "mid",
                "small",
                "generated files",
                "dpkg database"
            ]
        );
        // The previous build gave "small" a layer: it keeps it, ahead of
        // larger packages; a package that is gone is passed over.
        let previous = ["gone".to_string(), "small".to_string()];
        assert_eq!(
            names(plan_layers(&entries, &owner, 6, &previous)),
            [
                "rootfs",
                "small",
                "other packages",
                "generated files",
                "dpkg database"
            ]
        );
    }
}
