//! The command line's flags and commands, as clap reads them (and as the
//! man pages and completions are generated from them).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::{bootloader, db, kargs, status};

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
    /// Pin a deployment so that no update or cleanup removes it, or unpin it.
    Pin {
        /// The deployment: its index in status (0 is the default) or its id.
        deployment: String,
        /// Unpin instead.
        #[arg(long)]
        unpin: bool,
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
        /// Remove the old system that `install-os to-existing-root` left
        /// under /sysroot (runs here, as root, without the daemon).
        #[arg(long, conflicts_with_all = ["pending", "rollback", "base", "repomd", "boot_failures"])]
        old_root: bool,
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
    /// Show or update the Secure Boot chain (shim, signed GRUB) on the ESP.
    Bootloader {
        #[command(subcommand)]
        command: bootloader::BootloaderCommand,
    },
    /// Search the packages the apt sources offer (names and descriptions,
    /// as `apt search`), from the lists of the last refresh.
    Search {
        /// Words that must each be in a package's name or description.
        #[arg(required = true, value_name = "WORD")]
        words: Vec<String>,
        /// Print the daemon's reply as JSON.
        #[arg(long)]
        json: bool,
    },
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
    /// Put this OS on a machine that exists (runs here, as root, without the daemon).
    InstallOs {
        #[command(subcommand)]
        command: crate::install::command::InstallOsCommand,
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
