"""Train a design from a terminal: `manage.py train DESIGN.json --follow`.

The same path as the Train button (design version -> compiled code -> run_create -> the training
queue), with the log streamed to the terminal under a progress bar. In embedded mode (no REDIS_URL)
there is no separate worker to send the run to, so this process trains it itself. Ctrl+C stops the run
(it saves a checkpoint and can be resumed from the run page).
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import OperationalError

from training.models import Run, RunEvent

DEMO_EMAIL = "demo@buildx.local"


class Command(BaseCommand):
    help = (
        "Train a design (a spec or starter JSON file) and, with --follow, stream its log with a progress bar."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "design", type=Path, help="A design spec as JSON (or a starter file with a 'spec')."
        )
        parser.add_argument("--user", default=DEMO_EMAIL, help="Whose run it is (email); created if missing.")
        parser.add_argument("--name", default="", help="Design name (default: the file name).")
        parser.add_argument("--epochs", type=int, default=None, help="Override the spec's epochs.")
        parser.add_argument("--follow", action="store_true", help="Stream the log until the run ends.")

    def handle(
        self, *args, design: Path, user: str, name: str, epochs: int | None, follow: bool, **opts
    ) -> None:
        from designs import services as design_services
        from designs.validation import SpecError
        from training import services

        try:
            raw = json.loads(design.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CommandError(f"Cannot read {design}: {exc}") from exc
        spec = raw.get("spec", raw) if isinstance(raw, dict) else raw
        if epochs is not None:
            spec.setdefault("hyperparameters", {})["epochs"] = epochs
        owner, _created = get_user_model().objects.get_or_create(email=user)
        try:
            made = design_services.design_create(owner=owner, name=name or design.stem, spec=spec)
        except SpecError as exc:
            raise CommandError(f"The design cannot be read: {exc}") from exc
        version = made.versions.get()
        try:
            artifact = design_services.artifact_compile(version=version)
            run = services.run_create(owner=owner, version=version, artifact=artifact)
        except design_services.DesignNotValid as exc:
            raise CommandError(f"The design has errors: {exc}") from exc
        except services.RunRefused as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"Run #{run.pk} queued: /runs/{run.pk}/")
        worker: threading.Thread | None = None
        if settings.EMBEDDED:
            # No worker process exists to take it: train here, in a thread, and follow from the database.
            from training.actors import train_run

            worker = threading.Thread(
                target=train_run.fn, args=(run.pk,), name=f"train-run-{run.pk}", daemon=True
            )
            worker.start()
            follow = True
        if not follow:
            return
        status = self.follow(run)
        if worker is not None:
            # The run's end is in the log before the thread has finished with it (its box closed, the
            # run announced): leaving then killed that work with the process, a box's folder left behind.
            worker.join(timeout=120)
            if worker.is_alive():
                self.stdout.write(
                    "The run has ended but its clean-up is still going; leaving now may leave its sandbox "
                    "folder behind, which the next training start removes."
                )
        if status != Run.Status.SUCCEEDED:
            sys.exit(1)

    def follow(self, run: Run) -> str:
        from training import services

        bar = ProgressBar(self.stdout, epochs=run.epochs)
        last = 0
        stopping = False
        while True:
            try:
                events = list(RunEvent.objects.filter(run_id=run.pk, seq__gt=last).order_by("seq")[:500])
                for event in events:
                    last = event.seq
                    data = event.payload
                    if event.kind == "run.log":
                        for line in data.get("lines", []):
                            bar.line(line)
                    elif event.kind in ("run.progress", "run.epoch"):
                        bar.update(data)
                    elif event.kind == "run.status":
                        bar.line(
                            f"[{data.get('status')}]"
                            + (f" on {data['device']}" if data.get("device") else "")
                        )
                    elif event.kind == "run.done":
                        bar.finish()
                        self.report(data)
                        return data["status"]
                if not events:
                    time.sleep(0.2)
            except OperationalError:
                # SQLite (embedded mode) locks tables while the training thread writes: read again.
                time.sleep(0.2)
            except KeyboardInterrupt:
                if stopping:
                    raise
                stopping = True
                bar.line(
                    "Stopping: the run saves a checkpoint at the next batch (Ctrl+C again to leave it running)."
                )
                services.run_stop(run=Run.objects.get(pk=run.pk))

    def report(self, data: dict) -> None:
        self.stdout.write(f"Run {data['status']}" + (f": {data['error']}" if data.get("error") else ""))
        metrics = data.get("metrics") or {}
        if metrics:
            self.stdout.write(
                "Test accuracy {accuracy:.4f}  precision {precision:.4f}  recall {recall:.4f}  "
                "F1 {f1:.4f}".format(**metrics)
            )


class ProgressBar:
    """One redrawn line under the log on a terminal; plain progress lines otherwise."""

    def __init__(self, out, *, epochs: int) -> None:
        self.out = out
        self.tty = hasattr(out, "isatty") and out.isatty()
        self.text = ""
        self.epochs = epochs

    def _clear(self) -> None:
        if self.tty and self.text:
            self.out.write("\r" + " " * len(self.text) + "\r", ending="")

    def line(self, line: str) -> None:
        self._clear()
        self.out.write(line)
        self._draw()

    def update(self, data: dict) -> None:
        width = max(10, min(40, shutil.get_terminal_size((80, 20)).columns - 40))
        done = float(data.get("progress") or 0)
        filled = int(width * done)
        eta = data.get("eta_seconds")
        eta_text = f" ETA {int(eta)}s" if isinstance(eta, (int, float)) else ""
        self._clear()
        self.text = (
            f"[{'#' * filled}{'-' * (width - filled)}] {done * 100:5.1f}%  "
            f"epoch {data.get('epoch', 0)}/{data.get('epochs') or self.epochs}{eta_text}"
        )
        self._draw()

    def _draw(self) -> None:
        if self.tty and self.text:
            self.out.write(self.text, ending="")
            self.out.flush()

    def finish(self) -> None:
        if self.tty and self.text:
            self.out.write("")
        elif self.text:
            self.out.write(self.text)
        self.text = ""
