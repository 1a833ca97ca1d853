"""docker-compose.yml, nginx.conf, the Dockerfile and the README, checked by reading them (no Docker here)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
APP_SERVICES = ("web", "worker", "trainer")
# Read by libraries, not by settings.py: prometheus_client's multiprocess folder, Dramatiq's prefetch,
# boto3's credentials.
LIBRARY_VARS = {
    "PROMETHEUS_MULTIPROC_DIR",
    "dramatiq_queue_prefetch",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}


def settings_env_vars() -> set[str]:
    source = (ROOT / "buildx" / "settings.py").read_text()
    names = set(re.findall(r"\benv(?:_[a-z]+)?\(\s*\"([A-Z][A-Z0-9_]*)\"", source))
    names |= set(re.findall(r"os\.(?:environ\.get|getenv)\(\s*\"([A-Z][A-Z0-9_]*)\"", source))
    return names


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def nginx() -> str:
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())  # without comments


def test_compose_runs_the_whole_platform(compose):
    assert set(compose["services"]) == {
        *("postgres", "redis", "migrate", "web", "worker", "trainer", "nginx"),
        # Monitoring, and the optional MinIO and certbot (buildx/tests/test_ops_deploy.py).
        *("prometheus", "grafana", "minio", "certbot"),
    }


def test_the_workers_take_their_own_queues(compose):
    services = compose["services"]
    worker, trainer = services["worker"]["command"], services["trainer"]["command"]
    assert worker[:3] == ["python", "manage.py", "rundramatiq"]
    assert worker[worker.index("--queues") + 1 :] == ["default"]
    assert trainer[trainer.index("--queues") + 1 :] == ["training"]
    assert "daphne" in services["web"]["command"] and "--proxy-headers" in services["web"]["command"]


def test_the_trainer_reserves_a_gpu_and_gets_the_cuda_build(compose):
    trainer = compose["services"]["trainer"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]
    assert trainer["build"]["args"]["TORCH_VARIANT"].startswith("cu")


def test_app_services_get_production_settings_that_settings_py_reads(compose):
    known = settings_env_vars()
    for name in APP_SERVICES + ("migrate",):
        env = compose["services"][name]["environment"]
        assert env["DEBUG"] == "0"
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        for required in ("SECRET_KEY", "ALLOWED_HOSTS"):
            assert ":?" in env[required], f"{required} must be required, not defaulted"
        unknown = set(env) - known - LIBRARY_VARS
        assert not unknown, f"compose sets variables settings.py never reads: {unknown}"


def test_services_start_in_order_and_have_healthchecks(compose):
    services = compose["services"]
    for name in ("postgres", "redis", "web", "nginx"):
        assert services[name]["healthcheck"]["test"], name
    for name in APP_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert "readyz" in " ".join(services["web"]["healthcheck"]["test"])
    assert "migrate" in " ".join(services["migrate"]["command"])
    assert "collectstatic" in " ".join(services["migrate"]["command"])
    # designs' warm-up thread would abort a one-shot command that exits while it is inside torch.
    assert services["migrate"]["environment"]["BUILDX_VALIDATION_WARMUP"] == "0"


def test_nginx_serves_the_collected_static_files_from_the_shared_volume(compose, nginx):
    services = compose["services"]
    assert "static:/srv/static" in services["migrate"]["volumes"]
    assert "static:/srv/static:ro" in services["nginx"]["volumes"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    assert compose["services"]["migrate"]["environment"]["STATIC_ROOT"] == "/srv/static"
    assert re.search(r"location /static/ \{\s*alias /srv/static/;", nginx)
    assert "/srv/media" not in nginx, "media holds private artifacts: nginx must not serve it"
    assert "server web:8000;" in nginx


def test_nginx_upgrades_websockets_and_keeps_them_open_for_an_hour_of_training(nginx):
    assert re.search(r"map \$http_upgrade \$connection_upgrade \{\s*default upgrade;", nginx)
    assert "proxy_http_version 1.1;" in nginx
    assert "proxy_set_header Upgrade $http_upgrade;" in nginx
    assert "proxy_set_header Connection $connection_upgrade;" in nginx
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        match = re.search(rf"{directive} (\d+)s;", nginx)
        assert match and int(match.group(1)) >= 3600, directive
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in nginx
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in nginx
    assert nginx.count("{") == nginx.count("}")


def test_the_dockerfile_installs_the_chosen_torch_build_and_serves_with_daphne():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11" in dockerfile
    assert (
        'pip install torch==2.13.0 --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"'
        in dockerfile
    )
    assert "pip install -r requirements.txt" in dockerfile
    assert "BUILDX_VALIDATION_WARMUP=0" in dockerfile  # collectstatic at build is a one-shot command
    assert re.search(r"^USER buildx$", dockerfile, re.M)
    assert '"daphne"' in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var", "deploy/certs"} <= set(ignored)  # no local state or keys in the image


def test_the_readme_documents_every_variable_settings_reads():
    readme = (ROOT / "README.md").read_text()
    table = "\n".join(line for line in readme.splitlines() if line.startswith("| `"))
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]*)`", table))
    missing = settings_env_vars() - documented
    assert not missing, f"add these to the README's configuration table: {sorted(missing)}"


def test_the_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make run" in first_block and "make test" in first_block


def test_the_containers_that_run_sandboxes_get_root_namespaces_and_a_delegated_cgroup(compose):

    for name in ("worker", "trainer"):
        service = compose["services"][name]
        assert service["user"] == "0:0"  # a uid of its own for every box
        assert service["cgroup"] == "private"
        assert "SYS_ADMIN" in service["cap_add"]
        assert service["entrypoint"] == ["/app/deploy/sandbox-entrypoint.sh"]
    assert "user" not in compose["services"]["web"]  # the web process never runs a sandbox
    script = ROOT / "deploy" / "sandbox-entrypoint.sh"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
