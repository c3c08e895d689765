//! `apt-ostree search WORDS`: what the default deployment's apt sources
//! offer, from their lists as the last refresh left them.

use std::collections::BTreeSet;

use anyhow::Result;

use crate::apt::{AptRoot, Found};
use crate::sysroot::Sysroot;

/// A package found, and whether the default deployment has it.
#[derive(Debug, Clone)]
pub struct SearchMatch {
    pub found: Found,
    pub installed: bool,
}

/// What a search reads: the default deployment's apt root and packages.
/// Taken from the sysroot quickly; the search itself then runs apart from
/// it, so that waiting for libapt (held by a transaction's fetch of the
/// lists) never holds up other readers of the sysroot.
pub struct SearchScope {
    apt: AptRoot,
    installed: BTreeSet<String>,
}

/// The scope of a search in the default deployment.
pub fn search_scope(sysroot: &mut Sysroot) -> Result<SearchScope> {
    let default = sysroot.status()?.into_default()?;
    let base = default
        .base_checksum
        .clone()
        .unwrap_or_else(|| default.checksum.clone());
    Ok(SearchScope {
        apt: crate::layering::apt_root(sysroot, &base)?,
        installed: sysroot
            .packages(&default.checksum)?
            .into_iter()
            .map(|p| p.name)
            .collect(),
    })
}

impl SearchScope {
    /// Packages holding every one of `words` (checked by the caller:
    /// lowercase, not empty).
    pub fn search(&self, words: &[String]) -> Result<Vec<SearchMatch>> {
        Ok(self
            .apt
            .search(words)?
            .into_iter()
            .map(|found| SearchMatch {
                installed: self.installed.contains(&found.name),
                found,
            })
            .collect())
    }
}
