"""The check of an uploaded text, in a box of its own: the child side (sandbox/text_check.py starts it).

    python -s check_text.py --config config.json     (cwd /box; the text at config["dataset_cache"])

Training a byte-level BPE on a stranger's text runs the tokenizers library (native code) on hostile input,
with memory and time that the text decides; so it happens here, as an unprivileged uid with a memory and
a wall limit of its own, never in the worker. Like check_upload.py (engine/box_check.py) it imports
torch, waits for one line on stdin, then reads config.json (and deletes it): `limits`
(text_upload.TextLimits), `tokenizer`, `vocab_size`, `name`. It answers with:

- one `result` event: `problems` (at most one: `entry` "", `code`, `params`; the worker writes the
  messages), and for a good text `cache`: the file it wrote, `vocab_size` and `tokens` ({train, val, test});
- that file, `text.safetensors`: `tokens` I32 (N,), the whole stream; metadata `tokenizer` (its JSON, as
  the cache holds it) and `splits` (JSON [a, b]: the token positions where validation and test start).
  Plain data: the worker checks every id against the text it reads itself, and writes the cache.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# In a box only sandbox/engine is bound (at its host path), not the rest of the sandbox package: with the
# project's folder on the path, `sandbox` is then a namespace package holding just the engine.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from sandbox.engine import box_check, text_upload  # noqa: E402
from sandbox.engine import buildx_runtime as rt  # noqa: E402

OUTPUT = "text.safetensors"


def check(config: dict[str, Any]) -> dict[str, Any]:
    """Read and tokenise the text; the `result` event's fields."""
    limits = text_upload.TextLimits(**config.get("limits", {}))
    try:
        text = text_upload.read_text(Path(config["dataset_cache"]), limits=limits)
        cache = text_upload.tokenise(
            text,
            tokenizer=str(config.get("tokenizer", "char")),
            vocab_size=config.get("vocab_size"),
            limits=limits,
            name=str(config.get("name", "upload")),
        )
    except text_upload.TextRejected as rejected:
        problem = rejected.problem
        return {"problems": [{"entry": "", "code": problem.code, "params": problem.params}], "cache": None}
    splits = cache["splits"]
    rt.write_safetensors(
        Path(OUTPUT),
        {"tokens": cache["tokens"].to(torch.int32).contiguous()},
        metadata={
            "tokenizer": json.dumps(cache["tokenizer"], separators=(",", ":")),
            "splits": json.dumps([splits["val"][0], splits["test"][0]]),
        },
    )
    return {
        "problems": [],
        "cache": OUTPUT,
        "vocab_size": cache["vocab_size"],
        "tokens": text_upload.split_sizes(splits),
    }


if __name__ == "__main__":
    box_check.finish(
        box_check.main(check, description="Check and tokenise an uploaded text inside the sandbox.")
    )
