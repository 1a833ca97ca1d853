"""Runs: create, claim, execute, stop, resume, and the stale-run check.

Every status change is a compare-and-set on ``Run.status`` so that two workers, a stop button and
the stale check can race without a run ending up with two executors or two final states. Events are
appended with contiguous sequence numbers allocated under the run's row lock, stored before they are
published, and published after the transaction commits.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile, File
from django.db import close_old_connections, transaction
from django.db.models import F, Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from buildx.live import publish, run_group, user_group
from designs import compiler
from designs.models import CodeArtifact, DesignVersion
from sandbox import checks as sandbox_checks
from sandbox import files as sandbox_files
from sandbox import runner as sandbox_runner
from training.models import EpochMetric, Run, RunArtifact, RunEvent

logger = logging.getLogger(__name__)

MAX_LINE_CHARS = 2000
METRIC_FIELDS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
CHECKPOINT_META_MAX_BYTES = 1 << 20  # a checkpoint's JSON: the epoch, metrics, optimizer's plain state
FILE_MARGIN_BYTES = 16 << 20  # safetensors headers and buffers (batch norm statistics) beyond the params


def checkpoint_max_bytes(params: int | None) -> int:
    """The largest checkpoint a model of `params` parameters can honestly write: its weights and up to
    three optimizer slots per parameter (Adam keeps two), in float64 at most, plus a margin. A child
    that writes more is not saving that model."""
    return 8 * 4 * int(params or settings.RUNS_MAX_PARAMS) + FILE_MARGIN_BYTES


def model_max_bytes(params: int | None) -> int:
    """The largest weights-only file for `params` parameters (float64 at most)."""
    return 8 * int(params or settings.RUNS_MAX_PARAMS) + FILE_MARGIN_BYTES


def storage_used(owner_id: int) -> int:
    """Bytes of run files the user has in storage."""
    return RunArtifact.objects.filter(run__owner_id=owner_id).aggregate(s=Sum("size"))["s"] or 0


class RunRefused(Exception):
    """A run request the platform will not take, with a reason a user can act on."""

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


# --- Reading the design version -------------------------------------------------------------------


def _hyperparameters(spec: dict) -> dict:
    hp = spec.get("hyperparameters") or spec.get("training") or {}
    return {str(k).lower(): v for k, v in hp.items()} if isinstance(hp, dict) else {}


def _spec_dataset(spec: dict) -> str:
    dataset = spec.get("dataset")
    if isinstance(dataset, dict):
        dataset = dataset.get("name")
    return str(dataset or "digits")


def design_expectation(report: dict) -> dict:
    """The validation report's promise that the harness checks before training."""
    totals = report.get("totals") or {}
    params = totals.get("params", report.get("params"))
    output_shape = report.get("output_shape")
    expect: dict[str, Any] = {}
    if params is not None:
        expect["params"] = int(params)
    if output_shape is not None:
        expect["output_shape"] = [int(x) for x in output_shape]
    return expect


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
        Run.objects.filter(pk=run_id).update(**fields)
    return rows


def events_publish(*, owner_id: int, run_id: int, rows: list[RunEvent] | None) -> None:
    """The batch to the run's watchers (``run.<id>``); status changes also to the owner's other pages."""
    if not rows:
        return
    events = [r.as_message() for r in rows]
    publish(run_group(run_id), {"type": "run.batch", "run": run_id, "events": events})
    summaries = [e for e in events if e["type"] in ("run.status", "run.done")]
    if summaries:
        publish(user_group(owner_id), {"type": "run.summary", "run": run_id, "events": summaries})


def events_after(*, run: Run, seq: int, limit: int = 500) -> list[RunEvent]:
    return list(RunEvent.objects.filter(run=run, seq__gt=seq).order_by("seq")[:limit])


def status_payload(run: Run, **extra: Any) -> dict:
    payload = {"status": run.status, "epoch": run.epoch, "epochs": run.epochs, "progress": run.progress}
    payload.update(extra)
    return payload


def _emit_status(run: Run, **extra: Any) -> None:
    rows = events_append(run_id=run.pk, events=[("run.status", status_payload(run, **extra))])
    events_publish(owner_id=run.owner_id, run_id=run.pk, rows=rows)


# --- Create ---------------------------------------------------------------------------------------


def _check_quotas(*, owner, epochs: int, params: int | None) -> None:
    if epochs > settings.RUNS_MAX_EPOCHS:
        raise RunRefused(
            "quota_epochs",
            _(
                "A run may train for at most %(max)d epochs; this design asks for "
                "%(n)d. Lower EPOCHS in the design."
            )
            % {"max": settings.RUNS_MAX_EPOCHS, "n": epochs},
            field="epochs",
        )
    if params is not None and params > settings.RUNS_MAX_PARAMS:
        raise RunRefused(
            "quota_params",
            _("A model may have at most %(max)s parameters; this one has %(n)s. Use fewer or smaller layers.")
            % {"max": f"{settings.RUNS_MAX_PARAMS:,}", "n": f"{params:,}"},
            field="params",
        )
    active = Run.objects.filter(owner=owner, status__in=Run.ACTIVE).count()
    if active >= settings.RUNS_MAX_CONCURRENT_PER_USER:
        raise RunRefused(
            "quota_concurrent",
            _(
                "You already have %(n)d runs queued or running (the limit is "
                "%(max)d). Wait for one to finish or stop it."
            )
            % {"n": active, "max": settings.RUNS_MAX_CONCURRENT_PER_USER},
        )
    stored = storage_used(owner.pk)
    if stored >= settings.RUNS_USER_STORAGE_BYTES:
        raise RunRefused(
            "quota_storage",
            _(
                "Your runs' files take %(used)s MB, your limit is %(max)s MB. Delete runs you no longer "
                "need, then train again."
            )
            % {"used": stored // 2**20, "max": settings.RUNS_USER_STORAGE_BYTES // 2**20},
        )
    since = timezone.now() - timedelta(days=1)
    used = Run.objects.filter(owner=owner, created_at__gte=since).aggregate(s=Sum("run_seconds"))["s"] or 0
    if used >= settings.RUNS_USER_DAILY_SECONDS:
        raise RunRefused(
            "quota_wall_time",
            _("You have used your %(h).1f hours of training time for the last 24 hours. Try again later.")
            % {"h": settings.RUNS_USER_DAILY_SECONDS / 3600},
        )


def run_code(*, version: DesignVersion, artifact_id: int | None = None) -> CodeArtifact | None:
    """The code a run of ``version`` trains: the artifact named (of this version, any status: run_create
    refuses one that is not ready), else the version's newest ready code, else its compiled script,
    compiled now (a version saved by "Apply" on a suggestion has no code yet). None when the named
    artifact is not this version's, or the design has errors and cannot be compiled."""
    from designs import services as design_services

    artifacts = CodeArtifact.objects.filter(version=version)
    if artifact_id:
        return artifacts.filter(pk=artifact_id).first()
    ready = artifacts.filter(status=CodeArtifact.Status.READY).order_by("-created_at").first()
    if ready is not None:
        return ready
    try:
        return design_services.artifact_compile(version=version)
    except design_services.DesignNotValid:
        return None


def run_create(*, owner, version: DesignVersion, artifact: CodeArtifact) -> Run:
    """Create a queued run of ``artifact`` and send it to the training queue once committed.

    Raises ``RunRefused`` with the reason when the code is not ready or a quota says no.
    """
    if version.design.owner_id != owner.pk:
        raise RunRefused("not_found", _("That design version does not exist."), field="design_version")
    if artifact.version_id != version.pk:
        raise RunRefused(
            "invalid", _("That code belongs to another version of the design."), field="code_artifact"
        )
    if artifact.status != CodeArtifact.Status.READY:
        raise RunRefused(
            "code_not_ready",
            _("This code has not passed its checks (%(status)s), so it cannot train.")
            % {"status": artifact.get_status_display()},
            field="code_artifact",
        )
    hp = _hyperparameters(version.spec)
    epochs = int(hp.get("epochs") or 1)
    params = design_expectation(version.report).get("params")
    with transaction.atomic():
        # Serialise one user's creates so two quick clicks cannot both pass the concurrency quota.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        _check_quotas(owner=owner, epochs=epochs, params=params)
        run = Run.objects.create(
            owner=owner,
            design_version=version,
            code_artifact=artifact,
            dataset=_spec_dataset(version.spec),
            hyperparameters=hp,
            epochs=epochs,
            params=params,
            queued_at=timezone.now(),
        )
        rows = events_append(run_id=run.pk, events=[("run.status", status_payload(run))])
        transaction.on_commit(lambda: _enqueue(run.pk))
        transaction.on_commit(lambda: events_publish(owner_id=owner.pk, run_id=run.pk, rows=rows))
    run.refresh_from_db()
    return run


def _enqueue(run_id: int) -> None:
    from training.actors import train_run

    train_run.send(run_id)


# --- Claim ----------------------------------------------------------------------------------------


def run_claim(*, run_id: int, worker_id: str | None = None) -> Run | None:
    """Take a queued run for this worker: queued -> running, or None if someone else did (or it stopped).

    A second delivery of the same message finds the run no longer queued and does nothing.
    """
    now = timezone.now()
    worker_id = worker_id or worker_identity()
    taken = Run.objects.filter(pk=run_id, status=Run.Status.QUEUED).update(
        status=Run.Status.RUNNING,
        heartbeat_at=now,
        worker_id=worker_id,
        attempt=F("attempt") + 1,
        stop_requested=False,
        eta_seconds=None,
    )
    if taken != 1:
        return None
    Run.objects.filter(pk=run_id, started_at__isnull=True).update(started_at=now)
    run = Run.objects.select_related("code_artifact", "design_version").get(pk=run_id)
    queue_s = (now - run.queued_at).total_seconds() if run.queued_at else None
    rows = events_append(
        run_id=run.pk,
        events=[("run.status", status_payload(run, worker=worker_id))],
        updates={"timings": {"queue_s": queue_s}},
    )
    events_publish(owner_id=run.owner_id, run_id=run.pk, rows=rows)
    run.refresh_from_db()
    return run


# --- Execute --------------------------------------------------------------------------------------


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


@dataclass
class _Outcome:
    result: dict | None = None
    error: dict | None = None
    stopped_epoch: int | None = None
    device: str = ""


@dataclass
class EventSink:
    """Turns harness events into stored, published run events, in batches.

    ``handle`` runs on the sandbox's supervising thread and only buffers (and copies checkpoints);
    a flusher thread writes a batch every ``RUNS_FLUSH_INTERVAL`` seconds (or at once for an epoch),
    so a busy script costs one transaction and one channel message per interval, not per line.
    """

    run: Run
    attempt: int
    run_dir: Path
    started: float = field(default_factory=time.monotonic)
    outcome: _Outcome = field(default_factory=_Outcome)
    lost: bool = False

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.pending: list[tuple[str, dict]] = []
        self.metrics: list[dict] = []
        self.updates: dict[str, Any] = {}
        self.closed = False
        self.limiter = LogLimiter(
            stored=self.run.log_lines,
            max_lines=settings.RUNS_LOG_MAX_LINES,
            per_second=settings.RUNS_LOG_LINES_PER_SECOND,
        )
        self.progress_base: tuple[float, float] | None = None  # (monotonic, progress) at first progress
        self.quota_noted = False
        # An epoch's metrics wait (briefly) for that epoch's `last` checkpoint, so that the two are
        # committed in one transaction: a worker killed between them would otherwise resume from the
        # previous checkpoint and report that epoch twice (or, the other way round, lose it).
        self.held_epoch: int | None = None
        self.held_since = 0.0
        # One flush at a time: the flusher thread and a checkpoint (which flushes first) both call it.
        self.flush_lock = threading.Lock()
        self.flusher = threading.Thread(target=self._flush_loop, name=f"run-{self.run.pk}-flush", daemon=True)
        self.flusher.start()

    # Runs on the sandbox's supervising thread.
    def handle(self, event: dict) -> None:
        try:
            self._handle(event)
        except Exception:  # a bad event must not kill the supervisor; it is logged for us
            logger.exception("Run %s: could not handle event %r", self.run.pk, event.get("kind"))

    def add_platform_line(self, line: str) -> None:
        """A line of the platform's own in the run's log (a resume, a refused file)."""
        self._add("run.log", {"stream": "platform", "line": str(line)})

    def _add(self, kind: str, payload: dict, *, now: bool = False, **updates: Any) -> None:
        with self.lock:
            self.pending.append((kind, payload))
            self.updates.update(updates)
            if now:
                self.wake.notify()

    def _progress(
        self, epoch: int, epochs: int, batch: int = 0, batches: int = 0
    ) -> tuple[float, float | None]:
        epochs = max(epochs or self.run.epochs or 1, 1)
        done = (max(epoch - 1, 0) + (batch / batches if batches else 0)) / epochs
        done = min(max(done, 0.0), 1.0)
        now = time.monotonic()
        if self.progress_base is None:
            self.progress_base = (now, done)
            return done, None
        t0, p0 = self.progress_base
        eta = (now - t0) / (done - p0) * (1 - done) if done > p0 else None
        return done, eta

    def _handle(self, event: dict) -> None:
        kind = event.get("kind")
        if kind in ("progress", "epoch", "result", "stopped", "error"):
            # The script moved on without checkpointing the held epoch: its metrics go out as they are.
            with self.lock:
                self.held_epoch = None
        if kind == "log":
            stream = str(event.get("stream", "stdout"))
            received = time.time()
            for s, line in self.limiter.accept(stream, str(event.get("line", "")), time.monotonic()):
                self._add("run.log", {"stream": s, "line": line, "t": received})
        elif kind == "status":
            self.outcome.device = str(event.get("device", ""))
            payload = {
                "status": Run.Status.RUNNING,
                "device": self.outcome.device,
                "torch": event.get("torch"),
                "params": event.get("params"),
                "isolation": event.get("isolation", []),
                "epoch": self.run.epoch,
                "epochs": self.run.epochs,
            }
            self._add(
                "run.status",
                payload,
                now=True,
                device=self.outcome.device[:64],
                isolation=event.get("isolation", []),
            )
        elif kind == "progress":
            epoch, epochs = int(event.get("epoch", 1)), int(event.get("epochs") or self.run.epochs)
            progress, eta = self._progress(
                epoch, epochs, int(event.get("batch", 0)), int(event.get("batches", 0))
            )
            payload = {
                "epoch": epoch,
                "epochs": epochs,
                "batch": event.get("batch"),
                "batches": event.get("batches"),
                "progress": progress,
                "eta_seconds": eta,
            }
            self._add("run.progress", payload, progress=progress, eta_seconds=eta)
        elif kind == "epoch":
            epoch, epochs = int(event["epoch"]), int(event.get("epochs") or self.run.epochs)
            progress, eta = self._progress(epoch + 1, epochs)
            payload = {
                k: event.get(k)
                for k in (
                    "epoch",
                    "epochs",
                    "train_loss",
                    "train_acc",
                    "val_loss",
                    "val_acc",
                    "lr",
                    "seconds",
                )
            }
            payload.update(progress=progress, eta_seconds=eta)
            with self.lock:
                self.metrics.append({k: event.get(k) for k in METRIC_FIELDS} | {"epoch": epoch})
                self.held_epoch, self.held_since = epoch, time.monotonic()
            self._add(
                "run.epoch", payload, now=True, epoch=epoch, epochs=epochs, progress=progress, eta_seconds=eta
            )
        elif kind == "checkpoint":
            self._store_checkpoint(event)
        elif kind == "result":
            self.outcome.result = event.get("test") or {}
        elif kind == "stopped":
            self.outcome.stopped_epoch = int(event.get("epoch", 0))
        elif kind == "error":
            self.outcome.error = event

    def _store_checkpoint(self, event: dict) -> None:
        name = str(event.get("name", "last"))
        if name not in ("last", "best"):
            return
        epoch = int(event.get("epoch", 0))
        with self.lock:
            paired = name == "last" and self.held_epoch == epoch
            if not paired:
                self.held_epoch = None
        if not paired:
            # Store everything that came before this checkpoint first, its epoch's metrics above all:
            # a checkpoint stored ahead of them would, after a crash, resume past an epoch whose
            # metrics were never kept.
            self.flush()
            with self.lock:
                behind = bool(self.metrics)
            if behind:
                logger.warning(
                    "Run %s: epoch metrics not stored yet; checkpoint %s left for later", self.run.pk, name
                )
                return
        stored = self._copy_checkpoint(name, epoch)
        if stored is None:
            with self.lock:
                self.held_epoch = None
            return
        kind = RunArtifact.Kind.CHECKPOINT_LAST if name == "last" else RunArtifact.Kind.CHECKPOINT_BEST
        meta_kind = (
            RunArtifact.Kind.CHECKPOINT_LAST_META if name == "last" else RunArtifact.Kind.CHECKPOINT_BEST_META
        )
        weights, meta = stored

        def record() -> None:
            artifact_record(run=self.run, kind=kind, written=weights, epoch=epoch)
            artifact_record(run=self.run, kind=meta_kind, written=meta, epoch=epoch)

        payload = {"epoch": epoch, "name": name, "metric": event.get("metric")}
        extra = {"checkpoint_epoch": epoch} if name == "last" else {}
        # The checkpoint's rows, the epoch's metrics and everything before them: one transaction. The
        # files were written before it, so the run's row lock is held for milliseconds, not a copy.
        if not self.flush(also=record, event=("run.checkpoint", payload), updates=extra):
            weights.discard()
            meta.discard()

    def _copy_checkpoint(self, name: str, epoch: int) -> tuple[Written, Written] | None:
        """Copy checkpoint `name` of `epoch` from the run folder to storage, or None (and say why).

        The child owns the folder: the files are read only as the regular files they claim to be
        (sandbox.files), within what this model's checkpoint can weigh, and streamed."""
        limit = checkpoint_max_bytes(self.run.params)
        for _attempt in range(5):
            try:
                meta = sandbox_files.read_bytes(
                    self.run_dir, f"checkpoints/{name}.json", max_bytes=CHECKPOINT_META_MAX_BYTES
                )
                with sandbox_files.open_regular(
                    self.run_dir, f"checkpoints/{name}.safetensors", max_bytes=limit
                ) as weights_file:
                    # The runtime replaces the JSON after the weights: the same JSON after the copy
                    # means the weights belong to it.
                    if not self._quota_allows(weights_file.size + len(meta)):
                        return None
                    weights = artifact_write(
                        run=self.run,
                        kind=f"checkpoint_{name}",
                        filename=f"{name}.safetensors",
                        source=weights_file,
                    )
                again = sandbox_files.read_bytes(
                    self.run_dir, f"checkpoints/{name}.json", max_bytes=CHECKPOINT_META_MAX_BYTES
                )
                if again == meta:
                    break
                weights.discard()
            except FileNotFoundError:
                time.sleep(0.05)
            except sandbox_files.Refused as refused:
                self._refuse(name, refused)
                return None
        else:
            logger.warning("Run %s: checkpoint %s changed while copying; skipped", self.run.pk, name)
            return None
        # The child may have saved the next epoch since it sent this event, before that epoch's metrics
        # reached us: leave it to that epoch's own checkpoint event, which follows its metrics.
        try:
            saved_epoch = int(json.loads(meta)["epoch"])
        except (ValueError, KeyError, TypeError):
            saved_epoch = -1
        if saved_epoch != epoch:
            weights.discard()
            return None
        return weights, artifact_write(
            run=self.run, kind=f"checkpoint_{name}_meta", filename=f"{name}.json", source=meta
        )

    def _refuse(self, name: str, refused: sandbox_files.Refused) -> None:
        logger.warning("Run %s: checkpoint %s refused: %s", self.run.pk, name, refused)
        self.add_platform_line(
            _(
                "The checkpoint '%(name)s' was not kept: %(reason)s. Checkpoints are written by "
                "rt.save_checkpoint as ordinary files."
            )
            % {"name": name, "reason": refused}
        )

    def _quota_allows(self, size: int) -> bool:
        used = storage_used(self.run.owner_id)
        if used + size <= settings.RUNS_USER_STORAGE_BYTES:
            return True
        if not self.quota_noted:
            self.quota_noted = True
            self.add_platform_line(
                _(
                    "Your runs' files take %(used)s MB of your %(max)s MB, so this checkpoint was not "
                    "kept. Delete runs you no longer need to make room."
                )
                % {"used": used // 2**20, "max": settings.RUNS_USER_STORAGE_BYTES // 2**20}
            )
        return False

    # The flusher thread.
    def _flush_loop(self) -> None:
        from django.db import connection

        interval = settings.RUNS_FLUSH_INTERVAL
        try:
            while True:
                with self.lock:
                    if not self.pending and not self.closed:
                        self.wake.wait(timeout=interval)
                    closed = self.closed
                self.flush()
                if closed:
                    return
                time.sleep(interval)  # gather a batch; an epoch event wakes the next flush early
        finally:
            connection.close()  # this thread's connection goes back to the pool

    def flush(
        self,
        *,
        also: Callable[[], None] | None = None,
        event: tuple[str, dict] | None = None,
        updates: dict | None = None,
        force: bool = False,
    ) -> bool:
        """Store and publish what is pending, then ``event``; ``also`` runs in the same transaction.

        While an epoch waits for its checkpoint, nothing is flushed (its checkpoint's flush takes it),
        for at most ``RUNS_CHECKPOINT_WAIT`` seconds. False when ``also`` did not commit.
        """
        with self.flush_lock:
            with self.lock:
                held = self.held_epoch is not None and time.monotonic() - self.held_since < (
                    settings.RUNS_CHECKPOINT_WAIT
                )
                if held and not (force or also):
                    return True
                self.held_epoch = None
                if event is not None:
                    self.pending.append(event)
                self.updates.update(updates or {})
            return self._flush(also=also)

    def _flush(self, *, also: Callable[[], None] | None) -> bool:
        with self.lock:
            batch, updates, metrics = self.pending, self.updates, self.metrics
            self.pending, self.updates, self.metrics = [], {}, []
        if not batch and not updates and also is None:
            return True
        events = coalesce(batch)
        log_lines = sum(len(p["lines"]) for k, p in events if k == "run.log")
        updates["log_lines"] = F("log_lines") + log_lines
        updates["log_dropped"] = self.limiter.dropped
        try:
            with transaction.atomic():
                rows = events_append(
                    run_id=self.run.pk,
                    events=events,
                    updates=updates,
                    guard={"attempt": self.attempt, "status": Run.Status.RUNNING},
                    epoch_metrics=metrics,
                )
                if rows is not None and also is not None:
                    also()
        except Exception:
            # The database is the record: without it there is nothing to publish. Keep the batch for
            # the next flush rather than lose it.
            logger.exception("Run %s: could not store events; will retry", self.run.pk)
            with self.lock:
                self.pending[:0] = batch
                self.metrics[:0] = metrics
                for k, v in updates.items():
                    self.updates.setdefault(k, v)
            close_old_connections()
            return False
        if rows is None:
            self.lost = True
            return False
        events_publish(owner_id=self.run.owner_id, run_id=self.run.pk, rows=rows)
        return True

    def close(self) -> None:
        for stream, line in self.limiter.finish():
            self._add("run.log", {"stream": stream, "line": line})
        with self.lock:
            self.closed = True
            self.wake.notify()
        self.flusher.join(timeout=30)
        self.flush(force=True)


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


@dataclass
class Written:
    """A file put in storage that no row points at yet (artifact_record gives it one)."""

    name: str
    filename: str
    size: int

    def discard(self) -> None:
        RunArtifact.file.field.storage.delete(self.name)


def artifact_write(*, run: Run, kind: str, filename: str, source: BinaryIO | bytes) -> Written:
    """Put a run's file in Django's storage under a new name, streamed (never whole in memory).

    Outside any transaction: the copy of a large checkpoint must not hold the run's row lock."""
    field_ = RunArtifact.file.field
    content = ContentFile(source) if isinstance(source, bytes) else File(source)
    name = field_.storage.save(field_.generate_filename(RunArtifact(run=run), f"{kind}/{filename}"), content)
    return Written(name=name, filename=filename, size=field_.storage.size(name))


def artifact_record(*, run: Run, kind: str, written: Written, epoch: int | None = None) -> RunArtifact:
    """Point the run's artifact of `kind` at a written file; the file it replaces goes once committed
    (a rolled-back transaction leaves the previous file in place)."""
    artifact = RunArtifact.objects.filter(run=run, kind=kind).first()
    old = artifact.file.name if artifact is not None and artifact.file else None
    if artifact is None:
        artifact = RunArtifact(run=run, kind=kind)
    artifact.file.name = written.name
    artifact.filename = written.filename
    artifact.size = written.size
    artifact.epoch = epoch
    artifact.save()
    if old and old != written.name:
        storage = artifact.file.storage
        transaction.on_commit(lambda: storage.delete(old))
    return artifact


def artifact_store(
    *, run: Run, kind: str, filename: str, content: bytes | BinaryIO, epoch: int | None = None
) -> RunArtifact:
    """Write and record a run's file at once (small files, or outside any transaction)."""
    written = artifact_write(run=run, kind=kind, filename=filename, source=content)
    try:
        with transaction.atomic():
            return artifact_record(run=run, kind=kind, written=written, epoch=epoch)
    except BaseException:
        written.discard()
        raise


def _restore_checkpoints(run: Run, run_dir: Path) -> int | None:
    """Copy the stored checkpoints into a fresh run folder; returns the epoch of ``last``."""
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    epoch = None
    for artifact in run.artifacts.filter(kind__startswith="checkpoint_"):
        with artifact.file.open("rb") as src, open(folder / artifact.filename, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        if artifact.kind == RunArtifact.Kind.CHECKPOINT_LAST_META:
            epoch = int(
                json.loads((folder / artifact.filename).read_bytes())["epoch"]
            )  # what resume starts from
    return epoch


def dataset_caches(name: str) -> tuple[Path, Path]:
    """The dataset's tensor caches, built outside the sandbox: (without the test split, whole).

    A training child gets the first: the test images are only for the platform's evaluation."""
    from sandbox.engine import datasets  # torch: only the worker that trains loads it

    whole = datasets.ensure_cache(name, data_dir=settings.DATA_DIR)
    return datasets.training_cache(whole), whole


class _Heartbeat:
    """Proves the worker is alive and carries the stop flag back from the database.

    Ticks every second (so Stop answers within about a second), writes ``heartbeat_at`` every
    ``RUNS_HEARTBEAT_INTERVAL``; when its update matches no row the run was taken from this worker
    (the stale check declared it dead), and the child is stopped.
    """

    def __init__(self, run: Run, attempt: int) -> None:
        self.run_id = run.pk
        self.attempt = attempt
        self.stop = threading.Event()
        self.lost = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"run-{run.pk}-heartbeat", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        interval = settings.RUNS_HEARTBEAT_INTERVAL
        tick = min(interval, 1.0)
        last_beat = time.monotonic()
        try:
            while not self.done.wait(tick):
                try:
                    mine = Run.objects.filter(pk=self.run_id, attempt=self.attempt, status=Run.Status.RUNNING)
                    if time.monotonic() - last_beat >= interval:
                        if mine.update(heartbeat_at=timezone.now()) == 0:
                            self.lost.set()
                            return
                        last_beat = time.monotonic()
                    if mine.filter(stop_requested=True).exists():
                        self.stop.set()
                except Exception:
                    logger.exception("Run %s: heartbeat failed", self.run_id)
                    close_old_connections()
        finally:
            from django.db import connection

            connection.close()

    def should_stop(self) -> bool:
        return self.stop.is_set() or self.lost.is_set()

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)


def _final_status(result_status: str) -> str:
    return {
        "succeeded": Run.Status.SUCCEEDED,
        "cancelled": Run.Status.CANCELLED,
    }.get(result_status, Run.Status.FAILED)


def evaluated_by_platform(artifact: CodeArtifact) -> bool:
    """Whether the platform can measure what this code trains: compiled code, or LLM code whose check
    proved its weights have the compiled model's names and shapes (designs.codegen, "weights")."""
    if artifact.source == CodeArtifact.Source.COMPILED:
        return True
    return any(c.get("name") == "weights" and c.get("ok") for c in artifact.checks or [])


def run_execute(*, run: Run) -> Run:
    """Train a claimed (running) run in the sandbox to its end and record everything.

    The script's child trains on the dataset without its test split and leaves its final weights; the
    test metrics stored on the run come from ``run_evaluate``, a second box that runs no user code.
    Every execution is charged to the owner's training time, an interrupted one too. Returns the run
    as stored afterwards. When the run was taken from this worker while it trained (the stale check
    marked it interrupted), nothing more is written by this execution but the time it used.
    """
    attempt = run.attempt
    # The box's own run folder, as a code check's: the same layout behind every mount.
    box = sandbox_runner.open_box(gpu=settings.RUNS_GPU)
    run_dir = box.run_dir
    heartbeat = _Heartbeat(run, attempt)
    sink = EventSink(run=run, attempt=attempt, run_dir=run_dir)
    trusted = evaluated_by_platform(run.code_artifact)
    if trusted:
        sandbox_checks.prepare()  # the evaluation's box imports torch while the run trains
    t0 = time.monotonic()
    result = None
    failure: tuple[str, str, str] | None = None
    try:
        code = run.code_artifact.code
        if not run.artifacts.filter(kind=RunArtifact.Kind.SCRIPT).exists():
            artifact_store(run=run, kind=RunArtifact.Kind.SCRIPT, filename="script.py", content=code.encode())
        resume_epoch = _restore_checkpoints(run, run_dir) if run.resume else None
        if run.resume:
            if resume_epoch is not None:
                # Epochs after the checkpoint will be trained again: their old metrics go.
                EpochMetric.objects.filter(run=run, epoch__gt=resume_epoch).delete()
                note = _("Resuming from the checkpoint of epoch %(n)d.") % {"n": resume_epoch}
            else:
                note = _("No checkpoint was saved before the interruption: starting again from epoch 1.")
                EpochMetric.objects.filter(run=run).delete()
            sink.add_platform_line(note)
        hp = run.hyperparameters
        training_cache, whole_cache = dataset_caches(run.dataset)
        config = {
            "mode": "train",
            "resume": resume_epoch is not None,
            "checkpoint_dir": "checkpoints",
            "expect": design_expectation(run.design_version.report),
            "val_split": float(hp.get("val_split", 0.1)),
            "seed": int(hp.get("seed", 42)),
            "max_epochs": settings.RUNS_MAX_EPOCHS,
            "epochs": run.epochs,
            "device": settings.RUNS_DEVICE,
        }
        if trusted and run.code_artifact.source != CodeArtifact.Source.COMPILED:
            # The weights contract is checked again at the start of the run, in the run's own box.
            config["expect"]["state_dict"] = compiler.state_dict_shapes(
                compiler.compile_version(run.design_version)
            )
        if not trusted:
            # Code the platform's model cannot measure (written before the weights contract): its own
            # test metrics, labelled as the script's and kept out of comparisons.
            config["report_test"] = True
        t_ready = time.monotonic()
        result = sandbox_runner.run_script(
            code=code,
            run_dir=run_dir,
            config=config,
            dataset=training_cache if trusted else whole_cache,
            on_event=sink.handle,
            should_stop=heartbeat.should_stop,
            wall_limit_s=settings.RUNS_MAX_WALL_SECONDS,
            trusted_code=run.code_artifact.source == CodeArtifact.Source.COMPILED,
            box=box,
        )
    except Exception as exc:
        logger.exception("Run %s failed in the platform", run.pk)
        failure = ("platform", _("The platform could not run this training: %(e)s") % {"e": exc}, "")
        t_ready = time.monotonic()
    finally:
        heartbeat.close()
        sink.close()

    lost = heartbeat.lost.is_set() or sink.lost
    t_trained = time.monotonic()
    metrics: dict | None = None
    source = ""
    try:
        if not lost and failure is None and result is not None and result.status == "succeeded":
            try:
                if trusted:
                    metrics, failure = _store_model_and_evaluate(run, run_dir, whole_cache)
                    source = Run.MetricsSource.PLATFORM
                else:
                    _store_model(run, run_dir)
                    metrics, source = sink.outcome.result or {}, Run.MetricsSource.SCRIPT
            except Exception as exc:
                logger.exception("Run %s: storing or evaluating the model failed", run.pk)
                failure = (
                    "evaluation",
                    _("The platform could not measure the trained model: %(e)s") % {"e": exc},
                    "",
                )
        # Charged whatever happens next, also when this worker lost the run: the time was used.
        elapsed = time.monotonic() - t0
        Run.objects.filter(pk=run.pk).update(run_seconds=F("run_seconds") + elapsed)
        if lost:
            logger.warning("Run %s was taken from this worker while it trained", run.pk)
        else:
            timings = {
                "setup_s": t_ready - t0,
                "sandbox_s": t_trained - t_ready,
                "evaluate_s": time.monotonic() - t_trained,
            }
            _finish(run=run, attempt=attempt, result=result, failure=failure, outcome=sink.outcome,
                    metrics=metrics, source=source, timings=timings)  # fmt: skip
    finally:
        box.close()
    run.refresh_from_db()
    if not lost:
        from feedback.services import run_finished  # feedback's one hook: queue the diagnosis

        run_finished(run=run)
    return run


def _store_model(run: Run, run_dir: Path) -> RunArtifact:
    """The final weights the child left (model.safetensors), read as untrusted input and stored."""
    epoch = Run.objects.values_list("epoch", flat=True).get(pk=run.pk)
    with sandbox_files.open_regular(run_dir, "model.safetensors", max_bytes=model_max_bytes(run.params)) as f:
        return artifact_store(
            run=run, kind=RunArtifact.Kind.MODEL, filename="model.safetensors", content=f, epoch=epoch
        )


def _store_model_and_evaluate(
    run: Run, run_dir: Path, whole_cache: Path
) -> tuple[dict | None, tuple[str, str, str] | None]:
    """Store the final weights, then measure them: (test metrics, None) or (None, a failure)."""
    try:
        model = _store_model(run, run_dir)
    except (FileNotFoundError, sandbox_files.Refused) as refused:
        logger.warning("Run %s: the final weights were refused: %s", run.pk, refused)
        return None, (
            "evaluation",
            _("The script left no usable trained model (%(reason)s), so it could not be measured.")
            % {"reason": refused if str(refused) else _("no model.safetensors")},
            "",
        )
    with model.file.open("rb") as weights:
        test, error = run_evaluate(run=run, weights=weights, dataset=whole_cache)
    if test is None:
        return None, ("evaluation", error, "")
    return test, None


def run_evaluate(*, run: Run, weights: BinaryIO, dataset: Path) -> tuple[dict | None, str]:
    """The test metrics of `weights`, measured by the platform: (metrics, "") or (None, why not).

    A fresh box builds the design's model with the compiler (no user code runs there), loads the
    weights (safetensors: nothing is unpickled) and evaluates the dataset's test split. Whatever the
    training script reported itself is never used for these numbers."""
    code = compiler.compile_version(run.design_version)
    events: list[dict] = []
    outcome = sandbox_checks.run_check(
        code=code,
        config={"mode": "evaluate", "weights": "weights.safetensors", "epochs": 1, "device": "cpu"},
        dataset=dataset,
        inputs={"weights.safetensors": weights},
        on_event=events.append,
        wall_limit_s=settings.RUNS_EVALUATE_SECONDS,
    )
    found = next((e for e in events if e.get("kind") == "result"), None)
    test = found.get("test") if found else None
    if (
        outcome.status != "succeeded"
        or not isinstance(test, dict)
        or not isinstance(test.get("accuracy"), float)
    ):
        error = next((e.get("message") for e in events if e.get("kind") == "error"), "") or outcome.cause
        logger.warning("Run %s: the evaluation failed: %s", run.pk, error)
        return None, str(
            _(
                "BuildX could not measure the trained model on the test split (%(error)s). The saved "
                "weights may not fit the design's model."
            )
            % {"error": error[:300]}
        )
    return test, ""


def _finish(
    *,
    run: Run,
    attempt: int,
    result,
    failure,
    outcome: _Outcome,
    metrics: dict | None,
    source: str,
    timings: dict,
) -> None:
    if failure is not None:
        status, cause, error, tb = Run.Status.FAILED, failure[0], failure[1], failure[2]
    else:
        status = _final_status(result.status)
        err = outcome.error or {}
        cause = err.get("cause") or ("" if status != Run.Status.FAILED else result.status)
        if result.killed_for == "events":
            cause = "event_limit"
        elif result.killed_for == "memory":
            cause = "out_of_memory"
        error = result.cause or err.get("message", "") if status == Run.Status.FAILED else ""
        tb = result.traceback or err.get("traceback", "") if status == Run.Status.FAILED else ""
    fresh = Run.objects.get(pk=run.pk)
    updates: dict[str, Any] = {
        "status": status,
        "finished_at": timezone.now(),
        "cause": cause[:32],
        "error": error,
        "traceback": tb,
        "timings": {**fresh.timings, **timings},
        "eta_seconds": None,
        "stop_requested": False,
        "resume": False,
    }
    done: dict[str, Any] = {
        "status": status,
        "cause": cause,
        "error": error,
        "epoch": fresh.epoch,
        "epochs": fresh.epochs,
    }
    if status == Run.Status.SUCCEEDED:
        updates["metrics"] = metrics or {}
        updates["metrics_source"] = source
        updates["progress"] = 1.0
        done["metrics"] = metrics or {}
        done["metrics_source"] = source
        done["progress"] = 1.0
    if status == Run.Status.CANCELLED and outcome.stopped_epoch is not None:
        done["stopped_epoch"] = outcome.stopped_epoch
    rows = events_append(
        run_id=run.pk,
        events=[("run.done", done)],
        updates=updates,
        guard={"attempt": attempt, "status": Run.Status.RUNNING},
    )
    events_publish(owner_id=run.owner_id, run_id=run.pk, rows=rows)


# --- Stop, resume, stale ---------------------------------------------------------------------------


def run_stop(*, run: Run) -> Run:
    """Stop a run: a queued or interrupted run is cancelled at once; a running one is asked to stop.

    The worker notices within about a second, the child saves a checkpoint at the next batch
    boundary and exits, and the worker records ``cancelled``.
    """
    now = timezone.now()
    for status in (Run.Status.QUEUED, Run.Status.INTERRUPTED):
        if (
            Run.objects.filter(pk=run.pk, status=status).update(
                status=Run.Status.CANCELLED, finished_at=now, eta_seconds=None, resume=False
            )
            == 1
        ):
            run.refresh_from_db()
            rows = events_append(
                run_id=run.pk,
                events=[
                    (
                        "run.done",
                        {
                            "status": Run.Status.CANCELLED,
                            "cause": "",
                            "error": "",
                            "epoch": run.epoch,
                            "epochs": run.epochs,
                        },
                    )
                ],
            )
            events_publish(owner_id=run.owner_id, run_id=run.pk, rows=rows)
            return run
    if Run.objects.filter(pk=run.pk, status=Run.Status.RUNNING).update(stop_requested=True) == 1:
        run.refresh_from_db()
        return run
    run.refresh_from_db()
    raise RunRefused(
        "not_stoppable",
        _("This run has already finished (%(status)s).") % {"status": run.get_status_display()},
    )


def run_resume(*, run: Run, automatic: bool = False) -> Run:
    """Queue a cancelled, interrupted (or failed, with a checkpoint) run again, from its last checkpoint."""
    if not run.can_resume:
        raise RunRefused(
            "not_resumable",
            _("Only a stopped or interrupted run can be resumed; this one is %(status)s.")
            % {"status": run.get_status_display()},
        )
    if not automatic:
        active = Run.objects.filter(owner_id=run.owner_id, status__in=Run.ACTIVE).count()
        if active >= settings.RUNS_MAX_CONCURRENT_PER_USER:
            raise RunRefused(
                "quota_concurrent",
                _(
                    "You already have %(n)d runs queued or running (the limit is "
                    "%(max)d). Wait for one to finish or stop it."
                )
                % {"n": active, "max": settings.RUNS_MAX_CONCURRENT_PER_USER},
            )
    updates: dict[str, Any] = {
        "status": Run.Status.QUEUED,
        "queued_at": timezone.now(),
        "resume": True,
        "finished_at": None,
        "stop_requested": False,
        "cause": "",
        "error": "",
        "traceback": "",
    }
    if automatic:
        updates["auto_resumes"] = F("auto_resumes") + 1
    with transaction.atomic():
        if Run.objects.filter(pk=run.pk, status=run.status).update(**updates) != 1:
            run.refresh_from_db()
            raise RunRefused(
                "conflict",
                _("The run changed meanwhile (now %(status)s). Reload the page.")
                % {"status": run.get_status_display()},
            )
        run.refresh_from_db()
        rows = events_append(run_id=run.pk, events=[("run.status", status_payload(run, resumed=True))])
        transaction.on_commit(lambda: _enqueue(run.pk))
    events_publish(owner_id=run.owner_id, run_id=run.pk, rows=rows)
    return run


def runs_check_stale() -> list[int]:
    """Mark running runs whose heartbeat stopped as interrupted, then queue them again to resume.

    Safe to run from several workers at once: each step is a compare-and-set. A run that has been
    resumed automatically ``RUNS_MAX_AUTO_RESUMES`` times stays interrupted for the user to decide.
    Returns the ids marked interrupted.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.RUNS_HEARTBEAT_TIMEOUT)
    marked = []
    for run in Run.objects.filter(status=Run.Status.RUNNING, heartbeat_at__lt=cutoff):
        if (
            Run.objects.filter(
                pk=run.pk, status=Run.Status.RUNNING, attempt=run.attempt, heartbeat_at=run.heartbeat_at
            ).update(status=Run.Status.INTERRUPTED, eta_seconds=None)
            != 1
        ):
            continue
        marked.append(run.pk)
        run.refresh_from_db()
        _emit_status(run, cause="heartbeat", message=_("The worker training this run stopped answering."))
        if run.auto_resumes < settings.RUNS_MAX_AUTO_RESUMES:
            try:
                run_resume(run=run, automatic=True)
            except RunRefused:
                pass
    return marked
