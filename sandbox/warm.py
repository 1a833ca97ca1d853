"""The warm sandbox: code checks forked from a sandboxed process that has imported torch already.

A code check (designs.codegen) runs the harness in smoke mode: build the model, train one batch. In a
new sandboxed child most of its time goes to starting Python and importing torch. Here one
bubblewrap sandbox per worker process, with the same command line and limits as sandbox.runner
gives a run's child, holds engine/forkserver.py, which imported torch and the harness and ran a
warm-up once; each check is a child it forks, in a folder of its own with its own limits, pipes
and session, supervised by the same _Supervisor as a new child (output caps, wall clock, disk, the
causes of a failure). After each check the fork server kills whatever the check started and clears
the places a check could write to outside its folder, before it says the check ended.

Lifetime: started on the first check_dir() of a worker process (not at import), restarted when it
died or the sandbox's settings changed, stopped at exit (and killed with its worker by the same
watchdog as a run's child). One check at a time uses it; a second check at the same time in the
same process, a machine without bubblewrap, or a warm sandbox that failed to start all take the
usual path, a new sandboxed child per check.

    with warm.check_dir() as work:
        ...  # the check's inputs under work/
        result = sandbox.run_script(..., run_dir=work / "run", warm=True)
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from django.conf import settings

import sandbox.runner as sandbox
from sandbox.runner import ENGINE_DIR, ForkedChild, SandboxResult

logger = logging.getLogger(__name__)

FORKSERVER = ENGINE_DIR / "forkserver.py"
START_TIMEOUT_S = 120.0  # Python, torch and the warm-up on a busy machine
RETRY_AFTER_S = 60.0  # after a warm sandbox failed to start, checks start their own child this long
FORK_TIMEOUT_S = 10.0  # from the request to the fork server's "started"
EXIT_TIMEOUT_S = 10.0  # from a kill to "exited" (the fork server gives up on a check's processes at 5 s)
MAX_MESSAGE = 1 << 16


class _WarmSandbox:
    """One fork server in its bubblewrap sandbox, and the worker's end of its control socket."""

    def __init__(self, *, limits: sandbox._Limits, spool: Path) -> None:
        self.limits = limits
        self.spool = spool
        self.as_root = sandbox._runs_as_root()
        self.process: subprocess.Popen | None = None
        self.control: socket.socket | None = None
        self.info_r = -1
        self.info = bytearray()
        self.pid: int | None = None  # the fork server's pid on this machine (bwrap's child-pid)
        self.ready = False
        self.dead = False
        self.isolation: list[str] = []
        self.watchdog: sandbox._Watchdog | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - bwrap's and the fork server's output, closed in close()
        self.checks = 0

    def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        info_r, info_w = os.pipe()
        seccomp_r = -1
        fds = [theirs.fileno(), info_w]
        try:
            program = sandbox._seccomp_program()
            if program is not None:
                seccomp_r, seccomp_w = os.pipe()
                os.write(seccomp_w, program)
                os.close(seccomp_w)
                fds.append(seccomp_r)
            env = sandbox._child_env(
                run_dir=self.spool, events_fd=3, limits=self.limits, gpu=False
            )  # HOME and the events pipe are set per check
            argv, isolation = sandbox._bwrap_argv(
                run_dir=self.spool,
                env=env,
                command=[
                    sandbox.python_executable(),
                    "-s",
                    str(FORKSERVER),
                    str(theirs.fileno()),
                    str(self.spool),
                ],
                gpu=False,
                limits=self.limits,
                info_fd=info_w,
                seccomp_fd=seccomp_r if program is not None else None,
                read_only=[*sandbox._python_paths(), ENGINE_DIR],
                as_root=self.as_root,
                read_only_root=True,
            )
            self.isolation = [*isolation, "rlimits", "memory limit"]
            if self.as_root:
                self.isolation.append("process limit")
            preexec = sandbox._make_preexec(
                limits=self.limits, gpu=False, drop_to=None, nproc=self.as_root, die_with_parent=False
            )
            self.process = subprocess.Popen(
                argv,
                cwd=self.spool,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=self.log,
                pass_fds=tuple(fds),
                start_new_session=True,
                preexec_fn=preexec,  # noqa: PLW1509 - only setrlimit, as for a run's child
            )
        except BaseException:
            ours.close()
            os.close(info_r)
            raise
        finally:
            theirs.close()
            os.close(info_w)
            if seccomp_r >= 0:
                os.close(seccomp_r)
        self.control = ours
        self.info_r = info_r
        self.watchdog = sandbox._Watchdog.start(group=self.process.pid)

    def alive(self) -> bool:
        return not self.dead and self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> bool:
        """Wait for the fork server's warm-up; False (and stopped) when it did not come up."""
        if self.ready:
            return self.alive()
        deadline = time.monotonic() + timeout
        warmed_up = False
        selector = selectors.DefaultSelector()
        selector.register(self.control, selectors.EVENT_READ, "control")
        selector.register(self.info_r, selectors.EVENT_READ, "info")
        try:
            while not (warmed_up and self.pid) and time.monotonic() < deadline and self.alive():
                for key, _mask in selector.select(min(0.5, max(0.0, deadline - time.monotonic()))):
                    if key.data == "info":
                        chunk = os.read(self.info_r, 4096)
                        if chunk:
                            self._info(chunk)
                        else:
                            selector.unregister(self.info_r)
                    else:
                        message = self._receive(block=True)
                        warmed_up = warmed_up or bool(message and message.get("ready"))
        finally:
            selector.close()
        self.ready = warmed_up and self.pid is not None
        if not (self.ready and self.alive()):
            self.close()
            return False
        return True

    def _info(self, chunk: bytes) -> bool:
        # bwrap's --info-fd: a JSON object whose child-pid is the fork server's pid here.
        self.info += chunk
        with contextlib.suppress(ValueError):
            info = json.loads(self.info)
            if isinstance(info, dict) and isinstance(info.get("child-pid"), int):
                self.pid = info["child-pid"]
                if self.watchdog is not None:
                    self.watchdog.watch(self.pid)
        return self.pid is not None

    def fork(self, *, run_dir: Path, fds: list[int]) -> WarmChild | None:
        """Ask for a child in `run_dir` with these pipes; None (and stopped) if the fork server is gone."""
        self.checks += 1
        check = self.checks
        request = {"run": check, "dir": str(run_dir), "limits": self._child_limits()}
        try:
            socket.send_fds(self.control, [json.dumps(request).encode()], fds)
            deadline = time.monotonic() + FORK_TIMEOUT_S
            while True:
                message = self._receive(block=True, timeout=deadline - time.monotonic())
                if message is None:
                    break
                if message.get("started") == check:
                    return WarmChild(self, check)
        except OSError:
            pass
        self.close()
        return None

    def _child_limits(self) -> dict:
        limits = self.limits
        return {
            "cpu_seconds": limits.cpu_seconds,
            "memory_bytes": limits.memory_bytes,
            "open_files": limits.open_files,
            "file_bytes": limits.file_bytes,
            "processes": limits.processes if self.as_root else None,  # as sandbox's preexec does
        }

    def _receive(self, *, block: bool, timeout: float | None = None) -> dict | None:
        """The next message; {} when there is none yet; None at end of file (the fork server died)."""
        if self.control is None:
            return None
        if block and timeout is not None:
            if timeout <= 0:
                return None
            ready = selectors.DefaultSelector()
            ready.register(self.control, selectors.EVENT_READ)
            try:
                if not ready.select(timeout):
                    return None
            finally:
                ready.close()
        try:
            data = self.control.recv(MAX_MESSAGE, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return {}
        except OSError:
            data = b""
        if not data:
            self.dead = True
            return None
        try:
            message = json.loads(data)
        except ValueError:
            return {}
        return message if isinstance(message, dict) else {}

    def send(self, **message) -> None:
        if self.control is not None:
            with contextlib.suppress(OSError):
                self.control.send(json.dumps(message).encode())

    def close(self) -> None:
        """Stop the fork server (end of file on its socket, then SIGKILL) and everything in its sandbox."""
        self.dead = True
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.process is not None:
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            if self.pid is not None and self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self.pid, signal.SIGKILL)  # pid 1 of the sandbox: the rest dies with it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.watchdog is not None:
            self.watchdog.release()
            self.watchdog = None
        if self.info_r >= 0:
            os.close(self.info_r)
            self.info_r = -1
        if not self.log.closed:
            self.log.close()

    def output_tail(self) -> str:
        if self.log.closed:
            return ""
        self.log.seek(0, os.SEEK_END)
        self.log.seek(max(0, self.log.tell() - 2000))
        return self.log.read().decode("utf-8", errors="replace")


class WarmChild(ForkedChild):
    """One check's child, as the supervisor sees it."""

    def __init__(self, sandbox_: _WarmSandbox, check: int) -> None:
        self.sandbox = sandbox_
        self.check = check
        self.kill_sent = False

    def poll(self) -> int | None:
        while self.returncode is None:
            message = self.sandbox._receive(block=False)
            if message is None:
                self._lost()
            elif not message:
                break
            else:
                self._message(message)
        return self.returncode

    def wait(self) -> int:
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        while self.returncode is None:
            message = self.sandbox._receive(block=True, timeout=deadline - time.monotonic())
            if message is None:
                self._lost()
            else:
                self._message(message)
        return self.returncode

    def stop(self) -> None:
        self.sandbox.send(stop=self.check)

    def kill(self) -> None:
        if self.returncode is None and not self.kill_sent:
            self.kill_sent = True
            self.sandbox.send(kill=self.check)

    def _message(self, message: dict) -> None:
        if message.get("exited") == self.check:
            self.returncode = int(message.get("code", -signal.SIGKILL))
            self.cpu_seconds = float(message.get("cpu", 0.0))

    def _lost(self) -> None:
        # The fork server died (or stopped answering) before it said how the child ended: the whole
        # sandbox goes, the child with it, and the next check starts a new one.
        logger.warning("The warm sandbox stopped during a check.\n%s", self.sandbox.output_tail())
        self.sandbox.close()
        self.lost = True
        self.returncode = -signal.SIGKILL


# --- One per worker process ----------------------------------------------------------------------------

_lock = threading.Lock()  # guards the globals below
_in_use = threading.Lock()  # held by the thread whose check uses the warm sandbox
_current: _WarmSandbox | None = None
_spool: Path | None = None
_owner = 0  # the pid these belong to: a forked worker process must start its own
_retry_at = 0.0
_local = threading.local()  # .sandbox and .folder, while this thread's check holds the warm sandbox


def enabled() -> bool:
    return bool(
        settings.BUILDX_SANDBOX_WARM
        and settings.BUILDX_SANDBOX == "bwrap"
        and shutil.which("bwrap")
        and hasattr(os, "pidfd_open")
        and hasattr(socket, "send_fds")
    )


@contextlib.contextmanager
def check_dir(prefix: str = "buildx-check-") -> Iterator[Path]:
    """A new folder for one check's files, deleted afterwards. Inside the warm sandbox's folder when
    this process may use it now (run_script(warm=True) then forks the check there), else anywhere."""
    warm = _acquire()
    if warm is None:
        folder = Path(tempfile.mkdtemp(prefix=prefix))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    try:
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=warm.spool))
        folder.chmod(0o711)  # the sandbox's uid goes through it to its run folder, nothing more
        _local.sandbox, _local.folder = warm, folder
        yield folder
    finally:
        _local.sandbox = _local.folder = None
        _empty(warm.spool)  # this check's folder and anything its child left beside it
        _in_use.release()


def run_forked(
    *,
    supervisor: sandbox._Supervisor,
    run_dir: Path,
    config: dict,
    should_stop: Callable[[], bool],
    wall_limit_s: float,
) -> SandboxResult | None:
    """sandbox.runner.run_script(warm=True): the result of the check run in a forked child, or None
    when it must start a child of its own (no warm sandbox held, or it could not fork)."""
    global _retry_at
    warm: _WarmSandbox | None = getattr(_local, "sandbox", None)
    folder: Path | None = getattr(_local, "folder", None)
    if warm is None or folder is None or not Path(run_dir).resolve().is_relative_to(folder):
        return None
    cache = config.get("dataset_cache")
    if cache and not Path(cache).resolve().is_relative_to(folder):
        return None  # the sandbox sees only its own folder
    if supervisor.limits != warm.limits:
        return None  # its process holds other limits (and threads) than this child must get
    if not warm.wait_ready():
        logger.warning("The warm sandbox did not start; checks start their own.\n%s", warm.output_tail())
        with _lock:
            _retry_at = time.monotonic() + RETRY_AFTER_S
        return None
    try:
        return supervisor.run_forked(
            fork=lambda fds: warm.fork(run_dir=Path(run_dir).resolve(), fds=fds),
            isolation=warm.isolation,
            run_dir=Path(run_dir).resolve(),
            should_stop=should_stop,
            wall_limit_s=wall_limit_s,
        )
    except BaseException:
        # Interrupted half-way (a time limit of the worker's job, say): the fork server may still be
        # in this check, so the next check gets a new one.
        warm.close()
        raise


def prestart() -> None:
    """Start this process's warm sandbox if none is running, without waiting for it: code generation
    calls this before it asks the LLM, so that the warm-up happens while the LLM writes."""
    if not enabled():
        return
    try:
        _ensure(replace=False)
    except Exception:
        logger.exception("The warm sandbox could not start; checks start their own.")


def current_pid() -> int | None:
    """The running fork server's pid (tests: the same process serves check after check)."""
    with _lock:
        warm = _current if _owner == os.getpid() else None
        return warm.pid if warm is not None and warm.alive() else None


def shutdown() -> None:
    """Stop this process's warm sandbox and delete its folder (at exit; tests)."""
    global _current, _spool
    with _lock:
        if _owner != os.getpid():
            return
        if _current is not None:
            _current.close()
            _current = None
        if _spool is not None:
            shutil.rmtree(_spool, ignore_errors=True)
            _spool = None


def check_limits() -> sandbox._Limits:
    """The limits of a code check's child (designs.codegen passes the same threads to run_script)."""
    return dataclasses.replace(sandbox._Limits.from_settings(), threads=settings.BUILDX_CODEGEN_THREADS)


def _acquire() -> _WarmSandbox | None:
    if not enabled() or not _in_use.acquire(blocking=False):
        return None  # no bubblewrap, or another thread's check has it: a child of our own
    try:
        warm = _ensure()
    except Exception:
        logger.exception("The warm sandbox could not start; checks start their own.")
        warm = None
    if warm is None:
        _in_use.release()
    return warm


def _ensure(*, replace: bool = True) -> _WarmSandbox | None:
    """The running warm sandbox for the current settings, started (not yet warm) if there is none.
    `replace=False` leaves one of other settings alone (a check of another thread may be using it)."""
    global _current, _spool, _owner, _retry_at
    limits = check_limits()
    with _lock:
        if _owner != os.getpid():
            _current = _spool = None  # inherited through fork(): the parent's, not ours to use
            _owner = os.getpid()
            _retry_at = 0.0
            atexit.register(shutdown)
        if _current is not None and (not _current.alive() or (replace and _current.limits != limits)):
            _current.close()
            _current = None
        if _current is None:
            if time.monotonic() < _retry_at:
                return None
            if _spool is None or not _spool.is_dir():
                _remove_orphaned_spools()
                _spool = Path(tempfile.mkdtemp(prefix=f"buildx-checks-{os.getpid()}-"))
                _spool.chmod(0o711)
            _current = _WarmSandbox(limits=limits, spool=_spool)
            _current.start()
        return _current


def _remove_orphaned_spools() -> None:
    """The folders of worker processes that were killed before their exit handler ran."""
    for folder in Path(tempfile.gettempdir()).glob("buildx-checks-*-*"):
        pid = folder.name.removeprefix("buildx-checks-").split("-", 1)[0]
        try:
            ours = folder.lstat().st_uid == os.getuid() and folder.is_dir() and not folder.is_symlink()
        except OSError:
            continue
        if ours and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _empty(folder)
            with contextlib.suppress(OSError):
                folder.rmdir()


def _empty(folder: Path) -> None:
    """Delete everything in `folder` (never following a link), whatever rights a check left on it."""

    def allow_and_retry(function, path, _exc_info) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(path), 0o700)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
                shutil.rmtree(path, onerror=allow_and_retry)
            else:
                os.unlink(path)

    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, onerror=allow_and_retry)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
