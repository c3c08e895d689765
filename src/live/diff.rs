//! The difference between two commits of one repository, by path.
//!
//! Directories whose content and metadata checksums are equal are skipped
//! whole, so two commits of the same base that differ by a few packages are
//! compared in a few milliseconds. A directory only in the new commit is
//! reported once (its copy carries what is inside).

use anyhow::{Context, Result};
use ostree::{gio, prelude::*};

#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir {
        contents: String,
        metadata: String,
    },
    File(String),
    /// A symlink's checksum covers its target.
    Link(String),
}

fn node(file: &gio::File, kind: gio::FileType) -> Result<Node> {
    let file = file
        .clone()
        .downcast::<ostree::RepoFile>()
        .map_err(|_| anyhow::anyhow!("not a repository file"))?;
    file.ensure_resolved()?;
    Ok(match kind {
        gio::FileType::Directory => Node::Dir {
            contents: file
                .tree_get_contents_checksum()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            metadata: file
                .tree_get_metadata_checksum()
                .map(|s| s.to_string())
                .unwrap_or_default(),
        },
        gio::FileType::SymbolicLink => Node::Link(file.checksum().to_string()),
        _ => Node::File(file.checksum().to_string()),
    })
}

fn children(dir: &gio::File) -> Result<Vec<(String, gio::FileType)>> {
    let mut out = Vec::new();
    for info in dir.enumerate_children(
        "standard::name,standard::type",
        gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
        gio::Cancellable::NONE,
    )? {
        let info = info?;
        let name = info
            .name()
            .to_str()
            .map(str::to_string)
            .context("a file name that is not UTF-8")?;
        out.push((name, info.file_type()));
    }
    out.sort();
    Ok(out)
}

/// Paths (relative, e.g. "usr/bin/htop") that are new or different in `to`,
/// and paths of `from` that `to` does not have.
pub fn diff_commits(
    repo: &ostree::Repo,
    from: &str,
    to: &str,
) -> Result<(Vec<String>, Vec<String>)> {
    let read = |c: &str| {
        repo.read_commit(c, gio::Cancellable::NONE)
            .with_context(|| format!("Reading commit {c}"))
            .map(|(root, _)| root)
    };
    let (mut changed, mut removed) = (Vec::new(), Vec::new());
    walk(&read(from)?, &read(to)?, "", &mut changed, &mut removed)?;
    Ok((changed, removed))
}

fn walk(
    a: &gio::File,
    b: &gio::File,
    prefix: &str,
    changed: &mut Vec<String>,
    removed: &mut Vec<String>,
) -> Result<()> {
    let old = children(a)?;
    let new = children(b)?;
    let path = |name: &str| {
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        }
    };
    for (name, kind) in &old {
        if !new.iter().any(|(n, k)| n == name && k == kind) {
            removed.push(path(name));
        }
    }
    for (name, kind) in &new {
        let b_child = b.child(name);
        let Some((_, old_kind)) = old.iter().find(|(n, k)| n == name && k == kind) else {
            changed.push(path(name));
            continue;
        };
        let a_child = a.child(name);
        let (was, is) = (node(&a_child, *old_kind)?, node(&b_child, *kind)?);
        if was == is {
            continue;
        }
        match (&was, &is) {
            // A directory's new ownership or mode alone is not applied live
            // (it takes the next boot); what is inside is.
            (Node::Dir { .. }, Node::Dir { .. }) => {
                walk(&a_child, &b_child, &path(name), changed, removed)?
            }
            _ => changed.push(path(name)),
        }
    }
    Ok(())
}
