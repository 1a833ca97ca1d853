"""The one WebSocket endpoint (/ws/). Each socket joins its user's group, ``user.<id>`` (status
summaries of their runs, ``code.ready``, ``feedback.ready``), and the group ``run.<id>`` of every run it
watches: its owner's, or as their instructor a student's (read-only; ``runs_viewable_by``).

Browser -> server: ``{"type": "watch", "run": id, "after_seq": n}``, ``{"type": "unwatch", "run": id}``,
``{"type": "ping"}``. Server -> browser: every stored run event as
``{"type": "run.status" | "run.log" | "run.progress" | "run.epoch" | "run.checkpoint" | "run.done",
"run", "seq", "at", "data"}``, plus ``code.ready`` and ``feedback.ready`` as sent by their apps, and
``pong`` / ``error``.

A watched run gets every event after ``after_seq`` exactly once, in order: the stored ones first
(replay), then live ones. A consumer handles one message at a time, so live messages wait in the
channel layer while the replay runs; afterwards anything at or below the last sent number is a
duplicate and is dropped, and a jump (the layer dropped messages over its capacity) is filled from
the database before the live event goes out.
"""

from __future__ import annotations

import asyncio
import functools

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

REPLAY_PAGE = 500
MAX_WATCHED = 20


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def run_group(run_id: int) -> str:
    return f"run.{run_id}"


# Read-only queries: any thread of the pool will do. The default (thread-sensitive) runs every
# consumer's queries on one thread, which made 500 browsers replaying at once wait in line.
@functools.partial(database_sync_to_async, thread_sensitive=False)
def _viewable_run_exists(run_id: int, user) -> bool:
    from training.selectors import runs_viewable_by

    return runs_viewable_by(user).filter(pk=run_id).exists()


@functools.partial(database_sync_to_async, thread_sensitive=False)
def _events_between(run_id: int, after: int, upto: int | None) -> list[dict]:
    from training.models import RunEvent

    qs = RunEvent.objects.filter(run_id=run_id, seq__gt=after)
    if upto is not None:
        qs = qs.filter(seq__lt=upto)
    return [e.as_message() for e in qs.order_by("seq")[:REPLAY_PAGE]]


class EventsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.user = user
        self.group = user_group(user.id)
        # run id -> last sequence number sent to this browser
        self.watching: dict[int, int] = {}
        from training import publish

        publish.register_server_loop(asyncio.get_running_loop())
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            for run_id in list(self.watching):
                await self.channel_layer.group_discard(run_group(run_id), self.channel_name)
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: dict, **kwargs) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "ping":
            await self.send_json({"type": "pong", "t": content.get("t")})
        elif kind == "watch":
            await self._watch(content)
        elif kind == "unwatch":
            run_id = _int(content.get("run"))
            if self.watching.pop(run_id, None) is not None:
                await self.channel_layer.group_discard(run_group(run_id), self.channel_name)
        else:
            await self.send_json(
                {"type": "error", "code": "unknown_type", "message": "Unknown message type."}
            )

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
            await self.channel_layer.group_discard(run_group(oldest), self.channel_name)
        # Join before reading the stored events: whatever is stored after the read arrives live, and
        # what arrives live but was already read is dropped by its number.
        if run_id not in self.watching:
            await self.channel_layer.group_add(run_group(run_id), self.channel_name)
        self.watching[run_id] = after
        await self._send_stored(run_id, upto=None)
        await self.send_json({"type": "watching", "run": run_id, "last_seq": self.watching[run_id]})

    async def _send_stored(self, run_id: int, *, upto: int | None) -> None:
        """Send stored events after the last sent one (and before ``upto``), page by page."""
        while True:
            page = await _events_between(run_id, self.watching[run_id], upto)
            for message in page:
                await self.send_json(message)
                self.watching[run_id] = message["seq"]
            if len(page) < REPLAY_PAGE:
                return

    # Channel-layer handlers: "run.batch" -> run_batch.
    async def run_batch(self, message: dict) -> None:
        run_id = message["run"]
        for event in message["events"]:
            last = self.watching.get(run_id)
            if last is None:
                return  # unwatched while this batch was on its way
            seq = event["seq"]
            if seq <= last:
                continue  # already sent by the replay
            if seq > last + 1:
                await self._send_stored(run_id, upto=seq)
                if self.watching[run_id] >= seq:
                    continue
            await self.send_json(event)
            self.watching[run_id] = seq

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


def _int(value, default: int | None = None) -> int | None:
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
