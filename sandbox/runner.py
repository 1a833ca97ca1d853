"""The sandboxed runner: start a training script in a child process and supervise it.

The child process is the security boundary for code nobody reviewed (DESIGN.md, "Running code nobody
reviewed"); the static check before it is only a filter. With bubblewrap the child gets new
namespaces for everything (the network too: only `lo`, so not even the local PostgreSQL or Redis is
reachable), an empty environment but for what it needs, a read-only view of /usr, the Python
installation and the engine, the run directory as its only writable place, a fresh /proc (the
worker's /proc/<pid>/environ does not exist there), a minimal /dev, no capabilities, and, when the
worker runs as root, the unprivileged uid of settings.BUILDX_SANDBOX_UID. Resource limits come on
top (CPU time, open files, file size, processes, no core dumps, memory on CPU runs) and the
supervisor watches the wall clock, the output and the run directory's size.

Interface and events: docs/contracts.md section 3.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import platform
import resource
import selectors
import shutil
import signal
import site
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.utils.translation import gettext as _

from sandbox.static_check import check_script, format_findings

ENGINE_DIR = Path(__file__).resolve().parent / "engine"
HARNESS = ENGINE_DIR / "harness.py"

EVENT_KINDS = {"status", "log", "progress", "epoch", "checkpoint", "result", "stopped", "error"}
MAX_EVENT_LINE_BYTES = 1 << 20  # a result with a 100-class confusion matrix is ~50 kB
MAX_EVENT_TOTAL_BYTES = 16 << 20  # events other than logs (a long run sends ~2 MB); a flood is dropped
STDERR_TAIL_LINES = 200  # kept (even past the output cap) to find the traceback
POLL_SECONDS = 0.1
SHOULD_STOP_EVERY_SECONDS = 0.25  # should_stop() may query the database
DISK_CHECK_EVERY_SECONDS = 1.0
DISK_MAX_ENTRIES = 20_000
STRAGGLER_SECONDS = 2.0  # after the child exits, how long its pipes may stay open (unsandboxed only)

# Read-only files of /etc the child needs: the dynamic linker's cache (Debian keeps multiarch
# libraries outside the default search path), user names for getpass, the time zone.
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/passwd", "/etc/group", "/etc/localtime")


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


@dataclass
class SandboxResult:
    status: str  # "succeeded" | "failed" | "cancelled" | "timeout" | "rejected"
    exit_code: int | None  # negative: killed by that signal
    cause: str  # short, for a beginner: "The script ran out of memory."
    traceback: str
    isolation: list[str] = field(default_factory=list)  # what isolated the child


class ForkedChild:
    """A child that a warm sandbox forked for us (sandbox.warm): the part of Popen the supervisor uses,
    and the two signals it sends, which go through the process that forked the child."""

    returncode: int | None = None  # negative: killed by that signal
    cpu_seconds: float = 0.0  # CPU time of the child and the processes it waited for
    lost: bool = False  # the warm sandbox died before it said how the child ended

    def poll(self) -> int | None:
        raise NotImplementedError

    def wait(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class _Limits:
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
    uid: int
    gid: int

    @classmethod
    def from_settings(cls) -> _Limits:
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
            uid=settings.BUILDX_SANDBOX_UID,
            gid=settings.BUILDX_SANDBOX_GID,
        )


def run_script(
    *,
    code: str,
    run_dir: Path,
    config: dict,
    on_event: Callable[[dict], None],
    should_stop: Callable[[], bool],
    wall_limit_s: float,
    gpu: bool = False,
    trusted_code: bool = False,
    entry: Sequence[str] | None = None,
    check_code: bool = True,
    warm: bool = False,
    threads: int | None = None,
) -> SandboxResult:
    """Run `code` through the harness in a sandboxed child and report its events to `on_event`.

    `entry` (for tests and benches) replaces the harness command line; it runs in `run_dir` with
    the same isolation. `check_code=False` skips the static check, which tests use to prove that
    the sandbox, not the check, contains a hostile script. `warm=True` (code checks on the CPU):
    when `run_dir` is in a folder from sandbox.warm.check_dir(), the child is forked by this
    process's warm sandbox instead of started; anywhere else, or without one, it is started as usual.
    `threads` replaces BUILDX_SANDBOX_THREADS for this child.
    """
    run_dir = Path(run_dir).resolve()
    limits = _Limits.from_settings()
    if threads:
        limits = dataclasses.replace(limits, threads=threads)
    if check_code:
        findings = check_script(code)
        if findings:
            message = format_findings(findings)
            on_event({"kind": "error", "cause": "rejected", "message": message, "traceback": ""})
            return SandboxResult("rejected", None, message, "", [])

    mode = settings.BUILDX_SANDBOX if settings.BUILDX_SANDBOX in {"bwrap", "none"} else "none"
    if mode == "bwrap" and not shutil.which("bwrap"):
        mode = "none"
    if mode == "none" and not trusted_code and not settings.BUILDX_ALLOW_UNSANDBOXED_LLM_CODE:
        message = str(
            _(
                "This server cannot sandbox code it did not write itself (bubblewrap is missing), so "
                "it does not run code written by the assistant. Train the compiled code instead."
            )
        )
        on_event({"kind": "error", "cause": "rejected", "message": message, "traceback": ""})
        return SandboxResult("rejected", None, message, "", [])

    _prepare_run_dir(run_dir=run_dir, code=code, config=config, limits=limits, mode=mode)
    command = (
        list(entry)
        if entry
        else [python_executable(), "-s", str(HARNESS), "--script", "script.py", "--config", "config.json"]
    )
    supervisor = _Supervisor(on_event=on_event, limits=limits)
    if warm and mode == "bwrap" and not gpu and not entry:
        from sandbox import warm as warm_sandbox

        result = warm_sandbox.run_forked(
            supervisor=supervisor,
            run_dir=run_dir,
            config=config,
            should_stop=should_stop,
            wall_limit_s=wall_limit_s,
        )
        if result is not None:
            return result
    return supervisor.run(
        mode=mode,
        command=command,
        run_dir=run_dir,
        config=config,
        should_stop=should_stop,
        wall_limit_s=wall_limit_s,
        gpu=gpu,
    )


# --- Preparing the child ------------------------------------------------------------------------


def python_executable() -> str:
    """This Python at a path the sandbox binds: the venv's bin folder resolved, the name kept (the
    name is how Python finds its venv). A worktree whose venv is a link to another folder's venv
    would otherwise hand the sandbox a path that does not exist inside it."""
    path = Path(sys.executable)
    return str(path.parent.resolve() / path.name)


def _runs_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _prepare_run_dir(*, run_dir: Path, code: str, config: dict, limits: _Limits, mode: str) -> None:
    if run_dir.is_dir():
        # A resumed run: links from an earlier child (if its worker died before the sweep) must not
        # make the writes and chowns below land outside the directory.
        _remove_links(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "script.py").write_text(code, encoding="utf-8")
    (run_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    for name in ("script.py", "config.json"):
        (run_dir / name).chmod(0o644)
    if _runs_as_root() and (mode == "bwrap" or _reachable_by_others(Path(sys.executable))):
        # The child's uid owns its directory (and checkpoints from an earlier attempt, for resume);
        # the inputs stay root's.
        paths = [str(run_dir)]
        for root, dirs, files in os.walk(run_dir / "checkpoints", followlinks=False):
            paths += [root] + [os.path.join(root, name) for name in [*dirs, *files]]
        for path in paths:
            os.chown(path, limits.uid, limits.gid, follow_symlinks=False)


def _reachable_by_others(path: Path) -> bool:
    """Whether an unprivileged user can run this file (every directory above it searchable)."""
    path = path.resolve()
    for parent in path.parents:
        if not os.stat(parent).st_mode & 0o001:
            return False
    return bool(os.stat(path).st_mode & 0o005)


def _child_env(*, run_dir: Path, events_fd: int, limits: _Limits, gpu: bool) -> dict[str, str]:
    """Everything the child's environment holds: no secrets, no database or broker URL."""
    bin_dir = str(Path(python_executable()).parent)
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(run_dir),
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ENGINE_DIR),
        "PYTHONUNBUFFERED": "1",  # print() lines reach the log as they happen
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "BUILDX_EVENTS_FD": str(events_fd),
        "OMP_NUM_THREADS": str(limits.threads),
        "MKL_NUM_THREADS": str(limits.threads),
    }
    if gpu:
        for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES"):
            if name in os.environ:
                env[name] = os.environ[name]
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _make_preexec(
    *, limits: _Limits, gpu: bool, drop_to: tuple[int, int] | None, nproc: bool, die_with_parent: bool
):
    """The function the forked child runs before exec: limits, then (unsandboxed, as root) the uid."""
    prctl = None
    if die_with_parent and sys.platform.startswith("linux"):
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: nothing to load after fork

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # Soft and hard alike: SIGKILL at the limit (pid 1 of a namespace ignores SIGXCPU).
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        if nproc:
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        if not gpu:
            # CUDA maps far more address space than it uses, so RLIMIT_AS breaks GPU runs.
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        if drop_to is not None:
            os.setgroups([])
            os.setgid(drop_to[1])
            os.setuid(drop_to[0])
        if prctl is not None:
            prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG, after setuid (which clears it)

    return preexec


def _python_paths() -> list[Path]:
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


def _seccomp_program() -> bytes | None:
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


def _bwrap_argv(
    *,
    run_dir: Path,
    env: dict[str, str],
    command: list[str],
    gpu: bool,
    limits: _Limits,
    info_fd: int,
    seccomp_fd: int | None,
    read_only: list[Path],
    as_root: bool,
    read_only_root: bool = False,
) -> tuple[list[str], list[str]]:
    """The bubblewrap command line, and the isolation it gives (for the run's log)."""
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
    setpriv = shutil.which("setpriv")
    if as_root and setpriv and setpriv.startswith("/usr/"):
        # No user namespace: the child gets a real unprivileged uid (so RLIMIT_NPROC applies to
        # it) through setpriv, which needs these three capabilities for one exec.
        argv += [
            "--cap-drop",
            "ALL",
            "--cap-add",
            "CAP_SETUID",
            "--cap-add",
            "CAP_SETGID",
            "--cap-add",
            "CAP_SETPCAP",
        ]
        prefix = [
            setpriv,
            "--reuid",
            str(limits.uid),
            "--regid",
            str(limits.gid),
            "--clear-groups",
            "--inh-caps",
            "-all",
            "--bounding-set",
            "-all",
            "--no-new-privs",
            # Changing the uid clears the parent-death signal bwrap set (--die-with-parent): keep it,
            # or a child outlives a worker killed outright.
            "--pdeathsig",
            "keep",
            "--",
        ]
        isolation.append(f"uid {limits.uid}")
    else:
        argv += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
        prefix = []
        isolation.append("user namespace")
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
        isolation.append("seccomp")
    argv += ["--clearenv"]
    for name, value in env.items():
        argv += ["--setenv", name, value]

    # Binds at the host's own paths, so that paths in config.json mean the same inside. Parents
    # that do not exist in the sandbox yet are created searchable (bwrap would copy /root's 0700).
    host_backed: list[Path] = []  # directories bound from the host: everything below them exists
    created: set[Path] = {Path("/"), Path("/tmp"), Path("/proc"), Path("/dev")}

    def bind(option: str, path: Path) -> list[str]:
        out: list[str] = []
        for parent in reversed(path.parents):
            if parent in created or any(parent.is_relative_to(h) for h in host_backed):
                continue
            created.add(parent)
            out += ["--perms", "0755", "--dir", str(parent)]
        host_backed.append(path)
        return out + [option, str(path), str(path)]

    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--size", str(limits.tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
    argv += bind("--ro-bind", Path("/usr"))
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(name):
            argv += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            argv += bind("--ro-bind", Path(name))
    for name in ETC_FILES:
        if os.path.exists(name):
            argv += bind("--ro-bind", Path(name))
    if gpu:
        for device in sorted(Path("/dev").glob("nvidia*")):
            argv += ["--dev-bind", str(device), str(device)]
        isolation.append("GPU devices")
    for path in read_only:
        argv += bind("--ro-bind", path)
    argv += bind("--bind", run_dir)
    if read_only_root:
        # With a user namespace, the tmpfs that bubblewrap builds / and /dev in belongs to the child's
        # uid. A sandbox that runs many checks (sandbox.warm) makes them read-only, so that no check
        # leaves anything there for the next.
        argv += ["--remount-ro", "/", "--remount-ro", "/dev"]
    argv += ["--chdir", str(run_dir), "--info-fd", str(info_fd), "--", *prefix, *command]
    return argv, isolation


# --- The watchdog: the child dies with its worker ---------------------------------------------

# Parent-death signals (bwrap --die-with-parent, PR_SET_PDEATHSIG) do not reach the child on every
# kernel: on this project's VMs a worker killed with SIGKILL left its child running. So a tiny
# process outside the sandbox holds the read end of a pipe whose write end only the worker has;
# when the worker dies, the kernel closes it, and the watchdog kills what it was told to watch
# (after checking each pid still is the same process, by its start time, so a reused pid is safe).
WATCHDOG_CODE = r"""
import os, signal, sys

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


class _Watchdog:
    def __init__(self, process: subprocess.Popen, group: int) -> None:
        self.process = process
        self.watch(group)

    @classmethod
    def start(cls, *, group: int) -> _Watchdog | None:
        if not os.path.exists("/proc/self/stat"):
            return None  # not Linux: the process group and the limits must do
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", WATCHDOG_CODE, str(group)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={},
                start_new_session=True,  # a kill of the worker's group must not take it along
            )
        except OSError:
            return None
        return cls(process, group)

    def watch(self, pid: int) -> None:
        start = _start_time(pid)
        if start is not None and self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.write(f"{pid} {start}\n".encode())
                self.process.stdin.flush()

    def release(self) -> None:
        """The child is dead and reaped: the watchdog leaves without killing anything."""
        with contextlib.suppress(OSError):
            self.process.stdin.write(b"done\n")
            self.process.stdin.close()
        self.process.wait()


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


# --- Supervising the child ----------------------------------------------------------------------


class _Supervisor:
    def __init__(self, *, on_event: Callable[[dict], None], limits: _Limits) -> None:
        self.on_event = on_event
        self.limits = limits
        self.isolation: list[str] = []
        self.output_bytes = 0
        self.output_cut = False
        self.event_bytes = 0
        self.events_cut = False
        self.bad_events = 0
        self.buffers: dict[str, bytearray] = {}
        self.skipping: dict[str, bool] = {}
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.child_error: dict | None = None
        self.child_pid: int | None = None  # the pid to signal (python), once known
        self.killed_for: str | None = None  # "disk" when the supervisor killed it for a limit
        self.cpu_seconds = 0.0  # CPU time the child and its descendants used
        self.watchdog: _Watchdog | None = None

    # The main loop ------------------------------------------------------------------------

    def run(
        self,
        *,
        mode: str,
        command: list[str],
        run_dir: Path,
        config: dict,
        should_stop: Callable[[], bool],
        wall_limit_s: float,
        gpu: bool,
    ) -> SandboxResult:
        events_r, events_w = os.pipe()
        info_r, info_w = os.pipe()
        seccomp_r = -1
        env = _child_env(run_dir=run_dir, events_fd=events_w, limits=self.limits, gpu=gpu)
        as_root = _runs_as_root()
        if mode == "bwrap":
            read_only = _python_paths()
            if ENGINE_DIR.is_dir():
                read_only.append(ENGINE_DIR)
            cache = config.get("dataset_cache")
            if cache and Path(cache).is_file():
                # The file alone: its folder holds other datasets and may not be searchable by the uid.
                read_only.append(Path(cache).resolve())
            program = _seccomp_program()
            if program is not None:
                # bwrap reads the filter from a file descriptor; a pipe's buffer holds it whole.
                seccomp_r, seccomp_w = os.pipe()
                os.write(seccomp_w, program)
                os.close(seccomp_w)
            argv, self.isolation = _bwrap_argv(
                run_dir=run_dir,
                env=env,
                command=command,
                gpu=gpu,
                limits=self.limits,
                info_fd=info_w,
                seccomp_fd=seccomp_r if program is not None else None,
                read_only=read_only,
                as_root=as_root,
            )
            pass_fds = (events_w, info_w) + ((seccomp_r,) if program is not None else ())
            drop_to = None
            nproc = as_root
        else:
            argv = command
            pass_fds = (events_w,)
            os.close(info_w)
            info_w = -1
            drop_to = None
            if as_root and _reachable_by_others(Path(sys.executable)):
                drop_to = (self.limits.uid, self.limits.gid)
            nproc = drop_to is not None
            self.isolation = ["scrubbed environment", "own process group"]
            if drop_to:
                self.isolation.append(f"uid {self.limits.uid}")
        self.isolation.append("rlimits")
        if not gpu:
            self.isolation.append("memory limit")
        if nproc:
            self.isolation.append("process limit")

        if mode != "bwrap":
            self._emit_platform(
                _(
                    "Bubblewrap is not available on this server: the script runs with a clean environment "
                    "and resource limits, but it can reach the network and read files the worker can read."
                ),
                isolation=self.isolation,
            )

        preexec = _make_preexec(
            limits=self.limits, gpu=gpu, drop_to=drop_to, nproc=nproc, die_with_parent=mode != "bwrap"
        )
        started = time.monotonic()
        cpu_before = _children_cpu_seconds()
        try:
            process = subprocess.Popen(
                argv,
                cwd=run_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=pass_fds,
                start_new_session=True,
                preexec_fn=preexec,  # noqa: PLW1509 - only setrlimit/setuid/prctl, no locks
            )
        except OSError as error:
            for fd in (events_r, events_w, info_r, info_w, seccomp_r):
                if fd >= 0:
                    os.close(fd)
            message = _("The training process could not start: %(error)s") % {"error": error}
            self.on_event({"kind": "error", "cause": "killed", "message": message, "traceback": ""})
            return SandboxResult("failed", None, message, "", self.isolation)
        os.close(events_w)
        for fd in (info_w, seccomp_r):
            if fd >= 0:
                os.close(fd)
        if mode != "bwrap":
            self.child_pid = process.pid
        self.watchdog = _Watchdog.start(group=process.pid)

        try:
            outcome = self._supervise(
                process=process,
                streams={
                    process.stdout.fileno(): "stdout",
                    process.stderr.fileno(): "stderr",
                    events_r: "events",
                }
                | ({info_r: "info"} if mode == "bwrap" else {}),
                run_dir=run_dir,
                should_stop=should_stop,
                wall_limit_s=wall_limit_s,
                started=started,
            )
        finally:
            self._kill(process)
            process.wait()
            if self.watchdog is not None:
                self.watchdog.release()
            process.stdout.close()
            process.stderr.close()
            os.close(events_r)
            if mode == "bwrap":
                os.close(info_r)
        self.cpu_seconds = _children_cpu_seconds() - cpu_before
        return self._finish(
            process=process,
            outcome=outcome,
            run_dir=run_dir,
            bwrap=mode == "bwrap",
            wall_limit_s=wall_limit_s,
        )

    def run_forked(
        self,
        *,
        fork: Callable[[list[int]], ForkedChild | None],
        isolation: list[str],
        run_dir: Path,
        should_stop: Callable[[], bool],
        wall_limit_s: float,
    ) -> SandboxResult | None:
        """As run(), for a child that a warm sandbox forks (sandbox.warm): `fork` gets the write ends
        of the child's stdout, stderr and events pipes. None when it could not fork one."""
        pipes = [os.pipe() for _ in range(3)]
        started = time.monotonic()
        try:
            child = fork([w for _r, w in pipes])
        finally:
            for _r, w in pipes:
                os.close(w)
        if child is None:
            for r, _w in pipes:
                os.close(r)
            return None
        self.isolation = list(isolation)
        readers = [r for r, _w in pipes]
        try:
            outcome = self._supervise(
                process=child,
                streams=dict(zip(readers, ("stdout", "stderr", "events"), strict=True)),
                run_dir=run_dir,
                should_stop=should_stop,
                wall_limit_s=wall_limit_s,
                started=started,
            )
        finally:
            self._kill(child)
            child.wait()
            for r in readers:
                os.close(r)
        self.cpu_seconds = child.cpu_seconds
        if child.lost:
            self.killed_for = "sandbox"
        return self._finish(
            process=child, outcome=outcome, run_dir=run_dir, bwrap=False, wall_limit_s=wall_limit_s
        )

    def _finish(
        self,
        *,
        process: subprocess.Popen | ForkedChild,
        outcome: str,
        run_dir: Path,
        bwrap: bool,
        wall_limit_s: float,
    ) -> SandboxResult:
        """After the child is gone: the disk limit, the links it left, the result."""
        if self.killed_for is None and not _within_disk_limit(run_dir, self.limits.disk_bytes):
            self.killed_for = "disk"  # it filled the folder between two checks and exited
        removed = _remove_links(run_dir)
        if removed:
            self._emit_platform(
                _("Removed %(count)d links the script made in its folder (they could point outside it).")
                % {"count": removed}
            )
        return self._result(process=process, outcome=outcome, bwrap=bwrap, wall_limit_s=wall_limit_s)

    def _supervise(
        self,
        *,
        process: subprocess.Popen | ForkedChild,
        streams: dict[int, str],
        run_dir: Path,
        should_stop: Callable[[], bool],
        wall_limit_s: float,
        started: float,
    ) -> str:
        """Pump the pipes until the child is gone; return "exited", "cancelled" or "timeout"."""
        selector = selectors.DefaultSelector()
        for fd, name in streams.items():
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ, name)
            self.buffers[name] = bytearray()
            self.skipping[name] = False
        outcome = "exited"
        kill_at: float | None = None
        exited_at: float | None = None
        next_stop_check = next_disk_check = started
        try:
            while selector.get_map():
                for key, _mask in selector.select(POLL_SECONDS):
                    try:
                        chunk = os.read(key.fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if chunk:
                        self._feed(key.data, chunk)
                    else:
                        self._flush(key.data)
                        selector.unregister(key.fd)
                now = time.monotonic()
                if exited_at is None and process.poll() is not None:
                    exited_at = now
                if exited_at is not None:
                    if now - exited_at > STRAGGLER_SECONDS:
                        break  # something it started still holds a pipe; _kill ends the group
                    continue
                if outcome == "exited" and now >= next_stop_check:
                    next_stop_check = now + SHOULD_STOP_EVERY_SECONDS
                    if should_stop():
                        outcome = "cancelled"
                        kill_at = now + self.limits.grace_seconds
                        self._signal_stop(process)
                if outcome != "timeout" and now - started > wall_limit_s:
                    outcome = "timeout"
                    # A checkpoint at the time limit lets the run resume; give it a short grace.
                    kill_at = min(kill_at or float("inf"), now + min(self.limits.grace_seconds, 2.0))
                    self._signal_stop(process)
                if now >= next_disk_check:
                    next_disk_check = now + DISK_CHECK_EVERY_SECONDS
                    if not _within_disk_limit(run_dir, self.limits.disk_bytes):
                        self.killed_for = "disk"
                        self._kill(process)
                if kill_at is not None and now >= kill_at:
                    self._kill(process)
                    kill_at = None
        finally:
            selector.close()
        return outcome

    def _signal_stop(self, process: subprocess.Popen | ForkedChild) -> None:
        # SIGUSR1 asks the runtime to stop at the next batch boundary and save a checkpoint.
        if isinstance(process, ForkedChild):
            process.stop()  # its warm sandbox sends the signal
            return
        if self.child_pid is None:
            self._kill(process)  # it has not even started: nothing to save
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.child_pid, signal.SIGUSR1)

    def _kill(self, process: subprocess.Popen | ForkedChild) -> None:
        if isinstance(process, ForkedChild):
            process.kill()  # its warm sandbox kills it and everything it started
            return
        # The session leader's group holds bwrap (or the unsandboxed child); with bwrap, its pid 1
        # dying takes the whole pid namespace with it.
        if self.child_pid is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.child_pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    # Pipes into events -------------------------------------------------------------------

    def _feed(self, stream: str, chunk: bytes) -> None:
        buffer = self.buffers[stream]
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = bytes(buffer[start:end])
            start = end + 1
            if self.skipping[stream]:
                self.skipping[stream] = False  # the end of a line that was already cut
                continue
            self._line(stream, line)
        del buffer[:start]  # once per chunk: a flood of short lines stays linear
        limit = MAX_EVENT_LINE_BYTES if stream == "events" else self.limits.line_chars * 4
        if len(buffer) > limit and stream != "info":
            # An endless line: keep its start, drop the rest up to the next newline.
            if not self.skipping[stream]:
                self._line(stream, bytes(buffer[:limit]), cut=True)
            self.skipping[stream] = True
            buffer.clear()

    def _flush(self, stream: str) -> None:
        buffer = self.buffers[stream]
        if buffer and not self.skipping[stream]:
            self._line(stream, bytes(buffer))
        buffer.clear()

    def _line(self, stream: str, raw: bytes, cut: bool = False) -> None:
        if stream == "info":
            self._info(raw)
        elif stream == "events":
            self._event(raw, cut=cut)
        else:
            text = raw.decode("utf-8", errors="replace").rstrip("\r")
            if stream == "stderr":
                self.stderr_tail.append(text)
            self._log(stream, text, size=len(raw) + 1, cut=cut)

    def _info(self, raw: bytes) -> None:
        # bwrap's --info-fd: a JSON object over several lines; child-pid is python's host pid.
        self.buffers.setdefault("info-json", bytearray()).extend(raw + b"\n")
        with contextlib.suppress(ValueError):
            info = json.loads(self.buffers["info-json"])
            if isinstance(info, dict) and isinstance(info.get("child-pid"), int):
                self.child_pid = info["child-pid"]
                if self.watchdog is not None:
                    self.watchdog.watch(self.child_pid)

    def _log(self, stream: str, text: str, *, size: int, cut: bool = False) -> None:
        self.output_bytes += size
        if self.output_bytes > self.limits.output_bytes:
            if not self.output_cut:
                self.output_cut = True
                self._emit_platform(
                    _("The script printed more than %(limit)d bytes; the rest of its output is not shown.")
                    % {"limit": self.limits.output_bytes}
                )
            return
        if cut or len(text) > self.limits.line_chars:
            text = text[: self.limits.line_chars] + " " + _("[line cut: too long]")
        self.on_event({"kind": "log", "stream": stream, "line": text})

    def _event(self, raw: bytes, *, cut: bool) -> None:
        try:
            event = None if cut else json.loads(raw)
        except ValueError:
            event = None
        if not (isinstance(event, dict) and event.get("kind") in EVENT_KINDS):
            if raw.strip():
                self.bad_events += 1
                if self.bad_events <= 3:
                    self._emit_platform(
                        _(
                            "The script wrote something that is not an event to the event channel; it was ignored."
                        )
                    )
            return
        if event["kind"] == "log":
            line = event.get("line")
            stream = event.get("stream")
            # Only the supervisor speaks as "platform".
            self._log(
                stream if stream in {"stdout", "stderr", "runtime"} else "runtime", str(line), size=len(raw)
            )
            return
        self.event_bytes += len(raw)
        if self.event_bytes > MAX_EVENT_TOTAL_BYTES:
            if not self.events_cut:
                self.events_cut = True
                self._emit_platform(_("The script sent too many events; the rest were dropped."))
            return
        if event["kind"] == "status":
            event["isolation"] = list(self.isolation)
        if event["kind"] == "error":
            self.child_error = event
        self.on_event(event)

    def _emit_platform(self, line: str, **extra) -> None:
        self.on_event({"kind": "log", "stream": "platform", "line": str(line), **extra})

    # The result --------------------------------------------------------------------------

    def _result(
        self, *, process: subprocess.Popen | ForkedChild, outcome: str, bwrap: bool, wall_limit_s: float
    ) -> SandboxResult:
        code = process.returncode
        if bwrap and code is not None and 128 < code < 128 + 65:
            code = -(code - 128)  # bwrap reports a child killed by signal N as 128 + N
        tb = self._traceback()
        if outcome == "timeout":
            cause = _("The run took longer than its time limit (%(seconds)d s) and was stopped.") % {
                "seconds": round(wall_limit_s)
            }
            self.on_event({"kind": "error", "cause": "timeout", "message": str(cause), "traceback": tb})
            return SandboxResult("timeout", code, str(cause), tb, self.isolation)
        if outcome == "cancelled":
            return SandboxResult("cancelled", code, str(_("Stopped on request.")), tb, self.isolation)
        if code == 0 and self.killed_for is None:
            return SandboxResult("succeeded", 0, "", "", self.isolation)

        kind, cause = self._cause(code, tb)
        if self.child_error is None or self.killed_for:
            self.on_event({"kind": "error", "cause": kind, "message": cause, "traceback": tb})
        return SandboxResult("failed", code, cause, tb, self.isolation)

    def _traceback(self) -> str:
        if self.child_error and isinstance(self.child_error.get("traceback"), str):
            return self.child_error["traceback"][-20_000:]
        lines = list(self.stderr_tail)
        starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
        if not starts:
            return ""
        return "\n".join(lines[starts[-1] :])[-20_000:]

    def _cause(self, code: int | None, tb: str) -> tuple[str, str]:
        """The error event's cause code and one sentence for a beginner."""
        if self.killed_for == "sandbox":
            return "killed", str(
                _(
                    "The sandbox that ran the script stopped while the script ran (the script may have "
                    "tried to stop it), so the script was stopped too. Trying again runs it in a new "
                    "sandbox."
                )
            )
        if self.killed_for == "disk":
            return "killed", str(
                _("The script wrote more than %(mb)d MB into its folder and was stopped.")
                % {"mb": self.limits.disk_bytes // 2**20}
            )
        last = _last_exception_line(tb)
        setup = [line for line in self.stderr_tail if line.startswith(("bwrap: ", "setpriv: "))]
        if setup and not last and self.child_error is None:
            # The sandbox itself failed (a container without namespaces, say): not the script's fault.
            return "killed", str(
                _("The sandbox could not start the script (%(error)s). The server's operator must fix this.")
                % {"error": setup[-1][:300]}
            )
        if self.child_error is not None:
            child_cause = str(self.child_error.get("cause") or "exception")
            message = str(self.child_error.get("message") or last or "")[:500]
            if child_cause == "out_of_memory":
                return child_cause, str(_("The script ran out of memory: %(message)s") % {"message": message})
            if child_cause == "contract":
                return child_cause, str(
                    _("The model does not match the design: %(message)s") % {"message": message}
                )
            return child_cause, str(_("The script stopped with an error: %(message)s") % {"message": message})
        if last:
            if _looks_like_oom(last):
                return "out_of_memory", str(
                    _(
                        "The script ran out of memory (%(error)s). Try a smaller batch size or a smaller model."
                    )
                    % {"error": last[:300]}
                )
            return "exception", str(_("The script stopped with an error: %(error)s") % {"error": last[:500]})
        if code is not None and code < 0:
            number = -code
            if number == signal.SIGXFSZ:
                return "killed", str(
                    _("The script wrote a file larger than %(mb)d MB and was stopped.")
                    % {"mb": self.limits.file_bytes // 2**20}
                )
            if number == signal.SIGKILL and self.cpu_seconds >= self.limits.cpu_seconds - 0.5:
                number = signal.SIGXCPU
            if number == signal.SIGXCPU:
                return "killed", str(
                    _("The script used more than its %(seconds)d seconds of CPU time and was stopped.")
                    % {"seconds": self.limits.cpu_seconds}
                )
            if number == signal.SIGKILL:
                return "killed", str(
                    _("The script was killed, most likely because it used too much memory or CPU time.")
                )
            if number == signal.SIGSEGV:
                return "killed", str(_("The script crashed (segmentation fault)."))
            name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else str(number)
            return "killed", str(_("The script was killed by signal %(signal)s.") % {"signal": name})
        return "exception", str(_("The script exited with code %(code)s.") % {"code": code})


def _last_exception_line(tb: str) -> str:
    for line in reversed(tb.splitlines()):
        if line.strip() and not line.startswith((" ", "\t")) and not line.startswith("Traceback"):
            return line.strip()
    return ""


def _looks_like_oom(line: str) -> bool:
    lowered = line.lower()
    return (
        line.startswith("MemoryError")
        or "outofmemoryerror" in lowered
        or "out of memory" in lowered
        or "can't allocate memory" in lowered
    )


def _within_disk_limit(run_dir: Path, limit: int) -> bool:
    """Whether the run directory holds at most `limit` bytes (allocated blocks) and a sane file count."""
    total = entries = 0
    stack = [str(run_dir)]
    while stack:
        try:
            with os.scandir(stack.pop()) as scan:
                for entry in scan:
                    entries += 1
                    if entries > DISK_MAX_ENTRIES:
                        return False
                    stat = entry.stat(follow_symlinks=False)
                    total += getattr(stat, "st_blocks", 0) * 512 or stat.st_size
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total <= limit


def _remove_links(run_dir: Path) -> int:
    """Delete links the child left in its directory, so that the worker never follows one out.

    Runs after the child is dead, so nothing can race it. Symlinks may point anywhere. A hard link
    whose other names are not all inside the directory could be another file of the filesystem,
    which link() allows without bubblewrap (across its bind mount it fails with EXDEV); hard links
    between files of the run (the runtime links best to last) stay.
    """
    removed = 0
    names: dict[tuple[int, int], list[str]] = {}
    links: dict[tuple[int, int], int] = {}
    for root, dirs, files in os.walk(run_dir, followlinks=False):
        for name in [*files, *dirs]:
            path = os.path.join(root, name)
            stat = os.lstat(path)
            if os.path.islink(path):
                os.unlink(path)
                removed += 1
            elif not os.path.isdir(path):
                key = (stat.st_dev, stat.st_ino)
                names.setdefault(key, []).append(path)
                links[key] = stat.st_nlink
    for key, paths in names.items():
        if links[key] > len(paths):
            for path in paths:
                os.unlink(path)
                removed += 1
    return removed


def _children_cpu_seconds() -> float:
    # Waited-for descendants count too: python (waited by bwrap) is included once bwrap is reaped.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
