//! The one way to touch a tree that came from elsewhere: an image's layers,
//! packages' files, what dpkg and maintainer scripts left in a scratch /var,
//! a deployment's checkout. Its content may hold symbolic links to anything
//! (`boot -> /boot`, `usr/share/x -> /etc`), and the daemon is root.
//!
//! Every path is resolved from the tree's root with `openat2` and
//! `RESOLVE_IN_ROOT`: a link met on the way means what it would mean on the
//! machine that boots the tree (an absolute link, or `..`, stops at the
//! tree's root), so nothing can lead outside it. The last component of a
//! path is never followed: a link there is read, renamed or removed as a
//! link, never written through, and a file is only ever created new
//! (`O_EXCL`) and renamed into place, never written in place (in a
//! hard-linked checkout, the old file may be a repository object).

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

mod copy;

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags};
use rustix::io::Errno;

/// Links resolve inside the tree; /proc's magic links and other file
/// systems mounted inside are never entered.
const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// What stands at a path (never what a link there points to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File,
    Symlink,
    /// Device nodes, FIFOs, sockets: nothing a commit can hold.
    Special,
}

/// The metadata of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits (with set-id and sticky bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Meta {
    fn of(st: &rustix::fs::Stat) -> Meta {
        let kind = match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::Directory => Kind::Directory,
            rustix::fs::FileType::RegularFile => Kind::File,
            rustix::fs::FileType::Symlink => Kind::Symlink,
            _ => Kind::Special,
        };
        Meta {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
        }
    }
}

/// A directory tree addressed only beneath its root.
#[derive(Debug)]
pub struct Beneath {
    root: OwnedFd,
    path: PathBuf,
}

/// `rel` split into its parent (empty for the root) and last name; a path
/// that is absolute, empty or has `.`/`..` components is a caller's bug.
fn split(rel: &str) -> Result<(&str, &str)> {
    if rel.is_empty()
        || rel.starts_with('/')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        bail!("{rel:?} is not a path inside a tree");
    }
    Ok(rel.rsplit_once('/').unwrap_or(("", rel)))
}

fn errno(e: &anyhow::Error) -> Option<Errno> {
    e.downcast_ref::<std::io::Error>()
        .and_then(|e| e.raw_os_error())
        .map(Errno::from_raw_os_error)
}

impl Beneath {
    /// The tree at `path` (a path the daemon chose, never one from content).
    pub fn open(path: &Path) -> Result<Beneath> {
        let root = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("Opening {}", path.display()))?;
        Ok(Beneath {
            root,
            path: path.to_path_buf(),
        })
    }

    /// Where the tree is (for messages, and for programs run on it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn shown(&self, rel: &str) -> String {
        format!("{}/{rel}", self.path.display())
    }

    /// The directory at `rel` ("" for the root), links on the way and at
    /// its end resolved inside the tree.
    fn dir(&self, rel: &str) -> Result<OwnedFd> {
        let path = if rel.is_empty() { "." } else { rel };
        rustix::fs::openat2(
            &self.root,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
        .map_err(std::io::Error::from)
        .with_context(|| format!("Opening the directory {}", self.shown(rel)))
    }

    /// The directory holding `rel`, and `rel`'s last name.
    fn parent<'a>(&self, rel: &'a str) -> Result<(OwnedFd, &'a str)> {
        let (parent, name) = split(rel)?;
        Ok((self.dir(parent)?, name))
    }

    /// The directory `rel` (a real one, not a link) as a tree of its own.
    pub fn subtree(&self, rel: &str) -> Result<Beneath> {
        Ok(Beneath {
            root: self.dir_nofollow(rel)?,
            path: self.path.join(rel),
        })
    }

    /// What stands at `rel`, or None.
    pub fn meta(&self, rel: &str) -> Result<Option<Meta>> {
        let (dir, name) = match self.parent(rel) {
            Ok(found) => found,
            Err(e) if matches!(errno(&e), Some(Errno::NOENT | Errno::NOTDIR)) => return Ok(None),
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Meta::of(&st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => {
                Err(std::io::Error::from(e)).with_context(|| format!("Reading {}", self.shown(rel)))
            }
        }
    }

    /// True when `rel` is a real directory (not a link to one).
    pub fn is_dir(&self, rel: &str) -> Result<bool> {
        Ok(self.meta(rel)?.is_some_and(|m| m.kind == Kind::Directory))
    }

    /// The names in the directory `rel` ("" for the root) with what each
    /// is, sorted. A link at `rel` itself is not listed through.
    pub fn entries(&self, rel: &str) -> Result<Vec<(String, Meta)>> {
        let dir = self.dir_nofollow(rel)?;
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&dir)
            .with_context(|| format!("Reading {}", self.shown(rel)))?
        {
            let entry = entry.with_context(|| format!("Reading {}", self.shown(rel)))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = std::str::from_utf8(name)
                .with_context(|| format!("A name in {} is not UTF-8", self.shown(rel)))?
                .to_string();
            let st = rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(std::io::Error::from)
                .with_context(|| format!("Reading {}", self.shown(&join(rel, &name))))?;
            out.push((name, Meta::of(&st)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Every entry under `rel` (relative to `rel`), parents before their
    /// content; links are listed, never descended into.
    pub fn walk(&self, rel: &str) -> Result<Vec<(String, Meta)>> {
        let mut out = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(sub) = pending.pop() {
            for (name, meta) in self.entries(&join(rel, &sub))? {
                let path = join(&sub, &name);
                if meta.kind == Kind::Directory {
                    pending.push(path.clone());
                }
                out.push((path, meta));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn dir_nofollow(&self, rel: &str) -> Result<OwnedFd> {
        if rel.is_empty() {
            return self.dir("");
        }
        let (dir, name) = self.parent(rel)?;
        rustix::fs::openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)
        .with_context(|| format!("Opening the directory {}", self.shown(rel)))
    }

    /// The regular file at `rel`, open for reading (never a FIFO, which
    /// would block, nor a link).
    pub fn open_file(&self, rel: &str) -> Result<Option<std::fs::File>> {
        let (dir, name) = match self.parent(rel) {
            Ok(found) => found,
            Err(e) if matches!(errno(&e), Some(Errno::NOENT | Errno::NOTDIR)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let fd = match rustix::fs::openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => bail!("{} is a symbolic link, not a file", self.shown(rel)),
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("Opening {}", self.shown(rel)))
            }
        };
        let st = rustix::fs::fstat(&fd)?;
        if Meta::of(&st).kind != Kind::File {
            bail!("{} is not a regular file", self.shown(rel));
        }
        Ok(Some(std::fs::File::from(fd)))
    }

    /// The content of the regular file at `rel`, or None where there is none.
    pub fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let Some(mut file) = self.open_file(rel)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("Reading {}", self.shown(rel)))?;
        Ok(Some(bytes))
    }

    /// [`Beneath::read`] as text (bytes that are not UTF-8 replaced); a file
    /// that is missing reads as empty.
    pub fn read_text(&self, rel: &str) -> Result<String> {
        // Lossy: a passwd with a Latin-1 name in a comment is still read.
        let bytes = self.read(rel)?.unwrap_or_default();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Whether a program on the host that opens `rel` under the tree's
    /// path (as libostree does in a deployment, following links the plain
    /// way) stays inside the tree: no link on the way is absolute or climbs
    /// above the root. What is missing counts as inside.
    pub fn stays_inside(&self, rel: &str) -> Result<bool> {
        let mut pending: std::collections::VecDeque<String> =
            rel.split('/').map(str::to_string).collect();
        let mut here: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(part) = pending.pop_front() {
            match part.as_str() {
                "" | "." => continue,
                ".." => {
                    if here.pop().is_none() {
                        return Ok(false);
                    }
                    continue;
                }
                _ => {}
            }
            let path = join(&here.join("/"), &part);
            match self.meta(&path)?.map(|m| m.kind) {
                Some(Kind::Symlink) => {
                    links += 1;
                    let target = self.read_link(&path)?;
                    let target = target.to_string_lossy();
                    if links > 40 || target.starts_with('/') {
                        return Ok(false);
                    }
                    for t in target.split('/').rev() {
                        pending.push_front(t.to_string());
                    }
                }
                Some(_) => here.push(part),
                None => return Ok(true),
            }
        }
        Ok(true)
    }

    /// The target of the link at `rel`.
    pub fn read_link(&self, rel: &str) -> Result<PathBuf> {
        let (dir, name) = self.parent(rel)?;
        let target = rustix::fs::readlinkat(&dir, name, Vec::new())
            .map_err(std::io::Error::from)
            .with_context(|| format!("Reading the link {}", self.shown(rel)))?;
        Ok(PathBuf::from(OsString::from(std::ffi::OsStr::from_bytes(
            target.as_bytes(),
        ))))
    }

    /// Make the directory `rel` and its parents where missing (mode 0755).
    /// A link on the way is resolved inside the tree; one to a place that
    /// does not exist is an error, not something to create.
    pub fn create_dir_all(&self, rel: &str) -> Result<()> {
        let mut done = String::new();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            let path = join(&done, part);
            match self.dir(&path) {
                Ok(_) => {}
                Err(e) if errno(&e) == Some(Errno::NOENT) => {
                    let parent = self.dir(&done)?;
                    match rustix::fs::mkdirat(&parent, part, Mode::from_raw_mode(0o755)) {
                        Err(Errno::EXIST) => bail!(
                            "{} is a link to {}, which the tree does not have",
                            self.shown(&path),
                            self.read_link(&path)?.display()
                        ),
                        made => made
                            .map_err(std::io::Error::from)
                            .with_context(|| format!("Creating {}", self.shown(&path)))?,
                    }
                }
                Err(e) => return Err(e),
            }
            done = path;
        }
        Ok(())
    }

    /// Give the directory `rel` (not a link) `mode`.
    pub fn set_dir_mode(&self, rel: &str, mode: u32) -> Result<()> {
        let dir = self.dir_nofollow(rel)?;
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode))
            .map_err(std::io::Error::from)
            .with_context(|| format!("Setting the mode of {}", self.shown(rel)))
    }

    /// Give the directory `rel` (a real one) another owner, in place.
    pub fn set_dir_owner(&self, rel: &str, uid: u32, gid: u32) -> Result<()> {
        let dir = self.dir_nofollow(rel)?;
        rustix::fs::fchown(
            &dir,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .map_err(std::io::Error::from)
        .with_context(|| format!("Setting the owner of {}", self.shown(rel)))
    }

    /// Write `rel` anew (mode `mode`, owned by whoever runs this), replacing
    /// a file or link of that name by rename.
    pub fn write(&self, rel: &str, contents: &[u8], mode: u32) -> Result<()> {
        self.write_from(
            rel,
            &mut &contents[..],
            &Meta {
                kind: Kind::File,
                mode,
                uid: u32::MAX,
                gid: u32::MAX,
            },
        )
    }

    /// Write what `source` gives as `rel`, with `meta`'s mode and owner
    /// (`u32::MAX`: unchanged), by a new file renamed into place.
    pub fn write_from(&self, rel: &str, source: &mut dyn Read, meta: &Meta) -> Result<()> {
        let (dir, name) = self.parent(rel)?;
        let (tmp, fd) = new_temporary(&dir, name)?;
        let written = (|| -> Result<()> {
            let mut file = std::fs::File::from(fd);
            std::io::copy(source, &mut file)?;
            file.flush()?;
            own(file.as_fd(), meta)?;
            Ok(())
        })()
        .and_then(|()| Ok(rustix::fs::renameat(&dir, tmp.as_str(), &dir, name)?));
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        }
        written.with_context(|| format!("Writing {}", self.shown(rel)))
    }

    /// A symbolic link `rel` -> `target`; nothing may stand at `rel`.
    pub fn symlink(&self, target: &Path, rel: &str) -> Result<()> {
        let (dir, name) = self.parent(rel)?;
        rustix::fs::symlinkat(target, &dir, name)
            .map_err(std::io::Error::from)
            .with_context(|| format!("Creating the link {}", self.shown(rel)))
    }

    /// Move `from` to `to` in `dest` (this tree or another on the same
    /// file system); nothing may stand at `to`.
    pub fn rename(&self, from: &str, dest: &Beneath, to: &str) -> Result<()> {
        let (from_dir, from_name) = self.parent(from)?;
        let (to_dir, to_name) = dest.parent(to)?;
        rustix::fs::renameat_with(
            &from_dir,
            from_name,
            &to_dir,
            to_name,
            RenameFlags::NOREPLACE,
        )
        .map_err(std::io::Error::from)
        .with_context(|| format!("Moving {} to {}", self.shown(from), dest.shown(to)))
    }
}

/// `a/b`, or either alone where the other is empty.
pub fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

/// A new, empty file beside `name` in `dir`, made with `O_EXCL` so that
/// nothing planted under that name is ever opened.
fn new_temporary(dir: &OwnedFd, name: &str) -> Result<(String, OwnedFd)> {
    for attempt in 0..100u32 {
        let tmp = format!(".apt-ostree-tmp-{}-{attempt}", std::process::id());
        match rustix::fs::openat(
            dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => return Ok((tmp, fd)),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(std::io::Error::from(e)).context("Creating a temporary file"),
        }
    }
    bail!("no free temporary name beside {name}")
}

/// Give `fd` `meta`'s owner, then its mode (chown clears set-id bits).
fn own(fd: BorrowedFd, meta: &Meta) -> Result<()> {
    if meta.uid != u32::MAX || meta.gid != u32::MAX {
        let id = |v: u32| (v != u32::MAX).then_some(v);
        rustix::fs::fchown(
            fd,
            id(meta.uid).map(rustix::fs::Uid::from_raw),
            id(meta.gid).map(rustix::fs::Gid::from_raw),
        )?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))?;
    Ok(())
}

/// Remove `name` in `dir` and, for a directory, all it holds, through
/// descriptors only (never a path that a link could redirect).
fn remove_at(dir: BorrowedFd, name: &OsStr) -> std::io::Result<()> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode)
                != rustix::fs::FileType::Directory =>
        {
            return Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?);
        }
        Ok(_) => {}
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let names: Vec<OsString> = rustix::fs::Dir::read_from(&sub)?
        .filter_map(|e| e.ok())
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect();
    for child in names {
        remove_at(sub.as_fd(), &child)?;
    }
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

#[cfg(test)]
mod tests;
