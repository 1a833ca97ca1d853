"""The README's checksum table for operators is the one fetch_dataset checks."""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

from sandbox.engine import datasets


def test_the_readme_lists_every_downloaded_file_with_the_checksum_fetch_dataset_checks():
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    rows = set(re.findall(r"^\| `(\w+)` \| `([\w.-]+)` \| `([0-9a-f]{32})` \|$", readme, re.MULTILINE))
    expected = {(info.name, f.name, f.md5) for info in datasets.BUILTIN.values() for f in info.downloads}
    assert rows == expected
