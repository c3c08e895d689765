//! Stacking an image's layers into one tree, inside the repository: the
//! layers are commits already, so they are merged as ostree trees, in
//! memory, and no file system is touched. Nothing a layer holds can lead
//! anywhere but into the stacked tree.
//!
//! The rules are the ones containers' own tools follow when they unpack
//! layers in order:
//! - before a layer, its whiteouts delete names from the layers below, and
//!   its opaque directories hide everything below them;
//! - an entry of the layer replaces whatever stood at its own path (a file
//!   over a directory, a directory over a link), except a directory the
//!   layer's tar never named (the parent of a file it holds): a link
//!   standing there is resolved, and the layer's content goes where it
//!   points, the way `tar` does it in a chroot;
//! - a link is resolved inside the stacked tree only: an absolute target
//!   starts at the tree's root and `..` stops there, as on the machine
//!   that boots the image. Links that loop or nest deeper than 40 fail.

use std::collections::{BTreeSet, VecDeque};

use anyhow::{bail, Context, Result};
use ostree::gio;

use super::layer::Layer;
use crate::sysroot::{tree_entry, TreeEntry};

/// As the kernel's limit on links in one path.
const MAX_LINKS: usize = 40;

/// The components of a whiteout or directory path a layer recorded; a
/// name that could leave the tree is refused (layers stored before
/// import refused them are checked again here).
fn components(path: &str) -> Result<Vec<&str>> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        bail!("{path:?} is not a path inside the image");
    }
    Ok(parts)
}

/// The layers' stacked tree (bottom first), with `dirmeta` (root, 0755) for
/// directories made where a link pointed nowhere.
pub fn stack(repo: &ostree::Repo, layers: &[Layer], dirmeta: &str) -> Result<ostree::MutableTree> {
    let stack = Stack {
        repo,
        root: ostree::MutableTree::new(),
        dirmeta,
    };
    stack.root.set_metadata_checksum(dirmeta);
    for layer in layers {
        stack
            .apply_whiteouts(layer)
            .with_context(|| format!("Applying the whiteouts of layer {}", layer.commit))?;
        let tree = ostree::MutableTree::from_commit(repo, &layer.commit)
            .with_context(|| format!("Loading layer {}", layer.commit))?;
        let implicit: BTreeSet<&str> = layer.implicit_dirs.iter().map(String::as_str).collect();
        if !implicit.contains("") {
            stack.root.set_metadata_checksum(&tree.metadata_checksum());
        }
        stack
            .merge(&stack.root, &tree, "", &implicit)
            .with_context(|| format!("Stacking layer {}", layer.commit))?;
    }
    Ok(stack.root)
}

struct Stack<'r> {
    repo: &'r ostree::Repo,
    root: ostree::MutableTree,
    dirmeta: &'r str,
}

/// What a name in a tree is (a link with its target).
enum Found {
    Nothing,
    Directory(ostree::MutableTree),
    File,
    Link(String),
}

impl Stack<'_> {
    fn lookup(&self, dir: &ostree::MutableTree, name: &str) -> Result<Found> {
        Ok(match dir.lookup(name) {
            Ok((_, Some(sub))) => Found::Directory(sub),
            Ok((Some(checksum), None)) => {
                let (_, info, _) = self
                    .repo
                    .load_file(&checksum, gio::Cancellable::NONE)
                    .with_context(|| format!("Loading {name}"))?;
                match info.symlink_target() {
                    Some(target) => Found::Link(target.to_string_lossy().into_owned()),
                    None => Found::File,
                }
            }
            Ok((None, None)) => Found::Nothing,
            Err(e) if e.matches(gio::IOErrorEnum::NotFound) => Found::Nothing,
            Err(e) => return Err(e).with_context(|| format!("Looking up {name}")),
        })
    }

    /// The directory at `parts`, every link on the way resolved inside the
    /// tree; with `create`, missing directories are made (as `mkdir -p`
    /// does through links), else a missing one is None. A file on the way
    /// is None too.
    fn resolve(&self, parts: &[&str], create: bool) -> Result<Option<ostree::MutableTree>> {
        let mut pending: VecDeque<String> = parts.iter().map(|p| p.to_string()).collect();
        let mut here: Vec<String> = Vec::new();
        let mut dir = self.root.clone();
        let mut links = 0;
        while let Some(part) = pending.pop_front() {
            match part.as_str() {
                "" | "." => continue,
                ".." => {
                    here.pop();
                    dir = self.walk_dirs(&here)?;
                    continue;
                }
                _ => {}
            }
            match self.lookup(&dir, &part)? {
                Found::Directory(sub) => {
                    dir = sub;
                    here.push(part);
                }
                Found::Link(target) => {
                    links += 1;
                    if links > MAX_LINKS {
                        bail!("too many levels of symbolic links at /{}", here.join("/"));
                    }
                    if target.starts_with('/') {
                        here.clear();
                        dir = self.root.clone();
                    }
                    for t in target.split('/').rev() {
                        pending.push_front(t.to_string());
                    }
                }
                Found::File => return Ok(None),
                Found::Nothing if create => {
                    let sub = dir.ensure_dir(&part)?;
                    sub.set_metadata_checksum(self.dirmeta);
                    dir = sub;
                    here.push(part);
                }
                Found::Nothing => return Ok(None),
            }
        }
        Ok(Some(dir))
    }

    /// The directories at `parts`, known to exist (no links on the way).
    fn walk_dirs(&self, parts: &[String]) -> Result<ostree::MutableTree> {
        let mut dir = self.root.clone();
        for part in parts {
            dir = match tree_entry(&dir, part)? {
                TreeEntry::Directory(sub) => sub,
                _ => bail!("/{} vanished while stacking", parts.join("/")),
            };
        }
        Ok(dir)
    }

    fn apply_whiteouts(&self, layer: &Layer) -> Result<()> {
        for path in &layer.opaque_dirs {
            let parts = components(path)?;
            let dir = match parts.split_last() {
                None => Some(self.root.clone()),
                Some((name, parent)) => match self.resolve(parent, false)? {
                    Some(p) => match self.lookup(&p, name)? {
                        Found::Directory(d) => Some(d),
                        _ => None,
                    },
                    None => None,
                },
            };
            if let Some(dir) = dir {
                let names: Vec<String> = dir
                    .copy_files()
                    .into_keys()
                    .chain(dir.copy_subdirs().into_keys())
                    .collect();
                for name in names {
                    dir.remove(&name, true)?;
                }
            }
        }
        for path in &layer.whiteouts {
            let parts = components(path)?;
            let Some((name, parent)) = parts.split_last() else {
                bail!("a whiteout of the image's root");
            };
            if let Some(dir) = self.resolve(parent, false)? {
                dir.remove(name, true)?;
            }
        }
        Ok(())
    }

    /// Put `src` (a layer's directory at `path`) over `dst`.
    fn merge(
        &self,
        dst: &ostree::MutableTree,
        src: &ostree::MutableTree,
        path: &str,
        implicit: &BTreeSet<&str>,
    ) -> Result<()> {
        for (name, checksum) in src.copy_files() {
            dst.remove(&name, true)?;
            dst.replace_file(&name, &checksum)?;
        }
        for (name, sub) in src.copy_subdirs() {
            let sub_path = crate::fsutil::join(path, &name);
            let named = !implicit.contains(sub_path.as_str());
            let target = match self.lookup(dst, &name)? {
                Found::Directory(existing) => {
                    if named {
                        existing.set_metadata_checksum(&sub.metadata_checksum());
                    }
                    existing
                }
                // A directory the tar never named, where a link stands:
                // its content goes where the link points.
                Found::Link(_) if !named => match self.resolve(&components(&sub_path)?, true)? {
                    Some(d) => d,
                    None => {
                        self.replace_with(dst, &name, &sub)?;
                        continue;
                    }
                },
                Found::Nothing | Found::File | Found::Link(_) => {
                    self.replace_with(dst, &name, &sub)?;
                    continue;
                }
            };
            self.merge(&target, &sub, &sub_path, implicit)?;
        }
        Ok(())
    }

    /// `name` in `dst` becomes the layer's directory `sub`, whatever stood
    /// there; its content is read from the repository when it is needed.
    fn replace_with(
        &self,
        dst: &ostree::MutableTree,
        name: &str,
        sub: &ostree::MutableTree,
    ) -> Result<()> {
        let contents = sub.contents_checksum();
        if contents.is_empty() {
            bail!("directory {name} of the layer was changed while stacking");
        }
        dst.remove(name, true)?;
        let new = dst.ensure_dir(name)?;
        if !new.fill_empty_from_dirtree(self.repo, &contents, &sub.metadata_checksum()) {
            bail!("could not take directory {name} from its layer");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::layer;
    use std::path::Path;

    /// A tar entry: a name written as is (absolute and `..` included), and
    /// what it is.
    enum E<'a> {
        Dir(&'a str),
        File(&'a str, &'a str),
        Link(&'a str, &'a str),
        HardLink(&'a str, &'a str),
    }

    fn tar(entries: &[E]) -> Vec<u8> {
        let mut out = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (name, data, kind, link) = match e {
                E::Dir(n) => (*n, "", tar::EntryType::Directory, None),
                E::File(n, d) => (*n, *d, tar::EntryType::Regular, None),
                E::Link(n, t) => (*n, "", tar::EntryType::Symlink, Some(*t)),
                E::HardLink(n, t) => (*n, "", tar::EntryType::Link, Some(*t)),
            };
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(t) = link {
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
            }
            h.set_entry_type(kind);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_size(data.len() as u64);
            h.set_cksum();
            out.append(&h, data.as_bytes()).unwrap();
        }
        out.into_inner().unwrap()
    }

    struct Repo {
        dir: tempfile::TempDir,
        repo: ostree::Repo,
    }

    fn repo() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let repo = ostree::Repo::new_for_path(dir.path().join("repo"));
        repo.create(ostree::RepoMode::BareUserOnly, gio::Cancellable::NONE)
            .unwrap();
        Repo { dir, repo }
    }

    impl Repo {
        fn layer(&self, entries: &[E]) -> Result<Layer> {
            self.layer_bytes(&tar(entries))
        }

        fn layer_bytes(&self, bytes: &[u8]) -> Result<Layer> {
            use sha2::Digest as _;
            let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
            let blob = self.dir.path().join("blob");
            std::fs::write(&blob, bytes).unwrap();
            crate::sysroot::in_transaction(&self.repo, || layer::import(&self.repo, &blob, &digest))
        }

        /// The stacked tree, checked out.
        fn stacked(&self, layers: &[Layer]) -> Result<std::path::PathBuf> {
            let out = self.dir.path().join("out");
            let _ = std::fs::remove_dir_all(&out);
            let commit = crate::sysroot::commit_tree(
                &self.repo,
                crate::sysroot::NewCommit {
                    parent: None,
                    subject: "stacked",
                    metadata: ostree::glib::VariantDict::new(None),
                    refs: Vec::new(),
                    set_ref: None,
                    timestamp: Some(0),
                    bootable: false,
                },
                || stack(&self.repo, layers, &layer::default_dirmeta(&self.repo)?),
            )?;
            let opts = ostree::RepoCheckoutAtOptions {
                mode: ostree::RepoCheckoutMode::User,
                ..Default::default()
            };
            self.repo.checkout_at(
                Some(&opts),
                libc::AT_FDCWD,
                &out,
                &commit,
                gio::Cancellable::NONE,
            )?;
            Ok(out)
        }
    }

    fn link(p: &Path) -> String {
        std::fs::read_link(p)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn content_under_a_link_lands_inside_the_tree() {
        let r = repo();
        let lower = r
            .layer(&[
                E::Dir("usr/"),
                E::Dir("usr/share/"),
                E::Link("usr/share/x", "/outside/dir"),
                E::Link("usr/share/up", "../../../../outside"),
            ])
            .unwrap();
        // The directory the tar never names goes where the link points.
        let through = r
            .layer(&[
                E::File("usr/share/x/pwned", "1"),
                E::File("usr/share/up/more", "2"),
            ])
            .unwrap();
        let out = r.stacked(&[lower.clone(), through]).unwrap();
        assert_eq!(link(&out.join("usr/share/x")), "/outside/dir");
        assert_eq!(
            std::fs::read_to_string(out.join("outside/dir/pwned")).unwrap(),
            "1"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("outside/more")).unwrap(),
            "2"
        );
        // A directory the tar names replaces the link.
        let replacing = r
            .layer(&[E::Dir("usr/share/x/"), E::File("usr/share/x/f", "3")])
            .unwrap();
        let out = r.stacked(&[lower, replacing]).unwrap();
        assert!(std::fs::symlink_metadata(out.join("usr/share/x"))
            .unwrap()
            .is_dir());
        assert!(!out.join("outside").exists());
    }

    #[test]
    fn whiteouts_delete_inside_the_tree_only() {
        let r = repo();
        let lower = r
            .layer(&[
                E::File("usr/bin/keep", "k"),
                E::File("usr/bin/gone", "g"),
                E::File("etc/a/b", "b"),
                E::Link("bin", "/usr/bin"),
            ])
            .unwrap();
        let upper = r
            .layer(&[
                E::File("usr/bin/.wh.gone", ""),
                E::File("etc/a/.wh..wh..opq", ""),
                E::File("etc/a/new", "n"),
            ])
            .unwrap();
        let out = r.stacked(&[lower.clone(), upper]).unwrap();
        assert!(out.join("usr/bin/keep").is_file() && !out.join("usr/bin/gone").exists());
        assert!(!out.join("etc/a/b").exists() && out.join("etc/a/new").is_file());
        // Through a link: resolved in the tree (bin -> /usr/bin is its /usr/bin).
        let via_link = r.layer(&[E::File("bin/.wh.keep", "")]).unwrap();
        let out = r.stacked(&[lower.clone(), via_link]).unwrap();
        assert!(!out.join("usr/bin/keep").exists());
        // An opaque whiteout at the root hides every layer below.
        let opaque = r
            .layer(&[E::File(".wh..wh..opq", ""), E::File("only", "o")])
            .unwrap();
        let out = r.stacked(&[lower, opaque]).unwrap();
        let names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["only"]);
    }

    #[test]
    fn names_that_leave_the_tree_are_refused() {
        let r = repo();
        for (entries, why) in [
            (vec![E::File("/etc/passwd", "x")], "absolute name"),
            (vec![E::File("../x", "x")], "leaves the root"),
            (vec![E::File("usr/../../x", "x")], "leaves the root"),
            (vec![E::File("usr/.wh..", "")], "whiteout of no name"),
            (vec![E::HardLink("h", "/etc/passwd")], "absolute name"),
            (vec![E::HardLink("h", "../etc/passwd")], "leaves the root"),
            (vec![E::HardLink("h", "etc/passwd")], "does not have"),
        ] {
            let err = r.layer(&entries).unwrap_err();
            let bad = err
                .downcast_ref::<layer::BadLayer>()
                .map(|b| b.0.clone())
                .unwrap_or_else(|| format!("{err:#}"));
            assert!(bad.contains(why), "wanted {why}: {bad}");
        }
        // A tree deeper than any real one (the recursions that stack and
        // commit it must stay shallow).
        let mut deep = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        deep.append_data(&mut h, "d/".repeat(300) + "f", &[][..])
            .unwrap();
        let bytes = deep.into_inner().unwrap();
        let err = r.layer_bytes(&bytes).unwrap_err();
        assert!(format!("{err:#}").contains("deeper than"), "{err:#}");
        // Links that loop fail instead of going round for ever.
        let lower = r.layer(&[E::Link("a", "b"), E::Link("b", "a")]).unwrap();
        let upper = r.layer(&[E::File("a/f", "f")]).unwrap();
        let err = r.stacked(&[lower, upper]).unwrap_err();
        assert!(format!("{err:#}").contains("too many levels"), "{err:#}");
    }

    /// overlayfs reads `trusted.overlay.*` on the lower layer of a
    /// layering build: an image cannot set them; its other attributes stay.
    #[test]
    fn trusted_attributes_of_a_layer_are_dropped() {
        use gio::prelude::*;
        let r = repo();
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
            ("SCHILY.xattr.user.kept", &b"1"[..]),
        ])
        .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, "dir/", &[][..]).unwrap();
        let layer = r.layer_bytes(&b.into_inner().unwrap()).unwrap();
        let commit = layer.commit.clone();
        let (root, _) = r.repo.read_commit(&commit, gio::Cancellable::NONE).unwrap();
        let dir = root.child("dir").downcast::<ostree::RepoFile>().unwrap();
        dir.ensure_resolved().unwrap();
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> =
            dir.xattrs(gio::Cancellable::NONE).unwrap().get().unwrap();
        let names: Vec<String> = xattrs
            .iter()
            .map(|(n, _)| {
                String::from_utf8_lossy(n)
                    .trim_end_matches('\0')
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["user.kept"]);
    }

    /// The importer checks the digest itself (skopeo may not, for every
    /// transport): a layer that does not match is never committed.
    #[test]
    fn a_layer_that_does_not_match_its_digest_is_refused() {
        let r = repo();
        let blob = r.dir.path().join("blob");
        std::fs::write(&blob, tar(&[E::File("a", "a")])).unwrap();
        let digest = format!("sha256:{}", "0".repeat(64));
        let err =
            crate::sysroot::in_transaction(&r.repo, || layer::import(&r.repo, &blob, &digest))
                .unwrap_err();
        let bad = err.downcast_ref::<layer::BadLayer>().expect("a BadLayer");
        assert!(bad.0.contains("not sha256:000"), "{bad}");
        let refs = r.repo.list_refs(None, gio::Cancellable::NONE).unwrap();
        assert!(refs.is_empty(), "{refs:?}");
    }
}
