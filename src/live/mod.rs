//! Live changes: the running system's /usr brought to a new deployment's
//! without a reboot (rpm-ostree's apply-live, at package level).
//!
//! The booted deployment's /usr gets ostree's transient overlay (`ostree admin
//! unlock --transient`): read-only for the whole system, writable only in a
//! private mount namespace. Both steps run as transient units of the service
//! manager (`systemd-run`), so they happen in the host's mount namespace and
//! never in the daemon's own (which is a slave copy, `MountFlags=slave`).
//! What to write is a [`FilePlan`]: the difference between the commit /usr
//! shows now and the new deployment's, as paths to copy from that
//! deployment's checkout and paths to remove. Files are replaced by rename,
//! never written in place (the lower layer is hard-linked into the
//! repository). The state (which commit /usr shows) lives in /run, so it ends
//! with the boot, as the overlay does.

mod diff;
mod write;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub use diff::diff_commits;
pub use write::{apply_plan, helper_main};

use crate::progress::Sink;

/// Where the live state and plans are kept: gone at the next boot.
pub const RUN_DIR: &str = "/run/apt-ostree";

/// The ref that keeps the commit /usr shows in the repository while it is live.
pub const LIVE_REF: &str = "apt-ostree/live";

/// ... and the one /usr showed before a write that has not finished.
pub const LIVE_PREVIOUS_REF: &str = "apt-ostree/live-previous";

/// What the running /usr shows, on top of the booted deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveState {
    /// The booted deployment ("CHECKSUM.SERIAL") this applies to.
    pub deployment: String,
    /// The commit whose /usr the running system shows.
    pub commit: String,
    /// Packages that differ from the booted commit's (added or changed).
    pub packages: Vec<String>,
    /// While a write is under way, or after one that did not finish: the
    /// commit /usr showed before it (/usr may show either, or a mix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

fn state_path() -> PathBuf {
    Path::new(RUN_DIR).join("live.json")
}

/// The live state of `booted` ("CHECKSUM.SERIAL"), if /usr shows live changes.
pub fn read_state(booted: &str) -> Option<LiveState> {
    let bytes = std::fs::read(state_path()).ok()?;
    serde_json::from_slice::<LiveState>(&bytes)
        .ok()
        .filter(|s| s.deployment == booted)
}

/// Record (or, with None, forget) what the running /usr shows.
pub fn write_state(state: Option<&LiveState>) -> Result<()> {
    match state {
        Some(s) => {
            std::fs::create_dir_all(RUN_DIR)?;
            crate::fsutil::write_atomic(&state_path(), &serde_json::to_vec_pretty(s)?)
        }
        None => match std::fs::remove_file(state_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).context("Removing the live state"),
        },
    }
}

/// What the helper writes: paths (relative to the roots) copied from
/// `source` into the running system, and paths removed from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePlan {
    /// The checkout files are copied from.
    pub source: PathBuf,
    /// (path in `source`, path in the running system).
    pub copy: Vec<(String, String)>,
    /// Paths removed from the running system.
    pub remove: Vec<String>,
}

impl FilePlan {
    /// Add `other`'s paths (same source) to this plan, each once.
    pub fn merge(&mut self, other: FilePlan) {
        for c in other.copy {
            if !self.copy.contains(&c) {
                self.copy.push(c);
            }
        }
        for r in other.remove {
            if !self.remove.contains(&r) {
                self.remove.push(r);
            }
        }
    }
}

/// Turn the difference between two commits into a plan. Under /usr,
/// everything; the packages' default configuration (usr/etc) goes to /etc
/// only where the running /etc still has what the old commit had there, so
/// that the administrator's own changes stay. `old_etc` reads a file of the
/// old commit's usr/etc.
pub fn plan_files(
    changed: &[String],
    removed: &[String],
    source: &Path,
    etc: &Path,
    old_etc: impl Fn(&str) -> Option<Vec<u8>>,
) -> FilePlan {
    let etc = crate::fsutil::Beneath::open(etc).ok();
    // A file is the packages' to change while /etc still has what the old
    // commit had there; one the old commit had and /etc has not was
    // deleted by the administrator, and stays deleted.
    let untouched = |rel: &str| -> bool {
        let Some(etc) = &etc else { return false };
        match etc.meta(rel) {
            Ok(None) => old_etc(rel).is_none(),
            Ok(Some(m)) if m.kind == crate::fsutil::Kind::File => {
                old_etc(rel).is_some_and(|old| etc.read(rel).is_ok_and(|now| now == Some(old)))
            }
            _ => false,
        }
    };
    let mut plan = FilePlan {
        source: source.to_path_buf(),
        ..Default::default()
    };
    for path in changed {
        match path.strip_prefix("usr/etc/") {
            Some(rel) if untouched(rel) => plan.copy.push((path.clone(), format!("etc/{rel}"))),
            Some(_) => {}
            None if path.starts_with("usr/") => plan.copy.push((path.clone(), path.clone())),
            None => {}
        }
    }
    for path in removed {
        match path.strip_prefix("usr/etc/") {
            Some(rel) if old_etc(rel).is_some() && untouched(rel) => {
                plan.remove.push(format!("etc/{rel}"))
            }
            Some(_) => {}
            None if path.starts_with("usr/") => plan.remove.push(path.clone()),
            None => {}
        }
    }
    plan
}

/// Names of packages that `to` has and `from` has not, or at another version.
pub fn changed_packages(
    from: &[crate::dpkg::Package],
    to: &[crate::dpkg::Package],
) -> (Vec<String>, Vec<String>) {
    let d = crate::dpkg::diff(from, to);
    let added: BTreeSet<String> = d.added.iter().map(|p| p.name.clone()).collect();
    let replaced: BTreeSet<String> = d
        .removed
        .iter()
        .map(|p| p.name.clone())
        .chain(d.upgraded.iter().map(|c| c.name.clone()))
        .chain(d.downgraded.iter().map(|c| c.name.clone()))
        .collect();
    (added.into_iter().collect(), replaced.into_iter().collect())
}

/// Run `argv` as a transient unit of the service manager and wait for it:
/// in the host's mount namespace, whatever the daemon's own is.
pub fn run_on_host(argv: &[&str], extra: &[&str], sink: &Sink) -> Result<()> {
    let mut cmd = Command::new("systemd-run");
    cmd.args(["--wait", "--pipe", "--quiet", "--collect"])
        .args(["--property=Type=exec"])
        .args(extra)
        .arg("--")
        .args(argv);
    let ran = crate::process::run_logged(&mut cmd, sink)?;
    if !ran.status.success() {
        anyhow::bail!("{} failed ({}):\n{}", argv.join(" "), ran.status, ran.text);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_goes_live_only_where_the_administrator_left_it() {
        let etc = tempfile::tempdir().unwrap();
        std::fs::write(etc.path().join("kept.conf"), "admin's own\n").unwrap();
        std::fs::write(etc.path().join("pristine.conf"), "old default\n").unwrap();
        let old = |rel: &str| match rel {
            "kept.conf" | "pristine.conf" | "gone.conf" | "deleted.conf" => {
                Some(b"old default\n".to_vec())
            }
            _ => None,
        };
        let changed = [
            "usr/bin/tool",
            "usr/etc/kept.conf",
            "usr/etc/pristine.conf",
            "usr/etc/new.conf",
            "usr/etc/deleted.conf",
            "boot/vmlinuz",
        ]
        .map(String::from);
        let removed =
            ["usr/lib/old.so", "usr/etc/gone.conf", "usr/etc/kept.conf"].map(String::from);
        let plan = plan_files(&changed, &removed, Path::new("/src"), etc.path(), old);
        let copies: Vec<(&str, &str)> = plan
            .copy
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            copies,
            [
                ("usr/bin/tool", "usr/bin/tool"),
                ("usr/etc/pristine.conf", "etc/pristine.conf"),
                ("usr/etc/new.conf", "etc/new.conf"),
            ]
        );
        // deleted.conf, which the administrator deleted, is not recreated;
        // gone.conf is not in /etc either: nothing to remove.
        assert_eq!(plan.remove, ["usr/lib/old.so"]);
    }
}
