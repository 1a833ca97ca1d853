"""The settings read the environment: PostgreSQL and Redis when named, the embedded mode without."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from django.conf import settings

PRINT_CONFIG = """
import json, django
from django.conf import settings
django.setup()
import dramatiq
print(json.dumps({
    "database": settings.DATABASES["default"]["ENGINE"],
    "database_name": settings.DATABASES["default"]["NAME"],
    "pool": settings.DATABASES["default"].get("OPTIONS", {}).get("pool"),
    "cache": settings.CACHES["default"]["BACKEND"],
    "channel_layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "broker": type(dramatiq.get_broker()).__name__,
    "embedded": settings.EMBEDDED,
    "google_apps": len(settings.SOCIALACCOUNT_PROVIDERS["google"]["APPS"]),
    "llm": settings.LLM_ENABLED,
}))
"""

# Variables that would leak the outer test run's configuration into the child.
CONFIG_VARS = {
    "DATABASE_URL",
    "REDIS_URL",
    "SECRET_KEY",
    "DEBUG",
    "GOOGLE_CLIENT_ID",
    "GOOGLE_CLIENT_SECRET",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ALLOWED_HOSTS",
}


def run_python(code: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    child_env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    child_env["DJANGO_SETTINGS_MODULE"] = "buildx.settings"
    child_env.update(env)
    command = [sys.executable, code, *args] if code.endswith(".py") else [sys.executable, "-c", code, *args]
    return subprocess.run(
        command, cwd=settings.BASE_DIR, env=child_env, capture_output=True, text=True, timeout=120
    )


def resolved(env: dict[str, str]) -> dict:
    result = run_python(PRINT_CONFIG, env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_database_or_redis_it_runs_embedded():
    config = resolved({})
    assert config["database"] == "django.db.backends.sqlite3"
    assert config["cache"] == "django.core.cache.backends.locmem.LocMemCache"
    assert config["channel_layer"] == "channels.layers.InMemoryChannelLayer"
    assert config["broker"] == "StubBroker"
    assert config["embedded"] is True
    assert config["google_apps"] == 0
    assert config["llm"] is False


def test_database_url_selects_pooled_postgresql_and_redis_url_selects_redis_everywhere():
    config = resolved(
        {
            "DATABASE_URL": "postgres://someone:secret@db.example:5433/buildx_prod",
            "REDIS_URL": "redis://cache.example:6380/2",
        }
    )
    assert config["database"] == "django.db.backends.postgresql"
    assert config["database_name"] == "buildx_prod"
    assert config["pool"]["max_size"] == 10
    assert config["cache"] == "django.core.cache.backends.redis.RedisCache"
    assert config["channel_layer"] == "channels_redis.pubsub.RedisPubSubChannelLayer"
    assert config["broker"] == "RedisBroker"
    assert config["embedded"] is False


def test_google_login_and_the_llm_turn_on_only_when_configured():
    config = resolved(
        {
            "GOOGLE_CLIENT_ID": "id.apps.googleusercontent.com",
            "GOOGLE_CLIENT_SECRET": "s",
            "OPENAI_API_KEY": "k",
        }
    )
    assert config["google_apps"] == 1
    assert config["llm"] is True
    assert resolved({"GOOGLE_CLIENT_ID": "id-without-secret"})["google_apps"] == 0


def test_production_refuses_the_built_in_secret_key():
    result = run_python("import django; django.setup()", {"DEBUG": "0"})
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    assert "ImproperlyConfigured" in result.stderr


def test_check_deploy_is_clean_in_production_with_a_real_secret_key():
    env = {
        "DEBUG": "0",
        "SECRET_KEY": "x8Kq2-not-the-default-" + "a7Hd9fL3mQ0pR5sT1vW6yZ2bC4eG8jN" * 2,
        "ALLOWED_HOSTS": "buildx.example.com",
        # As docker-compose's one-shot `migrate` service runs: designs' start-up warm-up thread, if
        # still inside torch when a short command exits, aborts the process (exit 134).
        "BUILDX_VALIDATION_WARMUP": "0",
    }
    result = run_python("manage.py", env, "check", "--deploy")
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    # drf-spectacular adds its schema warnings to the deploy check; the next test owns those.
    issues = [
        line for line in output.splitlines() if re.match(r"^\S*: \(", line) and "drf_spectacular" not in line
    ]
    assert issues == []


def test_the_openapi_schema_generates_without_warnings():
    # A warning means an API view that the docs page cannot describe: give it a serializer_class
    # or @extend_schema(...).
    result = run_python("manage.py", {}, "spectacular", "--fail-on-warn", "--file", os.devnull)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_every_model_change_has_its_migration():
    from django.core.management import call_command

    call_command("makemigrations", "--check", "--dry-run", verbosity=0)  # exits 1 when one is missing
