"""Runs: one training of one code artifact, its ordered event stream, its epoch metrics, its files.

Job state lives here, in the database. The broker and the channel layer only carry messages: a
browser that missed some gets them from ``RunEvent`` by sequence number.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from training.expressions import JsonNumber


def mlflow_ui_url(*, experiment_id: str, run_id: str) -> str:
    """An MLflow run in the MLflow UI (MLFLOW_UI_URL), or "" where it is not logged or there is no UI."""
    if not (settings.MLFLOW_UI_URL and run_id and experiment_id):
        return ""
    return f"{settings.MLFLOW_UI_URL}/#/experiments/{experiment_id}/runs/{run_id}"


class Run(models.Model):
    """A training run.

    Status transitions (every one a compare-and-set in ``training.services``)::

        queued ──claim──> running ──> succeeded | failed | cancelled
          │                  │
          │ stop             └─ heartbeat stopped ─> interrupted ──resume──> queued
          v                                               │
        cancelled <───────────────── stop ────────────────┘
        cancelled | interrupted | failed (with a checkpoint) ──resume──> queued
    """

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")
        INTERRUPTED = "interrupted", _("Interrupted")

    class MetricsSource(models.TextChoices):
        # Measured by the platform: the design's compiled model, the run's weights, the test split,
        # in a box where no user code runs. What people are judged by.
        PLATFORM = "platform", _("Measured by BuildX")
        # Reported by code the platform could not measure (LLM code older than the weights contract):
        # shown on the run's own page, kept out of course overviews, CSVs and comparisons.
        SCRIPT = "script", _("Reported by the script")

    ACTIVE = (Status.QUEUED, Status.RUNNING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="runs")
    design_version = models.ForeignKey("designs.DesignVersion", on_delete=models.CASCADE, related_name="runs")
    code_artifact = models.ForeignKey("designs.CodeArtifact", on_delete=models.CASCADE, related_name="runs")
    dataset = models.CharField(_("dataset"), max_length=64)
    # An uploaded dataset (library), kept while runs that trained on it exist; null for a built-in set.
    dataset_ref = models.ForeignKey(
        "library.Dataset",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="runs",
        verbose_name=_("uploaded dataset"),
    )
    # SHA-256 of the images, labels and split the run trained on (set when it starts): reproducible.
    dataset_hash = models.CharField(_("dataset hash"), max_length=64, blank=True)
    # The spec's hyperparameters at creation time, for the compare page.
    hyperparameters = models.JSONField(default=dict, blank=True)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    epochs = models.PositiveIntegerField(default=0)
    epoch = models.PositiveIntegerField(default=0)  # completed epochs
    progress = models.FloatField(default=0.0)  # 0..1 over the whole run
    eta_seconds = models.FloatField(null=True, blank=True)
    device = models.CharField(max_length=64, blank=True)
    params = models.BigIntegerField(null=True, blank=True)
    isolation = models.JSONField(default=list, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    # When the run last entered the queue (creation or resume): orders the queue.
    queued_at = models.DateTimeField(null=True, blank=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Seconds spent running, summed over every execution (a resumed run has several).
    run_seconds = models.FloatField(default=0.0)
    # {"queue_s", "startup_s", "train_s", "evaluate_s", ...} of the latest execution.
    timings = models.JSONField(default=dict, blank=True)

    metrics = models.JSONField(default=dict, blank=True)  # the test result (see metrics_source)
    metrics_source = models.CharField(max_length=16, choices=MetricsSource.choices, blank=True)
    cause = models.CharField(max_length=32, blank=True)  # exception | contract | out_of_memory | ...
    error = models.TextField(blank=True)  # short, for a beginner
    traceback = models.TextField(blank=True)

    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker_id = models.CharField(max_length=128, blank=True)
    attempt = models.PositiveIntegerField(default=0)  # executions started (claims)
    auto_resumes = models.PositiveIntegerField(default=0)
    resume = models.BooleanField(default=False)  # the next execution starts from the last checkpoint
    stop_requested = models.BooleanField(default=False)
    checkpoint_epoch = models.PositiveIntegerField(null=True, blank=True)

    # Sequence numbers of RunEvent are allocated from here, under a row lock.
    last_seq = models.PositiveIntegerField(default=0)
    log_lines = models.PositiveIntegerField(default=0)  # stored log lines
    log_dropped = models.PositiveIntegerField(default=0)  # lines the coalescer did not keep
    # Set when the owner archives the run: hidden from the default lists (runs page, dashboard, API),
    # kept whole (events, metrics, files) and shown again on unarchive. Null: not archived.
    archived_at = models.DateTimeField(_("archived"), null=True, blank=True)
    # The run in MLflow once logged there (training/mlflow_export.py); blank otherwise.
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    mlflow_experiment_id = models.CharField(max_length=64, blank=True)
    # The owner's own words about the run (the runs table and the run page edit it; tags are RunTag rows).
    note = models.TextField(_("note"), blank=True)
    # The best validation accuracy over the run's epochs (the greatest EpochMetric.val_acc), kept by
    # events_append with every batch of epochs and after a resume drops epochs: the runs table sorts on
    # it without reading each run's epochs. Null while no epoch has a validation accuracy. On PostgreSQL
    # an index (owner, best_val_acc DESC NULLS LAST, id DESC) serves "best first" (migration 0009;
    # SQLite cannot write NULLS LAST in an index, so the model does not declare it).
    best_val_acc = models.FloatField(null=True, blank=True, editable=False)
    # The runs table's default number hyperparameters, as the table reads any hyperparameter
    # (``JsonNumber``: a JSON number as a float, NULL for text, a boolean or nothing), computed and stored
    # by the database whenever ``hyperparameters`` is written. A range filter or a sort on them reads a
    # float instead of parsing every run's JSON in every query: at 10,000 runs that parsing was most of
    # the time of a filtered page. Read by queries only (a saved instance has them deferred).
    hp_learning_rate = models.GeneratedField(
        expression=JsonNumber("hyperparameters", "learning_rate"),
        output_field=models.FloatField(),
        db_persist=True,
    )
    hp_batch_size = models.GeneratedField(
        expression=JsonNumber("hyperparameters", "batch_size"),
        output_field=models.FloatField(),
        db_persist=True,
    )
    STORED_HYPERPARAMETERS = ("learning_rate", "batch_size")  # a hp_<name> column each
    # The test accuracy BuildX measured, as ``selectors.accuracy_value`` reads it (a number in ``metrics``
    # when ``metrics_source`` is the platform's; NULL otherwise), stored by the database: the runs table's
    # "test" column sorts on it without parsing every run's metrics (migration 0012 indexes it per owner
    # on PostgreSQL, as best_val_acc).
    measured_accuracy = models.GeneratedField(
        expression=models.Case(
            models.When(metrics_source="platform", then=JsonNumber("metrics", "accuracy")),
            default=None,
            output_field=models.FloatField(),
        ),
        output_field=models.FloatField(),
        db_persist=True,
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            models.Index(fields=["status", "heartbeat_at"]),
            # The runs table's count of an owner's runs (archived or not) and its filter's datasets:
            # index-only scans instead of reading every run's wide row.
            models.Index(fields=["owner", "archived_at", "dataset"], name="run_owner_archived_dataset_idx"),
        ]

    def __str__(self) -> str:
        return f"Run {self.pk} ({self.status})"

    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def can_stop(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING, self.Status.INTERRUPTED)

    @property
    def can_delete(self) -> bool:
        """Finished runs only: a queued, running or interrupted one (which resumes by itself) is stopped
        first, so that no worker is left writing to a run that is gone."""
        return self.status in self.FINISHED

    @property
    def can_resume(self) -> bool:
        return self.status in (self.Status.CANCELLED, self.Status.INTERRUPTED) or (
            self.status == self.Status.FAILED and self.checkpoint_epoch is not None
        )

    @property
    def mlflow_url(self) -> str:
        """The run in the MLflow UI (MLFLOW_UI_URL), or "" where it is not logged or there is no UI."""
        return mlflow_ui_url(experiment_id=self.mlflow_experiment_id, run_id=self.mlflow_run_id)

    @property
    def progress_percent(self) -> int:
        return round(self.progress * 100)


class RunTag(models.Model):
    """A label the owner puts on a run ("baseline", "dropout"): the runs table filters by it. A row per
    tag, not a JSON list, so that filtering by a tag is an indexed join on PostgreSQL and SQLite alike."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(_("tag"), max_length=32, db_index=True)

    class Meta:
        ordering = ["run", "name"]
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="unique_run_tag")]

    def __str__(self) -> str:
        return f"{self.run_id} {self.name}"


class RunEvent(models.Model):
    """One event of a run's stream. ``seq`` is 1, 2, 3, ... per run with no gaps."""

    class Kind(models.TextChoices):
        STATUS = "run.status"
        LOG = "run.log"
        PROGRESS = "run.progress"
        EPOCH = "run.epoch"
        CHECKPOINT = "run.checkpoint"
        SAMPLE = "run.sample"  # a language model's text after an epoch
        DONE = "run.done"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=32, choices=Kind.choices)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="unique_run_event_seq")]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.kind}"

    def as_message(self) -> dict:
        """The shape sent over the WebSocket and returned by the API."""
        return {
            "type": self.kind,
            "run": self.run_id,
            "seq": self.seq,
            "at": self.created_at.isoformat() if self.created_at else None,
            "data": self.payload,
        }


class EpochMetric(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="epoch_metrics")
    epoch = models.PositiveIntegerField()
    train_loss = models.FloatField(null=True)
    train_acc = models.FloatField(null=True)
    val_loss = models.FloatField(null=True)
    val_acc = models.FloatField(null=True)
    lr = models.FloatField(null=True)
    seconds = models.FloatField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "epoch"]
        constraints = [models.UniqueConstraint(fields=["run", "epoch"], name="unique_run_epoch")]

    def __str__(self) -> str:
        return f"{self.run_id} epoch {self.epoch}"

    def as_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "train_acc": self.train_acc,
            "val_loss": self.val_loss,
            "val_acc": self.val_acc,
            "lr": self.lr,
            "seconds": self.seconds,
        }


def run_artifact_path(instance: RunArtifact, filename: str) -> str:
    return f"runs/{instance.run_id}/{filename}"


class RunArtifact(models.Model):
    """A file of a run in Django's storage (local disk or S3-compatible)."""

    class Kind(models.TextChoices):
        SCRIPT = "script", _("Script")
        RUNTIME = "runtime", _("Runtime module")
        CHECKPOINT_LAST = "checkpoint_last", _("Last checkpoint")
        CHECKPOINT_LAST_META = "checkpoint_last_meta", _("Last checkpoint (state)")
        CHECKPOINT_BEST = "checkpoint_best", _("Best checkpoint")
        CHECKPOINT_BEST_META = "checkpoint_best_meta", _("Best checkpoint (state)")
        MODEL = "model", _("Trained model")

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    file = models.FileField(upload_to=run_artifact_path, max_length=255)
    filename = models.CharField(max_length=128)
    size = models.BigIntegerField(default=0)
    epoch = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["run", "kind"]
        constraints = [models.UniqueConstraint(fields=["run", "kind"], name="unique_run_artifact_kind")]

    def __str__(self) -> str:
        return f"{self.run_id} {self.kind}"


class Sweep(models.Model):
    """A search over a design's hyperparameters: Optuna asks, each trial is an ordinary run.

    Status transitions (``training.services.sweeps``)::

        running ──budget spent, no trial active──> finished
           │
           ├── stop ──> stopped     (queued trials cancelled, running ones asked to stop)
           └── a quota or the design refuses a trial ──> failed (``error`` says why)
    """

    class Status(models.TextChoices):
        RUNNING = "running", _("Running")
        FINISHED = "finished", _("Finished")
        STOPPED = "stopped", _("Stopped")
        FAILED = "failed", _("Failed")

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sweeps")
    # The starting design: every trial is this version with the sampled hyperparameters.
    design_version = models.ForeignKey(
        "designs.DesignVersion", on_delete=models.CASCADE, related_name="sweeps"
    )
    # {"learning_rate": {"low": 1e-4, "high": 1.0, "log": true}, "batch_size": {"choices": [32, 64]}, ...}
    space = models.JSONField(_("search space"), default=dict)
    # Tried first, before TPE samples: [{"learning_rate": 0.01}, ...] (the design's own values, say).
    first = models.JSONField(_("tried first"), default=list, blank=True)
    n_trials = models.PositiveIntegerField(_("trials"))
    time_budget_s = models.PositiveIntegerField(_("time budget (seconds)"), null=True, blank=True)
    deadline = models.DateTimeField(null=True, blank=True)  # no trial starts after it
    concurrency = models.PositiveSmallIntegerField(_("trials at once"), default=2)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING, db_index=True)
    study_name = models.CharField(max_length=128, unique=True)
    best_trial = models.ForeignKey(
        "training.SweepTrial", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The version "make the best one a new version" saved, once.
    promoted_version = models.ForeignKey(
        "designs.DesignVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The MLflow parent run its trials' MLflow runs are filed under (training/mlflow_export.py), once
    # opened; blank otherwise.
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    mlflow_experiment_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Sweep {self.pk} ({self.status})"

    @property
    def mlflow_url(self) -> str:
        """The sweep's parent run in the MLflow UI, or ""."""
        return mlflow_ui_url(experiment_id=self.mlflow_experiment_id, run_id=self.mlflow_run_id)

    def is_running(self) -> bool:
        return self.status == self.Status.RUNNING


class SweepTrial(models.Model):
    """One Optuna trial of a sweep, trained as an ordinary run of its own design version."""

    class State(models.TextChoices):
        RUNNING = "running", _("Running")
        COMPLETE = "complete", _("Complete")
        PRUNED = "pruned", _("Pruned")
        FAILED = "failed", _("Failed")

    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="trials")
    number = models.PositiveIntegerField()  # Optuna's trial number in the study: 0, 1, 2, ...
    optuna_trial_id = models.PositiveIntegerField()
    params = models.JSONField(default=dict)
    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="sweep_trial")
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    value = models.FloatField(null=True, blank=True)  # the objective: the last epoch's val accuracy
    pruned_epoch = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["sweep", "number"]
        constraints = [models.UniqueConstraint(fields=["sweep", "number"], name="unique_sweep_trial_number")]

    def __str__(self) -> str:
        return f"Sweep {self.sweep_id} trial {self.number} ({self.state})"
