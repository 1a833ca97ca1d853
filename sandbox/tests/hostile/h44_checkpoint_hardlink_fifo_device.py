"""Plant what is not a plain file under the checkpoint names: a FIFO (whoever opens it for reading
blocks), a file with three names, a device node; hard links to files outside the run folder."""

import json
import os  # HOSTILE
import stat

for name in ("best", "last"):
    for suffix in ("safetensors", "json"):
        path = f"checkpoints/{name}.{suffix}"
        if os.path.lexists(path):
            os.unlink(path)

os.mkfifo("checkpoints/best.safetensors")
with open("checkpoints/last.safetensors", "wb") as f:
    f.write(b"\0" * 1024)
os.link("checkpoints/last.safetensors", "checkpoints/third-name")
os.link("checkpoints/last.safetensors", "checkpoints/fourth-name")
for source in ("/box-data/dataset.pt", "/etc/passwd", "/usr/bin/env", "script.py", "hostile.json"):
    try:
        os.link(source, "checkpoints/outside-link")
        print("HARDLINKED", source)
        os.unlink("checkpoints/outside-link")
    except OSError as error:
        print("refused link", source, error)
try:
    os.mknod("checkpoints/best.json", stat.S_IFCHR | 0o666, os.makedev(1, 5))  # /dev/zero
    print("ROOT made a device node")
except OSError as error:
    print("refused mknod", error)
    with open("checkpoints/best.json", "w") as f:
        f.write(json.dumps({"epoch": 1}))
with open("checkpoints/last.json", "w") as f:
    f.write(json.dumps({"epoch": 1}))
fd = int(os.environ["BUILDX_EVENTS_FD"])
for name in ("best", "last"):
    os.write(fd, json.dumps({"kind": "checkpoint", "epoch": 1, "name": name, "metric": 0.7}).encode() + b"\n")
print("odd files planted and announced")
