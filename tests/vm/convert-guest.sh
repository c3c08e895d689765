#!/bin/sh
# The install-os phases of the VM suite (issue 31), one per boot:
#   30  a Debian machine installed the usual way (tests/vm/plain-disk.sh):
#       refusals change nothing; --dry-run; the conversion, with
#       --layer-manual (the packages installed by hand, from Debian's
#       archive); reboot
#   31  the converted machine: what made it its own is there, sudo is
#       layered, the image alone is the rollback, the old root is under
#       /sysroot; upgrade to the host's next base; reboot
#   32  the upgrade booted; cleanup --old-root removes the old system, not
#       the machine's data
#   33  (another plain machine, a second empty disk) the disk is laid out as
#       an administrator would for an encrypted root: an ESP, /boot, LUKS
#       holding LVM holding the root; refusals; install-os to-filesystem;
#       the test driver put into the new system's /var; power off
#   34  the second disk booted alone (its passphrase typed on the serial
#       console by the host): the root is the LVM volume on LUKS
# Reports "VMTEST ..." lines on the serial console for scripts/test-vm.
set -u
STATE=/var/lib/vmtest
mkdir -p $STATE
PHASE=$(cat $STATE/phase 2>/dev/null || echo 30)
# to-filesystem's target (phase 33): the second disk, its volume group.
TARGET_DISK=/dev/vdb VG=vmtest-vg TARGET=/mnt/target
PASSPHRASE_FILE=/usr/local/etc/vmtest/passphrase
SOURCE=$(cat /usr/local/etc/vmtest/source)
REF=$(cat /usr/local/etc/vmtest/ref)
# A kernel argument given to install-os, for the new system.
KARG=vmtest.converted=1

say() {
    echo "VMTEST $*" >> $STATE/log
    for try in 1 2 3 4 5; do
        echo "VMTEST $*" 2>/dev/null > /dev/ttyS0 && return 0
        sleep 1
    done
}
fail() {
    say "phase $PHASE: FAIL: $*"
    apt-ostree status -v 2>&1 | sed 's/^/VMTEST   /' > /dev/ttyS0
    systemctl --no-pager --failed 2>&1 | sed 's/^/VMTEST   /' > /dev/ttyS0
    systemctl poweroff
    exit 1
}
check() { # check DESCRIPTION COMMAND...
    what=$1; shift
    if out=$("$@" 2>&1); then
        say "  ok: $what"
    else
        echo "$out" | tail -n 20 | sed 's/^/VMTEST   /' > /dev/ttyS0
        fail "$what"
    fi
}
# refused DESCRIPTION TEXT COMMAND...: fails with TEXT in its error, and
# the machine has no /ostree afterwards.
refused() {
    what=$1 text=$2; shift 2
    if out=$("$@" 2>&1); then
        echo "$out" | tail -n 20 | sed 's/^/VMTEST   /' > /dev/ttyS0
        fail "$what: not refused"
    fi
    echo "$out" | grep -q -- "$text" || { echo "$out" | tail -n 20 | sed 's/^/VMTEST   /' > /dev/ttyS0; fail "$what: no \"$text\""; }
    [ ! -e /ostree ] || fail "$what: /ostree was made"
    say "  ok: refused, $what: $(echo "$out" | grep -m1 -- "$text" | sed 's/^ *//')"
}
next() { # [NEXT]: the next phase, by default PHASE + 1
    if [ $# = 1 ]; then echo "$1" > $STATE/phase; else echo $((PHASE + 1)) > $STATE/phase; fi
    say "phase $PHASE: PASS"
    systemctl reboot
    exit 0
}
facts() { # what makes this machine its own, as the next boot compares it
    echo "shadow $(getent shadow alice)"
    echo "passwd $(getent passwd alice)"
    echo "groups $(id -nG alice)"
    echo "hostkey $(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)"
    echo "machine-id $(cat /etc/machine-id)"
    echo "hostname $(hostname)"
    echo "notes $(cat /home/alice/notes.txt)"
    echo "keys $(cat /home/alice/.ssh/authorized_keys)"
    echo "db $(cat /var/lib/vmtest-db/table)"
}
install_os() { apt-ostree install-os to-existing-root --karg $KARG "$@"; }

convert() { # the conversion, and what it must have done before the reboot
    started=$(date +%s)
    converted=0
    install_os --layer-manual --no-gpg-verify --ref "$REF" "$SOURCE" > $STATE/convert.log 2>&1 || converted=$?
    sed 's/^/VMTEST   /' $STATE/convert.log > /dev/ttyS0
    [ $converted = 0 ] || fail "install-os to-existing-root: exit $converted"
    say "  ok: install-os to-existing-root"
    say "  conversion took $(( $(date +%s) - started )) s"
    check "the menu is switched" sh -c '[ "$(readlink /boot/grub/grub.cfg)" = ../loader/grub.cfg ]'
    check "the old kernels are set aside" sh -c 'ls /boot/old-root/vmlinuz-* && ! ls /boot/vmlinuz-* 2>/dev/null'
    check "/home is in /var, linked" sh -c '[ -L /home ] && [ -f /var/home/alice/notes.txt ]'
    check "the new boot entry has the --karg" sh -c "grep -q $KARG /boot/loader/entries/*.conf"
    check "--layer-manual layered sudo, left the old boot machinery out" sh -c \
        "grep -q '^Layered (installed by hand, not in the image):.* sudo' $STATE/convert.log &&
         grep -q '^Not layered (the image brings its own boot machinery):.* grub-efi-amd64' $STATE/convert.log"
    check "two boot entries: the layered deployment, the image alone" sh -c '[ $(ls /boot/loader/entries/*.conf | wc -l) = 2 ]'
}
prepare_target() { # an ESP, /boot, and LVM on LUKS for the root, mounted at $TARGET
    printf 'label: gpt\nsize=200MiB, type=U\nsize=800MiB, type=L\ntype=L\n' |
        sfdisk --quiet $TARGET_DISK
    udevadm settle
    mkfs.vfat -F 32 ${TARGET_DISK}1 >/dev/null
    mkfs.ext4 -q ${TARGET_DISK}2
    # PBKDF2 with few iterations: argon2's memory and time under emulation
    # would make the test slow, and the test is not about the KDF.
    tr -d '\n' < $PASSPHRASE_FILE |
        cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 \
            --pbkdf-force-iterations 1000 --key-file - ${TARGET_DISK}3
    tr -d '\n' < $PASSPHRASE_FILE | cryptsetup open --key-file - ${TARGET_DISK}3 target-crypt
    pvcreate -q /dev/mapper/target-crypt
    vgcreate -q $VG /dev/mapper/target-crypt
    lvcreate -q -l 100%FREE -n root $VG
    mkfs.ext4 -q /dev/$VG/root
    mkdir -p $TARGET
    mount /dev/$VG/root $TARGET
    mkdir $TARGET/boot
    mount ${TARGET_DISK}2 $TARGET/boot
    mkdir $TARGET/boot/efi
    mount ${TARGET_DISK}1 $TARGET/boot/efi
}
to_filesystem() { apt-ostree install-os to-filesystem --karg vmtest.tofs=1 --no-gpg-verify --ref "$REF" "$@"; }
# What the target holds besides lost+found and its mount points.
target_contents() { ls -A $TARGET | grep -v -x -e lost+found -e boot; ls -A $TARGET/boot | grep -v -x -e lost+found -e efi; }
target_empty() { [ -z "$(target_contents)" ]; }

say "phase $PHASE: start ($(. /etc/os-release; echo "$PRETTY_NAME"), $(mokutil --sb-state 2>&1 | head -n1))"
case $PHASE in
30)
    check "Secure Boot is on" sh -c 'mokutil --sb-state | grep -q "SecureBoot enabled"'
    check "a plain Debian: no OSTree" sh -c '[ ! -e /ostree ] && [ ! -e /run/ostree-booted ]'
    facts > $STATE/facts
    refused "a source that is no image or URL" "neither an image reference" install_os /srv/repo
    refused "a URL without --ref" "needs --ref" install_os "$SOURCE"
    refused "an unreachable source" "cannot be read" install_os --no-gpg-verify --ref "$REF" http://10.0.2.2:9/repo
    refused "a ref the remote lacks" "cannot be read" install_os --no-gpg-verify --ref debian/none "$SOURCE"
    # Leave less room than the new OS needs.
    free=$(df --output=avail -B1 / | tail -n1)
    fallocate -l $((free - (1 << 30))) /var/tmp/filler
    refused "too little space" "MiB needed" install_os --dry-run --no-gpg-verify --ref "$REF" "$SOURCE"
    rm /var/tmp/filler
    check "a dry run says what it would do" sh -c "apt-ostree install-os to-existing-root --karg $KARG --dry-run --no-gpg-verify --ref '$REF' '$SOURCE' | tee /dev/stderr | grep -q 'Dry run: nothing was changed'"
    check "the dry run changed nothing" sh -c '[ ! -e /ostree ] && [ -f /boot/grub/grub.cfg ] && [ ! -L /boot/grub/grub.cfg ]'
    if [ -e /usr/local/etc/vmtest/cut ]; then
        # --all: the host cuts the power at a random point of the conversion.
        echo 30c > $STATE/phase
        sync
        say "phase $PHASE: PASS (the power is cut during the conversion)"
        say "cut-window convert"
        started=$(date +%s)
        install_os --no-gpg-verify --ref "$REF" "$SOURCE" > $STATE/convert.log 2>&1
        say "cut-window end: convert done in $(( $(date +%s) - started )) s"
        sleep 600
        exit 1
    fi
    convert
    next
    ;;
30c)
    # After the power cut: the old system, or the new one.
    if [ -e /run/ostree-booted ]; then
        say "  the new system booted: the cut came after the switch"
        next 31
    fi
    say "  the old system booted: the cut came before the switch"
    # Its data is where it was, or reachable through the links left.
    facts > $STATE/facts-now
    check "its facts are as before" cmp $STATE/facts-now $STATE/facts
    began=no
    [ -e /ostree ] && began=yes
    convert
    if [ $began = yes ]; then
        check "the interrupted conversion was undone first" grep -q "interrupted conversion is undone" $STATE/convert.log
    else
        say "  the cut came before the conversion changed anything"
    fi
    next 31
    ;;
31)
    check "an OSTree deployment booted" test -e /run/ostree-booted
    check "Secure Boot is on" sh -c 'mokutil --sb-state | grep -q "SecureBoot enabled"'
    check "the --karg is on the command line" grep -q $KARG /proc/cmdline
    facts > $STATE/facts-after
    while read -r key value; do
        now=$(grep "^$key " $STATE/facts-after | cut -d' ' -f2-)
        check "$key is as before" test "$now" = "$value"
    done < $STATE/facts
    check "alice is still in sudo" sh -c 'id -nG alice | grep -qw sudo'
    check "sudo, installed by hand, is layered and works" sh -c \
        'apt-ostree status --booted | grep LayeredPackages | grep -qw sudo && sudo -u alice true && dpkg -s sudo >/dev/null'
    check "the rollback is the image alone" sh -c 'apt-ostree status | grep -c LayeredPackages | grep -qx 1'
    check "the network configuration came along (10.0.2.99)" sh -c 'ip -4 addr | grep -q "10.0.2.99/24"'
    check "fstab's other mounts came along" sh -c 'findmnt -n -o FSTYPE /mnt/scratch | grep -q tmpfs'
    check "the old root is readable under /sysroot" sh -c 'test -f /sysroot/etc/debian_version && test -x /sysroot/usr/bin/apt-get'
    check "/var/lib/dpkg is the image's" sh -c '[ -L /var/lib/dpkg ] && dpkg -s apt-ostree >/dev/null'
    check "status shows the converted machine" sh -c "apt-ostree status | tee /dev/stderr | grep -q 'debian:$REF'"
    check "apt-ostree bootloader status" apt-ostree bootloader status
    check "upgrade to the host's next base" apt-ostree upgrade
    next
    ;;
33)
    check "a plain Debian: no OSTree" sh -c '[ ! -e /ostree ] && [ ! -e /run/ostree-booted ]'
    check "a second, empty disk" sh -c "[ -b $TARGET_DISK ] && ! blkid $TARGET_DISK"
    check "an ESP, /boot, and LVM on LUKS for the root" prepare_target
    refused "not a mount point" "is not a mount point" to_filesystem /srv "$SOURCE"
    touch $TARGET/stray
    refused "a target that is not empty" "is not empty (stray)" to_filesystem $TARGET "$SOURCE"
    rm $TARGET/stray
    luks=$(cryptsetup luksUUID ${TARGET_DISK}3)
    root=$(blkid -s UUID -o value /dev/$VG/root)
    to_filesystem --dry-run $TARGET "$SOURCE" > $STATE/tofs-dry.log 2>&1 || fail "the dry run: exit $?"
    sed 's/^/VMTEST   /' $STATE/tofs-dry.log > /dev/ttyS0
    check "the dry run finds the kernel arguments from the devices" \
        grep -q "Kernel arguments: rd.luks.uuid=$luks cryptopts=target=luks-$luks,source=UUID=$luks,luks rd.lvm.lv=$VG/root root=UUID=$root " $STATE/tofs-dry.log
    check "the dry run changed nothing" target_empty
    started=$(date +%s)
    status=0
    to_filesystem --root-ssh-authorized-keys /home/alice/.ssh/authorized_keys $TARGET "$SOURCE" \
        > $STATE/tofs.log 2>&1 || status=$?
    sed 's/^/VMTEST   /' $STATE/tofs.log > /dev/ttyS0
    [ $status = 0 ] || fail "install-os to-filesystem: exit $status"
    say "  ok: install-os to-filesystem, in $(( $(date +%s) - started )) s"
    check "the ESP has shim as the removable loader" test -f $TARGET/boot/efi/EFI/BOOT/BOOTX64.EFI
    check "GRUB reads libostree's menu" sh -c "[ \"\$(readlink $TARGET/boot/grub/grub.cfg)\" = ../loader/grub.cfg ]"
    # The test driver comes along in the new system's /var, where its
    # /usr/local is; its unit is in the image.
    NEWVAR=$TARGET/ostree/deploy/debian/var
    install -Dm755 /usr/local/sbin/vmtest-convert $NEWVAR/usrlocal/sbin/vmtest-convert
    mkdir -p $NEWVAR/usrlocal/etc $NEWVAR/lib/vmtest
    cp -r /usr/local/etc/vmtest $NEWVAR/usrlocal/etc/
    echo 34 > $NEWVAR/lib/vmtest/phase
    echo "$luks $root" > $NEWVAR/lib/vmtest/tofs-ids
    umount $TARGET/boot/efi $TARGET/boot $TARGET
    vgchange -q -an $VG
    cryptsetup close target-crypt
    sync
    say "phase $PHASE: PASS"
    systemctl poweroff
    exit 0
    ;;
34)
    read -r luks root < $STATE/tofs-ids
    check "an OSTree deployment booted" test -e /run/ostree-booted
    check "Secure Boot is on" sh -c 'mokutil --sb-state | grep -q "SecureBoot enabled"'
    check "the kernel arguments open LUKS, then LVM" sh -c \
        "grep -q 'rd.luks.uuid=$luks cryptopts=target=luks-$luks,source=UUID=$luks,luks rd.lvm.lv=$VG/root' /proc/cmdline && grep -q vmtest.tofs=1 /proc/cmdline"
    check "the initramfs opened the container under the name the arguments give" \
        test -b /dev/mapper/luks-$luks
    check "the root is the volume on LUKS" sh -c \
        "lsblk --inverse --list --noheadings --output TYPE \$(findmnt -n -o SOURCE /sysroot) | tr -d ' ' | tr '\n' ' ' | grep -q '^lvm crypt part disk'"
    check "the root file system is the one made" sh -c "[ \"\$(findmnt -n -o UUID /sysroot)\" = $root ]"
    if [ -x /usr/sbin/update-initramfs ]; then
        check "the initramfs checked it before mounting it" test -e /run/initramfs/fsck-root
    fi
    check "/boot is mounted from its partition" sh -c "findmnt -n -o SOURCE /boot | grep -q vda2"
    check "root's authorized keys came from the flag" grep -q alice@laptop /root/.ssh/authorized_keys
    check "status shows the installed system" sh -c "apt-ostree status | tee /dev/stderr | grep -q 'debian:$REF'"
    check "apt-ostree bootloader status" apt-ostree bootloader status
    say "phase $PHASE: PASS"
    say "TO-FILESYSTEM PASSED"
    systemctl poweroff
    ;;
32)
    check "the upgrade booted" sh -c 'grep -q "vmtest base 30" /usr/share/vmtest/base'
    check "the data is still there" sh -c 'grep -q "rows=42" /var/lib/vmtest-db/table && grep -q notes /home/alice/notes.txt'
    check "status: two deployments" sh -c 'apt-ostree status | tee /dev/stderr | grep -c "debian:" | grep -q 2'
    check "cleanup --old-root" apt-ostree cleanup --old-root
    check "the old root is gone" sh -c '[ ! -e /sysroot/usr ] && [ ! -e /sysroot/etc ] && [ ! -e /boot/old-root ]'
    check "the machine's data is not" sh -c 'grep -q rows=42 /var/lib/vmtest-db/table && [ -f /home/alice/notes.txt ] && getent passwd alice'
    check "status after the cleanup" apt-ostree status
    say "phase $PHASE: PASS"
    say "CONVERSION PASSED"
    systemctl poweroff
    ;;
esac
