//! Package commands (install, uninstall, override) and the other changes
//! of a machine's local state (initramfs, reset, apply-live, usroverlay);
//! local .deb files are opened here, with the caller's rights.

use std::path::PathBuf;

use anyhow::Result;

use super::{errors, some, transact, Client, Command, OverrideCommand};
use crate::protocol::sysroot::VarlinkClientInterface;

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

/// The commands that change the packages (or the initramfs) of the next deployment.
/// Package changes: install, uninstall, overrides; the other changes of the
/// local state go to [`change_local_state`].
pub fn run(client: &Client, command: Command) -> Result<u8> {
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
        other => change_local_state(client, other),
    }
}

/// initramfs, reset, apply-live and usroverlay.
fn change_local_state(client: &Client, command: Command) -> Result<u8> {
    let mut api = client.sysroot();
    let interactive = client.interactive();
    match command {
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
        other => unreachable!("not a local state command: {other:?}"),
    }
}
