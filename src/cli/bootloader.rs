//! `apt-ostree bootloader status|update`: the Secure Boot chain on the ESP.

use anyhow::Result;
use clap::Subcommand;

use super::transaction::{follow, report};
use super::Client;
use crate::protocol::sysroot::{BootChainPackage, VarlinkClientInterface};

#[derive(Debug, Subcommand)]
pub enum BootloaderCommand {
    /// Show the boot chain on the ESP and the one the booted deployment carries.
    Status {
        /// Print the reply as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Bring the ESP's boot chain up to the booted deployment's (done by
    /// itself after a deployment booted well).
    Update {
        /// Exit with 77 when there was nothing to do.
        #[arg(long)]
        unchanged_exit_77: bool,
    },
}

pub fn run(client: &Client, command: BootloaderCommand) -> Result<u8> {
    let mut api = client.sysroot();
    match command {
        BootloaderCommand::Status { json } => {
            let reply = api.get_bootloader_status().call()?;
            if json {
                let mut value = serde_json::to_value(&reply)?;
                crate::protocol::omit_absent(&mut value);
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(0);
            }
            let secure_boot = match reply.secureBoot {
                Some(true) => "on",
                Some(false) => "off",
                None => "no UEFI (booted through BIOS)",
            };
            println!("ESP: {}", reply.esp);
            println!("Secure Boot: {secure_boot}");
            for dir in &reply.installed {
                let held = match (&dir.packages, dir.present) {
                    (Some(p), _) => chain(p),
                    (None, true) => "not written by apt-ostree".to_string(),
                    (None, false) => "none".to_string(),
                };
                println!("{}: {held}", dir.path);
            }
            let booted = reply.booted.as_deref().map_or_else(
                || "no Secure Boot chain (composed without it)".to_string(),
                chain,
            );
            println!("Booted deployment: {booted}");
            if reply.updateAvailable {
                println!("An update is available: apt-ostree bootloader update");
            }
            Ok(0)
        }
        BootloaderCommand::Update { unchanged_exit_77 } => {
            let call = api.update_bootloader(client.interactive());
            Ok(report(&follow(client, call)?, unchanged_exit_77))
        }
    }
}

fn chain(packages: &[BootChainPackage]) -> String {
    packages
        .iter()
        .map(|p| format!("{} {}", p.name, p.version))
        .collect::<Vec<_>>()
        .join(", ")
}
