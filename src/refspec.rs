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
}
