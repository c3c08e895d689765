//! `apt-ostree`: the command line, a client of apt-ostreed.
//!
//! Every command is one Varlink call made with the generated client; this
//! module only parses arguments, renders replies, and picks the exit code
//! (0 done, 1 error, 77 nothing to do where a command offers that, as
//! rpm-ostree does).

mod args;
mod bootloader;
mod client;
mod db;
mod docs;
mod errors;
mod kargs;
mod packages;
mod status;
mod transaction;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

pub use args::{Cli, Command, Common, ContainerCommand, Live, OverrideCommand};
pub use client::Client;
use transaction::{follow, report};

use crate::protocol::sysroot::{ErrorKind, VarlinkClientInterface};

/// Exit code for "nothing to do" (`upgrade --check` without an update, `--unchanged-exit-77`).
pub const EXIT_UNCHANGED: u8 = 77;

/// Entry point of `apt-ostree`.
pub fn main() -> ExitCode {
    // Like every Unix filter: `apt-ostree db list | head` ends quietly on EPIPE.
    #[allow(unsafe_code)]
    // SAFETY: no other thread exists yet, and SIG_DFL needs no handler.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
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

fn some(flag: bool) -> Option<bool> {
    flag.then_some(true)
}

/// A deployment given as its index in status (as `ostree admin pin` takes
/// it), or as its id, which is passed on as it is.
fn deployment_id(client: &Client, given: &str) -> Result<String> {
    let Ok(index) = given.parse::<usize>() else {
        return Ok(given.to_string());
    };
    let status = client.sysroot().get_status().call()?;
    let count = status.deployments.len();
    status
        .deployments
        .into_iter()
        .nth(index)
        .map(|d| d.id)
        .ok_or_else(|| anyhow::anyhow!("There is no deployment {index}: status lists {count}"))
}

fn container_lint(rootfs: &std::path::Path) -> u8 {
    use crate::container::lint::{lint, Severity};
    let findings = lint(rootfs);
    for f in &findings {
        let label = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        println!("{label}: {}", f.message);
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    if errors == 0 {
        println!(
            "{}: ready to deploy ({} warnings)",
            rootfs.display(),
            findings.len()
        );
        0
    } else {
        println!("{}: {errors} errors", rootfs.display());
        1
    }
}

fn run(cli: Cli) -> Result<u8> {
    if let Command::Container {
        command: ContainerCommand::Lint { rootfs },
    } = &cli.command
    {
        return Ok(container_lint(rootfs));
    }
    // Parsed here (for --help, completions and man pages), run by a helper
    // binary with the same arguments: it loads libostree, we don't.
    let after = |word: &str| -> Vec<std::ffi::OsString> {
        std::env::args_os()
            .skip_while(|a| a != word)
            .skip(1)
            .collect()
    };
    let helper = match &cli.command {
        Command::Compose { .. } => Some(("apt-ostree-compose", after("compose"))),
        Command::InstallOs { .. } => Some(("apt-ostree-install-os", after("install-os"))),
        Command::Cleanup { old_root: true, .. } => {
            Some(("apt-ostree-install-os", vec!["cleanup-old-root".into()]))
        }
        _ => None,
    };
    if let Some((helper, args)) = helper {
        use std::os::unix::process::CommandExt;
        let helper = client::helper_path(helper);
        let err = std::process::Command::new(&helper).args(args).exec();
        return Err(anyhow::Error::new(err).context(format!("Running {}", helper.display())));
    }
    if let Command::GenerateDocs { dir } = &cli.command {
        docs::generate(dir)?;
        return Ok(0);
    }
    let client = Client::connect(cli.address.as_deref(), cli.sysroot.as_deref())?;
    match cli.command {
        Command::Status(args) => status::run(&client, &args),
        Command::Kargs(args) => kargs::run(&client, args),
        Command::Db { command } => db::run(&client, command),
        Command::Search { words, json } => db::search(&client, words, json),
        Command::Bootloader { command } => bootloader::run(&client, command),
        Command::Cancel => cancel(&client),
        Command::Reload => {
            client.sysroot().reload(client.interactive()).call()?;
            Ok(0)
        }
        Command::Install { .. }
        | Command::Uninstall { .. }
        | Command::Override { .. }
        | Command::Initramfs { .. }
        | Command::Reset { .. }
        | Command::ApplyLive { .. }
        | Command::Usroverlay { .. } => packages::run(&client, cli.command),
        command => change_deployments(&client, command),
    }
}

/// Follow a transaction to its end, print its result, and choose the exit code.
fn transact<A, R>(
    client: &Client,
    call: varlink::MethodCall<A, R, crate::protocol::sysroot::Error>,
    unchanged_exit_77: bool,
) -> Result<u8>
where
    A: serde::Serialize,
    R: serde::de::DeserializeOwned + transaction::TransactionReply,
{
    Ok(report(&follow(client, call)?, unchanged_exit_77))
}

fn cancel(client: &Client) -> Result<u8> {
    match client.sysroot().cancel(None, client.interactive()).call() {
        Ok(_) => println!("Cancellation requested"),
        // As rpm-ostree: nothing to cancel is not a failure.
        Err(e) if matches!(e.kind(), ErrorKind::NoTransaction(_)) => {
            println!("No transaction is running.")
        }
        Err(e) => return Err(e.into()),
    }
    Ok(0)
}

/// `--from DIR` as the daemon takes it: absolute, since its working
/// directory is not the caller's.
fn absolute(from: Option<PathBuf>) -> Result<Option<String>> {
    from.map(|dir| {
        std::path::absolute(&dir)
            .map(|p| p.display().to_string())
            .map_err(|e| anyhow::anyhow!("--from {}: {e}", dir.display()))
    })
    .transpose()
}

/// The commands that choose, fetch or drop deployments.
fn change_deployments(client: &Client, command: Command) -> Result<u8> {
    let mut api = client.sysroot();
    let interactive = client.interactive();
    match command {
        // clap refuses --check/--preview/--download-only with the trigger.
        Command::Upgrade {
            trigger_automatic_update_policy: true,
            common,
            ..
        } => transact(
            client,
            api.automatic_update(interactive),
            common.unchanged_exit_77,
        ),
        Command::Upgrade {
            check,
            preview,
            download_only,
            allow_downgrade,
            retry_failed,
            from,
            trigger_automatic_update_policy: false,
            common,
        } => transact(
            client,
            api.upgrade(
                some(check),
                some(preview),
                some(download_only),
                some(allow_downgrade),
                some(retry_failed),
                some(common.reboot),
                absolute(from)?,
                interactive,
            ),
            common.unchanged_exit_77 || check || preview,
        ),
        Command::Rebase {
            refspec,
            revision,
            from,
            common,
        } => transact(
            client,
            api.rebase(
                refspec,
                revision,
                some(common.reboot),
                absolute(from)?,
                interactive,
            ),
            common.unchanged_exit_77,
        ),
        Command::Deploy {
            revision,
            allow_downgrade,
            from,
            common,
        } => transact(
            client,
            api.deploy(
                revision,
                some(allow_downgrade),
                some(common.reboot),
                absolute(from)?,
                interactive,
            ),
            common.unchanged_exit_77,
        ),
        Command::Rollback { common } => transact(
            client,
            api.rollback(some(common.reboot), interactive),
            common.unchanged_exit_77,
        ),
        Command::Cleanup {
            pending,
            rollback,
            base,
            repomd,
            boot_failures,
            old_root: _,
        } => transact(
            client,
            api.cleanup(
                some(pending),
                some(rollback),
                some(base),
                some(repomd),
                some(boot_failures),
                interactive,
            ),
            false,
        ),
        Command::Pin { deployment, unpin } => transact(
            client,
            api.pin_deployment(
                deployment_id(client, &deployment)?,
                some(unpin),
                interactive,
            ),
            false,
        ),
        Command::RefreshMd { force } => transact(
            client,
            api.refresh_metadata(some(force), interactive),
            false,
        ),
        other => unreachable!("not a deployment command: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command, argument and option says what it is: help, man pages
    /// and completions are generated from these texts.
    #[test]
    fn everything_is_described() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.get_about().is_none() && path != "apt-ostree" {
                missing.push(path.to_string());
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "apt-ostree", &mut missing);
        assert!(missing.is_empty(), "undescribed: {missing:?}");
    }
}
