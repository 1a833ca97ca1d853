"""The monitoring stack's files (issue 18): Prometheus' configuration and alert rules pass promtool, the
Grafana dashboard names only metrics a real scrape has, and compose wires Prometheus, Grafana, the
workers' endpoints, the optional MinIO and certbot. Read, not run: there is no Docker engine here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(settings.BASE_DIR)
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "buildx.json"
TOKEN = "dashboard-test-token-9a8b7c"

promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool comes with Debian's prometheus package (.ci/run installs it)",
)


@promtool
def test_the_alert_rules_pass_promtool():
    result = subprocess.run(
        ["promtool", "check", "rules", str(PROMETHEUS / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


@promtool
def test_the_prometheus_configuration_passes_promtool(tmp_path):
    """As the container sees it: the rules and the token file at the paths compose mounts them."""
    (tmp_path / "metrics_token").write_text("token\n")
    config = (PROMETHEUS / "prometheus.yml").read_text()
    assert "/etc/prometheus/alerts.yml" in config and "/run/secrets/metrics_token" in config
    config = config.replace("/etc/prometheus/alerts.yml", str(PROMETHEUS / "alerts.yml"))
    config = config.replace("/run/secrets/metrics_token", str(tmp_path / "metrics_token"))
    (tmp_path / "prometheus.yml").write_text(config)
    result = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_the_web_and_every_worker_with_the_token():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["web"]["static_configs"][0]["targets"] == ["web:8000"]
    assert jobs["workers"]["dns_sd_configs"][0] == {"names": ["worker"], "type": "A", "port": 9191}
    assert jobs["trainers"]["dns_sd_configs"][0]["names"] == ["trainer"]
    for job in jobs.values():
        assert job["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/metrics_token"}


def dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs
    return {name for expr in exprs for name in re.findall(r"\b(?:buildx|django)_[a-z0-9_]+", expr)}


def names_in(exposition: str) -> set[str]:
    """Every family and sample name of a scrape (a histogram's _bucket/_sum/_count, a counter's _total)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        suffixes = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",)}.get(family.type, ())
        names.update(family.name + suffix for suffix in suffixes)
        names.update(sample.name for sample in family.samples)
    return names


def test_the_dashboard_has_the_panels_the_issue_asks_for():
    titles = " | ".join(p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]).lower()
    for words in ("queue depth", "runs by state", "queue wait", "run duration", "stream latency",
                  "request latency", "errors", "llm cost", "gpu"):  # fmt: skip
        assert words in titles, words


@pytest.mark.django_db
def test_every_metric_the_dashboard_names_exists_in_a_scrape_of_metrics(client, settings):
    settings.METRICS_TOKEN = TOKEN
    import buildx.worker_metrics  # noqa: F401 - the worker's own metrics, as a worker process defines them

    client.get("/healthz")
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    missing = dashboard_metrics() - names_in(response.content.decode())
    assert not missing, f"the dashboard names metrics no scrape has: {sorted(missing)}"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_prometheus_and_grafana_with_their_provisioned_files(compose):
    services = compose["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert prometheus["secrets"] == ["metrics_token"]
    assert compose["secrets"]["metrics_token"] == {"environment": "METRICS_TOKEN"}
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    assert grafana["ports"] == ["127.0.0.1:3000:3000"], "Grafana is not public"
    assert ":?" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/buildx.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    assert {p["datasource"]["uid"] for p in json.loads(DASHBOARD.read_text())["panels"]} == {"prometheus"}


def test_every_worker_serves_its_processes_summed_and_a_trainer_takes_one_run_at_a_time(compose):
    for name in ("worker", "trainer"):
        service = compose["services"][name]
        assert service["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/run/buildx-metrics"
        assert "/run/buildx-metrics" in service["tmpfs"], "an empty folder each start"
        assert service["expose"] == ["9191"]
    assert compose["services"]["trainer"]["environment"]["dramatiq_queue_prefetch"] == "1"
    env = compose["services"]["web"]["environment"]
    assert ":?" in env["METRICS_TOKEN"] and env["LOG_FORMAT"] == "json"


def test_minio_and_certbot_are_optional_profiles_and_nginx_answers_the_challenge(compose):
    services = compose["services"]
    assert services["minio"]["profiles"] == ["minio"]
    assert services["certbot"]["profiles"] == ["certbot"]
    assert "acme:/var/www/certbot" in services["certbot"]["volumes"]
    assert "acme:/var/www/certbot:ro" in services["nginx"]["volumes"]
    assert "nginx -s reload" in " ".join(services["nginx"]["command"])
    assert "storage_setup" in " ".join(services["migrate"]["command"])
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert re.search(r"location /\.well-known/acme-challenge/ \{\s*root /var/www/certbot;", nginx)
    assert re.search(r"location = /metrics \{\s*return 404;", nginx)
    assert "proxy_set_header X-Request-ID $request_id;" in nginx
