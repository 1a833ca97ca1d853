"""What a sandboxed child may say on its events pipe: one schema per kind, and limits on size, count and rate.

Everything the child writes is hostile input (docs/contracts.md section 3). The supervisor parses each
line, checks it here, and passes on only a clean copy with the known fields of the right types. A
line that breaks a limit ends the child: a script that floods the pipe with 20,000 epoch reports or
60 kB status events is not training, and every event it gets through costs the database, the broker
and the browsers of everyone watching.

Limits per execution (`EventRules`):
- one event's line: `MAX_EVENT_BYTES` (an error's traceback and an evaluation's result may be longer);
- `epoch` reports: no more than the epochs the design declares; `checkpoint`: two per epoch (and a
  stop's); `status`, `stopped`, `error`: a few; `result`: only from the modes that produce one;
- the rate of everything but logs: a token bucket (`RATE_PER_S` sustained, `RATE_BURST` at once).
Logs are not limited here: the supervisor's output cap and the runs app's line limiter drop them
with a note instead (a script that prints a lot is ordinary).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from django.utils.translation import gettext as _

KINDS = ("status", "log", "progress", "epoch", "checkpoint", "sample", "result", "stopped", "error")
ERROR_CAUSES = ("exception", "contract", "out_of_memory", "killed", "timeout", "rejected")
LOG_STREAMS = ("stdout", "stderr", "runtime")  # "platform" is the supervisor's alone

MAX_EVENT_BYTES = 4096
MAX_ERROR_BYTES = 32 * 1024  # a message and the tail of a traceback
MAX_RESULT_BYTES = 2 * 1024 * 1024  # an evaluation of a 100-class test split with samples; predictions
RATE_PER_S = 20.0
RATE_BURST = 200.0
MAX_STATUS = 4
MAX_ERRORS = 2
MAX_STOPPED = 1
MAX_RESULTS = 1
# The modes whose one `result` the caller uses: a trusted evaluation, a prediction, the check of an
# uploaded zip or text (sandbox/upload_check.py, sandbox/text_check.py: its report, checked field by field
# again there).
RESULT_MODES = ("evaluate", "predict", "dataset_check")


class Violation(Exception):
    """An event that breaks the rules: the child is stopped, and `str()` says why, for a beginner."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _int(value: Any, *, low: int = 0, high: int = 1 << 31) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if low <= value <= high else None


def _number(value: Any) -> float | None:
    """A finite or non-finite float (NaN losses are real), or None for anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _text(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


@dataclass
class EventRules:
    """The limits of one execution. `epochs`: the design's; `mode`: the harness's (train, smoke,
    evaluate, predict) or dataset_check; only RESULT_MODES produce a `result` the caller may use."""

    epochs: int = 1000
    mode: str = "train"
    accept_result: bool = False  # a training script whose test metrics the platform cannot measure
    counts: dict[str, int] = field(default_factory=dict)
    tokens: float = RATE_BURST
    refilled: float = field(default_factory=time.monotonic)

    def check(self, raw: bytes) -> dict | None:
        """The clean event for one line, None for a line to ignore, or Violation."""
        limit = MAX_RESULT_BYTES if self._results() else MAX_ERROR_BYTES
        if len(raw) > limit:
            raise Violation("event_too_large", _("an event of %(n)d bytes") % {"n": len(raw)})
        try:
            event = json.loads(raw)
        except (ValueError, RecursionError):
            event = None
        if not isinstance(event, dict) or event.get("kind") not in KINDS:
            # Ignored, but not free: a flood of garbage lines costs the worker what a flood of events
            # would, so it counts against the same rate.
            self._rate()
            return None
        kind = event["kind"]
        if kind == "log":
            return {
                "kind": "log",
                "stream": event.get("stream") if event.get("stream") in LOG_STREAMS else "runtime",
                "line": event.get("line") if isinstance(event.get("line"), str) else str(event.get("line")),
            }
        if len(raw) > MAX_EVENT_BYTES and kind not in ("error", "result"):
            raise Violation(
                "event_too_large", _("a %(kind)s event of %(n)d bytes") % {"kind": kind, "n": len(raw)}
            )
        self._rate()
        count = self.counts[kind] = self.counts.get(kind, 0) + 1
        clean = getattr(self, f"_{kind}")(event)
        if clean is None:
            raise Violation(
                "event_malformed", _("a %(kind)s event that does not follow its schema") % {"kind": kind}
            )
        allowed = self.allowed(kind)
        if count > allowed:
            raise Violation(
                "event_count", _("more than %(n)d %(kind)s events") % {"n": allowed, "kind": kind}
            )
        return clean

    def allowed(self, kind: str) -> int:
        return {
            "status": MAX_STATUS,
            "epoch": self.epochs,
            "checkpoint": 2 * self.epochs + 2,
            "sample": self.epochs,  # a language model's text after each epoch
            "stopped": MAX_STOPPED,
            "error": MAX_ERRORS,
            "result": MAX_RESULTS,
            "progress": 1 << 30,  # bounded by the rate
        }[kind]

    def _rate(self) -> None:
        now = time.monotonic()
        self.tokens = min(RATE_BURST, self.tokens + (now - self.refilled) * RATE_PER_S)
        self.refilled = now
        if self.tokens < 1:
            raise Violation("event_rate", _("more than %(n)d events a second") % {"n": RATE_PER_S})
        self.tokens -= 1

    # One method per kind: the fields the platform reads, of the types it expects.

    def _status(self, e: dict) -> dict | None:
        if e.get("status") != "running":
            return None
        return {
            "kind": "status",
            "status": "running",
            "device": _text(e.get("device"), 64),
            "torch": _text(e.get("torch"), 32),
            "params": _int(e.get("params"), high=1 << 40),
        }

    def _progress(self, e: dict) -> dict | None:
        epoch, epochs = _int(e.get("epoch"), high=100_000), _int(e.get("epochs"), high=100_000)
        batch, batches = _int(e.get("batch"), high=1 << 30), _int(e.get("batches"), high=1 << 30)
        if None in (epoch, epochs, batch, batches):
            return None
        return {"kind": "progress", "epoch": epoch, "epochs": epochs, "batch": batch, "batches": batches}

    def _epoch(self, e: dict) -> dict | None:
        epoch = _int(e.get("epoch"), low=1, high=self.epochs)
        epochs = _int(e.get("epochs"), low=1, high=100_000)
        if epoch is None or epochs is None:
            return None
        out: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "epochs": epochs}
        for name in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"):
            value = e.get(name)
            if value is not None and _number(value) is None:
                return None
            out[name] = _number(value)
        return out

    def _checkpoint(self, e: dict) -> dict | None:
        epoch = _int(e.get("epoch"), high=self.epochs)
        metric = e.get("metric")
        if epoch is None or e.get("name") not in ("last", "best"):
            return None
        if metric is not None and _number(metric) is None:
            return None
        return {"kind": "checkpoint", "epoch": epoch, "name": e["name"], "metric": _number(metric)}

    def _sample(self, e: dict) -> dict | None:
        epoch = _int(e.get("epoch"), low=1, high=self.epochs)
        if epoch is None or not isinstance(e.get("text"), str):
            return None
        return {
            "kind": "sample",
            "epoch": epoch,
            "prompt": _text(e.get("prompt"), 200),
            "text": _text(e.get("text"), 1000),
        }

    def _stopped(self, e: dict) -> dict | None:
        epoch = _int(e.get("epoch"), high=self.epochs)
        return None if epoch is None else {"kind": "stopped", "epoch": epoch}

    def _error(self, e: dict) -> dict | None:
        cause = e.get("cause") if e.get("cause") in ERROR_CAUSES else "exception"
        return {
            "kind": "error",
            "cause": cause,
            "message": _text(e.get("message"), 2000),
            "traceback": _text(e.get("traceback"), 20_000),
        }

    def _results(self) -> bool:
        return self.mode in RESULT_MODES or self.accept_result

    def _result(self, e: dict) -> dict | None:
        if not self._results():
            # A training script does not report test metrics: the trusted evaluation does. The line is
            # dropped, not obeyed (it is counted, so a flood of them still ends the child).
            return {"kind": "ignored", "what": "result"}
        return _finite_copy(e)


def _finite_copy(value: Any, depth: int = 0) -> Any:
    """JSON-shaped data with non-finite floats as None, no deeper than 6 levels."""
    if depth > 6:
        return None
    if isinstance(value, dict):
        return {str(k)[:64]: _finite_copy(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_copy(v, depth + 1) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return None
