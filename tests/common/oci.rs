//! Hand-made OCI image layouts: each layer a tar written entry by entry
//! with its names exactly as given (absolute, with `..`, whiteouts), so
//! that tests can hold what no well-behaved image builder writes.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use sha2::Digest as _;

pub enum Entry {
    Dir(String),
    File(String, Vec<u8>),
    /// A file of this many zero bytes, streamed (never held in memory).
    Zeros(String, u64),
    Link(String, String),
    HardLink(String, String),
}

pub fn dir(name: &str) -> Entry {
    Entry::Dir(name.to_string())
}

pub fn file(name: &str, content: &str) -> Entry {
    Entry::File(name.to_string(), content.as_bytes().to_vec())
}

pub fn link(name: &str, target: &str) -> Entry {
    Entry::Link(name.to_string(), target.to_string())
}

pub fn hard_link(name: &str, target: &str) -> Entry {
    Entry::HardLink(name.to_string(), target.to_string())
}

/// The entries of a small deployable Debian root: a kernel, /etc, dpkg's
/// database, and `usr/share/marker` holding `marker`.
pub fn base(marker: &str) -> Vec<Entry> {
    vec![
        dir("./"),
        dir("etc/"),
        file("etc/hostname", "hostile\n"),
        file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        file("etc/group", "root:x:0:\n"),
        file("etc/os-release", "ID=debian\nVERSION_ID=13\n"),
        dir("boot/"),
        file("boot/vmlinuz-6.1.0-1-amd64", "kernel\n"),
        file("boot/initrd.img-6.1.0-1-amd64", "initrd\n"),
        dir("usr/"),
        dir("usr/bin/"),
        file("usr/bin/true", "#!/bin/sh\n"),
        dir("usr/share/"),
        file("usr/share/marker", marker),
        dir("var/"),
        dir("var/lib/"),
        dir("var/lib/dpkg/"),
        file(
            "var/lib/dpkg/status",
            "Package: base-files\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\n",
        ),
        dir("tmp/"),
    ]
}

fn header(name: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    // Written as bytes: the tar crate refuses to set such names itself.
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(t) = link {
        h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h.set_cksum();
    h
}

/// Write `entries` as a tar to `out`.
pub fn write_tar(out: impl Write, entries: &[Entry]) {
    let mut b = tar::Builder::new(out);
    for e in entries {
        match e {
            Entry::Dir(n) => b.append(&header(n, tar::EntryType::Directory, 0, None), &[][..]),
            Entry::File(n, d) => b.append(
                &header(n, tar::EntryType::Regular, d.len() as u64, None),
                &d[..],
            ),
            Entry::Zeros(n, size) => b.append(
                &header(n, tar::EntryType::Regular, *size, None),
                std::io::repeat(0).take(*size),
            ),
            Entry::Link(n, t) => b.append(&header(n, tar::EntryType::Symlink, 0, Some(t)), &[][..]),
            Entry::HardLink(n, t) => {
                b.append(&header(n, tar::EntryType::Link, 0, Some(t)), &[][..])
            }
        }
        .unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();
}

/// A layer blob as it goes into the layout.
pub struct Layer {
    pub bytes: Vec<u8>,
    pub gzip: bool,
}

/// An uncompressed layer of `entries`.
pub fn layer(entries: &[Entry]) -> Layer {
    let mut bytes = Vec::new();
    write_tar(&mut bytes, entries);
    Layer { bytes, gzip: false }
}

/// A gzip-compressed layer of `entries`.
pub fn gzip_layer(entries: &[Entry]) -> Layer {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    write_tar(&mut gz, entries);
    Layer {
        bytes: gz.finish().unwrap(),
        gzip: true,
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes).unwrap();
    digest
}

/// How an image of [`write_layout`] is made.
#[derive(Default, Clone, Copy)]
pub struct Options<'a> {
    /// Change each layer's blob after its digest was taken.
    pub corrupt: bool,
    /// The image's creation time (RFC 3339).
    pub created: Option<&'a str>,
}

/// Write an OCI layout at `dir` with one image, tagged `tag`, of `layers`
/// (bottom first); an image already tagged so is replaced, its blobs kept.
/// Returns the manifest's digest.
pub fn write_layout(dir: &Path, tag: &str, layers: &[Layer], opts: Options) -> String {
    let corrupt = opts.corrupt;
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let digest = put_blob(dir, &l.bytes);
        if corrupt {
            let path = dir
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:"));
            let mut bytes = fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x55;
            fs::write(path, bytes).unwrap();
        }
        let mut plain = Vec::new();
        if l.gzip {
            // A truncated layer has no whole plain form: its diff ID is made up.
            let _ = flate2::read::MultiGzDecoder::new(&l.bytes[..]).read_to_end(&mut plain);
        } else {
            plain = l.bytes.clone();
        }
        diff_ids.push(sha256(&plain));
        let media = if l.gzip {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        descriptors.push(serde_json::json!({
            "mediaType": media, "digest": digest, "size": l.bytes.len()
        }));
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": opts.created,
        "config": {"Labels": {"containers.bootc": "1", "ostree.bootable": "1"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string();
    let config_digest = put_blob(dir, config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest, "size": config.len()
        },
        "layers": descriptors,
    })
    .to_string();
    let manifest_digest = put_blob(dir, manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag}
        }],
    });
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    manifest_digest
}
