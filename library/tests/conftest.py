"""Zips made here (PIL PNGs, never downloaded), a data folder per test, the personas' courses."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from accounts import services as account_services

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def class_png(colour: tuple[int, int, int], seed: int, size: int = 12) -> bytes:
    """A noisy image of one colour: a class a tiny model tells apart in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(-40, 41, (size, size, 3), generator=g)
    pixels = (torch.tensor(colour).view(1, 1, 3) + noise).clamp(0, 255).to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def zip_of(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def three_classes(per_class: int = 24, size: int = 12) -> dict[str, bytes]:
    return {
        f"colours/{name}/{i}.png": class_png(colour, seed=k * 1000 + i, size=size)
        for k, (name, colour) in enumerate(COLOURS.items())
        for i in range(per_class)
    }


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def small_box(settings):
    """The limits of a check's box in the attacker tests (test_check_box.py, test_text_check_box.py)."""
    settings.DATASET_CHECK_MEMORY_BYTES = 768 * 2**20  # torch is ~150 MB of it
    # Seconds when idle; importing torch on a loaded 2-core machine can take tens. Only a program that never
    # ends meets this limit (the tests of one that never ends set their own).
    settings.DATASET_CHECK_WALL_S = 300
    settings.BUILDX_SANDBOX_GRACE_SECONDS = 0.5


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    settings.DATA_DIR.mkdir()
    return settings.DATA_DIR


@pytest.fixture
def course_a(carol, alice):
    course = account_services.course_create(name="Deep Learning 101", term="Spring", instructors=[carol])
    account_services.course_join(user=alice, code=course.join_code)
    return course


@pytest.fixture
def course_b(dave, bob):
    course = account_services.course_create(name="Vision Lab", term="Spring", instructors=[dave])
    account_services.course_join(user=bob, code=course.join_code)
    return course
