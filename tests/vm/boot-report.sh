#!/bin/sh
# The boot benchmark's guest side (scripts/test-vm --boot-time): once the
# boot is finished, print on the console the uptime (the host's clock then
# knows when the kernel started), systemd-analyze's phases, the initramfs'
# size and where the time went, then power off.
set -u
# Until every job of the boot is done: systemctl waits for systemd's
# signal, where polling systemd-analyze would take the CPU from the last
# jobs (a fifth of a second each under emulation).
systemctl is-system-running --wait >/dev/null 2>&1
until systemd-analyze time >/dev/null 2>&1; do sleep 0.2; done
{
    echo "BOOTBENCH uptime $(cut -d' ' -f1 /proc/uptime)"
    systemd-analyze time | sed 's/^/BOOTBENCH analyze /'
    for f in "/usr/lib/modules/$(uname -r)/initramfs.img" "/boot/initrd.img-$(uname -r)"; do
        [ -f "$f" ] && echo "BOOTBENCH initramfs $(stat -c %s "$f") $f"
    done
    systemd-analyze blame --no-pager | head -n 15 | sed 's/^ */BOOTBENCH blame /'
    systemd-analyze critical-chain --no-pager multi-user.target | sed 's/^/BOOTBENCH chain /'
    # Under emulation the CPU is the bottleneck: who used it during the boot.
    systemctl show --property=Id,CPUUsageNSec '*' 2>/dev/null |
        awk 'BEGIN { RS = ""; FS = "\n" }
             { id = ""; cpu = 0
               for (i = 1; i <= NF; i++) { split($i, kv, "=")
                   if (kv[1] == "Id") id = kv[2]
                   if (kv[1] == "CPUUsageNSec" && kv[2] ~ /^[0-9]+$/) cpu = kv[2] }
               if (cpu > 200000000) printf "%d %s\n", cpu / 1000000, id }' |
        sort -rn | head -n 12 | sed 's/^/BOOTBENCH cpu ms /'
    # ... and which processes, kernel threads included (utime + stime, in
    # clock ticks; the name is between the first "(" and the last ")").
    for stat in /proc/[0-9]*/stat; do
        read -r line < "$stat" 2>/dev/null || continue
        name=${line#*(}; name=${name%)*}; rest=${line##*) }
        set -- $rest
        echo "$(( ${12} + ${13} )) $name"
    done | sort -rn | head -n 12 | sed 's/^/BOOTBENCH cpu ticks /'
    echo "BOOTBENCH cpu total $(awk '/^cpu / {print "user", $2+$3, "system", $4, "idle", $5, "iowait", $6, "irq+softirq", $7+$8}' /proc/stat) (ticks)"
    echo "BOOTBENCH end"
} > /dev/console 2>&1
systemctl --no-block poweroff
