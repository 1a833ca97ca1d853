"""One control group per sandbox: memory for the whole process tree, a pids limit, a CPU weight.

Resource limits (rlimits) count per process (RLIMIT_AS) or per uid across the machine (RLIMIT_NPROC):
three forked children each under an 8 GiB address-space limit hold 24 GiB together. A control group
counts the whole tree of one sandbox, and the kernel's OOM killer acts inside it alone.

Both kernel interfaces are supported: cgroup v2 (one unified hierarchy; Docker hosts, systemd
machines) and cgroup v1 (one hierarchy per controller; this project's VMs mount `memory`, `pids`,
`cpu` and `cpuacct` there). Where neither is usable (not root, nothing mounted, the controllers not
delegated), `detect()` says why and callers report it: the sandbox then runs with rlimits only and
does not pretend to have the limit.

A sandbox joins its group before bubblewrap starts (the launcher's first step writes its own pid into
each `cgroup.procs`), so nothing it starts is ever outside it. Names carry the worker's pid, so that a
worker killed outright leaves groups the next one recognises and removes (`sweep_orphans`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

MOUNTINFO = "/proc/self/mountinfo"
PREFIX = "box-"  # box-<worker pid>-<serial>: a worker that died leaves groups with its pid


@dataclass(frozen=True)
class Hierarchy:
    """Where the sandboxes' groups live: one folder (v2), or one per controller (v1)."""

    version: int  # 1 or 2
    parents: dict[str, Path]  # controller -> folder holding the boxes' groups; v2: one key, "unified"
    problem: str = ""  # why limits are missing (empty when all of memory, pids and cpu are there)

    @property
    def folders(self) -> list[Path]:
        return sorted(set(self.parents.values()))


@dataclass
class Cgroup:
    """One sandbox's group (in each v1 hierarchy it uses, or the one v2 folder)."""

    hierarchy: Hierarchy
    name: str
    paths: dict[str, Path] = field(default_factory=dict)  # controller -> this group's folder

    @property
    def procs_files(self) -> list[str]:
        """The files a process writes "0" into to join the group (one per distinct folder)."""
        return [str(folder / "cgroup.procs") for folder in sorted(set(self.paths.values()))]

    def _file(self, controller: str, name: str) -> Path | None:
        folder = self.paths.get("unified" if self.hierarchy.version == 2 else controller)
        return folder / name if folder is not None else None

    def _read(self, controller: str, name: str) -> str:
        path = self._file(controller, name)
        if path is None:
            return ""
        try:
            return path.read_text()
        except OSError:
            return ""

    def oom_kills(self) -> int:
        """How many processes the kernel killed in this group for memory."""
        text = self._read("memory", "memory.events" if self.hierarchy.version == 2 else "memory.oom_control")
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def memory_peak(self) -> int | None:
        name = "memory.peak" if self.hierarchy.version == 2 else "memory.max_usage_in_bytes"
        text = self._read("memory", name).strip()
        return int(text) if text.isdigit() else None

    def cpu_seconds(self) -> float | None:
        """CPU time of every process the group ever held (user + system)."""
        if self.hierarchy.version == 2:
            for line in self._read("cpu", "cpu.stat").splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec" and value.strip().isdigit():
                    return int(value) / 1e6
            return None
        text = self._read("cpuacct", "cpuacct.usage").strip()
        return int(text) / 1e9 if text.isdigit() else None

    def pids(self) -> list[int]:
        found: set[int] = set()
        for folder in set(self.paths.values()):
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (folder / "cgroup.procs").read_text().split() if p.isdigit())
        return sorted(found)

    def kill(self, *, timeout: float = 5.0) -> bool:
        """SIGKILL everything in the group; True once it is empty."""
        if self.hierarchy.version == 2:
            kill_file = self.paths["unified"] / "cgroup.kill"
            if kill_file.exists():
                with contextlib.suppress(OSError):
                    kill_file.write_text("1")
        freezer = self.paths.get("freezer")
        deadline = time.monotonic() + timeout
        while True:
            if freezer is not None:
                # Frozen, nothing in the group can fork between our reading the pids and the kill.
                with contextlib.suppress(OSError):
                    (freezer / "freezer.state").write_text("FROZEN")
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if freezer is not None:
                with contextlib.suppress(OSError):
                    (freezer / "freezer.state").write_text("THAWED")  # a frozen process cannot die
            if not pids:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    def remove(self, *, timeout: float = 10.0) -> bool:
        """Kill what is left and delete the group's folders (empty groups only can be removed).
        False (and the folders left for sweep_orphans) if the group did not empty within `timeout`."""
        deadline = time.monotonic() + timeout
        emptied = self.kill(timeout=timeout)
        for folder in sorted(set(self.paths.values())):
            while True:
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.02)  # the last process is still being reaped
        return emptied


# --- Finding the hierarchy ---------------------------------------------------------------------------

V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "freezer")
NEEDED = ("memory", "pids", "cpu")


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, filesystem type, super options) of every cgroup mount this process sees."""
    out: list[tuple[str, str, set[str]]] = []
    try:
        lines = Path(MOUNTINFO).read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3 or rest[0] not in ("cgroup", "cgroup2"):
            continue
        out.append((fields[4], rest[0], set(rest[2].split(","))))
    return out


def detect(*, mode: str, parent: str) -> Hierarchy | None:
    """The hierarchy to use, or None (with no limits) when `mode` is "off".

    `mode`: "auto" (v2 where its controllers are usable, else v1), "v1", "v2" or "off". `parent`: the
    folder name, inside each hierarchy, that holds the boxes' groups (created if missing).
    Never raises: a Hierarchy with `problem` set says what is missing.
    """
    if mode == "off":
        return None
    if os.geteuid() != 0 and mode == "auto":
        # Without root, only a delegated v2 subtree could work; it must be named explicitly.
        return Hierarchy(0, {}, "the worker does not run as root")
    mounts = _mounts()
    problems = []
    if mode in ("auto", "v2"):
        found = _detect_v2(mounts, parent)
        if found is not None and not found.problem:
            return found
        if found is not None:
            problems.append(found.problem)
        if mode == "v2":
            return found or Hierarchy(2, {}, "no cgroup2 file system is mounted")
    found = _detect_v1(mounts, parent)
    if not found.problem or mode == "v1" or not problems:
        return found
    return Hierarchy(found.version, found.parents, "; ".join([*problems, found.problem]))


def _detect_v2(mounts, parent: str) -> Hierarchy | None:
    for point, fstype, _options in mounts:
        if fstype != "cgroup2":
            continue
        root = Path(point)
        try:
            available = set((root / "cgroup.controllers").read_text().split())
        except OSError:
            continue
        missing = [c for c in NEEDED if c not in available]
        if missing:
            continue  # a hybrid machine's v2 mount without controllers: v1 holds them
        folder = root / parent.strip("/")
        try:
            folder.mkdir(exist_ok=True)
            _enable(root, folder)
        except OSError as error:
            return Hierarchy(2, {}, f"cgroup v2 at {point} cannot delegate to {folder}: {error.strerror}")
        return Hierarchy(2, {"unified": folder})
    return None


def _enable(root: Path, folder: Path) -> None:
    """Turn the controllers on for `folder`'s children (and on the way down to it)."""
    chain = [folder, *[p for p in folder.parents if p.is_relative_to(root) and p != root]]
    wanted = " ".join(f"+{c}" for c in NEEDED)
    for level in [root, *reversed(chain[1:]), folder]:
        current = set((level / "cgroup.subtree_control").read_text().split())
        if not set(NEEDED) <= current:
            (level / "cgroup.subtree_control").write_text(wanted)


def _detect_v1(mounts, parent: str) -> Hierarchy:
    parents: dict[str, Path] = {}
    for point, fstype, options in mounts:
        if fstype != "cgroup":
            continue
        for controller in V1_CONTROLLERS:
            if controller in options and controller not in parents:
                parents[controller] = Path(point) / parent.strip("/")
    missing = [c for c in NEEDED if c not in parents]
    usable: dict[str, Path] = {}
    errors = []
    for controller, folder in parents.items():
        try:
            folder.mkdir(exist_ok=True)
            if controller == "memory":
                with contextlib.suppress(OSError):
                    (folder / "memory.use_hierarchy").write_text("1")
            usable[controller] = folder
        except OSError as error:
            errors.append(f"{controller}: {error.strerror}")
    missing += [c for c in NEEDED if c in parents and c not in usable]
    problem = ""
    if missing:
        problem = "cgroup v1 lacks " + ", ".join(sorted(set(missing)))
        if errors:
            problem += f" ({'; '.join(errors)})"
    return Hierarchy(1, usable, problem)


# --- Making one -----------------------------------------------------------------------------------

_serial = 0


def create(
    hierarchy: Hierarchy, *, memory_bytes: int | None, pids: int | None, cpu_weight: int | None
) -> Cgroup:
    """A new group with these limits. Raises OSError when the kernel refuses."""
    global _serial
    _serial += 1
    name = f"{PREFIX}{os.getpid()}-{_serial}-{os.urandom(3).hex()}"
    group = Cgroup(hierarchy, name)
    try:
        for controller, parent in hierarchy.parents.items():
            folder = parent / name
            if folder not in group.paths.values():
                folder.mkdir()
            group.paths[controller] = folder
        if hierarchy.version == 2:
            folder = group.paths["unified"]
            if memory_bytes:
                (folder / "memory.max").write_text(str(memory_bytes))
                with contextlib.suppress(OSError):
                    (folder / "memory.swap.max").write_text("0")
                with contextlib.suppress(OSError):
                    (folder / "memory.oom.group").write_text("1")  # one OOM kill takes the whole tree
            if pids:
                (folder / "pids.max").write_text(str(pids))
            if cpu_weight:
                (folder / "cpu.weight").write_text(str(cpu_weight))
        else:
            if memory_bytes and "memory" in group.paths:
                memory = group.paths["memory"]
                (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
                with contextlib.suppress(OSError):
                    (memory / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
            if pids and "pids" in group.paths:
                (group.paths["pids"] / "pids.max").write_text(str(pids))
            if cpu_weight and "cpu" in group.paths:
                # v1 shares: 1024 is a process's default weight; v2's 100 maps to it.
                (group.paths["cpu"] / "cpu.shares").write_text(str(max(2, cpu_weight * 1024 // 100)))
    except OSError:
        group.remove()
        raise
    return group


def sweep_orphans(hierarchy: Hierarchy) -> int:
    """Remove groups left by workers that are gone (killed before they could remove their own)."""
    removed = 0
    seen: set[str] = set()
    for parent in hierarchy.parents.values():
        with contextlib.suppress(OSError):
            for folder in parent.iterdir():
                name = folder.name
                if not name.startswith(PREFIX) or name in seen:
                    continue
                pid = name[len(PREFIX) :].split("-", 1)[0]
                if pid.isdigit() and (int(pid) == os.getpid() or Path(f"/proc/{pid}").exists()):
                    continue
                seen.add(name)
                group = Cgroup(hierarchy, name, {c: p / name for c, p in hierarchy.parents.items()})
                group.paths = {c: p for c, p in group.paths.items() if p.is_dir()}
                group.remove()
                removed += 1
    return removed
