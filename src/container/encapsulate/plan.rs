//! Which files go into which layer: the commit's tree read back as a plain
//! root file system ([`image_path`]), each file's package from dpkg's lists,
//! and the layers planned so that an update changes few of them.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use anyhow::{Context, Result};
use ostree::gio;
use ostree::gio::prelude::*;

#[derive(Debug, Clone)]
pub(super) enum Kind {
    Dir,
    File { checksum: String, size: u64 },
    Symlink(String),
}

#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) kind: Kind,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mode: u32,
}

/// Where a file of the deployable tree lives in the plain root file system.
pub(super) fn image_path(tree_path: &str) -> String {
    let moved = [
        ("usr/etc", "etc"),
        (crate::dpkg::DATABASE_DIR, "var/lib/dpkg"),
        // Packages' /opt trees: where dpkg put them, so that a build FROM
        // the image upgrades them in place (deploying moves them back).
        (crate::tree::OPT_IN_USR, "opt"),
    ];
    for (from, to) in moved {
        if tree_path == from {
            return to.to_string();
        }
        if let Some(rest) = tree_path
            .strip_prefix(from)
            .and_then(|r| r.strip_prefix('/'))
        {
            return format!("{to}/{rest}");
        }
    }
    tree_path.to_string()
}

/// Places that the deployable tree links into /var, which are directories again in the image.
const LINKED_INTO_VAR: &[(&str, u32)] = &[
    ("home", 0o755),
    ("root", 0o700),
    ("opt", 0o755),
    ("srv", 0o755),
    ("mnt", 0o755),
    ("usr/local", 0o755),
];

/// What apt and dpkg need under /var during a container build.
const BUILD_SCRATCH: &[(&str, u32)] = &[
    ("var/cache/apt/archives/partial", 0o755),
    ("var/lib/apt/lists/partial", 0o755),
    ("var/cache/debconf", 0o755),
    ("var/log", 0o755),
    ("var/tmp", 0o1777),
];

/// Every entry of `commit`, by image path.
pub(super) fn read_tree(repo: &ostree::Repo, commit: &str) -> Result<BTreeMap<String, Entry>> {
    let (root, _) = repo
        .read_commit(commit, gio::Cancellable::NONE)
        .with_context(|| format!("Reading commit {commit}"))?;
    let mut entries = BTreeMap::new();
    let mut stack = vec![(root, String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let children = dir.enumerate_children(
            "standard::name,standard::type,standard::size,standard::symlink-target,unix::uid,unix::gid,unix::mode",
            gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
            gio::Cancellable::NONE,
        )?;
        for info in children {
            let info = info?;
            let name = info.name().to_string_lossy().to_string();
            let tree_path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let child = dir.child(&name);
            let (uid, gid, mode) = (
                info.attribute_uint32("unix::uid"),
                info.attribute_uint32("unix::gid"),
                info.attribute_uint32("unix::mode") & 0o7777,
            );
            let kind = match info.file_type() {
                gio::FileType::Directory => {
                    stack.push((child.clone(), tree_path.clone()));
                    Kind::Dir
                }
                gio::FileType::SymbolicLink => Kind::Symlink(
                    info.symlink_target()
                        .map(|t| t.to_string_lossy().to_string())
                        .unwrap_or_default(),
                ),
                _ => {
                    let file = child
                        .downcast::<ostree::RepoFile>()
                        .map_err(|_| anyhow::anyhow!("{tree_path} is not a repository file"))?;
                    file.ensure_resolved()?;
                    Kind::File {
                        checksum: file.checksum().to_string(),
                        size: info.size() as u64,
                    }
                }
            };
            entries.insert(
                image_path(&tree_path),
                Entry {
                    kind,
                    uid,
                    gid,
                    mode,
                },
            );
        }
    }
    for (path, mode) in LINKED_INTO_VAR.iter().chain(BUILD_SCRATCH) {
        let dir = Entry {
            kind: Kind::Dir,
            uid: 0,
            gid: 0,
            mode: *mode,
        };
        let is_link = matches!(
            entries.get(*path),
            Some(Entry {
                kind: Kind::Symlink(_),
                ..
            })
        );
        if is_link || !entries.contains_key(*path) {
            entries.insert(path.to_string(), dir);
        }
    }
    // Parents of the scratch directories.
    for path in [
        "var/cache/apt",
        "var/cache/apt/archives",
        "var/lib/apt",
        "var/lib/apt/lists",
        "var/cache",
        "var/lib",
    ] {
        entries.entry(path.to_string()).or_insert(Entry {
            kind: Kind::Dir,
            uid: 0,
            gid: 0,
            mode: 0o755,
        });
    }
    Ok(entries)
}

/// Which package owns each file, from dpkg's `info/*.list` in the commit.
pub(super) fn owners(
    repo: &ostree::Repo,
    entries: &BTreeMap<String, Entry>,
) -> Result<HashMap<String, String>> {
    let mut owner = HashMap::new();
    for (path, entry) in entries.range("var/lib/dpkg/info/".to_string()..) {
        let Some(name) = path.strip_prefix("var/lib/dpkg/info/") else {
            break;
        };
        let (Some(package), Kind::File { checksum, .. }) =
            (name.strip_suffix(".list"), &entry.kind)
        else {
            continue;
        };
        let package = package.split(':').next().unwrap_or(package);
        let mut text = String::new();
        content(repo, checksum)?.read_to_string(&mut text)?;
        for line in text.lines() {
            let p = line.trim_start_matches('/');
            if !p.is_empty() {
                owner
                    .entry(p.to_string())
                    .or_insert_with(|| package.to_string());
            }
        }
    }
    Ok(owner)
}

pub(super) fn content(repo: &ostree::Repo, checksum: &str) -> Result<Box<dyn Read>> {
    let (stream, _, _) = repo
        .load_file(checksum, gio::Cancellable::NONE)
        .with_context(|| format!("Loading object {checksum}"))?;
    let stream = stream.context("a regular file without content")?;
    Ok(Box::new(stream.into_read()))
}

/// Files that tools generate from the packages' content rather than ship.
fn is_generated(path: &str) -> bool {
    [
        "usr/lib/tmpfiles.d/",
        "usr/lib/sysusers.d/",
        "usr/share/factory/",
        "etc/ld.so.cache",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

/// The layers: name and the paths each holds (their parent directories are implied).
pub(super) fn plan_layers(
    entries: &BTreeMap<String, Entry>,
    owner: &HashMap<String, String>,
    max_layers: usize,
    previous: &[String],
) -> Vec<(String, Vec<String>)> {
    let mut rootfs = Vec::new();
    // Files no package owns that change with almost any package change
    // (tmpfiles.d and sysusers.d lists, ld.so.cache, factory copies of
    // /var), and the generated initramfs: layers of their own, so that an
    // update of one package does not change the large first layer.
    let mut generated = Vec::new();
    let mut boot = Vec::new();
    let mut database = Vec::new();
    let mut by_package: BTreeMap<&str, (u64, Vec<String>)> = BTreeMap::new();
    for (path, entry) in entries {
        if path.starts_with("var/lib/dpkg/") {
            database.push(path.clone());
            continue;
        }
        // A directory is in the layer of the package that lists it, else in
        // the first layer, so that empty ones exist (/root, apt's lists) and
        // a package that adds one changes only its own layer; every layer
        // also repeats the parents of what it holds.
        if matches!(entry.kind, Kind::Dir) {
            match owner.get(path) {
                Some(package) => by_package.entry(package).or_default().1.push(path.clone()),
                None => rootfs.push(path.clone()),
            }
            continue;
        }
        match owner.get(path) {
            Some(package) => {
                let slot = by_package.entry(package).or_default();
                slot.0 += match entry.kind {
                    Kind::File { size, .. } => size,
                    _ => 0,
                };
                slot.1.push(path.clone());
            }
            None if is_generated(path) => generated.push(path.clone()),
            None if path.starts_with("usr/lib/modules/") => boot.push(path.clone()),
            None => rootfs.push(path.clone()),
        }
    }
    // The packages that had layers of their own in the previous build keep
    // them; the largest others fill what is left. The order is by name.
    let own = max_layers.saturating_sub(5).max(1);
    let mut sizes: Vec<(&str, u64)> = by_package.iter().map(|(p, (s, _))| (*p, *s)).collect();
    sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let kept = previous
        .iter()
        .map(String::as_str)
        .filter(|p| by_package.contains_key(p));
    let mut big = std::collections::BTreeSet::new();
    for package in kept.chain(sizes.iter().map(|(p, _)| *p)) {
        if big.len() == own {
            break;
        }
        big.insert(package);
    }
    let mut layers = vec![("rootfs".to_string(), rootfs)];
    let mut others = Vec::new();
    for (package, (_, files)) in by_package {
        if big.contains(package) {
            layers.push((package.to_string(), files));
        } else {
            others.extend(files);
        }
    }
    if !others.is_empty() {
        layers.push(("other packages".to_string(), others));
    }
    if !boot.is_empty() {
        layers.push(("initramfs".to_string(), boot));
    }
    if !generated.is_empty() {
        layers.push(("generated files".to_string(), generated));
    }
    layers.push(("dpkg database".to_string(), database));
    layers
}
