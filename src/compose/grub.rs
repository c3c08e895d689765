//! GRUB for the disk of `compose image`, taken from the commit itself: for
//! BIOS (grub-install into the BIOS boot partition) and for UEFI (the
//! removable-media loader on the ESP), with `/boot/grub/grub.cfg` pointing
//! at the configuration libostree rewrites with every deployment.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::process::run;

/// Where GRUB for UEFI finds its menu: the file system holding /boot, by
/// UUID, and GRUB's directory on it (`/grub` on a /boot partition,
/// `/boot/grub` on the root file system).
pub(super) struct BootFs<'a> {
    pub uuid: &'a str,
    pub grub_dir: &'a str,
}

/// Install GRUB for UEFI, and for BIOS when `bios_disk` is given, and
/// generate its configuration in the new deployment.
pub(super) fn install(
    deployment_dir: &Path,
    sysroot_path: &Path,
    bios_disk: Option<&Path>,
    esp_dev: &Path,
    boot: &BootFs,
    secure_boot: bool,
) -> Result<()> {
    if let Some(disk) = bios_disk {
        install_bios(deployment_dir, sysroot_path, disk)?;
    }
    copy_grub_modules(deployment_dir, sysroot_path)?;
    if secure_boot {
        install_signed_chain(deployment_dir, sysroot_path, esp_dev, boot)?;
    } else {
        install_grub_efi(deployment_dir, sysroot_path, esp_dev, boot)?;
    }
    write_menu(deployment_dir, sysroot_path)?;
    link_menu(sysroot_path)
}

/// GRUB's core image for BIOS into `disk`'s BIOS boot partition, its
/// modules into /boot/grub: the commit's grub-install.
pub(crate) fn install_bios(deployment: &Path, sysroot: &Path, disk: &Path) -> Result<()> {
    let disk = disk.display().to_string();
    in_deployment(
        deployment,
        sysroot,
        &[
            "grub-install",
            "--target=i386-pc",
            "--boot-directory=/boot",
            &disk,
        ],
    )?;
    Ok(())
}

/// The commit's grub-mkconfig, in the new deployment, writes the menu of
/// the boot entries libostree wrote into /boot/loader/grub.cfg, and the
/// environment block beside it.
pub(crate) fn write_menu(deployment: &Path, sysroot: &Path) -> Result<()> {
    // Debian's 05_debian_theme stops grub-mkconfig, saying nothing, when
    // there is no /boot/grub (a new /boot file system).
    std::fs::create_dir_all(sysroot.join("boot/grub"))?;
    in_deployment(
        deployment,
        sysroot,
        &["grub-mkconfig", "-o", "/boot/loader/grub.cfg"],
    )?;
    // GRUB counts boot tries there (crate::boot); it cannot create the file.
    crate::bootcount::grubenv::Env::default().write(&sysroot.join(crate::bootcount::GRUBENV))?;
    Ok(())
}

/// GRUB reads the menu libostree keeps: `/boot/grub/grub.cfg -> ../loader/grub.cfg`.
pub(crate) fn link_menu(sysroot: &Path) -> Result<()> {
    let link = sysroot.join("boot/grub/grub.cfg");
    std::fs::create_dir_all(sysroot.join("boot/grub"))?;
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("../loader/grub.cfg", &link)?;
    Ok(())
}

/// Run `argv` with the new deployment as `/`, the real /boot and the sysroot
/// at /sysroot: what grub-install and grub-mkconfig see on the installed system.
pub(crate) fn in_deployment(deployment: &Path, sysroot: &Path, argv: &[&str]) -> Result<String> {
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

/// GRUB's modules beside its configuration on /boot, as grub-install puts
/// them: what GRUB loads when it has not built a module in (with Secure
/// Boot off; with it on, the signed GRUB loads none).
fn copy_grub_modules(deployment: &Path, sysroot: &Path) -> Result<()> {
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
    Ok(())
}

/// The signed chain (crate::bootchain) from the deployment onto the ESP,
/// under EFI/debian and as the removable-media path EFI/BOOT. The signed
/// GRUB's configuration there finds /boot's file system by UUID and reads
/// the menu libostree keeps in GRUB's directory.
fn install_signed_chain(
    deployment: &Path,
    sysroot: &Path,
    esp: &Path,
    boot: &BootFs,
) -> Result<()> {
    let chain = crate::bootchain::Chain::in_tree(deployment)?
        .context("the deployment has no Secure Boot chain")?;
    let staging = sysroot.join("boot/efi-staging");
    let stub = crate::bootchain::grub_cfg_stub(boot.uuid, boot.grub_dir);
    for dir in [
        crate::bootchain::VENDOR_DIR,
        crate::bootchain::REMOVABLE_DIR,
    ] {
        chain.write_dir(dir, &staging.join(dir), &stub)?;
    }
    run(Command::new("mmd").arg("-i").arg(esp).arg("::/EFI"))?;
    run(Command::new("mcopy")
        .arg("-s")
        .arg("-i")
        .arg(esp)
        .arg(staging.join(crate::bootchain::VENDOR_DIR))
        .arg(staging.join(crate::bootchain::REMOVABLE_DIR))
        .arg("::/EFI/"))?;
    std::fs::remove_dir_all(&staging)?;
    Ok(())
}

/// GRUB for UEFI without Secure Boot, as the removable-media loader
/// `EFI/BOOT/BOOTX64.EFI` (`--no-secure-boot`). grub-install insists on a
/// mounted FAT file system for the ESP, which needs a FAT driver in the
/// kernel composing the image; so the image is made with grub-mkimage (from
/// the commit) and copied onto the ESP with mtools. Its embedded
/// configuration finds /boot's file system by UUID and reads `grub.cfg` in
/// GRUB's directory there, with the modules beside it, as grub-install
/// would set it up.
fn install_grub_efi(deployment: &Path, sysroot: &Path, esp: &Path, boot: &BootFs) -> Result<()> {
    let staging = sysroot.join("boot/efi-staging");
    std::fs::create_dir_all(&staging)?;
    std::fs::write(
        staging.join("early.cfg"),
        format!(
            "search --no-floppy --fs-uuid --set=root {}\nset prefix=($root){}\n",
            boot.uuid, boot.grub_dir
        ),
    )?;
    let prefix = format!("--prefix={}", boot.grub_dir);
    in_deployment(
        deployment,
        sysroot,
        &[
            "grub-mkimage",
            "--format=x86_64-efi",
            "--directory=/usr/lib/grub/x86_64-efi",
            "--output=/boot/efi-staging/BOOTX64.EFI",
            "--config=/boot/efi-staging/early.cfg",
            &prefix,
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
