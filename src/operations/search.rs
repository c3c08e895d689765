//! `apt-ostree search WORDS`: what the default deployment's apt sources
//! offer, from their lists as the last refresh left them.

use std::collections::BTreeSet;

use anyhow::Result;

use crate::apt::Found;
use crate::sysroot::Sysroot;

/// A package found, and whether the default deployment has it.
#[derive(Debug, Clone)]
pub struct SearchMatch {
    pub found: Found,
    pub installed: bool,
}

/// Search for packages holding every one of `words` (checked by the caller:
/// lowercase, not empty).
pub fn search(sysroot: &mut Sysroot, words: &[String]) -> Result<Vec<SearchMatch>> {
    let default = sysroot.status()?.into_default()?;
    let base = default
        .base_checksum
        .clone()
        .unwrap_or_else(|| default.checksum.clone());
    let apt = crate::layering::apt_root(sysroot, &base)?;
    let installed: BTreeSet<String> = sysroot
        .packages(&default.checksum)?
        .into_iter()
        .map(|p| p.name)
        .collect();
    Ok(apt
        .search(words)?
        .into_iter()
        .map(|found| SearchMatch {
            installed: installed.contains(&found.name),
            found,
        })
        .collect())
}
