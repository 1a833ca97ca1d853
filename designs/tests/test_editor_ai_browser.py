"""The editor's "Generate with AI" in Debian's chromium, against a real BuildX server and its worker.

`manage.py serve` runs in a child process with the LLM settings in its environment, pointed at the
scripted OpenAI-compatible server in this process: the worker's generate_code actor (the `default`
queue) asks it for code, checks the answer in the sandbox and sends `code.ready` to the page.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import expect

from buildx.testing.browser import chromium_browser, serve_on_test_database
from buildx.testing.openai_server import OpenAIServer, Reply
from designs import services
from designs.models import CodeArtifact
from feedback.models import Feedback
from training.models import Run

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# What the AI answers to anything not scripted (the run's feedback narrative): no numbers, so it stands.
NARRATIVE = Reply(content="Well done: the model trained. Try the suggestions below.")


@pytest.fixture(scope="module")
def ai():
    with OpenAIServer(api_key="test-key", default=NARRATIVE) as server:
        yield server


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory, ai):
    import dramatiq

    import designs.actors  # noqa: F401 - declares the default queue on the broker

    dramatiq.get_broker().flush("default")  # messages left by earlier tests (only our own Redis db)
    env = {
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": ai.base_url,
        "OPENAI_MODEL": "test-model",
        "LLM_TIMEOUT_S": "20",
        "LLM_MAX_RETRIES": "0",
        # The LLM cache may be a Redis that outlives this test: a namespace of its own, never a hit.
        "LLM_CACHE_PREFIX": f"llm-browser-{uuid.uuid4().hex}",
        "BUILDX_SANDBOX_THREADS": "1",
    }
    with serve_on_test_database(
        tmp=tmp_path_factory.mktemp("server"), django_db_blocker=django_db_blocker, env=env
    ) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as chromium:
        yield chromium


def _design(owner, *, epochs: int):
    """The digits starter with ``epochs``: each test asks about another spec, so no answer is reused."""
    starter = services.starter_get(slug="tiny_cnn_digits")
    assert starter is not None
    spec = dict(starter["spec"])
    spec["hyperparameters"] = {**spec["hyperparameters"], "epochs": epochs}
    design = services.design_create(owner=owner, name="Tiny", spec=spec)
    version = design.versions.get()
    return design, version, services.artifact_compile(version=version)


def _open_code_tab(browser, base: str, user, design, *, websocket: bool = True):
    client = Client()
    client.force_login(user)
    context = browser.new_context(locale="en-US")
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
          "url": base}]
    )  # fmt: skip
    page = context.new_page()
    if not websocket:
        # A network that lets no WebSocket through: the page must find the result by asking the API.
        page.add_init_script("window.WebSocket = function () { throw new Error('no WebSockets here'); };")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{base}/designs/{design.pk}/")
    page.wait_for_selector("#editor[data-ready=true]")
    page.locator("#tab-code").click()
    expect(page.locator("#code")).to_contain_text("def build_model", timeout=15_000)
    return context, page, errors


def _fenced(code: str) -> str:
    return f"```python\n{code}```"


def _wait_for(predicate, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_generated_code_that_passes_its_checks_appears_and_train_uses_it(server, browser, ai, alice):
    design, version, compiled = _design(alice, epochs=1)
    # The compiled script in the AI's words: a comment of its own, with markup that must stay text.
    answer = "# Written by the AI for <b>you</b>: a small CNN for digits.\n" + compiled.code
    ai.script(f"Here is your script.\n\n{_fenced(answer)}\nHave fun!")
    context, page, errors = _open_code_tab(browser, server, alice, design)

    page.locator("#generate-ai").click()

    result = page.locator("#ai-result")
    expect(result).to_have_attribute("data-outcome", "accepted", timeout=90_000)
    expect(page.locator("#ai-result-summary")).to_contain_text("passed every check")
    assert page.locator("#editor").get_attribute("data-socket") == "open"  # told by code.ready
    expect(page.locator("#ai-result-checks li")).to_have_count(5)
    assert page.locator("#ai-result-checks li.check-ok").count() == 5
    artifact = CodeArtifact.objects.get(version=version, source=CodeArtifact.Source.LLM)
    assert artifact.status == CodeArtifact.Status.READY
    # The AI's script is shown, escaped, and chosen for Train; the compiled one stays a choice.
    expect(page.locator("#code")).to_contain_text("Written by the AI for <b>you</b>")
    assert page.locator("#code b").count() == 0
    assert page.locator("#artifact").input_value() == str(artifact.pk)
    assert page.locator("#artifact option").count() == 2

    page.locator("#train").click()
    page.wait_for_url(re.compile(r".*/runs/\d+/$"), timeout=30_000)
    run = Run.objects.get(design_version=version)
    assert run.code_artifact_id == artifact.pk
    # One epoch of the digits: let it finish and get its feedback (from the unscripted default answer)
    # so that nothing of this test is still asking the AI when the next one scripts it.
    _wait_for(
        lambda: Feedback.objects.filter(run=run).exclude(narrative="", llm_note="").exists(),
        timeout=120,
        what="the run's feedback",
    )
    context.close()
    assert errors == []


def test_code_that_fails_its_checks_falls_back_to_the_compiled_script_with_reasons_even_without_a_socket(
    server, browser, ai, alice
):
    design, version, compiled = _design(alice, epochs=2)
    hostile = compiled.code.replace(
        "import torch\n", 'import os\nimport torch\n\nSECRET = open("/etc/passwd").read()\n', 1
    )
    ai.script(*[_fenced(hostile)] * 3)  # the answer and both repairs
    context, page, errors = _open_code_tab(browser, server, alice, design, websocket=False)

    page.locator("#generate-ai").click()

    expect(page.locator("#ai-result")).to_have_attribute("data-outcome", "fallback", timeout=90_000)
    assert page.locator("#editor").get_attribute("data-socket") is None  # found by polling the API
    expect(page.locator("#ai-result-summary")).to_contain_text("Train uses the compiled script")
    reasons = page.locator("#ai-result-reasons").inner_text()
    assert "[static]" in reasons and "os" in reasons
    static = page.locator('#ai-result-checks li[data-check="static"]')
    assert "check-failed" in static.get_attribute("class")
    assert page.locator('#ai-result-checks li[data-check="fallback"]').count() == 1
    # Train keeps the compiled script; the AI's is shown as text, apart, and not offered.
    assert page.locator("#artifact").input_value() == str(compiled.pk)
    assert page.locator("#artifact option").count() == 1
    assert "import os" not in page.locator("#code").inner_text()
    page.locator("#ai-result-code-box summary").click()
    expect(page.locator("#ai-result-code")).to_contain_text('open("/etc/passwd")')
    assert CodeArtifact.objects.get(version=version, source="llm").status == CodeArtifact.Status.REJECTED
    context.close()
    assert errors == []
