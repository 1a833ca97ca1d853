"""Pytest fixtures for code that calls the LLM (loaded by /conftest.py through pytest_plugins).

    def test_something(llm_server, alice):
        llm_server.script("Hello")         # or Reply(status=429), Reply(delay_s=1), ...
        answer = llm.chat(user=alice, purpose="other", messages=[...])
        assert len(llm_server.chat_requests) == 1

``llm_server`` is a running OpenAIServer with the settings pointed at it: LLM enabled, a short
timeout, tiny backoff, and a cache namespace of its own (the cache may be a Redis shared by the
whole suite, and it is not rolled back with the database).
"""

from __future__ import annotations

import uuid

import pytest

from buildx.testing.openai_server import OpenAIServer


@pytest.fixture
def openai_server():
    """A bare scripted server; the settings are left alone."""
    with OpenAIServer(api_key="test-key") as server:
        yield server


@pytest.fixture
def llm_server(openai_server, settings):
    settings.OPENAI_API_KEY = "test-key"
    settings.OPENAI_BASE_URL = openai_server.base_url
    settings.OPENAI_MODEL = "test-model"
    settings.LLM_ENABLED = True
    settings.LLM_TIMEOUT_S = 5.0  # tests of timeouts set their own; a busy CI machine must not trip this one
    settings.LLM_MAX_RETRIES = 2
    settings.LLM_BACKOFF_BASE_S = 0.01
    settings.LLM_BACKOFF_MAX_S = 0.05
    settings.LLM_RETRY_AFTER_MAX_S = 5.0
    settings.LLM_CACHE_PREFIX = f"llm-test-{uuid.uuid4().hex}"
    return openai_server


@pytest.fixture
def llm_off(settings):
    """No LLM configured, as on a fresh install."""
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""
    settings.LLM_ENABLED = False


@pytest.fixture
def sms_gateway(settings):
    """A local SMS gateway with the settings pointed at it (quick retries, short timeout)."""
    from buildx.testing.sms_gateway import SMSGateway

    with SMSGateway(api_key="sms-test-key") as gateway:
        settings.SMS_BACKEND = "gateway"
        settings.SMS_GATEWAY_URL = gateway.url
        settings.SMS_GATEWAY_KEY = "sms-test-key"
        settings.SMS_SENDER = "BuildX"
        settings.SMS_GATEWAY_TIMEOUT_S = 2.0
        settings.SMS_GATEWAY_MAX_RETRIES = 2
        settings.SMS_GATEWAY_BACKOFF_S = 0.01
        yield gateway
