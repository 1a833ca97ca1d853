"""What the sandbox costs a run: start-up latency and the training loop, bubblewrap against a plain child.

    python bench/sandbox_overhead.py            # a few seconds per repeat
    python bench/sandbox_overhead.py --repeats 10 --train

1. start-up: run_script on a script that only prints, as `python script.py` (no torch import), so the
   figure is the supervisor plus bwrap plus seccomp plus the uid switch, against the same supervisor
   with BUILDX_SANDBOX=none;
2. --train: the digits starter through the real harness, both ways (the loop itself runs the same
   code; any difference is namespaces, seccomp and limits).
Prints the median wall time of each and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
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

from sandbox.engine import datasets as ds  # noqa: E402
from sandbox.launcher import python_executable  # noqa: E402
from sandbox.runner import run_script  # noqa: E402

DIGITS_SCRIPT = ROOT / "sandbox" / "tests" / "scripts" / "digits_cnn.py"


def one_run(*, mode: str, code: str, entry: list[str] | None, config: dict) -> float:
    settings.BUILDX_SANDBOX = mode
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = run_script(code=code, run_dir=Path(folder) / "run", config=config, on_event=lambda e: None,
                            should_stop=lambda: False, wall_limit_s=600, trusted_code=True, entry=entry)  # fmt: skip
        elapsed = time.perf_counter() - started
    if result.status != "succeeded":
        raise SystemExit(f"{mode}: {result.status}: {result.cause}")
    return elapsed


def compare(label: str, *, repeats: int, code: str, entry: list[str] | None, config: dict) -> None:
    times = {mode: [] for mode in ("none", "bwrap")}
    for _ in range(repeats):
        for mode in times:  # interleaved, so that a busy moment hits both
            times[mode].append(one_run(mode=mode, code=code, entry=entry, config=config))
    plain, boxed = statistics.median(times["none"]), statistics.median(times["bwrap"])
    print(
        f"{label:<10} none {plain * 1000:8.1f} ms   bwrap {boxed * 1000:8.1f} ms   ratio {boxed / plain:5.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train", action="store_true", help="also train the digits starter both ways")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, median of {args.repeats}")
    compare(
        "start-up",
        repeats=args.repeats,
        code="print('ok')",
        entry=[python_executable(), "script.py"],
        config={},
    )
    if args.train:
        with tempfile.TemporaryDirectory() as cache_dir:
            cache = ds.ensure_cache("digits", data_dir=Path(cache_dir), cache_dir=Path(cache_dir))
            config = {"dataset_cache": str(cache), "checkpoint_dir": "checkpoints", "device": "cpu", "seed": 42,
                      "expect": {"params": 9930, "output_shape": [10]}, "val_split": 0.1, "resume": False}  # fmt: skip
            compare("train", repeats=args.repeats, code=DIGITS_SCRIPT.read_text(), entry=None, config=config)


if __name__ == "__main__":
    main()
