"""Text generation with a finished language-model run, in the web process, in a bounded pool of threads.

Trust is the predictions' (training/predict.py): the model is rebuilt from the design version's spec by
the platform's compiler and the run's weights must fit it exactly; a run of code written by the assistant
that BuildX cannot rebuild is refused here (the sandboxed path is not built for generation yet). The
tokenizer is the one stored with the run's dataset: the corpus's alphabet for characters, the dataset
cache's for BPE.

Generation never runs on the thread that serves the request: `start()` hands it to a pool of
GENERATE_WORKERS threads and returns a queue the caller reads tokens from (a JSON answer waits for the
end, the event stream sends each token as it comes). A full pool answers "busy" at once instead of
queueing without bound. Limits per user are the predictions' (training.limits.prediction_admitted).
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from django.conf import settings
from django.utils.translation import gettext as _

from designs import compiler, sequence
from library import services as library_services
from library import text_datasets
from sandbox.engine import buildx_runtime as rt
from sandbox.engine import corpora, corpus_facts
from training import predict
from training.models import Run

MAX_NEW_TOKENS = 500
MAX_PROMPT_CHARS = 2000
GENERATE_WORKERS = 2  # threads that generate at once in one web process (each uses torch's threads)
CACHE_MODELS = 4


@dataclass
class LoadedLM:
    run_id: int
    model: torch.nn.Module
    tokenizer: rt.Tokenizer
    context_length: int
    vocab_size: int
    checkpoint: str
    epoch: int | None
    kv_cache: bool  # a chain the runtime's CachedModel steps: generate reading one new token at a time


def is_language_model(run: Run) -> bool:
    return run.design_version.spec.get("task") == corpus_facts.TASK_LM


def check_generatable(run: Run) -> None:
    predict.check_trusted(run)
    if not is_language_model(run):
        raise predict.PredictRefused(
            "not_a_language_model", _("This run's model classifies images; it does not write text.")
        )


def tokenizer_for(run: Run) -> rt.Tokenizer:
    """The tokenizer stored with the run's dataset (the corpus's alphabet needs no file)."""
    parsed = corpus_facts.parse_key(run.dataset)
    if parsed is None and text_datasets.text_dataset_by_spec_name(run.dataset) is not None:
        # An uploaded text: its tokenizer was made when it was checked, and lives in its cache.
        path = library_services.dataset_cache(run.dataset)
        return rt.Tokenizer.from_json(rt.load_cache(path)["tokenizer"])
    if parsed is None:
        raise predict.PredictRefused("model_unavailable", _("BuildX does not know this run's text dataset."))
    name, kind, _vocab = parsed
    if kind == "char":
        return rt.Tokenizer(kind="char", alphabet=corpus_facts.CORPORA[name].alphabet)
    path = corpora.ensure_text_cache(run.dataset, cache_dir=Path(settings.DATA_DIR) / "cache")
    return rt.Tokenizer.from_json(rt.load_cache(path)["tokenizer"])


def build(run: Run) -> LoadedLM:
    check_generatable(run)
    artifact = predict.saved_weights(run)
    namespace = compiler.load_compiled(predict.compiled_script(run))
    model = namespace["build_model"]()
    tensors = predict.read_weights(artifact)
    expected = model.state_dict()
    if set(expected) != set(tensors) or any(expected[k].shape != tensors[k].shape for k in expected):
        raise predict.PredictRefused(
            "weights_mismatch",
            _("The saved weights do not fit the design's model any more, so this run cannot predict."),
        )
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return LoadedLM(
        run_id=run.pk,
        model=model,
        tokenizer=tokenizer_for(run),
        context_length=int(namespace["CONTEXT_LENGTH"]),
        vocab_size=int(namespace["VOCAB_SIZE"]),
        checkpoint=predict.checkpoint_name(artifact),
        epoch=artifact.epoch,
        kv_cache=sequence.generates_incrementally(run.design_version.spec) and rt.CachedModel.supports(model),
    )


_lock = threading.Lock()
_models: collections.OrderedDict[tuple, LoadedLM] = collections.OrderedDict()


def get_model(run: Run) -> LoadedLM:
    """The run's model from a small per-process LRU cache (keyed by the weights file, as predictions)."""
    key = predict.models.key(run)
    with _lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
        loaded = build(run)
        _models[key] = loaded
        while len(_models) > CACHE_MODELS:
            _models.popitem(last=False)
        return loaded


def clear_cache() -> None:
    with _lock:
        _models.clear()


@dataclass(frozen=True)
class Request:
    prompt: str
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = 40
    seed: int | None = None


class Busy(Exception):
    """Every generation thread of this process is taken."""


_pool = ThreadPoolExecutor(max_workers=GENERATE_WORKERS, thread_name_prefix="generate")
_slots = threading.BoundedSemaphore(GENERATE_WORKERS)
DONE = object()


def _run(loaded: LoadedLM, request: Request, out: queue.Queue, cancelled: threading.Event) -> None:
    try:
        predict.use_torch_threads(settings.GENERATE_TORCH_THREADS)
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(
            request.seed if request.seed is not None else int(time.time())
        )
        ids: list[int] = []
        text = ""
        for token in rt.generate_tokens(
            loaded.model,
            loaded.tokenizer.encode(request.prompt),
            max_new_tokens=request.max_new_tokens,
            context_length=loaded.context_length,
            temperature=request.temperature,
            top_k=request.top_k,
            generator=generator,
            kv_cache=loaded.kv_cache,
        ):
            if cancelled.is_set():
                break
            ids.append(token)
            # A BPE token may end inside a character: send what decodes so far beyond what was sent.
            whole = loaded.tokenizer.decode(ids)
            piece, text = whole[len(text) :], whole
            out.put(("token", {"index": len(ids) - 1, "id": token, "text": piece}))
        out.put(
            (
                "done",
                {
                    "prompt": request.prompt,
                    "text": text,
                    "tokens": len(ids),
                    "seconds": round(time.perf_counter() - started, 4),
                },
            )
        )
    except Exception as exc:  # noqa: BLE001 - the reader gets an error event instead of a silent end
        out.put(("error", {"message": str(exc)[:300]}))
    finally:
        out.put((DONE, None))
        _slots.release()


def start(loaded: LoadedLM, request: Request) -> tuple[queue.Queue, threading.Event]:
    """Generate in the pool: returns the queue of ("token" | "done" | "error", data) and a cancel flag."""
    if not _slots.acquire(blocking=False):
        raise Busy()
    out: queue.Queue = queue.Queue()
    cancelled = threading.Event()
    try:
        _pool.submit(_run, loaded, request, out, cancelled)
    except BaseException:
        _slots.release()
        raise
    return out, cancelled


def events(out: queue.Queue, *, timeout_s: float = 120.0) -> Iterator[tuple[str, dict]]:
    """The generation's events in order, until it ends."""
    while True:
        kind, data = out.get(timeout=timeout_s)
        if kind is DONE:
            return
        yield kind, data
