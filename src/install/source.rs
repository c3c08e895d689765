//! Where `install-os` takes the OS from: a container image, as `rebase`
//! takes it, or an OSTree remote's URL and ref. Probed before anything
//! changes (reachable, how large), then pulled into the new sysroot's
//! repository.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ostree::{gio, glib};

use crate::imgref::ImageReference;
use crate::origin::{Base, Origin};
use crate::progress::Sink;
use crate::sysroot::{pull, PullRequest};

/// What a remote's commit is assumed to need on disk: its size is not known
/// before its trees are fetched (a Debian base with a kernel is about 1 GiB
/// deployed; the repository holds it once more, compressed).
const REMOTE_ESTIMATE: u64 = 3 << 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Image(ImageReference),
    Remote {
        /// The remote's name in the new repository.
        name: String,
        url: String,
        branch: String,
        gpg_verify: bool,
    },
}

/// What the source holds now.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The commit or the image digest the install would deploy.
    pub revision: String,
    pub version: Option<String>,
    /// Bytes the root file system needs for it (an estimate).
    pub needed: u64,
}

impl Source {
    /// SOURCE as the command line gives it: an image reference, or a URL
    /// with `--ref`.
    pub fn parse(
        text: &str,
        branch: Option<&str>,
        remote_name: &str,
        gpg_verify: bool,
    ) -> Result<Source> {
        if ImageReference::is_image_reference(text) {
            if branch.is_some() {
                bail!("--ref is for an OSTree remote's URL, not an image reference");
            }
            return Ok(Source::Image(ImageReference::parse(text)?));
        }
        let is_url = ["http://", "https://", "file:///"]
            .iter()
            .any(|p| text.starts_with(p));
        if !is_url {
            bail!(
                "{text:?} is neither an image reference (ostree-unverified-registry:..., \
                 ostree-image-signed:..., ...) nor an OSTree remote's URL (http://, https://, file:///)"
            );
        }
        let Some(branch) = branch else {
            bail!("an OSTree remote's URL needs --ref REF (the branch to install)");
        };
        let refspec = crate::refspec::Refspec::parse(&format!("{remote_name}:{branch}"))?;
        if refspec.branch.is_empty() {
            bail!("--ref is empty");
        }
        Ok(Source::Remote {
            name: remote_name.to_string(),
            url: text.to_string(),
            branch: branch.to_string(),
            gpg_verify,
        })
    }

    /// The origin the deployment follows.
    pub fn origin(&self) -> Origin {
        let base = match self {
            Source::Image(r) => Base::Image(r.clone()),
            Source::Remote { name, branch, .. } => Base::Refspec(format!("{name}:{branch}")),
        };
        let mut origin = Origin::default();
        origin.base = base;
        origin
    }

    /// Ask the source what it holds now, fetching only metadata (for a
    /// remote, into a scratch repository under `scratch`).
    pub fn probe(&self, scratch: &Path, sink: &Sink) -> Result<Probe> {
        match self {
            Source::Image(reference) => {
                let registry = crate::container::Registry::open(reference)?;
                let manifest = registry.manifest()?;
                let compressed: u64 = manifest.manifest.layers().iter().map(|l| l.size()).sum();
                let image = crate::container::remote_image(&registry, manifest.digest.clone())?;
                Ok(Probe {
                    revision: manifest.digest,
                    version: image.version,
                    // Unpacked about 2.5 times larger, and the layers kept.
                    needed: compressed * 4,
                })
            }
            Source::Remote { branch, name, .. } => {
                let repo = ostree::Repo::new(&gio::File::for_path(scratch));
                repo.create(ostree::RepoMode::BareUser, gio::Cancellable::NONE)
                    .context("Creating a scratch repository")?;
                self.add_remote(&repo)?;
                pull(
                    &repo,
                    &PullRequest {
                        remote: name,
                        branch,
                        commit: None,
                        metadata_only: true,
                        depth: 0,
                        url: None,
                    },
                    sink,
                )?;
                let commit = repo
                    .resolve_rev(&format!("{name}:{branch}"), false)?
                    .context("the remote's ref resolved to nothing")?
                    .to_string();
                let (data, _) = repo.load_commit(&commit)?;
                let metadata = glib::VariantDict::new(Some(&data.child_value(0)));
                Ok(Probe {
                    revision: commit,
                    version: metadata.lookup::<String>("version").ok().flatten(),
                    needed: REMOTE_ESTIMATE,
                })
            }
        }
    }

    /// Configure the remote (for a remote source) in `repo`.
    fn add_remote(&self, repo: &ostree::Repo) -> Result<()> {
        if let Source::Remote {
            name,
            url,
            gpg_verify,
            ..
        } = self
        {
            let options = glib::VariantDict::new(None);
            options.insert("gpg-verify", *gpg_verify);
            repo.remote_add(
                name,
                Some(url),
                Some(&options.end()),
                gio::Cancellable::NONE,
            )
            .with_context(|| format!("Adding the remote {name} ({url})"))?;
        }
        Ok(())
    }

    /// Pull into `repo` (the new sysroot's); the deployable commit.
    pub fn pull(&self, repo: &ostree::Repo, sink: &Sink) -> Result<String> {
        match self {
            Source::Image(reference) => {
                Ok(crate::container::pull(repo, reference, reference, sink)?.commit)
            }
            Source::Remote { name, branch, .. } => {
                self.add_remote(repo)?;
                pull(
                    repo,
                    &PullRequest {
                        remote: name,
                        branch,
                        commit: None,
                        metadata_only: false,
                        depth: 0,
                        url: None,
                    },
                    sink,
                )?;
                Ok(repo
                    .resolve_rev(&format!("{name}:{branch}"), false)?
                    .context("the remote's ref resolved to nothing")?
                    .to_string())
            }
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Image(r) => r.fmt(f),
            Source::Remote { url, branch, .. } => write!(f, "{url} {branch}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_an_image_reference_or_a_url_with_a_ref() {
        let image = Source::parse(
            "ostree-unverified-registry:10.0.2.2:5000/os:1",
            None,
            "debian",
            true,
        )
        .unwrap();
        assert!(matches!(image, Source::Image(_)));
        let remote = Source::parse(
            "http://10.0.2.2:8000/repo",
            Some("debian/13/x86_64/bootable"),
            "debian",
            false,
        )
        .unwrap();
        assert_eq!(
            remote.origin().base,
            Base::Refspec("debian:debian/13/x86_64/bootable".into())
        );
        for (text, branch, says) in [
            ("http://host/repo", None, "needs --ref"),
            (
                "ostree-unverified-registry:host/os:1",
                Some("x"),
                "--ref is for",
            ),
            ("/srv/repo", Some("x"), "neither an image reference"),
            ("http://host/repo", Some("../x"), "ref"),
            ("ostree-unverified-registry:", None, ""),
        ] {
            let e = Source::parse(text, branch, "debian", true).unwrap_err();
            assert!(format!("{e:#}").contains(says), "{text}: {e:#}");
        }
    }
}
