#!/bin/sh
# Runs in a sandbox without network, with the image as /.
set -eu
kver=$(ls /usr/lib/modules)
# A generic initramfs (every driver, so that it boots on any hardware) that
# mounts the deployment, made by the generator the treefile installs:
# initramfs-tools with apt-ostree's hook (bootable.toml), or dracut with
# ostree-boot's module (bootable-bookworm.toml). The tree is already
# converted: it replaces the one the kernel's installation made (moved from
# /boot to where ostree takes it), which predates the treefile's settings.
if command -v mkinitramfs >/dev/null; then
    mkinitramfs -o "/usr/lib/modules/$kver/initramfs.img" "$kver"
else
    dracut --force --no-hostonly --kver "$kver" "/usr/lib/modules/$kver/initramfs.img"
fi
# Per-machine identity is made on first boot, never shipped.
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
systemctl enable systemd-networkd.service systemd-resolved.service root-credentials.service
