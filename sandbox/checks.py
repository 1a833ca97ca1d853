"""Short jobs in boxes started ahead of time: the same box as a run's, minus the wait for torch.

Code checks (designs.codegen) and the trusted evaluation after a run (training) use it.

A code check (designs.codegen) runs the harness in smoke mode: build the model, train one batch. In a
box started on demand most of its time goes to starting Python and importing torch. So each worker
process keeps `BUILDX_SANDBOX_PRESPAWN` boxes started and waiting: their harness has imported torch
and blocks on its first line of input. A check takes one, writes its script, config and dataset, and
says go; the box is used once and closed, and a new one is started for the next check.

This replaced a fork server (one long-lived sandbox forking every check), measured against it in
bench/codegen.py: the same latency per check, with each check in a box of its own (its own uid,
control group and folder, nothing to clean between checks) and none of the fork server's machinery.
And nothing tells a check from a run: same command, same paths, same environment.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from django.conf import settings

from sandbox.files import ReadableFile
from sandbox.launcher import Box, Limits, host
from sandbox.runner import harness_command, run_script
from sandbox.static_check import check_script, format_findings
from sandbox.supervisor import SandboxResult

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_waiting: list[Box] = []
_owner = 0  # the pid the waiting boxes belong to: a forked worker process starts its own


def enabled() -> bool:
    return settings.BUILDX_SANDBOX_PRESPAWN > 0 and host().mode == "bwrap"


def check_limits() -> Limits:
    return Limits.from_settings()


def prepare() -> None:
    """Start boxes until BUILDX_SANDBOX_PRESPAWN wait (code generation calls this before it asks the
    LLM, so that torch is imported while the LLM writes)."""
    if not enabled():
        return
    limits = check_limits()
    with _lock:
        _own()
        usable = []
        for box in _waiting:
            if _usable(box, limits):
                usable.append(box)
            else:
                box.close()
        _waiting[:] = usable
        missing = settings.BUILDX_SANDBOX_PRESPAWN - len(_waiting)
    for _ in range(max(missing, 0)):
        try:
            box = _start(limits)
        except Exception:
            logger.exception("A code-check box could not be started ahead of time")
            return
        with _lock:
            _waiting.append(box)


def _start(limits: Limits) -> Box:
    box = Box.open(limits=limits)
    try:
        box.give_run_dir()
        box.spawn(harness_command())
    except BaseException:
        box.close()
        raise
    return box


def _usable(box: Box, limits: Limits) -> bool:
    return (
        not box.closed
        and box.limits == limits
        and box.host == host()
        and box.process is not None
        and box.process.poll() is None
    )


def _own() -> None:
    global _owner
    if _owner != os.getpid():
        _waiting.clear()  # inherited through fork(): the parent's boxes, not ours to use
        _owner = os.getpid()
        atexit.register(shutdown)


def _take(limits: Limits) -> Box | None:
    with _lock:
        _own()
        while _waiting:
            box = _waiting.pop(0)
            if _usable(box, limits):
                return box
            box.close()
    return None


def run_check(
    *,
    code: str,
    config: dict,
    dataset: Path,
    on_event: Callable[[dict], None],
    wall_limit_s: float,
    inputs: Mapping[str, ReadableFile] | None = None,
) -> SandboxResult:
    """One short job (a code check, a trusted evaluation): a waiting box when there is one, else one
    started now. Either way the script sees the same box (its own run folder, as a run's)."""
    limits = check_limits()
    findings = check_script(code)
    if findings:  # before a box is taken: a refused script costs no torch import
        message = format_findings(findings)
        on_event({"kind": "error", "cause": "rejected", "message": message, "traceback": ""})
        return SandboxResult("rejected", None, message, "", [])
    box = (_take(limits) if enabled() else None) or Box.open(limits=limits)
    try:
        return run_script(
            code=code,
            run_dir=box.run_dir,
            config=config,
            on_event=on_event,
            should_stop=lambda: False,
            wall_limit_s=wall_limit_s,
            dataset=dataset,
            box=box,
            inputs=inputs,
            check_code=False,  # checked above
        )
    finally:
        box.close()
        prepare()


def shutdown() -> None:
    """Close this process's waiting boxes (at exit; tests)."""
    with _lock:
        if _owner != os.getpid():
            return
        boxes, _waiting[:] = list(_waiting), []
    for box in boxes:
        with contextlib.suppress(Exception):
            box.close()


def waiting_pids() -> list[int]:
    """The waiting boxes' processes (tests)."""
    with _lock:
        return [b.process.pid for b in _waiting if b.process is not None]
