"""Supervising a started box: its pipes become events, its limits are watched, its end gets a cause.

The supervisor reads the child's stdout and stderr (log lines) and its events pipe (sandbox.events
checks every line), watches the wall clock, the stop flag, the run folder's size, the control group's
memory (an OOM kill anywhere in the tree) and CPU time, and when the child is gone says how it ended
in a sentence a beginner can act on. It reaps the child itself with wait4, which gives that child's
own CPU time (RUSAGE_CHILDREN would add every other child this worker ever waited for).
"""

from __future__ import annotations

import collections
import contextlib
import os
import resource
import selectors
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.utils.translation import gettext as _
from prometheus_client import Counter

from sandbox import events as event_rules
from sandbox.launcher import EXIT_CGROUP_FAILED, Box, info_child_pid

# Every box killed by its supervisor, whatever it ran (a run, a code check, a prediction): memory, cpu,
# disk, events, sandbox, or the wall-clock timeout. Part of BuildX's metrics (buildx/metrics.py).
SANDBOX_KILLS = Counter(
    "buildx_sandbox_kills_total", "Sandboxes killed by their supervisor, by reason.", ["reason"]
)

STDERR_TAIL_LINES = 200  # kept to find the traceback
STDERR_TAIL_BYTES = 64 * 1024  # what is kept of stderr past the output cap, for the same reason
POLL_SECONDS = 0.1
SHOULD_STOP_EVERY_SECONDS = 0.25  # should_stop() may query the database
LIMITS_EVERY_SECONDS = 0.25  # the group's memory and CPU
DISK_CHECK_EVERY_SECONDS = 1.0
DISK_MAX_ENTRIES = 20_000
STRAGGLER_SECONDS = 2.0  # after the child exits, how long its pipes may stay open


@dataclass
class SandboxResult:
    status: str  # "succeeded" | "failed" | "cancelled" | "timeout" | "rejected"
    exit_code: int | None  # negative: killed by that signal
    cause: str  # short, for a beginner: "The script ran out of memory."
    traceback: str
    isolation: list[str] = field(default_factory=list)  # what isolated the child
    killed_for: str | None = None  # "memory", "cpu", "disk", "events", "sandbox": the supervisor's reason
    cpu_seconds: float = 0.0
    memory_peak: int | None = None  # bytes, where the control group measures it


class Supervisor:
    def __init__(
        self, *, box: Box, on_event: Callable[[dict], None], rules: event_rules.EventRules | None = None
    ) -> None:
        self.box = box
        self.limits = box.limits
        self.on_event = on_event
        self.rules = rules or event_rules.EventRules()
        self.output_bytes = 0
        self.output_cut = False
        self.bad_events = 0
        self.ignored_results = 0
        self.buffers: dict[str, bytearray] = {}
        self.skipping: dict[str, bool] = {}
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.stderr_raw = bytearray()  # stderr past the output cap, undecoded
        self.child_error: dict | None = None
        self.child_pid: int | None = None  # the pid to signal (python), once known
        self.killed_for: str | None = None
        self.violation: event_rules.Violation | None = None
        self.returncode: int | None = None
        self.rusage: resource.struct_rusage | None = None
        self.oom_kills_before = box.group.oom_kills() if box.group is not None else 0

    # The main loop ------------------------------------------------------------------------

    def run(self, *, should_stop: Callable[[], bool], wall_limit_s: float) -> SandboxResult:
        process = self.box.process
        assert process is not None and process.stdout is not None and process.stderr is not None
        if self.box.host.mode != "bwrap":
            self.child_pid = process.pid
        streams = {process.stdout.fileno(): "stdout", process.stderr.fileno(): "stderr"}
        streams[self.box.pipes["events"]] = "events"
        if "info" in self.box.pipes:
            streams[self.box.pipes["info"]] = "info"
        if self.box.host.mode != "bwrap":
            self._emit_platform(
                _(
                    "Bubblewrap is not available on this server: the script runs with a clean environment "
                    "and resource limits, but it can reach the network and read files the worker can read."
                ),
                isolation=self.box.isolation,
            )
        started = time.monotonic()
        self.box.go()
        try:
            outcome = self._supervise(streams=streams, should_stop=should_stop, wall_limit_s=wall_limit_s,
                                      started=started)  # fmt: skip
        finally:
            self._kill()
            self._reap(block=True)
        return self._finish(outcome=outcome, wall_limit_s=wall_limit_s)

    def _reap(self, *, block: bool) -> int | None:
        """wait4 on the child: its exit status and its own resource usage, once."""
        process = self.box.process
        if self.returncode is not None or process is None:
            return self.returncode
        try:
            pid, status, usage = os.wait4(process.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.returncode = process.returncode if process.returncode is not None else -signal.SIGKILL
            return self.returncode
        if pid == 0:
            return None
        self.returncode = os.waitstatus_to_exitcode(status)
        self.rusage = usage
        process.returncode = self.returncode  # Popen must not wait for it again
        return self.returncode

    def _supervise(
        self, *, streams: dict[int, str], should_stop: Callable[[], bool], wall_limit_s: float, started: float
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
        next_stop_check = next_disk_check = next_limits_check = started
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
                if exited_at is None and self._reap(block=False) is not None:
                    exited_at = now
                if exited_at is not None:
                    if now - exited_at > STRAGGLER_SECONDS:
                        break  # something it started still holds a pipe; the box's kill ends it
                    continue
                if self.killed_for is not None:
                    continue  # killed: wait for the pipes to close
                if outcome == "exited" and now >= next_stop_check:
                    next_stop_check = now + SHOULD_STOP_EVERY_SECONDS
                    if should_stop():
                        outcome = "cancelled"
                        kill_at = now + self.limits.grace_seconds
                        self._signal_stop()
                if outcome != "timeout" and now - started > wall_limit_s:
                    outcome = "timeout"
                    # A checkpoint at the time limit lets the run resume; give it a short grace.
                    kill_at = min(kill_at or float("inf"), now + min(self.limits.grace_seconds, 2.0))
                    self._signal_stop()
                if now >= next_limits_check:
                    next_limits_check = now + LIMITS_EVERY_SECONDS
                    self._check_group()
                if now >= next_disk_check:
                    next_disk_check = now + DISK_CHECK_EVERY_SECONDS
                    if not within_disk_limit(self.box.run_dir, self.limits.disk_bytes):
                        self._kill_for("disk")
                if kill_at is not None and now >= kill_at:
                    self._kill()
                    kill_at = None
        finally:
            selector.close()
        return outcome

    def _check_group(self) -> None:
        group = self.box.group
        if group is None:
            return
        if group.oom_kills() > self.oom_kills_before:
            # The kernel killed a process of the tree for memory; whatever is left is not the run.
            self._kill_for("memory")
            return
        cpu = group.cpu_seconds()
        if cpu is not None and cpu - self.box.cpu_at_start > self.limits.cpu_seconds:
            self._kill_for("cpu")

    def _kill_for(self, reason: str) -> None:
        if self.killed_for is None:
            self.killed_for = reason
        self._kill()

    def _signal_stop(self) -> None:
        # SIGUSR1 asks the runtime to stop at the next batch boundary and save a checkpoint.
        if self.child_pid is None:
            self._kill()  # it has not even started: nothing to save
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.child_pid, signal.SIGUSR1)

    def _kill(self) -> None:
        # Python is pid 1 of the box's pid namespace: killing it takes every process of the namespace,
        # and bwrap, its parent, reaps it and exits. Killing the whole group at once would orphan it
        # to the host's init, a zombie holding the box's uid until init gets round to it.
        if self.child_pid is not None and self.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.child_pid, signal.SIGKILL)
            deadline = time.monotonic() + 2.0
            while self._reap(block=False) is None and time.monotonic() < deadline:
                time.sleep(0.01)
        self.box.kill()

    # Pipes into events -------------------------------------------------------------------

    def _feed(self, stream: str, chunk: bytes) -> None:
        if self.output_cut and stream in ("stdout", "stderr"):
            # Past the output cap nothing more is shown: no line is split or decoded any more (a flood
            # of tiny lines would otherwise cost the worker a core), only stderr's end is kept for the
            # traceback.
            if stream == "stderr":
                self.stderr_raw += chunk
                del self.stderr_raw[:-STDERR_TAIL_BYTES]
            return
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
        limit = event_rules.MAX_RESULT_BYTES if stream == "events" else self.limits.line_chars * 4
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
            self.buffers.setdefault("info-json", bytearray()).extend(raw + b"\n")
            pid = info_child_pid(bytes(self.buffers["info-json"]))
            if pid is not None and self.child_pid is None:
                self.child_pid = pid
                if self.box.watchdog is not None:
                    self.box.watchdog.watch(pid)
        elif stream == "events":
            self._event(raw, cut=cut)
        else:
            text = raw.decode("utf-8", errors="replace").rstrip("\r")
            if stream == "stderr":
                self.stderr_tail.append(text)
            self._log(stream, text, size=len(raw) + 1, cut=cut)

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
        if self.killed_for is not None:
            return  # nothing more is taken from a child that broke the rules
        try:
            if cut:
                raise event_rules.Violation("event_too_large", _("an event longer than a line may be"))
            event = self.rules.check(raw)
        except event_rules.Violation as violation:
            self.violation = violation
            self._kill_for("events")
            return
        if event is None:
            if raw.strip():
                self.bad_events += 1
                if self.bad_events <= 3:
                    self._emit_platform(
                        _(
                            "The script wrote something that is not an event to the event channel; it was ignored."
                        )
                    )
            return
        if event["kind"] == "ignored":
            self.ignored_results += 1
            if self.ignored_results == 1:
                self._emit_platform(
                    _(
                        "The script reported test results itself; they were ignored. BuildX measures the "
                        "model on the test split on its own."
                    )
                )
            return
        if event["kind"] == "log":
            self._log(event["stream"], event["line"], size=len(raw))
            return
        if event["kind"] == "status":
            event["isolation"] = list(self.box.isolation)
        if event["kind"] == "error":
            self.child_error = event
        self.on_event(event)

    def _emit_platform(self, line: str, **extra) -> None:
        self.on_event({"kind": "log", "stream": "platform", "line": str(line), **extra})

    # The result --------------------------------------------------------------------------

    def _finish(self, *, outcome: str, wall_limit_s: float) -> SandboxResult:
        if self.killed_for is None and not within_disk_limit(self.box.run_dir, self.limits.disk_bytes):
            self.killed_for = "disk"  # it filled the folder between two checks and exited
        if (
            self.killed_for is None
            and self.returncode
            and self.box.run_tmpfs
            and folder_full(self.box.run_dir)
        ):
            self.killed_for = "disk"  # the kernel held the limit (ENOSPC), and the script failed on it
        if self.killed_for is None and self.box.group is not None:
            if self.box.group.oom_kills() > self.oom_kills_before:
                self.killed_for = "memory"  # a forked process died for memory and the child went on
        result = self._result(outcome=outcome, wall_limit_s=wall_limit_s)
        if self.box.group is not None:
            cpu = self.box.group.cpu_seconds()
            result.cpu_seconds = max(0.0, (cpu or 0.0) - self.box.cpu_at_start)
            result.memory_peak = self.box.group.memory_peak()
        elif self.rusage is not None:
            result.cpu_seconds = self.rusage.ru_utime + self.rusage.ru_stime
        result.killed_for = self.killed_for
        kill_reason = self.killed_for or ("timeout" if outcome == "timeout" else None)
        if kill_reason is not None:
            SANDBOX_KILLS.labels(reason=kill_reason).inc()
        return result

    def _result(self, *, outcome: str, wall_limit_s: float) -> SandboxResult:
        code = self.returncode
        if self.box.host.mode == "bwrap" and code is not None and 128 < code < 128 + 65:
            code = -(code - 128)  # bwrap reports a child killed by signal N as 128 + N
        isolation = self.box.isolation
        tb = self._traceback()
        if outcome == "timeout" and self.killed_for is None:
            cause = _("The run took longer than its time limit (%(seconds)d s) and was stopped.") % {
                "seconds": round(wall_limit_s)
            }
            self.on_event({"kind": "error", "cause": "timeout", "message": str(cause), "traceback": tb})
            return SandboxResult("timeout", code, str(cause), tb, isolation)
        if outcome == "cancelled" and self.killed_for is None:
            return SandboxResult("cancelled", code, str(_("Stopped on request.")), tb, isolation)
        if code == 0 and self.killed_for is None:
            return SandboxResult("succeeded", 0, "", "", isolation)

        kind, cause = self._cause(code, tb)
        if self.child_error is None or self.killed_for:
            self.on_event({"kind": "error", "cause": kind, "message": cause, "traceback": tb})
        return SandboxResult("failed", code, cause, tb, isolation)

    def _traceback(self) -> str:
        if self.child_error and isinstance(self.child_error.get("traceback"), str):
            return self.child_error["traceback"][-20_000:]
        lines = list(self.stderr_tail)
        if self.stderr_raw:
            lines += self.stderr_raw.decode("utf-8", errors="replace").splitlines()[1:]  # [0] may be cut
        starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
        if not starts:
            return ""
        return "\n".join(lines[starts[-1] :])[-20_000:]

    def _cause(self, code: int | None, tb: str) -> tuple[str, str]:
        """The error event's cause code and one sentence for a beginner."""
        if self.killed_for == "memory":
            return "out_of_memory", str(
                _(
                    "The script used more than its %(mb)d MB of memory (all its processes together) and was "
                    "stopped. Try a smaller batch size or a smaller model."
                )
                % {"mb": self.limits.memory_bytes // 2**20}
            )
        if self.killed_for == "cpu":
            return "killed", str(
                _("The script used more than its %(seconds)d seconds of CPU time and was stopped.")
                % {"seconds": self.limits.cpu_seconds}
            )
        if self.killed_for == "events":
            return "event_limit", str(
                _(
                    "The script sent %(what)s on its event channel, more than a training script does, and was "
                    "stopped. Report each epoch once with rt.report_epoch and save checkpoints with "
                    "rt.save_checkpoint."
                )
                % {"what": str(self.violation) if self.violation else _("too much")}
            )
        if self.killed_for == "disk":
            return "killed", str(
                _("The script wrote more than %(mb)d MB into its folder and was stopped.")
                % {"mb": self.limits.disk_bytes // 2**20}
            )
        if self.killed_for == "sandbox":
            return "killed", str(
                _(
                    "The sandbox that ran the script stopped while the script ran (the script may have "
                    "tried to stop it), so the script was stopped too. Trying again runs it in a new "
                    "sandbox."
                )
            )
        last = _last_exception_line(tb)
        setup = [line for line in self.stderr_tail if line.startswith(("bwrap: ", "setpriv: ", "prlimit: "))]
        if code == EXIT_CGROUP_FAILED and self.child_pid is None and not last:
            setup.append("could not join the sandbox's control group")
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
            cpu = self.rusage.ru_utime + self.rusage.ru_stime if self.rusage is not None else 0.0
            if number == signal.SIGKILL and cpu >= self.limits.cpu_seconds - 0.5:
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
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = str(number)
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


def folder_full(path: Path) -> bool:
    """Whether a size-limited folder (the box's tmpfs) has less than a megabyte left."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < 2**20


def within_disk_limit(run_dir: Path, limit: int) -> bool:
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
