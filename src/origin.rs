//! The origin file of a deployment: where it came from and what was asked of it.
//!
//! ostree keeps a small key file beside each deployment (`DEPLOY.origin`).
//! `[origin] refspec` is ostree's own key. Like rpm-ostree, a deployment that
//! carries layered packages or overrides names its base `baserefspec` instead,
//! so that a plain `ostree admin upgrade` refuses it rather than silently
//! dropping the layers. A deployment of a container image names it
//! `container-image-reference` (rpm-ostree's key) instead of a refspec.
//! Groups and keys we do not know are kept as they are.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use ostree::glib;

use crate::imgref::ImageReference;

/// Where the base image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// An OSTree refspec ("remote:ref", "ref", or a bare checksum).
    Refspec(String),
    /// A container image.
    Image(ImageReference),
}

impl Default for Base {
    fn default() -> Self {
        Base::Refspec(String::new())
    }
}

impl std::fmt::Display for Base {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Base::Refspec(r) => f.write_str(r),
            Base::Image(i) => i.fmt(f),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub base: Base,
    /// Commit pinned by `deploy`, instead of the ref's head.
    pub override_commit: Option<String>,
    /// Package names requested with `install`.
    pub requested_packages: BTreeSet<String>,
    /// Local .deb files requested with `install ./x.deb`: package name -> sha256 of the file.
    pub requested_local_packages: BTreeMap<String, String>,
    /// Base packages hidden with `override remove`.
    pub override_remove: BTreeSet<String>,
    /// Base packages replaced from the apt sources with `override replace`.
    pub override_replace: BTreeSet<String>,
    /// Arguments for a locally regenerated initramfs; `None` uses the base image's.
    pub initramfs_args: Option<Vec<String>>,
    /// The text this was parsed from, so unknown keys survive a rewrite.
    source: String,
}

const ORIGIN: &str = "origin";
const PACKAGES: &str = "packages";
const OVERRIDES: &str = "overrides";
const APT_OSTREE: &str = "apt-ostree";
const IMAGE_KEY: &str = "container-image-reference";

impl Origin {
    /// Parse an origin file's text.
    pub fn parse(text: &str) -> Result<Origin> {
        let kf = glib::KeyFile::new();
        kf.load_from_data(text, glib::KeyFileFlags::KEEP_COMMENTS)
            .context("Parsing origin file")?;
        let string = |group: &str, key: &str| kf.string(group, key).ok().map(|s| s.to_string());
        let list = |group: &str, key: &str| -> Vec<String> {
            kf.string_list(group, key)
                .map(|v| {
                    v.iter()
                        .map(|s| s.to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let base = match string(ORIGIN, IMAGE_KEY) {
            Some(image) => Base::Image(ImageReference::parse(&image)?),
            None => Base::Refspec(
                string(ORIGIN, "baserefspec")
                    .or_else(|| string(ORIGIN, "refspec"))
                    .context(
                        "Origin file has no origin/refspec, origin/baserefspec or origin/container-image-reference",
                    )?,
            ),
        };
        let mut requested_local_packages = BTreeMap::new();
        for entry in list(PACKAGES, "requested-local") {
            let (sha, name) = entry
                .split_once(':')
                .with_context(|| format!("Malformed requested-local entry {entry:?}"))?;
            requested_local_packages.insert(name.to_string(), sha.to_string());
        }
        let initramfs_args = match kf.boolean(APT_OSTREE, "initramfs-regenerate") {
            Ok(true) => Some(list(APT_OSTREE, "initramfs-args")),
            _ => None,
        };
        Ok(Origin {
            base,
            override_commit: string(ORIGIN, "override-commit"),
            requested_packages: list(PACKAGES, "requested").into_iter().collect(),
            requested_local_packages,
            override_remove: list(OVERRIDES, "remove").into_iter().collect(),
            override_replace: list(OVERRIDES, "replace").into_iter().collect(),
            initramfs_args,
            source: text.to_string(),
        })
    }

    pub fn from_keyfile(kf: &glib::KeyFile) -> Result<Origin> {
        Origin::parse(&kf.to_data())
    }

    /// True when the deployment is more than its base commit.
    pub fn is_layered(&self) -> bool {
        !self.requested_packages.is_empty()
            || !self.requested_local_packages.is_empty()
            || !self.override_remove.is_empty()
            || !self.override_replace.is_empty()
            || self.initramfs_args.is_some()
    }

    /// The origin as a key file, ready for `deploy_tree`.
    pub fn to_keyfile(&self) -> glib::KeyFile {
        let kf = glib::KeyFile::new();
        if !self.source.is_empty() {
            // The source parsed before, so it loads again.
            let _ = kf.load_from_data(&self.source, glib::KeyFileFlags::KEEP_COMMENTS);
        }
        for key in ["refspec", "baserefspec", IMAGE_KEY] {
            let _ = kf.remove_key(ORIGIN, key);
        }
        match &self.base {
            Base::Refspec(refspec) => {
                let key = if self.is_layered() {
                    "baserefspec"
                } else {
                    "refspec"
                };
                kf.set_string(ORIGIN, key, refspec);
            }
            Base::Image(image) => kf.set_string(ORIGIN, IMAGE_KEY, &image.to_string()),
        }
        match &self.override_commit {
            Some(c) => kf.set_string(ORIGIN, "override-commit", c),
            None => {
                let _ = kf.remove_key(ORIGIN, "override-commit");
            }
        }
        let set_list = |group: &str, key: &str, values: Vec<String>| {
            if values.is_empty() {
                let _ = kf.remove_key(group, key);
            } else {
                // The key file list format; none of our values contain ';'.
                kf.set_string(group, key, &format!("{};", values.join(";")));
            }
        };
        set_list(
            PACKAGES,
            "requested",
            self.requested_packages.iter().cloned().collect(),
        );
        set_list(
            PACKAGES,
            "requested-local",
            self.requested_local_packages
                .iter()
                .map(|(name, sha)| format!("{sha}:{name}"))
                .collect(),
        );
        set_list(
            OVERRIDES,
            "remove",
            self.override_remove.iter().cloned().collect(),
        );
        set_list(
            OVERRIDES,
            "replace",
            self.override_replace.iter().cloned().collect(),
        );
        match &self.initramfs_args {
            Some(args) => {
                kf.set_boolean(APT_OSTREE, "initramfs-regenerate", true);
                set_list(APT_OSTREE, "initramfs-args", args.clone());
            }
            None => {
                let _ = kf.remove_group(APT_OSTREE);
            }
        }
        for group in [PACKAGES, OVERRIDES] {
            if kf.keys(group).map(|k| k.is_empty()).unwrap_or(false) {
                let _ = kf.remove_group(group);
            }
        }
        kf
    }

    pub fn to_data(&self) -> String {
        self.to_keyfile().to_data().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ostree_origin() {
        let o = Origin::parse(include_str!("../tests/fixtures/origin-plain.origin")).unwrap();
        assert_eq!(o.base, Base::Refspec("demo:debian/12/x86_64/demo".into()));
        assert!(!o.is_layered());
        assert!(o.to_data().contains("refspec=demo:debian/12/x86_64/demo"));
    }

    #[test]
    fn layered_origin_round_trips_and_keeps_unknown_keys() {
        let text = include_str!("../tests/fixtures/origin-layered.origin");
        let o = Origin::parse(text).unwrap();
        assert_eq!(o.base.to_string(), "demo:debian/12/x86_64/demo");
        assert_eq!(
            o.requested_packages.iter().collect::<Vec<_>>(),
            ["htop", "jq"]
        );
        assert_eq!(o.requested_local_packages["hello"], "ab12");
        assert_eq!(o.override_remove.iter().collect::<Vec<_>>(), ["nano"]);
        assert!(o.is_layered());
        let again = Origin::parse(&o.to_data()).unwrap();
        assert_eq!(again.requested_packages, o.requested_packages);
        assert!(o.to_data().contains("unlocked=development"));
        assert!(o.to_data().contains("baserefspec="));
        assert!(!o.to_data().contains("\nrefspec="));
    }

    #[test]
    fn dropping_the_last_package_turns_baserefspec_into_refspec() {
        let mut o = Origin::parse(include_str!("../tests/fixtures/origin-layered.origin")).unwrap();
        o.requested_packages.clear();
        o.requested_local_packages.clear();
        o.override_remove.clear();
        let data = o.to_data();
        assert!(data.contains("\nrefspec=demo:"), "{data}");
        assert!(!data.contains("[packages]"), "{data}");
    }

    #[test]
    fn an_image_origin_keeps_rpm_ostrees_key_with_or_without_layers() {
        let text =
            "[origin]\ncontainer-image-reference=ostree-unverified-registry:localhost:5000/os:13\n";
        let mut o = Origin::parse(text).unwrap();
        let Base::Image(image) = &o.base else {
            panic!("{:?}", o.base)
        };
        assert_eq!(image.name, "localhost:5000/os:13");
        o.requested_packages.insert("htop".into());
        let data = o.to_data();
        assert!(
            data.contains(
                "container-image-reference=ostree-unverified-registry:localhost:5000/os:13"
            ),
            "{data}"
        );
        assert!(!data.contains("refspec"), "{data}");
        assert_eq!(Origin::parse(&data).unwrap(), Origin::parse(&data).unwrap());
        // Rebasing back to a refspec drops the image key.
        o.base = Base::Refspec("debian:debian/13/x86_64/base".into());
        let data = o.to_data();
        assert!(!data.contains("container-image-reference"), "{data}");
        assert!(
            data.contains("baserefspec=debian:debian/13/x86_64/base"),
            "{data}"
        );
        assert!(Origin::parse("[origin]\ncontainer-image-reference=nonsense\n").is_err());
    }

    #[test]
    fn origin_without_refspec_is_an_error() {
        assert!(Origin::parse("[origin]\nfoo=bar\n").is_err());
        assert!(Origin::parse("not a key file").is_err());
    }
}
