"""Starting a sandboxed child: its box (uid, control group, folders), its command line, its watchdog.

Every sandbox (a run, a code check, a sandboxed prediction, a trusted evaluation) is a `Box`:
- a uid leased from a pool (sandbox.uids), so that limits the kernel counts per uid are per sandbox;
- a control group (sandbox.cgroups): memory for the whole process tree, a pids limit, a CPU weight;
- the same layout inside for every purpose: the run folder at `/box` (the only writable place, the
  working directory and HOME), the dataset at `/box-data/dataset.pt` (read-only), the engine and the
  Python installation read-only at their own paths, a private /tmp, /proc and /dev. A code check and
  the run it vouches for see the same paths and the same environment.

The worker runs threads (the `default` worker four), so nothing runs between fork and exec in Python
(no `preexec_fn`): the child is a chain of small programs, each exec'ing the next.

    bash -c 'join the control group; move the pipes to fds 3-5'   (root, the box's group from here on)
      prlimit --core --cpu --nofile --fsize --nproc [--as]          (rlimits, inherited by all below)
        bwrap --unshare-... --seccomp 5 --info-fd 4 ...             (namespaces, mounts, seccomp)
          setpriv --reuid <leased uid> --no-new-privs ...           (the uid, no capabilities)
            python -s harness.py ...                                (pid 1 of its pid namespace)

The harness imports torch and then waits for one line on stdin before it reads its config: a box can
be started ahead of time (sandbox.checks) and used later, exactly as a box started on demand is.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import platform
import shutil
import site
import struct
import subprocess
import sys
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from sandbox import cgroups, uids

logger = logging.getLogger(__name__)

ENGINE_DIR = Path(__file__).resolve().parent / "engine"
HARNESS = ENGINE_DIR / "harness.py"
BOX_DIR = "/box"  # the run folder, inside every box
BOX_DATA = "/box-data"  # the dataset folder, inside every box
DATASET_NAME = "dataset.pt"
EVENTS_FD, INFO_FD, SECCOMP_FD = 3, 4, 5
EXIT_CGROUP_FAILED = 125  # the first step could not join the box's control group

# Read-only files of /etc the child needs: the dynamic linker's cache (Debian keeps multiarch
# libraries outside the default search path), the time zone. passwd and group are the box's own.
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime")

# Seccomp (x86_64 only): system calls a training script never needs and that widen the kernel's
# attack surface. Above all new namespaces: an unprivileged uid may otherwise create a user
# namespace and hold every capability inside it.
SECCOMP_DENIED = {
    "unshare": 272,
    "setns": 308,
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "bpf": 321,
    "userfaultfd": 323,
    "perf_event_open": 298,
    "kexec_load": 246,
    "init_module": 175,
    "finit_module": 313,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
}
SYSCALL_CLONE = 56
SYSCALL_CLONE3 = 435  # its flags sit in memory a filter cannot read: ENOSYS makes libc use clone
CLONE_NAMESPACES = 0x7E020000  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET


@dataclass(frozen=True)
class Limits:
    """What one box may use. Memory and processes are the control group's (whole tree) where the host
    has one, else per-process rlimits; CPU seconds count the whole group where it can be measured."""

    cpu_seconds: int
    memory_bytes: int
    open_files: int
    file_bytes: int
    disk_bytes: int
    tmp_bytes: int
    processes: int
    output_bytes: int
    line_chars: int
    grace_seconds: float
    threads: int
    cpu_weight: int

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            cpu_seconds=settings.BUILDX_SANDBOX_CPU_SECONDS,
            memory_bytes=settings.BUILDX_SANDBOX_MEMORY_BYTES,
            open_files=settings.BUILDX_SANDBOX_OPEN_FILES,
            file_bytes=settings.BUILDX_SANDBOX_FILE_BYTES,
            disk_bytes=settings.BUILDX_SANDBOX_DISK_BYTES,
            tmp_bytes=settings.BUILDX_SANDBOX_TMP_BYTES,
            processes=settings.BUILDX_SANDBOX_PROCESSES,
            output_bytes=settings.BUILDX_SANDBOX_OUTPUT_BYTES,
            line_chars=settings.BUILDX_SANDBOX_LINE_CHARS,
            grace_seconds=settings.BUILDX_SANDBOX_GRACE_SECONDS,
            threads=settings.BUILDX_SANDBOX_THREADS,
            cpu_weight=settings.BUILDX_SANDBOX_CPU_WEIGHT,
        )


# --- What this host offers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """The isolation this worker can give, probed once per set of settings."""

    mode: str  # "bwrap" | "none"
    as_root: bool
    uid_base: int | None  # the pool, when the worker is root (else the child keeps the worker's uid)
    uid_count: int
    lock_dir: Path
    work_dir: Path
    hierarchy: cgroups.Hierarchy | None  # None: control groups switched off
    problems: tuple[str, ...] = ()  # what is missing, in sentences for the operator

    @property
    def cgroups_usable(self) -> bool:
        return self.hierarchy is not None and bool(self.hierarchy.parents) and not self.hierarchy.problem

    def summary(self) -> dict:
        """For /readyz: what a sandbox started now gets, and what it lacks."""
        return {
            "mode": self.mode,
            "uid_pool": [self.uid_base, self.uid_count] if self.uid_base is not None else None,
            "cgroups": (
                f"v{self.hierarchy.version}" if self.cgroups_usable and self.hierarchy is not None else None
            ),
            "problems": list(self.problems),
        }


def _settings_key() -> tuple:
    return (
        settings.BUILDX_SANDBOX,
        settings.BUILDX_SANDBOX_UID_BASE,
        settings.BUILDX_SANDBOX_UID_COUNT,
        str(settings.BUILDX_SANDBOX_LOCK_DIR),
        str(settings.BUILDX_SANDBOX_WORK_DIR),
        settings.BUILDX_CGROUPS,
        settings.BUILDX_CGROUP_PARENT,
    )


def host() -> Host:
    return _probe(_settings_key())


@functools.lru_cache(maxsize=4)
def _probe(key: tuple) -> Host:
    mode_setting, uid_base, uid_count, lock_dir, work_dir, cgroup_mode, cgroup_parent = key
    problems: list[str] = []
    mode = mode_setting if mode_setting in {"bwrap", "none"} else "none"
    if mode == "bwrap" and not shutil.which("bwrap"):
        mode = "none"
        problems.append("bubblewrap is not installed: the child is not isolated from the host")
    as_root = os.geteuid() == 0
    if not as_root:
        problems.append("the worker is not root: every sandbox shares the worker's uid")
    hierarchy = cgroups.detect(mode=cgroup_mode, parent=cgroup_parent)
    if hierarchy is None:
        problems.append("control groups are switched off (BUILDX_CGROUPS=off): memory is limited per process")
    elif hierarchy.problem:
        problems.append(f"no control groups ({hierarchy.problem}): memory is limited per process")
    else:
        cgroups.sweep_orphans(hierarchy)
    sweep_folders(Path(work_dir))
    return Host(
        mode=mode,
        as_root=as_root,
        uid_base=uid_base if as_root else None,
        uid_count=uid_count,
        lock_dir=Path(lock_dir),
        work_dir=Path(work_dir),
        hierarchy=hierarchy,
        problems=tuple(problems),
    )


# --- The box -------------------------------------------------------------------------------------------


@dataclass
class Box:
    """One sandbox's resources. `open()` leases and creates them; `close()` gives all of them back
    (killing whatever still runs in the group first). Not thread-safe: one supervisor owns it."""

    host: Host
    limits: Limits
    run_dir: Path  # bound at /box
    gpu: bool = False
    folder: Path = field(default=Path())  # the box's own files outside run_dir (data, etc)
    lease: uids.Lease | None = None
    group: cgroups.Cgroup | None = None
    process: subprocess.Popen | None = None
    pipes: dict[str, int] = field(default_factory=dict)  # name -> our (read or write) end
    watchdog: Watchdog | None = None
    isolation: list[str] = field(default_factory=list)
    cpu_at_start: float = 0.0
    closed: bool = False
    run_tmpfs: bool = False  # run_dir is a tmpfs of limits.disk_bytes: the kernel holds the disk limit

    @classmethod
    def open(cls, *, limits: Limits, run_dir: Path | None = None, gpu: bool = False) -> Box:
        """A new box. `run_dir` None: the box's own run folder (runs, checks, evaluations: the same
        layout on the host too, so that nothing behind the mounts tells one from another); as root,
        a tmpfs of `limits.disk_bytes`, so that a burst of writes stops at the limit, not a second
        later when the supervisor looks (its pages count in the box's memory, as the writer's)."""
        host_ = host()
        host_.work_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"box-{os.getpid()}-", dir=host_.work_dir))
        folder.chmod(0o755)  # the child's uid passes through it to its folders, nothing more
        box = cls(host=host_, limits=limits, run_dir=Path(run_dir or folder / "run").resolve(), gpu=gpu)
        box.folder = folder
        try:
            (folder / "data").mkdir()
            (folder / "data").chmod(0o755)
            box.run_dir.mkdir(parents=True, exist_ok=True)
            if run_dir is None and host_.as_root and host_.mode == "bwrap":
                box.run_tmpfs = mount_tmpfs(box.run_dir, size=limits.disk_bytes)
            if host_.uid_base is not None and (
                host_.mode == "bwrap" or reachable_by_others(Path(sys.executable))
            ):
                box.lease = uids.acquire(base=host_.uid_base, count=host_.uid_count, lock_dir=host_.lock_dir)
            if host_.cgroups_usable and host_.hierarchy is not None:
                box.group = cgroups.create(
                    host_.hierarchy,
                    memory_bytes=None if gpu else limits.memory_bytes,
                    pids=limits.processes,
                    cpu_weight=limits.cpu_weight,
                )
            box._write_identity()
        except BaseException:
            box.close()
            raise
        return box

    def __enter__(self) -> Box:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def uid(self) -> int | None:
        return self.lease.uid if self.lease else None

    @property
    def data_file(self) -> Path:
        return self.folder / "data" / DATASET_NAME

    def inside(self, path: Path) -> str:
        """`path` (in run_dir or the data folder) as the child sees it."""
        if self.host.mode != "bwrap":
            return str(path)
        path = Path(path)
        if path.is_relative_to(self.run_dir):
            return str(Path(BOX_DIR) / path.relative_to(self.run_dir))
        return str(Path(BOX_DATA) / path.relative_to(self.folder / "data"))

    def put_dataset(self, source: Path) -> None:
        """The dataset the child reads at /box-data/dataset.pt: a hard link where the file system
        allows one (instant, and read-only to the child), else a copy."""
        with contextlib.suppress(FileNotFoundError):
            self.data_file.unlink()
        try:
            os.link(source, self.data_file)
        except OSError:
            shutil.copyfile(source, self.data_file)
        self.data_file.chmod(0o644)

    def _write_identity(self) -> None:
        # Who the uid is, for code that asks (getpass, torch's cache folders): the box's own passwd.
        uid = self.uid if self.uid is not None else os.geteuid()
        etc = self.folder / "etc"
        etc.mkdir()
        (etc / "passwd").write_text(
            f"root:x:0:0:root:/root:/bin/false\nsandbox:x:{uid}:{uid}::{BOX_DIR}:/bin/false\n"
        )
        (etc / "group").write_text(f"root:x:0:\nsandbox:x:{uid}:\n")
        for name in ("passwd", "group"):
            (etc / name).chmod(0o644)

    def give_run_dir(self, *, keep: Collection[str] = frozenset()) -> None:
        """The child's uid owns its run folder and what an earlier attempt left there (for resume),
        except the top-level files named in `keep` (the worker's inputs)."""
        if self.uid is None:
            return
        paths = [str(self.run_dir)]
        for root, dirs, files in os.walk(self.run_dir, followlinks=False):
            names = [n for n in [*dirs, *files] if not (root == str(self.run_dir) and n in keep)]
            paths += [os.path.join(root, name) for name in names]
        for path in paths:
            os.chown(path, self.uid, self.uid, follow_symlinks=False)

    def env(self) -> dict[str, str]:
        """Everything the child's environment holds: no secrets, no database or broker URL."""
        home = BOX_DIR if self.host.mode == "bwrap" else str(self.run_dir)
        env = {
            "PATH": f"{Path(python_executable()).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "USER": "sandbox",
            "LOGNAME": "sandbox",
            "TMPDIR": "/tmp",
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(ENGINE_DIR),
            "PYTHONUNBUFFERED": "1",  # print() lines reach the log as they happen
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONIOENCODING": "utf-8",
            "BUILDX_EVENTS_FD": str(EVENTS_FD),
            "OMP_NUM_THREADS": str(self.limits.threads),
            "MKL_NUM_THREADS": str(self.limits.threads),
        }
        if self.gpu:
            for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES"):
                if name in os.environ:
                    env[name] = os.environ[name]
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    def spawn(self, command: list[str]) -> None:
        """Start the child (it waits for `go()` if it is the harness). Raises OSError if it cannot."""
        events_r, events_w = _pipe_high()
        info_r, info_w = _pipe_high()
        go_r, go_w = os.pipe()
        seccomp_r = -1
        program = seccomp_program() if self.host.mode == "bwrap" else None
        if program is not None:
            seccomp_r, seccomp_w = _pipe_high()
            os.write(seccomp_w, program)  # a pipe's buffer holds the whole filter
            os.close(seccomp_w)
        theirs = {EVENTS_FD: events_w, INFO_FD: info_w} | ({SECCOMP_FD: seccomp_r} if seccomp_r >= 0 else {})
        argv, self.isolation = self._argv(command, seccomp=seccomp_r >= 0)
        # The first step, as root: join the box's group, then put our pipes at fixed numbers (the same
        # in every box, so nothing about a box differs by where it was started).
        moves = (
            " ".join(f"{n}>&{fd}" for n, fd in theirs.items())
            + " "
            + " ".join(f"{fd}>&-" for fd in theirs.values())
        )
        enter = f'while [ "$1" != -- ]; do echo $$ > "$1" || exit {EXIT_CGROUP_FAILED}; shift; done; shift; exec "$@" {moves}'
        procs = self.group.procs_files if self.group is not None else []
        try:
            self.process = subprocess.Popen(
                ["/bin/bash", "-c", enter, "bash", *procs, "--", *argv],
                cwd=self.run_dir,
                env=self.env(),
                stdin=go_r,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=tuple(theirs.values()),
                process_group=0,
            )
        finally:
            for fd in (events_w, info_w, go_r, seccomp_r):
                if fd >= 0:
                    os.close(fd)
        self.pipes = {"events": events_r, "info": info_r, "go": go_w}
        if self.host.mode != "bwrap":
            os.close(info_r)
            del self.pipes["info"]
        self.watchdog = Watchdog.start(group_leader=self.process.pid, cgroup=self.group)

    def go(self) -> None:
        """Let the harness read its config and start (a no-op for other commands)."""
        # CPU time counts from here: a box started ahead of time has already spent some importing torch.
        self.cpu_at_start = (self.group.cpu_seconds() or 0.0) if self.group else 0.0
        fd = self.pipes.pop("go", -1)
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.write(fd, b"go\n")
            os.close(fd)

    def _argv(self, command: list[str], *, seccomp: bool) -> tuple[list[str], list[str]]:
        limits = self.limits
        memory_by_group = self.group is not None and not self.gpu
        rlimits = [
            "prlimit",
            "--core=0",
            # Soft and hard alike: SIGKILL at the limit (pid 1 of a namespace ignores SIGXCPU).
            f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds}",
            f"--nofile={limits.open_files}:{limits.open_files}",
            f"--fsize={limits.file_bytes}:{limits.file_bytes}",
        ]
        isolation: list[str] = []
        if self.uid is not None:
            rlimits.append(
                f"--nproc={limits.processes}:{limits.processes}"
            )  # counted for the box's uid alone
        if not self.gpu and not memory_by_group:
            # CUDA maps far more address space than it uses, so RLIMIT_AS breaks GPU runs.
            rlimits.append(f"--as={limits.memory_bytes}:{limits.memory_bytes}")
        rlimits.append("--")
        become = []
        if self.uid is not None:
            become = [
                shutil.which("setpriv") or "setpriv",
                "--reuid", str(self.uid), "--regid", str(self.uid), "--clear-groups",
                "--inh-caps", "-all", "--bounding-set", "-all", "--no-new-privs",
                # Changing the uid clears the parent-death signal bwrap set (--die-with-parent): keep it.
                "--pdeathsig", "keep" if self.host.mode == "bwrap" else "SIGKILL",
                "--",
            ]  # fmt: skip
        if self.host.mode == "bwrap":
            sandboxed, isolation = self._bwrap(seccomp=seccomp, as_root=self.uid is not None)
            argv = [*rlimits, *sandboxed, *become, *command]
        else:
            argv = [*rlimits, *become, *command]
            isolation = ["scrubbed environment", "own process group"]
        if self.uid is not None:
            isolation.append(f"uid {self.uid}")
        isolation.append("rlimits")
        if self.group is not None and self.host.hierarchy is not None:
            isolation.append(f"cgroup v{self.host.hierarchy.version}")
            isolation.append("memory limit (whole sandbox)" if memory_by_group else "no memory limit (GPU)")
            isolation.append("process limit (whole sandbox)")
        else:
            if not self.gpu:
                isolation.append("memory limit (per process)")
            if self.uid is not None:
                isolation.append("process limit (per uid)")
            isolation.append("no cgroup")
        return argv, isolation

    def _bwrap(self, *, seccomp: bool, as_root: bool) -> tuple[list[str], list[str]]:
        argv = [
            shutil.which("bwrap") or "bwrap",
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
            # Python is pid 1 of the namespace: SIGUSR1 reaches it directly, and when it exits the
            # kernel kills everything it left behind.
            "--as-pid-1",
            "--hostname",
            "sandbox",
        ]
        isolation = ["bubblewrap", "no network", "read-only root", "private /proc", "private /tmp"]
        if as_root:
            # No user namespace: the child gets a real unprivileged uid (so per-uid limits apply to it)
            # through setpriv, which needs these three capabilities for one exec.
            argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                     "--cap-add", "CAP_SETPCAP"]  # fmt: skip
        else:
            argv += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
            isolation.append("user namespace")
        if seccomp:
            argv += ["--seccomp", str(SECCOMP_FD)]
            isolation.append("seccomp")
        argv += ["--clearenv"]
        for name, value in self.env().items():
            argv += ["--setenv", name, value]

        # Binds at the host's own paths for the installation, so that its absolute paths work; the
        # box's own folders at the same inside paths in every box. Parents that do not exist in the
        # sandbox yet are created searchable (bwrap would copy /root's 0700).
        host_backed: list[Path] = []
        created: set[Path] = {Path("/"), Path("/tmp"), Path("/proc"), Path("/dev"), Path("/etc")}

        def bind(option: str, source: Path, target: Path | None = None) -> list[str]:
            target = target or source
            out: list[str] = []
            for parent in reversed(target.parents):
                if parent in created or any(parent.is_relative_to(h) for h in host_backed):
                    continue
                created.add(parent)
                out += ["--perms", "0755", "--dir", str(parent)]
            host_backed.append(target)
            return out + [option, str(source), str(target)]

        argv += ["--proc", "/proc", "--dev", "/dev"]
        argv += ["--size", str(self.limits.tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
        argv += bind("--ro-bind", Path("/usr"))
        for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
            if os.path.islink(name):
                argv += ["--symlink", os.readlink(name), name]
            elif os.path.isdir(name):
                argv += bind("--ro-bind", Path(name))
        argv += ["--perms", "0755", "--dir", "/etc"]
        for name in ETC_FILES:
            if os.path.exists(name):
                argv += bind("--ro-bind", Path(name))
        argv += bind("--ro-bind", self.folder / "etc" / "passwd", Path("/etc/passwd"))
        argv += bind("--ro-bind", self.folder / "etc" / "group", Path("/etc/group"))
        if self.gpu:
            for device in sorted(Path("/dev").glob("nvidia*")):
                argv += ["--dev-bind", str(device), str(device)]
            isolation.append("GPU devices")
        for path in [*python_paths(), ENGINE_DIR]:
            argv += bind("--ro-bind", path)
        argv += bind("--ro-bind", self.folder / "data", Path(BOX_DATA))
        argv += bind("--bind", self.run_dir, Path(BOX_DIR))
        argv += ["--chdir", BOX_DIR, "--info-fd", str(INFO_FD), "--"]
        return argv, isolation

    def kill(self) -> None:
        """Kill the child and everything it started (the whole group; else its process group)."""
        if self.group is not None:
            self.group.kill()
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, 9)

    def close(self) -> None:
        """Give everything back: the processes, the group, the uid, the box's folder, our pipe ends."""
        if self.closed:
            return
        self.closed = True
        if "go" in self.pipes and self.process is not None:
            # Started ahead of time and never used: end of input makes the harness leave by itself.
            os.close(self.pipes.pop("go"))
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=2)
        self.kill()
        if self.process is not None:
            if self.process.returncode is None:
                with contextlib.suppress(ChildProcessError):
                    self.process.wait()
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()
        for fd in self.pipes.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pipes = {}
        if self.group is not None and not self.group.remove():
            logger.warning(
                "Box %s: its control group did not empty; left for the next sweep", self.folder.name
            )
        if self.run_tmpfs:
            unmount(self.run_dir)
        if self.watchdog is not None:
            self.watchdog.release()
        if self.lease is not None:
            self.lease.release()
        if self.folder != Path():
            shutil.rmtree(self.folder, ignore_errors=True)


def mount_tmpfs(path: Path, *, size: int) -> bool:
    """A size-limited tmpfs at `path` (no devices, no setuid, nothing executable); False if refused."""
    options = f"size={size},mode=0755,nosuid,nodev,noexec"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "buildx-box", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return done.returncode == 0


def unmount(path: Path) -> None:
    # Lazily: a reader the worker still holds (a checkpoint being streamed) keeps its file until closed.
    subprocess.run(
        ["umount", "-l", str(path)], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )


def sweep_folders(work_dir: Path) -> int:
    """Delete the box folders of worker processes that were killed before they could."""
    removed = 0
    with contextlib.suppress(OSError):
        for folder in work_dir.glob("box-*-*"):
            pid = folder.name.split("-")[1]
            if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
                if os.path.ismount(folder / "run"):
                    unmount(folder / "run")
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
    return removed


def _pipe_high() -> tuple[int, int]:
    """A pipe whose ends sit at 10 or above, clear of the numbers the child's are moved to."""
    r, w = os.pipe()
    high = []
    for fd in (r, w):
        high.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return high[0], high[1]


def python_executable() -> str:
    """This Python at a path the sandbox binds: the venv's bin folder resolved, the name kept (the
    name is how Python finds its venv). A worktree whose venv is a link to another folder's venv
    would otherwise hand the sandbox a path that does not exist inside it."""
    path = Path(sys.executable)
    return str(path.parent.resolve() / path.name)


def reachable_by_others(path: Path) -> bool:
    """Whether an unprivileged user can run this file (every directory above it searchable)."""
    path = path.resolve()
    for parent in path.parents:
        if not os.stat(parent).st_mode & 0o001:
            return False
    return bool(os.stat(path).st_mode & 0o005)


def python_paths() -> list[Path]:
    """The Python installation the child needs, read-only: the venv, its base and site-packages."""
    paths = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent.parent]
    with contextlib.suppress(AttributeError):
        paths += [Path(p) for p in site.getsitepackages()]
    result: list[Path] = []
    for path in paths:
        path = path.resolve()
        if path.exists() and path not in result and not any(path.is_relative_to(p) for p in result):
            result = [p for p in result if not p.is_relative_to(path)] + [path]
    return result


def seccomp_program() -> bytes | None:
    """A classic BPF seccomp filter (struct sock_filter[]) for bwrap --seccomp, or None off x86_64."""
    if not sys.platform.startswith("linux") or platform.machine() != "x86_64":
        return None
    ld_abs, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k)

    program = [
        op(ld_abs, 4),  # seccomp_data.arch
        op(jeq, 0xC000003E, jt=1),  # AUDIT_ARCH_X86_64; i386 calls through int 0x80 are refused
        op(ret, enosys),
        op(ld_abs, 0),  # seccomp_data.nr
        op(jge, 0x40000000, jf=1),  # the x32 ABI
        op(ret, enosys),
        op(jeq, SYSCALL_CLONE3, jf=1),
        op(ret, enosys),
        op(jeq, SYSCALL_CLONE, jf=4),
        op(ld_abs, 16),  # the low half of args[0], the flags
        op(jset, CLONE_NAMESPACES, jf=1),
        op(ret, eperm),
        op(ret, allow),
    ]
    for number in sorted(SECCOMP_DENIED.values()):
        program += [op(jeq, number, jf=1), op(ret, eperm)]
    program.append(op(ret, allow))
    return b"".join(program)


# --- The watchdog: the child dies with its worker ---------------------------------------------

# Parent-death signals (bwrap --die-with-parent, PR_SET_PDEATHSIG) do not reach the child on every
# kernel: on this project's VMs a worker killed with SIGKILL left its child running. So a tiny
# process outside the sandbox holds the read end of a pipe whose write end only the worker has;
# when the worker dies, the kernel closes it, and the watchdog kills what it was told to watch: every
# process of the box's control group, and the pids it was given (after checking each is still the
# same process, by its start time, so a reused pid is safe).
WATCHDOG_CODE = r"""
import os, signal, sys, time

def started(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None

data = b""
while chunk := os.read(0, 4096):
    data += chunk
if data.endswith(b"done\n"):
    sys.exit(0)
group = int(sys.argv[1])
procs = sys.argv[2:]
for _ in range(100):
    pids = set()
    for path in procs:
        try:
            pids.update(int(p) for p in open(path).read().split())
        except (OSError, ValueError):
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if not pids:
        break
    time.sleep(0.02)
for line in data.decode().splitlines():
    pid, start = line.split()
    if started(int(pid)) == start:
        try:
            if int(pid) == group:
                os.killpg(group, signal.SIGKILL)
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
"""


class Watchdog:
    def __init__(self, process: subprocess.Popen, group_leader: int) -> None:
        self.process = process
        self.watch(group_leader)

    @classmethod
    def start(cls, *, group_leader: int, cgroup: cgroups.Cgroup | None = None) -> Watchdog | None:
        if not os.path.exists("/proc/self/stat"):
            return None  # not Linux: the process group and the limits must do
        procs = cgroup.procs_files if cgroup is not None else []
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", WATCHDOG_CODE, str(group_leader), *procs],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={},
                start_new_session=True,  # a kill of the worker's group must not take it along
            )
        except OSError:
            return None
        return cls(process, group_leader)

    def watch(self, pid: int) -> None:
        start = start_time(pid)
        if start is not None and self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.write(f"{pid} {start}\n".encode())
                self.process.stdin.flush()

    def release(self) -> None:
        """The child is dead and reaped: the watchdog leaves without killing anything."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.write(b"done\n")
                self.process.stdin.close()
        self.process.wait()


def start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def info_child_pid(raw: bytes) -> int | None:
    """bwrap's --info-fd JSON: the pid (on this host) of the command it started."""
    with contextlib.suppress(ValueError):
        info = json.loads(raw)
        if isinstance(info, dict) and isinstance(info.get("child-pid"), int):
            return info["child-pid"]
    return None
