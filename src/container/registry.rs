//! Reading images through skopeo's image proxy (the `containers-image-proxy`
//! crate, the path rpm-ostree and bootc take): every transport, registry
//! configuration (`registries.conf`, mirrors, insecure registries) and
//! signature policy is containers-image's own, as skopeo applies it.
//!
//! The proxy is asynchronous; apt-ostree's engines are not. A [`Registry`]
//! owns a single-threaded tokio runtime and blocks on each request.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use containers_image_proxy::{ImageProxy, ImageProxyConfig, OpenedImage};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};
use tokio::io::AsyncWriteExt;

use crate::error::Error;
use crate::imgref::{ImageReference, Transport, Verification};

/// Credentials for the daemon (the unit sees no home directory), as rpm-ostree keeps them.
const AUTH_FILES: &[&str] = &["/run/ostree/auth.json", "/etc/ostree/auth.json"];
/// containers' signature policy.
const POLICY: &str = "/etc/containers/policy.json";

pub struct Registry {
    // Dropped after `proxy`: the runtime's blocking pool waits for skopeo,
    // which exits only once the proxy's socket is closed.
    proxy: ImageProxy,
    image: OpenedImage,
    reference: ImageReference,
    runtime: tokio::runtime::Runtime,
}

/// What the registry says an image is now.
pub struct Manifest {
    /// The manifest's digest ("sha256:...").
    pub digest: String,
    pub manifest: ImageManifest,
}

impl Registry {
    /// Start skopeo and open `reference` (which checks the signature policy for signed references).
    pub fn open(reference: &ImageReference) -> Result<Registry> {
        let fetch_failed = |reason: String| Error::ImageFetchFailed {
            image: reference.to_string(),
            reason,
        };
        if reference.verification == Verification::Signed {
            check_policy_verifies(reference, Path::new(POLICY))?;
        }
        let mut config = ImageProxyConfig::default();
        match AUTH_FILES.iter().map(PathBuf::from).find(|p| p.exists()) {
            Some(file) => config.authfile = Some(file),
            None => config.auth_anonymous = true,
        }
        // Unverified references skip the policy (rpm-ostree does the same);
        // signed ones are held to it by skopeo when the image is opened.
        config.insecure_policy = Some(reference.verification == Verification::Unverified);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("Starting the image proxy's runtime")?;
        let proxy = runtime
            .block_on(ImageProxy::new_with_config(config))
            .map_err(|e| fetch_failed(format!("starting skopeo: {e}")))?;
        let image = runtime
            .block_on(proxy.open_image(&reference.transport_ref()))
            .map_err(|e| fetch_failed(e.to_string()))?;
        Ok(Registry {
            runtime,
            proxy,
            image,
            reference: reference.clone(),
        })
    }

    pub fn reference(&self) -> &ImageReference {
        &self.reference
    }

    fn failed(&self, e: impl std::fmt::Display) -> Error {
        Error::ImageFetchFailed {
            image: self.reference.to_string(),
            reason: e.to_string(),
        }
    }

    pub fn manifest(&self) -> Result<Manifest> {
        let (digest, manifest) = self
            .runtime
            .block_on(self.proxy.fetch_manifest(&self.image))
            .map_err(|e| self.failed(format!("reading the manifest: {e}")))?;
        Ok(Manifest { digest, manifest })
    }

    pub fn config(&self) -> Result<ImageConfiguration> {
        self.runtime
            .block_on(self.proxy.fetch_config(&self.image))
            .map_err(|e| {
                self.failed(format!("reading the image configuration: {e}"))
                    .into()
            })
    }

    /// Copy the blob `layer` into `dest` (skopeo checks its size and digest;
    /// the importer checks the digest again while it reads the copy).
    pub fn fetch_blob(&self, layer: &Descriptor, dest: &Path) -> Result<()> {
        let file =
            std::fs::File::create(dest).with_context(|| format!("Creating {}", dest.display()))?;
        self.runtime
            .block_on(async {
                let (mut reader, driver) = self
                    .proxy
                    .get_blob(&self.image, layer.digest(), layer.size())
                    .await?;
                // Large writes: each one is a trip to tokio's blocking pool.
                let mut out =
                    tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file));
                // A scratch copy, read once right after: no fsync.
                let copy = async {
                    let n = tokio::io::copy(&mut reader, &mut out).await?;
                    out.flush().await?;
                    Ok::<u64, std::io::Error>(n)
                };
                let (copied, finished) = tokio::join!(copy, driver);
                finished?;
                copied.map_err(|e| containers_image_proxy::Error::Other(e.to_string().into()))
            })
            .map_err(|e| self.failed(format!("fetching layer {}: {e}", layer.digest())))?;
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.runtime.block_on(self.proxy.close_image(&self.image));
    }
}

/// containers' transport names, as policy.json spells them.
fn policy_transport(t: Transport) -> &'static str {
    match t {
        Transport::Registry => "docker",
        Transport::Oci => "oci",
        Transport::OciArchive => "oci-archive",
        Transport::ContainersStorage => "containers-storage",
    }
}

/// Refuse a signed reference when the policy would accept the image
/// unsigned (Debian's default policy accepts anything), as rpm-ostree does:
/// "signed" must mean that a signature was checked.
fn check_policy_verifies(reference: &ImageReference, policy: &Path) -> Result<()> {
    let refuse = |reason: String| Error::SignatureInvalid {
        remote: reference.to_string(),
        reason,
    };
    let text = std::fs::read_to_string(policy)
        .map_err(|e| refuse(format!("reading {}: {e}", policy.display())))?;
    let policy: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| refuse(format!("parsing {}: {e}", policy.display())))?;
    let requirements = requirements_for(&policy, reference);
    let accepts_anything = requirements.is_none_or(|r| {
        r.iter()
            .any(|req| req["type"].as_str() == Some("insecureAcceptAnything"))
    });
    if accepts_anything {
        return Err(refuse(format!(
            "{POLICY} accepts any image for this scope; name a signature requirement \
             (sigstoreSigned or signedBy) for it, or use an ostree-unverified- reference"
        ))
        .into());
    }
    Ok(())
}

/// The requirements policy.json applies to `reference`: those of the most
/// specific scope its transport names, else the transport's own default
/// (the scope ""), else the policy's default.
fn requirements_for<'a>(
    policy: &'a serde_json::Value,
    reference: &ImageReference,
) -> Option<&'a Vec<serde_json::Value>> {
    let scopes = &policy["transports"][policy_transport(reference.transport)];
    let candidates = match reference.transport {
        Transport::Registry => registry_scopes(&reference.name),
        _ => path_scopes(&reference.name),
    };
    candidates
        .iter()
        .chain(std::iter::once(&String::new()))
        .find_map(|scope| scopes.get(scope).and_then(|v| v.as_array()))
        .or_else(|| policy["default"].as_array())
}

/// A registry name as containers-image expands it: `debian:13` is
/// `docker.io/library/debian:13`, `org/os` is `docker.io/org/os`.
fn expand_registry_name(name: &str) -> String {
    match name.split_once('/') {
        None => format!("docker.io/library/{name}"),
        Some((host, rest)) if host == "docker.io" || host == "index.docker.io" => {
            if rest.contains('/') {
                format!("docker.io/{rest}")
            } else {
                format!("docker.io/library/{rest}")
            }
        }
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => name.to_string(),
        Some(_) => format!("docker.io/{name}"),
    }
}

/// The scopes of a registry image, most specific first, as containers-image
/// looks them up (containers-policy.json(5)): the image with its tag or
/// digest, the repository, each parent namespace down to the host (with
/// its port), then the host's wildcard domains (`*.example.com`).
fn registry_scopes(name: &str) -> Vec<String> {
    let mut full = expand_registry_name(name);
    let last = full.rsplit('/').next().unwrap_or_default();
    if !full.contains('@') && !last.contains(':') {
        full.push_str(":latest");
    }
    let repository = match full.split_once('@') {
        Some((repo, _)) => repo.to_string(),
        None => full
            .rsplit_once(':')
            .map_or(full.clone(), |x| x.0.to_string()),
    };
    let mut scopes = vec![full, repository.clone()];
    let mut prefix = repository.as_str();
    while let Some((parent, _)) = prefix.rsplit_once('/') {
        scopes.push(parent.to_string());
        prefix = parent;
    }
    let mut domain = prefix.split(':').next().unwrap_or_default();
    while let Some((_, rest)) = domain.split_once('.') {
        scopes.push(format!("*.{rest}"));
        domain = rest;
    }
    scopes
}

/// The scopes of an image in a layout or storage: the name with its tag,
/// the path, and each parent directory.
fn path_scopes(name: &str) -> Vec<String> {
    let path = name
        .split_once('@')
        .map_or(name, |x| x.0)
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or(name, |x| x.0);
    let mut scopes = vec![name.to_string(), path.to_string()];
    let mut prefix = path;
    while let Some((parent, _)) = prefix.rsplit_once('/') {
        if !parent.is_empty() {
            scopes.push(parent.to_string());
        }
        prefix = parent;
    }
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(name: &str) -> ImageReference {
        ImageReference::parse(&format!("ostree-image-signed:registry:{name}")).unwrap()
    }

    #[test]
    fn a_policy_that_accepts_anything_refuses_signed_references() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.json");
        // Debian's default policy.
        std::fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker-daemon":{"":[{"type":"insecureAcceptAnything"}]}}}"#,
        )
        .unwrap();
        let err = check_policy_verifies(&signed("quay.io/example/os:1"), &policy).unwrap_err();
        assert!(
            matches!(Error::classify(err), Error::SignatureInvalid { .. }),
            "a default policy was taken as verifying"
        );
        // A signature requirement for the repository's namespace satisfies it.
        std::fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker":{"quay.io/example":[{"type":"sigstoreSigned","keyPath":"/etc/pki/example.pub"}]}}}"#,
        )
        .unwrap();
        check_policy_verifies(&signed("quay.io/example/os:1"), &policy).unwrap();
        // ... but not another namespace's images.
        assert!(check_policy_verifies(&signed("quay.io/other/os:1"), &policy).is_err());
        // A missing policy refuses too.
        assert!(
            check_policy_verifies(&signed("quay.io/example/os:1"), &dir.path().join("none"))
                .is_err()
        );
    }

    /// Scopes as containers-image matches them: wildcard domains, docker.io
    /// names written short, the transport's own default over the policy's.
    #[test]
    fn scopes_match_as_containers_image_matches_them() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.json");
        let signed_by = r#"[{"type":"sigstoreSigned","keyPath":"/k.pub"}]"#;
        let anything = r#"[{"type":"insecureAcceptAnything"}]"#;
        let verifies = |docker: &str, default: &str, name: &str| {
            std::fs::write(
                &policy,
                format!(r#"{{"default":{default},"transports":{{"docker":{{{docker}}}}}}}"#),
            )
            .unwrap();
            check_policy_verifies(&signed(name), &policy).is_ok()
        };
        let wildcard = format!(r#""*.example.com":{signed_by}"#);
        assert!(verifies(&wildcard, anything, "reg.example.com/os:1"));
        assert!(verifies(
            &wildcard,
            anything,
            "a.b.example.com:5000/team/os@sha256:{}"
                .replace("{}", &"a".repeat(64))
                .as_str()
        ));
        assert!(
            !verifies(&wildcard, anything, "example.com/os:1"),
            "a wildcard matched its own domain"
        );
        assert!(!verifies(&wildcard, anything, "reg.example.org/os:1"));
        let library = format!(r#""docker.io/library/debian":{signed_by}"#);
        assert!(verifies(&library, anything, "debian:13"));
        assert!(verifies(&library, anything, "docker.io/debian"));
        assert!(!verifies(&library, anything, "myorg/debian:13"));
        let org = format!(r#""docker.io/myorg":{signed_by}"#);
        assert!(verifies(&org, anything, "myorg/os:1"));
        // A more specific scope wins over a broader one.
        let both = format!(r#""quay.io/example":{signed_by},"quay.io/example/open":{anything}"#);
        assert!(verifies(&both, anything, "quay.io/example/os:1"));
        assert!(!verifies(&both, anything, "quay.io/example/open:1"));
        let tagged = format!(r#""quay.io/example/os:2":{anything},"quay.io":{signed_by}"#);
        assert!(!verifies(&tagged, anything, "quay.io/example/os:2"));
        assert!(verifies(&tagged, anything, "quay.io/example/os:1"));
        // The policy's default, and the transport's own default over it.
        assert!(verifies("", signed_by, "quay.io/example/os:1"));
        assert!(!verifies(
            &format!(r#""":{anything}"#),
            signed_by,
            "quay.io/example/os:1"
        ));
    }
}
