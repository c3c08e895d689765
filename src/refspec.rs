//! Refspecs as users type them: `remote:ref`, `ref`, or `remote:` (keep the ref).

use crate::error::Error;

/// What ostree accepts as a remote's name.
pub fn is_remote_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refspec {
    pub remote: Option<String>,
    pub branch: String,
}

impl Refspec {
    pub fn parse(text: &str) -> Result<Refspec, Error> {
        let invalid = |reason: &str| Error::InvalidRefspec {
            refspec: text.to_string(),
            reason: reason.to_string(),
        };
        if text.is_empty() {
            return Err(invalid("empty refspec"));
        }
        let (remote, branch) = match text.split_once(':') {
            Some((r, b)) => (Some(r), b),
            None => (None, text),
        };
        if let Some(r) = remote {
            if !is_remote_name(r) {
                return Err(invalid("invalid remote name"));
            }
        }
        // ostree's ref grammar: segments of [\w\d][-._\w\d]* separated by '/'.
        let valid_segment = |s: &str| {
            let mut chars = s.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        };
        if !branch.is_empty() && !branch.split('/').all(valid_segment) {
            return Err(invalid("invalid ref name"));
        }
        if branch.is_empty() && remote.is_none() {
            return Err(invalid("empty ref"));
        }
        Ok(Refspec {
            remote: remote.map(str::to_string),
            branch: branch.to_string(),
        })
    }

    /// Fill in an empty branch ("remote:") from the current refspec.
    pub fn or_branch_of(mut self, current: &Refspec) -> Refspec {
        if self.branch.is_empty() {
            self.branch = current.branch.clone();
        }
        self
    }
}

impl std::fmt::Display for Refspec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.remote {
            Some(r) => write!(f, "{r}:{}", self.branch),
            None => f.write_str(&self.branch),
        }
    }
}

/// A commit of a ref, as `deploy` and `rebase --revision` name it, in
/// rpm-ostree's grammar: `revision=CHECKSUM`, `version=VERSION`, a bare
/// 64-digit checksum, or else a version. A checksum prefix is not accepted:
/// a version such as `202401` must never be taken for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revision {
    Checksum(String),
    Version(String),
}

impl Revision {
    pub fn parse(text: &str) -> Result<Revision, Error> {
        let invalid = |reason: &str| Error::InvalidRefspec {
            refspec: text.to_string(),
            reason: reason.to_string(),
        };
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("a revision has no spaces or control characters"));
        }
        let is_checksum = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let revision = if let Some(checksum) = text.strip_prefix("revision=") {
            if !is_checksum(checksum) {
                return Err(invalid(
                    "revision= takes a full commit checksum (64 hex digits)",
                ));
            }
            Revision::Checksum(checksum.to_ascii_lowercase())
        } else if let Some(version) = text.strip_prefix("version=") {
            Revision::Version(version.to_string())
        } else if is_checksum(text) {
            Revision::Checksum(text.to_ascii_lowercase())
        } else {
            Revision::Version(text.to_string())
        };
        match &revision {
            Revision::Version(v) if v.is_empty() => Err(invalid("empty version")),
            _ => Ok(revision),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        let r = Refspec::parse("demo:debian/12/x86_64/demo").unwrap();
        assert_eq!(r.remote.as_deref(), Some("demo"));
        assert_eq!(r.branch, "debian/12/x86_64/demo");
        assert_eq!(r.to_string(), "demo:debian/12/x86_64/demo");
        assert_eq!(Refspec::parse("local/ref").unwrap().remote, None);
        let keep = Refspec::parse("other:").unwrap().or_branch_of(&r);
        assert_eq!(keep.to_string(), "other:debian/12/x86_64/demo");
    }

    #[test]
    fn refuses_malformed_refspecs() {
        for bad in [
            "",
            ":",
            "a b",
            "demo:x//y",
            "demo:/x",
            "de mo:x",
            "demo:x\ny",
            "demo:..",
            ":ref",
        ] {
            assert!(
                matches!(Refspec::parse(bad), Err(Error::InvalidRefspec { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn revisions_in_rpm_ostrees_grammar() {
        let sum = "ab".repeat(32);
        assert_eq!(
            Revision::parse(&sum).unwrap(),
            Revision::Checksum(sum.clone())
        );
        assert_eq!(
            Revision::parse(&format!("revision={}", sum.to_uppercase())).unwrap(),
            Revision::Checksum(sum.clone())
        );
        // A version that happens to be hex digits stays a version.
        for v in ["202401", "deadbeef", "13.1", "1"] {
            assert_eq!(Revision::parse(v).unwrap(), Revision::Version(v.into()));
        }
        assert_eq!(
            Revision::parse(&format!("version={sum}")).unwrap(),
            Revision::Version(sum.clone())
        );
        for bad in ["", "version=", "revision=abc", "revision=", "13 1", "a\tb"] {
            assert!(
                matches!(Revision::parse(bad), Err(Error::InvalidRefspec { .. })),
                "{bad:?}"
            );
        }
    }
}
