"""Dramatiq middleware that runs the stale-run check on a thread in each worker process.

Why a thread and not a periodic actor re-enqueuing itself: the check must run even when every
worker thread is busy training (that is exactly when a sibling worker may die), and a self-enqueuing
message chain breaks for good the first time one message is lost with Redis. Every worker process
checks every ``RUNS_STALE_CHECK_INTERVAL`` seconds; the check is a compare-and-set, so several
workers checking at once mark and resume each run once. With no worker running nothing trains, so
nothing can go stale unnoticed.
"""

from __future__ import annotations

import logging
import threading

from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)


class StaleRunCheck(Middleware):
    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def after_worker_boot(self, broker, worker) -> None:
        self.stopping.clear()
        self.thread = threading.Thread(target=self._loop, name="buildx-stale-runs", daemon=True)
        self.thread.start()

    def before_worker_shutdown(self, broker, worker) -> None:
        self.stopping.set()

    def _loop(self) -> None:
        from django.conf import settings
        from django.db import close_old_connections

        while not self.stopping.wait(settings.RUNS_STALE_CHECK_INTERVAL):
            try:
                close_old_connections()
                from training.services import runs_check_stale

                marked = runs_check_stale()
                if marked:
                    logger.warning("Runs %s stopped sending heartbeats: marked interrupted", marked)
            except Exception:
                logger.exception("Stale-run check failed")
        from django.db import connection

        connection.close()
