"""manage.py fetch_dataset NAME: download a built-in dataset, check its checksums, build its cache."""

from __future__ import annotations

import pickle
import tarfile
import time
import zipfile
from collections.abc import Callable

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sandbox.engine import datasets

STATS_TOLERANCE = 0.01  # of a mean or std in [0, 1]: the published figures are rounded to 4 places


class ProgressBar:
    """A one-line text bar, redrawn at most ten times a second: `name  [#####.....]  52%  5.1/9.9 MB`."""

    WIDTH = 30

    def __init__(self, name: str, out) -> None:
        self.name = name
        self.out = out
        self.last = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if now - self.last < 0.1 and not finished:
            return
        self.last = now
        mb = f"{done / 2**20:.1f}"
        if total:
            filled = int(self.WIDTH * done / total)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            line = f"{self.name}  [{bar}] {done / total:4.0%}  {mb}/{total / 2**20:.1f} MB"
        else:
            line = f"{self.name}  {mb} MB"
        self.out.write("\r" + line, ending="\n" if finished else "")
        self.out.flush()


class Command(BaseCommand):
    help = "Download a built-in dataset into BUILDX_DATA_DIR, check its checksums and build its cache."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help=f"one of: {', '.join(datasets.BUILTIN)} (any case), or 'all'")
        parser.add_argument("--data-dir", default=None, help="defaults to BUILDX_DATA_DIR")
        parser.add_argument("--mirror", default=None, help="a base URL holding the same files")
        parser.add_argument("--no-cache", action="store_true", help="only download; do not build the cache")

    def handle(
        self, *args, name: str, data_dir: str | None, mirror: str | None, no_cache: bool, **options
    ) -> None:
        folder = settings.DATA_DIR if data_dir is None else data_dir
        names = list(datasets.BUILTIN) if name.lower() == "all" else [name]
        for one in names:
            canonical = datasets.canonical_name(one)
            if canonical is None:
                raise CommandError(f"Unknown dataset {one!r}. Built-in: {', '.join(datasets.BUILTIN)}.")
            self.fetch_one(canonical, data_dir=folder, mirror=mirror, build=not no_cache)

    def fetch_one(self, name: str, *, data_dir, mirror: str | None, build: bool) -> None:
        info = datasets.BUILTIN[name]
        if info.downloads:

            def progress(filename: str) -> Callable[[int, int | None], None]:
                return ProgressBar(filename, self.stdout)

            try:
                datasets.fetch(
                    name, data_dir=data_dir, mirror=mirror, progress_for=progress, log=self.stdout.write
                )
            except datasets.ChecksumError as e:
                raise CommandError(f"{e}. The file was not kept; try again, or another --mirror.") from e
            except (tarfile.TarError, zipfile.BadZipFile) as e:
                raise CommandError(
                    f"The {name} archive holds something unsafe or broken ({e}); nothing was used."
                ) from e
            except OSError as e:  # URLError and socket errors are OSErrors
                raise CommandError(
                    f"Could not download {name}: {e}. This machine may have no internet: copy the files "
                    f"({', '.join(s.name for s in info.downloads)}) into {datasets.dataset_folder(name, data_dir=data_dir)} "
                    "and run this command again to check them."
                ) from e
        else:
            self.stdout.write(f"{name}: nothing to download ({info.source}).")
        if build:
            try:
                path = datasets.ensure_cache(name, data_dir=data_dir, force=True)
            except (ValueError, pickle.UnpicklingError, EOFError) as e:
                raise CommandError(
                    f"The {name} files are here but cannot be read as {name} ({e}); no cache was built. "
                    "Remove them and run this command again to download them afresh."
                ) from e
            self.stdout.write(self.style.SUCCESS(f"{name}: cache ready at {path}"))
            if info.source == "download":
                self.check_stats(info, path)

    def check_stats(self, info: datasets.DatasetInfo, path) -> None:
        """The catalog's mean and std are the published figures: say so if these files' differ."""
        mean, std = datasets.measured_stats(path)
        self.stdout.write(f"{info.name}: training images' mean {mean}, std {std}")
        published = [*info.facts.mean, *info.facts.std]
        if any(abs(a - b) > STATS_TOLERANCE for a, b in zip([*mean, *std], published, strict=True)):
            self.stdout.write(
                self.style.WARNING(
                    f"{info.name}: these differ from the published mean {list(info.facts.mean)} and std "
                    f"{list(info.facts.std)} that designs normalise with (sandbox/engine/dataset_facts.py). "
                    "The set is installed and trains; to normalise with these files' own figures, put the "
                    "printed mean and std into that file's entry for it and restart the web and workers."
                )
            )
