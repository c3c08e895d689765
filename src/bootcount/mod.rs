//! GRUB's count of a new default deployment's boots and apt-ostree's record
//! of deployments that failed to boot: what `status` reads, what the grub.d
//! hook writes ([`grub`]), and what the boot units ([`crate::boot`]) act
//! on. Paths in, data out: nothing here knows a sysroot.

pub mod grub;
pub mod grubenv;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::origin::Origin;
use grubenv::Env;

/// GRUB's environment block, relative to the sysroot: the boot partition's
/// `grub/grubenv`, GRUB's `$prefix/grubenv` for UEFI and BIOS alike.
pub const GRUBENV: &str = "boot/grub/grubenv";

/// The id of the last deployment whose boot was good.
pub(crate) const GOOD: &str = "aot_good";
/// The id of the default deployment GRUB is counting boots of.
pub(crate) const COUNTED: &str = "aot_id";
/// How many more boots it gets after the one GRUB is starting.
pub(crate) const LEFT: &str = "aot_left";
/// Set by GRUB when it boots the previous deployment instead.
pub(crate) const FAILED: &str = "aot_failed";
/// Set by GRUB, with [`FAILED`], when the default's kernel did not start.
pub(crate) const REFUSED: &str = "aot_refused";
/// The id of the last deployment whose boot chain was brought onto the ESP
/// (or found there) after a good boot.
pub(crate) const CHAIN: &str = "aot_chain";

/// What GRUB's environment block says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counter {
    pub good: Option<String>,
    pub counted: Option<String>,
    pub left: Option<u32>,
    pub failed: Option<String>,
}

impl Counter {
    pub fn from_env(env: &Env) -> Counter {
        let get = |name| env.get(name).map(str::to_string);
        Counter {
            good: get(GOOD),
            counted: get(COUNTED),
            left: env.get(LEFT).and_then(|l| l.parse().ok()),
            failed: get(FAILED),
        }
    }

    /// The block of the sysroot at `root`; nothing when it cannot be read.
    pub fn read(root: &Path) -> Counter {
        match Env::read(&root.join(GRUBENV)) {
            Ok(env) => Counter::from_env(&env),
            Err(e) => {
                tracing::warn!("{e:#}");
                Counter::default()
            }
        }
    }

    /// Whether `id` is on trial: GRUB counts its boots and none was good yet.
    pub fn on_trial(&self, id: &str) -> bool {
        self.counted.as_deref() == Some(id) && self.good.as_deref() != Some(id)
    }
}

/// A deployment's boot assessment, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootState {
    /// Its last boot reached boot-complete.target.
    Good,
    /// On trial: GRUB gives it this many more boots.
    Unassessed { tries_left: u32 },
    /// It failed to boot and the previous deployment was made the default again.
    Failed { at: u64, why: FailureKind },
}

pub fn state_of(counter: &Counter, failures: &[BootFailure], id: &str) -> Option<BootState> {
    if let Some(f) = failures.iter().find(|f| f.deployment == id) {
        return Some(BootState::Failed {
            at: f.at,
            why: f.why,
        });
    }
    if counter.on_trial(id) {
        return Some(BootState::Unassessed {
            tries_left: counter.left.unwrap_or(0),
        });
    }
    (counter.good.as_deref() == Some(id)).then_some(BootState::Good)
}

/// A deployment that failed to boot, kept until `cleanup --boot-failures`
/// or `upgrade --retry-failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootFailure {
    /// Its directory name ([`deployment_name`]).
    pub deployment: String,
    /// What it was made of ([`update_key`]); unknown if it was already gone.
    pub update: Option<String>,
    pub version: Option<String>,
    /// When it was rolled back, seconds since the epoch.
    pub at: u64,
    /// What went wrong (records written before this field: used up its tries).
    #[serde(default)]
    pub why: FailureKind,
}

/// How a deployment failed to boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// Its boots did not reach boot-complete.target, try after try.
    #[default]
    UsedUpTries,
    /// GRUB could not start its kernel: refused by Secure Boot (not signed
    /// by a key the machine trusts), or unreadable.
    KernelNotStarted,
}

impl FailureKind {
    /// What `status` and the journal say.
    pub fn describe(self) -> &'static str {
        match self {
            FailureKind::UsedUpTries => "used up its boot tries without a good boot",
            FailureKind::KernelNotStarted => {
                "its kernel did not start (refused by Secure Boot, or unreadable)"
            }
        }
    }

    /// Its name in the interface (`bootFailure`).
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::UsedUpTries => "used-up-tries",
            FailureKind::KernelNotStarted => "kernel-not-started",
        }
    }
}

/// The same update is the same base commit with the same requests.
pub fn update_key(base: &str, origin: &Origin) -> String {
    format!(
        "{base} {} {:?} {:?} {:?} {:?} {:?}",
        origin.base,
        origin.requested_packages,
        origin.requested_local_packages,
        origin.override_remove,
        origin.override_replace,
        origin.initramfs_args
    )
}

fn failures_path(state_dir: &Path) -> PathBuf {
    state_dir.join("boot-failures.json")
}

/// The failures recorded in the sysroot's state directory.
pub fn failures(state_dir: &Path) -> Vec<BootFailure> {
    std::fs::read_to_string(failures_path(state_dir))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// Record `failures` in the state directory (none: the record is removed).
pub fn write_failures(state_dir: &Path, failures: &[BootFailure]) -> Result<()> {
    let path = failures_path(state_dir);
    if failures.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("Removing {}", path.display()))
            }
            _ => Ok(()),
        };
    }
    std::fs::create_dir_all(state_dir)?;
    crate::fsutil::write_atomic(&path, serde_json::to_string_pretty(failures)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trial_and_states() {
        let counter = Counter {
            good: Some("a.0".into()),
            counted: Some("b.0".into()),
            left: Some(2),
            failed: None,
        };
        assert!(counter.on_trial("b.0"));
        assert!(!counter.on_trial("a.0"));
        let failures = vec![BootFailure {
            deployment: "c.0".into(),
            update: None,
            version: None,
            at: 5,
            why: FailureKind::KernelNotStarted,
        }];
        assert_eq!(state_of(&counter, &failures, "a.0"), Some(BootState::Good));
        assert_eq!(
            state_of(&counter, &failures, "b.0"),
            Some(BootState::Unassessed { tries_left: 2 })
        );
        assert_eq!(
            state_of(&counter, &failures, "c.0"),
            Some(BootState::Failed {
                at: 5,
                why: FailureKind::KernelNotStarted
            })
        );
        assert_eq!(state_of(&counter, &failures, "d.0"), None);
    }
}
