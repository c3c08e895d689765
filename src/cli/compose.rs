//! `apt-ostree compose tree`: runs in the CLI process; composing an image
//! touches no sysroot, so it needs no daemon.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::compose::{compose_tree, ComposeOptions};
use crate::progress::ConsoleProgress;

#[derive(Debug, Subcommand)]
pub enum ComposeCommand {
    /// Build the image a treefile describes and commit it to a repository.
    Tree {
        /// The treefile (TOML; see docs/compose.md).
        treefile: PathBuf,
        /// The OSTree repository to commit to (created as archive-mode if missing).
        #[arg(long)]
        repo: PathBuf,
        /// Also write a static delta from the ref's previous commit.
        #[arg(long)]
        static_delta: bool,
        /// Where to build (default: the repository's tmp/).
        #[arg(long)]
        workdir: Option<PathBuf>,
        /// Exit with 77 when the input is unchanged and nothing was committed.
        #[arg(long)]
        unchanged_exit_77: bool,
    },
}

pub fn run(command: &ComposeCommand) -> Result<u8> {
    let ComposeCommand::Tree {
        treefile,
        repo,
        static_delta,
        workdir,
        unchanged_exit_77,
    } = command;
    let opts = ComposeOptions {
        repo: repo.clone(),
        static_delta: *static_delta,
        workdir: workdir.clone(),
    };
    let composed = compose_tree(treefile, &opts, &ConsoleProgress::sink())?;
    if !composed.changed {
        println!(
            "No changes in the input; {} stays at {} ({})",
            composed.reference, composed.version, composed.commit
        );
        return Ok(if *unchanged_exit_77 {
            super::EXIT_UNCHANGED
        } else {
            0
        });
    }
    println!(
        "{} => {} ({})\n  packages: {}\n  root file system: {:.1} s, conversion: {:.1} s, commit: {:.1} s",
        composed.reference,
        composed.version,
        composed.commit,
        composed.packages,
        composed.rootfs_time.as_secs_f64(),
        composed.convert_time.as_secs_f64(),
        composed.commit_time.as_secs_f64()
    );
    Ok(0)
}
