"""One run followed through the JSON logs by its run id: the API request, the worker's claim and finish,
the feedback job (and its LLM call), with the request id carried all the way; no secret in any line
(issue 18)."""

from __future__ import annotations

import io
import json
import logging
import random
import uuid

import dramatiq
import pytest
from django.conf import settings

from buildx import logs
from buildx.test import make_user
from buildx.testing.openai_server import OpenAIServer, Reply
from feedback.models import Feedback
from training.models import Run
from training.tests.conftest import make_design
from training.tests.ops_support import METRICS_TOKEN, WorkerGroup, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not settings.REDIS_URL, reason="worker processes need Redis and PostgreSQL"),
]

PASSWORD = "canary-Password-7f3a9c1e"
LLM_KEY = "sk-canary-llm-key-0b7e4d2c"
WORKER_SECRET_KEY = "canary-secret-key-of-the-worker-93c1f0aa6e"


@pytest.fixture
def json_log():
    """This (web) process's log lines as JSON, as production writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter(json=True))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def worker(transactional_db, settings, tmp_path):
    import feedback.actors  # noqa: F401 - declares the default queue
    import training.actors  # noqa: F401 - declares the training queue

    broker = dramatiq.get_broker()
    for queue in ("training", "default"):
        broker.flush(queue)
    settings.MEDIA_ROOT = tmp_path / "media"
    with OpenAIServer(api_key=LLM_KEY, default=Reply(content="The model learned the digits well.")) as llm:
        group = WorkerGroup(
            tmp_path,
            processes=1,
            queues=["training", "default"],
            extra_env={
                "SECRET_KEY": WORKER_SECRET_KEY,
                "OPENAI_API_KEY": LLM_KEY,
                "OPENAI_BASE_URL": llm.base_url,
                "OPENAI_MODEL": "test-model",
                # The same run trains to the same numbers: a shared cache would answer the narrative.
                "LLM_CACHE_PREFIX": f"llm-ops-test-{uuid.uuid4().hex}",
            },
        )
        yield group, llm
        group.stop()
    for queue in ("training", "default"):
        broker.flush(queue)


def json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def test_one_run_is_followed_by_its_id_from_the_request_to_the_feedback_with_no_secret(
    worker, client, json_log
):
    group, llm = worker
    # An id of its own: Redis pub/sub is shared by every database number on this Redis.
    owner = make_user("alice@example.com", password=PASSWORD, id=random.randrange(10**6, 10**7))
    login = client.post(
        "/api/auth/app/v1/auth/login",
        {"email": "alice@example.com", "password": PASSWORD},
        content_type="application/json",
    )
    assert login.status_code == 200, login.content
    access_token = login.json()["meta"]["access_token"]
    version, artifact = make_design(owner, epochs=1)
    request_id = f"nginx-{uuid.uuid4().hex}"
    response = client.post(
        "/api/v1/runs/",
        {"design_version": version.pk, "code_artifact": artifact.pk},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {access_token}",
        HTTP_X_REQUEST_ID=request_id,
    )
    assert response.status_code == 201, response.content
    assert response["X-Request-ID"] == request_id
    run_id = response.json()["id"]

    wait_for(lambda: Feedback.objects.filter(run_id=run_id).exists(), timeout=900, what="the feedback")
    wait_for(lambda: "Feedback written" in group.log_text(), what="the feedback job's last line")
    assert Run.objects.get(pk=run_id).status == Run.Status.SUCCEEDED
    assert llm.chat_requests, "the feedback asked the LLM (its key is a canary)"

    web_lines = json_lines(json_log.getvalue())
    worker_lines = json_lines(group.log_text())
    mine = [line for line in web_lines + worker_lines if line.get("run_id") == run_id]
    events = [line["event"] for line in mine]
    for expected in ("request", "Run created", "Run claimed", "Run finished", "Feedback written"):
        assert expected in events, f"{expected!r} not among {events}"
    post = next(line for line in mine if line["event"] == "request")
    assert (post["method"], post["path"], post["status"]) == ("POST", "/api/v1/runs/", 201)
    assert post["user_id"] == owner.pk
    # Every line of the run carries the request id nginx gave the POST, on the worker too.
    assert {line.get("request_id") for line in mine} == {request_id}
    by_event = {line["event"]: line for line in mine}
    assert by_event["Run claimed"]["actor"] == "train_run" and by_event["Run claimed"]["message_id"]
    assert by_event["Feedback written"]["actor"] == "feedback_run"
    assert by_event["Feedback written"]["message_id"] != by_event["Run claimed"]["message_id"]
    assert all(line.get("user_id") == owner.pk for line in mine)

    everything = json_log.getvalue() + group.log_text()
    for canary in (PASSWORD, access_token, LLM_KEY, WORKER_SECRET_KEY, METRICS_TOKEN, settings.SECRET_KEY):
        assert canary not in everything
    # A positive control: the log holds the lines the run wrote, so the search above searched something.
    assert str(run_id) in everything and request_id in everything
