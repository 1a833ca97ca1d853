"""Predictions with code the platform did not write, inside the training sandbox.

    python predict_child.py --script script.py --config config.json   (sandbox/engine on sys.path)

The web process never imports a script written by the LLM (training/predict.py); for such a run it
starts this in the same sandbox as training (training/sandbox.py). It builds the script's model, loads
the run's weights (safetensors: nothing is unpickled), preprocesses as ``Split.batches`` does (/ 255,
then the script's EVAL_TRANSFORM) and emits one ``result`` event: ``predictions``, the softmax
probabilities per image, for the uint8 images in config["images"] (a safetensors file with one tensor
``images`` (N, C, H, W)); or ``predicted`` and ``probability`` per image of the test split of
config["dataset_cache"]. Plain torch: no Django.

Exit codes: 0 done, 1 the script failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the script's `import buildx_runtime` finds ours

import buildx_runtime as rt  # noqa: E402
from harness import load_script  # noqa: E402

BATCH = 256


def run(script: Path, config: dict) -> int:
    fd = os.environ.get("BUILDX_EVENTS_FD")
    rt.configure(events_fd=int(fd) if fd else None, device="cpu", checkpoint_dir="checkpoints", resume=False)
    try:
        module = load_script(script)
        model = module.build_model()
        tensors, _metadata = rt.read_safetensors(Path(config["weights"]))
        if any(k.startswith("model.") for k in tensors):
            tensors = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        model.load_state_dict(tensors, strict=True)
        model.eval()
        if config.get("images"):
            images = rt.read_safetensors(Path(config["images"]))[0]["images"]
        else:
            dataset = rt.load_cache(config["dataset_cache"])
            images = dataset["images"].index_select(0, dataset["test_idx"])
        transform = getattr(module, "EVAL_TRANSFORM", None)
        rows = []
        with torch.inference_mode():
            for start in range(0, len(images), BATCH):
                x = images[start : start + BATCH].float().div_(255.0)
                if transform is not None:
                    x = transform(x)
                rows.append(model(x).float().softmax(1))
        probs = torch.cat(rows) if rows else torch.zeros(0, 0)
    except BaseException as e:  # noqa: BLE001 - every failure becomes an error event
        rt._emit(
            "error", cause="exception", message=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()
        )
        return 1
    if config.get("images"):
        rt._emit("result", predictions=[[round(float(p), 6) for p in row] for row in probs])
    else:  # a whole test split: the class and its probability per image keep the event small
        top = probs.max(1)
        rt._emit(
            "result", predicted=top.indices.tolist(), probability=[round(float(p), 4) for p in top.values]
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Predict with a BuildX script's model inside the sandbox.")
    parser.add_argument("--script", required=True, type=Path)
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    return run(args.script, json.loads(args.config.read_text()))


if __name__ == "__main__":
    sys.exit(main())
