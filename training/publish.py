"""Publishing run events to the browser from sync code (the worker), with one loop per process.

``async_to_sync(layer.group_send)`` from a plain thread builds an event loop and a Redis pool per
call. Here one daemon thread owns one event loop and the channel layer (so one Redis pool) for the
life of the process, and one sender task drains a queue in order: messages of a run leave in the
order they were stored. Publishing never raises: the database is the record, the WebSocket is a fast
path, and a browser that misses messages fetches them by sequence number.

Embedded mode (the in-memory channel layer) has no Redis: the layer lives on the web server's event
loop, so the consumer registers that loop here and messages are handed to it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

# Bounded so a long Redis outage cannot grow the worker's memory without limit; what is dropped
# here is still in the database.
QUEUE_LIMIT = 10_000

_lock = threading.Lock()
_publisher: _Publisher | None = None
_server_loop: asyncio.AbstractEventLoop | None = None


def register_server_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Embedded mode: the consumer tells us which loop owns the in-memory channel layer."""
    global _server_loop
    _server_loop = loop


def _uses_server_loop() -> bool:
    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
    return backend.endswith("InMemoryChannelLayer")


class _Publisher:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.queue: asyncio.Queue | None = None
        self.sent = 0
        self.failed = 0
        self.thread = threading.Thread(target=self._run, name="buildx-publisher", daemon=True)
        self.thread.start()
        self.ready.wait(timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.queue = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.loop.create_task(self._sender())
        self.ready.set()
        self.loop.run_forever()

    async def _sender(self) -> None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        assert self.queue is not None
        while True:
            group, message = await self.queue.get()
            try:
                await asyncio.wait_for(
                    layer.group_send(group, message), timeout=settings.RUNS_PUBLISH_TIMEOUT
                )
                self.sent += 1
            except Exception as exc:  # Redis down or slow: the events are stored, move on
                self.failed += 1
                logger.warning("Could not publish to %s: %s", group, exc)

    def _put(self, item: tuple[str, dict]) -> None:
        assert self.queue is not None
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.failed += 1
            logger.warning("Publish queue full; dropping a message for %s", item[0])

    def submit(self, group: str, message: dict) -> None:
        self.loop.call_soon_threadsafe(self._put, (group, message))

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every message submitted so far has been handed to the layer (tests, commands)."""
        done = threading.Event()

        async def _wait() -> None:
            assert self.queue is not None
            while not self.queue.empty():
                await asyncio.sleep(0.01)
            done.set()

        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(_wait()))
        done.wait(timeout)


def _get_publisher() -> _Publisher:
    global _publisher
    with _lock:
        if _publisher is None or not _publisher.thread.is_alive():
            _publisher = _Publisher()
        return _publisher


def publish(group: str, message: dict[str, Any]) -> None:
    """Send ``message`` to a channel group, in order, without waiting and without raising."""
    try:
        if _uses_server_loop():
            loop = _server_loop
            if loop is None or loop.is_closed():
                return  # no WebSocket has connected to this process yet: nobody to tell
            from channels.layers import get_channel_layer

            asyncio.run_coroutine_threadsafe(get_channel_layer().group_send(group, message), loop)
            return
        _get_publisher().submit(group, message)
    except Exception as exc:  # publishing must never fail a run
        logger.warning("Could not publish to %s: %s", group, exc)


def flush(timeout: float = 5.0) -> None:
    if _publisher is not None and not _uses_server_loop():
        _publisher.flush(timeout)
