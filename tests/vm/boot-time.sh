# The boot benchmark (issue 33), sourced by scripts/test-vm --boot-time once
# the image is composed: the example image (compose image, as a user makes
# its disk) and a Debian of the same packages made the usual way
# (tests/vm/plain-disk.sh: mmdebstrap, Debian's kernel with initramfs-tools,
# shim and the signed GRUB), booted one after the other on this machine
# through the same firmware (OVMF, Secure Boot on) with the same QEMU. Each
# disk boots once, then APT_OSTREE_BOOT_RUNS times (default 3) alternating;
# tests/vm/boot_clock.py times each boot and prints the medians of the
# later boots, and fails when the image takes more than
# APT_OSTREE_BOOT_LIMIT (default 1.1) times the plain Debian's time.

# The treefile's packages and those its local packages (apt-ostree) depend
# on, with Debian's initramfs generator (instead of dracut, where a treefile
# has it) and without what only an OSTree system has.
plain_packages() {
    deps=$(dpkg-deb -f "target/debian/$SUITE"/apt-ostree_*.deb Depends)
    python3 - "$TREEFILE" "$deps" <<'PYEOF2'
import re, sys, tomllib
packages = tomllib.load(open(sys.argv[1], "rb"))["packages"]
# "libfoo (>= 1), bar | baz": the first of each alternative, no versions.
packages += [re.split(r"[ (|]", d.strip())[0] for d in sys.argv[2].split(",")]
skip = {"dracut", "ostree", "ostree-boot"}
wanted = list(dict.fromkeys(p for p in packages if p not in skip))
print(",".join(wanted + ["initramfs-tools", "grub-efi-amd64"]))
PYEOF2
}

# Add the report unit to a root (ROOT: the file system's root, ETC: its /etc).
add_report() {
    install -Dm755 tests/vm/boot-report.sh "$1/boot-bench/report"
    install -Dm644 tests/vm/boot-report.service "$1/systemd/system/boot-report.service"
    mkdir -p "$1/systemd/system/multi-user.target.wants"
    ln -sf ../boot-report.service "$1/systemd/system/multi-user.target.wants/boot-report.service"
}

boot_time_disks() {
    stamp "Making the image's disk (compose image)"
    ./target/release/apt-ostree compose image --repo "$CACHE/repo" --ref "$REF" \
        --output "$WORK/image.img"
    attach_disk "$WORK/image.img"
    mkdir -p "$WORK/mnt"
    mount "$ROOT_PART" "$WORK/mnt"
    add_report "$(echo "$WORK"/mnt/ostree/deploy/debian/deploy/*.0/etc)"
    umount "$WORK/mnt"
    losetup --detach "$LOOP"
    stamp "Making a Debian of the same packages the usual way (mmdebstrap)"
    PLAIN_PACKAGES=$(plain_packages) tests/vm/plain-disk.sh "$SUITE" none \
        "$WORK/plain.img" "$CACHE" none none
    LOOP=$(losetup --find --show --partscan "$WORK/plain.img")
    [ -e "${LOOP}p2" ] || partx --add "$LOOP"
    mount "${LOOP}p2" "$WORK/mnt"
    add_report "$WORK/mnt/etc"
    umount "$WORK/mnt"
    losetup --detach "$LOOP"
}

# timed_boot NAME N: boot NAME's disk, record the boot as $WORK/boot-NAME-N.json.
timed_boot() {
    sock=$WORK/serial-$1-$2.sock
    # shellcheck disable=SC2086
    timeout "$BOOT_TIMEOUT" qemu-system-x86_64 $ACCEL -m 2048 \
        -machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on \
        -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd \
        -drive if=pflash,format=raw,file="$WORK/vars-$1.fd" \
        -device virtio-rng-pci -drive file="$WORK/$1.img",format=raw,if=virtio \
        -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
        -chardev socket,id=ser0,path="$sock",server=on,wait=on -serial chardev:ser0 \
        -display none -no-reboot &
    QEMU_PID=$!
    if ! python3 tests/vm/boot_clock.py record "$sock" "$WORK/serial-$1-$2.log" "$1" \
        > "$WORK/boot-$1-$2.json"; then
        kill "$QEMU_PID" 2>/dev/null || true
        tr -d '\r' < "$WORK/serial-$1-$2.log" | tail -n 40 >&2
        exit 1
    fi
    wait "$QEMU_PID" || true
    QEMU_PID=
}

boot_time_bench() {
    boot_time_disks
    for name in plain image; do
        cp /usr/share/OVMF/OVMF_VARS_4M.ms.fd "$WORK/vars-$name.fd"
    done
    echo "    QEMU: $ACCEL"
    stamp "First boots"
    timed_boot plain 0
    timed_boot image 0
    runs=${APT_OSTREE_BOOT_RUNS:-3}
    i=1
    while [ "$i" -le "$runs" ]; do
        stamp "Boots $i of $runs"
        timed_boot plain "$i"
        timed_boot image "$i"
        i=$((i + 1))
    done
    python3 tests/vm/boot_clock.py summarize "${APT_OSTREE_BOOT_LIMIT:-1.1}" "$WORK"/boot-*.json
}
