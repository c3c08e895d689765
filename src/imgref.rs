//! Container image references as users type them, spelled as rpm-ostree
//! spells them: how the image is verified, then a containers transport.
//!
//! - `ostree-unverified-registry:HOST[:PORT]/NAME[:TAG|@DIGEST]`
//! - `ostree-unverified-image:TRANSPORT:REF`
//! - `ostree-image-signed:TRANSPORT:REF` (containers' own `policy.json` decides)
//!
//! with TRANSPORT one of `registry:` (also `docker://`), `oci:DIR[:TAG]`,
//! `oci-archive:FILE[:TAG]` and `containers-storage:NAME`. What skopeo is
//! handed is [`ImageReference::transport_ref`].

use std::fmt;

use crate::error::Error;

/// How an image's origin is checked before it is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Transport security only (TLS, digests): `ostree-unverified-*`.
    Unverified,
    /// Signatures, as `/etc/containers/policy.json` requires for the image's scope.
    Signed,
}

/// Where the image comes from (containers-image's transports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Registry,
    Oci,
    OciArchive,
    ContainersStorage,
}

impl Transport {
    fn prefix(self) -> &'static str {
        match self {
            Transport::Registry => "registry:",
            Transport::Oci => "oci:",
            Transport::OciArchive => "oci-archive:",
            Transport::ContainersStorage => "containers-storage:",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    pub verification: Verification,
    pub transport: Transport,
    /// The transport-specific part: `HOST/NAME:TAG`, `DIR:TAG`, ...
    pub name: String,
}

const UNVERIFIED_REGISTRY: &str = "ostree-unverified-registry:";
const UNVERIFIED_IMAGE: &str = "ostree-unverified-image:";
const SIGNED_IMAGE: &str = "ostree-image-signed:";

impl ImageReference {
    /// True for text that is meant as an image reference (and not an OSTree refspec).
    pub fn is_image_reference(text: &str) -> bool {
        [UNVERIFIED_REGISTRY, UNVERIFIED_IMAGE, SIGNED_IMAGE]
            .iter()
            .any(|p| text.starts_with(p))
            || text.starts_with("ostree-remote-image:")
    }

    pub fn parse(text: &str) -> Result<ImageReference, Error> {
        let invalid = |reason: &str| Error::InvalidImageReference {
            reference: text.to_string(),
            reason: reason.to_string(),
        };
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("it contains white space or control characters"));
        }
        let (verification, transport, name) = if let Some(name) =
            text.strip_prefix(UNVERIFIED_REGISTRY)
        {
            (Verification::Unverified, Transport::Registry, name)
        } else {
            let (verification, rest) = if let Some(rest) = text.strip_prefix(UNVERIFIED_IMAGE) {
                (Verification::Unverified, rest)
            } else if let Some(rest) = text.strip_prefix(SIGNED_IMAGE) {
                (Verification::Signed, rest)
            } else if text.starts_with("ostree-remote-image:") {
                return Err(invalid(
                    "ostree-remote-image (signatures from an OSTree remote) is not supported; use ostree-image-signed",
                ));
            } else {
                return Err(invalid(
                    "expected ostree-unverified-registry:, ostree-unverified-image: or ostree-image-signed:",
                ));
            };
            let (transport, name) = split_transport(rest).ok_or_else(|| {
                invalid("unknown transport: expected registry:, oci:, oci-archive: or containers-storage:")
            })?;
            (verification, transport, name)
        };
        if name.is_empty() {
            return Err(invalid("the image name is empty"));
        }
        match transport {
            Transport::Registry => {
                check_registry_name(name)
                    .map_err(|e| invalid(&format!("not a registry image name: {e}")))?;
            }
            Transport::Oci | Transport::OciArchive => {
                if !name.starts_with('/') {
                    return Err(invalid("the path must be absolute"));
                }
                if let Some((_, digest)) = name.rsplit_once('@') {
                    if digest.starts_with("sha256:") && !is_digest(digest) {
                        return Err(invalid(&format!("invalid digest {digest:?}")));
                    }
                }
            }
            Transport::ContainersStorage => {}
        }
        Ok(ImageReference {
            verification,
            transport,
            name: name.to_string(),
        })
    }

    /// The reference in containers-image's own syntax, as skopeo takes it.
    /// The layout transports have no syntax for a digest: apt-ostree checks
    /// the pin itself ([`crate::container::pull`] does for every transport).
    pub fn transport_ref(&self) -> String {
        match self.transport {
            Transport::Registry => format!("docker://{}", self.name),
            Transport::Oci | Transport::OciArchive => {
                format!("{}{}", self.transport.prefix(), self.unpinned_name())
            }
            Transport::ContainersStorage => format!("{}{}", self.transport.prefix(), self.name),
        }
    }

    /// The digest the reference pins the machine to (`NAME@sha256:...`, for
    /// every transport).
    pub fn pinned_digest(&self) -> Option<&str> {
        match self.transport {
            Transport::Registry => self.name.split_once('@').map(|(_, d)| d),
            _ => self
                .name
                .rsplit_once('@')
                .map(|(_, d)| d)
                .filter(|d| is_digest(d)),
        }
    }

    /// The name without its pinned digest.
    fn unpinned_name(&self) -> &str {
        match self.pinned_digest() {
            Some(d) => &self.name[..self.name.len() - d.len() - 1],
            None => &self.name,
        }
    }

    /// The tag the reference follows (`latest` when a registry reference
    /// names none); `None` when it is pinned to a digest or has no tag.
    pub fn tag(&self) -> Option<&str> {
        match self.transport {
            Transport::Registry => {
                if self.name.contains('@') {
                    return None;
                }
                // A tag follows the last ':' after the last '/' (a port may precede it).
                let last = self
                    .name
                    .rsplit_once('/')
                    .map_or(self.name.as_str(), |x| x.1);
                Some(last.rsplit_once(':').map_or("latest", |x| x.1))
            }
            _ => self
                .unpinned_name()
                .rsplit_once(':')
                .map(|x| x.1)
                .filter(|t| !t.is_empty() && !t.contains('/')),
        }
    }

    /// The same image with its tag or digest replaced by `digest`.
    pub fn with_digest(&self, digest: &str) -> ImageReference {
        let mut pinned = self.clone();
        if self.transport == Transport::Registry {
            let repo = self
                .name
                .split_once('@')
                .map_or(self.name.as_str(), |x| x.0);
            // A tag follows the last ':' after the last '/' (a port may precede it).
            let last = repo.rsplit_once('/').map_or(repo, |x| x.1);
            let repo = match last.rsplit_once(':') {
                Some((_, tag)) => &repo[..repo.len() - tag.len() - 1],
                None => repo,
            };
            pinned.name = format!("{repo}@{digest}");
        } else {
            // The tag stays: it names the image in a layout that holds several.
            pinned.name = format!("{}@{digest}", self.unpinned_name());
        }
        pinned
    }
}

/// A manifest digest as users give it: `sha256:` and 64 hex digits.
pub fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn split_transport(rest: &str) -> Option<(Transport, &str)> {
    if let Some(name) = rest.strip_prefix("docker://") {
        return Some((Transport::Registry, name));
    }
    [
        Transport::Registry,
        Transport::Oci,
        Transport::OciArchive,
        Transport::ContainersStorage,
    ]
    .into_iter()
    .find_map(|t| rest.strip_prefix(t.prefix()).map(|name| (t, name)))
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.verification, self.transport) {
            (Verification::Unverified, Transport::Registry) => {
                write!(f, "{UNVERIFIED_REGISTRY}{}", self.name)
            }
            (Verification::Unverified, t) => {
                write!(f, "{UNVERIFIED_IMAGE}{}{}", t.prefix(), self.name)
            }
            (Verification::Signed, t) => write!(f, "{SIGNED_IMAGE}{}{}", t.prefix(), self.name),
        }
    }
}

/// Check `name` against the registry reference grammar of
/// distribution/reference (`[HOST[:PORT]/]PATH[:TAG][@ALGO:HEX]`). Written
/// out rather than through oci-spec's parser, whose regular expression
/// takes about 50 ms to compile: once per daemon start, on every status of
/// an image-based machine. A unit test checks both agree.
fn check_registry_name(name: &str) -> Result<(), String> {
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    if let Some(d) = digest {
        let (algo, hex) = d.split_once(':').ok_or("a digest is ALGORITHM:HEX")?;
        let algo_ok = !algo.is_empty()
            && algo.split(['+', '.', '_', '-']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if !algo_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("invalid digest {d:?}"));
        }
    }
    // A tag follows the last ':' after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let mut bytes = t.bytes();
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        if t.len() > 128
            || !bytes.next().is_some_and(word)
            || !bytes.all(|b| word(b) || b == b'.' || b == b'-')
        {
            return Err(format!("invalid tag {t:?}"));
        }
    }
    if repo.len() > 255 {
        return Err("the name is longer than 255 characters".into());
    }
    let mut components = repo.split('/').peekable();
    let first = components.next().unwrap_or_default();
    let has_domain = components.peek().is_some()
        && (first.contains(['.', ':'])
            || first == "localhost"
            || first.bytes().any(|b| b.is_ascii_uppercase()));
    if has_domain {
        check_domain(first)?;
    } else {
        check_path_component(first)?;
    }
    components.try_for_each(check_path_component)
}

/// HOST[:PORT], HOST a DNS name, an IPv4 address or a bracketed IPv6 one.
fn check_domain(domain: &str) -> Result<(), String> {
    let port_ok =
        |p: Option<&str>| p.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let ok = if let Some(v6) = domain.strip_prefix('[') {
        v6.split_once(']').is_some_and(|(addr, after)| {
            addr.parse::<std::net::Ipv6Addr>().is_ok()
                && (after.is_empty() || after.strip_prefix(':').is_some_and(|p| port_ok(Some(p))))
        })
    } else {
        let (host, port) = match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        port_ok(port) && host.split('.').all(label_ok)
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid registry host {domain:?}"))
    }
}

/// Lowercase letters and digits, with one `.` or `_`, two `_`, or any
/// number of `-` between them.
fn check_path_component(component: &str) -> Result<(), String> {
    let bad = || Err(format!("invalid name component {component:?}"));
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(|b| alnum(*b)) || !bytes.last().is_some_and(|b| alnum(*b)) {
        return bad();
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return bad();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_a_reference_follows() {
        let tag = |text: &str| {
            ImageReference::parse(text)
                .unwrap()
                .tag()
                .map(str::to_string)
        };
        assert_eq!(
            tag("ostree-unverified-registry:127.0.0.1:5000/debian/os:13").as_deref(),
            Some("13")
        );
        assert_eq!(
            tag("ostree-unverified-registry:127.0.0.1:5000/debian/os").as_deref(),
            Some("latest")
        );
        assert_eq!(
            tag("ostree-unverified-registry:quay.io/os").as_deref(),
            Some("latest")
        );
        let pinned = format!(
            "ostree-unverified-registry:quay.io/os@sha256:{}",
            "a".repeat(64)
        );
        assert_eq!(tag(&pinned), None);
        assert_eq!(
            tag("ostree-unverified-image:oci:/media/os:stable").as_deref(),
            Some("stable")
        );
    }

    #[test]
    fn parses_rpm_ostree_spellings_and_prints_them_back() {
        let r = ImageReference::parse("ostree-unverified-registry:127.0.0.1:5000/debian/base:13")
            .unwrap();
        assert_eq!(r.verification, Verification::Unverified);
        assert_eq!(r.transport, Transport::Registry);
        assert_eq!(r.transport_ref(), "docker://127.0.0.1:5000/debian/base:13");
        assert_eq!(
            r.to_string(),
            "ostree-unverified-registry:127.0.0.1:5000/debian/base:13"
        );
        assert_eq!(r.pinned_digest(), None);
        let same =
            ImageReference::parse("ostree-unverified-image:docker://127.0.0.1:5000/debian/base:13")
                .unwrap();
        assert_eq!(same, r);
        let oci = ImageReference::parse("ostree-unverified-image:oci:/srv/images/base:v2").unwrap();
        assert_eq!(oci.transport_ref(), "oci:/srv/images/base:v2");
        assert_eq!(
            oci.to_string(),
            "ostree-unverified-image:oci:/srv/images/base:v2"
        );
        let signed =
            ImageReference::parse("ostree-image-signed:registry:quay.io/example/os:latest")
                .unwrap();
        assert_eq!(signed.verification, Verification::Signed);
        assert_eq!(signed.transport_ref(), "docker://quay.io/example/os:latest");
        let storage =
            ImageReference::parse("ostree-unverified-image:containers-storage:localhost/os")
                .unwrap();
        assert_eq!(storage.transport_ref(), "containers-storage:localhost/os");
        let archive =
            ImageReference::parse("ostree-unverified-image:oci-archive:/tmp/os.tar").unwrap();
        assert_eq!(archive.transport_ref(), "oci-archive:/tmp/os.tar");
    }

    #[test]
    fn a_digest_pins_and_a_tag_can_be_replaced_by_one() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = ImageReference::parse(&format!(
            "ostree-unverified-registry:localhost:5000/os@{digest}"
        ))
        .unwrap();
        assert_eq!(r.pinned_digest(), Some(digest.as_str()));
        let tagged =
            ImageReference::parse("ostree-unverified-registry:localhost:5000/os:13").unwrap();
        assert_eq!(
            tagged.with_digest(&digest).name,
            format!("localhost:5000/os@{digest}")
        );
        let untagged =
            ImageReference::parse("ostree-unverified-registry:localhost:5000/os").unwrap();
        assert_eq!(
            untagged.with_digest(&digest).name,
            format!("localhost:5000/os@{digest}")
        );
    }

    /// Layout transports cannot tell skopeo a digest: the pin is kept in
    /// the reference (and checked by the pull), the tag still picks the image.
    #[test]
    fn every_transport_can_be_pinned() {
        let d = format!("sha256:{}", "b".repeat(64));
        let r =
            ImageReference::parse(&format!("ostree-unverified-image:oci:/srv/img:1@{d}")).unwrap();
        assert_eq!(r.pinned_digest(), Some(d.as_str()));
        assert_eq!(r.transport_ref(), "oci:/srv/img:1");
        assert_eq!(r.tag(), Some("1"));
        let other = format!("sha256:{}", "c".repeat(64));
        assert_eq!(r.with_digest(&other).name, format!("/srv/img:1@{other}"));
        let plain =
            ImageReference::parse("ostree-unverified-image:oci-archive:/srv/a.tar:2").unwrap();
        assert_eq!(plain.pinned_digest(), None);
        assert_eq!(
            plain.with_digest(&d).transport_ref(),
            "oci-archive:/srv/a.tar:2"
        );
        assert_eq!(plain.with_digest(&d).pinned_digest(), Some(d.as_str()));
        // A path may hold '@'; only a whole digest after the last one pins.
        let at = ImageReference::parse("ostree-unverified-image:oci:/srv/v@2:tag").unwrap();
        assert_eq!(at.pinned_digest(), None);
        assert!(
            ImageReference::parse("ostree-unverified-image:oci:/srv/img:1@sha256:abc").is_err()
        );
    }

    #[test]
    fn refuses_what_is_not_an_image_reference() {
        for bad in [
            "",
            "debian:debian/13/x86_64/base",
            "ostree-unverified-registry:",
            "ostree-unverified-registry:Bad Name/x",
            "ostree-unverified-registry:host/UPPER",
            "ostree-unverified-registry:host/x:tag:more",
            "ostree-unverified-registry:host/x@sha256:short",
            "ostree-unverified-image:ftp://host/x",
            "ostree-unverified-image:oci:relative/dir",
            "ostree-image-signed:nothing",
            "ostree-remote-image:fedora:registry:quay.io/x",
            "ostree-unverified-registry:host/x\n",
        ] {
            assert!(
                matches!(
                    ImageReference::parse(bad),
                    Err(Error::InvalidImageReference { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }
}

#[cfg(test)]
mod grammar {
    use std::str::FromStr;

    /// Our reading of registry names agrees with oci-spec's parser.
    #[test]
    fn registry_names_as_the_reference_grammar_reads_them() {
        let hex = "a".repeat(64);
        let cases = [
            "debian".to_string(),
            "debian/base".into(),
            "library/debian:13".into(),
            "quay.io/example/os:latest".into(),
            "127.0.0.1:5000/debian/base:13".into(),
            "localhost/os".into(),
            "localhost:5000/a/b/c".into(),
            format!("quay.io/os@sha256:{hex}"),
            format!("quay.io/os:tag@sha256:{hex}"),
            "a__b/c.d/e-f/g---h".into(),
            "registry.example.com/os:v1.2_3-rc".into(),
            "Upper/os".into(),
            "UPPER.io/os".into(),
            "os:".into(),
            ":tag".into(),
            "os:-tag".into(),
            "a..b".into(),
            "a___b".into(),
            "-a".into(),
            "a-".into(),
            "a//b".into(),
            "host:port/os".into(),
            "quay.io/os@sha256:short".into(),
            "quay.io/os@:abc".into(),
            "example.com:/os".into(),
            "-bad.example.com/os".into(),
            "[zz]/os".into(),
            format!("os:{}", "t".repeat(129)),
            format!("os:{}", "t".repeat(128)),
            "a/b:c:d".into(),
            "a:b/c".into(),
            "a b".into(),
            "".into(),
        ];
        let differ: Vec<String> = cases
            .iter()
            .filter_map(|case| {
                let ours = super::check_registry_name(case).is_ok();
                let theirs = oci_spec::distribution::Reference::from_str(case).is_ok();
                (ours != theirs).then(|| format!("{case:?}: ours {ours}, oci-spec {theirs}"))
            })
            .collect();
        assert!(differ.is_empty(), "{differ:#?}");
        // IPv6 hosts, which the newer grammar (and skopeo) take; oci-spec 0.10 does not.
        assert!(super::check_registry_name("[::1]:5000/os:1").is_ok());
        assert!(super::check_registry_name("[fe80::1]/os").is_ok());
        assert!(super::check_registry_name("[nonsense]/os").is_err());
    }
}
