"""Finished runs logged to MLflow (issue 17), with mlflow-skinny's client, when MLFLOW_TRACKING_URI is set.

One MLflow run per BuildX run, in the experiment MLFLOW_EXPERIMENT_NAME: the hyperparameters as params,
the epoch curves as metric histories (step = epoch), the trusted test metrics as ``test_<name>``, tags
naming the user, course, design, version and dataset hash, and the script, the weights and the model card
as artifacts. ``run_finished`` queues the log_run_to_mlflow actor (default queue), which calls ``run_log``;
a failure there is logged and never touches the run. ``export_mlflow --since`` logs what was missed.

Sweeps: a sweep is an MLflow parent run (``sweep_parent``: opened by the log_sweep_to_mlflow actor when
the sweep starts, or by the first of its trials logged, and kept on the Sweep); ``run_log`` files a
trial's run under its sweep's parent (the ``mlflow.parentRunId`` tag, which MLflow's UI nests by), and
``sweep_close`` ends the parent with the sweep's best result (docs/contracts.md, section 9).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from accounts.models import Membership
from training import exports, predict
from training.models import Run, RunArtifact, Sweep, SweepTrial

logger = logging.getLogger(__name__)

BATCH_METRICS = 1000  # MLflow's log_batch takes at most 1000 metrics and 100 params at once
BATCH_PARAMS = 100
PARAM_MAX_CHARS = 6000  # MLflow's limit on one param's value
EPOCH_CURVES = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
RUN_STATUS: dict[str, str] = {  # BuildX's ended states as MLflow's
    Run.Status.SUCCEEDED: "FINISHED",
    Run.Status.FAILED: "FAILED",
    Run.Status.CANCELLED: "KILLED",
}
SWEEP_STATUS: dict[str, str] = {
    Sweep.Status.FINISHED: "FINISHED",
    Sweep.Status.STOPPED: "KILLED",
    Sweep.Status.FAILED: "FAILED",
}
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: its UI nests a child run under this run


def enabled() -> bool:
    return bool(settings.MLFLOW_TRACKING_URI)


def client() -> MlflowClient:
    """MLflow's client for MLFLOW_TRACKING_URI, set to give up fast.

    MLflow reads its HTTP settings from the environment at each request; its defaults (7 retries with
    exponential backoff, 120 s per request) would hold a worker for minutes while the server is down.
    A ``file:`` store is in maintenance mode in MLflow 3 and refused unless allowed: naming one in
    MLFLOW_TRACKING_URI is that choice (the SQL stores need the full mlflow package).
    """
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(settings.MLFLOW_TIMEOUT_SECONDS)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    if settings.MLFLOW_TRACKING_URI.startswith("file:"):
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI)


def experiment_id(mlflow: MlflowClient) -> str:
    experiment = mlflow.get_experiment_by_name(settings.MLFLOW_EXPERIMENT_NAME)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(settings.MLFLOW_EXPERIMENT_NAME)


def parent_run_create(*, name: str, tags: dict[str, str] | None = None) -> str:
    """Open an MLflow run to hold others (a sweep's trials): its id, for ``run_log(parent_run_id=)``."""
    mlflow = client()
    parent = mlflow.create_run(experiment_id(mlflow), run_name=name, tags=tags or {})
    return parent.info.run_id


def sweep_parent(sweep: Sweep) -> str:
    """The id of the sweep's MLflow parent run, opened and kept on the sweep the first time.

    Its params are the search space and the budget; its tags name the sweep, user and design. Two
    processes opening it at once (the sweep's actor and a trial's): the first one stored stays, the
    other's is deleted there. MLflow's errors propagate to the caller (an actor, which logs them)."""
    if sweep.mlflow_run_id:
        return sweep.mlflow_run_id
    version = sweep.design_version
    owner = sweep.owner
    opened = parent_run_create(
        name=f"sweep #{sweep.pk}: {version.design.name} v{version.number}",
        tags={
            "mlflow.user": owner.username,
            "buildx.sweep": str(sweep.pk),
            "buildx.user": owner.username,
            "buildx.user_id": str(owner.pk),
            "buildx.design": version.design.name,
            "buildx.design_id": str(version.design_id),
            "buildx.version": str(version.number),
            "buildx.study": sweep.study_name,
        },
    )
    mlflow = client()
    values: dict[str, Any] = {
        **{f"space.{name}": dim for name, dim in sweep.space.items()},
        "n_trials": sweep.n_trials,
        "concurrency": sweep.concurrency,
        "time_budget_s": sweep.time_budget_s,
    }
    mlflow.log_batch(
        opened,
        params=[
            Param(mlflow_key(k), json.dumps(v, sort_keys=True)[:PARAM_MAX_CHARS])
            for k, v in sorted(values.items())
        ],
    )
    experiment = mlflow.get_run(opened).info.experiment_id
    if not Sweep.objects.filter(pk=sweep.pk, mlflow_run_id="").update(
        mlflow_run_id=opened, mlflow_experiment_id=experiment
    ):
        try:
            mlflow.delete_run(opened)
        except Exception:
            logger.warning("Sweep %s: its second MLflow parent run %s stays behind", sweep.pk, opened)
    sweep.refresh_from_db(fields=["mlflow_run_id", "mlflow_experiment_id"])
    return sweep.mlflow_run_id


def sweep_close(sweep: Sweep) -> None:
    """An ended sweep's parent run: the best trial's result (``best_val_acc``, tag ``buildx.best_trial``)
    and the sweep's end as MLflow's status. Trials still stopping are filed under it as they end."""
    parent = sweep_parent(sweep)
    mlflow = client()
    ended = int((sweep.finished_at or sweep.created_at).timestamp() * 1000)
    best = sweep.best_trial
    if best is not None and best.value is not None:
        mlflow.log_metric(parent, "best_val_acc", float(best.value), timestamp=ended, step=best.number)
        mlflow.set_tag(parent, "buildx.best_trial", str(best.number))
        mlflow.set_tag(parent, "buildx.best_run", str(best.run_id))
    mlflow.set_terminated(parent, status=SWEEP_STATUS.get(sweep.status, "FINISHED"), end_time=ended)


def trial_parent(run: Run) -> str | None:
    """The MLflow parent run of the sweep whose trial ``run`` is (opened if need be); None for a run
    that is no sweep's trial."""
    trial = SweepTrial.objects.filter(run_id=run.pk).select_related("sweep__design_version__design").first()
    if trial is None:
        return None
    return sweep_parent(trial.sweep)


def mlflow_key(name: str) -> str:
    """A name MLflow accepts as a param, metric or tag key (letters, digits, _ - . space / :)."""
    return re.sub(r"[^\w\-. /:]", "_", str(name))[:250] or "_"


def run_tags(run: Run) -> dict[str, str]:
    version = run.design_version
    owner = run.owner
    courses = Membership.objects.filter(user=owner, role=Membership.Role.STUDENT).values_list(
        "course__name", flat=True
    )
    return {
        "mlflow.user": owner.username,
        "buildx.run": str(run.pk),
        "buildx.user": owner.username,
        "buildx.user_id": str(owner.pk),
        "buildx.course": ", ".join(sorted(courses)),
        "buildx.design": version.design.name,
        "buildx.design_id": str(version.design_id),
        "buildx.version": str(version.number),
        "buildx.dataset": run.dataset,
        "buildx.dataset_hash": run.dataset_hash,
        "buildx.status": run.status,
        "buildx.metrics_source": run.metrics_source,
        "buildx.code_source": run.code_artifact.source,
    }


def run_params(run: Run) -> list[Param]:
    values: dict[str, Any] = {
        **(run.hyperparameters or {}),
        "dataset": run.dataset,
        "epochs": run.epochs,
        "model_params": run.params,
        "device": run.device,
    }
    params = []
    for key, value in sorted(values.items(), key=lambda kv: str(kv[0])):
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        params.append(Param(mlflow_key(key), text[:PARAM_MAX_CHARS]))
    return params


def run_metrics(run: Run) -> list[Metric]:
    """Each epoch's curves (step = epoch), then the trusted test metrics' numbers as ``test_<name>``."""
    out = []
    for row in run.epoch_metrics.order_by("epoch"):
        stamp = int(row.created_at.timestamp() * 1000)
        for name in EPOCH_CURVES:
            value = getattr(row, name)
            if value is not None:
                out.append(Metric(name, float(value), stamp, row.epoch))
    finished = int((run.finished_at or run.created_at).timestamp() * 1000)
    for name, value in (run.metrics or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(Metric(mlflow_key(f"test_{name}"), float(value), finished, run.epoch))
    return out


def stage_artifacts(run: Run, folder: Path) -> list[tuple[Path, str]]:
    """The run's script, weights, model card and test metrics written under ``folder``: (file, MLflow
    folder) pairs. Stored files are streamed from Django's storage (a local disk or a bucket)."""
    staged = []
    stored = {a.kind: a for a in run.artifacts.filter(kind=RunArtifact.Kind.SCRIPT)}
    weights = predict.weights_artifact(run)
    for artifact, where in ((stored.get(RunArtifact.Kind.SCRIPT), "code"), (weights, "model")):
        if artifact is None:
            continue
        path = folder / where / Path(artifact.filename).name
        path.parent.mkdir(exist_ok=True)
        with artifact.file.open("rb") as source, path.open("wb") as target:
            shutil.copyfileobj(source, target)
        staged.append((path, where))
    if RunArtifact.Kind.SCRIPT not in stored and run.code_artifact.code:
        path = folder / "code" / "script.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(run.code_artifact.code)
        staged.append((path, "code"))
    if run.status == Run.Status.SUCCEEDED and run.design_version.spec.get("task") != "language_model":
        card = folder / "MODEL_CARD.md"
        card.write_text(exports.card_markdown(run))
        staged.append((card, ""))
    if run.metrics:
        test = folder / "test_metrics.json"
        test.write_text(json.dumps(run.metrics, indent=2, sort_keys=True, default=str))
        staged.append((test, ""))
    return staged


def run_log(*, run: Run, parent_run_id: str | None = None, replace: bool = False) -> str:
    """Log a finished run to MLflow and keep the MLflow run's id on it; the id.

    A run already logged is not logged twice (its id is returned), unless ``replace``: a run resumed and
    finished again is logged afresh and its earlier MLflow run deleted there. MLflow's errors propagate:
    the actor logs them, export_mlflow reports them. A run half-logged when the server went away is
    deleted there (best effort), so the next try starts clean. A sweep's trial goes under its sweep's
    parent run unless ``parent_run_id`` names another.
    """
    run = Run.objects.select_related("design_version__design", "owner", "code_artifact").get(pk=run.pk)
    if run.mlflow_run_id and not replace:
        return run.mlflow_run_id
    earlier = run.mlflow_run_id
    if parent_run_id is None:
        parent_run_id = trial_parent(run)  # a sweep's trial goes under its sweep
    mlflow = client()
    experiment = experiment_id(mlflow)
    tags = run_tags(run)
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id
    version = run.design_version
    started = run.started_at or run.created_at
    created = mlflow.create_run(
        experiment,
        start_time=int(started.timestamp() * 1000),
        tags=tags,
        run_name=f"{version.design.name} v{version.number} · run {run.pk}",
    )
    mlflow_run_id = created.info.run_id
    try:
        params, metrics = run_params(run), run_metrics(run)
        for i in range(0, len(params), BATCH_PARAMS):
            mlflow.log_batch(mlflow_run_id, params=params[i : i + BATCH_PARAMS])
        for i in range(0, len(metrics), BATCH_METRICS):
            mlflow.log_batch(mlflow_run_id, metrics=metrics[i : i + BATCH_METRICS])
        with tempfile.TemporaryDirectory(prefix="buildx-mlflow-") as folder:
            for path, where in stage_artifacts(run, Path(folder)):
                mlflow.log_artifact(mlflow_run_id, str(path), artifact_path=where or None)
        ended = run.finished_at or run.created_at
        mlflow.set_terminated(
            mlflow_run_id,
            status=RUN_STATUS.get(run.status, "FINISHED"),
            end_time=int(ended.timestamp() * 1000),
        )
    except Exception:
        try:
            mlflow.delete_run(mlflow_run_id)
        except Exception:
            logger.warning("Run %s: the half-logged MLflow run %s stays behind", run.pk, mlflow_run_id)
        raise
    Run.objects.filter(pk=run.pk).update(mlflow_run_id=mlflow_run_id, mlflow_experiment_id=experiment)
    if earlier:
        try:
            mlflow.delete_run(earlier)
        except Exception:
            logger.warning("Run %s: its earlier MLflow run %s stays behind", run.pk, earlier)
    return mlflow_run_id
