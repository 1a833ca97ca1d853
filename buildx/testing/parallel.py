"""A pytest plugin (loaded with ``-p buildx.testing.parallel``): one Redis database per pytest-xdist worker.

pytest-django gives each xdist worker a test database of its own (``test_buildx_gw0``, ...), but Redis is
shared: the workers' Dramatiq queues, caches and channel layers would meet in one database, and a
training worker started by one pytest worker would take runs queued by the other, whose rows it cannot
see. This plugin moves worker N to the database after REDIS_URL's by N (modulo Redis's 16), before
pytest-django loads the settings, so the settings, and every process the tests start, see it. The
channel layer's prefix follows the database number (buildx/settings.py), so pub/sub is separate too.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

REDIS_DATABASES = 16  # Redis's default `databases`


def worker_redis_url(url: str, worker: str) -> str:
    """REDIS_URL for xdist worker ``gwN``: the same server, database (base + N) mod 16."""
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    index = int(worker.removeprefix("gw"))
    return parts._replace(path=f"/{(base + index) % REDIS_DATABASES}").geturl()


_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker and os.environ.get("REDIS_URL"):
    os.environ["REDIS_URL"] = worker_redis_url(os.environ["REDIS_URL"], _worker)
