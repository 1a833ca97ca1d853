"""GPU utilisation and memory from NVML (buildx/worker_metrics.py), through NVIDIA's own bindings with
nothing of ours faked: on a machine with a driver, the figures are the driver's; without one (CI, this
project's CPU machines), no GPU series at all rather than zeros. Not yet run on a machine with a GPU."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from buildx import worker_metrics
from training.tests.ops_support import parse

pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")


def gpus_the_driver_sees() -> int | None:
    """How many GPUs NVML reports, or None where there is no NVIDIA driver."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        return pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()


def test_gpu_stats_are_the_drivers_figures_or_nothing_without_a_driver():
    count = gpus_the_driver_sees()
    stats = worker_metrics.gpu_stats()
    if count is None:
        assert stats == []
        return
    assert [s["gpu"] for s in stats] == [str(i) for i in range(count)]
    for s in stats:
        assert 0.0 <= s["utilization"] <= 1.0
        assert 0 < s["memory_used"] <= s["memory_total"]


def test_a_workers_heartbeat_carries_its_gpus_to_the_scrape(db):
    name = f"gpu-test-host:{time.time_ns()}"
    gpus = worker_metrics.gpu_stats()
    worker_metrics.heartbeats_write(
        name, {"host": "gpu-test-host", "pid": 1, "queues": ["training"], "threads": 1, "started": time.time(),
               "seen": time.time(), "gpus": gpus},
    )  # fmt: skip
    try:
        registry = CollectorRegistry()
        registry.register(worker_metrics.WorkerHeartbeatCollector())
        scraped = parse(generate_latest(registry).decode())
    finally:
        worker_metrics.heartbeats_remove(name)
    ours = {
        labels: value
        for labels, value in scraped.get("buildx_gpu_memory_total_bytes", {}).items()
        if ("worker", name) in labels
    }
    assert sorted(dict(labels)["gpu"] for labels in ours) == [g["gpu"] for g in gpus]
    for gpu in gpus:
        assert ours[(("gpu", gpu["gpu"]), ("worker", name))] == gpu["memory_total"]
    assert any(("worker", name) in labels for labels in scraped["buildx_worker_heartbeat_age_seconds"])
