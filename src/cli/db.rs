//! `apt-ostree db`: the Debian packages recorded in commits.

use anyhow::Result;
use clap::Subcommand;

use super::transaction::print_diff;
use super::Client;
use crate::protocol::sysroot::VarlinkClientInterface;

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// List the packages of a commit (default: the booted, else the default deployment).
    List {
        /// A checksum, unique prefix, ref, or deployment index.
        revision: Option<String>,
    },
    /// Show the package changes between two commits (default: booted -> default).
    Diff {
        from: Option<String>,
        to: Option<String>,
    },
}

pub fn run(client: &Client, command: DbCommand) -> Result<u8> {
    let mut api = client.sysroot();
    match command {
        DbCommand::List { revision } => {
            let reply = api.list_packages(revision).call()?;
            println!("ostree commit: {}", reply.checksum);
            for p in &reply.packages {
                println!(" {} {} {}", p.name, p.version, p.architecture);
            }
        }
        DbCommand::Diff { from, to } => {
            let reply = api.diff_packages(from, to).call()?;
            println!("ostree diff commit from: {}", reply.fromChecksum);
            println!("ostree diff commit to:   {}", reply.toChecksum);
            let d = &reply.diff;
            if d.added.is_empty()
                && d.removed.is_empty()
                && d.upgraded.is_empty()
                && d.downgraded.is_empty()
            {
                println!("No package changes");
            } else {
                print_diff(d);
            }
        }
    }
    Ok(0)
}
