"""Dramatiq actors of the training app: ids in, one service call.

``train_run`` is explicit about what Dramatiq's defaults get wrong for training: no retries (a
crashed run is resumed by the stale-run check from its checkpoint, not replayed from scratch), and a
time limit just above the sandbox's own wall limit (``TimeLimit`` cannot interrupt C code; the
sandbox kills the child at ``RUNS_MAX_WALL_SECONDS``, this is only the backstop). A second delivery
of the same message (Dramatiq redelivers a dead worker's messages after its heartbeat timeout) finds
the run no longer queued and returns: the claim is a compare-and-set.

The stale-run check is not an actor: ``training.middleware.StaleRunCheck`` runs it on a thread in
every worker process (see there why).
"""

from __future__ import annotations

import logging

import dramatiq
from django.conf import settings
from django.db import transaction

from buildx import logs
from training.models import Run, Sweep

logger = logging.getLogger(__name__)


@dramatiq.actor(queue_name="training", max_retries=0, time_limit=settings.RUNS_ACTOR_TIME_LIMIT_MS)
def train_run(run_id: int) -> None:
    from training import services  # torch stays out of the web process

    logs.bind(run_id=run_id)
    run = services.run_claim(run_id=run_id)
    if run is None:
        return  # another delivery got there first, or the run was stopped while queued
    services.run_execute(run=run)


# Backstop only: each request to MLflow gives up after MLFLOW_TIMEOUT_SECONDS, with no retries.
@dramatiq.actor(queue_name="default", max_retries=0, time_limit=5 * 60 * 1000)
def log_run_to_mlflow(run_id: int, parent_run_id: str | None = None) -> None:
    """Log a finished run to MLflow; MLflow down or refusing is a warning, never the run's failure."""
    from training import mlflow_export  # mlflow's client stays out of processes that never log

    logs.bind(run_id=run_id)
    run = Run.objects.filter(pk=run_id).first()
    if run is None or not run.is_finished():
        return  # deleted since, or resumed: the next finish queues it again
    try:
        mlflow_export.run_log(run=run, parent_run_id=parent_run_id, replace=True)  # resumed: log it afresh
    except Exception as exc:
        logger.warning("Run %s: not logged to MLflow (%s): %s", run_id, type(exc).__name__, exc)


# Backstop only, as above.
@dramatiq.actor(queue_name="default", max_retries=0, time_limit=5 * 60 * 1000)
def log_sweep_to_mlflow(sweep_id: int) -> None:
    """Open the sweep's MLflow parent run (a sweep that started), or end it with the best result (a sweep
    that ended); MLflow down or refusing is a warning, never the sweep's failure. A trial logged while
    the parent is missing opens it then (mlflow_export.trial_parent)."""
    from training import mlflow_export  # as above

    logs.bind(sweep_id=sweep_id)
    sweep = (
        Sweep.objects.select_related("design_version__design", "owner", "best_trial")
        .filter(pk=sweep_id)
        .first()
    )
    if sweep is None:
        return
    try:
        if sweep.is_running():
            mlflow_export.sweep_parent(sweep)
        else:
            mlflow_export.sweep_close(sweep)
    except Exception as exc:
        logger.warning("Sweep %s: not logged to MLflow (%s): %s", sweep_id, type(exc).__name__, exc)


def mlflow_log_queue(*, run: Run, **_signal: object) -> None:
    """Receives ``run_finished`` (TrainingConfig connects it): queue the run's logging to MLflow."""
    if settings.MLFLOW_TRACKING_URI:  # also a run logged before, resumed and finished again
        transaction.on_commit(lambda: log_run_to_mlflow.send(run.pk))
