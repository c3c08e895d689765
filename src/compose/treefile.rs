//! Treefiles: what `apt-ostree compose tree` builds.
//!
//! TOML, because it has comments, a strict grammar and a well-kept parser;
//! keys are spelled as in rpm-ostree treefiles where the concept is the same.
//! Unknown keys are errors, so a typo never silently changes an image.
//!
//! ```toml
//! ref = "debian/12/x86_64/minimal"   # required: the branch to commit to
//! version = "12.8"                   # default: YYYYMMDD.N
//! suite = "bookworm"                 # with mirror/components, or sources
//! mirror = "http://deb.debian.org/debian"
//! components = ["main"]
//! # sources = "host"                 # this machine's own apt sources
//! # sources = ["deb http://deb.debian.org/debian bookworm main"]
//! # rootfs = "path/to/tree"          # an existing root file system instead
//! variant = "minbase"                # mmdebstrap variant
//! packages = ["systemd", "linux-image-amd64"]
//! local-packages = ["debs/"]         # .deb files, directories of them, or debs/name_*.deb
//! kargs = ["console=ttyS0"]          # default kernel arguments of installed systems
//! placeholder-kernel = false         # true: no kernel needed (not booted on hardware)
//! postprocess = "postprocess.sh"     # run in the sandbox, the tree as /
//! collection-id = "org.example.Os"   # commits bound to this collection and ref
//! gpg-key = "KEYID"                  # sign commits (compose tree --gpg-homedir)
//! [files]                            # destination in the image = source next to the treefile
//! "/etc/motd" = "files/motd"
//! [remote]                           # where installed systems upgrade from
//! name = "debian"
//! url = "https://example.com/repo"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Sources {
    /// "host": the machine's own apt sources.
    Named(String),
    /// Explicit one-line apt sources.
    Lines(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Treefile {
    #[serde(rename = "ref")]
    pub reference: String,
    pub version: Option<String>,
    pub suite: Option<String>,
    pub mirror: Option<String>,
    #[serde(default)]
    pub components: Vec<String>,
    pub sources: Option<Sources>,
    pub rootfs: Option<PathBuf>,
    #[serde(default = "default_variant")]
    pub variant: String,
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub local_packages: Vec<PathBuf>,
    #[serde(default)]
    pub kargs: Vec<String>,
    pub remote: Option<Remote>,
    #[serde(default)]
    pub placeholder_kernel: bool,
    pub postprocess: Option<PathBuf>,
    #[serde(default)]
    pub files: BTreeMap<String, PathBuf>,
    /// The collection ID commits are bound to (with their ref), so that a
    /// machine can tell this OS's commits from any other's wherever they
    /// come from (docs/updates.md).
    pub collection_id: Option<String>,
    /// The GPG key that signs each commit (as `--gpg-sign`, which wins);
    /// its public part goes into the image and machines verify with it.
    pub gpg_key: Option<String>,
}

/// The remote that machines installed from the image upgrade from
/// (`compose image` adds it and makes `NAME:REF` the origin).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Remote {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub gpg_verify: bool,
}

fn default_variant() -> String {
    "minbase".into()
}

/// Where the root file system comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// mmdebstrap SUITE with these mirror arguments (URIs, source lines or files).
    Mmdebstrap { suite: String, mirrors: Vec<String> },
    /// An existing directory, copied.
    Rootfs(PathBuf),
}

impl Treefile {
    /// Parse a treefile's text; relative paths are resolved against `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<Treefile> {
        let mut t: Treefile = toml::from_str(text).context("Parsing the treefile")?;
        crate::refspec::Refspec::parse(&t.reference).map_err(|e| anyhow::anyhow!("ref: {e}"))?;
        if t.reference.contains(':') {
            bail!("ref: a branch name, without a remote");
        }
        if ![
            "minbase",
            "essential",
            "apt",
            "required",
            "important",
            "standard",
            "buildd",
            "custom",
        ]
        .contains(&t.variant.as_str())
        {
            bail!("variant: {:?} is not an mmdebstrap variant", t.variant);
        }
        for p in &t.packages {
            crate::apt::validate_package_name(p).map_err(|e| anyhow::anyhow!("packages: {e}"))?;
        }
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            }
        };
        t.rootfs = t.rootfs.as_deref().map(resolve);
        t.postprocess = t.postprocess.as_deref().map(resolve);
        t.local_packages = t.local_packages.iter().map(|p| resolve(p)).collect();
        if !t.local_packages.is_empty() && t.rootfs.is_some() {
            bail!("local-packages needs mmdebstrap (suite), not rootfs");
        }
        for arg in &t.kargs {
            crate::kargs::validate(arg).map_err(|e| anyhow::anyhow!("kargs: {e}"))?;
        }
        if let Some(r) = &t.remote {
            if !crate::refspec::is_remote_name(&r.name) {
                bail!("remote: {:?} is not a remote name", r.name);
            }
            if !r.url.contains("://") {
                bail!("remote: url {:?} is not a URL", r.url);
            }
        }
        for (dest, src) in t.files.iter_mut() {
            if !dest.starts_with('/') || dest.split('/').any(|c| c == "..") {
                bail!("files: destination {dest:?} must be an absolute path without ..");
            }
            *src = resolve(src);
        }
        if let Some(id) = &t.collection_id {
            ostree::validate_collection_id(Some(id))
                .map_err(|e| anyhow::anyhow!("collection-id: {}", e.message()))?;
        }
        if let Some(key) = &t.gpg_key {
            if key.is_empty()
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"@._-+<>".contains(&b))
            {
                bail!("gpg-key: {key:?} is not a key id, fingerprint or address");
            }
        }
        t.source()?;
        Ok(t)
    }

    pub fn load(path: &Path) -> Result<Treefile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("Reading {}", path.display()))?;
        // Absolute, so that every error names the file it means wherever
        // compose was started.
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = std::path::absolute(parent.unwrap_or(Path::new(".")))
            .with_context(|| format!("Resolving {}", path.display()))?;
        Treefile::parse(&text, &dir).with_context(|| format!("In {}", path.display()))
    }

    /// Where the root file system comes from, checked for consistency.
    pub fn source(&self) -> Result<Source> {
        if let Some(rootfs) = &self.rootfs {
            if self.suite.is_some() || self.mirror.is_some() || self.sources.is_some() {
                bail!("rootfs excludes suite, mirror and sources");
            }
            return Ok(Source::Rootfs(rootfs.clone()));
        }
        let Some(suite) = self.suite.clone() else {
            bail!("suite is required (or rootfs)");
        };
        let mirrors = match (&self.mirror, &self.sources) {
            (Some(_), Some(_)) => bail!("mirror and sources exclude each other"),
            (Some(m), None) => {
                let components = if self.components.is_empty() {
                    "main".to_string()
                } else {
                    self.components.join(" ")
                };
                vec![format!("deb {m} {suite} {components}")]
            }
            (None, Some(Sources::Lines(lines))) => lines.clone(),
            (None, Some(Sources::Named(n))) if n == "host" => host_sources(&suite),
            (None, Some(Sources::Named(n))) => {
                bail!("sources: {n:?}: a list of lines, or \"host\"")
            }
            (None, None) => bail!("mirror or sources is required with suite"),
        };
        if mirrors.is_empty() {
            bail!("no apt source of this machine mentions suite {suite:?}");
        }
        Ok(Source::Mmdebstrap { suite, mirrors })
    }
}

/// This machine's apt source files that mention `suite`.
fn host_sources(suite: &str) -> Vec<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    files
        .into_iter()
        .filter(|f| {
            let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
            (f.ends_with("sources.list") || ext == "list" || ext == "sources")
                && std::fs::read_to_string(f).is_ok_and(|t| {
                    t.lines().any(|l| {
                        !l.trim_start().starts_with('#') && l.split_whitespace().any(|w| w == suite)
                    })
                })
        })
        .map(|f| f.display().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_demo_treefile() {
        let t = Treefile::parse(
            include_str!("../../tests/fixtures/treefile-demo.toml"),
            Path::new("/src"),
        )
        .unwrap();
        assert_eq!(t.reference, "debian/12/x86_64/demo");
        assert_eq!(t.variant, "minbase");
        assert_eq!(t.files["/etc/motd"], Path::new("/src/files/motd"));
        assert_eq!(
            t.postprocess.as_deref(),
            Some(Path::new("/src/postprocess.sh"))
        );
        assert_eq!(
            t.source().unwrap(),
            Source::Mmdebstrap {
                suite: "bookworm".into(),
                mirrors: vec!["deb http://deb.debian.org/debian bookworm main contrib".into()]
            }
        );
    }

    #[test]
    fn the_examples_parse() {
        let dir = Path::new("/src/examples/treefiles");
        for text in [
            include_str!("../../examples/treefiles/debian-minimal.toml"),
            include_str!("../../examples/treefiles/bootable.toml"),
            include_str!("../../examples/treefiles/bootable-bookworm.toml"),
        ] {
            let t = Treefile::parse(text, dir).unwrap();
            assert!(t.reference.starts_with("debian/"), "{t:?}");
        }
        let t =
            Treefile::parse(include_str!("../../examples/treefiles/bootable.toml"), dir).unwrap();
        assert_eq!(
            t.local_packages,
            [Path::new(
                "/src/examples/treefiles/../../target/debian/trixie/apt-ostree_*.deb"
            )]
        );
        assert!(t.kargs.contains(&"console=ttyS0,115200n8".to_string()));
    }

    /// The names serde accepts for a struct, as its derived Deserialize
    /// announces them.
    fn field_names<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
        use serde::de::{Error as _, Visitor};
        struct Capture(Vec<&'static str>);
        impl<'de> serde::Deserializer<'de> for &mut Capture {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(Self::Error::custom("not a struct"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0 = fields.to_vec();
                Err(Self::Error::custom("captured"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map enum identifier ignored_any
            }
        }
        let mut capture = Capture(Vec::new());
        let _ = T::deserialize(&mut capture);
        capture.0
    }

    #[test]
    fn the_manual_page_documents_every_key() {
        let page = include_str!("../../docs/man/apt-ostree-treefile.5");
        let keys: Vec<_> = field_names::<Treefile>()
            .into_iter()
            .chain(field_names::<Remote>())
            .collect();
        assert!(keys.contains(&"local-packages"), "{keys:?}");
        for key in keys {
            let roff = key.replace('-', "\\-");
            let documented = page.contains(&format!(".BR {key} "))
                || page.contains(&format!(".BR {roff} "))
                || page.contains(&format!(".B {key}\n"))
                || page.contains(&format!(".BR [{key}] "));
            assert!(
                documented,
                "apt-ostree-treefile(5) does not document {key:?}"
            );
        }
    }

    #[test]
    fn refuses_unknown_keys_and_inconsistent_sources() {
        let dir = Path::new("/src");
        for (text, needle) in [
            ("ref = \"a/b\"\nsuite = \"bookworm\"\nmirror = \"http://x\"\npackagez = []\n", "packagez"),
            ("suite = \"bookworm\"\nmirror = \"http://x\"\n", "ref"),
            ("ref = \"a/b\"\n", "suite is required"),
            ("ref = \"a/b\"\nsuite = \"bookworm\"\n", "mirror or sources"),
            ("ref = \"a/b\"\nsuite = \"bookworm\"\nmirror = \"http://x\"\nsources = [\"deb x y z\"]\n", "exclude"),
            ("ref = \"a/b\"\nrootfs = \"t\"\nsuite = \"bookworm\"\n", "rootfs excludes"),
            ("ref = \"r:a/b\"\nrootfs = \"t\"\n", "without a remote"),
            ("ref = \"a/b\"\nrootfs = \"t\"\nvariant = \"huge\"\n", "variant"),
            ("ref = \"a/b\"\nrootfs = \"t\"\npackages = [\"Bad\"]\n", "packages"),
            ("ref = \"a/b\"\nrootfs = \"t\"\n[files]\n\"etc/x\" = \"y\"\n", "absolute"),
        ] {
            let err = format!("{:#}", Treefile::parse(text, dir).unwrap_err());
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
