//! `apt-ostree-install-os`, run as `apt-ostree install-os ...` (as root,
//! without the daemon: on a machine that is not yet an OSTree system there
//! is none). A binary of its own for the reason `apt-ostree-compose` is one:
//! the CLI does not load libostree.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use super::source::{Probe, Source};
use super::{convert, filesystem, plan, Plan, Report};
use crate::progress::ConsoleProgress;

#[derive(Debug, Parser)]
#[command(
    name = "apt-ostree install-os",
    version,
    about = "Install the OS from an image or remote onto a machine that exists"
)]
struct Args {
    #[command(subcommand)]
    command: InstallOsCommand,
}

#[derive(Debug, Subcommand)]
pub enum InstallOsCommand {
    /// Convert this running Debian 13 or 12 machine: the OS from SOURCE is
    /// deployed into its own root file system, what makes the machine its
    /// own is carried over, and the next boot starts the new system. The
    /// old root stays readable under /sysroot.
    ToExistingRoot(ToExistingRoot),
    /// Install onto a root file system prepared and mounted at DIR, for
    /// layouts `compose image` does not make (LVM, LUKS, RAID, btrfs): the
    /// kernel arguments that open and mount it are found from its devices,
    /// and GRUB goes onto its disks' ESP or BIOS boot partition.
    ToFilesystem(ToFilesystem),
    /// `apt-ostree cleanup --old-root`: remove the old system under /sysroot.
    #[command(hide = true)]
    CleanupOldRoot,
}

#[derive(Debug, clap::Args)]
pub struct ToExistingRoot {
    #[command(flatten)]
    source: SourceArgs,
    /// Layer the packages installed by hand (`apt-mark showmanual`) that the
    /// image lacks, in the first deployment (the old system's kernel,
    /// initramfs generator and boot loader excepted); without it they are
    /// listed.
    #[arg(long)]
    layer_manual: bool,
}

#[derive(Debug, clap::Args)]
pub struct ToFilesystem {
    /// The new root file system, mounted (with /boot and the ESP beneath it
    /// where they are separate), and empty.
    dir: std::path::PathBuf,
    #[command(flatten)]
    source: SourceArgs,
    /// Root's SSH authorized keys on the new system (a file in
    /// authorized_keys format): without it, or a password given as a
    /// systemd credential, nobody can log in.
    #[arg(long, value_name = "FILE")]
    root_ssh_authorized_keys: Option<std::path::PathBuf>,
}

/// Where the OS comes from, and what both installations share.
#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    /// An image reference as `rebase` takes it
    /// (ostree-unverified-registry:HOST/NAME:TAG, ostree-image-signed:...),
    /// or an OSTree remote's URL with --ref.
    source: String,
    /// With a remote's URL: the ref (branch) to install.
    #[arg(long = "ref", value_name = "REF")]
    reference: Option<String>,
    /// With a remote's URL: the remote's name on the machine.
    #[arg(long, value_name = "NAME", default_value = "debian")]
    remote_name: String,
    /// With a remote's URL: do not verify GPG signatures of its commits.
    #[arg(long)]
    no_gpg_verify: bool,
    /// A kernel argument for the new system, after the image's (repeatable).
    #[arg(long = "karg", value_name = "ARG")]
    kargs: Vec<String>,
    /// Say what would be done, and every reason it cannot be; change nothing.
    #[arg(long)]
    dry_run: bool,
}

impl SourceArgs {
    /// The source, checked; then root is required.
    fn parse(&self) -> Result<Source> {
        let source = Source::parse(
            &self.source,
            self.reference.as_deref(),
            &self.remote_name,
            !self.no_gpg_verify,
        )?;
        if !nix::unistd::geteuid().is_root() {
            bail!("install-os needs root");
        }
        Ok(source)
    }
}

/// Entry point of `apt-ostree-install-os`.
pub fn main() -> ExitCode {
    crate::logging::init_cli();
    let args = Args::parse();
    match run(args.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: InstallOsCommand) -> Result<u8> {
    match command {
        InstallOsCommand::ToExistingRoot(args) => to_existing_root(args),
        InstallOsCommand::ToFilesystem(args) => to_filesystem(args),
        InstallOsCommand::CleanupOldRoot => cleanup_old_root(),
    }
}

fn to_existing_root(args: ToExistingRoot) -> Result<u8> {
    let layer_manual = args.layer_manual;
    let args = args.source;
    let source = args.parse()?;
    let sink = ConsoleProgress::sink();
    let (plan, machine) = plan(source, args.kargs, layer_manual, &sink)?;
    print_plan(&plan);
    if args.dry_run {
        println!("Dry run: nothing was changed.");
        return Ok(0);
    }
    if plan.undo_first {
        sink.task("Undoing the interrupted conversion", || {
            super::old_root::undo(std::path::Path::new("/"))
        })?;
    }
    let report = convert::to_existing_root(&plan, &machine, &sink)?;
    print_report(&report);
    Ok(0)
}

fn to_filesystem(args: ToFilesystem) -> Result<u8> {
    let source = args.source.parse()?;
    let keys = match &args.root_ssh_authorized_keys {
        Some(path) => Some(
            std::fs::read_to_string(path).with_context(|| format!("Reading {}", path.display()))?,
        ),
        None => None,
    };
    let sink = ConsoleProgress::sink();
    let plan = filesystem::plan(&args.dir, source, args.source.kargs, keys, &sink)?;
    print_source(&plan.source, &plan.probe);
    let t = &plan.target;
    println!(
        "Root file system: {} ({}, on {})",
        t.root.source,
        t.root.fstype,
        t.layout.stack.join(" on ")
    );
    match &t.boot {
        Some(boot) => println!("/boot: {} ({})", boot.source, boot.fstype),
        None => println!("/boot: a directory of the root file system"),
    }
    if let Some(esp) = &t.esp {
        println!("GRUB for UEFI: the signed chain onto {esp}");
    }
    if !t.bios_disks.is_empty() {
        println!("GRUB for BIOS: on {}", t.bios_disks.join(", "));
    }
    println!(
        "Kernel arguments: {} (then the image's, rw{})",
        plan.root_kargs.join(" "),
        plan.extra_kargs
            .iter()
            .map(|k| format!(" {k}"))
            .collect::<String>()
    );
    if args.source.dry_run {
        println!("Dry run: nothing was changed.");
        return Ok(0);
    }
    let report = filesystem::install(&plan, &sink)?;
    println!(
        "Deployed {} into {}",
        report.commit,
        report.deployment.display()
    );
    println!("Kernel arguments: {}", report.kargs.join(" "));
    println!(
        "Unmount {} (and what is beneath it) and boot the disk.",
        t.dir.display()
    );
    Ok(0)
}

/// The old root is /sysroot, read-only for the deployment: written in a
/// mount namespace of our own, where that mount is made writable.
fn cleanup_old_root() -> Result<u8> {
    use nix::mount::{mount, MsFlags};
    if !nix::unistd::geteuid().is_root() {
        bail!("cleanup --old-root needs root");
    }
    // Before any mount: on any other machine, a clear refusal.
    super::old_root::require_booted()?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    let sysroot = std::path::Path::new("/sysroot");
    mount(
        None::<&str>,
        sysroot,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND,
        None::<&str>,
    )?;
    let kept = super::old_root::cleanup(sysroot)?;
    println!("The old system under /sysroot is removed.");
    if !kept.is_empty() {
        println!(
            "Left in place (not the old system's): {}",
            kept.iter()
                .map(|k| format!("/sysroot/{k}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(0)
}

fn print_source(source: &Source, probe: &Probe) {
    println!("Source: {source}");
    println!(
        "  holds {}{}",
        probe.revision,
        probe
            .version
            .as_deref()
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default()
    );
    println!(
        "  needs about {} MiB on the root file system",
        probe.needed >> 20
    );
}

fn print_plan(plan: &Plan) {
    print_source(&plan.source, &plan.probe);
    println!("Kernel arguments kept: {}", plan.kept_kargs.join(" "));
    if !plan.extra_kargs.is_empty() {
        println!("Kernel arguments added: {}", plan.extra_kargs.join(" "));
    }
    if plan.undo_first {
        println!("An interrupted conversion is undone first.");
    }
    if plan.layer_manual {
        println!(
            "Packages installed by hand that the image lacks are layered in the first \
             deployment (from the apt sources carried over), the image alone kept as rollback."
        );
    }
    println!(
        "Carried over: accounts, SSH host keys, hostname, machine-id, network, \
         fstab's other mounts, added apt sources; /home, /root, /srv, /usr/local \
         and /var stay where they are (moved into /var, not copied)."
    );
}

fn print_report(report: &Report) {
    println!(
        "Deployed {} into {}",
        report.commit,
        report.deployment.display()
    );
    println!("Kernel arguments: {}", report.kargs.join(" "));
    println!("Carried over: {}", report.carried.paths.join(", "));
    for w in &report.carried.warnings {
        println!("warning: {w}");
    }
    for m in &report.moved {
        println!("Moved {m}");
    }
    if report.bootchain {
        println!("The ESP has the image's signed boot chain.");
    }
    let (_, left_out) = super::layerable(&report.manual);
    if !report.layered.is_empty() {
        println!(
            "Layered (installed by hand, not in the image): {}",
            report.layered.join(" ")
        );
        if !left_out.is_empty() {
            println!(
                "Not layered (the image brings its own boot machinery): {}",
                left_out.join(" ")
            );
        }
    } else if report.manual.is_empty() {
        println!("Every package installed by hand is in the image.");
    } else {
        println!(
            "Installed by hand and not in the image (layer them after the reboot with \
             `apt-ostree install`): {}",
            report.manual.join(" ")
        );
    }
    println!(
        "Reboot to start the new system. The old root stays readable under /sysroot \
         until `apt-ostree cleanup --old-root`."
    );
}
