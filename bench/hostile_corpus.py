"""The hostile corpus four ways: one line per script with each way's verdict.

    python bench/hostile_corpus.py              # every script, about four minutes on two cores
    python bench/hostile_corpus.py --only h41,h55

The ways are those of sandbox/tests/test_hostile_corpus.py (sandbox/tests/hostile_runs.py runs them):
the static check on or off, in a box started for the script ("cold", run_script) or in a box started
ahead of time ("check path", sandbox.checks.run_check, where the harness imports the script). A
verdict is "rejected at line N" (the static check named the line marked `# HOSTILE`), or how the contained run ended:
its status and cause (why the supervisor stopped it, else the error event's cause). A run in which a
secret, a breach word, a canary connection or an escaped file showed up is marked LEAK. Last, the runs
that cost the worker's supervising thread the most CPU time, beside the child's own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buildx.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from sandbox import checks  # noqa: E402
from sandbox.engine import datasets as ds  # noqa: E402
from sandbox.tests.hostile_runs import (  # noqa: E402
    BREACH_WORDS,
    DB_PASSWORD,
    ESCAPE_PATHS,
    EXPECT,
    NEIGHBOUR_SECRET,
    SCRIPTS,
    SECRET,
    SECRETS,
    SMALL_LIMITS,
    Canary,
    Expect,
    Outcome,
    check_config,
    hostile_inputs,
    hostile_line,
    run_cold,
    run_config,
    run_through_check_path,
)

WAYS = [("check path", False), ("check path", True), ("cold", False), ("cold", True)]
COLUMNS = [("cold", True), ("check path", True), ("cold", False), ("check path", False)]


def verdict(outcome: Outcome, canary: Canary, *, marked: int | None) -> str:
    result = outcome.result
    if result.status == "rejected":
        if marked is not None and f"Line {marked}: " in result.cause:
            return f"rejected at line {marked}"
        first = result.cause.split(":")[0].removeprefix("Line ")
        return f"rejected at line {first}, not the marked {marked}"
    text = json.dumps(outcome.events)
    leaked = (
        any(secret in text for secret in SECRETS)
        or any(word in text for word in BREACH_WORDS)
        or any(secret.encode() in copy.data for copy in outcome.copies for secret in SECRETS)
        or canary.connections
        or any(path.exists() for path in ESCAPE_PATHS)
    )
    errors = [e["cause"] for e in outcome.events if e["kind"] == "error"]
    cause = result.killed_for or (errors[-1] if errors else "")
    return (
        ("LEAK " if leaked else "")
        + result.status
        + (f", {cause}" if cause and cause != result.status else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated script prefixes (h41,h55)")
    args = parser.parse_args()
    prefixes = [p for p in args.only.split(",") if p]
    scripts = [s for s in SCRIPTS if not prefixes or s.stem.startswith(tuple(prefixes))]
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    work = Path(tempfile.mkdtemp(prefix="buildx-hostile-"))
    for name, value in SMALL_LIMITS.items():
        setattr(settings, name, value)
    settings.BUILDX_SANDBOX_WORK_DIR = work / "boxes"
    (work / "boxes").mkdir()
    # What a real worker's environment holds and a child must never see.
    os.environ["BUILDX_TEST_SECRET"] = SECRET
    os.environ["DATABASE_URL"] = f"postgres://buildx:{DB_PASSWORD}@127.0.0.1:5432/buildx"
    os.environ["REDIS_URL"] = f"redis://:{DB_PASSWORD}@127.0.0.1:6379/4"
    cache = ds.ensure_cache("digits", data_dir=work / "cache", cache_dir=work / "cache")
    neighbour = work / "neighbour" / "checkpoints" / "best.safetensors"
    neighbour.parent.mkdir(parents=True)
    neighbour.write_text(NEIGHBOUR_SECRET)
    canary = Canary()

    width = max(len(s.stem) for s in scripts)
    header = " | ".join(f"check {'on' if check else 'off'}, {way:<10}".ljust(30) for way, check in COLUMNS)
    print(f"{'script':<{width}} | {header}")
    print("-" * (width + 3 + len(header)))
    started = time.monotonic()
    counts: dict[str, int] = {}
    costs: list[tuple[float, float, str]] = []  # (worker CPU s, child CPU s, which run)
    try:
        for script in scripts:
            code = script.read_text()
            expect = EXPECT.get(script.stem, Expect())
            cells: dict[tuple[str, bool], str] = {}
            for way, check in WAYS:
                canary.connections.clear()
                run_dir = work / "runs" / f"{script.stem}-{way.replace(' ', '-')}-{check}"
                inputs = hostile_inputs(canary, neighbour)
                cpu_before = time.thread_time()  # the supervisor runs in this thread
                if way == "cold":
                    outcome = run_cold(code, check=check, run_dir=run_dir, config=run_config(cache), cache=cache,
                                       inputs=inputs, wall=expect.wall)  # fmt: skip
                else:
                    outcome = run_through_check_path(
                        code, check=check, config=check_config(cache), cache=cache, inputs=inputs,
                        wall=expect.wall, box_work_dir=work / "boxes",
                    )  # fmt: skip
                worker_cpu = time.thread_time() - cpu_before
                costs.append(
                    (
                        worker_cpu,
                        outcome.result.cpu_seconds,
                        f"{script.stem}, check {'on' if check else 'off'}, {way}",
                    )
                )
                cells[(way, check)] = verdict(outcome, canary, marked=hostile_line(code))
                kind = cells[(way, check)].split(" ")[0].rstrip(",")
                counts[kind] = counts.get(kind, 0) + 1
            row = " | ".join(cells[column].ljust(30) for column in COLUMNS)
            print(f"{script.stem:<{width}} | {row}", flush=True)
    finally:
        checks.shutdown()
        canary.close()
        shutil.rmtree(work, ignore_errors=True)  # a disk filler leaves hundreds of megabytes
    print(
        f"\n{len(scripts)} scripts, {sum(counts.values())} runs in {time.monotonic() - started:.0f} s: "
        + ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))
    )
    print("\nMost CPU time of the worker's supervising thread (seconds), beside the child's own:")
    for worker_cpu, child_cpu, which in sorted(costs, reverse=True)[:6]:
        print(f"  worker {worker_cpu:5.2f}   child {child_cpu:5.2f}   {which}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
