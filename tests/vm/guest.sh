#!/bin/sh
# One phase of the VM suite per boot, then reboot (or power off at the end).
# Results go to the serial console as "VMTEST ..." lines, which the harness
# (scripts/test-vm) reads, and to /var/lib/vmtest/log.
set -u
STATE=/var/lib/vmtest
mkdir -p $STATE
PHASE=$(cat $STATE/phase 2>/dev/null || echo 1)
SOCKET=/run/apt-ostree/org.aptostree.Sysroot
IMAGE=$(cat /etc/vmtest/image)
# The ref the machine was made from (debian/13/... or debian/12/...).
REF=$(cat /etc/vmtest/ref)
export REF

# A serial getty starting beside this script hangs the line up: a write in
# flight then fails (EIO) and the line would be lost; write it again.
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
    journalctl -b -u apt-ostreed --no-pager -n 40 2>&1 | sed 's/^/VMTEST   /' > /dev/ttyS0
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
next() { echo $((PHASE + 1)) > $STATE/phase; say "phase $PHASE: PASS"; systemctl reboot; exit 0; }
has() { grep -q -- "$1"; }
# triaged UNIT yes|no: this boot tested UNIT's conditions (the boot
# triage's verdict among them) with that result.
triaged() {
    [ "$(systemctl show -P ConditionTimestampMonotonic "$1")" != 0 ] &&
        [ "$(systemctl show -P ConditionResult "$1")" = "$2" ]
}
# The deployment booted, and the one staged (empty when none), by checksum.
booted_checksum() { ostree admin status | sed -n 's/^\* [^ ]* \([0-9a-f]*\)\.[0-9]*.*/\1/p'; }
staged_checksum() { ostree admin status | sed -n 's/^  [^ ]* \([0-9a-f]*\)\.[0-9]* (staged).*/\1/p'; }

# Power cuts: the host kills QEMU at a random point after the guest says
# "cut-window OP" (scripts/test-vm, CUT=). What the next boot needs to judge
# the outcome is on disk first: the operation, the deployment booted before,
# and for a finalization the staged one.
prepare_cut() { # OP
    echo "$1 $(booted_checksum) $(staged_checksum)" > $STATE/cut
    echo $((PHASE + 1)) > $STATE/phase
    sync
}
# Run COMMAND with the power cut somewhere in it (or after it, when the
# host's random point falls past its end: the guest then waits).
cut_during() { # OP COMMAND...
    op=$1; shift
    prepare_cut "$op"
    say "phase $PHASE: PASS (the power is cut during $op)"
    say "cut-window $op"
    started=$(date +%s)
    if ! "$@" > $STATE/cut-op.log 2>&1; then
        tail -n 20 $STATE/cut-op.log | sed 's/^/VMTEST   /' > /dev/ttyS0
        fail "$op failed before the power was cut"
    fi
    say "cut-window end: $op done in $(( $(date +%s) - started )) s"
    sleep 600
    exit 1
}
# Reboot with the power cut while the staged deployment is finalized
# (the window is marked by the drop-in for ostree-finalize-staged.service).
cut_at_shutdown() {
    check "a deployment is staged" test -n "$(staged_checksum)"
    prepare_cut finalize
    say "phase $PHASE: PASS (the power is cut during finalization)"
    systemctl reboot
    exit 0
}
# After a cut: the machine booted the deployment from before or the new one
# (never a third state), and everything works.
after_cut() {
    read -r op old staged < $STATE/cut || fail "no record of the power cut"
    rm $STATE/cut
    now=$(booted_checksum)
    if [ "$now" = "$old" ]; then which=old; else which=new; fi
    say "  after the power cut during $op: booted the $which deployment"
    echo "$op $which" >> $STATE/cuts
    if [ "$op" = finalize ]; then
        check "the deployment booted is the old or the staged one" sh -c "[ '$now' = '$old' ] || [ '$now' = '$staged' ]"
    else
        # Nothing reaches the bootloader before finalization.
        check "a cut before finalization boots the old deployment" test "$which" = old
    fi
    if [ -x /usr/sbin/update-initramfs ]; then
        # The root was not unmounted: checked (and its journal replayed)
        # before it was mounted, and found clean enough to boot.
        check "the initramfs checked the root after the cut" test -e /run/initramfs/fsck-root
    fi
    check "status works" apt-ostree status
    check "nothing is left staged" test -z "$(staged_checksum)"
    check "ostree fsck" ostree fsck
}

# Every boot entry names its kernel and initramfs under /boot/ostree/: GRUB
# reads them off the root file system (/boot on the root, Debian 13).
entries_under_boot() {
    grep -q "^linux /boot/ostree/" /boot/loader/entries/*.conf &&
        ! grep -h "^linux \|^initrd " /boot/loader/entries/*.conf | grep -v -q " /boot/ostree/"
}

# Every UEFI boot runs with Secure Boot enforced (the harness's firmware has
# Microsoft's keys enrolled): shim, Debian's signed GRUB and signed kernel
# started this one. BIOS boots have no EFI at all.
check_firmware() {
    if [ -d /sys/firmware/efi ]; then
        sb=$(od -An -tu1 -j4 -N1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c 2>/dev/null | tr -d ' ')
        check "UEFI with Secure Boot on (the SecureBoot variable is $sb)" test "$sb" = 1
        check "mokutil --sb-state: SecureBoot enabled" sh -c 'mokutil --sb-state | grep -q "SecureBoot enabled"'
        check "the kernel knows it (lockdown or the EFI boot log)" sh -c \
            'journalctl -k -b | grep -q -i "secure boot enabled"'
    else
        say "  firmware: BIOS (no Secure Boot)"
    fi
}

# Base 3's boot (phase 7), and a deployment with a package layered on the
# same kernel and initramfs (phase 20, where libostree keeps grub.cfg), fail
# a health check; nobody is at the console: the machine must reboot by
# itself (and GRUB then boots the previous one).
if [ "$PHASE" = 7 ] || [ "$PHASE" = 20 ]; then
    say "phase $PHASE: booted, cmdline: $(cat /proc/cmdline)"
    check_firmware
    if [ "$PHASE" = 7 ]; then
        check "booted base 3" grep -q "vmtest base 3" /usr/share/vmtest/base
    else
        check "booted the deployment with vmtest-broken layered" \
            test -e /usr/lib/systemd/system/vmtest-broken.service
    fi
    check "status shows it on trial from its first boot, no try left" sh -c \
        'apt-ostree status --booted | grep -q "Boot: on trial: 0 more boots"'
    echo $((PHASE + 1)) > $STATE/phase
    sync
    say "phase $PHASE: PASS (the failed health check must now reboot the machine)"
    sleep 300
    say "phase $PHASE: FAIL: no reboot within 300 s of the failed health check"
    systemctl poweroff
    exit 1
fi

# The boot itself must have gone well: wait for every other start-up job
# (`is-system-running --wait` would wait for this one too), then no unit
# may have failed.
while systemctl list-jobs --no-legend | grep -v -q vmtest.service; do sleep 1; done
failed=$(systemctl --failed --no-legend --plain | cut -d' ' -f1 | tr '\n' ' ')
say "phase $PHASE: booted, cmdline: $(cat /proc/cmdline)"
[ -z "$failed" ] || fail "failed units: $failed"
check_firmware

case $PHASE in
1)
    check "root's password came from the credential" \
        sh -c '[ "$(getent shadow root | cut -d: -f2 | cut -c1-3)" = "\$6\$" ]'
    check "status marks a booted deployment" sh -c 'apt-ostree status --json | grep -q "\"booted\": true"'
    if [ -x /usr/sbin/update-initramfs ]; then
        # initramfs-tools' stamp: systemd-fsck-root then leaves it alone.
        check "the initramfs checked the root before mounting it" test -e /run/initramfs/fsck-root
    fi
    check "ostree agrees" sh -c 'ostree admin status | grep -q "^\* debian"'
    # /boot: a directory of the root where the image's libostree writes boot
    # entries under /boot (Debian 13), a partition of its own on Debian 12.
    if [ "$(. /etc/os-release && echo "$VERSION_ID")" = 12 ]; then
        check "/boot is a partition of its own" sh -c '[ "$(findmnt -no FSROOT /boot)" = / ]'
    else
        check "/boot is the root file system's, bound by ostree-prepare-root" sh -c \
            '[ "$(findmnt -no FSROOT /boot)" = /boot ] &&
             [ "$(findmnt -no UUID /boot)" = "$(findmnt -no UUID /sysroot)" ]'
        check "no partition is named boot" sh -c '! lsblk -lno PARTLABEL | grep -qx boot'
        check "the boot entries compose image wrote name /boot/ostree/..." entries_under_boot
        check "the signed GRUB on the ESP reads /boot/grub of the root" sh -c \
            'esp=$(lsblk -lnpo NAME,PARTTYPE | awk "\$2 == \"c12a7328-f81f-11d2-ba4b-00a0c93ec93b\" { print \$1 }") &&
             mount -o ro $esp /mnt && cat /mnt/EFI/debian/grub.cfg > /tmp/esp-grub.cfg; umount /mnt;
             grep -q "^search .*--fs-uuid --set=root $(findmnt -no UUID /sysroot)\$" /tmp/esp-grub.cfg &&
             grep -q "^set prefix=(\$root)/boot/grub\$" /tmp/esp-grub.cfg'
    fi
    if command -v varlinkctl >/dev/null; then
        check "varlinkctl introspect" sh -c "varlinkctl introspect $SOCKET org.aptostree.Sysroot | grep -q 'method GetStatus'"
        check "varlinkctl call" sh -c "varlinkctl call $SOCKET org.aptostree.Sysroot.GetStatus '{}' | grep -q deployments"
    else
        # Debian 12's systemd (252) predates varlinkctl (255): not a pass, said as such.
        say "  SKIPPED: varlinkctl checks (systemd $(systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p') has no varlinkctl)"
    fi
    # Stand-alone .deb files where people keep them: /root and /tmp are
    # hidden from the daemon's sandbox (ProtectHome, PrivateTmp), so the CLI
    # hands it open files.
    for where in /root /tmp; do
        name=vmtest-local-$(basename $where)
        mkdir -p $where/$name/DEBIAN $where/$name/usr/share/$name
        printf 'Package: %s\nVersion: 1.0\nArchitecture: all\nMaintainer: vmtest <vmtest@example.org>\nDescription: a local package\n' $name > $where/$name/DEBIAN/control
        echo "local from $where" > $where/$name/usr/share/$name/from
        dpkg-deb --root-owner-group --build $where/$name $where/$name.deb >/dev/null
    done
    check "install a .deb from /root and one from /tmp" \
        sh -c 'cd /root && apt-ostree install ./vmtest-local-root.deb /tmp/vmtest-local-tmp.deb'
    check "install vmtest-hello" apt-ostree install vmtest-hello
    check "install vmtest-opt (a vendor package under /opt)" apt-ostree install vmtest-opt
    check "the install is pending" sh -c 'apt-ostree status --json | grep -q vmtest-hello'
    check "kargs --append" apt-ostree kargs --append=vmtest.marker=1
    # The signed chain compose image wrote, as bootloader status reads it.
    check "bootloader status: Secure Boot on, the chain in EFI/debian and EFI/BOOT" sh -c \
        'apt-ostree bootloader status > /tmp/bl && cat /tmp/bl > /dev/ttyS0 &&
         grep -q "^Secure Boot: on" /tmp/bl &&
         grep -q "^EFI/debian: .*grub-efi-amd64-signed" /tmp/bl &&
         grep -q "^EFI/BOOT: .*shim-signed" /tmp/bl && ! grep -q "update is available" /tmp/bl'
    check "bootloader update: nothing to do (77)" sh -c \
        'apt-ostree bootloader update --unchanged-exit-77; [ $? = 77 ]'
    next
    ;;
2)
    check "the karg reached the kernel" grep -q "vmtest.marker=1" /proc/cmdline
    if [ "$(findmnt -no FSROOT /boot)" = /boot ]; then
        check "the boot entries this machine's libostree wrote name /boot/ostree/..." entries_under_boot
    fi
    check "the image's kernel arguments stayed" sh -c 'grep -q "root=UUID=" /proc/cmdline && grep -qw quiet /proc/cmdline'
    check "the layered program runs" sh -c 'vmtest-hello | grep -q "hello from a layered package"'
    check "postinst ran at layering" test -f /usr/share/vmtest-hello/postinst-ran
    check "conffile in /etc" grep -q "greeting=" /etc/vmtest-hello.conf
    check "file under /var" test -f /var/lib/vmtest-hello/state
    check "system user" getent passwd vmtest-hello
    check "layered packages in status" sh -c 'apt-ostree status --booted | grep LayeredPackages | grep -q vmtest-hello'
    check "the /opt package runs, with what its postinst wrote there" sh -c \
        '/opt/vmtest-opt/bin/vmtest-opt | grep -q "vendor program 1.0: written by postinst"'
    check "the local packages are installed" sh -c \
        'grep -q "from /root" /usr/share/vmtest-local-root/from && grep -q "from /tmp" /usr/share/vmtest-local-tmp/from'
    check "and listed as local in status" sh -c \
        'apt-ostree status --booted | grep LocalPackages | grep -q vmtest-local-root'

    # The layering overlay's upper layer sat on this ext4: its bookkeeping
    # xattrs (opaque markers, origins) must not have reached the commit.
    check "no overlayfs xattrs in the layered commit" sh -c \
        'c=$(ostree admin status | sed -n "s/^\* debian \([0-9a-f]*\)\..*/\1/p"); [ -n "$c" ] && ostree ls -R -X "$c" /usr/share/vmtest-hello >/dev/null && ! ostree ls -R -X "$c" / | grep trusted.overlay'
    # Live changes: no reboot between installing and using.
    check "install --apply-live vmtest-live" apt-ostree install --apply-live vmtest-live
    check "the live program runs with no reboot" sh -c 'vmtest-live | grep -q "live program"'
    check "its unit starts with no reboot" systemctl start vmtest-live.service
    check "the unit ran" test -f /run/vmtest-live.started
    check "its conffile reached /etc" grep -q "live=yes" /etc/vmtest-live.conf
    check "/usr stays read-only for everyone else" sh -c '! touch /usr/share/vmtest-ro-check 2>/dev/null'
    check "status shows the live package" sh -c 'apt-ostree status --booted | grep LivePackages | grep -q vmtest-live'
    check "uninstall --apply-live is refused without --allow-replacement" sh -c \
        '! apt-ostree uninstall --apply-live vmtest-live 2>/tmp/live.err && grep -q allow-replacement /tmp/live.err'
    # The first LayeredPackages line is the pending deployment's.
    check "and changed nothing" sh -c 'test -x /usr/bin/vmtest-live && apt-ostree status | grep -m1 LayeredPackages | grep -q vmtest-live'
    check "uninstall --apply-live --allow-replacement" apt-ostree uninstall --apply-live --allow-replacement vmtest-live
    check "the program is gone from the running system" test ! -e /usr/bin/vmtest-live
    check "a second install --apply-live builds on the first" apt-ostree install --apply-live vmtest-live
    check "the program is back" sh -c 'vmtest-live | grep -q "live program"'
    check "apply-live --reset" apt-ostree apply-live --reset
    check "the running /usr is the booted commit again" test ! -e /usr/bin/vmtest-live
    check "apply-live brings the pending deployment back" apt-ostree apply-live
    check "the program runs again" sh -c 'vmtest-live | grep -q "live program"'
    check "install vmtest-extra" apt-ostree install vmtest-extra
    check "refresh the package lists" apt-ostree refresh-md --force
    check "upgrade to the new base" apt-ostree upgrade
    check "apply-live refuses a pending deployment on another base" sh -c \
        '! apt-ostree apply-live 2>/tmp/live.err && grep -q "another base" /tmp/live.err'
    # The first LayeredPackages line is the pending deployment's.
    check "the pending deployment keeps both packages" sh -c \
        'apt-ostree status | grep -m1 LayeredPackages | grep vmtest-hello | grep -q vmtest-extra'
    next
    ;;
3)
    check "booted the new base" grep -q "vmtest base 2" /usr/share/vmtest/base
    # The boot units start only when the triage found them work.
    check "no fallback: the boot check did not start" triaged apt-ostree-boot-check.service no
    check "a new deployment: the triage started the assessment" triaged apt-ostree-boot-assess.service yes
    check "which marked the boot good in GRUB's block" sh -c \
        'id=$(ostree admin status | sed -n "s/^\* [^ ]* \([0-9a-f]*\.[0-9]*\).*/\1/p") &&
         grub-editenv /boot/grub/grubenv list | grep -qx "aot_good=$id"'
    check "first package kept across the upgrade" sh -c 'vmtest-hello | grep -q hello'
    check "second package there" test -x /usr/bin/vmtest-extra
    check "conffile kept" grep -q "greeting=" /etc/vmtest-hello.conf
    # Four so far: install and kargs in phase 1, install and upgrade in 2.
    n=$(journalctl MESSAGE_ID=9ef3cb3dc47c40c0ba406a417c2789fb -o cat --no-pager | grep -c "Deployment .* written")
    check "journal lists the deployments written ($n)" test "$n" -ge 4
    # The host published vmtest-opt 2.0 with the new base.
    check "the /opt package followed the upgrade to its new version" sh -c \
        '/opt/vmtest-opt/bin/vmtest-opt | grep -q "vendor program 2.0: written by postinst"'
    check "the package applied live is there after the reboot" sh -c 'vmtest-live | grep -q "live program"'
    check "no live changes after the reboot" sh -c '! apt-ostree status --booted | grep -q LiveCommit'
    check "usroverlay" apt-ostree usroverlay
    check "/usr is writable" sh -c 'echo overlay > /usr/share/vmtest-usroverlay'
    # The write went to the overlay, never into the deployment itself.
    deployment=$(ostree admin status | sed -n "s/^\* debian \([0-9a-f]*\.[0-9]*\).*/\1/p")
    check "the deployment's own /usr is untouched" sh -c \
        "[ -n '$deployment' ] && test ! -e /ostree/deploy/debian/deploy/$deployment/usr/share/vmtest-usroverlay"
    check "status shows it" sh -c 'apt-ostree status --booted | grep -q "Unlocked: development"'
    check "apply-live is refused on top of it" sh -c '! apt-ostree apply-live 2>/tmp/live.err && grep -q "already unlocked" /tmp/live.err'
    check "rollback" apt-ostree rollback
    next
    ;;
4)
    check "booted the previous deployment" sh -c '! test -e /usr/bin/vmtest-extra && test -x /usr/bin/vmtest-hello'
    check "old base" grep -q "vmtest base 1" /usr/share/vmtest/base
    sed -i 's/^AutomaticUpdatePolicy=.*/AutomaticUpdatePolicy=stage/' /etc/apt-ostree/apt-ostreed.conf
    check "automatic update runs" systemctl start apt-ostreed-automatic.service
    check "an update is staged" sh -c 'apt-ostree status --json | grep -q "\"staged\": true"'
    check "no failed units" sh -c '[ -z "$(systemctl --failed --no-legend --plain)" ]'
    # polkit: a rule lets alice change kernel arguments; bob may look only.
    useradd --create-home alice && useradd --create-home bob
    cat > /etc/polkit-1/rules.d/50-vmtest.rules <<'RULES'
polkit.addRule(function(action, subject) {
    if (action.id == "org.aptostree.bootconfig" && subject.user == "alice") {
        return polkit.Result.YES;
    }
});
RULES
    check "alice may change kernel arguments" runuser -u alice -- apt-ostree kargs --append=vmtest.alice=1
    check "it is in the pending deployment" sh -c 'apt-ostree kargs | grep -q vmtest.alice=1'
    check "bob may read status" runuser -u bob -- apt-ostree status
    check "bob may not change anything, and is told why" sh -c \
        '! runuser -u bob -- apt-ostree kargs --append=vmtest.bob=1 2>/tmp/bob.err && grep -q "permission denied: org.aptostree.bootconfig" /tmp/bob.err'
    check "bob may not upgrade either" sh -c \
        '! runuser -u bob -- apt-ostree upgrade 2>/tmp/bob.err && grep -q "org.aptostree.upgrade" /tmp/bob.err'
    # Container images go through skopeo, started by the hardened daemon: a
    # registry that does not answer must be reported as such, not as skopeo
    # failing to start under the unit's sandbox.
    staged_before=$(staged_checksum)
    check "skopeo runs under the daemon's sandbox" sh -c \
        '! apt-ostree rebase ostree-unverified-registry:10.0.2.2:9/none:1 2>/tmp/image.err && grep -q "fetching the image" /tmp/image.err && ! grep -q "starting skopeo" /tmp/image.err'
    # The same deployment is staged (a new one of the same base would pass "staged": true).
    check "the failed rebase changed nothing" test -n "$staged_before" -a "$(staged_checksum)" = "$staged_before"
    say "  hardening: $(systemd-analyze security apt-ostreed.service 2>/dev/null | tail -n 1)"
    # The OS as a container image: a Containerfile's build FROM the
    # encapsulated base, in the host's registry. The first pull brings the
    # whole OS (its files are mostly in the repository already).
    started=$(date +%s)
    check "rebase to $IMAGE" apt-ostree rebase "$IMAGE"
    say "  pulled and deployed the whole image in $(( $(date +%s) - started )) s"
    check "the pending deployment is the image" sh -c \
        "apt-ostree status --json | grep -m1 imageDigest | grep -q $(cat /etc/vmtest/digest-1)"
    next
    ;;
5)
    check "status shows the booted image" sh -c "apt-ostree status --booted | grep -q '$IMAGE'"
    check "and its digest" sh -c "apt-ostree status --booted | grep -q $(cat /etc/vmtest/digest-1)"
    check "the file the Containerfile copied" grep -q "build 1" /usr/share/vmtest/build
    check "the package its RUN installed" sh -c 'vmtest-image | grep -q "from the derived image" && dpkg-query -W vmtest-image'
    check "the file its RUN removed is gone" test ! -e /usr/bin/wall
    check "the package layered before the rebase is still there" sh -c 'vmtest-hello | grep -q hello'
    check "conffile kept" grep -q "greeting=" /etc/vmtest-hello.conf
    check "the registry's insecure entry stayed in /etc" test -f /etc/containers/registries.conf.d/50-vmtest.conf
    # The host pushed build 2 to the tag before this boot.
    check "upgrade --check sees the new build" sh -c \
        "apt-ostree upgrade --check | grep -q $(cat /etc/vmtest/digest-2)"
    started=$(date +%s)
    check "upgrade" apt-ostree upgrade
    say "  upgraded to the new build in $(( $(date +%s) - started )) s"
    # The initramfs made on the machine (update-initramfs in the new
    # deployment, with apt-ostree's hook) is the one phase 6 boots; its
    # rollback and reset leave it behind.
    if [ -x /usr/sbin/update-initramfs ]; then
        started=$(date +%s)
        check "initramfs --enable" apt-ostree initramfs --enable
        say "  made the initramfs in the new deployment in $(( $(date +%s) - started )) s"
    fi
    next
    ;;
6)
    check "booted the new build" grep -q "build 2" /usr/share/vmtest/build
    check "status shows its digest" sh -c "apt-ostree status --booted | grep -q $(cat /etc/vmtest/digest-2)"
    check "the layered package came along" sh -c 'vmtest-hello | grep -q hello'
    check "the image's package too" test -x /usr/bin/vmtest-image
    if [ -x /usr/sbin/update-initramfs ]; then
        initramfs=/usr/lib/modules/$(uname -r)/initramfs.img
        base=$(apt-ostree status --booted --json | sed -n 's/.*"baseChecksum": *"\([0-9a-f]*\)".*/\1/p' | head -n 1)
        check "booted the initramfs made on the machine, not the image's" sh -c \
            "apt-ostree status --booted | grep -q 'Initramfs: *regenerate' &&
             ostree cat $base $initramfs > /tmp/image-initramfs && ! cmp -s /tmp/image-initramfs $initramfs"
        check "it has apt-ostree's hook and script" sh -c \
            "lsinitramfs $initramfs > /tmp/initramfs.list &&
             grep -q 'lib/ostree/ostree-prepare-root\$' /tmp/initramfs.list &&
             grep -q 'scripts/local-bottom/apt-ostree\$' /tmp/initramfs.list"
    fi
    check "rollback" apt-ostree rollback
    check "the first build is the default again" sh -c \
        "apt-ostree status --json | grep -m1 imageDigest | grep -q $(cat /etc/vmtest/digest-1)"
    check "no failed units" sh -c '[ -z "$(systemctl --failed --no-legend --plain)" ]'
    check "ostree fsck" ostree fsck
    # reset: the next deployment is the image as it is, no layered package.
    check "reset" apt-ostree reset
    check "the pending deployment has no layered package" sh -c \
        'apt-ostree status --json | grep -m1 "\"requestedPackages\"" | grep -q "\[\]"'
    # Boot assessment: the host published base 3, whose boot fails; one try.
    # No deadline: only the failed health check may reboot phase 7.
    sed -i 's/^BootTries=.*/BootTries=1/; s/^BootFailureRebootDelay=.*/BootFailureRebootDelay=60/; s/^BootDeadline=.*/BootDeadline=0/' \
        /etc/apt-ostree/apt-ostreed.conf
    check "rebase to base 3" apt-ostree rebase vmtest:$REF
    next
    ;;
8)
    check "GRUB booted the previous deployment" sh -c '! grep -q "vmtest base 3" /usr/share/vmtest/base'
    check "the triage started the boot check: GRUB fell back" triaged apt-ostree-boot-check.service yes
    check "which is the default again" sh -c \
        'apt-ostree status --json | grep -m1 "\"booted\"" | grep -q true'
    check "status says base 3 failed to boot" sh -c 'apt-ostree status | grep -q "Boot: failed: used up its tries"'
    check "the journal says so, with its MESSAGE_ID" sh -c \
        'journalctl MESSAGE_ID=4bbe611154b440e1a6db295382526e0b -o cat --no-pager | grep -q "used up its boot tries"'
    check "the reboot came from the failed health check" sh -c \
        'journalctl -b -1 MESSAGE_ID=c3346795265342c4a20a8f758b7e28f5 -o cat --no-pager | grep -q "health check failed"'
    # Offline: no network card, and a FAT stick with two exports: base 3
    # and base 4 (a good one).
    check "no network at all" sh -c '[ -z "$(ls /sys/class/net | grep -vx lo)" ]'
    mkdir -p /mnt/usb
    check "mount the stick" mount -t vfat /dev/vdb /mnt/usb
    base3=$(ostree --repo=/mnt/usb/base3/.ostree/repo rev-parse "$REF")
    check "the stick holds base 3" test -n "$base3"
    # So that base 3 can only come from the stick: drop it from the machine.
    check "cleanup -r drops the failed deployment" apt-ostree cleanup -r
    # /sysroot is mounted read-only: delete the ref in a namespace of our own.
    check "delete the ref to base 3" unshare -m sh -c \
        'mount -o remount,rw /sysroot && ostree refs --delete vmtest:$REF'
    check "cleanup -b prunes it" apt-ostree cleanup -b
    check "base 3 is no longer in the machine's repository" sh -c "! ostree show $base3 >/dev/null 2>&1"
    # The same update is the same base with the same requests: base 3 with
    # no layered package, as in phase 6.
    check "reset" apt-ostree reset
    check "rebasing to it from the stick is refused: it failed to boot" sh -c \
        '! apt-ostree rebase --from /mnt/usb/base3 vmtest:$REF 2>/tmp/failed.err && grep -q "failed to boot" /tmp/failed.err'
    check "cleanup --boot-failures forgets it" sh -c \
        'apt-ostree cleanup --boot-failures | grep -q "forgot 1 deployment"'
    check "rebase to it from the stick, with no network" \
        apt-ostree rebase --from /mnt/usb/base3 vmtest:$REF
    check "the pending deployment is base 3" sh -c \
        "apt-ostree status --json | grep -m1 '\"checksum\"' | grep -q $base3"
    check "upgrade from the stick's other export" apt-ostree upgrade --from /mnt/usb/base4
    check "the pending deployment is base 4" sh -c 'apt-ostree status | grep -m1 Version: | grep -q "vmtest\.4"'
    umount /mnt/usb
    check "no failed units" sh -c '[ -z "$(systemctl --failed --no-legend --plain)" ]'
    check "ostree fsck" ostree fsck
    cut_at_shutdown
    ;;
9)
    # The power was cut while base 4 was being finalized.
    after_cut
    if grep -q "vmtest base 4" /usr/share/vmtest/base; then
        check "the next update, over the network again" apt-ostree upgrade
    else
        check "the next update, over the network again" apt-ostree rebase vmtest:$REF
    fi
    # The host published base 5 before this boot.
    check "the pending deployment is base 5" sh -c 'apt-ostree status | grep -m1 Version: | grep -q "vmtest\.5"'
    check "ostree fsck" ostree fsck
    say "phase $PHASE: PASS"
    say "ALL PASSED"
    echo done > $STATE/phase
    systemctl poweroff
    ;;
# The matrix (scripts/test-vm --all): a fresh disk of its own.
# Power cuts at random points of install, upgrade and finalization; each
# boot after a cut checks the outcome and runs the next operation, which is
# how "the next upgrade works" is proven. The host publishes a new base
# before the boots that upgrade.
11)
    sed -i 's/^BootTries=.*/BootTries=2/; s/^BootFailureRebootDelay=.*/BootFailureRebootDelay=10/; s/^BootDeadline=.*/BootDeadline=0/' \
        /etc/apt-ostree/apt-ostreed.conf
    cut_during install apt-ostree install vmtest-hello
    ;;
12)
    after_cut
    cut_during upgrade apt-ostree upgrade
    ;;
13)
    after_cut
    check "install, then the power is cut while it is finalized" apt-ostree install vmtest-hello
    cut_at_shutdown
    ;;
14)
    after_cut
    check "upgrade, then the power is cut while it is finalized" apt-ostree upgrade
    cut_at_shutdown
    ;;
15)
    after_cut
    cut_during install apt-ostree install vmtest-extra
    ;;
16)
    after_cut
    cut_during upgrade apt-ostree upgrade
    ;;
17)
    after_cut
    say "  power cuts: $(sort $STATE/cuts | uniq -c | tr -s ' \n' ' ')"
    # A kernel panic at every boot (tests/vm/vmtest-panic.service), two
    # tries, through UEFI: panic=10 reboots, GRUB falls back after two.
    check "a deployment whose kernel panics" apt-ostree kargs --append=vmtest.panic=1
    next
    ;;
18)
    check "GRUB booted the previous deployment" sh -c '! grep -q vmtest.panic /proc/cmdline'
    check "status says the new one failed to boot" sh -c 'apt-ostree status | grep -q "Boot: failed: used up its tries"'
    check "the journal says so" sh -c \
        'journalctl -b MESSAGE_ID=4bbe611154b440e1a6db295382526e0b -o cat --no-pager | grep -q "used up its boot tries"'
    # A boot that hangs (tests/vm/vmtest-hang.service holds multi-user.target
    # forever), one try, through BIOS: the deadline reboots it.
    sed -i 's/^BootTries=.*/BootTries=1/; s/^BootDeadline=.*/BootDeadline=150/' /etc/apt-ostree/apt-ostreed.conf
    check "a deployment whose boot hangs" apt-ostree kargs --append=vmtest.hang=1
    next
    ;;
19)
    check "GRUB booted the previous deployment" sh -c '! grep -q vmtest.hang /proc/cmdline'
    check "the deadline rebooted the hung boot" sh -c \
        'journalctl -b -1 MESSAGE_ID=c3346795265342c4a20a8f758b7e28f5 -o cat --no-pager | grep -q "did not reach boot-complete.target"'
    check "status says the new one failed to boot" sh -c 'apt-ostree status | grep -q "Boot: failed: used up its tries"'
    check "ostree fsck" ostree fsck
    # A package layered on the same base: the same kernel and initramfs, so
    # libostree keeps grub.cfg; its unit fails at boot, one try.
    sed -i 's/^BootDeadline=.*/BootDeadline=0/' /etc/apt-ostree/apt-ostreed.conf
    check "layer a package whose unit fails at boot" apt-ostree install vmtest-broken
    next
    ;;
21)
    check "GRUB booted the previous deployment" test ! -e /usr/lib/systemd/system/vmtest-broken.service
    check "which is the default again" sh -c \
        'apt-ostree status --json | grep -m1 "\"booted\"" | grep -q true'
    check "status says the layered one failed to boot" sh -c 'apt-ostree status | grep -q "Boot: failed: used up its tries"'
    check "the reboot came from the failed health check" sh -c \
        'journalctl -b -1 MESSAGE_ID=c3346795265342c4a20a8f758b7e28f5 -o cat --no-pager | grep -q "health check failed"'
    # A power cut while an image is pulled from the host's registry.
    cut_during pull apt-ostree rebase "$(cat /etc/vmtest/image)"
    ;;
22)
    after_cut
    check "the next pull works" apt-ostree rebase "$(cat /etc/vmtest/image)"
    check "the pending deployment is the image" sh -c 'apt-ostree status --json | grep -q imageDigest'
    check "ostree fsck" ostree fsck
    # Next: base 14, whose kernel lost its signature (host: sbattach --remove).
    check "drop the pending image" apt-ostree cleanup -p
    booted_checksum > $STATE/before-unsigned
    check "upgrade to base 14 (an unsigned kernel)" apt-ostree upgrade
    next
    ;;
23)
    # Shim refused the kernel; GRUB fell back to apt-ostree's entry, which
    # recorded it and booted the previous deployment: nobody at the console.
    check "the previous deployment booted" test "$(booted_checksum)" = "$(cat $STATE/before-unsigned)"
    check "status says base 14's kernel did not start" sh -c \
        'apt-ostree status | grep -q "Boot: failed: its kernel did not start (refused by Secure Boot"'
    check "the journal says so" sh -c \
        'journalctl -b MESSAGE_ID=4bbe611154b440e1a6db295382526e0b -o cat --no-pager | grep -q "kernel did not start"'
    check "upgrade to base 15 (a newer boot chain)" apt-ostree upgrade
    next
    ;;
24)
    check "booted base 15" grep -q "vmtest base 15" /usr/share/vmtest/base
    # The good boot brought the ESP up to the booted deployment's chain.
    check "the ESP was updated after the good boot" sh -c \
        'apt-ostree bootloader status > /tmp/bl && cat /tmp/bl > /dev/ttyS0 &&
         grep -q "^EFI/debian: .*+vmtest15" /tmp/bl && grep -q "^EFI/BOOT: .*+vmtest15" /tmp/bl &&
         ! grep -q "update is available" /tmp/bl'
    check "the journal says so" sh -c \
        'journalctl -b MESSAGE_ID=91590aefd5ab41ce8ae3271df95b8a00 -o cat --no-pager | grep -q "Updated the boot chain"'
    # Make the ESP's chain look older again, and cut the power while the
    # update replaces it.
    esp=$(lsblk -lnpo NAME,PARTTYPE | awk '$2 == "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" { print $1 }')
    check "the ESP made to look older" sh -c \
        "mount $esp /mnt && sed -i 's/+vmtest15//' /mnt/EFI/debian/apt-ostree-bootchain.json /mnt/EFI/BOOT/apt-ostree-bootchain.json && umount /mnt"
    check "bootloader status offers the update" sh -c 'apt-ostree bootloader status | grep -q "update is available"'
    cut_during bootloader apt-ostree bootloader update
    ;;
25)
    after_cut
    check "bootloader update finishes what the cut left" sh -c \
        'apt-ostree bootloader update; rc=$?; [ $rc = 0 ] || [ $rc = 77 ]'
    check "both directories hold the new chain, nothing left beside them" sh -c \
        'apt-ostree bootloader status > /tmp/bl && cat /tmp/bl > /dev/ttyS0 &&
         grep -q "^EFI/debian: .*+vmtest15" /tmp/bl && grep -q "^EFI/BOOT: .*+vmtest15" /tmp/bl &&
         esp=$(lsblk -lnpo NAME,PARTTYPE | awk "\$2 == \"c12a7328-f81f-11d2-ba4b-00a0c93ec93b\" { print \$1 }") &&
         mount -o ro $esp /mnt && ls /mnt/EFI > /tmp/efi; umount /mnt; ! grep -q "\.new" /tmp/efi'
    say "phase $PHASE: PASS"
    say "MATRIX PASSED"
    echo done > $STATE/phase
    systemctl poweroff
    ;;
*)
    say "nothing to do in phase $PHASE"
    systemctl poweroff
    ;;
esac
