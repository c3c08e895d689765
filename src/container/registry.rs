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

/// The requirements policy.json applies to `reference`: the most specific
/// scope of its transport, else the default.
fn requirements_for<'a>(
    policy: &'a serde_json::Value,
    reference: &ImageReference,
) -> Option<&'a Vec<serde_json::Value>> {
    let scopes = &policy["transports"][policy_transport(reference.transport)];
    // Scopes from the most to the least specific: the name with its tag,
    // the repository, each parent namespace, the host.
    let name = reference.name.as_str();
    let repository = name
        .split_once('@')
        .map_or(name, |x| x.0)
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or(name, |x| x.0);
    let mut candidates = vec![name.to_string(), repository.to_string()];
    let mut prefix = repository;
    while let Some((parent, _)) = prefix.rsplit_once('/') {
        candidates.push(parent.to_string());
        prefix = parent;
    }
    candidates.push(String::new());
    candidates
        .iter()
        .find_map(|scope| scopes.get(scope).and_then(|v| v.as_array()))
        .or_else(|| policy["default"].as_array())
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
}
