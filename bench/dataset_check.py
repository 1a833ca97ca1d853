"""The check of an uploaded dataset, and training on it against the same tensors as a built-in set.

    python bench/dataset_check.py                 # 10,000 images, about 50 MB; then the throughput rounds
    python bench/dataset_check.py --images 2000   # quicker

1. check: a zip of --images noise PNGs (40x40 RGB, ten class folders, stored: about 5 KB each) is checked
   and decoded to the tensor cache (sandbox/engine/custom.py, as the worker does) in a fresh child process:
   wall time of each step, and the child's peak resident memory (ru_maxrss) with its baseline after the
   imports, so the check's own share shows. Then the same zip as the worker checks it: in a box of its
   own (sandbox/upload_check.py: bubblewrap, its uid and control group), the worker reading the box's
   tensors back and checking them: wall time, and the box's peak memory as its control group measured it
   (the tensor file it wrote into its tmpfs folder counts there too).
2. throughput: the generated shapes (a built-in set) are written as PNGs into a zip of class folders and
   uploaded through the same check; the same script then trains through the harness on the built-in cache
   and on the uploaded one, in turns (bench/train_throughput.py's "runtime" way, one thread, CPU time). The
   images are the same tensors (PNG is lossless, no resize), so the ratio should be 1: uploaded / built-in.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))


def make_zip(path: Path, *, images: int, classes: int = 10, side: int = 40) -> None:
    import torch
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(images):
            pixels = torch.randint(0, 256, (side, side, 3), generator=g, dtype=torch.uint8).numpy()
            buf = io.BytesIO()
            Image.fromarray(pixels, "RGB").save(buf, format="PNG")
            zf.writestr(f"noise/class{i % classes}/{i}.png", buf.getvalue())


def child_check(zip_path: str, cache: str) -> None:
    """In a fresh process: baseline memory after the imports, then the check and the decode."""
    from sandbox.engine import custom

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    report = custom.check_zip(zip_path)
    checked = time.perf_counter()
    assert report.ok, report.problems[:3]
    result = custom.extract_to_cache(zip_path, cache_path=cache, report=report)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "images": len(report.images),
                "check_s": checked - started,
                "decode_s": done - checked,
                "baseline_rss_mb": baseline / 1024,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "input_shape": list(result.input_shape),
                "cache_mb": Path(cache).stat().st_size / 2**20,
            }
        )
    )


def bench_check(tmp: Path, images: int) -> None:
    zip_path = tmp / "noise.zip"
    started = time.perf_counter()
    make_zip(zip_path, images=images)
    size_mb = zip_path.stat().st_size / 2**20
    print(f"zip: {images} images, {size_mb:.1f} MB (made in {time.perf_counter() - started:.1f} s)")
    out = subprocess.run(
        [sys.executable, __file__, "--child-check", str(zip_path), str(tmp / "noise.pt")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"check: {r['check_s']:.1f} s; decode to the cache: {r['decode_s']:.1f} s; total "
        f"{r['check_s'] + r['decode_s']:.1f} s ({r['images'] / (r['check_s'] + r['decode_s']):.0f} images/s)"
    )
    print(
        f"peak memory of the checking process: {r['peak_rss_mb']:.0f} MB "
        f"(after its imports: {r['baseline_rss_mb']:.0f} MB; the check's share: "
        f"{r['peak_rss_mb'] - r['baseline_rss_mb']:.0f} MB); cache {r['cache_mb']:.1f} MB, {r['input_shape']}"
    )


def bench_check_in_box(tmp: Path) -> None:
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buildx.settings")
    import django

    django.setup()
    from django.conf import settings

    from sandbox import upload_check
    from sandbox.engine import custom

    zip_path = tmp / "noise.zip"
    started = time.perf_counter()
    check = upload_check.check_upload(
        zip_path=zip_path,
        work_path=tmp / "check.safetensors",
        zip_limits=custom.ZipLimits(),
        side=None,
        max_side=64,
        on_progress=lambda stage, done, total: None,
        wall_limit_s=settings.DATASET_CHECK_WALL_S,
        memory_bytes=settings.DATASET_CHECK_MEMORY_BYTES,
    )
    wall = time.perf_counter() - started
    assert check.ok and check.decoded is not None, check.problems[:3]
    result = check.sandbox
    assert result is not None
    peak = f"{result.memory_peak / 2**20:.0f} MB" if result.memory_peak else "not measured (no control group)"
    print(
        f"in a box: {wall:.1f} s from start to checked tensors in the worker ({len(check.decoded['labels'])} "
        f"images, {tuple(check.decoded['images'].shape[1:])}); the box's CPU {result.cpu_seconds:.1f} s; "
        f"its peak memory (control group, whole tree): {peak}; isolation: {', '.join(result.isolation)}"
    )


def bench_throughput(tmp: Path, *, per_class: int, rounds: int, epochs: int) -> None:
    import os

    import torch
    from PIL import Image

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    os.chdir(tmp)  # the in-process harness writes model.safetensors where it stands: not into the checkout
    import train_throughput as tt

    from sandbox.engine import custom
    from sandbox.engine import datasets as ds

    decoded = ds.generate_shapes(per_class=per_class)
    builtin = ds.write_cache(tmp / "shapes-builtin.pt", decoded, name="shapes")
    zip_path = tmp / "shapes.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for i, (image, label) in enumerate(zip(decoded["images"], decoded["labels"], strict=True)):
            buf = io.BytesIO()
            Image.fromarray(image.permute(1, 2, 0).contiguous().numpy(), "RGB").save(buf, format="PNG")
            zf.writestr(f"{decoded['class_names'][int(label)]}/{i}.png", buf.getvalue())
    uploaded = custom.extract_to_cache(zip_path, cache_path=tmp / "shapes-uploaded.pt").cache_path
    a, b = ds.load_cache(builtin), ds.load_cache(uploaded)
    same = sorted(map(bytes, a["images"].flatten(1).numpy())) == sorted(
        map(bytes, b["images"].flatten(1).numpy())
    )
    print(f"shapes: {len(a['labels'])} images; the uploaded cache holds the same image tensors: {same}")
    n = round(len(a["train_idx"]) * 0.9)
    best: dict[str, float] = {}
    for r in range(rounds):
        for name, cache in (("built-in", builtin), ("uploaded", uploaded)):
            times = tt.bench_runtime(
                cache, epochs=epochs, batch_size=64, width=8, device="cpu", workdir=tmp, child=False
            )
            _wall, cpu = tt.samples_per_s(times, n)
            rate = cpu or _wall
            best[name] = max(best.get(name, 0.0), rate)
            print(f"round {r + 1}: {name}: {rate:.0f} training samples per CPU second")
    print(
        f"best of {rounds}: built-in {best['built-in']:.0f}/s, uploaded {best['uploaded']:.0f}/s, "
        f"ratio uploaded / built-in = {best['uploaded'] / best['built-in']:.3f}"
    )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child-check":
        child_check(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--per-class", type=int, default=300, help="shapes per class for the throughput")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="per round; the first is warm-up")
    parser.add_argument("--only", nargs="*", default=["check", "throughput"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if "check" in args.only:
            bench_check(Path(tmp), args.images)
            bench_check_in_box(Path(tmp))
        if "throughput" in args.only:
            bench_throughput(Path(tmp), per_class=args.per_class, rounds=args.rounds, epochs=args.epochs)


if __name__ == "__main__":
    main()
