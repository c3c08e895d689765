//! `apt-ostree`: the command line, a client of apt-ostreed.
//!
//! Every command is one Varlink call made with the generated client; this
//! module only parses arguments, renders replies, and picks the exit code
//! (0 done, 1 error, 77 nothing to do where a command offers that, as
//! rpm-ostree does).

mod client;
mod db;
mod docs;
mod errors;
mod kargs;
mod status;
mod transaction;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

pub use client::Client;
use transaction::{follow, report};

use crate::protocol::sysroot::{ErrorKind, VarlinkClientInterface};

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
    #[arg(
        long,
        global = true,
        env = "APT_OSTREE_ADDRESS",
        help_heading = "Global options"
    )]
    pub address: Option<String>,
    /// Operate on this sysroot through a private apt-ostreed instead of the system one.
    #[arg(
        long,
        global = true,
        env = "APT_OSTREE_SYSROOT",
        help_heading = "Global options"
    )]
    pub sysroot: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Changing the running system too (install, uninstall).
#[derive(Debug, Args)]
pub struct Live {
    /// Also apply the change to the running system, without a reboot.
    #[arg(short = 'A', long)]
    pub apply_live: bool,
    /// With --apply-live: allow upgrading, replacing or removing packages
    /// the running system has.
    #[arg(long, requires = "apply_live")]
    pub allow_replacement: bool,
}

/// Options every deployment-writing command shares.
#[derive(Debug, Args)]
pub struct Common {
    /// Reboot once the new deployment is written.
    #[arg(short = 'r', long)]
    pub reboot: bool,
    /// Exit with 77 when there was nothing to do.
    #[arg(long)]
    pub unchanged_exit_77: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the deployments and the running transaction.
    Status(status::StatusArgs),
    /// Fetch and deploy the newest commit of the origin.
    Upgrade {
        /// Only check whether an update is available (exit 77 if none).
        #[arg(long, conflicts_with = "preview")]
        check: bool,
        /// Like --check, and list the package changes.
        #[arg(long)]
        preview: bool,
        /// Fetch the update but do not deploy it.
        #[arg(long)]
        download_only: bool,
        /// Accept a commit older than the current one.
        #[arg(long)]
        allow_downgrade: bool,
        /// Deploy the update even though it failed to boot before (see status).
        #[arg(long)]
        retry_failed: bool,
        /// Take the update from an export in this directory (a mounted USB
        /// stick, written by `apt-ostree compose export`), with no network;
        /// for an image deployment, the image in the OCI layout DIR/oci.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// Do what AutomaticUpdatePolicy in apt-ostreed.conf says (for the timer).
        #[arg(long, conflicts_with_all = ["check", "preview", "download_only"])]
        trigger_automatic_update_policy: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Switch to another refspec (REMOTE:REF, REF, or REMOTE: to keep the ref).
    Rebase {
        /// REMOTE:REF, REF (on the current remote), or REMOTE: (the current ref).
        refspec: String,
        /// A version or commit on the new ref: VERSION, a 64-digit CHECKSUM,
        /// version=VERSION or revision=CHECKSUM (an image: its sha256: digest).
        revision: Option<String>,
        /// Take the commit from an export in this directory (see upgrade --from).
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Deploy a version or commit of the current ref.
    Deploy {
        /// VERSION, a 64-digit CHECKSUM, version=VERSION or revision=CHECKSUM
        /// (a prefix of a checksum is not one); an image: its sha256: digest.
        revision: String,
        /// Accept a commit older than the current one.
        #[arg(long)]
        allow_downgrade: bool,
        /// Take the commit from an export in this directory (see upgrade --from).
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Make the previous deployment the default for the next boot.
    Rollback {
        #[command(flatten)]
        common: Common,
    },
    /// Remove deployments and cached data.
    Cleanup {
        /// Remove the pending deployment.
        #[arg(short = 'p', long)]
        pending: bool,
        /// Remove the rollback deployment.
        #[arg(short = 'r', long)]
        rollback: bool,
        /// Remove unreferenced base commits and temporary files.
        #[arg(short = 'b', long)]
        base: bool,
        /// Remove cached package lists and downloaded packages.
        #[arg(short = 'm', long)]
        repomd: bool,
        /// Forget the deployments that failed to boot (their mark in status,
        /// and the refusal to deploy the same update again).
        #[arg(long)]
        boot_failures: bool,
    },
    /// Cancel the running transaction.
    Cancel,
    /// Reload the daemon's configuration and view of the sysroot.
    Reload,
    /// Refresh the apt package lists and the remote's summary.
    #[command(name = "refresh-md")]
    RefreshMd {
        /// Refresh even if the cache looks current.
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Layer packages (names, or paths of .deb files) on the base image.
    Install {
        /// Package names, or paths of .deb files.
        #[arg(required = true)]
        packages: Vec<String>,
        /// Show what would be installed; change nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
        /// Do not fail when a package is already requested.
        #[arg(long)]
        idempotent: bool,
        #[command(flatten)]
        live: Live,
        #[command(flatten)]
        common: Common,
    },
    /// Remove layered packages.
    Uninstall {
        /// Layered packages to remove.
        #[arg(required_unless_present = "all")]
        packages: Vec<String>,
        /// Remove all layered packages.
        #[arg(long)]
        all: bool,
        /// Show what would be removed; change nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
        /// Do not fail when a package is not layered.
        #[arg(long)]
        idempotent: bool,
        #[command(flatten)]
        live: Live,
        #[command(flatten)]
        common: Common,
    },
    /// Hide or replace packages of the base image.
    Override {
        #[command(subcommand)]
        command: OverrideCommand,
    },
    /// Show or change the kernel arguments.
    Kargs(kargs::KargsArgs),
    /// Query the package databases of commits.
    Db {
        #[command(subcommand)]
        command: db::DbCommand,
    },
    /// Work on container images (runs here, without the daemon).
    Container {
        #[command(subcommand)]
        command: ContainerCommand,
    },
    /// Build base images and bootable disks (runs here, as root, without the daemon).
    Compose {
        #[command(subcommand)]
        command: crate::compose::command::ComposeCommand,
    },
    /// Write man pages and shell completions into DIR (for packaging).
    #[command(hide = true)]
    GenerateDocs {
        /// Where to write man/ and completions/.
        dir: PathBuf,
    },
    /// Regenerate the initramfs locally, or go back to the image's.
    #[command(group(clap::ArgGroup::new("mode").required(true).args(["enable", "disable"])))]
    Initramfs {
        /// Regenerate the initramfs on this machine.
        #[arg(long)]
        enable: bool,
        /// Use the base image's initramfs again.
        #[arg(long)]
        disable: bool,
        /// Extra argument for update-initramfs (repeatable).
        #[arg(long = "arg")]
        arguments: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Go back to the base image as it is (no option: drop all of these).
    /// Kernel arguments and /etc are kept.
    Reset {
        /// Drop the layered packages.
        #[arg(short = 'l', long)]
        overlays: bool,
        /// Drop the overrides of base packages.
        #[arg(short = 'o', long)]
        overrides: bool,
        /// Use the base image's initramfs again.
        #[arg(short = 'i', long)]
        initramfs: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Apply the pending deployment to the running system, without a reboot
    /// (only added packages, unless --allow-replacement).
    ApplyLive {
        /// Bring the running /usr back to the booted commit.
        #[arg(long, conflicts_with = "allow_replacement")]
        reset: bool,
        /// Allow upgrading, replacing or removing packages the running system has.
        #[arg(long)]
        allow_replacement: bool,
        /// Exit with 77 when there was nothing to do.
        #[arg(long)]
        unchanged_exit_77: bool,
    },
    /// Make /usr writable until the next boot (ostree admin unlock).
    Usroverlay {
        /// Keep what is written to /usr across reboots.
        #[arg(long)]
        hotfix: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OverrideCommand {
    /// Hide base packages.
    Remove {
        /// Packages of the base image to remove.
        #[arg(required = true)]
        packages: Vec<String>,
        /// Show what would change; change nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Replace base packages with the versions the apt sources offer.
    Replace {
        /// Packages of the base image to replace (NAME, or NAME=VERSION).
        #[arg(required = true)]
        packages: Vec<String>,
        /// Show what would change; change nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Undo overrides.
    Reset {
        /// Packages whose override to undo.
        #[arg(required_unless_present = "all")]
        packages: Vec<String>,
        /// Undo every override.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        common: Common,
    },
}

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

/// Split install arguments into package names and local .deb files.
fn split_local_packages(args: Vec<String>) -> (Vec<String>, Vec<PathBuf>) {
    let (names, files): (Vec<String>, Vec<String>) = args
        .into_iter()
        .partition(|arg| !(arg.ends_with(".deb") || arg.contains('/')));
    (names, files.into_iter().map(PathBuf::from).collect())
}

/// Open local .deb files with the caller's own rights, for the daemon,
/// which never opens a path on the caller's behalf.
fn open_local_packages(files: &[PathBuf]) -> Result<Vec<std::os::fd::OwnedFd>> {
    files
        .iter()
        .map(|path| {
            let refuse = |reason: String| crate::error::Error::InvalidPackageFile {
                path: path.display().to_string(),
                reason,
            };
            let file = std::fs::File::open(path).map_err(|e| refuse(io_reason(&e)))?;
            let meta = file.metadata().map_err(|e| refuse(io_reason(&e)))?;
            if !meta.is_file() {
                return Err(refuse("not a regular file".into()).into());
            }
            Ok(file.into())
        })
        .collect()
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// The daemon names a local file by its descriptor: name it by its path again.
fn name_local_files(err: anyhow::Error, files: &[PathBuf]) -> anyhow::Error {
    match errors::ours(&err) {
        Some(crate::error::Error::InvalidPackageFile { path, reason }) => {
            let file = path
                .strip_prefix("file descriptor ")
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| files.get(i));
            match file {
                Some(file) => crate::error::Error::InvalidPackageFile {
                    path: file.display().to_string(),
                    reason,
                }
                .into(),
                None => err,
            }
        }
        _ => err,
    }
}

/// `apt-ostree container ...`.
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Check a root file system for what will not work once deployed: run it
    /// as the last RUN of a Containerfile. Exits 1 when it finds an error.
    Lint {
        /// The root to check.
        #[arg(long, default_value = "/")]
        rootfs: PathBuf,
    },
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
    if let Command::Compose { .. } = &cli.command {
        // Parsed here (for --help, completions and man pages), run by the
        // helper binary with the same arguments: it loads libostree, we don't.
        use std::os::unix::process::CommandExt;
        let args = std::env::args_os().skip_while(|a| a != "compose").skip(1);
        let helper = client::helper_path("apt-ostree-compose");
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
        | Command::Usroverlay { .. } => change_packages(&client, cli.command),
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
        Command::RefreshMd { force } => transact(
            client,
            api.refresh_metadata(some(force), interactive),
            false,
        ),
        other => unreachable!("not a deployment command: {other:?}"),
    }
}

/// The commands that change the packages (or the initramfs) of the next deployment.
fn change_packages(client: &Client, command: Command) -> Result<u8> {
    let mut api = client.sysroot();
    let interactive = client.interactive();
    match command {
        Command::Install {
            packages,
            dry_run,
            idempotent,
            live,
            common,
        } => {
            let (names, files) = split_local_packages(packages);
            if !files.is_empty() {
                client.send_with_next_call(open_local_packages(&files)?)?;
            }
            let indexes = (0..files.len() as i64).collect::<Vec<_>>();
            let call = api.install(
                names,
                (!indexes.is_empty()).then_some(indexes),
                some(dry_run),
                some(idempotent),
                some(live.apply_live),
                some(live.allow_replacement),
                some(common.reboot),
                interactive,
            );
            transact(client, call, common.unchanged_exit_77)
                .map_err(|e| name_local_files(e, &files))
        }
        Command::Uninstall {
            packages,
            all,
            dry_run,
            idempotent,
            live,
            common,
        } => transact(
            client,
            api.uninstall(
                packages,
                some(all),
                some(dry_run),
                some(idempotent),
                some(live.apply_live),
                some(live.allow_replacement),
                some(common.reboot),
                interactive,
            ),
            common.unchanged_exit_77,
        ),
        Command::Override {
            command:
                OverrideCommand::Remove {
                    packages,
                    dry_run,
                    common,
                },
        } => transact(
            client,
            api.override_remove(packages, some(dry_run), some(common.reboot), interactive),
            common.unchanged_exit_77,
        ),
        Command::Override {
            command:
                OverrideCommand::Replace {
                    packages,
                    dry_run,
                    common,
                },
        } => transact(
            client,
            api.override_replace(packages, some(dry_run), some(common.reboot), interactive),
            common.unchanged_exit_77,
        ),
        Command::Override {
            command:
                OverrideCommand::Reset {
                    packages,
                    all,
                    common,
                },
        } => transact(
            client,
            api.override_reset(packages, some(all), some(common.reboot), interactive),
            common.unchanged_exit_77,
        ),
        Command::Initramfs {
            enable,
            disable: _,
            arguments,
            common,
        } => transact(
            client,
            api.initramfs(
                enable,
                (!arguments.is_empty()).then_some(arguments),
                some(common.reboot),
                interactive,
            ),
            common.unchanged_exit_77,
        ),
        Command::Reset {
            overlays,
            overrides,
            initramfs,
            common,
        } => transact(
            client,
            api.reset(
                some(overlays),
                some(overrides),
                some(initramfs),
                some(common.reboot),
                interactive,
            ),
            common.unchanged_exit_77,
        ),
        Command::ApplyLive {
            reset,
            allow_replacement,
            unchanged_exit_77,
        } => transact(
            client,
            api.apply_live(some(reset), some(allow_replacement), interactive),
            unchanged_exit_77,
        ),
        Command::Usroverlay { hotfix } => {
            transact(client, api.usr_overlay(some(hotfix), interactive), false)
        }
        other => unreachable!("not a package command: {other:?}"),
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
