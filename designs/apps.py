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


def _warm_up() -> None:
    from designs import validation

    validation.warm_up()
