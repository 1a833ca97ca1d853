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

import dramatiq
from django.conf import settings

from buildx import logs


@dramatiq.actor(queue_name="training", max_retries=0, time_limit=settings.RUNS_ACTOR_TIME_LIMIT_MS)
def train_run(run_id: int) -> None:
    from training import services  # torch stays out of the web process

    logs.bind(run_id=run_id)
    run = services.run_claim(run_id=run_id)
    if run is None:
        return  # another delivery got there first, or the run was stopped while queued
    services.run_execute(run=run)
