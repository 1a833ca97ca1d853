"""Write next to the run directory, then above it, with relative and absolute paths."""

import os  # HOSTILE

for path in ["../escaped.txt", "../../escaped.txt", os.path.abspath("..") + "/escaped-abs.txt"]:
    try:
        with open(path, "w") as f:
            f.write("escaped")
        print("WROTE", path)
    except OSError as error:
        print("refused", path, error)
