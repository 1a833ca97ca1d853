"""Live messages to the browser: the channel groups, and the one way to send to them from sync code.

Every app that tells a page something (training: run events; designs: ``code.ready``; feedback:
``feedback.ready``) names its group here and sends with ``publish()``; the WebSocket consumer joins
the same groups. No app spells a group name itself.

Groups:
- ``run_group(run_id)`` (``run.<id>``): the run's stored event batches, ``{"type": "run.batch", "run",
  "events"}``. One channel per web process joins it while any socket of the process watches the run
  (``training.consumers.RunFanout``), and fans each batch out to those sockets.
- ``user_group(user_id)`` (``user.<id>``): every socket of the user joins it; status summaries of their
  runs (``run.summary``), ``code.ready``, ``feedback.ready``.

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
import concurrent.futures
import logging
import threading
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

logger = logging.getLogger(__name__)

# Bounded so a long Redis outage cannot grow the worker's memory without limit; what is dropped
# here is still in the database.
QUEUE_LIMIT = 10_000


def run_group(run_id: int) -> str:
    """The group of a run's watchers: its event batches."""
    return f"run.{run_id}"


def user_group(user_id: int) -> str:
    """The group of every socket of a user: run summaries, ``code.ready``, ``feedback.ready``."""
    return f"user.{user_id}"


_lock = threading.Lock()
_publisher: _Publisher | None = None
_server_loop: asyncio.AbstractEventLoop | None = None
# Embedded mode: sends handed to the server's loop and not finished yet (flush() waits for them).
_handed: set[concurrent.futures.Future] = set()


def register_server_loop(loop: asyncio.AbstractEventLoop | None) -> None:
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
        self.sender: asyncio.Task | None = None
        self.waiters: set[asyncio.Task] = set()  # flush()es in progress
        self.sent = 0
        self.failed = 0
        self.thread = threading.Thread(target=self._run, name="buildx-publisher", daemon=True)
        self.thread.start()
        self.ready.wait(timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.queue = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.sender = self.loop.create_task(self._send_all())
        self.ready.set()
        self.loop.run_forever()

    async def _send_all(self) -> None:
        layer = get_channel_layer()
        assert layer is not None and self.queue is not None
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
            finally:
                self.queue.task_done()

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

        async def wait() -> None:
            assert self.queue is not None
            await self.queue.join()
            done.set()

        def start() -> None:
            task = self.loop.create_task(wait())
            self.waiters.add(task)
            task.add_done_callback(self.waiters.discard)

        self.loop.call_soon_threadsafe(start)
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
            layer = get_channel_layer()
            assert layer is not None
            future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop)
            with _lock:
                _handed.add(future)
            future.add_done_callback(_handed_done)
            return
        _get_publisher().submit(group, message)
    except Exception as exc:  # publishing must never fail a run
        logger.warning("Could not publish to %s: %s", group, exc)


def _handed_done(future: concurrent.futures.Future) -> None:
    with _lock:
        _handed.discard(future)


def flush(timeout: float = 5.0) -> None:
    """Wait (at most ``timeout`` seconds) until what was published so far has reached the layer."""
    if _uses_server_loop():
        with _lock:
            pending = list(_handed)
        concurrent.futures.wait(pending, timeout=timeout)
    elif _publisher is not None:
        _publisher.flush(timeout)
