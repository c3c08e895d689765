//! `apt-ostree`: the command line, a client of apt-ostreed.
//!
//! Every command is one Varlink call made with the generated client; this
//! module only parses arguments, renders replies, and picks the exit code
//! (0 done, 1 error, 77 nothing to do where a command offers that, as
//! rpm-ostree does).

mod client;
mod errors;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub use client::Client;

/// Exit code for "nothing to do" (`upgrade --check` without an update, `--unchanged-exit-77`).
pub const EXIT_UNCHANGED: u8 = 77;

#[derive(Debug, Parser)]
#[command(
    name = "apt-ostree",
    version,
    about = "Atomic updates and package layering for Debian on OSTree"
)]
pub struct Cli {
    /// Address of apt-ostreed (default: the system socket).
    #[arg(long, global = true, env = "APT_OSTREE_ADDRESS")]
    pub address: Option<String>,
    /// Operate on this sysroot through a private apt-ostreed instead of the system one.
    #[arg(long, global = true, env = "APT_OSTREE_SYSROOT")]
    pub sysroot: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the deployments and the running transaction.
    Status(status::StatusArgs),
}

/// Entry point of `apt-ostree`.
pub fn main() -> ExitCode {
    crate::logging::init_cli();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", errors::describe(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    let client = Client::connect(cli.address.as_deref(), cli.sysroot.as_deref())?;
    match cli.command {
        Command::Status(args) => status::run(&client, &args),
    }
}
