//! `apt-ostree compose image`: turn a commit into a disk that boots.
//!
//! The disk is GPT: a BIOS boot partition (GRUB's core image for BIOS
//! firmware), the EFI system partition (GRUB as the removable-media loader,
//! so that firmware finds it with no NVRAM entry) and an ext4 root holding
//! the OSTree sysroot. /boot is a directory of the root when the commit's
//! libostree writes boot entries for that (`sysroot.bootprefix`, Debian 13):
//! one file system fewer to find, check and mount at every boot; for an
//! older one (Debian 12) it is an ext4 partition of its own. The commit is
//! pulled into the sysroot's repository and deployed as `ostree admin
//! deploy` would, with `root=UUID=...`. GRUB comes from the commit itself (grub-install and
//! grub-mkconfig run with the new deployment as `/`), and its configuration
//! is `/boot/grub/grub.cfg -> ../loader/grub.cfg`: libostree regenerates
//! `loader.N/grub.cfg` with every deployment it writes (Debian's ostree-boot
//! ships the grub.d script for that), and the swap of the `loader` symlink
//! makes the change atomic. So a new deployment or a rollback changes what
//! boots, with nothing outside the disk.
//!
//! Failure leaves nothing behind: the work happens in a private mount
//! namespace (mounts vanish with the process), the loop device is detached,
//! and a file output is written under a temporary name and renamed into place
//! only when complete.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ostree::gio::prelude::*;
use ostree::{gio, glib};

use super::disk::{open_target, partition, sizes, Loop, Partitions, Target, MIB};
use super::grub;
use crate::fsutil::Mounted;
use crate::process::run;
use crate::progress::Sink;
use crate::sysroot::keys;

/// apt-ostree's initramfs-tools hook (debian/rules), which brings
/// ostree-prepare-root into an initramfs-tools initramfs.
const INITRAMFS_TOOLS_HOOK: &str = "usr/share/initramfs-tools/hooks/apt-ostree";

/// The stateroot of installed systems.
const OSNAME: &str = "debian";
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

#[derive(Debug, Clone)]
pub struct ImageOptions {
    pub repo: PathBuf,
    pub reference: String,
    pub output: PathBuf,
    pub format: ImageFormat,
    /// Bytes; default: twice what the commit needs, at least 4 GiB.
    pub size: Option<u64>,
    /// Kernel arguments after the image's own (treefile `kargs`).
    pub kargs: Vec<String>,
    /// The remote installed systems upgrade from; default: the treefile's.
    pub remote: Option<(String, String)>,
    pub force: bool,
    pub wipe: bool,
    /// Boot through shim and Debian's signed GRUB (off: GRUB made by grub-mkimage).
    pub secure_boot: bool,
}

/// What was written.
#[derive(Debug)]
pub struct Image {
    pub commit: String,
    pub origin: String,
    pub size: u64,
    pub bios: bool,
    pub secure_boot: bool,
    pub elapsed: Duration,
}

/// Parse `4G`, `512M`, `10GiB`, `1T` or a number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 8G, 512M)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// What the commit brings that the disk needs.
struct CommitFacts {
    checksum: String,
    /// Bytes of all files, and how many.
    content: u64,
    kargs: Vec<String>,
    remote: Option<(String, String, bool)>,
    /// The commit carries GPG signatures: its remote verifies them.
    signed: bool,
    /// The collection the commit is bound to, for its remote.
    collection_id: Option<String>,
    bios: bool,
    /// /boot goes on the root file system: the commit's libostree keeps its
    /// boot entries right there.
    boot_on_root: bool,
}

fn meta_str(md: &glib::VariantDict, key: &str) -> Option<String> {
    md.lookup::<String>(key).ok().flatten()
}

/// Check the commit can make a bootable disk before anything is written.
fn inspect_commit(repo: &ostree::Repo, reference: &str, secure_boot: bool) -> Result<CommitFacts> {
    let checksum = repo
        .resolve_rev(reference, true)
        .with_context(|| format!("Resolving {reference}"))?
        .ok_or_else(|| anyhow!("{reference}: no such ref in the repository"))?
        .to_string();
    let (commit, _) = repo.load_commit(&checksum)?;
    let md = glib::VariantDict::new(Some(&commit.child_value(0)));
    let kargs = md
        .lookup::<Vec<String>>(keys::KARGS)
        .ok()
        .flatten()
        .unwrap_or_default();
    let remote = match (
        meta_str(&md, keys::REMOTE_NAME),
        meta_str(&md, keys::REMOTE_URL),
    ) {
        (Some(n), Some(u)) => Some((
            n,
            u,
            md.lookup::<bool>(keys::REMOTE_GPG_VERIFY)
                .ok()
                .flatten()
                .unwrap_or(false),
        )),
        _ => None,
    };

    let (root, _) = repo.read_commit(&checksum, gio::Cancellable::NONE)?;
    let modules = root.resolve_relative_path("usr/lib/modules");
    let mut kernel = None;
    if let Ok(entries) = modules.enumerate_children(
        "standard::name",
        gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
        gio::Cancellable::NONE,
    ) {
        for info in entries.flatten() {
            let vmlinuz = modules.child(info.name()).child("vmlinuz");
            if vmlinuz.query_exists(gio::Cancellable::NONE) {
                kernel = Some(vmlinuz);
                break;
            }
        }
    }
    let kernel = kernel.ok_or_else(|| anyhow!("{reference}: the commit has no kernel"))?;
    let checksum_of_kernel = kernel
        .downcast_ref::<ostree::RepoFile>()
        .expect("a file of a commit")
        .checksum()
        .to_string();
    let (stream, _, _) = repo.load_file(&checksum_of_kernel, gio::Cancellable::NONE)?;
    let mut head = [0u8; 2];
    stream
        .expect("a regular file")
        .read_all(&mut head, gio::Cancellable::NONE)?;
    // Every x86 and arm64 kernel Debian ships is an EFI-stub PE image.
    if !head.starts_with(b"MZ") {
        bail!(
            "{reference}: the commit's kernel is a placeholder (placeholder-kernel = true); \
             compose it with a linux-image package to make a bootable disk"
        );
    }
    let has = |p: &str| {
        root.resolve_relative_path(p)
            .query_exists(gio::Cancellable::NONE)
    };
    for needed in [
        "usr/bin/grub-mkimage",
        "usr/sbin/grub-mkconfig",
        "usr/lib/grub/x86_64-efi",
    ] {
        if !has(needed) {
            bail!(
                "{reference}: the commit has no {needed}: add grub-efi-amd64-bin, \
                 grub-pc-bin and grub2-common to its packages"
            );
        }
    }
    let missing = crate::bootchain::missing_packages(has);
    if secure_boot && !missing.is_empty() {
        bail!(
            "{reference}: the commit has no Secure Boot chain: add {} to its packages \
             (or pass --no-secure-boot for a disk that boots only with Secure Boot off)",
            missing.join(", ")
        );
    }
    // ostree-prepare-root, and what puts it in the initramfs: apt-ostree's
    // initramfs-tools hook or ostree-boot's dracut module.
    let mounts_deployment = has("usr/lib/ostree/ostree-prepare-root")
        && (has(INITRAMFS_TOOLS_HOOK) || has("usr/lib/dracut/modules.d/98ostree"));
    if !mounts_deployment {
        bail!(
            "{reference}: the commit's initramfs cannot mount a deployment: add ostree-boot \
             and apt-ostree (with initramfs-tools) or dracut to its packages"
        );
    }
    let content = tree_size(&root)?;
    let signed = crate::sysroot::is_signed(repo, &checksum)?;
    let boot_on_root =
        crate::sysroot::has_boot_prefix(&crate::sysroot::commit_packages(repo, &checksum)?);
    Ok(CommitFacts {
        signed,
        collection_id: meta_str(&md, "ostree.collection-binding"),
        checksum,
        content,
        kargs,
        remote,
        bios: has("usr/lib/grub/i386-pc") && has("usr/sbin/grub-install"),
        boot_on_root,
    })
}

/// The bytes of every file under `dir` of a commit.
fn tree_size(dir: &gio::File) -> Result<u64> {
    let mut total = 0;
    let entries = dir.enumerate_children(
        "standard::name,standard::type,standard::size",
        gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
        gio::Cancellable::NONE,
    )?;
    for info in entries {
        let info = info?;
        total += 4096;
        match info.file_type() {
            gio::FileType::Directory => total += tree_size(&dir.child(info.name()))?,
            gio::FileType::Regular => total += info.size() as u64,
            _ => {}
        }
    }
    Ok(total)
}

/// Write the disk image of `opts.reference`.
pub fn compose_image(opts: &ImageOptions, sink: &Sink) -> Result<Image> {
    let started = Instant::now();
    if !nix::unistd::geteuid().is_root() {
        bail!("compose image needs root (partitions, loop devices, mounts)");
    }
    for arg in &opts.kargs {
        crate::kargs::validate(arg)?;
    }
    // Before any library starts a thread: a mount namespace of our own, so
    // that whatever happens, nothing stays mounted on the host.
    private_mounts()?;

    let (facts, size) = check_commit(opts, sink)?;
    // A signed commit's machines verify what they fetch, from the network
    // or from an export, with the key compose put into the image.
    let remote = match (&opts.remote, &facts.remote) {
        (Some((n, u)), _) => Some((n.clone(), u.clone(), facts.signed)),
        (None, Some((n, u, verify))) => Some((n.clone(), u.clone(), *verify || facts.signed)),
        (None, None) => None,
    };
    if opts.format == ImageFormat::Qcow2 && which("qemu-img").is_none() {
        bail!("--format qcow2 needs qemu-img (package qemu-utils)");
    }

    let output_raw = open_target(&opts.output, opts.wipe, opts.force, Some(size))?;
    if opts.format != ImageFormat::Raw && matches!(output_raw, Target::Device(_)) {
        bail!(
            "{}: a block device takes --format raw",
            opts.output.display()
        );
    }
    let work = tempfile::Builder::new()
        .prefix("apt-ostree-image-")
        .tempdir()
        .context("Creating a work directory")?;

    let boot_partition = !facts.boot_on_root;
    sink.task("Partitioning", || partition(&output_raw, boot_partition))?;

    let attached = match &output_raw {
        Target::File(f) => Some(Loop::attach(f.path())?),
        Target::Device(_) => None,
    };
    let disk = attached
        .as_ref()
        .map_or_else(|| output_raw.path().to_path_buf(), |l| l.0.clone());
    let parts = sink.task("Making file systems", || {
        Partitions::format(&disk, boot_partition)
    })?;

    let sysroot_path = work.path().join("sysroot");
    let root_mount = Mounted::new(&parts.root, &sysroot_path, "ext4", "")?;
    let boot_mount = parts
        .boot
        .as_ref()
        .map(|(dev, _)| Mounted::new(dev, &sysroot_path.join("boot"), "ext4", ""))
        .transpose()?;

    let refspec = match &remote {
        Some((name, _, _)) => format!("{name}:{}", opts.reference),
        None => opts.reference.clone(),
    };
    let mut kargs = vec![format!("root=UUID={}", parts.root_uuid), "rw".to_string()];
    kargs.extend(facts.kargs.iter().cloned());
    kargs.extend(opts.kargs.iter().cloned());

    let deployment_dir = sink.task("Deploying", || {
        deploy_commit(
            &sysroot_path,
            opts,
            &facts,
            remote.as_ref(),
            &refspec,
            &kargs,
            parts.boot.as_ref().map(|(_, uuid)| uuid.as_str()),
        )
    })?;

    sink.task("Installing GRUB", || {
        grub::install(
            &deployment_dir,
            &sysroot_path,
            facts.bios.then_some(disk.as_path()),
            &parts.esp,
            &parts.grub_home(),
            opts.secure_boot,
        )
    })?;

    drop(boot_mount);
    drop(root_mount);
    nix::unistd::sync();
    drop(attached);

    write_output(output_raw, opts, sink)?;
    Ok(Image {
        commit: facts.checksum,
        origin: refspec,
        size,
        bios: facts.bios,
        secure_boot: opts.secure_boot,
        elapsed: started.elapsed(),
    })
}

/// The commit's facts and the disk's size, before anything is written.
fn check_commit(opts: &ImageOptions, sink: &Sink) -> Result<(CommitFacts, u64)> {
    if !opts.repo.join("config").is_file() {
        bail!("{}: not an OSTree repository", opts.repo.display());
    }
    let source = ostree::Repo::new(&gio::File::for_path(&opts.repo));
    source
        .open(gio::Cancellable::NONE)
        .with_context(|| format!("Opening {}", opts.repo.display()))?;
    let facts = sink.task("Checking the commit", || {
        inspect_commit(&source, &opts.reference, opts.secure_boot)
    })?;
    let (minimum, default) = sizes(facts.content);
    let size = opts.size.unwrap_or(default);
    if size < minimum {
        bail!(
            "--size {} MiB is too small: the commit needs at least {} MiB",
            size / MIB,
            minimum.div_ceil(MIB)
        );
    }
    Ok((facts, size))
}

/// Enter a mount namespace of our own whose mounts never reach the host.
fn private_mounts() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("Creating a private mount namespace")?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("Making mounts private")
}

/// Initialize the disk's sysroot, copy the commit into its repository and
/// deploy it; the deployment's directory.
fn deploy_commit(
    sysroot_path: &Path,
    opts: &ImageOptions,
    facts: &CommitFacts,
    remote: Option<&(String, String, bool)>,
    refspec: &str,
    kargs: &[String],
    boot_uuid: Option<&str>,
) -> Result<PathBuf> {
    let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(sysroot_path)));
    sysroot.ensure_initialized(gio::Cancellable::NONE)?;
    if boot_uuid.is_none() {
        crate::sysroot::enable_boot_prefix(sysroot_path)?;
    }
    sysroot.load(gio::Cancellable::NONE)?;
    sysroot.init_osname(OSNAME, gio::Cancellable::NONE)?;
    let repo = sysroot.repo();
    if let Some((name, url, gpg)) = remote {
        let options = glib::VariantDict::new(None);
        options.insert("gpg-verify", *gpg);
        if let Some(id) = &facts.collection_id {
            options.insert("collection-id", id);
        }
        repo.remote_add(
            name,
            Some(url),
            Some(&options.end()),
            gio::Cancellable::NONE,
        )
        .with_context(|| format!("Adding remote {name}"))?;
    }
    let pull = glib::VariantDict::new(None);
    pull.insert("refs", vec![facts.checksum.clone()]);
    repo.pull_with_options(
        &format!("file://{}", std::fs::canonicalize(&opts.repo)?.display()),
        &pull.end(),
        None,
        gio::Cancellable::NONE,
    )
    .context("Copying the commit into the disk's repository")?;
    let (remote_name, branch) = match &remote {
        Some((n, _, _)) => (Some(n.as_str()), opts.reference.as_str()),
        None => (None, opts.reference.as_str()),
    };
    repo.set_ref_immediate(
        remote_name,
        branch,
        Some(&facts.checksum),
        gio::Cancellable::NONE,
    )?;
    let origin = sysroot.origin_new_from_refspec(refspec);
    let argv: Vec<&str> = kargs.iter().map(String::as_str).collect();
    let deployment = sysroot
        .deploy_tree(
            Some(OSNAME),
            &facts.checksum,
            Some(&origin),
            None,
            &argv,
            gio::Cancellable::NONE,
        )
        .context("Deploying")?;
    sysroot
        .simple_write_deployment(
            Some(OSNAME),
            &deployment,
            None,
            ostree::SysrootSimpleWriteDeploymentFlags::NONE,
            gio::Cancellable::NONE,
        )
        .context("Writing the deployment")?;
    let dir = sysroot
        .deployment_directory(&deployment)
        .path()
        .expect("a local path");
    let fstab = match boot_uuid {
        // A partition of its own: the installed system mounts it.
        Some(uuid) => format!("UUID={uuid} /boot ext4 defaults 1 2\n"),
        None => {
            // This host's libostree may predate the prefix the image's has.
            crate::sysroot::prefix_boot_entries(sysroot_path)?;
            "# / and /boot: the root file system, root= on the kernel command line.\n".into()
        }
    };
    std::fs::write(
        dir.join("etc/fstab"),
        format!("# Written by apt-ostree compose image.\n{fstab}"),
    )?;
    Ok(dir)
}

/// Put the finished disk under its name (converted to qcow2 if asked).
fn write_output(output_raw: Target, opts: &ImageOptions, sink: &Sink) -> Result<()> {
    match output_raw {
        Target::Device(_) => {}
        Target::File(f) => match opts.format {
            ImageFormat::Raw => {
                use std::os::unix::fs::PermissionsExt;
                f.as_file()
                    .set_permissions(std::fs::Permissions::from_mode(0o644))?;
                f.persist(&opts.output)
                    .with_context(|| format!("Renaming into {}", opts.output.display()))?;
            }
            ImageFormat::Qcow2 => {
                sink.task("Converting to qcow2", || -> Result<()> {
                    let dir = opts.output.parent().unwrap_or(Path::new("."));
                    let qcow = tempfile::Builder::new()
                        .prefix(".apt-ostree-qcow2.")
                        .tempfile_in(if dir.as_os_str().is_empty() {
                            Path::new(".")
                        } else {
                            dir
                        })?;
                    run(Command::new("qemu-img")
                        .args(["convert", "-O", "qcow2"])
                        .arg(f.path())
                        .arg(qcow.path()))?;
                    qcow.persist(&opts.output)
                        .with_context(|| format!("Renaming into {}", opts.output.display()))?;
                    Ok(())
                })?;
            }
        },
    }
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert!(parse_size("ten").unwrap_err().contains("not a size"));
        assert!(parse_size("5X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("too large"));
    }
}
