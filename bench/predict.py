"""Single-image predictions on the CPU with a warm model cache: requests per second and latency percentiles.

    python bench/predict.py [--starter tiny_cnn_digits] [--seconds 20] [--photo]

Each request is POST /api/v1/runs/{id}/predict/ with one image, through DRF's view (multipart parsing,
image checks, decoding, preprocessing, the model, JSON rendering), not the network. The model is a
starter design compiled by the platform, with freshly initialised weights stored as the run's `last`
checkpoint: latency does not depend on what the weights learnt. The default image is a PNG of the
dataset's own size; --photo sends a 640×480 JPEG instead (decoding and resizing then dominate).
--sandboxed marks the code as the assistant's: each request then runs in the training sandbox.

The database is a throwaway SQLite file and the media folder a temporary directory, so nothing of a
real installation is touched. Requests run one after another on one thread; torch uses its default
thread count. Time-boxed by --seconds.
"""

from __future__ import annotations

import argparse
import copy
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TMP = Path(tempfile.mkdtemp(prefix="buildx-bench-predict-"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.pop("DATABASE_URL", None)
os.environ.pop("REDIS_URL", None)
os.environ["SQLITE_PATH"] = str(TMP / "bench.sqlite3")
os.environ["MEDIA_ROOT"] = str(TMP / "media")
# The bench measures the server, not the per-user limits: one user sends thousands of requests.
os.environ["PREDICT_RATE_PER_MINUTE"] = "0"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buildx.settings")

import django  # noqa: E402

django.setup()

import torch  # noqa: E402
from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: E402
from django.core.management import call_command  # noqa: E402
from PIL import Image  # noqa: E402
from rest_framework.test import APIRequestFactory, force_authenticate  # noqa: E402
from safetensors.torch import save as save_safetensors  # noqa: E402

from buildx.test import make_user  # noqa: E402
from designs import compiler  # noqa: E402
from designs import services as design_services  # noqa: E402
from designs.models import CodeArtifact  # noqa: E402
from training import predict  # noqa: E402
from training.models import Run, RunArtifact  # noqa: E402
from training.predict_api import RunPredict  # noqa: E402
from training.services import artifact_store  # noqa: E402


def make_run(starter: str, *, sandboxed: bool = False) -> Run:
    user = make_user("bench@example.com")
    spec = copy.deepcopy(design_services.starter_get(slug=starter)["spec"])
    design = design_services.design_create(owner=user, name=spec["model_name"], spec=spec)
    version = design.versions.get()
    artifact = design_services.artifact_compile(version=version)
    if sandboxed:  # the same code, as if the assistant had written it: predictions go through the sandbox
        artifact = CodeArtifact.objects.create(
            version=version,
            source=CodeArtifact.Source.LLM,
            status=CodeArtifact.Status.READY,
            code=artifact.code,
        )
    run = Run.objects.create(
        owner=user, design_version=version, code_artifact=artifact, dataset=spec["dataset"],
        hyperparameters=spec["hyperparameters"], status=Run.Status.SUCCEEDED, epochs=1, epoch=1,
    )  # fmt: skip
    model = compiler.load_compiled(predict.compiled_script(run))["build_model"]()  # our compiler's code
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    artifact_store(run=run, kind=RunArtifact.Kind.CHECKPOINT_LAST, filename="last.safetensors",
                   content=save_safetensors(tensors), epoch=1)  # fmt: skip
    return run


def image_bytes(shape: tuple[int, int, int], *, photo: bool) -> tuple[str, bytes]:
    c, h, w = (shape[0], 480, 640) if photo else shape
    pixels = torch.randint(0, 256, (h, w, c), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    array = pixels.numpy()
    im = Image.fromarray(array[:, :, 0] if c == 1 else array)
    buffer = io.BytesIO()
    im.save(buffer, format="JPEG" if photo else "PNG", quality=90)
    return ("photo.jpg" if photo else "image.png"), buffer.getvalue()


def request_ms(view, factory: APIRequestFactory, run: Run, name: str, data: bytes) -> float:
    request = factory.post(f"/api/v1/runs/{run.pk}/predict/", {"images": [SimpleUploadedFile(name, data)]})
    force_authenticate(request, user=run.owner)
    started = time.perf_counter()
    response = view(request, pk=run.pk)
    response.render()
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, response.content[:300]
    return elapsed


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(int(round(q * len(ordered))) - 1, 0))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starter", default="tiny_cnn_digits", help="a starter slug (designs/starters/)")
    parser.add_argument("--seconds", type=float, default=20.0, help="time box for the measured requests")
    parser.add_argument("--photo", action="store_true", help="send a 640x480 JPEG instead of a small PNG")
    parser.add_argument(
        "--sandboxed",
        action="store_true",
        help="a run of assistant-written code: each request starts a sandbox",
    )
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    run = make_run(args.starter, sandboxed=args.sandboxed)
    if args.sandboxed:
        return bench_sandboxed(run, args)
    view = RunPredict.as_view()
    factory = APIRequestFactory()

    first = time.perf_counter()
    loaded = predict.get_model(run)
    build_ms = (time.perf_counter() - first) * 1000
    name, data = image_bytes(loaded.source_shape, photo=args.photo)
    params = sum(p.numel() for p in loaded.model.parameters())
    print(
        f"model: {args.starter}, {params:,} parameters, input {loaded.input_shape}; image: {name}, {len(data):,} bytes"
    )
    print(
        f"cold load (compile spec, build, read safetensors): {build_ms:.1f} ms; torch threads: {torch.get_num_threads()}"
    )

    for _ in range(20):  # warm-up: the allocator, the first convolutions, DRF's parsers
        request_ms(view, factory, run, name, data)
    samples: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        samples.append(request_ms(view, factory, run, name, data))
    wall = time.perf_counter() - started
    ordered = sorted(samples)
    print(
        f"{len(samples)} requests in {wall:.1f} s: {len(samples) / wall:.1f} requests/s (one thread); "
        f"p50 {statistics.median(ordered):.2f} ms, p95 {percentile(ordered, 0.95):.2f} ms, "
        f"max {ordered[-1]:.2f} ms"
    )
    print(f"cache: {predict.models.stats()}")


def bench_sandboxed(run: Run, args: argparse.Namespace) -> None:
    view = RunPredict.as_view()
    factory = APIRequestFactory()
    facts = predict.model_facts(run)
    name, data = image_bytes(facts.source_shape, photo=args.photo)
    samples: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < args.seconds or not samples:
        samples.append(request_ms(view, factory, run, name, data))
    ordered = sorted(samples)
    print(
        f"sandboxed ({args.starter}, {name}): {len(samples)} requests, p50 {statistics.median(ordered):.0f} ms, "
        f"p95 {percentile(ordered, 0.95):.0f} ms (a sandbox start with torch's import per request)"
    )


if __name__ == "__main__":
    try:
        main()
    finally:
        import shutil

        shutil.rmtree(TMP, ignore_errors=True)
