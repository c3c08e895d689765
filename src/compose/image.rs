//! `apt-ostree compose image`: turn a commit into a disk that boots.
//!
//! The disk is GPT: a BIOS boot partition (GRUB's core image for BIOS
//! firmware), the EFI system partition (GRUB as the removable-media loader,
//! so that firmware finds it with no NVRAM entry), an ext4 `/boot` and an
//! ext4 root holding the OSTree sysroot. The commit is pulled into the
//! sysroot's repository and deployed as `ostree admin deploy` would, with
//! `root=UUID=...`. GRUB comes from the commit itself (grub-install and
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

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ostree::gio::prelude::*;
use ostree::{gio, glib};

use crate::progress::Sink;
use crate::sysroot::keys;

/// The stateroot of installed systems.
const OSNAME: &str = "debian";
const MIB: u64 = 1024 * 1024;
/// Partition sizes: GRUB's BIOS core image, the ESP (GRUB for UEFI is a few
/// MB), and /boot (each deployment with its own kernel or initramfs adds
/// one pair; libostree keeps up to three).
const BIOS_BOOT_MIB: u64 = 1;
const ESP_MIB: u64 = 127;
const BOOT_MIB: u64 = 768;

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
}

/// What was written.
#[derive(Debug)]
pub struct Image {
    pub commit: String,
    pub origin: String,
    pub size: u64,
    pub bios: bool,
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
    bios: bool,
}

fn meta_str(md: &glib::VariantDict, key: &str) -> Option<String> {
    md.lookup::<String>(key).ok().flatten()
}

/// Check the commit can make a bootable disk before anything is written.
fn inspect_commit(repo: &ostree::Repo, reference: &str) -> Result<CommitFacts> {
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
    if !has("usr/lib/dracut/modules.d/98ostree") {
        bail!(
            "{reference}: the commit has no ostree-boot (its initramfs cannot mount a deployment)"
        );
    }
    let content = tree_size(&root)?;
    Ok(CommitFacts {
        checksum,
        content,
        kargs,
        remote,
        bios: has("usr/lib/grub/i386-pc") && has("usr/sbin/grub-install"),
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

/// The smallest disk that holds the commit (with room for the first upgrade
/// to share most objects), and the default size.
fn sizes(content: u64) -> (u64, u64) {
    let fixed = (1 + BIOS_BOOT_MIB + ESP_MIB + BOOT_MIB + 1) * MIB;
    let minimum = fixed + content + content / 5 + 256 * MIB;
    (minimum, (2 * minimum).max(4 << 30))
}

/// Where the disk goes.
enum Target {
    /// A file: built under a temporary name, renamed into place at the end.
    File(tempfile::NamedTempFile),
    Device(PathBuf),
}

impl Target {
    fn path(&self) -> &Path {
        match self {
            Target::File(f) => f.path(),
            Target::Device(p) => p,
        }
    }
}

fn open_target(opts: &ImageOptions, size: Option<u64>) -> Result<Target> {
    let out = &opts.output;
    match std::fs::metadata(out) {
        Ok(m) if m.file_type().is_block_device() => {
            if opts.format != ImageFormat::Raw {
                bail!("{}: a block device takes --format raw", out.display());
            }
            if !opts.wipe {
                bail!(
                    "{} is a block device: pass --wipe to erase everything on it",
                    out.display()
                );
            }
            return Ok(Target::Device(out.clone()));
        }
        Ok(m) if m.is_dir() => bail!("{} is a directory", out.display()),
        Ok(_) if !opts.force => bail!("{} exists: pass --force to overwrite it", out.display()),
        _ => {}
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = out
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", out.display()))?;
    let file = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .tempfile_in(dir)
        .with_context(|| format!("Creating a file in {}", dir.display()))?;
    file.as_file()
        .set_len(size.unwrap_or(0))
        .with_context(|| format!("Sizing {}", file.path().display()))?;
    Ok(Target::File(file))
}

fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("Running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A loop device, detached when dropped.
struct Loop(PathBuf);

impl Loop {
    fn attach(file: &Path) -> Result<Loop> {
        let dev = run(Command::new("losetup")
            .args(["--find", "--show", "--partscan"])
            .arg(file))?;
        Ok(Loop(PathBuf::from(dev)))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup")
            .arg("--detach")
            .arg(&self.0)
            .status();
    }
}

/// The device node of partition `n` of `disk`, waiting for the kernel to make
/// it (and asking it to, where partition scanning is not automatic).
fn partition(disk: &Path, n: u32) -> Result<PathBuf> {
    let name = disk.display().to_string();
    let sep = if name.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    let node = PathBuf::from(format!("{name}{sep}{n}"));
    let started = Instant::now();
    let mut asked = false;
    while !node.exists() {
        if !asked {
            // Kernels without GPT partition scanning still take BLKPG.
            let _ = Command::new("partx")
                .args(["--add", "--nr", &n.to_string()])
                .arg(disk)
                .output();
            asked = true;
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("{} did not appear", node.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(node)
}

/// A mounted file system, unmounted when dropped (the private mount
/// namespace unmounts it anyway if we die).
struct Mounted(PathBuf);

impl Mounted {
    fn new(device: &Path, target: &Path, fstype: &str) -> Result<Mounted> {
        std::fs::create_dir_all(target)?;
        nix::mount::mount(
            Some(device),
            target,
            Some(fstype),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("Mounting {} on {}", device.display(), target.display()))?;
        Ok(Mounted(target.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if nix::mount::umount(&self.0).is_err() {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Run `argv` with the new deployment as `/`, the real /boot and the sysroot
/// at /sysroot: what grub-install and grub-mkconfig see on the installed system.
fn in_deployment(deployment: &Path, sysroot: &Path, argv: &[&str]) -> Result<String> {
    run(Command::new("bwrap")
        .arg("--bind")
        .arg(deployment)
        .arg("/")
        .arg("--bind")
        .arg(sysroot.join("boot"))
        .arg("/boot")
        .arg("--bind")
        .arg(sysroot)
        .arg("/sysroot")
        .args(["--dev-bind", "/dev", "/dev", "--proc", "/proc"])
        .args([
            "--ro-bind",
            "/sys",
            "/sys",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/run",
        ])
        .args(["--unshare-pid", "--die-with-parent", "--"])
        .args(argv)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C.UTF-8"))
}

/// GRUB for UEFI, as the removable-media loader `EFI/BOOT/BOOTX64.EFI`.
/// grub-install insists on a mounted FAT file system for the ESP, which needs
/// a FAT driver in the kernel composing the image; so the image is made with
/// grub-mkimage (from the commit) and copied onto the ESP with mtools. Its
/// embedded configuration finds /boot by UUID and reads `grub/grub.cfg`
/// there, with the modules beside it, as grub-install would set it up.
fn install_grub_efi(deployment: &Path, sysroot: &Path, esp: &Path, boot_uuid: &str) -> Result<()> {
    let modules = sysroot.join("boot/grub/x86_64-efi");
    std::fs::create_dir_all(&modules)?;
    for entry in std::fs::read_dir(deployment.join("usr/lib/grub/x86_64-efi"))? {
        let entry = entry?;
        let name = entry.file_name();
        let keep = Path::new(&name)
            .extension()
            .is_some_and(|e| e == "mod" || e == "lst");
        if keep {
            std::fs::copy(entry.path(), modules.join(&name))?;
        }
    }
    let staging = sysroot.join("boot/efi-staging");
    std::fs::create_dir_all(&staging)?;
    std::fs::write(
        staging.join("early.cfg"),
        format!("search --no-floppy --fs-uuid --set=root {boot_uuid}\nset prefix=($root)/grub\n"),
    )?;
    in_deployment(
        deployment,
        sysroot,
        &[
            "grub-mkimage",
            "--format=x86_64-efi",
            "--directory=/usr/lib/grub/x86_64-efi",
            "--output=/boot/efi-staging/BOOTX64.EFI",
            "--config=/boot/efi-staging/early.cfg",
            "--prefix=/grub",
            "part_gpt",
            "fat",
            "ext2",
            "search",
            "search_fs_uuid",
            "normal",
            "configfile",
        ],
    )?;
    run(Command::new("mmd")
        .arg("-i")
        .arg(esp)
        .args(["::/EFI", "::/EFI/BOOT"]))?;
    run(Command::new("mcopy")
        .arg("-i")
        .arg(esp)
        .arg(staging.join("BOOTX64.EFI"))
        .arg("::/EFI/BOOT/BOOTX64.EFI"))?;
    std::fs::remove_dir_all(&staging)?;
    Ok(())
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
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("Creating a private mount namespace")?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("Making mounts private")?;

    if !opts.repo.join("config").is_file() {
        bail!("{}: not an OSTree repository", opts.repo.display());
    }
    let source = ostree::Repo::new(&gio::File::for_path(&opts.repo));
    source
        .open(gio::Cancellable::NONE)
        .with_context(|| format!("Opening {}", opts.repo.display()))?;
    let facts = sink.task("Checking the commit", || {
        inspect_commit(&source, &opts.reference)
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
    let remote = match (&opts.remote, &facts.remote) {
        (Some((n, u)), _) => Some((n.clone(), u.clone(), false)),
        (None, Some(r)) => Some(r.clone()),
        (None, None) => None,
    };
    if opts.format == ImageFormat::Qcow2 && which("qemu-img").is_none() {
        bail!("--format qcow2 needs qemu-img (package qemu-utils)");
    }

    let output_raw = open_target(
        &ImageOptions {
            format: ImageFormat::Raw,
            ..opts.clone()
        },
        Some(size),
    )
    .and_then(|t| {
        if opts.format == ImageFormat::Qcow2 && matches!(t, Target::Device(_)) {
            bail!("a block device takes --format raw");
        }
        Ok(t)
    })?;
    let work = tempfile::Builder::new()
        .prefix("apt-ostree-image-")
        .tempdir()
        .context("Creating a work directory")?;

    sink.task("Partitioning", || -> Result<()> {
        if let Target::Device(dev) = &output_raw {
            run(Command::new("wipefs").arg("--all").arg(dev))?;
        }
        let layout = format!(
            "label: gpt\n\
             size={BIOS_BOOT_MIB}MiB, type=21686148-6449-6E6F-744E-656564454649, name=\"BIOS boot\"\n\
             size={ESP_MIB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI System\"\n\
             size={BOOT_MIB}MiB, type=BC13C2FF-59E6-4262-A352-B275FD29D172, name=\"boot\"\n\
             type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=\"root\"\n"
        );
        let mut child = Command::new("sfdisk")
            .args(["--quiet", "--wipe", "always"])
            .arg(output_raw.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("Running sfdisk (package fdisk)")?;
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(layout.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("sfdisk failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    })?;

    let attached = match &output_raw {
        Target::File(f) => Some(Loop::attach(f.path())?),
        Target::Device(_) => None,
    };
    let disk = attached
        .as_ref()
        .map_or_else(|| output_raw.path().to_path_buf(), |l| l.0.clone());
    let (esp_dev, boot_dev, root_dev) = (
        partition(&disk, 2)?,
        partition(&disk, 3)?,
        partition(&disk, 4)?,
    );
    let (boot_uuid, root_uuid) = (
        glib::uuid_string_random().to_string(),
        glib::uuid_string_random().to_string(),
    );
    sink.task("Making file systems", || -> Result<()> {
        run(Command::new("mkfs.vfat")
            .args(["-F", "32", "-n", "EFI-SYSTEM"])
            .arg(&esp_dev))?;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "boot", "-U", &boot_uuid])
            .arg(&boot_dev))?;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "root", "-U", &root_uuid])
            .arg(&root_dev))?;
        Ok(())
    })?;

    let sysroot_path = work.path().join("sysroot");
    let root_mount = Mounted::new(&root_dev, &sysroot_path, "ext4")?;
    let boot_mount = Mounted::new(&boot_dev, &sysroot_path.join("boot"), "ext4")?;

    let refspec = match &remote {
        Some((name, _, _)) => format!("{name}:{}", opts.reference),
        None => opts.reference.clone(),
    };
    let mut kargs = vec![format!("root=UUID={root_uuid}"), "rw".to_string()];
    kargs.extend(facts.kargs.iter().cloned());
    kargs.extend(opts.kargs.iter().cloned());

    let deployment_dir = sink.task("Deploying", || -> Result<PathBuf> {
        let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(&sysroot_path)));
        sysroot.ensure_initialized(gio::Cancellable::NONE)?;
        sysroot.load(gio::Cancellable::NONE)?;
        sysroot.init_osname(OSNAME, gio::Cancellable::NONE)?;
        let repo = sysroot.repo();
        if let Some((name, url, gpg)) = &remote {
            let options = glib::VariantDict::new(None);
            options.insert("gpg-verify", *gpg);
            repo.remote_add(name, Some(url), Some(&options.end()), gio::Cancellable::NONE)
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
        let origin = sysroot.origin_new_from_refspec(&refspec);
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
        // /boot is a partition of its own: the installed system mounts it.
        std::fs::write(
            dir.join("etc/fstab"),
            format!("# Written by apt-ostree compose image.\nUUID={boot_uuid} /boot ext4 defaults 1 2\n"),
        )?;
        Ok(dir)
    })?;

    sink.task("Installing GRUB", || -> Result<()> {
        if facts.bios {
            let disk = disk.display().to_string();
            in_deployment(
                &deployment_dir,
                &sysroot_path,
                &[
                    "grub-install",
                    "--target=i386-pc",
                    "--boot-directory=/boot",
                    &disk,
                ],
            )?;
        }
        install_grub_efi(&deployment_dir, &sysroot_path, &esp_dev, &boot_uuid)?;
        in_deployment(
            &deployment_dir,
            &sysroot_path,
            &["grub-mkconfig", "-o", "/boot/loader/grub.cfg"],
        )?;
        let link = sysroot_path.join("boot/grub/grub.cfg");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("../loader/grub.cfg", &link)?;
        Ok(())
    })?;

    drop(boot_mount);
    drop(root_mount);
    nix::unistd::sync();
    drop(attached);

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
    Ok(Image {
        commit: facts.checksum,
        origin: refspec,
        size,
        bios: facts.bios,
        elapsed: started.elapsed(),
    })
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
