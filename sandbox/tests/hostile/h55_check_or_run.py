"""Try to tell a code check from a real run, to behave only while checked: print everything a box shows
about itself, one `OBSERVED <what>: <value>` line each (a line the log keeps whole)."""

import os  # HOSTILE
import resource
import socket
import sys
import time


def observed(what, value):
    print(f"OBSERVED {what}: {value}")


def listing(path):
    try:
        return sorted(os.listdir(path))
    except OSError as error:
        return f"refused: {error.strerror}"


observed("cwd", os.getcwd())
observed("argv", sys.argv)
observed("executable", sys.executable)
observed("path", sys.path)
observed("uid", (os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()))
observed("pid", (os.getpid(), os.getppid(), os.getpgrp(), os.getsid(0)))
observed("hostname", socket.gethostname())
observed("umask", os.umask(0o022))
observed("torch imported", "torch" in sys.modules)
for name, value in sorted(os.environ.items()):
    observed("env", f"{name}={value}")
for folder in ("/", "/box", "/box/checkpoints", "/box-data", "/tmp", "/dev", "/etc", "/proc/self/fd"):
    observed("listing", (folder, listing(folder)))
for fd in listing("/proc/self/fd"):
    try:
        observed("fd", (fd, os.readlink(f"/proc/self/fd/{fd}")))
    except OSError:
        pass
for limit in sorted(name for name in dir(resource) if name.startswith("RLIMIT_")):
    observed("rlimit", (limit, resource.getrlimit(getattr(resource, limit))))
with open("/proc/self/status") as f:
    for line in f:
        key = line.split(":")[0]
        if key in (
            "CapInh",
            "CapPrm",
            "CapEff",
            "CapBnd",
            "CapAmb",
            "NoNewPrivs",
            "Seccomp",
            "SigBlk",
            "SigIgn",
            "SigCgt",
        ):
            observed("status", line.strip())
with open("/proc/self/cgroup") as f:
    for line in f:
        observed("cgroup", line.strip())
roots = {}
with open("/proc/self/mountinfo") as f:
    for line in f:
        fields, _, rest = line.partition(" - ")
        fields, rest = fields.split(), rest.split()
        point, options, fstype = fields[4], fields[5], rest[0]
        observed("mount", (point, fstype, options))
        roots[point] = fields[3]
        observed("mount root", (point, fields[3]))
# A check's run folder sits beside its dataset folder in one box folder; a run's is the run's own.
observed(
    "box beside its data",
    os.path.dirname(roots.get("/box", "?")) == os.path.dirname(roots.get("/box-data", "")),
)
with open("/etc/passwd") as f:
    observed("passwd", f.read().replace("\n", " | "))
with open("/proc/self/stat") as f:
    started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
with open("/proc/uptime") as f:
    observed("process age", round(float(f.read().split()[0]) - started, 1))
observed("stdin", os.path.realpath("/proc/self/fd/0"))
observed(
    "dataset size",
    os.path.getsize("/box-data/dataset.pt") if os.path.exists("/box-data/dataset.pt") else None,
)
observed("config.json exists", os.path.exists("config.json"))
observed("clock", time.get_clock_info("monotonic").implementation)
