"""The README's checksum table for operators is the one fetch_dataset checks."""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

from sandbox.engine import datasets


def test_the_readme_lists_every_downloaded_file_with_the_checksum_and_address_fetch_dataset_uses():
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    found = re.findall(
        r"^\| `(\w+)` \| `([\w.-]+)` \| [\d,]+ \| (`[^`]+`|same) \| `([0-9a-f]{32})` \|$",
        readme,
        re.MULTILINE,
    )
    rows, where = set(), ""
    for name, file, source, md5 in found:
        where = where if source == "same" else source.strip("`")  # "same": the row above's address
        rows.add((name, file, where + file, md5))
    expected = {
        (info.name, f.name, f.url, f.md5) for info in datasets.BUILTIN.values() for f in info.downloads
    }
    assert rows == expected
    # and the table of what each set holds names every downloaded set
    held = set(re.findall(r"^\| `(\w+)` \| [\d,]+ / [\d,]+ \|", readme, re.MULTILINE))
    assert held == {info.name for info in datasets.BUILTIN.values() if info.downloads}
