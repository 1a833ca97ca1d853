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
    "DATABASE_POOL_MAX",
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
    assert config["database"].endswith(".db.backends.sqlite3")  # django-prometheus wraps Django's
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
    assert config["database"].endswith(".db.backends.postgresql")
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


def test_each_setting_is_defined_once_and_never_edited_after():
    """settings.py reads top to bottom: a setting is assigned in one place (one branch of an if at most)
    and not patched later by item assignment, .append() or .setdefault()."""
    import ast
    from collections import Counter

    source = (settings.BASE_DIR / "buildx" / "settings.py").read_text()
    tree = ast.parse(source)
    assigned: Counter[str] = Counter()
    edits = []

    def assignments(statements, counter):
        for node in statements:
            if isinstance(node, ast.If):
                # One branch defines it: count the name once however many branches assign it.
                branches: list[Counter[str]] = [Counter(), Counter()]
                assignments(node.body, branches[0])
                assignments(node.orelse, branches[1])
                for name in set(branches[0]) | set(branches[1]):
                    counter[name] += max(branches[0][name], branches[1][name])
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id.isupper():
                        counter[target.id] += 1
                    elif isinstance(target, ast.Subscript):
                        edits.append(f"{node.lineno}: {ast.unparse(target)} = ...")

    assignments(tree.body, assigned)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            while isinstance(owner, ast.Subscript | ast.Attribute):
                owner = owner.value
            if isinstance(owner, ast.Name) and owner.id.isupper():
                if node.func.attr in {"append", "extend", "insert", "setdefault", "update", "pop", "remove"}:
                    edits.append(f"{node.lineno}: {ast.unparse(node)}")
    assert [name for name, count in assigned.items() if count > 1] == []
    assert edits == []


def test_importing_the_settings_creates_nothing(tmp_path):
    """Importing the settings (as a tool or a worker does) writes no folder: manage.py makes var/."""
    base = tmp_path / "checkout"
    (base / "buildx").mkdir(parents=True)
    (base / "buildx" / "__init__.py").write_text("")
    (base / "buildx" / "settings.py").write_text((settings.BASE_DIR / "buildx" / "settings.py").read_text())
    before = sorted(p.relative_to(base) for p in base.rglob("*"))
    child_env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    child_env["PYTHONPATH"] = str(base)
    result = subprocess.run(
        [sys.executable, "-B", "-c", "import buildx.settings"],
        cwd=base,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(base) for p in base.rglob("*")) == before


PRINT_LAYER = """
import json, django
from django.conf import settings
django.setup()
print(json.dumps(settings.CHANNEL_LAYERS["default"]))
"""


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis server (CI runs with REDIS_URL)")
def test_two_deployments_on_one_redis_with_different_databases_do_not_hear_each_others_events():
    """Redis pub/sub ignores the database number: without a prefix of its own, a second deployment on
    database 15 would receive the run events of the one on database 14."""
    import asyncio
    from urllib.parse import urlsplit

    from channels_redis.pubsub import RedisPubSubChannelLayer

    configs = []
    for db in (14, 15):
        result = run_python(
            PRINT_LAYER, {"REDIS_URL": urlsplit(settings.REDIS_URL)._replace(path=f"/{db}").geturl()}
        )
        assert result.returncode == 0, result.stderr
        configs.append(json.loads(result.stdout.strip().splitlines()[-1])["CONFIG"])

    async def scenario() -> list[dict]:
        first = RedisPubSubChannelLayer(**configs[0])
        second = RedisPubSubChannelLayer(**configs[1])
        try:
            channel = await second.new_channel()
            await second.group_add("run.1", channel)
            await first.group_send("run.1", {"type": "run.event", "from": "the other deployment"})
            await second.group_send("run.1", {"type": "run.event", "from": "its own"})
            # Redis delivers a connection's messages in the order they were published: if the other
            # deployment's message could arrive, it would arrive first.
            return [await asyncio.wait_for(second.receive(channel), timeout=30)]
        finally:
            await first.flush()
            await second.flush()

    received = asyncio.run(scenario())
    assert received == [{"type": "run.event", "from": "its own"}]


def test_each_pytest_process_gets_a_redis_database_of_its_own():
    """`make test` runs two pytest processes: a training worker started by one must not take the runs
    queued by the other (whose rows it cannot see), so each gets its own Redis database."""
    from buildx.testing.parallel import worker_redis_url

    assert worker_redis_url("redis://127.0.0.1:6379/0", "gw0") == "redis://127.0.0.1:6379/0"
    assert worker_redis_url("redis://127.0.0.1:6379/0", "gw1") == "redis://127.0.0.1:6379/1"
    assert worker_redis_url("redis://:pw@cache.example:6380/14", "gw3") == "redis://:pw@cache.example:6380/1"
    assert worker_redis_url("redis://127.0.0.1:6379", "gw2") == "redis://127.0.0.1:6379/2"
