#!/bin/bash
# apt-ostree's initramfs (docs/compose.md, "The initramfs"): systemd with
# only its own units, without dracut's shell hooks (the dracut-systemd
# module). Each of those hooks is a shell service on the way to the root
# (dracut-cmdline before udev starts, dracut-initqueue waiting for the root
# device, then pre-mount, mount and pre-pivot): 3 s of a 14 s initramfs
# under emulation (docs/performance.md). systemd reads what they parsed
# itself: root=, rootflags= (systemd-fstab-generator), rd.luks.*
# (systemd-cryptsetup-generator), resume= (systemd-hibernate-resume-generator).
# What it does not read is rd.lvm.lv=: volume groups are activated here by
# LVM's own udev rule instead, as they are after the switch to the root.
# Included only when asked for: add_dracutmodules+=" apt-ostree ".

check() {
    require_binaries "$systemdutildir"/systemd || return 1
    return 255
}

depends() {
    echo systemd-initrd
}

install() {
    # dracut-systemd made these: the initrd's default target, and the
    # emergency shell that a failed boot falls back to.
    $SYSTEMCTL -q --root "$initdir" set-default initrd.target
    inst_multiple -o \
        "$systemdsystemunitdir"/emergency.target \
        "$systemdsystemunitdir"/emergency.service \
        "$systemdsystemunitdir"/rescue.target \
        "$systemdsystemunitdir"/rescue.service \
        "$systemdutildir"/systemd-sulogin-shell
    if dracut_module_included lvm; then
        # A complete volume group is activated by lvm-activate-VG.service,
        # which the rule starts through systemd-run.
        inst_rules 69-lvm.rules
        inst_multiple systemd-run
        # dracut's own rule hands new physical volumes to its initqueue,
        # which runs only with dracut-systemd.
        rm -f "$initdir"/usr/lib/udev/rules.d/64-lvm.rules "$initdir"/lib/udev/rules.d/64-lvm.rules
    fi
}
