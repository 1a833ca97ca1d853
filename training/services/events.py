"""A run's events: appended with contiguous sequence numbers under the run's row lock, stored before
they are published, published after the transaction commits; the log limiter and the coalescing of a
batch before it is stored.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import transaction
from django.db.models import FloatField, Max, OuterRef, Subquery
from django.utils.translation import gettext as _

from buildx.live import publish, run_group, user_group
from training.models import EpochMetric, Run, RunEvent

logger = logging.getLogger(__name__)

MAX_LINE_CHARS = 2000
METRIC_FIELDS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


# --- Events ---------------------------------------------------------------------------------------


def events_append(
    *,
    run_id: int,
    events: list[tuple[str, dict]],
    updates: dict | None = None,
    guard: dict | None = None,
    epoch_metrics: list[dict] | None = None,
) -> list[RunEvent] | None:
    """Append events with the next sequence numbers and apply ``updates`` to the run, atomically.

    ``guard`` (field -> value) must match the locked run, or nothing is written and None is
    returned: a worker that lost its run (marked interrupted, claimed again elsewhere) stays silent.
    The caller publishes the returned events after this returns (the transaction has committed).
    """
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        if guard and any(getattr(run, k) != v for k, v in guard.items()):
            return None
        rows = [
            RunEvent(run=run, seq=run.last_seq + i, kind=kind, payload=payload)
            for i, (kind, payload) in enumerate(events, start=1)
        ]
        if rows:
            RunEvent.objects.bulk_create(rows)
        for metric in epoch_metrics or []:
            EpochMetric.objects.update_or_create(run=run, epoch=metric["epoch"], defaults=metric)
        fields = dict(updates or {})
        fields["last_seq"] = run.last_seq + len(rows)
        if epoch_metrics:
            fields["best_val_acc"] = best_val_acc_stored()
        Run.objects.filter(pk=run_id).update(**fields)
    return rows


def best_val_acc_stored() -> Subquery:
    """The greatest validation accuracy among the stored epochs of the run being updated (``Run.objects
    .filter(...).update(best_val_acc=best_val_acc_stored())``): ``Run.best_val_acc``, in the same UPDATE."""
    best = (
        EpochMetric.objects.filter(run=OuterRef("pk"))
        .order_by()
        .values("run")
        .annotate(best=Max("val_acc"))
        .values("best")
    )
    return Subquery(best, output_field=FloatField())


def run_best_refresh(*, run_id: int) -> None:
    """``Run.best_val_acc`` again from the stored epochs, after epochs were deleted (a resume)."""
    Run.objects.filter(pk=run_id).update(best_val_acc=best_val_acc_stored())


def events_publish(*, owner_id: int, run_id: int, rows: list[RunEvent] | None) -> None:
    """The batch to the run's watchers (``run.<id>``); status changes also to the owner's other pages."""
    if not rows:
        return
    events = [r.as_message() for r in rows]
    publish(run_group(run_id), {"type": "run.batch", "run": run_id, "events": events})
    summaries = [e for e in events if e["type"] in ("run.status", "run.done")]
    if summaries:
        publish(user_group(owner_id), {"type": "run.summary", "run": run_id, "events": summaries})


def platform_log(line: str) -> dict:
    """A ``run.log`` payload of one line of the platform's own (a stop, a resume), as coalescing makes them."""
    return {"stream": "platform", "lines": [str(line)], "t": time.time()}


def status_payload(run: Run, **extra: Any) -> dict:
    payload = {"status": run.status, "epoch": run.epoch, "epochs": run.epochs, "progress": run.progress}
    payload.update(extra)
    return payload


def emit_status(run: Run, **extra: Any) -> None:
    rows = events_append(run_id=run.pk, events=[("run.status", status_payload(run, **extra))])
    events_publish(owner_id=run.owner_id, run_id=run.pk, rows=rows)


class LogLimiter:
    """Keeps a chatty script from flooding the database, Redis and the browser.

    At most ``per_second`` lines are kept in any one-second window and at most ``max_lines`` per
    run; each cut is replaced by one line that says how many lines were left out and why.
    """

    def __init__(self, *, stored: int, max_lines: int, per_second: int) -> None:
        self.stored = stored
        self.max_lines = max_lines
        self.per_second = per_second
        self.window_start = 0.0
        self.window_count = 0
        self.window_dropped = 0
        self.cap_dropped = 0
        self.dropped = 0

    def _window_note(self) -> list[tuple[str, str]]:
        if not self.window_dropped:
            return []
        note = _("… %(n)d lines left out here: the log keeps at most %(max)d lines a second.") % {
            "n": self.window_dropped,
            "max": self.per_second,
        }
        self.window_dropped = 0
        return [("platform", note)]

    def accept(self, stream: str, line: str, now: float) -> list[tuple[str, str]]:
        """The (stream, line) pairs to store for this line: none, it, or a note and it."""
        if self.stored >= self.max_lines:
            self.cap_dropped += 1
            self.dropped += 1
            return []
        out: list[tuple[str, str]] = []
        if now - self.window_start >= 1.0:
            out += self._window_note()
            self.window_start, self.window_count = now, 0
        if self.window_count >= self.per_second:
            self.window_dropped += 1
            self.dropped += 1
            return out
        self.window_count += 1
        self.stored += 1
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS] + " …"
        out.append((stream, line))
        return out

    def finish(self) -> list[tuple[str, str]]:
        out = self._window_note()
        if self.cap_dropped:
            out.append(
                (
                    "platform",
                    _("… %(n)d more lines not kept: a run keeps the first %(max)d lines of its log.")
                    % {"n": self.cap_dropped, "max": self.max_lines},
                )
            )
            self.cap_dropped = 0
        return out


def coalesce(batch: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """One ``run.log`` event per run of same-stream lines; only the latest progress of a batch."""
    out: list[tuple[str, dict]] = []
    last_progress = max((i for i, (k, _p) in enumerate(batch) if k == "run.progress"), default=-1)
    for i, (kind, payload) in enumerate(batch):
        if kind == "run.progress" and i != last_progress:
            continue
        if kind == "run.log":
            if out and out[-1][0] == "run.log" and out[-1][1]["stream"] == payload["stream"]:
                out[-1][1]["lines"].append(payload["line"])
            else:
                # "t": when the worker read the batch's first line from the child (epoch seconds).
                entry = {"stream": payload["stream"], "lines": [payload["line"]]}
                if "t" in payload:
                    entry["t"] = round(payload["t"], 4)
                out.append(("run.log", entry))
            continue
        out.append((kind, payload))
    return out
