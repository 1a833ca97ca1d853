"""What training announces to the apps above it, which connect in their ``AppConfig.ready()``.

Training never imports them: feedback, for one, listens to ``run_finished`` to queue a diagnosis.
"""

from __future__ import annotations

import logging

from django.dispatch import Signal

from training.models import Run

logger = logging.getLogger(__name__)

# Sent once a run has ended (succeeded, failed or cancelled) on the worker that ran it, with
# ``run``: the Run, read again from the database. Not sent when another worker took the run over.
run_finished = Signal()


def announce_run_finished(run: Run) -> None:
    """Send ``run_finished``; a receiver that raises is logged and never fails the run."""
    for receiver, result in run_finished.send_robust(sender=type(run), run=run):
        if isinstance(result, Exception):
            logger.error("Run %s: %r failed on run_finished", run.pk, receiver, exc_info=result)
