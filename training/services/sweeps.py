"""Sweeps: Optuna samples a design's hyperparameters, each trial trains as an ordinary run.

- The study lives in the project's database (Optuna's ``RDBStorage``: PostgreSQL, or in embedded mode an
  SQLite file under var/), so every worker on every host reads and writes the same study.
- A trial is a new version of the design (the starting version with the sampled hyperparameters, saved
  through the designs services) trained by ``run_create``: the training queue, the quotas, the runs
  pages, all as for a run the user started.
- The worker that receives a trial's epochs reports each epoch's validation accuracy to the study; the
  median pruner may answer "prune", and the run is stopped with the ordinary stop (``EventSink``).
- When a trial's run ends, the study is told, and the sweep queues the next trials up to its cap.
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import timedelta
from typing import Any

import optuna
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from accounts.models import User
from buildx import live
from designs import catalog
from designs import services as design_services
from designs.models import DesignVersion
from training.models import EpochMetric, Run, Sweep, SweepTrial
from training.services.lifecycle import RunRefused, run_create, run_stop

logger = logging.getLogger(__name__)

optuna.logging.set_verbosity(optuna.logging.WARNING)

# What a sweep may vary, and how: a float range (log or not), an int range, or a list of choices.
# Bounds come from the designs catalog, so a trial can never ask for a value the editor would refuse.
SPACE_KINDS = {
    "learning_rate": "float",
    "weight_decay": "float",
    "dropout": "float",  # the p of every Dropout layer in the design
    "epochs": "int",
    "batch_size": "choices",
}
DROPOUT_MAX = 0.95
MAX_CHOICES = 12
# A beginner's sweep is small: one finished trial is enough of a bar to prune a hopeless one against.
PRUNER_STARTUP_TRIALS = 1


class SweepRefused(RunRefused):
    """A sweep request the platform will not take; same shape as a refused run."""


# --- The study ------------------------------------------------------------------------------------


def storage_url() -> str:
    """Optuna's storage: the database Django uses (its test database under tests), or the SQLite file."""
    s = connection.settings_dict
    if connection.vendor == "postgresql":
        auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
        return f"postgresql+psycopg://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"
    return f"sqlite:///{settings.SWEEPS_SQLITE_PATH}"


def study_storage() -> optuna.storages.RDBStorage:
    # NullPool: no connection outlives a call, so nothing holds the database open between epochs (or
    # keeps a test database from being dropped). A call opens one; locally that is a millisecond.
    from sqlalchemy.pool import NullPool

    return optuna.storages.RDBStorage(storage_url(), engine_kwargs={"poolclass": NullPool})


def _pruner() -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=0)


def _study(sweep: Sweep) -> optuna.Study:
    sampler = optuna.samplers.TPESampler(
        n_startup_trials=max(2, min(10, sweep.n_trials // 2)),
        constant_liar=True,  # trials running at once are not all sent to the same point
        seed=sweep.pk * 1000 + sweep.trials.count(),
    )
    return optuna.load_study(
        study_name=sweep.study_name, storage=study_storage(), sampler=sampler, pruner=_pruner()
    )


def _distributions(space: dict) -> dict[str, optuna.distributions.BaseDistribution]:
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for name, dim in space.items():
        if "choices" in dim:
            out[name] = optuna.distributions.CategoricalDistribution(list(dim["choices"]))
        elif SPACE_KINDS[name] == "int":
            out[name] = optuna.distributions.IntDistribution(int(dim["low"]), int(dim["high"]))
        else:
            out[name] = optuna.distributions.FloatDistribution(
                float(dim["low"]), float(dim["high"]), log=bool(dim.get("log"))
            )
    return out


# --- Checking a request ----------------------------------------------------------------------------


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SweepRefused(
            "invalid", _("Give numbers for the range of %(name)s.") % {"name": name}, field="space"
        )
    return float(value)


def space_clean(*, space: Any, spec: dict) -> dict:
    """The search space, checked against the catalog's bounds and the design; ``SweepRefused`` otherwise."""
    if not isinstance(space, dict) or not space:
        raise SweepRefused("invalid", _("Pick at least one hyperparameter to vary."), field="space")
    clean: dict[str, dict] = {}
    for name, dim in space.items():
        if name not in SPACE_KINDS:
            raise SweepRefused(
                "invalid",
                _("%(name)s cannot be varied; pick from: %(names)s.")
                % {"name": str(name)[:40], "names": ", ".join(SPACE_KINDS)},
                field="space",
            )
        if not isinstance(dim, dict):
            raise SweepRefused(
                "invalid", _("Give a range or choices for %(name)s.") % {"name": name}, field="space"
            )
        if name == "dropout" and not _dropout_layers(spec):
            raise SweepRefused(
                "invalid",
                _("This design has no Dropout layer, so there is no dropout to vary."),
                field="space",
            )
        if name == "dropout":
            lo, hi = 0.0, DROPOUT_MAX
        else:
            param = catalog.HYPERPARAMETER_BY_NAME[name]
            lo, hi = float(param.min or 0.0), float(param.max or 0.0)
        if name == "epochs":
            hi = min(hi, float(settings.RUNS_MAX_EPOCHS))
        if SPACE_KINDS[name] == "choices":
            choices = dim.get("choices")
            if (
                not isinstance(choices, list)
                or not 1 <= len(choices) <= MAX_CHOICES
                or not all(isinstance(c, int) and not isinstance(c, bool) and lo <= c <= hi for c in choices)
            ):
                raise SweepRefused(
                    "invalid",
                    _("Give %(name)s as 1 to %(n)d whole numbers between %(lo)g and %(hi)g.")
                    % {"name": name, "n": MAX_CHOICES, "lo": lo, "hi": hi},
                    field="space",
                )
            clean[name] = {"choices": sorted(set(choices))}
            continue
        low, high = _number(dim.get("low"), name), _number(dim.get("high"), name)
        log = bool(dim.get("log"))
        if not lo <= low < high <= hi or (log and low <= 0):
            raise SweepRefused(
                "invalid",
                _("The range of %(name)s must lie between %(lo)g and %(hi)g, low below high%(log)s.")
                % {"name": name, "lo": lo, "hi": hi, "log": _(", above 0 on a log scale") if log else ""},
                field="space",
            )
        if SPACE_KINDS[name] == "int":
            clean[name] = {"low": int(low), "high": int(high)}
        else:
            clean[name] = {"low": low, "high": high, "log": log}
    return clean


def first_clean(*, first: Any, space: dict) -> list[dict]:
    """Points tried before TPE samples (the design's own values, a hunch): each inside the space."""
    if first in (None, ""):
        return []
    if not isinstance(first, list) or len(first) > 10:
        raise SweepRefused("invalid", _("Give at most 10 points to try first."), field="first")
    out = []
    for point in first:
        if not isinstance(point, dict) or set(point) - set(space):
            raise SweepRefused(
                "invalid", _("A point to try first names only the hyperparameters you vary."), field="first"
            )
        for name, value in point.items():
            if not _inside(space[name], value):
                raise SweepRefused(
                    "invalid",
                    _(
                        "%(value)s is outside the range of %(name)s: give a value inside the range you set for it."
                    )
                    % {"value": str(value)[:20], "name": name},
                    field="first",
                )
        out.append(dict(point))
    return out


def _inside(dim: dict, value: Any) -> bool:
    if "choices" in dim:
        return value in dim["choices"] and not isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return dim["low"] <= value <= dim["high"]


def _dropout_layers(spec: dict) -> list[str]:
    from designs.edits import walk_layers

    return [
        layer["name"] for layer in walk_layers(spec.get("layers") or []) if layer.get("type") == "Dropout"
    ]


# --- Create, advance, stop, promote ----------------------------------------------------------------


def sweep_create(
    *,
    owner: User,
    version: DesignVersion,
    space: Any,
    n_trials: int | None,
    time_budget_s: int | None = None,
    concurrency: int = 2,
    first: Any = None,
) -> Sweep:
    """Create a running sweep and its study; its first trials are queued once the transaction commits."""
    if version.design.owner_id != owner.pk:
        raise SweepRefused("not_found", _("That design version does not exist."), field="design_version")
    if not version.is_valid:
        raise SweepRefused("invalid", _("This version has errors: fix them before trying variations."))
    clean = space_clean(space=space, spec=version.spec)
    points = first_clean(first=first, space=clean)
    if n_trials is None and time_budget_s is None:
        raise SweepRefused("invalid", _("Give a budget: a number of trials or a time."), field="n_trials")
    n = min(int(n_trials or settings.SWEEPS_MAX_TRIALS), settings.SWEEPS_MAX_TRIALS)
    if n < 1:
        raise SweepRefused("invalid", _("A sweep needs at least one trial."), field="n_trials")
    concurrency = max(1, min(int(concurrency), settings.SWEEPS_MAX_CONCURRENCY))
    study_name = f"buildx-sweep-{uuid.uuid4().hex}"
    optuna.create_study(study_name=study_name, storage=study_storage(), direction="maximize")
    with transaction.atomic():
        sweep = Sweep.objects.create(
            owner=owner,
            design_version=version,
            space=clean,
            first=points,
            n_trials=n,
            time_budget_s=time_budget_s,
            deadline=timezone.now() + timedelta(seconds=time_budget_s) if time_budget_s else None,
            concurrency=concurrency,
            study_name=study_name,
        )
        if points:
            study = optuna.load_study(study_name=study_name, storage=study_storage())
            for point in points:
                study.enqueue_trial(point)
        transaction.on_commit(lambda: sweep_advance(sweep_id=sweep.pk))
        _mlflow_queue(sweep.pk)
    return sweep


def _mlflow_queue(sweep_id: int) -> None:
    """With MLFLOW_TRACKING_URI set, a sweep that starts opens its MLflow parent run and one that ends
    closes it, on a worker (the log_sweep_to_mlflow actor), once the transaction commits."""
    if settings.MLFLOW_TRACKING_URI:
        from training.actors import log_sweep_to_mlflow

        transaction.on_commit(lambda: log_sweep_to_mlflow.send(sweep_id))


def _trial_spec(version: DesignVersion, params: dict) -> dict:
    edits: list[dict] = []
    for name, value in params.items():
        if name == "dropout":
            edits += [
                {"op": "set_layer_param", "layer": layer, "param": "p", "value": round(float(value), 4)}
                for layer in _dropout_layers(version.spec)
            ]
        else:
            edits.append({"op": "set_hyperparameter", "name": name, "value": value})
    return design_services.spec_edit(spec=version.spec, edits=edits)


def sweep_advance(*, sweep_id: int) -> Sweep:
    """Queue trials until the sweep has ``concurrency`` active ones or its budget is spent; finish it
    when nothing is left to run. Safe to call from any process at any time: it works under the sweep's
    row lock and only ever adds what is missing."""
    started: list[tuple[SweepTrial, Run]] = []
    with transaction.atomic():
        sweep = Sweep.objects.select_for_update().get(pk=sweep_id)
        if not sweep.is_running():
            return sweep
        trials = list(sweep.trials.select_related("run", "sweep"))
        for trial in trials:  # a trial whose run ended without a word to us (stopped while queued)
            if trial.state == SweepTrial.State.RUNNING and trial.run.is_finished():
                _trial_tell(trial, trial.run)
        active = sum(1 for t in trials if t.run.status in (*Run.ACTIVE, Run.Status.INTERRUPTED))
        total = len(trials)
        out_of_time = sweep.deadline is not None and timezone.now() >= sweep.deadline
        while not out_of_time and total < sweep.n_trials and active < sweep.concurrency:
            busy = Run.objects.filter(owner_id=sweep.owner_id, status__in=Run.ACTIVE).count()
            if busy >= settings.RUNS_MAX_CONCURRENT_PER_USER:
                break  # the user's own quota: the next run of theirs that ends calls us again
            try:
                started.append(_trial_start(sweep))
            except RunRefused as refused:
                sweep.status, sweep.error, sweep.finished_at = (
                    Sweep.Status.FAILED,
                    refused.message,
                    timezone.now(),
                )
                sweep.save(update_fields=["status", "error", "finished_at"])
                _mlflow_queue(sweep.pk)
                break
            total += 1
            active += 1
        if sweep.is_running() and active == 0 and (total >= sweep.n_trials or out_of_time):
            sweep.status, sweep.finished_at = Sweep.Status.FINISHED, timezone.now()
            sweep.save(update_fields=["status", "finished_at"])
            _mlflow_queue(sweep.pk)
        transaction.on_commit(lambda: sweep_publish(sweep_id=sweep_id))
    return sweep


def _trial_id(study: optuna.Study, number: int) -> int:
    """The storage's id of the study's trial ``number``: what ``optuna.Trial`` needs in another process."""
    storage = study_storage()
    return storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), number
    )


def _trial_start(sweep: Sweep) -> tuple[SweepTrial, Run]:
    study = _study(sweep)
    trial = study.ask(_distributions(sweep.space))
    try:
        spec = _trial_spec(sweep.design_version, trial.params)
        version, _created = design_services.design_save_version(design=sweep.design_version.design, spec=spec)
        if _created:
            # Where the version came from, in both languages, for the design's version history.
            values = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()
            )
            label = {}
            for lang in ("en", "ko"):
                with translation.override(lang):
                    label[lang] = _("sweep #%(sweep)s, trial %(n)s: %(values)s") % {
                        "sweep": sweep.pk,
                        "n": trial.number,
                        "values": values,
                    }
            DesignVersion.objects.filter(pk=version.pk).update(
                applied_suggestion={"sweep": sweep.pk, "trial": trial.number, "label": label}
            )
        artifact = design_services.artifact_compile(version=version)
        with transaction.atomic():  # a refusal leaves no half-made trial behind
            run = run_create(owner=sweep.owner, version=version, artifact=artifact)
    except (RunRefused, design_services.EditRefused, design_services.DesignNotValid) as exc:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if isinstance(exc, RunRefused):
            raise
        raise SweepRefused(
            "invalid",
            _(
                "A sampled trial does not make a valid design: narrow the ranges (a smaller batch size, "
                "fewer epochs) and start the sweep again."
            ),
        ) from exc
    row = SweepTrial.objects.create(
        sweep=sweep,
        number=trial.number,
        optuna_trial_id=_trial_id(study, trial.number),
        params=trial.params,
        run=run,
    )
    return row, run


def trial_of(run: Run) -> SweepTrial | None:
    """The sweep trial a run trains, with its sweep, or None for an ordinary run."""
    return SweepTrial.objects.filter(run=run).select_related("sweep").first()


def trial_epoch(*, trial: SweepTrial, epoch: int, val_acc: float) -> bool:
    """Report a trial's epoch to the study (on the worker that receives the run's events): True when the
    pruner says this trial is hopeless, which marks it pruned; the caller stops the run."""
    study = _study(trial.sweep)
    optuna_trial = optuna.Trial(study, trial.optuna_trial_id)
    try:
        optuna_trial.report(float(val_acc), step=int(epoch))
        prune = optuna_trial.should_prune()
    except Exception:  # the study is advice: an unreachable one never fails the run
        logger.exception("Sweep %s trial %s: could not report epoch %s", trial.sweep_id, trial.number, epoch)
        return False
    if prune:
        SweepTrial.objects.filter(pk=trial.pk, state=SweepTrial.State.RUNNING).update(
            state=SweepTrial.State.PRUNED, pruned_epoch=epoch
        )
    sweep_publish(sweep_id=trial.sweep_id)
    return prune


def trial_finished(*, run: Run) -> None:
    """A run ended: tell the study how its trial went and queue what comes next; a run that is no
    trial frees one of its owner's concurrent runs, which a sweep of theirs may have waited for."""
    trial = trial_of(run)
    if trial is not None:
        _trial_tell(trial, run)
        sweep_advance(sweep_id=trial.sweep_id)
    waiting = Sweep.objects.filter(owner_id=run.owner_id, status=Sweep.Status.RUNNING)
    if trial is not None:
        waiting = waiting.exclude(pk=trial.sweep_id)
    for sweep_id in waiting.values_list("pk", flat=True):
        sweep_advance(sweep_id=sweep_id)


def _trial_tell(trial: SweepTrial, run: Run) -> None:
    last = EpochMetric.objects.filter(run=run, val_acc__isnull=False).order_by("-epoch").first()
    study = _study(trial.sweep)
    if trial.state == SweepTrial.State.PRUNED:
        state, value = SweepTrial.State.PRUNED, last.val_acc if last else None
        told: dict[str, Any] = {"state": optuna.trial.TrialState.PRUNED}
    elif run.status == Run.Status.SUCCEEDED and last is not None:
        state, value = SweepTrial.State.COMPLETE, float(last.val_acc or 0.0)
        told = {"values": value}
    else:
        state, value = SweepTrial.State.FAILED, None
        told = {"state": optuna.trial.TrialState.FAIL}
    try:
        study.tell(trial.number, **told, skip_if_finished=True)
    except Exception:
        logger.exception("Sweep %s trial %s: could not tell the study", trial.sweep_id, trial.number)
    SweepTrial.objects.filter(pk=trial.pk).update(state=state, value=value)
    best = (
        SweepTrial.objects.filter(sweep_id=trial.sweep_id, state=SweepTrial.State.COMPLETE)
        .order_by("-value", "number")
        .first()
    )
    Sweep.objects.filter(pk=trial.sweep_id).update(best_trial=best)


def sweep_stop(*, sweep: Sweep) -> Sweep:
    """Stop a running sweep: no new trial starts, queued ones are cancelled, running ones asked to stop."""
    if (
        Sweep.objects.filter(pk=sweep.pk, status=Sweep.Status.RUNNING).update(
            status=Sweep.Status.STOPPED, finished_at=timezone.now()
        )
        != 1
    ):
        sweep.refresh_from_db()
        raise SweepRefused(
            "not_stoppable",
            _("This sweep has already ended (%(status)s).") % {"status": sweep.get_status_display()},
        )
    _mlflow_queue(sweep.pk)
    for trial in sweep.trials.select_related("run").filter(
        run__status__in=(*Run.ACTIVE, Run.Status.INTERRUPTED)
    ):
        try:
            run = run_stop(run=trial.run)
        except RunRefused:
            continue  # it ended meanwhile
        if run.is_finished():
            _trial_tell(trial, run)
    sweep.refresh_from_db()
    sweep_publish(sweep_id=sweep.pk)
    return sweep


def sweep_promote(*, sweep: Sweep) -> DesignVersion:
    """Make the best trial's design the design's newest version (the designs services' save)."""
    best = sweep.best_trial
    if best is None:
        raise SweepRefused("no_best", _("No trial has finished yet, so there is no best one to keep."))
    version, _created = design_services.design_save_version(
        design=sweep.design_version.design, spec=best.run.design_version.spec
    )
    Sweep.objects.filter(pk=sweep.pk).update(promoted_version=version)
    sweep.refresh_from_db()
    return version


# --- What pages and the API show -------------------------------------------------------------------


def trial_view(trial: SweepTrial, curve: list[dict]) -> dict:
    run = trial.run
    return {
        "number": trial.number,
        "params": trial.params,
        "state": trial.state,
        "state_display": trial.get_state_display(),
        "value": trial.value,
        "pruned_epoch": trial.pruned_epoch,
        "run": run.pk,
        "run_url": f"/runs/{run.pk}/",
        "run_status": run.status,
        "version": run.design_version.number,
        "epoch": run.epoch,
        "epochs": run.epochs,
        "test_accuracy": (run.metrics or {}).get("accuracy"),
        "curve": curve,
    }


def sweep_view(*, sweep: Sweep) -> dict:
    """The sweep as the API and the page show it: its trials with their val-accuracy curves, and the
    best-so-far curve (the best objective after each finished trial, in trial order)."""
    trials = list(sweep.trials.select_related("run__design_version"))
    curves: dict[int, list[dict]] = {}
    for m in EpochMetric.objects.filter(run_id__in=[t.run_id for t in trials]).order_by("epoch"):
        curves.setdefault(m.run_id, []).append({"epoch": m.epoch, "val_acc": m.val_acc})
    best_so_far, best = [], None
    for trial in trials:
        if trial.state == SweepTrial.State.COMPLETE and trial.value is not None:
            best = trial.value if best is None else max(best, trial.value)
        if best is not None and trial.state != SweepTrial.State.RUNNING:
            best_so_far.append({"trial": trial.number, "best": best})
    return {
        "id": sweep.pk,
        "url": f"/sweeps/{sweep.pk}/",
        "design": sweep.design_version.design_id,
        "design_version": sweep.design_version_id,
        "version_number": sweep.design_version.number,
        "space": sweep.space,
        "first": sweep.first,
        "n_trials": sweep.n_trials,
        "time_budget_s": sweep.time_budget_s,
        "deadline": sweep.deadline.isoformat() if sweep.deadline else None,
        "concurrency": sweep.concurrency,
        "status": sweep.status,
        "status_display": sweep.get_status_display(),
        "error": sweep.error,
        "study_name": sweep.study_name,
        "best_trial": next((t.number for t in trials if t.pk == sweep.best_trial_id), None),
        "promoted_version": sweep.promoted_version_id,
        "created_at": sweep.created_at.isoformat(),
        "finished_at": sweep.finished_at.isoformat() if sweep.finished_at else None,
        "mlflow_run_id": sweep.mlflow_run_id,  # the trials' parent run in MLflow; "" until opened
        "mlflow_url": sweep.mlflow_url,
        "trials": [trial_view(t, curves.get(t.run_id, [])) for t in trials],
        "best_so_far": best_so_far,
    }


def sweep_publish(*, sweep_id: int) -> None:
    """Tell the owner's pages that the sweep moved (``sweep.update``): they fetch it again."""
    sweep = Sweep.objects.filter(pk=sweep_id).values("owner_id", "status").first()
    if sweep is not None:
        live.publish(
            live.user_group(sweep["owner_id"]),
            {"type": "sweep.update", "sweep": sweep_id, "status": sweep["status"]},
        )
