"""Write into the places a worker trusts: /tmp, /root, /work, the engine and the virtualenv."""

import sys

targets = [
    "/tmp/buildx-escape.txt",
    "/root/buildx-escape.txt",
    "/work/buildx-escape.txt",
    "/etc/buildx-escape.txt",
    "/usr/lib/buildx-escape.txt",
    sys.prefix + "/lib/python3.11/site-packages/sitecustomize.py",
]
for path in targets:
    try:
        handle = open(path, "w")  # HOSTILE
        handle.write("import os; os.system('id')")
        handle.close()
        print("WROTE", path)
    except OSError as error:
        print("refused", path, error)
