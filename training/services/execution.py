"""Executing a claimed run on the worker: the box, the heartbeat, the trusted evaluation of what the
child left, and the one final status.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from buildx import metrics
from designs import compiler
from designs.models import CodeArtifact
from library import services as library_services
from sandbox import checks as sandbox_checks
from sandbox import files as sandbox_files
from sandbox import runner as sandbox_runner
from training import signals
from training.models import EpochMetric, Run, RunArtifact
from training.services import sweeps
from training.services.artifacts import artifact_store, dataset_caches, model_max_bytes, restore_checkpoints
from training.services.events import events_append, events_publish, run_best_refresh
from training.services.lifecycle import design_expectation, executing_add, executing_remove
from training.services.sink import EventSink, Outcome

logger = logging.getLogger(__name__)


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
        executing_add(run_id=run.pk, attempt=attempt, heartbeat=self.thread)

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
        executing_remove(run_id=self.run_id, attempt=self.attempt)


def _final_status(result_status: str) -> Run.Status:
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
    # The heartbeat first: opening a box takes seconds on a busy machine, and a run claimed without a
    # beat for longer than the timeout would look dead to the stale check.
    heartbeat = _Heartbeat(run, attempt)
    try:
        # The box's own run folder, as a code check's: the same layout behind every mount.
        box = sandbox_runner.open_box(gpu=settings.RUNS_GPU)
    except BaseException:
        heartbeat.close()
        raise
    run_dir = box.run_dir
    trial = sweeps.trial_of(run)
    sink = EventSink(
        run=run,
        attempt=attempt,
        run_dir=run_dir,
        on_epoch=(lambda epoch, val_acc: sweeps.trial_epoch(trial=trial, epoch=epoch, val_acc=val_acc))
        if trial is not None
        else None,
    )
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
        resume_epoch = restore_checkpoints(run, run_dir) if run.resume else None
        if run.resume:
            if resume_epoch is not None:
                # Epochs after the checkpoint will be trained again: their old metrics go.
                EpochMetric.objects.filter(run=run, epoch__gt=resume_epoch).delete()
                note = _("Resuming from the checkpoint of epoch %(n)d.") % {"n": resume_epoch}
            else:
                note = _("No checkpoint was saved before the interruption: starting again from epoch 1.")
                EpochMetric.objects.filter(run=run).delete()
            run_best_refresh(run_id=run.pk)
            sink.add_platform_line(note)
        hp = run.hyperparameters
        # From Train to the end of the first epoch can take many seconds: the log says what happens.
        sink.add_platform_line(
            _("Preparing the data (%(dataset)s) and starting the sandbox…") % {"dataset": run.dataset}
        )
        training_cache, whole_cache = dataset_caches(run.dataset)
        if not run.dataset_hash:  # a built-in set: the cache file this run reads, hashed once per cache
            run.dataset_hash = library_services.cache_hash(whole_cache)
            Run.objects.filter(pk=run.pk).update(dataset_hash=run.dataset_hash)
        config: dict[str, Any] = {
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
            should_stop=lambda: heartbeat.should_stop() or sink.pruned,
            wall_limit_s=settings.RUNS_MAX_WALL_SECONDS,
            trusted_code=run.code_artifact.source == CodeArtifact.Source.COMPILED,
            box=box,
        )
    except Exception as exc:
        logger.exception("Run %s failed in the platform", run.pk)
        failure = ("platform", _("The platform could not run this training: %(e)s") % {"e": exc}, "")
        t_ready = time.monotonic()
    finally:
        sink.close()

    lost = heartbeat.lost.is_set() or sink.lost
    t_trained = time.monotonic()
    test_metrics: dict | None = None
    source = ""
    try:
        if not lost and failure is None and result is not None and result.status == "succeeded":
            try:
                if trusted:
                    test_metrics, failure = _store_model_and_evaluate(run, run_dir, whole_cache)
                    source = Run.MetricsSource.PLATFORM
                else:
                    _store_model(run, run_dir)
                    test_metrics, source = sink.outcome.result or {}, Run.MetricsSource.SCRIPT
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
            metrics.RUN_DURATION.labels(status="lost").observe(elapsed)
            metrics.RUNS_ENDED.labels(status="lost", cause="").inc()
        else:
            timings = {
                "setup_s": t_ready - t0,
                "sandbox_s": t_trained - t_ready,
                "evaluate_s": time.monotonic() - t_trained,
            }
            status, cause = _finish(run=run, attempt=attempt, result=result, failure=failure,
                                    outcome=sink.outcome, metrics=test_metrics, source=source,
                                    timings=timings)  # fmt: skip
            metrics.RUN_DURATION.labels(status=status).observe(elapsed)
            metrics.RUNS_ENDED.labels(status=status, cause=cause).inc()
            logger.info(
                "Run finished", extra={"status": status, "cause": cause, "seconds": round(elapsed, 3)}
            )
    finally:
        # The heartbeat beats on through the evaluation and the finish: a run that is storing and
        # measuring its model is alive, and must not be taken for dead and trained again.
        heartbeat.close()
        box.close()
    run.refresh_from_db()
    if not lost:
        signals.announce_run_finished(run)  # feedback listens: it queues the diagnosis
        try:
            sweeps.trial_finished(run=run)  # a sweep's trial tells its study; the sweep queues the next
        except Exception:  # the run itself is recorded; a sweep that cannot move on is logged for us
            logger.exception("Run %s: the sweep could not move on", run.pk)
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


def run_evaluate(*, run: Run, weights: sandbox_files.ReadableFile, dataset: Path) -> tuple[dict | None, str]:
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
    outcome: Outcome,
    metrics: dict | None,
    source: str,
    timings: dict,
) -> tuple[str, str]:
    """Record the final status; returns (status, cause) as stored."""
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
    return str(status), updates["cause"]
