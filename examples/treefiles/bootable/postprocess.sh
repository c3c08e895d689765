#!/bin/sh
# Runs in a sandbox without network, with the image as /.
set -eu
kver=$(ls /usr/lib/modules)
# An initramfs with dracut's ostree module (from ostree-boot) and every
# driver, so that it boots on any hardware.
dracut --force --no-hostonly --kver "$kver" "/usr/lib/modules/$kver/initramfs.img"
# Per-machine identity is made on first boot, never shipped.
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
systemctl enable systemd-networkd.service systemd-resolved.service root-credentials.service
