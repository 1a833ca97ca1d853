"""The WebSocket under abuse: replays of huge runs in bounded frames, and caps on open sockets."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async

from training.models import Run, RunEvent
from training.tests.conftest import make_design, ws_connect

pytestmark = pytest.mark.django_db(transaction=True)


def store_run_with_events(owner, sizes: list[int]) -> Run:
    """A finished run whose stored log events carry ``sizes[i]`` characters of text each."""
    version, artifact = make_design(owner, epochs=1)
    run = Run.objects.create(
        owner=owner,
        design_version=version,
        code_artifact=artifact,
        dataset="digits",
        status=Run.Status.SUCCEEDED,
    )
    RunEvent.objects.bulk_create(
        RunEvent(
            run=run, seq=i + 1, kind=RunEvent.Kind.LOG, payload={"stream": "stdout", "lines": ["x" * size]}
        )
        for i, size in enumerate(sizes)
    )
    run.last_seq = len(sizes)
    run.save(update_fields=["last_seq"])
    return run


def stored(run_id: int) -> list[dict]:
    return [e.as_message() for e in RunEvent.objects.filter(run_id=run_id).order_by("seq")]


async def test_a_replay_of_huge_events_comes_in_bounded_frames_each_event_once_in_order(alice, settings):
    limit = settings.WS_REPLAY_PAGE_BYTES = 256 * 1024
    # More than one database page (500 events): 10 kB lines, with a 400 kB one now and then.
    sizes = [400_000 if i % 97 == 0 else 10_000 for i in range(620)]
    run = await database_sync_to_async(store_run_with_events)(alice, sizes)
    ws = await ws_connect(alice)

    await ws.send_json_to({"type": "watch", "run": run.pk, "after_seq": 0})
    frames, events = [], []
    while True:
        text = await ws.receive_from(timeout=30)
        message = json.loads(text)
        if isinstance(message, dict) and message.get("type") == "watching":
            break
        frames.append(text)
        events += message
    await ws.disconnect()

    assert events == await database_sync_to_async(stored)(run.pk)  # each once, in order, unchanged
    assert message == {"type": "watching", "run": run.pk, "last_seq": 620}
    oversized = [
        len(text.encode()) for text in frames if len(text.encode()) > limit and text.count('"seq"') > 1
    ]
    assert oversized == []  # only a frame of one event may be larger than the limit
    assert len(frames) < len(events) // 10  # frames are filled, not one event each
