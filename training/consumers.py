"""The one WebSocket endpoint (/ws/). Each socket joins its user's group, ``user_group(id)`` (status
summaries of their runs, ``code.ready``, ``feedback.ready``), and watches runs: its owner's, or as their
instructor a student's (read-only; ``runs_viewable_by``). Group names and publishing are
``buildx.live``'s.

Run events reach a process once, not once per socket: a per-process ``RunFanout`` joins the group
``run_group(id)`` with a single channel while any socket of the process watches that run, encodes each
batch once, and hands it to those sockets. It is the only fan-out: a class of 500 browsers watching one
run costs one channel-layer message per batch and process, not 500 (bench/stream.py measured the layer
fanning out to 500 members itself: it fell half a minute behind and dropped every socket).

Browser -> server: ``{"type": "watch", "run": id, "after_seq": n}``, ``{"type": "unwatch", "run": id}``,
``{"type": "ping"}``. Server -> browser: stored run events, each
``{"type": "run.status" | "run.log" | "run.progress" | "run.epoch" | "run.checkpoint" | "run.done",
"run", "seq", "at", "data"}``; a frame holds one event or a JSON array of consecutive events (a page
of the replay, or a live batch). Plus ``code.ready`` and ``feedback.ready`` as sent by their apps,
status summaries, and ``pong`` / ``error``.

A socket counts against its user's and its process's caps (``training.limits``) from connect to
disconnect; one over a cap is accepted and closed at once with a code and a reason the page shows.

A watched run gets every event after ``after_seq`` exactly once, in order: the stored ones first
(replay), then live ones. Live batches that arrive during the replay wait in the socket's backlog;
afterwards anything at or below the last sent number is a duplicate and is dropped, and a jump (the
layer lost messages: it delivers at most once) is filled from the database before the live event goes
out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import datetime

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from buildx import live, metrics, tokens
from buildx.db import read_async
from buildx.live import run_group, user_group
from library import services as library_services
from library.selectors import datasets_visible_to
from training import limits

logger = logging.getLogger(__name__)

REPLAY_PAGE = 500
MAX_WATCHED = 20
JOIN_CONFIRM_TIMEOUT_S = 5.0


# Read-only queries: any thread of the pool will do. The default (thread-sensitive) runs every
# consumer's queries on one thread, which made 500 browsers replaying at once wait in line.
@read_async
def _viewable_run_exists(run_id: int, user) -> bool:
    from training.selectors import runs_viewable_by

    return runs_viewable_by(user).filter(pk=run_id).exists()


@read_async
def _dataset_status(dataset_id: int, user) -> dict | None:
    dataset = datasets_visible_to(user).filter(pk=dataset_id).first()
    return None if dataset is None else library_services.status_message(dataset)


@read_async
def _events_between(run_id: int, after: int, upto: int | None) -> list[dict]:
    from training.models import RunEvent

    qs = RunEvent.objects.filter(run_id=run_id, seq__gt=after)
    if upto is not None:
        qs = qs.filter(seq__lt=upto)
    return [e.as_message() for e in qs.order_by("seq")[:REPLAY_PAGE]]


def replay_frames(events: list[dict], *, max_bytes: int) -> Iterator[tuple[str, int]]:
    """Consecutive events as JSON arrays of at most ``max_bytes`` each, with the last ``seq`` of each.

    500 events of a chatty run can weigh megabytes: one frame of them makes the browser hold and parse
    it all at once, and a proxy's frame limit may drop the socket. An event larger than ``max_bytes``
    goes alone, so that every event is still sent once, in order.
    """
    parts: list[str] = []
    size, last_seq = 2, 0  # 2: the brackets
    for event in events:
        text = json.dumps(event)  # ASCII (ensure_ascii): characters are bytes
        if parts and size + len(text) + 1 > max_bytes:
            yield "[" + ",".join(parts) + "]", last_seq
            parts, size = [], 2
        parts.append(text)
        size += len(text) + 1  # and its comma
        last_seq = event["seq"]
    if parts:
        yield "[" + ",".join(parts) + "]", last_seq


class RunFanout:
    """One per event loop (per Daphne process): run batches in once, out to every watching socket.

    ``add`` joins the run's group for the first watcher of a run and waits until the layer has it, so a
    watcher that then reads the stored events misses nothing in between: with the pub/sub layer a join
    is a SUBSCRIBE that Redis confirms to nobody, so ``add`` sends a marker to the group and waits for
    it to come back. ``discard`` leaves when the last watcher goes. Delivery is a direct call per
    socket, in order, with no task per message.
    """

    _by_loop: dict[asyncio.AbstractEventLoop, RunFanout] = {}

    def __init__(self, layer) -> None:
        self.layer = layer
        self.channel: str | None = None
        self.watchers: dict[int, set[EventsConsumer]] = {}
        self.joined: dict[int, asyncio.Future] = {}
        self.receiver: asyncio.Task | None = None
        self.deliverer: asyncio.Task | None = None
        self.markers: dict[str, asyncio.Future] = {}  # joins waiting for their marker to come back
        self.lock = asyncio.Lock()
        self.pending: list[dict] = []
        self.wake = asyncio.Event()

    @classmethod
    def of(cls, layer) -> RunFanout:
        loop = asyncio.get_running_loop()
        for other in [other for other in cls._by_loop if other.is_closed()]:
            del cls._by_loop[other]  # tests run one loop each
        fanout = cls._by_loop.get(loop)
        if fanout is None or fanout.layer is not layer:
            fanout = cls._by_loop[loop] = cls(layer)
        return fanout

    async def add(self, run_id: int, consumer: EventsConsumer) -> None:
        async with self.lock:
            if self.channel is None:
                self.channel = await self.layer.new_channel()
            if self.receiver is None or self.receiver.done():
                self.receiver = asyncio.get_running_loop().create_task(self._receive())
        self.watchers.setdefault(run_id, set()).add(consumer)
        joined = self.joined.get(run_id)
        if joined is None:
            joined = self.joined[run_id] = asyncio.get_running_loop().create_future()
            try:
                await self.layer.group_add(run_group(run_id), self.channel)
                await self._joined_for_sure(run_id)
                joined.set_result(True)
            except Exception as exc:
                del self.joined[run_id]
                joined.set_exception(exc)
                raise
        else:
            await asyncio.shield(joined)

    async def discard(self, run_id: int, consumer: EventsConsumer) -> None:
        watchers = self.watchers.get(run_id)
        if watchers is None:
            return
        watchers.discard(consumer)
        if not watchers:
            del self.watchers[run_id]
            joined = self.joined.pop(run_id, None)
            if joined is not None and joined.done() and not joined.exception():
                await self.layer.group_discard(run_group(run_id), self.channel)

    async def _joined_for_sure(self, run_id: int) -> None:
        """Return once a message sent to the run's group after the join has come back to us: whatever
        the worker publishes from now on reaches this process."""
        marker = uuid.uuid4().hex
        arrived = self.markers[marker] = asyncio.get_running_loop().create_future()
        try:
            await self.layer.group_send(run_group(run_id), {"type": "run.joined", "marker": marker})
            await asyncio.wait_for(arrived, timeout=JOIN_CONFIRM_TIMEOUT_S)
        except TimeoutError:
            # Redis is slow or away: go on; a batch missed meanwhile shows as a gap and is filled.
            logger.warning("Run fan-out: the join of run %s was not confirmed in time", run_id)
        finally:
            self.markers.pop(marker, None)

    async def _receive(self) -> None:
        self.deliverer = asyncio.get_running_loop().create_task(self._deliver())
        try:
            while True:
                try:
                    message = await self.layer.receive(self.channel)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the layer lost Redis: the pages fill any gap from the database
                    logger.warning("Run fan-out could not receive; retrying", exc_info=True)
                    await asyncio.sleep(1)
                    continue
                if message.get("type") == "run.batch" and message.get("events"):
                    self.pending.append(message)
                    self.wake.set()
                elif message.get("type") == "run.joined":
                    arrived = self.markers.get(message.get("marker"))
                    if arrived is not None and not arrived.done():
                        arrived.set_result(True)
        finally:
            self.deliverer.cancel()

    async def _deliver(self) -> None:
        """Hand out what has arrived. Batches that queued up while the last round went out are merged
        per run, so a busy process sends fewer, larger frames instead of falling behind."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            batches, self.pending = self.pending, []
            merged: dict[int, list[dict]] = {}
            for message in batches:
                merged.setdefault(message["run"], []).extend(message["events"])
            sent = 0
            for run_id, events in merged.items():
                watchers = self.watchers.get(run_id)
                if not watchers:
                    continue
                text = json.dumps(events)  # once for every socket
                for consumer in list(watchers):
                    try:
                        await consumer.deliver(run_id, events, text)
                    except Exception:
                        logger.exception("Run fan-out: delivery to a socket failed")
                    sent += 1
                    if sent % 50 == 0:
                        await asyncio.sleep(0)  # let the receiver take in what arrives meanwhile
                observe_stream_latency(events)


def observe_stream_latency(events: list[dict]) -> None:
    """Stored -> sent: from the first event of a delivered batch being stored (its ``at``) to now."""
    try:
        stored = datetime.fromisoformat(events[0]["at"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return
    metrics.STREAM_LATENCY.observe(max(0.0, time.time() - stored))


class EventsConsumer(AsyncJsonWebsocketConsumer):
    slot: limits.SocketSlot | None = None  # this socket's place under the open-socket caps
    counted = False  # in buildx_websocket_connections

    async def connect(self) -> None:
        # A page's session, or an API client's access token (buildx.tokens).
        self.auth = await tokens.socket_auth(self.scope)
        if self.auth.subprotocol is None and self.auth.user is None:
            await self.close(code=tokens.UNAUTHENTICATED)  # a page without a session
            return
        if self.auth.subprotocol is not None:
            # A token socket is accepted before its token is judged, so that a refused one learns why
            # (as over a cap below: a close during the handshake carries no code or reason).
            await self.accept(subprotocol=self.auth.subprotocol)
        if self.auth.refusal:
            await self.close(code=tokens.UNAUTHENTICATED, reason=self.auth.refusal)
            return
        # A token socket closes when its token expires, or, before its first message, when that is late.
        self.auth.close_when_due(self._close_unauthenticated)
        if self.auth.user is not None:
            await self._open(self.auth.user)

    async def _close_unauthenticated(self, reason: str) -> None:
        await self.close(code=tokens.UNAUTHENTICATED, reason=reason)

    async def _authenticate(self, content: dict) -> None:
        """A token socket's ``authenticate`` message: its first, or a newer token before one expires."""
        if self.auth.subprotocol is None:
            await self.send_json(
                {"type": "error", "code": "invalid", "message": "This socket uses its session."}
            )
            return
        opening = self.auth.user is None
        await tokens.authenticate_message(self.auth, content)
        if self.auth.refusal:
            self.auth.cancel()
            await self.close(code=tokens.UNAUTHENTICATED, reason=self.auth.refusal)
            return
        self.auth.close_when_due(self._close_unauthenticated)
        await self.send_json(
            {"type": "authenticated", "user": self.auth.user.pk, "expires_at": self.auth.expires_at}
        )
        if opening:
            await self._open(self.auth.user)

    async def _open(self, user) -> None:
        taken = await limits.socket_slot_take(user_id=user.id)
        if isinstance(taken, limits.SocketRefused):
            # Accepted, then closed: a socket refused during the handshake reaches the page as 1006
            # with no reason, one closed after it with our code and a reason the page can show.
            if self.auth.subprotocol is None:
                await self.accept()
            await self.close(code=taken.code, reason=taken.reason)
            return
        self.slot = taken
        try:
            await self._join(user)
        except BaseException:
            await self.slot.release()  # a connect that fails never reaches disconnect()
            raise

    async def _join(self, user) -> None:
        self.user = user
        self.group = user_group(user.id)
        # run id -> last sequence number sent to this browser
        self.watching: dict[int, int] = {}
        # Runs whose events wait in ``backlog`` while a replay or a gap fill is sending stored ones.
        self.busy: set[int] = set()
        self.backlog: dict[int, list[list[dict]]] = {}
        self.catching_up: set[asyncio.Task] = set()  # gap fills running on their own tasks
        self.fanout = RunFanout.of(self.channel_layer)
        live.register_server_loop(asyncio.get_running_loop())
        await self.channel_layer.group_add(self.group, self.channel_name)
        if self.auth.subprotocol is None:
            await self.accept()  # a token socket was accepted before its token was checked
        metrics.WEBSOCKETS_OPEN.inc()
        self.counted = True

    async def disconnect(self, code: int) -> None:
        if self.counted:
            metrics.WEBSOCKETS_OPEN.dec()
            self.counted = False
        if hasattr(self, "auth"):
            self.auth.cancel()
        try:
            if hasattr(self, "group"):
                for task in list(self.catching_up):
                    task.cancel()  # nobody left to send to
                for run_id in list(self.watching):
                    await self.fanout.discard(run_id, self)
                self.watching.clear()
                await self.channel_layer.group_discard(self.group, self.channel_name)
        finally:
            if self.slot is not None:
                await self.slot.release()

    async def receive_json(self, content: dict, **kwargs) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "authenticate":
            await self._authenticate(content)
        elif not hasattr(self, "user"):  # not open: a token socket that has not authenticated yet
            if self.auth.waiting:
                self.auth.cancel()
                await self.close(
                    code=tokens.UNAUTHENTICATED, reason=tokens.NO_TOKEN % settings.WS_AUTH_SECONDS
                )
        elif kind == "ping":
            await self.send_json({"type": "pong", "t": content.get("t")})
        elif kind == "watch":
            await self._watch(content)
        elif kind == "dataset":
            await self._dataset(content)
        elif kind == "unwatch":
            run_id = _int(content.get("run"))
            if run_id is not None and self.watching.pop(run_id, None) is not None:
                await self.fanout.discard(run_id, self)
        else:
            await self.send_json(
                {"type": "error", "code": "unknown_type", "message": "Unknown message type."}
            )

    async def _dataset(self, content: dict) -> None:
        """Where a dataset's check stands, now (its changes come through the user's group as they happen)."""
        dataset_id = _int(content.get("dataset"))
        message = await _dataset_status(dataset_id, self.user) if dataset_id is not None else None
        if message is None:
            # Another course's dataset and one that does not exist get the same answer.
            await self.send_json(
                {"type": "error", "code": "not_found", "dataset": dataset_id, "message": "No such dataset."}
            )
            return
        await self.send_json(message)

    async def _watch(self, content: dict) -> None:
        run_id, after = _int(content.get("run")), _int(content.get("after_seq"), 0)
        if run_id is None or after is None or after < 0:
            await self.send_json(
                {"type": "error", "code": "invalid", "message": "watch needs run and after_seq."}
            )
            return
        # Another user's run and a run that does not exist get the same answer.
        if not await _viewable_run_exists(run_id, self.user):
            await self.send_json(
                {"type": "error", "code": "not_found", "run": run_id, "message": "No such run."}
            )
            return
        if len(self.watching) >= MAX_WATCHED and run_id not in self.watching:
            oldest = next(iter(self.watching))
            self.watching.pop(oldest)
            await self.fanout.discard(oldest, self)
        # Live batches wait in the backlog while the stored events go out. Join before reading them:
        # whatever is stored after the read arrives live, and what was read already is dropped by number.
        self.busy.add(run_id)
        self.watching[run_id] = after
        try:
            await self.fanout.add(run_id, self)
            await self._send_stored(run_id, upto=None)
            await self._drain(run_id)
        finally:
            self.busy.discard(run_id)
        await self.send_json({"type": "watching", "run": run_id, "last_seq": self.watching[run_id]})

    async def _send_stored(self, run_id: int, *, upto: int | None) -> None:
        """Send stored events after the last sent one (and before ``upto``), page by page."""
        while True:
            page = await _events_between(run_id, self.watching[run_id], upto)
            for frame, last_seq in replay_frames(page, max_bytes=settings.WS_REPLAY_PAGE_BYTES):
                await self.send(text_data=frame)
                self.watching[run_id] = last_seq
            if len(page) < REPLAY_PAGE:
                return

    # Called by the process's RunFanout, in order, for every batch of a run this socket watches.
    async def deliver(self, run_id: int, events: list[dict], text: str) -> None:
        """``events`` are consecutive; ``text`` is them as one JSON array, encoded once for all sockets."""
        last = self.watching.get(run_id)
        if last is None:
            return  # unwatched while this batch was on its way
        if run_id in self.busy:
            self.backlog.setdefault(run_id, []).append(events)
            return
        if events[0]["seq"] == last + 1:
            # The common case: the next events, one frame, straight to the server (this runs once
            # per socket per batch, so the consumer's own send wrappers are skipped).
            # One of text/bytes only, as servers and test clients require; asgiref's TypedDict wants both.
            await self.base_send({"type": "websocket.send", "text": text})  # type: ignore[arg-type]
            self.watching[run_id] = events[-1]["seq"]
            return
        # Already sent, or a gap (the layer dropped messages over its capacity): sorted out from the
        # database on this socket's own task, not the fan-out's.
        if events[0]["seq"] > last + 1:
            metrics.STREAM_GAPS.inc(events[0]["seq"] - last - 1)
        self.busy.add(run_id)
        self.backlog.setdefault(run_id, []).append(events)
        task = asyncio.get_running_loop().create_task(self._catch_up(run_id))
        self.catching_up.add(task)
        task.add_done_callback(self.catching_up.discard)

    async def _catch_up(self, run_id: int) -> None:
        try:
            await self._drain(run_id)
        finally:
            self.busy.discard(run_id)

    async def _drain(self, run_id: int) -> None:
        """Send the backlog of ``run_id`` after what was sent: duplicates dropped, gaps filled."""
        while self.backlog.get(run_id):
            events = self.backlog[run_id].pop(0)
            for event in events:
                last = self.watching.get(run_id)
                if last is None:
                    self.backlog.pop(run_id, None)
                    return
                seq = event["seq"]
                if seq <= last:
                    continue
                if seq > last + 1:
                    await self._send_stored(run_id, upto=seq)
                    if self.watching.get(run_id, seq) >= seq:
                        continue
                await self.send_json(event)
                self.watching[run_id] = seq
        self.backlog.pop(run_id, None)

    async def run_summary(self, message: dict) -> None:
        """Status changes of the user's runs for lists; a watched run has them in its stream already.

        Without "seq": a summary, not part of a watched stream."""
        if message["run"] in self.watching:
            return
        for event in message["events"]:
            summary = {k: v for k, v in event.items() if k != "seq"}
            await self.send_json(summary | {"summary": True})

    async def code_ready(self, message: dict) -> None:
        await self.send_json(message)

    async def feedback_ready(self, message: dict) -> None:
        await self.send_json(message)

    async def sweep_update(self, message: dict) -> None:
        """A sweep of the user's moved (a trial queued, an epoch reported, a trial ended): the sweep page
        fetches it again. Sent to its owner's group only."""
        await self.send_json(message)

    async def dataset_status(self, message: dict) -> None:
        """An uploaded dataset's check, as it goes (sent to its owner's group only)."""
        await self.send_json(message)


def _int(value, default: int | None = None) -> int | None:
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
