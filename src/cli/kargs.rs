//! `apt-ostree kargs`: show the kernel arguments, change them, or edit them.

use anyhow::{bail, Context, Result};
use clap::Args;

use super::transaction::{follow, report};
use super::{some, Client, Common, EXIT_UNCHANGED};
use crate::kargs::split_command_line;
use crate::protocol::sysroot::VarlinkClientInterface;

#[derive(Debug, Args)]
pub struct KargsArgs {
    /// Add an argument (KEY or KEY=VALUE), unless that very argument is there.
    #[arg(long, value_name = "KEY[=VALUE]")]
    append: Vec<String>,
    /// Add an argument only if its KEY is not there yet.
    #[arg(long, value_name = "KEY[=VALUE]")]
    append_if_missing: Vec<String>,
    /// Remove an argument (KEY or KEY=VALUE); it must be there.
    #[arg(long, value_name = "KEY[=VALUE]")]
    delete: Vec<String>,
    /// Remove an argument if it is there (KEY: every value of KEY).
    #[arg(long, value_name = "KEY[=VALUE]")]
    delete_if_present: Vec<String>,
    /// Replace an argument's value (KEY=VALUE or KEY=OLD=NEW).
    #[arg(long, value_name = "KEY=VALUE")]
    replace: Vec<String>,
    /// Edit the arguments in $VISUAL or $EDITOR; the result is one change.
    #[arg(long, conflicts_with_all = ["append", "append_if_missing", "delete", "delete_if_present", "replace"])]
    editor: bool,
    #[command(flatten)]
    common: Common,
}

/// What to delete and append to turn `current` into `wanted` (each argument
/// counted as often as it appears).
fn changes(current: &[String], wanted: &[String]) -> (Vec<String>, Vec<String>) {
    let mut left: Vec<&String> = wanted.iter().collect();
    let mut delete = Vec::new();
    for arg in current {
        match left.iter().position(|w| *w == arg) {
            Some(i) => {
                left.remove(i);
            }
            None => delete.push(arg.clone()),
        }
    }
    (delete, left.into_iter().cloned().collect())
}

/// Open the editor on `current`; the arguments the user saved.
fn edit(current: &[String]) -> Result<Vec<String>> {
    let file = tempfile::Builder::new()
        .prefix("apt-ostree-kargs.")
        .tempfile()
        .context("Creating a file to edit")?;
    std::fs::write(
        file.path(),
        format!(
            "# The kernel arguments of the next deployment, separated by spaces.\n\
             # Lines starting with '#' are ignored; quote values with spaces: key=\"a b\".\n{}\n",
            current.join(" ")
        ),
    )?;
    // Debian's order: $VISUAL, $EDITOR, then the `editor` alternative.
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| {
            if std::path::Path::new("/usr/bin/editor").exists() {
                "editor".into()
            } else {
                "vi".into()
            }
        });
    // Through the shell, as git and systemctl edit do: EDITOR may carry arguments.
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("{editor} \"$1\""), "editor"])
        .arg(file.path())
        .status()
        .with_context(|| format!("Running {editor}"))?;
    if !status.success() {
        bail!("{editor} failed ({status}); nothing was changed");
    }
    let text = std::fs::read_to_string(file.path())?;
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(split_command_line)
        .collect())
}

pub fn run(client: &Client, args: KargsArgs) -> Result<u8> {
    let mut api = client.sysroot();
    let KargsArgs {
        mut append,
        append_if_missing,
        mut delete,
        delete_if_present,
        replace,
        editor,
        common,
    } = args;
    if editor {
        let current = api.get_kernel_arguments().call()?.arguments;
        (delete, append) = changes(&current, &edit(&current)?);
        if delete.is_empty() && append.is_empty() {
            println!("Kernel arguments are unchanged.");
            return Ok(if common.unchanged_exit_77 {
                EXIT_UNCHANGED
            } else {
                0
            });
        }
    }
    let nothing = [
        &append,
        &append_if_missing,
        &delete,
        &delete_if_present,
        &replace,
    ]
    .iter()
    .all(|v| v.is_empty());
    if nothing {
        let reply = api.get_kernel_arguments().call()?;
        println!("{}", reply.arguments.join(" "));
        return Ok(0);
    }
    let nonempty = |v: Vec<String>| (!v.is_empty()).then_some(v);
    let call = api.change_kernel_arguments(
        nonempty(append),
        nonempty(delete),
        nonempty(replace),
        nonempty(append_if_missing),
        nonempty(delete_if_present),
        some(common.reboot),
        client.interactive(),
    );
    Ok(report(&follow(client, call)?, common.unchanged_exit_77))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn edits_become_deletes_and_appends() {
        let (delete, append) = changes(
            &v(&["quiet", "console=tty0", "console=tty0"]),
            &v(&["console=tty0", "splash"]),
        );
        assert_eq!(delete, v(&["quiet", "console=tty0"]));
        assert_eq!(append, v(&["splash"]));
    }
}
