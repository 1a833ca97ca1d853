"""LLM code generation over 100 designs: share accepted / repaired / fallen back, and the checks' latency.

    python bench/codegen.py [--designs 100] [--sandboxed 8] [--seed 1]

The designs are the starters plus random valid mutations (hyperparameters, channel and feature widths,
an extra Dropout). Each goes through designs.services.artifact_generate with the real openai client
against the local scripted server (buildx.testing.openai_server), which answers with a scripted mix of
typical mistakes: prose around the code, literals instead of the constants, a model that differs from
the design, `import os` + open(), a 429 before the answer, timeouts.

Two check paths, both reported:
- "sandboxed" (the production path) for the first --sandboxed designs: model check and one-batch smoke
  run in a box started ahead of time (sandbox/checks.py: its harness has imported torch and waits;
  the first check waits for its start-up). BUILDX_SANDBOX_PRESPAWN=0 measures a box started per
  check instead, whose cost is mostly its start-up (importing torch).
- "in-process" for the rest: static + contract exactly as in production, then the model check on the
  meta device in this process (the bench's scripted code is its own, so running it here is safe) and
  no smoke run. This is what the checks cost without the child's start-up.

Uses DATABASE_URL / REDIS_URL when set (the database is migrated first); otherwise a fresh SQLite file.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import random
import re
import statistics
import sys
import tempfile
import time
import types
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buildx.settings")
if not os.environ.get("DATABASE_URL"):
    os.environ["SQLITE_PATH"] = str(Path(tempfile.mkdtemp(prefix="buildx-bench-")) / "db.sqlite3")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from buildx.test import make_user  # noqa: E402
from buildx.testing.openai_server import OpenAIServer, Reply  # noqa: E402
from designs import codegen, services, validation  # noqa: E402
from designs.catalog import INFERRED_PARAMS  # noqa: E402
from designs.models import CodeArtifact  # noqa: E402

# The scripted mix: (kind, share). The answers for each kind are built from the design's compiled script.
MIX = [
    ("good", 0.45),
    ("prose", 0.10),
    ("literals", 0.15),
    ("model_differs", 0.10),
    ("imports_os", 0.08),
    ("rate_limited", 0.05),
    ("hostile_every_time", 0.04),
    ("timeouts", 0.03),
]


def mutate(spec: dict, rng: random.Random) -> dict:
    spec = copy.deepcopy(spec)
    hp = spec.setdefault("hyperparameters", {})
    hp["epochs"] = rng.choice([1, 3, 5, 10, 20])
    hp["batch_size"] = rng.choice([16, 32, 64, 128])
    hp["learning_rate"] = rng.choice([0.1, 0.01, 0.003, 0.001, 0.0003])
    hp["optimizer"] = rng.choice(["sgd", "adam", "adamw"])
    layers = spec["layers"]
    top = [layer for layer in layers if layer["type"] in ("Conv2d", "Linear")]
    for layer in top[:-1]:  # the last one gives the class scores
        if rng.random() < 0.4:
            key = "out_channels" if layer["type"] == "Conv2d" else "out_features"
            layer[key] = max(2, int(layer[key] * rng.choice([0.5, 0.75, 1.5, 2])))
    if rng.random() < 0.5:
        flat = next((i for i, layer in enumerate(layers) if layer["type"] == "Flatten"), None)
        if flat is not None:
            layers.insert(flat + 1, {"type": "Dropout", "p": rng.choice([0.2, 0.3, 0.5])})
    for layer in layers:
        for key in INFERRED_PARAMS:
            layer.pop(key, None)
    return spec


def designs(n: int, rng: random.Random) -> list[dict]:
    starters = [s["spec"] for s in services.starter_list()]
    out = [copy.deepcopy(s) for s in starters]
    while len(out) < n:
        spec = mutate(rng.choice(starters), rng)
        try:
            _, report = validation.validate(spec)
        except validation.SpecError:
            continue
        if report.get("ready_to_train"):
            out.append(spec)
    return out[:n]


def inline(code: str, name: str, literal: str) -> str:
    return "\n".join(
        line if line.startswith(f"{name} =") else re.sub(rf"\b{name}\b", literal, line)
        for line in code.splitlines()
    )


def fenced(code: str) -> str:
    return f"```python\n{code}```"


def replies(kind: str, good: str) -> list[Reply | str]:
    if kind == "good":
        return [fenced(good)]
    if kind == "prose":
        return [f"Here is a readable script for your design.\n\n{good}\nIt trains for EPOCHS epochs."]
    if kind == "literals":
        epochs = re.search(r"^EPOCHS = (\d+)", good, re.M).group(1)
        return [fenced(inline(good, "EPOCHS", epochs)), fenced(good)]
    if kind == "model_differs":
        # A bias dropped from the last Linear: same output shape, a different parameter count.
        wrong = re.sub(
            r"nn\.Linear\((\d+), (\d+)\)(?!.*nn\.Linear)", r"nn.Linear(\1, \2, bias=False)", good, flags=re.S
        )
        return [fenced(wrong), fenced(good)]
    hostile = good.replace("import torch\n", 'import os\nimport torch\n\nLOG = open("out.txt", "w")\n', 1)
    if kind == "imports_os":
        return [fenced(hostile), fenced(good)]
    if kind == "rate_limited":
        return [Reply(status=429, headers={"Retry-After": "0"}), fenced(good)]
    if kind == "hostile_every_time":
        return [fenced(hostile)] * 3
    if kind == "timeouts":
        return [Reply(content="late", delay_s=settings.LLM_TIMEOUT_S + 0.3)] * (settings.LLM_MAX_RETRIES + 1)
    raise ValueError(kind)


def in_process_model_check(
    code: str, *, report: dict, hyperparameters: dict, reference: str
) -> tuple[codegen.Check, codegen.Check, codegen.Check]:
    """The bench's cheap path: the harness's own contract check on the meta device, in this process."""
    engine = str(ROOT / "sandbox" / "engine")
    if engine not in sys.path:
        sys.path.insert(0, engine)
    import harness

    started = time.monotonic()
    module = types.ModuleType("bench_script")
    try:
        exec(compile(code, "script.py", "exec"), module.__dict__)  # noqa: S102 - the bench's own scripted code
        expect = {
            "params": report["totals"]["params"],
            "output_shape": report["output_shape"],
            "state_dict": codegen.state_dict_shapes(reference),
        }
        harness.check_contract(module, {"expect": expect})
        model = codegen.Check("model", True, "", int((time.monotonic() - started) * 1000))
    except Exception as e:  # noqa: BLE001
        model = codegen.Check("model", False, str(e), int((time.monotonic() - started) * 1000))
    weights = codegen.Check("weights", model.ok, "", 0)
    return model, weights, codegen.Check("smoke", model.ok, "not run (in-process bench path)", 0)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--designs", type=int, default=100)
    parser.add_argument("--sandboxed", type=int, default=8, help="designs checked through the real sandbox")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--llm-delay",
        type=float,
        default=3.0,
        help="seconds the scripted LLM takes per answer (a real one takes seconds; 0: checks back to back, each waiting for its box)",
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)

    logging.disable(logging.INFO)  # per-request lines from httpx and the LLM client's retries
    call_command("migrate", verbosity=0)
    user = make_user(f"bench-{uuid.uuid4().hex[:8]}@example.com")
    server = OpenAIServer(api_key="bench-key").start()
    settings.OPENAI_API_KEY = "bench-key"
    settings.OPENAI_BASE_URL = server.base_url
    # A model name of its own: the answers cache (Redis, then the LLMCall table) must not answer a
    # second run on the same database with the first run's scripted replies.
    settings.OPENAI_MODEL = f"bench-model-{uuid.uuid4().hex[:8]}"
    settings.LLM_ENABLED = True
    settings.LLM_TIMEOUT_S = 0.5 + args.llm_delay
    settings.LLM_MAX_RETRIES = 1
    settings.LLM_BACKOFF_BASE_S = 0.01
    settings.LLM_BACKOFF_MAX_S = 0.05
    settings.LLM_USER_HOURLY_BUDGET = 10**9
    settings.LLM_CACHE_PREFIX = f"llm-bench-{uuid.uuid4().hex}"

    specs = designs(args.designs, rng)
    kinds = rng.choices([k for k, _ in MIX], weights=[w for _, w in MIX], k=len(specs))
    real_sandbox_check = codegen.check_in_sandbox
    rows = []
    started_all = time.monotonic()
    for i, (spec, kind) in enumerate(zip(specs, kinds, strict=True)):
        sandboxed = i < args.sandboxed
        codegen.check_in_sandbox = real_sandbox_check if sandboxed else in_process_model_check
        design = services.design_create(owner=user, name=f"Bench {i}", spec=spec)
        version = design.versions.get()
        good = services.artifact_compile(version=version).code
        server.script(
            *[
                Reply(content=r, delay_s=args.llm_delay) if isinstance(r, str) and args.llm_delay else r
                for r in replies(kind, good)
            ]
        )
        started = time.monotonic()
        artifact = services.artifact_generate(version=version, user=user)
        wall = time.monotonic() - started
        assert server.pending == 0 or kind in ("good", "prose"), (kind, server.pending)
        while server.pending:  # a leftover reply must not leak into the next design
            server._replies.popleft()
        if artifact.status == CodeArtifact.Status.READY:
            outcome = "accepted" if len(artifact.attempts) == 1 else "repaired"
        else:
            outcome = "fallback"
        check_ms = sum(a.get("check_ms", 0) for a in artifact.attempts)
        rows.append(
            {
                "kind": kind,
                "outcome": outcome,
                "sandboxed": sandboxed,
                "check_ms": check_ms,
                "wall": wall,
                "per_attempt": [a.get("check_ms", 0) for a in artifact.attempts if "check_ms" in a],
                "error": artifact.error.splitlines()[0] if artifact.error else "",
            }
        )
    codegen.check_in_sandbox = real_sandbox_check
    server.stop()

    n = len(rows)
    print(
        f"{n} designs ({len(services.starter_list())} starters + mutations), seed {args.seed}, "
        f"{time.monotonic() - started_all:.0f} s in all; boxes started ahead: "
        f"{settings.BUILDX_SANDBOX_PRESPAWN}; load average "
        + " ".join(f"{load:.2f}" for load in os.getloadavg())
    )
    for outcome in ("accepted", "repaired", "fallback"):
        share = sum(r["outcome"] == outcome for r in rows) / n
        print(f"  {outcome:9s} {share:6.1%}")
    print("  by scripted mistake:")
    for kind, _ in MIX:
        mine = [r for r in rows if r["kind"] == kind]
        if mine:
            counts = {o: sum(r["outcome"] == o for r in mine) for o in ("accepted", "repaired", "fallback")}
            print(f"    {kind:20s} n={len(mine):3d}  " + "  ".join(f"{k}={v}" for k, v in counts.items()))
    for label, flag in (
        ("sandboxed (production path)", True),
        ("in-process (static+contract+meta model)", False),
    ):
        mine = [r for r in rows if r["sandboxed"] is flag]
        if not mine:
            continue
        per_artifact = [r["check_ms"] for r in mine]
        per_attempt = [ms for r in mine for ms in r["per_attempt"]]
        print(f"  checks, {label}: n={len(mine)} artifacts, {len(per_attempt)} checked attempts")
        print(
            f"    per artifact ms: p50 {pct(per_artifact, 0.5):.0f}  p95 {pct(per_artifact, 0.95):.0f}  "
            f"max {max(per_artifact):.0f}"
        )
        if per_attempt:
            print(
                f"    per attempt  ms: p50 {pct(per_attempt, 0.5):.0f}  p95 {pct(per_attempt, 0.95):.0f}  "
                f"mean {statistics.mean(per_attempt):.0f}"
            )
    for r in rows:
        if r["outcome"] == "fallback":
            print(f"  fallback ({r['kind']}): {r['error'][:140]}")
            break


if __name__ == "__main__":
    main()
