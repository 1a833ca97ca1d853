"""The dataset library's background job (the `default` queue): the check of an uploaded zip."""

from __future__ import annotations

import dramatiq
from django.conf import settings

from library import services


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=settings.DATASET_CHECK_TIME_LIMIT_S * 1000)
def check_dataset(dataset_id: int) -> None:
    """Check one uploaded zip; the row's status (checking -> ready | rejected) says how it went."""
    services.dataset_check(dataset_id=dataset_id)
