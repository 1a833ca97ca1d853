"""A run's life outside the worker: create (with the quotas), claim, stop, resume, the stale check.

Every status change is a compare-and-set on ``Run.status`` so that two workers, a stop button and
the stale check can race without a run ending up with two executors or two final states.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F, QuerySet, Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from buildx import logs, metrics
from designs import services as design_services
from designs.limits import limit_issues
from designs.models import CodeArtifact, Design, DesignVersion
from library import services as library_services
from library.models import Dataset, spec_id
from sandbox.engine import corpus_facts
from training.models import Run, RunArtifact
from training.services.artifacts import artifacts_remove, storage_used
from training.services.events import (
    emit_status,
    events_append,
    events_publish,
    platform_log,
    status_payload,
)

logger = logging.getLogger(__name__)


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


def design_expectation(report: dict) -> dict:
    """The validation report's promise that the harness checks before training."""
    totals = report.get("totals") or {}
    params = totals.get("params")
    output_shape = report.get("output_shape")
    expect: dict[str, Any] = {}
    if params is not None:
        expect["params"] = int(params)
    if output_shape is not None:
        expect["output_shape"] = [int(x) for x in output_shape]
    return expect


# --- Events ---------------------------------------------------------------------------------------
# --- Create ---------------------------------------------------------------------------------------


# The runs API's codes and fields for the design's blockers (designs/limits.py, the editor's report).
LIMIT_REFUSALS = {
    "epochs_over_limit": ("quota_epochs", "epochs"),
    "params_over_limit": ("quota_params", "params"),
}


def _check_quotas(*, owner, epochs: int, params: int | None, layers: list[dict]) -> None:
    for issue in limit_issues(epochs=epochs, params=params, layers=layers):
        code, field = LIMIT_REFUSALS[issue["code"]]
        raise RunRefused(code, f"{issue['message']} {issue['hint']}", field=field)
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


def run_dataset(*, owner: User, name: str) -> tuple[Dataset | None, str]:
    """(the uploaded dataset, its content hash) a run of a spec naming ``name`` trains on; (None, "") for a
    built-in set that is installed. Refused before anything is queued when the set is not on this server
    (with the operator's command), or the uploaded one is not the owner's to use (any more)."""
    if spec_id(name) is None:
        found = library_services.builtin_availability(name)
        if not found.available:
            raise RunRefused(
                "dataset_not_installed",
                library_services.not_installed_message(name, found.fix),
                field="dataset",
            )
        return None, ""
    dataset = library_services.dataset_by_spec_name(name)
    if dataset is None or not library_services.usable_by(owner, name):
        raise RunRefused(
            "dataset_not_found",
            _("That dataset does not exist or is not shared with you any more."),
            field="dataset",
        )
    return dataset, dataset.content_hash


def run_create(*, owner: User, version: DesignVersion, artifact: CodeArtifact, spec: Any = None) -> Run:
    """Create a queued run of ``artifact`` and send it to the training queue once committed.

    ``spec``, when given, is the design as the client shows it (the editor's Train sends its screen): a
    version with another spec is refused, so unsaved edits are never silently replaced by the saved ones.
    Raises ``RunRefused`` with the reason when the code is not ready or a quota says no.
    """
    if version.design.owner_id != owner.pk:
        raise RunRefused("not_found", _("That design version does not exist."), field="design_version")
    if spec is not None and not design_services.spec_matches_version(spec=spec, version=version):
        raise RunRefused(
            "unsaved_changes",
            _(
                "The design on your screen is not version %(n)s: save your changes first, then train "
                "the version they make."
            )
            % {"n": version.number},
            field="spec",
        )
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
    if version.spec.get("task") == corpus_facts.TASK_LM and spec_id(version.spec["dataset"]) is None:
        dataset_ref, dataset_hash = None, ""  # a built-in corpus: made by the worker on first use
    else:
        dataset_ref, dataset_hash = run_dataset(owner=owner, name=version.spec["dataset"])
    hp = dict(version.spec["hyperparameters"])  # a saved version's spec is normalised
    epochs = int(hp.get("epochs") or 1)
    params = design_expectation(version.report).get("params")
    with transaction.atomic():
        # Serialise one user's creates so two quick clicks cannot both pass the concurrency quota.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        layers = [row for row in version.report.get("layers", []) if not row.get("parent")]
        _check_quotas(owner=owner, epochs=epochs, params=params, layers=layers)
        run = Run.objects.create(
            owner=owner,
            design_version=version,
            code_artifact=artifact,
            dataset=run_dataset_key(version.spec),
            dataset_ref=dataset_ref,
            dataset_hash=dataset_hash,
            hyperparameters=hp,
            epochs=epochs,
            params=params,
            queued_at=timezone.now(),
        )
        rows = events_append(run_id=run.pk, events=[("run.status", status_payload(run))])
        # The request's line and the message it enqueues carry the run's id (and the owner's: a token
        # request is authenticated inside the view, after the request's ids were bound).
        logs.bind(run_id=run.pk, user_id=owner.pk)
        logger.info("Run created", extra={"dataset": run.dataset, "epochs": epochs})
        transaction.on_commit(lambda: _enqueue(run.pk))
        transaction.on_commit(lambda: events_publish(owner_id=owner.pk, run_id=run.pk, rows=rows))
    run.refresh_from_db()
    return run


def run_dataset_key(spec: dict) -> str:
    """What a run trains on: the spec's dataset, or for a language model its corpus and tokenizer
    ("addition", "python:bpe512"), whose cache the worker builds; an uploaded text keeps its name
    ("upload-17"): it was tokenised when it was checked."""
    if spec.get("task") == corpus_facts.TASK_LM and spec_id(spec["dataset"]) is None:
        hp = spec["hyperparameters"]
        return corpus_facts.dataset_key(
            spec["dataset"], tokenizer=hp["tokenizer"], vocab_size=hp.get("vocab_size")
        )
    return spec["dataset"]


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
    if queue_s is not None and run.attempt == 1:  # a resumed run's later waits are not the queue's
        metrics.RUN_QUEUE_WAIT.observe(queue_s)
    logger.info("Run claimed", extra={"worker": worker_id, "attempt": run.attempt, "queue_s": queue_s})
    rows = events_append(
        run_id=run.pk,
        events=[("run.status", status_payload(run, worker=worker_id))],
        updates={"timings": {"queue_s": queue_s}},
    )
    events_publish(owner_id=run.owner_id, run_id=run.pk, rows=rows)
    run.refresh_from_db()
    return run


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
            # Its run.done (cancelled) is the record: a run that never started has no log to speak in.
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
                    ),
                ],
            )
            events_publish(owner_id=run.owner_id, run_id=run.pk, rows=rows)
            return run
    if Run.objects.filter(pk=run.pk, status=Run.Status.RUNNING, stop_requested=False).update(
        stop_requested=True
    ):
        # The stop itself goes in the log: the child notices it at its next batch, which may be a while.
        rows = events_append(
            run_id=run.pk,
            events=[
                (
                    "run.log",
                    platform_log(
                        _(
                            "Stop requested: the run stops at its next batch and keeps a checkpoint of its "
                            "last completed epoch."
                        )
                    ),
                )
            ],
            updates={"log_lines": F("log_lines") + 1},
        )
        events_publish(owner_id=run.owner_id, run_id=run.pk, rows=rows)
        run.refresh_from_db()
        return run
    if Run.objects.filter(pk=run.pk, status=Run.Status.RUNNING, stop_requested=True).exists():
        run.refresh_from_db()
        return run  # asked already (a second click): nothing new to say
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


# Runs this process is executing, with their heartbeat threads. The stale check never takes a run from
# a heartbeat of its own process that is still alive: on a loaded machine a beat can be late, and the
# thread itself is the proof of life (other processes still go by the timeout).
_executing: dict[tuple[int, int], threading.Thread] = {}
_executing_lock = threading.Lock()


def executing_add(*, run_id: int, attempt: int, heartbeat: threading.Thread) -> None:
    with _executing_lock:
        _executing[(run_id, attempt)] = heartbeat


def executing_remove(*, run_id: int, attempt: int) -> None:
    with _executing_lock:
        _executing.pop((run_id, attempt), None)


def alive_here(*, run_id: int, attempt: int) -> bool:
    """Whether this process is executing the run's attempt and its heartbeat thread still runs."""
    with _executing_lock:
        thread = _executing.get((run_id, attempt))
    return thread is not None and thread.is_alive()


def runs_check_stale() -> list[int]:
    """Mark running runs whose heartbeat stopped as interrupted, then queue them again to resume.

    Safe to run from several workers at once: each step is a compare-and-set. A run that has been
    resumed automatically ``RUNS_MAX_AUTO_RESUMES`` times stays interrupted for the user to decide.
    Returns the ids marked interrupted.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.RUNS_HEARTBEAT_TIMEOUT)
    marked = []
    for run in Run.objects.filter(status=Run.Status.RUNNING, heartbeat_at__lt=cutoff):
        if alive_here(run_id=run.pk, attempt=run.attempt):
            continue  # late, not dead: its heartbeat thread runs in this very process
        if (
            Run.objects.filter(
                pk=run.pk, status=Run.Status.RUNNING, attempt=run.attempt, heartbeat_at=run.heartbeat_at
            ).update(status=Run.Status.INTERRUPTED, eta_seconds=None)
            != 1
        ):
            continue
        marked.append(run.pk)
        run.refresh_from_db()
        emit_status(run, cause="heartbeat", message=_("The worker training this run stopped answering."))
        if run.auto_resumes < settings.RUNS_MAX_AUTO_RESUMES:
            try:
                run_resume(run=run, automatic=True)
            except RunRefused:
                pass
    return marked


# --- Archive and delete ---------------------------------------------------------------------------


def _not_finished(run: Run, *, deleting: bool) -> RunRefused:
    """Why a run that may still train cannot be deleted (or archived) now, and what to do."""
    status = run.get_status_display().lower()
    if run.status == Run.Status.INTERRUPTED:
        message = (
            _("This run was interrupted and will resume by itself: stop it first, then delete it.")
            if deleting
            else _("This run was interrupted and will resume by itself: stop it first, then archive it.")
        )
    elif deleting:
        message = _(
            "This run is still %(status)s: stop it first (or wait for it to finish), then delete it."
        ) % {"status": status}
    else:
        message = _(
            "This run is still %(status)s: stop it first (or wait for it to finish), then archive it."
        ) % {"status": status}
    return RunRefused("not_finished", message)


def run_archive(*, run: Run) -> Run:
    """Hide a finished run from the default lists; it keeps everything and can be unarchived."""
    if not run.is_finished():
        raise _not_finished(run, deleting=False)
    Run.objects.filter(pk=run.pk, archived_at__isnull=True).update(archived_at=timezone.now())
    run.refresh_from_db()
    return run


def run_unarchive(*, run: Run) -> Run:
    Run.objects.filter(pk=run.pk).update(archived_at=None)
    run.refresh_from_db()
    return run


def run_delete(*, run: Run) -> None:
    """Delete a finished run with its events, metrics, feedback and its files in storage.

    A queued, running or interrupted run is refused: a worker may be writing to it. The status is
    checked under the row lock, so a resume that races the delete either comes first (and the delete
    is refused) or finds the run gone."""
    runs_delete(runs=Run.objects.filter(pk=run.pk))


def runs_delete(*, runs: QuerySet[Run]) -> int:
    """Delete these runs (all finished, else ``RunRefused`` and nothing is deleted) and, once the
    transaction commits, their files in storage. Returns the number of runs deleted."""
    with transaction.atomic():
        locked = list(runs.select_for_update().order_by("pk"))
        for run in locked:
            if not run.is_finished():
                raise _not_finished(run, deleting=True)
        ids = [run.pk for run in locked]
        names = list(
            RunArtifact.objects.filter(run_id__in=ids).exclude(file="").values_list("file", flat=True)
        )
        Run.objects.filter(pk__in=ids).delete()
        transaction.on_commit(lambda: artifacts_remove(names=names, run_ids=ids))
    return len(ids)


def design_runs_delete(*, design: Design, **_signal: Any) -> None:
    """The receiver of ``designs.signals.design_deleting``: the design's runs go with it, files too; an
    active one refuses the whole delete (raised inside the design's transaction, which rolls back)."""
    try:
        runs_delete(runs=Run.objects.filter(design_version__design=design))
    except RunRefused as exc:
        raise design_services.DesignDeleteRefused(
            _(
                "A run of this design is still queued, running or about to resume: stop it first, then delete the design."
            )
        ) from exc
