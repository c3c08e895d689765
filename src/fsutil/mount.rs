//! A mount that lasts as long as its value.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// `device` mounted on `target`, unmounted when dropped (lazily, if busy).
pub struct Mounted(PathBuf);

impl Mounted {
    /// Mount `device` (of type `fstype`; `options`: "", "ro" or "sync") on
    /// `target`, creating it.
    pub fn new(device: &Path, target: &Path, fstype: &str, options: &str) -> Result<Mounted> {
        std::fs::create_dir_all(target)?;
        let flags = match options {
            "ro" => nix::mount::MsFlags::MS_RDONLY,
            "sync" => nix::mount::MsFlags::MS_SYNCHRONOUS,
            "" => nix::mount::MsFlags::empty(),
            other => anyhow::bail!("unknown mount options {other:?}"),
        };
        let data = None::<&str>;
        nix::mount::mount(Some(device), target, Some(fstype), flags, data)
            .with_context(|| format!("Mounting {} on {}", device.display(), target.display()))?;
        Ok(Mounted(target.to_path_buf()))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if nix::mount::umount(&self.0).is_err() {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
