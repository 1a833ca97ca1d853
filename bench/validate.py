"""Validation latency for a 40-layer design: p50/p95 of POST /api/v1/designs/validate/ (the editor's call).

    python bench/validate.py [--runs 200]

Three figures: "edit" (each request changes one layer's setting, as typing in the editor does: the changed
layer and those after it miss the module/shape caches), "cold caches" (every cache cleared before each
request: the worst case, e.g. a fresh worker) and the very first request of the process (torch's meta
kernels warming up). Requests go through DRF's view (parsing, validation, JSON rendering), not the network.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buildx.settings")

import django  # noqa: E402

django.setup()

from rest_framework.test import APIRequestFactory, force_authenticate  # noqa: E402

from designs import validation  # noqa: E402
from designs.api import ValidateView  # noqa: E402
from designs.tests.specs import forty_layers  # noqa: E402


class BenchUser:
    is_authenticated = True
    is_active = True
    pk = id = 0


def request_ms(view, factory: APIRequestFactory, spec: dict) -> float:
    request = factory.post("/api/v1/designs/validate/", json.dumps(spec), content_type="application/json")
    force_authenticate(request, user=BenchUser())
    started = time.perf_counter()
    response = view(request)
    response.render()
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, response.content[:300]
    return elapsed


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * len(ordered))) - 1)]
    return f"p50 {statistics.median(ordered):6.1f} ms   p95 {p95:6.1f} ms   max {ordered[-1]:6.1f} ms"


def clear_caches() -> None:
    validation.meta_module.cache_clear()
    validation.meta_forward.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    view = ValidateView.as_view()
    factory = APIRequestFactory()
    spec = forty_layers()
    rng = random.Random(0)

    first = request_ms(view, factory, spec)
    _spec, report = validation.validate(spec)
    print(
        f"design: {len(spec['layers'])} layers, {report['totals']['params']:,} parameters, valid={report['valid']}"
    )
    print(f"first request of the process (meta kernels warming up): {first:.1f} ms")

    edits = []
    convs = [i for i, layer in enumerate(spec["layers"]) if layer["type"] == "Conv2d"]
    for _ in range(args.runs):
        edited = json.loads(json.dumps(spec))
        edited["layers"][rng.choice(convs)]["out_channels"] = rng.randint(8, 256)
        edits.append(request_ms(view, factory, edited))
    print(f"edit (one setting changed per request), {args.runs} runs: {percentiles(edits)}")

    cold = []
    for _ in range(max(20, args.runs // 4)):
        clear_caches()
        cold.append(request_ms(view, factory, spec))
    print(f"cold caches (nothing memoised), {len(cold)} runs:  {percentiles(cold)}")


if __name__ == "__main__":
    main()
