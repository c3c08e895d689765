//! One image layer (a tar, compressed or not) into the repository, as a
//! commit of its own, so that the next image that shares the layer does not
//! fetch it again.
//!
//! The layer's files become ordinary content objects, with the owners,
//! modes and extended attributes the tar records. OCI whiteouts are not
//! files: `.wh.NAME` (NAME was deleted from the layers below) and
//! `.wh..wh..opq` (the directory hides everything below) are recorded in the
//! commit's metadata and applied when the image is assembled. Device nodes
//! and FIFOs, which a deployable tree cannot hold, are left out. The digest
//! of the blob is checked as it is read: a layer that does not match it is
//! never committed (the repository transaction is aborted).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path};

use anyhow::{Context, Result};
use ostree::{gio, glib};
use sha2::{Digest as _, Sha256};

use crate::sysroot::{tree_entry, write_commit, NewCommit, TreeEntry};

/// Metadata keys of layer commits.
pub const LAYER_DIGEST: &str = "apt-ostree.layer.digest";
pub const WHITEOUTS: &str = "apt-ostree.layer.whiteouts";
pub const OPAQUE_DIRS: &str = "apt-ostree.layer.opaque-directories";
/// Directories the tar never named (parents of what it holds); see stack.rs.
pub const IMPLICIT_DIRS: &str = "apt-ostree.layer.implicit-directories";

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const AUFS_PREFIX: &str = ".wh..wh.";
/// How deep a layer's tree may go: what is deeper is no Debian tree, and
/// the recursions that stack, commit and check out trees must stay shallow.
const MAX_DEPTH: usize = 256;
/// Files up to this size are read whole; larger ones are streamed.
const INLINE_MAX: u64 = 1 << 20;

/// The ref that keeps a layer (and so what it shares with other images).
pub fn layer_ref(digest: &str) -> String {
    format!("apt-ostree/layer/{}", digest.replace(':', "/"))
}

/// What an assembled image needs to know of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub commit: String,
    /// Paths (relative, no leading '/') deleted from the layers below.
    pub whiteouts: Vec<String>,
    /// Directories whose lower content this layer hides.
    pub opaque_dirs: Vec<String>,
    /// Directories the layer's tar did not name ("" for the root).
    pub implicit_dirs: Vec<String>,
}

impl Layer {
    /// The layer stored for `digest`, if the repository has it.
    pub fn stored(repo: &ostree::Repo, digest: &str) -> Result<Option<Layer>> {
        let Some(commit) = repo
            .resolve_rev(&layer_ref(digest), true)
            .with_context(|| format!("Looking up layer {digest}"))?
        else {
            return Ok(None);
        };
        let (variant, _) = repo.load_commit(&commit)?;
        let metadata = glib::VariantDict::new(Some(&variant.child_value(0)));
        let list = |key: &str| {
            metadata
                .lookup::<Vec<String>>(key)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        Ok(Some(Layer {
            commit: commit.to_string(),
            whiteouts: list(WHITEOUTS),
            opaque_dirs: list(OPAQUE_DIRS),
            implicit_dirs: list(IMPLICIT_DIRS),
        }))
    }
}

/// Why a layer was refused: the caller names the image.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadLayer(pub String);

/// Hashes everything read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Import the blob in `blob` (whose digest must be `digest`) and point its
/// ref at it, inside the caller's repository transaction.
pub fn import(repo: &ostree::Repo, blob: &Path, digest: &str) -> Result<Layer> {
    let expected = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| BadLayer(format!("unsupported digest algorithm in {digest}")))?
        .to_string();
    let file = std::fs::File::open(blob).with_context(|| format!("Opening {}", blob.display()))?;
    let mut hashed = Hashing {
        inner: file,
        hasher: Sha256::new(),
    };
    let mut tree = TreeBuilder::new(repo);
    let metadata = glib::VariantDict::new(None);
    metadata.insert(LAYER_DIGEST, digest);
    let commit = write_commit(
        repo,
        NewCommit {
            parent: None,
            subject: &format!("layer {digest}"),
            metadata: metadata.clone(),
            refs: Vec::new(),
            set_ref: Some(&layer_ref(digest)),
            timestamp: Some(0),
            bootable: false,
        },
        || {
            {
                let mut buffered = BufReader::new(&mut hashed);
                let decompressed = decompressor(&mut buffered)?;
                let mut archive = tar::Archive::new(decompressed);
                for entry in archive
                    .entries()
                    .map_err(|e| BadLayer(format!("not a tar archive: {e}")))?
                {
                    let entry = entry.map_err(|e| BadLayer(format!("reading the tar: {e}")))?;
                    tree.add(entry)?;
                }
                // The rest of the stream (tar padding, compression trailer) counts for the digest.
                let mut rest = archive.into_inner();
                std::io::copy(&mut rest, &mut std::io::sink())
                    .map_err(|e| BadLayer(format!("reading the layer: {e}")))?;
            }
            std::io::copy(&mut hashed, &mut std::io::sink())?;
            let actual = hex::encode(hashed.hasher.clone().finalize());
            if actual != expected {
                return Err(BadLayer(format!(
                    "its content has digest sha256:{actual}, not {digest}"
                ))
                .into());
            }
            let root = tree.finish()?;
            metadata.insert(WHITEOUTS, &tree.whiteouts);
            metadata.insert(OPAQUE_DIRS, &tree.opaque_dirs);
            metadata.insert(IMPLICIT_DIRS, tree.implicit_dirs());
            Ok(root)
        },
    )?;
    Ok(Layer {
        commit,
        implicit_dirs: tree.implicit_dirs(),
        whiteouts: tree.whiteouts,
        opaque_dirs: tree.opaque_dirs,
    })
}

/// gzip, zstd or plain tar, told apart by their first bytes.
fn decompressor<'a>(input: &'a mut dyn BufRead) -> Result<Box<dyn Read + 'a>> {
    let head = input
        .fill_buf()
        .map_err(|e| BadLayer(format!("reading the layer: {e}")))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(input)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(BadLayer(
            "zstd-compressed layers are not supported yet; push the image with gzip".into(),
        )
        .into())
    } else {
        Ok(Box::new(input))
    }
}

/// The path of a tar entry relative to the root, or None for the root
/// itself. Absolute names and `..` are refused: a layer holds a tree, and
/// nothing in it names a place outside.
fn relative(path: &Path) -> Result<Option<String>> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(
                p.to_str()
                    .ok_or_else(|| BadLayer(format!("{path:?} is not UTF-8")))?
                    .to_string(),
            ),
            Component::CurDir => {}
            Component::RootDir => {
                return Err(BadLayer(format!("{} is an absolute name", path.display())).into())
            }
            Component::ParentDir | Component::Prefix(_) => {
                return Err(BadLayer(format!("{} leaves the root", path.display())).into())
            }
        }
    }
    if parts.len() > MAX_DEPTH {
        return Err(BadLayer(format!(
            "{} is deeper than {MAX_DEPTH} directories",
            path.display()
        ))
        .into());
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// Extended attributes as ostree keeps them: (NUL-terminated name, value), sorted.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Builds a layer's tree in a MutableTree, writing content objects as it goes.
struct TreeBuilder<'r> {
    repo: &'r ostree::Repo,
    root: ostree::MutableTree,
    /// Directory metadata objects already written, by (uid, gid, mode, xattrs).
    dirmeta: HashMap<(u32, u32, u32, Xattrs), String>,
    /// Content checksums by path, for hard links within the layer.
    files: HashMap<String, String>,
    whiteouts: Vec<String>,
    opaque_dirs: Vec<String>,
    /// Directories made only because something inside them came first.
    implicit: std::collections::BTreeSet<String>,
    root_has_metadata: bool,
}

impl<'r> TreeBuilder<'r> {
    fn new(repo: &'r ostree::Repo) -> Self {
        TreeBuilder {
            repo,
            root: ostree::MutableTree::new(),
            dirmeta: HashMap::new(),
            files: HashMap::new(),
            whiteouts: Vec::new(),
            opaque_dirs: Vec::new(),
            implicit: Default::default(),
            root_has_metadata: false,
        }
    }

    fn dirmeta(&mut self, uid: u32, gid: u32, mode: u32, xattrs: Xattrs) -> Result<String> {
        let key = (uid, gid, mode, xattrs);
        if let Some(c) = self.dirmeta.get(&key) {
            return Ok(c.clone());
        }
        let checksum = write_dirmeta(self.repo, uid, gid, mode, &key.3)?;
        self.dirmeta.insert(key, checksum.clone());
        Ok(checksum)
    }

    fn default_dirmeta(&mut self) -> Result<String> {
        self.dirmeta(0, 0, 0o755, Vec::new())
    }

    /// The directory that holds `path`, created (root-owned, 0755) where the tar did not say.
    fn parent_of(&mut self, path: &str) -> Result<(ostree::MutableTree, String)> {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (Some(d), n),
            None => (None, path),
        };
        let parent = match dir {
            None => self.root.clone(),
            Some(d) => {
                let meta = self.default_dirmeta()?;
                let parts: Vec<&str> = d.split('/').collect();
                self.ensure_dirs(&parts, &meta)?
            }
        };
        Ok((parent, name.to_string()))
    }

    /// The directory at `parts`, made (with `meta`, and remembered as
    /// implicit) where missing.
    fn ensure_dirs(&mut self, parts: &[&str], meta: &str) -> Result<ostree::MutableTree> {
        let mut dir = self.root.clone();
        for (i, part) in parts.iter().enumerate() {
            dir = match tree_entry(&dir, part)? {
                TreeEntry::Directory(sub) => sub,
                found => {
                    // A file of the same name earlier in this layer is replaced by the directory.
                    if let TreeEntry::NotADirectory = found {
                        dir.remove(part, false)?;
                    }
                    let sub = dir.ensure_dir(part)?;
                    sub.set_metadata_checksum(meta);
                    self.implicit.insert(parts[..=i].join("/"));
                    sub
                }
            };
        }
        Ok(dir)
    }

    /// A regular file's content object, read from the tar as it is written.
    fn write_file(
        &self,
        rel: &str,
        content: &mut dyn Read,
        size: u64,
        (uid, gid, mode): (u32, u32, u32),
        xattrs: &Xattrs,
    ) -> Result<String> {
        let xv = xattr_variant(xattrs);
        if size <= INLINE_MAX {
            let mut data = Vec::with_capacity(size as usize);
            content
                .read_to_end(&mut data)
                .map_err(|e| BadLayer(format!("reading {rel}: {e}")))?;
            return Ok(self
                .repo
                .write_regfile_inline(
                    None,
                    uid,
                    gid,
                    mode,
                    Some(&xv),
                    &data,
                    gio::Cancellable::NONE,
                )
                .with_context(|| format!("Writing {rel}"))?
                .to_string());
        }
        let writer = self
            .repo
            .write_regfile(None, uid, gid, mode, size, Some(&xv))
            .with_context(|| format!("Writing {rel}"))?;
        {
            use gio::prelude::*;
            let mut out = writer.clone().upcast::<gio::OutputStream>().into_write();
            std::io::copy(content, &mut out)
                .map_err(|e| BadLayer(format!("reading {rel}: {e}")))?;
        }
        Ok(writer
            .finish(gio::Cancellable::NONE)
            .with_context(|| format!("Writing {rel}"))?
            .to_string())
    }

    /// Directories no entry named, sorted ("" for the root).
    fn implicit_dirs(&self) -> Vec<String> {
        let root = (!self.root_has_metadata).then(String::new);
        root.into_iter()
            .chain(self.implicit.iter().cloned())
            .collect()
    }

    fn add<R: Read>(&mut self, mut entry: tar::Entry<R>) -> Result<()> {
        let path = entry
            .path()
            .map_err(|e| BadLayer(format!("a tar entry's path: {e}")))?
            .into_owned();
        let header = entry.header().clone();
        let uid = header.uid()? as u32;
        let gid = header.gid()? as u32;
        let mode = header.mode()?;
        let xattrs = xattrs_of(&mut entry)?;
        let kind = header.entry_type();
        let Some(rel) = relative(&path)? else {
            if kind.is_dir() {
                let meta = self.dirmeta(uid, gid, mode, xattrs)?;
                self.root.set_metadata_checksum(&meta);
                self.root_has_metadata = true;
            }
            return Ok(());
        };
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        if name.starts_with(AUFS_PREFIX) && name != OPAQUE_MARKER {
            // aufs' own bookkeeping (.wh..wh.plnk and the like), not content.
            return Ok(());
        }
        if name == OPAQUE_MARKER {
            let dir = rel.rsplit_once('/').map(|x| x.0).unwrap_or("");
            self.opaque_dirs.push(dir.to_string());
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(
                    BadLayer(format!("{rel} is a whiteout of no name in its directory")).into(),
                );
            }
            let dir = rel
                .rsplit_once('/')
                .map(|x| format!("{}/", x.0))
                .unwrap_or_default();
            self.whiteouts.push(format!("{dir}{hidden}"));
            return Ok(());
        }
        if kind.is_dir() {
            let meta = self.dirmeta(uid, gid, mode, xattrs)?;
            let parts: Vec<&str> = rel.split('/').collect();
            let dir = self.ensure_dirs(&parts, &meta)?;
            dir.set_metadata_checksum(&meta);
            self.implicit.remove(&rel);
            return Ok(());
        }
        let checksum = if kind.is_file() {
            let owner = (uid, gid, libc::S_IFREG | (mode & 0o7777));
            self.write_file(&rel, &mut entry, header.size()?, owner, &xattrs)?
        } else if kind.is_symlink() {
            let target = entry
                .link_name()?
                .ok_or_else(|| BadLayer(format!("symlink {rel} has no target")))?;
            let target = target
                .to_str()
                .ok_or_else(|| BadLayer(format!("{rel}: target is not UTF-8")))?;
            self.repo
                .write_symlink(
                    None,
                    uid,
                    gid,
                    Some(&xattr_variant(&xattrs)),
                    target,
                    gio::Cancellable::NONE,
                )
                .with_context(|| format!("Writing {rel}"))?
                .to_string()
        } else if kind.is_hard_link() {
            let target = entry
                .link_name()?
                .ok_or_else(|| BadLayer(format!("hard link {rel} has no target")))?;
            let target = relative(&target)?.unwrap_or_default();
            self.files.get(&target).cloned().ok_or_else(|| {
                BadLayer(format!(
                    "hard link {rel} points to {target}, which this layer does not have"
                ))
            })?
        } else {
            // Device nodes, FIFOs, sockets: a deployable tree has none.
            return Ok(());
        };
        let (parent, name) = self.parent_of(&rel)?;
        if let TreeEntry::Directory(_) = tree_entry(&parent, &name)? {
            parent.remove(&name, false)?;
        }
        parent.replace_file(&name, &checksum)?;
        self.files.insert(rel, checksum);
        Ok(())
    }

    fn finish(&mut self) -> Result<ostree::MutableTree> {
        if !self.root_has_metadata {
            let meta = self.default_dirmeta()?;
            self.root.set_metadata_checksum(&meta);
        }
        Ok(self.root.clone())
    }
}

/// A directory metadata object (inside the caller's transaction).
fn write_dirmeta(
    repo: &ostree::Repo,
    uid: u32,
    gid: u32,
    mode: u32,
    xattrs: &Xattrs,
) -> Result<String> {
    let info = gio::FileInfo::new();
    info.set_attribute_uint32("unix::uid", uid);
    info.set_attribute_uint32("unix::gid", gid);
    info.set_attribute_uint32("unix::mode", libc::S_IFDIR | (mode & 0o7777));
    info.set_file_type(gio::FileType::Directory);
    let variant = ostree::create_directory_metadata(&info, Some(&xattr_variant(xattrs)));
    let checksum = repo
        .write_metadata(
            ostree::ObjectType::DirMeta,
            None,
            &variant,
            gio::Cancellable::NONE,
        )
        .context("Writing directory metadata")?;
    Ok(checksum.to_hex())
}

/// The metadata of a directory no one described: root's, mode 0755.
pub fn default_dirmeta(repo: &ostree::Repo) -> Result<String> {
    write_dirmeta(repo, 0, 0, 0o755, &Vec::new())
}

/// Extended attributes from the entry's PAX records (`SCHILY.xattr.NAME`).
fn xattrs_of<R: Read>(entry: &mut tar::Entry<R>) -> Result<Xattrs> {
    let mut out = Vec::new();
    if let Some(extensions) = entry.pax_extensions()? {
        for ext in extensions {
            let ext = ext?;
            if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                // The kernel's own (overlayfs keeps its whiteouts and
                // redirects there): not an image's to set on a tree that
                // becomes an overlay's lower layer when packages are layered.
                if name.starts_with(b"trusted.") {
                    continue;
                }
                let mut name = name.to_vec();
                name.push(0); // ostree stores names NUL-terminated
                out.push((name, ext.value_bytes().to_vec()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn xattr_variant(xattrs: &[(Vec<u8>, Vec<u8>)]) -> glib::Variant {
    use glib::prelude::*;
    xattrs.to_vec().to_variant()
}
