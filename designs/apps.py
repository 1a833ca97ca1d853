from __future__ import annotations

import threading

from django.apps import AppConfig
from django.conf import settings


class DesignsConfig(AppConfig):
    name = "designs"
    default_auto_field = "django.db.models.BigAutoField"


def start_validation_warm_up() -> None:
    """Load PyTorch's meta kernels off the request path, so the editor's first validation is fast.

    Called by server processes only (buildx/asgi.py): a one-shot command such as `migrate` must not
    start it, since a process that exits while a thread is inside torch aborts. The thread is not a
    daemon for the same reason: a server stopped during warm-up waits the few seconds it takes.
    """
    if getattr(settings, "BUILDX_VALIDATION_WARMUP", False):
        threading.Thread(target=_warm_up, name="validation-warm-up", daemon=False).start()
    else:
        freeze_heap()


def _warm_up() -> None:
    from designs import validation

    validation.warm_up()
    freeze_heap()


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
