//! Man pages and shell completions, generated from the clap definitions that
//! parse the command line, so that they cannot drift from it. The package
//! build runs `apt-ostree generate-docs DIR` (a hidden command) and installs
//! what it writes.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// Write `DIR/man/*.8` and `DIR/completions/{bash,zsh,fish}/...`.
pub fn generate(dir: &Path) -> Result<()> {
    let man = dir.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("Creating {}", man.display()))?;
    let cli = Cli::command();
    write_man_pages(&cli, "apt-ostree", "apt-ostree", &man)?;
    write_man_pages(
        &crate::daemon::Args::command(),
        "apt-ostreed",
        "apt-ostreed",
        &man,
    )?;

    for (shell, subdir, file) in [
        (Shell::Bash, "bash", "apt-ostree"),
        (Shell::Zsh, "zsh", "_apt-ostree"),
        (Shell::Fish, "fish", "apt-ostree.fish"),
    ] {
        let out = dir.join("completions").join(subdir);
        std::fs::create_dir_all(&out).with_context(|| format!("Creating {}", out.display()))?;
        let path = out.join(file);
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("Creating {}", path.display()))?;
        clap_complete::generate(shell, &mut cli.clone(), "apt-ostree", &mut f);
    }
    Ok(())
}

/// One page for `cmd` (section 8: commands for the administrator), then one
/// per visible subcommand, named as git names its pages (`apt-ostree-kargs`
/// documents `apt-ostree kargs`).
fn write_man_pages(cmd: &clap::Command, page: &str, usage: &str, dir: &Path) -> Result<()> {
    let cmd = cmd
        .clone()
        .name(page.to_string())
        .bin_name(usage.to_string());
    let path = dir.join(format!("{page}.8"));
    let mut text = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("apt-ostree")
        .render(&mut text)
        .with_context(|| format!("Rendering {page}(8)"))?;
    std::fs::write(&path, text).with_context(|| format!("Writing {}", path.display()))?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        if name != "help" {
            write_man_pages(
                sub,
                &format!("{page}-{name}"),
                &format!("{usage} {name}"),
                dir,
            )?;
        }
    }
    Ok(())
}
