"""The start and end every check child shares (check_upload.py, check_text.py): one place for the protocol.

The child waits for one line ("go") on stdin, reads config.json and deletes it, sends the `result` event
its `check(config)` returns, or an `error` event (`out_of_memory`, `exception`) that the worker turns into
a refusal; then it leaves without tearing the interpreter down.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from sandbox.engine import buildx_runtime as rt

EXIT_OK, EXIT_FAILED = 0, 1


def main(
    check: Callable[[dict[str, Any]], dict[str, Any]], *, description: str, argv: list[str] | None = None
) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    if sys.stdin.readline().strip() != "go":
        return EXIT_OK  # the box was discarded before it was used
    config = json.loads(args.config.read_text())
    with contextlib.suppress(OSError):
        args.config.unlink()
    fd = os.environ.get("BUILDX_EVENTS_FD")
    rt.configure(events_fd=int(fd) if fd else None, device="cpu")
    try:
        rt.emit("result", **check(config))
    except MemoryError:
        rt.emit("error", cause="out_of_memory", message="MemoryError", traceback="")
        return EXIT_FAILED
    except Exception as e:  # noqa: BLE001 - the worker rejects the upload with this cause
        rt.emit(
            "error", cause="exception", message=type(e).__name__, traceback=traceback.format_exc()[-8000:]
        )
        return EXIT_FAILED
    return EXIT_OK


def finish(code: int) -> NoReturn:
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        if rt.state.events is not None:
            rt.state.events.flush()
    os._exit(code)  # no interpreter teardown with torch loaded (seconds on a busy machine)
