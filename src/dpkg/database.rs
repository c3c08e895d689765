//! Parsing dpkg's `status` file and comparing package sets.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::version::compare_versions;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageChange {
    pub name: String,
    pub architecture: String,
    pub from_version: String,
    pub to_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackageDiff {
    pub added: Vec<Package>,
    pub removed: Vec<Package>,
    pub upgraded: Vec<PackageChange>,
    pub downgraded: Vec<PackageChange>,
}

impl PackageDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.upgraded.is_empty()
            && self.downgraded.is_empty()
    }
}

/// The installed packages of a dpkg `status` file, sorted by name and architecture.
///
/// Only stanzas whose `Status` ends in `installed` count: packages that were
/// removed but left their configuration (`config-files`) are not installed.
pub fn parse_status(text: &str) -> Vec<Package> {
    let mut packages = Vec::new();
    for stanza in text.split("\n\n") {
        let (mut name, mut version, mut arch, mut installed) = (None, None, None, false);
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                continue; // continuation of a multi-line field
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key {
                "Package" => name = Some(value),
                "Version" => version = Some(value),
                "Architecture" => arch = Some(value),
                "Status" => installed = value.split_whitespace().last() == Some("installed"),
                _ => {}
            }
        }
        if let (Some(name), Some(version), true) = (name, version, installed) {
            packages.push(Package {
                name: name.to_string(),
                version: version.to_string(),
                architecture: arch.unwrap_or("all").to_string(),
            });
        }
    }
    packages.sort();
    packages
}

/// What changed from package set `from` to package set `to`.
pub fn diff(from: &[Package], to: &[Package]) -> PackageDiff {
    let key = |p: &Package| (p.name.clone(), p.architecture.clone());
    let old: BTreeMap<_, &Package> = from.iter().map(|p| (key(p), p)).collect();
    let new: BTreeMap<_, &Package> = to.iter().map(|p| (key(p), p)).collect();
    let mut d = PackageDiff::default();
    for (k, p) in &new {
        match old.get(k) {
            None => d.added.push((*p).clone()),
            Some(o) => {
                let change = || PackageChange {
                    name: p.name.clone(),
                    architecture: p.architecture.clone(),
                    from_version: o.version.clone(),
                    to_version: p.version.clone(),
                };
                match compare_versions(&o.version, &p.version) {
                    Ordering::Less => d.upgraded.push(change()),
                    Ordering::Greater => d.downgraded.push(change()),
                    Ordering::Equal => {}
                }
            }
        }
    }
    for (k, p) in &old {
        if !new.contains_key(k) {
            d.removed.push((*p).clone());
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_installed_packages_only() {
        let pkgs = parse_status(include_str!("../../tests/fixtures/dpkg-status"));
        let names: Vec<_> = pkgs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["base-files", "hello", "libc6"]);
        assert_eq!(pkgs[2].version, "2.36-9+deb12u4");
        assert_eq!(pkgs[2].architecture, "amd64");
    }

    #[test]
    fn diff_sorts_changes_by_kind() {
        let p = |n: &str, v: &str| Package {
            name: n.into(),
            version: v.into(),
            architecture: "amd64".into(),
        };
        let from = [
            p("a", "1.0"),
            p("b", "2.0"),
            p("c", "1:1.0"),
            p("gone", "1"),
        ];
        let to = [
            p("a", "1.0"),
            p("b", "2.0+deb12u1"),
            p("c", "2.0"),
            p("new", "1"),
        ];
        let d = diff(&from, &to);
        assert_eq!(d.added, [p("new", "1")]);
        assert_eq!(d.removed, [p("gone", "1")]);
        assert_eq!(d.upgraded.len(), 1);
        assert_eq!(d.upgraded[0].name, "b");
        assert_eq!(d.downgraded.len(), 1);
        assert_eq!(d.downgraded[0].to_version, "2.0");
        assert!(diff(&from, &from).is_empty());
    }
}
