//! `apt-ostree-compose`, run as `apt-ostree compose ...`: composing an image
//! touches no sysroot, so it needs no daemon. It is a binary of its own so
//! that the CLI, whose `status` should start in a millisecond, does not load
//! libostree and its sixty libraries.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::compose::image::{compose_image, parse_size, ImageFormat, ImageOptions};
use crate::compose::{compose_tree, ComposeOptions};
use crate::progress::ConsoleProgress;

/// Exit code for an unchanged input with --unchanged-exit-77.
const EXIT_UNCHANGED: u8 = 77;

#[derive(Debug, Parser)]
#[command(name = "apt-ostree compose", version, about = "Build base images")]
struct Args {
    #[command(subcommand)]
    command: ComposeCommand,
}

/// Entry point of `apt-ostree-compose`.
pub fn main() -> ExitCode {
    crate::logging::init_cli();
    let args = Args::parse();
    match run(&args.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

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
        /// Sign the commit with this GPG key id (instead of the treefile's gpg-key).
        #[arg(long, value_name = "KEYID")]
        gpg_sign: Option<String>,
        /// The GnuPG home directory holding the signing key.
        #[arg(long, value_name = "DIR")]
        gpg_homedir: Option<PathBuf>,
    },
    /// Make a disk image that boots (UEFI and BIOS) from a commit.
    Image {
        /// The OSTree repository holding the commit.
        #[arg(long)]
        repo: PathBuf,
        /// The ref (branch) to install.
        #[arg(long = "ref", value_name = "REF")]
        reference: String,
        /// The disk image to write, or a block device (with --wipe).
        #[arg(long)]
        output: PathBuf,
        /// The image format (qcow2 needs qemu-img).
        #[arg(long, value_enum, default_value = "raw")]
        format: ImageFormat,
        /// Disk size, e.g. 8G (default: twice what the commit needs, at least 4G).
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        /// A kernel argument for the installed system (repeatable).
        #[arg(long = "karg", value_name = "ARG")]
        kargs: Vec<String>,
        /// The remote the installed system upgrades from (default: the treefile's `[remote]`).
        #[arg(long, value_name = "NAME=URL", value_parser = parse_remote)]
        remote: Option<(String, String)>,
        /// Overwrite an existing output file.
        #[arg(long)]
        force: bool,
        /// Erase the block device given as --output.
        #[arg(long)]
        wipe: bool,
        /// Install GRUB made with grub-mkimage instead of the signed chain
        /// (shim, Debian's signed GRUB): for commits without the packages
        /// shim-signed and grub-efi-amd64-signed. Such a disk does not boot
        /// with Secure Boot on.
        #[arg(long)]
        no_secure_boot: bool,
    },
    /// Write a composed commit as an OCI image that container tools can build on.
    ///
    /// The image is a plain Debian root file system (labelled containers.bootc=1
    /// and ostree.bootable=1), layered by package; the same commit always
    /// gives the same digest. A Containerfile can `FROM` it, and machines
    /// `apt-ostree rebase` to it or to images derived from it.
    ContainerEncapsulate {
        /// The OSTree repository holding the commit.
        #[arg(long)]
        repo: PathBuf,
        /// The ref or commit to write.
        #[arg(value_name = "REF")]
        reference: String,
        /// Where to: oci:DIR[:TAG], registry:HOST/NAME:TAG (through skopeo),
        /// oci-archive:FILE or containers-storage:NAME.
        #[arg(value_name = "IMAGEREF")]
        destination: String,
        /// At most this many layers (the largest packages get one each).
        #[arg(long, default_value_t = crate::container::EncapsulateOptions::default().max_layers)]
        max_layers: usize,
        /// The previous build's image manifest (`skopeo inspect --raw`): its
        /// packages keep their own layers, so that fewer layers change.
        #[arg(long, value_name = "FILE")]
        previous_build_manifest: Option<PathBuf>,
    },
    /// Write an update that machines take with no network (`apt-ostree
    /// upgrade --from DIR`) into a directory or a mounted USB stick.
    ///
    /// DIR gets the layout of `ostree create-usb`: a repository in
    /// DIR/.ostree/repo with the ref, its commit, its signatures and a
    /// summary. Machines check it with their remote's keys.
    Export {
        /// The OSTree repository holding the commit.
        #[arg(long)]
        repo: PathBuf,
        /// The ref to export (machines following it upgrade from the export).
        #[arg(long = "ref", value_name = "REF")]
        reference: String,
        /// Where to write it: a directory, such as a mounted USB stick.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// `compose export`: see [`crate::compose::export`].
fn run_export(repo: &Path, reference: &str, dir: &Path) -> Result<u8> {
    let exported = crate::compose::export::export(repo, reference, dir)?;
    println!(
        "Exported {reference} {}({}) to {}",
        exported
            .version
            .as_deref()
            .map(|v| format!("{v} "))
            .unwrap_or_default(),
        exported.commit,
        exported.repo.display()
    );
    if !exported.signed {
        println!(
            "The commit is not signed: machines whose remote verifies signatures will refuse it."
        );
    }
    Ok(0)
}

fn parse_remote(text: &str) -> Result<(String, String), String> {
    let (name, url) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=URL"))?;
    if !crate::refspec::is_remote_name(name) {
        return Err(format!("{name:?} is not a remote name"));
    }
    if !url.contains("://") {
        return Err(format!("{url:?} is not a URL"));
    }
    Ok((name.to_string(), url.to_string()))
}

fn run(command: &ComposeCommand) -> Result<u8> {
    match command {
        ComposeCommand::Tree {
            treefile,
            repo,
            static_delta,
            workdir,
            unchanged_exit_77,
            gpg_sign,
            gpg_homedir,
        } => {
            let opts = ComposeOptions {
                repo: repo.clone(),
                static_delta: *static_delta,
                workdir: workdir.clone(),
                gpg_sign: gpg_sign.clone(),
                gpg_homedir: gpg_homedir.clone(),
            };
            run_tree(treefile, &opts, *unchanged_exit_77)
        }
        ComposeCommand::Image {
            repo,
            reference,
            output,
            format,
            size,
            kargs,
            remote,
            force,
            wipe,
            no_secure_boot,
        } => run_image(&ImageOptions {
            repo: repo.clone(),
            reference: reference.clone(),
            output: output.clone(),
            format: *format,
            size: *size,
            kargs: kargs.clone(),
            remote: remote.clone(),
            force: *force,
            wipe: *wipe,
            secure_boot: !*no_secure_boot,
        }),
        ComposeCommand::ContainerEncapsulate {
            repo,
            reference,
            destination,
            max_layers,
            previous_build_manifest,
        } => run_encapsulate(
            repo,
            reference,
            destination,
            *max_layers,
            previous_build_manifest.as_deref(),
        ),
        ComposeCommand::Export {
            repo,
            reference,
            dir,
        } => run_export(repo, reference, dir),
    }
}

fn run_tree(treefile: &Path, opts: &ComposeOptions, unchanged_exit_77: bool) -> Result<u8> {
    let composed = compose_tree(treefile, opts, &ConsoleProgress::sink())?;
    if !composed.changed {
        println!(
            "No changes in the input; {} stays at {} ({})",
            composed.reference, composed.version, composed.commit
        );
        return Ok(if unchanged_exit_77 { EXIT_UNCHANGED } else { 0 });
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

fn run_image(opts: &ImageOptions) -> Result<u8> {
    let image = compose_image(opts, &ConsoleProgress::sink())?;
    println!(
        "{} => {} ({} MiB, UEFI{}{}) in {:.1} s\n  commit: {}\n  origin: {}",
        opts.reference,
        opts.output.display(),
        image.size >> 20,
        if image.secure_boot {
            " with Secure Boot"
        } else {
            ", Secure Boot off"
        },
        if image.bios { " and BIOS" } else { "" },
        image.elapsed.as_secs_f64(),
        image.commit,
        image.origin
    );
    Ok(0)
}

fn run_encapsulate(
    repo_path: &Path,
    reference: &str,
    destination: &str,
    max_layers: usize,
    previous_build_manifest: Option<&Path>,
) -> Result<u8> {
    let previous_layers = match previous_build_manifest {
        Some(path) => crate::container::previous_layers(
            &std::fs::read(path).with_context(|| format!("Reading {}", path.display()))?,
        )
        .with_context(|| format!("--previous-build-manifest {}", path.display()))?,
        None => Vec::new(),
    };
    let repo = ostree::Repo::new_for_path(repo_path);
    repo.open(ostree::gio::Cancellable::NONE)
        .with_context(|| format!("Opening the repository {}", repo_path.display()))?;
    let commit = repo
        .resolve_rev(reference, false)
        .with_context(|| format!("Resolving {reference}"))?
        .context("no such ref")?
        .to_string();
    let opts = crate::container::EncapsulateOptions {
        max_layers,
        previous_layers,
    };
    let image = crate::container::encapsulate(
        &repo,
        &commit,
        destination,
        &opts,
        &ConsoleProgress::sink(),
    )?;
    println!(
        "{reference} ({commit}) => {destination}\n  digest: {}\n  layers: {}",
        image.digest,
        image.layers.len()
    );
    Ok(0)
}
