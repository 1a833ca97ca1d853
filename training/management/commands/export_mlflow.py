"""manage.py export_mlflow --since YYYY-MM-DD: log to MLflow the finished runs it does not have yet.

For runs that ended while MLflow was down or before MLFLOW_TRACKING_URI was set. Runs already logged
(``Run.mlflow_run_id``) are skipped; one that fails is reported and the rest go on.
"""

from __future__ import annotations

import datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from training import mlflow_export
from training.models import Run

FINISHED = (Run.Status.SUCCEEDED, Run.Status.FAILED, Run.Status.CANCELLED)


def day(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--since takes a date as YYYY-MM-DD, not {text!r}") from None


class Command(BaseCommand):
    help = "Log finished runs that MLflow does not have yet (MLFLOW_TRACKING_URI), from a day on."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", required=True, type=day, help="the first day (YYYY-MM-DD, UTC)")

    def handle(self, *args: object, since: datetime.date, **options: object) -> None:
        if not mlflow_export.enabled():
            raise CommandError("MLFLOW_TRACKING_URI is not set: there is no MLflow to export to.")
        start = datetime.datetime.combine(since, datetime.time.min, tzinfo=datetime.UTC)
        runs = Run.objects.filter(status__in=FINISHED, finished_at__gte=start, mlflow_run_id="").order_by(
            "pk"
        )
        logged = failed = 0
        for run in runs.iterator():
            try:
                mlflow_run_id = mlflow_export.run_log(run=run)
            except Exception as exc:
                failed += 1
                self.stderr.write(f"run {run.pk}: not logged ({type(exc).__name__}: {exc})")
                continue
            logged += 1
            self.stdout.write(f"run {run.pk}: MLflow run {mlflow_run_id}")
        self.stdout.write(
            f"{logged} run(s) logged to {settings.MLFLOW_TRACKING_URI} since {since.isoformat()}"
            f" ({timezone.now():%Y-%m-%d %H:%M} UTC), {failed} failed."
        )
        if failed:
            raise CommandError(
                f"{failed} run(s) could not be logged: run the command again once MLflow answers."
            )
