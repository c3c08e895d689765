//! The daemon's configuration: `/etc/apt-ostree/apt-ostreed.conf`.
//!
//! ```ini
//! [Daemon]
//! AutomaticUpdatePolicy=none|check|stage
//! IdleExitTimeout=60
//! BootTries=3
//! BootFailureRebootDelay=30
//! BootDeadline=900
//! ```
//!
//! Same format and keys as rpm-ostreed.conf. A missing file means defaults; a
//! malformed one is an error naming the line, so a typo is not silently ignored.

use std::path::Path;

use anyhow::{Context, Result};
use ostree::glib;

pub const DEFAULT_PATH: &str = "/etc/apt-ostree/apt-ostreed.conf";

/// What the automatic update timer does (`AutomaticUpdatePolicy=` in apt-ostreed.conf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutomaticUpdatePolicy {
    #[default]
    None,
    /// Look for an update and remember it (shown by `status`).
    Check,
    /// Download and stage the update; it takes effect on the next reboot.
    Stage,
}

impl AutomaticUpdatePolicy {
    pub fn parse(s: &str) -> Option<AutomaticUpdatePolicy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "off" => Some(AutomaticUpdatePolicy::None),
            "check" => Some(AutomaticUpdatePolicy::Check),
            "stage" | "ex-stage" => Some(AutomaticUpdatePolicy::Stage),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            AutomaticUpdatePolicy::None => "none",
            AutomaticUpdatePolicy::Check => "check",
            AutomaticUpdatePolicy::Stage => "stage",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub automatic_update_policy: AutomaticUpdatePolicy,
    pub idle_exit_timeout: u64,
    /// Boots a new default deployment gets to reach boot-complete.target
    /// before GRUB boots the previous one (0: no counting).
    pub boot_tries: u32,
    /// Seconds between a failed health check and the reboot it causes.
    pub boot_failure_reboot_delay: u64,
    /// Seconds a deployment on trial gets to reach boot-complete.target
    /// before it is rebooted (0: no deadline).
    pub boot_deadline: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            automatic_update_policy: AutomaticUpdatePolicy::None,
            idle_exit_timeout: 60,
            boot_tries: 3,
            boot_failure_reboot_delay: 30,
            boot_deadline: 900,
        }
    }
}

const GROUP: &str = "Daemon";
const KEYS: [&str; 5] = [
    "AutomaticUpdatePolicy",
    "IdleExitTimeout",
    "BootTries",
    "BootFailureRebootDelay",
    "BootDeadline",
];

impl Config {
    /// Parse with glib's key-file reader (what rpm-ostreed.conf uses too);
    /// its errors name the offending line.
    pub fn parse(text: &str) -> Result<Config> {
        let kf = glib::KeyFile::new();
        kf.load_from_data(text, glib::KeyFileFlags::NONE)
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        let mut config = Config::default();
        let value = |key: &str| kf.string(GROUP, key).ok().map(|v| v.trim().to_string());
        if let Some(v) = value("AutomaticUpdatePolicy") {
            config.automatic_update_policy =
                AutomaticUpdatePolicy::parse(&v).with_context(|| {
                    format!("AutomaticUpdatePolicy={v}: must be none, check or stage")
                })?;
        }
        if let Some(v) = value("IdleExitTimeout") {
            config.idle_exit_timeout = v
                .parse()
                .with_context(|| format!("IdleExitTimeout={v}: must be seconds"))?;
        }
        let number = |key: &str, what: &str| -> Result<Option<u64>> {
            value(key)
                .map(|v| {
                    v.parse()
                        .with_context(|| format!("{key}={v}: must be {what}"))
                })
                .transpose()
        };
        if let Some(n) = number("BootTries", "a number of boots")? {
            config.boot_tries = u32::try_from(n)
                .ok()
                .filter(|n| *n <= 100)
                .with_context(|| format!("BootTries={n}: at most 100"))?;
        }
        if let Some(n) = number("BootFailureRebootDelay", "seconds")? {
            config.boot_failure_reboot_delay = n;
        }
        if let Some(n) = number("BootDeadline", "seconds")? {
            config.boot_deadline = n;
        }
        for group in kf.groups() {
            for key in kf.keys(&group).map_err(|e| anyhow::anyhow!("{e}"))? {
                if group != GROUP || !KEYS.contains(&key.as_str()) {
                    tracing::warn!("apt-ostreed.conf: unknown key {group}/{key}");
                }
            }
        }
        Ok(config)
    }

    /// Load `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text).with_context(|| format!("Reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(e).with_context(|| format!("Reading {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_shipped_example_and_refuses_typos() {
        let c = Config::parse(include_str!("../tests/fixtures/apt-ostreed.conf")).unwrap();
        assert_eq!(c.automatic_update_policy, AutomaticUpdatePolicy::Check);
        assert_eq!(c.idle_exit_timeout, 30);
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert!(Config::parse("[Daemon]\nAutomaticUpdatePolicy=sometimes\n").is_err());
        assert!(Config::parse("[Daemon]\nIdleExitTimeout=soon\n").is_err());
        let e = Config::parse("[Daemon]\nnonsense\n").unwrap_err();
        assert!(format!("{e:#}").contains("nonsense"), "{e:#}");
        assert!(Config::parse("# only a comment\n").is_ok());
        let boot =
            Config::parse("[Daemon]\nBootTries=1\nBootFailureRebootDelay=5\nBootDeadline=0\n")
                .unwrap();
        assert_eq!(
            (
                boot.boot_tries,
                boot.boot_failure_reboot_delay,
                boot.boot_deadline
            ),
            (1, 5, 0)
        );
        assert!(Config::parse("[Daemon]\nBootTries=-1\n").is_err());
        assert!(Config::parse("[Daemon]\nBootTries=1000\n").is_err());
        assert!(Config::parse("[Daemon]\nBootDeadline=later\n").is_err());
    }
}
