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

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::progress::Sink;
use crate::sysroot::CommitInfo;
use blobs::{write_blob, write_index, write_layer};
#[cfg(test)]
use plan::image_path;
use plan::{content, owners, plan_layers, read_tree, Entry, Kind};

mod blobs;
mod plan;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
