"""Become root again: setuid, a setuid binary, raising the limits back."""

import os  # HOSTILE
import resource

for attempt in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.setgroups([0])):
    try:
        attempt()
        print("ROOT", os.getuid())
    except OSError as error:
        print("refused", error)
try:
    resource.setrlimit(resource.RLIMIT_NPROC, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    print("RAISED limit")
except (ValueError, OSError) as error:
    print("refused", error)
os.system("su -c 'id > /tmp/buildx-escape.txt'; sudo id; mount -t tmpfs x /mnt; unshare -r id; id")
