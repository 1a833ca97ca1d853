"""Runs logged to MLflow (issue 17), read back with MLflow's own client from a ``file:`` tracking store:
the back-fill command, the run page's link, and (with PostgreSQL and Redis) a real run through a real
worker, and a tracking server that never answers, which must not fail the run."""

from __future__ import annotations

import datetime
import io
import json
import socket
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from mlflow.tracking import MlflowClient

from accounts.models import Course, Membership
from training import mlflow_export
from training.actors import log_run_to_mlflow, log_sweep_to_mlflow
from training.models import EpochMetric, Run, RunArtifact, Sweep
from training.services import artifact_store, sweeps
from training.tests.conftest import make_design
from training.tests.ops_support import WorkerGroup, wait_for
from training.tests.test_ops_metrics import queues  # noqa: F401 - the fixture: empty training and default queues
from training.tests.test_predict_limits import finished_run, predict_storage  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("predict_storage")  # MEDIA_ROOT in the test's own folder

CURVES = [  # (epoch, train_loss, val_acc)
    (1, 1.9, 0.41),
    (2, 0.8, 0.77),
    (3, 0.4, 0.88),
]


@pytest.fixture
def tracking(settings, tmp_path, monkeypatch) -> MlflowClient:
    settings.MLFLOW_TRACKING_URI = f"file:{tmp_path / 'mlruns'}"
    settings.MLFLOW_EXPERIMENT_NAME = "BuildX test"
    # Our client() allows a file: store for this process; the reading client needs the same.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI)


def ended_run(owner, tmp_path, *, finished: datetime.datetime) -> Run:
    """A succeeded run with its curves, test metrics, script and weights stored, finished then."""
    run = finished_run(owner, tmp_path)
    run.hyperparameters = {"learning_rate": 0.01, "batch_size": 32, "optimizer": "adam"}
    run.epochs = run.epoch = 3
    run.dataset_hash = "ab" * 32
    run.params = 1234
    run.metrics = {
        "accuracy": 0.875,
        "f1": 0.86,
        "class_names": ["0", "1"],
        "confusion_matrix": [[1, 0], [0, 1]],
    }
    run.metrics_source = Run.MetricsSource.PLATFORM
    run.started_at = finished - datetime.timedelta(minutes=2)
    run.finished_at = finished
    run.save()
    for epoch, loss, acc in CURVES:
        EpochMetric.objects.create(run=run, epoch=epoch, train_loss=loss, val_acc=acc, lr=0.01)
    artifact_store(
        run=run, kind=RunArtifact.Kind.SCRIPT, filename="tiny.py", content=run.code_artifact.code.encode()
    )
    return run


def test_export_mlflow_logs_the_runs_finished_since_the_day_and_mlflow_reads_them_back(
    alice,
    carol,
    tracking,
    tmp_path,
):
    course = Course.objects.create(name="Deep learning 101")
    Membership.objects.create(course=course, user=alice, role=Membership.Role.STUDENT)
    Membership.objects.create(course=course, user=carol, role=Membership.Role.INSTRUCTOR)
    recent = ended_run(alice, tmp_path, finished=datetime.datetime(2026, 3, 2, 10, tzinfo=datetime.UTC))
    older = ended_run(alice, tmp_path, finished=datetime.datetime(2026, 2, 27, 10, tzinfo=datetime.UTC))

    out = io.StringIO()
    call_command("export_mlflow", "--since", "2026-03-01", stdout=out)
    assert "1 run(s) logged" in out.getvalue()
    recent.refresh_from_db()
    older.refresh_from_db()
    assert recent.mlflow_run_id and older.mlflow_run_id == ""

    logged = tracking.get_run(recent.mlflow_run_id)
    assert logged.info.status == "FINISHED"
    assert logged.info.end_time == int(recent.finished_at.timestamp() * 1000)
    assert logged.data.params["learning_rate"] == "0.01"
    assert logged.data.params["optimizer"] == "adam"
    assert logged.data.params["epochs"] == "3"
    assert logged.data.metrics["test_accuracy"] == 0.875
    assert "test_confusion_matrix" not in logged.data.metrics  # lists go in test_metrics.json
    tags = logged.data.tags
    assert tags["buildx.user"] == alice.username
    assert tags["buildx.course"] == "Deep learning 101"
    assert tags["buildx.design"] == recent.design_version.design.name
    assert tags["buildx.version"] == str(recent.design_version.number)
    assert tags["buildx.dataset_hash"] == "ab" * 32
    history = tracking.get_metric_history(recent.mlflow_run_id, "val_acc")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (e, a) for e, _, a in CURVES
    ]
    assert len(tracking.get_metric_history(recent.mlflow_run_id, "train_loss")) == 3

    paths = {a.path for a in tracking.list_artifacts(recent.mlflow_run_id)}
    assert {"code", "model", "MODEL_CARD.md", "test_metrics.json"} <= paths
    weights = Path(
        tracking.download_artifacts(recent.mlflow_run_id, "model/model.safetensors", str(tmp_path))
    )
    with recent.artifacts.get(kind=RunArtifact.Kind.MODEL).file.open("rb") as stored:
        assert weights.read_bytes() == stored.read()
    script = Path(tracking.download_artifacts(recent.mlflow_run_id, "code/tiny.py", str(tmp_path)))
    assert script.read_text() == recent.code_artifact.code
    card = Path(tracking.download_artifacts(recent.mlflow_run_id, "MODEL_CARD.md", str(tmp_path)))
    assert f"run {recent.pk}" in card.read_text()

    # Again: nothing is logged twice; an earlier day takes the older run too.
    again = io.StringIO()
    call_command("export_mlflow", "--since", "2026-02-01", stdout=again)
    assert "1 run(s) logged" in again.getvalue()
    older.refresh_from_db()
    assert older.mlflow_run_id not in ("", recent.mlflow_run_id)
    experiment = tracking.get_experiment_by_name("BuildX test")
    assert len(tracking.search_runs([experiment.experiment_id])) == 2


def test_a_sweep_files_its_trials_under_an_mlflow_parent_run(alice, tracking, tmp_path):
    run = ended_run(alice, tmp_path, finished=datetime.datetime(2026, 3, 2, tzinfo=datetime.UTC))
    parent = mlflow_export.parent_run_create(name="Sweep: learning rate", tags={"buildx.sweep": "7"})
    child = mlflow_export.run_log(run=run, parent_run_id=parent)
    assert tracking.get_run(child).data.tags["mlflow.parentRunId"] == parent
    assert tracking.get_run(parent).data.tags["buildx.sweep"] == "7"


def test_a_sweep_opens_an_mlflow_parent_run_and_files_every_trial_under_it(
    alice,
    alice_client,
    tracking,
    tmp_path,
    settings,
    django_capture_on_commit_callbacks,
    queues,  # noqa: F811
):
    settings.SWEEPS_SQLITE_PATH = str(tmp_path / "optuna.sqlite3")
    settings.MLFLOW_UI_URL = "https://mlflow.school.example"
    version, _artifact = make_design(alice, epochs=2)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(
            "/api/v1/sweeps/",
            {
                "design_version": version.pk,
                "space": {"learning_rate": {"low": 0.001, "high": 0.1, "log": True}},
                "n_trials": 2,
                "concurrency": 2,
            },
            content_type="application/json",
        )
    assert response.status_code == 201, response.content
    sweep = Sweep.objects.get()
    assert (
        sweep.mlflow_run_id == ""
        and 'id="sweep-mlflow"' not in alice_client.get(f"/sweeps/{sweep.pk}/").content.decode()
    )

    log_sweep_to_mlflow(sweep.pk)  # what the default queue's worker does with the message
    sweep.refresh_from_db()
    parent = tracking.get_run(sweep.mlflow_run_id)
    assert parent.info.experiment_id == sweep.mlflow_experiment_id and parent.info.status == "RUNNING"
    assert parent.data.tags["buildx.sweep"] == str(sweep.pk)
    assert parent.data.tags["buildx.design"] == version.design.name
    assert json.loads(parent.data.params["space.learning_rate"]) == {"high": 0.1, "log": True, "low": 0.001}
    assert parent.data.params["n_trials"] == "2"
    page = alice_client.get(f"/sweeps/{sweep.pk}/").content.decode()
    link = (
        f"https://mlflow.school.example/#/experiments/{sweep.mlflow_experiment_id}/runs/{sweep.mlflow_run_id}"
    )
    assert f'id="sweep-mlflow" href="{link}"' in page
    assert alice_client.get(f"/api/v1/sweeps/{sweep.pk}/").json()["mlflow_url"] == link

    # Both trials end as their workers leave them (one better than the other); each run, logged by the
    # run_finished actor, goes under the sweep's parent run. The sweep then ends and closes its parent.
    trials = list(sweep.trials.order_by("number").select_related("run"))
    for trial, val_acc in zip(trials, (0.62, 0.91), strict=True):
        run = trial.run
        Run.objects.filter(pk=run.pk).update(
            status=Run.Status.SUCCEEDED,
            epoch=2,
            started_at=run.created_at,
            finished_at=run.created_at + datetime.timedelta(minutes=1),
        )
        for epoch in (1, 2):
            EpochMetric.objects.create(run=run, epoch=epoch, train_loss=1.0 / epoch, val_acc=val_acc)
        run.refresh_from_db()
        with django_capture_on_commit_callbacks(execute=True):
            sweeps.trial_finished(run=run)
        log_run_to_mlflow(run.pk)
    sweep.refresh_from_db()
    assert sweep.status == Sweep.Status.FINISHED and sweep.best_trial == trials[1]
    log_sweep_to_mlflow(sweep.pk)  # queued when the sweep finished

    children = tracking.search_runs(
        [sweep.mlflow_experiment_id], filter_string=f"tags.mlflow.parentRunId = '{sweep.mlflow_run_id}'"
    )
    assert sorted(c.info.run_id for c in children) == sorted(
        Run.objects.get(pk=t.run_id).mlflow_run_id for t in trials
    )
    assert sorted(int(c.data.tags["buildx.run"]) for c in children) == sorted(t.run_id for t in trials)
    parent = tracking.get_run(sweep.mlflow_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_acc"] == 0.91 and parent.data.tags["buildx.best_trial"] == str(
        trials[1].number
    )


def test_mlflow_down_never_fails_a_sweep_and_its_first_trial_logged_opens_the_parent(
    alice,
    alice_client,
    tracking,
    tmp_path,
    settings,
    django_capture_on_commit_callbacks,
    caplog,
    queues,  # noqa: F811
):
    settings.SWEEPS_SQLITE_PATH = str(tmp_path / "optuna.sqlite3")
    store = settings.MLFLOW_TRACKING_URI
    version, _artifact = make_design(alice, epochs=2)
    with django_capture_on_commit_callbacks(execute=True):
        sweep = sweeps.sweep_create(
            owner=alice, version=version, space={"learning_rate": {"low": 0.001, "high": 0.1}}, n_trials=1
        )
    # A tracking server that refuses connections (nothing listens on the port).
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    settings.MLFLOW_TRACKING_URI = f"http://127.0.0.1:{closed.getsockname()[1]}"
    settings.MLFLOW_TIMEOUT_SECONDS = 2
    try:
        log_sweep_to_mlflow(sweep.pk)
    finally:
        closed.close()
    sweep.refresh_from_db()
    assert sweep.status == Sweep.Status.RUNNING and sweep.mlflow_run_id == "" and sweep.error == ""
    assert f"Sweep {sweep.pk}: not logged to MLflow" in caplog.text

    # MLflow back: the trial's run, logged first, opens the sweep's parent run and goes under it.
    settings.MLFLOW_TRACKING_URI = store
    run = sweep.trials.get().run
    Run.objects.filter(pk=run.pk).update(status=Run.Status.CANCELLED, finished_at=run.created_at)
    log_run_to_mlflow(run.pk)
    sweep.refresh_from_db()
    run.refresh_from_db()
    assert sweep.mlflow_run_id and run.mlflow_run_id
    assert tracking.get_run(run.mlflow_run_id).data.tags["mlflow.parentRunId"] == sweep.mlflow_run_id
    assert tracking.get_run(sweep.mlflow_run_id).data.tags["buildx.sweep"] == str(sweep.pk)


def test_a_run_resumed_and_finished_again_is_logged_afresh(alice, tracking, tmp_path):
    run = ended_run(alice, tmp_path, finished=datetime.datetime(2026, 3, 2, tzinfo=datetime.UTC))
    Run.objects.filter(pk=run.pk).update(status=Run.Status.CANCELLED)
    run.refresh_from_db()
    first = mlflow_export.run_log(run=run)
    assert tracking.get_run(first).info.status == "KILLED"
    assert mlflow_export.run_log(run=run) == first  # logged once

    EpochMetric.objects.create(run=run, epoch=4, train_loss=0.3, val_acc=0.9, lr=0.01)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED, epoch=4)
    run.refresh_from_db()
    second = mlflow_export.run_log(run=run, replace=True)
    run.refresh_from_db()
    assert second != first and run.mlflow_run_id == second
    assert tracking.get_run(second).info.status == "FINISHED"
    assert len(tracking.get_metric_history(second, "val_acc")) == 4
    assert tracking.get_run(first).info.lifecycle_stage == "deleted"


def test_export_mlflow_needs_a_tracking_uri_and_a_day(settings):
    settings.MLFLOW_TRACKING_URI = ""
    with pytest.raises(CommandError, match="MLFLOW_TRACKING_URI"):
        call_command("export_mlflow", "--since", "2026-03-01")
    settings.MLFLOW_TRACKING_URI = "file:/nowhere"
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        call_command("export_mlflow", "--since", "last week")


def test_the_run_page_links_the_logged_run_in_the_mlflow_ui(
    alice,
    alice_client,
    settings,
    tmp_path,
):
    run = ended_run(alice, tmp_path, finished=datetime.datetime(2026, 3, 2, tzinfo=datetime.UTC))
    settings.MLFLOW_UI_URL = "https://mlflow.school.example"
    page = alice_client.get(f"/runs/{run.pk}/").content.decode()
    assert "Open in MLflow" not in page  # not logged yet

    Run.objects.filter(pk=run.pk).update(mlflow_run_id="0a1b2c", mlflow_experiment_id="5")
    page = alice_client.get(f"/runs/{run.pk}/").content.decode()
    assert 'href="https://mlflow.school.example/#/experiments/5/runs/0a1b2c"' in page
    assert "Open in MLflow" in page

    settings.MLFLOW_UI_URL = ""
    assert "Open in MLflow" not in alice_client.get(f"/runs/{run.pk}/").content.decode()
    settings.MLFLOW_UI_URL = "https://mlflow.school.example"
    korean = alice_client.get(f"/runs/{run.pk}/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "MLflow에서 열기" in korean


# --- Through real worker processes (PostgreSQL and Redis) ----------------------------------------------


worker_only = pytest.mark.skipif(not settings.REDIS_URL, reason="worker processes need Redis and PostgreSQL")


def train_through_a_worker(client, owner, tmp_path: Path, *, mlflow_env: dict[str, str]):
    """A 2-epoch digits run posted to the API and trained by a real worker that also takes the default
    queue (feedback, MLflow) with MLflow's settings in ``mlflow_env``; (the run when finished, the worker)."""
    group = WorkerGroup(tmp_path, processes=1, queues=["training", "default"], extra_env=mlflow_env)
    client.force_login(owner)
    version, artifact = make_design(owner, epochs=2)
    response = client.post(
        "/api/v1/runs/",
        {"design_version": version.pk, "code_artifact": artifact.pk},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    run = Run.objects.get(pk=response.json()["id"])
    wait_for(lambda: Run.objects.get(pk=run.pk).is_finished(), timeout=600, what="the run")
    return run, group


@pytest.mark.slow
@worker_only
@pytest.mark.usefixtures("queues")
def test_a_run_trained_by_a_real_worker_is_logged_to_mlflow(
    transactional_db, alice, client, settings, tmp_path, monkeypatch
):
    settings.MEDIA_ROOT = tmp_path / "media"
    store = f"file:{tmp_path / 'mlruns'}"
    run, group = train_through_a_worker(
        client,
        alice,
        tmp_path,
        mlflow_env={"MLFLOW_TRACKING_URI": store, "MLFLOW_EXPERIMENT_NAME": "Workers"},
    )
    try:
        wait_for(
            lambda: Run.objects.get(pk=run.pk).mlflow_run_id,
            timeout=300,
            what=f"the MLflow run id\n{group.log_text()[-3000:]}",
        )
    finally:
        group.stop()
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, (run.error, run.traceback)

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    tracking = MlflowClient(tracking_uri=store)
    logged = tracking.get_run(run.mlflow_run_id)
    assert logged.info.experiment_id == run.mlflow_experiment_id
    assert logged.info.status == "FINISHED"
    assert logged.data.params["epochs"] == "2"
    assert logged.data.metrics["test_accuracy"] == pytest.approx(run.metrics["accuracy"])
    stored_curve = list(run.epoch_metrics.order_by("epoch").values_list("epoch", "val_acc"))
    history = sorted(tracking.get_metric_history(run.mlflow_run_id, "val_acc"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == stored_curve and len(stored_curve) == 2
    weights = Path(tracking.download_artifacts(run.mlflow_run_id, "model/model.safetensors", str(tmp_path)))
    with run.artifacts.get(kind=RunArtifact.Kind.MODEL).file.open("rb") as stored:
        assert weights.read_bytes() == stored.read()


@pytest.mark.slow
@worker_only
@pytest.mark.usefixtures("queues")
def test_a_tracking_server_that_never_answers_does_not_fail_the_run(
    transactional_db, alice, client, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path / "media"
    # A port that takes connections and never answers: the worst kind of "down" (a refused connection
    # fails at once; this one must be given up on by the timeout).
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        run, group = train_through_a_worker(
            client, alice, tmp_path, mlflow_env={"MLFLOW_TRACKING_URI": uri, "MLFLOW_TIMEOUT_SECONDS": "2"}
        )
        try:
            wait_for(
                lambda: "not logged to MLflow" in group.log_text(),
                timeout=300,
                what=f"the MLflow actor's warning\n{group.log_text()[-3000:]}",
            )
        finally:
            group.stop()
    finally:
        silent.close()
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, (run.error, run.traceback)
    assert run.mlflow_run_id == "" and run.error == ""
    lines = [
        json.loads(line) for line in group.log_path.read_text().splitlines() if "not logged to MLflow" in line
    ]
    assert [(line["level"], line["run_id"]) for line in lines] == [("warning", run.pk)]
    assert "Timeout" in lines[0]["event"]
