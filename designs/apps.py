from __future__ import annotations

import logging
import threading
import time

from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger(__name__)


class DesignsConfig(AppConfig):
    name = "designs"
    default_auto_field = "django.db.models.BigAutoField"


_warm_up_lock = threading.Lock()
_warm_up_started = False


def start_validation_warm_up(*, serving: bool = False) -> None:
    """Load PyTorch's meta kernels off the request path, so the editor's first validation is fast.

    Server processes call it at start-up. buildx/asgi.py calls it on import, which is Daphne in
    production but also tests and tools that import the application: there it warms up only with DEBUG
    off. `manage.py serve` (what `make run` runs) is a server whatever DEBUG says and passes
    ``serving=True``: without it the first editor check waited 5-9 s on "Checking..." while torch was
    imported and its kernels loaded (bench/first_check.py). A one-shot command such as `migrate` must not
    start it, since a process that exits while a thread is inside torch aborts. The thread is not a
    daemon for the same reason: a server stopped during warm-up waits the few seconds it takes. Started
    once per process; BUILDX_VALIDATION_WARMUP=0 turns it off.
    """
    global _warm_up_started
    wanted = settings.BUILDX_VALIDATION_WARMUP and (serving or not settings.DEBUG)
    with _warm_up_lock:
        if _warm_up_started:
            return
        _warm_up_started = wanted
    if wanted:
        threading.Thread(target=_warm_up, name="validation-warm-up", daemon=False).start()
    else:
        freeze_heap()


def _warm_up() -> None:
    from designs import validation  # imports torch: the cost this thread takes off the first request

    started = time.monotonic()
    validation.warm_up()
    freeze_heap()
    logger.info(
        "Validation warmed up in %.1f s: the editor's first check is fast.", time.monotonic() - started
    )


def freeze_heap() -> None:
    """Move everything loaded so far (Django, torch) out of the garbage collector's sight.

    A server's heap is mostly modules and their objects, which live as long as the process; the
    collector's full passes walked all of them and stopped the event loop for about 200 ms each, a few
    times a minute, while hundreds of WebSockets streamed (bench/stream.py). Frozen objects are never
    freed, so only what is loaded at start-up belongs here.
    """
    import gc

    gc.collect()
    gc.freeze()
