"""The event sink between a sandboxed child and the database: it reads the child's checked events,
limits and coalesces them, stores them from a flusher thread, and copies checkpoints the child leaves.

Everything here comes from a child that may be hostile: sizes are capped, files are read through
``sandbox.files``, and a child that floods is cut off, not waited for.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import F
from django.utils.translation import gettext as _

from sandbox import files as sandbox_files
from training.models import Run, RunArtifact
from training.services.artifacts import (
    CHECKPOINT_META_MAX_BYTES,
    Written,
    artifact_record,
    artifact_write,
    checkpoint_max_bytes,
    storage_used,
)
from training.services.events import (
    METRIC_FIELDS,
    LogLimiter,
    coalesce,
    events_append,
    events_publish,
)

logger = logging.getLogger(__name__)

# While an epoch trains, a line "Epoch 1/10: batch 120 of 400" at most this often: the silence between
# Train and the end of a long first epoch says what is happening, and a long run's log stays short.
PROGRESS_LOG_EVERY_S = 5.0


@dataclass
class Outcome:
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
    outcome: Outcome = field(default_factory=Outcome)
    lost: bool = False
    # A sweep trial's pruning check: called with (epoch, val_acc) as each epoch arrives; True stops the
    # run (``pruned`` is then what the execution's ``should_stop`` reads, beside the heartbeat's stop).
    on_epoch: Callable[[int, float], bool] | None = None
    pruned: bool = False

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
        self.started_epoch: int | None = None  # the first epoch this execution announced ("started")
        self.progress_logged = time.monotonic()  # when the last batch line was logged
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
            params = event.get("params")
            self.add_platform_line(
                _("The data is loaded: building the model (%(params)s parameters) on %(device)s.")
                % {
                    "params": f"{params:,}" if isinstance(params, int) else "?",
                    "device": self.outcome.device or "?",
                }
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
            self._log_progress(epoch, epochs, int(event.get("batch", 0)), int(event.get("batches", 0)))
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
            val_acc = event.get("val_acc")
            if self.on_epoch is not None and not self.pruned and isinstance(val_acc, (int, float)):
                if self.on_epoch(epoch, float(val_acc)):
                    self.pruned = True
                    self.add_platform_line(
                        _(
                            "Pruned by the sweep: validation accuracy %(acc).1f%% after epoch %(e)s is below "
                            "the median of the earlier trials there, so this trial stops now."
                        )
                        % {"acc": float(val_acc) * 100, "e": epoch}
                    )
        elif kind == "checkpoint":
            self._store_checkpoint(event)
        elif kind == "sample":
            payload = {k: event.get(k) for k in ("epoch", "prompt", "text")}
            self._add("run.sample", payload, now=True)
        elif kind == "result":
            self.outcome.result = event.get("test") or {}
        elif kind == "stopped":
            self.outcome.stopped_epoch = int(event.get("epoch", 0))
            self.add_platform_line(
                _("Stopped after %(n)s completed epoch(s); Resume continues from there.")
                % {"n": self.outcome.stopped_epoch}
            )
        elif kind == "error":
            self.outcome.error = event

    def _log_progress(self, epoch: int, epochs: int, batch: int, batches: int) -> None:
        """The first epoch of this execution is announced when its first batch starts; then, in any
        epoch, a batch line every ``PROGRESS_LOG_EVERY_S`` (the runtime's own epoch line follows each
        epoch). Values come from the child: they are bounded ints by the events schema."""
        now = time.monotonic()
        if self.started_epoch is None:
            self.started_epoch = epoch
            self.progress_logged = now
            self.add_platform_line(
                _("Epoch %(e)s/%(n)s started: %(batches)s batches.")
                % {"e": epoch, "n": epochs, "batches": batches}
            )
            return
        if batches and now - self.progress_logged >= PROGRESS_LOG_EVERY_S:
            self.progress_logged = now
            self.add_platform_line(
                _("Epoch %(e)s/%(n)s: batch %(b)s of %(batches)s.")
                % {"e": epoch, "n": epochs, "b": batch, "batches": batches}
            )

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
