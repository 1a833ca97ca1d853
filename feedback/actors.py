"""Dramatiq actors of the feedback app (the ``default`` queue): ids in, service calls.

LLM calls can take tens of seconds, so they run here and the page learns of the result over the
WebSocket (``feedback.ready`` to ``user.<id>``). Retries are off: the diagnosis is deterministic and an
LLM failure is recorded as a note on the feedback, not retried behind the user's back (buildx.llm
already retries 429/5xx with backoff).
"""

from __future__ import annotations

import logging

import dramatiq

from buildx import logs

logger = logging.getLogger(__name__)


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=5 * 60 * 1000)
def feedback_run(run_id: int) -> None:
    from feedback import services
    from training.models import Run

    logs.bind(run_id=run_id)
    run = Run.objects.select_related("design_version", "code_artifact", "owner").filter(pk=run_id).first()
    if run is None or not run.is_finished():
        return
    feedback = services.feedback_diagnose(run=run)
    services.feedback_write(feedback=feedback)
    services.feedback_publish(feedback=feedback)
    logger.info("Feedback written", extra={"feedback": feedback.pk, "findings": len(feedback.findings or [])})
