//! Copies and moves between trees (a deployment's checkout into the
//! running /usr, a scratch /var into the tree being built), through the
//! same rules as every other operation on a [`Beneath`]: files are put in
//! place by rename, with owner, mode and extended attributes.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, Mode};
use rustix::io::Errno;

use super::{errno, join, new_temporary, own, remove_at, Beneath, Kind};

impl Beneath {
    /// Move `from` to `to` in `dest`, copying where the two are on different
    /// file systems; nothing may stand at `to`.
    pub fn move_to(&self, from: &str, dest: &Beneath, to: &str) -> Result<()> {
        match self.rename(from, dest, to) {
            Err(e) if errno(&e) == Some(Errno::XDEV) => {
                self.copy_to(from, dest, to)?;
                self.remove_all(from)
            }
            moved => moved,
        }
    }

    /// Remove whatever stands at `rel` (a directory with its content; a
    /// link, not what it points to); nothing there is not an error.
    pub fn remove_all(&self, rel: &str) -> Result<()> {
        let (dir, name) = match self.parent(rel) {
            Ok(found) => found,
            Err(e) if matches!(errno(&e), Some(Errno::NOENT | Errno::NOTDIR)) => return Ok(()),
            Err(e) => return Err(e),
        };
        remove_at(dir.as_fd(), OsStr::new(name))
            .with_context(|| format!("Removing {}", self.shown(rel)))
    }

    /// Copy `from` (a file, a link, or a directory with its content) to `to`
    /// in `dest`, with owners, modes and extended attributes. Files and links
    /// are put in place by rename, so a reader never sees half a file; a
    /// directory already at `to` is merged into, anything else there replaced.
    pub fn copy_to(&self, from: &str, dest: &Beneath, to: &str) -> Result<()> {
        let meta = self
            .meta(from)?
            .with_context(|| format!("{} does not exist", self.shown(from)))?;
        match meta.kind {
            Kind::Directory => {
                match dest.meta(to)? {
                    Some(m) if m.kind == Kind::Directory => {}
                    Some(_) => {
                        dest.remove_all(to)?;
                        dest.mkdir(to)?;
                    }
                    None => dest.mkdir(to)?,
                }
                let target = dest.dir_nofollow(to)?;
                own(target.as_fd(), &meta)
                    .with_context(|| format!("Setting the owner of {}", dest.shown(to)))?;
                copy_xattrs(self.dir_nofollow(from)?.as_fd(), target.as_fd())?;
                for (name, _) in self.entries(from)? {
                    self.copy_to(&join(from, &name), dest, &join(to, &name))?;
                }
                Ok(())
            }
            Kind::File => {
                let mut source = self.open_file(from)?.context("vanished")?;
                dest.replace_dir_by_file(to)?;
                let (dir, name) = dest.parent(to)?;
                let (tmp, fd) = new_temporary(&dir, name)?;
                let written = (|| -> Result<()> {
                    let mut file = std::fs::File::from(fd);
                    std::io::copy(&mut source, &mut file)?;
                    own(file.as_fd(), &meta)?;
                    copy_xattrs(source.as_fd(), file.as_fd())?;
                    file.sync_all()?;
                    Ok(rustix::fs::renameat(&dir, tmp.as_str(), &dir, name)?)
                })();
                if written.is_err() {
                    let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
                }
                written
                    .with_context(|| format!("Copying {} to {}", self.shown(from), dest.shown(to)))
            }
            Kind::Symlink => {
                let target = self.read_link(from)?;
                dest.replace_dir_by_file(to)?;
                let (dir, name) = dest.parent(to)?;
                let tmp = format!(".apt-ostree-link-{}", std::process::id());
                let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
                rustix::fs::symlinkat(&target, &dir, tmp.as_str())?;
                rustix::fs::chownat(
                    &dir,
                    tmp.as_str(),
                    Some(rustix::fs::Uid::from_raw(meta.uid)),
                    Some(rustix::fs::Gid::from_raw(meta.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
                rustix::fs::renameat(&dir, tmp.as_str(), &dir, name)
                    .map_err(std::io::Error::from)
                    .with_context(|| format!("Copying the link {}", self.shown(from)))
            }
            Kind::Special => bail!("{} is not a file, link or directory", self.shown(from)),
        }
    }

    fn mkdir(&self, rel: &str) -> Result<()> {
        let (dir, name) = self.parent(rel)?;
        rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755))
            .map_err(std::io::Error::from)
            .with_context(|| format!("Creating {}", self.shown(rel)))
    }

    /// Rename cannot put a file over a directory: remove one standing at `rel`.
    fn replace_dir_by_file(&self, rel: &str) -> Result<()> {
        if self.is_dir(rel)? {
            self.remove_all(rel)?;
        }
        Ok(())
    }
}

fn copy_xattrs(from: BorrowedFd, to: BorrowedFd) -> Result<()> {
    let mut names = vec![0u8; 64 * 1024];
    let n = match rustix::fs::flistxattr(from, &mut names[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(std::io::Error::from(e).into()),
    };
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        let mut value = vec![0u8; 64 * 1024];
        let len = rustix::fs::fgetxattr(from, name, &mut value[..])?;
        rustix::fs::fsetxattr(to, name, &value[..len], rustix::fs::XattrFlags::empty())
            .with_context(|| format!("Copying the attribute {}", name.to_string_lossy()))?;
    }
    Ok(())
}
