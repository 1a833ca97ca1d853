"""Shared fixtures: the personas (alice and bob are students, carol teaches alice, dave teaches another course)."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildx.test import make_user

# The scripted OpenAI-compatible server and the settings that point at it (llm_server, llm_off).
pytest_plugins = ["buildx.testing.fixtures"]


def pytest_configure(config):
    # var/ holds the SQLite test database and the datasets; importing the settings creates nothing.
    (Path(__file__).resolve().parent / "var").mkdir(exist_ok=True)


@pytest.fixture
def alice(db):
    return make_user("alice@example.com", first_name="Alice")


@pytest.fixture
def bob(db):
    return make_user("bob@example.com", first_name="Bob")


@pytest.fixture
def carol(db):
    return make_user("carol@example.com", first_name="Carol")


@pytest.fixture
def dave(db):
    return make_user("dave@example.com", first_name="Dave")


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture(autouse=True)
def _default_language():
    """Every test starts in English: a request or test that activated Korean must not leak into the next."""
    from django.utils import translation

    translation.activate("en")
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def _fresh_cache(settings):
    """Give each test its own cache namespace.

    allauth keeps its rate limits in the cache; with Redis that cache outlives a test and a run.
    A fresh key prefix isolates every test without flushing anything shared.
    """
    import copy
    import uuid

    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["KEY_PREFIX"] = f"test-{uuid.uuid4().hex}"
    settings.CACHES = caches


@pytest.fixture(autouse=True)
def _room_for_a_busy_machine(settings):
    """A code check's wall limit is room for the check, not what the tests check: at load 17 on two
    cores the model check of good code took 64 s (most of it importing torch in a box still starting)
    and was stopped at the production limit of 60 s, so the code was rejected; a prediction in the
    sandbox likewise."""
    settings.BUILDX_CODEGEN_SMOKE_WALL_S = 600.0
    settings.PREDICT_SANDBOX_SECONDS = 600


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's million rounds cost ~0.3 s a login on a shared CPU; tests check logic, not the hasher.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's test database, plus: close Django's PostgreSQL pools before it is dropped.

    Threads that served requests (live_server, Channels' sync_to_async) give their connections back
    to the pool, which keeps them open; dropping the test database would then fail.
    """
    yield
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if hasattr(connection, "close_pool"):
            connection.close_pool()
