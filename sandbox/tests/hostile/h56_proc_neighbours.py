"""Look for the worker's environment and other boxes' folders: another run's checkpoint, the
/proc/<pid>/environ and cwd of every pid, the parent's cwd, the host paths /proc/self/mountinfo shows.
What matters most comes first: the log keeps only the first 64 kB the script prints."""

import glob
import json
import os  # HOSTILE


def show(what, read, *args):
    try:
        print(what, read(*args))
    except OSError as error:
        print("refused", what, error.strerror)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read(2000)


def link_and_listing(path):
    return os.readlink(path), os.listdir(path)


def read_or_list(path):
    return read_bytes(path) if os.path.isfile(path) else os.listdir(path)


outside = json.load(open("hostile.json"))["outside_file"]
for path in (outside, os.path.dirname(outside), "/proc/1/root" + outside, "/proc/1/cwd", "../", "../../"):
    show(f"open {path}", read_or_list, path)
show("the parent's cwd", os.readlink, f"/proc/{os.getppid()}/cwd")
pids = {"1", str(os.getppid()), *[p for p in os.listdir("/proc") if p.isdigit()]}
for pid in sorted(pids):
    for name in ("environ", "cmdline"):
        show(f"/proc/{pid}/{name}", read_bytes, f"/proc/{pid}/{name}")
    for name in ("cwd", "root", "exe"):
        show(f"/proc/{pid}/{name}", link_and_listing, f"/proc/{pid}/{name}")
with open("/proc/self/mountinfo") as f:
    host_paths = {line.split(" - ")[0].split()[3] for line in f}
candidates = {c for p in host_paths for c in (p, os.path.dirname(p), os.path.dirname(os.path.dirname(p)))}
for candidate in sorted(candidates - {"/"}):
    show(f"listing {candidate}", os.listdir, candidate)
    show(f"box folders near {candidate}", glob.glob, os.path.join(candidate, "box-*", "run", "*"))
