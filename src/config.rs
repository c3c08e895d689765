//! The daemon's configuration: `/etc/apt-ostree/apt-ostreed.conf`.
//!
//! ```ini
//! [Daemon]
//! AutomaticUpdatePolicy=none|check|stage
//! IdleExitTimeout=60
//! ```
//!
//! Same format and keys as rpm-ostreed.conf. A missing file means defaults; a
//! malformed one is an error naming the line, so a typo is not silently ignored.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::transaction::AutomaticUpdatePolicy;

pub const DEFAULT_PATH: &str = "/etc/apt-ostree/apt-ostreed.conf";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub automatic_update_policy: AutomaticUpdatePolicy,
    pub idle_exit_timeout: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            automatic_update_policy: AutomaticUpdatePolicy::None,
            idle_exit_timeout: 60,
        }
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Config> {
        let mut config = Config::default();
        let mut section = String::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                bail!("line {}: expected KEY=VALUE: {raw:?}", n + 1);
            };
            let (key, value) = (key.trim(), value.trim());
            match (section.as_str(), key) {
                ("Daemon", "AutomaticUpdatePolicy") => {
                    config.automatic_update_policy = AutomaticUpdatePolicy::parse(value)
                        .with_context(|| {
                            format!(
                                "line {}: AutomaticUpdatePolicy must be none, check or stage",
                                n + 1
                            )
                        })?
                }
                ("Daemon", "IdleExitTimeout") => {
                    config.idle_exit_timeout = value.parse().with_context(|| {
                        format!("line {}: IdleExitTimeout must be seconds", n + 1)
                    })?
                }
                _ => tracing::warn!(
                    "apt-ostreed.conf line {}: unknown key {section}/{key}",
                    n + 1
                ),
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
        assert!(Config::parse("[Daemon]\nnonsense\n").is_err());
    }
}
