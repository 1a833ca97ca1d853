"""The harness: what every sandboxed child runs around a BuildX script.

    python harness.py --script script.py --config config.json   (sandbox/engine on sys.path, in /box)

It imports torch and the runtime, then waits for one line on stdin: a box may be started ahead of
time and used later (sandbox.checks), and a box started on demand gets the line at once, so both
behave the same. Then it reads config.json (and deletes it: the script has no business reading the
platform's instructions), imports the script and does what config["mode"] says:

- "train" (the default): check the model against config["expect"] before any training (parameter
  count, output shape and, when given, every state-dict name and shape), call the script's
  train(model, data), then save the final weights as model.safetensors. The test split is not in
  this child's dataset: test metrics come from a trusted evaluation in another box.
- "smoke" (code checks): the same with EPOCHS = 1 and one batch per split.
- "evaluate" (the platform's compiled script, no user code): load config["weights"] into the model
  and emit one `result` event with the test metrics of config["dataset_cache"]'s test split.
- "predict": load config["weights"] and emit the softmax probabilities of config["images"] (a
  safetensors file with one uint8 tensor `images`), or the predicted class and its probability for
  each test image.

Events go to the file descriptor named by BUILDX_EVENTS_FD, one JSON object a line (docs/contracts.md,
section 3). Plain torch: no Django here.

Exit codes: 0 finished or stopped, 1 the script failed, 2 the script broke the contract.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import signal
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

# A stop can come while torch is still importing (seconds); SIGUSR1's default action would kill us
# without a `stopped` event. Remember it until the runtime takes over the signal.
_stop_before_runtime: list[int] = []
if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, lambda signum, frame: _stop_before_runtime.append(signum))

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the script's `import buildx_runtime` finds ours

import buildx_runtime as rt  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_CONTRACT = 0, 1, 2
PREDICT_BATCH = 256


class ContractError(Exception):
    """The script does not match what the platform expects; the message is for a beginner."""


def load_script(path: Path) -> ModuleType:
    # Not "__main__": the script's own `if __name__ == "__main__": rt.main(...)` must not run here.
    spec = importlib.util.spec_from_file_location("buildx_script", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules["buildx_script"] = module
    spec.loader.exec_module(module)
    return module


TASK_LM = "language_model"


def is_language_model(module: ModuleType) -> bool:
    return getattr(module, "TASK", None) == TASK_LM


def probe_model(module: ModuleType, input_shape: Any, *, device: str) -> tuple[int, Any, torch.nn.Module]:
    """Build the model on `device` and run a batch of two through it: (parameter count, output, model).
    A language model gets token ids (2, T); an image model zeros (2, C, H, W)."""
    dtype = torch.long if is_language_model(module) else None
    with torch.device(device):
        model = module.build_model()
        if not isinstance(model, torch.nn.Module):
            raise ContractError("build_model() must return a torch.nn.Module.")
        params = sum(p.numel() for p in model.parameters())
        model.eval()
        try:
            with torch.no_grad():
                out = model(torch.zeros(2, *input_shape, dtype=dtype))
        except Exception as e:
            if device == "meta":
                raise  # perhaps only the meta device's fault: the caller tries the CPU
            raise ContractError(
                f"The model cannot take a batch of shape {tuple(input_shape)}: {type(e).__name__}: {e}"
            ) from e
    return params, out, model


def check_contract(module: ModuleType, config: dict[str, Any]) -> tuple[int, list[int]]:
    """Build the model on the meta device (no memory, no time) and compare it with config["expect"].

    Returns (parameter count, output shape without the batch dimension).
    """
    for name in ("build_model", "train"):
        if not callable(getattr(module, name, None)):
            raise ContractError(f"The script must define a function named {name}().")
    input_shape = getattr(module, "INPUT_SHAPE", None)
    if is_language_model(module):
        if not (
            isinstance(input_shape, (tuple, list))
            and len(input_shape) == 1
            and isinstance(input_shape[0], int)
            and 1 <= input_shape[0] <= 8192
            and isinstance(getattr(module, "VOCAB_SIZE", None), int)
        ):
            raise ContractError(
                "A language model's script must define INPUT_SHAPE = (CONTEXT_LENGTH,) and VOCAB_SIZE."
            )
    elif not (isinstance(input_shape, (tuple, list)) and len(input_shape) == 3):
        raise ContractError("The script must define INPUT_SHAPE = (C, H, W).")
    epochs = getattr(module, "EPOCHS", None)
    max_epochs = config.get("max_epochs")
    if not isinstance(epochs, int) or epochs < 1:
        raise ContractError("The script must define EPOCHS as a whole number of at least 1.")
    if max_epochs is not None and epochs > max_epochs:
        raise ContractError(f"EPOCHS is {epochs}; this platform allows at most {max_epochs}.")

    try:
        params, out, model = probe_model(module, input_shape, device="meta")
    except ContractError:
        raise
    except Exception:
        # A model whose code reads values (an .item(), a branch on data) has no meta run: use the CPU.
        params, out, model = probe_model(module, input_shape, device="cpu")
    if not isinstance(out, torch.Tensor):
        raise ContractError("The model's forward() must return a tensor of class scores.")
    output_shape = list(out.shape[1:])

    expect = config.get("expect") or {}
    if "params" in expect and params != expect["params"]:
        raise ContractError(
            f"The script's model has {params:,} parameters but the design has {expect['params']:,}: "
            "the code does not build the model of the design."
        )
    if "output_shape" in expect and output_shape != list(expect["output_shape"]):
        raise ContractError(
            f"The script's model outputs {output_shape} per sample but the design outputs "
            f"{list(expect['output_shape'])}."
        )
    if isinstance(expect.get("state_dict"), dict):
        check_state_dict(model, expect["state_dict"])
    return params, output_shape


def check_data_shape(module: ModuleType, data: rt.Data, eval_transform: Any) -> None:
    """The dataset after EVAL_TRANSFORM must have the script's INPUT_SHAPE, or training fails later."""
    sample = data.train.images[:1].float().div(255.0)
    if eval_transform is not None:
        sample = eval_transform(sample)
    got = tuple(sample.shape[1:])
    if got != tuple(module.INPUT_SHAPE):
        raise ContractError(
            f"The dataset gives images of shape {got} after EVAL_TRANSFORM but INPUT_SHAPE is "
            f"{tuple(module.INPUT_SHAPE)}."
        )


def check_text_data(module: ModuleType, data: rt.TextData) -> None:
    """The tokenizer's ids must fit the model's embedding, or the first batch fails inside it."""
    if data.vocab_size > module.VOCAB_SIZE:
        raise ContractError(
            f"The dataset's tokenizer has {data.vocab_size} tokens but the model reads VOCAB_SIZE = "
            f"{module.VOCAB_SIZE}: the vocabularies must match."
        )
    window = module.INPUT_SHAPE[0] + 1
    if len(data.train) < window or len(data.val) < window:
        raise ContractError(f"The text is too short for windows of {window} tokens.")


def smoke_text(module: ModuleType) -> None:
    """config["smoke"] for a language model: one epoch of one step, one validation batch, a short sample."""
    for name, value in (("EPOCHS", 1), ("STEPS_PER_EPOCH", 1), ("EVAL_BATCHES", 1), ("SAMPLE_TOKENS", 4)):
        setattr(module, name, value)
    rt.state.epochs = 1


def smoke_data(module: ModuleType, data: rt.Data) -> rt.Data:
    """config["smoke"]: one epoch of one training batch and one validation batch, no test evaluation.

    Used to check code written by an LLM before it is offered: the whole train() runs, briefly.
    """
    # train() reads the module's constant when it runs. (typeshed's ModuleType takes no new attributes.)
    module.EPOCHS = 1  # type: ignore[attr-defined]
    rt.state.epochs = 1
    size = getattr(module, "BATCH_SIZE", 8)
    size = size if isinstance(size, int) and size > 0 else 8

    def head(split: rt.Split) -> rt.Split:
        return rt.Split(split.images[:size], split.labels[:size], name=split.name)

    return rt.Data(
        train=head(data.train), val=head(data.val), class_names=data.class_names, device=data.device
    )


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError | torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def check_state_dict(model: torch.nn.Module, expected: dict[str, list[int]]) -> None:
    """The model's weights must have the design's names and shapes, so that the trusted evaluation
    (which builds the design's model with the compiler) can load what this script trained."""
    found = {k: list(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in expected if k in found and found[k] != list(expected[k])]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing[:5]))
    if unexpected:
        parts.append("unexpected " + ", ".join(unexpected[:5]))
    if wrong:
        parts.append(", ".join(f"{k} is {found[k]} instead of {list(expected[k])}" for k in wrong[:5]))
    raise ContractError(
        "The model's weights must have exactly the names and shapes of the design's model "
        "(one attribute per block, named as in the design): " + "; ".join(parts) + "."
    )


def warm_up() -> None:
    """What a first script pays once, paid while the box waits for its go: the meta device's kernels
    (the contract check), a forward and backward pass, and the first optimizer steps (torch imports
    its compiler on first use). About a second on the CPU, which a code check started ahead of time
    would otherwise spend after its go. Leaves nothing a script could notice: the random state is
    put back, and no file is written."""
    torch_rng, python_rng = torch.get_rng_state(), random.getstate()

    def small() -> torch.nn.Module:
        nn = torch.nn
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.AvgPool2d(1),
            nn.Dropout(0.1), nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, 2),
        )  # fmt: skip

    try:
        with torch.device("meta"):
            small()(torch.zeros(2, 1, 8, 8))
        model = small()
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
        for optimizer in (
            torch.optim.Adam(model.parameters()),
            torch.optim.AdamW(model.parameters()),
            torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        ):
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            model(x).argmax(1)
    finally:
        torch.set_rng_state(torch_rng)
        random.setstate(python_rng)


def wait_for_go() -> bool:
    """Block until the supervisor says go (one line on stdin); False when it closed stdin without it."""
    try:
        line = sys.stdin.readline()
    except (OSError, ValueError):
        return False
    with contextlib.suppress(OSError):
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, 0)  # the script's input() and sys.stdin read nothing
        os.close(fd)
    return line.strip() == "go"


def read_config(path: Path) -> dict[str, Any]:
    config = json.loads(path.read_text())
    with contextlib.suppress(OSError):
        path.unlink()
    return config


def final_weights(model: torch.nn.Module, path: Path) -> None:
    """The model as train() left it (a plain state dict): what the trusted evaluation measures and
    predictions use."""
    rt.write_safetensors(path, dict(model.state_dict()), metadata={})


def load_weights(model: torch.nn.Module, path: Path) -> None:
    tensors, _metadata = rt.read_safetensors(path)
    if any(k.startswith("model.") for k in tensors):
        tensors = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(tensors, strict=True)


def run(script: Path, config: dict[str, Any]) -> int:
    mode = config.get("mode") or ("smoke" if config.get("smoke") else "train")
    fd = os.environ.get("BUILDX_EVENTS_FD")
    rt.configure(
        events_fd=int(fd) if fd else None,
        device=config.get("device", "auto") if mode in ("train", "smoke") else "cpu",
        checkpoint_dir=config.get("checkpoint_dir", "checkpoints"),
        resume=bool(config.get("resume", False)),
    )
    if _stop_before_runtime:
        rt.request_stop(signal.SIGUSR1, None)
    if mode in ("evaluate", "predict"):
        return measure(script, config, mode=mode)
    device = rt.current_device()
    seed = int(config.get("seed", 42))
    try:
        module = load_script(script)
        params, _ = check_contract(module, config)
        rt.state.epochs = module.EPOCHS
        eval_transform = getattr(module, "EVAL_TRANSFORM", None)
        dataset = rt.load_cache(config["dataset_cache"])
        language_model = is_language_model(module)
        text_test: rt.TokenSplit | None = None
        data: rt.Data | rt.TextData
        if language_model:
            if dataset.get("kind") != "text":
                raise ContractError("A language model trains on a text dataset; this one has images.")
            data, text_test = rt.make_text_data(dataset, device=device)
            check_text_data(module, data)
            if mode == "smoke":
                smoke_text(module)
        else:
            if dataset.get("kind") == "text":
                raise ContractError("An image model trains on images; this dataset is text.")
            data, test = rt.make_data(
                dataset, val_split=float(config.get("val_split", 0.1)), seed=seed, device=device
            )
            check_data_shape(module, data, eval_transform)
            if mode == "smoke":
                data = smoke_data(module, data)
    except ContractError as e:
        rt.emit("error", cause="contract", message=str(e), traceback="")
        return EXIT_CONTRACT
    except Exception as e:
        rt.emit("error", cause="exception", message=f"{type(e).__name__}: {e}", traceback=short_traceback())
        return EXIT_FAILED

    rt.emit("status", status="running", device=str(device), torch=torch.__version__, params=params)
    try:
        rt.seed_everything(seed)  # the same weights on every run of the same script
        model = module.build_model().to(device)
        if device.type == "cuda" and not language_model:
            model = model.to(memory_format=torch.channels_last)  # batches arrive channels_last on CUDA
        rt.state.model = model  # a stop before the script registers anything still saves the weights
        module.train(model, data)
        if rt.stop_requested():  # the stop came after the last batch: honour it all the same
            rt.finish_stop()
            return EXIT_OK
        if mode == "smoke":
            rt.emit("log", line="Smoke run finished: one batch trained and evaluated.", stream="runtime")
            return EXIT_OK
        final_weights(model, Path(config.get("final_weights", "model.safetensors")))
        if config.get("report_test"):
            # Code whose weights the platform's model cannot load: its own measurement, labelled so.
            if isinstance(data, rt.TextData):
                if text_test is None:
                    raise ValueError("the dataset has no test split")
                result = text_metrics(module, model, text_test.tokens, data.tokenizer, dataset)
            else:
                result = rt.evaluate_test(model, test, class_names=data.class_names, transform=eval_transform)
            rt.emit("result", test=result)
            return EXIT_OK
    except rt.StopTraining:
        rt.finish_stop()
        return EXIT_OK
    except BaseException as e:  # noqa: BLE001 - every failure becomes an error event for the beginner
        if isinstance(e, SystemExit) and e.code in (0, None):
            e = RuntimeError("the script called exit() before training finished")
        cause = "out_of_memory" if is_out_of_memory(e) else "exception"
        rt.emit("error", cause=cause, message=f"{type(e).__name__}: {e}", traceback=short_traceback())
        return EXIT_FAILED
    rt.emit(
        "log", line="Training finished. BuildX now measures the model on the test split.", stream="runtime"
    )
    return EXIT_OK


def measure(script: Path, config: dict[str, Any], *, mode: str) -> int:
    """The "evaluate" and "predict" modes: the script's model with saved weights, nothing trained."""
    try:
        module = load_script(script)
        model = module.build_model()
        load_weights(model, Path(config["weights"]))
        model.eval()
        transform = getattr(module, "EVAL_TRANSFORM", None)
        if mode == "evaluate" and is_language_model(module):
            dataset = rt.load_cache(config["dataset_cache"])
            start, end = dataset["splits"]["test"]
            tokenizer = rt.Tokenizer.from_json(dataset["tokenizer"])
            result = text_metrics(module, model, dataset["tokens"][start:end], tokenizer, dataset)
            rt.emit("result", test=result)
            return EXIT_OK
        if mode == "evaluate":
            dataset = rt.load_cache(config["dataset_cache"])
            test = rt.Split(
                dataset["images"].index_select(0, dataset["test_idx"]),
                dataset["labels"].index_select(0, dataset["test_idx"]),
                name="test",
            )
            result = rt.evaluate_test(model, test, class_names=dataset["class_names"], transform=transform)
            rt.emit("result", test=result)
            return EXIT_OK
        if config.get("images"):
            images = rt.read_safetensors(Path(config["images"]))[0]["images"]
        else:
            dataset = rt.load_cache(config["dataset_cache"])
            images = dataset["images"].index_select(0, dataset["test_idx"])
        rows = []
        with torch.inference_mode():
            for start in range(0, len(images), PREDICT_BATCH):
                x = images[start : start + PREDICT_BATCH].float().div_(255.0)
                if transform is not None:
                    x = transform(x)
                rows.append(model(x).float().softmax(1))
        probs = torch.cat(rows) if rows else torch.zeros(0, 0)
    except BaseException as e:  # noqa: BLE001 - every failure becomes an error event
        rt.emit("error", cause="exception", message=f"{type(e).__name__}: {e}", traceback=short_traceback())
        return EXIT_FAILED
    if config.get("images"):
        rt.emit("result", predictions=[[round(float(p), 6) for p in row] for row in probs])
    else:  # a whole test split: the class and its probability per image keep the event small
        top = probs.max(1)
        rt.emit(
            "result", predicted=top.indices.tolist(), probability=[round(float(p), 4) for p in top.values]
        )
    return EXIT_OK


def text_metrics(
    module: ModuleType, model: torch.nn.Module, tokens: torch.Tensor, tokenizer: rt.Tokenizer, dataset: dict
) -> dict[str, Any]:
    """A language model's test metrics (loss, perplexity, bits per token and character, next-token accuracy,
    and for the addition corpus the share of held-out sums answered exactly)."""
    return rt.lm_test_metrics(
        model,
        tokens,
        context_length=int(module.INPUT_SHAPE[0]),
        tokenizer=tokenizer,
        exact_match=dataset.get("name") == "addition",
    )


def short_traceback() -> str:
    """The end of the traceback: an error event must stay small (sandbox.events)."""
    return traceback.format_exc()[-8000:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a BuildX script inside the sandbox.")
    parser.add_argument("--script", required=True, type=Path)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--no-wait", action="store_true", help="start at once (tests, benches)")
    args = parser.parse_args(argv)
    if not args.no_wait:
        warm_up()
    if not args.no_wait and not wait_for_go():
        return EXIT_OK  # the box was discarded before it was used
    return run(args.script, read_config(args.config))


def exit_now(code: int) -> None:
    """Flush what we wrote and leave without interpreter teardown.

    Tearing down an interpreter with torch loaded takes seconds on a busy machine (2-3 s measured here),
    which a stop would otherwise wait for; checkpoints are already closed and the events flushed.
    """
    for stream in (sys.stdout, sys.stderr, rt.state.events):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
