#!/usr/bin/env python3
"""The boot benchmark's clock (scripts/test-vm --boot-time).

    boot_clock.py record SOCKET LOG NAME > BOOT.json
    boot_clock.py summarize LIMIT BOOT.json...

record: connects to QEMU's serial port (a Unix socket chardev with
server=on,wait=on, so the machine is powered on when this connects: time 0),
keeps what the guest prints in LOG, and notes when the firmware handed over
to the boot loader (OVMF's "BdsDxe: starting") and when the guest's report
(tests/vm/boot-report.sh) printed its uptime. The kernel started at that
moment minus the uptime. The guest's `systemd-analyze` splits the rest into
kernel, initramfs and userspace up to multi-user.target.

summarize: one row per machine (the median of its boots after the first),
the ratio of the totals, and exit 1 when the image (NAME "image") takes
more than LIMIT times the plain Debian's (NAME "plain") time.
"""

import json
import re
import socket
import statistics
import sys
import time

DURATION = re.compile(r"(?:(\d+)min )?(\d+(?:\.\d+)?)(ms|s)\b")


def seconds(text):
    """'1min 2.5s' or '850ms' as seconds."""
    match = DURATION.search(text)
    if not match:
        return None
    minutes, value, unit = match.groups()
    value = float(value) / (1000 if unit == "ms" else 1)
    return value + 60 * int(minutes or 0)


def analyze(line):
    """The phases of "Startup finished in 2s (kernel) + 5s (initrd) + ..."."""
    phases = {}
    for part in line.split(" in ", 1)[-1].split("+"):
        name = re.search(r"\((\w+)\)", part)
        if name:
            phases[name.group(1)] = seconds(part)
    return phases


def connect(path):
    conn = socket.socket(socket.AF_UNIX)
    for _ in range(300):
        try:
            conn.connect(path)
            return conn
        except OSError:
            time.sleep(0.1)
    sys.exit(f"boot_clock: {path}: QEMU's serial port never opened")


def record(sock_path, log_path, name):
    conn = connect(sock_path)
    start = time.monotonic()
    report = {"name": name, "firmware_s": None, "uptime_at_s": None, "lines": []}
    pending = b""
    with open(log_path, "ab") as log:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            now = time.monotonic() - start
            log.write(data)
            log.flush()
            pending += data
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace").replace("\r", "")
                if report["firmware_s"] is None and "BdsDxe: starting" in line:
                    report["firmware_s"] = now
                at = line.find("BOOTBENCH ")
                if at < 0:
                    continue
                line = line[at + len("BOOTBENCH "):]
                report["lines"].append(line)
                if line.startswith("uptime "):
                    report["uptime_at_s"] = now
                    report["uptime_s"] = float(line.split()[1])
    if report["uptime_at_s"] is None:
        sys.exit(f"boot_clock: {name}: no report from the guest (see {log_path})")
    kernel_start = report["uptime_at_s"] - report["uptime_s"]
    report["kernel_start_s"] = kernel_start
    for line in report["lines"]:
        if line.startswith("analyze Startup finished"):
            report["phases"] = analyze(line)
        elif line.startswith("analyze multi-user.target reached after"):
            report["userspace_to_target_s"] = seconds(line.split("after", 1)[1])
        elif line.startswith("initramfs "):
            report["initramfs_bytes"] = int(line.split()[1])
    phases = report.get("phases", {})
    userspace = report.get("userspace_to_target_s", phases.get("userspace"))
    report["total_s"] = kernel_start + phases.get("kernel", 0) + phases.get("initrd", 0) + (userspace or 0)
    json.dump(report, sys.stdout)
    print()
    print(f"    {name}: {report['total_s']:.1f} s from power-on to multi-user", file=sys.stderr)


def summarize(limit, paths):
    boots = [json.load(open(p)) for p in paths]
    rows = {}
    for name in ("plain", "image"):
        mine = [b for b in boots if b["name"] == name]
        # The first boot of a disk does its first-boot work (machine-id,
        # SSH host keys): shown, but not in the median.
        later = mine[1:] or mine

        def median(key, sub=None):
            values = [(b.get(sub) or {}).get(key) if sub else b.get(key) for b in later]
            values = [v for v in values if v is not None]
            return statistics.median(values) if values else None

        total = median("total_s")
        firmware = median("firmware_s")
        kernel_start = median("kernel_start_s")
        loader = kernel_start - firmware if firmware is not None and kernel_start is not None else None
        size = median("initramfs_bytes")
        cells = [
            ("firmware", firmware),
            ("loader", loader),
            ("kernel", median("kernel", "phases")),
            ("initramfs", median("initrd", "phases")),
            ("userspace", median("userspace_to_target_s") or median("userspace", "phases")),
        ]
        text = "  ".join(f"{k} {v:5.1f} s" if v is not None else f"{k}   n/a" for k, v in cells)
        first = mine[0]["total_s"] if mine else None
        print(f"{name:<6} power-on to multi-user {total:6.1f} s (median of {len(later)}; "
              f"first boot {first:.1f} s)  {text}  initramfs {size / 1e6 if size else 0:.1f} MB")
        rows[name] = total
    for name in ("plain", "image"):
        last = [b for b in boots if b["name"] == name][-1]
        print(f"where {name}'s last boot went (systemd-analyze):")
        for line in last["lines"]:
            if line.startswith(("analyze", "blame", "initramfs", "cpu")):
                print("  " + line)
    ratio = rows["image"] / rows["plain"]
    print(f"ratio image/plain {ratio:.2f}x (limit {limit}x)")
    if ratio > limit:
        print(f"!! the image boots {ratio:.2f}x as slowly as the plain Debian (limit {limit}x)",
              file=sys.stderr)
        sys.exit(1)


def main():
    if sys.argv[1:2] == ["record"]:
        record(*sys.argv[2:5])
    elif sys.argv[1:2] == ["summarize"]:
        summarize(float(sys.argv[2]), sys.argv[3:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
