#!/usr/bin/env python3
"""The serial console of a VM-suite boot that someone must type on.

    serial-typist.py SOCKET LOG PROMPT ANSWER

Connects to QEMU's serial port (a Unix socket chardev, server=on,wait=on:
the machine starts once this is connected), appends everything the guest
prints to LOG, as `-serial file:LOG` would, and types ANSWER and Enter each
time PROMPT (a regular expression) appears (at most three times: a wrong
answer is asked again). Used for the passphrase of a LUKS root, asked by the
initramfs.
"""

import re
import socket
import sys
import time


def main():
    sock_path, log_path, prompt, answer = sys.argv[1:5]
    prompt = re.compile(prompt.encode())
    conn = socket.socket(socket.AF_UNIX)
    for _ in range(300):
        try:
            conn.connect(sock_path)
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit(f"serial-typist: {sock_path}: QEMU's serial port never opened")
    seen = b""
    answered = 0
    with open(log_path, "ab", buffering=0) as log:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            log.write(data)
            seen = (seen + data)[-4096:]
            if prompt.search(seen) and answered < 3:
                # The prompt is printed before the terminal is read.
                time.sleep(1)
                conn.sendall(answer.encode() + b"\r")
                answered += 1
                seen = b""
                print(f"    host: typed the passphrase at the console's prompt ({answered})",
                      flush=True)


if __name__ == "__main__":
    main()
