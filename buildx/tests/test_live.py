"""buildx.live: every app's live messages reach the groups it names, through a real channel layer.

The in-memory layer (embedded mode) or Redis (when REDIS_URL is set), received on a loop of the test's
own that stands in for the web server's, as a socket of the user's would receive them.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from channels.layers import get_channel_layer

from buildx import live
from designs.actors import publish_code_ready
from feedback import services as feedback_services
from feedback.models import Feedback
from training.models import Run
from training.tests.conftest import make_design

pytestmark = pytest.mark.django_db(transaction=True)


class Listener:
    """Channels of the layer, joined to groups, on a loop of their own in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        layer = get_channel_layer()
        assert layer is not None
        self.layer = layer

    def call(self, coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=timeout)

    def join(self, group: str) -> str:
        channel = self.call(self.layer.new_channel())
        self.call(self.layer.group_add(group, channel))
        return channel

    def receive(self, channel: str, timeout: float = 10) -> dict | None:
        try:
            return self.call(asyncio.wait_for(self.layer.receive(channel), timeout), timeout + 5)
        except TimeoutError:
            return None

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture
def listener():
    listener = Listener()
    live.register_server_loop(listener.loop)  # embedded mode hands messages to the server's loop
    yield listener
    live.register_server_loop(None)
    listener.close()


def test_the_group_names_are_the_documented_ones():
    assert live.run_group(12) == "run.12"
    assert live.user_group(7) == "user.7"


def test_code_ready_goes_to_the_owners_group_and_not_to_another_users(listener, alice, bob):
    version, artifact = make_design(alice)
    alices = listener.join(live.user_group(alice.pk))
    bobs = listener.join(live.user_group(bob.pk))

    publish_code_ready(artifact)
    live.flush()

    message = listener.receive(alices)
    assert message is not None and message["type"] == "code.ready"
    assert message["artifact"] == artifact.pk and message["design"] == version.design_id
    assert listener.receive(bobs, timeout=1) is None


def test_feedback_ready_goes_to_the_run_owners_group_and_not_to_another_users(listener, alice, bob):
    version, artifact = make_design(alice)
    run = Run.objects.create(owner=alice, design_version=version, code_artifact=artifact, epochs=3)
    feedback = Feedback.objects.create(run=run, status=Feedback.Status.READY)
    alices = listener.join(live.user_group(alice.pk))
    bobs = listener.join(live.user_group(bob.pk))

    feedback_services.feedback_publish(feedback=feedback)
    live.flush()

    message = listener.receive(alices)
    assert message == {"type": "feedback.ready", "run": run.pk, "feedback": feedback.pk, "status": "ready"}
    assert listener.receive(bobs, timeout=1) is None


def test_messages_to_one_group_arrive_in_the_order_they_were_published(listener):
    channel = listener.join(live.run_group(5))

    for n in range(20):
        live.publish(live.run_group(5), {"type": "run.batch", "run": 5, "events": [{"seq": n}]})
    live.flush()

    assert [listener.receive(channel)["events"][0]["seq"] for _ in range(20)] == list(range(20))
