"""Read files that hold secrets on the worker: shadow, keys, the project's settings and .env."""

import glob

paths = [
    "/etc/shadow",
    "/root/.ssh/id_rsa",
    "/root/.pgpass",
    "/work/main/.env",
    "/work/main/buildx/settings.py",
]
paths += glob.glob("/work/*/buildx/settings.py") + glob.glob("/root/*")
for path in paths:
    try:
        print(path, open(path).read()[:200])  # HOSTILE
    except OSError as error:
        print("refused", path, error)
