"""The check of an uploaded zip, in a box of its own: the child side (sandbox/upload_check.py starts it).

    python -s check_upload.py --config config.json     (cwd /box; the zip at config["dataset_cache"])

Decoding a stranger's PNGs and JPEGs, and inflating their zip, is where a parser bug would hand an
attacker code execution; so it happens here, as an unprivileged uid with a memory and a wall limit of
its own, never in the worker. Like the harness it imports torch, waits for one line on stdin, then reads
config.json (and deletes it): engine/box_check.py, which check_text.py shares. It answers with:

- `progress` events: `epoch` 1 while entries are checked, 2 while images are decoded (of `epochs` 2),
  `batch` / `batches` the images done and in all (the schema a run's progress has);
- one `result` event: `problems` and `warnings` (entry, code, params: the worker writes the messages),
  `more_problems`, `own_split`, `moved_duplicates`, and `cache`: the file it wrote when the zip is good;
- that file, `upload.safetensors`: `images` uint8 (N, C, H, W), `labels`, `train_idx`, `test_idx` int64,
  and the class names (JSON) in its metadata under `class_names`. Plain data: the worker never unpickles
  anything a child wrote, and checks every number in it again.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

# In a box only sandbox/engine is bound (at its host path), not the rest of the sandbox package: with the
# project's folder on the path, `sandbox` is then a namespace package holding just the engine.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sandbox.engine import box_check, custom  # noqa: E402
from sandbox.engine import buildx_runtime as rt  # noqa: E402

OUTPUT = "upload.safetensors"
STAGES = {"checking": 1, "decoding": 2}
PROGRESS_EVERY_S = 0.5  # well inside the events' rate limit, however fast the images go
ENTRY_CHARS = 300  # a zip's entry names can be 64 KB long; the answer shows their start


def problem_dict(p: custom.ZipProblem) -> dict[str, Any]:
    return {"entry": p.entry[:ENTRY_CHARS], "code": p.code, "params": p.params}


def check(config: dict[str, Any]) -> dict[str, Any]:
    """Check and decode the zip; the `result` event's fields."""
    zip_path = Path(config["dataset_cache"])
    limits = custom.ZipLimits(**config.get("limits", {}))
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY_S and done < total:
            return
        last[0] = now
        rt.emit("progress", epoch=STAGES.get(stage, 1), epochs=2, batch=done, batches=max(total, done))

    report = custom.check_zip(zip_path, limits=limits, progress=progress)
    cache, moved = None, 0
    if report.ok:
        decoded, report, moved = custom.decode_images(
            zip_path,
            limits=limits,
            max_side=int(config.get("max_side", 64)),
            side=config.get("side"),
            report=report,
            progress=progress,
        )
        tensors = {k: decoded[k].contiguous() for k in ("images", "labels", "train_idx", "test_idx")}
        rt.write_safetensors(
            Path(OUTPUT), tensors, metadata={"class_names": json.dumps(decoded["class_names"])}
        )
        cache = OUTPUT
    return {
        "problems": [problem_dict(p) for p in report.problems],
        "more_problems": report.more_problems,
        "warnings": [problem_dict(p) for p in report.warnings],
        "own_split": bool(report.splits),
        "moved_duplicates": moved,
        "cache": cache,
    }


if __name__ == "__main__":
    box_check.finish(box_check.main(check, description="Check an uploaded zip inside the sandbox."))
