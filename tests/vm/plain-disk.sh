#!/bin/sh
# The disk of a Debian machine installed the usual way, for install-os to
# convert (issue 31): mmdebstrap with Debian's kernel and initramfs-tools,
# shim and the signed GRUB on an ESP, an ext4 root, OpenSSH, systemd-networkd;
# a user with a password and an SSH key, a file in her home, state under
# /var/lib, apt-ostree installed from its package.
#
#   plain-disk.sh SUITE DEB OUTPUT CACHE GUEST_DIR SETTINGS_DIR
#
# GUEST_DIR holds the test driver (convert-guest.sh, vmtest-convert.service);
# the files of SETTINGS_DIR (the source to convert from) go to
# /usr/local/etc/vmtest. With DEB and GUEST_DIR "none" (the boot
# benchmark, scripts/bench-boot), the machine has neither apt-ostree nor the
# driver, and PLAIN_PACKAGES replaces the package list.
# The packages are kept as a tarball in CACHE for a week (keyed by the
# package list); the disk is made from it in a minute. The build host needs
# no FAT driver: the ESP is written with mtools, as Debian's grub-install
# --uefi-secure-boot --force-extra-removable lays it out.
set -eu
SUITE=$1 DEB=$2 OUT=$3 CACHE=$4 GUEST=$5 SETTINGS=$6
PKGS=systemd-sysv,udev,dbus,libpam-systemd,linux-image-amd64,initramfs-tools
PKGS=$PKGS,grub-efi-amd64,grub-efi-amd64-signed,shim-signed,mokutil,openssh-server
PKGS=$PKGS,sudo,iproute2,kmod,e2fsprogs,ca-certificates,less,polkitd,ostree-boot,skopeo
# What an administrator prepares a disk with for install-os to-filesystem.
PKGS=$PKGS,fdisk,dosfstools,cryptsetup-bin,lvm2
PKGS=${PLAIN_PACKAGES:-$PKGS}
# apt-ostree's dependencies, so that its package installs with no network.
DEPS=
if [ "$DEB" != none ]; then
    DEPS=$(dpkg-deb -f "$DEB" Depends | sed 's/([^)]*)//g; s/|[^,]*//g; s/ //g')
fi
KEY=$(echo "$SUITE $PKGS $DEPS" | sha256sum | cut -c1-12)
# The benchmark's package set is kept beside the conversion's.
FLAVOUR=plain${PLAIN_PACKAGES:+-bench}
TAR=$CACHE/$FLAVOUR-$SUITE-$KEY.tar
if [ ! -s "$TAR" ] || [ -n "$(find "$TAR" -mtime +7)" ]; then
    rm -f "$CACHE/$FLAVOUR-$SUITE"-*.tar
    mmdebstrap --quiet --mode=root --format=tar --variant=minbase --components=main \
        --include="$PKGS${DEPS:+,$DEPS}" "$SUITE" "$TAR.tmp" http://deb.debian.org/debian
    mv "$TAR.tmp" "$TAR"
fi

rm -f "$OUT"
truncate -s 6G "$OUT"
sfdisk --quiet "$OUT" <<'EOF'
label: gpt
size=256MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
type=0FC63DAF-8483-4772-8E79-3D69D8477DE4
EOF
LOOP=$(losetup --find --show --partscan "$OUT")
M=$(mktemp -d)
done_disk() {
    for d in dev/pts dev proc sys; do umount "$M/$d" 2>/dev/null || true; done
    umount "$M" 2>/dev/null || true
    losetup --detach "$LOOP"
    rmdir "$M"
}
trap done_disk EXIT
[ -e "${LOOP}p2" ] || partx --add "$LOOP"
mkfs.vfat -F 32 -n ESP "${LOOP}p1" >/dev/null
mkfs.ext4 -q -L root "${LOOP}p2"
ROOT_UUID=$(blkid -s UUID -o value "${LOOP}p2")
ESP_UUID=$(blkid -s UUID -o value "${LOOP}p1")
mount "${LOOP}p2" "$M"
tar -C "$M" --numeric-owner -xpf "$TAR"
mkdir -p "$M/boot/efi"

# What the installer and the administrator would have set up.
cat > "$M/etc/fstab" <<EOF
UUID=$ROOT_UUID / ext4 errors=remount-ro 0 1
UUID=$ESP_UUID /boot/efi vfat umask=0077 0 1
tmpfs /mnt/scratch tmpfs size=16m,nofail 0 0
EOF
mkdir -p "$M/mnt/scratch"
echo plain-vm > "$M/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tplain-vm\n' > "$M/etc/hosts"
# DHCP, and one address of the administrator's own: the network carried
# over shows as that address after the conversion.
cat > "$M/etc/systemd/network/10-admin.network" <<'EOF'
[Match]
Type=ether

[Network]
DHCP=yes
Address=10.0.2.99/24
EOF
cat >> "$M/etc/default/grub" <<'EOF'
GRUB_TIMEOUT=1
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8 panic=10"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
EOF
for d in dev dev/pts proc sys; do mount --bind "/$d" "$M/$d"; done
chroot "$M" systemctl enable --quiet systemd-networkd ssh
chroot "$M" useradd --create-home --shell /bin/bash --groups sudo \
    --password "$(python3 -c 'import crypt; print(crypt.crypt("alice-pw", crypt.mksalt(crypt.METHOD_SHA512)))')" alice
mkdir -p "$M/home/alice/.ssh"
echo "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBiLGQ8sN0ZxBqJ0ahX5T3bC0b0yq3oP1pA7WmK9uYtC alice@laptop" \
    > "$M/home/alice/.ssh/authorized_keys"
echo "alice's notes" > "$M/home/alice/notes.txt"
chroot "$M" chown -R alice:alice /home/alice
mkdir -p "$M/var/lib/vmtest-db"
echo "rows=42" > "$M/var/lib/vmtest-db/table"
if [ "$DEB" != none ]; then
    cp "$DEB" "$M/tmp/apt-ostree.deb"
    chroot "$M" dpkg -i /tmp/apt-ostree.deb >/dev/null
    rm "$M/tmp/apt-ostree.deb"
fi
# The test driver, as an administrator adds a program and a unit, under
# /usr/local: the conversion moves it into /var, where the new system finds
# it too (the image it converts to starts it).
if [ "$GUEST" != none ]; then
    install -Dm755 "$GUEST/convert-guest.sh" "$M/usr/local/sbin/vmtest-convert"
    install -Dm644 -t "$M/usr/local/etc/vmtest" "$SETTINGS"/*
    install -Dm644 "$GUEST/vmtest-convert.service" "$M/usr/local/lib/systemd/system/vmtest-convert.service"
    mkdir -p "$M/etc/systemd/system/multi-user.target.wants"
    ln -s /usr/local/lib/systemd/system/vmtest-convert.service "$M/etc/systemd/system/multi-user.target.wants/"
    mkdir -p "$M/var/lib/vmtest"
    cat "$SETTINGS/first-phase" 2>/dev/null > "$M/var/lib/vmtest/phase" || echo 30 > "$M/var/lib/vmtest/phase"
fi

# GRUB as Debian's installer leaves it on a UEFI machine with Secure Boot:
# shim and the signed GRUB in EFI/debian and as the removable loader, a
# stub that reads /boot/grub/grub.cfg, the menu made by update-grub.
chroot "$M" update-grub 2>/dev/null
# In the chroot, udev has no /dev/disk/by-uuid link for the loop device, so
# grub-mkconfig named it; the installer's menu names the root by UUID.
sed -i "s|root=${LOOP}p2|root=UUID=$ROOT_UUID|g" "$M/boot/grub/grub.cfg"
grep -q "root=UUID=$ROOT_UUID" "$M/boot/grub/grub.cfg"
ESP=$(mktemp -d)
mkdir -p "$ESP/EFI/debian" "$ESP/EFI/BOOT"
cp "$M/usr/lib/shim/shimx64.efi.signed" "$ESP/EFI/debian/shimx64.efi"
cp "$M/usr/lib/shim/mmx64.efi.signed" "$ESP/EFI/debian/mmx64.efi"
cp "$M/usr/lib/shim/fbx64.efi.signed" "$ESP/EFI/debian/fbx64.efi"
cp "$M/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed" "$ESP/EFI/debian/grubx64.efi"
printf "search.fs_uuid %s root\nset prefix=(\$root)'/boot/grub'\nconfigfile \$prefix/grub.cfg\n" "$ROOT_UUID" \
    > "$ESP/EFI/debian/grub.cfg"
cp "$ESP/EFI/debian/shimx64.efi" "$ESP/EFI/BOOT/BOOTX64.EFI"
cp "$ESP/EFI/debian/grubx64.efi" "$ESP/EFI/debian/mmx64.efi" "$ESP/EFI/debian/grub.cfg" "$ESP/EFI/BOOT/"
mcopy -s -i "${LOOP}p1" "$ESP/EFI" ::/
rm -rf "$ESP"
