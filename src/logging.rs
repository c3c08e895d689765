//! Logging, set up once per process.
//!
//! The daemon logs to the journal when there is one (structured fields such as
//! the transaction id become journal fields) and to stderr otherwise; the CLI
//! logs warnings to stderr. Audit-worthy events carry a fixed `MESSAGE_ID`.

use std::io::IsTerminal;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{filter::LevelFilter, reload, EnvFilter, Registry};

/// Handle to change the log level at runtime (`io.systemd.service.SetLogLevel`).
pub type LevelHandle = reload::Handle<LevelFilter, Registry>;

/// MESSAGE_IDs (from `systemd-id128 new`) of events an administrator audits.
pub mod message_id {
    pub const DEPLOYMENT_WRITTEN: &str = "9ef3cb3dc47c40c0ba406a417c2789fb";
    pub const ROLLBACK: &str = "662a679075bf41059a057c63d340d31e";
    pub const PACKAGES_LAYERED: &str = "2effc210d6694b939ee6b10240d9c56c";
    pub const TRANSACTION_FAILED: &str = "d9137022527f46e284189b23021871ec";
    /// GRUB booted the previous deployment: the new one used up its tries.
    pub const BOOT_ROLLED_BACK: &str = "4bbe611154b440e1a6db295382526e0b";
    /// A deployment on trial failed a health check or its deadline.
    pub const BOOT_CHECK_FAILED: &str = "c3346795265342c4a20a8f758b7e28f5";
    /// A deployment reached boot-complete.target.
    pub const BOOT_GOOD: &str = "72db64b752924b74a666cdfd2aed4036";
    /// The Secure Boot chain on the ESP was brought up to date.
    pub const BOOT_CHAIN_UPDATED: &str = "91590aefd5ab41ce8ae3271df95b8a00";
}

/// Set up logging for the daemon: journal if reachable, else stderr.
/// `APT_OSTREE_LOG` (error, warn, info, debug, trace) overrides the level.
pub fn init_daemon(default: LevelFilter) -> LevelHandle {
    let initial = std::env::var("APT_OSTREE_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(default);
    let (level, handle) = reload::Layer::new(initial);
    let registry = tracing_subscriber::registry().with(level);
    match tracing_journald::layer() {
        // No prefix: MESSAGE_ID and APT_OSTREE_TRANSACTION must reach the
        // journal under exactly those names (the default would add "F_").
        Ok(journald) => registry
            .with(
                journald
                    .with_field_prefix(None)
                    .with_syslog_identifier("apt-ostreed".into()),
            )
            .init(),
        Err(_) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colour only for a person at a terminal, not in a log file.
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_target(false),
            )
            .init(),
    }
    handle
}

/// Set up logging for the CLI: warnings and errors to stderr, `RUST_LOG` to change that.
pub fn init_cli() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}

/// Map a syslog level (0 emerg .. 7 debug) to a tracing level filter.
pub fn level_from_syslog(level: i64) -> Option<LevelFilter> {
    Some(match level {
        0..=3 => LevelFilter::ERROR,
        4 => LevelFilter::WARN,
        5 | 6 => LevelFilter::INFO,
        7 => LevelFilter::DEBUG,
        _ => return None,
    })
}
