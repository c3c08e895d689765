//! The layout's blobs: layers written as deterministic tar and gzip
//! streams, digested as they are written and synced before anything that
//! names them (manifest, index) is written.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ostree::gio;
use ostree::gio::prelude::*;
use sha2::{Digest as _, Sha256};

use super::{Entry, Kind};

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
pub(super) struct Blob {
    pub(super) digest: String,
    pub(super) size: u64,
}

pub(super) fn write_blob(dir: &Path, bytes: &[u8]) -> Result<Blob> {
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
pub(super) fn write_layer(
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
    // On disk before the manifest that names it is written.
    compressed
        .inner
        .get_ref()
        .sync_all()
        .context("Syncing the layer")?;
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
    std::fs::File::open(dir.join("blobs/sha256"))
        .and_then(|d| d.sync_all())
        .context("Syncing the layout's blobs")?;
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

/// Point `tag` of the layout's index at `manifest`, keeping its other tags.
pub(super) fn write_index(dir: &Path, tag: &str, manifest: &Blob) -> Result<()> {
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
