//! File writes that a crash cannot leave half done, [`Beneath`], the one
//! way to touch a tree that came from an image or a package, and
//! [`glob_matches`] for names.
//!
//! A file is written under a temporary name beside its final one, synced,
//! renamed over the final name, and the directory is synced, so that after a
//! power cut the name holds the old content or the whole new one. Renaming
//! also never writes into an existing file, which matters in hard-linked
//! checkouts, where that file may be a repository object.

mod beneath;
mod mount;

pub use beneath::{join, Beneath, Kind, Meta};
pub use mount::Mounted;

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Replace `path` with `contents`, atomically and durably.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".apt-ostree-")
        .tempfile_in(dir)
        .with_context(|| format!("Creating a temporary file in {}", dir.display()))?;
    tmp.write_all(contents)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("Writing {}", path.display()))?;
    // tempfile creates 0600; what we write is read by others (units, tmpfiles).
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.persist(path)
        .with_context(|| format!("Renaming into {}", path.display()))?;
    sync_dir(dir)
}

/// Swap what stands at `a` and `b` in one step (`renameat2(RENAME_EXCHANGE)`):
/// each name always holds one of the two.
pub fn exchange(a: &Path, b: &Path) -> Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        a,
        rustix::fs::CWD,
        b,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("Exchanging {} and {}", a.display(), b.display()))
}

/// Take a write lock on the whole of `file` without waiting; false when
/// someone holds it. `ofd`: an open file description lock (libostree's
/// kind), else a lock owned by this process (dpkg's and apt's kind).
pub fn try_write_lock(file: &std::fs::File, ofd: bool) -> bool {
    let whole_file = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    let arg = if ofd {
        nix::fcntl::FcntlArg::F_OFD_SETLK(&whole_file)
    } else {
        nix::fcntl::FcntlArg::F_SETLK(&whole_file)
    };
    nix::fcntl::fcntl(file, arg).is_ok()
}

/// Make what was created, renamed or removed in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("Syncing {}", dir.display()))
}

/// Whether `name` matches `pattern`, where `*` stands for any run of
/// characters and `?` for one (nothing else is special).
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    fn glob(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => glob(&p[1..], n) || (!n.is_empty() && glob(p, &n[1..])),
            (Some(b'?'), Some(_)) => glob(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => glob(&p[1..], &n[1..]),
            _ => false,
        }
    }
    glob(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_the_name_and_never_writes_into_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conf");
        std::fs::write(&path, "old").unwrap();
        // A second name for the old inode, as a hard-linked checkout has.
        let other = dir.path().join("object");
        std::fs::hard_link(&path, &other).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(&other).unwrap(), "old");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 2, "a temporary file was left behind");
    }

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_matches(
            "apt-ostree_*.deb",
            "apt-ostree_0.1.0+deb13_amd64.deb"
        ));
        assert!(!glob_matches(
            "apt-ostree_*.deb",
            "cockpit-apt-ostree_0.1.0+deb13_all.deb"
        ));
        assert!(!glob_matches("apt-ostree_*.deb", "apt-ostree_0.1.0.dsc"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxcyyb"));
        assert!(glob_matches("*", "anything"));
        assert!(!glob_matches("ab*ba", "aba"));
        assert!(glob_matches("lib?.so", "libc.so"));
        assert!(!glob_matches("lib?.so", "lib.so"));
    }
}
