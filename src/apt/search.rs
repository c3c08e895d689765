//! `apt-ostree search`: the package lists of a deployment's apt sources,
//! searched as `apt search` searches them.

use anyhow::Result;
use rust_apt::cache::PackageSort;

use super::AptRoot;
use crate::error::Error;

/// A package the search found: its candidate, as apt would install it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub summary: String,
}

/// At most this many packages are returned.
pub const MAX_FOUND: usize = 500;

/// Whether every word is in the name or the description (any case).
fn matches(words: &[String], name: &str, description: &str) -> bool {
    let (name, description) = (name.to_lowercase(), description.to_lowercase());
    words
        .iter()
        .all(|w| name.contains(w.as_str()) || description.contains(w.as_str()))
}

/// Names that hold a word first, then by name (how `apt search` users scan).
fn order(words: &[String], found: &mut [Found]) {
    found.sort_by_key(|f| {
        let by_name = words.iter().any(|w| f.name.contains(w.as_str()));
        (!by_name, f.name.clone())
    });
}

impl AptRoot {
    /// The packages of the lists whose name or description holds every
    /// one of `words` (lowercase, checked by the caller). The lists must
    /// have been fetched (a refresh, or any layering).
    pub fn search(&self, words: &[String]) -> Result<Vec<Found>> {
        let _apt = super::lock();
        // Written by each successful refresh (AptRoot::refresh).
        if !self.state.join("lists.stamp").exists() {
            return Err(Error::NoPackageLists {
                reason: "the apt sources' package lists were never fetched: \
                         run `apt-ostree refresh-md`"
                    .into(),
            }
            .into());
        }
        let cache = self.open(&[])?;
        let mut found = Vec::new();
        for pkg in cache.packages(&PackageSort::default()) {
            let Some(candidate) = pkg.candidate() else {
                continue;
            };
            let description = candidate.description().unwrap_or_default();
            if !matches(words, pkg.name(), &description) {
                continue;
            }
            found.push(Found {
                name: pkg.name().to_string(),
                version: candidate.version().to_string(),
                architecture: candidate.arch().to_string(),
                summary: candidate.summary().unwrap_or_default(),
            });
        }
        drop(cache);
        order(words, &mut found);
        found.dedup_by(|a, b| a.name == b.name && a.architecture == b.architecture);
        // A word like "a" matches most of an archive: the reply stays small
        // (names holding a word came first).
        found.truncate(MAX_FOUND);
        Ok(found)
    }
}

/// A word `search` accepts: not empty, no control characters; lowercased.
pub fn search_word(word: &str) -> Result<String, String> {
    if word.trim().is_empty() {
        return Err("an empty word".into());
    }
    if word.chars().any(char::is_control) {
        return Err(format!("{word:?} holds a control character"));
    }
    Ok(word.trim().to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_must_be_in_the_name_or_the_description() {
        let words = vec!["http".to_string(), "client".to_string()];
        assert!(matches(&words, "curl", "command line HTTP client"));
        assert!(matches(&words, "httpie", "a CLIENT for APIs"));
        assert!(!matches(&words, "nginx", "HTTP server"));
    }

    #[test]
    fn names_holding_a_word_come_first() {
        let found = |name: &str| Found {
            name: name.into(),
            version: "1".into(),
            architecture: "amd64".into(),
            summary: String::new(),
        };
        let mut list = vec![found("curl"), found("zhttp"), found("ahttp"), found("wget")];
        order(&["http".to_string()], &mut list);
        let names: Vec<&str> = list.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["ahttp", "zhttp", "curl", "wget"]);
    }

    #[test]
    fn nonsense_words_are_refused() {
        assert!(search_word("").is_err());
        assert!(search_word("  ").is_err());
        assert!(search_word("a\nb").is_err());
        assert_eq!(search_word("HTop").unwrap(), "htop");
    }
}
